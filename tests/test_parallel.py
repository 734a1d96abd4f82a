"""scratchnst.parallel: a layer's work cut into pieces run at once, with the same results as whole.

The fast layers split their work only above a size worth a thread; these tests lower that size so
that tiny inputs are cut too, and compare every split result with the same call run whole and with
the readable layers.
"""

import os
from pathlib import Path
import threading
import time

import numpy as np
import pytest

from scratchnst import fast_conv, fast_pool, layers, parallel
from scratchnst import transformer_layers as tl


@pytest.fixture
def cut_everything(monkeypatch):
    """Two workers, and every piece worth a thread however small."""
    previous = parallel.set_workers(2)
    monkeypatch.setattr(fast_conv, "_SPLIT_LEAST_WORK", 1)
    monkeypatch.setattr(tl, "_SPLIT_LEAST_WORK", 1)
    monkeypatch.setattr(fast_pool, "SPLIT_LEAST_ELEMENTS", 1)
    yield
    parallel.set_workers(previous)


@pytest.fixture
def whole():
    previous = parallel.set_workers(1)
    yield
    parallel.set_workers(previous)


@pytest.mark.parametrize("n, count", [(10, 2), (7, 3), (1, 2), (5, 8), (0, 2), (100, 1)])
def test_pieces_cover_the_range_in_order_none_empty_as_equal_as_can_be(n, count):
    ranges = parallel.pieces(n, count)
    covered = [i for start, stop in ranges for i in range(start, stop)]
    assert covered == list(range(n))
    lengths = [stop - start for start, stop in ranges]
    if n:
        assert min(lengths) >= 1 and max(lengths) - min(lengths) <= 1
        assert len(ranges) == min(count, n)


def test_split_runs_the_pieces_at_once_on_other_threads(cut_everything):
    seen, both_in = set(), threading.Barrier(2, timeout=10)

    def piece(start, stop):
        seen.add(threading.get_ident())
        both_in.wait()  # only returns if the other piece runs at the same time
        return start, stop

    assert parallel.split(piece, 10) == [(0, 5), (5, 10)]
    assert len(seen) == 2


def test_split_runs_whole_with_one_worker_below_the_least_size_and_when_nested(cut_everything):
    calls = []
    assert parallel.split(lambda a, b: calls.append((a, b)), 10, least=6) == [None]
    assert calls == [(0, 10)]

    def outer(start, stop):
        return parallel.split(lambda a, b: (a, b), 4)  # inside a piece: one piece

    assert parallel.split(outer, 2) == [[(0, 4)], [(0, 4)]]
    parallel.set_workers(1)
    assert parallel.split(lambda a, b: (a, b), 10) == [(0, 10)]


@pytest.mark.parametrize("n, least", [(10, 1), (10, 6), (3, 1), (1, 1), (0, 1)])
def test_split_ranges_are_the_pieces_split_makes_alone_nested_and_while_the_cores_are_busy(cut_everything, n, least):
    def made(start, stop):
        return start, stop

    assert parallel.split_ranges(n, least) == parallel.split(made, n, least)
    assert parallel.split(lambda a, b: parallel.split_ranges(n, least), 2) == [[(0, n)], [(0, n)]]   # nested: whole
    with parallel._region:   # another thread's split holds the cores: the same cut, one piece after another
        assert parallel.split(made, n, least) == parallel.split_ranges(n, least)
    parallel.set_workers(1)
    assert parallel.split_ranges(n, least) == [(0, n)] == parallel.split(made, n, least)


def test_a_pieces_exception_is_raised_after_every_piece_ended(cut_everything):
    ended = []

    def piece(start, stop):
        if start == 0:
            raise ValueError("the first piece failed")
        ended.append(start)
        return start

    with pytest.raises(ValueError, match="first piece"):
        parallel.split(piece, 4)
    assert ended == [2]
    assert parallel.split(lambda a, b: a, 4) == [0, 2]  # the pool still works


@pytest.fixture
def blas_on_two_threads():
    """get_threads() of NumPy's OpenBLAS, set to 2 threads for the test and put back after."""
    controls = parallel._blas_controls()
    if not controls:
        pytest.skip("NumPy's BLAS here is not an OpenBLAS whose threads can be set")
    set_threads, get_threads = controls
    before = get_threads()
    set_threads(2)
    yield get_threads
    set_threads(before)


def test_blas_runs_on_one_thread_inside_hold_and_as_before_after(blas_on_two_threads):
    get_threads = blas_on_two_threads
    previous = parallel.set_workers(2)
    try:
        with parallel.hold():
            assert get_threads() == 1
            with parallel.one_blas_thread():  # nested: stays 1, and leaves 1
                assert get_threads() == 1
            assert get_threads() == 1
        assert get_threads() == 2
    finally:
        parallel.set_workers(previous)


_PINNING = """
import json, os, sys, threading
from scratchnst import parallel
if sys.argv[1] == "outside":
    parallel.split(lambda a, b: None, 2)  # the workers are made before hold()
before = os.sched_getaffinity(0)
seen = {}
def piece(start, stop):
    seen[start] = os.sched_getaffinity(0)
    threading.Event().wait(0.05)  # both pieces at once, so each is on its own thread
with parallel.hold():
    parallel.split(piece, 2)
print(json.dumps([sorted(seen[0]), sorted(seen[1]), os.sched_getaffinity(0) == before]))
"""


@pytest.mark.skipif(not hasattr(os, "sched_setaffinity") or len(os.sched_getaffinity(0)) < 2,
                    reason="needs two cores whose affinity can be set")
@pytest.mark.parametrize("made", ["inside", "outside"])
def test_inside_hold_the_caller_and_the_worker_each_run_on_a_core_of_their_own(made):
    # Regression: a worker made by the first split inside hold() inherited the caller's one core
    # and, reading its own affinity, found no other: both pieces shared a core, slower than one.
    import json
    import subprocess
    import sys

    cores = sorted(os.sched_getaffinity(0))
    env = {**os.environ, **parallel.environment(2)}
    out = subprocess.run([sys.executable, "-c", _PINNING, made], capture_output=True, text=True, check=True,
                         env=env).stdout
    caller, worker, restored = json.loads(out)
    assert (caller, worker, restored) == ([cores[0]], [cores[1]], True)  # one core each; the caller's back after


def test_environment_gives_blas_one_thread_and_the_count_to_scratchnst_without_loading_numpy():
    import subprocess
    import sys

    code = ("import sys; from scratchnst.parallel import environment; e = environment(3); "
            "print('numpy' in sys.modules, e['OPENBLAS_NUM_THREADS'], e['SCRATCHNST_WORKERS'])")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.split() == ["False", "1", "3"]
    code = "from scratchnst import parallel; print(parallel.workers())"
    env = {**os.environ, **parallel.environment(3)}
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, env=env).stdout
    assert out.strip() == "3"


CONVS = [  # (x shape, kernel shape, stride, padding)
    ((1, 11, 9, 5), (3, 3, 5, 8), 1, "same"),
    ((2, 10, 7, 4), (3, 3, 4, 6), 1, "valid"),
    ((1, 13, 12, 3), (3, 3, 3, 8), 2, "valid"),   # SqueezeNet's conv1: tap planes, few channels
    ((2, 12, 11, 9), (3, 3, 9, 7), 2, "same"),    # col2im, many channels, two images
    ((1, 8, 9, 6), (1, 1, 6, 5), 1, "same"),      # 1x1: one product
    ((2, 9, 8, 10), (5, 5, 10, 4), 1, 3),          # an integer padding
]


@pytest.mark.parametrize("x_shape, w_shape, stride, padding", CONVS)
def test_split_convolution_equals_the_whole_and_the_readable_layers(x_shape, w_shape, stride, padding,
                                                                    cut_everything):
    rng = np.random.default_rng(3)
    x = rng.standard_normal(x_shape)
    w = rng.standard_normal(w_shape)
    b = rng.standard_normal(w_shape[3])
    out, cache = fast_conv.conv2d_relu_forward(x, w, b, stride, padding)
    dout = rng.standard_normal(out.shape)
    dx = fast_conv.conv2d_relu_backward(dout, cache)
    dz = layers.relu_backward(dout, out)
    dx2, dw, db = fast_conv.conv2d_backward(dz, cache[0])
    parallel.set_workers(1)
    out_1, cache_1 = fast_conv.conv2d_relu_forward(x, w, b, stride, padding)
    np.testing.assert_allclose(out, out_1, rtol=1e-12, atol=1e-12)
    np.testing.assert_allclose(dx, fast_conv.conv2d_relu_backward(dout, cache_1), rtol=1e-12, atol=1e-12)
    z, ref_cache = layers.conv2d_forward(x, w, b, stride, padding)
    np.testing.assert_allclose(out, np.maximum(z, 0), rtol=1e-12, atol=1e-12)
    ref_dx, ref_dw, ref_db = layers.conv2d_backward(dz, ref_cache)
    for ours, ref in ((dx, ref_dx), (dx2, ref_dx), (dw, ref_dw), (db, ref_db)):
        np.testing.assert_allclose(ours, ref, rtol=1e-10, atol=1e-10)


@pytest.mark.parametrize("C_in, C_out", [(3, 8), (8, 3)])  # windows of x / of dout: both branches
def test_split_kernel_gradient_equals_the_readable_one(C_in, C_out, cut_everything):
    rng = np.random.default_rng(4)
    x = rng.standard_normal((2, 12, 11, C_in))
    w = rng.standard_normal((5, 5, C_in, C_out))
    _, cache = layers.conv2d_forward(x, w, np.zeros(C_out), 1, "valid")
    dout = rng.standard_normal((2, 8, 7, C_out))
    _, ref_dw, _ = layers.conv2d_backward(dout, cache)
    np.testing.assert_allclose(tl.conv2d_weight_gradient(x, dout, 5, 5), ref_dw, rtol=1e-10, atol=1e-10)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_split_layers_keep_the_dtype(dtype, cut_everything):
    rng = np.random.default_rng(5)
    x = rng.standard_normal((1, 9, 9, 4)).astype(dtype)
    w = rng.standard_normal((3, 3, 4, 6)).astype(dtype)
    out, cache = fast_conv.conv2d_relu_forward(x, w, np.zeros(6, dtype), 2, "same")
    assert out.dtype == dtype
    assert fast_conv.conv2d_backward(np.ones_like(out), cache[0])[0].dtype == dtype
    assert tl.conv2d_weight_gradient(x, np.ones((1, 7, 7, 6), dtype), 3, 3).dtype == dtype


POOLS = [  # (kind, x shape, size, stride, padding)
    ("max", (1, 13, 9, 6), 3, 2, "valid"),   # SqueezeNet's: neighbouring pieces share a row
    ("max", (2, 12, 10, 5), 2, 2, "valid"),  # VGG-19's
    ("avg", (1, 14, 11, 4), 3, 2, "valid"),  # a row below the last window, read by none
    ("max", (1, 9, 8, 3), 3, 2, "same"),
    ("avg", (2, 11, 7, 3), 5, 2, "same"),    # windows reaching two output rows back
    ("max", (1, 13, 8, 2), 2, 3, "valid"),   # gaps between windows
]


@pytest.mark.parametrize("kind, x_shape, size, stride, padding", POOLS)
@pytest.mark.parametrize("band_bytes", [1, 2**30])
def test_split_pooling_is_the_whole_to_the_last_bit(kind, x_shape, size, stride, padding, band_bytes,
                                                     cut_everything, monkeypatch):
    monkeypatch.setattr(fast_pool, "BAND_BYTES", band_bytes)  # one row a band, or one band a piece
    forward, backward = getattr(fast_pool, f"{kind}_pool_forward"), getattr(fast_pool, f"{kind}_pool_backward")
    rng = np.random.default_rng(6)
    x = np.maximum(rng.standard_normal(x_shape), 0)  # a ReLU's output: ties at 0, as in the networks
    with parallel.hold():
        out, cache = forward(x, size, stride, padding)
        dout = rng.standard_normal(out.shape)
        dx = backward(dout, cache)
    whole_out, whole_cache = getattr(layers, f"{kind}_pool_forward")(x, size, stride, padding)
    np.testing.assert_array_equal(out, whole_out)
    if kind == "max":
        np.testing.assert_array_equal(cache[1], whole_cache[1])
    np.testing.assert_array_equal(dx, getattr(layers, f"{kind}_pool_backward")(dout, whole_cache))
    assert dx.shape == x.shape and dx.dtype == x.dtype


def test_pooling_is_cut_into_pieces_that_run_at_once(cut_everything, monkeypatch):
    """Not one piece by accident: the forward and backward passes each run as two pieces."""
    calls = []
    split = parallel.split
    monkeypatch.setattr(parallel, "split", lambda fn, n, least=1, **given: calls.append(len(split(fn, n, least, **given))))
    x = np.ones((1, 9, 9, 2))
    with parallel.hold():
        out, cache = fast_pool.max_pool_forward(x, 3, 2)
        fast_pool.max_pool_backward(out, cache)
    assert calls == [2, 2]


def test_a_network_step_is_the_same_split_or_whole(cut_everything, monkeypatch):
    from scratchnst import networks
    from scratchnst.cli import bench

    net = networks.Network("squeezenet", bench.random_params("squeezenet", dtype=np.float64), dtype=np.float64)
    rng = np.random.default_rng(7)
    x = rng.uniform(-100, 100, (1, 67, 59, 3))
    layers_wanted = ["conv1", "fire3", "fire5"]
    acts = net.forward(x, layers_wanted)
    grads = {name: rng.standard_normal(a.shape) for name, a in acts.items()}
    dx = net.backward(grads)
    parallel.set_workers(1)
    whole = net.forward(x, layers_wanted)
    for name in layers_wanted:
        np.testing.assert_allclose(acts[name], whole[name], rtol=1e-12, atol=1e-12)
    np.testing.assert_allclose(dx, net.backward(grads), rtol=1e-10, atol=1e-12)


def test_threads_on_the_command_line_become_workers_with_one_blas_thread(monkeypatch):
    from scratchnst.cli import parser

    for name in ("OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS", "MKL_NUM_THREADS", "SCRATCHNST_WORKERS"):
        monkeypatch.delenv(name, raising=False)
    parser._set_threads(None)  # the default: one thread, no workers asked for
    assert os.environ["OPENBLAS_NUM_THREADS"] == "1"
    assert "SCRATCHNST_WORKERS" not in os.environ
    parser._set_threads(2)
    assert {name: os.environ[name] for name in parallel.environment(2)} == parallel.environment(2)


@pytest.mark.skipif(not hasattr(os, "fork"), reason="no fork on this system")
def test_a_forked_child_makes_its_own_workers(cut_everything):
    assert parallel.split(lambda a, b: (a, b), 4) == [(0, 2), (2, 4)]  # the parent's pool exists now
    read, write = os.pipe()
    child = os.fork()
    if child == 0:  # the child: the parent's threads are gone; a split must not wait for them
        import signal

        signal.alarm(20)  # a child stuck waiting dies rather than hanging the test run
        try:
            ok = parallel.split(lambda a, b: (a, b), 4) == [(0, 2), (2, 4)]
            os.write(write, b"ok" if ok else b"wrong")
        finally:
            os._exit(0)
    os.close(write)
    _, status = os.waitpid(child, 0)
    assert os.read(read, 10) == b"ok" and status == 0


def test_pieces_run_under_the_callers_errstate(cut_everything):
    big = np.array([1e38], dtype=np.float32)

    def piece(start, stop):
        return np.geterr()["over"], float((big * 10)[0])  # overflows

    with np.errstate(over="ignore"):
        results = parallel.split(piece, 2)
    assert [over for over, _ in results] == ["ignore", "ignore"]
    assert all(value == np.inf for _, value in results)
    with np.errstate(over="raise"), pytest.raises(FloatingPointError):
        parallel.split(piece, 2)


def test_ahead_runs_the_rest_on_another_thread_while_the_caller_takes_the_first(cut_everything):
    callers, order, second_started = {}, [], threading.Event()

    def work(k):
        def run():
            callers[k] = threading.get_ident()
            order.append(k)
            if k == 0:
                assert second_started.wait(10)  # the first runs while a thread has begun the second
            if k == 1:
                second_started.set()
            return k * 10
        return run

    queue = parallel.ahead([work(k) for k in range(4)])
    assert [queue.result(k) for k in range(4)] == [0, 10, 20, 30]
    queue.join()
    assert callers[0] == threading.get_ident() and callers[1] != threading.get_ident()
    assert order.index(1) < order.index(2)  # a thread takes them in order
    assert parallel.split(lambda a, b: threading.get_ident(), 2)[1] != threading.get_ident()  # splits again


def test_while_ahead_runs_the_callers_splits_run_here_and_one_worker_runs_everything_at_once(cut_everything):
    """While the other core is busy, a split runs its pieces one after another in the calling thread:
    the same cut (where pieces are added up, the rounding depends on it), not the whole at once."""
    release = threading.Event()
    queue = parallel.ahead([lambda: 0, lambda: release.wait(10)])
    here = threading.get_ident()
    assert parallel.split(lambda a, b: (a, b, threading.get_ident() == here, parallel.in_piece()), 4) == [
        (0, 2, True, True), (2, 4, True, True)]
    release.set()
    assert queue.result(1) is True
    queue.join()
    parallel.set_workers(1)
    made = []
    queue = parallel.ahead([lambda k=k: made.append(k) for k in range(3)])
    assert made == [2, 1, 0]  # all of them, now, here, the first asked for made last (still in the cache)
    queue.join()


def test_a_function_of_ahead_raises_where_its_result_is_asked_for(cut_everything):
    def fails():
        raise ValueError("the third failed")

    queue = parallel.ahead([lambda: 1, lambda: 2, fails, lambda: 4])
    assert queue.result(0) == 1 and queue.result(3) == 4
    with pytest.raises(ValueError, match="third"):
        queue.result(2)
    queue.join()
    with np.errstate(over="ignore"):  # the caller's errstate reaches the thread
        queue = parallel.ahead([lambda: 0, lambda: np.geterr()["over"]])
        assert queue.result(1) == "ignore"
        queue.join()
    assert parallel.split(lambda a, b: a, 4) == [0, 2]  # the pool still works


def test_ahead_runs_its_functions_and_the_callers_splits_on_one_blas_thread_until_join(
        cut_everything, blas_on_two_threads):
    """The terms' float64 dot products round by the BLAS's thread count: it must not depend on when a
    term starts (outside hold(), a term that started after the submits saw 2 threads)."""
    get_threads = blas_on_two_threads
    started = threading.Event()

    def late():
        assert started.wait(10)
        time.sleep(0.02)  # begins well after ahead has returned
        return get_threads()

    queue = parallel.ahead([lambda: get_threads(), late, lambda: get_threads()])
    started.set()
    seen_in_split = parallel.split(lambda a, b: get_threads(), 4)
    assert [queue.result(k) for k in range(3)] == [1, 1, 1] and seen_in_split == [1, 1]
    queue.join()
    queue.join()  # again: nothing more
    assert get_threads() == 2
    parallel.set_workers(1)
    queue = parallel.ahead([lambda: get_threads(), lambda: get_threads()])
    assert [queue.result(0), queue.result(1)] == [2, 2]  # one worker: nothing changes
    queue.join()


def test_ahead_lets_the_cores_go_when_it_cannot_start_its_threads(cut_everything, monkeypatch):
    """A submit that failed (an interpreter shutting down, a thread that cannot start) left the split
    region held for good: every split after it ran on one core, without a word."""
    parallel.split(lambda a, b: None, 2)  # the pool exists

    class Refusing:
        def submit(self, *args, **kwargs):
            raise RuntimeError("cannot schedule new futures after interpreter shutdown")

    real = parallel._pool
    monkeypatch.setattr(parallel, "_pool", Refusing())
    with pytest.raises(RuntimeError, match="cannot schedule"):
        parallel.ahead([lambda: 1, lambda: 2])
    monkeypatch.setattr(parallel, "_pool", real)
    assert not parallel._region.locked()
    assert len(set(parallel.split(lambda a, b: threading.get_ident(), 2))) == 2  # both cores again


def test_with_one_worker_ahead_raises_a_functions_error_where_its_result_is_asked_for(whole):
    def fails():
        raise ValueError("the third failed")

    queue = parallel.ahead([lambda: 1, lambda: 2, fails, lambda: 4])  # no error here
    assert [queue.result(0), queue.result(1), queue.result(3)] == [1, 2, 4]
    with pytest.raises(ValueError, match="third"):
        queue.result(2)
    queue.join()


def test_a_tests_threads_do_not_reach_the_next_test(pytester):
    """conftest's thread_variables_restored: `--threads 2` run in the pytest process by one test
    (as test_train_command's in-process runs do) leaves the next test's environment as it was."""
    pytester.makeconftest((Path(__file__).parent / "conftest.py").read_text())
    pytester.makepyfile(test_two="""
        import os
        from scratchnst.cli import parser

        def test_sets():
            parser._set_threads(2)
            assert os.environ["SCRATCHNST_WORKERS"] == "2"

        def test_next():
            assert os.environ.get("SCRATCHNST_WORKERS") == BEFORE
        """.replace("BEFORE", repr(os.environ.get(parallel.WORKERS_VARIABLE))))
    pytester.runpytest_inprocess("-p", "no:randomly", "-p", "no:cacheprovider").assert_outcomes(passed=2)

"""Pieces of splits in helper processes (piece_processes) over shared memory (shared_arena).

What is checked: the arena's arrays and their descriptions; the arguments a job carries; and, where
helpers can run (x86-64 Linux with memfd), that a network step whose pieces went to a helper is the
same, bit for bit, as the same step with thread pieces; that a piece failing in the helper raises
its own exception in the caller; that a helper killed mid-run costs nothing but speed; that a forked
child does not use its parent's helpers; that a helper ends with its parent.
"""

import math
import os
import signal
import subprocess
import sys
import textwrap
import time

import numpy as np
import pytest

from scratchnst import fast_pool, parallel, piece_processes, shared_arena

pytestmark = pytest.mark.helper_processes

needs_helpers = pytest.mark.skipif(not piece_processes.supported(),
                                   reason="helper processes run on x86-64 Linux with memfd_create only")


# ----------------------------------------------------------------------------------------- the arena
@pytest.fixture
def arena():
    if not shared_arena.available():
        pytest.skip("no memfd_create here")
    return shared_arena.Arena()


def test_arena_arrays_are_aligned_shaped_and_found(arena):
    a = arena.empty((3, 5, 7), np.float32)
    assert a.shape == (3, 5, 7) and a.dtype == np.float32 and a.flags.c_contiguous
    assert a.ctypes.data % shared_arena.ALIGN == 0
    index, offset = arena.where(a)
    assert arena.where(a[1:, ::-1, 2]) == (index, offset + a[1:, ::-1, 2].ctypes.data - a.ctypes.data)
    assert arena.where(np.empty((3, 5, 7), np.float32)) is None
    assert arena.where(a[:0]) is None   # nothing to share


@pytest.mark.parametrize("view", [lambda a: a, lambda a: a.T, lambda a: a[::-1, 1:, ::2], lambda a: a[2, ::-3]])
def test_a_description_rebuilds_the_same_view_of_the_same_memory(arena, view):
    a = arena.empty((4, 6, 9), np.float64)
    a[...] = np.arange(a.size).reshape(a.shape)
    v = view(a)
    mapped = {index: segment.memory for index, segment in arena._segments.items()}
    rebuilt = shared_arena.view(mapped, shared_arena.describe(v, arena.where(v)))
    np.testing.assert_array_equal(rebuilt, v)
    assert rebuilt.strides == v.strides
    rebuilt[...] = -1   # the same bytes
    assert (v == -1).all()


def test_an_array_too_big_for_any_memory_is_refused_as_numpy_refuses_it(arena):
    for shape in [(2**40, 2**40), (2**31, 2**31, 4)]:
        with pytest.raises(ValueError, match="array is too big"):
            arena.empty(shape, np.float32)
        with pytest.raises(ValueError, match="array is too big"):
            np.empty(shape, np.float32)


def test_a_freed_block_serves_a_smaller_request_up_to_half_its_size(arena):
    a = arena.empty(1000, np.float32)   # 4000 bytes
    place = arena.where(a)
    del a
    assert arena.where(arena.empty(3000, np.uint8)) == place   # 3008 of its 4032: taken
    c = arena.empty(1000, np.float32)
    place_c = arena.where(c)
    del c
    assert arena.where(arena.empty(1000, np.uint8)) != place_c   # a quarter of it: new memory instead


def test_freed_blocks_are_reused_and_unused_segments_given_back(arena):
    arena.begin()
    a = arena.empty(1000, np.float32)
    place = arena.where(a)
    del a
    b = arena.empty(1000, np.float32)   # the same size: the same block
    assert arena.where(b) == place
    big = arena.empty(shared_arena.SEGMENT_BYTES // 4 + 1, np.float32)   # larger than a segment: one of its own
    big_segment = arena.where(big)[0]
    del big
    arena.trim()   # this run used it: kept for the next
    assert big_segment in arena._segments
    arena.begin()
    arena.trim()   # the next run did not: given back; the one b lives in stays
    assert big_segment not in arena._segments and arena.where(b) == place


# --------------------------------------------------------------------------------------- a job's args
def test_arguments_go_by_place_or_as_values(arena):
    inside = arena.empty((2, 3), np.float32)
    outside = np.arange(6.0).reshape(3, 2).T   # a transposed view: copied as the same transpose
    keep = []
    encoded = piece_processes.encode_args(
        (inside, outside, np.float32(1.5), np.dtype("int16"), None, "x", 3, (1, [2.5, None]), True),
        {0}, arena, keep)
    assert len(keep) == 1
    mapped = {index: segment.memory for index, segment in arena._segments.items()}
    args = piece_processes.decode_args(encoded, mapped)
    args[0][...] = 7   # the same bytes, mapped again
    assert (inside == 7).all()
    np.testing.assert_array_equal(args[1], outside)
    assert args[1].strides == outside.strides
    assert type(args[2]) is np.float32 and args[2] == 1.5
    assert args[3] == np.dtype("int16") and args[4:] == (None, "x", 3, (1, [2.5, None]), True)


def test_what_cannot_go_to_a_helper_is_refused(arena):
    # an output outside shared memory: what the helper wrote would be lost
    with pytest.raises(piece_processes.NotShareable):
        piece_processes.encode_args((np.zeros(3),), {0}, arena, [])
    with pytest.raises(piece_processes.NotShareable):
        piece_processes.encode_args((np.array([object()]),), set(), arena, [])
    with pytest.raises(piece_processes.NotShareable):
        piece_processes.encode_args(({"a": 1},), set(), arena, [])
    with pytest.raises(piece_processes.NotShareable):
        piece_processes.function_name(lambda start, stop: None)
    assert piece_processes.function_name(fast_pool._max_forward_piece) == ("scratchnst.fast_pool",
                                                                          "_max_forward_piece")


def test_every_module_with_pieces_for_helpers_is_one_they_import_before_they_start():
    import ast
    from pathlib import Path

    package = Path(piece_processes.__file__).parent
    found = set()
    for path in package.rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text(encoding="utf8"))):
            if (isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute) and node.func.attr == "split"
                    and isinstance(node.func.value, ast.Name) and node.func.value.id == "parallel"
                    and any(keyword.arg == "args" for keyword in node.keywords)):
                found.add("scratchnst." + ".".join(path.relative_to(package).with_suffix("").parts))
    assert found and found <= set(piece_processes.PIECE_MODULES)
    assert set(piece_processes.PIECE_MODULES) <= found   # none listed for nothing


# ------------------------------------------------------------------------------------------ helpers
@pytest.fixture
def two_workers():
    parallel.stop_helpers()
    previous = parallel.set_workers(2)
    yield
    parallel.stop_helpers()
    parallel.set_workers(previous)


def _helpers_ready():
    """Inside hold(): wait until the helper has started (a Python start, well under a second)."""
    deadline = time.monotonic() + 30
    while not parallel._ready_helpers(parallel.workers() - 1):
        assert time.monotonic() < deadline, "the helper process did not start"
        time.sleep(0.01)


@pytest.fixture
def jobs(monkeypatch):
    """How many jobs went to helpers."""
    started = []
    real = piece_processes.Helper.start
    monkeypatch.setattr(piece_processes.Helper, "start", lambda self, *a: started.append(1) or real(self, *a))
    return started


def _step(net, x, grads):
    net.forward(x, list(grads))
    return net.backward(grads)


@needs_helpers
@pytest.mark.parametrize("model, pooling, layers, least_jobs", [
    ("squeezenet", "max", ["conv1", "fire3", "fire5", "fire9"], 20),   # fire modules, pools, conv1 (im2col)
    ("vgg19", "avg", ["block1_conv1", "block2_conv2", "block3_conv1"], 6),   # tap planes, 1x1-free convs, pools
])
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_a_step_with_helper_pieces_is_the_same_bits_as_with_thread_pieces(two_workers, jobs, monkeypatch, dtype,
                                                                          model, pooling, layers, least_jobs):
    from scratchnst import fast_conv, networks
    from scratchnst.cli import bench

    monkeypatch.setattr(fast_conv, "_SPLIT_LEAST_WORK", 1)   # every layer cut, however small
    monkeypatch.setattr(fast_pool, "SPLIT_LEAST_ELEMENTS", 1)
    rng = np.random.default_rng(3)
    x = rng.uniform(-100, 100, (1, 71, 57, 3)).astype(dtype)
    with parallel.hold():
        _helpers_ready()
        net = networks.Network(model, bench.random_params(model, dtype=dtype), pooling=pooling, dtype=dtype)
        acts = net.forward(x, layers)
        grads = {name: rng.standard_normal(a.shape).astype(dtype) for name, a in acts.items()}
        jobs.clear()
        in_helpers = _step(net, x, grads)
        acts_in_helpers = {name: a.copy() for name, a in net.forward(x, list(grads)).items()}
        assert len(jobs) >= least_jobs
        monkeypatch.setattr(parallel, "_ready_helpers", lambda count: [])   # the same splits, as threads
        jobs.clear()
        in_threads = _step(net, x, grads)
        acts_in_threads = net.forward(x, list(grads))
        assert jobs == []
    np.testing.assert_array_equal(in_helpers, in_threads)
    for name in grads:
        np.testing.assert_array_equal(acts_in_helpers[name], acts_in_threads[name])


@needs_helpers
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("KH, stride", [(3, 1), (3, 2), (5, 3), (1, 2)])   # pieces overlapping or not
def test_the_input_gradient_of_an_rgb_convolution_in_helpers_is_the_same_bits_as_in_threads(
        two_workers, jobs, monkeypatch, dtype, KH, stride):
    from scratchnst import tap_planes

    monkeypatch.setattr(tap_planes, "_GRADIENT_BLOCK", 40)   # blocks of 2 rows: each piece has several
    rng = np.random.default_rng(5)
    w = rng.standard_normal((KH, KH, 3, 16)).astype(dtype)
    shape = (2, (23 - 1) * stride + KH + 1, (20 - 1) * stride + KH, 3)
    with parallel.hold():
        _helpers_ready()
        dout, mask = parallel.empty((2, 23, 20, 16), dtype), parallel.empty((2, 23, 20, 16), dtype)
        dout[...] = rng.standard_normal(dout.shape)
        mask[...] = rng.standard_normal(mask.shape)
        in_helpers = tap_planes.input_gradient(dout, w, stride, shape, mask=mask, least=4)
        assert len(jobs) == 1
        monkeypatch.setattr(parallel, "_ready_helpers", lambda count: [])
        threads, real = set(), tap_planes._gradient_band

        def noted(*args):
            import threading

            threads.add(threading.get_ident())
            return real(*args)

        monkeypatch.setattr(tap_planes, "_gradient_band", noted)
        in_threads = tap_planes.input_gradient(dout, w, stride, shape, mask=mask, least=4)
        assert len(threads) == 2 and len(jobs) == 1   # the same pieces, in two threads
    np.testing.assert_array_equal(in_helpers, in_threads)
    exact = tap_planes.input_gradient(dout.astype(np.float64), w.astype(np.float64), stride, shape, mask=mask,
                                      least=10**6)   # one piece
    np.testing.assert_allclose(in_helpers, exact, rtol=1e-4, atol=1e-5 * np.abs(exact).max())


def test_an_input_gradient_piece_run_twice_gives_what_it_gives_once():
    from scratchnst import tap_planes

    rng = np.random.default_rng(6)
    dout = rng.standard_normal((1, 9, 7, 8))
    w_cols = rng.standard_normal((3 * 3 * 3, 8))
    targets = (np.empty((1, 3, 4 * 2 + 3, 17)),)   # output rows 3..7 (stride 2) reach padded rows 6..16
    tap_planes._gradient_band(3, 8, dout, w_cols, None, 2, 3, 3, 2, (3,), targets)
    once = targets[0].copy()
    tap_planes._gradient_band(3, 8, dout, w_cols, None, 2, 3, 3, 2, (3,), targets)
    np.testing.assert_array_equal(targets[0], once)
    assert np.abs(once).max() > 0


@needs_helpers
def test_a_piece_that_fails_in_the_helper_raises_its_own_error_here(two_workers, jobs):
    with parallel.hold():
        _helpers_ready()
        # math.ldexp(start, stop): 0.0 for the caller's piece (0, 2000), OverflowError for the helper's
        with pytest.raises(OverflowError):
            parallel.split(math.ldexp, 4000, args=())
        assert len(jobs) == 1
        assert parallel.split(math.ldexp, 4, args=()) == [0.0, None]   # the helper is still of use
        assert len(jobs) == 2 and parallel._helpers


@needs_helpers
def test_a_helper_killed_in_a_run_costs_speed_not_results(two_workers, jobs, monkeypatch):
    monkeypatch.setattr(fast_pool, "SPLIT_LEAST_ELEMENTS", 1)
    x = np.random.default_rng(0).standard_normal((1, 64, 64, 8))
    expected, _ = fast_pool.max_pool_forward(x, 3, 2)
    with parallel.hold():
        _helpers_ready()
        helper = parallel._helpers[0]
        os.kill(helper._proc.pid, signal.SIGKILL)
        helper._proc.wait()
        for _ in range(3):
            out, _ = fast_pool.max_pool_forward(x, 3, 2)
            np.testing.assert_array_equal(out, expected)
        assert len(jobs) == 1   # the first split found it gone
        assert parallel._helpers == [] and parallel._no_helpers   # the pieces are threads from now on


@needs_helpers
def test_an_output_outside_shared_memory_keeps_the_pieces_in_threads(two_workers, jobs):
    with parallel.hold():
        _helpers_ready()
        out = np.zeros(4)
        parallel.split(_fill, 4, args=(out,), writes=(0,))
        np.testing.assert_array_equal(out, [0, 1, 2, 3])
        assert jobs == []


@needs_helpers
def test_while_a_helper_starts_the_pieces_run_one_after_another_in_the_calling_thread(two_workers, jobs,
                                                                                       monkeypatch):
    import threading

    monkeypatch.setattr(piece_processes.Helper, "ready", lambda self: False)   # starting, for ever
    seen = []
    with parallel.hold():
        out = parallel.empty(4, np.float64)
        parallel.split(_fill, 4, args=(out, seen), writes=(0,))
        assert len(parallel._helpers) == 1 and jobs == []
    assert seen == [(threading.get_ident(), 0, 2), (threading.get_ident(), 2, 4)]
    np.testing.assert_array_equal(out, [0, 1, 2, 3])
    monkeypatch.setattr(parallel, "_no_helpers", True)   # none coming: threads, as before
    seen.clear()
    with parallel.hold():
        parallel.split(_fill, 4, args=(np.zeros(4), seen), writes=(0,))
    assert {ident for ident, _, _ in seen} != {threading.get_ident()}


@needs_helpers
def test_a_helper_late_to_start_or_too_few_helpers_leave_the_pieces_in_threads(two_workers, jobs, monkeypatch):
    import threading

    seen = []
    monkeypatch.setattr(piece_processes.Helper, "ready", lambda self: False)
    monkeypatch.setattr(parallel, "_STARTING_SECONDS", 0.0)   # it should have been ready by now
    with parallel.hold():
        parallel.split(_fill, 4, args=(np.zeros(4), seen), writes=(0,))
    assert len({ident for ident, _, _ in seen}) == 2 and jobs == []
    monkeypatch.undo()
    parallel.set_workers(2)
    seen.clear()
    with parallel.hold():
        _helpers_ready()
        parallel.set_workers(3)   # three pieces and one helper: threads, as before there were helpers
        parallel.split(_fill, 6, args=(np.zeros(6), seen), writes=(0,))
    assert len({ident for ident, _, _ in seen}) >= 2 and jobs == []   # not all here (the pool was made for 2)
    assert [(start, stop) for _, start, stop in sorted(seen, key=lambda s: s[1])] == [(0, 2), (2, 4), (4, 6)]


def _fill(start, stop, out, seen=None):   # not importable by a helper anyway: a test module
    out[start:stop] = np.arange(start, stop)
    if seen is not None:
        import threading

        seen.append((threading.get_ident(), start, stop))


@needs_helpers
def test_a_run_without_pieces_starts_no_helper_and_keeps_its_spinners(two_workers):
    from scratchnst import awake_cores

    with parallel.hold(pieces=False):
        assert parallel._helpers == []
    with parallel.hold():
        assert len(parallel._helpers) == 1
        if awake_cores.enabled(parallel._cores()[:2]):
            assert not awake_cores._depth   # the helper keeps its core awake itself


@needs_helpers
def test_a_forked_child_has_its_own_memory_and_no_helpers(two_workers):
    with parallel.hold():
        _helpers_ready()
        a = parallel.empty((1000,), np.float64)
        assert parallel._arena.where(a) is not None
        a[...] = 1.0

        def child():   # nothing of the parent's helpers, and its arrays its own (copy-on-write)
            ok = parallel._helpers == [] and parallel._arena is None and parallel._held_depth == 0
            ok = ok and (a == 1.0).all()
            a[...] = 2.0
            links = [os.readlink(f"/proc/self/fd/{fd}") for fd in os.listdir("/proc/self/fd")
                     if os.path.islink(f"/proc/self/fd/{fd}")]
            return ok and not any("scratchnst-arena" in link for link in links)   # the parent's memory not held

        assert _in_a_child(child)
        assert (a == 1.0).all()   # the child's write stayed in the child


def _in_a_child(check):
    """Fork; check() in the child, with whatever the caller holds at the fork; what it returned, here."""
    read, write = os.pipe()
    pid = os.fork()
    if pid == 0:
        _report(write, check)
    return _verdict(pid, read, write)


def _report(write, check):
    """In a forked child: check()'s verdict to the parent, then out."""
    try:
        os.write(write, b"1" if check() else b"0")
    finally:
        os._exit(0)


def _verdict(pid, read, write):
    os.close(write)
    try:
        return os.read(read, 1) == b"1"
    finally:
        os.waitpid(pid, 0)
        os.close(read)


def test_an_array_freed_while_the_arena_allocates_does_not_wait_for_the_arena(arena):
    """A collection can start at any allocation, the arena's own included, and free an arena array
    (one in a cycle): its finalizer then runs under the arena's lock. It once took that lock too and
    waited for itself (a test suite hung in Network.__init__)."""
    import threading

    box = [arena.empty(10, np.float32)]
    place = arena.where(box[0])

    def free_under_the_lock():
        with arena._lock:
            box.clear()   # the last reference: the finalizer runs here, as in a collection

    thread = threading.Thread(target=free_under_the_lock, daemon=True)
    thread.start()
    thread.join(10)
    assert not thread.is_alive(), "the finalizer waited for the lock its own thread held"
    assert arena.where(arena.empty(10, np.float32)) == place   # and the block came back


@pytest.mark.parametrize("size, stride, shape", [(3, 2, (1, 15, 15, 4)), (2, 3, (2, 11, 10, 3)), (3, 1, (1, 7, 6, 2))])
def test_a_pooling_backward_piece_run_twice_gives_the_same_cells(size, stride, shape):
    """The caller runs a piece again when a helper failed it, maybe half-way: pieces must not add twice."""
    rng = np.random.default_rng(5)
    x = rng.standard_normal(shape)
    for forward, backward, piece in ((fast_pool.max_pool_forward, fast_pool.max_pool_backward,
                                      fast_pool._max_backward_piece),
                                     (fast_pool.avg_pool_forward, fast_pool.avg_pool_backward,
                                      fast_pool._avg_backward_piece)):
        out, cache = forward(x, size, stride)
        dout = rng.standard_normal(out.shape)
        expected = backward(dout, cache)
        H_out = out.shape[1]
        dxpad = np.full(x.shape, np.nan)
        args = (dout, cache[1], size, stride) if piece is fast_pool._max_backward_piece else (
            dout / fast_pool.layers._avg_pool_counts(x.shape, size, stride, "valid", dout.dtype), size, stride)
        for start, stop in ((0, H_out // 2), (H_out // 2, H_out), (H_out // 2, H_out)):   # the second piece twice
            piece(start, stop, *args, dxpad)
        np.testing.assert_array_equal(dxpad, expected)


@needs_helpers
def test_a_helper_ends_with_its_parent(tmp_path):
    script = textwrap.dedent("""
        import os, sys, time
        from scratchnst import parallel
        parallel.set_workers(2)
        with parallel.hold():
            while not parallel._ready_helpers(1):
                time.sleep(0.01)
            print(parallel._helpers[0]._proc.pid, flush=True)
            os.kill(os.getpid(), 9)   # no clean-up of any kind
    """)
    proc = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=60,
                          env={**os.environ, "SCRATCHNST_WORKERS": "2"})
    pid = int(proc.stdout.split()[0])
    deadline = time.monotonic() + 10
    while os.path.exists(f"/proc/{pid}") and time.monotonic() < deadline:
        try:   # not our child: it was the dead parent's; reaped by init, or a zombie until then
            with open(f"/proc/{pid}/stat") as f:
                if f.read().split(")")[1].split()[0] == "Z":
                    break
        except OSError:
            break
        time.sleep(0.05)
    assert time.monotonic() < deadline, "the helper outlived its parent"


@needs_helpers
def test_stylize_with_helper_pieces_paints_the_same_picture(two_workers, jobs, monkeypatch, squeezenet_weights_path,
                                                             shared_image):
    from scratchnst import transfer

    def paint():
        result = transfer.stylize(shared_image("tubingen.jpg"), shared_image("starry_night.jpg"),
                                  weights=squeezenet_weights_path, size=96, iters=6)
        return result.image, [row["J"] for row in result.history]

    with parallel.hold():
        _helpers_ready()
        image_helpers, costs_helpers = paint()
        assert jobs   # the forward passes' splits went to the helper
        monkeypatch.setattr(parallel, "_ready_helpers", lambda count: [])
        jobs.clear()
        image_threads, costs_threads = paint()
        assert jobs == []
    np.testing.assert_array_equal(image_helpers, image_threads)
    assert costs_helpers == costs_threads


@needs_helpers
def test_a_child_forked_inside_a_run_starts_its_own_runs_afresh(two_workers):
    def child():   # it leaves its parent's hold() first: nothing of that counts here
        ok = parallel._held_depth == 0
        with parallel.hold():
            ok = ok and parallel._held_depth == 1 and parallel.empty(3, np.float32) is not None
            deadline = time.monotonic() + 30
            while not parallel._ready_helpers(1) and time.monotonic() < deadline:
                time.sleep(0.01)
            out, _ = fast_pool.max_pool_forward(np.ones((1, 9, 9, 2)), 3, 2)
            ok = ok and parallel._ready_helpers(1) != [] and (out == 1).all()
        ok = ok and parallel._held_depth == 0
        parallel.stop_helpers()
        return ok

    read, write = os.pipe()
    with parallel.hold():
        _helpers_ready()
        pid = os.fork()
    if pid == 0:
        _report(write, child)
    assert _verdict(pid, read, write)

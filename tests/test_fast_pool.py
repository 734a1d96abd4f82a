"""scratchnst.fast_pool: the networks' pooling gives the readable layers' results, to the last bit.

Splitting across the cores is tested in test_parallel; here one worker, bands of every size.
"""

import itertools

import numpy as np
import pytest

from scratchnst import fast_pool, layers, parallel

KINDS = ("max", "avg")


@pytest.fixture(autouse=True)
def one_worker():
    previous = parallel.set_workers(1)
    yield
    parallel.set_workers(previous)


def _pair(kind):
    """(layers forward, layers backward, fast forward, fast backward) of a kind of pooling."""
    return (getattr(layers, f"{kind}_pool_forward"), getattr(layers, f"{kind}_pool_backward"),
            getattr(fast_pool, f"{kind}_pool_forward"), getattr(fast_pool, f"{kind}_pool_backward"))


def _input(rng, shape, values, dtype):
    x = rng.standard_normal(shape)
    if values == "ties":  # a ReLU's output rounded: many windows with several equal maxima, zeros above all
        x = np.maximum(np.round(x), 0)
    elif values == "nan":  # NaN wins a max window (its last one in row-major order), inf too
        x[rng.random(shape) < 0.1] = np.nan
        x[rng.random(shape) < 0.05] = np.inf
        x[rng.random(shape) < 0.05] = -np.inf
    return x.astype(dtype)


@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("band_bytes", [1, 300, fast_pool.BAND_BYTES])
@pytest.mark.parametrize("values", ["normal", "ties", "nan"])
def test_the_same_out_cache_and_gradient_as_layers(kind, band_bytes, values, monkeypatch):
    monkeypatch.setattr(fast_pool, "BAND_BYTES", band_bytes)  # 1: a band per output row
    L_forward, L_backward, F_forward, F_backward = _pair(kind)
    rng = np.random.default_rng(0)
    checked = 0
    for size, stride, padding, N in itertools.product([1, 2, 3, 4, 5], [1, 2, 3], ["valid", "same"], [1, 2]):
        shape = (N, int(rng.integers(size, size + 9)), int(rng.integers(size, size + 9)), int(rng.integers(1, 4)))
        x = _input(rng, shape, values, np.float64)
        with np.errstate(invalid="ignore"):  # inf + -inf in an average: NaN, in both
            out, cache = L_forward(x, size, stride, padding)
            fast_out, fast_cache = F_forward(x, size, stride, padding)
        np.testing.assert_array_equal(fast_out, out)
        if kind == "max":  # the argmax, its dtype too: either backward pass takes either cache
            assert fast_cache[1].dtype == cache[1].dtype
            np.testing.assert_array_equal(fast_cache[1], cache[1])
        dout = rng.standard_normal(out.shape)
        dx = L_backward(dout, cache)
        np.testing.assert_array_equal(F_backward(dout, cache), dx)
        np.testing.assert_array_equal(F_backward(dout, fast_cache), dx)
        np.testing.assert_array_equal(L_backward(dout, fast_cache), dx)
        checked += 1
    assert checked == 5 * 3 * 2 * 2


@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("size", [1, 2, 3])
def test_negative_zeros_come_out_as_layers_gives_them(kind, size):
    """The forward pass to the last bit, the sign of zero too (layers' average adds to +0.0 first)."""
    x = np.full((1, 6, 5, 2), -0.0, np.float32)
    x[0, 0, 0, 0] = -1.0
    L_forward, _, F_forward, _ = _pair(kind)
    out, fast_out = L_forward(x, size, 1)[0], F_forward(x, size, 1)[0]
    np.testing.assert_array_equal(np.signbit(fast_out), np.signbit(out))
    np.testing.assert_array_equal(fast_out, out)


@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("dtype", [np.float16, np.float32, np.float64])
def test_keeps_the_dtype_and_writes_into_nothing_it_is_given(kind, dtype):
    L_forward, L_backward, F_forward, F_backward = _pair(kind)
    rng = np.random.default_rng(1)
    x = _input(rng, (2, 15, 13, 5), "normal", dtype)
    x_before = x.copy()
    out, cache = F_forward(x, 3, 2)
    cache_before = [a.copy() if isinstance(a, np.ndarray) else a for a in cache]
    dout = rng.standard_normal(out.shape).astype(dtype)
    dout_before = dout.copy()
    dx = F_backward(dout, cache)
    assert out.dtype == dx.dtype == dtype and dx.shape == x.shape and dx.flags.c_contiguous
    np.testing.assert_array_equal(out, L_forward(x, 3, 2)[0])
    np.testing.assert_array_equal(dx, L_backward(dout, L_forward(x, 3, 2)[1]))
    np.testing.assert_array_equal(x, x_before)
    np.testing.assert_array_equal(dout, dout_before)
    for now, before in zip(cache, cache_before):
        np.testing.assert_array_equal(now, before)


def test_a_first_pool_of_squeezenet_size_in_float32_and_its_bands():
    """The shape that made this module (255x255x64 at 512 px), bands of the default size."""
    rng = np.random.default_rng(2)
    x = np.maximum(rng.standard_normal((1, 255, 255, 16)), 0).astype(np.float32)
    out, cache = fast_pool.max_pool_forward(x, 3, 2)
    assert fast_pool._band_rows(x, 2, 127) < 127  # more than one band
    whole, whole_cache = layers.max_pool_forward(x, 3, 2)
    np.testing.assert_array_equal(out, whole)
    dout = rng.standard_normal(out.shape).astype(np.float32)
    np.testing.assert_array_equal(fast_pool.max_pool_backward(dout, cache), layers.max_pool_backward(dout, whole_cache))


@pytest.mark.parametrize("kind", KINDS)
def test_the_same_errors_as_layers(kind):
    L_forward, L_backward, F_forward, F_backward = _pair(kind)
    x = np.ones((1, 5, 5, 2), np.float32)
    for bad in ((np.ones((1, 5, 5, 2), np.int32), 2, 2), (x, 0, 2), (x, 2, 0), (x, 7, 1), (x, 2, 2, "full")):
        with pytest.raises((TypeError, ValueError)) as expected:
            L_forward(*bad)
        with pytest.raises(type(expected.value)) as got:
            F_forward(*bad)
        assert str(got.value) == str(expected.value)
    _, cache = F_forward(x, 2, 2)
    with pytest.raises(ValueError) as expected:
        L_backward(np.ones((1, 3, 2, 2), np.float32), cache)
    with pytest.raises(ValueError) as got:
        F_backward(np.ones((1, 3, 2, 2), np.float32), cache)
    assert str(got.value) == str(expected.value)


def test_the_networks_pool_with_it(monkeypatch):
    """A network's step goes through fast_pool, max or average as the network was loaded."""
    from scratchnst import networks
    from scratchnst.cli import bench

    used = []
    for name in ("max_pool_forward", "max_pool_backward", "avg_pool_forward", "avg_pool_backward"):
        original = getattr(fast_pool, name)
        monkeypatch.setattr(fast_pool, name, lambda *a, _f=original, _n=name, **k: used.append(_n) or _f(*a, **k))
    for pooling in ("max", "avg"):
        net = networks.Network("squeezenet", bench.random_params("squeezenet"), pooling=pooling)
        x = np.random.default_rng(3).uniform(-100, 100, (1, 40, 40, 3)).astype(np.float32)
        acts = net.forward(x, ["fire3"])
        net.backward({"fire3": np.ones_like(acts["fire3"])})
    assert used == ["max_pool_forward", "max_pool_backward", "avg_pool_forward", "avg_pool_backward"]


def test_pools_are_cut_from_half_as_many_elements_where_the_pieces_go_to_helper_processes(monkeypatch):
    x = np.zeros((1, 100, 64, 64), np.float32)   # 2 * 64 * 64 = 8192 input elements per output row (stride 2)
    for in_processes, rows in [(False, fast_pool.SPLIT_LEAST_ELEMENTS // 8192),
                               (True, fast_pool.SPLIT_LEAST_ELEMENTS // 2 // 8192)]:
        monkeypatch.setattr(parallel, "splits_in_processes", lambda fn, answer=in_processes: answer)
        assert fast_pool._least_rows(x, 2, fast_pool._max_forward_piece) == rows
    monkeypatch.setattr(fast_pool, "SPLIT_LEAST_ELEMENTS", 1)   # tests' "cut everything": one row, not none
    assert fast_pool._least_rows(x, 2, fast_pool._max_forward_piece) == 1

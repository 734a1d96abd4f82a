"""The layers against PyTorch, against finite differences, against their loop versions, and their contracts.

Tolerances:
- float64 against PyTorch, forward and backward: rel_error < 1e-10 (only summation order differs).
- float64 against centred finite differences: rel_error < 1e-7.
- float64 against the loop versions: rel_error < 1e-10.
- float32 against PyTorch: largest difference below 1e-4 of the largest magnitude (norm-relative:
  float32 keeps ~7 digits, and outputs near zero that are differences of large sums have no
  meaningful elementwise relative error).
"""

import itertools
import zlib

import numpy as np
import pytest

from scratchnst import fast_conv, fast_pool, layers, tap_planes, torch_ref
from scratchnst.gradcheck import eval_numerical_gradient_array, rel_error

TORCH_TOL = 1e-10
NUMERIC_TOL = 1e-7
FLOAT32_TOL = 1e-4


# The readable convolution (the course's exercise) and the fast one the networks run: every
# convolution test runs on both, so that each is proven against PyTorch and the loops on its own.
CONVS = pytest.mark.parametrize("conv", [layers, fast_conv], ids=["readable", "fast"])


def seed_of(*params):
    """A seed fixed by a test's parameters (Python's hash() of strings changes between runs)."""
    return zlib.crc32(repr(params).encode())


def scale_error(x, y):
    """max |x - y| / max |y|: relative error on the scale of the whole array."""
    x, y = np.asarray(x, np.float64), np.asarray(y, np.float64)
    return float(np.max(np.abs(x - y)) / max(np.max(np.abs(y)), 1e-30))


def torch_grads(torch_fn, inputs, dout):
    """PyTorch's output and gradients of sum(out * dout) for NumPy inputs (dict)."""
    tensors = {k: torch_ref.to_torch(v, requires_grad=True) for k, v in inputs.items()}
    out = torch_fn(**tensors)
    (out * torch_ref.to_torch(dout)).sum().backward()
    return torch_ref.to_numpy(out), [torch_ref.to_numpy(t.grad) for t in tensors.values()]


# ---------------------------------------------------------------------------- output sizes
@pytest.mark.parametrize("n,k,stride,padding,expected", [
    (7, 3, 1, "same", (7, 1, 1)),
    (8, 3, 2, "same", (4, 0, 1)),   # odd total padding: the extra zero goes after, as TensorFlow
    (7, 3, 2, "same", (4, 1, 1)),
    (9, 7, 2, "same", (5, 3, 3)),
    (6, 1, 2, "same", (3, 0, 0)),
    (7, 2, 2, "valid", (3, 0, 0)),  # floor
    (9, 3, 2, "valid", (4, 0, 0)),
    (7, 5, 1, 2, (7, 2, 2)),
    (10, 7, 2, 3, (5, 3, 3)),
])
def test_conv_output_size_matches_keras_rules(n, k, stride, padding, expected):
    assert layers.conv_output_size(n, k, stride, padding) == expected


@pytest.mark.parametrize("padding", ["full", -1, 1.5, None, True])
def test_conv_output_size_rejects_unknown_padding(padding):
    with pytest.raises(ValueError, match="padding"):
        layers.conv_output_size(7, 3, 1, padding)


@CONVS
def test_too_small_input_is_a_clear_error(conv):
    with pytest.raises(ValueError, match="too small"):
        conv.conv2d_forward(np.zeros((1, 2, 2, 3)), np.zeros((3, 3, 3, 4)), np.zeros(4), 1, "valid")
    with pytest.raises(ValueError, match="too small"):
        layers.max_pool_forward(np.zeros((1, 2, 5, 3)), 3, 2)


@CONVS
def test_same_padding_tensorflow_vs_symmetric(conv):
    # stride 2, 3x3 on an even size: TensorFlow pads (0, 1); symmetric (1, 1) padding would read
    # a different window for every output, so outputs differ. Guard the asymmetric convention.
    rng = np.random.default_rng(0)
    x, w, b = rng.standard_normal((1, 8, 8, 2)), rng.standard_normal((3, 3, 2, 3)), np.zeros(3)
    out, _ = conv.conv2d_forward(x, w, b, 2, "same")
    xpad = np.pad(x, ((0, 0), (0, 1), (0, 1), (0, 0)))
    expected = np.einsum("hwc,hwco->o", xpad[0, 2:5, 4:7], w)  # output (1, 2) reads rows 2..4, cols 4..6
    np.testing.assert_allclose(out[0, 1, 2], expected, rtol=1e-12)


# ---------------------------------------------------------------------- convolution vs PyTorch
CONV_CONFIGS = [
    (k, stride, padding)
    for k, stride, padding in itertools.product((1, 3, 5, 7), (1, 2), ("same", "valid", 0, 1, 3))
]
CONV_SHAPES = [  # (N, H, W, C_in, C_out): odd sizes, batch 1 and 3, few and many channels
    (1, 7, 9, 3, 4),
    (3, 9, 8, 16, 12),
    (1, 10, 11, 1, 2),
]


@CONVS
@pytest.mark.parametrize("shape", CONV_SHAPES, ids=lambda s: "x".join(map(str, s)))
@pytest.mark.parametrize("k,stride,padding", CONV_CONFIGS)
def test_conv_matches_torch_float64(conv, k, stride, padding, shape, torch):
    N, H, W, C_in, C_out = shape
    if (padding == "valid" or padding == 0) and k > min(H, W):
        pytest.skip("window larger than the input")
    rng = np.random.default_rng(seed_of((k, stride, str(padding), shape)))
    inputs = {"x": rng.standard_normal((N, H, W, C_in)), "w": rng.standard_normal((k, k, C_in, C_out)),
              "b": rng.standard_normal(C_out)}
    out, cache = conv.conv2d_forward(inputs["x"], inputs["w"], inputs["b"], stride, padding)
    dout = rng.standard_normal(out.shape)
    dx, dw, db = conv.conv2d_backward(dout, cache)
    ref_out, (ref_dx, ref_dw, ref_db) = torch_grads(
        lambda x, w, b: torch_ref.conv2d(x, w, b, stride, padding), inputs, dout)
    assert out.shape == ref_out.shape
    assert rel_error(out, ref_out) < TORCH_TOL
    assert rel_error(dx, ref_dx) < TORCH_TOL
    assert rel_error(dw, ref_dw) < TORCH_TOL
    assert rel_error(db, ref_db) < TORCH_TOL
    # the no-weight-gradient path gives the same dx and does none of the rest
    dx_only, no_dw, no_db = conv.conv2d_backward(dout, cache, weight_grads=False)
    assert no_dw is None and no_db is None
    np.testing.assert_array_equal(dx_only, dx)


@CONVS
def test_conv_non_square_kernel_matches_torch(conv, torch):
    rng = np.random.default_rng(5)
    inputs = {"x": rng.standard_normal((2, 9, 7, 3)), "w": rng.standard_normal((3, 5, 3, 4)),
              "b": rng.standard_normal(4)}
    for stride, padding in [(1, "same"), (2, "same"), (1, "valid")]:
        out, cache = conv.conv2d_forward(*inputs.values(), stride, padding)
        dout = rng.standard_normal(out.shape)
        grads = conv.conv2d_backward(dout, cache)
        ref_out, ref_grads = torch_grads(lambda x, w, b: torch_ref.conv2d(x, w, b, stride, padding), inputs, dout)
        assert rel_error(out, ref_out) < TORCH_TOL
        for g, r in zip(grads, ref_grads):
            assert rel_error(g, r) < TORCH_TOL


@CONVS
@pytest.mark.parametrize("k,stride,padding,C_in", [(3, 1, "same", 3), (3, 1, "same", 32), (3, 2, "valid", 3),
                                                   (1, 1, "same", 64), (5, 2, "same", 16)])
def test_conv_float32_matches_torch(conv, k, stride, padding, C_in, torch):
    rng = np.random.default_rng(7)
    inputs = {"x": rng.standard_normal((2, 33, 29, C_in)).astype(np.float32),
              "w": (rng.standard_normal((k, k, C_in, 24)) / np.sqrt(k * k * C_in)).astype(np.float32),
              "b": rng.standard_normal(24).astype(np.float32)}
    out, cache = conv.conv2d_forward(*inputs.values(), stride, padding)
    dout = rng.standard_normal(out.shape).astype(np.float32)
    grads = conv.conv2d_backward(dout, cache)
    ref_out, ref_grads = torch_grads(lambda x, w, b: torch_ref.conv2d(x, w, b, stride, padding), inputs, dout)
    assert out.dtype == np.float32 and all(g.dtype == np.float32 for g in grads)
    assert scale_error(out, ref_out) < FLOAT32_TOL
    for g, r in zip(grads, ref_grads):
        assert scale_error(g, r) < FLOAT32_TOL


@CONVS
def test_conv_float32_large_matches_torch(conv, torch):
    """The foundation issue's yardstick: (1, 256, 256, 64) with a 3x3x64x64 kernel, to 1e-4."""
    rng = np.random.default_rng(11)
    inputs = {"x": rng.standard_normal((1, 256, 256, 64)).astype(np.float32),
              "w": (rng.standard_normal((3, 3, 64, 64)) / 24).astype(np.float32),
              "b": rng.standard_normal(64).astype(np.float32)}
    out, cache = conv.conv2d_forward(*inputs.values())
    dout = rng.standard_normal(out.shape).astype(np.float32)
    dx, _, _ = conv.conv2d_backward(dout, cache, weight_grads=False)
    ref_out, (ref_dx, _, _) = torch_grads(lambda x, w, b: torch_ref.conv2d(x, w, b), inputs, dout)
    assert scale_error(out, ref_out) < FLOAT32_TOL
    assert scale_error(dx, ref_dx) < FLOAT32_TOL


@CONVS
def test_the_bias_gradient_of_many_positions_keeps_float32_precision(conv):
    """db sums 262,144 positions of each channel: term by term in float32 it was off by 1.2e-5 (PyTorch 1.7e-7)."""
    rng = np.random.default_rng(12)
    x = rng.standard_normal((1, 512, 512, 3)).astype(np.float32)
    w, b = rng.standard_normal((1, 1, 3, 8)).astype(np.float32), np.zeros(8, np.float32)
    dout = rng.uniform(0, 1, (1, 512, 512, 8)).astype(np.float32)
    _, cache = conv.conv2d_forward(x, w, b, 1, "valid")
    db = conv.conv2d_backward(dout, cache)[2]
    exact = dout.sum(axis=(0, 1, 2), dtype=np.float64)
    assert db.dtype == np.float32 and np.max(np.abs(db - exact)) / np.max(np.abs(exact)) < 1e-6


# ------------------------------------------------------------------- pooling and ReLU vs PyTorch
POOLS = {
    "max": (layers.max_pool_forward, layers.max_pool_backward, torch_ref.max_pool),
    "avg": (layers.avg_pool_forward, layers.avg_pool_backward, torch_ref.avg_pool),
}


@pytest.mark.parametrize("kind", ["max", "avg"])
@pytest.mark.parametrize("size,stride", [(2, 2), (3, 2), (3, 1), (2, 1), (3, 3)])
@pytest.mark.parametrize("padding", ["valid", "same"])
@pytest.mark.parametrize("shape", [(1, 7, 9, 3), (3, 8, 8, 5), (2, 13, 10, 1)], ids=lambda s: "x".join(map(str, s)))
def test_pool_matches_torch_float64(kind, size, stride, padding, shape, torch):
    fwd, bwd, ref = POOLS[kind]
    rng = np.random.default_rng(seed_of((kind, size, stride, padding, shape)))
    x = rng.standard_normal(shape)
    out, cache = fwd(x, size, stride, padding)
    dout = rng.standard_normal(out.shape)
    dx = bwd(dout, cache)
    ref_out, (ref_dx,) = torch_grads(lambda x: ref(x, size, stride, padding), {"x": x}, dout)
    assert out.shape == ref_out.shape
    assert rel_error(out, ref_out) < TORCH_TOL
    assert rel_error(dx, ref_dx) < TORCH_TOL


def test_max_pool_ties_go_to_the_first_maximum_as_in_torch(torch):
    # post-ReLU activations are full of exact ties (zeros): the gradient must go to ONE cell
    x = np.zeros((1, 5, 5, 2))
    x[0, 1, 1, 0] = x[0, 1, 2, 0] = 1.0
    for size, stride in [(2, 2), (3, 2), (3, 1)]:
        out, cache = layers.max_pool_forward(x, size, stride)
        dout = np.random.default_rng(0).standard_normal(out.shape)
        dx = layers.max_pool_backward(dout, cache)
        _, (ref_dx,) = torch_grads(lambda x: torch_ref.max_pool(x, size, stride), {"x": x}, dout)
        np.testing.assert_array_equal(dx, ref_dx)
        assert np.isclose(dx.sum(), dout.sum())  # each window's gradient went to exactly one cell


@pytest.mark.parametrize("size,stride", [(3, 1), (2, 1), (4, 1), (5, 2), (3, 2), (5, 3)])
@pytest.mark.parametrize("shape", [(2, 5, 6, 3), (1, 7, 3, 2), (1, 4, 4, 1)], ids=lambda s: "x".join(map(str, s)))
def test_max_pool_same_padding_is_never_chosen_even_against_minus_inf(size, stride, shape, torch):
    """A window of real -inf cells with 'same' padding above or left of them sent its gradient to the
    padding, where it was lost (3 of 4 windows of a 2x2 map of -inf at 3x3 stride 1). TensorFlow never
    chooses padding; PyTorch's own padding neither: the first real cell takes it."""
    x = np.full(shape, -np.inf)
    x[0, -1, -1, 0] = 1.0   # one real maximum, and windows of -inf around it
    x[-1, 0, min(1, shape[2] - 1), -1] = np.nan
    versions = [(layers.max_pool_forward, layers.max_pool_backward),
                (fast_pool.max_pool_forward, fast_pool.max_pool_backward),
                (layers.max_pool_forward_naive, layers.max_pool_backward_naive)]
    out, cache = layers.max_pool_forward(x, size, stride, "same")
    dout = np.random.default_rng(seed_of((size, stride, shape))).standard_normal(out.shape)
    ref_out, (ref_dx,) = torch_grads(lambda x: torch_ref.max_pool(x, size, stride, "same"), {"x": x}, dout)
    for forward, backward in versions:
        out, cache = forward(x, size, stride, "same")
        dx = backward(dout, cache)
        np.testing.assert_array_equal(out, ref_out)
        np.testing.assert_allclose(dx, ref_dx, rtol=1e-12, atol=0)
        assert np.isclose(dx.sum(), dout.sum())  # every window's gradient reached the input
    # one window by hand: a 3x3 window at the top-left corner, padding above and left, holds -inf only
    corner = np.full((1, 2, 2, 1), -np.inf)
    dx = layers.max_pool_backward(np.ones((1, 2, 2, 1)), layers.max_pool_forward(corner, 3, 1, "same")[1])
    np.testing.assert_array_equal(dx[0, :, :, 0], [[4.0, 0.0], [0.0, 0.0]])  # all four to cell (0, 0), as PyTorch


@pytest.mark.parametrize("size,stride", [(2, 2), (3, 2), (3, 1)])
def test_max_pool_nan_wins_as_in_torch(size, stride, torch):
    # a window holding NaN outputs NaN and sends its gradient to its last NaN, as PyTorch does
    x = np.random.default_rng(size * 10 + stride).standard_normal((1, 7, 9, 2))
    x[0, 1, 1, 0] = x[0, 2, 2, 1] = x[0, 2, 3, 1] = np.nan
    out, cache = layers.max_pool_forward(x, size, stride)
    dout = np.random.default_rng(0).standard_normal(out.shape)
    ref_out, (ref_dx,) = torch_grads(lambda x: torch_ref.max_pool(x, size, stride), {"x": x}, dout)
    np.testing.assert_array_equal(np.isnan(out), np.isnan(ref_out))
    np.testing.assert_array_equal(out[~np.isnan(out)], ref_out[~np.isnan(ref_out)])
    np.testing.assert_allclose(layers.max_pool_backward(dout, cache), ref_dx, rtol=1e-12)


@pytest.mark.parametrize("size", [16, 17, 20, 257])
def test_max_pool_windows_of_more_than_256_taps_number_every_tap(size, torch):
    # the tap index was kept in uint8: a 17x17 window (289 taps) overflowed it
    x = np.random.default_rng(size).standard_normal((1, size + 2, size + 1, 2))
    out, cache = layers.max_pool_forward(x, size, 1)
    assert np.iinfo(cache[1].dtype).max >= size * size - 1
    dout = np.random.default_rng(1).standard_normal(out.shape)
    ref_out, (ref_dx,) = torch_grads(lambda x: torch_ref.max_pool(x, size, 1), {"x": x}, dout)
    np.testing.assert_array_equal(out, ref_out)
    np.testing.assert_allclose(layers.max_pool_backward(dout, cache), ref_dx, rtol=1e-12)
    if size < 20:  # the readable version too (slow for larger windows)
        naive_out, naive_cache = layers.max_pool_forward_naive(x, size, 1)
        np.testing.assert_array_equal(naive_out, out)
        np.testing.assert_allclose(layers.max_pool_backward_naive(dout, naive_cache), ref_dx, rtol=1e-12)


@pytest.mark.parametrize("conv", [layers.conv2d_forward_naive, layers.conv2d_forward, fast_conv.conv2d_forward])
def test_every_convolution_refuses_kernels_of_other_input_channels(conv):
    # broadcasting would otherwise turn a (1, 4, 4, 1) input and (3, 3, 3, 2) kernels into a result
    with pytest.raises(ValueError, match="kernel expects 3 input channels, input has 1"):
        conv(np.ones((1, 4, 4, 1)), np.ones((3, 3, 3, 2)), np.zeros(2), 1, "same")


def test_relu_matches_torch_including_zero(torch):
    x = np.random.default_rng(3).standard_normal((3, 7, 9, 4))
    x[0, 0, :3, 0] = 0.0  # exact zeros: the derivative there is 0 in PyTorch and in TensorFlow
    out, cache = layers.relu_forward(x)
    dout = np.random.default_rng(4).standard_normal(out.shape)
    dx = layers.relu_backward(dout, cache)
    ref_out, (ref_dx,) = torch_grads(torch_ref.relu, {"x": x}, dout)
    np.testing.assert_array_equal(out, ref_out)
    np.testing.assert_array_equal(dx, ref_dx)


def test_concat_matches_torch(torch):
    rng = np.random.default_rng(8)
    inputs = {"a": rng.standard_normal((3, 5, 7, 4)), "b": rng.standard_normal((3, 5, 7, 6)),
              "c": rng.standard_normal((3, 5, 7, 1))}
    out, cache = layers.concat_forward(list(inputs.values()))
    dout = rng.standard_normal(out.shape)
    grads = layers.concat_backward(dout, cache)
    ref_out, ref_grads = torch_grads(lambda a, b, c: torch_ref.concat([a, b, c]), inputs, dout)
    np.testing.assert_array_equal(out, ref_out)
    for g, r in zip(grads, ref_grads):
        np.testing.assert_array_equal(g, r)
        assert g.flags.c_contiguous and not np.shares_memory(g, dout)


# ------------------------------------------------------------------------ finite differences
@CONVS
@pytest.mark.parametrize("k,stride,padding", [(3, 1, "same"), (3, 2, "valid"), (3, 2, "same"), (1, 1, "same"),
                                              (5, 1, 2), (7, 2, 3), (3, 1, "valid")])
@pytest.mark.parametrize("N,C_in,C_out", [(1, 3, 2), (3, 10, 11)])
def test_conv_numeric_gradient(conv, k, stride, padding, N, C_in, C_out):
    rng = np.random.default_rng(seed_of((k, stride, str(padding), N)))
    x, w, b = rng.standard_normal((N, 7, 9, C_in)), rng.standard_normal((k, k, C_in, C_out)), rng.standard_normal(C_out)
    out, cache = conv.conv2d_forward(x, w, b, stride, padding)
    dout = rng.standard_normal(out.shape)
    dx, dw, db = conv.conv2d_backward(dout, cache)
    # conv is linear in each argument: centred differences are exact but for round-off at any step
    h = 1e-3
    assert rel_error(dx, eval_numerical_gradient_array(lambda v: conv.conv2d_forward(v, w, b, stride, padding)[0], x, dout, h)) < NUMERIC_TOL
    assert rel_error(dw, eval_numerical_gradient_array(lambda v: conv.conv2d_forward(x, v, b, stride, padding)[0], w, dout, h)) < NUMERIC_TOL
    assert rel_error(db, eval_numerical_gradient_array(lambda v: conv.conv2d_forward(x, w, v, stride, padding)[0], b, dout, h)) < NUMERIC_TOL


@pytest.mark.parametrize("kind", ["max", "avg"])
@pytest.mark.parametrize("size,stride,padding", [(2, 2, "valid"), (3, 2, "valid"), (3, 2, "same"), (3, 1, "same")])
def test_pool_numeric_gradient(kind, size, stride, padding):
    fwd, bwd, _ = POOLS[kind]
    x = np.random.default_rng(21).standard_normal((2, 7, 9, 3))
    out, cache = fwd(x, size, stride, padding)
    dout = np.random.default_rng(22).standard_normal(out.shape)
    numeric = eval_numerical_gradient_array(lambda v: fwd(v, size, stride, padding)[0], x, dout)
    assert rel_error(bwd(dout, cache), numeric) < NUMERIC_TOL


def test_relu_numeric_gradient():
    x = np.random.default_rng(23).standard_normal((2, 5, 6, 3))
    x[np.abs(x) < 1e-3] = 0.5  # away from the kink, where centred differences give 1/2
    out, cache = layers.relu_forward(x)
    dout = np.random.default_rng(24).standard_normal(out.shape)
    numeric = eval_numerical_gradient_array(lambda v: layers.relu_forward(v)[0], x, dout)
    assert rel_error(layers.relu_backward(dout, cache), numeric) < NUMERIC_TOL


# ---------------------------------------------------------------------- naive == vectorised
@CONVS
@pytest.mark.parametrize("k,stride,padding", [(3, 1, "same"), (3, 2, "valid"), (3, 2, "same"), (1, 1, "valid"),
                                              (5, 1, 2), (7, 2, "same")])
def test_conv_naive_and_vectorised_agree(conv, k, stride, padding):
    rng = np.random.default_rng(31)
    x, w, b = rng.standard_normal((2, 7, 9, 10)), rng.standard_normal((k, k, 10, 9)), rng.standard_normal(9)
    out, cache = conv.conv2d_forward(x, w, b, stride, padding)
    out_n, cache_n = layers.conv2d_forward_naive(x, w, b, stride, padding)
    assert rel_error(out, out_n) < 1e-10
    dout = rng.standard_normal(out.shape)
    for g, g_n in zip(conv.conv2d_backward(dout, cache), layers.conv2d_backward_naive(dout, cache_n)):
        assert rel_error(g, g_n) < 1e-10


@pytest.mark.parametrize("block_bytes", [1, 4000], ids=["one output row per block", "a few rows per block"])
@pytest.mark.parametrize("k,stride,padding", [(3, 1, "same"), (3, 2, "same"), (3, 1, "valid"), (5, 1, 2),
                                              (7, 2, 3), (1, 2, "valid"), (1, 1, 1)])
def test_conv_in_many_blocks_agrees_with_the_loops(k, stride, padding, block_bytes, monkeypatch):
    # Real layers fit one block only at small sizes; here every block boundary is exercised: blocks
    # that start or end in the top/bottom padding, or lie wholly in it, and batches of 2 images.
    monkeypatch.setattr(fast_conv, "_IM2COL_BLOCK_BYTES", block_bytes)
    rng = np.random.default_rng(seed_of((k, stride, str(padding), block_bytes)))
    x, w, b = rng.standard_normal((2, 9, 8, 10)), rng.standard_normal((k, k, 10, 9)), rng.standard_normal(9)
    out, cache = fast_conv.conv2d_forward(x, w, b, stride, padding)
    out_n, cache_n = layers.conv2d_forward_naive(x, w, b, stride, padding)
    assert rel_error(out, out_n) < 1e-10
    dout = rng.standard_normal(out.shape)
    for g, g_n in zip(fast_conv.conv2d_backward(dout, cache), layers.conv2d_backward_naive(dout, cache_n)):
        assert rel_error(g, g_n) < 1e-10
    # few input channels: the input gradient by tap planes instead of the flipped-kernel convolution,
    # in blocks of one row, or of 15 positions: 1 to 3 rows, the last block shorter where they do not divide
    monkeypatch.setattr(tap_planes, "_GRADIENT_BLOCK", max(1, block_bytes // 256))
    x3, w3 = x[..., :3], w[:, :, :3, :]
    out, cache = fast_conv.conv2d_forward(x3, w3, b, stride, padding)
    out_n, cache_n = layers.conv2d_forward_naive(x3, w3, b, stride, padding)
    assert rel_error(out, out_n) < 1e-10
    dx, _, _ = fast_conv.conv2d_backward(dout, cache, weight_grads=False)
    assert rel_error(dx, layers.conv2d_backward_naive(dout, cache_n)[0]) < 1e-10


def test_conv_results_never_share_the_scratch_memory():
    # the fast convolution reuses scratch buffers from call to call: what it returned must not change
    rng = np.random.default_rng(35)
    x, w, b = rng.standard_normal((1, 12, 11, 6)), rng.standard_normal((3, 3, 6, 8)), rng.standard_normal(8)
    out, cache = fast_conv.conv2d_forward(x, w, b)
    dx, _, _ = fast_conv.conv2d_backward(np.ones_like(out), cache, weight_grads=False)
    kept = out.copy(), dx.copy()
    other, other_cache = fast_conv.conv2d_forward(2 * x, -w, b)
    fast_conv.conv2d_backward(-np.ones_like(other), other_cache, weight_grads=False)
    np.testing.assert_array_equal(out, kept[0])
    np.testing.assert_array_equal(dx, kept[1])


@pytest.mark.parametrize("kind", ["max", "avg"])
@pytest.mark.parametrize("size,stride,padding", [(2, 2, "valid"), (3, 2, "valid"), (3, 2, "same"), (2, 1, "same")])
def test_pool_naive_and_vectorised_agree(kind, size, stride, padding):
    fwd, bwd, _ = POOLS[kind]
    fwd_n = getattr(layers, f"{kind}_pool_forward_naive")
    bwd_n = getattr(layers, f"{kind}_pool_backward_naive")
    x = np.random.default_rng(32).standard_normal((2, 8, 7, 3))
    x[0, :2, :2, 0] = 0.0  # ties
    out, cache = fwd(x, size, stride, padding)
    out_n, cache_n = fwd_n(x, size, stride, padding)
    assert rel_error(out, out_n) < 1e-12
    dout = np.random.default_rng(33).standard_normal(out.shape)
    assert rel_error(bwd(dout, cache), bwd_n(dout, cache_n)) < 1e-12


# ---------------------------------------------------------------------- dtypes and purity
def _all_layers(dtype, rng):
    """(name, forward thunk, backward of (dout, cache)) for every vectorised and naive layer."""
    x = rng.standard_normal((2, 7, 9, 10)).astype(dtype)
    w = rng.standard_normal((3, 3, 10, 11)).astype(dtype)
    w3 = rng.standard_normal((3, 3, 10, 2)).astype(dtype)
    b = rng.standard_normal(11).astype(dtype)
    return [
        ("conv s1", lambda: layers.conv2d_forward(x, w, b), layers.conv2d_backward),
        ("conv s2", lambda: layers.conv2d_forward(x, w, b, 2, "valid"), layers.conv2d_backward),
        ("conv few out", lambda: layers.conv2d_forward(x, w3, b[:2]), layers.conv2d_backward),
        ("fast conv s1", lambda: fast_conv.conv2d_forward(x, w, b), fast_conv.conv2d_backward),
        ("fast conv s2", lambda: fast_conv.conv2d_forward(x, w, b, 2, "valid"), fast_conv.conv2d_backward),
        ("fast conv 1x1", lambda: fast_conv.conv2d_forward(x, w[1:2, 1:2], b), fast_conv.conv2d_backward),
        ("fast conv few out", lambda: fast_conv.conv2d_forward(x, w3, b[:2]), fast_conv.conv2d_backward),
        ("conv naive", lambda: layers.conv2d_forward_naive(x, w3, b[:2], 2, "same"), layers.conv2d_backward_naive),
        ("relu", lambda: layers.relu_forward(x), layers.relu_backward),
        ("max", lambda: layers.max_pool_forward(x, 3, 2), layers.max_pool_backward),
        ("max same", lambda: layers.max_pool_forward(x, 3, 2, "same"), layers.max_pool_backward),
        ("max naive", lambda: layers.max_pool_forward_naive(x, 3, 2), layers.max_pool_backward_naive),
        ("avg", lambda: layers.avg_pool_forward(x, 2, 2), layers.avg_pool_backward),
        ("avg same", lambda: layers.avg_pool_forward(x, 3, 2, "same"), layers.avg_pool_backward),
        ("avg naive", lambda: layers.avg_pool_forward_naive(x, 3, 2, "same"), layers.avg_pool_backward_naive),
        ("concat", lambda: layers.concat_forward([x, x[..., :3]]), layers.concat_backward),
    ], (x, w, w3, b)


def _snapshot(obj):
    """Deep copy of every array inside obj (tuples/lists), to check nothing was written into."""
    if isinstance(obj, np.ndarray):
        return obj.copy()
    if isinstance(obj, (tuple, list)):
        return type(obj)(_snapshot(o) for o in obj)
    return obj


def _assert_same(a, b):
    if isinstance(a, np.ndarray):
        np.testing.assert_array_equal(a, b)
    elif isinstance(a, (tuple, list)):
        for u, v in zip(a, b):
            _assert_same(u, v)
    else:
        assert a == b


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_every_layer_keeps_dtype_and_never_writes_into_inputs(dtype):
    rng = np.random.default_rng(41)
    cases, inputs = _all_layers(dtype, rng)
    before_inputs = _snapshot(inputs)
    for name, forward, backward in cases:
        out, cache = forward()
        assert out.dtype == dtype, name
        dout = rng.standard_normal(out.shape).astype(dtype)
        before_dout, before_cache = dout.copy(), _snapshot(cache)
        grads = backward(dout, cache)
        grads = grads if isinstance(grads, (tuple, list)) else (grads,)
        for g in grads:
            assert g.dtype == dtype, name
        np.testing.assert_array_equal(dout, before_dout, err_msg=name)
        _assert_same(cache, before_cache)
        # a second backward from the same cache gives the same answer (the cache is reusable)
        again = backward(dout, cache)
        _assert_same(grads, again if isinstance(again, (tuple, list)) else (again,))
    _assert_same(inputs, before_inputs)


def test_gradients_do_not_alias_dout():
    rng = np.random.default_rng(42)
    x = rng.standard_normal((1, 6, 6, 4))
    for forward, backward in [(layers.relu_forward, layers.relu_backward),
                              (lambda v: layers.max_pool_forward(v, 2, 2), layers.max_pool_backward),
                              (lambda v: layers.avg_pool_forward(v, 3, 1, "same"), layers.avg_pool_backward)]:
        out, cache = forward(x)
        dout = rng.standard_normal(out.shape)
        dx = backward(dout, cache)
        assert not np.shares_memory(dx, dout) and not np.shares_memory(dx, x)


# ------------------------------------------------------------- the networks' fused conv + ReLU
@pytest.mark.parametrize("k,stride,padding,C_in", [(3, 1, "same", 10), (3, 1, "valid", 10), (1, 1, "same", 12),
                                                   (3, 1, 3, 9), (5, 1, 1, 8), (3, 2, "same", 10), (3, 1, "same", 3),
                                                   (7, 2, 3, 2)])
def test_fused_conv_relu_is_conv_then_relu(k, stride, padding, C_in):
    """fast_conv.conv2d_relu_forward / conv2d_relu_backward, which the networks run, against the
    readable layers composed: the ReLU fused into the blocks, its mask into the input gradient's
    copy (stride 1, enough channels; an integer padding wider than k - 1 crops dout and the mask),
    into tap planes' blocks (few channels) or col2im's (strides > 1)."""
    rng = np.random.default_rng(seed_of((k, stride, str(padding), C_in)))
    x, w, b = rng.standard_normal((2, 9, 8, C_in)), rng.standard_normal((k, k, C_in, 6)), rng.standard_normal(6)
    z, conv_cache = layers.conv2d_forward(x, w, b, stride, padding)
    expected, relu_cache = layers.relu_forward(z)
    out, cache = fast_conv.conv2d_relu_forward(x, w, b, stride, padding)
    assert rel_error(out, expected) < 1e-12 and (out == 0).any() and (out > 0).any()
    dout = rng.standard_normal(out.shape)
    before = dout.copy(), out.copy()
    dx = fast_conv.conv2d_relu_backward(dout, cache)
    expected_dx, _, _ = layers.conv2d_backward(layers.relu_backward(dout, relu_cache), conv_cache)
    assert dx.shape == x.shape and dx.dtype == x.dtype
    assert rel_error(dx, expected_dx) < 1e-12
    np.testing.assert_array_equal(dout, before[0])  # nothing written into dout or the cache
    np.testing.assert_array_equal(out, before[1])


def test_fused_conv_relu_writes_into_a_channel_slice():
    """A fire module's branch written straight into its concatenation: the rest is left alone."""
    rng = np.random.default_rng(40)
    x, w, b = (rng.standard_normal(s).astype(np.float32) for s in ((1, 7, 6, 5), (3, 3, 5, 4), (4,)))
    joined = np.full((1, 7, 6, 10), 7.0, dtype=np.float32)
    out, _ = fast_conv.conv2d_relu_forward(x, w, b, 1, "same", out=joined[..., 3:7])
    assert np.shares_memory(out, joined)
    np.testing.assert_allclose(joined[..., 3:7], np.maximum(layers.conv2d_forward(x, w, b)[0], 0), rtol=1e-5,
                               atol=1e-5)
    assert (joined[..., :3] == 7).all() and (joined[..., 7:] == 7).all()
    with pytest.raises(ValueError, match="out must be"):
        fast_conv.conv2d_relu_forward(x, w, b, 1, "same", out=joined[..., :3])

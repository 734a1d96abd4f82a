"""The transformer network's layers against their naive versions, finite differences and PyTorch.

Tolerances (as tests/test_layers.py):
- float64 against PyTorch, forward and every gradient: rel_error < 1e-10.
- float64 against centred finite differences: rel_error < 1e-7.
- float64 fast against naive: rel_error < 1e-12 (copies and sums are exact or differ by order only).
"""

import zlib

import numpy as np
import pytest

from scratchnst import gradcheck, gradcheck_cases, torch_ref
from scratchnst import transformer_layers as tl
from scratchnst.gradcheck import eval_numerical_gradient_array, rel_error

TORCH_TOL = 1e-10
NUMERIC_TOL = 1e-7
NAIVE_TOL = 1e-12

SCALE = np.array([127.5, 100.0, 50.0])
OFFSET = np.array([23.5, 10.7, -3.8])


def seed_of(*params):
    return zlib.crc32(repr(params).encode())


# Each layer: (fast forward, fast backward, naive forward, naive backward, torch, input names),
# forward taking the inputs positionally, every backward returning a tuple in the inputs' order.
def _one(backward):
    return lambda dout, cache: (backward(dout, cache),)


def _layer(name, arg):
    """(forward, backward, naive forward, naive backward, torch forward, inputs maker) of one configuration."""
    if name == "reflection_pad":
        return (lambda x: tl.reflection_pad_forward(x, arg), _one(tl.reflection_pad_backward),
                lambda x: tl.reflection_pad_forward_naive(x, arg), _one(tl.reflection_pad_backward_naive),
                lambda x: torch_ref.reflection_pad(x, arg),
                lambda rng, shape: {"x": rng.standard_normal(shape)})
    if name == "instance_norm":
        return (tl.instance_norm_forward, tl.instance_norm_backward,
                tl.instance_norm_forward_naive, tl.instance_norm_backward_naive, torch_ref.instance_norm,
                lambda rng, shape: {"x": rng.standard_normal(shape) * 3 + 1, "gamma": rng.standard_normal(shape[3]),
                                    "beta": rng.standard_normal(shape[3])})
    if name == "upsample_nearest":
        return (lambda x: tl.upsample_nearest_forward(x, arg), _one(tl.upsample_nearest_backward),
                lambda x: tl.upsample_nearest_forward_naive(x, arg), _one(tl.upsample_nearest_backward_naive),
                lambda x: torch_ref.upsample_nearest(x, arg),
                lambda rng, shape: {"x": rng.standard_normal(shape)})
    if name == "residual":
        return (tl.residual_forward, tl.residual_backward, tl.residual_forward_naive, tl.residual_backward_naive,
                torch_ref.residual,
                lambda rng, shape: {"x": rng.standard_normal(shape), "fx": rng.standard_normal(shape)})
    if name == "scaled_tanh":
        return (lambda x: tl.scaled_tanh_forward(x, SCALE[:x.shape[3]], OFFSET[:x.shape[3]]),
                _one(tl.scaled_tanh_backward),
                lambda x: tl.scaled_tanh_forward_naive(x, SCALE[:x.shape[3]], OFFSET[:x.shape[3]]),
                _one(tl.scaled_tanh_backward_naive),
                lambda x: torch_ref.scaled_tanh(x, SCALE[:x.shape[3]], OFFSET[:x.shape[3]]),
                lambda rng, shape: {"x": rng.standard_normal(shape)})
    raise AssertionError(name)


# (layer, its argument, input shape (N, H, W, C)): odd sizes, batch 1 and 3, H and W different.
CONFIGS = [
    ("reflection_pad", 1, (2, 5, 7, 3)),
    ("reflection_pad", 2, (1, 3, 6, 2)),
    ("reflection_pad", 4, (3, 9, 5, 1)),     # the 9x9 convolutions' padding; pad 4 of a 5-wide input
    ("reflection_pad", 1, (1, 2, 2, 2)),     # H = 2: the top and bottom mirrors land on the same rows
    ("reflection_pad", 0, (1, 3, 3, 2)),
    ("instance_norm", None, (2, 5, 7, 3)),
    ("instance_norm", None, (1, 3, 4, 5)),   # batch of one
    ("instance_norm", None, (3, 1, 3, 2)),
    ("upsample_nearest", 2, (2, 3, 5, 2)),
    ("upsample_nearest", 3, (1, 2, 3, 3)),
    ("upsample_nearest", 1, (1, 2, 3, 1)),
    ("residual", None, (2, 5, 7, 3)),
    ("scaled_tanh", None, (2, 5, 7, 3)),
    ("scaled_tanh", None, (1, 3, 2, 1)),
]
IDS = [f"{name}-{arg}-{'x'.join(map(str, shape))}" for name, arg, shape in CONFIGS]


def _run(name, arg, shape, dtype=np.float64):
    forward, backward, naive_forward, naive_backward, torch_forward, make = _layer(name, arg)
    rng = np.random.default_rng(seed_of(name, arg, shape))
    inputs = {k: v.astype(dtype) for k, v in make(rng, shape).items()}
    out, cache = forward(*inputs.values())
    dout = rng.standard_normal(out.shape).astype(dtype)
    return forward, backward, naive_forward, naive_backward, torch_forward, inputs, out, cache, dout


@pytest.mark.parametrize("name,arg,shape", CONFIGS, ids=IDS)
def test_fast_equals_naive(name, arg, shape):
    _, backward, naive_forward, naive_backward, _, inputs, out, cache, dout = _run(name, arg, shape)
    naive_out, naive_cache = naive_forward(*inputs.values())
    assert out.shape == naive_out.shape
    assert rel_error(out, naive_out) < NAIVE_TOL
    for fast, naive in zip(backward(dout, cache), naive_backward(dout, naive_cache)):
        assert fast.shape == naive.shape
        assert rel_error(fast, naive) < NAIVE_TOL


@pytest.mark.parametrize("name,arg,shape", CONFIGS, ids=IDS)
def test_backward_matches_finite_differences(name, arg, shape):
    forward, backward, _, _, _, inputs, _, cache, dout = _run(name, arg, shape)
    grads = backward(dout, cache)
    assert len(grads) == len(inputs)
    for (key, value), grad in zip(inputs.items(), grads):
        def f(v, key=key):
            return forward(*{**inputs, key: v}.values())[0]

        numeric = eval_numerical_gradient_array(f, value, dout, h=1e-5)
        assert grad.shape == value.shape
        assert rel_error(grad, numeric) < NUMERIC_TOL, key


@pytest.mark.parametrize("name,arg,shape", CONFIGS, ids=IDS)
def test_matches_torch_float64(name, arg, shape, torch):
    _, backward, _, _, torch_forward, inputs, out, cache, dout = _run(name, arg, shape)
    grads = backward(dout, cache)
    tensors = {k: torch_ref.to_torch(v, requires_grad=True) for k, v in inputs.items()}
    out_t = torch_forward(*tensors.values())
    (out_t * torch_ref.to_torch(dout)).sum().backward()
    assert rel_error(out, torch_ref.to_numpy(out_t)) < TORCH_TOL
    for key, grad in zip(tensors, grads):
        assert rel_error(grad, torch_ref.to_numpy(tensors[key].grad)) < TORCH_TOL, key


@pytest.mark.parametrize("name,arg,shape", CONFIGS, ids=IDS)
def test_float32_stays_float32_and_inputs_are_not_written(name, arg, shape):
    forward, backward, _, _, _, inputs, out, cache, dout = _run(name, arg, shape, np.float32)
    before = {k: v.copy() for k, v in inputs.items()}
    dout_before = dout.copy()
    assert out.dtype == np.float32
    grads = backward(dout, cache)
    assert all(g.dtype == np.float32 for g in grads)
    grads2 = backward(dout, cache)  # the cache is intact: the same gradients again
    for g, g2 in zip(grads, grads2):
        np.testing.assert_array_equal(g, g2)
    np.testing.assert_array_equal(dout, dout_before)
    for k in inputs:
        np.testing.assert_array_equal(inputs[k], before[k])
    # no gradient is dout itself: a caller that accumulates into one cannot change dout
    assert not any(np.shares_memory(g, dout) for g in grads)


def test_reflection_matches_numpy_pad_and_refuses_too_much():
    x = np.arange(2 * 4 * 5 * 3, dtype=np.float32).reshape(2, 4, 5, 3)
    out, _ = tl.reflection_pad_forward(x, 3)
    np.testing.assert_array_equal(out, np.pad(x, ((0, 0), (3, 3), (3, 3), (0, 0)), mode="reflect"))
    np.testing.assert_array_equal(out[:, 3, 2], x[:, 0, 1])  # the border is not repeated
    for bad in (4, -1, 1.5, True):
        with pytest.raises(ValueError, match="reflection padding"):
            tl.reflection_pad_forward(x, bad)


def test_upsampling_repeats_blocks_and_refuses_bad_factors():
    x = np.arange(6.0).reshape(1, 2, 3, 1)
    out, _ = tl.upsample_nearest_forward(x, 2)
    np.testing.assert_array_equal(out[0, :, :, 0], np.kron(x[0, :, :, 0], np.ones((2, 2))))
    for bad in (0, 1.5, True):
        with pytest.raises(ValueError, match="factor"):
            tl.upsample_nearest_forward(x, bad)


def test_instance_norm_normalises_each_image_and_channel():
    rng = np.random.default_rng(3)
    x = rng.standard_normal((2, 6, 5, 4)) * [1, 10, 100, 1e3] + [0, -5, 50, 1e4]
    out, _ = tl.instance_norm_forward(x, np.ones(4), np.zeros(4))
    np.testing.assert_allclose(out.mean(axis=(1, 2)), 0, atol=1e-12)
    np.testing.assert_allclose(out.var(axis=(1, 2)), 1, rtol=1e-4)  # eps 1e-5 / var 1 at most
    constant, _ = tl.instance_norm_forward(np.full((1, 3, 3, 2), 7.0), np.ones(2), np.full(2, 0.5))
    np.testing.assert_array_equal(constant, 0.5)  # a constant channel: xhat = 0, not 0/0


@pytest.mark.parametrize("mean", [0.0, 100.0, 1000.0])
def test_instance_norm_float32_far_from_zero(mean):
    """In float32 the planes' mean is rounded by a part of itself; the error on xhat must stay a part of the
    spread (at 256x256, std 1, it was 1.4e-4 at mean 100 and 2.3e-3 at mean 1000 before the second pass;
    PyTorch's is 3.6e-5). What is left is the variance's float32 sum: 5e-6 with AVX2's kernels, 3e-5 with
    OpenBLAS's Prescott one (SSE3), whatever the mean."""
    rng = np.random.default_rng(11)
    x = (mean + rng.standard_normal((1, 256, 256, 3))).astype(np.float32)
    out, _ = tl.instance_norm_forward(x, np.ones(3, np.float32), np.zeros(3, np.float32))
    x64 = x.astype(np.float64)
    exact = (x64 - x64.mean(axis=(1, 2), keepdims=True)) / np.sqrt(x64.var(axis=(1, 2), keepdims=True) + tl.IN_EPS)
    assert out.dtype == np.float32 and np.abs(out - exact).max() < 1e-4


def test_instance_norm_float16_large_planes():
    """float16 keeps its dtype, and its statistics do not overflow (a 256x256 plane counts 65536 > 65504)."""
    rng = np.random.default_rng(12)
    x = (5 + rng.standard_normal((1, 256, 256, 2))).astype(np.float16)
    gamma, beta = np.ones(2, np.float16), np.zeros(2, np.float16)
    out, cache = tl.instance_norm_forward(x, gamma, beta)
    reference, reference_cache = tl.instance_norm_forward(x.astype(np.float32), gamma.astype(np.float32),
                                                          beta.astype(np.float32))
    assert out.dtype == np.float16 and np.abs(out - reference).max() < 1e-2
    dout = rng.standard_normal(x.shape).astype(np.float16) / 100
    dx, dgamma, dbeta = tl.instance_norm_backward(dout, cache)
    expected = tl.instance_norm_backward(dout.astype(np.float32), reference_cache)
    assert dx.dtype == np.float16 and dgamma.dtype == dbeta.dtype == np.float16
    assert np.isfinite(dx).all() and np.abs(dx - expected[0]).max() < 1e-3 * np.abs(expected[0]).max()
    np.testing.assert_allclose(dbeta, expected[2], rtol=1e-2, atol=1e-2)


@pytest.mark.parametrize("x_dtype", [np.float16, np.float32, np.float64])
@pytest.mark.parametrize("gamma_dtype,beta_dtype,dout_dtype", [
    (np.float16, np.float16, np.float32), (np.float32, np.float16, np.float64), (np.float64, np.float32, np.float16),
    (np.float16, np.float64, np.float16), (np.float32, np.float32, np.float32)])
def test_instance_norm_versions_agree_on_mixed_dtypes(x_dtype, gamma_dtype, beta_dtype, dout_dtype):
    """Both versions give out in (x, gamma, beta)'s dtype, dx in (dout, x)'s, dgamma in gamma's and dbeta in
    beta's, and both are as accurate as their dtypes allow. Before, the naive version gave other dtypes and
    took float16 statistics in float16 (-0.975 against -0.916 on a value the float32 version had right)."""
    rng = np.random.default_rng(seed_of(x_dtype, gamma_dtype, beta_dtype, dout_dtype))
    x = (3 * rng.standard_normal((2, 9, 11, 3)) + 4).astype(x_dtype)
    gamma, beta = rng.standard_normal(3).astype(gamma_dtype), rng.standard_normal(3).astype(beta_dtype)
    dout = rng.standard_normal(x.shape).astype(dout_dtype)
    exact_out, exact_cache = tl.instance_norm_forward_naive(*(a.astype(np.float64) for a in (x, gamma, beta)))
    exact = tl.instance_norm_backward_naive(dout.astype(np.float64), exact_cache)
    # as accurate as the narrowest dtype involved allows (the vectorised version takes the statistics in
    # x's dtype; float16 is computed in float32 but its inputs and outputs hold 11 bits)
    narrowest = min((x.dtype, gamma.dtype, beta.dtype, dout.dtype), key=lambda d: d.itemsize)
    tolerance = 2e-3 if narrowest == np.float16 else 64 * np.finfo(narrowest).eps
    for forward, backward in [(tl.instance_norm_forward, tl.instance_norm_backward),
                              (tl.instance_norm_forward_naive, tl.instance_norm_backward_naive)]:
        out, cache = forward(x, gamma, beta)
        grads = backward(dout, cache)
        assert out.dtype == np.result_type(x, gamma, beta)
        assert [g.dtype for g in grads] == [np.result_type(dout, x), gamma.dtype, beta.dtype]
        for got, want in zip((out, *grads), (exact_out, *exact)):
            assert np.abs(got.astype(np.float64) - want).max() <= tolerance * np.abs(want).max()


@pytest.mark.parametrize("forward", [tl.instance_norm_forward, tl.instance_norm_forward_naive])
@pytest.mark.parametrize("eps", [-1e-5, float("nan"), float("inf"), "1e-5x"])
def test_instance_norm_refuses_an_eps_that_is_not_a_finite_number_at_least_0(forward, eps):
    """A negative eps made a constant channel's sqrt(var + eps) NaN without a word."""
    with pytest.raises(ValueError, match=rf"^{forward.__name__}: eps must be a (finite )?number >= 0"):
        forward(np.ones((1, 2, 2, 1)), np.ones(1), np.zeros(1), eps=eps)
    out, _ = forward(np.arange(4.0).reshape(1, 2, 2, 1), np.ones(1), np.zeros(1), eps=0.0)  # allowed, as PyTorch
    np.testing.assert_allclose(out.ravel(), np.array([-3, -1, 1, 3]) / np.sqrt(5))


def test_instance_norm_backward_checks_the_gradient_shape():
    out, cache = tl.instance_norm_forward(np.ones((1, 4, 4, 2)), np.ones(2), np.zeros(2))
    with pytest.raises(ValueError, match=r"dout has shape \(1, 1, 1, 1\), the layer's output \(1, 4, 4, 2\)"):
        tl.instance_norm_backward(np.ones((1, 1, 1, 1)), cache)


def test_residual_refuses_different_shapes():
    with pytest.raises(ValueError, match="equal shapes"):
        tl.residual_forward(np.zeros((1, 2, 2, 3)), np.zeros((1, 2, 2, 4)))


def test_scaled_tanh_spans_its_interval():
    out, _ = tl.scaled_tanh_forward(np.array([[[[-50.0, 0.0, 50.0]]]]), 127.5, 127.5)
    np.testing.assert_allclose(out.ravel(), [0.0, 127.5, 255.0])


def test_gradcheck_rows_pass(torch):
    cases = gradcheck_cases.transformer_cases(seed=0)
    assert {case.name for case in cases} == {"reflection_pad", "instance_norm", "upsample_nearest", "residual",
                                             "scaled_tanh", "conv2d_weight_gradient", "upsample_conv",
                                             "transformer_net"}
    for case in cases:
        numeric_error, torch_error = gradcheck.check_case(case)
        assert numeric_error < case.numeric_tol, (case.name, case.config, numeric_error)
        assert torch_error < case.torch_tol, (case.name, case.config, torch_error)


def test_gradcheck_rows_without_torch():
    for case in gradcheck_cases.transformer_cases(seed=1):
        numeric_error, torch_error = gradcheck.check_case(case, use_torch=False)
        assert numeric_error < case.numeric_tol and torch_error is None


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_instance_norm_split_by_images_gives_the_same_bits_as_whole(dtype):
    from scratchnst import parallel

    rng = np.random.default_rng(7)
    x = (rng.standard_normal((3, 9, 11, 5)) * 4 + 3).astype(dtype)
    gamma, beta = rng.standard_normal(5).astype(dtype), rng.standard_normal(5).astype(dtype)
    dy = rng.standard_normal(x.shape).astype(dtype)
    results = []
    previous = parallel.set_workers(1)
    try:
        for workers in (1, 2, 3):
            parallel.set_workers(workers)
            out, cache = tl.instance_norm_forward(x, gamma, beta)
            results.append((out, *cache[:2], *tl.instance_norm_backward(dy, cache)))
    finally:
        parallel.set_workers(previous)
    for other in results[1:]:
        for a, b in zip(results[0], other):
            assert a.dtype == b.dtype == dtype and np.array_equal(a, b)


def _in_place_cases():
    rng = np.random.default_rng(11)
    for dtype in (np.float32, np.float64):
        for shape, mean in (((1, 7, 9, 4), 0.0), ((3, 8, 6, 5), 3.0), ((2, 16, 16, 3), 1000.0)):
            x = (rng.standard_normal(shape) * 2 + mean).astype(dtype)
            x[0, :, :, 0] = 5.0   # a constant plane: variance 0, xhat 0
            gamma, beta = rng.standard_normal(shape[3]).astype(dtype), rng.standard_normal(shape[3]).astype(dtype)
            yield x, gamma, beta


@pytest.mark.parametrize("relu", [False, True])
@pytest.mark.parametrize("workers", [1, 2])
def test_instance_norm_in_place_gives_the_forward_s_bits_over_its_input(relu, workers):
    """Stylising normalises where the convolution wrote: the numbers must be the ones training saw."""
    from scratchnst import layers, parallel

    previous = parallel.set_workers(workers)
    try:
        for x, gamma, beta in _in_place_cases():
            want = tl.instance_norm_forward(x, gamma, beta)[0]
            if relu:
                want = layers.relu_forward(want)[0]
            for squares in (None, np.full(x.shape, np.nan, x.dtype), np.empty((1, 1, 1, 1), x.dtype)):
                mine = x.copy()
                got = tl.instance_norm_forward_in_place(mine, gamma, beta, relu=relu, squares=squares)
                assert got is mine and got.dtype == x.dtype
                np.testing.assert_array_equal(got, want)
    finally:
        parallel.set_workers(previous)


@pytest.mark.parametrize("x_dtype, gamma_dtype", [(np.float16, np.float32), (np.float16, np.float16),
                                                  (np.float32, np.float64)])
def test_instance_norm_in_place_leaves_its_input_where_the_result_is_of_another_dtype(x_dtype, gamma_dtype):
    rng = np.random.default_rng(3)
    x = (rng.standard_normal((2, 6, 5, 3)) * 3 + 1).astype(x_dtype)
    gamma, beta = rng.standard_normal(3).astype(gamma_dtype), rng.standard_normal(3).astype(gamma_dtype)
    before = x.copy()
    for relu in (False, True):
        got = tl.instance_norm_forward_in_place(x, gamma, beta, relu=relu)
        want = tl.instance_norm_forward(x, gamma, beta)[0]
        assert got is not x and got.dtype == want.dtype
        np.testing.assert_array_equal(got, np.maximum(want, 0) if relu else want)
        np.testing.assert_array_equal(x, before)


def test_instance_norm_in_place_checks_its_arguments_as_the_forward_does():
    with pytest.raises(ValueError, match="^instance_norm_forward_in_place: eps must be"):
        tl.instance_norm_forward_in_place(np.ones((1, 2, 2, 1)), np.ones(1), np.zeros(1), eps=-1.0)
    with pytest.raises(TypeError, match="^instance_norm_forward_in_place: x has dtype int64"):
        tl.instance_norm_forward_in_place(np.ones((1, 2, 2, 1), np.int64), np.ones(1), np.zeros(1))
    with pytest.raises(ValueError, match="instance_norm_forward_in_place"):
        tl.instance_norm_forward_in_place(np.ones((1, 2, 2, 3)), np.ones(2), np.zeros(3))


def test_torch_instance_norm_batch_of_one_workaround(torch):
    """torch_ref.instance_norm must be right for one image, where PyTorch 2.13's CPU kernel, handed a
    gradient with channels-last strides, returns wrong gradients (see torch_ref.instance_norm)."""
    rng = np.random.default_rng(5)
    x, gamma, beta = rng.standard_normal((1, 5, 7, 3)), rng.standard_normal(3), rng.standard_normal(3)
    dout = rng.standard_normal(x.shape)
    xhat = (x - x.mean(axis=(1, 2), keepdims=True)) / np.sqrt(x.var(axis=(1, 2), keepdims=True) + tl.IN_EPS)
    tensors = [torch_ref.to_torch(a, requires_grad=True) for a in (x, gamma, beta)]
    (torch_ref.instance_norm(*tensors) * torch_ref.to_torch(dout)).sum().backward()
    assert rel_error(torch_ref.to_numpy(tensors[1].grad), (dout * xhat).sum(axis=(0, 1, 2))) < TORCH_TOL


# ------------------------------------------------------------------ the kernel gradient, stride 1
@pytest.mark.parametrize("shape,kernel,c_out", [
    ((2, 7, 9, 3), (3, 3), 5),      # fewer input channels: windows of x
    ((2, 7, 9, 5), (3, 3), 2),      # fewer output channels: windows of dout ('full' correlation)
    ((1, 12, 11, 4), (9, 9), 3),    # the output convolution's shape, odd sizes
    ((1, 11, 12, 3), (9, 9), 4),    # the first convolution's
    ((3, 6, 8, 4), (1, 3), 4),      # non-square, equal channels
    ((1, 5, 5, 2), (5, 5), 2),      # one output position
    ((1, 5, 5, 3), (5, 5), 2),
])
def test_conv_weight_gradient_matches_the_readable_convolution_and_torch(shape, kernel, c_out, torch):
    from scratchnst import layers

    rng = np.random.default_rng(seed_of(shape, kernel, c_out))
    x = rng.standard_normal(shape)
    w = rng.standard_normal((*kernel, shape[3], c_out))
    b = rng.standard_normal(c_out)
    out, cache = layers.conv2d_forward(x, w, b, 1, "valid")
    dout = rng.standard_normal(out.shape)
    dw = tl.conv2d_weight_gradient(x, dout, *kernel)
    assert dw.shape == w.shape and dw.flags.c_contiguous
    assert rel_error(dw, layers.conv2d_backward(dout, cache)[1]) < NAIVE_TOL * 100
    x_t, w_t = torch_ref.to_torch(x), torch_ref.to_torch(w, requires_grad=True)
    (torch_ref.conv2d(x_t, w_t, None, 1, "valid") * torch_ref.to_torch(dout)).sum().backward()
    assert rel_error(dw, torch_ref.to_numpy(w_t.grad)) < TORCH_TOL
    dw32 = tl.conv2d_weight_gradient(x.astype(np.float32), dout.astype(np.float32), *kernel)
    assert dw32.dtype == np.float32
    assert np.max(np.abs(dw32 - dw)) < 1e-4 * np.max(np.abs(dw))


def test_conv_weight_gradient_blocks_rows_of_large_images(monkeypatch):
    # a block budget of a few rows: the loop over blocks, and a last partial block, run on both sides
    from scratchnst import layers

    monkeypatch.setattr(tl, "_BLOCK_BYTES", 3000)
    rng = np.random.default_rng(9)
    for c_in, c_out in ((2, 5), (5, 2)):
        x, w = rng.standard_normal((2, 13, 10, c_in)), rng.standard_normal((3, 3, c_in, c_out))
        out, cache = layers.conv2d_forward(x, w, np.zeros(c_out), 1, "valid")
        dout = rng.standard_normal(out.shape)
        assert rel_error(tl.conv2d_weight_gradient(x, dout, 3, 3), layers.conv2d_backward(dout, cache)[1]) < 1e-10


@pytest.mark.parametrize("c_in,c_out", [(4, 2), (2, 4)])
@pytest.mark.parametrize("layout", ["fortran", "sliced", "transposed"])
def test_conv_weight_gradient_takes_any_memory_layout(c_in, c_out, layout):
    # a Fortran-ordered dout stayed Fortran through np.pad and was refused when C_in > C_out
    rng = np.random.default_rng(c_in)
    x, dout = rng.standard_normal((2, 7, 6, c_in)), rng.standard_normal((2, 5, 4, c_out))
    expected = tl.conv2d_weight_gradient(x, dout, 3, 3)
    if layout == "fortran":
        x_l, dout_l = np.asfortranarray(x), np.asfortranarray(dout)
    elif layout == "sliced":
        x_l = np.repeat(x, 2, axis=3)[..., ::2]
        dout_l = np.repeat(dout, 2, axis=2)[:, :, ::2]
    else:
        x_l = np.ascontiguousarray(x.transpose(0, 2, 1, 3)).transpose(0, 2, 1, 3)
        dout_l = np.ascontiguousarray(dout.transpose(3, 1, 2, 0)).transpose(3, 1, 2, 0)
    np.testing.assert_allclose(tl.conv2d_weight_gradient(x_l, dout_l, 3, 3), expected, rtol=1e-12, atol=1e-12)


def test_upsampling_by_one_is_a_fresh_writable_copy():
    x = np.arange(12.0).reshape(1, 2, 3, 2)
    out, _ = tl.upsample_nearest_forward(x, 1)
    assert out.flags.writeable and not np.shares_memory(out, x)
    np.testing.assert_array_equal(out, x)
    out += 1
    np.testing.assert_array_equal(x, np.arange(12.0).reshape(1, 2, 3, 2))


def test_conv_weight_gradient_refuses_mismatched_shapes():
    with pytest.raises(ValueError, match="valid convolution"):
        tl.conv2d_weight_gradient(np.zeros((1, 8, 8, 3)), np.zeros((1, 8, 8, 4)), 3, 3)

"""The edges of the public layer and cost functions: what they refuse, and how they say it.

A backward pass given a dout of another shape than the layer's output, an integer or bool array,
a stride of 2.0: each was once taken silently (wrong gradients, truncated or wrapped values) or
failed deep inside NumPy. Each now gets one clear error that names the function and the argument.
Also: the loop versions of pooling agree with the vectorised ones when the input holds NaN.
"""

import re

import numpy as np
import pytest

from scratchnst import costs, fast_conv, fast_pool, layers, upsample_conv
from scratchnst import transformer_layers as tl

SHAPE = (2, 5, 6, 3)   # (N, H, W, C) of every layer's input here: odd sizes, H != W, batch 2


def _inputs(rng, dtype=np.float64):
    x = rng.standard_normal(SHAPE).astype(dtype)
    w = rng.standard_normal((3, 3, 3, 4)).astype(dtype)
    b = rng.standard_normal(4).astype(dtype)
    return x, w, b


def _layers():
    """(name, forward(x, w, b) -> (out, cache), backward(dout, cache) -> gradient(s)) of every layer."""
    return [
        ("conv2d_backward", lambda x, w, b: layers.conv2d_forward(x, w, b, 1, "same"), layers.conv2d_backward),
        ("conv2d_backward", lambda x, w, b: layers.conv2d_forward(x, w, b, 2, "valid"), layers.conv2d_backward),
        ("conv2d_backward_naive", lambda x, w, b: layers.conv2d_forward_naive(x, w, b, 2, "same"),
         layers.conv2d_backward_naive),
        ("conv2d_backward", lambda x, w, b: fast_conv.conv2d_forward(x, w, b, 1, "same"), fast_conv.conv2d_backward),
        ("conv2d_backward", lambda x, w, b: fast_conv.conv2d_forward(x, w, b, 2, 1), fast_conv.conv2d_backward),
        ("conv2d_relu_backward", lambda x, w, b: fast_conv.conv2d_relu_forward(x, w, b, 1, "same"),
         fast_conv.conv2d_relu_backward),
        ("relu_backward", lambda x, w, b: layers.relu_forward(x), layers.relu_backward),
        ("max_pool_backward", lambda x, w, b: layers.max_pool_forward(x, 3, 2, "same"), layers.max_pool_backward),
        ("max_pool_backward_naive", lambda x, w, b: layers.max_pool_forward_naive(x, 2, 2),
         layers.max_pool_backward_naive),
        ("avg_pool_backward", lambda x, w, b: layers.avg_pool_forward(x, 2, 2), layers.avg_pool_backward),
        ("avg_pool_backward_naive", lambda x, w, b: layers.avg_pool_forward_naive(x, 3, 2, "same"),
         layers.avg_pool_backward_naive),
        ("concat_backward", lambda x, w, b: layers.concat_forward([x, x[..., :2]]), layers.concat_backward),
        ("reflection_pad_backward", lambda x, w, b: tl.reflection_pad_forward(x, 2), tl.reflection_pad_backward),
        ("reflection_pad_backward_naive", lambda x, w, b: tl.reflection_pad_forward_naive(x, 1),
         tl.reflection_pad_backward_naive),
        ("instance_norm_backward", lambda x, w, b: tl.instance_norm_forward(x, b[:3], b[1:]),
         tl.instance_norm_backward),
        ("instance_norm_backward_naive", lambda x, w, b: tl.instance_norm_forward_naive(x, b[:3], b[1:]),
         tl.instance_norm_backward_naive),
        ("upsample_nearest_backward", lambda x, w, b: tl.upsample_nearest_forward(x, 2),
         tl.upsample_nearest_backward),
        ("upsample_nearest_backward_naive", lambda x, w, b: tl.upsample_nearest_forward_naive(x, 2),
         tl.upsample_nearest_backward_naive),
        ("residual_backward", lambda x, w, b: tl.residual_forward(x, 2 * x), tl.residual_backward),
        ("residual_backward_naive", lambda x, w, b: tl.residual_forward_naive(x, 2 * x), tl.residual_backward_naive),
        ("scaled_tanh_backward", lambda x, w, b: tl.scaled_tanh_forward(x, 127.5, 0.5), tl.scaled_tanh_backward),
        ("scaled_tanh_backward_naive", lambda x, w, b: tl.scaled_tanh_forward_naive(x, 127.5, 0.5),
         tl.scaled_tanh_backward_naive),
        ("upsample_conv_backward", lambda x, w, b: upsample_conv.upsample_conv_forward(x, w, 2),
         upsample_conv.upsample_conv_backward),
    ]


LAYERS = _layers()
LAYER_IDS = [f"{k}-{name}" for k, (name, _, _) in enumerate(LAYERS)]


def _wrong_shapes(shape):
    """dout shapes a backward pass must refuse: one that broadcasts, one row short, one image too many."""
    N, H, W, C = shape
    return [(1, 1, 1, 1), (N, H - 1, W, C), (N + 1, H, W, C), (N, H, W, 1)]


# --------------------------------------------------------------------------- dout's shape
@pytest.mark.parametrize("name,forward,backward", LAYERS, ids=LAYER_IDS)
def test_backward_refuses_a_dout_of_another_shape(name, forward, backward):
    rng = np.random.default_rng(1)
    out, cache = forward(*_inputs(rng))
    backward(rng.standard_normal(out.shape), cache)  # the right shape works
    for shape in _wrong_shapes(out.shape):
        with pytest.raises(ValueError) as error:
            backward(np.ones(shape), cache)
        message = str(error.value)
        assert message.startswith(f"{name}: dout has shape {shape}"), message
        assert str(out.shape) in message, message


# ----------------------------------------------------------------------------------- dtypes
NOT_FLOATS = [np.int64, np.int32, np.uint8, np.bool_, np.complex128, object]
NOT_FLOAT_IDS = [np.dtype(d).name for d in NOT_FLOATS]


def _as(a, dtype):
    return (a > 0) if dtype is np.bool_ else np.abs(a * 3).astype(dtype)


@pytest.mark.parametrize("dtype", NOT_FLOATS, ids=NOT_FLOAT_IDS)
@pytest.mark.parametrize("name,forward,backward", LAYERS, ids=LAYER_IDS)
def test_forward_and_backward_refuse_arrays_that_are_not_floating_point(name, forward, backward, dtype):
    rng = np.random.default_rng(2)
    x, w, b = _inputs(rng)
    forward_name = name.replace("backward", "forward")
    # every array argument is checked, not only x: the layers that take w or b get a bad one of each
    used = {"conv": (0, 1, 2), "upsample_conv": (0, 1), "instance_norm": (0, 2)}
    for k in next((args for key, args in used.items() if name.startswith(key)), (0,)):
        args = [x, w, b]
        args[k] = _as(args[k], dtype)
        with pytest.raises(TypeError, match=f"^{forward_name}: .* has dtype {np.dtype(dtype)}; give floating"):
            forward(*args)
    out, cache = forward(x, w, b)
    with pytest.raises(TypeError, match=f"^{name}: dout has dtype {np.dtype(dtype)}; give floating"):
        backward(_as(np.ones(out.shape), dtype), cache)


@pytest.mark.parametrize("dtype", [np.float16, np.float32, np.float64])
@pytest.mark.parametrize("name,forward,backward", LAYERS, ids=LAYER_IDS)
def test_every_float_dtype_is_kept(name, forward, backward, dtype):
    rng = np.random.default_rng(3)
    out, cache = forward(*_inputs(rng, dtype))
    grads = backward(rng.standard_normal(out.shape).astype(dtype), cache)
    grads = grads if isinstance(grads, (tuple, list)) else (grads,)
    assert out.dtype == dtype
    assert all(g.dtype == dtype for g in grads if g is not None)


def test_the_red_teams_integer_cases_are_refused_by_name():
    """Each of these once gave a wrong number (0 for a gradient of 0.21, 8 for 1800) or a raw NumPy error."""
    cases = [
        ("content_cost_backward", lambda: costs.content_cost_backward(np.zeros((1, 2, 2, 3), np.int64),
                                                                       np.full((1, 2, 2, 3), 5, np.int64))),
        ("scaled_tanh_forward", lambda: tl.scaled_tanh_forward(np.arange(6, dtype=np.int32).reshape(1, 1, 2, 3),
                                                               127.5, 0.5)),
        ("conv2d_forward", lambda: fast_conv.conv2d_forward(np.full((1, 3, 3, 1), 200, np.uint8),
                                                            np.ones((3, 3, 1, 1), np.uint8), np.zeros(1, np.uint8),
                                                            1, "valid")),
        ("relu_forward", lambda: layers.relu_forward(np.array([True, False]))),
        ("upsample_nearest_forward", lambda: tl.upsample_nearest_forward(np.ones((1, 2, 2, 1), np.int32), 2)),
        ("avg_pool_forward", lambda: layers.avg_pool_forward(np.ones((1, 4, 4, 1), np.int32))),
        ("max_pool_forward", lambda: layers.max_pool_forward(np.ones((1, 5, 5, 1), np.int32), 3, 2, "same")),
        ("instance_norm_forward", lambda: tl.instance_norm_forward(np.ones((1, 4, 4, 1), np.int32), np.ones(1),
                                                                   np.zeros(1))),
    ]
    for name, call in cases:
        with pytest.raises(TypeError, match=f"^{name}: .* has dtype (int|uint|bool)"):
            call()


def _cost_calls(make):
    """(name, call) for every cost function, its arrays made by make(shape)."""
    a, a2 = make((1, 4, 5, 3)), make((1, 4, 5, 3))
    A, dG = make((3, 20)), make((3, 3))
    return [
        ("compute_content_cost", lambda: costs.compute_content_cost(a, a2)),
        ("content_cost_backward", lambda: costs.content_cost_backward(a, a2)),
        ("gram_matrix", lambda: costs.gram_matrix(A)),
        ("gram_matrix_backward", lambda: costs.gram_matrix_backward(A, dG)),
        ("compute_layer_style_cost", lambda: costs.compute_layer_style_cost(a, a2)),
        ("layer_style_cost_backward", lambda: costs.layer_style_cost_backward(a, a2)),
        ("style_target", lambda: costs.style_target(a)),
        ("layer_style_cost_from_target", lambda: costs.layer_style_cost_from_target(dG, a2)),
        ("compute_total_variation_cost", lambda: costs.compute_total_variation_cost(a)),
        ("total_variation_cost_backward", lambda: costs.total_variation_cost_backward(a)),
    ]


@pytest.mark.parametrize("dtype", NOT_FLOATS, ids=NOT_FLOAT_IDS)
def test_costs_refuse_arrays_that_are_not_floating_point(dtype):
    rng = np.random.default_rng(4)
    for name, call in _cost_calls(lambda shape: _as(rng.standard_normal(shape), dtype)):
        with pytest.raises(TypeError, match=f"^{name}: .* has dtype {np.dtype(dtype)}; give floating"):
            call()


@pytest.mark.parametrize("dtype", [np.float16, np.float32, np.float64])
def test_costs_take_every_float_dtype(dtype):
    rng = np.random.default_rng(5)
    for name, call in _cost_calls(lambda shape: rng.standard_normal(shape).astype(dtype)):
        call()


def test_the_check_reads_only_dtypes():
    """A broadcast view of a huge array is checked as fast as a small one: no pass over the data."""
    huge = np.broadcast_to(np.float32(1), (64, 4096, 4096, 64))   # 2**36 values, no memory behind them
    layers.check_floats("f", x=huge)
    with pytest.raises(ValueError, match="dout has shape"):
        layers.check_dout("f", huge, (1, 2, 3, 4))


# ------------------------------------------------------------------------- argument types
@pytest.mark.parametrize("stride", [2.0, (2, 2), True, 0, -1, "2", None])
def test_a_stride_that_is_not_a_positive_integer_is_refused(stride):
    x, w, b = _inputs(np.random.default_rng(6))
    for call in (lambda: layers.conv2d_forward(x, w, b, stride=stride),
                 lambda: layers.conv2d_forward_naive(x, w, b, stride=stride),
                 lambda: fast_conv.conv2d_forward(x, w, b, stride=stride),
                 lambda: fast_conv.conv2d_relu_forward(x, w, b, stride=stride),
                 lambda: layers.max_pool_forward(x, 2, stride),
                 lambda: layers.avg_pool_forward(x, 2, stride),
                 lambda: layers.max_pool_forward_naive(x, 2, stride),
                 lambda: layers.avg_pool_forward_naive(x, 2, stride)):
        with pytest.raises(ValueError, match=f"^stride must be a positive integer, got {re_escape(stride)}$"):
            call()


@pytest.mark.parametrize("size", [2.0, (2, 2), True, 0, None])
def test_a_pool_size_that_is_not_a_positive_integer_is_refused(size):
    x = np.ones(SHAPE)
    for pool in (layers.max_pool_forward, layers.avg_pool_forward, layers.max_pool_forward_naive,
                 layers.avg_pool_forward_naive):
        with pytest.raises(ValueError, match=f"^pool size must be a positive integer, got {re_escape(size)}$"):
            pool(x, size, 2)


def test_numpy_integers_are_integers():
    x, w, b = _inputs(np.random.default_rng(7))
    for integer in (np.int64, np.int32, np.uint8):
        two = integer(2)
        assert layers.conv2d_forward(x, w, b, two, integer(1))[0].shape == (2, 3, 3, 4)
        assert fast_conv.conv2d_forward(x, w, b, two, "same")[0].shape == (2, 3, 3, 4)
        assert layers.max_pool_forward(x, two, two)[0].shape == (2, 2, 3, 3)
        assert layers.avg_pool_forward(x, integer(3), two, "same")[0].shape == (2, 3, 3, 3)
        assert tl.reflection_pad_forward(x, two)[0].shape == (2, 9, 10, 3)
        assert tl.upsample_nearest_forward(x, two)[0].shape == (2, 10, 12, 3)
        assert upsample_conv.upsample_conv_forward(x, w, two)[0].shape == (2, 10, 12, 4)


@pytest.mark.parametrize("factor", [2.0, True, 0])
def test_an_upsampling_factor_that_is_not_a_positive_integer_is_refused(factor):
    x, w, _ = _inputs(np.random.default_rng(8))
    with pytest.raises(ValueError, match="factor must be a"):
        upsample_conv.upsample_conv_forward(x, w, factor)
    with pytest.raises(ValueError, match="factor must be a"):
        tl.upsample_nearest_forward(x, factor)


@pytest.mark.parametrize("padding", [1.0, "SAME", -1, True])
def test_a_padding_that_is_not_an_integer_or_a_name_is_refused(padding):
    x, w, b = _inputs(np.random.default_rng(9))
    for conv in (layers.conv2d_forward, fast_conv.conv2d_forward):
        with pytest.raises(ValueError, match="padding must be"):
            conv(x, w, b, 1, padding)
    with pytest.raises(ValueError, match="reflection padding must be"):
        tl.reflection_pad_forward(x, padding)


def test_arrays_given_as_lists_are_refused_by_name():
    x, w, b = _inputs(np.random.default_rng(10))
    for conv in (layers.conv2d_forward, layers.conv2d_forward_naive, fast_conv.conv2d_forward):
        with pytest.raises(TypeError, match=f"^{conv.__name__}: b is a list, not a NumPy array"):
            conv(x, w, list(b))
    with pytest.raises(TypeError, match="^relu_forward: x is a list"):
        layers.relu_forward([[-1.0, 2.0]])
    with pytest.raises(TypeError, match=r"^concat_forward: xs\[1\] is a list"):
        layers.concat_forward([x, x.tolist()])
    with pytest.raises(TypeError, match="^compute_content_cost: a_C is a list"):
        costs.compute_content_cost(x[:1].tolist(), x[:1])
    out, cache = layers.relu_forward(x)
    with pytest.raises(TypeError, match="^relu_backward: dout is a list"):
        layers.relu_backward(out.tolist(), cache)


def test_a_tensor_is_refused_with_the_way_to_an_array():
    """TensorFlow's and PyTorch's tensors have .numpy(): the message says so."""
    torch = pytest.importorskip("torch")
    x = np.ones((1, 3, 3, 2))
    with pytest.raises(TypeError, match=r"^compute_content_cost: a_G is a Tensor, not a NumPy array "
                                        r"\(a_G.numpy\(\) gives one\)"):
        costs.compute_content_cost(x, torch.from_numpy(x))
    with pytest.raises(TypeError, match=r"^relu_forward: x is a Tensor, not a NumPy array \(x.numpy"):
        layers.relu_forward(torch.from_numpy(x))


# ------------------------------------------------------------------------ array shapes
# Every forward pass that reads (N, H, W, C): an image without its batch axis used to fail with
# "not enough values to unpack", a 5-axis array likewise, deep inside.
IMAGE_FORWARDS = [
    ("conv2d_forward", lambda x, w, b: layers.conv2d_forward(x, w, b)),
    ("conv2d_forward_naive", lambda x, w, b: layers.conv2d_forward_naive(x, w, b)),
    ("conv2d_forward", lambda x, w, b: fast_conv.conv2d_forward(x, w, b)),
    ("conv2d_relu_forward", lambda x, w, b: fast_conv.conv2d_relu_forward(x, w, b)),
    ("max_pool_forward", lambda x, w, b: layers.max_pool_forward(x)),
    ("max_pool_forward_naive", lambda x, w, b: layers.max_pool_forward_naive(x)),
    ("avg_pool_forward", lambda x, w, b: layers.avg_pool_forward(x)),
    ("avg_pool_forward_naive", lambda x, w, b: layers.avg_pool_forward_naive(x)),
    ("max_pool_forward", lambda x, w, b: fast_pool.max_pool_forward(x)),
    ("avg_pool_forward", lambda x, w, b: fast_pool.avg_pool_forward(x)),
    ("reflection_pad_forward", lambda x, w, b: tl.reflection_pad_forward(x, 1)),
    ("reflection_pad_forward_naive", lambda x, w, b: tl.reflection_pad_forward_naive(x, 1)),
    ("instance_norm_forward", lambda x, w, b: tl.instance_norm_forward(x, b[:3], b[1:])),
    ("instance_norm_forward_naive", lambda x, w, b: tl.instance_norm_forward_naive(x, b[:3], b[1:])),
    ("upsample_nearest_forward", lambda x, w, b: tl.upsample_nearest_forward(x, 2)),
    ("upsample_nearest_forward_naive", lambda x, w, b: tl.upsample_nearest_forward_naive(x, 2)),
    ("upsample_conv_forward", lambda x, w, b: upsample_conv.upsample_conv_forward(x, w, 2)),
    ("conv2d_weight_gradient", lambda x, w, b: tl.conv2d_weight_gradient(x, x, 1, 1)),
    ("scaled_tanh_forward", lambda x, w, b: tl.scaled_tanh_forward(x, 127.5, 0.5)),
    ("scaled_tanh_forward_naive", lambda x, w, b: tl.scaled_tanh_forward_naive(x, 127.5, 0.5)),
    ("compute_total_variation_cost", lambda x, w, b: costs.compute_total_variation_cost(x)),
    ("total_variation_cost_backward", lambda x, w, b: costs.total_variation_cost_backward(x)),
]
IMAGE_FORWARD_IDS = [f"{k}-{name}" for k, (name, _) in enumerate(IMAGE_FORWARDS)]


@pytest.mark.parametrize("name,forward", IMAGE_FORWARDS, ids=IMAGE_FORWARD_IDS)
def test_an_image_without_its_batch_axis_is_refused_by_name(name, forward):
    x, w, b = _inputs(np.random.default_rng(11))
    forward(x, w, b)  # the batch itself is taken
    with pytest.raises(ValueError, match=rf"^{name}: x has shape \(5, 6, 3\); give a batch of images "
                                         rf"\(N, H, W, C\) \(one image: x\[None\]\)$"):
        forward(x[0], w, b)
    for shape in [(180,), (10, 18), x.shape + (1,)]:
        with pytest.raises(ValueError, match=rf"^{name}: x has shape {re.escape(str(shape))}; give a batch"):
            forward(x.reshape(shape), w, b)


@pytest.mark.parametrize("conv", [layers.conv2d_forward, layers.conv2d_forward_naive, fast_conv.conv2d_forward,
                                  fast_conv.conv2d_relu_forward, upsample_conv.upsample_conv_forward])
def test_a_kernel_without_four_axes_is_refused_by_name(conv):
    x, w, b = _inputs(np.random.default_rng(12))
    call = (lambda w: conv(x, w, 2)) if conv is upsample_conv.upsample_conv_forward else (lambda w: conv(x, w, b))
    for wrong in (w[0], w[..., None], w.reshape(-1)):
        with pytest.raises(ValueError, match=rf"^{conv.__name__}: w has shape {re.escape(str(wrong.shape))}; "
                                             r"give kernels \(KH, KW, C_in, C_out\)$"):
            call(wrong)


CONVS = [layers.conv2d_forward, layers.conv2d_forward_naive, fast_conv.conv2d_forward, fast_conv.conv2d_relu_forward]
BACKWARD = {layers.conv2d_forward: layers.conv2d_backward, layers.conv2d_forward_naive: layers.conv2d_backward_naive,
            fast_conv.conv2d_forward: fast_conv.conv2d_backward,
            fast_conv.conv2d_relu_forward: fast_conv.conv2d_relu_backward}


@pytest.mark.parametrize("conv", CONVS)
def test_the_courses_bias_shape_means_the_same_as_one_value_per_channel(conv):
    """The course writes b as (1, 1, 1, nC); the loop version refused it, the fast one failed deep inside."""
    x, w, b = _inputs(np.random.default_rng(13))
    out, cache = conv(x, w, b, 2, "same")
    out_course, cache_course = conv(x, w, b.reshape(1, 1, 1, 4), 2, "same")
    np.testing.assert_array_equal(out_course, out)
    dout = np.random.default_rng(14).standard_normal(out.shape)
    grads, grads_course = BACKWARD[conv](dout, cache), BACKWARD[conv](dout, cache_course)
    if conv is fast_conv.conv2d_relu_forward:  # a network's step: dx only
        grads, grads_course = [grads], [grads_course]
    else:
        assert grads_course[2].shape == (4,)  # b - lr * db keeps b's shape by broadcasting
    for grad, grad_course in zip(grads, grads_course, strict=True):
        np.testing.assert_array_equal(grad_course, grad)


@pytest.mark.parametrize("conv", CONVS)
@pytest.mark.parametrize("shape", [(3,), (5,), (4, 1), (1, 4), (2, 1, 1, 4), (1, 1, 4), (1, 1, 1, 1, 4), ()])
def test_a_bias_of_another_shape_is_refused_not_broadcast(conv, shape):
    """(2, 1, 1, 4) gave each image of a batch of 2 its own bias without a word; (4, 1) failed inside NumPy."""
    x, w, b = _inputs(np.random.default_rng(15))
    with pytest.raises(ValueError, match=rf"^{conv.__name__}: b has shape {re.escape(str(shape))}; give one value "
                                         r"per channel: \(4,\), or \(1, 1, 1, 4\) as the course writes it$"):
        conv(x, w, np.zeros(shape))


@pytest.mark.parametrize("forward,backward", [(tl.instance_norm_forward, tl.instance_norm_backward),
                                              (tl.instance_norm_forward_naive, tl.instance_norm_backward_naive)])
def test_instance_norm_takes_one_scale_and_shift_per_channel(forward, backward):
    """A scalar gamma was broadcast over the channels by one version and refused by the other."""
    x, _, b = _inputs(np.random.default_rng(16))
    gamma, beta = b[:3], b[1:]
    out, cache = forward(x, gamma, beta)
    out_course, cache_course = forward(x, gamma.reshape(1, 1, 1, 3), beta.reshape(1, 1, 1, 3))
    np.testing.assert_array_equal(out_course, out)
    dout = np.random.default_rng(17).standard_normal(out.shape)
    for grad, grad_course in zip(backward(dout, cache), backward(dout, cache_course)):
        np.testing.assert_array_equal(grad_course, grad)
    for shape in [(), (1,), (4,), (3, 1), (2, 1, 1, 3)]:
        with pytest.raises(ValueError, match=rf"^{forward.__name__}: gamma has shape {re.escape(str(shape))}; "):
            forward(x, np.ones(shape), beta)
        with pytest.raises(ValueError, match=rf"^{forward.__name__}: beta has shape {re.escape(str(shape))}; "):
            forward(x, gamma, np.zeros(shape))


@pytest.mark.parametrize("forward", [tl.scaled_tanh_forward, tl.scaled_tanh_forward_naive])
def test_the_scaled_tanh_takes_numbers_or_one_per_channel(forward):
    """A (2, 1, 1, 1) scale stretched each image of a batch its own way; a (1, 1, 1, 1, 3) one made a 5-D output."""
    x, _, b = _inputs(np.random.default_rng(19))
    out = forward(x, 127.5, b[:3])[0]
    np.testing.assert_allclose(forward(x, np.full((1, 1, 1, 3), 127.5), b[:3].reshape(1, 1, 1, 3))[0], out, rtol=1e-15)
    np.testing.assert_allclose(forward(x, np.full(3, 127.5), b[:3])[0], out, rtol=1e-15)
    for shape in [(2, 1, 1, 1), (1, 1, 1, 1, 3), (4,), (6, 3), (1,)]:
        with pytest.raises(ValueError, match=rf"^{forward.__name__}: scale has shape {re.escape(str(shape))}; give a "
                                             r"number, or one per channel: \(3,\) or \(1, 1, 1, 3\)$"):
            forward(x, np.ones(shape), 0.0)
        with pytest.raises(ValueError, match=rf"^{forward.__name__}: offset has shape {re.escape(str(shape))}; "):
            forward(x, 1.0, np.zeros(shape))


def test_the_other_shapes_the_layers_and_costs_refuse():
    x, _, _ = _inputs(np.random.default_rng(18))
    for residual in (tl.residual_forward, tl.residual_forward_naive):  # the loop version broadcast (1, ...) over x
        for fx in (x[:1], x[..., :1], x[0]):
            with pytest.raises(ValueError, match=r"^a residual sum needs equal shapes"):
                residual(x, fx)
    with pytest.raises(ValueError, match="is not the output of a 3x3 valid convolution"):  # another batch size
        tl.conv2d_weight_gradient(x, x[:1, 2:, 2:], 3, 3)
    with pytest.raises(ValueError, match="KH must be a positive integer"):
        tl.conv2d_weight_gradient(x, x, 1.0, 1)
    A = costs.unroll(x[:1])
    with pytest.raises(ValueError, match=r"^gram_matrix: A has shape \(1, 5, 6, 3\); give unrolled activations"):
        costs.gram_matrix(x[:1])
    with pytest.raises(ValueError, match=r"^gram_matrix_backward: A has shape \(5, 6, 3\); give unrolled"):
        costs.gram_matrix_backward(x[0], np.ones((3, 3)))
    with pytest.raises(ValueError, match=r"^gram_matrix_backward: dG has shape \(3,\), the Gram matrix of A \(3, 3\)"):
        costs.gram_matrix_backward(A, np.ones(3))
    np.testing.assert_allclose(costs.gram_matrix_backward(A, np.eye(3)), 2 * A)


@pytest.mark.parametrize("x_shape,w_shape", [((0, 5, 5, 3), (3, 3, 3, 2)), ((2, 5, 5, 0), (3, 3, 0, 2)),
                                             ((2, 5, 5, 3), (3, 3, 3, 0)), ((0, 5, 5, 3), (1, 1, 3, 2)),
                                             ((2, 5, 5, 3), (1, 1, 3, 0)), ((2, 5, 5, 0), (1, 1, 0, 4))])
def test_the_fast_convolutions_take_an_empty_batch_or_no_channels(x_shape, w_shape):
    """fast_conv ended in ZeroDivisionError (its blocks of rows are sized by dividing by the row's
    bytes) or an error about an `out` nobody gave, where layers returns the empty (or bias-only) result."""
    rng = np.random.default_rng(21)
    x, w, b = rng.standard_normal(x_shape), rng.standard_normal(w_shape), rng.standard_normal(w_shape[3])
    for stride, padding in ((1, "same"), (2, "valid")):
        out, cache = layers.conv2d_forward(x, w, b, stride, padding)
        fast_out, fast_cache = fast_conv.conv2d_forward(x, w, b, stride, padding)
        np.testing.assert_array_equal(fast_out, out)
        dout = rng.standard_normal(out.shape)
        for fast, slow in zip(fast_conv.conv2d_backward(dout, fast_cache), layers.conv2d_backward(dout, cache)):
            assert fast.shape == slow.shape
            np.testing.assert_array_equal(fast, slow)
        relu_out, relu_cache = fast_conv.conv2d_relu_forward(x, w, b, stride, padding)
        np.testing.assert_array_equal(relu_out, np.maximum(out, 0))
        np.testing.assert_array_equal(fast_conv.conv2d_relu_backward(dout, relu_cache),
                                      layers.conv2d_backward(dout * (out > 0), cache)[0])
    KH, KW = w_shape[:2]
    dout = rng.standard_normal((x_shape[0], 6 - KH, 6 - KW, w_shape[3]))
    dw = tl.conv2d_weight_gradient(x, dout, KH, KW)  # a 'valid' convolution's, stride 1
    np.testing.assert_array_equal(dw, layers.conv2d_backward(dout, (x, w, b, 1, "valid"))[1])


def test_float16_sums_do_not_overflow_where_the_result_fits():
    """float16 ends at 65504: four cells of 40000 averaged to inf, a difference of activations of 80000
    made an infinite content gradient of 10000, and the fast style cost's Gram overflowed (J = inf
    where the course's function, in float64, gives 0.037). Summed in float32, as PyTorch does."""
    x = np.full((1, 2, 2, 1), 40000, np.float16)
    for forward, backward in ((layers.avg_pool_forward, layers.avg_pool_backward),
                              (layers.avg_pool_forward_naive, layers.avg_pool_backward_naive),
                              (fast_pool.avg_pool_forward, fast_pool.avg_pool_backward)):
        out, cache = forward(x, 2, 2)
        assert out.dtype == np.float16 and out.ravel().tolist() == [40000]
        dx = backward(np.ones_like(out), cache)
        assert dx.dtype == np.float16 and dx.ravel().tolist() == [0.25] * 4
    big = np.full((1, 2, 2, 1), 40000, np.float16)
    da = costs.content_cost_backward(-big, big)
    assert da.dtype == np.float16 and da.ravel().tolist() == [10000] * 4
    rng = np.random.default_rng(20)
    a_S, a_G = ((np.abs(rng.standard_normal((1, 64, 64, 32))) * 5).astype(np.float16) for _ in range(2))
    J, da = costs.layer_style_cost_from_target(costs.style_target(a_S), a_G)
    assert da.dtype == np.float16 and np.isfinite(da).all()
    np.testing.assert_allclose(J, costs.compute_layer_style_cost(a_S, a_G), rtol=1e-5)
    np.testing.assert_allclose(da, costs.layer_style_cost_backward(a_S, a_G), rtol=0, atol=1e-7)


def re_escape(value):
    """The pattern that matches repr(value) literally, as the messages show it."""
    return re.escape(repr(value))


# ---------------------------------------------------------------------- NaN in the loops
POOLS = [(2, 2, "valid"), (3, 2, "valid"), (3, 2, "same"), (2, 2, "same"), (3, 1, "same"), (2, 1, "valid")]


@pytest.mark.parametrize("size,stride,padding", POOLS)
def test_loop_pooling_agrees_with_the_vectorised_one_on_nan(size, stride, padding):
    """NaN is an input like any other: no marker for padding, and a NaN in a window is its maximum."""
    rng = np.random.default_rng(size * 10 + stride)
    x = rng.standard_normal((2, 7, 6, 3))
    x[rng.random(x.shape) < 0.2] = np.nan
    x[0, :2, :2, 0] = np.nan    # a window of NaN only
    x[1, -1, -1, :] = np.nan    # a NaN beside the 'same' padding
    for forward, backward, forward_naive, backward_naive in (
            (layers.max_pool_forward, layers.max_pool_backward, layers.max_pool_forward_naive,
             layers.max_pool_backward_naive),
            (layers.avg_pool_forward, layers.avg_pool_backward, layers.avg_pool_forward_naive,
             layers.avg_pool_backward_naive)):
        out, cache = forward(x, size, stride, padding)
        naive_out, naive_cache = forward_naive(x, size, stride, padding)
        np.testing.assert_allclose(naive_out, out, rtol=1e-12, atol=0)   # NaN where NaN, as assert_allclose does
        assert np.isnan(out).any()
        dout = rng.standard_normal(out.shape)
        np.testing.assert_allclose(backward_naive(dout, naive_cache), backward(dout, cache), rtol=1e-12, atol=1e-15)


def test_the_red_teams_nan_pooling_cases():
    x = np.array([1.0, np.nan, 3.0, 4.0]).reshape(1, 2, 2, 1)
    assert np.isnan(layers.avg_pool_forward_naive(x, 2, 2, "same")[0]).all()      # was 2.667, NaN skipped
    x = np.array([np.nan, 1.0, np.nan, 0.0]).reshape(1, 2, 2, 1)
    _, cache = layers.max_pool_forward_naive(x, 2, 2)
    np.testing.assert_array_equal(layers.max_pool_backward_naive(np.ones((1, 1, 1, 1)), cache).ravel(),
                                  [0, 0, 1, 0])                                   # the last NaN, as PyTorch

"""tap_planes: the convolution with few output channels, against the readable layers and im2col."""

import numpy as np
import pytest

from scratchnst import fast_conv, layers, parallel, tap_planes


def _problem(rng, x_shape, w_shape, dtype):
    x = rng.standard_normal(x_shape).astype(dtype)
    w = (rng.standard_normal(w_shape) / np.sqrt(np.prod(w_shape[:3]))).astype(dtype)
    b = rng.standard_normal(w_shape[3]).astype(dtype)
    return x, w, b


SHAPES = [  # (x shape, kernel shape): the real-time network's output layer, and odd others
    ((2, 24, 20, 16), (9, 9, 16, 3)),
    ((1, 11, 13, 12), (3, 3, 12, 3)),
    ((3, 7, 9, 8), (5, 3, 8, 1)),
    ((1, 9, 9, 20), (9, 9, 20, 5)),   # one output pixel
    ((1, 10, 30, 4), (3, 5, 4, 1)),
]


@pytest.mark.parametrize("x_shape, w_shape", SHAPES)
@pytest.mark.parametrize("block", [16384, 7])  # one block per image, or many (each with its halo)
def test_equals_the_readable_convolution_in_float64(x_shape, w_shape, block, monkeypatch):
    monkeypatch.setattr(tap_planes, "_BLOCK", block)
    x, w, b = _problem(np.random.default_rng(0), x_shape, w_shape, np.float64)
    expected = layers.conv2d_forward(x, w, b, 1, "valid")[0]
    out = tap_planes.conv(x, w, b=b)
    assert out.shape == expected.shape and out.dtype == np.float64
    np.testing.assert_allclose(out, expected, rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("pad_h, pad_w", [((1, 1), (1, 1)), ((0, 2), (3, 0)), ((2, 2), (0, 0))])
@pytest.mark.parametrize("masked", [False, True])
@pytest.mark.parametrize("block", [16384, 5])
def test_padded_and_masked_equals_the_readable_convolution_of_the_padded_masked_input(pad_h, pad_w, masked, block,
                                                                                     monkeypatch):
    # as SqueezeNet's expand3x3 input gradient: dout (64 channels) masked by the ReLU, padded, 3x3 to 16
    monkeypatch.setattr(tap_planes, "_BLOCK", block)
    rng = np.random.default_rng(5)
    x, w, b = _problem(rng, (2, 9, 12, 16), (3, 3, 16, 4), np.float64)
    x = x[:, :, :, ::-1]  # any strides
    mask = np.maximum(rng.standard_normal(x.shape), 0) if masked else None
    source = x if mask is None else x * (mask > 0)
    padded = np.pad(source, ((0, 0), pad_h, pad_w, (0, 0)))
    expected = layers.conv2d_forward(padded, w, b, 1, "valid")[0]
    out = tap_planes.conv(x, w, pad_h, pad_w, b=b, mask=mask)
    np.testing.assert_allclose(out, expected, rtol=1e-12, atol=1e-12)
    im2col = fast_conv._conv_padded(x, w, 1, pad_h, pad_w, b, mask=mask)  # the dispatch takes it: same thing
    np.testing.assert_allclose(im2col, expected, rtol=1e-12, atol=1e-12)


def test_float32_stays_float32_and_agrees_with_im2col():
    x, w, b = _problem(np.random.default_rng(1), (2, 40, 36, 16), (9, 9, 16, 3), np.float32)
    out = tap_planes.conv(x, w, b=b, relu=True)
    assert out.dtype == np.float32
    im2col = np.maximum(layers.conv2d_forward(x.astype(np.float64), w.astype(np.float64), b.astype(np.float64),
                                              1, "valid")[0], 0)
    np.testing.assert_allclose(out, im2col, rtol=2e-5, atol=2e-5)


def test_writes_into_a_channel_slice_and_nowhere_else_and_reads_any_strides():
    rng = np.random.default_rng(2)
    x, w, b = _problem(rng, (1, 14, 12, 8), (3, 3, 8, 2), np.float64)
    wide = rng.standard_normal((1, 28, 12, 8))[:, ::2]  # a strided input holding x
    wide[...] = x
    before = wide.copy()
    target = np.full((1, 12, 10, 5), 7.0)
    out = tap_planes.conv(wide, w, b=b, out=target[..., 1:3])
    np.testing.assert_allclose(target[..., 1:3], layers.conv2d_forward(x, w, b, 1, "valid")[0], rtol=1e-12, atol=1e-12)
    assert np.shares_memory(out, target)
    assert (target[..., [0, 3, 4]] == 7.0).all()
    assert np.array_equal(wide, before)  # the input is not written


def test_two_workers_give_the_same_bits_as_one(monkeypatch):
    monkeypatch.setattr(tap_planes, "_BLOCK", 50)
    x, w, b = _problem(np.random.default_rng(3), (2, 30, 26, 16), (9, 9, 16, 3), np.float32)
    previous = parallel.set_workers(1)
    try:
        with parallel.one_blas_thread():  # as a split's pieces run: a threaded product may round otherwise
            one = tap_planes.conv(x, w, (1, 2), (0, 1), b=b, mask=x)
        parallel.set_workers(2)
        two = tap_planes.conv(x, w, (1, 2), (0, 1), b=b, mask=x)
    finally:
        parallel.set_workers(previous)
    assert np.array_equal(one, two)


@pytest.mark.parametrize("C_in, C_out, KH, KW, stride, expected", [
    (16, 3, 9, 9, 1, True),    # the real-time network's output layer
    (12, 3, 3, 3, 1, True),
    (16, 5, 9, 9, 1, False),   # more than a quarter
    (3, 16, 9, 9, 1, False),   # its first layer: im2col copies only 243 values per pixel
    (64, 3, 3, 3, 2, False),   # stride 2
    (64, 3, 1, 1, 1, False),   # 1x1: a plain product already
    (64, 64, 3, 3, 1, False),
])
def test_the_rule(C_in, C_out, KH, KW, stride, expected):
    assert tap_planes.worth_it(C_in, C_out, KH, KW, stride) is expected


@pytest.fixture
def calls(monkeypatch):
    """The kernel shape of every call of tap_planes.conv (which still runs)."""
    seen = []
    real = tap_planes.conv

    def spy(*args, **kwargs):
        seen.append(args[1].shape)
        return real(*args, **kwargs)

    monkeypatch.setattr(tap_planes, "conv", spy)
    return seen


def test_fast_conv_takes_it_where_the_rule_says_and_agrees(calls):
    x, w, b = _problem(np.random.default_rng(4), (2, 20, 18, 16), (9, 9, 16, 3), np.float64)
    out, cache = fast_conv.conv2d_forward(x, w, b, 1, "valid")
    assert calls == [(9, 9, 16, 3)]
    np.testing.assert_allclose(out, layers.conv2d_forward(x, w, b, 1, "valid")[0], rtol=1e-12, atol=1e-12)
    dx, dw, db = fast_conv.conv2d_backward(np.ones_like(out), cache)  # the cache is im2col's own
    dx_ref, dw_ref, db_ref = layers.conv2d_backward(np.ones_like(out), layers.conv2d_forward(x, w, b, 1, "valid")[1])
    np.testing.assert_allclose(dx, dx_ref, rtol=1e-12, atol=1e-12)
    np.testing.assert_allclose(dw, dw_ref, rtol=1e-12, atol=1e-12)
    calls.clear()
    fast_conv.conv2d_forward(x, w, b, 1, "same")  # padded: the planes read padded rows
    assert calls == [(9, 9, 16, 3)]
    calls.clear()
    fast_conv.conv2d_forward(x, np.ones((9, 9, 16, 8)), np.zeros(8), 1, "valid")  # 8 of 16: im2col
    fast_conv.conv2d_forward(x, w, b, 2, "valid")  # stride 2: im2col
    assert calls == []


def test_squeezenet_expand_input_gradients_take_it_and_a_fire_module_agrees_with_the_loops(calls):
    from scratchnst import fire_rows

    rng = np.random.default_rng(6)
    x = rng.standard_normal((2, 10, 9, 24))
    squeeze = (rng.standard_normal((1, 1, 24, 8)) * 0.3, rng.standard_normal(8) * 0.1)
    expand1 = (rng.standard_normal((1, 1, 8, 16)) * 0.3, rng.standard_normal(16) * 0.1)
    expand3 = (rng.standard_normal((3, 3, 8, 32)) * 0.2, rng.standard_normal(32) * 0.1)
    out = np.empty((2, 10, 9, 48))
    s = fire_rows.fire_forward(x, squeeze, expand1, expand3, out)
    dout = rng.standard_normal(out.shape)
    dx = fire_rows.fire_backward(dout, x.shape, squeeze, expand1, expand3, s, out[..., :16], out[..., 16:])
    assert (3, 3, 32, 8) in calls  # the 3x3 expand's input gradient: 32 -> 8 channels, padded, masked
    # the same gradient by the readable layers
    s_ref, cs = layers.conv2d_forward(x, *squeeze, 1, "same")
    s_relu, rs = layers.relu_forward(s_ref)
    e1, c1 = layers.conv2d_forward(s_relu, *expand1, 1, "same")
    e3, c3 = layers.conv2d_forward(s_relu, *expand3, 1, "same")
    (e1r, r1), (e3r, r3) = layers.relu_forward(e1), layers.relu_forward(e3)
    ds = (layers.conv2d_backward(layers.relu_backward(dout[..., :16], r1), c1)[0]
          + layers.conv2d_backward(layers.relu_backward(dout[..., 16:], r3), c3)[0])
    dx_ref = layers.conv2d_backward(layers.relu_backward(ds, rs), cs)[0]
    np.testing.assert_allclose(dx, dx_ref, rtol=1e-10, atol=1e-12)


# ------------------------------------------------------------------ the input gradient by tap planes
GRADIENT_CASES = [  # (x shape, kernel shape, stride, padding): RGB first layers, and odd others
    ((2, 17, 15, 3), (3, 3, 3, 8), 1, "same"),     # VGG-19's block1_conv1
    ((1, 23, 31, 3), (3, 3, 3, 16), 2, "valid"),   # SqueezeNet's conv1
    ((1, 20, 21, 5), (5, 3, 5, 7), 3, "same"),
    ((2, 9, 9, 1), (3, 3, 1, 4), 2, 2),
    ((1, 12, 10, 3), (9, 9, 3, 4), 1, "same"),     # the real-time network's first layer
    ((1, 7, 8, 2), (2, 2, 2, 3), 2, "same"),       # windows that do not overlap
    ((1, 6, 5, 3), (1, 1, 3, 6), 2, "valid"),      # windows with gaps between them
]


@pytest.mark.parametrize("x_shape, w_shape, stride, padding", GRADIENT_CASES)
@pytest.mark.parametrize("masked", [False, True])
@pytest.mark.parametrize("block", [8192, 3, 40])  # one block per image, one row per block, or 2-13 rows
def test_input_gradient_equals_the_readable_backward_pass(x_shape, w_shape, stride, padding, masked, block,
                                                          monkeypatch):
    monkeypatch.setattr(tap_planes, "_GRADIENT_BLOCK", block)
    rng = np.random.default_rng(7)
    x, w, b = _problem(rng, x_shape, w_shape, np.float64)
    out, cache = layers.conv2d_forward(x, w, b, stride, padding)
    dout = rng.standard_normal(out.shape)[..., ::-1]  # any strides
    relu_out = np.maximum(out, 0) if masked else None
    expected = layers.conv2d_backward(dout if relu_out is None else dout * (relu_out > 0), cache)[0]
    _, top, bottom = layers.conv_output_size(x_shape[1], w_shape[0], stride, padding)
    _, left, right = layers.conv_output_size(x_shape[2], w_shape[1], stride, padding)
    xpad_shape = (x_shape[0], x_shape[1] + top + bottom, x_shape[2] + left + right, x_shape[3])
    dxpad = tap_planes.input_gradient(dout, w, stride, xpad_shape, mask=relu_out)
    assert dxpad.shape == xpad_shape and dxpad.dtype == np.float64 and dxpad.flags.c_contiguous
    np.testing.assert_allclose(dxpad[:, top:top + x_shape[1], left:left + x_shape[2]], expected,
                               rtol=1e-12, atol=1e-12)
    im2col = fast_conv._conv_padded_backward_x(dout, w, stride, xpad_shape, mask=relu_out)
    np.testing.assert_allclose(dxpad, im2col, rtol=1e-12, atol=1e-12)  # the padding's cells too


def test_blocks_of_40_positions_leave_a_shorter_last_block_in_three_cases():
    short = []
    for x_shape, w_shape, stride, padding in GRADIENT_CASES:
        H_out = layers.conv_output_size(x_shape[1], w_shape[0], stride, padding)[0]
        W_out = layers.conv_output_size(x_shape[2], w_shape[1], stride, padding)[0]
        short.append(H_out % max(1, min(H_out, 40 // W_out)) != 0)
    assert short == [True, True, True, False, False, False, False]


def test_fast_conv_takes_the_planes_for_an_rgb_input_and_keeps_float32(monkeypatch):
    seen = []
    real = tap_planes.input_gradient
    monkeypatch.setattr(tap_planes, "input_gradient", lambda *a, **k: seen.append(a[1].shape) or real(*a, **k))
    rng = np.random.default_rng(8)
    for stride, padding, C_in in ((1, "same", 3), (2, "valid", 3), (1, "same", 7)):
        x, w, b = _problem(rng, (1, 33, 29, C_in), (3, 3, C_in, 64), np.float32)
        out, cache = fast_conv.conv2d_relu_forward(x, w, b, stride, padding)
        dout = rng.standard_normal(out.shape).astype(np.float32)
        dx = fast_conv.conv2d_relu_backward(dout, cache)
        assert dx.dtype == np.float32 and dx.shape == x.shape
        x64, w64, b64 = (a.astype(np.float64) for a in (x, w, b))
        out64, cache64 = layers.conv2d_forward(x64, w64, b64, stride, padding)
        expected = layers.conv2d_backward(dout * (out64 > 0), cache64)[0]
        np.testing.assert_allclose(dx, expected, rtol=1e-4, atol=1e-4 * np.abs(expected).max())
    assert seen == [(3, 3, 3, 64)] * 2 + [(3, 3, 7, 64)]
    seen.clear()
    x, w, b = _problem(rng, (1, 12, 12, 8), (3, 3, 8, 16), np.float32)  # 8 channels: the flipped convolution
    fast_conv.conv2d_relu_backward(np.ones((1, 12, 12, 16), np.float32), fast_conv.conv2d_relu_forward(x, w, b)[1])
    assert seen == []


@pytest.mark.parametrize("stride", [1, 2])
def test_input_gradient_two_workers_agree_with_one(stride, monkeypatch):
    # the rows where two pieces meet get their taps as two sums added, not one after the other: the
    # same terms, rounded in another order (as col2im's pieces)
    monkeypatch.setattr(tap_planes, "_GRADIENT_BLOCK", 40)
    rng = np.random.default_rng(9)
    w = rng.standard_normal((3, 3, 3, 64)).astype(np.float32)
    dout = rng.standard_normal((2, 60, 20, 64)).astype(np.float32)
    mask = np.maximum(rng.standard_normal(dout.shape), 0).astype(np.float32)
    shape = (2, (60 - 1) * stride + 3, (20 - 1) * stride + 3, 3)
    pieces = []
    real_split = parallel.split
    monkeypatch.setattr(parallel, "split", lambda *a, **k: pieces.append(real_split(*a, **k)) or pieces[-1])
    previous = parallel.set_workers(1)
    try:
        with parallel.one_blas_thread():
            one = tap_planes.input_gradient(dout, w, stride, shape, mask=mask, least=16)
        parallel.set_workers(2)
        two = tap_planes.input_gradient(dout, w, stride, shape, mask=mask, least=16)
    finally:
        parallel.set_workers(previous)
    assert [len(p) for p in pieces] == [1, 2]  # the second call was cut in two
    np.testing.assert_allclose(two, one, rtol=1e-5, atol=1e-5 * np.abs(one).max())
    exact = fast_conv._conv_padded_backward_x(dout.astype(np.float64), w.astype(np.float64), stride, shape,
                                             mask=mask)
    np.testing.assert_allclose(two, exact, rtol=1e-4, atol=1e-5 * np.abs(exact).max())

"""scratchnst.winograd: the F(2x2, 3x3) convolution against the loops, im2col and PyTorch.

The rule (`worth_it`) picks Winograd for VGG-19's layers of 128 channels and more on images of
about 32x32 and larger; these tests also force it onto every 3x3 stride-1 convolution, so that
odd sizes, every padding, few channels and whole networks go through it.
"""

import numpy as np
import pytest

from network_helpers import random_params
from scratchnst import fast_conv, layers, networks, parallel, winograd
from test_layers import seed_of
from test_networks import preprocessed_like, torch_activations_and_grad


def rel_error(a, b):
    return float(np.max(np.abs(a - b)) / max(np.max(np.abs(b)), 1e-300))


def reference(x, w, b, pad_h, pad_w, mask=None):
    """The loops' answer: the convolution of x (masked) zero-padded by pad_h and pad_w."""
    x = x if mask is None else x * (mask > 0)
    xpad = np.pad(x, ((0, 0), pad_h, pad_w, (0, 0)))
    return layers.conv2d_forward_naive(xpad, w, np.zeros(w.shape[3]) if b is None else b, 1, "valid")[0]


def test_kernel_transform_is_G_g_G_transposed():
    w = np.random.default_rng(1).standard_normal((3, 3, 5, 7))
    expected = np.einsum("ak,bl,klcd->abcd", winograd._G, winograd._G, w).reshape(16, 5, 7)
    np.testing.assert_allclose(winograd.kernel_transform(w), expected, rtol=0, atol=1e-14)


@pytest.mark.parametrize("block_bytes", [1, 2 * 2**20], ids=["one tile row per block", "whole image"])
@pytest.mark.parametrize("N, H, W, pad_h, pad_w", [
    (1, 8, 8, (1, 1), (1, 1)),      # "same", even size
    (2, 7, 9, (1, 1), (1, 1)),      # odd sizes: the last tiles are half outside
    (1, 5, 6, (0, 0), (0, 0)),      # "valid"
    (1, 9, 4, (2, 0), (0, 3)),      # uneven, wider than the kernel on one side
    (1, 3, 3, (0, 0), (0, 0)),      # one output
    (2, 1, 2, (1, 1), (1, 1)),      # one input row
])
def test_conv3x3_matches_the_loops(N, H, W, pad_h, pad_w, block_bytes, monkeypatch):
    monkeypatch.setattr(winograd, "_BLOCK_BYTES", block_bytes)
    rng = np.random.default_rng(seed_of((N, H, W, pad_h, pad_w)))
    x, w, b = rng.standard_normal((N, H, W, 6)), rng.standard_normal((3, 3, 6, 5)), rng.standard_normal(5)
    mask = rng.standard_normal(x.shape)
    assert rel_error(winograd.conv3x3(x, w, pad_h, pad_w), reference(x, w, None, pad_h, pad_w)) < 1e-13
    out = winograd.conv3x3(x, w, pad_h, pad_w, b, relu=True, mask=mask)
    assert rel_error(out, np.maximum(reference(x, w, b, pad_h, pad_w, mask), 0)) < 1e-13


def test_float32_stays_float32_and_close():
    rng = np.random.default_rng(2)
    x = rng.standard_normal((1, 20, 18, 128)).astype(np.float32)
    w = (rng.standard_normal((3, 3, 128, 130)) * 0.05).astype(np.float32)
    out = winograd.conv3x3(x, w, (1, 1), (1, 1))
    assert out.dtype == np.float32
    # a few units in the last place: the transforms add inputs before multiplying
    assert rel_error(out, reference(x.astype(np.float64), w.astype(np.float64), None, (1, 1), (1, 1))) < 2e-6


def test_writes_into_a_channel_slice_and_nowhere_else():
    # a fire module writes its two branches straight into their concatenation
    rng = np.random.default_rng(3)
    x, w = rng.standard_normal((2, 6, 7, 4)), rng.standard_normal((3, 3, 4, 3))
    both = np.full((2, 6, 7, 8), 7.0)
    winograd.conv3x3(x, w, (1, 1), (1, 1), out=both[..., 2:5])
    assert rel_error(both[..., 2:5], reference(x, w, None, (1, 1), (1, 1))) < 1e-13
    assert np.all(both[..., :2] == 7.0) and np.all(both[..., 5:] == 7.0)


def test_inputs_are_not_written_and_results_not_shared():
    rng = np.random.default_rng(4)
    x, w, mask = rng.standard_normal((1, 9, 9, 5)), rng.standard_normal((3, 3, 5, 6)), rng.standard_normal((1, 9, 9, 5))
    kept = x.copy(), w.copy(), mask.copy()
    first = winograd.conv3x3(x, w, (1, 1), (1, 1), mask=mask)
    saved = first.copy()
    winograd.conv3x3(-x, w, (1, 1), (1, 1))  # reuses the scratch buffers
    for a, b in zip((x, w, mask, first), kept + (saved,)):
        np.testing.assert_array_equal(a, b)


def test_pieces_on_two_workers_give_the_same_bits(monkeypatch):
    rng = np.random.default_rng(5)
    x, w, b = rng.standard_normal((2, 13, 11, 8)), rng.standard_normal((3, 3, 8, 9)), rng.standard_normal(9)
    monkeypatch.setattr(winograd, "_BLOCK_BYTES", 1)
    previous = parallel.set_workers(1)
    try:
        one = winograd.conv3x3(x, w, (1, 1), (1, 1), b, relu=True)
        parallel.set_workers(2)
        two = winograd.conv3x3(x, w, (1, 1), (1, 1), b, relu=True)
    finally:
        parallel.set_workers(previous)
    np.testing.assert_array_equal(one, two)


@pytest.mark.parametrize("C_in, C_out, tiles, chosen", [
    (128, 128, 1024, True), (512, 512, 256, True), (256, 128, 160, True),
    (64, 64, 16384, False),    # VGG-19's block1: the transforms cost what the products save
    (512, 512, 64, False),     # block5_conv1 at 256 px: the kernel's transform outweighs the gain
    (16, 64, 1600, False),     # SqueezeNet's expand3x3: products too thin
    (256, 64, 400, False),
])
def test_the_rule(C_in, C_out, tiles, chosen):
    assert winograd.worth_it(C_in, C_out, tiles) is chosen


def test_fast_conv_uses_it_where_the_rule_says_and_agrees_with_im2col(monkeypatch):
    rng = np.random.default_rng(6)
    x = rng.standard_normal((1, 34, 33, 128)).astype(np.float32)  # 17 x 17 = 289 tiles
    w = (rng.standard_normal((3, 3, 128, 128)) * 0.03).astype(np.float32)
    b = rng.standard_normal(128).astype(np.float32)
    calls = []
    real = winograd.conv3x3
    monkeypatch.setattr(winograd, "conv3x3", lambda *a, **k: calls.append(1) or real(*a, **k))
    out, cache = fast_conv.conv2d_relu_forward(x, w, b)
    dx = fast_conv.conv2d_relu_backward(np.ones_like(out), cache)
    assert len(calls) == 2  # forward, and the input gradient (the flipped kernel, 128 -> 128)
    monkeypatch.setattr(winograd, "worth_it", lambda *args: False)
    out_im2col, cache = fast_conv.conv2d_relu_forward(x, w, b)
    dx_im2col = fast_conv.conv2d_relu_backward(np.ones_like(out), cache)
    assert len(calls) == 2
    assert rel_error(out, out_im2col) < 1e-5 and rel_error(dx, dx_im2col) < 1e-5


@pytest.mark.parametrize("padding", ["same", "valid", 2])
def test_fast_conv_through_winograd_matches_the_loops(padding, monkeypatch):
    monkeypatch.setattr(winograd, "worth_it", lambda *args: True)
    rng = np.random.default_rng(seed_of(str(padding)))
    x, w, b = rng.standard_normal((2, 7, 9, 10)), rng.standard_normal((3, 3, 10, 9)), rng.standard_normal(9)
    out, cache = fast_conv.conv2d_forward(x, w, b, 1, padding)
    out_n, cache_n = layers.conv2d_forward_naive(x, w, b, 1, padding)
    assert rel_error(out, out_n) < 1e-12
    dout = rng.standard_normal(out.shape)
    for g, g_n in zip(fast_conv.conv2d_backward(dout, cache), layers.conv2d_backward_naive(dout, cache_n)):
        assert rel_error(g, g_n) < 1e-12
    out, cache = fast_conv.conv2d_relu_forward(x, w, b, 1, padding)
    dz = layers.relu_backward(dout, out)
    assert rel_error(fast_conv.conv2d_relu_backward(dout, cache), layers.conv2d_backward_naive(dz, cache_n)[0]) < 1e-12


def test_vgg19_with_winograd_everywhere_matches_pytorch(torch, monkeypatch):
    # every 3x3 convolution of the network, forward and backward, through F(2x2, 3x3); float64
    monkeypatch.setattr(winograd, "worth_it", lambda *args: True)
    calls = []
    real = winograd.conv3x3
    monkeypatch.setattr(winograd, "conv3x3", lambda *a, **k: calls.append(1) or real(*a, **k))
    rng = np.random.default_rng(7)
    params = random_params("vgg19", np.random.default_rng(19))
    net = networks.Network("vgg19", params, dtype=np.float64)
    x = preprocessed_like(rng, (1, 40, 36, 3))
    at = ("block1_conv2", "block3_conv2", "block5_conv1")
    ours = net.forward(x, list(at))
    grads = {layer: rng.standard_normal(ours[layer].shape) for layer in at}
    dx = net.backward(grads)
    ref, dx_ref = torch_activations_and_grad("vgg19", params, x, "max", grads)
    assert len(calls) >= 13 + 12  # every convolution forward, every input gradient but the first layer's
    for layer in at:
        assert rel_error(ours[layer], ref[layer]) < 1e-9, layer
    assert rel_error(dx, dx_ref) < 1e-9

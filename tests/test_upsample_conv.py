"""upsample_conv (upsampling, reflection padding and convolution at the low resolution) against the
three layers in turn, finite differences and PyTorch, and inside the transformer network.

Tolerances as tests/test_transformer_layers.py: float64 against the three layers < 1e-12 (the same
sums in another order), against PyTorch < 1e-10, against finite differences < 1e-7.
"""

import zlib

import numpy as np
import pytest

from scratchnst import fast_conv, torch_ref, transformer_net, upsample_conv
from scratchnst import transformer_layers as tl
from scratchnst.gradcheck import eval_numerical_gradient_array, rel_error

# (N, H, W, C_in, C_out, K, factor)
CASES = [
    (2, 5, 7, 3, 4, 3, 2),     # the network's up layers: 3x3 after x2
    (1, 1, 1, 2, 3, 3, 2),     # one pixel: the edge padding reads it on every side
    (1, 2, 3, 4, 2, 3, 2),     # fewer output channels (kernel gradient from dout's windows)
    (3, 4, 3, 2, 2, 5, 3),     # 5x5 after x3
    (1, 3, 5, 2, 3, 3, 3),     # phases of 1 and 2 rows
    (2, 3, 4, 3, 2, 1, 2),     # 1x1: no padding at all
    (1, 2, 2, 2, 2, 1, 1),     # no upsampling
]
IDS = [f"{N}x{H}x{W}x{C}-{Co} k{K} f{f}" for N, H, W, C, Co, K, f in CASES]


def make(case, dtype=np.float64):
    N, H, W, C, C_out, K, factor = case
    rng = np.random.default_rng(zlib.crc32(repr(case).encode()))
    x = rng.standard_normal((N, H, W, C)).astype(dtype)
    w = rng.standard_normal((K, K, C, C_out)).astype(dtype)
    dout = rng.standard_normal((N, factor * H, factor * W, C_out)).astype(dtype)
    return x, w, dout, factor


def three_layers(x, w, dout, factor):
    """(out, dx, dw) of upsample_nearest, reflection_pad and a 'valid' convolution, one after the other."""
    u, cache_u = tl.upsample_nearest_forward(x, factor)
    p, cache_p = tl.reflection_pad_forward(u, w.shape[0] // 2)
    out, cache = fast_conv.conv2d_forward(p, w, np.zeros(w.shape[3], x.dtype), 1, "valid")
    dp, dw, _ = fast_conv.conv2d_backward(dout, cache)
    dx = tl.upsample_nearest_backward(tl.reflection_pad_backward(dp, cache_p), cache_u)
    return out, dx, dw


@pytest.mark.parametrize("case", CASES, ids=IDS)
def test_equals_the_three_layers_in_turn(case):
    x, w, dout, factor = make(case)
    out, cache = upsample_conv.upsample_conv_forward(x, w, factor)
    dx, dw = upsample_conv.upsample_conv_backward(dout, cache)
    want_out, want_dx, want_dw = three_layers(x, w, dout, factor)
    for got, want in ((out, want_out), (dx, want_dx), (dw, want_dw)):
        assert got.shape == want.shape and got.dtype == np.float64
        assert rel_error(got, want) < 1e-12
    skipped, dw_only = upsample_conv.upsample_conv_backward(dout, cache, input_grad=False)
    assert skipped is None and np.array_equal(dw_only, dw)


@pytest.mark.parametrize("case", CASES[:5], ids=IDS[:5])
def test_matches_torch_float64(case, torch):
    x, w, dout, factor = make(case)
    out, cache = upsample_conv.upsample_conv_forward(x, w, factor)
    dx, dw = upsample_conv.upsample_conv_backward(dout, cache)
    x_t, w_t = torch_ref.to_torch(x, requires_grad=True), torch_ref.to_torch(w, requires_grad=True)
    padded = torch_ref.reflection_pad(torch_ref.upsample_nearest(x_t, factor), w.shape[0] // 2)
    out_t = torch_ref.conv2d(padded, w_t, None, 1, "valid")
    (out_t * torch_ref.to_torch(dout)).sum().backward()
    assert rel_error(out, torch_ref.to_numpy(out_t)) < 1e-10
    assert rel_error(dx, torch_ref.to_numpy(x_t.grad)) < 1e-10
    assert rel_error(dw, torch_ref.to_numpy(w_t.grad)) < 1e-10


@pytest.mark.parametrize("case", [CASES[0], CASES[3]], ids=[IDS[0], IDS[3]])
def test_backward_matches_finite_differences(case):
    x, w, dout, factor = make(case)
    dx, dw = upsample_conv.upsample_conv_backward(dout, upsample_conv.upsample_conv_forward(x, w, factor)[1])
    numeric_dx = eval_numerical_gradient_array(lambda v: upsample_conv.upsample_conv_forward(v, w, factor)[0],
                                               x, dout, h=1e-5)
    numeric_dw = eval_numerical_gradient_array(lambda v: upsample_conv.upsample_conv_forward(x, v, factor)[0],
                                               w, dout, h=1e-5)
    assert rel_error(dx, numeric_dx) < 1e-7 and rel_error(dw, numeric_dw) < 1e-7


def test_float32_stays_float32_and_inputs_are_not_written():
    x, w, dout, factor = make(CASES[0], np.float32)
    before = [a.copy() for a in (x, w, dout)]
    out, cache = upsample_conv.upsample_conv_forward(x, w, factor)
    dx, dw = upsample_conv.upsample_conv_backward(dout, cache)
    assert out.dtype == dx.dtype == dw.dtype == np.float32
    dx2, dw2 = upsample_conv.upsample_conv_backward(dout, cache)   # the cache is intact
    assert np.array_equal(dx, dx2) and np.array_equal(dw, dw2)
    for a, b in zip((x, w, dout), before):
        assert np.array_equal(a, b)
    want_out, want_dx, want_dw = three_layers(*make(CASES[0]))
    assert np.max(np.abs(out - want_out)) < 1e-5 * np.max(np.abs(want_out))
    assert np.max(np.abs(dw - want_dw)) < 1e-5 * np.max(np.abs(want_dw))


def test_phase_taps_read_each_tap_once_per_phase():
    assert upsample_conv.phase_taps(3, 2) == [(-1, [[0], [1, 2]]), (0, [[0, 1], [2]])]
    assert upsample_conv.phase_taps(1, 2) == [(0, [[0]]), (0, [[0]])]
    for K, factor in [(3, 2), (3, 3), (5, 3), (7, 4), (1, 1)]:
        for first, groups in upsample_conv.phase_taps(K, factor):
            assert sorted(t for g in groups for t in g) == list(range(K))
            assert -1 <= first and first + len(groups) - 1 <= 1   # one edge pixel of padding is enough


def test_refuses_what_the_edge_padding_cannot_stand_for():
    assert upsample_conv.fits(3, 2) and upsample_conv.fits(1, 1)
    assert not upsample_conv.fits(5, 2) and not upsample_conv.fits(3, 1) and not upsample_conv.fits(4, 3)
    x = np.zeros((1, 4, 4, 2))
    with pytest.raises(ValueError, match="5x5 with factor 2"):
        upsample_conv.upsample_conv_forward(x, np.zeros((5, 5, 2, 2)), 2)
    with pytest.raises(ValueError, match="input channels"):
        upsample_conv.upsample_conv_forward(x, np.zeros((3, 3, 3, 2)), 2)


def test_the_network_gives_what_its_layers_one_at_a_time_give(monkeypatch):
    """transformer_net's up layers go through upsample_conv; with it turned off, the same numbers."""
    rng = np.random.default_rng(3)
    params = transformer_net.init_params(rng, (4, 6, 8), 1, 5, dtype=np.float64)
    x = rng.uniform(-100, 100, (2, 12, 16, 3))
    out, cache = transformer_net.forward(params, x)
    assert [name for name, c in cache if "upsample_conv" in c] == ["up1", "up2"]
    dout = rng.standard_normal(out.shape)
    dx, grads = transformer_net.backward(dout, cache)
    monkeypatch.setattr(upsample_conv, "fits", lambda K, factor: False)
    out_plain, cache_plain = transformer_net.forward(params, x)
    assert not any("upsample_conv" in c for _, c in cache_plain)
    dx_plain, grads_plain = transformer_net.backward(dout, cache_plain)
    # rounding carried through instance norms, summed in another order: the PyTorch tolerance
    assert rel_error(out, out_plain) < 1e-10 and rel_error(dx, dx_plain) < 1e-10
    assert list(grads) == list(grads_plain)
    for name in grads:
        assert rel_error(grads[name], grads_plain[name]) < 1e-10, name

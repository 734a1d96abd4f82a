"""scratchnst.fire_rows: a fire module's three convolutions by bands of rows, against the layers one by one.

A network runs each fire module as one split (`fire_rows`); these tests compare it with the same
network running the module's convolutions one at a time (`fast_conv`, each split on its own),
with the loops, and with PyTorch, on odd sizes, batches, many bands (more workers than cores, so
that every band has neighbours on both sides), a 5x5 expand, and gradients given anywhere.
"""

import numpy as np
import pytest

from network_helpers import random_params
from scratchnst import architectures, fast_conv, fire_rows, layers, networks, parallel
from test_layers import seed_of
from test_networks import preprocessed_like, torch_activations_and_grad


def rel_error(a, b):
    return float(np.max(np.abs(a - b)) / max(np.max(np.abs(b)), 1e-300))


@pytest.fixture(params=[1, 2, 5], ids=lambda n: f"{n} workers")
def workers(request):
    previous = parallel.set_workers(request.param)
    yield request.param
    parallel.set_workers(previous)


def layer_by_layer(net):
    """The same network with its fire modules run one convolution at a time."""
    other = networks.Network(net.name, net.params, pooling=net.pooling, dtype=net.dtype)
    other._fires, other._fire_of_concat = {}, {}
    return other


def module(rng, C_in, S, E1, E3, K=3, dtype=np.float64):
    """Random (kernel, bias) of a squeeze and two expands, He-scaled."""
    def conv(KH, c_in, c_out):
        return ((rng.standard_normal((KH, KH, c_in, c_out)) * np.sqrt(2.0 / (KH * KH * c_in))).astype(dtype),
                (rng.standard_normal(c_out) * 0.1).astype(dtype))
    return conv(1, C_in, S), conv(1, S, E1), conv(K, S, E3)


def loops_forward(x, squeeze, expand1, expand3):
    """(s, out) by the loop convolutions of `layers`, each followed by its ReLU."""
    relu = lambda a: np.maximum(a, 0)  # noqa: E731
    s = relu(layers.conv2d_forward_naive(x, *squeeze, 1, "valid")[0])
    e1 = relu(layers.conv2d_forward_naive(s, *expand1, 1, "valid")[0])
    e3 = relu(layers.conv2d_forward_naive(s, *expand3, 1, "same")[0])
    return s, np.concatenate([e1, e3], axis=-1)


def loops_backward(dout, x, squeeze, expand1, expand3):
    """dJ/dx through the module by the loops' backward passes, for J = sum(dout * out)."""
    s_cache = layers.conv2d_forward_naive(x, *squeeze, 1, "valid")
    s = np.maximum(s_cache[0], 0)
    E1 = expand1[0].shape[3]
    ds = 0
    for (kernel, bias), padding, d in ((expand3, "same", dout[..., E1:]), (expand1, "valid", dout[..., :E1])):
        z, cache = layers.conv2d_forward_naive(s, kernel, bias, 1, padding)
        ds = ds + layers.conv2d_backward_naive(d * (z > 0), cache)[0]
    return layers.conv2d_backward_naive(ds * (s_cache[0] > 0), s_cache[1])[0]


@pytest.mark.parametrize("N, H, W, K", [(1, 7, 5, 3), (2, 4, 6, 3), (1, 1, 3, 3), (2, 9, 4, 5), (1, 2, 2, 5)])
def test_module_matches_the_loops(N, H, W, K, workers):
    rng = np.random.default_rng(seed_of((N, H, W, K)))
    params = module(rng, 6, 4, 3, 5, K)
    x = rng.standard_normal((N, H, W, 6))
    out = np.full((N, H, W, 8), np.nan)
    s = fire_rows.fire_forward(x, *params, out)
    s_loops, out_loops = loops_forward(x, *params)
    assert rel_error(s, s_loops) < 1e-13 and rel_error(out, out_loops) < 1e-13

    dout = rng.standard_normal(out.shape)
    dx = fire_rows.fire_backward(dout, x.shape, *params, s, out[..., :3], out[..., 3:])
    assert dx.shape == x.shape and dx.dtype == x.dtype
    assert rel_error(dx, loops_backward(dout, x, *params)) < 1e-12


def test_a_gradient_given_at_the_squeeze_output_is_added_there(workers):
    rng = np.random.default_rng(3)
    params = module(rng, 5, 4, 3, 3)
    x = rng.standard_normal((2, 6, 5, 5))
    out = np.empty((2, 6, 5, 6))
    s = fire_rows.fire_forward(x, *params, out)
    dout, ds = rng.standard_normal(out.shape), rng.standard_normal(s.shape)
    both = fire_rows.fire_backward(dout, x.shape, *params, s, out[..., :3], out[..., 3:], ds_given=ds)
    zero = fire_rows.fire_backward(np.zeros_like(dout), x.shape, *params, s, out[..., :3], out[..., 3:], ds_given=ds)
    alone = fire_rows.fire_backward(dout, x.shape, *params, s, out[..., :3], out[..., 3:])
    _, s_cache = layers.conv2d_forward_naive(x, *params[0], 1, "valid")
    assert rel_error(zero, layers.conv2d_backward_naive(ds * (s > 0), s_cache)[0]) < 1e-12
    assert rel_error(both, alone + zero) < 1e-12


def test_float32_stays_float32_and_nothing_given_is_written():
    rng = np.random.default_rng(4)
    params = module(rng, 8, 4, 6, 6, dtype=np.float32)
    x = rng.standard_normal((1, 9, 7, 8)).astype(np.float32)
    out = np.empty((1, 9, 7, 12), np.float32)
    given = [x, *(a for pair in params for a in pair)]
    copies = [a.copy() for a in given]
    s = fire_rows.fire_forward(x, *params, out)
    dout = rng.standard_normal(out.shape).astype(np.float32)
    saved = [dout.copy(), s.copy(), out.copy()]
    dx = fire_rows.fire_backward(dout, x.shape, *params, s, out[..., :6], out[..., 6:])
    assert s.dtype == dx.dtype == np.float32
    for a, copy in zip(given + [dout, s, out], copies + saved):
        np.testing.assert_array_equal(a, copy)
    s64, out64 = loops_forward(x.astype(np.float64), *[tuple(a.astype(np.float64) for a in p) for p in params])
    assert rel_error(out, out64) < 1e-5


def test_only_fire_shaped_modules_are_fused():
    steps = {step.name: step for step in architectures.ARCHITECTURES["squeezenet"].steps}
    fire = [steps[f"fire2/{part}"] for part in ("squeeze1x1", "expand1x1", "expand3x3")]
    assert fire_rows.can_fuse(*fire)
    assert not fire_rows.can_fuse(steps["conv1"], fire[1], fire[2])  # conv1 is 3x3 stride 2
    assert not fire_rows.can_fuse(fire[0], fire[2], fire[1])  # expands swapped: the 1x1 must come first
    other = [steps[f"fire3/{part}"] for part in ("squeeze1x1", "expand1x1", "expand3x3")]
    assert not fire_rows.can_fuse(fire[0], other[1], other[2])  # they read another squeeze
    net = networks.Network("squeezenet", random_params("squeezenet", np.random.default_rng(0)))
    assert sorted(net._fires) == [f"fire{k}/squeeze1x1" for k in range(2, 10)]
    assert networks.Network("vgg19", random_params("vgg19", np.random.default_rng(0)))._fires == {}


@pytest.mark.parametrize("wanted", [
    ("fire9",),                                            # every module fused, gradient at the end
    ("conv1", "fire2", "fire3", "fire4", "fire5"),         # stylize's layers: gradients into fused modules' outputs
    ("fire3/squeeze1x1", "fire4"),                         # a gradient at a squeeze output (added inside)
    ("fire2/expand3x3", "fire5/expand1x1", "fire6"),       # at an expand: that module goes layer by layer
    ("fire4/expand1x1",),                                  # the deepest layer inside a module: not fused
], ids=lambda w: "+".join(w))
def test_network_equals_the_layer_by_layer_network(wanted, workers):
    rng = np.random.default_rng(seed_of(wanted))
    for dtype in (np.float64, np.float32):
        net = networks.Network("squeezenet", random_params("squeezenet", rng, dtype), dtype=dtype)
        other = layer_by_layer(net)
        x = preprocessed_like(rng, (2, 47, 39, 3), dtype)
        ours, theirs = net.forward(x, list(wanted)), other.forward(x, list(wanted))
        grads = {layer: rng.standard_normal(a.shape).astype(dtype) for layer, a in ours.items()}
        dx, dx_other = net.backward(grads), other.backward(grads)
        for layer in wanted:
            assert rel_error(ours[layer], theirs[layer]) < (1e-13 if dtype == np.float64 else 1e-6)
        assert dx.dtype == dtype
        # the same sums in the same order, though BLAS may round products of other sizes differently
        assert rel_error(dx, dx_other) < (1e-12 if dtype == np.float64 else 1e-5)


def test_network_matches_pytorch_through_fused_modules(workers):
    rng = np.random.default_rng(7)
    params = random_params("squeezenet", rng, np.float64)
    net = networks.Network("squeezenet", params, dtype=np.float64)
    x = preprocessed_like(rng, (1, 51, 45, 3))
    wanted = ["fire3", "fire7"]
    acts = net.forward(x, wanted)
    grads = {layer: rng.standard_normal(a.shape) for layer, a in acts.items()}
    dx = net.backward(grads)
    acts_t, dx_t = torch_activations_and_grad("squeezenet", params, x, "max", grads)
    for layer in wanted:
        assert rel_error(acts[layer], acts_t[layer]) < 1e-10
    assert rel_error(dx, dx_t) < 1e-9


def test_caches_are_those_of_the_layer_by_layer_pass():
    rng = np.random.default_rng(8)
    net = networks.Network("squeezenet", random_params("squeezenet", rng, np.float64), dtype=np.float64)
    other = layer_by_layer(net)
    x = preprocessed_like(rng, (1, 40, 40, 3))
    net.forward(x, ["fire3"])
    other.forward(x, ["fire3"])
    assert net.cache_nbytes() == other.cache_nbytes()
    for name in ("fire2/squeeze1x1", "fire2/expand1x1", "fire2/expand3x3"):
        (a, *rest), out = net._caches[name]
        (b, *rest_other), out_other = other._caches[name]
        assert a.shape == b.shape and rel_error(a, b) < 1e-13
        assert out.shape == out_other.shape and rel_error(out, out_other) < 1e-13
        assert rest[2:] == rest_other[2:]  # stride and padding
    assert fast_conv.flipped_kernel(net.params["fire2/expand3x3"][0]).shape == (3, 3, 64, 16)

"""scratchnst.networks: loading, activations and multi-layer gradients, against PyTorch.

The pretrained SqueezeNet comes from ../shared/weights; VGG-19 files are written here with seeded
random weights in both Keras naming styles (the real file is 80 MB and cannot be fetched here).
"""

import numpy as np
import pytest

from network_helpers import (CONVS, FIRES, TORCH_MODELS, max_rel_error, random_params, read_all_datasets,
                             torch_params, write_keras_weights)
from scratchnst import fast_conv, fire_rows, networks, parallel, torch_ref
from scratchnst.errors import UsageError, UserError

FIRE_NAMES = [fire for fire, _, _ in FIRES]
TOL = 1e-9  # float64, the same arithmetic done by two libraries


def preprocessed_like(rng, shape, dtype=np.float64):
    """Random network input of the size of Caffe-preprocessed pixels (0..255 minus ~120)."""
    return rng.uniform(-125.0, 135.0, shape).astype(dtype)


def torch_activations_and_grad(model, params, x, pooling, grads=None):
    """PyTorch activations {layer: array} and, if grads {layer: array} is given, d(sum g * a)/dx."""
    xt = torch_ref.to_torch(x, requires_grad=grads is not None)
    acts = TORCH_MODELS[model](xt, torch_params(params), pooling)
    dx = None
    if grads is not None:
        fake_loss = sum((acts[layer] * torch_ref.to_torch(g)).sum() for layer, g in grads.items())
        fake_loss.backward()
        dx = torch_ref.to_numpy(xt.grad)
    return {layer: torch_ref.to_numpy(a) for layer, a in acts.items()}, dx


# ------------------------------------------------------------------------------- SqueezeNet
@pytest.fixture(scope="module")
def squeezenet_file_params(squeezenet_weights_path):
    stored = read_all_datasets(squeezenet_weights_path)
    return {layer: (arrays["kernel"], arrays["bias"]) for layer, arrays in stored.items()}


def test_squeezenet_loads_exactly_the_stored_arrays(squeezenet_weights_path, squeezenet_file_params):
    net = networks.load("squeezenet", weights=squeezenet_weights_path)
    assert net.name == "squeezenet" and net.dtype == np.float32 and net.preprocessing == "caffe"
    assert set(net.params) == set(squeezenet_file_params) and len(net.params) == 25
    for layer, (kernel, bias) in net.params.items():
        np.testing.assert_array_equal(kernel, squeezenet_file_params[layer][0])
        np.testing.assert_array_equal(bias, squeezenet_file_params[layer][1])
        assert kernel.dtype == np.float32 and bias.dtype == np.float32


@pytest.mark.parametrize("pooling", ["max", "avg"])
def test_squeezenet_activations_at_every_layer_match_pytorch(squeezenet_weights_path, squeezenet_file_params,
                                                             torch, pooling):
    net = networks.load(squeezenet_weights_path, pooling=pooling, dtype=np.float64)
    x = preprocessed_like(np.random.default_rng(0), (1, 97, 131, 3))
    ours = net.forward(x, list(net.layer_names) + FIRE_NAMES)
    ref, _ = torch_activations_and_grad("squeezenet", squeezenet_file_params, x, pooling)
    assert set(FIRE_NAMES) <= set(ref)
    for layer, expected in ref.items():
        assert ours[layer].dtype == np.float64
        assert max_rel_error(ours[layer], expected) < TOL, layer


@pytest.mark.parametrize("pooling", ["max", "avg"])
@pytest.mark.parametrize("shape, at", [
    ((1, 97, 131, 3), ("fire3", "fire6/squeeze1x1", "fire9")),
    ((2, 49, 64, 3), ("conv1", "pool3", "fire5/expand3x3")),
])
def test_squeezenet_gradients_from_three_layers_match_pytorch(squeezenet_weights_path, squeezenet_file_params,
                                                              torch, pooling, shape, at):
    rng = np.random.default_rng(1)
    net = networks.load(squeezenet_weights_path, pooling=pooling, dtype=np.float64)
    x = preprocessed_like(rng, shape)
    acts = net.forward(x, at)
    grads = {layer: rng.standard_normal(a.shape) for layer, a in acts.items()}
    dx = net.backward(grads)
    _, dx_ref = torch_activations_and_grad("squeezenet", squeezenet_file_params, x, pooling, grads)
    assert dx.shape == x.shape and dx.dtype == np.float64
    assert max_rel_error(dx, dx_ref) < TOL


# ----------------------------------------------------------------------------------- VGG-19
@pytest.fixture(scope="module")
def vgg_params():
    return random_params("vgg19", np.random.default_rng(19))


@pytest.fixture(scope="module")
def vgg_files(tmp_path_factory, vgg_params):
    """VGG-19 files in Keras 2 names (stored as bytes) and in Keras 1 names (stored as str)."""
    folder = tmp_path_factory.mktemp("vgg")
    return {style: write_keras_weights(folder / f"vgg19_{style}.h5", "vgg19", vgg_params, style=style,
                                       as_bytes=style == "keras2")
            for style in ("keras2", "keras1")}


@pytest.mark.parametrize("style", ["keras2", "keras1"])
def test_vgg19_files_in_both_naming_styles_load_the_stored_arrays(vgg_files, vgg_params, style):
    net = networks.load("vgg19", weights=vgg_files[style])
    assert list(net.params) == [layer for layer, _ in CONVS["vgg19"]]
    for layer, (kernel, bias) in net.params.items():
        np.testing.assert_array_equal(kernel, vgg_params[layer][0])
        np.testing.assert_array_equal(bias, vgg_params[layer][1])


# Each naming style once and each pooling once: the style matters to loading only, pooling to
# the forward and backward passes only.
@pytest.mark.parametrize("style, pooling", [("keras2", "max"), ("keras1", "avg")])
def test_vgg19_activations_and_gradients_match_pytorch(vgg_files, vgg_params, torch, style, pooling):
    rng = np.random.default_rng(2)
    net = networks.load(vgg_files[style], pooling=pooling, dtype=np.float64)  # architecture detected
    assert net.name == "vgg19"
    x = preprocessed_like(rng, (1, 40, 36, 3))  # pools floor: 40x36 -> 20x18 -> 10x9 -> 5x4 -> 2x2 -> 1x1
    at = ("conv1_1", "block3_conv2", "block5_pool")  # a course name among the file's names
    ours = net.forward(x, list(net.layer_names) + list(at))
    grads = {layer: rng.standard_normal(ours[layer].shape) for layer in at}
    dx = net.backward(grads)
    ref_grads = {"block1_conv1": grads["conv1_1"], "block3_conv2": grads["block3_conv2"],
                 "block5_pool": grads["block5_pool"]}
    ref, dx_ref = torch_activations_and_grad("vgg19", vgg_params, x, pooling, ref_grads)
    assert ours["block5_pool"].shape == (1, 1, 1, 512)
    for layer, expected in ref.items():
        assert max_rel_error(ours[layer], expected) < TOL, layer
    assert max_rel_error(dx, dx_ref) < TOL


# ------------------------------------------------------------------- behaviour of Network
@pytest.fixture(scope="module")
def squeezenet_random():
    """A SqueezeNet with seeded random weights, float64 (no file needed)."""
    return networks.Network("squeezenet", random_params("squeezenet", np.random.default_rng(3)), dtype=np.float64)


@pytest.fixture(scope="module")
def vgg_random(vgg_params):
    return networks.Network("vgg19", vgg_params, dtype=np.float64)


def test_backward_matches_a_finite_difference(squeezenet_random):
    """d/dt J(x + t v) at t = 0 for J = sum over two layers of g * a, against centred differences."""
    rng = np.random.default_rng(4)
    net = squeezenet_random
    x = preprocessed_like(rng, (1, 41, 37, 3))
    at = ("conv1", "fire2", "fire3/squeeze1x1")
    grads = {layer: rng.standard_normal(a.shape) for layer, a in net.forward(x, at).items()}
    direction = rng.standard_normal(x.shape)
    analytic = np.sum(net.backward(grads) * direction)

    def J(x_):
        acts = net.forward(x_, at)
        return sum(np.sum(acts[layer] * g) for layer, g in grads.items())

    h = 1e-4
    numeric = (J(x + h * direction) - J(x - h * direction)) / (2 * h)
    assert abs(analytic - numeric) / abs(numeric) < 1e-7


@pytest.mark.parametrize("short, full", [("conv1_1", "block1_conv1"), ("conv4_2", "block4_conv2"),
                                         ("conv5_4", "block5_conv4"), ("pool3", "block3_pool")])
def test_course_names_are_the_file_names(vgg_random, short, full):
    x = preprocessed_like(np.random.default_rng(5), (1, 32, 32, 3))
    acts = vgg_random.forward(x, [short, full])
    assert set(acts) == {short, full}  # keys as asked
    np.testing.assert_array_equal(acts[short], acts[full])


@pytest.mark.parametrize("alias, full", [("fire2", "fire2/concat"), ("relu_conv1", "conv1"),
                                         ("fire9/relu_expand3x3", "fire9/expand3x3")])
def test_squeezenet_module_and_relu_names(squeezenet_random, alias, full):
    x = preprocessed_like(np.random.default_rng(6), (1, 48, 48, 3))
    acts = squeezenet_random.forward(x, [alias, full])
    np.testing.assert_array_equal(acts[alias], acts[full])


def test_fire_module_output_is_expand1x1_then_expand3x3(squeezenet_random):
    x = preprocessed_like(np.random.default_rng(7), (1, 48, 48, 3))
    acts = squeezenet_random.forward(x, ["fire4", "fire4/expand1x1", "fire4/expand3x3"])
    np.testing.assert_array_equal(acts["fire4"], np.concatenate([acts["fire4/expand1x1"], acts["fire4/expand3x3"]], -1))


@pytest.mark.parametrize("model, wanted, convs", [
    ("vgg19", ["block1_conv2"], 2), ("vgg19", ["conv1_1", "pool2"], 4),
    ("squeezenet", ["fire2/squeeze1x1"], 2), ("squeezenet", ["fire3"], 7),
])
def test_forward_runs_only_as_deep_as_the_deepest_layer_asked(vgg_random, squeezenet_random, monkeypatch,
                                                              model, wanted, convs):
    net = vgg_random if model == "vgg19" else squeezenet_random
    calls = []  # (input rows, output channels) of every convolution run, whichever path runs it
    real = fast_conv._conv_padded
    monkeypatch.setattr(fast_conv, "_conv_padded",
                        lambda x, w, *args, **kwargs: calls.append(w.shape) or real(x, w, *args, **kwargs))
    monkeypatch.setattr(parallel, "workers", lambda: 1)  # one piece per layer: one call per convolution
    net.forward(preprocessed_like(np.random.default_rng(8), (1, 64, 64, 3)), wanted)
    assert len(calls) == convs
    assert sum(net.arch.steps[net.arch.index[name]].op == "conv" for name in net._caches) == convs


def test_cache_memory_is_what_the_docstring_says(vgg_random):
    """Through block1_conv2: the input, two ReLU outputs (the first is also conv2's input)."""
    x = preprocessed_like(np.random.default_rng(9), (1, 40, 36, 3))
    vgg_random.forward(x, ["block1_conv2"])
    assert vgg_random.cache_nbytes() == x.nbytes + 2 * 40 * 36 * 64 * 8


def test_too_small_image_names_the_minimum(vgg_random, squeezenet_random):
    assert vgg_random.min_input_size == 32 and squeezenet_random.min_input_size == 31
    assert vgg_random.min_input_size_for(["conv4_2"]) == 8
    x = preprocessed_like(np.random.default_rng(10), (1, 31, 40, 3))
    with pytest.raises(UserError, match=r"31x40 pixels.*block5_pool.*at least 32x32"):
        vgg_random.forward(x, ["block5_pool"])
    assert vgg_random.forward(x, ["block5_conv4"])["block5_conv4"].shape == (1, 1, 2, 512)
    with pytest.raises(UserError, match=r"at least 31x31"):
        squeezenet_random.forward(x[:, :30], ["fire9"])


def test_dtype_is_kept_and_checked(vgg_params):
    net32 = networks.Network("vgg19", vgg_params)  # float32 by default
    x = preprocessed_like(np.random.default_rng(11), (1, 16, 16, 3), np.float32)
    a = net32.forward(x, ["block2_conv1"])["block2_conv1"]
    assert a.dtype == np.float32
    assert net32.backward({"block2_conv1": np.ones_like(a)}).dtype == np.float32
    with pytest.raises(TypeError, match="float64"):
        net32.forward(x.astype(np.float64), ["block2_conv1"])
    with pytest.raises(TypeError, match="float64"):
        net32.backward({"block2_conv1": np.ones(a.shape)})
    # pixels as read are not a dtype to load the network in: the message says to preprocess them
    for raw in (np.uint8, np.int64):
        with pytest.raises(TypeError, match="preprocess") as caught:
            net32.forward(np.zeros((1, 16, 16, 3), raw), ["block2_conv1"])
        assert f"dtype=np.{np.dtype(raw)}" not in str(caught.value)
    # float32 numbers in the other byte order (as read from a big-endian file) are float32
    same = net32.forward(x.astype(">f4"), ["block2_conv1"])["block2_conv1"]
    assert same.dtype == np.float32 and np.array_equal(same, a)
    assert net32.backward({"block2_conv1": np.ones_like(a).astype(">f4")}).dtype == np.float32
    # only the two dtypes the package computes in: float16's gradients are off by percents
    for other in {np.dtype(np.float16), np.dtype(np.longdouble)} - {np.dtype(np.float64)}:   # longdouble: float64 on Windows
        with pytest.raises(ValueError, match="np.float32 .to run. or np.float64"):
            networks.Network("vgg19", vgg_params, dtype=other)


def test_a_gradient_given_as_a_function_is_asked_for_when_the_pass_reaches_its_layer(squeezenet_random,
                                                                                      monkeypatch):
    """backward takes a function in place of a gradient (a cost term still being computed on another
    core): called once, when the pass first needs that layer, deepest first; the same dx, bit for bit."""
    rng = np.random.default_rng(21)
    x = preprocessed_like(rng, (1, 47, 53, 3))
    layers_wanted = ["conv1", "fire3", "fire3/concat", "fire2/squeeze1x1", "fire5"]  # fire3 twice, a squeeze
    acts = squeezenet_random.forward(x, layers_wanted)
    grads = {name: rng.standard_normal(a.shape) for name, a in acts.items()}
    dx = squeezenet_random.backward(grads)
    asked, fires_done = [], []
    real_fire_backward = fire_rows.fire_backward

    def counted(*args, **kwargs):
        result = real_fire_backward(*args, **kwargs)
        fires_done.append(1)
        return result

    monkeypatch.setattr(fire_rows, "fire_backward", counted)

    def later(name):
        def gradient():
            asked.append((name, len(fires_done)))  # and how far down the pass had gone
            return grads[name]
        return gradient

    deferred = {name: later(name) if name != "fire2/squeeze1x1" else grads[name] for name in layers_wanted}
    np.testing.assert_array_equal(squeezenet_random.backward(deferred), dx)
    # deepest first, each once, the aliases in the order given, each when the pass got there: fire5
    # before any fire module, fire3 once fire5 and fire4 were through, conv1 after all four
    assert asked == [("fire5", 0), ("fire3", 2), ("fire3/concat", 2), ("conv1", 4)]
    with pytest.raises(ValueError, match=r"gradient for 'fire5' has shape \(1, 2, 2, 1\)"):
        squeezenet_random.backward({"conv1": grads["conv1"], "fire5": lambda: np.ones((1, 2, 2, 1))})
    with pytest.raises(TypeError, match="gradient for 'conv1' is float32"):
        squeezenet_random.backward({"conv1": lambda: grads["conv1"].astype(np.float32)})


def test_inputs_and_gradients_are_not_written(squeezenet_random):
    rng = np.random.default_rng(12)
    x = preprocessed_like(rng, (1, 50, 47, 3))
    x_before = x.copy()
    acts = squeezenet_random.forward(x, ["fire2", "fire2/squeeze1x1", "fire3"])
    grads = {layer: rng.standard_normal(a.shape) for layer, a in acts.items()}
    grads_before = {layer: g.copy() for layer, g in grads.items()}
    acts_before = {layer: a.copy() for layer, a in acts.items()}
    squeezenet_random.backward(grads)
    np.testing.assert_array_equal(x, x_before)
    for layer in grads:
        np.testing.assert_array_equal(grads[layer], grads_before[layer])
        np.testing.assert_array_equal(acts[layer], acts_before[layer])
    with pytest.raises(ValueError):
        acts["fire2"][0, 0, 0, 0] = 1.0  # activations are handed out read-only


def test_gradients_given_under_two_names_of_one_layer_add_up(vgg_random):
    rng = np.random.default_rng(13)
    x = preprocessed_like(rng, (1, 20, 18, 3))
    g = rng.standard_normal(vgg_random.forward(x, ["conv2_1", "block2_conv1"])["conv2_1"].shape)
    both = vgg_random.backward({"conv2_1": g, "block2_conv1": g})
    np.testing.assert_allclose(both, vgg_random.backward({"block2_conv1": 2 * g}), rtol=1e-12, atol=1e-12)
    np.testing.assert_array_equal(vgg_random.backward({}), np.zeros_like(x))


def test_backward_needs_the_layers_of_the_last_forward(vgg_params):
    net = networks.Network("vgg19", vgg_params, dtype=np.float64)
    with pytest.raises(RuntimeError, match="forward"):
        net.backward({"block1_conv1": np.zeros((1, 8, 8, 64))})
    a = net.forward(preprocessed_like(np.random.default_rng(14), (1, 8, 8, 3)), "block1_conv1")["block1_conv1"]
    with pytest.raises(ValueError, match="not computed"):
        net.backward({"block2_conv1": np.zeros((1, 4, 4, 128))})
    with pytest.raises(ValueError, match="shape"):
        net.backward({"block1_conv1": np.zeros((1, 8, 8, 32))})
    assert net.backward({"block1_conv1": np.ones_like(a)}).shape == (1, 8, 8, 3)


def test_a_sibling_shares_the_weights_and_keeps_its_own_caches(squeezenet_random):
    """Two threads' networks: each one's backward uses its own last forward, the weights are not copied."""
    rng = np.random.default_rng(15)
    net = networks.Network("squeezenet", squeezenet_random.params, pooling="avg", dtype=np.float64)
    twin = net.sibling()
    assert twin.params is net.params and (twin.name, twin.pooling, twin.dtype) == (net.name, net.pooling, net.dtype)
    x, y = preprocessed_like(rng, (1, 40, 36, 3)), preprocessed_like(rng, (1, 33, 41, 3))
    g = rng.standard_normal(net.forward(x, ["fire3"])["fire3"].shape)
    expected = net.backward({"fire3": g})
    net.forward(x, ["fire3"])
    with pytest.raises(RuntimeError, match="forward"):
        twin.backward({"fire3": g})           # nothing of net's forward leaks into the twin
    h = rng.standard_normal(twin.forward(y, ["fire2"])["fire2"].shape)
    np.testing.assert_array_equal(net.backward({"fire3": g}), expected)   # nor of the twin's into net
    assert twin.backward({"fire2": h}).shape == y.shape


def test_unknown_layer_is_a_usage_error_listing_the_layers(vgg_random):
    with pytest.raises(UsageError, match=r"vgg19 has no layer 'conv9_9'.*block1_conv1"):
        vgg_random.forward(np.zeros((1, 32, 32, 3)), ["conv9_9"])


@pytest.mark.parametrize("model, typo, meant", [
    ("squeezenet", "fire33", "fire3"),
    ("squeezenet", "Fire3", "fire3"),  # only the case is wrong
    ("squeezenet", "fire2/squeeze", "fire2/squeeze1x1"),
    ("squeezenet", "fire9/expand3", "fire9/expand3x3"),
    ("squeezenet", "conv_1", "conv1"),
    ("vgg19", "conv42", "conv4_2"),
    ("vgg19", "Conv4_2", "conv4_2"),
    ("vgg19", "block4_conv22", "block4_conv2"),
    ("vgg19", "blok5_conv1", "block5_conv1"),
    ("vgg19", "conv4", "conv4_1, conv4_2, conv4_3 or conv4_4"),  # equally near: all of them, in order
])
def test_misspelt_layer_suggests_the_nearest_names(model, typo, meant):
    arch = networks.ARCHITECTURES[model]
    with pytest.raises(UsageError) as caught:
        arch.resolve(typo)
    text = str(caught.value)
    assert text.startswith(f"{model} has no layer {typo!r}; did you mean {meant}? Its layers are ")
    assert "\n" not in text
    listed = {"squeezenet": ["conv1", "pool1", "fire2", "fire9", "fire2/squeeze1x1"],
              "vgg19": ["block1_conv1", "block5_pool", "conv1_1"]}[model]
    assert all(name in text for name in listed)


@pytest.mark.parametrize("model, other, layer", [("squeezenet", "vgg19", "conv4_2"),
                                                 ("squeezenet", "vgg19", "block1_conv1"),
                                                 ("vgg19", "squeezenet", "fire3")])
def test_a_layer_of_the_other_network_says_which_network_has_it(model, other, layer):
    with pytest.raises(UsageError, match=rf"{model} has no layer '{layer}' \(a layer of {other}: choose {other} as "
                                         rf"the network, or a layer of {model}\); its layers are "):
        networks.ARCHITECTURES[model].resolve(layer)


@pytest.mark.parametrize("typo", ["xyz", "softmax", "dense_1"])
def test_nothing_near_suggests_nothing(typo):
    with pytest.raises(UsageError, match=rf"^squeezenet has no layer '{typo}'; its layers are conv1, pool1, fire2"):
        networks.ARCHITECTURES["squeezenet"].resolve(typo)


def test_constructor_rejects_wrong_shapes(vgg_params):
    broken = dict(vgg_params, block2_conv1=(np.zeros((3, 3, 64, 64), np.float32), np.zeros(64, np.float32)))
    with pytest.raises(ValueError, match=r"block2_conv1.*\(3, 3, 64, 128\)"):
        networks.Network("vgg19", broken)


def test_tables_match_the_published_layer_lists():
    """Names and kernel shapes of both tables, against the lists in network_helpers (from the published Keras layer lists)."""
    for model, convs in CONVS.items():
        arch = networks.ARCHITECTURES[model]
        assert list(arch.weight_shapes.items()) == [(layer, (shape, shape[3:])) for layer, shape in convs]
    assert networks.ARCHITECTURES["vgg19"].layer_names[-1] == "block5_pool"
    assert networks.DEFAULT_WEIGHTS_FILES == {
        "vgg19": "vgg19_weights_tf_dim_ordering_tf_kernels_notop.h5",
        "squeezenet": "squeezenet_weights_tf_dim_ordering_tf_kernels_notop.h5",
    }


def test_load_by_name_searches_and_by_path_detects(tmp_path, monkeypatch):
    params = random_params("squeezenet", np.random.default_rng(15))
    write_keras_weights(tmp_path / "squeezenet_weights_tf_dim_ordering_tf_kernels_notop.h5", "squeezenet", params,
                        style="squeezenet")
    monkeypatch.setenv("SCRATCHNST_WEIGHTS_DIR", str(tmp_path))
    net = networks.load("squeezenet")
    assert net.path == tmp_path / "squeezenet_weights_tf_dim_ordering_tf_kernels_notop.h5"
    np.testing.assert_array_equal(net.params["fire9/expand3x3"][0], params["fire9/expand3x3"][0])
    assert networks.load(net.path).name == "squeezenet"
    with pytest.raises(UsageError, match="unknown network 'vgg16'"):
        networks.load("vgg16")
    with pytest.raises(UsageError, match="pooling"):
        networks.load("squeezenet", pooling="min")

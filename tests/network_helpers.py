"""Helpers for the weights, networks and download tests: random weights, Keras-style HDF5 files,
an independent reader, and PyTorch versions of VGG-19 and SqueezeNet.

The PyTorch models are written out by hand from the published Keras and Caffe layer lists (not from
scratchnst.architectures' tables), so that a mistake in a table cannot hide by being copied into the
reference. They take and return tensors in our NHWC layout through scratchnst.torch_ref.
"""

import re

import h5py
import numpy as np

from scratchnst import torch_ref

# (layer, kernel shape) of each conv, written out here rather than taken from scratchnst.networks.
VGG19_CONVS = [
    (f"block{block}_conv{i}", (3, 3, c_in if i == 1 else c_out, c_out))
    for block, n, c_in, c_out in ((1, 2, 3, 64), (2, 2, 64, 128), (3, 4, 128, 256), (4, 4, 256, 512), (5, 4, 512, 512))
    for i in range(1, n + 1)
]
VGG19_BLOCK_SIZES = (2, 2, 4, 4, 4)

FIRES = [(f"fire{i}", s, e) for i, s, e in
         ((2, 16, 64), (3, 16, 64), (4, 32, 128), (5, 32, 128), (6, 48, 192), (7, 48, 192), (8, 64, 256), (9, 64, 256))]


def squeezenet_convs():
    """(layer, kernel shape) of SqueezeNet 1.1's 25 convs, in order."""
    convs, c_in = [("conv1", (3, 3, 3, 64))], 64
    for fire, squeeze, expand in FIRES:
        convs += [(f"{fire}/squeeze1x1", (1, 1, c_in, squeeze)), (f"{fire}/expand1x1", (1, 1, squeeze, expand)),
                  (f"{fire}/expand3x3", (3, 3, squeeze, expand))]
        c_in = 2 * expand
    return convs


CONVS = {"vgg19": VGG19_CONVS, "squeezenet": squeezenet_convs()}


def random_params(model, rng, dtype=np.float32):
    """{layer: (kernel, bias)} with He-scaled kernels, so activations stay of the input's size."""
    params = {}
    for layer, shape in CONVS[model]:
        fan_in = shape[0] * shape[1] * shape[2]
        kernel = (rng.standard_normal(shape) * np.sqrt(2.0 / fan_in)).astype(dtype)
        params[layer] = (kernel, (0.1 * rng.standard_normal(shape[3])).astype(dtype))
    return params


def keras_layer_names(model):
    """Every layer a Keras file of the model lists, weightless ones included, in order."""
    if model == "vgg19":
        names = ["input_1"]
        for block, n in enumerate(VGG19_BLOCK_SIZES, start=1):
            names += [f"block{block}_conv{i}" for i in range(1, n + 1)] + [f"block{block}_pool"]
        return names
    names = ["input_1", "conv1", "relu_conv1", "pool1"]
    for fire, _, _ in FIRES:
        names += [f"{fire}/squeeze1x1", f"{fire}/relu_squeeze1x1", f"{fire}/expand1x1", f"{fire}/expand3x3",
                  f"{fire}/relu_expand1x1", f"{fire}/relu_expand3x3", f"{fire}/concat"]
        if fire in ("fire3", "fire5"):
            names.append("pool3" if fire == "fire3" else "pool5")
    return names


def weight_names(layer, style):
    """Dataset names of a layer's kernel and bias in the naming style of one Keras version."""
    if style == "keras2":  # block1_conv1/block1_conv1/kernel:0
        return [f"{layer}/kernel:0", f"{layer}/bias:0"]
    if style == "keras1":  # block1_conv1/block1_conv1_W_1:0
        return [f"{layer}_W_1:0", f"{layer}_b_1:0"]
    if style == "squeezenet":  # fire2/squeeze1x1/fire2/squeeze1x1_3/kernel:0
        return [f"{layer}_3/kernel:0", f"{layer}_3/bias:0"]
    raise ValueError(style)


def write_keras_weights(path, model, params, style="keras2", as_bytes=True):
    """Write params as a Keras-2 weights file: layer_names, one group per layer, weight_names.

    as_bytes: store names as fixed-length bytes (as Keras does) or as variable-length str.
    The bias dataset is created before the kernel, so that only weight_names gives the order.
    """
    encode = (lambda names: np.array([n.encode() for n in names])) if as_bytes else (lambda names: list(names))
    with h5py.File(path, "w") as f:
        f.attrs["layer_names"] = encode(keras_layer_names(model))
        f.attrs["backend"] = "tensorflow"
        f.attrs["keras_version"] = "2.0.0"
        for layer in keras_layer_names(model):
            group = f.create_group(layer)
            if layer not in params:
                group.attrs["weight_names"] = np.array([], dtype=np.float64)  # as Keras stores "none"
                continue
            kernel_name, bias_name = weight_names(layer, style)
            group.attrs["weight_names"] = encode([kernel_name, bias_name])
            group.create_dataset(bias_name, data=params[layer][1])
            group.create_dataset(kernel_name, data=params[layer][0])
    return path


def keras3_layers(model, expand3x3_first=False, top=False):
    """(class name, layer's own name, params key or None) of every layer of a Keras 3 model, in its order.

    Written out from what Keras 3.15 saves for keras.applications' VGG19 and a keras-squeezenet
    built in it ("/" is refused in Keras 3 layer names, so fire2/squeeze1x1 is fire2_squeeze1x1).
    """
    rows = [("input_layer", "input_1", None)]
    if model == "vgg19":
        for block, n in enumerate(VGG19_BLOCK_SIZES, start=1):
            rows += [("conv2d", f"block{block}_conv{i}", f"block{block}_conv{i}") for i in range(1, n + 1)]
            rows.append(("max_pooling2d", f"block{block}_pool", None))
    else:
        rows += [("conv2d", "conv1", "conv1"), ("activation", "relu_conv1", None), ("max_pooling2d", "pool1", None)]
        for fire, _, _ in FIRES:
            branches = [("conv2d", f"{fire}_expand1x1", f"{fire}/expand1x1"),
                        ("conv2d", f"{fire}_expand3x3", f"{fire}/expand3x3")]
            rows += [("conv2d", f"{fire}_squeeze1x1", f"{fire}/squeeze1x1"), ("activation", f"{fire}_relu", None)]
            rows += branches[::-1] if expand3x3_first else branches
            rows += [("activation", f"{fire}_relu_e1", None), ("activation", f"{fire}_relu_e3", None),
                     ("concatenate", f"{fire}_concat", None)]
            if fire in ("fire3", "fire5"):
                rows.append(("max_pooling2d", "pool3" if fire == "fire3" else "pool5", None))
        if top:
            rows.append(("conv2d", "conv10", "conv10"))
    return rows


def write_keras3_weights(target, model, params, nested=False, names=True, **layers):
    """Write params in Keras 3's layout (what model.save_weights("x.weights.h5") writes) to a path or file object.

    Each layer is a group named after its class, numbered in the model's order (conv2d, conv2d_1,
    ...), its variables in `vars/0`, `vars/1` (kernel, bias); a weightless layer has an empty
    `vars`; `vars` carries the layer's own name when `names`. The datasets are created in an
    order unlike the model's (reversed), so that only the numbering gives the order. nested: the
    network inside a Sequential with a Dense on top, as layers/functional/layers/... . Other
    keyword arguments go to keras3_layers; params may hold "conv10" (and a layer of a tuple of
    one array has no bias).
    """
    rows = keras3_layers(model, **layers)
    counts, paths = {}, []
    for cls, own, key in rows:
        number = counts.get(cls, -1) + 1
        counts[cls] = number
        paths.append((f"{cls}_{number}" if number else cls, own, key))
    with h5py.File(target, "w") as f:
        base = f.create_group("layers")
        if nested:
            outer = base
            base = outer.create_group("functional").create_group("layers")
            dense = outer.create_group("dense").create_group("vars")
            dense.create_dataset("0", data=np.zeros((7, 10), np.float32))
            dense.create_dataset("1", data=np.zeros(10, np.float32))
        for group_name, own, key in reversed(paths):
            variables = base.create_group(group_name).create_group("vars")
            if names:
                variables.attrs["name"] = own
            for k, array in reversed(list(enumerate(params[key] if key else ()))):
                variables.create_dataset(str(k), data=array)
        f.create_group("vars")
    return target


def read_all_datasets(path):
    """{layer: {"kernel": array, "bias": array}} by walking every dataset in the file.

    Deliberately not scratchnst's method (attributes): the layer is recovered from the dataset
    path, <layer>/<layer><suffix>/(kernel|bias):0, <layer>/<layer>/(kernel|bias):0 or
    <layer>/<layer>_(W|b)_1:0, as an independent check of what the reader returns.
    """
    found = {}

    def visit(name, obj):
        if not isinstance(obj, h5py.Dataset):
            return
        match = (re.fullmatch(r"(?P<layer>.+)/(?P=layer)(_\d+)?/(?P<what>kernel|bias):0", name)
                 or re.fullmatch(r"(?P<layer>.+)/(?P=layer)_(?P<what>W|b)_1:0", name))
        assert match, f"unexpected dataset {name}"
        what = {"W": "kernel", "b": "bias"}.get(match["what"], match["what"])
        found.setdefault(match["layer"], {})[what] = obj[()]

    with h5py.File(path, "r") as f:
        f.visititems(visit)
    return found


def max_rel_error(a, b):
    """max |a - b| / max |b|: relative to the largest magnitude.

    Elementwise relative error is meaningless after a ReLU: values near zero come from
    cancellation and carry the absolute rounding error of the large terms that cancelled.
    """
    a, b = np.asarray(a, dtype=np.float64), np.asarray(b, dtype=np.float64)
    assert a.shape == b.shape, (a.shape, b.shape)
    return float(np.max(np.abs(a - b)) / max(np.max(np.abs(b)), 1e-300))


# ------------------------------------------------------------------------ PyTorch references
def _pool(a, size, stride, pooling):
    return (torch_ref.max_pool if pooling == "max" else torch_ref.avg_pool)(a, size, stride, "valid")


def torch_vgg19(x, params, pooling="max"):
    """{layer: activation} of VGG-19 in PyTorch, x (N, H, W, 3) tensor, params {layer: (k, b) tensors}."""
    acts, a = {}, x
    for block, n in enumerate(VGG19_BLOCK_SIZES, start=1):
        for i in range(1, n + 1):
            name = f"block{block}_conv{i}"
            a = acts[name] = torch_ref.relu(torch_ref.conv2d(a, *params[name], stride=1, padding="same"))
        a = acts[f"block{block}_pool"] = _pool(a, 2, 2, pooling)
    return acts


def torch_squeezenet(x, params, pooling="max"):
    """{layer: activation} of SqueezeNet 1.1 (Keras variant) in PyTorch; fire modules under their own name."""
    acts = {}
    a = acts["conv1"] = torch_ref.relu(torch_ref.conv2d(x, *params["conv1"], stride=2, padding="valid"))
    a = acts["pool1"] = _pool(a, 3, 2, pooling)
    for fire, _, _ in FIRES:
        s = acts[f"{fire}/squeeze1x1"] = torch_ref.relu(torch_ref.conv2d(a, *params[f"{fire}/squeeze1x1"]))
        e1 = acts[f"{fire}/expand1x1"] = torch_ref.relu(torch_ref.conv2d(s, *params[f"{fire}/expand1x1"]))
        e3 = acts[f"{fire}/expand3x3"] = torch_ref.relu(
            torch_ref.conv2d(s, *params[f"{fire}/expand3x3"], padding="same"))
        a = acts[fire] = torch_ref.concat([e1, e3])
        if fire in ("fire3", "fire5"):
            a = acts["pool3" if fire == "fire3" else "pool5"] = _pool(a, 3, 2, pooling)
    return acts


TORCH_MODELS = {"vgg19": torch_vgg19, "squeezenet": torch_squeezenet}


def torch_params(params):
    """{layer: (kernel, bias)} as float64 torch tensors."""
    return {layer: tuple(torch_ref.to_torch(np.asarray(a, dtype=np.float64)) for a in pair)
            for layer, pair in params.items()}

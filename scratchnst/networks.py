"""VGG-19 and SqueezeNet 1.1 as data tables; activations at named layers, gradients back to the pixels.

An architecture is a tuple of rows (Conv, Pool, Fire). `Architecture` expands it into the steps of
the forward pass, each one a layer of `scratchnst.layers`. `load` reads the weights from HDF5
(`scratchnst.weights`) and returns a `Network`:

    net = load("vgg19")                                  # or "squeezenet", or a path to an .h5 file
    x = image.preprocess(content, net.preprocessing)     # (1, H, W, 3)
    acts = net.forward(x, ["conv4_2", "block1_conv1"])   # {name: (1, H_l, W_l, C_l)}
    dx = net.backward({"conv4_2": d_conv4_2, "block1_conv1": d_block1_conv1})   # (1, H, W, 3)

Layer names are the weights file's (block4_conv2, fire2/squeeze1x1); the course's short names
(conv4_2, pool1) and Keras's ReLU layer names (relu_conv1, fire2/relu_expand1x1) work too, and
"fire2" names the fire module's output (fire2/concat). The activation of a convolution is taken
after its ReLU, as Keras's Conv2D(activation="relu") gives it.
"""

import difflib
import re
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from scratchnst import layers
from scratchnst import weights as weights_io
from scratchnst.errors import UsageError, UserError
from scratchnst.image import PREPROCESSING


# ------------------------------------------------------------------------------ table rows
@dataclass(frozen=True)
class Conv:
    """Convolution + ReLU; kernel (size, size, C_in, filters), C_in from the layer below."""

    name: str  # the layer's name in the weights file
    size: int
    filters: int
    stride: int = 1
    padding: str = "same"


@dataclass(frozen=True)
class Pool:
    """Pooling over size x size windows; max or average is chosen when the network is loaded."""

    name: str
    size: int = 2
    stride: int = 2
    padding: str = "valid"  # floor: Keras drops the last partial window (Caffe keeps it)


@dataclass(frozen=True)
class Fire:
    """SqueezeNet's fire module -> (N, H, W, 2 * expand).

    squeeze1x1: 1x1 conv to `squeeze` channels + ReLU; on it, expand1x1 (1x1) and expand3x3
    (3x3 'same'), `expand` channels each + ReLU; concatenated on channels, expand1x1 first.
    """

    name: str
    squeeze: int
    expand: int


# Keras VGG19 (include_top=False): 3x3 'same' convolutions, 2x2 stride-2 'valid' pools.
VGG19 = (
    Conv("block1_conv1", 3, 64), Conv("block1_conv2", 3, 64), Pool("block1_pool"),
    Conv("block2_conv1", 3, 128), Conv("block2_conv2", 3, 128), Pool("block2_pool"),
    Conv("block3_conv1", 3, 256), Conv("block3_conv2", 3, 256),
    Conv("block3_conv3", 3, 256), Conv("block3_conv4", 3, 256), Pool("block3_pool"),
    Conv("block4_conv1", 3, 512), Conv("block4_conv2", 3, 512),
    Conv("block4_conv3", 3, 512), Conv("block4_conv4", 3, 512), Pool("block4_pool"),
    Conv("block5_conv1", 3, 512), Conv("block5_conv2", 3, 512),
    Conv("block5_conv3", 3, 512), Conv("block5_conv4", 3, 512), Pool("block5_pool"),
)

# keras-squeezenet's SqueezeNet 1.1 (include_top=False): conv1 3x3 stride 2 'valid', 3x3 stride-2
# 'valid' max pools. (Caffe and torchvision round pool sizes up, so their shapes differ from these.)
SQUEEZENET = (
    Conv("conv1", 3, 64, stride=2, padding="valid"),
    Pool("pool1", 3, 2),
    Fire("fire2", 16, 64), Fire("fire3", 16, 64),
    Pool("pool3", 3, 2),
    Fire("fire4", 32, 128), Fire("fire5", 32, 128),
    Pool("pool5", 3, 2),
    Fire("fire6", 48, 192), Fire("fire7", 48, 192), Fire("fire8", 64, 256), Fire("fire9", 64, 256),
)


# ------------------------------------------------------------------------- compiled tables
@dataclass(frozen=True)
class Step:
    """One step of the forward pass: `op` applied to the activations named in `inputs`."""

    name: str  # the activation it produces
    op: str  # "conv" (convolution + ReLU), "pool" or "concat"
    inputs: tuple  # names of the activations it reads; "input" is the image
    spec: object = None  # the Conv or Pool row; None for concat
    kernel_shape: tuple = None  # (KH, KW, C_in, C_out) of a conv


def _steps(table):
    """Expand a table into steps in forward order, working out each kernel's C_in."""
    steps = []
    below, channels = "input", 3  # the activation the next row reads, and its channel count

    def conv(row, source, c_in):
        steps.append(Step(row.name, "conv", (source,), row, (row.size, row.size, c_in, row.filters)))

    for row in table:
        if isinstance(row, Conv):
            conv(row, below, channels)
            below, channels = row.name, row.filters
        elif isinstance(row, Pool):
            steps.append(Step(row.name, "pool", (below,), row))
            below = row.name
        else:
            squeeze, expand1, expand3, concat = (f"{row.name}/{part}" for part in
                                                 ("squeeze1x1", "expand1x1", "expand3x3", "concat"))
            conv(Conv(squeeze, 1, row.squeeze), below, channels)
            conv(Conv(expand1, 1, row.expand), squeeze, row.squeeze)
            conv(Conv(expand3, 3, row.expand), squeeze, row.squeeze)
            steps.append(Step(concat, "concat", (expand1, expand3)))
            below, channels = concat, 2 * row.expand
    return tuple(steps)


def _min_input_sizes(steps):
    """{step name: smallest input side (H and W alike) for which its output is not empty}.

    Tries sides 1, 2, 3, ... until the deepest step fits: sizes only grow with the input, so the
    first side that fits a step is its minimum. layers.conv_output_size raises on empty outputs.
    """
    need = {}
    side = 0
    while len(need) < len(steps):
        side += 1
        size = {"input": side}
        for step in steps:
            n = size[step.inputs[0]]
            if n is not None and step.op != "concat":
                try:
                    n = layers.conv_output_size(n, step.spec.size, step.spec.stride, step.spec.padding)[0]
                except ValueError:
                    n = None
            size[step.name] = n
            if n is not None:
                need.setdefault(step.name, side)
    return need


def _course_names(table, steps):
    """The course's short VGG names: conv4_2 -> block4_conv2, pool1 -> block1_pool."""
    aliases = {}
    for row in table:
        match = re.fullmatch(r"block(\d+)_(conv(\d+)|pool)", row.name)
        if match:
            block, conv_index = match.group(1), match.group(3)
            aliases[f"conv{block}_{conv_index}" if conv_index else f"pool{block}"] = row.name
    return aliases


def _squeezenet_names(table, steps):
    """Keras SqueezeNet's other names for our activations: fire2 -> fire2/concat, and the names of
    its separate ReLU layers (relu_conv1 -> conv1, fire2/relu_squeeze1x1 -> fire2/squeeze1x1),
    since our conv activations are already after the ReLU."""
    aliases = {}
    for step in steps:
        head, _, tail = step.name.rpartition("/")
        if step.op == "conv":
            aliases[f"{head}/relu_{tail}" if head else f"relu_{tail}"] = step.name
        elif step.op == "concat":
            aliases[head] = step.name
    return aliases


class Architecture:
    """A table compiled into forward steps, with the names its layers answer to.

    Attributes:
        name: "vgg19" or "squeezenet".
        steps: tuple of Step in forward order.
        layer_names: every activation's name, in forward order.
        aliases: {other name: layer name}, made by `aliases(table, steps)` given to the constructor.
        weight_shapes: {conv layer: ((KH, KW, C_in, C_out), (C_out,))} in forward order.
        min_input_sizes: {layer: smallest input side giving it a non-empty output}.
    """

    def __init__(self, name, table, aliases):
        self.name = name
        self.steps = _steps(table)
        self.layer_names = tuple(step.name for step in self.steps)
        self.aliases = aliases(table, self.steps)
        self.weight_shapes = {step.name: (step.kernel_shape, step.kernel_shape[-1:])
                              for step in self.steps if step.op == "conv"}
        self.min_input_sizes = _min_input_sizes(self.steps)
        self.index = {name: i for i, name in enumerate(self.layer_names)}

    def resolve(self, layer):
        """The file's name of a layer given by any of its names.

        Raises:
            UsageError: an unknown name, in one line that suggests the nearest names and lists the
                layers: "squeezenet has no layer 'fire33'; did you mean fire3? Its layers are conv1, ...".
        """
        if layer in self.index:
            return layer
        if layer in self.aliases:
            return self.aliases[layer]
        other = next((arch.name for arch in ARCHITECTURES.values() if arch is not self and arch.knows(layer)), None)
        close = self.close_names(str(layer))
        if other is not None:
            head = f" (a layer of {other}: choose {other} as the network, or a layer of {self.name}); its"
        elif close:
            head = f"; did you mean {' or '.join([', '.join(close[:-1]), close[-1]] if len(close) > 1 else close)}? Its"
        else:
            head = "; its"
        raise UsageError(f"{self.name} has no layer {layer!r}{head} layers are {self.layer_summary()}")

    def knows(self, layer):
        """True if `layer` is one of the names of a layer of this architecture."""
        return layer in self.index or layer in self.aliases

    def close_names(self, layer):
        """The names nearest to a misspelt layer name (at most four, as near as the nearest), or [].

        Nearness is difflib's ratio, case ignored; below 0.6 (difflib.get_close_matches' cutoff)
        a guess misleads more than it helps. Ties are kept (conv4 is as near to conv4_1 as to
        conv4_2), names that start with what was typed first. ReLU aliases are never suggested:
        they name the same activations as the convolutions.
        """
        names = list(self.layer_names) + [alias for alias in self.aliases if "relu" not in alias]
        by_lower = {name.lower(): name for name in names}
        if layer.lower() in by_lower:  # Conv4_2, FIRE3: only the case is wrong
            return [by_lower[layer.lower()]]
        scores = {name: difflib.SequenceMatcher(None, layer.lower(), name.lower()).ratio() for name in names}
        best = max(scores.values())
        if best < 0.6:
            return []
        close = [name for name in names if scores[name] >= best - 1e-9]
        return sorted(close, key=lambda name: not name.lower().startswith(layer.lower()))[:4]

    def layer_summary(self):
        """The layer names to show a user, one line: "conv1, pool1, fire2, ... (and ...)"."""
        shown, parts = [], []
        for step in self.steps:
            head, _, tail = step.name.rpartition("/")
            if step.op == "concat":
                shown.append(head)  # a fire module answers to its own name
            elif head:
                parts.append(step.name)
            else:
                shown.append(step.name)
        other = [alias for alias, target in self.aliases.items()
                 if "relu" not in alias and alias not in shown and target in shown]
        notes = []
        if parts:
            notes.append(f"and the parts of each, e.g. {', '.join(parts[:3])}")
        if other:
            notes.append(f"or by the course's names {', '.join(other[:3])} ... {other[-1]}")
        return ", ".join(shown) + (f" ({'; '.join(notes)})" if notes else "")


ARCHITECTURES = {
    "vgg19": Architecture("vgg19", VGG19, _course_names),
    "squeezenet": Architecture("squeezenet", SQUEEZENET, _squeezenet_names),
}

# The file `find_weights` looks for, per network (see scratchnst.weights.KNOWN_WEIGHTS).
DEFAULT_WEIGHTS_FILES = {name: known.filename for name, known in weights_io.KNOWN_WEIGHTS.items()}

POOLINGS = ("max", "avg")


# --------------------------------------------------------------------- weights <-> tables
def parameter_problem(architecture, arrays):
    """What, if anything, keeps `arrays` from being the weights of an architecture.

    Args:
        architecture: "vgg19" or "squeezenet".
        arrays: {layer name: sequence of arrays}; extra layers are ignored (weightless layers,
            a classifier on top).

    Returns:
        None if every conv layer has exactly (kernel, bias) of the expected shapes and a float
        dtype, else one line naming the first layer that does not, e.g.
        "layer block1_conv1 of vgg19: kernel shape (3, 3, 3, 32), expected (3, 3, 3, 64)".
    """
    arch = ARCHITECTURES[architecture]
    for layer, shapes in arch.weight_shapes.items():
        if layer not in arrays:
            return f"layer {layer} of {arch.name} is missing"
        found = arrays[layer]
        if len(found) != 2:
            return f"layer {layer} of {arch.name} has {len(found)} weight arrays, expected 2 (kernel, bias)"
        for what, array, expected in zip(("kernel", "bias"), found, shapes):
            if tuple(array.shape) != expected:
                return f"layer {layer} of {arch.name}: {what} shape {tuple(array.shape)}, expected {expected}"
            if not np.issubdtype(array.dtype, np.floating):
                return f"layer {layer} of {arch.name}: {what} has dtype {array.dtype}, expected floats"
    return None


def detect_architecture(layer_names):
    """The architecture most of whose conv layers appear in `layer_names`, or None if none does."""
    present = {name: sum(layer in layer_names for layer in arch.weight_shapes)
               for name, arch in ARCHITECTURES.items()}
    best = max(present, key=present.get)
    return best if present[best] > 0 else None


def parameters_from_file(weights_file, architecture=None):
    """The conv parameters of a network from a read weights file, checked.

    Args:
        weights_file: a weights.WeightsFile.
        architecture: the network wanted; None to take the one the file declares or matches.

    Returns:
        (architecture name, {conv layer: (kernel (KH, KW, C_in, C_out), bias (C_out,))}) in the
        file's dtype.

    Raises:
        UserError: one line naming the file (and the layer) and saying what to do: a layer
            missing, a wrong shape, another architecture, none of the layers of a known one, an
            unknown declared architecture or preprocessing.
    """
    label = weights_file.label
    declared = weights_file.architecture
    known = " or ".join(ARCHITECTURES)
    if declared is not None and declared not in ARCHITECTURES:
        raise UserError(f"{label}: declares architecture {declared!r}, which scratchnst does not know; "
                        f"give {known} weights (`scratchnst weights list` shows those found)")
    if weights_file.preprocessing not in PREPROCESSING:
        raise UserError(f"{label}: declares preprocessing {weights_file.preprocessing!r}, which scratchnst does "
                        f"not know ({', '.join(PREPROCESSING)}); convert the weights again with "
                        "`scratchnst weights convert`")
    detected = detect_architecture(weights_file.layers)
    name = architecture or declared or detected
    if declared is None and detected is None:  # the weights of some other network
        first = ", ".join(layer for layer, arrays in weights_file.layers.items() if arrays)
        get = weights_io.download_command(name) if name else "`scratchnst weights list` shows those found"
        raise UserError(f"{label}: has none of the layers of {name or known} (its layers with weights: "
                        f"{first[:200] or 'none'}); give {name or known} weights ({get})")
    holds = declared or detected
    if holds != name:
        raise UserError(f"{label}: holds {holds} weights, not {name}; choose {holds} as the network, or give "
                        f"{name} weights ({weights_io.download_command(name)})")
    problem = parameter_problem(name, weights_file.layers)
    if problem:
        raise UserError(f"{label}: {problem}; the file is damaged or not the published {name} weights: "
                        f"download them again with {weights_io.download_command(name)}")
    return name, {layer: tuple(weights_file.layers[layer]) for layer in ARCHITECTURES[name].weight_shapes}


def load(name_or_path, weights=None, pooling="max", dtype=np.float32):
    """Load a pretrained network.

    Args:
        name_or_path: "vgg19" or "squeezenet" (the file is found by weights.find_weights), or the
            path of an HDF5 weights file (Keras-2 or scratchnst layout) whose architecture is
            detected from its layers.
        weights: with a name, the weights file to use instead of searching (--weights FILE).
        pooling: "max" (as the networks were trained) or "avg" (Gatys et al.: smoother gradients).
        dtype: np.float32 (default) or np.float64 (gradient checks); weights, activations and
            gradients all have it.

    Returns:
        Network.

    Raises:
        UsageError: an unknown network name or pooling.
        UserError: file not found (naming where it looked and the download command), or a bad
            weights file (naming the file and the layer, and saying what to do).
    """
    if pooling not in POOLINGS:
        raise UsageError(f"pooling must be one of {', '.join(POOLINGS)}, got {pooling!r}")
    if str(name_or_path) in ARCHITECTURES:
        wanted = str(name_or_path)
        path = weights_io.find_weights(wanted, explicit=weights)
    else:
        if weights is not None:
            raise ValueError("give the weights file either as name_or_path or as weights=, not both")
        path = Path(name_or_path)
        if not path.exists() and not path.suffix:
            raise UsageError(f"unknown network {str(name_or_path)!r}: choose {' or '.join(ARCHITECTURES)}, "
                             "or give the path of an HDF5 weights file")
        wanted = None
    weights_file = weights_io.read_weights(path, model=wanted)
    name, params = parameters_from_file(weights_file, wanted)
    return Network(name, params, pooling=pooling, dtype=dtype,
                   preprocessing=weights_file.preprocessing, path=path)


# --------------------------------------------------------------------------------- network
def _read_only(array):
    """A view of array that cannot be written through (the array itself stays writable)."""
    view = array.view()
    view.flags.writeable = False
    return view


class Network:
    """A CNN with fixed weights: activations at named layers, gradients back to the pixels.

    Attributes:
        name: "vgg19" or "squeezenet".
        arch: its Architecture (steps, aliases, weight shapes, minimum sizes per layer).
        path: the weights file it came from, or None.
        dtype: of weights, activations and gradients (float32 by default; float64 for checks).
        pooling: "max" or "avg".
        preprocessing: the `image.preprocess` mode its weights expect ("caffe" or "torchvision").
        layer_names: every layer's name in forward order (conv layers, pools, fire modules'
            squeeze1x1, expand1x1, expand3x3 and concat).
        min_input_size: the smallest height and width for which every layer's output is non-empty
            (VGG-19: 32, five 2x2 pools; SqueezeNet: 31; Keras asks 48 of SqueezeNet, more than
            its layers need). `min_input_size_for(layers)` answers for the layers you use.
        params: {conv layer: (kernel (KH, KW, C_in, C_out), bias (C_out,))}, read-only.

    Memory: `forward` keeps, until the next `forward`, what `backward` needs: each conv layer's
    input and ReLU output and each max pool's argmax (uint8, a quarter of its float32 output).
    The ReLU output of one layer is the input of the next, held once, so this costs about one
    copy of every activation computed (a fire module's concatenation adds a second copy of its
    two branches). For VGG-19 on one 400x400 float32 image run through block5_conv4 that is about
    215 MB; `cache_nbytes()` measures it. Intermediate gradients live only during `backward`.
    """

    def __init__(self, architecture, params, pooling="max", dtype=np.float32, preprocessing="caffe", path=None):
        """Build a network from arrays.

        Args:
            architecture: "vgg19" or "squeezenet".
            params: {conv layer: (kernel, bias)} with the shapes `ARCHITECTURES[...].weight_shapes` gives.
            pooling, dtype: see `load`.
            preprocessing: "caffe" or "torchvision".
            path: the file the weights came from, for messages.
        """
        if architecture not in ARCHITECTURES:
            raise ValueError(f"architecture must be one of {sorted(ARCHITECTURES)}, got {architecture!r}")
        if pooling not in POOLINGS:
            raise ValueError(f"pooling must be one of {POOLINGS}, got {pooling!r}")
        if not np.issubdtype(dtype, np.floating):
            raise ValueError(f"dtype must be a float type, got {dtype!r}")
        if preprocessing not in PREPROCESSING:
            raise ValueError(f"preprocessing must be one of {sorted(PREPROCESSING)}, got {preprocessing!r}")
        problem = parameter_problem(architecture, params)
        if problem:
            raise ValueError(problem)
        self.arch = ARCHITECTURES[architecture]
        self.name = architecture
        self.path = None if path is None else Path(path)
        self.dtype = np.dtype(dtype)
        self.pooling = pooling
        self.preprocessing = preprocessing
        self.layer_names = self.arch.layer_names
        self.min_input_size = max(self.arch.min_input_sizes.values())
        self.params = {layer: tuple(_read_only(np.array(a, dtype=self.dtype)) for a in params[layer])
                       for layer in self.arch.weight_shapes}
        self._caches = None  # {step name: cache} of the last forward
        self._shapes = None  # {step name: activation shape} of the last forward

    def __repr__(self):
        return (f"Network({self.name!r}, pooling={self.pooling!r}, dtype={self.dtype.name}, "
                f"weights={str(self.path) if self.path else None!r})")

    def min_input_size_for(self, layers_wanted):
        """The smallest height and width giving every layer in `layers_wanted` a non-empty output."""
        return max(self.arch.min_input_sizes[self.arch.resolve(layer)] for layer in layers_wanted)

    # ------------------------------------------------------------------------- forward
    def forward(self, x, layers_wanted):
        """Run the network on x, only as deep as the deepest layer asked for; keep the caches.

        Args:
            x: (N, H, W, 3), preprocessed (`image.preprocess(..., self.preprocessing)`), dtype
                self.dtype. Not written to, and kept (the first conv's cache holds it).
            layers_wanted: layer names (any of their names, see the module docstring), or one name.

        Returns:
            {name as given: activation (N, H_l, W_l, C_l)}, read-only; conv activations are after
            the ReLU.

        Raises:
            UsageError: an unknown layer name.
            UserError: an image smaller than the deepest layer needs.
            TypeError: x does not have the network's dtype.
        """
        if isinstance(layers_wanted, str):
            layers_wanted = [layers_wanted]
        x = np.asarray(x)
        if x.ndim != 4 or x.shape[3] != 3:
            raise ValueError(f"x must be (N, H, W, 3), got {x.shape}")
        if x.dtype != self.dtype:
            raise TypeError(f"x is {x.dtype} but the network is {self.dtype}; cast x, or load the network "
                            f"with dtype=np.{x.dtype}")
        targets = {layer: self.arch.resolve(layer) for layer in layers_wanted}
        if not targets:
            return {}
        deepest = max(targets.values(), key=self.arch.index.get)
        self._check_size(x.shape[1], x.shape[2], targets.values())

        self._caches = self._shapes = None  # free the last forward's caches before making new ones
        activations, caches = {"input": x}, {}
        for step in self.arch.steps[:self.arch.index[deepest] + 1]:
            out, caches[step.name] = self._step_forward(step, [activations[name] for name in step.inputs])
            activations[step.name] = out
        self._caches = caches
        self._shapes = {name: a.shape for name, a in activations.items()}
        return {layer: _read_only(activations[name]) for layer, name in targets.items()}

    def _check_size(self, H, W, names):
        """UserError if an H x W input leaves any of the layers `names` without output."""
        hungriest = max(names, key=self.arch.min_input_sizes.get)
        need = self.arch.min_input_sizes[hungriest]
        if min(H, W) < need:
            raise UserError(f"the image is {H}x{W} pixels, but layer {hungriest} of {self.name} needs at least "
                            f"{need}x{need}; use a larger image")

    def _step_forward(self, step, inputs):
        """(activation, cache) of one step; conv caches hold (conv cache, ReLU cache)."""
        if step.op == "conv":
            kernel, bias = self.params[step.name]
            z, conv_cache = layers.conv2d_forward(inputs[0], kernel, bias, step.spec.stride, step.spec.padding)
            out, relu_cache = layers.relu_forward(z)
            return out, (conv_cache, relu_cache)
        if step.op == "pool":
            pool = layers.max_pool_forward if self.pooling == "max" else layers.avg_pool_forward
            return pool(inputs[0], step.spec.size, step.spec.stride, step.spec.padding)
        return layers.concat_forward(inputs)

    # ------------------------------------------------------------------------ backward
    def backward(self, grads):
        """Back-propagate gradients given at several layers to the input pixels, in one pass.

        Args:
            grads: {layer name: dJ/da}, each the shape of that layer's activation in the last
                forward (which must have computed it) and of dtype self.dtype. Not written to.

        Returns:
            dJ/dx, (N, H, W, 3), dtype self.dtype; J is the sum of the costs at all the layers.

        Walks the steps from the deepest one with a gradient down to the input. A step's gradient
        is the one given for it (if any) plus what flows back from the steps reading it; a fire
        module's squeeze output adds up its two branches'. Convolutions skip dw and db: the
        weights are fixed, only the pixels change.
        """
        if self._caches is None:
            raise RuntimeError("call forward before backward")
        pending = {}  # step name -> dJ/d(its output) gathered so far
        for layer, grad in grads.items():
            name = self.arch.resolve(layer)
            if name not in self._caches:
                raise ValueError(f"layer {layer!r} was not computed by the last forward; ask forward for it")
            grad = np.asarray(grad)
            if grad.shape != self._shapes[name]:
                raise ValueError(f"gradient for {layer!r} has shape {grad.shape}, its activation {self._shapes[name]}")
            if grad.dtype != self.dtype:
                raise TypeError(f"gradient for {layer!r} is {grad.dtype} but the network is {self.dtype}")
            pending[name] = pending[name] + grad if name in pending else grad
        if not pending:
            return np.zeros(self._shapes["input"], dtype=self.dtype)

        deepest = max(pending, key=self.arch.index.get)
        for step in reversed(self.arch.steps[:self.arch.index[deepest] + 1]):
            dout = pending.pop(step.name, None)
            if dout is None:
                continue  # nothing flows back through this step (e.g. above every gradient given)
            for source, dx in zip(step.inputs, self._step_backward(step, dout, self._caches[step.name])):
                # `+` makes a new array: never add into a caller's gradient or another step's dx
                pending[source] = pending[source] + dx if source in pending else dx
        return pending["input"]

    def _step_backward(self, step, dout, cache):
        """Gradients with respect to each of a step's inputs, in the order of step.inputs."""
        if step.op == "conv":
            conv_cache, relu_cache = cache
            dz = layers.relu_backward(dout, relu_cache)
            dx, _, _ = layers.conv2d_backward(dz, conv_cache, weight_grads=False)
            return [dx]
        if step.op == "pool":
            pool_backward = layers.max_pool_backward if self.pooling == "max" else layers.avg_pool_backward
            return [pool_backward(dout, cache)]
        return layers.concat_backward(dout, cache)

    def cache_nbytes(self):
        """Bytes held by the caches of the last forward (each array once; views count as their base).

        The weights, which conv caches also point to, are not counted.
        """
        if self._caches is None:
            return 0
        weights_ids = {id(_base(a)) for pair in self.params.values() for a in pair}
        seen = {}

        def visit(obj):
            if isinstance(obj, np.ndarray):
                base = _base(obj)
                if id(base) not in weights_ids:
                    seen[id(base)] = base.nbytes
            elif isinstance(obj, (tuple, list)):
                for item in obj:
                    visit(item)

        visit(list(self._caches.values()))
        return sum(seen.values())


def _base(array):
    """The array that owns the memory a view looks into."""
    while isinstance(array.base, np.ndarray):
        array = array.base
    return array

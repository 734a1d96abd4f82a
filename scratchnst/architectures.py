"""VGG-19 and SqueezeNet 1.1 as data tables, and what follows from a table alone.

An architecture is a tuple of rows (Conv, Pool, Fire), in the order of the Keras models and with
their layer names. `Architecture` expands a table into the steps of the forward pass (each one a
layer of `scratchnst.layers`), the names each layer answers to, the shapes of its weights and the
smallest input each layer needs. Nothing here reads a file or computes an activation: `weights`
checks files against these tables, and `networks` runs them.

Layer names are the weights file's (block4_conv2, fire2/squeeze1x1); the course's short names
(conv4_2, pool1) and Keras's ReLU layer names (relu_conv1, fire2/relu_expand1x1) work too, and
"fire2" names the fire module's output (fire2/concat).
"""

import difflib
import re
from dataclasses import dataclass

import numpy as np

from scratchnst import layers
from scratchnst.errors import UsageError


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


def match_by_name(architecture, names):
    """{layer name: index into names} when each layer of the architecture is named exactly once in `names`.

    For a Keras 3 file, whose layers carry their own names beside the class-based ones: names tell
    layers apart where the order cannot (a convolution on top of a model nested in another one is
    listed before it). "/" and "_" count alike: Keras 3 refuses "/" in a name, so fire2/squeeze1x1
    is saved as fire2_squeeze1x1 (or fire2__squeeze1x1).

    Returns:
        the mapping, or None if a layer is missing or named twice. Shapes are checked afterwards,
        layer by layer, as for a Keras-2 file (`parameter_problem`).
    """
    def key(name):
        return re.sub(r"[/_]+", "_", name)

    found = {}
    for k, name in enumerate(names):
        if name:
            found.setdefault(key(name), []).append(k)
    matched = {}
    for layer in ARCHITECTURES[architecture].weight_shapes:
        places = found.get(key(layer), [])
        if len(places) != 1:
            return None
        matched[layer] = places[0]
    return matched


# A file that does not name its layers (Keras 3's layout: `keras3_layout`) is matched in order, but the
# two branches of a fire module (expand1x1, expand3x3) may be saved in either order: each layer is
# looked for among the next MATCH_WINDOW convolutions of the file, by its shapes.
MATCH_WINDOW = 3


def match_in_order(architecture, convolutions):
    """Which of a file's unnamed convolutions is which layer of an architecture, by order and shapes.

    Args:
        architecture: "vgg19" or "squeezenet".
        convolutions: [(label, shapes)] in the file's order, `shapes` a tuple of the layer's
            arrays' shapes ((KH, KW, C_in, C_out), (C_out,) for a convolution with a bias).

    Returns:
        ({layer name: index into convolutions}, None) when each layer of the architecture, in
        order, is found among the next MATCH_WINDOW convolutions not yet taken, with exactly its
        kernel and bias shapes, and any convolution left over comes after all of them (a
        classifier on top, as SqueezeNet's conv10); else (the layers matched so far, one line
        naming the first convolution of the file that could not be placed, with its shapes and
        those of the layer at its position).
    """
    arch = ARCHITECTURES[architecture]
    layers_in_order = list(arch.weight_shapes)
    free = list(range(len(convolutions)))
    matched = {}
    for layer, expected in arch.weight_shapes.items():
        window = free[:MATCH_WINDOW]
        found = next((k for k in window if tuple(map(tuple, convolutions[k][1])) == expected), None)
        if found is None:
            if not window:
                return matched, (f"the file has {len(convolutions)} convolutions, {arch.name} needs "
                                 f"{len(arch.weight_shapes)}")
            # The first one left is what blocks: compared with the layer at its own position, which
            # names the layer it was meant to be (the one sought may be further on).
            stuck = window[0]
            label, shapes = convolutions[stuck]
            there = layers_in_order[stuck] if stuck < len(layers_in_order) else layer
            return matched, (f"{label} has shapes {_shapes(shapes)} where layer {there} of {arch.name} has "
                             f"{_shapes(arch.weight_shapes[there])}")
        free.remove(found)
        matched[layer] = found
    skipped = [k for k in free if k < max(matched.values(), default=-1)]
    if skipped:
        label, shapes = convolutions[skipped[0]]
        return matched, f"{label} (shapes {_shapes(shapes)}) is not a layer of {arch.name}"
    return matched, None


def _shapes(shapes):
    """Shapes as a message writes them: "(3, 3, 64, 128), (128,)"."""
    return ", ".join(str(tuple(shape)) for shape in shapes)


def detect_architecture(layer_names):
    """The architecture most of whose conv layers appear in `layer_names`, or None if none does."""
    present = {name: sum(layer in layer_names for layer in arch.weight_shapes)
               for name, arch in ARCHITECTURES.items()}
    best = max(present, key=present.get)
    return best if present[best] > 0 else None

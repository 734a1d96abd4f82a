"""Keras 3's weights layout: what `model.save_weights("x.weights.h5")` and `model.save("x.keras")` write.

Keras 3 no longer writes `layer_names` (the Keras-2 layout `weights` reads). It saves the model's
object tree, each layer under a name made from its CLASS, numbered in the order of its container's
layers, and its variables under `vars/0`, `vars/1`... in the layer's own order (a convolution:
kernel (KH, KW, C_in, C_out), then bias (C_out,)):

    layers/conv2d/vars/0                       the first Conv2D of the model (keras.applications'
    layers/conv2d/vars/1                       VGG19: block1_conv1), its kernel and bias
    layers/conv2d_1/vars/0                     the second Conv2D, and so on; pooling, ReLU and
    ...                                        concatenation layers have an empty `vars`
    layers/functional/layers/conv2d/vars/0     a model inside a model (VGG19 inside a Sequential)

The layer's own name (block1_conv1, or whatever the user called it) is only an attribute `name` of
`vars`, in recent versions, and Keras 3 refuses "/" in layer names, so keras-squeezenet's
"fire2/squeeze1x1" cannot be one. A layer is therefore placed by its position and its shapes
(`architectures.match_in_order`), not by its name; the name is shown where there is one. A `.keras`
file is a ZIP archive holding the same weights as `model.weights.h5`, beside the model's
config.json and metadata.json.
"""

import json
import re
import zipfile

ARCHIVE_WEIGHTS = "model.weights.h5"   # the member of a .keras archive that holds the weights
ARCHIVE_METADATA = "metadata.json"
MAX_ARCHIVE_WEIGHTS = 4 * 2**30        # a .keras archive's weights are read into memory: VGG-19 with its top is 0.55 GB
MAX_DEPTH = 16                         # models inside models: far more than anyone nests
_NUMBERED = re.compile(r"^(.*?)(?:_(\d+))?$")


class ArchiveProblem(Exception):
    """A .keras archive whose weights cannot be read: the message says why, without the file's name."""


def is_layout(f):
    """True if an open h5py file is in Keras 3's layout: a `layers` group and no Keras-2 `layer_names`."""
    return "layers" in f and "layer_names" not in f.attrs and "layer_names0" not in f.attrs


def _keras_order(name):
    """The sort key that puts a container's layers in the order Keras numbered them: conv2d, conv2d_1, conv2d_2...

    Keras names the first layer of a class by the class alone and the n-th by "_{n-1}", so a
    plain sort of the names would put conv2d_10 before conv2d_2.
    """
    base, number = _NUMBERED.match(name).groups()
    return base, int(number) if number is not None else 0


def variable_layers(f, child):
    """Every layer of a Keras 3 file that has variables, in the model's order.

    Args:
        f: an open h5py file in Keras 3's layout (`is_layout`).
        child: child(group, name) -> the object `name` in `group`, or None; the caller's way of
            reaching objects (`weights` refuses soft and external links there).

    Returns:
        list of (path, name, dataset paths): the layer's group ("layers/conv2d_3"), its own name
        ("block2_conv2", or "" where the file does not say) and its variables' paths
        ("layers/conv2d_3/vars/0", ...) in the layer's order. Layers without variables are left out.
        Within one container the layers are in Keras's numbering order; containers nested in
        one another are walked depth first.
    """
    found = []

    def walk(group, path, depth):
        if depth > MAX_DEPTH:
            return
        for name in sorted(group.keys(), key=_keras_order):
            layer = child(group, name)
            if layer is None or not hasattr(layer, "keys"):
                continue
            here = f"{path}/{name}"
            variables = child(layer, "vars") if "vars" in layer else None
            if variables is not None and hasattr(variables, "keys"):
                numbered = sorted((key for key in variables.keys() if key.isdigit()), key=int)
                if numbered:
                    label = variables.attrs.get("name", "")
                    label = label.decode("utf8", "replace") if isinstance(label, bytes) else str(label)
                    found.append((here, label, [f"{here}/vars/{key}" for key in numbered]))
            inner = child(layer, "layers") if "layers" in layer else None
            if inner is not None and hasattr(inner, "keys"):
                walk(inner, f"{here}/layers", depth + 1)

    walk(child(f, "layers"), "layers", 0)
    return found


def archive_weights(path):
    """The bytes of a .keras archive's weights file and its Keras version, or None if `path` is no ZIP archive.

    Returns:
        None (not a ZIP archive, or one without the weights member: a PyTorch .pth is a ZIP
        archive too), or (bytes of model.weights.h5, keras_version or None).

    Raises:
        ArchiveProblem: a .keras archive whose weights are too large, or a damaged one.
        OSError: the file cannot be read.
    """
    named = str(path).lower().endswith(".keras")
    try:
        if not zipfile.is_zipfile(path):
            with open(path, "rb") as f:
                if named and f.read(4) == b"PK\x03\x04":   # a ZIP archive's start without its end
                    raise ArchiveProblem("a damaged ZIP archive (its directory, at the end, is missing: truncated?)")
            return None
        with zipfile.ZipFile(path) as archive:
            names = archive.namelist()
            if ARCHIVE_WEIGHTS not in names:
                return None
            info = archive.getinfo(ARCHIVE_WEIGHTS)
            if info.file_size > MAX_ARCHIVE_WEIGHTS:
                raise ArchiveProblem(f"its {ARCHIVE_WEIGHTS} declares {info.file_size:,} bytes, more than the "
                                     f"{MAX_ARCHIVE_WEIGHTS // 2**30} GiB any network scratchnst knows needs")
            with archive.open(info) as member:
                data = member.read(MAX_ARCHIVE_WEIGHTS + 1)
            version = None
            if ARCHIVE_METADATA in names and archive.getinfo(ARCHIVE_METADATA).file_size < 2**16:
                try:
                    version = json.loads(archive.read(ARCHIVE_METADATA)).get("keras_version")
                except (ValueError, AttributeError):
                    version = None
    except (zipfile.BadZipFile, zipfile.LargeZipFile, EOFError, NotImplementedError, RuntimeError) as error:
        if not named:
            return None  # some other damaged ZIP archive: the caller says what it looks like
        raise ArchiveProblem(f"a damaged ZIP archive ({str(error).splitlines()[0] if str(error) else 'unreadable'})")
    if len(data) > MAX_ARCHIVE_WEIGHTS:
        raise ArchiveProblem(f"its {ARCHIVE_WEIGHTS} is larger than it declares")
    return data, (str(version) if version is not None else None)

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
MAX_ARCHIVE_WEIGHTS = 2**30            # a .keras archive's weights are read into memory: VGG-19 with its top is 0.55 GB
# Trained float weights hardly compress (VGG-19's deflate to about 93%); a member that declares many
# times its compressed size is a decompression bomb, not weights.
MAX_COMPRESSION_RATIO = 20
_CHUNK = 2**20                         # a compressed member is inflated this much at a time
MAX_DEPTH = 16                         # models inside models: far more than anyone nests
# Groups walked in all: VGG-19 with its top has about 30 layers, a large model a few thousand. A
# hostile file can make a walk endless (groups hard-linked into a loop) or just very long.
MAX_GROUPS = 100_000
_NUMBERED = re.compile(r"^(.*?)(?:_(\d+))?$")
_SHOWN_NAME = 80   # characters of a layer's own name that messages show


class LayoutProblem(Exception):
    """A Keras 3 file or .keras archive that cannot be read: the message says why, without the file's name."""


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


def label(path, name):
    """How messages show a layer: its path in the file, and its own name, escaped and cut, if it has one.

    The name is the file's to choose: control characters (a terminal's escape sequences) are shown
    as \\x.., and a name of a million characters is cut.
    """
    if not name:
        return path
    shown = "".join(c if c.isprintable() else f"\\x{ord(c):02x}" if ord(c) < 256 else "?" for c in name[:_SHOWN_NAME])
    quoted = f'"{shown}..."' if len(name) > _SHOWN_NAME else f'"{shown}"'
    return f"{path} {quoted}" if path else quoted


def variable_layers(f, child):
    """Every layer of a Keras 3 file that has variables, container by container.

    Args:
        f: an open h5py file in Keras 3's layout (`is_layout`).
        child: child(group, name) -> the object `name` in `group`, or None; the caller's way of
            reaching objects (`weights` refuses soft and external links there).

    Returns:
        list of (path, name, dataset paths): the layer's group ("layers/conv2d_3"), its own name
        ("block2_conv2", or "" where the file does not say) and its variables' paths
        ("layers/conv2d_3/vars/0", ...) in the layer's order. Layers without variables are left out.
        Within one container, the layers of one class are in the model's order (Keras numbers them
        so); the file does not say how layers of different classes interleave (the groups are
        listed by name), nor containers nested in one another, which are walked depth first.

    Raises:
        LayoutProblem: a group reached twice (hard links can make a loop), more than MAX_GROUPS
            groups, or a layer whose variables are not numbered 0, 1, ... as Keras numbers them.
    """
    found, seen = [], set()

    def enter(obj, path):
        if obj.id in seen:   # the same object (its file and address), however it was reached
            raise LayoutProblem(f"{path} is a group met before (hard-linked into a loop?); the file is damaged")
        seen.add(obj.id)
        if len(seen) > MAX_GROUPS:
            raise LayoutProblem(f"more than {MAX_GROUPS:,} groups, more than any network's weights hold")

    def walk(group, path, depth):
        if depth > MAX_DEPTH:
            return
        enter(group, path)
        for name in sorted(group.keys(), key=_keras_order):
            layer = child(group, name)
            if layer is None or not hasattr(layer, "keys"):
                continue
            here = f"{path}/{name}"
            enter(layer, here)
            variables = child(layer, "vars") if "vars" in layer else None
            if variables is not None and hasattr(variables, "keys"):
                enter(variables, f"{here}/vars")
                keys = list(variables.keys())
                if keys:
                    if sorted(keys) != sorted(str(k) for k in range(len(keys))):
                        shown = ", ".join(repr(key) for key in sorted(keys)[:5])
                        raise LayoutProblem(f"{here}/vars holds {shown}{' ...' if len(keys) > 5 else ''}, where "
                                            "Keras numbers a layer's variables 0, 1, ...; the file is damaged")
                    own = variables.attrs.get("name", "")
                    own = own.decode("utf8", "replace") if isinstance(own, bytes) else str(own)
                    found.append((here, own, [f"{here}/vars/{k}" for k in range(len(keys))]))
            inner = child(layer, "layers") if "layers" in layer else None
            if inner is not None and hasattr(inner, "keys"):
                walk(inner, f"{here}/layers", depth + 1)

    walk(child(f, "layers"), "layers", 0)
    return found


def archive_weights(path):
    """The bytes of a .keras archive's weights file and its Keras version, or None if `path` is no such archive.

    Returns:
        None (not a ZIP archive, or one without the weights member: a PyTorch .pth is a ZIP
        archive too), or (bytes of model.weights.h5, keras_version or None).

    Raises:
        LayoutProblem: a .keras archive whose weights are too large, compressed beyond what weights
            compress to or by another method than Keras's, or damaged.
        OSError: the file cannot be read.
    """
    named = str(path).lower().endswith(".keras")
    try:
        if not zipfile.is_zipfile(path):
            with open(path, "rb") as f:
                if named and f.read(4) == b"PK\x03\x04":   # a ZIP archive's start without its end
                    raise LayoutProblem("a damaged ZIP archive (its directory, at the end, is missing: truncated?)")
            return None
        with zipfile.ZipFile(path) as archive:
            names = archive.namelist()
            if ARCHIVE_WEIGHTS not in names:
                return None
            data = _member(archive, archive.getinfo(ARCHIVE_WEIGHTS))
            version = None
            if ARCHIVE_METADATA in names and archive.getinfo(ARCHIVE_METADATA).file_size < 2**16:
                try:
                    version = json.loads(_member(archive, archive.getinfo(ARCHIVE_METADATA))).get("keras_version")
                except (ValueError, AttributeError, LayoutProblem):
                    version = None
    except (zipfile.BadZipFile, zipfile.LargeZipFile, EOFError, NotImplementedError, RuntimeError) as error:
        if not named:
            return None  # some other damaged ZIP archive: the caller says what it looks like
        raise LayoutProblem(f"a damaged ZIP archive ({str(error).splitlines()[0] if str(error) else 'unreadable'})")
    return data, (str(version) if version is not None else None)


def _member(archive, info):
    """The bytes of one member, read a chunk at a time: never more than it declares, nor a bomb's worth.

    Keras stores its members uncompressed; deflated ones are read too (an archive re-zipped by hand).
    Other methods are refused: Python inflates LZMA and bzip2 in one call whatever it is asked for,
    so a small member could take gigabytes before its size is known.
    """
    if info.compress_type not in (zipfile.ZIP_STORED, zipfile.ZIP_DEFLATED):
        raise LayoutProblem(f"its {info.filename} is compressed by method {info.compress_type}, not stored or "
                            "deflated as Keras and zip tools write")
    if info.file_size > MAX_ARCHIVE_WEIGHTS:
        raise LayoutProblem(f"its {info.filename} declares {info.file_size:,} bytes, more than the "
                            f"{MAX_ARCHIVE_WEIGHTS // 2**30} GiB any network scratchnst knows needs")
    deflated = info.compress_type == zipfile.ZIP_DEFLATED
    if deflated and info.file_size > MAX_COMPRESSION_RATIO * max(info.compress_size, 1):
        raise LayoutProblem(f"its {info.filename} declares {info.file_size:,} bytes compressed into "
                            f"{info.compress_size:,}, more than weights ever compress; the file is damaged")
    # zipfile stops at the declared size (checked above) and fails on a CRC that does not match it
    chunks = []
    with archive.open(info) as member:
        while chunk := member.read(_CHUNK):   # a deflated member inflates at most this much per call
            chunks.append(chunk)
    return b"".join(chunks)

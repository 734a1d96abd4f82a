"""Pretrained weights on disk: read Keras-2 and Keras 3 HDF5 files, write scratchnst's own, find, download, convert.

Keras-2 weight files (what `model.save_weights` writes and Keras Applications publish):

    root attribute `layer_names`   every layer of the model in order, weightless ones included
    one group per layer            its attribute `weight_names` lists its datasets in order
                                   (kernel then bias for a convolution; empty for ReLU or pooling)

The dataset paths differ between files and Keras versions, for example

    block1_conv1/block1_conv1/kernel:0              (Keras 2)
    block1_conv1/block1_conv1_W_1:0                 (Keras 1 names)
    fire2/squeeze1x1/fire2/squeeze1x1_3/kernel:0    (a layer name with "/" in it)

so, as Keras does, we take every name from these attributes: we never guess a path and never
walk `keys()`.

The scratchnst layout (weights/README.md) is the same structure, so this one reader (and Keras)
reads it, with datasets named `kernel` (KH, KW, C_in, C_out) and `bias` (C_out,) and root
attributes `scratchnst_format`, `architecture`, `preprocessing`, `preprocessing_description` and
`converted_from`. `convert` writes it from torchvision's and MatConvNet's VGG-19.

Keras 3's files (`.weights.h5`, and the same inside a `.keras` archive) name layers after their
class only: `keras3_layout` lists their layers in the model's order, and `_read_keras3` matches
the convolutions to a network by order and shapes (`architectures.match_in_order`).

Where weights are found (`find_weights`): the file given explicitly (--weights FILE), else the
known file name in $SCRATCHNST_WEIGHTS_DIR, then in weights/ of the repository, then in the per-user
cache ($XDG_CACHE_HOME/scratchnst or ~/.cache/scratchnst). `download` saves into
$SCRATCHNST_WEIGHTS_DIR if it is set, else into the cache.

Every dataset is checked as it is read (`read_weights`): reached through hard links only, numbers,
no NaN or inf. A file is then checked against the architecture tables of `scratchnst.architectures`
(`parameters_from_file`): the right layers, shapes and dtypes, no weight beyond WEIGHT_LIMIT, or one
line that says what is wrong.
"""

import errno
import hashlib
import http.client
import io
import os
import warnings
import re
import shlex
import socket
import stat
import sys
import urllib.error
import urllib.parse
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path
from typing import Optional

import h5py
import numpy as np

from scratchnst import __version__, keras3_layout
from scratchnst.atomic import atomic_path, check_output, folder_problem, output_problem, reason, same_file, write_hdf5
from scratchnst.architectures import (ARCHITECTURES, VGG19, Conv, detect_architecture, match_by_name,
                                      match_in_order, parameter_problem)
from scratchnst.errors import UsageError, UserError
from scratchnst.image import PREPROCESSING

FORMAT_VERSION = 1  # root attribute `scratchnst_format` of files written by `write_weights`


@dataclass(frozen=True)
class KnownWeights:
    """A published weights file: where to get it and how to check it."""

    model: str
    filename: str
    url: str
    md5: Optional[str]  # None: the publisher gives no checksum, the structure check is all we have
    about: str


KNOWN_WEIGHTS = {
    "vgg19": KnownWeights(
        model="vgg19",
        filename="vgg19_weights_tf_dim_ordering_tf_kernels_notop.h5",
        url="https://storage.googleapis.com/tensorflow/keras-applications/vgg19/"
        "vgg19_weights_tf_dim_ordering_tf_kernels_notop.h5",
        md5="253f8cb515780f3b799900260a226db6",  # the hash Keras Applications checks
        about="VGG-19 without its classifier, Keras Applications (about 80 MB)",
    ),
    "squeezenet": KnownWeights(
        model="squeezenet",
        filename="squeezenet_weights_tf_dim_ordering_tf_kernels_notop.h5",
        url="https://github.com/rcmalli/keras-squeezenet/releases/download/v1.0/"
        "squeezenet_weights_tf_dim_ordering_tf_kernels_notop.h5",
        md5=None,
        about="SqueezeNet 1.1 without its classifier, keras-squeezenet v1.0 (about 3 MB)",
    ),
}

# weights/ beside the package: there only when running from a checkout of the repository.
REPO_WEIGHTS_DIR = Path(__file__).resolve().parent.parent / "weights"


def known_weights(model):
    """The KnownWeights of "vgg19" or "squeezenet"; UsageError naming the known models otherwise."""
    if model not in KNOWN_WEIGHTS:
        raise UsageError(f"unknown network {model!r}: choose one of {', '.join(KNOWN_WEIGHTS)}")
    return KNOWN_WEIGHTS[model]


def download_command(model):
    """The command that installs a network's weights, online and offline: the one place it is spelt.

    "`scratchnst weights download squeezenet` (offline: add --url file:///path/to/squeezenet_...h5)"
    """
    known = known_weights(model)
    return (f"`scratchnst weights download {model}` "
            f"(offline, from a copy you have: add --url file:///path/to/{known.filename})")


def _download_advice(path=None, model=None):
    """What to do about a broken weights file: "download it again with `scratchnst weights download NAME`".

    Args:
        path: the file; its name tells the network when it is a known file name.
        model: the network, when the caller knows it.
    """
    if model is None and path is not None:
        model = next((m for m, known in KNOWN_WEIGHTS.items() if Path(path).name == known.filename), None)
    if model in KNOWN_WEIGHTS:
        return f"download it again with {download_command(model)}"
    return "download it again with `scratchnst weights download squeezenet` (or vgg19)"


# ----------------------------------------------------------------------------------- reading
@dataclass
class WeightsFile:
    """What `read_weights` found in a file.

    Attributes:
        path: the file.
        label: how error messages name the file (its path, or e.g. the URL it came from).
        layout: "keras" (a Keras-2 file), "keras3" (Keras 3's layout: a .weights.h5 file, or a
            .keras archive's), or "scratchnst" (written by `write_weights`).
        layers: {layer name: tuple of arrays in `weight_names` order}, every layer in `layer_names`
            order; weightless layers (ReLU, pooling, input) map to (). In Keras 3's layout, which
            names no layer, the convolutions matched to a network (`architectures.match_in_order`)
            under that network's names, then the other layers with weights under their paths.
        weight_names: {layer name: tuple of its dataset names ("vars/0", "vars/1" in Keras 3's layout)}, same order.
        attrs: root attributes other than `layer_names` (backend, keras_version, architecture...), as str.
        origins: {layer name: where the file keeps it, e.g. 'layers/conv2d_3 "block2_conv2"'}, for the
            layers a Keras 3 file holds under another name; empty otherwise.
    """

    path: Path
    label: str
    layout: str
    layers: dict = field(default_factory=dict)
    weight_names: dict = field(default_factory=dict)
    attrs: dict = field(default_factory=dict)
    origins: dict = field(default_factory=dict)

    @property
    def architecture(self):
        """The architecture the file declares (scratchnst layout), or None (Keras files do not say)."""
        return self.attrs.get("architecture")

    @property
    def preprocessing(self):
        """The `image.preprocess` mode the weights expect.

        Keras files do not record it; every Keras file scratchnst knows was converted from Caffe.
        """
        return self.attrs.get("preprocessing", "caffe")


def _decode(item):
    """An HDF5 string attribute item (bytes or str) as str."""
    return item.decode("utf8") if isinstance(item, bytes) else str(item)


def _attribute_names(obj, name):
    """A list-of-names attribute read as Keras's `load_attributes_from_hdf5_group` reads it.

    HDF5 limits an object header to 64 KB, so Keras splits long lists into `name0`, `name1`, ...;
    the pieces are joined back here. Items may be bytes (h5py fixed-length strings, as Keras
    writes) or str (variable-length strings). An empty list is stored as an empty float array.

    Returns:
        list of str, or None if the attribute is absent.
    """
    if name in obj.attrs:
        chunks = [obj.attrs[name]]
    else:
        chunks = []
        while f"{name}{len(chunks)}" in obj.attrs:
            chunks.append(obj.attrs[f"{name}{len(chunks)}"])
        if not chunks:
            return None
    return [_decode(item) for chunk in chunks for item in np.atleast_1d(chunk)]


def _has_names(obj, name):
    """True if obj has the list attribute `name`, whole or split into chunks."""
    return name in obj.attrs or f"{name}0" in obj.attrs


_ROOT_ATTRIBUTES = ("backend", "keras_version", "scratchnst_format", "architecture", "preprocessing",
                    "preprocessing_description", "converted_from")


def read_weights(path, label=None, model=None):
    """Read every layer's arrays from a Keras-2, Keras 3 or scratchnst HDF5 weights file, or a .keras archive.

    Args:
        path: the .h5 file (or the .keras archive).
        label: how error messages name the file (default: its path).
        model: the network the caller expects ("vgg19", "squeezenet" or None), to name the right
            download command in error messages, and tried first when a Keras 3 file's layers are
            matched by order.

    Returns:
        WeightsFile; arrays keep the file's dtype (float32 for every published file).

    Raises:
        UserError: one line naming the file (and the layer when there is one) and saying what to
            do, if the file is missing, a folder, empty, not HDF5, truncated or damaged, has no
            `layer_names`, or lists a layer or dataset that is not there.
    """
    path = Path(path)
    label = label or str(path)
    check_input_file(path, label, "weights file", "the .h5 weights file", _CHECK_THE_PATH)
    try:
        archive = keras3_layout.archive_weights(path)
    except keras3_layout.LayoutProblem as problem:
        raise UserError(f"{label}: {problem}; save the model again, or give its weights (model.save_weights)") from None
    except OSError as error:
        raise UserError(f"{label}: cannot be read ({reason(error)}); check its permissions") from None
    try:
        f = h5py.File(io.BytesIO(archive[0]) if archive else path, "r")
    except OSError as error:
        if archive:
            raise UserError(f"{label}: the {keras3_layout.ARCHIVE_WEIGHTS} in this .keras archive is damaged "
                            f"({_first_line(error)}); save the model again") from None
        raise UserError(_unreadable(path, label, error, model)) from None
    try:
        with f:
            if keras3_layout.is_layout(f):
                return _read_keras3(f, path, label, model, archive[1] if archive else None)
            return _read_file(f, path, label, model, zipped=bool(archive))
    except UserError:
        raise
    except (OSError, RuntimeError, KeyError, ValueError, TypeError) as error:
        # HDF5 reads lazily: a file damaged after its header opens, then fails here, with an error
        # from deep inside the library (OSError "Can't read data", KeyError "bad object header"...).
        raise UserError(f"{label}: the file is damaged or truncated ({_first_line(error)}); "
                        f"{_download_advice(path, model)}") from None


def _first_line(error, limit=120):
    """The first line of a library's error text, at most `limit` characters: never its whole advice."""
    text = str(error).strip()
    line = text.splitlines()[0].strip() if text else type(error).__name__
    return line if len(line) <= limit else line[:limit - 3].rstrip() + "..."


def _quoted(value):
    """A command-line value as it would be typed: notaurl, '' or 'http://[::1' (repr if unprintable)."""
    text = os.fspath(value)
    return shlex.quote(text) if text.isprintable() else repr(text)


def _reject_empty(value, name, give):
    """UsageError "NAME '': GIVE" for an empty string, which would otherwise mean "." or a default.

    Args:
        value: what the user gave (None: not given, which is fine).
        name: the flag or argument, e.g. "--dest".
        give: what to give instead, e.g. "give a folder".
    """
    if value is not None and os.fspath(value) == "":
        raise UsageError(f"{name} '': {give}")


_CHECK_THE_PATH = "check the path (`scratchnst weights list` shows the weights files found)"


def check_input_file(path, label, what, the_file, missing_advice):
    """Raise unless `path` is a regular file that can be opened, without opening it.

    A FIFO is never opened (that would wait for a writer forever), a device is not read, and a
    link loop is named as such instead of being reported as a missing file.

    Args:
        path: the file.
        label: how messages name it.
        what: what it should be, e.g. "weights file" ("no such weights file").
        the_file: what to give instead, e.g. "the .h5 weights file".
        missing_advice: what to do when it does not exist.

    Raises:
        UserError: missing, a folder, not a regular file (device, pipe, socket), or not
            reachable (a link loop, a folder on the way that cannot be searched).
    """
    try:
        mode = os.stat(path).st_mode
    except OSError as error:
        if error.errno in (errno.ENOENT, errno.ENOTDIR):
            raise UserError(f"{label}: no such {what}; {missing_advice}") from None
        raise UserError(f"cannot read {label} ({reason(error)}); check the path, or give {the_file}") from None
    if stat.S_ISDIR(mode):
        raise UserError(f"{label}: is a folder; give {the_file} inside it")
    if not stat.S_ISREG(mode):
        raise UserError(f"{label}: not a regular file; give {the_file}")


# The first bytes of files that are often saved under a weights file's name by mistake.
_SIGNATURES = ((b"\xff\xd8\xff", "a JPEG image"), (b"\x89PNG", "a PNG image"), (b"PK\x03\x04", "a ZIP archive "
               "(a PyTorch .pth file? convert it with `scratchnst weights convert`)"), (b"MATLAB", "a MATLAB file "
               "(convert it with `scratchnst weights convert`)"), (b"<", "an HTML or XML page (a web page saved "
               "instead of the file?)"))


def open_problem(path, model=None):
    """None if the weights file at path opens (HDF5 checks its header, and a file cut short fails it),
    else the one line `load_weights` would give: a quick look for `weights list`, not a full read."""
    path = Path(path)
    try:
        with h5py.File(path, "r"):
            return None
    except OSError as error:
        return _unreadable(path, str(path), error, model)


def _unreadable(path, label, error, model):
    """The message for a file h5py cannot open: empty, truncated, or not HDF5 at all (and what it is)."""
    advice = _download_advice(path, model)
    try:
        size = path.stat().st_size
        with open(path, "rb") as f:
            head = f.read(16)
    except OSError as os_error:
        return f"{label}: cannot be read ({reason(os_error)}); check its permissions"
    if size == 0:
        return f"{label}: is empty (0 bytes); {advice}"
    truncated = re.search(r"truncated file: eof = (\d+),.*stored_eof = (\d+)", str(error))
    if truncated:
        have, need = (int(n) for n in truncated.groups())
        return f"{label}: is truncated ({have:,} of {need:,} bytes; an interrupted download?); {advice}"
    if not h5py.is_hdf5(path):
        kind = next((what for signature, what in _SIGNATURES if head.lstrip().startswith(signature)), None)
        if kind is None and head and all(32 <= b < 127 or b in b"\t\r\n" for b in head):
            kind = "a text file"
        return (f"{label}: not an HDF5 weights file{f' but {kind}' if kind else ''}; give the .h5 weights file, "
                f"or {advice.replace('download it again', 'download it')}")
    return f"{label}: the file is damaged or truncated ({_first_line(error)}); {advice}"


def _read_file(f, path, label, model, zipped=False):
    """The WeightsFile of an open h5py file (see `read_weights`); zipped: f is the weights file of
    a .keras archive at path."""
    root = f
    # A whole model saved by model.save() keeps its weights in a group; Keras looks there too.
    if not _has_names(f, "layer_names"):
        root = _hard_linked(f, "model_weights", label, _download_advice(path, model), "group 'model_weights'") or f
    _refuse_style_network(root, path, label, zipped)
    layer_names = _attribute_names(root, "layer_names")
    if layer_names is None:
        raise UserError(f"{label}: an HDF5 file without a 'layer_names' attribute, so not a Keras or scratchnst "
                        "weights file; give one (`scratchnst weights list` shows those found)")
    if model is None:
        model = detect_architecture(layer_names)
    weights_file = WeightsFile(path=path, label=label,
                               layout="scratchnst" if "scratchnst_format" in root.attrs else "keras")
    for key in _ROOT_ATTRIBUTES:
        if key in root.attrs and np.ndim(root.attrs[key]) == 0:  # scalars; anything else is not ours
            weights_file.attrs[key] = _decode(np.asarray(root.attrs[key]).item())
    version = weights_file.attrs.get("scratchnst_format")
    if weights_file.layout == "scratchnst" and version != str(FORMAT_VERSION):
        raise UserError(f"{label}: scratchnst format {version}, this version reads format "
                        f"{FORMAT_VERSION}; upgrade scratchnst to read it")
    for layer in layer_names:
        names, arrays = _read_layer(root, layer, label, _download_advice(path, model))
        weights_file.weight_names[layer] = names
        weights_file.layers[layer] = arrays
    return weights_file


def _read_keras3(f, path, label, model, keras_version):
    """The WeightsFile of an open h5py file in Keras 3's layout (see `read_weights`, `keras3_layout`).

    Its convolutions are matched to the network the caller wants, else to any known one: by their
    own names where the file gives every layer's (keras.applications' VGG19 does), else by their
    order and shapes. They then go by that network's layer names, so that `parameters_from_file`
    reads them as it reads a Keras-2 file.
    """
    advice = _download_advice(path, model)

    def child(group, name):
        where = f"{group.name.strip('/')}/{name}".lstrip("/")
        return _hard_linked(group, name, label, advice, repr(where))

    weights_file = WeightsFile(path=path, label=label, layout="keras3")
    if keras_version:
        weights_file.attrs["keras_version"] = keras_version
    found = []   # (path, its own name, dataset paths, arrays)
    try:
        holders = keras3_layout.variable_layers(f, child)
    except keras3_layout.LayoutProblem as problem:
        raise UserError(f"{label}: {problem}: {advice}") from None
    for where, name, datasets in holders:
        arrays = []
        for dataset in datasets:
            item = child(f, dataset)
            if not isinstance(item, h5py.Dataset):
                raise UserError(f"{label}: {dataset} is not a dataset; the file is damaged: {advice}")
            arrays.append(_dataset_array(item, label, advice))
        found.append((where, name, tuple(dataset[len(where) + 1:] for dataset in datasets), tuple(arrays)))
    conv_layers = [item for item in found if item[3][0].ndim == 4]
    convolutions = [(keras3_layout.label(where, name), [array.shape for array in arrays])
                    for where, name, _, arrays in conv_layers]
    known = " or ".join(ARCHITECTURES)
    if not convolutions:
        raise UserError(f"{label}: a Keras 3 weights file with no convolution layers; give {known} weights "
                        "(`scratchnst weights list` shows those found)")
    order = [model] if model in ARCHITECTURES else []
    order += [name for name in ARCHITECTURES if name not in order]
    named = {name: match_by_name(name, [item[1] for item in conv_layers]) for name in order}
    matched = next((named[name] for name in order if named[name] is not None), None)
    if matched is None:
        results = {name: match_in_order(name, convolutions) for name in order}
        matching = [name for name in order if results[name][1] is None]
        if not matching:
            closest = max(order, key=lambda name: len(results[name][0]))   # the first of a tie: the one wanted
            raise UserError(f"{label}: a Keras 3 weights file whose convolutions are not {closest}'s, matched in "
                            f"order: {results[closest][1]}; give {model or known} weights "
                            f"({download_command(model) if model else '`scratchnst weights list` shows those found'})")
        matched = results[matching[0]][0]
    taken = set()
    for layer, k in matched.items():
        where, name, datasets, arrays = conv_layers[k]
        weights_file.layers[layer], weights_file.weight_names[layer] = arrays, datasets
        weights_file.origins[layer] = keras3_layout.label(where, name)
        taken.add(where)
    for where, name, datasets, arrays in found:
        if where not in taken:
            weights_file.layers[where], weights_file.weight_names[where] = arrays, datasets
            if name:
                weights_file.origins[where] = keras3_layout.label("", name)
    return weights_file


def _read_layer(root, layer, label, advice):
    """(weight names, arrays) of one layer group, both tuples in `weight_names` order.

    Every dataset is checked before anything uses it (`_dataset_array`): the arrays are NumPy
    arrays of numbers, and those of floats hold no NaN or inf.
    """
    group = _hard_linked(root, layer, label, advice, f"layer {layer!r}")
    if group is None:
        raise UserError(f"{label}: layer {layer!r} is listed in layer_names but has no group; "
                        f"the file is damaged or truncated: {advice}")
    if not isinstance(group, h5py.Group):
        raise UserError(f"{label}: layer {layer!r} is not a group; the file is damaged: {advice}")
    names = tuple(_attribute_names(group, "weight_names") or ())
    arrays = []
    for name in names:
        dataset = _hard_linked(group, name, label, advice, f"layer {layer!r}: {name!r}")
        if dataset is None:
            raise UserError(f"{label}: layer {layer!r}: dataset {name!r} listed in weight_names is missing; "
                            f"the file is damaged or truncated: {advice}")
        if not isinstance(dataset, h5py.Dataset):
            raise UserError(f"{label}: layer {layer!r}: {name!r} is not a dataset; the file is damaged: {advice}")
        arrays.append(_dataset_array(dataset, label, advice))
    return names, tuple(arrays)


# The kinds of HDF5 link other than hard ones, as messages name them (Keras and `write_weights` write hard
# links only).
_LINK_KINDS = {h5py.h5l.TYPE_SOFT: "a soft link", h5py.h5l.TYPE_EXTERNAL: "an external link"}


def _hard_linked(group, path, label, advice, what):
    """The object at `path` ("a/b/c") under `group`, reached through hard links only; None if missing.

    Keras and `write_weights` never write links. A soft link can point anywhere in the file (into a
    loop, at a group), and an external link makes HDF5 open another file that this one names,
    which may be anything (a pipe that would block forever, a file of someone else's): refused,
    not followed. Each part of the path is looked at, since a link may hide in the middle.

    Raises:
        UserError: a part of the path is a soft or external link (or a link of a kind HDF5 adds later).
    """
    parts = [part for part in path.split("/") if part not in ("", ".")]  # HDF5 reads "a//b", "./a" as "a/b", "a"
    links = group.id.links
    # Each prefix's last link is looked at in turn, as a record (what it points to is not opened):
    # HDF5 walks a prefix through links already found to be hard, and only the end is opened.
    for depth in range(1, len(parts) + 1):
        prefix = "/".join(parts[:depth]).encode("utf8")
        try:
            link_type = links.get_info(prefix).type
        except (KeyError, RuntimeError, ValueError):  # no such link, or a dataset on the way
            return None
        if link_type != h5py.h5l.TYPE_HARD:
            kind = _LINK_KINDS.get(link_type, "a link of another kind")
            raise UserError(f"{label}: {what} is reached through {kind}, which weights files never hold; the file "
                            f"is damaged: {advice}")
    return group["/".join(parts)] if parts else None


def _non_numbers(dtype):
    """What a dataset of a non-numeric HDF5 type holds, in words: "strings", "records (a compound type)"..."""
    if h5py.check_string_dtype(dtype) is not None or dtype.kind in "SU":
        return "strings"
    if h5py.check_ref_dtype(dtype) is not None:
        return "object references"
    if h5py.check_vlen_dtype(dtype) is not None:
        return "variable-length sequences"
    if dtype.names:
        return "records (a compound type)"
    if dtype.subdtype is not None:
        return "an array in each element (an array type)"
    if dtype.kind == "V":
        return "raw bytes (an opaque type)"
    return f"values of type {dtype}"


def _dataset_array(dataset, label, advice):
    """A weights dataset read as a NumPy array of numbers, checked before anything uses it.

    Integer, boolean and scalar datasets are read (`parameters_from_file` says why such a layer
    cannot be a convolution's, with the layer's name); what is refused here is what no layer of
    any network holds, and what would fail far from its cause: strings, records, object
    references, data stored outside the file, and NaN or inf, which are never trained weights.

    Args:
        dataset: an h5py.Dataset.
        label: how messages name the file.
        advice: what to do about a damaged file ("download it again with ...").

    Raises:
        UserError: one line saying what the dataset holds instead, and that the file is damaged.
    """
    where = f"{label}: dataset {dataset.name.lstrip('/')}"  # its path in the file: hard links only lead to it
    damaged = f"the file is damaged: {advice}"
    if dataset.shape is None:  # an HDF5 "null" dataspace: no array at all
        raise UserError(f"{where} holds no array (an empty HDF5 dataspace); {damaged}")
    kind = dataset.dtype.kind
    if kind not in "biufc":
        raise UserError(f"{where} holds {_non_numbers(dataset.dtype)}, not numbers; {damaged}")
    # The raw data of an HDF5 dataset can live in other files (external storage, virtual
    # datasets), which HDF5 would open on reading: never the case in a weights file, and as
    # unsafe as an external link.
    if dataset.external or dataset.is_virtual:
        raise UserError(f"{where} keeps its numbers in other files, which weights files never do; {damaged}")
    try:
        array = np.asarray(dataset[()])  # a scalar dataset reads as a NumPy scalar: made a 0-d array
    except OSError as error:
        raise UserError(f"{where} cannot be read ({_first_line(error)}); the file is damaged or truncated: "
                        f"{advice}") from None
    if kind in "fc" and not np.isfinite(array).all():
        raise UserError(f"{label}: holds non-finite weights (NaN or inf, in {dataset.name.lstrip('/')}); {damaged}")
    return array


def _refuse_style_network(root, path, label, zipped=False):
    """UserError if the file is a style network written by `scratchnst train`, not a pretrained network.

    zipped: the network is the weights file of a .keras archive, which `scratchnst apply` does not
    open: the advice is then to take it out first.

    `transformer_net.save` writes `layer_names` too, so without this such a file would read as a
    weights file of an unknown architecture. The marks are spelt here, not imported, because
    transformer_net imports this module; tests check that they are transformer_net's.
    """
    marked = _STYLE_NETWORK_FORMAT in root.attrs
    if not marked and "architecture" in root.attrs and np.ndim(root.attrs["architecture"]) == 0:
        marked = _decode(np.asarray(root.attrs["architecture"]).item()) == _STYLE_NETWORK_ARCHITECTURE
    if marked:
        network = _quoted(path) if label == str(path) and not zipped else "NET.h5"
        unzip = (f"take its {keras3_layout.ARCHIVE_WEIGHTS} out of the .keras archive (it is a zip file) as NET.h5, "
                 "then " if zipped else "")
        raise UserError(f"{label}: a style network trained by `scratchnst train`, not pretrained network weights; "
                        f"{unzip}stylize photos with it by `scratchnst apply {network} PHOTO -o OUT.png`, and give "
                        "--weights a pretrained VGG-19 or SqueezeNet file (`scratchnst weights list` shows those "
                        "found)")


# transformer_net's FORMAT attribute and ARCHITECTURE (see `_refuse_style_network`).
_STYLE_NETWORK_FORMAT = "scratchnst_transformer_format"
_STYLE_NETWORK_ARCHITECTURE = "johnson2016-transformer"


# ----------------------------------------------------------------------------------- writing
# The largest magnitude a weight of a known network may have. Trained ImageNet convolutions hold
# small numbers (weight decay keeps them so): the largest in keras-squeezenet's file is 7.1, a bias
# of fire8/squeeze1x1. A value three orders of magnitude beyond that is no trained weight but
# damage: a flipped exponent bit multiplies a weight by up to 2**128, the bytes of something else
# read as floats give numbers like 1e30. Let through, such a value overflows float32 activations a
# few layers on, and the error comes far from its cause ("the cost became NaN; lower --alpha").
# Checked on the known networks' convolutions only: other layers (a batch normalisation's
# variances) may legitimately hold larger numbers, and such files are refused for their layers.
WEIGHT_LIMIT = 1e4


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
            missing, a wrong shape or dtype, a weight beyond WEIGHT_LIMIT, another architecture,
            none of the layers of a known one, an unknown declared architecture or preprocessing.
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
        get = download_command(name) if name else "`scratchnst weights list` shows those found"
        raise UserError(f"{label}: has none of the layers of {name or known} (its layers with weights: "
                        f"{first[:200] or 'none'}); give {name or known} weights ({get})")
    holds = declared or detected
    if holds != name:
        raise UserError(f"{label}: holds {holds} weights, not {name}; choose {holds} as the network, or give "
                        f"{name} weights ({download_command(name)})")
    problem = parameter_problem(name, weights_file.layers)
    if problem:
        raise UserError(f"{label}: {problem}; the file is damaged or not the published {name} weights: "
                        f"download them again with {download_command(name)}")
    params = {layer: tuple(weights_file.layers[layer]) for layer in ARCHITECTURES[name].weight_shapes}
    for layer, arrays in params.items():
        for what, array in zip(("kernel", "bias"), arrays):
            largest = float(np.max(np.abs(array)))
            if largest > WEIGHT_LIMIT:
                raise UserError(f"{label}: the {what} of layer {layer} holds {largest:.3g}, where trained "
                                f"{name} weights stay far below {WEIGHT_LIMIT:g}; the file is damaged: "
                                f"{_download_advice(weights_file.path, name)}")
    return name, params


def write_weights(path, params, architecture, preprocessing, converted_from=""):
    """Write weights in the scratchnst layout, atomically (scratchnst.atomic: temporary file, then rename).

    Args:
        path: the .h5 file to write; an existing file is replaced only once the new one is complete.
        params: {layer name: (kernel (KH, KW, C_in, C_out), bias (C_out,))} in network order;
            stored as float32.
        architecture: "vgg19" or "squeezenet".
        preprocessing: the `image.preprocess` mode the weights expect, "caffe" or "torchvision".
        converted_from: where the weights came from, for people reading the file.

    Returns:
        Path of the written file.

    Raises:
        UserError: the file cannot be written (see atomic.atomic_path); nothing is left behind.
    """
    if preprocessing not in PREPROCESSING:
        raise ValueError(f"preprocessing must be one of {sorted(PREPROCESSING)}, got {preprocessing!r}")
    path = Path(path)
    def fill(f):
        f.attrs["scratchnst_format"] = FORMAT_VERSION
        f.attrs["architecture"] = architecture
        f.attrs["preprocessing"] = preprocessing
        f.attrs["preprocessing_description"] = PREPROCESSING[preprocessing]
        f.attrs["converted_from"] = converted_from
        # Fixed-length bytes, as Keras writes its name lists.
        f.attrs["layer_names"] = np.array([name.encode("utf8") for name in params])
        for name, (kernel, bias) in params.items():
            group = f.create_group(name)  # "fire2/squeeze1x1" nests a group in "fire2", as in Keras files
            group.attrs["weight_names"] = np.array([b"kernel", b"bias"])
            group.create_dataset("kernel", data=np.asarray(kernel, dtype=np.float32))
            group.create_dataset("bias", data=np.asarray(bias, dtype=np.float32))

    return write_hdf5(path, fill, "weights file")


# ----------------------------------------------------------------------------------- finding
def user_cache_dir():
    """The per-user folder for downloaded weights: $XDG_CACHE_HOME/scratchnst, else ~/.cache/scratchnst."""
    base = os.environ.get("XDG_CACHE_HOME")
    return (Path(base) if base else Path.home() / ".cache") / "scratchnst"


def search_dirs():
    """The folders `find_weights` looks in, in order.

    Returns:
        list of (description, folder or None): $SCRATCHNST_WEIGHTS_DIR (None when unset), weights/
        of the repository (listed only when running from a checkout), the per-user cache.
    """
    env = os.environ.get("SCRATCHNST_WEIGHTS_DIR")
    dirs = [("$SCRATCHNST_WEIGHTS_DIR", Path(env).expanduser() if env else None)]
    if REPO_WEIGHTS_DIR.is_dir():
        dirs.append(("weights/ of the repository", REPO_WEIGHTS_DIR))
    dirs.append(("user cache", user_cache_dir()))
    return dirs


def default_download_dir():
    """Where `download` saves without --dest: $SCRATCHNST_WEIGHTS_DIR if set, else the user cache."""
    env = os.environ.get("SCRATCHNST_WEIGHTS_DIR")
    return Path(env).expanduser() if env else user_cache_dir()


def find_weights(model, explicit=None, weights_flag="--weights FILE"):
    """The weights file of a network: the explicit one if given, else the first place that has it.

    Args:
        model: "vgg19" or "squeezenet".
        explicit: a file the user named (--weights FILE); if given, nothing else is searched.
        weights_flag: the option through which the command takes a file, for the message; None
            for a command without one (bench).

    Returns:
        Path of an existing file (not yet opened: `read_weights` checks its contents).

    Raises:
        UserError: the explicit file does not exist, or no place has the file; the message names
            every place looked in and the `scratchnst weights download NAME` command, or says that
            $SCRATCHNST_WEIGHTS_DIR names a file where a folder is wanted.
    """
    if explicit is not None:
        flag = weights_flag.split()[0] if weights_flag else "the weights file"
        _reject_empty(explicit, flag, f"give the .h5 weights file, or leave {flag} out to search for it")
        path = Path(explicit).expanduser()
        check_input_file(path, str(path), "weights file", "the .h5 weights file", _CHECK_THE_PATH)
        return path
    known = known_weights(model)
    looked = []
    for description, folder in search_dirs():
        if folder is None:
            looked.append(f"{description} (not set)")
            continue
        found, why = is_file_in(folder, known.filename)
        if found:
            return found
        looked.append(f"{folder} (cannot be searched: {why})" if why else str(folder))
    _check_weights_dir_variable(model, f"no {model} weights")
    give = f"give the file with {weights_flag}" if weights_flag else "put the file in one of these folders"
    raise UserError(f"no {model} weights: {known.filename} is not in {', '.join(looked)}; "
                    f"run {download_command(model)}, or {give}")


def is_file_in(folder, filename):
    """(path, None) when folder/filename is a regular file; (None, None) when it is not; (None, why)
    when the folder cannot be searched (a HOME the user cannot read: Path.is_file raises
    PermissionError there rather than answer False, and the search must go on to the next place)."""
    candidate = Path(folder) / filename
    try:
        return (candidate if candidate.is_file() else None), None
    except OSError as error:
        return None, reason(error)


def _check_weights_dir_variable(model, head, alternative=""):
    """UserError if $SCRATCHNST_WEIGHTS_DIR names a file, where a folder is wanted.

    Setting it to the weights file itself is an easy mistake, and "FILE is not in FILE" would not
    say what is wrong. `find_weights` asks only once the file was found nowhere (a copy elsewhere
    still serves); `download` before saving there.

    Args:
        model: the network wanted.
        head: what failed, e.g. "no squeezenet weights".
        alternative: another way out, appended to the advice, e.g. ", or give --dest DIR".
    """
    env = os.environ.get("SCRATCHNST_WEIGHTS_DIR")
    folder = Path(env).expanduser() if env else None
    if folder is None or not is_file_in(folder.parent, folder.name)[0]:
        return
    known = known_weights(model)
    if folder.name == known.filename:
        fix = f"set it to the folder that holds the file: SCRATCHNST_WEIGHTS_DIR={_quoted(str(folder.parent))}"
    else:
        fix = (f"set it to the folder that holds {known.filename}, or to a folder where "
               f"`scratchnst weights download {model}` can save it")
    raise UserError(f"{head}: $SCRATCHNST_WEIGHTS_DIR is {folder}, a file, not a folder; {fix}{alternative}")


# ------------------------------------------------------------------------------- downloading
class _ProgressBar:
    """One line on a stream, redrawn in place: `squeezenet [######........]  41%  1.2/2.9 MB`."""

    WIDTH = 30

    def __init__(self, label, stream, total=None):
        self.label, self.stream, self.total = label, stream, total
        self.shown = None  # what was drawn last, to redraw only when it changes

    def update(self, done):
        mb = f"{done / 1e6:.1f}"
        if self.total:
            fraction = min(done / self.total, 1.0)
            bar = "#" * int(self.WIDTH * fraction)
            line = f"{self.label} [{bar:<{self.WIDTH}}] {100 * fraction:3.0f}%  {mb}/{self.total / 1e6:.1f} MB"
        else:  # the server did not say how much is coming
            line = f"{self.label} {mb} MB"
        if line != self.shown:
            self.stream.write("\r" + line)
            self.stream.flush()
            self.shown = line

    def close(self, keep=True):
        """End the line (keep=True), or wipe it, so that an error's one line stands alone."""
        if self.shown is not None:
            self.stream.write("\n" if keep else "\r" + " " * len(self.shown) + "\r")
            self.stream.flush()


def _fetch(url, out, md5, bar, timeout):
    """Stream url into the open binary file `out`, feeding md5 and the progress bar (or None);
    UserError if anything goes wrong."""
    request = urllib.request.Request(url, headers={"User-Agent": f"scratchnst/{__version__}"})
    done = 0
    try:
        with urllib.request.urlopen(request, timeout=timeout) as response:
            length = response.headers.get("Content-Length")
            total = int(length) if length and length.isdigit() else None
            if bar is not None:
                bar.total = total
                bar.update(0)
            while chunk := response.read(1 << 16):
                _write_chunk(out, chunk)
                md5.update(chunk)
                done += len(chunk)
                if bar is not None:
                    bar.update(done)
    except urllib.error.HTTPError as error:
        # the server's reason phrase may be empty (HTTP/1.1 allows it): the standard one then
        phrase = _first_line(error.reason) if str(error.reason).strip() else http.client.responses.get(error.code, "")
        raise UserError(f"cannot download {url}: HTTP {error.code} {phrase}".rstrip() + "; check the address "
                        "(--url), or try again later") from None
    except urllib.error.URLError as error:
        # Most often: no internet. Name the host that could not be reached (the resolver's own
        # text for that is "Unknown error -2"), and say how to install a copy the user already has.
        raise UserError(f"cannot download {url}: {_unreachable(url, error.reason)}; offline, install a copy "
                        f"you have with --url file:///path/to/{Path(urllib.parse.urlparse(url).path).name}") from None
    except (http.client.HTTPException, OSError) as error:  # reset connection, timeout
        why = reason(error) if isinstance(error, OSError) else _first_line(error)
        raise UserError(f"download of {url} failed after {done:,} bytes ({why}); run the command again") from None
    except ValueError as error:  # a URL that _check_url let through but urllib cannot use
        raise UsageError(f"--url {_quoted(url)}: {_first_line(error)}; {_URL_ADVICE}") from None
    # http.client does not raise when a server closes early (see HTTPResponse.read): check the
    # length ourselves, or a truncated file would pass as complete.
    if total is not None and done != total:
        raise UserError(f"download of {url} was interrupted: received {done:,} of {total:,} bytes; "
                        "run the command again")


def _unreachable(url, why):
    """Why `url` could not be opened, in words: "could not reach github.com (no network, or ...)"."""
    parts = urllib.parse.urlparse(url)
    if parts.scheme == "file":
        return reason(why) if isinstance(why, OSError) else _first_line(why)
    host = parts.hostname or url
    if isinstance(why, socket.gaierror):  # the name did not resolve: no network, or a typo in --url
        return f"could not reach {host} (no network, or no such host)"
    if isinstance(why, (socket.timeout, TimeoutError)):
        return f"could not reach {host} (no answer in time)"
    if isinstance(why, OSError):
        return f"could not reach {host} ({reason(why)})"
    return f"could not reach {host} ({_first_line(why)})"


class _CannotSave(Exception):
    """Writing the downloaded bytes failed (a full disk...): not the server's fault, so said apart."""

    def __init__(self, error):
        super().__init__(reason(error))
        self.full = error.errno in (errno.ENOSPC, errno.EDQUOT)


def _write_chunk(out, chunk):
    try:
        out.write(chunk)
    except OSError as error:
        raise _CannotSave(error) from None


_URL_ADVICE = "give http(s)://... or file:///path/to/file"
_URL_SCHEMES = ("http", "https", "ftp", "file")  # what urllib.request opens


def _check_url(url):
    """The --url value if urllib can fetch it; UsageError (wrong usage) otherwise, before anything is done."""
    _reject_empty(url, "--url", f"{_URL_ADVICE}, or leave --url out to download from the publisher")
    if not url.isprintable():
        raise UsageError(f"--url {_quoted(url)}: has control characters; {_URL_ADVICE}")
    try:
        parts = urllib.parse.urlsplit(url)
        _ = parts.port  # reading the port is what checks it: ValueError for "http://host:99999"
    except ValueError as error:  # "Invalid IPv6 URL", "Port out of range 0-65535"
        raise UsageError(f"--url {_quoted(url)}: not a URL ({_first_line(error)}); {_URL_ADVICE}") from None
    if not parts.scheme:
        raise UsageError(f"--url {_quoted(url)}: not a URL; {_URL_ADVICE}")
    if parts.scheme.lower() not in _URL_SCHEMES:
        raise UsageError(f"--url {_quoted(url)}: cannot download {parts.scheme}: URLs; {_URL_ADVICE}")
    if parts.scheme.lower() == "file":
        if not parts.path:
            raise UsageError(f"--url {_quoted(url)}: no file in the URL; {_URL_ADVICE}")
        _check_local_url(url, Path(urllib.request.url2pathname(parts.path)))
    elif not parts.hostname:
        raise UsageError(f"--url {_quoted(url)}: no server name in the URL; {_URL_ADVICE}")
    return url


def _check_local_url(url, local):
    """UserError unless the file of a file: URL is a regular file (urllib would wait forever on a pipe)."""
    try:
        mode = os.stat(local).st_mode
    except OSError as error:
        why = "no such file" if error.errno in (errno.ENOENT, errno.ENOTDIR) else reason(error)
        raise UserError(f"--url {_quoted(url)}: {why} ({local}); check the path") from None
    if not stat.S_ISREG(mode):
        kind = "a folder" if stat.S_ISDIR(mode) else "not a regular file"
        raise UserError(f"--url {_quoted(url)}: {local} is {kind}; give the URL of the .h5 file")


def _check_destination(dest_dir, final):
    """Make dest_dir if needed and make sure `final` in it can be written, before downloading anything.

    Raises:
        UserError: dest_dir or a folder above it is a file; it cannot be made or written to; the
            file name is taken by a folder, a device, a pipe or a link loop.
    """
    again = "choose another folder with --dest DIR"
    problem = folder_problem(dest_dir)
    if problem and "does not exist" not in problem:
        raise UserError(f"cannot write to {dest_dir}: {problem}; {again}")
    try:
        dest_dir.mkdir(parents=True, exist_ok=True)
    except OSError as error:
        raise UserError(f"cannot write to {dest_dir}: {reason(error)}; {again}") from None
    problem = output_problem(final)
    if problem is None:
        return
    kind, why = problem
    if kind in ("folder", "not regular"):
        raise UserError(f"cannot save {final}: {why}; remove it or {again}")
    raise UserError(f"cannot save {final}: {why}; {again}")


def _download_plan(model, dest_dir, url):
    """(KnownWeights, URL, destination folder) of a download, every option checked; the folder is made."""
    known = known_weights(model)
    url = known.url if url is None else _check_url(url)
    _reject_empty(dest_dir, "--dest", "give a folder, or leave --dest out to save where `scratchnst weights list` "
                 "looks first")
    if dest_dir is None:
        _check_weights_dir_variable(model, f"cannot save {known.filename}", ", or give --dest DIR")
    dest_dir = default_download_dir() if dest_dir is None else Path(dest_dir).expanduser()
    _check_destination(dest_dir, dest_dir / known.filename)
    return known, url, dest_dir


def download(model, dest_dir=None, url=None, progress=None, timeout=60.0):
    """Download a known weights file; check it; only then move it into place.

    The bytes go to a hidden temporary file beside the destination. It is renamed to the final
    name only when the transfer is complete, the MD5 matches (VGG-19, whose hash Keras publishes)
    and the file has the expected layers and shapes (both networks). Otherwise it is deleted: the
    file that was there before, if any, stays untouched and no partial file is left.

    Args:
        model: "vgg19" or "squeezenet".
        dest_dir: folder to save into; default `default_download_dir()`.
        url: where to download from; default the publisher's URL. A mirror must serve the same
            bytes: the MD5 is checked whatever the URL.
        progress: draw a progress bar on stderr; None (default) draws it when stderr is a terminal.
            A failed download wipes it: its one-line error stands alone.
        timeout: seconds to wait for the server before giving up.

    Returns:
        Path of the saved file, dest_dir / the known file name.

    Raises:
        UsageError: an unknown model; a url or dest_dir that is empty, or a url that is not one.
        UserError: unreachable server, HTTP error, interrupted transfer, wrong MD5 or structure,
            destination not writable (checked before downloading), full disk.
    """
    known, url, dest_dir = _download_plan(model, dest_dir, url)
    final = dest_dir / known.filename
    if progress is None:
        progress = sys.stderr.isatty()
    bar = _ProgressBar("downloading", sys.stderr) if progress else None
    saved = False
    try:
        # atomic_path removes the temporary file on any failure, Ctrl-C included: never a partial file.
        with atomic_path(final, "weights file") as tmp:
            md5 = hashlib.md5()
            try:
                with open(tmp, "xb") as out:
                    _fetch(url, out, md5, bar, timeout)
            except _CannotSave as error:
                raise UserError(f"cannot save {final}: {error}; {'free some space or ' if error.full else ''}"
                                "choose another folder with --dest DIR") from None
            if known.md5 is not None and md5.hexdigest() != known.md5:
                # a local file will not change by itself: another one is the only way on
                local = url.lower().startswith("file:")
                raise UserError(f"the file {'at' if local else 'downloaded from'} {url} has MD5 {md5.hexdigest()}, "
                                f"expected {known.md5} ({known.filename}); "
                                f"{f'{final} is unchanged' if final.exists() else 'nothing was saved'}: "
                                + (f"give --url a copy of {known.filename}" if local
                                   else "run the command again, or try another --url"))
            label = f"the file downloaded from {url}"
            parameters_from_file(read_weights(tmp, label=label, model=model), model)
        saved = True
    finally:
        if bar is not None:
            bar.close(keep=saved)
    return final


# -------------------------------------------------------------------------------- converting
def _torchvision_vgg19_names():
    """{"features.<i>": layer name} of torchvision's VGG-19, derived from our table.

    torchvision's `features` is a Sequential with one module per conv, per ReLU and per pool:
    each conv takes two indices (conv, ReLU), each pool one, so the convs are 0, 2, 5, 7, 10, ...
    """
    names, index = {}, 0
    for row in VGG19:
        if isinstance(row, Conv):
            names[f"features.{index}"] = row.name
            index += 2
        else:
            index += 1
    return names


def _torch_load_problem(error):
    """What torch.load(..., weights_only=True)'s error means, in a few words.

    Its "Weights only load failed" text goes on to advise weights_only=False, which runs any code
    the file holds: never relayed. Only the unpickler's own reason is kept, and for a pickle of
    other objects than tensors ("Unsupported global") not even that.
    """
    text = str(error)
    if isinstance(error, KeyError):  # the unpickler met a byte that starts no opcode: not a pickle at all
        return "not a PyTorch file"
    if "weights only load failed" not in text.lower():
        return f"not a readable PyTorch file ({_first_line(error)})"
    found = re.search(r"WeightsUnpickler error:\s*(\S[^\n]*)", text)
    if found is None or found.group(1).startswith("Unsupported global"):
        return "not a PyTorch state dict that can be loaded safely (weights_only)"
    return f"not a readable PyTorch file ({_first_line(found.group(1))})"


def _read_torchvision_vgg19(src):
    """{layer: (kernel (KH, KW, C_in, C_out), bias (C_out,))} from torchvision's vgg19 state dict."""
    try:
        import torch
    except ImportError:
        raise UserError(f"{src}: converting a .pth file needs PyTorch (pip install torch); "
                        "nothing else in scratchnst does") from None
    try:
        with warnings.catch_warnings():  # torch warns about what it then refuses: the one line below says it
            warnings.simplefilter("ignore")
            state = torch.load(src, map_location="cpu", weights_only=True)
    except Exception as error:  # torch.load raises many types (pickle, zip, EOF, runtime errors)
        raise UserError(f"{src}: {_torch_load_problem(error)}; give torchvision's vgg19-dcbb9e9d.pth") from None
    if not hasattr(state, "keys"):
        raise UserError(f"{src}: holds a {type(state).__name__}, not a state dict; give torchvision's "
                        "vgg19-dcbb9e9d.pth")

    def array(key, layer):
        value = state[key]
        if not isinstance(value, torch.Tensor) or not value.is_floating_point():
            what = (f"a tensor of {str(value.dtype).removeprefix('torch.')}" if isinstance(value, torch.Tensor)
                    else f"of type {type(value).__name__}")
            raise UserError(f"{src}: {key} (layer {layer}) is {what}, not a tensor of floats; give torchvision's "
                            "vgg19-dcbb9e9d.pth")
        # NumPy has no bfloat16: such a checkpoint (a half-precision copy) is read as float32, exactly
        return value.detach().cpu().to(torch.float32 if value.dtype == torch.bfloat16 else value.dtype).numpy()

    params = {}
    for prefix, name in _torchvision_vgg19_names().items():
        if f"{prefix}.weight" not in state or f"{prefix}.bias" not in state:
            raise UserError(f"{src}: no {prefix}.weight/.bias (layer {name}), so not torchvision's VGG-19 state "
                            "dict; give vgg19-dcbb9e9d.pth")
        weight = array(f"{prefix}.weight", name)
        bias = array(f"{prefix}.bias", name)
        if weight.ndim != 4:
            raise UserError(f"{src}: {prefix}.weight (layer {name}) has shape {tuple(weight.shape)}, expected 4 "
                            "axes; give torchvision's vgg19-dcbb9e9d.pth")
        # PyTorch kernels are (C_out, C_in, KH, KW); ours are (KH, KW, C_in, C_out).
        params[name] = (np.ascontiguousarray(weight.transpose(2, 3, 1, 0)), bias)
    return params


def _matlab_chars(dataset):
    """A MATLAB char array in a v7.3 (HDF5) file, stored as uint16 codes, as str."""
    return "".join(chr(code) for code in np.ravel(dataset[()]))


def _matconvnet_layers_v73(src):
    """[(name, type, W, b)] of a MatConvNet network in a MATLAB v7.3 (HDF5) file.

    MATLAB stores arrays column-major, so HDF5 holds their axes reversed: `.T` restores MATLAB's
    (W, H, C_in, C_out). Cell arrays are datasets of references to other objects.
    """
    layers = []
    with h5py.File(src, "r") as f:
        if "layers" not in f:
            raise UserError(f"{src}: no 'layers' variable, so not a MatConvNet network; give "
                            "imagenet-vgg-verydeep-19.mat")
        for ref in np.ravel(f["layers"][()]):
            layer = f[ref]
            kind = _matlab_chars(layer["type"]) if "type" in layer else ""
            if kind != "conv":
                continue
            weight_ref, bias_ref = np.ravel(layer["weights"][()])
            layers.append((_matlab_chars(layer["name"]), kind, np.asarray(f[weight_ref]).T, np.ravel(f[bias_ref])))
    return layers


def _matconvnet_layers_v5(src):
    """[(name, type, W, b)] of a MatConvNet network in a MATLAB v5/v7 file (needs SciPy)."""
    try:
        import scipy.io
    except ImportError:
        raise UserError(f"{src}: reading this .mat file needs SciPy (pip install scipy), which scratchnst "
                        "does not otherwise need") from None
    try:
        # squeeze_me drops MATLAB's 1x1 wrappers; no conv kernel of VGG-19 has a size-1 axis, so
        # the (W, H, C_in, C_out) kernels keep their four axes.
        mat = scipy.io.loadmat(src, squeeze_me=True, struct_as_record=False)
    except Exception as error:  # scipy raises ValueError, TypeError, MatReadError... for bad files
        raise UserError(f"{src}: not a readable MATLAB file ({_first_line(error)}); give MatConvNet's "
                        "imagenet-vgg-verydeep-19.mat") from None
    if "layers" not in mat:
        raise UserError(f"{src}: no 'layers' variable, so not a MatConvNet network; give "
                        "imagenet-vgg-verydeep-19.mat")
    layers = []
    for layer in np.atleast_1d(mat["layers"]):
        if str(getattr(layer, "type", "")) != "conv":
            continue
        # MatConvNet beta versions after 2015 keep {W, b} in `weights`; earlier ones had
        # separate `filters` and `biases` fields.
        weight, bias = layer.weights if hasattr(layer, "weights") else (layer.filters, layer.biases)
        layers.append((str(layer.name), "conv", np.asarray(weight), np.ravel(bias)))
    return layers


def _read_matconvnet_vgg19(src):
    """{layer: (kernel, bias)} from MatConvNet's imagenet-vgg-verydeep-19.mat, for "caffe" preprocessing."""
    course_names = ARCHITECTURES["vgg19"].aliases  # conv1_1 -> block1_conv1, ...
    try:
        layers = _matconvnet_layers_v73(src) if h5py.is_hdf5(src) else _matconvnet_layers_v5(src)
    except (OSError, KeyError, ValueError, TypeError, AttributeError) as error:
        # a MATLAB file of another layout: a missing field, a cell of another shape
        raise UserError(f"{src}: not a MatConvNet network as expected ({_first_line(error)}); give MatConvNet's "
                        "imagenet-vgg-verydeep-19.mat") from None
    params = {}
    for name, _, weight, bias in layers:
        if name not in course_names:
            continue  # fc6, fc7, fc8 are convolutions in MatConvNet; no-top networks drop them
        if weight.ndim != 4:
            raise UserError(f"{src}: layer {name} has weights of shape {weight.shape}, expected 4 axes; give "
                            "MatConvNet's imagenet-vgg-verydeep-19.mat")
        # MatConvNet stores (W, H, C_in, C_out): swap the first two axes to get (KH, KW, C_in, C_out).
        kernel = weight.transpose(1, 0, 2, 3)
        params[course_names[name]] = (np.ascontiguousarray(kernel), bias)
    # MatConvNet's VGG-19 takes RGB minus the RGB means [123.68, 116.779, 103.939]. Reversing
    # the first layer's input channels makes it take BGR minus the BGR means instead: exactly
    # the "caffe" preprocessing of the Keras files, so one mode serves all Caffe-born weights.
    if "block1_conv1" in params:
        kernel, bias = params["block1_conv1"]
        params["block1_conv1"] = (np.ascontiguousarray(kernel[:, :, ::-1, :]), bias)
    return params


def convert(src, out):
    """Convert torchvision's VGG-19 (.pth) or MatConvNet's VGG-19 (.mat) into the scratchnst layout.

    Args:
        src: `vgg19-dcbb9e9d.pth` (a torchvision state dict; needs torch; kernels (C_out, C_in, KH, KW))
            or `imagenet-vgg-verydeep-19.mat` (MATLAB v5 needs SciPy, v7.3 is read with h5py;
            kernels (W, H, C_in, C_out)).
        out: the .h5 file to write (atomically).

    Returns:
        Path of the written file: architecture "vgg19", preprocessing "torchvision" for .pth and
        "caffe" for .mat (the first layer's input channels are reversed from RGB to BGR).

    Raises:
        UsageError: src or out empty; out is a folder, a device or a pipe, or src itself.
        UserError: unknown extension, unreadable file, missing layer or wrong shape, missing
            torch or SciPy; out's folder missing or not writable (checked before reading src).
    """
    _reject_empty(src, "SRC", "give torchvision's vgg19 .pth or MatConvNet's imagenet-vgg-verydeep-19.mat")
    _reject_empty(out, "-o", "give the .h5 file to write, e.g. -o vgg19.h5")
    src, out = Path(src), Path(out)
    check_input_file(src, str(src), "file", "the .pth or .mat file", "check the path")
    _check_convert_output(src, out)
    suffix = src.suffix.lower()
    if suffix in (".pth", ".pt"):
        params, preprocessing = _read_torchvision_vgg19(src), "torchvision"
    elif suffix == ".mat":
        params, preprocessing = _read_matconvnet_vgg19(src), "caffe"
    else:
        raise UserError(f"{src}: cannot convert a {suffix or 'extension-less'} file; give torchvision's "
                        "vgg19 .pth or MatConvNet's imagenet-vgg-verydeep-19.mat")
    problem = parameter_problem("vgg19", params)
    if problem:
        raise UserError(f"{src}: {problem}; give torchvision's VGG-19 .pth or MatConvNet's "
                        "imagenet-vgg-verydeep-19.mat")
    return write_weights(out, params, "vgg19", preprocessing, converted_from=src.name)


def _check_convert_output(src, out):
    """Refuse, before reading src, an output that is src itself or cannot be written."""
    if same_file(src, out):
        raise UsageError(f"-o {out} is the input file {src}: writing it would destroy the input; give another "
                         "name, e.g. -o vgg19.h5")
    check_output("-o", out, example="vgg19.h5", kind=".h5 file")

"""scratchnst.weights: reading Keras-2 files as Keras does, the scratchnst layout, finding files,
bad files, conversion from torchvision and MatConvNet, and the `scratchnst weights` command."""

import os
import shutil
import signal
import subprocess
import sys
import warnings
from pathlib import Path

import h5py
import numpy as np
import pytest
from PIL import Image

from network_helpers import (CONVS, VGG19_BLOCK_SIZES, keras_layer_names, max_rel_error, random_params,
                             write_keras_weights)
from scratchnst import image, networks, torch_ref, weights
from scratchnst.cli import main
from scratchnst.errors import UsageError, UserError

SQUEEZENET_FILE = "squeezenet_weights_tf_dim_ordering_tf_kernels_notop.h5"
REPO = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def squeezenet_params():
    return random_params("squeezenet", np.random.default_rng(30))


@pytest.fixture(scope="module")
def squeezenet_h5(tmp_path_factory, squeezenet_params):
    """A SqueezeNet file laid out as keras-squeezenet's (fire2/squeeze1x1/fire2/squeeze1x1_3/kernel:0)."""
    path = tmp_path_factory.mktemp("keras") / SQUEEZENET_FILE
    return write_keras_weights(path, "squeezenet", squeezenet_params, style="squeezenet")


@pytest.fixture
def squeezenet_copy(tmp_path, squeezenet_h5):
    """A private copy of squeezenet_h5 that a test may damage."""
    return shutil.copy(squeezenet_h5, tmp_path / "damaged.h5")


def assert_arrays_equal(found, expected):
    assert list(found) == list(expected)
    for layer in expected:
        assert len(found[layer]) == 2
        for a, b in zip(found[layer], expected[layer]):
            np.testing.assert_array_equal(a, b)


# ------------------------------------------------------------------------------- reading
@pytest.mark.parametrize("style, as_bytes", [("keras2", True), ("keras2", False), ("keras1", True),
                                             ("keras1", False), ("squeezenet", True)])
def test_reads_names_from_attributes_in_any_style(tmp_path, squeezenet_params, style, as_bytes):
    path = write_keras_weights(tmp_path / "w.h5", "squeezenet", squeezenet_params, style=style, as_bytes=as_bytes)
    found = weights.read_weights(path)
    assert found.layout == "keras" and found.attrs["keras_version"] == "2.0.0"
    assert list(found.layers) == keras_layer_names("squeezenet")  # every layer, in file order
    assert found.layers["fire2/relu_squeeze1x1"] == () and found.layers["pool3"] == ()
    # kernel first although the helper created the bias dataset first: weight_names gives the order
    assert_arrays_equal({layer: a for layer, a in found.layers.items() if a}, squeezenet_params)


def test_reads_chunked_name_lists_and_ignores_unlisted_objects(tmp_path, squeezenet_params):
    """Keras splits long name lists into layer_names0, layer_names1, ...; keys() are never walked."""
    path = write_keras_weights(tmp_path / "w.h5", "squeezenet", squeezenet_params)
    names = keras_layer_names("squeezenet")
    with h5py.File(path, "a") as f:
        del f.attrs["layer_names"]
        f.attrs["layer_names0"] = np.array([n.encode() for n in names[:30]])
        f.attrs["layer_names1"] = np.array([n.encode() for n in names[30:]])
        f.create_group("decoy_layer").create_dataset("kernel:0", data=np.zeros(3))  # not in layer_names
        f["conv1"].create_dataset("decoy:0", data=np.zeros(3))  # not in weight_names
    found = weights.read_weights(path)
    assert list(found.layers) == names
    assert len(found.layers["conv1"]) == 2
    np.testing.assert_array_equal(found.layers["conv1"][0], squeezenet_params["conv1"][0])


def test_reads_whole_model_files_from_model_weights(tmp_path, squeezenet_h5, squeezenet_params):
    path = tmp_path / "model.h5"
    with h5py.File(squeezenet_h5, "r") as source, h5py.File(path, "w") as f:
        source.copy("/", f, name="model_weights")  # what model.save() writes
    net = networks.load(path)
    np.testing.assert_array_equal(net.params["fire7/expand1x1"][0], squeezenet_params["fire7/expand1x1"][0])


# ------------------------------------------------------------------------ scratchnst layout
@pytest.mark.parametrize("preprocessing", ["caffe", "torchvision"])
def test_write_then_read_scratchnst_layout(tmp_path, squeezenet_params, preprocessing):
    path = tmp_path / "converted.h5"
    path.write_bytes(b"an older file, to be replaced")
    assert weights.write_weights(path, squeezenet_params, "squeezenet", preprocessing, converted_from="x.pth") == path
    assert sorted(p.name for p in tmp_path.iterdir()) == ["converted.h5"]  # no temporary file left
    found = weights.read_weights(path)
    assert found.layout == "scratchnst"
    assert found.architecture == "squeezenet" and found.preprocessing == preprocessing
    assert found.attrs["converted_from"] == "x.pth"
    assert found.attrs["preprocessing_description"] == image.PREPROCESSING[preprocessing]
    assert_arrays_equal(found.layers, squeezenet_params)
    with h5py.File(path, "r") as f:  # layer names with "/" nest, kernel and bias as documented
        assert f["fire2"]["squeeze1x1"]["kernel"].shape == (1, 1, 64, 16)
        assert f["fire2/squeeze1x1/bias"].dtype == np.float32
    net = networks.load(path)
    assert net.name == "squeezenet" and net.preprocessing == preprocessing


def test_write_into_a_missing_folder_is_a_user_error(tmp_path, squeezenet_params):
    with pytest.raises(UserError, match="cannot write"):
        weights.write_weights(tmp_path / "no" / "such" / "w.h5", squeezenet_params, "squeezenet", "caffe")


# A process whose files may not grow past 16 KB (RLIMIT_FSIZE, its SIGXFSZ ignored): a write then
# fails as on a full disk (EFBIG instead of ENOSPC). HDF5 writing to such a file printed dozens of
# RuntimeErrors from its finalisers and could crash the process, the temporary file left behind.
FULL_DISK_WRITE = """
import resource, signal, sys
import numpy as np
from scratchnst import transformer_net, weights
from scratchnst.errors import UserError
sys.path.insert(0, {tests!r})
from network_helpers import random_params
signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
resource.setrlimit(resource.RLIMIT_FSIZE, (16384, 16384))
try:
    if sys.argv[1] == "transformer network":
        transformer_net.save(sys.argv[2], transformer_net.init_params(np.random.default_rng(0)))
    else:
        weights.write_weights(sys.argv[2], random_params("squeezenet", np.random.default_rng(0)), "squeezenet", "caffe")
except UserError as error:
    sys.exit(f"scratchnst: error: {{error}}")
"""


@pytest.mark.parametrize("what", ["transformer network", "weights file"])
def test_an_hdf5_file_on_a_full_disk_is_one_line_and_leaves_nothing(tmp_path, what):
    (tmp_path / "out").mkdir()
    done = subprocess.run([sys.executable, "-c", FULL_DISK_WRITE.format(tests=str(Path(__file__).parent)), what,
                           str(tmp_path / "out" / "file.h5")], capture_output=True, text=True, timeout=120)
    assert done.returncode == 1, done.stderr[-2000:]
    assert done.stderr.startswith(f"scratchnst: error: cannot write the {what}") and done.stderr.count("\n") == 1, \
        done.stderr[-2000:]
    assert list((tmp_path / "out").iterdir()) == []


# ------------------------------------------------------------------------------ bad files
def _set_names(obj, attribute, names):
    obj.attrs[attribute] = np.array([n.encode() for n in names])


def _damage(path, how):
    """Damage a SqueezeNet file in one way; returns the layer the error must name (or None)."""
    if how in ("not hdf5", "empty", "truncated"):
        data = path.read_bytes()
        path.write_bytes({"not hdf5": b"<html>404 Not Found</html>", "empty": b"",
                          "truncated": data[:len(data) // 2]}[how])
        return None
    with h5py.File(path, "a") as f:
        if how == "layer missing":
            _set_names(f, "layer_names", [n for n in keras_layer_names("squeezenet") if n != "fire4/expand3x3"])
            return "fire4/expand3x3"
        if how == "group missing":
            del f["fire4/expand3x3"]
            return "fire4/expand3x3"
        if how == "dataset missing":
            _set_names(f["fire6/squeeze1x1"], "weight_names", ["fire6/squeeze1x1_3/kernel:0", "nowhere:0"])
            return "fire6/squeeze1x1"
        if how == "wrong shape":
            group = f["fire5/expand1x1"]
            del group["fire5/expand1x1_3/kernel:0"]
            group.create_dataset("fire5/expand1x1_3/kernel:0", data=np.zeros((1, 1, 32, 64), np.float32))
            return "fire5/expand1x1"
        if how == "one array":
            _set_names(f["conv1"], "weight_names", ["conv1_3/kernel:0"])
            return "conv1"
        if how == "integer kernel":
            del f["conv1"]["conv1_3/kernel:0"]
            f["conv1"].create_dataset("conv1_3/kernel:0", data=np.zeros((3, 3, 3, 64), np.int32))
            return "conv1"
        if how == "no layer_names":
            del f.attrs["layer_names"]
            return None
        if how == "another architecture":
            return None
        if how == "unknown declared architecture":
            f.attrs["scratchnst_format"] = 1
            f.attrs["architecture"] = "resnet50"
            return None
        if how == "newer format":
            f.attrs["scratchnst_format"] = 2
            return None
    raise ValueError(how)


DOWNLOAD = "download it again with `scratchnst weights download squeezenet`"


@pytest.mark.parametrize("how, message, advice", [
    ("not hdf5", "not an HDF5 weights file but an HTML or XML page", "give the .h5 weights file"),
    ("empty", r"is empty \(0 bytes\)", DOWNLOAD),
    ("truncated", r"is truncated \([\d,]+ of [\d,]+ bytes", DOWNLOAD),
    ("layer missing", "layer fire4/expand3x3 of squeezenet is missing", "download them again"),
    ("group missing", "'fire4/expand3x3' is listed in layer_names but has no group", DOWNLOAD),
    ("dataset missing", "'nowhere:0' listed in weight_names is missing", DOWNLOAD),
    ("wrong shape", r"fire5/expand1x1 of squeezenet: kernel shape \(1, 1, 32, 64\), expected \(1, 1, 32, 128\)",
     "download them again with `scratchnst weights download squeezenet`"),
    ("one array", "conv1 of squeezenet has 1 weight arrays", "download them again"),
    ("integer kernel", "conv1 of squeezenet: kernel has dtype int32", "download them again"),
    ("no layer_names", "without a 'layer_names' attribute", "scratchnst weights list"),
    ("another architecture", "holds squeezenet weights, not vgg19", "`scratchnst weights download vgg19`"),
    ("unknown declared architecture", "declares architecture 'resnet50'", "give vgg19 or squeezenet weights"),
    ("newer format", "scratchnst format 2", "upgrade scratchnst"),
])
def test_bad_weights_file_is_one_user_error_naming_file_and_layer(squeezenet_copy, how, message, advice):
    layer = _damage(squeezenet_copy, how)
    model = "vgg19" if how == "another architecture" else "squeezenet"
    with pytest.raises(UserError, match=message) as caught:  # a KeyError or OSError would not match
        networks.load(model, weights=squeezenet_copy)
    text = str(caught.value)
    assert str(squeezenet_copy) in text and "\n" not in text
    assert advice in text  # says what to do
    assert not isinstance(caught.value, UsageError)  # a file problem: exit status 1, not 2
    if layer:
        assert layer in text


# What a damaged dataset may hold instead of conv1's bias: {how: (make(file, name), what the message says)}.
# Each is written with h5py where the bias was, in a copy of a SqueezeNet file.
BIAS = "conv1/conv1_3/bias:0"
DAMAGED_DATASETS = {
    "NaN": (lambda f, name: f.create_dataset(name, data=np.full(64, np.nan, np.float32)),
            rf"holds non-finite weights \(NaN or inf, in {BIAS}\)"),
    "inf": (lambda f, name: f.create_dataset(name, data=np.r_[np.zeros(63), -np.inf].astype(np.float32)),
            rf"holds non-finite weights \(NaN or inf, in {BIAS}\)"),
    "1e38": (lambda f, name: f.create_dataset(name, data=np.full(64, 1e38, np.float32)),
             r"the bias of layer conv1 holds 1e\+38, where trained squeezenet weights stay far below 10000"),
    "1e300 (float64)": (lambda f, name: f.create_dataset(name, data=np.full(64, 1e300)),
                        r"the bias of layer conv1 holds 1e\+300"),
    "a string": (lambda f, name: f.create_dataset(name, data="hello"), f"dataset {BIAS} holds strings, not numbers"),
    "bytes": (lambda f, name: f.create_dataset(name, data=np.array([b"ab"] * 64)), "holds strings, not numbers"),
    "references": (lambda f, name: f.create_dataset(name, data=np.array([f["conv1"].ref] * 64, dtype=h5py.ref_dtype)),
                   "holds object references, not numbers"),
    "sequences": (lambda f, name: f.create_dataset(name, (64,), dtype=h5py.vlen_dtype(np.float32)),
                  "holds variable-length sequences, not numbers"),
    "records": (lambda f, name: f.create_dataset(name, data=np.zeros(64, [("a", "f4"), ("b", "f4")])),
                r"holds records \(a compound type\), not numbers"),
    "opaque": (lambda f, name: f.create_dataset(name, data=np.zeros(64, "V4")), r"holds raw bytes \(an opaque type\)"),
    "an array type": (lambda f, name: f.create_dataset(name, (64,), dtype=np.dtype(("f4", (2,)))),
                      r"holds an array in each element"),
    "no dataspace": (lambda f, name: f.create_dataset(name, data=h5py.Empty("f4")),
                     r"holds no array \(an empty HDF5 dataspace\)"),
    "a float scalar": (lambda f, name: f.create_dataset(name, data=np.float32(0.5)),
                       r"layer conv1 of squeezenet: bias shape \(\), expected \(64,\)"),
    "integers": (lambda f, name: f.create_dataset(name, data=np.zeros(64, np.int64)),
                 "layer conv1 of squeezenet: bias has dtype int64, expected floats"),
    "booleans": (lambda f, name: f.create_dataset(name, data=np.zeros(64, bool)), "bias has dtype bool"),
    "complex numbers": (lambda f, name: f.create_dataset(name, data=np.zeros(64, complex)), "bias has dtype complex"),
    "a group": (lambda f, name: f.create_group(name), "'conv1_3/bias:0' is not a dataset"),
    "a soft link": (lambda f, name: f.__setitem__(name, h5py.SoftLink("/conv1/conv1_3/kernel:0")),
                    "'conv1_3/bias:0' is reached through a soft link"),
    "a dangling soft link": (lambda f, name: f.__setitem__(name, h5py.SoftLink("/nowhere")),
                             "'conv1_3/bias:0' is reached through a soft link"),
    "a soft link loop": (lambda f, name: f.__setitem__(name, h5py.SoftLink(f"/{name}")), "through a soft link"),
    "a soft link on the way": (lambda f, name: f.__setitem__("conv1/conv1_3", h5py.SoftLink("/fire2")),
                               "layer 'conv1': 'conv1_3/kernel:0' is reached through a soft link"),
    # Both to a good bias in another file, which HDF5 would read: only the link's kind is wrong. (Links
    # to a pipe are what makes following them dangerous, but a test of that would hang, not fail.)
    "an external link": (lambda f, name: f.__setitem__(name, h5py.ExternalLink(f.filename + ".other.h5", "/bias")),
                         "'conv1_3/bias:0' is reached through an external link"),
    "data in another file": (lambda f, name: f.create_dataset(name, (64,), "f4",
                                                              external=[(f.filename + ".raw", 0, 256)]),
                             "keeps its numbers in other files"),
}


def _replace_bias(path, how):
    """Put DAMAGED_DATASETS[how] in place of conv1's bias in the file at path (good biases beside it for links)."""
    with h5py.File(path, "a") as f:
        bias = f[BIAS][()]
        del f[BIAS]
    with h5py.File(f"{path}.other.h5", "w") as other:
        other["bias"] = bias
    Path(f"{path}.raw").write_bytes(bias.astype("<f4").tobytes())
    with h5py.File(path, "a") as f:
        if how == "a soft link on the way":
            del f["conv1/conv1_3"]
        DAMAGED_DATASETS[how][0](f, BIAS)


@pytest.mark.parametrize("how", list(DAMAGED_DATASETS))
def test_a_damaged_dataset_is_one_line_saying_the_file_is_damaged(squeezenet_copy, how):
    """Every kind of dataset but an array of finite floats of the right shape: one line, download again."""
    _replace_bias(squeezenet_copy, how)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # an overflow warning would leak a line besides the error's
        with pytest.raises(UserError, match=DAMAGED_DATASETS[how][1]) as caught:
            networks.load("squeezenet", weights=squeezenet_copy)
    text = str(caught.value)
    assert text.startswith(f"{squeezenet_copy}: ") and "\n" not in text
    assert "damaged" in text and "again with `scratchnst weights download squeezenet`" in text
    assert not isinstance(caught.value, UsageError)


def test_model_weights_behind_an_external_link_is_refused(tmp_path, squeezenet_h5):
    path = tmp_path / "model.h5"
    with h5py.File(path, "w") as f:
        f["model_weights"] = h5py.ExternalLink(str(squeezenet_h5), "/")  # good weights, in another file
    with pytest.raises(UserError, match="group 'model_weights' is reached through an external link.*the file is "
                                        "damaged"):
        weights.read_weights(path)


def test_the_real_file_is_far_inside_the_weight_limit(squeezenet_weights_path):
    """WEIGHT_LIMIT leaves the published weights a wide margin: keras-squeezenet's largest is about 7."""
    name, params = weights.parameters_from_file(weights.read_weights(squeezenet_weights_path))
    assert name == "squeezenet"
    largest = max(float(np.abs(array).max()) for pair in params.values() for array in pair)
    assert 1 < largest < weights.WEIGHT_LIMIT / 1000


@pytest.mark.parametrize("how", ["NaN", "1e38", "a string"])
@pytest.mark.parametrize("command", ["stylize", "train", "weights info", "bench"])
def test_commands_given_a_damaged_copy_of_the_real_file_end_in_one_line(
        squeezenet_weights_path, tmp_path, capsys, monkeypatch, command, how):
    """The audit's cases end to end: at load time, the file's fault, no warning, no 'internal error'."""
    copy = shutil.copy(squeezenet_weights_path, tmp_path / SQUEEZENET_FILE)
    _replace_bias(tmp_path / SQUEEZENET_FILE, how)
    images = REPO / "lessons" / "images"
    photos = tmp_path / "photos"
    photos.mkdir()
    shutil.copy(images / "cat.jpg", photos / "cat.jpg")
    monkeypatch.setenv("SCRATCHNST_WEIGHTS_DIR", str(tmp_path))  # bench has no --weights: it searches
    args = {"stylize": ["stylize", "--weights", str(copy), str(images / "cat.jpg"), str(images / "swirls.jpg"),
                        "-o", str(tmp_path / "out.png"), "--size", "64", "--iters", "1"],
            "train": ["train", "--weights", str(copy), str(images / "swirls.jpg"), str(photos), "-o",
                      str(tmp_path / "net.h5"), "--size", "64", "--iters", "1"],
            "weights info": ["weights", "info", str(copy)],
            "bench": ["bench", "--pretrained", "--models", "squeezenet", "--sizes", "64", "--repeats", "1"]}[command]
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert main(args) == 1
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith(f"scratchnst: error: {copy}: ")
    assert "damaged" in err and "download it again" in err
    assert "internal error" not in err and "alpha" not in err and "--lr" not in err
    assert not (tmp_path / "out.png").exists() and not (tmp_path / "net.h5").exists()


# ------------------------------------------------------------------ a style network as --weights
@pytest.fixture(scope="module")
def style_network(tmp_path_factory):
    """A network as `scratchnst train` writes it (transformer_net.save), small."""
    from scratchnst import transformer_net

    params = transformer_net.init_params(np.random.default_rng(34), widths=(4, 8, 8), residual_blocks=1)
    return transformer_net.save(tmp_path_factory.mktemp("style") / "NET.h5", params)


def test_a_style_network_given_as_weights_says_to_apply_it(style_network, capsys):
    from scratchnst import transformer_net

    # weights.py spells the marks itself (transformer_net imports it): they must stay transformer_net's
    assert weights._STYLE_NETWORK_ARCHITECTURE == transformer_net.ARCHITECTURE
    with h5py.File(style_network, "r") as f:
        assert f.attrs[weights._STYLE_NETWORK_FORMAT] == transformer_net.FORMAT_VERSION
    expected = (f"{style_network}: a style network trained by `scratchnst train`, not pretrained network weights; "
                f"stylize photos with it by `scratchnst apply {style_network} PHOTO -o OUT.png`, and give --weights "
                "a pretrained VGG-19 or SqueezeNet file")
    for load in (lambda: networks.load("squeezenet", weights=style_network), lambda: networks.load(style_network)):
        with pytest.raises(UserError) as caught:
            load()
        assert str(caught.value).startswith(expected) and "does not know" not in str(caught.value)
    assert main(["weights", "info", str(style_network)]) == 1
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "scratchnst apply" in err


def test_a_style_network_zipped_as_a_keras_archive_says_to_take_it_out_first(style_network, tmp_path, capsys):
    """`scratchnst apply` opens .h5 files only: the advice for a zipped one must not be to apply the zip."""
    import zipfile

    archive = tmp_path / "net.keras"
    with zipfile.ZipFile(archive, "w") as z:
        z.write(style_network, "model.weights.h5")
        z.writestr("config.json", "{}")
    with pytest.raises(UserError) as caught:
        networks.load("squeezenet", weights=archive)
    message = str(caught.value)
    assert message.startswith(f"{archive}: a style network trained by `scratchnst train`")
    assert "take its model.weights.h5 out of the .keras archive" in message
    assert "`scratchnst apply NET.h5 PHOTO -o OUT.png`" in message and f"apply {archive}" not in message
    # and the advice holds: apply refuses the zip, and runs on what was taken out of it
    photo = tmp_path / "photo.png"
    Image.fromarray(np.full((16, 16, 3), 90, np.uint8)).save(photo)
    assert main(["apply", str(archive), str(photo), "-o", str(tmp_path / "a.png")]) == 1
    assert "not an HDF5 file" in capsys.readouterr().err
    (tmp_path / "NET.h5").write_bytes(zipfile.ZipFile(archive).read("model.weights.h5"))
    assert main(["apply", str(tmp_path / "NET.h5"), str(photo), "-o", str(tmp_path / "a.png")]) == 0
    assert (tmp_path / "a.png").exists()


def test_a_style_network_marked_by_its_architecture_alone(style_network, tmp_path):
    """A file of another format version still names its architecture: recognised by that too."""
    path = shutil.copy(style_network, tmp_path / "NET.h5")
    with h5py.File(path, "a") as f:
        del f.attrs[weights._STYLE_NETWORK_FORMAT]
    with pytest.raises(UserError, match="a style network trained by `scratchnst train`"):
        networks.load("vgg19", weights=path)


def test_file_of_no_known_architecture(tmp_path):
    path = tmp_path / "dense.h5"
    with h5py.File(path, "w") as f:
        f.attrs["layer_names"] = np.array([b"dense_1"])
        group = f.create_group("dense_1")
        group.attrs["weight_names"] = np.array([b"dense_1/kernel:0"])
        group.create_dataset("dense_1/kernel:0", data=np.zeros((4, 2), np.float32))
    with pytest.raises(UserError, match=r"has none of the layers of vgg19 or squeezenet .*dense_1.*give vgg19 or "
                                        r"squeezenet weights"):
        networks.load(path)
    with pytest.raises(UserError, match=r"has none of the layers of squeezenet .*`scratchnst weights download "
                                        r"squeezenet`"):
        networks.load("squeezenet", weights=path)


@pytest.mark.parametrize("make", ["missing", "folder"])
def test_missing_file_or_folder_is_a_user_error(tmp_path, make):
    path = tmp_path / "w.h5"
    if make == "folder":
        path.mkdir()
    with pytest.raises(UserError, match="is a folder" if make == "folder" else "no such weights file"):
        networks.load("squeezenet", weights=path)
    with pytest.raises(UserError, match=str(path)):
        weights.read_weights(path)


# ------------------------------------------------------------------------------- finding
@pytest.fixture
def places(tmp_path, monkeypatch):
    """The three search folders, empty: $SCRATCHNST_WEIGHTS_DIR, weights/ of the repo, user cache."""
    env, repo, xdg = tmp_path / "env", tmp_path / "repo_weights", tmp_path / "xdg"
    for folder in (env, repo, xdg / "scratchnst"):
        folder.mkdir(parents=True)
    monkeypatch.setenv("SCRATCHNST_WEIGHTS_DIR", str(env))
    monkeypatch.setattr(weights, "REPO_WEIGHTS_DIR", repo)
    monkeypatch.setenv("XDG_CACHE_HOME", str(xdg))
    return env, repo, xdg / "scratchnst"


def test_find_weights_looks_in_order(places, squeezenet_h5, tmp_path):
    env, repo, cache = places
    for folder in (cache, repo, env):  # each folder added takes precedence over those before
        shutil.copy(squeezenet_h5, folder / SQUEEZENET_FILE)
        assert weights.find_weights("squeezenet") == folder / SQUEEZENET_FILE
    explicit = shutil.copy(squeezenet_h5, tmp_path / "mine.h5")
    assert weights.find_weights("squeezenet", explicit=explicit) == explicit


def test_nothing_found_names_every_place_and_the_download_command(places, monkeypatch):
    env, repo, cache = places
    with pytest.raises(UserError) as caught:
        weights.find_weights("vgg19")
    text = str(caught.value)
    for place in (env, repo, cache):
        assert str(place) in text
    assert "scratchnst weights download vgg19" in text and "\n" not in text
    monkeypatch.delenv("SCRATCHNST_WEIGHTS_DIR")
    with pytest.raises(UserError, match=r"\$SCRATCHNST_WEIGHTS_DIR \(not set\)"):
        networks.load("squeezenet")


def test_find_weights_errors(places, tmp_path):
    with pytest.raises(UserError, match="no such weights file"):
        weights.find_weights("squeezenet", explicit=tmp_path / "absent.h5")
    with pytest.raises(UsageError, match="unknown network 'alexnet'"):
        weights.find_weights("alexnet")


def test_weights_dir_variable_naming_a_file_says_to_name_its_folder(places, squeezenet_h5, monkeypatch, capsys):
    """$SCRATCHNST_WEIGHTS_DIR set to the weights file itself, an easy slip: not "FILE is not in FILE"."""
    env, _, cache = places
    target = shutil.copy(squeezenet_h5, env / SQUEEZENET_FILE)
    monkeypatch.setenv("SCRATCHNST_WEIGHTS_DIR", str(target))
    with pytest.raises(UserError) as caught:
        weights.find_weights("squeezenet")
    assert str(caught.value) == (f"no squeezenet weights: $SCRATCHNST_WEIGHTS_DIR is {target}, a file, not a "
                                 f"folder; set it to the folder that holds the file: SCRATCHNST_WEIGHTS_DIR={env}")
    with pytest.raises(UserError, match=r"is .*, a file, not a folder; set it to the folder that holds "
                                        r"vgg19_weights_tf_dim_ordering_tf_kernels_notop\.h5, or to a folder where "
                                        r"`scratchnst weights download vgg19` can save it$"):
        weights.find_weights("vgg19")
    with pytest.raises(UserError, match=r"^cannot save squeezenet_.*: \$SCRATCHNST_WEIGHTS_DIR is .*, a file, not a "
                                        r"folder; .*, or give --dest DIR$"):
        weights.download("squeezenet", url=f"file://{squeezenet_h5}")  # before anything is fetched
    images = REPO / "lessons" / "images"
    assert main(["stylize", str(images / "cat.jpg"), str(images / "swirls.jpg"), "-o", str(env / "out.png")]) == 1
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "a file, not a folder; set it to the folder that holds the file" in err
    # a copy in another place still serves: the mistake costs nothing then
    shutil.copy(squeezenet_h5, cache / SQUEEZENET_FILE)
    assert weights.find_weights("squeezenet") == cache / SQUEEZENET_FILE


def test_user_cache_defaults_to_dot_cache(monkeypatch, tmp_path):
    monkeypatch.delenv("XDG_CACHE_HOME", raising=False)
    monkeypatch.setenv("HOME", str(tmp_path))
    assert weights.user_cache_dir() == tmp_path / ".cache" / "scratchnst"


# ----------------------------------------------------------------------------- converting
@pytest.fixture(scope="module")
def vgg_params():
    return random_params("vgg19", np.random.default_rng(31))


# torchvision's vgg19().features: conv, ReLU, ..., MaxPool; these are the indices of its 16 convs.
TORCHVISION_CONV_INDICES = [0, 2, 5, 7, 10, 12, 14, 16, 19, 21, 23, 25, 28, 30, 32, 34]


@pytest.fixture(scope="module")
def vgg_pth(tmp_path_factory, vgg_params, torch):
    """A torchvision-style state dict: OIHW kernels under features.<i>, plus a classifier."""
    state = {}
    for index, (layer, _) in zip(TORCHVISION_CONV_INDICES, CONVS["vgg19"]):
        kernel, bias = vgg_params[layer]
        state[f"features.{index}.weight"] = torch.from_numpy(np.ascontiguousarray(kernel.transpose(3, 2, 0, 1)))
        state[f"features.{index}.bias"] = torch.from_numpy(bias)
    state["classifier.0.weight"] = torch.zeros(8, 4)
    path = tmp_path_factory.mktemp("pth") / "vgg19-test.pth"
    torch.save(state, path)
    return path


def test_convert_torchvision_pth(vgg_pth, vgg_params, tmp_path, torch):
    out = weights.convert(vgg_pth, tmp_path / "vgg19_tv.h5")
    found = weights.read_weights(out)
    assert found.architecture == "vgg19" and found.preprocessing == "torchvision"
    assert found.attrs["converted_from"] == "vgg19-test.pth"
    assert_arrays_equal(found.layers, vgg_params)

    # The converted network on our torchvision preprocessing equals PyTorch's own NCHW pipeline
    # on the .pth kernels (F is used directly here: NCHW, OIHW, symmetric padding 1).
    F = torch.nn.functional
    net = networks.load(out, dtype=np.float64)
    assert net.preprocessing == "torchvision"
    picture = np.random.default_rng(32).uniform(0, 255, (24, 20, 3))
    ours = net.forward(image.preprocess(picture, net.preprocessing), "block2_conv1")["block2_conv1"]
    state = torch.load(vgg_pth, weights_only=True)
    mean = torch.tensor([0.485, 0.456, 0.406], dtype=torch.float64).view(1, 3, 1, 1)
    std = torch.tensor([0.229, 0.224, 0.225], dtype=torch.float64).view(1, 3, 1, 1)
    a = (torch.from_numpy(picture).permute(2, 0, 1)[None] / 255 - mean) / std
    for index in (0, 2, "pool", 5):
        if index == "pool":
            a = F.max_pool2d(a, 2)
            continue
        w, b = (state[f"features.{index}.{p}"].double() for p in ("weight", "bias"))
        a = F.relu(F.conv2d(a, w, b, padding=1))
    assert max_rel_error(ours, a.permute(0, 2, 3, 1).numpy()) < 1e-9


def _matconvnet_layers(vgg_params):
    """MatConvNet-style layers: (name, type, W stored (W, H, C_in, C_out), b) incl. relu, pool, fc6."""
    rows = []
    for block, n_convs in enumerate(VGG19_BLOCK_SIZES, start=1):
        for i in range(1, n_convs + 1):
            kernel, bias = vgg_params[f"block{block}_conv{i}"]
            rows.append((f"conv{block}_{i}", "conv", kernel.transpose(1, 0, 2, 3), bias))
            rows.append((f"relu{block}_{i}", "relu", None, None))
        rows.append((f"pool{block}", "pool", None, None))
    rows.append(("fc6", "conv", np.zeros((7, 7, 512, 2), np.float32), np.zeros(2, np.float32)))  # dropped
    return rows


def _write_mat_v5(path, rows):
    import scipy.io

    cell = np.empty((1, len(rows)), dtype=object)
    for i, (name, kind, w, b) in enumerate(rows):
        layer = {"name": name, "type": kind}
        if w is not None:
            pair = np.empty((1, 2), dtype=object)
            pair[0, 0], pair[0, 1] = w, b.reshape(-1, 1)  # MatConvNet biases are columns
            layer["weights"] = pair
        cell[0, i] = layer
    scipy.io.savemat(path, {"layers": cell})


def _write_mat_v73(path, rows):
    """As MATLAB -v7.3 does: HDF5, axes reversed (column-major), chars as uint16, cells as references."""
    def chars(text):
        return np.array([ord(c) for c in text], dtype=np.uint16).reshape(-1, 1)

    with h5py.File(path, "w") as f:
        refs = f.create_group("#refs#")
        layer_refs = []
        for i, (name, kind, w, b) in enumerate(rows):
            group = refs.create_group(f"layer{i}")
            group.create_dataset("name", data=chars(name))
            group.create_dataset("type", data=chars(kind))
            if w is not None:
                w_ref = refs.create_dataset(f"w{i}", data=w.T).ref
                b_ref = refs.create_dataset(f"b{i}", data=b.reshape(-1, 1).T).ref
                group.create_dataset("weights", data=np.array([[w_ref], [b_ref]], dtype=h5py.ref_dtype))
            layer_refs.append(group.ref)
        f.create_dataset("layers", data=np.array(layer_refs, dtype=h5py.ref_dtype).reshape(-1, 1))


@pytest.mark.parametrize("version", ["v5", "v7.3"])
def test_convert_matconvnet_mat(tmp_path, vgg_params, version, torch):
    src = tmp_path / "imagenet-vgg-verydeep-19.mat"
    (_write_mat_v5 if version == "v5" else _write_mat_v73)(src, _matconvnet_layers(vgg_params))
    out = weights.convert(src, tmp_path / "vgg19_mcn.h5")
    found = weights.read_weights(out)
    assert found.architecture == "vgg19" and found.preprocessing == "caffe"
    rgb_kernel = vgg_params["block1_conv1"][0]
    expected = dict(vgg_params, block1_conv1=(rgb_kernel[:, :, ::-1, :], vgg_params["block1_conv1"][1]))
    assert_arrays_equal(found.layers, expected)

    # MatConvNet's network sees RGB minus the RGB means; ours sees caffe-preprocessed BGR.
    net = networks.load(out, dtype=np.float64)
    picture = np.random.default_rng(33).uniform(0, 255, (1, 15, 17, 3))
    ours = net.forward(image.preprocess(picture[0], "caffe"), "conv1_1")["conv1_1"]
    centred = torch_ref.to_torch(picture - np.array([123.68, 116.779, 103.939]))
    theirs = torch_ref.relu(torch_ref.conv2d(centred, *(torch_ref.to_torch(a.astype(np.float64))
                                                          for a in vgg_params["block1_conv1"])))
    assert max_rel_error(ours, torch_ref.to_numpy(theirs)) < 1e-9


def test_convert_errors(tmp_path, vgg_pth, monkeypatch, torch):
    src = tmp_path / "weights.txt"
    src.write_text("hello")
    with pytest.raises(UserError, match="cannot convert a .txt file"):
        weights.convert(src, tmp_path / "out.h5")
    with pytest.raises(UserError, match="no such file"):
        weights.convert(tmp_path / "absent.pth", tmp_path / "out.h5")

    state = torch.load(vgg_pth, weights_only=True)
    del state["features.34.weight"]
    partial = tmp_path / "partial.pth"
    torch.save(state, partial)
    with pytest.raises(UserError, match=r"features\.34.*block5_conv4"):
        weights.convert(partial, tmp_path / "out.h5")
    assert not (tmp_path / "out.h5").exists()

    monkeypatch.setitem(sys.modules, "torch", None)  # as if torch were not installed
    with pytest.raises(UserError, match="needs PyTorch"):
        weights.convert(vgg_pth, tmp_path / "out.h5")


def test_convert_reads_bfloat16_and_refuses_what_is_no_tensor_of_floats(tmp_path, vgg_pth, vgg_params, torch):
    state = torch.load(vgg_pth, weights_only=True)
    half = {key: value.to(torch.bfloat16) for key, value in state.items()}
    torch.save(half, tmp_path / "bf16.pth")
    found = weights.read_weights(weights.convert(tmp_path / "bf16.pth", tmp_path / "bf16.h5")).layers
    kernel, bias = vgg_params["block1_conv1"]
    expected = torch.from_numpy(kernel).to(torch.bfloat16).to(torch.float32).numpy()
    np.testing.assert_array_equal(found["block1_conv1"][0], expected)  # bfloat16 widens exactly
    for value, words in ((5, "is of type int, not a tensor of floats"),
                         (torch.zeros(64, 3, 3, 3, dtype=torch.int64), "is a tensor of int64, not a tensor of floats")):
        torch.save({**state, "features.0.weight": value}, tmp_path / "odd.pth")
        with pytest.raises(UserError, match=r"features\.0\.weight \(layer block1_conv1\) " + words):
            weights.convert(tmp_path / "odd.pth", tmp_path / "odd.h5")
        assert not (tmp_path / "odd.h5").exists()


@pytest.mark.parametrize("contents, reason", [(b"hello world\n", "not a PyTorch file"),
                                              (None, "not a readable PyTorch file (Unsupported operand")])
def test_convert_of_no_pytorch_file_is_one_line_without_torchs_warnings(tmp_path, contents, reason, torch):
    import pickle

    src = tmp_path / "x.pth"
    src.write_bytes(pickle.dumps({"a": 1}, protocol=4) if contents is None else contents)
    # in a process of its own: pytest would catch the warnings that the command must not print
    done = subprocess.run([sys.executable, "-m", "scratchnst", "weights", "convert", str(src), "-o",
                           str(tmp_path / "v.h5")], capture_output=True, text=True, timeout=120)
    assert done.returncode == 1 and done.stderr.count("\n") == 1 and reason in done.stderr, done.stderr


def test_convert_v5_mat_without_scipy_says_so(tmp_path, monkeypatch):
    src = tmp_path / "imagenet-vgg-verydeep-19.mat"
    src.write_bytes(b"MATLAB 5.0 MAT-file" + bytes(200))
    monkeypatch.setitem(sys.modules, "scipy", None)
    monkeypatch.setitem(sys.modules, "scipy.io", None)
    with pytest.raises(UserError, match=r"needs SciPy \(pip install scipy\)"):
        weights.convert(src, tmp_path / "out.h5")


# ---------------------------------------------------------------------- the command line
def test_cli_info(squeezenet_h5, squeezenet_copy, capsys):
    assert main(["weights", "info", str(squeezenet_h5)]) == 0
    out = capsys.readouterr().out
    assert "Keras-2" in out and "architecture:  squeezenet" in out and "parameters:    722,496" in out
    assert "fire2/squeeze1x1_3/kernel:0 (1, 1, 64, 16) float32" in out

    _damage(squeezenet_copy, "wrong shape")
    assert main(["weights", "info", str(squeezenet_copy)]) == 1  # all it could read, then why it matches nothing
    captured = capsys.readouterr()
    assert "architecture:  none" in captured.out and "parameters:" in captured.out
    assert captured.err.count("\n") == 1 and "kernel shape (1, 1, 32, 64)" in captured.err


def test_cli_errors_are_one_line(tmp_path, capsys):
    assert main(["weights", "info", str(tmp_path / "absent.h5")]) == 1  # a file problem, not wrong usage
    err = capsys.readouterr().err
    assert err.startswith("scratchnst: error: ") and "absent.h5: no such weights file; check the path" in err
    assert err.count("\n") == 1


def test_cli_list(places, squeezenet_h5, capsys):
    env, _, _ = places
    shutil.copy(squeezenet_h5, env / SQUEEZENET_FILE)
    assert main(["weights", "list"]) == 0
    out = capsys.readouterr().out
    assert f"found: {env / SQUEEZENET_FILE}" in out
    assert "scratchnst weights download vgg19" in out
    assert "note:" not in out


def test_cli_list_says_when_a_found_file_cannot_be_used(places, squeezenet_h5, capsys):
    """A download cut short is found by name: the list says so at once, not the run that loads it."""
    env, _, _ = places
    data = squeezenet_h5.read_bytes()
    (env / SQUEEZENET_FILE).write_bytes(data[:len(data) // 2])
    assert main(["weights", "list"]) == 0
    out = capsys.readouterr().out
    line = next(line for line in out.splitlines() if line.startswith("squeezenet"))
    assert f"found, but unusable: {env / SQUEEZENET_FILE}: is truncated ({len(data) // 2:,} of {len(data):,} bytes" \
        in line and "scratchnst weights download squeezenet" in line, line


def test_cli_list_says_when_the_weights_dir_is_a_file(squeezenet_h5, monkeypatch, capsys):
    monkeypatch.setenv("SCRATCHNST_WEIGHTS_DIR", str(squeezenet_h5))
    assert main(["weights", "list"]) == 0
    out = capsys.readouterr().out
    assert (f"note: $SCRATCHNST_WEIGHTS_DIR is {squeezenet_h5}, a file, not a folder; set it to the folder that "
            f"holds the file: SCRATCHNST_WEIGHTS_DIR={squeezenet_h5.parent}") in out


def test_cli_convert(vgg_pth, tmp_path, capsys):
    out = tmp_path / "vgg19_tv.h5"
    assert main(["weights", "convert", str(vgg_pth), "-o", str(out)]) == 0
    assert f"wrote {out}" in capsys.readouterr().out
    assert networks.load("vgg19", weights=out).preprocessing == "torchvision"


# ------------------------------------------------------------------ relaying a library's words
def test_a_librarys_error_text_is_cut_to_its_first_line_and_120_characters():
    assert weights._first_line(ValueError("short\nsecond line")) == "short"
    long = weights._first_line(ValueError("word " * 100 + "\nsecond line"))
    assert len(long) <= 120 and long.endswith("...") and "second" not in long
    assert weights._first_line(KeyError()) == "KeyError"


TORCH_ADVICE = ("Weights only load failed. This file can still be loaded, to do so you have two options, "
                "\x1b[1mdo those steps only if you trust the source of the checkpoint\x1b[0m. \n\t(1) Re-running "
                "`torch.load` with `weights_only` set to `False` will likely succeed, but it can result in arbitrary "
                "code execution.\n\tWeightsUnpickler error: {detail}\n\nCheck the documentation of torch.load")


@pytest.mark.parametrize("text, expected", [
    (TORCH_ADVICE.format(detail="Unsupported global: GLOBAL numpy.core.multiarray._reconstruct was not an "
                                "allowed global"),
     "not a PyTorch state dict that can be loaded safely (weights_only)"),
    (TORCH_ADVICE.format(detail="\n\nUnsupported operand 110"), "not a readable PyTorch file (Unsupported operand 110)"),
    ("Weights only load failed. Something new", "not a PyTorch state dict that can be loaded safely (weights_only)"),
    ("PytorchStreamReader failed reading zip archive: failed finding central directory",
     "not a readable PyTorch file (PytorchStreamReader failed reading zip archive: failed finding central directory)"),
])
def test_torch_load_errors_never_relay_the_advice_to_load_unsafely(text, expected):
    assert weights._torch_load_problem(RuntimeError(text)) == expected


@pytest.mark.parametrize("kind", ["fifo", "symlink loop", "missing under a file"])
def test_read_weights_tells_special_files_apart_without_opening_them(tmp_path, kind):
    path = tmp_path / "w.h5"
    if kind == "fifo":
        os.mkfifo(path)  # opening it would wait for a writer: the test would hang
        expected = f"{path}: not a regular file; give the .h5 weights file"
    elif kind == "symlink loop":
        path.symlink_to(path.name)
        expected = f"cannot read {path} (Too many levels of symbolic links)"
    else:
        (tmp_path / "afile").write_text("a file")
        path = tmp_path / "afile" / "w.h5"
        expected = f"{path}: no such weights file; check the path"
    def hung(signum, frame):
        raise AssertionError(f"read_weights opened the {kind} and waited")

    previous = signal.signal(signal.SIGALRM, hung)
    signal.alarm(20)
    try:
        with pytest.raises(UserError) as caught:
            weights.read_weights(path)
    finally:
        signal.alarm(0)
        signal.signal(signal.SIGALRM, previous)
    assert str(caught.value).startswith(expected)

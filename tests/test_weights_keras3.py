"""Keras 3's layout (model.save_weights("x.weights.h5"), model.save("x.keras")): read by order and shapes.

The files are written by tests/network_helpers.write_keras3_weights, laid out as Keras 3.15 saves
keras.applications' VGG19 and a keras-squeezenet built in it (checked against such files when this
was written; TensorFlow is no dependency of the tests).
"""

import io
import json
import os
import zipfile

import h5py
import numpy as np
import pytest

from network_helpers import random_params, write_keras3_weights, write_keras_weights
from scratchnst import architectures, networks, weights
from scratchnst.cli import main
from scratchnst.errors import UserError


@pytest.fixture(scope="module")
def params():
    rng = np.random.default_rng(31)
    return {model: random_params(model, rng) for model in ("vgg19", "squeezenet")}


def assert_same_network(found, expected):
    assert list(found) == list(expected)
    for layer in expected:
        for a, b in zip(found[layer], expected[layer]):
            np.testing.assert_array_equal(a, b)


def write_archive(path, params, model, compression=zipfile.ZIP_STORED, **options):
    """A .keras archive as Keras 3 writes it: metadata.json, config.json and model.weights.h5."""
    buffer = io.BytesIO()
    write_keras3_weights(buffer, model, params, **options)
    with zipfile.ZipFile(path, "w", compression=compression) as archive:
        archive.writestr("metadata.json", json.dumps({"keras_version": "3.15.1", "date_saved": "2026-12-05"}))
        archive.writestr("config.json", json.dumps({"class_name": "Functional"}))
        archive.writestr("model.weights.h5", buffer.getvalue())
    return path


@pytest.mark.parametrize("model", ["vgg19", "squeezenet"])
@pytest.mark.parametrize("options", [{}, {"names": False}, {"nested": True}])
def test_weights_h5_reads_as_the_keras2_file(tmp_path, params, model, options):
    """The same weights saved by Keras 2 and by Keras 3 give the same network, with or without layer names."""
    keras2 = networks.load(write_keras_weights(tmp_path / "k2.h5", model, params[model]))
    keras3 = networks.load(write_keras3_weights(tmp_path / "m.weights.h5", model, params[model], **options))
    assert keras3.name == model
    assert_same_network(keras3.params, keras2.params)
    found = weights.read_weights(tmp_path / "m.weights.h5")
    assert found.layout == "keras3"
    first = "block1_conv1" if model == "vgg19" else "conv1"
    expected = ("layers/functional/layers/conv2d" if options.get("nested") else "layers/conv2d")
    assert found.origins[first] == (expected if options.get("names") is False else f'{expected} "{first}"')
    assert found.weight_names[first] == ("vars/0", "vars/1")


def test_keras_numbering_orders_the_layers(tmp_path, params):
    """conv2d_10 comes after conv2d_9, not after conv2d_1 (a sort by name would swap VGG-19's layers)."""
    found = weights.read_weights(write_keras3_weights(tmp_path / "v.weights.h5", "vgg19", params["vgg19"]))
    assert found.origins["block4_conv3"].startswith("layers/conv2d_10 ")
    assert found.origins["block5_conv4"].startswith("layers/conv2d_15 ")


def test_fire_branches_in_either_order(tmp_path, params):
    """A SqueezeNet whose expand3x3 was made before expand1x1 is matched by the kernels' shapes."""
    path = write_keras3_weights(tmp_path / "s.weights.h5", "squeezenet", params["squeezenet"], expand3x3_first=True)
    network = networks.load(path)
    assert_same_network(network.params, params["squeezenet"])


def test_a_classifier_on_top_is_left_out(tmp_path, params):
    """SqueezeNet with its conv10 (1x1, 512 -> 1000) after fire9: the 25 layers are read, conv10 listed apart."""
    with_top = dict(params["squeezenet"], conv10=(np.ones((1, 1, 512, 1000), np.float32), np.zeros(1000, np.float32)))
    path = write_keras3_weights(tmp_path / "t.weights.h5", "squeezenet", with_top, top=True)
    network = networks.load(path)
    assert_same_network(network.params, params["squeezenet"])
    found = weights.read_weights(path)
    assert list(found.layers)[-1] == "layers/conv2d_25" and found.origins["layers/conv2d_25"] == '"conv10"'


@pytest.mark.parametrize("compression", [zipfile.ZIP_STORED, zipfile.ZIP_DEFLATED])
def test_keras_archive(tmp_path, params, compression):
    path = write_archive(tmp_path / "model.keras", params["squeezenet"], "squeezenet", compression=compression)
    found = weights.read_weights(path)
    assert found.layout == "keras3" and found.attrs["keras_version"] == "3.15.1"
    assert_same_network(networks.load(path).params, params["squeezenet"])


def test_other_zip_archives_keep_their_message(tmp_path):
    """A PyTorch .pth is a ZIP archive too: it is still told to be converted."""
    path = tmp_path / "vgg19.pth"
    with zipfile.ZipFile(path, "w") as archive:
        archive.writestr("archive/data.pkl", b"\x80\x02}q\x00.")
    with pytest.raises(UserError, match=r"not an HDF5 weights file but a ZIP archive \(a PyTorch \.pth file\?"):
        weights.read_weights(path)


def test_damaged_archive(tmp_path, params):
    path = write_archive(tmp_path / "model.keras", params["squeezenet"], "squeezenet")
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])
    with pytest.raises(UserError, match=r"model\.keras: a damaged ZIP archive .*; save the model again"):
        weights.read_weights(path)
    with zipfile.ZipFile(path, "w") as archive:
        archive.writestr("model.weights.h5", b"not HDF5 at all" * 100)
    with pytest.raises(UserError, match=r"the model\.weights\.h5 in this \.keras archive is damaged"):
        weights.read_weights(path)


def test_archive_weights_declared_too_large_are_refused(tmp_path, monkeypatch, params):
    from scratchnst import keras3_layout

    path = write_archive(tmp_path / "model.keras", params["squeezenet"], "squeezenet")
    monkeypatch.setattr(keras3_layout, "MAX_ARCHIVE_WEIGHTS", 1000)
    with pytest.raises(UserError, match=r"model\.weights\.h5 declares [\d,]+ bytes, more than"):
        weights.read_weights(path)


def test_wrong_network_is_named(tmp_path, params):
    path = write_keras3_weights(tmp_path / "s.weights.h5", "squeezenet", params["squeezenet"])
    with pytest.raises(UserError, match=r"holds squeezenet weights, not vgg19; choose squeezenet"):
        networks.load("vgg19", weights=str(path))


def test_a_wrong_shape_names_the_layer_and_the_file_path(tmp_path, params):
    changed = dict(params["vgg19"])
    changed["block3_conv2"] = (np.zeros((3, 3, 256, 128), np.float32), np.zeros(128, np.float32))
    named = write_keras3_weights(tmp_path / "named.weights.h5", "vgg19", changed)
    with pytest.raises(UserError, match=r"layer block3_conv2 of vgg19: kernel shape \(3, 3, 256, 128\), expected"):
        networks.load(named)
    unnamed = write_keras3_weights(tmp_path / "v.weights.h5", "vgg19", changed, names=False)
    with pytest.raises(UserError) as error:
        networks.load(unnamed)
    message = str(error.value)
    assert "layers/conv2d_5 has shapes (3, 3, 256, 128), (128,) where layer block3_conv2 of vgg19 " \
           "has (3, 3, 256, 256), (256,)" in message
    assert "\n" not in message


def test_a_convolution_without_bias_is_refused(tmp_path, params):
    changed = dict(params["squeezenet"])
    changed["fire4/expand1x1"] = changed["fire4/expand1x1"][:1]   # use_bias=False
    path = write_keras3_weights(tmp_path / "s.weights.h5", "squeezenet", changed)
    with pytest.raises(UserError, match=r"layer fire4/expand1x1 of squeezenet has 1 weight arrays, expected 2"):
        networks.load("squeezenet", weights=str(path))
    path = write_keras3_weights(tmp_path / "unnamed.weights.h5", "squeezenet", changed, names=False)
    with pytest.raises(UserError, match=r"layers/conv2d_8 has shapes \(1, 1, 32, 128\) where layer fire4/expand1x1"):
        networks.load("squeezenet", weights=str(path))


def test_an_extra_layer_in_the_middle_is_refused(tmp_path, params):
    """Leftover convolutions are allowed only after the network (a top), not inside it."""
    with_extra = dict(params["squeezenet"])
    extra = (np.zeros((1, 1, 16, 16), np.float32), np.zeros(16, np.float32))
    path = tmp_path / "s.weights.h5"
    write_keras3_weights(path, "squeezenet", with_extra, names=False)   # (named layers are placed by their names)
    with h5py.File(path, "a") as f:   # conv2d_1 (fire2's squeeze) gets a twin right after it: renumber
        layers = f["layers"]
        for k in range(25, 2, -1):
            if f"conv2d_{k - 1}" in layers:
                layers.move(f"conv2d_{k - 1}", f"conv2d_{k}")
        variables = layers.create_group("conv2d_2").create_group("vars")
        variables.create_dataset("0", data=extra[0])
        variables.create_dataset("1", data=extra[1])
    with pytest.raises(UserError, match=r"layers/conv2d_2 \(shapes \(1, 1, 16, 16\), \(16,\)\) is not a layer of "
                                        r"squeezenet"):
        networks.load(path)


def test_no_convolutions(tmp_path):
    path = tmp_path / "dense.weights.h5"
    with h5py.File(path, "w") as f:
        variables = f.create_group("layers/dense/vars")
        variables.create_dataset("0", data=np.zeros((4, 2), np.float32))
    with pytest.raises(UserError, match=r"a Keras 3 weights file with no convolution layers; give vgg19 or squeezenet"):
        weights.read_weights(path)


def test_links_are_refused(tmp_path, params):
    path = write_keras3_weights(tmp_path / "s.weights.h5", "squeezenet", params["squeezenet"])
    with h5py.File(path, "a") as f:
        del f["layers/conv2d_3/vars/0"]
        f["layers/conv2d_3/vars/0"] = h5py.SoftLink("/layers/conv2d_2/vars/0")
    with pytest.raises(UserError, match=r"'layers/conv2d_3/vars/0' is reached through a soft link"):
        weights.read_weights(path)


def test_non_finite_weights_are_refused(tmp_path, params):
    changed = dict(params["squeezenet"])
    kernel = changed["conv1"][0].copy()
    kernel[0, 0, 0, 0] = np.nan
    changed["conv1"] = (kernel, changed["conv1"][1])
    path = write_keras3_weights(tmp_path / "s.weights.h5", "squeezenet", changed)
    with pytest.raises(UserError, match=r"non-finite weights \(NaN or inf, in layers/conv2d/vars/0\)"):
        weights.read_weights(path)


def test_match_in_order_reports_a_short_file():
    convolutions = [("a", [(3, 3, 3, 64), (64,)])]
    matched, problem = architectures.match_in_order("squeezenet", convolutions)
    assert matched == {"conv1": 0} and problem == "the file has 1 convolutions, squeezenet needs 25"


def test_weights_info_shows_where_each_layer_is(tmp_path, params, capsys):
    path = write_archive(tmp_path / "model.keras", params["vgg19"], "vgg19")
    assert main(["weights", "info", os.fspath(path)]) == 0
    out = capsys.readouterr().out
    assert "layout:        Keras 3 weights" in out and "keras_version 3.15.1" in out
    assert 'block4_conv3  layers/conv2d_10 "block4_conv3": vars/0 (3, 3, 512, 512) float32' in out
    assert "architecture:  vgg19 (all 16 convolution layers, expected shapes)" in out


def test_real_squeezenet_through_keras3(tmp_path, squeezenet_weights_path):
    """The real weights, saved in Keras 3's layout, give the same network as the published file."""
    published = networks.load("squeezenet", weights=str(squeezenet_weights_path))
    path = write_keras3_weights(tmp_path / "real.weights.h5", "squeezenet", published.params)
    assert_same_network(networks.load(path).params, published.params)


def test_names_place_layers_the_order_cannot(tmp_path, params):
    """A convolution on top of a nested model is listed first (layers/conv2d sorts before layers/functional):
    where every layer has its own name, the names place them."""
    path = write_keras3_weights(tmp_path / "v.weights.h5", "vgg19", params["vgg19"], nested=True)
    with h5py.File(path, "a") as f:
        variables = f.create_group("layers/conv2d/vars")
        variables.attrs["name"] = "head"
        variables.create_dataset("0", data=np.zeros((1, 1, 512, 10), np.float32))
        variables.create_dataset("1", data=np.zeros(10, np.float32))
    assert_same_network(networks.load(path).params, params["vgg19"])
    found = weights.read_weights(path)
    assert found.origins["layers/conv2d"] == '"head"' and found.layers["layers/conv2d"][0].shape == (1, 1, 512, 10)


def test_names_beat_a_scrambled_order(tmp_path, params):
    """Groups renumbered out of the model's order (two SqueezeNet squeezes swapped): the names still place them,
    "/" saved as "_" or "__"; without names the same file is refused, naming the convolution out of place."""
    for names in (True, False):
        path = write_keras3_weights(tmp_path / f"s{names}.weights.h5", "squeezenet", params["squeezenet"], names=names)
        with h5py.File(path, "a") as f:
            layers = f["layers"]
            layers.move("conv2d_1", "swap")
            layers.move("conv2d_4", "conv2d_1")
            layers.move("swap", "conv2d_4")
            if names:
                layers["conv2d_7/vars"].attrs["name"] = "fire4__squeeze1x1"
        if names:
            assert_same_network(networks.load(path).params, params["squeezenet"])
        else:
            with pytest.raises(UserError, match=r"matched in order: layers/conv2d_1 has shapes \(1, 1, 128, 16\)"):
                networks.load(path)


def test_a_hard_link_loop_is_refused(tmp_path, params):
    """Groups hard-linked into a loop would be walked MAX_DEPTH deep, K ** 17 visits: refused at the first revisit."""
    path = write_keras3_weights(tmp_path / "s.weights.h5", "squeezenet", params["squeezenet"])
    with h5py.File(path, "a") as f:
        for k in range(3):
            f[f"layers/loop_{k}/layers"] = f["layers"]   # a hard link back to the top
    with pytest.raises(UserError, match=r"is a group met before \(hard-linked into a loop\?\)"):
        weights.read_weights(path)


def test_layer_names_are_shown_escaped_and_cut(tmp_path, params, capsys):
    path = write_keras3_weights(tmp_path / "v.weights.h5", "vgg19", params["vgg19"])
    with h5py.File(path, "a") as f:
        f["layers/conv2d/vars"].attrs["name"] = "\x1b]0;owned\x07\x1b[2J" + "y" * 10_000
    assert main(["weights", "info", os.fspath(path)]) == 0
    line = next(line for line in capsys.readouterr().out.splitlines() if "block1_conv1" in line)
    assert "\x1b" not in line and "\\x1b]0;owned\\x07" in line and len(line) < 250 and '..."' in line


@pytest.mark.parametrize("keys", [("0", "7"), ("0", "00"), ("0", "\u0661")])
def test_variables_must_be_numbered_as_keras_numbers_them(tmp_path, params, keys):
    path = write_keras3_weights(tmp_path / "s.weights.h5", "squeezenet", params["squeezenet"])
    with h5py.File(path, "a") as f:
        variables = f["layers/conv2d/vars"]
        variables.move("1", keys[1])
    with pytest.raises(UserError, match=r"layers/conv2d/vars holds .*where Keras numbers a layer's variables 0, 1"):
        weights.read_weights(path)


def test_archive_members_compressed_otherwise_or_beyond_weights_are_refused(tmp_path, params):
    """LZMA inflates in one call whatever is asked (a 200 KB member took 3 GB); deflate beyond 20:1 is no weights."""
    buffer = io.BytesIO()
    write_keras3_weights(buffer, "squeezenet", params["squeezenet"])
    lzma = tmp_path / "lzma.keras"
    with zipfile.ZipFile(lzma, "w", compression=zipfile.ZIP_LZMA) as archive:
        archive.writestr("model.weights.h5", buffer.getvalue())
    with pytest.raises(UserError, match=r"compressed by method 14, not stored or deflated"):
        weights.read_weights(lzma)
    bomb = tmp_path / "bomb.keras"
    with zipfile.ZipFile(bomb, "w", compression=zipfile.ZIP_DEFLATED) as archive:
        archive.writestr("model.weights.h5", bytes(30_000_000))
    with pytest.raises(UserError, match=r"declares [\d,]+ bytes compressed into [\d,]+, more than weights ever"):
        weights.read_weights(bomb)

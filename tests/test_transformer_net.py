"""The transformer network: shapes, every parameter gradient against PyTorch and finite differences, files.

The gradient checks run a small network (widths 4/6/8, 2 residual blocks) in float64: the same
code as the default one, small enough for finite differences.
"""

import h5py
import numpy as np
import pytest

from scratchnst import image, torch_ref
from scratchnst import transformer_net as tn
from scratchnst import weights as weights_io
from scratchnst.errors import UserError
from scratchnst.gradcheck import rel_error

SMALL = dict(widths=(4, 6, 8), residual_blocks=2)
TORCH_TOL = 1e-10   # elementwise rel_error, output and input gradient (measured ~1e-12)
PARAM_TOL = 1e-12   # scale_error of each parameter gradient (see test_every_gradient_matches_torch_float64)


def scale_error(x, y):
    """max |x - y| / max |y|: the error on the scale of the whole array."""
    return float(np.max(np.abs(x - y)) / max(np.max(np.abs(y)), 1e-300))


def small_net(seed=0, dtype=np.float64, shape=(2, 12, 16, 3), outer_kernel=tn.DEFAULT_OUTER_KERNEL,
              noise_channels=tn.DEFAULT_NOISE_CHANNELS):
    rng = np.random.default_rng(seed)
    params = tn.init_params(rng, **SMALL, outer_kernel=outer_kernel, noise_channels=noise_channels, dtype=dtype)
    # gamma and beta away from their initial 1 and 0, so that a gradient bug cannot hide behind them
    for name in params:
        if not name.endswith("/kernel"):
            params[name] = (params[name] + 0.3 * rng.standard_normal(params[name].shape)).astype(dtype)
    x = (rng.standard_normal(shape) * 50).astype(dtype)
    return params, x, rng


def test_parameters_are_ordered_and_shaped_as_the_table_says():
    params = tn.init_params(np.random.default_rng(0))
    assert list(params) == list(tn.parameter_shapes())
    assert params["conv1/kernel"].shape == (5, 5, 3 + 1, 16)   # the photo and one noise plane
    assert params["conv3/kernel"].shape == (3, 3, 32, 64)
    assert params["conv_out/kernel"].shape == (5, 5, 16, 3) and params["conv_out/bias"].shape == (3,)
    assert "res1/conv2/beta" not in params and "res1/conv1/beta" in params
    assert all(p.dtype == np.float32 for p in params.values())
    assert tn.architecture_of(params) == (tn.DEFAULT_WIDTHS, tn.DEFAULT_RESIDUAL_BLOCKS, tn.DEFAULT_OUTER_KERNEL,
                                          tn.DEFAULT_NOISE_CHANNELS)
    # the paper's 9x9 outer kernels and no noise: 423,779; 5x5 kernels; a noise plane
    assert tn.count_parameters(params) == 423_779 - 2 * (9 * 9 - 5 * 5) * 3 * 16 + 5 * 5 * 16 == 418_803
    paper = tn.init_params(np.random.default_rng(0), outer_kernel=9, noise_channels=0)
    assert paper["conv1/kernel"].shape == (9, 9, 3, 16) and paper["conv_out/kernel"].shape == (9, 9, 16, 3)
    assert tn.architecture_of(paper) == (tn.DEFAULT_WIDTHS, tn.DEFAULT_RESIDUAL_BLOCKS, 9, 0)
    assert tn.count_parameters(paper) == 423_779
    for wrong in (-1, tn.MAX_NOISE_CHANNELS + 1):
        with pytest.raises(ValueError, match="noise_channels"):
            tn.init_params(np.random.default_rng(0), noise_channels=wrong)
    for even in (0, 4):
        with pytest.raises(ValueError, match="odd"):
            tn.init_params(np.random.default_rng(0), outer_kernel=even)
    # He initialisation: kernel std sqrt(2 / fan_in)
    assert params["res3/conv1/kernel"].std() == pytest.approx(np.sqrt(2 / (9 * 64)), rel=0.05)


@pytest.mark.parametrize("shape", [(1, 8, 8, 3), (2, 12, 20, 3), (1, 16, 8, 3)])
def test_output_has_the_input_shape(shape):
    params, x, _ = small_net(shape=shape)
    out, _ = tn.forward(params, x)
    assert out.shape == x.shape and out.dtype == np.float64


@pytest.mark.parametrize("hw", [(10, 12), (12, 14), (13, 13), (4, 8), (8, 4)])
def test_sizes_that_do_not_come_back_are_a_clear_error(hw):
    params, _, _ = small_net()
    with pytest.raises(ValueError, match="multiples of 4"):
        tn.forward(params, np.zeros((1, *hw, 3)))


def test_the_smallest_input_grows_with_the_outer_kernel():
    assert [tn.min_input_size(k) for k in (1, 5, 9, 15, 17, 21)] == [8, 8, 8, 8, 12, 12]
    params, _, _ = small_net(outer_kernel=17)   # reflects 8 px: an 8 px side has only 7 to mirror
    with pytest.raises(ValueError, match="at least 12"):
        tn.forward(params, np.zeros((1, 8, 8, 3)))
    assert tn.forward(params, np.zeros((1, 12, 8 + 4, 3)))[0].shape == (1, 12, 12, 3)


def test_input_must_be_rgb_batches():
    params, _, _ = small_net()
    with pytest.raises(ValueError, match=r"\(N, H, W, 3\)"):
        tn.forward(params, np.zeros((8, 8, 3)))


@pytest.mark.parametrize("preprocessing", ["caffe", "torchvision"])
def test_output_lies_in_the_pixel_range_of_the_preprocessed_space(preprocessing):
    scale, offset = tn.output_range(preprocessing, np.float64)
    black = image.preprocess(np.zeros((1, 1, 3)), preprocessing)[0, 0, 0]
    white = image.preprocess(np.full((1, 1, 3), 255.0), preprocessing)[0, 0, 0]
    np.testing.assert_allclose(offset - scale, black, atol=1e-12)
    np.testing.assert_allclose(offset + scale, white, atol=1e-12)
    params, x, _ = small_net()
    params["conv_out/kernel"] *= 100  # saturate the tanh: the output still stays inside
    out, _ = tn.forward(params, x, preprocessing)
    pixels = image.deprocess(out[:1], preprocessing)
    assert pixels.min() >= -1e-9 and pixels.max() <= 255 + 1e-9
    assert pixels.min() < 1 and pixels.max() > 254


def test_float32_in_float32_out_and_gradients():
    params, x, rng = small_net(dtype=np.float32)
    out, cache = tn.forward(params, x)
    assert out.dtype == np.float32
    dx, grads = tn.backward(rng.standard_normal(out.shape).astype(np.float32), cache)
    assert dx.dtype == np.float32 and all(g.dtype == np.float32 for g in grads.values())


@pytest.mark.parametrize("outer_kernel,noise_channels", [(tn.DEFAULT_OUTER_KERNEL, 1), (9, 0), (1, 3)])
def test_every_gradient_matches_torch_float64(torch, outer_kernel, noise_channels):
    params, x, rng = small_net(seed=1, outer_kernel=outer_kernel, noise_channels=noise_channels)
    out, cache = tn.forward(params, x)
    dout = rng.standard_normal(out.shape)
    dx, grads = tn.backward(dout, cache)
    assert list(grads) == list(params)
    assert all(grads[k].shape == params[k].shape for k in params)
    assert dx.shape == x.shape   # of the photo forward was given, not of the noise it drew
    tensors = {k: torch_ref.to_torch(v, requires_grad=True) for k, v in params.items()}
    x_t = torch_ref.to_torch(x, requires_grad=True)
    planes = tn.noise_planes(x.shape[:3] + (noise_channels,), "caffe", np.float64) if noise_channels else None
    out_t = torch_ref.transformer_net(tensors, x_t, *tn.output_range("caffe", np.float64), noise=planes)
    (out_t * torch_ref.to_torch(dout)).sum().backward()  # the "fake loss": its gradient is dout
    assert rel_error(out, torch_ref.to_numpy(out_t)) < TORCH_TOL
    assert rel_error(dx, torch_ref.to_numpy(x_t.grad)) < TORCH_TOL
    # Parameter gradients on the scale of each whole array: an elementwise relative error means
    # nothing for elements that are exactly zero in theory (the beta of a channel whose ReLU is on,
    # or off, at every pixel: the next normalisation removes the shift) or are small differences of
    # large sums; PyTorch and we then agree to ~1e-13 of the array's largest element, not to 1e-10
    # of the element itself. Measured: 5e-15 to 2e-14 over seeds.
    errors = {k: scale_error(grads[k], torch_ref.to_numpy(tensors[k].grad)) for k in params}
    assert max(errors.values()) < PARAM_TOL, {k: e for k, e in errors.items() if e >= PARAM_TOL}


def test_torch_twin_matches_in_torchvision_space_too(torch):
    params, x, _ = small_net(seed=2, shape=(1, 8, 12, 3))
    out, _ = tn.forward(params, x / 50, "torchvision")
    planes = tn.noise_planes((1, 8, 12, 1), "torchvision", np.float64)   # NOISE_STD grey levels in that space
    assert np.std(planes) == pytest.approx(tn.NOISE_STD / 255 / np.mean(image.TORCHVISION_STD), rel=0.3)
    out_t = torch_ref.transformer_net({k: torch_ref.to_torch(v) for k, v in params.items()},
                                      torch_ref.to_torch(x / 50), *tn.output_range("torchvision", np.float64),
                                      noise=planes)
    assert rel_error(out, torch_ref.to_numpy(out_t)) < TORCH_TOL


# (parameter, index): one element of each kind of parameter, at both ends of the network
SPOT_CHECKS = [("conv1/kernel", (4, 4, 0, 1)), ("conv1/gamma", (2,)), ("conv2/beta", (5,)),
               ("res1/conv1/kernel", (1, 2, 3, 4)), ("res2/conv2/gamma", (7,)), ("up1/beta", (0,)),
               ("up2/kernel", (0, 1, 5, 2)), ("conv_out/kernel", (4, 0, 3, 2)), ("conv_out/bias", (1,))]


def test_parameter_gradients_match_finite_differences():
    params, x, rng = small_net(seed=3, shape=(2, 8, 12, 3))
    out, cache = tn.forward(params, x)
    dout = rng.standard_normal(out.shape)
    _, grads = tn.backward(dout, cache)

    def loss(p):
        return float(np.sum(tn.forward(p, x)[0] * dout))

    h = 1e-5
    for name, index in SPOT_CHECKS:
        plus, minus = dict(params), dict(params)
        plus[name], minus[name] = params[name].copy(), params[name].copy()
        plus[name][index] += h
        minus[name][index] -= h
        numeric = (loss(plus) - loss(minus)) / (2 * h)
        assert rel_error(grads[name][index], numeric) < 1e-7, (name, grads[name][index], numeric)


def test_backward_does_not_write_into_dout_or_params():
    params, x, rng = small_net(seed=4, shape=(1, 8, 8, 3))
    before = {k: v.copy() for k, v in params.items()}
    out, cache = tn.forward(params, x)
    dout = rng.standard_normal(out.shape)
    dout_before = dout.copy()
    first = tn.backward(dout, cache)[1]
    second = tn.backward(dout, cache)[1]
    np.testing.assert_array_equal(dout, dout_before)
    for k in params:
        np.testing.assert_array_equal(params[k], before[k])
        np.testing.assert_array_equal(first[k], second[k])


# ------------------------------------------------------------------------------------- files
def test_save_load_round_trip_bit_for_bit(tmp_path):
    params, _, _ = small_net(dtype=np.float32)  # as training writes it (float64 and float16: see below)
    meta = {"style_image": "starry_night.jpg", "style_weight": 1e5, "steps": 40000, "tv": True,
            "preprocessing": "torchvision"}
    path = tn.save(tmp_path / "starry.h5", params, meta)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["starry.h5"]  # no temporary file left
    loaded, loaded_meta = tn.load(path)
    assert list(loaded) == list(params)
    for k in params:
        assert loaded[k].dtype == params[k].dtype
        assert loaded[k].tobytes() == params[k].tobytes()
    assert loaded_meta == meta
    with h5py.File(path, "r") as f:  # the documented layout
        assert f.attrs["scratchnst_transformer_format"] == tn.FORMAT_VERSION
        assert tuple(f.attrs["widths"]) == SMALL["widths"] and f.attrs["residual_blocks"] == 2
        assert f.attrs["outer_kernel"] == tn.DEFAULT_OUTER_KERNEL
        assert set(f["res1"]) == {"conv1", "conv2"} and set(f["conv_out"]) == {"kernel", "bias"}
        assert set(f["conv1"]) == {"kernel", "gamma", "beta"}
        assert f["meta"].attrs["style_image"] == "starry_night.jpg"


def test_save_defaults_to_caffe_and_refuses_bad_input(tmp_path):
    params, _, _ = small_net()
    _, meta = tn.load(tn.save(tmp_path / "a.h5", params))
    assert meta == {"preprocessing": "caffe"}
    with pytest.raises(ValueError, match="meta"):
        tn.save(tmp_path / "b.h5", params, {"weights": [1, 2]})
    with pytest.raises(ValueError, match="preprocessing"):
        tn.save(tmp_path / "b.h5", params, {"preprocessing": "bgr"})
    broken = dict(params)
    del broken["up1/gamma"]
    with pytest.raises(ValueError, match="up1/gamma"):
        tn.save(tmp_path / "b.h5", broken)
    assert not (tmp_path / "b.h5").exists()


def _load_error(path):
    with pytest.raises(UserError) as info:
        tn.load(path)
    message = str(info.value)
    assert "\n" not in message and str(path) in message
    return message


def test_load_errors_are_one_line_each(tmp_path):
    assert "no such transformer network file" in _load_error(tmp_path / "missing.h5")
    assert "is a folder" in _load_error(tmp_path)
    text = tmp_path / "notes.h5"
    text.write_text("not a network\n")
    assert "not an HDF5 file" in _load_error(text)
    bare = tmp_path / "bare.h5"
    with h5py.File(bare, "w") as f:
        f["x"] = np.zeros(3)
    assert "an HDF5 file but not a transformer network;" in _load_error(bare)
    # a loss network's weights, in the layout scratchnst writes them
    loss_net = weights_io.write_weights(tmp_path / "squeezenet.h5", {"conv1": (np.zeros((3, 3, 3, 64)), np.zeros(64))},
                                        "squeezenet", "caffe")
    assert "not a transformer network (it holds squeezenet weights, a loss network)" in _load_error(loss_net)


def test_load_error_for_the_real_squeezenet_file():
    from conftest import find_squeezenet_weights

    path = find_squeezenet_weights()
    if path is None:
        pytest.skip("no SqueezeNet weights file here (the planted file of the test above stands in for it)")
    assert "not a transformer network" in _load_error(path)


def test_load_errors_for_newer_and_damaged_files(tmp_path):
    params, _, _ = small_net()
    path = tn.save(tmp_path / "net.h5", params)
    with h5py.File(path, "a") as f:
        f.attrs["scratchnst_transformer_format"] = tn.FORMAT_VERSION + 1
    assert "upgrade scratchnst" in _load_error(path)
    path = tn.save(tmp_path / "net.h5", params)
    with h5py.File(path, "a") as f:
        del f["res2/conv1/gamma"]
    assert "'res2/conv1/gamma' is missing" in _load_error(path)
    path = tn.save(tmp_path / "net.h5", params)
    with h5py.File(path, "a") as f:
        del f["up2/kernel"]
        f["up2/kernel"] = np.zeros((3, 3, 6, 5))
    assert "'up2/kernel' has shape (3, 3, 6, 5)" in _load_error(path)
    truncated = tmp_path / "truncated.h5"
    truncated.write_bytes(tn.save(tmp_path / "net.h5", params).read_bytes()[:3000])
    assert "damaged or truncated" in _load_error(truncated)
    path = tn.save(tmp_path / "net.h5", params)   # ours, its format lost: damaged, not "a loss network"
    with h5py.File(path, "a") as f:
        del f.attrs["scratchnst_transformer_format"]
    message = _load_error(path)
    assert "header attribute scratchnst_transformer_format is missing (the architecture says a transformer" \
        in message and "the file is damaged" in message and "loss network" not in message


def _valid_network(tmp_path):
    """A small float32 network as `save` writes it, first checked to load back bit for bit: (path, params)."""
    params, _, _ = small_net(dtype=np.float32)
    path = tn.save(tmp_path / "net.h5", params)
    loaded, _ = tn.load(path)
    assert list(loaded) == list(params)
    assert all(loaded[k].dtype == np.float32 and loaded[k].tobytes() == params[k].tobytes() for k in params)
    return path, params


def _replace(f, name, value):
    del f[name]
    f[name] = value


# (attribute, value, what the line says): header values no version of `save` wrote
BAD_HEADERS = [
    ("preprocessing", "rgb01", "pixel space 'rgb01', which this version of scratchnst does not know"),
    ("preprocessing", np.array([1, 2]), "header attribute preprocessing is array([1, 2])"),
    ("scratchnst_transformer_format", 2.5, "scratchnst_transformer_format is 2.5 (no version of scratchnst wrote"),
    ("scratchnst_transformer_format", 0, "scratchnst_transformer_format is 0 (no version of scratchnst wrote"),
    ("scratchnst_transformer_format", "2", "scratchnst_transformer_format is '2' (no version"),
    ("residual_blocks", -1, "residual_blocks is -1 (scratchnst writes an integer >= 0)"),
    ("residual_blocks", 2.0, "residual_blocks is 2.0 (scratchnst writes an integer >= 0)"),
    ("residual_blocks", 1, "declares 1 residual blocks and the file holds 2"),
    ("residual_blocks", 3, "declares 3 residual blocks and the file holds 2"),
    ("widths", np.array([4, 6]), "widths is array([4, 6])"),
    ("widths", np.array([0, 6, 8]), "widths is array([0, 6, 8])"),
    ("widths", np.array([4, 6, 10]), "'conv3/kernel' has shape (3, 3, 6, 8)"),
    ("outer_kernel", 4, "outer_kernel is 4 (scratchnst writes an odd integer >= 1)"),
]


@pytest.mark.parametrize("key, value, says", BAD_HEADERS, ids=[f"{k}={v!r}" for k, v, _ in BAD_HEADERS])
def test_load_refuses_header_values_no_version_wrote(tmp_path, key, value, says):
    path, _ = _valid_network(tmp_path)
    with h5py.File(path, "a") as f:
        f.attrs[key] = value
    message = _load_error(path)
    assert says in message
    # only a pixel space by name can be a newer version's; an older or malformed value is not
    assert ("upgrade scratchnst" in message) == (isinstance(value, str) and value == "rgb01")


def test_load_refuses_datasets_that_are_not_floating_point_weights(tmp_path):
    path, params = _valid_network(tmp_path)
    with h5py.File(path, "a") as f:
        _replace(f, "up1/kernel", params["up1/kernel"].astype(np.int64))
    assert "dataset 'up1/kernel' holds int64 values, not floating-point weights" in _load_error(path)
    path, params = _valid_network(tmp_path)
    with h5py.File(path, "a") as f:
        _replace(f, "conv2/gamma", np.full(params["conv2/gamma"].shape, b"1.0"))
    assert "dataset 'conv2/gamma' holds |S3 values" in _load_error(path)
    path, _ = _valid_network(tmp_path)
    with h5py.File(path, "a") as f:
        _replace(f, "conv_out/bias", h5py.SoftLink("/conv_out/bias"))  # a link to itself
    assert "damaged or truncated (Special link traversal failed" in _load_error(path)


@pytest.mark.filterwarnings("error")  # refused before any arithmetic: no RuntimeWarning either
@pytest.mark.parametrize("bad", [np.nan, np.inf, -np.inf, 1e300])  # 1e300: float64, inf in float32
def test_load_refuses_non_finite_weights(tmp_path, bad):
    path, params = _valid_network(tmp_path)
    with h5py.File(path, "a") as f:
        kernel = params["res2/conv1/kernel"].astype(np.float64)
        kernel[1, 2, 3, 4] = bad
        _replace(f, "res2/conv1/kernel", kernel)
    message = _load_error(path)
    assert "holds non-finite weights (NaN or inf, in 'res2/conv1/kernel')" in message
    assert message.endswith("was saved from a run whose loss diverged; train it again")


@pytest.mark.parametrize("dtype", [np.float16, np.float64])
def test_load_casts_other_float_weights_to_the_float32_the_network_runs_in(tmp_path, dtype):
    params, x, _ = small_net(dtype=dtype)
    loaded, _ = tn.load(tn.save(tmp_path / "net.h5", params))
    assert list(loaded) == list(params)
    for k in params:
        assert loaded[k].dtype == np.float32
        assert loaded[k].tobytes() == params[k].astype(np.float32).tobytes()


def _as_format(path, version):
    """Rewrite a file `save` wrote as format 1 or 2 wrote it: no noise attributes (and in 1 no outer_kernel)."""
    with h5py.File(path, "a") as f:
        f.attrs["scratchnst_transformer_format"] = version
        del f.attrs["noise_channels"], f.attrs["noise_std"]
        if version == 1:
            del f.attrs["outer_kernel"]
    return path


def _as_format_1(path):
    return _as_format(path, 1)


def test_format_1_files_load_as_the_paper_s_9x9_network(tmp_path):
    params, x, _ = small_net(outer_kernel=9, dtype=np.float32, noise_channels=0)  # load gives float32
    loaded, _ = tn.load(_as_format_1(tn.save(tmp_path / "old.h5", params)))
    assert tn.architecture_of(loaded) == (SMALL["widths"], SMALL["residual_blocks"], 9, 0)
    np.testing.assert_array_equal(tn.forward(loaded, x)[0], tn.forward(params, x)[0])
    # format 1 had only 9x9 networks: another kernel there is a damaged file, and the line says why
    damaged = _as_format_1(tn.save(tmp_path / "five.h5", small_net(outer_kernel=5, noise_channels=0)[0]))
    assert "'conv1/kernel' has shape (5, 5, 3, 4)" in _load_error(damaged) and "9x9" in _load_error(damaged)


def test_format_2_files_load_as_networks_without_noise(tmp_path):
    params, x, _ = small_net(dtype=np.float32, noise_channels=0)
    loaded, _ = tn.load(_as_format(tn.save(tmp_path / "two.h5", params), 2))
    assert tn.architecture_of(loaded) == (SMALL["widths"], SMALL["residual_blocks"], tn.DEFAULT_OUTER_KERNEL, 0)
    np.testing.assert_array_equal(tn.forward(loaded, x)[0], tn.forward(params, x)[0])
    # a format-2 file whose conv1 reads more than the photo is damaged: that format had no noise planes
    damaged = _as_format(tn.save(tmp_path / "noisy.h5", small_net(noise_channels=1)[0]), 2)
    assert "'conv1/kernel' has shape (5, 5, 4, 4)" in _load_error(damaged) and "0 noise planes" in _load_error(damaged)


@pytest.mark.parametrize("z", [0, 1, 3])
def test_noise_planes_are_stored_read_back_and_drawn_the_same_each_time(z, tmp_path):
    params, x, _ = small_net(dtype=np.float32, noise_channels=z)
    loaded, meta = tn.load(tn.save(tmp_path / "net.h5", params))
    assert tn.architecture_of(loaded)[3] == z
    first = tn.stylize(loaded, x, meta["preprocessing"])
    np.testing.assert_array_equal(first, tn.stylize(loaded, x, meta["preprocessing"]))   # the same picture twice
    np.testing.assert_array_equal(first, tn.forward(params, x)[0])
    # a photo is painted the same alone and in a batch, wherever it stands in it (the same noise; the
    # products of a batch are blocked differently from one photo's, hence float32 rounding, not bits)
    for i in range(x.shape[0]):
        np.testing.assert_allclose(first[i:i + 1], tn.stylize(loaded, x[i:i + 1], meta["preprocessing"]),
                                   rtol=1e-5, atol=1e-3)
        np.testing.assert_allclose(first[i], tn.stylize(loaded, x[::-1], meta["preprocessing"])[-1 - i],
                                   rtol=1e-5, atol=1e-3)
    # planes given by the caller (training draws its own) are used as they are
    given = tn.network_input(params, x, rng=np.random.default_rng(7))
    assert given.shape == x.shape[:3] + (3 + z,) and given.dtype == x.dtype
    np.testing.assert_array_equal(given[..., :3], x)
    out, cache = tn.forward(params, given)
    assert tn.backward(np.ones_like(out), cache)[0].shape == given.shape
    if z:
        assert not np.array_equal(out, first)   # other noise, another picture: the network reads it
        np.testing.assert_array_equal(tn.network_input(params, x)[..., 3:],
                                      tn.noise_planes(x.shape[:3] + (z,), dtype=x.dtype))
        assert np.std(tn.network_input(params, x)[..., 3:]) == pytest.approx(tn.NOISE_STD, rel=0.1)
        with pytest.raises(ValueError, match=f"or \\(N, H, W, {3 + z}\\) with its noise planes"):
            tn.forward(params, np.zeros(x.shape[:3] + (3 + z + 1,), x.dtype))


def test_a_file_whose_noise_is_not_this_versions_is_refused(tmp_path):
    path = tn.save(tmp_path / "net.h5", small_net(dtype=np.float32)[0])
    with h5py.File(path, "a") as f:
        f.attrs["noise_std"] = 25.0
    assert "trained with input noise of 25 grey levels" in _load_error(path)
    for key, value in (("noise_channels", -1), ("noise_channels", 1.0), ("noise_std", "50")):
        path = tn.save(tmp_path / f"{key}.h5", small_net(dtype=np.float32)[0])
        with h5py.File(path, "a") as f:
            f.attrs[key] = value
        assert f"header attribute {key}" in _load_error(path), (key, value)


def test_the_outer_kernel_is_stored_and_read_back(tmp_path):
    for k in (1, 3, 7):
        params, x, _ = small_net(outer_kernel=k, dtype=np.float32)
        loaded, _ = tn.load(tn.save(tmp_path / f"k{k}.h5", params))
        assert tn.architecture_of(loaded)[2] == k
        np.testing.assert_array_equal(tn.forward(loaded, x)[0], tn.forward(params, x)[0])
    with pytest.raises(ValueError, match="odd"):
        tn.save(tmp_path / "even.h5", {**params, "conv1/kernel": np.zeros((4, 4, 3, 4)),
                                       "conv_out/kernel": np.zeros((4, 4, 4, 3))})
    assert not (tmp_path / "even.h5").exists()


def test_a_loaded_network_stylises_as_the_saved_one(tmp_path):
    params, x, _ = small_net(dtype=np.float32)
    loaded, meta = tn.load(tn.save(tmp_path / "net.h5", params, {"style_image": "mosaic.jpg"}))
    np.testing.assert_array_equal(tn.stylize(loaded, x, meta["preprocessing"]), tn.forward(params, x)[0])


def test_backward_without_the_input_gradient_gives_the_same_parameter_gradients():
    params, x, rng = small_net(seed=6, dtype=np.float32)
    out, cache = tn.forward(params, x)
    dout = rng.standard_normal(out.shape).astype(np.float32)
    dx, grads = tn.backward(dout, cache)
    none, grads_only = tn.backward(dout, cache, input_grad=False)
    assert dx is not None and none is None
    assert list(grads_only) == list(grads)
    for k in grads:
        np.testing.assert_array_equal(grads_only[k], grads[k])


def test_save_into_a_missing_folder_is_a_user_error(tmp_path):
    params, _, _ = small_net()
    with pytest.raises(UserError, match="cannot write the transformer network"):
        tn.save(tmp_path / "no-such-folder" / "net.h5", params)
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize("dtype", [np.float64, np.float32])
def test_stylising_keeps_no_cache_and_gives_the_same_output(dtype):
    """Without a cache the instance norms and residual sums run in place: the same bits, the photos untouched."""
    params, x, _ = small_net(dtype=dtype)
    given = x.copy()
    out, cache = tn.forward(params, x)
    bare, none = tn.forward(params, x, keep_cache=False)
    assert none is None and len(cache) > 0
    np.testing.assert_array_equal(bare, out)
    np.testing.assert_array_equal(tn.stylize(params, x), out)
    np.testing.assert_array_equal(x, given)

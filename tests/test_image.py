"""scratchnst.image (load, resize, preprocess and its inverse, save) and scratchnst.visualize."""

import numpy as np
import pytest
from PIL import Image

from scratchnst import image, visualize
from scratchnst.errors import UserError


@pytest.fixture
def picture(rng):
    """A random RGB uint8 image, 13 x 21 (odd sizes catch transposed axes)."""
    return rng.integers(0, 256, (13, 21, 3), dtype=np.uint8)


# ----------------------------------------------------------------------------------- load
@pytest.mark.parametrize("suffix", [".png", ".bmp", ".tiff"])
def test_load_lossless_formats_gives_the_exact_pixels(tmp_path, picture, suffix):
    path = tmp_path / f"p{suffix}"
    Image.fromarray(picture).save(path)
    loaded = image.load_image(path)
    assert loaded.dtype == np.float32 and loaded.shape == (13, 21, 3)
    np.testing.assert_array_equal(loaded, picture)


@pytest.mark.parametrize("mode", ["L", "P", "RGBA", "CMYK"])
def test_load_converts_other_modes_to_rgb(tmp_path, picture, mode):
    path = tmp_path / ("p.jpg" if mode == "CMYK" else "p.png")
    Image.fromarray(picture).convert(mode).save(path)
    loaded = image.load_image(path)
    assert loaded.shape == (13, 21, 3) and 0 <= loaded.min() and loaded.max() <= 255


# EXIF orientation -> how the stored pixels must be turned to stand upright (PIL's transposes).
ORIENTATIONS = {1: None, 3: Image.Transpose.ROTATE_180, 6: Image.Transpose.ROTATE_270, 8: Image.Transpose.ROTATE_90}


@pytest.mark.parametrize("orientation", sorted(ORIENTATIONS))
def test_load_honours_exif_orientation(tmp_path, picture, orientation):
    path = tmp_path / "phone.png"
    exif = Image.Exif()
    exif[0x0112] = orientation  # the Orientation tag
    Image.fromarray(picture).save(path, exif=exif)
    turn = ORIENTATIONS[orientation]
    expected = np.asarray(Image.fromarray(picture).transpose(turn)) if turn is not None else picture
    np.testing.assert_array_equal(image.load_image(path), expected)
    if orientation in (6, 8):
        assert image.load_image(path).shape == (21, 13, 3)  # portrait photo stored sideways


@pytest.mark.parametrize("content", [b"GIF89a but not really", "truncated jpeg"])  # more in test_image_inputs.py
def test_broken_image_is_a_user_error(tmp_path, picture, content):
    path = tmp_path / "broken.jpg"
    if content == "truncated jpeg":
        Image.fromarray(np.repeat(np.repeat(picture, 20, 0), 20, 1)).save(path, quality=95)
        path.write_bytes(path.read_bytes()[:2000])
    else:
        path.write_bytes(content)
    with pytest.raises(UserError, match=f"{path}: not a readable image"):
        image.load_image(path)


def test_missing_image_is_a_user_error(tmp_path):
    with pytest.raises(UserError, match="no such image file"):
        image.load_image(tmp_path / "absent.jpg")


def test_shared_image_loads(shared_image):
    loaded = image.load_image(shared_image("tubingen.jpg"), long_side=128)
    assert loaded.dtype == np.float32 and max(loaded.shape[:2]) == 128 and loaded.shape[2] == 3
    assert 0 <= loaded.min() and loaded.max() <= 255 and loaded.std() > 10


# --------------------------------------------------------------------------------- resize
@pytest.mark.parametrize("shape, long_side, expected", [((13, 21, 3), 42, (26, 42)), ((21, 13, 3), 7, (7, 4)),
                                                        ((10, 10, 3), 3, (3, 3)), ((2, 200, 3), 50, (1, 50))])
def test_resize_by_long_side(tmp_path, rng, shape, long_side, expected):
    pixels = rng.integers(0, 256, shape, dtype=np.uint8)
    resized = image.resize_long_side(pixels.astype(np.float64), long_side)
    assert resized.shape == expected + (3,) and resized.dtype == np.float64
    assert 0 <= resized.min() and resized.max() <= 255
    path = tmp_path / "p.png"
    Image.fromarray(pixels).save(path)
    assert image.load_image(path, long_side=long_side).shape == expected + (3,)


def test_resize_keeps_a_constant_image_constant():
    resized = image.resize_to(np.full((9, 7, 3), 80.0, dtype=np.float32), 20, 5)
    assert resized.dtype == np.float32
    np.testing.assert_allclose(resized, 80.0, atol=1e-3)


# ---------------------------------------------------------------------- preprocess/inverse
def test_caffe_preprocessing_values():
    red = np.zeros((1, 1, 3), dtype=np.uint8)
    red[..., 0] = 255
    x = image.preprocess(red, "caffe")
    assert x.shape == (1, 1, 1, 3) and x.dtype == np.float32
    np.testing.assert_allclose(x[0, 0, 0], [-103.939, -116.779, 255 - 123.68], rtol=1e-6)  # B, G, R


def test_torchvision_preprocessing_values():
    grey = np.full((1, 1, 3), 255 * 0.5, dtype=np.float64)
    x = image.preprocess(grey, "torchvision")
    assert x.dtype == np.float64
    np.testing.assert_allclose(x[0, 0, 0], (0.5 - np.array([0.485, 0.456, 0.406])) / [0.229, 0.224, 0.225])


@pytest.mark.parametrize("mode", ["caffe", "torchvision"])
@pytest.mark.parametrize("dtype", [np.uint8, np.float32, np.float64])
def test_deprocess_is_the_exact_inverse(picture, mode, dtype):
    x = image.preprocess(picture.astype(dtype), mode)
    assert x.dtype == (np.float32 if dtype == np.uint8 else dtype)
    back = image.deprocess(x, mode)
    assert back.shape == picture.shape and back.dtype == x.dtype
    np.testing.assert_allclose(back, picture, atol=1e-4 if x.dtype == np.float32 else 1e-10)
    np.testing.assert_array_equal(image.to_uint8(back), picture)


def test_deprocess_does_not_clip_but_to_uint8_does():
    x = np.full((1, 2, 2, 3), 500.0, dtype=np.float32)
    back = image.deprocess(x, "caffe")
    assert back.max() > 255
    assert image.to_uint8(back).max() == 255 and image.to_uint8(-back).min() == 0


def test_preprocess_leaves_its_input_alone(picture):
    pixels = picture.astype(np.float32)
    before = pixels.copy()
    image.deprocess(image.preprocess(pixels), "caffe")
    np.testing.assert_array_equal(pixels, before)


# ----------------------------------------------------------------------------------- save
@pytest.mark.parametrize("as_float", [False, True])
def test_save_png_round_trip(tmp_path, picture, as_float):
    path = tmp_path / "out.png"
    path.write_bytes(b"an older picture")
    pixels = picture.astype(np.float32) + 0.3 if as_float else picture  # floats are rounded
    assert image.save_image(path, pixels) == path
    np.testing.assert_array_equal(image.load_image(path), picture)
    assert [p.name for p in tmp_path.iterdir()] == ["out.png"]


def test_save_errors_leave_no_file(tmp_path, picture, monkeypatch):
    with pytest.raises(UserError, match="unknown image extension"):
        image.save_image(tmp_path / "out.xyz", picture)
    with pytest.raises(UserError, match="cannot write"):
        image.save_image(tmp_path / "missing" / "out.png", picture)
    old = tmp_path / "old.png"
    image.save_image(old, picture)

    def interrupted_save(self, fp, *args, **kwargs):
        with open(fp, "wb") as f:
            f.write(b"half a PNG")
        raise KeyboardInterrupt

    monkeypatch.setattr(Image.Image, "save", interrupted_save)
    with pytest.raises(KeyboardInterrupt):
        image.save_image(old, picture[::-1])
    assert [p.name for p in tmp_path.iterdir()] == ["old.png"]
    monkeypatch.undo()
    np.testing.assert_array_equal(image.load_image(old), picture)


# ------------------------------------------------------------------------------ visualize
def test_activation_grid_layout_and_scaling(rng):
    activation = rng.standard_normal((1, 5, 4, 10)) * np.arange(1, 11) * 100  # channels of different ranges
    activation[..., 2] = 7.0  # a constant channel
    grid = visualize.activation_grid(activation, k=6, gap=1, scale=2)
    columns, rows = 3, 2  # ceil(sqrt(6)) columns
    assert grid.dtype == np.uint8 and grid.shape == (rows * (10 + 1) - 1, columns * (8 + 1) - 1)
    first = grid[:10, :8]
    assert first.min() == 0 and first.max() == 255  # each channel stretched on its own
    np.testing.assert_array_equal(first[::2, ::2], first[1::2, 1::2])  # scale repeats pixels
    assert (grid[:10, 2 * 9:2 * 9 + 8] == 0).all()  # constant channel: black
    assert (grid[10, :] == 255).all() and (grid[:, 8] == 255).all()  # white gaps
    brightest = np.unravel_index(np.argmax(activation[0, :, :, 4]), (5, 4))
    assert grid[11 + 2 * brightest[0], 9 + 2 * brightest[1]] == 255  # channel 4: row 1, column 1


def test_activation_grid_with_fewer_channels_than_asked(rng):
    grid = visualize.activation_grid(rng.standard_normal((6, 7, 3)), k=16, gap=0)
    assert grid.shape == (2 * 6, 2 * 7)  # 3 channels: 2 columns, 2 rows, one tile left white
    assert (grid[6:, 7:] == 255).all()


def test_save_activation_grid_writes_a_png(tmp_path, rng):
    path = visualize.save_activation_grid(tmp_path / "fire2.png", rng.standard_normal((1, 8, 8, 128)), k=16)
    with Image.open(path) as img:
        assert img.format == "PNG" and img.size == (4 * 9 - 1, 4 * 9 - 1)

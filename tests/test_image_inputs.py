"""Every image a student may hand to scratchnst: converted correctly, or refused with one clear line.

scratchnst.image.load_image / image_size / save_image on broken, unusual and enormous files
(issue 7), and the one line the commands print for them. The files are made here with Pillow,
numpy and, for what Pillow will not write (16-bit RGB PNGs, headers that lie about the size), a
few lines of PNG/JPEG byte surgery.
"""

import json
import os
import struct
import subprocess
import sys
import warnings
import zlib
from pathlib import Path

import h5py
import numpy as np
import pytest
from PIL import Image, ImageFile

from scratchnst import atomic, cli, image, image_files
from scratchnst.errors import UsageError, UserError

from test_train_command import tiny_network

REPO = Path(__file__).resolve().parents[1]
AS_ROOT = hasattr(os, "geteuid") and os.geteuid() == 0  # root reads and writes whatever the permissions say


# ------------------------------------------------------------------------------- helpers
def png_chunk(kind, data):
    """One PNG chunk: length, type, data, CRC-32 of type + data."""
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))


def png_bytes(samples, color_type, bit_depth=16, size=None):
    """A PNG written by hand (Pillow does not write 16-bit RGB/RGBA/LA), filter 0 on every row.

    Args:
        samples: (H, W, C) unsigned ints, C = 1 (grey, type 0), 2 (grey+alpha, 4), 3 (RGB, 2), 4 (RGBA, 6).
        size: (W, H) to write in the header instead of the real one (a header that lies).
    """
    H, W = samples.shape[:2]
    rows = samples.astype(">u2" if bit_depth == 16 else "u1").reshape(H, -1)
    raw = b"".join(b"\0" + row.tobytes() for row in rows)  # each row starts with its filter type
    W, H = size or (W, H)
    header = struct.pack(">IIBBBBB", W, H, bit_depth, color_type, 0, 0, 0)
    return (b"\x89PNG\r\n\x1a\n" + png_chunk(b"IHDR", header) + png_chunk(b"IDAT", zlib.compress(raw))
            + png_chunk(b"IEND", b""))


def jpeg_with_size(data, W, H):
    """JPEG bytes whose SOF0 segment (FF C0, length, precision, height, width) claims W x H."""
    data = bytearray(data)
    sof = data.index(b"\xff\xc0")
    data[sof + 5:sof + 9] = struct.pack(">HH", H, W)
    return bytes(data)


def smooth_picture(H, W):
    """A smooth RGB uint8 picture (H, W, 3): JPEG keeps it within a grey level or two."""
    y, x = np.ogrid[0:H, 0:W]
    y, x = y.astype(np.float32), x.astype(np.float32)
    picture = np.empty((H, W, 3), np.uint8)  # channel by channel: 6000 x 4000 stays cheap to make
    picture[..., 0] = np.rint(127.5 + 100 * np.sin(x / (W / 9) + y / (H / 5)))
    picture[..., 1] = np.rint(127.5 + 100 * np.cos(y / (H / 7)))
    picture[..., 2] = np.rint(255 * (x + y) / (W + H))
    return picture


def peak_memory_growth_mb(code):
    """Run `code` in a fresh Python and return how far its peak memory rose, in MB.

    A fresh process, because the peak is a high-water mark that earlier tests have already
    raised here; and /proc's VmHWM rather than ru_maxrss, because Linux carries the parent's
    ru_maxrss over into a child across exec.
    """
    if not Path("/proc/self/status").is_file():
        pytest.skip("peak memory is read from /proc/self/status (Linux)")
    script = ("import json\nfrom scratchnst import image\n"
              "def peak_kb():\n"
              "    with open('/proc/self/status') as status:\n"
              "        return next(int(line.split()[1]) for line in status if line.startswith('VmHWM:'))\n"
              "before = peak_kb()\n"
              f"{code}\n"
              "print(json.dumps((peak_kb() - before) / 1024))\n")
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(REPO), os.environ.get("PYTHONPATH", "")]))
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, env=env, timeout=120)
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout.splitlines()[-1])


def assert_one_line_user_error(error, path, *words):
    """A UserError (exit status 1), one line, naming the file and containing `words`."""
    message = str(error.value)
    assert type(error.value) is UserError and error.value.exit_status == 1
    assert "\n" not in message and message.strip() == message and message
    assert str(path) in message
    for word in words:
        assert word in message, f"{word!r} not in {message!r}"


@pytest.fixture
def picture(rng):
    """A random RGB uint8 picture, 5 x 8: not square and not symmetric, so every turn shows."""
    return rng.integers(0, 256, (5, 8, 3), dtype=np.uint8)


# ------------------------------------------------------------------- 1. files that are refused
def _missing(tmp_path, rng):
    return tmp_path / "absent.jpg"


def _folder(tmp_path, rng):
    (tmp_path / "holiday.jpg").mkdir()
    return tmp_path / "holiday.jpg"


def _write(name, data):
    def make(tmp_path, rng):
        path = tmp_path / name
        path.write_bytes(data(rng) if callable(data) else data)
        return path
    return make


def _truncated(suffix):
    def make(tmp_path, rng):
        path = tmp_path / f"cut{suffix}"
        Image.fromarray(rng.integers(0, 256, (64, 96, 3), dtype=np.uint8)).save(path)
        path.write_bytes(path.read_bytes()[:path.stat().st_size // 2])
        return path
    return make


def _cut_with_end_marker(mode):
    """A JPEG cut in half, its end marker (FF D9) added back: libjpeg decodes it without an error, the
    missing half flat grey (image_files._check_jpeg_data_ends)."""
    def make(tmp_path, rng):
        path = tmp_path / f"cut_{mode}.jpg"
        Image.fromarray(rng.integers(0, 256, (64, 96, 3), dtype=np.uint8)).convert(mode).save(path)
        path.write_bytes(path.read_bytes()[:path.stat().st_size // 2] + b"\xff\xd9")
        return path
    return make


def _claims_more_rows(tmp_path, rng):
    """A 64x48 JPEG whose header claims 640x480: decoded without an error, grey below its data."""
    path = tmp_path / "claims.jpg"
    Image.fromarray(rng.integers(0, 256, (48, 64, 3), dtype=np.uint8)).save(path)
    data = bytearray(path.read_bytes())
    frame = data.index(b"\xff\xc0")   # SOF0: length (2 bytes), precision (1), then height and width
    data[frame + 5:frame + 9] = struct.pack(">HH", 480, 640)
    path.write_bytes(bytes(data))
    return path


def _corrupt_png(tmp_path, rng):
    path = tmp_path / "corrupt.png"
    Image.fromarray(rng.integers(0, 256, (16, 16, 3), dtype=np.uint8)).save(path)
    data = bytearray(path.read_bytes())
    data[data.index(b"IDAT") + 20] ^= 0xFF  # one flipped byte in the compressed pixels: CRC mismatch
    path.write_bytes(bytes(data))
    return path


def _tiff(name, array):
    def make(tmp_path, rng):
        path = tmp_path / name
        Image.fromarray(array).save(path)
        return path
    return make


def _hdf5(tmp_path, rng):
    """An HDF5 file as h5py writes networks and weights: Pillow's HDF5 stub would open it as pixels."""
    path = tmp_path / "net.h5"
    with h5py.File(path, "w") as f:
        f["conv1/kernel"] = rng.standard_normal((3, 3, 3, 4)).astype(np.float32)
    return path


REFUSED = {
    "missing": (_missing, ["no such image file; check the path"]),
    "folder": (_folder, [": is a folder; give an image file"]),
    "empty": (_write("empty.jpg", b""), ["the file is empty (0 bytes); give a JPEG or PNG image"]),
    "text named .jpg": (_write("notes.jpg", b"shopping list: eggs, milk\n" * 20),
                        ["not a readable image (cannot identify image file); give a JPEG or PNG file"]),
    "random bytes named .jpg": (_write("noise.jpg", lambda rng: rng.bytes(5000)),
                                ["not a readable image (cannot identify image file)"]),
    "truncated JPEG": (_truncated(".jpg"), ["not a readable image (the file is cut short", "download it again"]),
    "truncated PNG": (_truncated(".png"), ["not a readable image (the file is cut short", "download it again"]),
    "JPEG cut, end marker added back": (_cut_with_end_marker("RGB"), [
        "not a readable image (the JPEG's data ends early: its last ", "rows are the flat grey libjpeg fills in",
        "copy or download it again"]),
    "grey JPEG cut, end marker added back": (_cut_with_end_marker("L"), ["not a readable image (the JPEG's data ends early"]),
    "JPEG claiming more rows than it holds": (_claims_more_rows, ["the JPEG's data ends early", "download it again"]),
    "corrupt PNG": (_corrupt_png, ["not a readable image (", "give a JPEG or PNG file"]),
    "float TIFF": (_tiff("float.tif", np.array([[0.0, 0.5, 1.0]], dtype=np.float32)),
                   ["32-bit floating-point pixels have no agreed brightness range",
                    "save it as an 8- or 16-bit PNG or a JPEG"]),
    "32-bit int TIFF": (_tiff("int32.tif", np.array([[0, 255, 70000]], dtype=np.int32)),
                        ["32-bit integer pixels have no agreed brightness range"]),
    "HDF5 network": (_hdf5, ["an HDF5 file (a network or weights file?), not an image; give a picture (.jpg or .png)"]),
}
# Formats' signatures followed by garbage: each plugin's own parser meets the garbage.
SIGNATURES = [b"\x89PNG\r\n\x1a\n", b"\xff\xd8\xff\xe0", b"GIF89a", b"BM", b"II*\x00", b"MM\x00*",
              b"RIFF\x00\x01\x00\x00WEBPVP8 "]
for number, signature in enumerate(SIGNATURES):
    REFUSED[f"signature {signature[:4]!r} + garbage"] = (
        _write(f"garbage{number}.png", lambda rng, signature=signature: signature + rng.bytes(3000)),
        ["not a readable image ("])


@pytest.mark.parametrize("case", sorted(REFUSED))
def test_a_broken_file_is_one_line_naming_it(tmp_path, rng, case):
    make, words = REFUSED[case]
    path = make(tmp_path, rng)
    with pytest.raises(UserError) as error:
        image.load_image(path)
    assert_one_line_user_error(error, path, *words)
    with pytest.raises(UserError) as error:
        image.load_image(path, long_side=32)
    assert_one_line_user_error(error, path, *words)


@pytest.mark.parametrize("case", sorted(REFUSED))
def test_image_size_refuses_the_same_files_from_the_header(tmp_path, rng, case):
    make, words = REFUSED[case]
    path = make(tmp_path, rng)
    if case.startswith("truncated") or "cut" in case:  # the header is whole: only decoding notices the missing half
        assert image.image_size(path) == (64, 96)
        return
    if case == "JPEG claiming more rows than it holds":
        assert image.image_size(path) == (480, 640)
        return
    if case == "corrupt PNG" or case.startswith("signature"):
        # The header may still parse (then only decoding fails) or not: either way no other error.
        try:
            image.image_size(path)
        except UserError as error:
            assert str(error).startswith(f"{path}: not a readable image (") and "\n" not in str(error)
        return
    with pytest.raises(UserError) as error:
        image.image_size(path)
    assert_one_line_user_error(error, path, *words)


@pytest.mark.skipif(AS_ROOT, reason="root reads files whatever their permissions (os.access lies too)")
def test_an_unreadable_file_is_a_user_error(tmp_path, picture):
    path = tmp_path / "private.png"
    Image.fromarray(picture).save(path)
    path.chmod(0)
    try:
        with pytest.raises(UserError) as error:
            image.load_image(path)
    finally:
        path.chmod(0o644)
    assert_one_line_user_error(error, path, "no permission to read this file", "chmod u+r")


def test_an_unreadable_file_is_a_user_error_even_as_root(tmp_path, picture, monkeypatch):
    # The same path as above with the operating system's refusal simulated (tests run as root in CI).
    path = tmp_path / "private.png"
    Image.fromarray(picture).save(path)

    def refuse(name, *args, **kwargs):
        raise PermissionError(13, "Permission denied", str(name))

    monkeypatch.setattr(image_files, "open", refuse, raising=False)  # the module's open() shadows the builtin
    for read in (image.load_image, image.image_size):
        with pytest.raises(UserError) as error:
            read(path)
        assert_one_line_user_error(error, path, "no permission to read this file; change its permissions")


def test_loading_changes_none_of_pillows_global_settings(tmp_path, rng):
    before = Image.MAX_IMAGE_PIXELS
    for number, case in enumerate(sorted(REFUSED)):
        folder = tmp_path / str(number)
        folder.mkdir()
        with pytest.raises(UserError):
            image.load_image(REFUSED[case][0](folder, rng))
    path = tmp_path / "huge.png"
    path.write_bytes(png_bytes(np.zeros((1, 1, 1), np.uint8), 0, 8, size=(100_000, 100_000)))
    with pytest.raises(UserError):
        image.load_image(path)
    # Truncated files must stay refused: nothing may switch Pillow to filling missing data with grey.
    assert ImageFile.LOAD_TRUNCATED_IMAGES is False
    assert Image.MAX_IMAGE_PIXELS == before


@pytest.mark.parametrize("mode", ["RGB", "L"])
def test_a_whole_jpeg_with_grey_rows_still_loads(tmp_path, rng, mode):
    """Only rows of libjpeg's fill at the bottom, under content, mark a cut JPEG: a picture grey all
    over, or grey in fewer rows than the bottom sixteenth, or grey at the top, is a picture."""
    photo = rng.integers(0, 256, (64, 96, 3), dtype=np.uint8)
    grey_top, grey_bottom_row = photo.copy(), photo.copy()
    grey_top[:32] = 128
    grey_bottom_row[-1:] = 128   # one row: the JPEG's 8x8 blocks blur it with the rows above anyway
    for name, array in [("grey.jpg", np.full((64, 96, 3), 128, np.uint8)), ("grey_top.jpg", grey_top),
                        ("last_row.jpg", grey_bottom_row), ("photo.jpg", photo)]:
        Image.fromarray(array).convert(mode).save(tmp_path / name, quality=95)
        loaded = image.load_image(tmp_path / name)
        assert loaded.shape == (64, 96, 3)
        assert image.load_image(tmp_path / name, long_side=32).shape == (21, 32, 3)
    assert (image.load_image(tmp_path / "grey.jpg") == 128).all()


# -------------------------------------------------------------- 2. modes converted to RGB 0..255
def over_white(rgb, alpha):
    """The expected compositing, in float64: rgb * a + 255 * (1 - a), a = alpha / 255."""
    a = np.asarray(alpha, np.float64)[..., None] / 255
    return np.asarray(rgb, np.float64) * a + 255 * (1 - a)


def _rgba_png(path):
    pixels = np.array([[[0, 0, 0, 0], [12, 200, 77, 0], [255, 0, 0, 128]],
                       [[10, 20, 30, 255], [255, 255, 255, 64], [0, 128, 255, 200]]], np.uint8)
    Image.fromarray(pixels, "RGBA").save(path)
    return over_white(pixels[..., :3], pixels[..., 3])


def _la_png(path):
    pixels = np.array([[[0, 0], [90, 0], [0, 128]], [[200, 255], [200, 128], [255, 17]]], np.uint8)
    Image.fromarray(pixels, "LA").save(path)
    return over_white(np.repeat(pixels[..., :1], 3, axis=2), pixels[..., 1])


PALETTE = np.array([[0, 0, 0], [255, 0, 0], [0, 255, 0], [10, 20, 200]], np.uint8)
INDICES = np.array([[0, 1, 2], [3, 0, 1]], np.uint8)


def _palette_png(transparency):
    def make(path):
        img = Image.fromarray(INDICES, "P")
        img.putpalette(PALETTE.ravel().tolist())
        img.save(path, **({} if transparency is None else {"transparency": transparency}))
        expected = PALETTE[INDICES].astype(np.float64)
        if transparency is not None:
            expected[INDICES == transparency] = 255  # the transparent index: black in the palette, white here
        return expected
    return make


def _rgb_png_with_colour_key(path):
    pixels = np.array([[[10, 20, 30], [1, 2, 3], [10, 20, 30]]], np.uint8)
    Image.fromarray(pixels).save(path, transparency=(10, 20, 30))
    return np.array([[[255, 255, 255], [1, 2, 3], [255, 255, 255]]], np.float64)


GREY16 = np.array([[0, 255, 256, 1000], [32768, 40000, 65280, 65535]], np.uint16)


def _grey16(suffix_writer):
    def make(path):
        suffix_writer(path)
        return np.repeat(GREY16[..., None].astype(np.float64) / 257, 3, axis=2)
    return make


def _pillow_grey16(path):
    Image.fromarray(GREY16).save(path)  # mode "I;16"; PGM comes back as "I"


def _handmade_grey16(path):
    path.write_bytes(png_bytes(GREY16[..., None], color_type=0))


def _grey8(path):
    pixels = np.array([[0, 1, 128], [200, 254, 255]], np.uint8)
    Image.fromarray(pixels).save(path)
    return np.repeat(pixels[..., None], 3, axis=2).astype(np.float64)


def _one_bit(path):
    bits = np.array([[True, False, True], [False, False, True]])
    Image.fromarray(bits).save(path)
    return np.repeat(bits[..., None] * 255.0, 3, axis=2)


def _cmyk_tiff(path):
    pixels = np.array([[[255, 0, 0], [0, 255, 0], [17, 99, 201]],
                       [[0, 0, 0], [255, 255, 255], [128, 64, 32]]], np.uint8)
    Image.fromarray(pixels).convert("CMYK").save(path)  # C = 255 - R, ...; stored uninverted in TIFF
    return pixels.astype(np.float64)


CONVERSIONS = {  # name: (file name, writer returning the expected float64 (H, W, 3))
    "RGBA PNG over white": ("rgba.png", _rgba_png),
    "LA PNG over white": ("la.png", _la_png),
    "palette PNG with a transparent index": ("p_transparent.png", _palette_png(transparency=0)),
    "palette PNG": ("p.png", _palette_png(transparency=None)),
    "RGB PNG with a transparent colour": ("key.png", _rgb_png_with_colour_key),
    "16-bit grey PNG (Pillow)": ("g16.png", _grey16(_pillow_grey16)),
    "16-bit grey PNG (by hand)": ("g16_hand.png", _grey16(_handmade_grey16)),
    "16-bit grey TIFF": ("g16.tif", _grey16(_pillow_grey16)),
    "16-bit grey PGM (mode I)": ("g16.pgm", _grey16(_pillow_grey16)),
    "grey L PNG": ("l.png", _grey8),
    "1-bit PNG": ("bits.png", _one_bit),
    "CMYK TIFF": ("cmyk.tif", _cmyk_tiff),
}


@pytest.mark.parametrize("case", sorted(CONVERSIONS))
def test_modes_are_converted_to_the_right_rgb_values(tmp_path, case):
    name, write = CONVERSIONS[case]
    path = tmp_path / name
    expected = write(path)
    loaded = image.load_image(path)
    assert loaded.dtype == np.float32 and loaded.shape == expected.shape
    np.testing.assert_allclose(loaded, expected, rtol=0, atol=1e-4)
    assert image.image_size(path) == expected.shape[:2]


def test_transparent_pixels_become_white_whatever_colour_they_hide(tmp_path):
    _rgba_png(tmp_path / "rgba.png")
    loaded = image.load_image(tmp_path / "rgba.png")
    np.testing.assert_array_equal(loaded[0, 0], [255, 255, 255])  # transparent black
    np.testing.assert_array_equal(loaded[0, 1], [255, 255, 255])  # transparent garbage colour
    np.testing.assert_allclose(loaded[0, 2], [255, 127.5, 127.5], atol=0.6)  # half-transparent red


def test_16_bit_grey_is_scaled_not_clipped_nor_rounded(tmp_path):
    path = tmp_path / "g16.png"
    Image.fromarray(GREY16).save(path)
    grey = image.load_image(path)[..., 0]
    assert grey[1, 3] == 255.0  # 65535 -> 255 exactly
    assert abs(grey[1, 0] - 127.5) < 0.01  # 32768 -> 127.502; Pillow's convert("RGB") gives 255
    assert abs(grey[0, 1] - 255 / 257) < 1e-6 and grey[0, 1] != grey[0, 2]  # 255 and 256 stay apart
    assert grey[1, 2] < 255  # 65280: not clipped


@pytest.mark.parametrize("long_side", [7, 28])
def test_16_bit_and_alpha_sources_are_resized_as_floats(tmp_path, long_side):
    grey = tmp_path / "grey16.png"
    Image.fromarray(np.full((10, 14), 32768, np.uint16)).save(grey)
    loaded = image.load_image(grey, long_side)
    assert loaded.shape == (round(10 * long_side / 14), long_side, 3) and loaded.dtype == np.float32
    np.testing.assert_allclose(loaded, 32768 / 257, atol=1e-3)  # 127.502, not rounded to 8 bits
    glass = tmp_path / "glass.png"
    Image.fromarray(np.full((10, 14, 4), [0, 0, 0, 64], np.uint8)).save(glass)  # quarter-opaque black
    np.testing.assert_allclose(image.load_image(glass, long_side), 255 * (1 - 64 / 255), atol=1e-3)


@pytest.mark.parametrize("channels", [2, 3, 4])
def test_16_bit_colour_pngs_are_right_within_a_grey_level(tmp_path, rng, channels):
    # Pillow keeps only the high byte of 16-bit RGB(A)/LA samples: v // 256 against v / 257, < 1
    # apart; with alpha the colour's and the alpha's errors add up, < 2 levels after compositing.
    samples = rng.integers(0, 65536, (6, 7, channels), dtype=np.uint16)
    samples[0, :3, :] = [[0], [32768], [65535]]
    if channels in (2, 4):
        samples[1, :3, -1] = [0, 32768, 65535]  # transparent, half, opaque
    path = tmp_path / f"c{channels}.png"
    path.write_bytes(png_bytes(samples, color_type={2: 4, 3: 2, 4: 6}[channels]))
    colour = samples[..., :3] if channels >= 3 else np.repeat(samples[..., :1], 3, axis=2)
    expected = colour / 257.0
    if channels in (2, 4):
        expected = over_white(expected, samples[..., -1] / 257.0)
    loaded = image.load_image(path)
    assert loaded.shape == (6, 7, 3)
    np.testing.assert_allclose(loaded, expected, rtol=0, atol=2.0 if channels in (2, 4) else 1.0)
    np.testing.assert_array_equal(loaded[0, 2], 255)  # 65535 stays white


def test_cmyk_jpeg_matches_the_rgb_it_was_made_from(tmp_path):
    rgb = smooth_picture(48, 64)
    path = tmp_path / "cmyk.jpg"
    Image.fromarray(rgb).convert("CMYK").save(path, quality=95)
    with Image.open(path) as img:
        # Pillow writes CMYK JPEGs the way Photoshop does: an Adobe APP14 marker and inverted
        # samples, so this is the "Adobe-style inverted CMYK" case.
        assert img.mode == "CMYK" and "adobe" in img.info
    loaded = image.load_image(path)
    assert loaded.shape == rgb.shape
    assert np.abs(loaded - rgb).mean() < 6


# -------------------------------------------------------------------- 3. EXIF orientation
# EXIF orientation -> the stored pixels made upright, written with numpy from the EXIF
# definitions ("row 0 is the visual right side, column 0 the visual top" for 6, ...).
UPRIGHT = {
    1: lambda a: a,
    2: lambda a: a[:, ::-1],
    3: lambda a: a[::-1, ::-1],
    4: lambda a: a[::-1],
    5: lambda a: a.transpose(1, 0, 2),
    6: lambda a: np.rot90(a, -1),
    7: lambda a: a[::-1, ::-1].transpose(1, 0, 2),
    8: lambda a: np.rot90(a, 1),
}


def _save_with_orientation(path, pixels, orientation, **options):
    exif = Image.Exif()
    exif[0x0112] = orientation
    Image.fromarray(pixels).save(path, exif=exif, **options)


@pytest.mark.parametrize("orientation", sorted(UPRIGHT))
@pytest.mark.parametrize("suffix", [".png", ".tif"])
def test_exif_orientation_lossless(tmp_path, picture, orientation, suffix):
    path = tmp_path / f"phone{suffix}"
    _save_with_orientation(path, picture, orientation)
    expected = UPRIGHT[orientation](picture)
    np.testing.assert_array_equal(image.load_image(path), expected)
    assert image.image_size(path) == expected.shape[:2]


@pytest.mark.parametrize("orientation", sorted(UPRIGHT))
def test_exif_orientation_jpeg(tmp_path, orientation):
    # 8x8 blocks of one colour each, quality 100 without chroma subsampling: JPEG keeps them
    # within a few levels, so the layout is checked against the original picture itself.
    blocks = np.random.default_rng(orientation).integers(0, 256, (3, 5, 3), dtype=np.uint8)
    picture = np.repeat(np.repeat(blocks, 8, axis=0), 8, axis=1)  # (24, 40, 3)
    path = tmp_path / "phone.jpg"
    _save_with_orientation(path, picture, orientation, quality=100, subsampling=0)
    loaded = image.load_image(path)
    expected = UPRIGHT[orientation](picture)
    assert loaded.shape == expected.shape and image.image_size(path) == expected.shape[:2]
    assert np.abs(loaded - expected).max() <= 4
    with Image.open(path) as img:  # and exactly the decoded pixels, turned
        np.testing.assert_array_equal(loaded, UPRIGHT[orientation](np.asarray(img.convert("RGB"), np.float32)))


@pytest.mark.parametrize("orientation", [6, 7])
def test_exif_orientation_with_long_side(tmp_path, picture, orientation):
    path = tmp_path / "phone.png"
    _save_with_orientation(path, picture, orientation)
    upright = UPRIGHT[orientation](picture)  # (8, 5)
    loaded = image.load_image(path, long_side=16)
    expected = np.asarray(Image.fromarray(np.ascontiguousarray(upright)).resize((10, 16), Image.LANCZOS), np.float32)
    np.testing.assert_array_equal(loaded, expected)


def exif_with_orientation(tag_type, count, value):
    """An EXIF block (little-endian TIFF) whose one IFD entry is Orientation (0x0112) as given."""
    entry = struct.pack("<HHI4s", 0x0112, tag_type, count, value)
    return b"Exif\x00\x00II*\x00" + struct.pack("<IH", 8, 1) + entry + struct.pack("<I", 0)


BROKEN_EXIF = {
    "not TIFF data": b"Exif\x00\x00garbage!!",
    "an IFD pointing past the end": b"Exif\x00\x00MM\x00*\x00\x00\x00\x08\xff\xff",
    "orientation 9": exif_with_orientation(3, 1, struct.pack("<HH", 9, 0)),  # SHORT 9: no such orientation
    "orientation of the wrong type": exif_with_orientation(2, 4, b"abc\x00"),  # ASCII "abc"
}


@pytest.mark.parametrize("broken", sorted(BROKEN_EXIF))
@pytest.mark.parametrize("suffix", [".png", ".jpg"])
def test_a_broken_exif_block_loads_the_picture_as_stored(tmp_path, picture, broken, suffix):
    path = tmp_path / f"edited{suffix}"
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # Pillow's own complaint while writing the broken block
        Image.fromarray(picture).save(path, exif=BROKEN_EXIF[broken], **({"quality": 100} if suffix == ".jpg" else {}))
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # not even a warning escapes
        loaded = image.load_image(path)
        assert image.image_size(path) == (5, 8)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # Pillow reading the broken block for the comparison
        with Image.open(path) as img:
            np.testing.assert_array_equal(loaded, np.asarray(img.convert("RGB"), np.float32))


# ----------------------------------------------------------------------- 4. enormous sizes
def _huge_png(tmp_path):
    path = tmp_path / "huge.png"
    path.write_bytes(png_bytes(np.zeros((2, 2, 3), np.uint8), 2, 8, size=(100_000, 100_000)))
    return path


def _huge_jpeg(tmp_path):
    path = tmp_path / "huge.jpg"
    Image.fromarray(smooth_picture(16, 16)).save(path)
    path.write_bytes(jpeg_with_size(path.read_bytes(), 60_000, 60_000))
    return path


def test_a_png_claiming_100000x100000_pixels_is_refused_before_decoding(tmp_path):
    path = _huge_png(tmp_path)
    for long_side in (None, 320):  # a PNG cannot be decoded smaller
        with pytest.raises(UserError) as error:
            image.load_image(path, long_side)
        assert str(error.value) == (f"{path}: the header says 100000x100000 pixels (10000 megapixels), more than "
                                    "scratchnst decodes (100 megapixels); shrink it first")
    # The header alone says so too: callers that plan from the size (apply's memory advice) hear it first.
    with pytest.raises(UserError) as error:
        image.image_size(path)
    assert str(error.value).endswith("more than scratchnst decodes (100 megapixels); shrink it first")


def test_a_jpeg_claiming_60000x60000_pixels_is_refused_before_decoding(tmp_path):
    path = _huge_jpeg(tmp_path)
    with pytest.raises(UserError) as error:
        image.load_image(path)
    assert str(error.value) == (f"{path}: the header says 60000x60000 pixels (3600 megapixels), more than "
                                "scratchnst decodes (100 megapixels); shrink it first")
    assert image.image_size(path) == (60_000, 60_000)  # at 1/8 scale (7500 x 7500) it loads with a long side


def test_refusing_enormous_headers_takes_little_memory(tmp_path):
    png, jpeg = _huge_png(tmp_path), _huge_jpeg(tmp_path)
    growth = peak_memory_growth_mb(
        "from scratchnst.errors import UserError\n"
        f"for path in ({str(png)!r}, {str(jpeg)!r}):\n"
        "    try:\n"
        "        image.load_image(path)\n"
        "    except UserError:\n"
        "        pass\n"
        "    else:\n"
        "        raise SystemExit('not refused')\n"
        "    try:\n"
        "        image.image_size(path)\n"
        "    except UserError:\n"
        "        pass\n")
    assert growth < 300, f"peak memory rose by {growth:.0f} MB"


def test_pillows_decompression_bomb_warning_does_not_escape(tmp_path):
    # 10000 x 9500 = 95 megapixels: above Pillow's warning threshold (89.5), below our limit.
    path = tmp_path / "large.png"
    path.write_bytes(png_bytes(np.zeros((1, 1, 1), np.uint8), 0, 8, size=(10_000, 9_500)))
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert image.image_size(path) == (9_500, 10_000)


# ----------------------------------------------------------- 4b. big JPEGs decoded smaller
@pytest.fixture(scope="module")
def phone_photo(tmp_path_factory):
    """A 6000 x 4000 JPEG (24 megapixels), smooth content."""
    path = tmp_path_factory.mktemp("phone") / "photo.jpg"
    Image.fromarray(smooth_picture(4000, 6000)).save(path, quality=90)
    return path


@pytest.fixture
def decoded_sizes(monkeypatch):
    """The (W, H) every Pillow decode of a file ran at."""
    sizes = []
    load = ImageFile.ImageFile.load

    def spy(self):
        sizes.append(self.size)
        return load(self)

    monkeypatch.setattr(ImageFile.ImageFile, "load", spy)
    return sizes


def test_a_big_jpeg_with_a_long_side_is_decoded_small_and_right(phone_photo, decoded_sizes):
    loaded = image.load_image(phone_photo, long_side=320)
    assert loaded.shape == (213, 320, 3) and loaded.dtype == np.float32
    # 320 x 213 needs >= 960 x 640 (DRAFT_GAP 3): libjpeg's 1/4 scale, 1500 x 1000, not 6000 x 4000.
    assert set(decoded_sizes) == {(1500, 1000)}
    with Image.open(phone_photo) as img:
        full = np.asarray(img.convert("RGB").resize((320, 213), Image.LANCZOS), np.float32)
    difference = np.abs(loaded - full)
    assert difference.mean() < 0.5 and difference.max() <= 3


def test_a_big_jpeg_with_a_long_side_takes_a_fraction_of_the_memory(phone_photo):
    drafted = peak_memory_growth_mb(f"image.load_image({str(phone_photo)!r}, long_side=320)")
    full = peak_memory_growth_mb(f"from PIL import Image\nImage.open({str(phone_photo)!r}).load()")
    assert full > 80  # 24 megapixels x 4 bytes: the test can see a full decode
    assert drafted < full / 4, f"{drafted:.0f} MB with long_side, {full:.0f} MB for the full decode"


def test_the_pixel_limit_applies_to_the_drafted_size(phone_photo, monkeypatch):
    monkeypatch.setattr(image_files, "MAX_DECODED_PIXELS", 2_000_000)
    with pytest.raises(UserError) as error:
        image.load_image(phone_photo)
    assert str(error.value) == (f"{phone_photo}: the header says 6000x4000 pixels (24 megapixels), more than "
                                "scratchnst decodes (2 megapixels); shrink it first")
    assert image.load_image(phone_photo, long_side=320).shape == (213, 320, 3)  # 1500 x 1000 decoded
    monkeypatch.setattr(image_files, "MAX_DECODED_PIXELS", 1_000_000)
    with pytest.raises(UserError) as error:
        image.load_image(phone_photo, long_side=320)
    assert str(error.value) == (f"{phone_photo}: the header says 6000x4000 pixels (24 megapixels); even decoded at "
                                "1/4 size that is 1500x1000 (1.5 megapixels), more than scratchnst decodes "
                                "(1 megapixels); shrink it first")


def test_image_size_refuses_a_jpeg_only_if_its_smallest_draft_is_too_big(phone_photo, monkeypatch):
    # 6000 x 4000 is 750 x 500 at libjpeg's 1/8 scale: load_image(long_side=...) can decode that.
    monkeypatch.setattr(image_files, "MAX_DECODED_PIXELS", 2_000_000)
    assert image.image_size(phone_photo) == (4000, 6000)
    monkeypatch.setattr(image_files, "MAX_DECODED_PIXELS", 300_000)
    with pytest.raises(UserError) as error:
        image.image_size(phone_photo)
    assert str(error.value) == (f"{phone_photo}: the header says 6000x4000 pixels (24 megapixels); even decoded at "
                                "1/8 size that is 750x500 (0.4 megapixels), more than scratchnst decodes "
                                "(0.3 megapixels); shrink it first")


@pytest.mark.parametrize("suffix", [".jpg", ".mpo"])
def test_a_sideways_jpeg_is_drafted_in_its_stored_orientation(tmp_path, decoded_sizes, suffix):
    picture = smooth_picture(800, 1200)
    path = tmp_path / f"portrait{suffix}"
    exif = Image.Exif()
    exif[0x0112] = 6
    options = {}
    if suffix == ".mpo":  # a multi-picture file, as Pillow opens many phone photos
        options = {"format": "MPO", "save_all": True, "append_images": [Image.fromarray(picture)]}
    Image.fromarray(picture).save(path, exif=exif, quality=95, **options)
    loaded = image.load_image(path, long_side=100)
    assert loaded.shape == (100, 67, 3)  # upright: portrait
    # Stored landscape 1200 x 800; the draft needs >= 3 x (100, 67) = (300, 201): 1/2 scale.
    assert set(decoded_sizes) == {(600, 400)}
    decoded_sizes.clear()
    full = image.load_image(path)
    assert full.shape == (1200, 800, 3) and set(decoded_sizes) == {(1200, 800)}
    expected = np.asarray(Image.fromarray(full.astype(np.uint8)).resize((67, 100), Image.LANCZOS), np.float32)
    assert np.abs(loaded - expected).mean() < 1


def test_a_jpeg_that_needs_no_reduction_is_bit_identical_to_a_full_decode(tmp_path, decoded_sizes):
    path = tmp_path / "small.jpg"
    Image.fromarray(smooth_picture(400, 600)).save(path)
    loaded = image.load_image(path, long_side=250)  # 600 // (3 * 250) < 2: no draft
    assert set(decoded_sizes) == {(600, 400)}
    with Image.open(path) as img:
        np.testing.assert_array_equal(loaded, np.asarray(img.convert("RGB").resize((250, 167), Image.LANCZOS),
                                                         np.float32))


# --------------------------------------------------------------------------- 5. save_image
@pytest.mark.parametrize("name, words", [
    ("out.xyz", ["unknown image extension '.xyz'; use .png or .jpg"]),
    ("out", ["unknown image extension ''; use .png or .jpg"]),
    ("out.psd", ["Pillow reads PSD files but cannot write them; use .png or .jpg"]),
])
def test_save_with_an_unusable_extension_is_a_usage_error(tmp_path, picture, name, words):
    path = tmp_path / name
    with pytest.raises(UsageError) as error:
        image.save_image(path, picture)
    assert error.value.exit_status == 2 and str(error.value).startswith(f"{path}: ")
    assert all(word in str(error.value) for word in words) and "\n" not in str(error.value)
    assert list(tmp_path.iterdir()) == []


def test_save_onto_a_folder_is_a_user_error(tmp_path, picture):
    path = tmp_path / "out.png"
    path.mkdir()
    with pytest.raises(UserError) as error:
        image.save_image(path, picture)
    assert_one_line_user_error(error, path, "cannot write the image", "it is a folder; give a file name")
    assert path.is_dir() and [p.name for p in tmp_path.iterdir()] == ["out.png"]


def test_save_into_a_missing_folder_is_a_user_error(tmp_path, picture):
    path = tmp_path / "results" / "out.png"
    with pytest.raises(UserError) as error:
        image.save_image(path, picture)
    assert_one_line_user_error(error, path, "cannot write the image", "check that the folder exists")
    assert list(tmp_path.iterdir()) == []


def test_save_into_a_read_only_folder_is_a_user_error(unwritable_folder, picture):
    with pytest.raises(UserError) as error:
        image.save_image(unwritable_folder / "out.png", picture)
    assert_one_line_user_error(error, unwritable_folder / "out.png", "Permission denied", "writable")
    assert not (unwritable_folder / "out.png").exists()
    assert not [p for p in unwritable_folder.iterdir() if p.name.startswith(".out.png")]


def _half_written_then(failure):
    def save(self, fp, *args, **kwargs):
        with open(fp, "wb") as f:
            f.write(b"\x89PNG half of it")
        raise failure
    return save


@pytest.mark.parametrize("failure", [OSError(28, "No space left on device"), PermissionError(13, "Permission denied"),
                                     KeyboardInterrupt()], ids=["disk full", "permission", "Ctrl-C"])
def test_a_failure_mid_save_keeps_the_old_file_and_leaves_no_temporary(tmp_path, picture, monkeypatch, failure):
    path = tmp_path / "out.png"
    image.save_image(path, picture)
    old = path.read_bytes()
    monkeypatch.setattr(Image.Image, "save", _half_written_then(failure))
    if isinstance(failure, OSError):
        with pytest.raises(UserError) as error:
            image.save_image(path, picture[::-1])
        assert_one_line_user_error(error, path, "cannot write the image", failure.strerror)
    else:
        with pytest.raises(KeyboardInterrupt):
            image.save_image(path, picture[::-1])
    assert path.read_bytes() == old
    assert [p.name for p in tmp_path.iterdir()] == ["out.png"]  # no .out.png.*.tmp.png sibling


# ------------------------------------------------------------- 6. the commands' one line
def _apply(capsys, network, photo, tmp_path):
    """`scratchnst apply NETWORK PHOTO -o OUT`: (exit status, the last line on stderr)."""
    status = cli.main(["apply", str(network), str(photo), "-o", str(tmp_path / "out.png")])
    err = capsys.readouterr().err.strip().splitlines()
    assert err and "Traceback" not in "\n".join(err)
    return status, err[-1]


@pytest.fixture
def network(tmp_path):
    return tiny_network(tmp_path)


def test_apply_to_a_network_file_says_it_is_hdf5_not_an_image(network, capsys, tmp_path):
    status, line = _apply(capsys, network, network, tmp_path)
    assert status == 1
    assert line == (f"scratchnst: error: {network}: an HDF5 file (a network or weights file?), not an image; "
                    "give a picture (.jpg or .png)")


def test_apply_to_a_decompression_bomb_says_the_decode_limit_not_memory_advice(network, capsys, tmp_path):
    bomb = _huge_png(tmp_path)
    status, line = _apply(capsys, network, bomb, tmp_path)
    assert status == 1 and "--size" not in line  # --size would still meet the decode limit
    assert line.endswith(": the header says 100000x100000 pixels (10000 megapixels), more than scratchnst decodes "
                         "(100 megapixels); shrink it first")
    assert not (tmp_path / "out.png").exists()


def test_apply_to_a_jpeg_cut_short_says_so_and_writes_nothing(network, capsys, tmp_path, rng):
    cut = _cut_with_end_marker("RGB")(tmp_path, rng)
    status, line = _apply(capsys, network, cut, tmp_path)
    assert status == 1 and line.startswith(f"scratchnst: error: {cut}: not a readable image (the JPEG's data ends early")
    assert not (tmp_path / "out.png").exists()


@pytest.mark.parametrize("command", ["stylize", "train"])
@pytest.mark.parametrize("bad", ["hdf5", "bomb"])
def test_stylize_and_train_tell_a_bad_style_image_before_any_settings(command, bad, network, tmp_path, capsys,
                                                                      squeezenet_weights_path):
    photo = tmp_path / "photos" / "a.png"
    photo.parent.mkdir()
    Image.fromarray(smooth_picture(40, 56)).save(photo)
    style = network if bad == "hdf5" else _huge_png(tmp_path)
    second = photo if command == "stylize" else photo.parent  # the content image, or the photos folder
    argv = [command, style, second, "-o", tmp_path / ("out.png" if command == "stylize" else "net2.h5"),
            "--weights", squeezenet_weights_path, "--size", "32"]
    status = cli.main([str(a) for a in argv])
    captured = capsys.readouterr()
    assert status == 1 and captured.out == ""  # nothing printed before the one line
    assert captured.err.strip().splitlines() == [f"scratchnst: error: {style}: " + (
        "an HDF5 file (a network or weights file?), not an image; give a picture (.jpg or .png)" if bad == "hdf5" else
        "the header says 100000x100000 pixels (10000 megapixels), more than scratchnst decodes (100 megapixels); "
        "shrink it first")]


@pytest.mark.parametrize("flag, example", [("-o", "out.png"), ("--log", "log.json"),
                                           ("--checkpoint", "checkpoint.npz"), ("--resume", "checkpoint.npz")])
def test_an_output_folder_is_answered_with_a_file_name_of_the_flags_kind(tmp_path, flag, example):
    folder = tmp_path / "out1"
    folder.mkdir()
    with pytest.raises(UsageError) as error:
        atomic.check_output(flag, folder)
    assert str(error.value) == f"{flag} {folder}: is a folder; give a file name in it, e.g. {flag} {folder / example}"
    with pytest.raises(UsageError) as error:  # train's -o is a network: its caller says so
        atomic.check_output("-o", folder, example="net.h5")
    assert str(error.value).endswith(f"e.g. -o {folder / 'net.h5'}")

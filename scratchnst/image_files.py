"""Image files through Pillow: open, decode any mode to RGB, resize, save; every failure one line.

`scratchnst.image` is what a reader of the course needs (load, resize, the preprocessing the weights
expect, save); this module is what it takes to make that true of any file a student hands over:
alpha laid over white, 16-bit scaled, palettes and CMYK converted, the EXIF orientation honoured,
big JPEGs decoded at a reduced scale, a size limit checked on the header before anything is
decoded, and missing, empty, unreadable or broken files (a JPEG whose data ends early too, which
libjpeg would paint grey below the cut; or an HDF5 network given as a picture) refused with a
one-line UserError that names the file and says what to do. `image_size` reads only the header,
so callers can check sizes before computing; `save_image` writes through scratchnst.atomic.
"""

import contextlib
import functools
import io
import stat
import struct
import warnings
import zlib
from pathlib import Path

import numpy as np
from PIL import ExifTags, Image, JpegImagePlugin

from scratchnst.atomic import atomic_path
from scratchnst.errors import UsageError, UserError


# ----------------------------------------------------------------------------------- load
# Decoding costs about 19 bytes a pixel on the way to float32 RGB (Pillow's 4-byte RGB, a 3-byte
# copy, numpy's 12), so 100 megapixels peak near 2 GB: every ordinary photo fits at full size (a
# 48-megapixel phone photo is 8000x6000), a laptop still has that memory, and a file whose header claims more
# (often a corrupt or malicious one: a few bytes can claim 100000x100000) is refused before a
# byte is decoded. Style transfer itself works at a few hundred pixels; bigger JPEGs still load
# when a long side is given, because they are then decoded at 1/2, 1/4 or 1/8 size (see load_image).
MAX_DECODED_PIXELS = 100_000_000

# A JPEG decoded at 1/2..1/8 scale (libjpeg's DCT scaling) is a cruder filter than Lanczos: drafting
# down to the target size itself changed a public-domain scan of The Starry Night at long side 512 by 8 grey
# levels on average (up to 79). Drafting only to >= 3x the target and letting Lanczos do the rest
# leaves about one grey level (Pillow's documentation of reducing_gap says the same of 3.0), and a
# 40-megapixel photo at long side 320 is still decoded at 1/8 scale.
DRAFT_GAP = 3

# libjpeg's smallest DCT scale: the least a JPEG can be decoded at (Image.draft), so the least
# load_image decodes, whatever long side is asked for.
SMALLEST_DRAFT = 8

# The first bytes of an HDF5 file, as h5py writes it (networks and weights). The format also allows
# the signature at 512, 1024, 2048, ... after a user block, but h5py writes none, and Pillow does not
# recognise such a file anyway (it is then "not a readable image").
HDF5_SIGNATURE = b"\x89HDF\r\n\x1a\n"

# EXIF orientation -> the transpose that stands the stored pixels upright (as ImageOps.exif_transpose).
_EXIF_TURNS = {
    2: Image.Transpose.FLIP_LEFT_RIGHT,
    3: Image.Transpose.ROTATE_180,
    4: Image.Transpose.FLIP_TOP_BOTTOM,
    5: Image.Transpose.TRANSPOSE,
    6: Image.Transpose.ROTATE_270,
    7: Image.Transpose.TRANSVERSE,
    8: Image.Transpose.ROTATE_90,
}
_SIDEWAYS = (Image.Transpose.TRANSPOSE, Image.Transpose.ROTATE_270, Image.Transpose.TRANSVERSE,
             Image.Transpose.ROTATE_90)  # orientations 5..8: stored width is the upright height

# What Pillow raises on a file it cannot decode: broken headers, bad checksums, missing bytes.
_DECODE_ERRORS = (OSError, SyntaxError, ValueError, EOFError, IndexError, KeyError, struct.error, zlib.error,
                  Image.DecompressionBombError)


def load_image(path, long_side=None):
    """Read an image file as RGB floats, upright as its EXIF orientation says.

    Every mode Pillow decodes becomes the same RGB 0..255:
        grey "L", 1-bit "1", palette "P", "CMYK" (incl. Adobe's inverted CMYK JPEGs), YCbCr:
            Pillow's convert("RGB"), exactly as before (8-bit sources stay bit-identical).
        alpha ("RGBA", "LA", "PA", or a PNG transparency entry): composited over white,
            rgb = (c * a + 255 * (255 - a)) / 255, a the alpha in 0..255.
        16-bit grey ("I;16", and "I" from 16-bit PGM/TIFF): grey = v / 257 (0..65535 -> 0..255),
            kept as float: no rounding to 8 bits, no clipping at 255.
        16-bit RGB(A) PNG: Pillow keeps only the high byte of each sample (error < 1 grey level).
        32-bit float "F" or 32-bit integer TIFFs: refused (there is no agreed brightness range).

    Args:
        path: an image file Pillow reads (JPEG, PNG, BMP, TIFF, WebP, GIF: first frame, ...).
        long_side: if given, resize so that the longer side has this many pixels (aspect kept,
            Lanczos). A JPEG (or MPO, as Pillow opens many phone photos) is then decoded by
            libjpeg at the smallest of 1/8, 1/4, 1/2 scale that still leaves DRAFT_GAP (3) times
            that size (Image.draft) before Lanczos takes it the rest of the way: a 40-megapixel
            phone photo at long_side 320 is decoded at 1/8 and never held at full size, and the
            result differs from a full decode + resize by about a grey level on average. Files
            that need no such reduction give exactly what they gave before (full decode, then
            Pillow's 8-bit Lanczos).

    Returns:
        float32 (H, W, 3), RGB, values 0..255; with long_side, max(H, W) == long_side.

    Raises:
        UserError: one line naming the file and what to do: missing, a folder, empty,
            unreadable, not an image, cut short, or more than MAX_DECODED_PIXELS to decode
            (checked on the header, after a JPEG's draft scale, before decoding anything).
    """
    path = Path(path)
    with _opened(path) as img:
        turn = _exif_turn(img)
        header_size, target = img.size, None
        if long_side is not None:
            target = _long_side_size(*_upright_size(img, turn), long_side)
            if isinstance(img, JpegImagePlugin.JpegImageFile):  # MPO phone photos are JPEGs too
                _draft(img, target, turn)
        _check_pixel_count(path, header_size, img.size)
        try:
            img.load()  # decodes the whole file: a truncated or corrupt one fails here
            if isinstance(img, JpegImagePlugin.JpegImageFile):
                _check_jpeg_data_ends(path, img)
            picture = _rgb(path, img.transpose(turn) if turn is not None else img)
        except _DECODE_ERRORS as error:
            raise _unreadable(path, error) from None
        if isinstance(picture, np.ndarray):  # alpha or 16-bit: float all the way
            return picture if target is None else resize_to(picture, *target)
        if target is not None:
            picture = picture.resize(target[::-1], Image.LANCZOS)
        return np.asarray(picture, dtype=np.float32)  # inside `with`: `picture` may be the open image itself


def image_size(path):
    """The (H, W) an image file will load as (upright, EXIF orientation applied), from its header only.

    Nothing is decoded, so this is instant even for huge files and does not notice a truncated
    one. A file that no call of load_image could decode is refused here already: more than
    MAX_DECODED_PIXELS at the smallest size load_image decodes it at (a JPEG at 1/8 scale, any
    other file whole).

    Args:
        path: an image file.

    Returns:
        (H, W) ints: load_image(path).shape[:2].

    Raises:
        UserError: as load_image, for a file that is missing, a folder, empty, unreadable, not an
            image, or too big to decode at any long side.
    """
    path = Path(path)
    with _opened(path) as img:
        # Callers read the header first to plan (the memory `apply` needs, the --size that fits):
        # advice built on a size that nothing can decode would lead straight into this error, so
        # it comes first. A JPEG passes if its 1/8-scale draft fits, as load_image with a long
        # side would then decode it (Image.draft rounds each side up).
        W, H = img.size
        if isinstance(img, JpegImagePlugin.JpegImageFile):
            W, H = -(-W // SMALLEST_DRAFT), -(-H // SMALLEST_DRAFT)
        _check_pixel_count(path, img.size, (W, H))
        return _upright_size(img, _exif_turn(img))


@contextlib.contextmanager
def _opened(path):
    """Open an image file (header only, nothing decoded yet), every failure a one-line UserError.

    Pillow's warnings are silenced while the file is open, and its decompression-bomb error
    bypassed: MAX_DECODED_PIXELS is checked instead, after a JPEG's draft scale
    (Image.MAX_IMAGE_PIXELS is left alone).
    """
    try:
        status = path.stat()
    except (FileNotFoundError, NotADirectoryError):
        raise UserError(f"{path}: no such image file; check the path") from None
    except OSError as error:
        raise _not_readable_file(path, error) from None
    if stat.S_ISDIR(status.st_mode):
        raise UserError(f"{path}: is a folder; give an image file")
    if not stat.S_ISREG(status.st_mode):  # a FIFO or a device would block or never end
        raise UserError(f"{path}: not a regular file; give an image file")
    if status.st_size == 0:
        raise UserError(f"{path}: the file is empty (0 bytes); give a JPEG or PNG image")
    try:
        file = open(path, "rb")
    except OSError as error:
        raise _not_readable_file(path, error) from None
    with file, warnings.catch_warnings():
        # Pillow warns about damage it works around (corrupt EXIF, odd chunks) and about size
        # (DecompressionBombWarning: MAX_DECODED_PIXELS is checked instead). The picture then
        # loads or is refused with one line; a warning would be a second line on stderr.
        warnings.simplefilter("ignore")
        # Checked before Pillow, whose HDF5 stub plugin (format "HDF5") opens the file as a
        # 32-bit float picture: the user would be told about pixel ranges instead of the mix-up.
        if file.read(len(HDF5_SIGNATURE)) == HDF5_SIGNATURE:
            raise UserError(f"{path}: an HDF5 file (a network or weights file?), not an image; "
                            "give a picture (.jpg or .png)")
        file.seek(0)
        try:
            img = _identify(file)
        except Image.UnidentifiedImageError:
            raise UserError(f"{path}: not a readable image (cannot identify image file); "
                            "give a JPEG or PNG file") from None
        except _DECODE_ERRORS as error:
            raise _unreadable(path, error) from None
        with img:
            _check_pixel_type(path, img)
            yield img


def _identify(file):
    """Image.open(file), but without Pillow's refusal of images over 2 * MAX_IMAGE_PIXELS.

    Pillow refuses those inside open, before anyone can see their size or draft a JPEG smaller;
    scratchnst applies its own limit afterwards. On that refusal the file is opened again the way
    Image.open does it (the first registered format whose prefix check accepts the file).
    """
    try:
        return Image.open(file)
    except Image.DecompressionBombError:
        pass
    Image.init()
    file.seek(0)
    prefix = file.read(16)
    for name in Image.ID:
        factory, accept = Image.OPEN[name]
        accepted = accept(prefix) if accept is not None else True
        if not accepted or isinstance(accepted, str):  # a string is Pillow's "no, because ..."
            continue
        file.seek(0)
        try:
            return factory(file, getattr(file, "name", ""))
        except (SyntaxError, IndexError, TypeError, struct.error):
            continue
    raise Image.UnidentifiedImageError("cannot identify image file")


# What libjpeg paints where a JPEG's data ends early: it only warns ("premature end of data"),
# Pillow does not pass the warning on, and every coefficient of the blocks that follow stays 0,
# which decodes to the level shift: exactly 128 in every channel. A file cut short by a copy or a
# download fails to load (no end marker); one whose end marker was added back, or whose header
# claims more rows than its data holds, loads without error, grey below the cut. Photos and
# paintings never end in rows of exactly 128 on every channel, so the bottom sixteenth of the
# stored rows all at 128 is taken for such a file; a picture that is grey all over is let through
# (there is no cut to see), and one that truly ends in flat grey can be given as a PNG.
_LIBJPEG_FILL = 128
_JPEG_FILL_SHARE = 16


def _check_jpeg_data_ends(path, img):
    """UserError if a decoded JPEG's last rows (as stored, before any EXIF turn) are libjpeg's fill."""
    if img.mode not in ("L", "RGB"):   # CMYK and YCCK decode the fill to other values
        return
    W, H = img.size
    band = max(1, H // _JPEG_FILL_SHARE)
    filled = 0
    while filled < H:   # band by band upwards: the whole picture is copied only if it is all fill
        rows = np.asarray(img.crop((0, max(0, H - filled - band), W, H - filled)))
        flat = (rows == _LIBJPEG_FILL).reshape(rows.shape[0], -1).all(axis=1)
        if not flat.all():
            filled += int(np.argmin(flat[::-1]))
            break
        filled += rows.shape[0]
    if band <= filled < H:
        raise UserError(f"{path}: not a readable image (the JPEG's data ends early: its last {filled} of {H} rows "
                        "are the flat grey libjpeg fills in where data is missing); copy or download it again "
                        "(a picture that truly ends in flat grey: give it as a PNG)")


def _check_pixel_type(path, img):
    """Refuse pixel types without an agreed 0..255 mapping, before decoding them."""
    bits = np.ravel(getattr(img, "tag_v2", {}).get(258, 0))  # a TIFF's BitsPerSample, one per channel
    if img.mode == "F" or (img.mode == "I" and bits.max(initial=0) > 16):
        kind = "floating-point" if img.mode == "F" else "integer"
        raise UserError(f"{path}: 32-bit {kind} pixels have no agreed brightness range (0..1? 0..255? 0..65535?); "
                        "save it as an 8- or 16-bit PNG or a JPEG")


def _exif_turn(img):
    """The Image.Transpose that stands the picture upright per its EXIF orientation, or None."""
    if img.format == "TIFF":
        # Pillow's TIFF reader turns the picture itself: its size is upright from the start and
        # load() rotates the pixels (and drops the tag); turning again would undo that.
        return None
    if img.format == "PNG" and "exif" not in img.info:
        # Pillow would decode the whole file to look for an eXIf chunk after the pixels; the
        # PNG specification puts it before them, which is where Pillow and exiftool write it.
        return None
    try:
        orientation = img.getexif().get(ExifTags.Base.Orientation)
    except Exception:  # noqa: BLE001 - broken EXIF blocks are common (editors, messengers) and
        return None    # must never stop a picture from loading: it then loads as stored
    return _EXIF_TURNS.get(orientation) if isinstance(orientation, int) else None


def _upright_size(img, turn):
    """(H, W) of the picture once turned upright."""
    W, H = img.size
    return (W, H) if turn in _SIDEWAYS else (H, W)


def _draft(img, target, turn):
    """Let libjpeg decode at 1/2, 1/4 or 1/8 size, the smallest still >= DRAFT_GAP times `target` (upright (H, W))."""
    H, W = target
    if turn in _SIDEWAYS:
        H, W = W, H  # the file stores the picture sideways
    H, W = H * DRAFT_GAP, W * DRAFT_GAP
    # Asked only when 1/2 or less is possible (at scale 1 Pillow's draft changes nothing anyway).
    if min(img.width // W, img.height // H) >= 2:
        img.draft("RGB", (W, H))


def _check_pixel_count(path, header_size, size):
    """Refuse to decode more than MAX_DECODED_PIXELS pixels.

    Args:
        header_size: (W, H) the file's header gives; size: (W, H) it will be decoded at (smaller
            after a JPEG's draft).
    """
    W, H, limit = *size, MAX_DECODED_PIXELS
    if W * H <= limit:
        return
    W0, H0 = header_size
    message = f"{path}: the header says {W0}x{H0} pixels ({_megapixels(W0 * H0)} megapixels)"
    if (W, H) != (W0, H0):
        message += f"; even decoded at 1/{round(W0 / W)} size that is {W}x{H} ({_megapixels(W * H)} megapixels)"
    raise UserError(f"{message}, more than scratchnst decodes ({_megapixels(limit)} megapixels); shrink it first")


def _megapixels(pixels):
    """10_000_000_000 -> "10000", 56_250_000 -> "56.2"."""
    return f"{pixels / 1e6:.1f}".removesuffix(".0")


def _rgb(path, img):
    """Decoded pixels as RGB 0..255.

    Returns:
        a Pillow "RGB" image for 8-bit sources (resized by Pillow in 8 bits, as always), or a
        float32 (H, W, 3) array for sources with alpha or 16 bits, whose values are not whole
        numbers: rgb = (c * a + 255 * (255 - a)) / 255 over white; grey = v / 257 for 16 bits.
    """
    if img.mode in ("I;16", "I;16L", "I;16B", "I;16N", "I"):
        grey = np.asarray(img)
        if img.mode == "I" and grey.size and (grey.min() < 0 or grey.max() > 65535):
            raise UserError(f"{path}: 32-bit integer pixels (up to {grey.max()}) have no agreed brightness range "
                            "(0..255? 0..65535?); save it as an 8- or 16-bit PNG or a JPEG")
        grey = grey.astype(np.float32) / np.float32(257)  # 0..65535 -> 0..255: 65535 / 257 == 255 exactly
        return np.repeat(grey[:, :, np.newaxis], 3, axis=2)
    if img.mode in ("RGBA", "LA", "PA", "RGBa", "La") or "transparency" in img.info:
        # Over white, not alpha dropped: fully transparent pixels hold whatever colour the editor
        # left there (often black, sometimes garbage), so dropping alpha turns a logo's clear
        # background into black blotches. White is what a viewer shows on a page.
        rgba = np.asarray(img.convert("RGBA"), dtype=np.float32)
        alpha = rgba[:, :, 3:]
        return (rgba[:, :, :3] * alpha + 255 * (255 - alpha)) / np.float32(255)
    return img if img.mode == "RGB" else img.convert("RGB")


def _unreadable(path, error):
    """The UserError for a file Pillow failed to open or decode."""
    reason = str(error).splitlines()[0].rstrip(".") if str(error) else type(error).__name__
    if "truncated" in reason or isinstance(error, EOFError):
        return UserError(f"{path}: not a readable image (the file is cut short: it ends before the image data "
                         "does); copy or download it again")
    return UserError(f"{path}: not a readable image ({reason}); give a JPEG or PNG file")


def _not_readable_file(path, error):
    """The UserError for a file the operating system will not let us read."""
    if isinstance(error, PermissionError):
        return UserError(f"{path}: no permission to read this file; change its permissions (chmod u+r) "
                         "or copy it somewhere readable")
    return UserError(f"{path}: cannot read this file ({error.strerror or error}); check the path")


def _long_side_size(H, W, long_side):
    """(H', W') with max(H', W') == long_side and the aspect ratio kept (each side >= 1)."""
    if long_side < 1:
        raise ValueError(f"long_side must be >= 1, got {long_side}")
    scale = long_side / max(H, W)
    return max(1, round(H * scale)), max(1, round(W * scale))


# --------------------------------------------------------------------------------- resize
def resize_to(image, height, width):
    """Resize a float image to (height, width) with Lanczos filtering.

    Args:
        image: (H, W, 3) float, 0..255.
        height, width: the new size.

    Returns:
        (height, width, 3), same dtype, clipped to 0..255 (Lanczos overshoots a little at edges).
    """
    channels = [
        # Pillow's float mode "F" resizes without rounding to 8 bits.
        np.asarray(Image.fromarray(np.ascontiguousarray(image[:, :, c], dtype=np.float32), mode="F")
                   .resize((width, height), Image.LANCZOS))
        for c in range(image.shape[2])
    ]
    return np.clip(np.stack(channels, axis=-1), 0, 255).astype(image.dtype, copy=False)


def resize_long_side(image, long_side):
    """Resize a float image so that its longer side has `long_side` pixels, keeping the aspect.

    Args:
        image: (H, W, 3) float, 0..255.
        long_side: pixels of the longer side after resizing.

    Returns:
        (H', W', 3), same dtype, max(H', W') == long_side.
    """
    return resize_to(image, *_long_side_size(image.shape[0], image.shape[1], long_side))


def to_uint8(image):
    """Clip to 0..255 and round to the nearest integer: float (H, W[, 3]) -> uint8, same shape."""
    return np.clip(np.rint(image), 0, 255).astype(np.uint8)



# ----------------------------------------------------------------------------------- save
# JPEG at quality 95 and without chroma subsampling (4:4:4): a stylised image's colour changes from
# one pixel to the next, and libjpeg's default 4:2:0 averages the colours of each 2x2 block. Saved
# so, a 200 px stylised Tubingen (The Scream, 100 iterations) cost 9.8 times what the optimiser
# reached, 5.38e5 against 5.51e4; in 4:4:4, 8.7e4 (a PNG: 5.51e4, the rounding to 0..255 only).
_SAVE_OPTIONS = {"JPEG": {"quality": 95, "subsampling": 0}}

# The longest side each format holds, where Pillow's encoder fails beyond it (measured with Pillow
# 13: libjpeg's "Maximum supported image dimension", "Image size exceeds WebP limit", 16-bit header
# fields that overflow) or, for AVIF, writes a file that libavif then refuses to read (its 32768
# default). Checked before encoding, and by `apply` before computing: libjpeg writes its complaint
# straight to stderr, a second line no exception can take back. PDF pages in colour are JPEGs; a
# PCX row of 65535 pixels is padded to an even 65536 bytes, one more than its 16-bit field holds.
MAX_SIDE = {"JPEG": 65500, "MPO": 65500, "PDF": 65500, "WEBP": 16383, "AVIF": 32768, "GIF": 65535, "TGA": 65535,
            "SGI": 65535, "PCX": 65534}
# An icon under 16 pixels a side is stored as it is, and ICO holds at most 256x256; a bigger one
# Pillow shrinks into square icons of 16 to 256 pixels (what an .ico is for, so it is allowed).
ICO_MAX_SIDE, ICO_SMALLEST_ICON = 256, 16
_FORMAT_NAMES = {"WEBP": "WebP"}


def writable_format(path, flag=None):
    """The Pillow format `save_image` writes for path's extension; UsageError unless it can hold RGB.

    Checked by encoding a 1x1 RGB picture in memory: Pillow knows formats it reads but cannot
    write (.psd), and formats it writes but not in colour (.xbm, .blp); a run must learn that
    before it starts, not when it saves the result.

    Args:
        path: the image file to write (only its extension is looked at).
        flag: None, or the option that named it ("-o"), to start the message with.

    Returns:
        the format name, e.g. "PNG".
    """
    suffix = Path(path).suffix
    label = f"{flag} {path}" if flag else str(path)
    image_format = Image.registered_extensions().get(suffix.lower())
    if image_format is None and Path(path).is_dir():  # the folder to put it in, given for the file
        raise UsageError(f"{label}: is a folder; give a file name in it, e.g. {flag or '-o'} {Path(path) / 'out.png'}")
    if image_format is None:
        raise UsageError(f"{label}: unknown image extension {suffix!r}; use .png or .jpg")
    if image_format not in Image.SAVE:
        raise UsageError(f"{label}: Pillow reads {image_format} files but cannot write them; use .png or .jpg")
    if not _writes_rgb(image_format):
        raise UsageError(f"{label}: Pillow cannot write a colour image as {image_format}; use .png or .jpg")
    return image_format


@functools.lru_cache(maxsize=None)
def _writes_rgb(image_format):
    """True if Pillow encodes a 1x1 RGB picture as image_format (tried once per format and process)."""
    try:
        Image.new("RGB", (1, 1)).save(io.BytesIO(), format=image_format, **_SAVE_OPTIONS.get(image_format, {}))
    except Exception:  # noqa: BLE001 - whatever the encoder raises, the answer is the same
        return False
    return True


def size_problem(path, height, width):
    """None, or the one line saying that a height x width picture does not fit path's format.

    Args:
        path: the image file to write (only its extension is looked at; see writable_format).
        height, width: the picture's size in pixels.

    Returns:
        None, or "PATH: WxH is too large for WebP (at most 16383 pixels a side); save as .png".
    """
    image_format = writable_format(path)
    name = _FORMAT_NAMES.get(image_format, image_format)
    if image_format == "ICO":
        if min(height, width) < ICO_SMALLEST_ICON and max(height, width) > ICO_MAX_SIDE:
            return (f"{path}: {width}x{height} is too large for ICO (a picture under {ICO_SMALLEST_ICON} pixels a side "
                    f"is stored whole, and at most {ICO_MAX_SIDE}x{ICO_MAX_SIDE}); save as .png")
        return None
    limit = MAX_SIDE.get(image_format)
    if limit is not None and max(height, width) > limit:
        return f"{path}: {width}x{height} is too large for {name} (at most {limit} pixels a side); save as .png"
    return None


def save_image(path, image):
    """Write an image file atomically (scratchnst.atomic.atomic_path: a temporary file, then a rename).

    A reader never sees a half-written file, and a failure (full disk, Ctrl-C) leaves any
    previous file at `path` as it was and no temporary file behind.

    Args:
        path: destination; the format follows the extension (.png, .jpg, ...; JPEG at quality 95, 4:4:4).
        image: (H, W, 3) RGB or (H, W) grey; float 0..255 (clipped and rounded) or uint8.

    Returns:
        Path of the written file.

    Raises:
        UsageError: an extension Pillow does not write (exit status 2: the command line is wrong).
        UserError: the picture is too large for the format (size_problem) or its encoder refuses
            it; `path` is a folder, or its folder is missing, not writable or full.
    """
    path = Path(path)
    image = np.asarray(image)
    if not (image.ndim == 2 or (image.ndim == 3 and image.shape[2] == 3)):
        raise ValueError(f"image must be (H, W, 3) or (H, W), got {image.shape}")
    image_format = writable_format(path)
    problem = size_problem(path, *image.shape[:2])
    if problem:
        raise UserError(problem)
    if image.dtype != np.uint8:
        image = to_uint8(image)
    with atomic_path(path, "image") as tmp:
        try:
            Image.fromarray(image).save(tmp, format=image_format, **_SAVE_OPTIONS.get(image_format, {}))
        except OSError as error:
            if error.errno is not None:   # the file system's (full disk, permissions): atomic_path tells it
                raise
            raise _encoder_refused(path, image_format, image.shape, error) from None   # Pillow's, no errno
        except (ValueError, OverflowError, RuntimeError, struct.error) as error:
            raise _encoder_refused(path, image_format, image.shape, error) from None
    return path


def _encoder_refused(path, image_format, shape, error):
    """The UserError for a picture Pillow's encoder refused (a limit size_problem does not know yet).

    Told apart from the disk's failures, which atomic_path words ("check that the folder exists..."):
    an encoder's OSError has no errno, its other refusals are not OSErrors at all.
    """
    reason = " ".join(str(error).split())[:120] or type(error).__name__
    H, W = shape[:2]
    return UserError(f"{path}: the {image_format} encoder cannot write this {W}x{H} picture ({reason}); save as .png")

"""Images in and out: load, resize, the preprocessing the weights expect, and its inverse; save.

This is the only module that knows the channel order and the means the pretrained networks were
trained with. Two modes:

    "caffe"        Keras VGG-19, Keras SqueezeNet and MatConvNet VGG-19 (all from Caffe models):
                   RGB -> BGR, pixels 0..255, minus the BGR means [103.939, 116.779, 123.68]
    "torchvision"  weights converted from torchvision's VGG-19 (.pth):
                   RGB, pixels / 255, minus mean (0.485, 0.456, 0.406), divided by std (0.229, 0.224, 0.225)

Images are float arrays (H, W, 3), RGB, 0..255 (float32 when they come from a file); network
inputs are (1, H, W, 3) in the mode's space. `deprocess` is the exact inverse of `preprocess`;
clipping and rounding to uint8 happen only when saving (`to_uint8`).
"""

import os
import secrets
from pathlib import Path

import numpy as np
from PIL import Image, ImageOps

from scratchnst.errors import UserError

# B, G, R order: the Caffe models were trained on BGR images (OpenCV's order).
CAFFE_BGR_MEANS = (103.939, 116.779, 123.68)
TORCHVISION_MEAN = (0.485, 0.456, 0.406)  # R, G, B, for pixels in [0, 1]
TORCHVISION_STD = (0.229, 0.224, 0.225)

PREPROCESSING = {
    "caffe": "BGR, pixels 0..255 minus the BGR means [103.939, 116.779, 123.68]",
    "torchvision": "RGB, pixels / 255 minus mean (0.485, 0.456, 0.406), divided by std (0.229, 0.224, 0.225)",
}


# ----------------------------------------------------------------------------------- load
def load_image(path, long_side=None):
    """Read an image file as RGB floats, turned upright as its EXIF orientation says.

    Args:
        path: any format Pillow reads (JPEG, PNG, ...); grey, palette, RGBA and CMYK images are
            converted to RGB (alpha is dropped).
        long_side: if given, resize so that the longer side has this many pixels (aspect kept).

    Returns:
        float32 (H, W, 3), RGB, values 0..255.

    Raises:
        UserError: the file is missing or is not a readable image.
    """
    path = Path(path)
    if not path.is_file():
        raise UserError(f"{path}: no such image file")
    try:
        with Image.open(path) as img:
            # Phones store portrait photos sideways plus an orientation tag; honour it, or the
            # content image comes out rotated.
            img = ImageOps.exif_transpose(img)
            img = img.convert("RGB")  # also forces the decoder to read the whole file
    except (OSError, SyntaxError, ValueError, Image.DecompressionBombError) as error:
        # OSError covers unknown formats (UnidentifiedImageError) and truncated files
        raise UserError(f"{path}: not a readable image ({error})") from None
    if long_side is not None:
        img = img.resize(_long_side_size(img.height, img.width, long_side)[::-1], Image.LANCZOS)
    return np.asarray(img, dtype=np.float32)


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


# ---------------------------------------------------------------------- preprocess / inverse
def _float_dtype(a):
    """The dtype preprocessing computes in: the array's own if it is floating, else float32."""
    return a.dtype if np.issubdtype(a.dtype, np.floating) else np.dtype(np.float32)


def _check_mode(mode):
    if mode not in PREPROCESSING:
        raise ValueError(f"preprocessing mode must be one of {sorted(PREPROCESSING)}, got {mode!r}")


def preprocess(image, mode="caffe"):
    """Turn an RGB image into the network input its weights expect.

    Args:
        image: (H, W, 3) RGB, 0..255 (uint8 or float).
        mode: "caffe" or "torchvision" (see the module docstring; `Network.preprocessing` says which).

    Returns:
        (1, H, W, 3), float (the image's dtype if floating, else float32):
            caffe:        x = image[..., ::-1] - [103.939, 116.779, 123.68]
            torchvision:  x = (image / 255 - mean) / std
    """
    _check_mode(mode)
    image = np.asarray(image)
    if image.ndim != 3 or image.shape[2] != 3:
        raise ValueError(f"image must be (H, W, 3), got {image.shape}")
    dtype = _float_dtype(image)
    image = image.astype(dtype, copy=False)
    if mode == "caffe":
        x = image[:, :, ::-1] - np.asarray(CAFFE_BGR_MEANS, dtype=dtype)
    else:
        mean, std = np.asarray(TORCHVISION_MEAN, dtype=dtype), np.asarray(TORCHVISION_STD, dtype=dtype)
        x = (image / dtype.type(255) - mean) / std
    return x[np.newaxis]


def deprocess(x, mode="caffe"):
    """The exact inverse of `preprocess`: a network input back to an RGB image.

    Args:
        x: (1, H, W, 3) float, in the mode's space.
        mode: "caffe" or "torchvision".

    Returns:
        (H, W, 3) RGB, same dtype as x, NOT clipped (values outside 0..255 survive, so that
        deprocess(preprocess(image)) == image up to rounding); `to_uint8` clips for saving.
            caffe:        image = (x + [103.939, 116.779, 123.68])[..., ::-1]
            torchvision:  image = (x * std + mean) * 255
    """
    _check_mode(mode)
    x = np.asarray(x)
    if x.ndim != 4 or x.shape[0] != 1 or x.shape[3] != 3:
        raise ValueError(f"x must be (1, H, W, 3), got {x.shape}")
    dtype = _float_dtype(x)
    x = x[0].astype(dtype, copy=False)
    if mode == "caffe":
        return (x + np.asarray(CAFFE_BGR_MEANS, dtype=dtype))[:, :, ::-1].copy()
    return (x * np.asarray(TORCHVISION_STD, dtype=dtype) + np.asarray(TORCHVISION_MEAN, dtype=dtype)) * dtype.type(255)


def to_uint8(image):
    """Clip to 0..255 and round to the nearest integer: float (H, W[, 3]) -> uint8, same shape."""
    return np.clip(np.rint(image), 0, 255).astype(np.uint8)


# ----------------------------------------------------------------------------------- save
def save_image(path, image):
    """Write an image file atomically: a temporary file in the same folder, then os.replace.

    A reader never sees a half-written file, and a failure (full disk, Ctrl-C) leaves any
    previous file at `path` as it was.

    Args:
        path: destination; the format follows the extension (.png, .jpg, ...).
        image: (H, W, 3) RGB or (H, W) grey; float 0..255 (clipped and rounded) or uint8.

    Returns:
        Path of the written file.

    Raises:
        UserError: unknown extension, or the folder is missing or not writable.
    """
    path = Path(path)
    image = np.asarray(image)
    if not (image.ndim == 2 or (image.ndim == 3 and image.shape[2] == 3)):
        raise ValueError(f"image must be (H, W, 3) or (H, W), got {image.shape}")
    image_format = Image.registered_extensions().get(path.suffix.lower())
    if image_format is None:
        raise UserError(f"{path}: unknown image extension {path.suffix!r}; use .png or .jpg")
    if image.dtype != np.uint8:
        image = to_uint8(image)
    options = {"quality": 95} if image_format == "JPEG" else {}
    # A dot-name in the same folder: os.replace is atomic only within one file system.
    tmp = path.with_name(f".{path.name}.{secrets.token_hex(4)}.tmp")
    try:
        Image.fromarray(image).save(tmp, format=image_format, **options)
        os.replace(tmp, path)
    except OSError as error:
        tmp.unlink(missing_ok=True)
        raise UserError(f"cannot write {path}: {error.strerror or error}; check that the folder exists "
                        "and is writable") from None
    except BaseException:
        tmp.unlink(missing_ok=True)  # Ctrl-C or a bug: still leave no temporary file behind
        raise
    return path

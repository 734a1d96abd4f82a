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

Reading, resizing and writing files is done by Pillow, in `scratchnst.image_files` (whatever file
a student hands over is converted, or refused with one line that says what to do); its functions
are the ones named here:

    img = load_image("photo.jpg", long_side=320)    # (H, W, 3) float32 RGB 0..255, upright
    x = preprocess(img, "caffe")                      # (1, H, W, 3) network input
    save_image("out.png", deprocess(x, "caffe"))      # clipped and rounded to uint8 when saved
"""

import numpy as np

from scratchnst.image_files import (image_size, load_image, resize_long_side, resize_to, save_image, to_uint8,
                                    writable_format)

__all__ = ["PREPROCESSING", "preprocess", "deprocess", "load_image", "image_size", "resize_to", "resize_long_side",
           "save_image", "to_uint8", "writable_format"]

# B, G, R order: the Caffe models were trained on BGR images (OpenCV's order).
CAFFE_BGR_MEANS = (103.939, 116.779, 123.68)
TORCHVISION_MEAN = (0.485, 0.456, 0.406)  # R, G, B, for pixels in [0, 1]
TORCHVISION_STD = (0.229, 0.224, 0.225)

PREPROCESSING = {
    "caffe": "BGR, pixels 0..255 minus the BGR means [103.939, 116.779, 123.68]",
    "torchvision": "RGB, pixels / 255 minus mean (0.485, 0.456, 0.406), divided by std (0.229, 0.224, 0.225)",
}


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

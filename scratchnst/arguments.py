"""The checks every layer and cost makes of its arguments: floating-point arrays, their shapes, positive integers.

Every public forward and backward of the math modules (layers, fast_conv, transformer_layers,
upsample_conv, costs) starts with them. They read dtypes and shapes, never the data: the layers run
thousands of times per training step. They live apart from `layers` so that a module that only
needs them (costs) does not import the layers: in a student copy (`scratchnst exercises`) a
mistake in layers.py must not stop the costs' exercises from loading.
"""

import numpy as np


def check_floats(function, **arrays):
    """TypeError unless every array given is a NumPy array of a floating-point dtype.

    Args:
        function: the caller's name, for the message.
        arrays: name=array for each array argument.

    Integers and bools would be computed in their own dtype (a uint8 convolution wraps around, an
    integer content gradient truncates to 0) or fail deep inside NumPy; complex and object arrays
    are no activations. float16, float32 and float64 are all accepted and kept.
    """
    for name, a in arrays.items():
        if not isinstance(a, np.ndarray):
            # TensorFlow's and PyTorch's tensors have .numpy() (PyTorch's own error says to detach one first
            # where it must)
            hint = f" ({name}.numpy() gives one)" if callable(getattr(a, "numpy", None)) else ""
            raise TypeError(f"{function}: {name} is a {type(a).__name__}, not a NumPy array{hint}; "
                            "give floating-point arrays (float32 or float64)")
        if a.dtype.kind != "f":
            raise TypeError(f"{function}: {name} has dtype {a.dtype}; give floating-point arrays "
                            "(float32 or float64)")


def check_dout(function, dout, out_shape):
    """check_floats for dout, and ValueError unless dout has the shape of the layer's output.

    A dout of another shape would not always fail by itself: NumPy broadcasts a (1, 1, 1, 1) one,
    and loops over windows read a smaller one without complaint. Either gives wrong gradients.
    """
    check_floats(function, dout=dout)
    if dout.shape != tuple(out_shape):
        raise ValueError(f"{function}: dout has shape {dout.shape}, the layer's output {tuple(out_shape)}")


def check_images(function, **arrays):
    """ValueError unless every array given is a batch of images (N, H, W, C): four axes.

    One image without its batch axis, (H, W, C), would otherwise fail deep inside ("not enough values
    to unpack"), or be read with its rows taken for images where a layer's loops do not unpack.
    """
    for name, a in arrays.items():
        if a.ndim != 4:
            hint = f" (one image: {name}[None])" if a.ndim == 3 else ""
            raise ValueError(f"{function}: {name} has shape {a.shape}; give a batch of images (N, H, W, C){hint}")


def check_kernel(function, w, C_in):
    """ValueError unless w is a kernel (KH, KW, C_in, C_out) for an input of C_in channels."""
    if w.ndim != 4:
        raise ValueError(f"{function}: w has shape {w.shape}; give kernels (KH, KW, C_in, C_out)")
    if w.shape[2] != C_in:
        raise ValueError(f"{function}: kernel expects {w.shape[2]} input channels, input has {C_in}")


def per_channel(function, name, v, C):
    """v as a (C,) array (a view, never a copy) when its shape is (C,) or the course's (1, 1, 1, C); else ValueError.

    The two shapes mean the same thing: one value per channel. Any other shape would broadcast into
    something else without a word: a (C, 1) bias makes a (C, C) plane, a (N, 1, 1, C) one adds
    another bias to each image, a scalar gamma scales every channel alike; or it fails deep inside.
    The gradient with respect to it comes back as (C,), which `v - lr * dv` broadcasts to v's shape.
    """
    if v.shape == (C,):
        return v
    if v.shape == (1, 1, 1, C):
        return v.reshape(C)
    raise ValueError(f"{function}: {name} has shape {v.shape}; give one value per channel: ({C},), "
                     f"or (1, 1, 1, {C}) as the course writes it")


def positive_int(name, value):
    """value as a Python int, or ValueError unless it is a Python or NumPy integer >= 1 (not True).

    A float (2.0) or a pair ((2, 2)) would otherwise fail later, in a slice or a comparison, with
    a message that names neither the argument nor the fix. A NumPy integer comes back as a Python
    int: index arithmetic in a small type (np.uint8(2) * 300) would wrap around.
    """
    if not isinstance(value, (int, np.integer)) or isinstance(value, bool) or value < 1:
        raise ValueError(f"{name} must be a positive integer, got {value!r}")
    return int(value)

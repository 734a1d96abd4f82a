"""The checks every layer and cost makes of its arguments: floating-point arrays, dout's shape, positive integers.

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
            raise TypeError(f"{function}: {name} is a {type(a).__name__}, not a NumPy array; "
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


def positive_int(name, value):
    """value as a Python int, or ValueError unless it is a Python or NumPy integer >= 1 (not True).

    A float (2.0) or a pair ((2, 2)) would otherwise fail later, in a slice or a comparison, with
    a message that names neither the argument nor the fix. A NumPy integer comes back as a Python
    int: index arithmetic in a small type (np.uint8(2) * 300) would wrap around.
    """
    if not isinstance(value, (int, np.integer)) or isinstance(value, bool) or value < 1:
        raise ValueError(f"{name} must be a positive integer, got {value!r}")
    return int(value)

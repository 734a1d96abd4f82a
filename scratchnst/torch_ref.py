"""The same layers in PyTorch, used only to check ours (tests, `scratchnst gradcheck`, `scratchnst bench`).

Every function takes and returns torch tensors in OUR layout: activations (N, H, W, C) and kernels
(KH, KW, C_in, C_out). The conversion to PyTorch's NCHW / OIHW happens here and nowhere else:

    NHWC -> NCHW   x.permute(0, 3, 1, 2)
    HWIO -> OIHW   w.permute(3, 2, 0, 1)

Padding follows Keras/TensorFlow (see layers.conv_output_size): 'same' may pad one more zero at the
bottom/right than at the top/left, which PyTorch's symmetric `padding=` cannot express, so the
padding is applied explicitly with F.pad before a 'valid' operation.

torch is imported when a function is first called, so that importing this module never requires it.
"""

import numpy as np

from scratchnst.layers import conv_output_size


def available():
    """True if torch can be imported."""
    try:
        import torch  # noqa: F401
    except ImportError:
        return False
    return True


def _torch():
    import torch

    return torch


def to_torch(a, requires_grad=False):
    """A NumPy array as a torch tensor of the same dtype (a copy: torch never shares our memory)."""
    t = _torch().from_numpy(np.array(a, copy=True))
    return t.requires_grad_(requires_grad)


def to_numpy(t):
    """A torch tensor as a NumPy array (detached, on the CPU)."""
    return t.detach().cpu().numpy()


def _pads(x, KH, KW, stride, padding):
    """F.pad's (left, right, top, bottom) for x (N, H, W, C) under Keras padding rules."""
    _, H, W, _ = x.shape
    _, top, bottom = conv_output_size(H, KH, stride, padding)
    _, left, right = conv_output_size(W, KW, stride, padding)
    return (left, right, top, bottom)


def conv2d(x, w, b, stride=1, padding="same"):
    """Convolution: x (N, H, W, C_in), w (KH, KW, C_in, C_out), b (C_out,) -> (N, H_out, W_out, C_out)."""
    F = _torch().nn.functional
    KH, KW = w.shape[0], w.shape[1]
    xp = F.pad(x.permute(0, 3, 1, 2), _pads(x, KH, KW, stride, padding))
    out = F.conv2d(xp, w.permute(3, 2, 0, 1), b, stride=stride)
    return out.permute(0, 2, 3, 1)


def relu(x):
    """ReLU, any shape."""
    return _torch().relu(x)


def max_pool(x, size=2, stride=2, padding="valid"):
    """Max pooling (N, H, W, C) -> (N, H_out, W_out, C); 'same' pads with -inf, never chosen."""
    F = _torch().nn.functional
    xp = F.pad(x.permute(0, 3, 1, 2), _pads(x, size, size, stride, padding), value=-float("inf"))
    return F.max_pool2d(xp, size, stride).permute(0, 2, 3, 1)


def avg_pool(x, size=2, stride=2, padding="valid"):
    """Average pooling (N, H, W, C) -> (N, H_out, W_out, C); 'same' averages the real cells only (Keras)."""
    torch = _torch()
    F = torch.nn.functional
    pads = _pads(x, size, size, stride, padding)
    total = F.avg_pool2d(F.pad(x.permute(0, 3, 1, 2), pads), size, stride, divisor_override=1)
    ones = torch.ones((1, 1) + tuple(x.shape[1:3]), dtype=x.dtype)
    count = F.avg_pool2d(F.pad(ones, pads), size, stride, divisor_override=1)
    return (total / count).permute(0, 2, 3, 1)


def concat(xs):
    """Concatenation on the channel axis (last)."""
    return _torch().cat(xs, dim=-1)

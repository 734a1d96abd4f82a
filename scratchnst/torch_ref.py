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


# ------------------------------------------------------------------------------- the costs
# The course's costs (costs.py) written as PyTorch sees them: autograd derives their gradients, so
# they check the hand-derived ones. Activations are one image's, (1, nH, nW, nC) in our layout, or
# (1, nC, nH, nW) as the PyTorch networks of torch_network make them (channels_last=False).
def unroll(a, channels_last=True):
    """One image's activations as the course's (nC, nH*nW) matrix."""
    if channels_last:
        return a.reshape(-1, a.shape[-1]).T
    return a.reshape(a.shape[1], -1)


def content_cost(a_C, a_G):
    """J_content = sum((a_C - a_G) ** 2) / (4 nH nW nC), any layout."""
    return ((a_C - a_G) ** 2).sum() / (4 * a_G.numel())


def gram_matrix(A):
    """G = A A^T of unrolled activations A (nC, M)."""
    return A @ A.T


def style_target(a_S, channels_last=True):
    """The style image's Gram per position, G_S / M_S (nC, nC)."""
    A_S = unroll(a_S, channels_last)
    return gram_matrix(A_S) / A_S.shape[1]


def layer_style_cost_from_target(target, a_G, channels_last=True):
    """J = sum((G_G / M_G - target) ** 2) / (4 nC^2)."""
    A_G = unroll(a_G, channels_last)
    D = gram_matrix(A_G) / A_G.shape[1] - target
    return (D * D).sum() / (4 * A_G.shape[0] ** 2)


def layer_style_cost(a_S, a_G, channels_last=True):
    """The course's layer style cost, each Gram divided by its own number of positions."""
    return layer_style_cost_from_target(style_target(a_S, channels_last), a_G, channels_last)


def total_variation_cost(x, channels_last=True):
    """J_tv = (sum of squared vertical and horizontal neighbour differences) / x.numel()."""
    h_axis, w_axis = (1, 2) if channels_last else (2, 3)
    dv = x.diff(dim=h_axis)
    dh = x.diff(dim=w_axis)
    return ((dv * dv).sum() + (dh * dh).sum()) / x.numel()


# ------------------------------------------------------------------------------ the layers
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

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
    """Max pooling (N, H, W, C) -> (N, H_out, W_out, C); 'same' pads with -inf, never chosen.

    Keras puts the odd cell of 'same' padding below and to the right. max_pool2d's own padding (the
    same on both sides) skips its cells, so that a window of real -inf takes its first real cell,
    not a padding cell; the odd one, after every real cell of its windows, is an F.pad of -inf.
    """
    F = _torch().nn.functional
    left, right, top, bottom = _pads(x, size, size, stride, padding)
    ph, pw = min(top, bottom), min(left, right)
    xp = F.pad(x.permute(0, 3, 1, 2), (left - pw, right - pw, top - ph, bottom - ph), value=-float("inf"))
    return F.max_pool2d(xp, size, stride, padding=(ph, pw)).permute(0, 2, 3, 1)


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


# =============================================================================================
# The real-time style network (Johnson et al. 2016): its layers and the whole transformer network,
# the twins of scratchnst.transformer_layers and scratchnst.transformer_net. Same conventions as
# above: our NHWC layout in and out, NCHW only inside each function.
# =============================================================================================
def reflection_pad(x, pad):
    """Reflection padding (N, H, W, C) -> (N, H + 2p, W + 2p, C), as nn.ReflectionPad2d(pad)."""
    F = _torch().nn.functional
    return F.pad(x.permute(0, 3, 1, 2), (pad, pad, pad, pad), mode="reflect").permute(0, 2, 3, 1)


def instance_norm(x, gamma, beta, eps=1e-5):
    """Instance normalisation with affine gamma, beta (C,), as nn.InstanceNorm2d(C, affine=True).

    The input and the gradient arriving from above are both made NCHW-contiguous: PyTorch 2.13's
    CPU instance_norm returns wrong gradients (for x and gamma) for a batch of ONE image when the
    gradient it receives has the strides of a permuted NHWC tensor (channels-last), which is what
    the .permute back to our layout hands it. Batches of 2 or more are right either way.
    """
    F = _torch().nn.functional
    out = F.instance_norm(x.permute(0, 3, 1, 2).contiguous(), weight=gamma, bias=beta, eps=eps)
    if out.requires_grad:
        out.register_hook(lambda grad: grad.contiguous())
    return out.permute(0, 2, 3, 1)


def upsample_nearest(x, factor=2):
    """Nearest-neighbour upsampling (N, H, W, C) -> (N, f*H, f*W, C), as F.interpolate(mode="nearest")."""
    F = _torch().nn.functional
    return F.interpolate(x.permute(0, 3, 1, 2), scale_factor=factor, mode="nearest").permute(0, 2, 3, 1)


def residual(x, fx):
    """The residual sum x + F(x)."""
    return x + fx


def scaled_tanh(x, scale, offset):
    """scale * tanh(x) + offset, scale and offset scalars or (C,) (NumPy arrays are converted)."""
    torch = _torch()
    scale = torch.as_tensor(np.asarray(scale), dtype=x.dtype)
    offset = torch.as_tensor(np.asarray(offset), dtype=x.dtype)
    return torch.tanh(x) * scale + offset


def transformer_net(params, x, scale, offset, eps=1e-5, noise=None):
    """The transformer network of scratchnst.transformer_net in PyTorch, from our params dict.

    Args:
        params: {name: torch tensor} with the names and shapes of transformer_net.init_params
            (kernels (KH, KW, C_in, C_out), gamma/beta/bias (C,)); tensors created with
            requires_grad give every parameter's gradient through autograd.
        x: (N, H, W, 3) tensor, H and W multiples of 4; or (N, H, W, 3 + z) with the network's noise planes.
        scale, offset: the output nonlinearity's constants (transformer_net.output_range).
        noise: None, or the (N, H, W, z) planes (a NumPy array) to append to x, as
            transformer_net.network_input does (transformer_net.noise_planes draws forward's own).

    Returns:
        (N, H, W, 3) tensor. The structure is read from the names, as transformer_net.layer_specs
        lists them: conv1..3, res{k}/conv1 and res{k}/conv2, up1, up2, conv_out.
    """
    F = _torch().nn.functional

    def conv(h, layer, stride=1, bias=False):
        w = params[f"{layer}/kernel"]
        h = reflection_pad(h, w.shape[0] // 2)
        return conv2d(h, w, params[f"{layer}/bias"] if bias else None, stride, "valid")

    def conv_in(h, layer, stride=1, relu=True):
        gamma = params[f"{layer}/gamma"]
        beta = params.get(f"{layer}/beta")  # none in res{k}/conv2 (see transformer_net._shift_is_removed)
        h = instance_norm(conv(h, layer, stride), gamma, _torch().zeros_like(gamma) if beta is None else beta, eps)
        return F.relu(h) if relu else h

    if noise is not None:
        x = _torch().cat([x, to_torch(noise).to(x.dtype)], dim=3)
    h = conv_in(x, "conv1")
    h = conv_in(h, "conv2", stride=2)
    h = conv_in(h, "conv3", stride=2)
    blocks = sorted({name.split("/")[0] for name in params if name.startswith("res")}, key=lambda s: int(s[3:]))
    for block in blocks:
        branch = conv_in(conv_in(h, f"{block}/conv1"), f"{block}/conv2", relu=False)
        h = residual(h, branch)
    h = conv_in(upsample_nearest(h, 2), "up1")
    h = conv_in(upsample_nearest(h, 2), "up2")
    return scaled_tanh(conv(h, "conv_out", bias=True), scale, offset)

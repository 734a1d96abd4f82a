"""Nearest upsampling, reflection padding and a convolution at once, computed at the low resolution.

The transformer network's upsampling layers (`transformer_net`: up1, up2) are

    u = upsample_nearest(x, f)            (N, f*H, f*W, C_in), each pixel an f x f block
    p = reflection_pad(u, K // 2)
    z = conv2d(p, w, 'valid')             (N, f*H, f*W, C_out), w (K, K, C_in, C_out)

Most of the f*f outputs a pixel of x feeds read the same values: u repeats each pixel f times in
each direction, so an output at row i = f*y + p (its phase p, 0 <= p < f) reads the rows
y + (p + t - K // 2) // f of x for t = 0..K-1, and several of those taps read the same row. For
f = 2 and K = 3 the even rows read rows y - 1, y, y (taps 0 | 1, 2) and the odd rows y, y, y + 1
(taps 0, 1 | 2): each phase is a 2-tap convolution of x with the taps that read one row summed.
So z is f*f small convolutions at x's resolution, one per phase (py, px), their outputs
interleaved: 4 convolutions of 2x2 taps instead of one of 3x3 taps on a 4 times larger image,
2.25 times fewer multiply-adds, and neither u nor p, nor their im2col rows, is ever made.

The reflection padding of u is the padding of x by its edge pixels: the row -1 of p mirrors the
row 1 of u, which is the row 0 of x as long as K // 2 < f (`fits`). That is the case of the
network's 3x3 convolutions after 2x upsampling; otherwise transformer_net takes the three layers
one at a time.

The backward pass runs the same phases backwards: each phase's kernel gradient is spread back
onto the taps it summed, each phase's input gradient is added into the edge-padded x's, and the
edge rows and columns are folded back onto the border of x. The results equal those of the three
layers in turn up to rounding (tests check it, in float64, against transformer_layers and against
PyTorch).
"""

import numpy as np

from scratchnst import arguments, fast_conv, transformer_layers


def fits(K, factor):
    """Whether a K x K convolution after upsampling by `factor` can be computed here (K // 2 < factor)."""
    return factor >= 1 and K % 2 == 1 and K // 2 < factor


def phase_taps(K, factor):
    """For each phase p of the output rows (row f*y + p), the rows of x its K taps read.

    Returns:
        [(first, groups) for p in range(factor)]: the taps read rows y + first, y + first + 1, ...;
        groups[g] lists the taps t (0..K-1) that read the row y + first + g.

    Example: phase_taps(3, 2) == [(-1, [[0], [1, 2]]), (0, [[0, 1], [2]])].
    """
    half = K // 2
    phases = []
    for p in range(factor):
        rows = [(p + t - half) // factor for t in range(K)]   # nondecreasing, by steps of 0 or 1
        groups = [[] for _ in range(rows[-1] - rows[0] + 1)]
        for t, row in enumerate(rows):
            groups[row - rows[0]].append(t)
        phases.append((rows[0], groups))
    return phases


def phase_kernel(w, groups_h, groups_w):
    """The kernel of one phase: w's taps summed over each group of rows and of columns.

    Args:
        w: (K, K, C_in, C_out).
        groups_h, groups_w: phase_taps's groups for the phase's row and column.

    Returns:
        (len(groups_h), len(groups_w), C_in, C_out).
    """
    rows = np.stack([w[g].sum(axis=0) for g in groups_h])
    return np.stack([rows[:, g].sum(axis=1) for g in groups_w], axis=1)


def _check(x, w, factor):
    """factor as a Python int, or ValueError/TypeError for arguments upsample_conv_forward cannot take."""
    arguments.check_floats("upsample_conv_forward", x=x, w=w)
    arguments.check_images("upsample_conv_forward", x=x)
    factor = arguments.positive_int("upsampling factor", factor)
    arguments.check_kernel("upsample_conv_forward", w, x.shape[3])
    K, KW = w.shape[:2]
    if K != KW or not fits(K, factor):
        raise ValueError(f"upsample_conv takes an odd square kernel narrower than 2 * factor + 1: got "
                         f"{K}x{KW} with factor {factor}")
    return factor


def upsample_conv_forward(x, w, factor=2):
    """conv2d(reflection_pad(upsample_nearest(x, factor), K // 2), w, 'valid'), at x's resolution.

    Args:
        x: (N, H, W, C_in).
        w: (K, K, C_in, C_out), K odd, K // 2 < factor (`fits`). No bias (instance normalisation
            follows in the network, see transformer_net).
        factor: the upsampling factor f.

    Returns:
        out: (N, f*H, f*W, C_out), in x's dtype.
        cache: (x_edge, w, factor): x padded by one edge pixel on each side, for the backward pass.
    """
    factor = _check(x, w, factor)
    N, H, W, _ = x.shape
    C_out = w.shape[3]
    x_edge = np.pad(x, ((0, 0), (1, 1), (1, 1), (0, 0)), mode="edge")
    out = np.empty((N, factor * H, factor * W, C_out), dtype=x.dtype)
    no_bias = np.zeros(C_out, dtype=x.dtype)
    taps = phase_taps(w.shape[0], factor)
    for py, (top, groups_h) in enumerate(taps):
        for px, (left, groups_w) in enumerate(taps):
            wp = phase_kernel(w, groups_h, groups_w).astype(x.dtype, copy=False)
            window = x_edge[:, 1 + top:1 + top + H + len(groups_h) - 1, 1 + left:1 + left + W + len(groups_w) - 1]
            out[:, py::factor, px::factor], _ = fast_conv.conv2d_forward(window, wp, no_bias, 1, "valid")
    return out, (x_edge, w, factor)


def upsample_conv_backward(dout, cache, input_grad=True):
    """Backward pass of upsample_conv_forward.

    Args:
        dout: (N, f*H, f*W, C_out).
        cache: from upsample_conv_forward.
        input_grad: False to skip dx.

    Returns:
        (dx, dw): dx (N, H, W, C_in) (None if not input_grad), dw (K, K, C_in, C_out), in dout's dtype.
    """
    x_edge, w, factor = cache
    N, He, We, C_in = x_edge.shape
    H, W = He - 2, We - 2
    K = w.shape[0]
    arguments.check_dout("upsample_conv_backward", dout, (N, factor * H, factor * W, w.shape[3]))
    dw = np.zeros(w.shape, dtype=dout.dtype)
    dx_edge = np.zeros(x_edge.shape, dtype=dout.dtype) if input_grad else None
    taps = phase_taps(K, factor)
    for py, (top, groups_h) in enumerate(taps):
        for px, (left, groups_w) in enumerate(taps):
            kh, kw = len(groups_h), len(groups_w)
            rows, cols = slice(1 + top, 1 + top + H + kh - 1), slice(1 + left, 1 + left + W + kw - 1)
            window = x_edge[:, rows, cols]
            d_phase = np.ascontiguousarray(dout[:, py::factor, px::factor])
            dwp = transformer_layers.conv2d_weight_gradient(window, d_phase, kh, kw)
            for gh, taps_h in enumerate(groups_h):   # each tap of w gets the gradient of the sum it is in
                for gw, taps_w in enumerate(groups_w):
                    dw[np.ix_(taps_h, taps_w)] += dwp[gh, gw]
            if input_grad:
                wp = phase_kernel(w, groups_h, groups_w).astype(dout.dtype, copy=False)
                conv_cache = (window, wp, None, 1, "valid")
                dx_edge[:, rows, cols] += fast_conv.conv2d_backward(d_phase, conv_cache, weight_grads=False)[0]
    if not input_grad:
        return None, dw
    # the edge padding read the border pixels again: their gradients come home
    dx_edge[:, 1] += dx_edge[:, 0]
    dx_edge[:, -2] += dx_edge[:, -1]
    dx_edge[:, :, 1] += dx_edge[:, :, 0]
    dx_edge[:, :, -2] += dx_edge[:, :, -1]
    return np.ascontiguousarray(dx_edge[:, 1:-1, 1:-1]), dw

"""A SqueezeNet fire module's three convolutions, a band of rows at a time: one split for all three.

A fire module is a 1x1 squeeze convolution whose output feeds two expand convolutions, a 1x1 and
a 3x3, concatenated along the channels. Run one convolution at a time, each split across the
cores on its own (`parallel.split`), a module hands work to the other core three times in each
direction, and on SqueezeNet's small layers a handoff costs about what it saves: on a 2-core
Xeon VM, waking the other core took 80-150 us per split, and the split 1x1 convolutions of a
256x256 step took 8.7 ms against 8.9 ms for the same work on one core.

So the module is cut once, by rows of its output. A band of output rows start..stop-1 needs the
squeeze output of those rows and of one more row on each side (the 3x3's reach); each piece makes
them itself (the two extra rows are made twice, once in each neighbouring piece), then runs both
expands on them. Backward, a band of the squeeze output's gradient needs the 3x3's output
gradient one row beyond it on each side, which is given; the band's gradient then goes through
the squeeze's ReLU and 1x1 convolution to the band of the module's input. Every piece writes
rows of its own, so the cut is exact: with one worker it is one piece, the same products as
layer by layer.

The arithmetic is `fast_conv`'s: im2col or a plain product per convolution, bias and ReLU fused,
the ReLU masks of the backward pass applied as rows are read.
"""

import numpy as np

from scratchnst import conv_rows, fast_conv, parallel


def can_fuse(squeeze, expand1, expand3):
    """Whether three conv Steps form a fire module this module runs.

    Args:
        squeeze, expand1, expand3: architecture Steps (op "conv", spec with size, stride, padding).

    Returns:
        True if the squeeze and expand1 are 1x1, stride 1, unpadded, and expand3 is KxK with K odd,
        stride 1, padded to keep the size ("same"), all reading as a fire module does.
    """
    def plain_1x1(step):
        return step.spec.size == 1 and step.spec.stride == 1
    K = expand3.spec.size
    return (plain_1x1(squeeze) and plain_1x1(expand1) and K % 2 == 1 and expand3.spec.stride == 1
            and expand3.spec.padding == "same"
            and expand1.inputs == expand3.inputs == (squeeze.name,))


def fire_forward(x, squeeze, expand1, expand3, out):
    """The three convolutions (each with its ReLU) of a fire module, by bands of rows.

    Args:
        x: the module's input (N, H, W, C_in).
        squeeze: (kernel (1, 1, C_in, S), bias (S,)).
        expand1: (kernel (1, 1, S, E1), bias (E1,)).
        expand3: (kernel (K, K, S, E3), bias (E3,)), K odd, "same" padding.
        out: (N, H, W, E1 + E3), written: channels :E1 the 1x1 branch, E1: the KxK branch.

    Returns:
        s: (N, H, W, S), the squeeze output after its ReLU (both expands' input: their cache).
        The result equals fast_conv.conv2d_relu_forward applied to each layer in turn.
    """
    N, H, W, _ = x.shape
    (ws, bs), (w1, b1), (w3, b3) = squeeze, expand1, expand3
    S, E1 = ws.shape[3], w1.shape[3]
    s = parallel.empty((N, H, W, S), out.dtype)
    parallel.split(_forward_band, N * H, least=_least_rows(W, x.shape[3], S, E1, w3.shape),
                   args=(x, ws, bs, w1, b1, w3, b3, s, out), writes=(7, 8))
    return s


def _forward_band(start, stop, x, ws, bs, w1, b1, w3, b3, s, out):
    """fire_forward's output rows start..stop-1 of all N images counted as one column (a piece of its split)."""
    H, W, S, E1, half = x.shape[1], x.shape[2], ws.shape[3], w1.shape[3], w3.shape[0] // 2
    for n, a, b in _segments(start, stop, H):
        lo, hi = max(a - half, 0), min(b + half, H)  # the squeeze rows the band reads
        rows = conv_rows.scratch_buffer("fire squeeze", (1, hi - lo, W, S), out.dtype)
        fast_conv._conv_padded(x[n:n + 1, lo:hi], ws, 1, (0, 0), (0, 0), bs, relu=True, out=rows)
        s[n, a:b] = rows[0, a - lo:b - lo]
        fast_conv._conv_padded(rows[:, a - lo:b - lo], w1, 1, (0, 0), (0, 0), b1, relu=True,
                               out=out[n:n + 1, a:b, :, :E1])
        # zeros above the first row and below the last only where the image ends
        pad_h = (half - (a - lo), half - (hi - b))
        fast_conv._conv_padded(rows, w3, 1, pad_h, (half, half), b3, relu=True, out=out[n:n + 1, a:b, :, E1:])


def fire_backward(dout, x_shape, squeeze, expand1, expand3, s, out1, out3, ds_given=None):
    """The gradient of a fire module's input from that of its output, by bands of rows.

    Args:
        dout: dJ/d(the module's output) (N, H, W, E1 + E3).
        x_shape: the module's input shape (N, H, W, C_in).
        squeeze, expand1, expand3: (kernel, bias) as in fire_forward.
        s: (N, H, W, S), the squeeze output fire_forward returned.
        out1, out3: (N, H, W, E1) and (N, H, W, E3), the expands' outputs after their ReLUs (the
            masks of their gradients; channel slices of the module's output).
        ds_given: None, or a gradient given at the squeeze output itself (N, H, W, S), added there.

    Returns:
        dx: (N, H, W, C_in), what the layer-by-layer backward pass gives:
            ds = conv3_input_grad(dout[..., E1:] * (out3 > 0)) + conv1_input_grad(dout[..., :E1] * (out1 > 0))
            dx = squeeze_input_grad(ds * (s > 0))
        each input gradient a correlation with the kernel flipped in space, channel axes swapped.
    """
    N, H, W, _ = x_shape
    (ws, _), (w1, _), (w3, _) = squeeze, expand1, expand3
    S, E1 = ws.shape[3], w1.shape[3]
    ws_flip, w1_flip, w3_flip = (fast_conv.flipped_kernel(w) for w in (ws, w1, w3))
    dx = parallel.empty(x_shape, np.result_type(dout, ws))
    parallel.split(_backward_band, N * H, least=_least_rows(W, x_shape[3], S, E1, w3.shape),
                   args=(dout, ws_flip, w1_flip, w3_flip, s, out1, out3, ds_given, dx), writes=(8,))
    return dx


def _backward_band(start, stop, dout, ws_flip, w1_flip, w3_flip, s, out1, out3, ds_given, dx):
    """fire_backward's rows start..stop-1 of the module's input (its output's size too): a piece of its split."""
    H, E1, half = dx.shape[1], w1_flip.shape[2], w3_flip.shape[0] // 2
    for n, a, b in _segments(start, stop, H):
        lo, hi = max(a - half, 0), min(b + half, H)  # the rows of the 3x3's gradient the band reads
        pad_h = (half - (a - lo), half - (hi - b))
        ds = fast_conv._conv_padded(dout[n:n + 1, lo:hi, :, E1:], w3_flip, 1, pad_h, (half, half),
                                    mask=out3[n:n + 1, lo:hi])
        if ds_given is not None:  # added before the 1x1's share, in the order the layer-by-layer pass adds
            ds += ds_given[n:n + 1, a:b]
        ds += fast_conv._conv_padded(dout[n:n + 1, a:b, :, :E1], w1_flip, 1, (0, 0), (0, 0),
                                     mask=out1[n:n + 1, a:b])
        fast_conv._conv_padded(ds, ws_flip, 1, (0, 0), (0, 0), mask=s[n:n + 1, a:b], out=dx[n:n + 1, a:b])


def _segments(start, stop, H):
    """Rows start..stop-1 of images stacked one below the other, as (image, first row, last row + 1)."""
    while start < stop:
        n, a = divmod(start, H)
        b = min(H, a + stop - start)
        yield n, a, b
        start += b - a


def _least_rows(W, C_in, S, E1, k3_shape):
    """Fewest rows worth a piece of their own: the multiply-adds of a row against fast_conv's threshold."""
    KH, KW, _, E3 = k3_shape
    per_row = W * (C_in * S + S * E1 + KH * KW * S * E3)
    return max(1, -(-fast_conv._SPLIT_LEAST_WORK // max(1, per_row)))

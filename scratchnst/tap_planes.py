"""A convolution with few output channels by tap planes: one product for all the taps, then shifted sums.

im2col copies every input value KH*KW times into a matrix KH*KW*C_in wide and multiplies it by
the kernel. For the real-time style network's output convolution with the paper's 9x9 kernel
(16 channels in, 3 out) that is 1296 values copied per output pixel to make 3 of them: 90 ms of
its 98 ms training-step forward pass at 256x256, batch 2, one thread (PyTorch's: 29 ms). With few
output channels it is cheaper to multiply first and shift after:

    Z = W_T @ X^T:  (KH*KW*C_out, C_in) by (C_in, positions), a row per (tap, output channel) holding
                    that tap's contribution to that channel at every input position (a "tap plane");
    out[co, p] = sum over the taps (kh, kw) of Z[(kh, kw, co), p + kh*Wp + kw].

Positions are counted along the rows of the padded input (padded a block of rows at a time, and
masked as a ReLU's backward pass needs), p = i*Wp + j, so that each tap's shift is one offset and
every sum adds contiguous runs of a plane; the KW - 1 positions at the end
of each row that have no full window are computed too, and dropped. The product's inner size is
C_in, and it makes KH*KW*C_out values per position where im2col copies KH*KW*C_in: the planes win
when C_out is a small fraction of C_in (`worth_it`). The positions are cut into blocks (each with
the (KH - 1)*Wp + KW - 1 positions its shifts reach beyond it), split across the cores.

The same idea, transposed, gives the input gradient of a convolution with few INPUT channels, a
network's first layer on an RGB image (`input_gradient`): one product makes every tap's share of
every input channel as planes, added into the gradient held by channel.
"""

import numpy as np

from scratchnst import conv_rows, parallel

# Output positions per block (measured, 9x9 16 -> 3 at 256x256 on one core: 25 ms with 16384,
# 28 ms with 4096, 38 ms in one block per image; the shifts' halo is 2120 positions there).
_BLOCK = 16384


def worth_it(C_in, C_out, KH, KW, stride):
    """Whether tap planes beat im2col: stride 1, a kernel of 3x3 or more, at most a quarter as many
    output channels as input channels (the planes make C_out values per tap where im2col copies C_in).

    Measured on one core: the real-time network's output layer with 9x9 kernels (16 -> 3) 22 ms
    against 90; the input gradients of SqueezeNet's 3x3 expands (64 -> 16 ... 256 -> 64, padded,
    masked) 0.55-0.9 of im2col's time; with half as many output channels 0.9, and as many 1.1: not
    taken.
    """
    return stride == 1 and KH * KW >= 9 and 4 * C_out <= C_in


def conv(x, w, pad_h=(0, 0), pad_w=(0, 0), b=None, relu=False, out=None, mask=None):
    """Stride-1 convolution of x zero-padded by pad_h and pad_w, by tap planes.

    Args:
        x: (N, H, W, C_in), any strides.
        w: (KH, KW, C_in, C_out).
        pad_h, pad_w: (top, bottom) and (left, right), the zeros around x.
        b: (C_out,) or None; relu: apply ReLU after the bias.
        out: None, or an (N, H_out, W_out, C_out) array to write into (a channel slice is fine).
        mask: None, or an array like x: the input is x where mask > 0 and 0 elsewhere (the
            gradient through a ReLU whose output is mask), applied as the rows are copied.

    Returns:
        out: (N, H_out, W_out, C_out) with H_out = top + H + bottom - KH + 1 (W_out alike) and
             out[n, i, j] = b + sum_{kh, kw} xpad[n, i + kh, j + kw] @ w[kh, kw], xpad x padded:
             the same as `fast_conv._conv_padded` with stride 1.

    Without padding or mask, a C-contiguous x of the result's dtype is read in place; otherwise
    each block's padded rows are made first (`conv_rows.padded_rows`), in the block's own thread.
    """
    N, H, W, C_in = x.shape
    KH, KW, _, C_out = w.shape
    (top, bottom), (left, right) = pad_h, pad_w
    Hp, Wp = top + H + bottom, left + W + right
    H_out, W_out = Hp - KH + 1, Wp - KW + 1
    dtype = np.result_type(x, w) if b is None else np.result_type(x, w, b)
    if out is None:
        out = parallel.empty((N, H_out, W_out, C_out), dtype)
    in_place = pad_h == pad_w == (0, 0) and mask is None and x.dtype == dtype and x.flags.c_contiguous
    # row (kh, kw, co) of w_t is w[kh, kw, :, co]: the planes come out in that order
    w_t = np.ascontiguousarray(w.astype(dtype, copy=False).transpose(0, 1, 3, 2).reshape(KH * KW * C_out, C_in))
    P = H_out * Wp - (KW - 1)  # positions with a full window, and the row tails between them
    sums = parallel.empty((N, C_out, H_out * Wp), dtype)  # by channel, as the planes
    parallel.split(_forward_blocks, N * -(-P // _BLOCK),
                   args=(x, w_t, pad_h, pad_w, mask, in_place, KH, KW, H_out, _BLOCK, sums), writes=(10,))
    for n in range(N):  # back to channels last, the row tails dropped
        out[n] = sums[n].reshape(C_out, H_out, Wp)[:, :, :W_out].transpose(1, 2, 0)
    if b is not None:
        out += b
    if relu:
        np.maximum(out, 0, out=out)
    return out


def _forward_blocks(start, stop, x, w_t, pad_h, pad_w, mask, in_place, KH, KW, H_out, block_size, sums):
    """conv's blocks of `block_size` positions start..stop-1, counted image after image (a piece of its split)."""
    C_in, dtype = x.shape[3], sums.dtype
    C_out = sums.shape[1]
    Hp, Wp = sum(pad_h) + x.shape[1], sum(pad_w) + x.shape[2]
    shifts = [kh * Wp + kw for kh in range(KH) for kw in range(KW)]
    halo = shifts[-1]
    P = H_out * Wp - (KW - 1)  # positions with a full window, and the row tails between them
    per_image = -(-P // block_size)
    for k in range(start, stop):
        n, p0 = divmod(k, per_image)
        p0 *= block_size
        p1 = min(p0 + block_size, P)
        if in_place:
            positions = x[n].reshape(Hp * Wp, C_in)[p0:p1 + halo]
        else:  # the padded rows that the block's positions and their shifts reach
            r0, r1 = p0 // Wp, (p1 + halo - 1) // Wp + 1
            rows = conv_rows.scratch_buffer("tap planes rows", (r1 - r0, Wp, C_in), dtype)
            conv_rows.padded_rows(x[n], r0, r1, pad_h, pad_w, rows, None if mask is None else mask[n])
            positions = rows.reshape((r1 - r0) * Wp, C_in)[p0 - r0 * Wp:p1 + halo - r0 * Wp]
        Z = conv_rows.scratch_buffer("tap planes", (KH * KW * C_out, len(positions)), dtype)
        np.matmul(w_t, positions.T, out=Z)
        block = sums[n, :, p0:p1]
        np.copyto(block, Z[:C_out, :p1 - p0])
        for t in range(1, KH * KW):
            block += Z[t * C_out:(t + 1) * C_out, shifts[t]:shifts[t] + p1 - p0]


def _band_end(start, stop, H_out, stride, KH, Hp):
    """The padded row after the last one output rows start..stop-1 reach (all of them for the whole)."""
    return Hp if (start, stop) == (0, H_out) else (stop - 1) * stride + KH


def _gradient_band(start, stop, dout, w_cols, mask, stride, KH, KW, rows, starts, targets):
    """input_gradient's output rows start..stop-1 of every image, added into the piece's own array of
    `targets` (the one at start's place in `starts`), from padded row start * stride (a piece of its split).

    dout (N, H_out, W_out, C_out); w_cols (KH*KW*C_in, C_out), row (kh, kw, ci); mask None or like dout;
    rows: output rows per block; targets: per piece (N, C_in, the padded rows it reaches, Wp), overwritten.
    """
    W_out, C_out = dout.shape[2:]
    C_in, dtype = w_cols.shape[0] // (KH * KW), targets[0].dtype
    target = targets[starts.index(start)]
    target[...] = 0   # first: a piece run again (its helper failed) adds into zeros all the same
    Z = conv_rows.scratch_buffer("tap planes", (KH * KW * C_in, rows * W_out), dtype)
    for n, i, d in conv_rows.masked_blocks(dout, mask, start, stop, rows, dtype):
        r = len(d)
        planes = np.matmul(w_cols, d.reshape(r * W_out, C_out).T, out=Z[:, :r * W_out])
        planes = planes.reshape(KH, KW, C_in, r, W_out)
        top = (i - start) * stride
        for kh in range(KH):
            for kw in range(KW):
                target[n, :, top + kh:top + kh + stride * (r - 1) + 1:stride,
                       kw:kw + stride * (W_out - 1) + 1:stride] += planes[kh, kw]


# Output positions per block of the input gradient (a block's planes are made, then added at once):
# the fastest of 1024 to 8192 for SqueezeNet's conv1 at 320x240 and VGG-19's block1_conv1 at 256x256.
_GRADIENT_BLOCK = 8192


def input_gradient(dout, w, stride, xpad_shape, mask=None, least=1):
    """The gradient of a convolution (any stride) with respect to its padded input, by tap planes.

    The arguments (dout, w, stride, xpad_shape, mask) and the result (dxpad (N, Hp, Wp, C_in)) are
    those of `fast_conv._conv_padded_backward_x`, the same gradient by col2im; least: the fewest
    output rows worth a piece of a split (`parallel.split`).

    For the first convolution of a network, whose input is an RGB image: its gradient is what
    the pixels get. col2im makes one (positions, KH*KW*C_in) block, 27 values wide for 3x3 on
    RGB, and adds each tap's share back through views whose runs are 3 values long, the
    channels: NumPy's loops then do a few values per step. Here the same numbers are made
    transposed, as tap planes,

        Z = W_cols @ dout^T:  (KH*KW*C_in, C_out) by (C_out, positions), a plane per (tap, input channel),

    and each tap's C_in planes are added into a gradient held by channel, (N, C_in, Hp, Wp), as
    whole rows read one after the other and written `stride` apart. Only at the end does the
    gradient go back to channels last, a channel at a time. Measured on a 2-core Xeon, ReLU mask
    included: VGG-19's block1_conv1 at 256x256 (64 -> 3 channels, stride 1) 10.0 ms against
    col2im's 19.0 with one thread, 6.4 against 10.8 with two (`scratchnst bench`'s table);
    SqueezeNet's conv1 at 320x240 (stride 2) 2.9 against 3.6 ms. Those are layers timed alone;
    in a whole step, whose first layers' arrays come from memory, not the cache, the gain was
    within the noise. Within a block the taps are added kh rising, then kw, and the blocks in
    order, as col2im adds them.

    Output rows are cut into pieces for the cores (`parallel`); each piece fills the input rows
    its windows reach, its own array, and the rows where neighbouring pieces overlap (KH - stride
    of them, if KH > stride) are added afterwards: the same terms as one piece adds, in another
    order. Those arrays are made before the split (`parallel.split_ranges` says which pieces it
    will make), so that a helper process can fill one: at the end of a stylize evaluation
    (SqueezeNet, 320 px, 2-core Xeon) the pixels' gradient took 2.1 ms in a helper against 3.0 ms
    in threads, and 200 iterations 7.3 s against 7.8-8.0.
    """
    N, H_out, W_out, C_out = dout.shape
    KH, KW, C_in, _ = w.shape
    _, Hp, Wp, _ = xpad_shape
    dtype = np.result_type(dout, w)
    w_cols = w.astype(dtype, copy=False).reshape(KH * KW * C_in, C_out)  # row (kh, kw, ci)
    rows = max(1, min(H_out, _GRADIENT_BLOCK // max(1, W_out)))
    # Each piece fills an array of its own, made here so that a helper process can write it (`parallel.split`)
    ranges = parallel.split_ranges(H_out, least)
    targets = tuple(parallel.empty((N, C_in, _band_end(start, stop, H_out, stride, KH, Hp) - start * stride, Wp), dtype)
                    for start, stop in ranges)
    parallel.split(_gradient_band, H_out, least,
                   args=(dout, w_cols, mask, stride, KH, KW, rows, tuple(start for start, _ in ranges), targets),
                   writes=(8,))
    bands = [(start * stride, target) for (start, _), target in zip(ranges, targets)]
    dxpad = np.empty(xpad_shape, dtype=dtype)
    if len(bands) == 1 and bands[0][1].shape[2] == Hp:
        planar = bands[0][1]
    else:
        planar = np.zeros((N, C_in, Hp, Wp), dtype=dtype)
        for top, target in bands:
            planar[:, :, top:top + target.shape[2]] += target[:, :, :Hp - top]
    for c in range(C_in):  # back to channels last: whole rows at a time, not C_in values
        dxpad[..., c] = planar[:, c]
    return dxpad

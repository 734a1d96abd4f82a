"""The convolution the networks run: `layers.conv2d_forward` and `conv2d_backward`, fast.

Same arguments, results and cache as the readable versions in `scratchnst.layers` (tests prove
them equal to each other, to the loops and to PyTorch), so either can stand for the other. What
makes these fast:

- im2col: every window's inputs copied into the rows of one matrix, so that the convolution is
  ONE matrix product with an inner size of KH*KW*C_in (576 for 3x3 on 64 channels), which BLAS
  runs near its peak; the readable version makes KH*KW smaller products and adds them up.
- the matrix is made a block of output rows at a time, from a strided view of the padded rows
  (`_im2col_view`), into scratch buffers kept between calls (32 to 64 MiB per thread that ran
  one, see `conv_rows.scratch_buffer`): the whole matrix would hold every input KH*KW times (600 MB for
  VGG-19's block1_conv2 at 512x512), and fresh buffers would be new pages on every call.
- a 1x1 convolution is a plain product over channels, no im2col.
- a 3x3 stride-1 convolution with 128 channels or more on both sides goes to `winograd`
  (16 multiplications per 2x2 outputs instead of im2col's 36; `winograd.worth_it` says where
  it pays), the input gradients of such layers too.
- a stride-1 convolution with at most a quarter as many output channels as input ones (the
  real-time network's output layer, 16 -> 3; the input gradients of SqueezeNet's 3x3
  expands, 64 -> 16 and wider) goes to `tap_planes`: one product makes every tap's
  contribution, shifted sums add them up, and nothing is copied KH*KW times.
- with stride 1 the input gradient is itself a convolution (the kernel flipped in space, its
  channel axes swapped), run by the same routine; otherwise it is col2im, a block at a time.
  With fewer than 8 input channels (an RGB image) it is `tap_planes.input_gradient`, any stride.

Every function keeps the dtype it is given and never writes into its inputs, `dout` or the cache.
"""

import numpy as np

from scratchnst import arguments, conv_rows, layers, parallel, tap_planes, winograd


# About this many bytes of the im2col matrix exist at any time (see `_conv_padded`). Smaller blocks
# stay in the cache between the copy that makes them and the product that reads them; larger ones
# mean fewer products, and BLAS's threads wait for each other at the end of each (with the machine
# busy, a wait can last a time slice). Measured on a 2-core Xeon (AVX-512), block1_conv2 of VGG-19
# at 256x256 forward: 1 thread 54, 56, 77 ms and 2 threads 40, 36, 58 ms with 4, 8, 32 MiB blocks;
# a whole VGG-19 step on 1 thread 1.21, 1.25, 1.38 times PyTorch's.
_IM2COL_BLOCK_BYTES = 8 * 2**20

def _im2col_view(xpad, KH, KW, stride, H_out, W_out):
    """The im2col matrix of a padded input as a strided view, no copy: (N, H_out, W_out, KH, KW*C_in).

    Args:
        xpad: (N, Hp, Wp, C_in), C-contiguous.
        KH, KW, stride: the kernel's size and step.
        H_out, W_out: the number of windows along H and W.

    Returns:
        view[n, i, j, kh, kw*C_in + ci] = xpad[n, i*stride + kh, j*stride + kw, ci], read-only.

    In a C-contiguous array the pixel to the right is C_in values further on, so the KW*C_in
    values that one kernel row of a window reads are one contiguous run: the view is made of
    xpad's own strides, the H stride used twice (to step between windows and between kernel rows).
    Copied and reshaped to (N*H_out*W_out, KH*KW*C_in) it is the im2col matrix, its columns in the
    (kh, kw, ci) order of w.reshape(KH*KW*C_in, C_out).
    """
    N, _, _, C_in = xpad.shape
    sN, sH, sW, sC = xpad.strides
    if sC != xpad.itemsize or sW != C_in * sC:
        raise ValueError("xpad must be C-contiguous along W and C")
    return np.lib.stride_tricks.as_strided(
        xpad, shape=(N, H_out, W_out, KH, KW * C_in), strides=(sN, stride * sH, stride * sW, sH, sC),
        writeable=False)


def _conv_padded(x, w, stride, pad_h, pad_w, b=None, relu=False, out=None, mask=None):
    """Convolution of x zero-padded by pad_h and pad_w, by im2col, one block of output rows at a time.

    Args:
        x: (N, H, W, C_in), any strides.
        w: (KH, KW, C_in, C_out).
        stride: int.
        pad_h, pad_w: (top, bottom) and (left, right), the zeros around x, each >= 0.
        b: (C_out,), or None for no bias.
        relu: apply ReLU to each block of the result while it is still in the cache (the networks'
            convolutions are all followed by one), instead of in another pass over all of it.
        out: None, or an (N, H_out, W_out, C_out) array to write into, whose rows of channels
            are evenly spaced (a channel slice of a larger array: a fire module writes its two
            branches straight into their concatenation).
        mask: None, or an array like x: the input is x where mask > 0 and 0 elsewhere (the
            gradient through a ReLU whose output is mask), applied as the rows are read.

    Returns:
        out: (N, H_out, W_out, C_out), C-contiguous unless given, where xpad is x padded,
             H_out = (top + H + bottom - KH) // stride + 1 (W_out alike) and
             out[n, i, j, :] = b + sum_{kh, kw} xpad[n, i*stride + kh, j*stride + kw, :] @ w[kh, kw]

    The whole im2col matrix would hold every input value KH*KW times (600 MB for VGG-19's
    block1_conv2 on a 512x512 image), so it is made a block of output rows at a time: the padded
    input rows the block reads are written into a small buffer (so that the padded input as a
    whole is never made; without padding they are read in place), the block is copied from their
    windows (_im2col_view), then multiplied by w in ONE product with an inner size of KH*KW*C_in
    (576 for 3x3 on 64 channels): BLAS runs such products near its peak, and no per-tap partial
    sums have to be added up afterwards.
    """
    N, H, W, C_in = x.shape
    KH, KW, _, C_out = w.shape
    (top, bottom), (left, right) = pad_h, pad_w
    Hp, Wp = top + H + bottom, left + W + right
    H_out, W_out = (Hp - KH) // stride + 1, (Wp - KW) // stride + 1
    K = KH * KW * C_in
    w_cols = w.reshape(K, C_out)  # rows in (kh, kw, ci) order, as the im2col columns
    dtype = np.result_type(x, w) if b is None else np.result_type(x, w, b)
    if out is None:
        out = parallel.empty((N, H_out, W_out, C_out), dtype)
    elif out.shape != (N, H_out, W_out, C_out) or out.dtype != dtype:
        raise ValueError(f"out must be {dtype} {(N, H_out, W_out, C_out)}, got {out.dtype} {out.shape}")
    if KH == KW == stride == 1 and pad_h == pad_w == (0, 0):
        # a 1x1 convolution is a matrix product over channels: the input is its own im2col matrix
        x_rows, m_rows, out_rows = x.reshape(N * H * W, C_in), None, _rows(out)
        if mask is not None:
            m_rows = mask.reshape(N * H * W, C_in)

        parallel.split(_product_rows, N * H * W, least=_least_rows(C_in, C_out),
                       args=(x_rows, m_rows, w_cols, b, relu, out_rows), writes=(5,))
        return out
    if KH == KW == 3 and stride == 1 and winograd.worth_it(C_in, C_out, N * -(-H_out // 2) * -(-W_out // 2)):
        return winograd.conv3x3(x, w, pad_h, pad_w, b, relu=relu, out=out, mask=mask)
    if tap_planes.worth_it(C_in, C_out, KH, KW, stride):
        return tap_planes.conv(x, w, pad_h, pad_w, b, relu=relu, out=out, mask=mask)
    # output rows per block, so that neither the block nor the padded rows it reads exceed the budget
    row_bytes = x.itemsize * max(W_out * K, stride * Wp * C_in)
    rows = min(H_out, max(1, _IM2COL_BLOCK_BYTES // row_bytes))
    # rows of x can be read as they are (no padding to add, no mask to apply)
    in_place = pad_h == pad_w == (0, 0) and x.flags.c_contiguous and mask is None

    parallel.split(_forward_blocks, N * H_out, least=_least_rows(K, C_out) // max(1, W_out),
                   args=(x, mask, w_cols, b, relu, KH, KW, stride, pad_h, pad_w, rows, in_place, out), writes=(12,))
    return out


def _product_rows(start, stop, x_rows, m_rows, w_cols, b, relu, out_rows):
    """A 1x1 convolution's rows start..stop-1 (a piece of _conv_padded's split)."""
    a = x_rows[start:stop]
    if m_rows is not None:
        a = conv_rows.masked(a, m_rows[start:stop], conv_rows.scratch_buffer("masked rows", a.shape, a.dtype))
    np.matmul(a, w_cols, out=out_rows[start:stop])
    _bias_relu(out_rows[start:stop], b, relu)


def _forward_blocks(start, stop, x, mask, w_cols, b, relu, KH, KW, stride, pad_h, pad_w, rows, in_place, out):
    """_conv_padded's output rows start..stop-1 of all N images counted as one column, a block of
    `rows` at a time (a piece of its split)."""
    C_in, (H_out, W_out) = x.shape[3], out.shape[1:3]
    Wp, K = pad_w[0] + x.shape[2] + pad_w[1], KH * KW * C_in
    if not in_place:
        slab = conv_rows.scratch_buffer("padded rows", ((rows - 1) * stride + KH, Wp, C_in), x.dtype)
    block = conv_rows.scratch_buffer("im2col", (rows, W_out, KH, KW * C_in), x.dtype)
    while start < stop:
        n, i = divmod(start, H_out)
        r = min(rows, H_out - i, stop - start)
        first, last = i * stride, (i + r - 1) * stride + KH  # the padded rows these outputs read
        if in_place:
            padded = x[n, first:last]
        else:
            padded = conv_rows.padded_rows(x[n], first, last, pad_h, pad_w, slab[:last - first],
                                           None if mask is None else mask[n])
        cols = block[:r]
        cols[...] = _im2col_view(padded[None], KH, KW, stride, r, W_out)[0]  # the copy
        out_rows = _rows(out[n, i:i + r])  # a view: the product lands in out
        np.matmul(cols.reshape(r * W_out, K), w_cols, out=out_rows)
        _bias_relu(out_rows, b, relu)  # now, while these rows are in the cache
        start += r


def _least_rows(K, C_out):
    """Fewest rows of a product (K, C_out) worth a piece of their own (see `parallel.split`)."""
    return -(-_SPLIT_LEAST_WORK // (K * C_out))


# Multiply-adds below which a piece is not worth a thread: handing it over and waiting for it takes
# tens of microseconds, about what a core does with this many.
_SPLIT_LEAST_WORK = 2**20


def _rows(a):
    """(..., C) -> (rows, C) as a VIEW of a: results written into it must land in a."""
    rows = a.reshape(-1, a.shape[-1])
    if not np.may_share_memory(rows, a):
        raise ValueError("out must be an array whose rows of channels are evenly spaced")
    return rows


def _bias_relu(rows, b, relu):
    """rows += b, then ReLU in place (b None: no bias)."""
    if b is not None:
        rows += b
    if relu:
        np.maximum(rows, 0, out=rows)


# Below this many input channels (an RGB image) the input gradient is computed by tap planes
# (`tap_planes.input_gradient`), whatever the stride: as a convolution with the flipped kernel
# (stride 1) it would be a product with so few output columns that BLAS runs it slowly, and
# col2im's (strides > 1) adds back runs of only C_in values.
_FEW_CHANNELS = 8


def _conv_padded_backward_x(dout, w, stride, xpad_shape, mask=None):
    """Gradient of `_conv_padded` with respect to the padded input, by col2im a block at a time.

    Args:
        dout: (N, H_out, W_out, C_out).
        w: (KH, KW, C_in, C_out).
        stride: int.
        xpad_shape: (N, Hp, Wp, C_in), the shape of the padded input.
        mask: None, or an array like dout: dout is taken only where mask > 0 (the gradient through
            the ReLU whose output is mask), applied a block at a time as the rows are read.

    Returns:
        dxpad: (N, Hp, Wp, C_in), the sum over windows and taps of
               dxpad[n, i*stride + kh, j*stride + kw, :] += dout[n, i, j, :] @ w[kh, kw].T

    For a block of output rows, ONE product dout_rows @ w_cols.T gives the gradient of the block's
    im2col matrix: every window's share for every tap. Each tap's share is then added onto a
    strided view of dxpad. Within one tap different windows never touch the same input cell, so a
    plain += is exact (no np.add.at); overlapping windows add up across taps. Split into pieces
    (`parallel.split`), each piece's output rows write a band of input rows of its own (neighbouring
    bands share KH - stride rows), added into dxpad afterwards.
    """
    N, H_out, W_out, C_out = dout.shape
    KH, KW, C_in, _ = w.shape
    _, _, Wp, _ = xpad_shape
    w_cols = w.reshape(KH * KW * C_in, C_out)
    dtype = np.result_type(dout, w)
    rows = min(H_out, max(1, _IM2COL_BLOCK_BYTES // (W_out * KH * KW * C_in * np.dtype(dtype).itemsize)))

    def band(start, stop):  # output rows start..stop-1 of every image -> (first padded row, their gradient)
        block = conv_rows.scratch_buffer("im2col", (rows * W_out, KH * KW * C_in), dtype)
        last = xpad_shape[1] if (start, stop) == (0, H_out) else (stop - 1) * stride + KH  # one piece: all of dxpad
        target = np.zeros((N, last - start * stride, Wp, C_in), dtype=dtype)
        for n, i, d in conv_rows.masked_blocks(dout, mask, start, stop, rows, dtype):
            r = len(d)
            dcols = np.matmul(d.reshape(r * W_out, C_out), w_cols.T, out=block[:r * W_out])
            dcols = dcols.reshape(r, W_out, KH, KW, C_in)  # the gradient of the block's im2col rows
            for kh, kw, view in layers._window_taps(target[n:n + 1, (i - start) * stride:], KH, KW, stride, r, W_out):
                view[0] += dcols[:, :, kh, kw, :]
        return start * stride, target

    bands = parallel.split(band, H_out, least=_least_rows(KH * KW * C_in, C_out * N) // max(1, W_out))
    if len(bands) == 1 and bands[0][1].shape == xpad_shape:
        return bands[0][1]
    dxpad = np.zeros(xpad_shape, dtype=dtype)
    for top, target in bands:
        dxpad[:, top:top + target.shape[1]] += target[:, :xpad_shape[1] - top]
    return dxpad


def conv2d_forward(x, w, b, stride=1, padding="same"):
    """`layers.conv2d_forward`, fast: im2col one block of output rows at a time, one product per block.

    The same arguments, result and cache (x, w, b, stride, padding) as `layers.conv2d_forward`:
    the input is kept rather than its im2col matrix (KH*KW times larger) or its padded copy.
    """
    return _forward(x, w, b, stride, padding, relu=False, out=None)


def conv2d_relu_forward(x, w, b, stride=1, padding="same", out=None):
    """ReLU(conv2d_forward(x, w, b)) in one pass: a network's convolution step.

    Args:
        x, w, b, stride, padding: as conv2d_forward.
        out: None, or the (N, H_out, W_out, C_out) array to write into (see `_conv_padded`).

    Returns:
        out: (N, H_out, W_out, C_out), max(conv2d_forward(x, w, b)[0], 0).
        cache: (conv cache, out): what conv2d_relu_backward takes (a ReLU's cache is its output).
    """
    out, conv_cache = _forward(x, w, b, stride, padding, relu=True, out=out)
    return out, (conv_cache, out)


def _forward(x, w, b, stride, padding, relu, out):
    """(out, conv cache) of conv2d_forward, with the ReLU applied block by block if relu."""
    function = "conv2d_relu_forward" if relu else "conv2d_forward"
    arguments.check_floats(function, x=x, w=w, b=b)
    arguments.check_images(function, x=x)
    stride = arguments.positive_int("stride", stride)
    N, H, W, C_in = x.shape
    arguments.check_kernel(function, w, C_in)
    KH, KW, _, C_out = w.shape
    b = arguments.per_channel(function, "b", b, C_out)
    _, top, bottom = layers.conv_output_size(H, KH, stride, padding)
    _, left, right = layers.conv_output_size(W, KW, stride, padding)
    if x.size == 0 or w.size == 0:  # no image or no channel: there are no blocks to cut (their sizes divide by 0)
        result = layers.conv2d_forward(x, w, b, stride, padding)[0]
        if relu:
            np.maximum(result, 0, out=result)
        if out is not None:
            out[...] = result
            result = out
        return result, (x, w, b, stride, padding)
    # The padding is added a block of rows at a time (`_padded_rows`), never to the whole input: a
    # padded copy of VGG-19's block1 input at 512x512 is 65 MB of fresh pages on every call.
    out = _conv_padded(x, w, stride, (top, bottom), (left, right), b, relu=relu, out=out)
    return out, (x, w, b, stride, padding)


def conv2d_backward(dout, cache, weight_grads=True):
    """`layers.conv2d_backward`, fast: the input gradient as a convolution with the flipped kernel.

    The same arguments and results (dx, dw, db) as `layers.conv2d_backward` (dw and db None when
    weight_grads is False). With stride 1, dx is itself a convolution: 'full' correlation of dout
    with the kernel flipped in space and with its channel axes swapped,
    w[::-1, ::-1].transpose(0, 1, 3, 2); the same fast routine as the forward pass computes it.
    """
    _check_dout("conv2d_backward", dout, cache)
    if cache[0].size == 0 or cache[1].size == 0:  # as in the forward pass: nothing to cut into blocks
        return layers.conv2d_backward(dout, cache, weight_grads)
    dx = _input_gradient(dout, cache)
    if not weight_grads:
        return dx, None, None
    return (dx, *_weight_gradients(dout, cache))


def conv2d_relu_backward(dout, cache):
    """The input gradient of conv2d_relu_forward: conv2d_backward(relu_backward(dout)), no weight gradients.

    Args:
        dout: dJ/d(the ReLU's output) (N, H_out, W_out, C_out).
        cache: from conv2d_relu_forward.

    Returns:
        dx: (N, H, W, C_in). The ReLU's mask is applied as the rows of dout are read, by the
        input gradient's convolution (stride 1), or a block at a time by tap planes (few input
        channels) or col2im (no array of dJ/dz is made any way), with relu_backward's
        arithmetic: dout times the 0/1 mask.
    """
    conv_cache, out = cache
    _check_dout("conv2d_relu_backward", dout, conv_cache)
    if conv_cache[0].size == 0 or conv_cache[1].size == 0:
        return layers.conv2d_backward(dout * (out > 0), conv_cache, weight_grads=False)[0]
    return _input_gradient(dout, conv_cache, relu_out=out)


def _check_dout(function, dout, cache):
    """arguments.check_dout with the output shape of the convolution whose cache this is."""
    x, w, _, stride, padding = cache
    N, H, W, _ = x.shape
    KH, KW, _, C_out = w.shape
    H_out = layers.conv_output_size(H, KH, stride, padding)[0]
    W_out = layers.conv_output_size(W, KW, stride, padding)[0]
    arguments.check_dout(function, dout, (N, H_out, W_out, C_out))


def _weight_gradients(dout, cache):
    """(dw (KH, KW, C_in, C_out), db (C_out,)) of conv2d_forward: one product per kernel tap over all
    positions, as in the readable version (already BLAS-sized; only the style-transfer path skips it)."""
    x, w, b, stride, padding = cache
    N, H, W, C_in = x.shape
    KH, KW, _, C_out = w.shape
    _, H_out, W_out, _ = dout.shape
    _, top, bottom = layers.conv_output_size(H, KH, stride, padding)
    _, left, right = layers.conv_output_size(W, KW, stride, padding)
    xpad = layers._pad_hw(x, (top, bottom), (left, right))
    dtype = np.result_type(dout, x)

    def part(start, stop):  # the share of output rows start..stop-1 of every image
        d_rows = np.ascontiguousarray(dout[:, start:stop]).reshape(-1, C_out)
        dw = np.empty(w.shape, dtype=dtype)
        for kh, kw, tap in layers._window_taps(xpad, KH, KW, stride, H_out, W_out):
            dw[kh, kw] = tap[:, start:stop].reshape(-1, C_in).T @ d_rows
        return dw

    parts = parallel.split(part, H_out, least=_least_rows(KH * KW * C_in, C_out * N) // max(1, W_out))
    dw = parts[0]
    for more in parts[1:]:
        dw += more
    return dw, dout.sum(axis=(0, 1, 2), dtype=np.float64).astype(b.dtype, copy=False)  # as layers.conv2d_backward


def _input_gradient(dout, cache, relu_out=None):
    """dJ/dx of conv2d_forward; dout is taken only where relu_out > 0 if relu_out is given."""
    x, w, b, stride, padding = cache
    N, H, W, C_in = x.shape
    KH, KW, _, C_out = w.shape
    _, H_out, W_out, _ = dout.shape
    _, top, bottom = layers.conv_output_size(H, KH, stride, padding)
    _, left, right = layers.conv_output_size(W, KW, stride, padding)
    Hp, Wp = H + top + bottom, W + left + right
    if stride == 1 and C_in >= _FEW_CHANNELS:
        # Gradient w.r.t. the padded input = 'full' correlation with the flipped kernel. Pad dout
        # by K-1 on each side, less the rows/columns of xpad we would crop anyway (we want dx,
        # not dxpad); an integer padding wider than K-1 makes an amount negative: crop there.
        w_flip = flipped_kernel(w)
        pads = ((KH - 1 - top, KH - 1 - bottom + (Hp - KH + 1 - H_out)),
                (KW - 1 - left, KW - 1 - right + (Wp - KW + 1 - W_out)))
        d, pad_h, pad_w = _crop_negative_padding(dout, *pads)
        mask = None if relu_out is None else _crop_negative_padding(relu_out, *pads)[0]
        return _conv_padded(d, w_flip, 1, pad_h, pad_w, mask=mask)
    if C_in < _FEW_CHANNELS:  # an RGB image, any stride: one product for all taps, then shifted sums
        least = _least_rows(KH * KW * C_in, C_out * N) // max(1, W_out)
        dxpad = tap_planes.input_gradient(dout, w, stride, (N, Hp, Wp, C_in), mask=relu_out, least=least)
    else:  # strides > 1: each window's share dout @ w.T, put back in place
        dxpad = _conv_padded_backward_x(dout, w, stride, (N, Hp, Wp, C_in), mask=relu_out)
    return np.ascontiguousarray(dxpad[:, top:top + H, left:left + W, :])


def flipped_kernel(w):
    """The kernel of a stride-1 convolution's input gradient: w flipped in space, channel axes swapped.

    Args:
        w: (KH, KW, C_in, C_out).

    Returns:
        w_flip: (KH, KW, C_out, C_in), w_flip[kh, kw] = w[KH-1-kh, KW-1-kw].T.

    Stored with C_in outermost: the copy then moves runs of C_out contiguous values (a plain
    transposing copy is ~8x slower), and w_flip.reshape(KH*KW*C_out, C_in) stays a view that BLAS
    reads transposed.
    """
    flipped = w[::-1, ::-1].transpose(2, 0, 1, 3)
    stored = parallel.empty(flipped.shape, w.dtype)   # a split may hand it to a helper process
    stored[...] = flipped
    return stored.transpose(1, 2, 3, 0)


def _crop_negative_padding(x, pad_h, pad_w):
    """Padding amounts that may be negative, as (x cropped where they are, the paddings left).

    Args:
        x: (N, H, W, C); pad_h = (top, bottom), pad_w = (left, right), ints of any sign.

    Returns:
        (view of x without -amount rows/columns where an amount is negative,
         pad_h and pad_w with the negative amounts replaced by 0).
    """
    crop = tuple(slice(max(-a, 0), x.shape[axis] - max(-z, 0))
                 for axis, (a, z) in ((1, pad_h), (2, pad_w)))
    return (x[:, crop[0], crop[1], :], (max(pad_h[0], 0), max(pad_h[1], 0)),
            (max(pad_w[0], 0), max(pad_w[1], 0)))

"""The four layers of a style-transfer CNN, forward and backward, in NumPy.

Convolution, ReLU, pooling (max and average) and channel concatenation, as pure functions in the
CS231n style: `*_forward(x, ...) -> (out, cache)` and `*_backward(dout, cache) -> dx` (convolution
also returns dw and db). Everything is channels-last:

    activations  x, out, dx   (N, H, W, C)          the course's (m, nH, nW, nC)
    kernels      w, dw        (KH, KW, C_in, C_out)  the order of the Keras HDF5 files
    biases       b, db        (C_out,)

Output sizes follow Keras/TensorFlow exactly (see `conv_output_size`). Convolution is
cross-correlation (the kernel is never flipped), as Keras and PyTorch compute it.

Every function keeps the dtype it is given and never writes into its inputs, `dout` or the cache.
The fast convolutions keep scratch memory between calls (32 to 64 MiB per thread that ran one,
see `_scratch_buffer`), so that each call does not ask the operating system for fresh pages.

Each layer has two versions. The `*_naive` functions are plain loops, written to be read next to
the formula; the others are vectorised and are what the networks use. Tests prove both agree with
each other, with finite differences and with PyTorch.
"""

import threading

import numpy as np


# ---------------------------------------------------------------------------- output sizes
def conv_output_size(n, k, stride, padding):
    """Output size and padding of one spatial axis, as Keras/TensorFlow define them.

    Args:
        n: input size along the axis (H or W).
        k: window size along the axis (KH or KW).
        stride: step between windows.
        padding: "valid" (no padding, partial windows dropped), "same" (output size ceil(n / stride)),
            or an int p (p zeros on both sides, as PyTorch's `padding=p`).

    Returns:
        (n_out, pad_before, pad_after):
            valid: n_out = floor((n - k) / stride) + 1, no padding
            same:  n_out = ceil(n / stride), total = max((n_out - 1) * stride + k - n, 0),
                   pad_before = total // 2, pad_after = total - pad_before
            int p: n_out = floor((n + 2p - k) / stride) + 1

    'same' puts the odd extra zero after (bottom/right), as TensorFlow does; PyTorch and Caffe
    pad symmetrically, which shifts every window by one pixel when the total is odd (it is odd,
    for example, for a 3x3 kernel with stride 2 on an even-sized input).
    """
    if stride < 1 or k < 1:
        raise ValueError(f"stride and window size must be >= 1, got stride={stride}, k={k}")
    if padding == "valid":
        before = after = 0
        n_out = (n - k) // stride + 1
    elif padding == "same":
        n_out = -(-n // stride)  # ceil without floats
        total = max((n_out - 1) * stride + k - n, 0)
        before, after = total // 2, total - total // 2
    elif isinstance(padding, (int, np.integer)) and not isinstance(padding, bool) and padding >= 0:
        before = after = int(padding)
        n_out = (n + 2 * before - k) // stride + 1
    else:
        raise ValueError(f"padding must be 'same', 'valid' or an int >= 0, got {padding!r}")
    if n_out < 1:
        raise ValueError(
            f"input of size {n} is too small for a window of {k} with stride {stride} "
            f"and padding {padding!r}"
        )
    return n_out, before, after


def _pad_hw(x, pad_h, pad_w, value=0.0):
    """Pad axes 1 and 2 of x (N, H, W, C) by pad_h = (top, bottom) and pad_w = (left, right)."""
    if pad_h == (0, 0) and pad_w == (0, 0):
        return x
    return np.pad(x, ((0, 0), pad_h, pad_w, (0, 0)), constant_values=value)


def _window_taps(x, KH, KW, stride, H_out, W_out):
    """Yield (kh, kw, view) for every tap of a window, view (N, H_out, W_out, C) strided into x.

    The view for tap (kh, kw) holds x[n, i*stride + kh, j*stride + kw, c] at [n, i, j, c]: the
    element that tap multiplies (or compares) for output position (i, j). Looping over the
    KH*KW taps instead of the H_out*W_out positions keeps every operation vectorised.
    """
    for kh in range(KH):
        for kw in range(KW):
            yield kh, kw, x[:, kh:kh + stride * (H_out - 1) + 1:stride, kw:kw + stride * (W_out - 1) + 1:stride, :]


# ------------------------------------------------------------------------------ convolution
def conv2d_forward_naive(x, w, b, stride=1, padding="same"):
    """Convolution (cross-correlation) with plain loops, to read next to the formula.

    Args:
        x: input (N, H, W, C_in).
        w: kernels (KH, KW, C_in, C_out).
        b: biases (C_out,).
        stride: int, the same along H and W.
        padding: "same", "valid" or an int (see conv_output_size).

    Returns:
        out: (N, H_out, W_out, C_out) with
             out[n, i, j, c] = b[c] + sum_{kh, kw, ci} xpad[n, i*stride + kh, j*stride + kw, ci] * w[kh, kw, ci, c]
        cache: (x, w, b, stride, padding) for conv2d_backward_naive.
    """
    N, H, W, C_in = x.shape
    KH, KW, _, C_out = w.shape
    H_out, top, bottom = conv_output_size(H, KH, stride, padding)
    W_out, left, right = conv_output_size(W, KW, stride, padding)
    xpad = _pad_hw(x, (top, bottom), (left, right))
    out = np.zeros((N, H_out, W_out, C_out), dtype=np.result_type(x, w, b))
    for n in range(N):
        for i in range(H_out):
            for j in range(W_out):
                window = xpad[n, i * stride:i * stride + KH, j * stride:j * stride + KW, :]  # (KH, KW, C_in)
                for c in range(C_out):
                    out[n, i, j, c] = np.sum(window * w[:, :, :, c]) + b[c]
    return out, (x, w, b, stride, padding)


def conv2d_backward_naive(dout, cache):
    """Backward pass of conv2d_forward_naive with plain loops.

    Each output out[n, i, j, c] received dout[n, i, j, c]; it was computed from one window of xpad
    and the kernel w[..., c], so it sends dout * w back to that window and dout * window to w.

    Args:
        dout: upstream gradient (N, H_out, W_out, C_out).
        cache: from conv2d_forward_naive.

    Returns:
        dx (N, H, W, C_in), dw (KH, KW, C_in, C_out), db (C_out,).
    """
    x, w, b, stride, padding = cache
    N, H, W, C_in = x.shape
    KH, KW, _, C_out = w.shape
    _, H_out, W_out, _ = dout.shape
    _, top, bottom = conv_output_size(H, KH, stride, padding)
    _, left, right = conv_output_size(W, KW, stride, padding)
    xpad = _pad_hw(x, (top, bottom), (left, right))
    dxpad = np.zeros(xpad.shape, dtype=np.result_type(dout, w))
    dw = np.zeros(w.shape, dtype=np.result_type(dout, x))
    for n in range(N):
        for i in range(H_out):
            for j in range(W_out):
                rows = slice(i * stride, i * stride + KH)
                cols = slice(j * stride, j * stride + KW)
                for c in range(C_out):
                    dxpad[n, rows, cols, :] += dout[n, i, j, c] * w[:, :, :, c]
                    dw[:, :, :, c] += dout[n, i, j, c] * xpad[n, rows, cols, :]
    db = dout.sum(axis=(0, 1, 2)).astype(b.dtype, copy=False)
    dx = dxpad[:, top:top + H, left:left + W, :]
    return dx, dw, db


# About this many bytes of the im2col matrix exist at any time (see `_conv_padded`). Each block is
# one matrix product that BLAS splits among its threads, which wait for each other at its end:
# few large blocks mean few waits. With other processes busy on the machine a wait can last a
# time slice: measured here, 2 MiB blocks then made VGG-19 up to 5x slower than 32 MiB ones. On an
# idle machine 8 to 32 MiB are within ~10% of each other (smaller blocks stay in the cache).
_IM2COL_BLOCK_BYTES = 32 * 2**20

# Scratch buffers kept from call to call, per thread (an im2col block and the padded rows it reads,
# at most _IM2COL_BLOCK_BYTES each): a fresh buffer of tens of MiB would come from the operating
# system as new pages on every call, each faulted in and zeroed before use, a few ms each time.
_scratch = threading.local()


def _scratch_buffer(name, shape, dtype):
    """An uninitialised array of `shape` and `dtype` in this thread's scratch buffer `name`.

    The memory is reused by the next call asking for the same name: use the array before then.
    """
    nbytes = int(np.prod(shape)) * np.dtype(dtype).itemsize
    buffers = getattr(_scratch, "buffers", None)
    if buffers is None:
        buffers = _scratch.buffers = {}
    if name not in buffers or buffers[name].nbytes < nbytes:
        buffers[name] = np.empty(nbytes, dtype=np.uint8)
    return buffers[name][:nbytes].view(dtype).reshape(shape)


def _padded_rows(x, start, stop, pad_h, pad_w, out):
    """Rows start..stop-1 of an image zero-padded by pad_h and pad_w, written into `out`.

    Args:
        x: one image (H, W, C), any strides.
        start, stop: rows of the PADDED image, 0 <= start < stop <= top + H + bottom.
        pad_h, pad_w: (top, bottom) and (left, right), the zeros around x.
        out: (stop - start, left + W + right, C), overwritten.

    Returns:
        out, out[r] = row start + r of the padded image.
    """
    H, W, _ = x.shape
    top, left = pad_h[0], pad_w[0]
    first = min(max(start, top), stop)  # the padded rows that hold rows of x: first..last-1
    last = max(min(stop, top + H), first)
    out[:first - start] = 0
    out[last - start:] = 0
    inside = out[first - start:last - start]
    inside[:, :left] = 0
    inside[:, left + W:] = 0
    inside[:, left:left + W] = x[first - top:last - top]
    return out


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


def _conv_padded(x, w, stride, pad_h, pad_w, b=None):
    """Convolution of x zero-padded by pad_h and pad_w, by im2col, one block of output rows at a time.

    Args:
        x: (N, H, W, C_in), any strides.
        w: (KH, KW, C_in, C_out).
        stride: int.
        pad_h, pad_w: (top, bottom) and (left, right), the zeros around x, each >= 0.
        b: (C_out,), or None for no bias.

    Returns:
        out: (N, H_out, W_out, C_out), C-contiguous, where xpad is x padded,
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
    out = np.empty((N, H_out, W_out, C_out), dtype=dtype)
    if KH == KW == stride == 1 and pad_h == pad_w == (0, 0):
        # a 1x1 convolution is a matrix product over channels: the input is its own im2col matrix
        out_rows = out.reshape(N * H * W, C_out)
        np.matmul(x.reshape(N * H * W, C_in), w_cols, out=out_rows)
        if b is not None:
            out_rows += b
        return out
    # output rows per block, so that neither the block nor the padded rows it reads exceed the budget
    row_bytes = x.itemsize * max(W_out * K, stride * Wp * C_in)
    rows = min(H_out, max(1, _IM2COL_BLOCK_BYTES // row_bytes))
    in_place = pad_h == pad_w == (0, 0) and x.flags.c_contiguous  # rows of x can be read as they are
    if not in_place:
        slab = _scratch_buffer("padded rows", ((rows - 1) * stride + KH, Wp, C_in), x.dtype)
    block = _scratch_buffer("im2col", (rows, W_out, KH, KW * C_in), x.dtype)
    for n in range(N):
        for i in range(0, H_out, rows):
            r = min(rows, H_out - i)
            start, stop = i * stride, (i + r - 1) * stride + KH  # the padded rows these outputs read
            if in_place:
                padded = x[n, start:stop]
            else:
                padded = _padded_rows(x[n], start, stop, pad_h, pad_w, slab[:stop - start])
            cols = block[:r]
            cols[...] = _im2col_view(padded[None], KH, KW, stride, r, W_out)[0]  # the copy
            out_rows = out[n, i:i + r].reshape(r * W_out, C_out)  # a view: the product lands in out
            np.matmul(cols.reshape(r * W_out, K), w_cols, out=out_rows)
            if b is not None:
                out_rows += b  # now, while these rows are in the cache
    return out


# Below this many input channels (an RGB image) the input gradient is computed by col2im rather
# than as a convolution with the flipped kernel: a product with so few output columns runs slowly
# in BLAS.
_FEW_CHANNELS = 8


def _conv_padded_backward_x(dout, w, stride, xpad_shape):
    """Gradient of `_conv_padded` with respect to the padded input, by col2im a block at a time.

    Args:
        dout: (N, H_out, W_out, C_out).
        w: (KH, KW, C_in, C_out).
        stride: int.
        xpad_shape: (N, Hp, Wp, C_in), the shape of the padded input.

    Returns:
        dxpad: (N, Hp, Wp, C_in), the sum over windows and taps of
               dxpad[n, i*stride + kh, j*stride + kw, :] += dout[n, i, j, :] @ w[kh, kw].T

    For a block of output rows, ONE product dout_rows @ w_cols.T gives the gradient of the block's
    im2col matrix: every window's share for every tap. Each tap's share is then added onto a
    strided view of dxpad. Within one tap different windows never touch the same input cell, so a
    plain += is exact (no np.add.at); overlapping windows add up across taps.
    """
    N, H_out, W_out, C_out = dout.shape
    KH, KW, C_in, _ = w.shape
    w_cols = w.reshape(KH * KW * C_in, C_out)
    dxpad = np.zeros(xpad_shape, dtype=np.result_type(dout, w))
    rows = min(H_out, max(1, _IM2COL_BLOCK_BYTES // (W_out * KH * KW * C_in * dxpad.itemsize)))
    block = _scratch_buffer("im2col", (rows * W_out, KH * KW * C_in), dxpad.dtype)
    for n in range(N):
        for i in range(0, H_out, rows):
            r = min(rows, H_out - i)
            dcols = np.matmul(dout[n, i:i + r].reshape(r * W_out, C_out), w_cols.T, out=block[:r * W_out])
            dcols = dcols.reshape(r, W_out, KH, KW, C_in)  # the gradient of the block's im2col rows
            for kh, kw, view in _window_taps(dxpad[n:n + 1, i * stride:], KH, KW, stride, r, W_out):
                if C_in < _FEW_CHANNELS:
                    # one channel at a time: NumPy's inner loop then runs along W, not over 3 values
                    for c in range(C_in):
                        view[0, :, :, c] += dcols[:, :, kh, kw, c]
                else:
                    view[0] += dcols[:, :, kh, kw, :]
    return dxpad


def conv2d_forward(x, w, b, stride=1, padding="same"):
    """Convolution (cross-correlation) of x with kernels w, plus bias, vectorised.

    Args:
        x: input (N, H, W, C_in).
        w: kernels (KH, KW, C_in, C_out), any size (1x1, 3x3, 5x5, 7x7, non-square).
        b: biases (C_out,).
        stride: int, the same along H and W.
        padding: "same", "valid" or an int (see conv_output_size for the output sizes).

    Returns:
        out: (N, H_out, W_out, C_out),
             out[n, i, j, c] = b[c] + sum_{kh, kw, ci} xpad[n, i*stride + kh, j*stride + kw, ci] * w[kh, kw, ci, c]
        cache: (x, w, b, stride, padding). The input is kept rather than its im2col matrix
             (KH*KW times larger) or its padded copy.
    """
    N, H, W, C_in = x.shape
    KH, KW, w_C_in, C_out = w.shape
    if w_C_in != C_in:
        raise ValueError(f"kernel expects {w_C_in} input channels, input has {C_in}")
    _, top, bottom = conv_output_size(H, KH, stride, padding)
    _, left, right = conv_output_size(W, KW, stride, padding)
    xpad = np.ascontiguousarray(_pad_hw(x, (top, bottom), (left, right)))
    # BEGIN SOLUTION
    # HINT: pad x (top/bottom, left/right from conv_output_size), then for every output position
    # HINT: take the (KH, KW, C_in) window and contract it with w over (kh, kw, ci); add b.
    out = _conv_padded(xpad, w, stride, (0, 0), (0, 0), b)
    # END SOLUTION
    return out, (x, w, b, stride, padding)


def conv2d_backward(dout, cache, weight_grads=True):
    """Backward pass of conv2d_forward, vectorised.

    Args:
        dout: upstream gradient dJ/dout (N, H_out, W_out, C_out).
        cache: from conv2d_forward.
        weight_grads: if False, skip dw and db entirely (style transfer only needs dx: the
            network's weights are fixed and only the pixels change).

    Returns:
        dx: (N, H, W, C_in)         dx = sum over taps of dout @ w[kh, kw].T, placed back on the windows
        dw: (KH, KW, C_in, C_out)   dw[kh, kw] = sum_{n, i, j} xpad[n, i*s + kh, j*s + kw, :]^T dout[n, i, j, :]
        db: (C_out,)                db = sum_{n, i, j} dout[n, i, j, :]
        (dw and db are None when weight_grads is False.)

    With stride 1, dx is itself a convolution: 'full' correlation of dout with the kernel flipped
    in space and with its channel axes swapped, w[::-1, ::-1].transpose(0, 1, 3, 2); the same
    fast routine as the forward pass computes it.
    """
    x, w, b, stride, padding = cache
    N, H, W, C_in = x.shape
    KH, KW, _, C_out = w.shape
    _, H_out, W_out, _ = dout.shape
    _, top, bottom = conv_output_size(H, KH, stride, padding)
    _, left, right = conv_output_size(W, KW, stride, padding)
    Hp, Wp = H + top + bottom, W + left + right
    # BEGIN SOLUTION
    # HINT: every output position sent dout[n, i, j, :] @ w[kh, kw].T back to input position
    # HINT: (i*stride + kh, j*stride + kw) of the padded input; crop the padding off at the end.
    # HINT: dw[kh, kw] sums window^T @ dout over positions; db sums dout over (N, H_out, W_out).
    if stride == 1 and C_in >= _FEW_CHANNELS:
        # Gradient w.r.t. the padded input = 'full' correlation with the flipped kernel. Pad dout
        # by K-1 on each side, less the rows/columns of xpad we would crop anyway (we want dx,
        # not dxpad); an integer padding wider than K-1 makes an amount negative: crop there.
        # w_flip[kh, kw] = w[KH-1-kh, KW-1-kw].T, shape (KH, KW, C_out, C_in), stored with C_in
        # outermost: the copy then moves runs of C_out contiguous values (a plain transposing copy
        # is ~8x slower), and w_flip.reshape(KH*KW*C_out, C_in) stays a view that BLAS reads transposed.
        w_flip = np.ascontiguousarray(w[::-1, ::-1].transpose(2, 0, 1, 3)).transpose(1, 2, 3, 0)
        d, pad_h, pad_w = _crop_negative_padding(dout, (KH - 1 - top, KH - 1 - bottom + (Hp - KH + 1 - H_out)),
                                                 (KW - 1 - left, KW - 1 - right + (Wp - KW + 1 - W_out)))
        dx = _conv_padded(d, w_flip, 1, pad_h, pad_w)
    else:
        # Strides > 1 (and few input channels): each window's share dout @ w.T, put back in place.
        dxpad = _conv_padded_backward_x(dout, w, stride, (N, Hp, Wp, C_in))
        dx = np.ascontiguousarray(dxpad[:, top:top + H, left:left + W, :])
    if not weight_grads:
        return dx, None, None
    xpad = _pad_hw(x, (top, bottom), (left, right))
    dflat = dout.reshape(N * H_out * W_out, C_out)
    dw = np.empty(w.shape, dtype=np.result_type(dout, x))
    for kh, kw, tap in _window_taps(xpad, KH, KW, stride, H_out, W_out):
        dw[kh, kw] = tap.reshape(N * H_out * W_out, C_in).T @ dflat
    db = dout.sum(axis=(0, 1, 2)).astype(b.dtype, copy=False)
    # END SOLUTION
    return dx, dw, db


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


# ------------------------------------------------------------------------------------- ReLU
def relu_forward(x):
    """Rectified linear unit: out = max(x, 0), elementwise.

    Args:
        x: any shape, e.g. (N, H, W, C).

    Returns:
        out: same shape and dtype as x.
        cache: out itself. out > 0 exactly where x > 0, so the output is enough to rebuild the
            mask, and the network keeps it anyway (it is the next layer's input).
    """
    # BEGIN SOLUTION
    # HINT: elementwise max with 0; keep the dtype (np.maximum(x, 0) does).
    out = np.maximum(x, 0)
    # END SOLUTION
    return out, out


def relu_backward(dout, cache):
    """Backward pass of ReLU: dx = dout where x > 0, else 0.

    At x == 0 exactly the derivative is taken as 0, as PyTorch and TensorFlow do. (dx is computed
    as dout times the 0/1 mask, so an inf or NaN in dout where x <= 0 gives NaN, not 0.)

    Args:
        dout: upstream gradient, same shape as the forward output.
        cache: the forward output.

    Returns:
        dx: same shape and dtype as dout.
    """
    out = cache
    # BEGIN SOLUTION
    # HINT: the gradient passes only where the forward input was strictly positive (out > 0).
    dx = dout * (out > 0)  # times the 0/1 mask: in NumPy several times faster than np.where
    # END SOLUTION
    return dx


# ---------------------------------------------------------------------------------- pooling
def _pool_geometry(x_shape, size, stride, padding):
    """(H_out, W_out, pad_h, pad_w) of pooling over an input of shape x_shape (N, H, W, C).

    padding "valid" or "same" (Keras); pad_h = (top, bottom), pad_w = (left, right).
    """
    if padding not in ("valid", "same"):
        raise ValueError(f"pooling padding must be 'valid' or 'same', got {padding!r}")
    _, H, W, _ = x_shape
    H_out, top, bottom = conv_output_size(H, size, stride, padding)
    W_out, left, right = conv_output_size(W, size, stride, padding)
    return H_out, W_out, (top, bottom), (left, right)


def max_pool_forward_naive(x, size=2, stride=2, padding="valid"):
    """Max pooling with plain loops.

    Args:
        x: input (N, H, W, C).
        size: the window is size x size.
        stride: step between windows (stride < size gives overlapping windows).
        padding: "valid" (floor, as Keras) or "same" (padded with -inf, never chosen).

    Returns:
        out: (N, H_out, W_out, C), out[n, i, j, c] = max of the window at (i*stride, j*stride)
        cache: (x, size, stride, padding).
    """
    N, H, W, C = x.shape
    H_out, W_out, pad_h, pad_w = _pool_geometry(x.shape, size, stride, padding)
    xpad = _pad_hw(x, pad_h, pad_w, value=-np.inf)
    out = np.empty((N, H_out, W_out, C), dtype=x.dtype)
    for n in range(N):
        for i in range(H_out):
            for j in range(W_out):
                for c in range(C):
                    out[n, i, j, c] = xpad[n, i * stride:i * stride + size, j * stride:j * stride + size, c].max()
    return out, (x, size, stride, padding)


def max_pool_backward_naive(dout, cache):
    """Backward pass of max pooling with plain loops: each window's gradient goes to one maximum.

    Ties go to the first maximum in row-major order within the window, as PyTorch does.

    Returns:
        dx: (N, H, W, C).
    """
    x, size, stride, padding = cache
    N, H, W, C = x.shape
    _, H_out, W_out, _ = dout.shape
    _, _, pad_h, pad_w = _pool_geometry(x.shape, size, stride, padding)
    xpad = _pad_hw(x, pad_h, pad_w, value=-np.inf)
    dxpad = np.zeros(xpad.shape, dtype=dout.dtype)
    for n in range(N):
        for i in range(H_out):
            for j in range(W_out):
                for c in range(C):
                    window = xpad[n, i * stride:i * stride + size, j * stride:j * stride + size, c]
                    kh, kw = np.unravel_index(np.argmax(window), window.shape)
                    dxpad[n, i * stride + kh, j * stride + kw, c] += dout[n, i, j, c]
    return dxpad[:, pad_h[0]:pad_h[0] + H, pad_w[0]:pad_w[0] + W, :]


def max_pool_forward(x, size=2, stride=2, padding="valid"):
    """Max pooling over size x size windows, vectorised over the window's taps.

    Args:
        x: input (N, H, W, C).
        size: the window is size x size.
        stride: step between windows; overlapping windows (3x3 stride 2, as SqueezeNet) work.
        padding: "valid" (H_out = floor((H - size) / stride) + 1, as Keras) or "same".

    Returns:
        out: (N, H_out, W_out, C), the maximum of each window.
        cache: (x.shape, arg, size, stride, padding) where arg (N, H_out, W_out, C), uint8, is the
            index kh*size + kw of the first maximum of each window: all the backward pass needs,
            a quarter of a float32 output's memory.
    """
    H_out, W_out, pad_h, pad_w = _pool_geometry(x.shape, size, stride, padding)
    xpad = _pad_hw(x, pad_h, pad_w, value=-np.inf)
    # BEGIN SOLUTION
    # HINT: for every window take its maximum; remember WHICH element (first maximum in row-major
    # HINT: order) so that the backward pass can send the gradient there.
    out = arg = None
    has_nan = np.isnan(np.max(x)) if x.size else False  # max propagates NaN: one cheap pass
    for kh, kw, tap in _window_taps(xpad, size, size, stride, H_out, W_out):
        if out is None:
            out = tap.copy()
            arg = np.zeros(out.shape, dtype=np.uint8)
            continue
        # strictly greater: a tie keeps the earlier tap, as PyTorch does; NaN wins, as in PyTorch
        better = tap > out
        if has_nan:
            better |= np.isnan(tap)
        np.maximum(out, tap, out=out)  # NaN propagates, as `better` says
        # Taps come in increasing index order, so where this tap is better its index exceeds the
        # stored one: a maximum with better * index updates arg (far faster than arg[better] = index).
        np.maximum(arg, better * np.uint8(kh * size + kw), out=arg)
    # END SOLUTION
    return out, (x.shape, arg, size, stride, padding)


def max_pool_backward(dout, cache):
    """Backward pass of max pooling: each window sends its gradient to its (first) maximum.

    Args:
        dout: upstream gradient (N, H_out, W_out, C).
        cache: from max_pool_forward.

    Returns:
        dx: (N, H, W, C). Where windows overlap, an input that is the maximum of several windows
            receives the sum of their gradients.
    """
    x_shape, arg, size, stride, padding = cache
    N, H, W, C = x_shape
    H_out, W_out, (top, bottom), (left, right) = _pool_geometry(x_shape, size, stride, padding)
    dxpad = np.zeros((N, H + top + bottom, W + left + right, C), dtype=dout.dtype)
    # BEGIN SOLUTION
    # HINT: for each tap (kh, kw) of the window, add dout where that tap was the maximum to the
    # HINT: input positions (i*stride + kh, j*stride + kw); crop the padding off at the end.
    for kh, kw, view in _window_taps(dxpad, size, size, stride, H_out, W_out):
        view += dout * (arg == kh * size + kw)  # times the 0/1 mask: faster than np.where
    # END SOLUTION
    return np.ascontiguousarray(dxpad[:, top:top + H, left:left + W, :])  # copies only if padded


def avg_pool_forward_naive(x, size=2, stride=2, padding="valid"):
    """Average pooling with plain loops.

    With "same" padding the padded cells are left out of the average, as Keras does.

    Returns:
        out: (N, H_out, W_out, C); cache: (x, size, stride, padding).
    """
    N, H, W, C = x.shape
    H_out, W_out, pad_h, pad_w = _pool_geometry(x.shape, size, stride, padding)
    xpad = _pad_hw(x, pad_h, pad_w, value=np.nan)  # NaN marks padding; nanmean skips it
    out = np.empty((N, H_out, W_out, C), dtype=x.dtype)
    for n in range(N):
        for i in range(H_out):
            for j in range(W_out):
                for c in range(C):
                    window = xpad[n, i * stride:i * stride + size, j * stride:j * stride + size, c]
                    out[n, i, j, c] = window[~np.isnan(window)].mean() if padding == "same" else window.mean()
    return out, (x, size, stride, padding)


def avg_pool_backward_naive(dout, cache):
    """Backward pass of average pooling with plain loops: each window shares its gradient equally.

    Returns:
        dx: (N, H, W, C).
    """
    x, size, stride, padding = cache
    N, H, W, C = x.shape
    _, H_out, W_out, _ = dout.shape
    _, _, pad_h, pad_w = _pool_geometry(x.shape, size, stride, padding)
    Hp, Wp = H + sum(pad_h), W + sum(pad_w)
    inside = np.zeros((Hp, Wp), dtype=bool)
    inside[pad_h[0]:pad_h[0] + H, pad_w[0]:pad_w[0] + W] = True
    dxpad = np.zeros((N, Hp, Wp, C), dtype=dout.dtype)
    for n in range(N):
        for i in range(H_out):
            for j in range(W_out):
                rows = slice(i * stride, i * stride + size)
                cols = slice(j * stride, j * stride + size)
                count = inside[rows, cols].sum()
                dxpad[n, rows, cols, :] += inside[rows, cols, None] * dout[n, i, j, :] / count
    return dxpad[:, pad_h[0]:pad_h[0] + H, pad_w[0]:pad_w[0] + W, :]


def _avg_pool_counts(x_shape, size, stride, padding, dtype):
    """How many real (unpadded) cells each window holds, (1, H_out, W_out, 1) in dtype.

    'valid' windows are all full (size * size); 'same' windows at the border hold fewer, and
    Keras divides by the real count. Counting a window of ones is the shortest exact way.
    """
    N, H, W, C = x_shape
    H_out, W_out, pad_h, pad_w = _pool_geometry(x_shape, size, stride, padding)
    ones = _pad_hw(np.ones((1, H, W, 1), dtype=dtype), pad_h, pad_w)
    counts = np.zeros((1, H_out, W_out, 1), dtype=dtype)
    for _, _, tap in _window_taps(ones, size, size, stride, H_out, W_out):
        counts += tap
    return counts


def avg_pool_forward(x, size=2, stride=2, padding="valid"):
    """Average pooling over size x size windows, vectorised over the window's taps.

    Args:
        x: input (N, H, W, C).
        size, stride: window size and step (overlapping windows work).
        padding: "valid" (floor, as Keras) or "same" (padded cells left out of the average).

    Returns:
        out: (N, H_out, W_out, C), the mean of each window.
        cache: (x.shape, size, stride, padding): the backward pass needs no values of x.
    """
    H_out, W_out, pad_h, pad_w = _pool_geometry(x.shape, size, stride, padding)
    xpad = _pad_hw(x, pad_h, pad_w)
    # BEGIN SOLUTION
    # HINT: the mean of every window: add the size*size taps, divide by the window's cell count.
    out = np.zeros((x.shape[0], H_out, W_out, x.shape[3]), dtype=x.dtype)
    for _, _, tap in _window_taps(xpad, size, size, stride, H_out, W_out):
        out += tap
    out /= _avg_pool_counts(x.shape, size, stride, padding, x.dtype)
    # END SOLUTION
    return out, (x.shape, size, stride, padding)


def avg_pool_backward(dout, cache):
    """Backward pass of average pooling: each input cell gets dout / count from every window holding it.

    Args:
        dout: upstream gradient (N, H_out, W_out, C).
        cache: from avg_pool_forward.

    Returns:
        dx: (N, H, W, C).
    """
    x_shape, size, stride, padding = cache
    N, H, W, C = x_shape
    H_out, W_out, (top, bottom), (left, right) = _pool_geometry(x_shape, size, stride, padding)
    # BEGIN SOLUTION
    # HINT: every cell of a window contributed 1/count of the window's mean: send dout/count back
    # HINT: to each tap's input positions, summing where windows overlap.
    share = dout / _avg_pool_counts(x_shape, size, stride, padding, dout.dtype)
    dxpad = np.zeros((N, H + top + bottom, W + left + right, C), dtype=dout.dtype)
    for _, _, view in _window_taps(dxpad, size, size, stride, H_out, W_out):
        view += share
    # END SOLUTION
    return np.ascontiguousarray(dxpad[:, top:top + H, left:left + W, :])  # copies only if padded


# ---------------------------------------------------------------------------- concatenation
def concat_forward(xs, axis=-1):
    """Concatenate arrays along the channel axis (SqueezeNet's fire modules join two branches).

    Args:
        xs: list of arrays (N, H, W, C_k), equal except along `axis`.
        axis: the axis to join on, channels by default.

    Returns:
        out: (N, H, W, sum_k C_k).
        cache: (sizes, axis), the sizes C_k along `axis`, to split the gradient again.
    """
    out = np.concatenate(xs, axis=axis)
    return out, (tuple(x.shape[axis] for x in xs), axis)


def concat_backward(dout, cache):
    """Backward pass of concatenation: split dout back into the inputs' pieces.

    Args:
        dout: upstream gradient (N, H, W, sum_k C_k).
        cache: from concat_forward.

    Returns:
        list of dx_k (N, H, W, C_k), fresh contiguous arrays (not views of dout), so that a caller
        that accumulates into one cannot change dout.
    """
    sizes, axis = cache
    bounds = np.cumsum(sizes)[:-1]
    return [np.ascontiguousarray(piece) for piece in np.split(dout, bounds, axis=axis)]

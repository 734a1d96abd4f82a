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

Each layer has two versions. The `*_naive` functions are plain loops, written to be read next to
the formula; the others are vectorised and are what the networks use. Tests prove both agree with
each other, with finite differences and with PyTorch.
"""

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


def _conv_rows(xpad, w):
    """Stride-1 'valid' convolution of an already padded input, without an im2col copy.

    Args:
        xpad: (N, Hp, Wp, C_in), C-contiguous.
        w: (KH, KW, C_in, C_out).

    Returns:
        (N, Hp - KH + 1, Wp - KW + 1, C_out).

    Flatten xpad to rows = (N*Hp*Wp, C_in). The output at grid position r = (n, i, j) is
    sum_{kh, kw} rows[r + kh*Wp + kw] @ w[kh, kw], so each kernel tap is ONE matrix product of a
    contiguous block of rows, shifted by kh*Wp + kw, accumulated into the output. We compute the
    output on the whole padded grid (the positions j > W_out - 1 wrap into the next row and are
    garbage) and crop at the end: a few percent of extra columns buys BLAS-friendly products
    with no copy of the input.
    """
    N, Hp, Wp, C_in = xpad.shape
    KH, KW, _, C_out = w.shape
    H_out, W_out = Hp - KH + 1, Wp - KW + 1
    rows = xpad.reshape(N * Hp * Wp, C_in)
    L = N * Hp * Wp - ((KH - 1) * Wp + (KW - 1))  # rows of the grid every tap can reach
    dtype = np.result_type(xpad, w)
    out = np.empty((N * Hp * Wp, C_out), dtype=dtype)
    tmp = np.empty((L, C_out), dtype=dtype) if KH * KW > 1 else None
    for kh in range(KH):
        for kw in range(KW):
            shift = kh * Wp + kw
            if kh == 0 and kw == 0:
                np.matmul(rows[shift:shift + L], w[kh, kw], out=out[:L])
            else:
                np.matmul(rows[shift:shift + L], w[kh, kw], out=tmp)
                out[:L] += tmp
    # rows L.. were never written: they belong to the cropped-away border of the last image
    return out.reshape(N, Hp, Wp, C_out)[:, :H_out, :W_out, :]


def _conv_im2col(xpad, w, stride):
    """Strided 'valid' convolution of a padded input by im2col: one matrix product.

    Args:
        xpad: (N, Hp, Wp, C_in); w: (KH, KW, C_in, C_out); stride: int.

    Returns:
        out (N, H_out, W_out, C_out) and cols (N*H_out*W_out, KH*KW*C_in), the unrolled windows.

    Used where `_conv_rows` is a poor fit: strides > 1 (the grid trick would compute stride**2
    times too many outputs) and few input channels (C_in = 3: products with an inner size of 3 are
    slow; one product with an inner size of KH*KW*3 is not).
    """
    N, Hp, Wp, C_in = xpad.shape
    KH, KW, _, C_out = w.shape
    H_out = (Hp - KH) // stride + 1
    W_out = (Wp - KW) // stride + 1
    cols = np.empty((N, H_out, W_out, KH, KW, C_in), dtype=xpad.dtype)
    for kh, kw, tap in _window_taps(xpad, KH, KW, stride, H_out, W_out):
        cols[:, :, :, kh, kw, :] = tap
    cols = cols.reshape(N * H_out * W_out, KH * KW * C_in)  # (M, K): row = one window, unrolled
    out = cols @ w.reshape(KH * KW * C_in, C_out)  # w unrolls in the same (kh, kw, ci) order
    return out.reshape(N, H_out, W_out, C_out), cols


# Below this many input channels the im2col product is faster than the per-tap products.
_IM2COL_MAX_C_IN = 8


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
             (KH*KW times larger); the backward pass pads it again, which costs one copy.
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
    if stride == 1 and C_in > _IM2COL_MAX_C_IN:
        out = _conv_rows(xpad, w)
    else:
        out, _ = _conv_im2col(xpad, w, stride)
    out = out + b  # also makes the cropped grid view contiguous
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
    if stride == 1 and C_out > _IM2COL_MAX_C_IN:
        # Gradient w.r.t. the padded input = 'full' correlation with the flipped kernel. Pad dout
        # by K-1 on each side, less the rows/columns of xpad we would crop anyway (we want dx,
        # not dxpad); `_pad_or_crop` handles integer paddings wider than K-1.
        w_flip = np.ascontiguousarray(w[::-1, ::-1].transpose(0, 1, 3, 2))  # (KH, KW, C_out, C_in)
        dpad = _pad_or_crop(dout, (KH - 1 - top, KH - 1 - bottom + (Hp - KH + 1 - H_out)),
                            (KW - 1 - left, KW - 1 - right + (Wp - KW + 1 - W_out)))
        dx = _conv_rows(np.ascontiguousarray(dpad), w_flip)
    else:
        # Scatter: each tap's product lands on a strided view of dxpad; no np.add.at needed
        # because within one tap the views of different output positions never overlap.
        dxpad = np.zeros((N, Hp, Wp, C_in), dtype=np.result_type(dout, w))
        dflat = dout.reshape(N * H_out * W_out, C_out)
        for kh, kw, view in _window_taps(dxpad, KH, KW, stride, H_out, W_out):
            view += (dflat @ w[kh, kw].T).reshape(N, H_out, W_out, C_in)
        dx = dxpad[:, top:top + H, left:left + W, :]
    dx = np.ascontiguousarray(dx)
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


def _pad_or_crop(x, pad_h, pad_w):
    """Pad x (N, H, W, C) along H and W where an amount is positive, crop where it is negative."""
    crop = tuple(slice(max(-a, 0), x.shape[axis] - max(-z, 0))
                 for axis, (a, z) in ((1, pad_h), (2, pad_w)))
    x = x[:, crop[0], crop[1], :]
    return _pad_hw(x, (max(pad_h[0], 0), max(pad_h[1], 0)), (max(pad_w[0], 0), max(pad_w[1], 0)))


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

    At x == 0 exactly the derivative is taken as 0, as PyTorch and TensorFlow do.

    Args:
        dout: upstream gradient, same shape as the forward output.
        cache: the forward output.

    Returns:
        dx: same shape and dtype as dout.
    """
    out = cache
    # BEGIN SOLUTION
    # HINT: the gradient passes only where the forward input was strictly positive (out > 0).
    dx = np.where(out > 0, dout, 0).astype(dout.dtype, copy=False)
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
    for kh, kw, tap in _window_taps(xpad, size, size, stride, H_out, W_out):
        if out is None:
            out = tap.copy()
            arg = np.zeros(out.shape, dtype=np.uint8)
            continue
        # strictly greater: a tie keeps the earlier tap, as PyTorch does; NaN wins, as in PyTorch
        better = (tap > out) | np.isnan(tap)
        np.copyto(out, tap, where=better)
        arg[better] = kh * size + kw
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
        view += np.where(arg == kh * size + kw, dout, 0)
    # END SOLUTION
    return dxpad[:, top:top + H, left:left + W, :].copy()


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
    return dxpad[:, top:top + H, left:left + W, :].copy()


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

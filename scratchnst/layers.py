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
the formula; the others are vectorised over positions, and are the course's exercises. The
networks run neither: `scratchnst.fast_conv` computes the convolution with larger matrix products
(im2col a block of rows at a time) and the ReLU fused into it (`conv2d_relu_forward`,
`conv2d_relu_backward`), a fire module's branches are written straight into their concatenation,
and `scratchnst.fast_pool` runs the pooling here a band of rows at a time, with the same results.
Tests prove that all of these agree with each other (the fused ones with the layers here
composed), with finite differences and with PyTorch.
"""

import functools

import numpy as np

from scratchnst.arguments import check_dout, check_floats, check_images, check_kernel, per_channel, positive_int


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
    stride, k = positive_int("stride", stride), positive_int("window size", k)
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
        b: biases (C_out,), or the course's (1, 1, 1, C_out).
        stride: int, the same along H and W.
        padding: "same", "valid" or an int (see conv_output_size).

    Returns:
        out: (N, H_out, W_out, C_out) with
             out[n, i, j, c] = b[c] + sum_{kh, kw, ci} xpad[n, i*stride + kh, j*stride + kw, ci] * w[kh, kw, ci, c]
        cache: (x, w, b, stride, padding) for conv2d_backward_naive.
    """
    check_floats("conv2d_forward_naive", x=x, w=w, b=b)
    check_images("conv2d_forward_naive", x=x)
    stride = positive_int("stride", stride)
    N, H, W, C_in = x.shape
    check_kernel("conv2d_forward_naive", w, C_in)
    KH, KW, _, C_out = w.shape
    b = per_channel("conv2d_forward_naive", "b", b, C_out)
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
    H_out, top, bottom = conv_output_size(H, KH, stride, padding)
    W_out, left, right = conv_output_size(W, KW, stride, padding)
    check_dout("conv2d_backward_naive", dout, (N, H_out, W_out, C_out))
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
    db = dout.sum(axis=(0, 1, 2), dtype=np.float64).astype(b.dtype, copy=False)  # see conv2d_backward
    dx = dxpad[:, top:top + H, left:left + W, :]
    return dx, dw, db


def conv2d_forward(x, w, b, stride=1, padding="same"):
    """Convolution (cross-correlation) of x with kernels w, plus bias, vectorised over positions.

    Args:
        x: input (N, H, W, C_in).
        w: kernels (KH, KW, C_in, C_out), any size (1x1, 3x3, 5x5, 7x7, non-square).
        b: biases (C_out,), or the course's (1, 1, 1, C_out).
        stride: int, the same along H and W.
        padding: "same", "valid" or an int (see conv_output_size for the output sizes).

    Returns:
        out: (N, H_out, W_out, C_out),
             out[n, i, j, c] = b[c] + sum_{kh, kw, ci} xpad[n, i*stride + kh, j*stride + kw, ci] * w[kh, kw, ci, c]
        cache: (x, w, b, stride, padding). The input is kept rather than its padded copy.

    One loop over the KH*KW taps of the kernel, each a matrix product over all output positions
    at once: the inputs that tap (kh, kw) multiplies form a strided view of the padded input
    (`_window_taps`). The networks run `fast_conv.conv2d_forward` instead, which computes the same
    thing with one larger product per block of rows (tests prove the two equal).
    """
    check_floats("conv2d_forward", x=x, w=w, b=b)
    check_images("conv2d_forward", x=x)
    stride = positive_int("stride", stride)
    N, H, W, C_in = x.shape
    check_kernel("conv2d_forward", w, C_in)
    KH, KW, _, C_out = w.shape
    b = per_channel("conv2d_forward", "b", b, C_out)
    H_out, top, bottom = conv_output_size(H, KH, stride, padding)
    W_out, left, right = conv_output_size(W, KW, stride, padding)
    xpad = _pad_hw(x, (top, bottom), (left, right))  # (N, top + H + bottom, left + W + right, C_in)
    # BEGIN SOLUTION
    # HINT: for each tap (kh, kw) of the kernel, the inputs it multiplies are a strided view
    # HINT: (N, H_out, W_out, C_in) of xpad (_window_taps yields them): contract it with w[kh, kw]
    # HINT: over C_in and add up the taps; then add b. (Loops over positions are fine too.)
    out = np.zeros((N, H_out, W_out, C_out), dtype=np.result_type(x, w, b))
    for kh, kw, window in _window_taps(xpad, KH, KW, stride, H_out, W_out):
        out += window @ w[kh, kw]  # (N, H_out, W_out, C_in) @ (C_in, C_out)
    out += b
    # END SOLUTION
    return out, (x, w, b, stride, padding)


def conv2d_backward(dout, cache, weight_grads=True):
    """Backward pass of conv2d_forward, vectorised over positions.

    Args:
        dout: upstream gradient dJ/dout (N, H_out, W_out, C_out).
        cache: from conv2d_forward.
        weight_grads: if False, skip dw and db entirely (style transfer only needs dx: the
            network's weights are fixed and only the pixels change).

    Returns:
        dx: (N, H, W, C_in)         dxpad[n, i*s + kh, j*s + kw, :] += dout[n, i, j, :] @ w[kh, kw].T, cropped
        dw: (KH, KW, C_in, C_out)   dw[kh, kw] = sum_{n, i, j} xpad[n, i*s + kh, j*s + kw, :]^T dout[n, i, j, :]
        db: (C_out,)                db = sum_{n, i, j} dout[n, i, j, :]
        (dw and db are None when weight_grads is False.)

    The forward pass's loop over taps, run backwards: tap (kh, kw) read a strided view of the
    padded input, so its share of the gradient, dout @ w[kh, kw].T, is added onto the same view.
    Within one tap different output positions read different input cells, so a plain += is exact
    (no np.add.at); where windows overlap, the taps add up.
    """
    x, w, b, stride, padding = cache
    N, H, W, C_in = x.shape
    KH, KW, _, C_out = w.shape
    H_out, top, bottom = conv_output_size(H, KH, stride, padding)
    W_out, left, right = conv_output_size(W, KW, stride, padding)
    check_dout("conv2d_backward", dout, (N, H_out, W_out, C_out))
    # BEGIN SOLUTION
    # HINT: every output position sent dout[n, i, j, :] @ w[kh, kw].T back to input position
    # HINT: (i*stride + kh, j*stride + kw) of the padded input; crop the padding off at the end.
    # HINT: dw[kh, kw] sums window^T @ dout over positions; db sums dout over (N, H_out, W_out).
    dxpad = np.zeros((N, top + H + bottom, left + W + right, C_in), dtype=np.result_type(dout, w))
    for kh, kw, window in _window_taps(dxpad, KH, KW, stride, H_out, W_out):
        window += dout @ w[kh, kw].T  # (N, H_out, W_out, C_out) @ (C_out, C_in), onto the inputs it read
    dx = np.ascontiguousarray(dxpad[:, top:top + H, left:left + W, :])
    if not weight_grads:
        return dx, None, None
    xpad = _pad_hw(x, (top, bottom), (left, right))
    dout_rows = dout.reshape(N * H_out * W_out, C_out)
    dw = np.empty(w.shape, dtype=np.result_type(dout, x))
    for kh, kw, window in _window_taps(xpad, KH, KW, stride, H_out, W_out):
        dw[kh, kw] = window.reshape(N * H_out * W_out, C_in).T @ dout_rows
    # summed in float64: NumPy adds the rows of outer axes one after another, and in float32 the error grows
    # with the positions (1.2e-5 at 512x512, against PyTorch's 1.7e-7)
    db = dout.sum(axis=(0, 1, 2), dtype=np.float64).astype(b.dtype, copy=False)
    # END SOLUTION
    return dx, dw, db


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
    check_floats("relu_forward", x=x)
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
    check_dout("relu_backward", dout, out.shape)
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


def padding_never_wins(out, arg, size, stride, pad_h, pad_w):
    """Point arg, in place, at each window's first real cell where the window's maximum is -inf.

    A max pool's 'same' padding is -inf, which loses to every real value but ties with a real -inf:
    a window of -inf cells with padding above or to the left of them then found its first maximum in
    the padding, and its gradient was lost. TensorFlow never chooses padding and PyTorch's own
    padding neither; here such a window's maximum is its first real cell in row-major order,
    (max(0, top - i*stride), max(0, left - j*stride)) for window (i, j), as in PyTorch.
    Padding below and to the right comes after that cell, and a real value above -inf beats padding,
    so nothing else changes. Does nothing when out or arg is not an array (an exercise not done yet).
    """
    (top, _), (left, _) = pad_h, pad_w
    if not (top or left) or not (isinstance(out, np.ndarray) and isinstance(arg, np.ndarray)):
        return
    lost = out == -np.inf
    if not lost.any():
        return
    _, H_out, W_out, _ = out.shape
    first_h = np.maximum(0, top - stride * np.arange(H_out))
    first_w = np.maximum(0, left - stride * np.arange(W_out))
    first = (first_h[:, None] * size + first_w[None, :]).astype(arg.dtype)  # (H_out, W_out)
    np.copyto(arg, np.broadcast_to(first[None, :, :, None], arg.shape), where=lost)


def float16_summed_in_float32(forward):
    """Decorator of an average pooling's forward pass: given float16, it runs in float32 and gives float16 back.

    float16 ends at 65504: the sum of four cells of 40000 overflows where their mean does not.
    PyTorch sums float16 in float32 too. The cache holds no values of x, so the backward pass is
    unchanged.
    """
    @functools.wraps(forward)
    def pool(x, size=2, stride=2, padding="valid"):
        if isinstance(x, np.ndarray) and x.dtype == np.float16:
            out, cache = forward(x.astype(np.float32), size, stride, padding)
            return out.astype(np.float16), cache
        return forward(x, size, stride, padding)

    return pool


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
    check_floats("max_pool_forward_naive", x=x)
    check_images("max_pool_forward_naive", x=x)
    size, stride = positive_int("pool size", size), positive_int("stride", stride)
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

    Ties go to the first maximum in row-major order within the window, as PyTorch does. A window
    holding NaN has NaN for its maximum, and its gradient goes to the last NaN in row-major order,
    as in PyTorch and max_pool_backward.

    Returns:
        dx: (N, H, W, C).
    """
    x, size, stride, padding = cache
    N, H, W, C = x.shape
    H_out, W_out, pad_h, pad_w = _pool_geometry(x.shape, size, stride, padding)
    check_dout("max_pool_backward_naive", dout, (N, H_out, W_out, C))
    xpad = _pad_hw(x, pad_h, pad_w, value=-np.inf)
    dxpad = np.zeros(xpad.shape, dtype=dout.dtype)
    (top, _), (left, _) = pad_h, pad_w
    for n in range(N):
        for i in range(H_out):
            for j in range(W_out):
                # the window's real cells only: padding is never chosen, even against a real -inf
                r0, r1 = max(i * stride, top), min(i * stride + size, top + H)
                c0, c1 = max(j * stride, left), min(j * stride + size, left + W)
                for c in range(C):
                    window = xpad[n, r0:r1, c0:c1, c]
                    nans = np.flatnonzero(np.isnan(window))
                    k = nans[-1] if nans.size else np.argmax(window)  # argmax alone stops at the first NaN
                    kh, kw = np.unravel_index(k, window.shape)
                    dxpad[n, r0 + kh, c0 + kw, c] += dout[n, i, j, c]
    return dxpad[:, top:top + H, left:left + W, :]


def max_pool_forward(x, size=2, stride=2, padding="valid"):
    """Max pooling over size x size windows, vectorised over the window's taps.

    Args:
        x: input (N, H, W, C).
        size: the window is size x size.
        stride: step between windows; overlapping windows (3x3 stride 2, as SqueezeNet) work.
        padding: "valid" (H_out = floor((H - size) / stride) + 1, as Keras) or "same".

    Returns:
        out: (N, H_out, W_out, C), the maximum of each window.
        cache: (x.shape, arg, size, stride, padding) where arg (N, H_out, W_out, C) is the index
            kh*size + kw of the first maximum of each window: all the backward pass needs. It is
            uint8 (a quarter of a float32 output's memory) for windows of up to 16x16, whose 256
            taps it can number; a wider unsigned type for larger ones.
    """
    check_floats("max_pool_forward", x=x)
    check_images("max_pool_forward", x=x)
    size, stride = positive_int("pool size", size), positive_int("stride", stride)
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
            arg = np.zeros(out.shape, dtype=np.min_scalar_type(size * size - 1))  # uint8 up to 16x16
            continue
        # strictly greater: a tie keeps the earlier tap, as PyTorch does; NaN wins, as in PyTorch
        better = tap > out
        if has_nan:
            better |= np.isnan(tap)
        np.maximum(out, tap, out=out)  # NaN propagates, as `better` says
        # Taps come in increasing index order, so where this tap is better its index exceeds the
        # stored one: a maximum with better * index updates arg (far faster than arg[better] = index).
        np.maximum(arg, better * arg.dtype.type(kh * size + kw), out=arg)
    # END SOLUTION
    padding_never_wins(out, arg, size, stride, pad_h, pad_w)
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
    check_dout("max_pool_backward", dout, (N, H_out, W_out, C))
    dxpad = np.zeros((N, H + top + bottom, W + left + right, C), dtype=dout.dtype)
    # BEGIN SOLUTION
    # HINT: for each tap (kh, kw) of the window, add dout where that tap was the maximum to the
    # HINT: input positions (i*stride + kh, j*stride + kw); crop the padding off at the end.
    for kh, kw, view in _window_taps(dxpad, size, size, stride, H_out, W_out):
        view += dout * (arg == kh * size + kw)  # times the 0/1 mask: faster than np.where
    # END SOLUTION
    return np.ascontiguousarray(dxpad[:, top:top + H, left:left + W, :])  # copies only if padded


@float16_summed_in_float32
def avg_pool_forward_naive(x, size=2, stride=2, padding="valid"):
    """Average pooling with plain loops.

    With "same" padding the padded cells are left out of the average, as Keras does: each window's
    sum is divided by the number of real cells it holds.

    Returns:
        out: (N, H_out, W_out, C); cache: (x, size, stride, padding).
    """
    check_floats("avg_pool_forward_naive", x=x)
    check_images("avg_pool_forward_naive", x=x)
    size, stride = positive_int("pool size", size), positive_int("stride", stride)
    N, H, W, C = x.shape
    H_out, W_out, pad_h, pad_w = _pool_geometry(x.shape, size, stride, padding)
    xpad = _pad_hw(x, pad_h, pad_w)  # zeros add nothing to a sum
    # A mask of the real cells rather than a marker value in xpad: any value, NaN too, may be in x.
    inside = np.zeros((H + sum(pad_h), W + sum(pad_w)), dtype=bool)
    inside[pad_h[0]:pad_h[0] + H, pad_w[0]:pad_w[0] + W] = True
    out = np.empty((N, H_out, W_out, C), dtype=x.dtype)
    for n in range(N):
        for i in range(H_out):
            for j in range(W_out):
                rows = slice(i * stride, i * stride + size)
                cols = slice(j * stride, j * stride + size)
                count = inside[rows, cols].sum()
                for c in range(C):
                    out[n, i, j, c] = xpad[n, rows, cols, c].sum() / count
    return out, (x, size, stride, padding)


def avg_pool_backward_naive(dout, cache):
    """Backward pass of average pooling with plain loops: each window shares its gradient equally.

    Returns:
        dx: (N, H, W, C).
    """
    x, size, stride, padding = cache
    N, H, W, C = x.shape
    H_out, W_out, pad_h, pad_w = _pool_geometry(x.shape, size, stride, padding)
    check_dout("avg_pool_backward_naive", dout, (N, H_out, W_out, C))
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


@float16_summed_in_float32
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
    check_floats("avg_pool_forward", x=x)
    check_images("avg_pool_forward", x=x)
    size, stride = positive_int("pool size", size), positive_int("stride", stride)
    H_out, W_out, pad_h, pad_w = _pool_geometry(x.shape, size, stride, padding)
    xpad = _pad_hw(x, pad_h, pad_w)
    counts = _avg_pool_counts(x.shape, size, stride, padding, x.dtype)  # (1, H_out, W_out, 1)
    # BEGIN SOLUTION
    # HINT: the mean of every window: add the size*size taps (_window_taps), divide by counts,
    # HINT: each window's number of real cells.
    out = np.zeros((x.shape[0], H_out, W_out, x.shape[3]), dtype=x.dtype)
    for _, _, tap in _window_taps(xpad, size, size, stride, H_out, W_out):
        out += tap
    out /= counts
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
    check_dout("avg_pool_backward", dout, (N, H_out, W_out, C))
    counts = _avg_pool_counts(x_shape, size, stride, padding, dout.dtype)  # (1, H_out, W_out, 1)
    # BEGIN SOLUTION
    # HINT: every cell of a window contributed 1/count of the window's mean: send dout/counts back
    # HINT: to each tap's input positions, summing where windows overlap.
    share = dout / counts
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
        cache: (out.shape, sizes, axis), sizes the C_k along `axis`, to split the gradient again.
    """
    check_floats("concat_forward", **{f"xs[{k}]": x for k, x in enumerate(xs)})
    out = np.concatenate(xs, axis=axis)
    return out, (out.shape, tuple(x.shape[axis] for x in xs), axis)


def concat_backward(dout, cache):
    """Backward pass of concatenation: split dout back into the inputs' pieces.

    Args:
        dout: upstream gradient (N, H, W, sum_k C_k).
        cache: from concat_forward.

    Returns:
        list of dx_k (N, H, W, C_k), fresh contiguous arrays (not views of dout), so that a caller
        that accumulates into one cannot change dout.
    """
    out_shape, sizes, axis = cache
    check_dout("concat_backward", dout, out_shape)
    bounds = np.cumsum(sizes)[:-1]
    return [np.ascontiguousarray(piece) for piece in np.split(dout, bounds, axis=axis)]

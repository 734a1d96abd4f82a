"""The layers a real-time style network needs beyond convolution and ReLU, forward and backward, in NumPy.

Johnson, Alahi & Fei-Fei (2016) train a feed-forward "transformer" network that stylises a photo in
one pass. Besides convolutions and ReLUs (`scratchnst.layers`, `scratchnst.fast_conv`) it is built
from five small layers, here as pure functions in the CS231n style, `*_forward(x, ...) -> (out, cache)`
and `*_backward(dout, cache) -> gradient(s)`:

    reflection padding    pads by mirroring the border (no dark frame, unlike zero padding)
    instance norm         normalises each image's channel over its pixels, then scales and shifts
    nearest upsampling    each pixel repeated into an f x f block (no checkerboard, unlike
                          transposed convolutions)
    residual sum          the skip connection of a residual block
    scaled tanh           squashes the last convolution into the pixel range the loss network reads

and `conv2d_weight_gradient`, a faster kernel gradient for the network's stride-1 convolutions.

Everything is channels-last, activations (N, H, W, C), per-channel parameters (C,). Each layer has a
`*_naive` version written as loops or as the textbook formula, to read next to the maths and to
check the vectorised one against (tests prove the two equal, equal to finite differences and to
PyTorch). Every function keeps the dtype it is given and never writes into its inputs, `dout` or
the cache, but one made for stylising only: `instance_norm_forward_in_place`.

`gradcheck_cases.transformer_cases` lists these layers' configurations for `scratchnst.gradcheck`
(there, not here: this module imports nothing but NumPy, `parallel` and `arguments` (the checks of
its arguments), not even inside a function, as tests/test_package_layout.py checks for every math module).
"""

import math

import numpy as np

from scratchnst import arguments, parallel

# PyTorch's InstanceNorm2d default: small enough not to change the result for any real activation,
# large enough that a constant channel (variance 0) gives xhat = 0 rather than 0/0.
IN_EPS = 1e-5


# ------------------------------------------------------------------------ reflection padding
def _check_reflect(shape, pad):
    """pad as a Python int, or ValueError unless it is an int >= 0 smaller than H and W of shape (N, H, W, C).

    A reflection never repeats the border pixel, so it can mirror at most H - 1 rows; np.pad would
    reflect again off the far side for more, PyTorch refuses. We refuse too.
    """
    if not isinstance(pad, (int, np.integer)) or isinstance(pad, bool) or pad < 0:
        raise ValueError(f"reflection padding must be an int >= 0, got {pad!r}")
    _, H, W, _ = shape
    if pad >= H or pad >= W:
        raise ValueError(f"reflection padding {pad} needs an input larger than {pad} pixels on each side, "
                         f"got {H}x{W}")
    return int(pad)  # index arithmetic in a small NumPy type would wrap around


def _reflect_index(i, n):
    """The row (or column) of an input of size n that padded position i - pad mirrors: ...2 1 [0 1 .. n-1] n-2..."""
    if i < 0:
        return -i
    if i >= n:
        return 2 * (n - 1) - i
    return i


def reflection_pad_forward_naive(x, pad):
    """Reflection padding with plain loops over the output positions.

    Args:
        x: input (N, H, W, C).
        pad: int p, 0 <= p < min(H, W), the same on all four sides.

    Returns:
        out: (N, H + 2p, W + 2p, C), out[n, i, j, c] = x[n, r(i - p, H), r(j - p, W), c] where
             r(k, n) = -k for k < 0, 2(n - 1) - k for k >= n, else k (the border is not repeated).
        cache: (x.shape, pad).
    """
    arguments.check_floats("reflection_pad_forward_naive", x=x)
    arguments.check_images("reflection_pad_forward_naive", x=x)
    pad = _check_reflect(x.shape, pad)
    N, H, W, C = x.shape
    out = np.empty((N, H + 2 * pad, W + 2 * pad, C), dtype=x.dtype)
    for i in range(H + 2 * pad):
        for j in range(W + 2 * pad):
            out[:, i, j, :] = x[:, _reflect_index(i - pad, H), _reflect_index(j - pad, W), :]
    return out, (x.shape, pad)


def reflection_pad_backward_naive(dout, cache):
    """Backward pass of reflection padding with plain loops: each padded cell returns its gradient
    to the input cell it copied.

    Args:
        dout: upstream gradient (N, H + 2p, W + 2p, C).
        cache: from reflection_pad_forward_naive.

    Returns:
        dx: (N, H, W, C); a border-near input cell copied k times receives k + 1 terms.
    """
    (N, H, W, C), pad = cache
    arguments.check_dout("reflection_pad_backward_naive", dout, (N, H + 2 * pad, W + 2 * pad, C))
    dx = np.zeros((N, H, W, C), dtype=dout.dtype)
    for i in range(H + 2 * pad):
        for j in range(W + 2 * pad):
            dx[:, _reflect_index(i - pad, H), _reflect_index(j - pad, W), :] += dout[:, i, j, :]
    return dx


def reflection_pad_forward(x, pad):
    """Reflection padding of H and W by `pad` on every side, as torch.nn.ReflectionPad2d(pad).

    Args:
        x: input (N, H, W, C).
        pad: int p, 0 <= p < min(H, W).

    Returns:
        out: (N, H + 2p, W + 2p, C), np.pad(x, mode="reflect") on axes 1 and 2: the rows above are
             rows p..1 of x in that order (row 0, the border, is not repeated), likewise below and
             on the sides.
        cache: (x.shape, pad): the backward pass needs no values of x.
    """
    arguments.check_floats("reflection_pad_forward", x=x)
    arguments.check_images("reflection_pad_forward", x=x)
    pad = _check_reflect(x.shape, pad)
    out = np.pad(x, ((0, 0), (pad, pad), (pad, pad), (0, 0)), mode="reflect")
    return out, (x.shape, pad)


def _fold_reflected(d, pad, axis):
    """Fold the gradient of a reflection-padded axis back onto the unpadded one.

    d has size n + 2p along `axis`; returns a fresh array of size n there: the middle n cells, plus
    padded cell p - 1 - k added onto cell k + 1 (top/left mirror) and padded cell p + n + k added
    onto cell n - 2 - k (bottom/right mirror), k = 0..p-1.
    """
    n = d.shape[axis] - 2 * pad

    def span(start, stop):
        index = [slice(None)] * d.ndim
        index[axis] = slice(start, stop)
        return tuple(index)

    dx = d[span(pad, pad + n)].copy()
    if pad:
        dx[span(1, pad + 1)] += np.flip(d[span(0, pad)], axis)  # rows p-1..0 mirrored rows 1..p
        dx[span(n - 1 - pad, n - 1)] += np.flip(d[span(pad + n, None)], axis)  # rows n+p.. mirrored n-2..
    return dx


def reflection_pad_backward(dout, cache):
    """Backward pass of reflection padding: the mirrored rows' and columns' gradients folded back.

    Args:
        dout: upstream gradient (N, H + 2p, W + 2p, C).
        cache: from reflection_pad_forward.

    Returns:
        dx: (N, H, W, C). Folding H first and then W handles the corners, which were mirrored
            along both axes; where H is small the top and bottom folds may land on the same row,
            and both add.
    """
    (N, H, W, C), pad = cache
    arguments.check_dout("reflection_pad_backward", dout, (N, H + 2 * pad, W + 2 * pad, C))
    if pad == 0:
        return dout.copy()
    # The same sums as folding H into a copy of dout and then W into a copy of that, with one copy:
    # the middle, its rows folded; then the two border strips of columns, their rows folded (small
    # arrays), folded onto it. A full copy is a pass over dout, and fresh memory to fault in.
    dx = _fold_reflected(dout[:, :, pad:pad + W], pad, axis=1)  # (N, H, W, C)
    left = _fold_reflected(dout[:, :, :pad], pad, axis=1)  # (N, H, p, C)
    right = _fold_reflected(dout[:, :, pad + W:], pad, axis=1)
    dx[:, :, 1:pad + 1] += np.flip(left, 2)  # columns p-1..0 mirrored columns 1..p
    dx[:, :, W - 1 - pad:W - 1] += np.flip(right, 2)  # columns W+p.. mirrored W-2..
    return dx


# ---------------------------------------------------------------------- instance normalisation
def instance_norm_forward_naive(x, gamma, beta, eps=IN_EPS):
    """Instance normalisation with a loop over (image, channel), the textbook formula in each.

    Args:
        x: input (N, H, W, C).
        gamma, beta: scale and shift (C,), or (1, 1, 1, C).
        eps: added to the variance, as PyTorch's InstanceNorm2d (1e-5).

    Returns:
        out: (N, H, W, C), for each image n and channel c, over its H*W pixels:
             mu = mean(x[n, :, :, c]),  var = mean((x[n, :, :, c] - mu)^2)  (biased: divided by H*W)
             out[n, :, :, c] = gamma[c] * (x[n, :, :, c] - mu) / sqrt(var + eps) + beta[c]
        cache: (x, gamma, beta, eps).
        The dtypes are instance_norm_forward's, and float16 is computed in float32 as there.
    """
    arguments.check_floats("instance_norm_forward_naive", x=x, gamma=gamma, beta=beta)
    arguments.check_images("instance_norm_forward_naive", x=x)
    gamma = arguments.per_channel("instance_norm_forward_naive", "gamma", gamma, x.shape[3])
    beta = arguments.per_channel("instance_norm_forward_naive", "beta", beta, x.shape[3])
    eps = _check_eps("instance_norm_forward_naive", eps)
    N, H, W, C = x.shape
    out = np.empty(x.shape, dtype=np.result_type(x, gamma, beta))
    inside = _working_dtype(x, gamma, beta)
    for n in range(N):
        for c in range(C):
            plane = x[n, :, :, c].astype(inside)
            mu = plane.mean()
            var = ((plane - mu) ** 2).mean()
            out[n, :, :, c] = gamma[c].astype(inside) * (plane - mu) / np.sqrt(var + eps) + beta[c].astype(inside)
    return out, (x, gamma, beta, eps)


def instance_norm_backward_naive(dout, cache):
    """Backward pass of instance normalisation, one (image, channel) at a time, by the chain rule
    through every intermediate (the computational graph mu -> var -> xhat -> out, unsimplified).

    Returns:
        dx (N, H, W, C), dgamma (C,), dbeta (C,), in instance_norm_backward's dtypes.
    """
    x, gamma, beta, eps = cache
    arguments.check_dout("instance_norm_backward_naive", dout, x.shape)
    N, H, W, C = x.shape
    M = H * W
    inside = _working_dtype(dout, x, gamma, beta)
    dx = np.empty(x.shape, dtype=np.result_type(dout, x))
    dgamma = np.zeros(gamma.shape, dtype=inside)
    dbeta = np.zeros(beta.shape, dtype=inside)
    gamma_inside = gamma.astype(inside)
    for n in range(N):
        for c in range(C):
            plane, dy = x[n, :, :, c].astype(inside), dout[n, :, :, c].astype(inside)
            mu = plane.mean()
            xc = plane - mu
            var = (xc ** 2).mean()
            std = np.sqrt(var + eps)
            xhat = xc / std
            dbeta[c] += dy.sum()
            dgamma[c] += (dy * xhat).sum()
            dxhat = dy * gamma_inside[c]
            dvar = np.sum(dxhat * xc) * -0.5 * std ** -3          # xhat = xc * (var + eps)^(-1/2)
            dxc = dxhat / std + dvar * 2 * xc / M                 # var = sum(xc^2) / M
            dmu = -np.sum(dxc)                                    # xc = x - mu
            dx[n, :, :, c] = dxc + dmu / M                        # mu = sum(x) / M
    return dx, dgamma.astype(gamma.dtype), dbeta.astype(beta.dtype)


def _check_eps(name, eps):
    """eps as a float, or ValueError: it must be a finite number >= 0 (a negative one makes var + eps
    negative for a constant channel, and its square root NaN)."""
    try:
        value = float(eps)
    except (TypeError, ValueError):
        raise ValueError(f"{name}: eps must be a number >= 0, got {eps!r}") from None
    if not math.isfinite(value) or value < 0:
        raise ValueError(f"{name}: eps must be a finite number >= 0 (PyTorch's default is {IN_EPS}), got {eps!r}")
    return value


def _working_dtype(*arrays):
    """The dtype instance norm computes in: the widest of the arrays', float32 at least (float16's
    statistics overflow: a 256x256 plane counts 65536 pixels, beyond its largest number, 65504)."""
    return np.result_type(np.float32, *arrays)


def _plane_means(a):
    """Mean of each (image, channel) plane over its pixels: (N, H, W, C) -> (N, 1, 1, C).

    As a batched product with a row of ones, (1, H*W) @ (H*W, C) per image: BLAS sums the pixels
    in blocks with several accumulators, which in float32 is about 8x faster than a.mean(axis=(1, 2))
    (NumPy adds the H*W rows one after another) and rounds less.
    """
    N, H, W, C = a.shape
    ones = np.ones((1, H * W), dtype=a.dtype)
    sums = np.matmul(ones, a.reshape(N, H * W, C))          # (N, 1, C)
    return (sums / a.dtype.type(H * W)).reshape(N, 1, 1, C)


def instance_norm_forward(x, gamma, beta, eps=IN_EPS):
    """Instance normalisation with per-channel scale and shift, as torch.nn.InstanceNorm2d(C, affine=True).

    Args:
        x: input (N, H, W, C).
        gamma, beta: scale and shift (C,), or (1, 1, 1, C).
        eps: added to the variance (PyTorch's default 1e-5).

    Returns:
        out: (N, H, W, C), out = gamma * xhat + beta with
             xhat[n, :, :, c] = (x[n, :, :, c] - mu[n, c]) / sigma[n, c],
             mu[n, c] = mean over the H*W pixels, sigma[n, c] = sqrt(biased variance + eps).
        cache: (xhat (N, H, W, C), inv_sigma (N, 1, 1, C), gamma, beta's dtype). The backward pass
            needs x only through xhat; keeping xhat instead of x saves recomputing the statistics.

    Dtypes (the naive versions' too): out is that of x, gamma and beta together; backward, dx is that
    of dout and x, dgamma gamma's and dbeta beta's, as PyTorch gives each parameter's gradient in its
    own dtype. float16 is computed in float32 and given back in float16.

    Unlike batch normalisation nothing is shared between images and there are no running
    statistics: training and stylising compute the same thing (Ulyanov et al. 2016, who found it
    the change that made feed-forward stylisation as good as the optimisation).
    """
    arguments.check_floats("instance_norm_forward", x=x, gamma=gamma, beta=beta)
    arguments.check_images("instance_norm_forward", x=x)
    gamma = arguments.per_channel("instance_norm_forward", "gamma", gamma, x.shape[3])
    beta = arguments.per_channel("instance_norm_forward", "beta", beta, x.shape[3])
    eps = _check_eps("instance_norm_forward", eps)
    if x.dtype == np.float16:
        # float16's statistics overflow: a 256x256 plane counts 65536 pixels, beyond its largest
        # number (65504), and so do the sums. Computed in float32, given back in float16.
        out, (xhat, inv_sigma, _, _) = instance_norm_forward(x.astype(np.float32), gamma, beta, eps)
        return (out.astype(np.result_type(x, gamma, beta), copy=False),
                (xhat.astype(np.float16), inv_sigma, gamma, beta.dtype))
    N = x.shape[0]
    dtype = np.result_type(x, gamma, beta)
    out = np.empty(x.shape, dtype=dtype)
    xhat = np.empty(x.shape, dtype=x.dtype)
    inv_sigma = np.empty((N, 1, 1, x.shape[3]), dtype=x.dtype)

    def images(start, stop):  # each image's planes on their own: the images are split across the cores
        # the squares in the output's buffer when it has x's dtype: fresh memory costs its page faults
        squares = out[start:stop] if out.dtype == x.dtype else None
        _normalise(x[start:stop], gamma, beta, eps, xhat[start:stop], squares, inv_sigma[start:stop], out[start:stop])

    parallel.split(images, N)
    return out, (xhat, inv_sigma, gamma, beta.dtype)


def _normalise(xs, gamma, beta, eps, xc, squares, inv_sigma, out):
    """Instance norm of the images xs (n, H, W, C) into out: xhat into xc, 1 / sigma into inv_sigma
    (n, 1, 1, C), the squared deviations into squares (None: a new array). xc and out may be xs
    itself (instance_norm_forward_in_place), squares out."""
    # Two passes (mean, then the mean of squared deviations): the one-pass E[x^2] - E[x]^2 loses
    # every digit in float32 for activations far from zero.
    mu = _plane_means(xs)                                         # (n, 1, 1, C)
    np.subtract(xs, mu, out=xc)                                   # (n, H, W, C)
    # The mean's own rounding, in float32, is a fraction of the mean, not of the spread: for planes
    # of mean 10 and std 1 at 256x256 it put 2e-5 on xhat, 40 times PyTorch's error (mean 1000:
    # 2e-3). The deviations' own mean is that rounding, and is taken out of the variance and xhat.
    shift = _plane_means(xc)                                      # (n, 1, 1, C)
    squares = np.square(xc, out=squares)
    var = np.maximum(_plane_means(squares) - np.square(shift), 0)  # mean((xc - shift)^2)
    inv_sigma[...] = 1 / np.sqrt(var + xc.dtype.type(eps))        # x's dtype
    # Where the shift is below float32's last digits of xhat, its pass over the image is skipped
    # (planes of mean 0: the shift is the rounding of a sum near 0). Decided image by image, so
    # that the result does not depend on how the images are split across the cores.
    for k in np.flatnonzero((np.abs(shift) * inv_sigma > _NEGLIGIBLE_SHIFT).any(axis=(1, 2, 3))):
        xc[k] -= shift[k]
    xc *= inv_sigma                                               # xhat, in place
    np.multiply(xc, gamma, out=out)
    out += beta


def instance_norm_forward_in_place(x, gamma, beta, eps=IN_EPS, relu=False, squares=None):
    """instance_norm_forward's out (then relu_forward's, with relu) written over x, without a cache.

    For a network that only stylises (transformer_net.forward without keep_cache) and owns x, its
    convolution's fresh output: unlike the rest of this module, this function writes into its input.
    The numbers are instance_norm_forward's (and relu_forward's), bit for bit: the same operations
    in the same order. What it saves is memory: instance_norm_forward and relu_forward write three
    new arrays (xhat, out, the ReLU's out), and on a VM fresh pages cost more than the arithmetic:
    at 512x512x16 in float32 the two took 49 ms, this 28 ms (one thread, squares reused; 2-core AMD EPYC).

    Args:
        x: (N, H, W, C), overwritten where the result has x's dtype (gamma and beta no wider, x not
            float16); otherwise left alone, and the result is a new array as instance_norm_forward's.
        gamma, beta, eps: as instance_norm_forward.
        relu: whether a ReLU follows.
        squares: None, or an array of x's shape and dtype to hold the squared deviations (scratch,
            reused by the caller from call to call); None: a new one.

    Returns:
        (N, H, W, C): x itself, or the new array.
    """
    arguments.check_floats("instance_norm_forward_in_place", x=x, gamma=gamma, beta=beta)
    arguments.check_images("instance_norm_forward_in_place", x=x)
    gamma = arguments.per_channel("instance_norm_forward_in_place", "gamma", gamma, x.shape[3])
    beta = arguments.per_channel("instance_norm_forward_in_place", "beta", beta, x.shape[3])
    eps = _check_eps("instance_norm_forward_in_place", eps)
    if x.dtype == np.float16 or np.result_type(x, gamma, beta) != x.dtype:
        out = instance_norm_forward(x, gamma, beta, eps)[0]
        return np.maximum(out, 0, out=out) if relu else out
    if squares is None or squares.shape != x.shape or squares.dtype != x.dtype:
        squares = np.empty(x.shape, dtype=x.dtype)
    inv_sigma = np.empty((x.shape[0], 1, 1, x.shape[3]), dtype=x.dtype)

    def images(start, stop):
        xs = x[start:stop]
        _normalise(xs, gamma, beta, eps, xs, squares[start:stop], inv_sigma[start:stop], xs)
        if relu:
            np.maximum(xs, 0, out=xs)

    parallel.split(images, x.shape[0])
    return x


_NEGLIGIBLE_SHIFT = 2.0**-23   # on xhat, whose values are of order 1: a unit of float32's last place at 1 (the
# variance's own rounding puts about 1e-6 there at 256x256)


def instance_norm_backward(dout, cache):
    """Backward pass of instance normalisation, by the compact formula.

    Args:
        dout: upstream gradient dy (N, H, W, C).
        cache: from instance_norm_forward.

    Returns:
        dx: (N, H, W, C), for each (n, c), with means over its M = H*W pixels,
            dx = gamma / sigma * (dy - mean(dy) - xhat * mean(dy * xhat))
        dgamma: (C,), sum over n, h, w of dy * xhat
        dbeta: (C,), sum over n, h, w of dy
        (float16: computed in float32, as the forward pass, and given back in float16, where sums
        over planes of 256x256 can exceed its largest number, 65504, and become inf.)

    Derivation, within one (n, c), writing g = gamma * dy = dJ/dxhat:
        xhat_i = (x_i - mu) / sigma, mu = (1/M) sum_k x_k, sigma^2 = (1/M) sum_k (x_k - mu)^2 + eps
        dmu/dx_k = 1/M;  dsigma/dx_k = (x_k - mu) / (M sigma) = xhat_k / M  (the mu term sums to 0)
        dxhat_i/dx_k = (delta_ik - 1/M) / sigma - xhat_i xhat_k / (M sigma)
        dx_k = sum_i g_i dxhat_i/dx_k = (1/sigma) (g_k - mean(g) - xhat_k mean(g * xhat))
    and gamma is constant over the plane, so it comes out of the means. One pass over the plane
    for the two means, one to combine them: no intermediate dvar, dmu arrays as in the naive version.
    The per-plane means also give dgamma and dbeta: sums over the images of M times them.
    """
    xhat, inv_sigma, gamma, beta_dtype = cache
    arguments.check_dout("instance_norm_backward", dout, xhat.shape)
    if np.float16 in (dout.dtype, xhat.dtype):   # float32 inside, as the forward pass (the pixel count overflows)
        dx, dgamma, dbeta = instance_norm_backward(dout.astype(np.float32), (xhat.astype(np.float32), inv_sigma,
                                                                              gamma, beta_dtype))
        return dx.astype(np.result_type(dout, xhat), copy=False), dgamma, dbeta
    N, H, W, C = xhat.shape
    M = dout.dtype.type(H * W)
    dx = np.empty(xhat.shape, dtype=np.result_type(dout, xhat))
    mean_dy = np.empty((N, 1, 1, C), dtype=dout.dtype)
    mean_dy_xhat = np.empty((N, 1, 1, C), dtype=np.result_type(dout, xhat))

    def images(start, stop):  # each image on its own, split across the cores
        dys, xhats = dout[start:stop], xhat[start:stop]
        mean_dy[start:stop] = _plane_means(dys)                                  # (n, 1, 1, C)
        dy_xhat = np.multiply(dys, xhats, out=dx[start:stop])                   # (n, H, W, C)
        mean_dy_xhat[start:stop] = _plane_means(dy_xhat)                        # (n, 1, 1, C)
        np.multiply(xhats, mean_dy_xhat[start:stop], out=dy_xhat)
        np.subtract(dys, dy_xhat, out=dy_xhat)
        dy_xhat -= mean_dy[start:stop]
        dy_xhat *= gamma * inv_sigma[start:stop]                                # (n, 1, 1, C) broadcast

    parallel.split(images, N)
    dbeta = mean_dy.sum(axis=(0, 1, 2)) * M                           # (C,)
    dgamma = mean_dy_xhat.sum(axis=(0, 1, 2)) * M                     # (C,)
    return dx, dgamma.astype(gamma.dtype, copy=False), dbeta.astype(beta_dtype, copy=False)


# ------------------------------------------------------------ the kernel gradient, stride 1
# About this many bytes of window rows are copied out at a time (as fast_conv's im2col blocks).
_BLOCK_BYTES = 8 * 2**20


def _window_rows(a, KH, KW, H_out, W_out):
    """The windows of one image a (Hp, Wp, C), C-contiguous, as a strided view (H_out, W_out, KH, KW*C).

    view[i, j, u] = a[i + u, j:j + KW, :].ravel(): the KW*C values of one window row are one
    contiguous run of a, so the copy of a block of this view moves long runs (not C values at a time).
    """
    sH, sW, sC = a.strides
    if sC != a.itemsize or sW != a.shape[2] * sC:
        raise ValueError("the image must be C-contiguous along W and C")
    return np.lib.stride_tricks.as_strided(a, shape=(H_out, W_out, KH, KW * a.shape[2]),
                                           strides=(sH, sW, sH, sC), writeable=False)


def _least_rows(work_per_row):
    """Fewest rows worth a piece of their own (see `parallel.split`), at work_per_row multiply-adds each."""
    return -(-_SPLIT_LEAST_WORK // work_per_row)


# Multiply-adds below which a piece is not worth a thread (as fast_conv's).
_SPLIT_LEAST_WORK = 2**20


def _sum(parts):
    """The sum of a list of arrays, into the first."""
    total = parts[0]
    for part in parts[1:]:
        total += part
    return total


def _window_products(src, plain, KH, KW, n_rows, width, windows_first, dtype):
    """The sum over images and rows of cols(src)^T @ plain (windows_first) or plain^T @ cols(src).

    cols(src): the KH x KW windows of src (N, n_rows + KH - 1, width + KW - 1, C_w), one row of
    KH*KW*C_w values per position, copied a block of rows at a time; plain: (N, n_rows, width, C_p).
    Returns (KH*KW*C_w, C_p) or (C_p, KH*KW*C_w). The rows are cut into pieces (`parallel.split`),
    each summing its own products; the pieces' sums are added at the end.
    """
    N, C_w, C_p = src.shape[0], src.shape[3], plain.shape[3]
    K = KH * KW * C_w
    rows = max(1, min(n_rows, _BLOCK_BYTES // (width * K * src.itemsize)))

    def part(start, stop):  # the share of rows start..stop-1 of every image
        g = np.zeros((K, C_p) if windows_first else (C_p, K), dtype=dtype)
        block = np.empty((rows, width, KH, KW * C_w), dtype=src.dtype)
        for n in range(N):
            for i in range(start, stop, rows):
                r = min(rows, stop - i)
                cols = block[:r]
                cols[...] = _window_rows(src[n, i:i + r + KH - 1], KH, KW, r, width)      # the copy
                cols_2d, plain_2d = cols.reshape(r * width, K), plain[n, i:i + r].reshape(r * width, C_p)
                g += cols_2d.T @ plain_2d if windows_first else plain_2d.T @ cols_2d
        return g

    return _sum(parallel.split(part, n_rows, least=_least_rows(width * K * C_p * N)))


def conv2d_weight_gradient(x, dout, KH, KW):
    """The kernel gradient of a stride-1 'valid' convolution, windows copied from the side with fewer channels.

    Args:
        x: the convolution's input (N, Hp, Wp, C_in), already padded (here: reflection-padded).
        dout: upstream gradient (N, H_out, W_out, C_out), H_out = Hp - KH + 1, W_out = Wp - KW + 1.
        KH, KW: the kernel's size.

    Returns:
        dw: (KH, KW, C_in, C_out), dw[kh, kw] = sum_{n, i, j} x[n, i + kh, j + kw, :]^T dout[n, i, j, :]
            (what layers.conv2d_backward and fast_conv.conv2d_backward return as dw).

    Why not fast_conv's: it makes one product per kernel tap, each copying a strided view of x C_in
    values at a time (3 for an RGB input) into an (N*H_out*W_out, C_in) matrix, 81 times for a 9x9
    kernel. Here one block of window rows is copied in long runs and multiplied at once, and the
    windows are taken from whichever side has fewer channels:
        C_in <= C_out: windows of x, dw = cols(x)^T @ dout            (cols: KH*KW*C_in wide)
        C_in >  C_out: windows of dout padded by K - 1 (a 'full' correlation), dw = x^T @ cols(dout)
                       (cols: KH*KW*C_out wide; the window at (a, b) holds dout[a - kh, b - kw], so
                       the taps come out flipped and are flipped back)
    For a 9x9 output convolution (16 -> 3 channels) that copies 5x fewer values; measured at
    256x256, batch 4, float32, 1 thread: 57 ms instead of 273 (and 47 instead of 136 for the first).
    """
    arguments.check_floats("conv2d_weight_gradient", x=x, dout=dout)
    arguments.check_images("conv2d_weight_gradient", x=x, dout=dout)
    KH, KW = arguments.positive_int("KH", KH), arguments.positive_int("KW", KW)
    N, Hp, Wp, C_in = x.shape
    _, H_out, W_out, C_out = dout.shape
    if (H_out, W_out) != (Hp - KH + 1, Wp - KW + 1) or dout.shape[0] != N:
        raise ValueError(f"dout {dout.shape} is not the output of a {KH}x{KW} valid convolution of {x.shape}")
    dtype = np.result_type(x, dout)
    if x.size == 0 or dout.size == 0:  # no image or no channel: a sum of nothing (the blocks would divide by 0)
        return np.zeros((KH, KW, C_in, C_out), dtype=dtype)
    x = np.ascontiguousarray(x)  # the windows are read as runs of contiguous rows
    if C_in <= C_out:
        g = _window_products(x, dout, KH, KW, H_out, W_out, True, dtype)       # (KH*KW*C_in, C_out)
        return g.reshape(KH, KW, C_in, C_out)                     # rows were in (kh, kw, ci) order
    # (N, Hp + KH - 1, Wp + KW - 1, C_out); np.pad keeps a Fortran-ordered dout's order, hence C order first
    dpad = np.pad(np.ascontiguousarray(dout), ((0, 0), (KH - 1, KH - 1), (KW - 1, KW - 1), (0, 0)))
    g = _window_products(dpad, x, KH, KW, Hp, Wp, False, dtype)                # (C_in, KH*KW*C_out)
    # g[ci, u, v, co] = sum x[a, b, ci] dout[a - (KH-1-u), b - (KW-1-v), co]: tap (kh, kw) = (KH-1-u, KW-1-v)
    return np.ascontiguousarray(g.reshape(C_in, KH, KW, C_out)[:, ::-1, ::-1, :].transpose(1, 2, 0, 3))


# ------------------------------------------------------------------- nearest-neighbour upsampling
def upsample_nearest_forward_naive(x, factor=2):
    """Nearest-neighbour upsampling with plain loops over the output positions.

    Args:
        x: input (N, H, W, C).
        factor: int f >= 1.

    Returns:
        out: (N, f*H, f*W, C), out[n, i, j, c] = x[n, i // f, j // f, c].
        cache: (x.shape, factor).
    """
    arguments.check_floats("upsample_nearest_forward_naive", x=x)
    arguments.check_images("upsample_nearest_forward_naive", x=x)
    factor = arguments.positive_int("upsampling factor", factor)
    N, H, W, C = x.shape
    out = np.empty((N, H * factor, W * factor, C), dtype=x.dtype)
    for i in range(H * factor):
        for j in range(W * factor):
            out[:, i, j, :] = x[:, i // factor, j // factor, :]
    return out, (x.shape, factor)


def upsample_nearest_backward_naive(dout, cache):
    """Backward pass of nearest upsampling with plain loops: each output cell's gradient goes to its source.

    Returns:
        dx: (N, H, W, C).
    """
    (N, H, W, C), factor = cache
    arguments.check_dout("upsample_nearest_backward_naive", dout, (N, H * factor, W * factor, C))
    dx = np.zeros((N, H, W, C), dtype=dout.dtype)
    for i in range(H * factor):
        for j in range(W * factor):
            dx[:, i // factor, j // factor, :] += dout[:, i, j, :]
    return dx


def upsample_nearest_forward(x, factor=2):
    """Nearest-neighbour upsampling by an integer factor, as F.interpolate(mode="nearest", scale_factor=f).

    Args:
        x: input (N, H, W, C).
        factor: int f >= 1.

    Returns:
        out: (N, f*H, f*W, C), every pixel repeated into an f x f block:
             out[n, i, j, c] = x[n, i // f, j // f, c].
        cache: (x.shape, factor).

    The blocks are made by broadcasting x to (N, H, f, W, f, C), which in C order is exactly the
    upsampled image; one reshape copies it out.
    """
    arguments.check_floats("upsample_nearest_forward", x=x)
    arguments.check_images("upsample_nearest_forward", x=x)
    factor = arguments.positive_int("upsampling factor", factor)
    N, H, W, C = x.shape
    blocks = np.broadcast_to(x[:, :, None, :, None, :], (N, H, factor, W, factor, C))
    # a copy: the broadcast view is not contiguous (but for f = 1, where it is x itself, so copied here)
    out = blocks.reshape(N, H * factor, W * factor, C) if factor > 1 else x.copy()
    return out, (x.shape, factor)


def upsample_nearest_backward(dout, cache):
    """Backward pass of nearest upsampling: the gradient of each f x f block summed onto its source pixel.

    Args:
        dout: upstream gradient (N, f*H, f*W, C).
        cache: from upsample_nearest_forward.

    Returns:
        dx: (N, H, W, C), dx[n, i, j, c] = sum over the block (a, b) of dout[n, f*i + a, f*j + b, c].
    """
    (N, H, W, C), factor = cache
    arguments.check_dout("upsample_nearest_backward", dout, (N, H * factor, W * factor, C))
    return dout.reshape(N, H, factor, W, factor, C).sum(axis=(2, 4))  # (N, H, W, C)


# --------------------------------------------------------------------------------- residual sum
def _check_residual(x, fx):
    """ValueError unless x and F(x) have one shape: a broadcast sum would be another layer's output."""
    if x.shape != fx.shape:
        raise ValueError(f"a residual sum needs equal shapes, got {x.shape} and {fx.shape}")


def residual_forward_naive(x, fx):
    """The residual sum with a plain loop over elements: out = x + F(x).

    Returns:
        out: like x; cache: out.shape.
    """
    arguments.check_floats("residual_forward_naive", x=x, fx=fx)
    _check_residual(x, fx)
    out = np.empty(x.shape, dtype=np.result_type(x, fx))
    flat_x, flat_fx, flat_out = x.reshape(-1), fx.reshape(-1), out.reshape(-1)
    for i in range(flat_out.size):
        flat_out[i] = flat_x[i] + flat_fx[i]
    return out, out.shape


def residual_backward_naive(dout, cache):
    """Backward pass of the residual sum with a loop: d(x + F)/dx = 1 and d(x + F)/dF = 1, elementwise.

    Returns:
        (dx, dfx), each like dout.
    """
    arguments.check_dout("residual_backward_naive", dout, cache)
    dx, dfx = np.empty_like(dout), np.empty_like(dout)
    for i in range(dout.size):
        dx.flat[i] = dout.flat[i]
        dfx.flat[i] = dout.flat[i]
    return dx, dfx


def residual_forward(x, fx):
    """The skip connection of a residual block (He et al. 2016): out = x + F(x).

    Args:
        x: the block's input (N, H, W, C).
        fx: the block's residual branch F(x), the same shape.

    Returns:
        out: (N, H, W, C), x + fx.
        cache: x.shape (addition needs no values; the shape lets the backward pass check dout).
    """
    arguments.check_floats("residual_forward", x=x, fx=fx)
    _check_residual(x, fx)
    return x + fx, x.shape


def residual_backward(dout, cache):
    """Backward pass of the residual sum: the gradient reaches both branches unchanged.

    Args:
        dout: upstream gradient (N, H, W, C).
        cache: from residual_forward (the output's shape).

    Returns:
        (dx, dfx): two fresh copies of dout, one per branch, so that a caller that accumulates
        into either can never change dout or the other (the copies cost little next to a convolution).
    """
    arguments.check_dout("residual_backward", dout, cache)
    return dout.copy(), dout.copy()


# --------------------------------------------------------------------------- output nonlinearity
def _check_constants(function, x, scale, offset):
    """ValueError unless x is (N, H, W, C) and scale and offset are each a number, (C,) or (1, 1, 1, C).

    Any other shape broadcast into something else without a word: a (N, 1, 1, 1) scale stretched each
    image of a batch its own way, a (1, 1, 1, 1, C) one made the output five-dimensional.
    """
    arguments.check_images(function, x=x)
    C = x.shape[3]
    for name, value in (("scale", scale), ("offset", offset)):
        if np.shape(value) not in ((), (C,), (1, 1, 1, C)):
            raise ValueError(f"{function}: {name} has shape {np.shape(value)}; give a number, or one per channel: "
                             f"({C},) or (1, 1, 1, {C})")


def scaled_tanh_forward_naive(x, scale, offset):
    """The scaled tanh with a plain loop over elements and math.tanh.

    Returns:
        out: like x, out = scale[c] * tanh(x) + offset[c]; cache: (x, scale, offset).
    """
    arguments.check_floats("scaled_tanh_forward_naive", x=x)
    _check_constants("scaled_tanh_forward_naive", x, scale, offset)
    scale = np.broadcast_to(np.asarray(scale, dtype=x.dtype).reshape(-1), x.shape[-1:])
    offset = np.broadcast_to(np.asarray(offset, dtype=x.dtype).reshape(-1), x.shape[-1:])
    out = np.empty_like(x)
    for index in np.ndindex(x.shape):
        c = index[-1]
        out[index] = scale[c] * math.tanh(x[index]) + offset[c]
    return out, (x, scale, offset)


def scaled_tanh_backward_naive(dout, cache):
    """Backward pass of the scaled tanh with a loop: d/dx (s tanh(x) + o) = s (1 - tanh(x)^2).

    Returns:
        dx: like dout.
    """
    x, scale, _ = cache
    arguments.check_dout("scaled_tanh_backward_naive", dout, x.shape)
    dx = np.empty(dout.shape, dtype=np.result_type(dout, x))
    for index in np.ndindex(x.shape):
        dx[index] = dout[index] * scale[index[-1]] * (1 - math.tanh(x[index]) ** 2)
    return dx


def scaled_tanh_forward(x, scale, offset):
    """A tanh stretched onto a pixel range: out = scale * tanh(x) + offset, per channel.

    Args:
        x: input (N, H, W, C), the last convolution's output.
        scale, offset: numbers or (C,) constants (not learned): the output then lies in
            (offset - scale, offset + scale) on each channel. `transformer_net.output_range`
            picks them so that this interval is the pixel range 0..255 in the loss network's
            preprocessed space.

    Returns:
        out: (N, H, W, C), x's dtype.
        cache: (t, scale) with t = tanh(x): the derivative 1 - t^2 needs only t.
    """
    arguments.check_floats("scaled_tanh_forward", x=x)
    _check_constants("scaled_tanh_forward", x, scale, offset)
    scale = np.asarray(scale, dtype=x.dtype)
    offset = np.asarray(offset, dtype=x.dtype)
    t = np.tanh(x)
    return t * scale + offset, (t, scale)


def scaled_tanh_backward(dout, cache):
    """Backward pass of the scaled tanh: dx = dout * scale * (1 - tanh(x)^2).

    Args:
        dout: upstream gradient (N, H, W, C).
        cache: from scaled_tanh_forward.

    Returns:
        dx: (N, H, W, C).
    """
    t, scale = cache
    arguments.check_dout("scaled_tanh_backward", dout, t.shape)
    dx = np.square(t)                # a fresh array: t itself stays as the cache holds it
    np.subtract(1, dx, out=dx)
    dx *= scale
    dx *= dout
    return dx

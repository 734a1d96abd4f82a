"""A convolution with few output channels by tap planes: one product for all the taps, then shifted sums.

im2col copies every input value KH*KW times into a matrix KH*KW*C_in wide and multiplies it by
the kernel. For the real-time style network's 9x9 output convolution (16 channels in, 3 out) that
is 1296 values copied per output pixel to make 3 of them: 90 ms of its 98 ms training-step forward
pass at 256x256, batch 2, one thread (PyTorch's: 29 ms). With few output channels it is cheaper
to multiply first and shift after:

    Z = W_T @ X^T:  (KH*KW*C_out, C_in) by (C_in, positions), a row per (tap, output channel) holding
                    that tap's contribution to that channel at every input position (a "tap plane");
    out[co, p] = sum over the taps (kh, kw) of Z[(kh, kw, co), p + kh*Wp + kw].

Positions are counted along the rows of the (already padded) input, p = i*Wp + j, so that each tap's
shift is one offset and every sum adds contiguous runs of a plane; the KW - 1 positions at the end
of each row that have no full window are computed too, and dropped. The product's inner size is
C_in, and it makes KH*KW*C_out values per position where im2col copies KH*KW*C_in: the planes win
when C_out is a small fraction of C_in (`worth_it`). The positions are cut into blocks (each with
the (KH - 1)*Wp + KW - 1 positions its shifts reach beyond it), split across the cores.
"""

import numpy as np

from scratchnst import conv_rows, parallel

# Output positions per block (measured, 9x9 16 -> 3 at 256x256 on one core: 25 ms with 16384,
# 28 ms with 4096, 38 ms in one block per image; the shifts' halo is 2120 positions there).
_BLOCK = 16384


def worth_it(C_in, C_out, KH, KW, stride):
    """Whether tap planes beat im2col: stride 1, a kernel of 3x3 or more, at most a quarter as many
    output channels as input channels (the planes make C_out values per tap where im2col copies C_in)."""
    return stride == 1 and KH * KW >= 9 and 4 * C_out <= C_in


def conv(x, w, b=None, relu=False, out=None):
    """Stride-1 'valid' convolution of x by w, by tap planes.

    Args:
        x: (N, Hp, Wp, C_in), already padded as wanted; any strides.
        w: (KH, KW, C_in, C_out).
        b: (C_out,) or None; relu: apply ReLU after the bias.
        out: None, or an (N, H_out, W_out, C_out) array to write into (a channel slice is fine).

    Returns:
        out: (N, H_out, W_out, C_out) with H_out = Hp - KH + 1, W_out = Wp - KW + 1 and
             out[n, i, j] = b + sum_{kh, kw} x[n, i + kh, j + kw] @ w[kh, kw].
    """
    N, Hp, Wp, C_in = x.shape
    KH, KW, _, C_out = w.shape
    H_out, W_out = Hp - KH + 1, Wp - KW + 1
    dtype = np.result_type(x, w) if b is None else np.result_type(x, w, b)
    if out is None:
        out = np.empty((N, H_out, W_out, C_out), dtype=dtype)
    x = np.ascontiguousarray(x, dtype=dtype)  # positions along the rows: one offset per tap
    # row (kh, kw, co) of w_t is w[kh, kw, :, co]: the planes come out in that order
    w_t = np.ascontiguousarray(w.astype(dtype, copy=False).transpose(0, 1, 3, 2).reshape(KH * KW * C_out, C_in))
    shifts = [kh * Wp + kw for kh in range(KH) for kw in range(KW)]
    halo = shifts[-1]
    P = H_out * Wp - (KW - 1)  # positions with a full window, and the row tails between them
    sums = np.empty((N, C_out, H_out * Wp), dtype=dtype)  # by channel, as the planes
    per_image = -(-P // _BLOCK)

    def blocks(start, stop):  # blocks start..stop-1, counted image after image
        for k in range(start, stop):
            n, p0 = divmod(k, per_image)
            p0 *= _BLOCK
            p1 = min(p0 + _BLOCK, P)
            positions = x[n].reshape(Hp * Wp, C_in)[p0:p1 + halo]
            Z = conv_rows.scratch_buffer("tap planes", (KH * KW * C_out, len(positions)), dtype)
            np.matmul(w_t, positions.T, out=Z)
            block = sums[n, :, p0:p1]
            np.copyto(block, Z[:C_out, :p1 - p0])
            for t in range(1, KH * KW):
                block += Z[t * C_out:(t + 1) * C_out, shifts[t]:shifts[t] + p1 - p0]

    parallel.split(blocks, N * per_image)
    for n in range(N):  # back to channels last, the row tails dropped
        out[n] = sums[n].reshape(C_out, H_out, Wp)[:, :, :W_out].transpose(1, 2, 0)
    if b is not None:
        out += b
    if relu:
        np.maximum(out, 0, out=out)
    return out

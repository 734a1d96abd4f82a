"""3x3 stride-1 convolution by Winograd's minimal filtering F(2x2, 3x3) (Lavin and Gray, 2016).

Each 2x2 block of outputs reads a 4x4 tile of the padded input d. Im2col spends 2*2*9 = 36
multiplications per channel pair on it; Winograd's algorithm spends 16:

    Y = A^T [ (G g G^T) * (B^T d B) ] A        (* elementwise, over the 4x4 tile)

with g the 3x3 kernel of one (input channel, output channel) pair and the constant matrices

    B^T = [[1, 0, -1,  0],     G = [[1,    0,   0  ],     A^T = [[1, 1,  1,  0],
           [0, 1,  1,  0],          [1/2,  1/2, 1/2],            [0, 1, -1, -1]]
           [0, -1, 1,  0],          [1/2, -1/2, 1/2],
           [0, 1,  0, -1]]          [0,    0,   1  ]]

Summed over input channels, the elementwise products of the 16 tile positions are 16 matrix
products, one per position: (tiles, C_in) @ (C_in, C_out). The transforms B^T d B and A^T m A are
additions and subtractions only, done on whole arrays of tiles at once; G g G^T is done once
per call for the whole kernel. So the convolution costs 16/36 of im2col's multiply-adds, plus
passes over data four times the input's and the output's size: a clear gain where the products
dominate (128 channels and more on both sides: most of VGG-19), a loss on few channels (see
`worth_it`). Blocks of tile rows are cut across the cores like im2col's rows (`parallel`).

The rounding differs from im2col's (the transforms add and subtract inputs before the products)
by a few units in the last place: well inside what the float32 run path and the float64 checks
tolerate (tests compare it with the plain sum for both dtypes).

Every function keeps the dtype it is given and never writes into its inputs.
"""

import numpy as np

from scratchnst import conv_rows, parallel

_G = np.array([[1.0, 0.0, 0.0], [0.5, 0.5, 0.5], [0.5, -0.5, 0.5], [0.0, 0.0, 1.0]])
_GG = np.kron(_G, _G)  # (16, 9): _GG[4*a + b, 3*kh + kw] = G[a, kh] G[b, kw]
_TRANSFORM_COLUMNS = 16384  # (9 + 16) x 16384 float32 = 1.6 MB of a block in the cache


def kernel_transform(w):
    """U = G g G^T for every channel pair: (3, 3, C_in, C_out) -> (16, C_in, C_out), w's dtype.

    U[4*a + b, ci, co] = sum_{kh, kw} G[a, kh] G[b, kw] w[kh, kw, ci, co]: one product of the
    (16, 9) matrix G (x) G (Kronecker) by the kernel as a (9, C_in C_out) matrix, blocks of its
    columns split across the cores. `conv3x3` makes it on every call (for 512 channels on each
    side, 16 MB in 1.4 ms on 2 cores, against 3.2 ms as G along kh then along kw on one): a copy
    kept per kernel would add 16/9 of the network's weights to the memory a run needs.
    """
    _, _, C_in, C_out = w.shape
    n = C_in * C_out
    GG = _GG.astype(w.dtype)
    w9 = w.reshape(9, n)
    U = np.empty((16, n), dtype=w.dtype)

    def columns(start, stop):  # blocks of _TRANSFORM_COLUMNS columns, in the cache as they are made
        for a in range(start * _TRANSFORM_COLUMNS, min(stop * _TRANSFORM_COLUMNS, n), _TRANSFORM_COLUMNS):
            b = min(a + _TRANSFORM_COLUMNS, n)
            np.matmul(GG, w9[:, a:b], out=U[:, a:b])

    parallel.split(columns, -(-n // _TRANSFORM_COLUMNS))
    return U.reshape(16, C_in, C_out)


def worth_it(C_in, C_out, tiles):
    """Whether F(2x2, 3x3) beats im2col for these channels and this many 2x2 output tiles.

    Measured on a 2-core Xeon (AVX-512), with 1 and 2 threads, on the shapes of VGG-19's and
    SqueezeNet's convolutions and of their input gradients. With 64 channels or more on both
    sides, more than 64 on one, Winograd took 0.67-0.89 of im2col's time. With fewer channels the
    products are too thin to pay for the transforms' passes over memory: 64 on both sides was
    0.90 with 1 thread but 1.13 with 2 (the two cores share the memory's bandwidth), 16 input
    channels up to 1.47. Under 160 tiles (VGG-19's 16x16 block5_conv1 has 64) the kernel's
    transform, 16 C_in C_out values made on every call, costs as much as it saves (1.03-1.07).
    """
    return C_in >= 128 and C_out >= 128 and tiles >= 160


def _input_transform(slab, r, T_w, V):
    """V = B^T d B for r rows of tiles, written into V (4, 4, r, T_w, C).

    slab: (2r + 2, 2 T_w + 2, C), the padded input rows the tiles read (tile (t, u) is
    slab[2t:2t+4, 2u:2u+4]).
    """
    s = [slab[k:k + 2 * r:2] for k in range(4)]  # row k of every tile row: (r, W, C)
    rows = conv_rows.scratch_buffer("winograd rows", (4,) + s[0].shape, slab.dtype)
    np.subtract(s[0], s[2], out=rows[0])
    np.add(s[1], s[2], out=rows[1])
    np.subtract(s[2], s[1], out=rows[2])
    np.subtract(s[1], s[3], out=rows[3])
    c = [rows[:, :, k:k + 2 * T_w:2] for k in range(4)]  # column k of every tile: (4, r, T_w, C)
    np.subtract(c[0], c[2], out=V[:, 0])
    np.add(c[1], c[2], out=V[:, 1])
    np.subtract(c[2], c[1], out=V[:, 2])
    np.subtract(c[1], c[3], out=V[:, 3])


def _output_transform(M, Y):
    """Y = A^T m A for every tile: M (4, 4, r, T_w, C_out) -> Y (r, 2, T_w, 2, C_out), written into Y."""
    # (2, 4, r, T_w, C_out): A^T applied along a
    q = conv_rows.scratch_buffer("winograd q", (2,) + M.shape[1:], M.dtype)
    np.add(M[0], M[1], out=q[0])
    q[0] += M[2]
    np.subtract(M[1], M[2], out=q[1])
    q[1] -= M[3]
    for i in range(2):  # A applied along b
        np.add(q[i, 0], q[i, 1], out=Y[:, i, :, 0])
        Y[:, i, :, 0] += q[i, 2]
        np.subtract(q[i, 1], q[i, 2], out=Y[:, i, :, 1])
        Y[:, i, :, 1] -= q[i, 3]


# Tile rows per block: about this many bytes of transformed input (V) at a time, so that a block's
# transforms, products and output stay in the cache between the passes that make and read them.
_BLOCK_BYTES = 2 * 2**20


def conv3x3(x, w, pad_h, pad_w, b=None, relu=False, out=None, mask=None):
    """Stride-1 3x3 convolution of x zero-padded by pad_h and pad_w, by F(2x2, 3x3).

    Args:
        x: (N, H, W, C_in), any strides.
        w: (3, 3, C_in, C_out).
        pad_h, pad_w: (top, bottom) and (left, right), the zeros around x, each >= 0.
        b, relu, out, mask: as fast_conv._conv_padded.

    Returns:
        out: (N, H_out, W_out, C_out), H_out = top + H + bottom - 2 (W_out alike),
             out[n, i, j] = b + sum_{kh, kw} xpad[n, i + kh, j + kw] @ w[kh, kw].
    """
    N, H, W, C_in = x.shape
    C_out = w.shape[3]
    (top, bottom), (left, right) = pad_h, pad_w
    H_out, W_out = top + H + bottom - 2, left + W + right - 2
    T_h, T_w = -(-H_out // 2), -(-W_out // 2)  # tiles; an odd size gets a last tile half outside
    dtype = np.result_type(x, w) if b is None else np.result_type(x, w, b)
    if out is None:
        out = np.empty((N, H_out, W_out, C_out), dtype=dtype)
    U = kernel_transform(w.astype(dtype, copy=False))
    # zeros below and right of the padded image complete the last tiles of an odd size
    tile_pad_h, tile_pad_w = (top, bottom + 2 * T_h - H_out), (left, right + 2 * T_w - W_out)
    rows = max(1, min(T_h, _BLOCK_BYTES // (16 * T_w * max(C_in, C_out) * np.dtype(dtype).itemsize)))

    def blocks(start, stop):  # tile rows start..stop-1 of all N images counted as one column
        slab = conv_rows.scratch_buffer("padded rows", (2 * rows + 2, 2 * T_w + 2, C_in), dtype)
        V = conv_rows.scratch_buffer("winograd V", (4, 4, rows, T_w, C_in), dtype)
        M = conv_rows.scratch_buffer("winograd M", (16, rows * T_w, C_out), dtype)
        Y = conv_rows.scratch_buffer("winograd Y", (rows, 2, T_w, 2, C_out), dtype)
        while start < stop:
            n, t = divmod(start, T_h)
            r = min(rows, T_h - t, stop - start)
            conv_rows.padded_rows(x[n], 2 * t, 2 * t + 2 * r + 2, tile_pad_h, tile_pad_w, slab[:2 * r + 2],
                                  None if mask is None else mask[n])
            v = V[:, :, :r]
            _input_transform(slab[:2 * r + 2], r, T_w, v)
            m = M[:, :r * T_w]
            np.matmul(v.reshape(16, r * T_w, C_in), U, out=m)  # 16 products: one per tile position
            y = Y[:r]
            _output_transform(m.reshape(4, 4, r, T_w, C_out), y)
            first, last = 2 * t, min(2 * t + 2 * r, H_out)
            target = out[n, first:last]
            target[...] = y.reshape(2 * r, 2 * T_w, C_out)[:last - first, :W_out]
            if b is not None:
                target += b
            if relu:
                np.maximum(target, 0, out=target)
            start += r

    parallel.split(blocks, N * T_h, least=max(1, 2**20 // (16 * T_w * C_in * C_out) + 1))
    return out

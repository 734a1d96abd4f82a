"""The rows a fast convolution reads, and the scratch memory it builds its blocks in.

Both fast convolutions (`fast_conv`'s im2col and `winograd`) work a block of output rows at a
time: they copy the padded input rows the block reads into a buffer (so that the padded input as
a whole is never made), build the block's matrices in more buffers, and multiply. This module is
where rows are padded (and masked by a ReLU's output, in a backward pass) and where the buffers
live, kept from call to call per thread.
"""

import threading

import numpy as np


# Scratch buffers kept from call to call, per thread (an im2col block and the padded rows it reads,
# a block of a convolution's work each): a fresh buffer of tens of MiB would come from the operating
# system as new pages on every call, each faulted in and zeroed before use, a few ms each time.
_scratch = threading.local()


def scratch_buffer(name, shape, dtype):
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


def masked(x, mask, out):
    """x where mask > 0, else 0, written into out: relu_backward's arithmetic, x times the 0/1 mask.

    Args:
        x: any array; mask: an array of x's shape (a ReLU's output); out: where the result goes.

    Returns:
        out. The 0/1 mask is made in this thread's scratch buffer: `x * (mask > 0)` would allocate
        it anew each time, and on a block of a few MB that made the masking 1.5x slower (428
        against 282 us for 8192x64 float32 values on a 2-core Xeon).
    """
    positive = np.greater(mask, 0, out=scratch_buffer("mask", mask.shape, np.bool_))
    return np.multiply(x, positive, out=out)


def masked_blocks(dout, mask, start, stop, rows, dtype):
    """Yield (n, i, d): rows start..stop-1 of every image of dout, `rows` at a time, masked where asked.

    Args:
        dout: (N, H_out, W_out, C) a gradient; mask: None, or an array like it (a ReLU's output).
        start, stop: the rows to go through; rows: how many per block.
        dtype: the dtype of a masked block.

    Yields:
        n, the image; i, the block's first row; d, (r, W_out, C) its rows, r <= rows: a view of
        dout, or dout where mask > 0 in this thread's "masked rows" buffer (valid until the next).
    """
    for n in range(dout.shape[0]):
        for i in range(start, stop, rows):
            d = dout[n, i:min(i + rows, stop)]
            if mask is not None:
                d = masked(d, mask[n, i:i + len(d)], scratch_buffer("masked rows", d.shape, dtype))
            yield n, i, d


def padded_rows(x, start, stop, pad_h, pad_w, out, mask=None):
    """Rows start..stop-1 of an image zero-padded by pad_h and pad_w, written into `out`.

    Args:
        x: one image (H, W, C), any strides.
        start, stop: rows of the PADDED image, 0 <= start < stop <= top + H + bottom.
        pad_h, pad_w: (top, bottom) and (left, right), the zeros around x.
        out: (stop - start, left + W + right, C), overwritten.
        mask: None, or an array like x: x is taken only where mask > 0 (a ReLU's backward pass,
            done while the rows are copied anyway).

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
    if mask is None:
        inside[:, left:left + W] = x[first - top:last - top]
    else:
        masked(x[first - top:last - top], mask[first - top:last - top], out=inside[:, left:left + W])
    return out

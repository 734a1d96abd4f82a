"""Max and average pooling as the networks run them: `layers`' results, a band of rows at a time.

`layers.max_pool_forward` and its kin (the course's exercises) make one pass per tap of the window
over the whole map, each pass a few temporaries the size of the output. On SqueezeNet's first pool
at 512x512 (255x255x64 in, 16.6 MB) every pass then runs from memory, and the three pools of a step,
forward and backward, took a quarter of the step on one core (46 of 185 ms on a 2-core Xeon). Here
the same passes run on a band of output rows whose input rows fit in the L2 cache, into buffers
kept for the whole call, and the backward pass writes the taps that tile the input (kh and kw below
the stride) instead of adding them to zeros: 1.4-1.5x faster forward, 1.3x backward on those
maps (2x backward on VGG-19's 2x2 pools).

The results are those of `layers` to the last bit (tests prove it, ties and NaN included): the
same operations on each element, and where windows overlap the gradients of a cell are added in
the same order, kh rising, then kw. One difference: a cell no window sends a gradient to may
hold -0.0 where `layers` has 0.0 (written, not added to zeros); they compare equal. The caches are
`layers`' too, so either backward pass takes either forward's cache.

With more than one worker (`parallel`) each pass is cut by rows of the output, each piece a band
of its own, and the results are the same to the last bit: backward, every band (and piece) owns
the input rows from stride * its first output row to stride * its last + stride - 1 and takes from
each tap the output rows that land there, so no cell receives from two bands, and each cell's taps
come in the order `layers` adds them.
"""

import numpy as np

from scratchnst import layers, parallel
from scratchnst.arguments import check_dout, check_floats, check_images, positive_int

# Bytes of input rows a band reads: with its output, mask and buffers it stays in a 1-2 MiB L2.
BAND_BYTES = 512 * 1024

# Input elements below which cutting a pass into pieces for the cores is not worth a thread; half as
# many where the pieces go to helper processes (`parallel.splits_in_processes`), whose handoff costs
# far less: SqueezeNet's max pool after fire3 at 320 px (52x79x128, 0.5 M elements, 1 ms on one core)
# is then cut in two, and a stylize evaluation took 28.4-28.9 ms instead of 29.3-29.5 (2-core Xeon).
SPLIT_LEAST_ELEMENTS = 2**18


def max_pool_forward(x, size=2, stride=2, padding="valid"):
    """Max pooling, as `layers.max_pool_forward` (the same out and cache, bit for bit).

    Args:
        x: input (N, H, W, C).
        size, stride, padding: as `layers.max_pool_forward`.

    Returns:
        out: (N, H_out, W_out, C).
        cache: (x.shape, arg, size, stride, padding), arg (N, H_out, W_out, C) the index
            kh*size + kw of each window's first maximum (its last NaN, if it holds one).
    """
    check_floats("max_pool_forward", x=x)
    check_images("max_pool_forward", x=x)
    size, stride = positive_int("pool size", size), positive_int("stride", stride)
    H_out, W_out, pad_h, pad_w = layers._pool_geometry(x.shape, size, stride, padding)
    xpad = layers._pad_hw(x, pad_h, pad_w, value=-np.inf)
    N, C = x.shape[0], x.shape[3]
    out = parallel.empty((N, H_out, W_out, C), x.dtype)
    arg = parallel.empty(out.shape, np.min_scalar_type(size * size - 1))
    parallel.split(_max_forward_piece, H_out, least=_least_rows(xpad, stride, _max_forward_piece),
                   args=(xpad, size, stride, out, arg), writes=(3, 4))
    layers.padding_never_wins(out, arg, size, stride, pad_h, pad_w)
    return out, (x.shape, arg, size, stride, padding)


def _max_forward_piece(start, stop, xpad, size, stride, out, arg):
    """max_pool_forward's output rows start..stop-1 (a piece of its split)."""
    N, _, W_out, C = out.shape
    band = _band_rows(xpad, stride, stop - start)
    better = np.empty((N, band, W_out, C), dtype=bool)
    index = np.empty(better.shape, dtype=arg.dtype)
    for a, b in _bands(start, stop, band):
        o, where = out[:, a:b], arg[:, a:b]
        rows = xpad[:, a * stride:(b - 1) * stride + size]
        _max_band(rows, size, stride, o, where, better[:, :b - a], index[:, :b - a], nan_aware=False)
        if o.size and np.isnan(o.max()):  # only then the slower rule: a NaN wins, the last one in the window
            _max_band(rows, size, stride, o, where, better[:, :b - a], index[:, :b - a], nan_aware=True)


def _max_band(rows, size, stride, o, a, better, k_of, nan_aware):
    """Fill o and a, one band's max and argmax, from the input rows it reads; as layers' loop does.

    Args:
        rows: the padded input rows the band reads (N, (n - 1) * stride + size, W_p, C).
        o, a: the band's output and argmax (N, n, W_out, C), written.
        better, k_of: scratch of the same shape (bool, and a's dtype).
        nan_aware: a NaN wins its window (the slower rule, for bands that hold one).
    """
    for kh, kw, tap in layers._window_taps(rows, size, size, stride, o.shape[1], o.shape[2]):
        k = kh * size + kw
        if k == 0:
            np.copyto(o, tap)
            a.fill(0)
            continue
        np.greater(tap, o, out=better)  # strictly: a tie keeps the earlier tap
        if nan_aware:
            better |= np.isnan(tap)
        np.maximum(o, tap, out=o)
        # taps come with k rising, so where this tap is better k exceeds the stored index
        np.multiply(better.view(np.uint8), a.dtype.type(k), out=k_of)
        np.maximum(a, k_of, out=a)


def max_pool_backward(dout, cache):
    """The input gradient of max pooling, as `layers.max_pool_backward` (the same values).

    Args:
        dout: upstream gradient (N, H_out, W_out, C).
        cache: from max_pool_forward (here or in `layers`).

    Returns:
        dx: (N, H, W, C).
    """
    x_shape, arg, size, stride, padding = cache
    N, H, W, C = x_shape
    H_out, W_out, pad_h, pad_w = layers._pool_geometry(x_shape, size, stride, padding)
    check_dout("max_pool_backward", dout, (N, H_out, W_out, C))
    dxpad = _gradient_buffer(x_shape, dout.dtype, size, stride, H_out, W_out, pad_h, pad_w)
    parallel.split(_max_backward_piece, H_out, least=_least_rows(dxpad, stride, _max_backward_piece),
                   args=(dout, arg, size, stride, dxpad), writes=(4,))
    return _crop(dxpad, pad_h, pad_w, H, W)


def _max_backward_piece(start, stop, dout, arg, size, stride, dxpad):
    """max_pool_backward's bands of dxpad for output rows start..stop-1 (a piece of its split)."""
    N, H_out, W_out, C = dout.shape
    _zeros_untiled(dxpad, size, stride, H_out, W_out, start, stop)
    band = _band_rows(dxpad, stride, stop - start)
    mask = np.empty((N, band + (size - 1) // stride, W_out, C), dtype=bool)
    share = np.empty(mask.shape, dtype=dout.dtype)
    for kh, kw, first, last, view in _gradient_taps(dxpad, size, stride, H_out, W_out, start, stop, band):
        m = mask[:, :last - first]
        np.equal(arg[:, first:last], kh * size + kw, out=m)
        if _tiled(size, stride, kh, kw):
            np.multiply(dout[:, first:last], m, out=view)
        else:
            s = share[:, :last - first]
            np.multiply(dout[:, first:last], m, out=s)
            view += s


@layers.float16_summed_in_float32
def avg_pool_forward(x, size=2, stride=2, padding="valid"):
    """Average pooling, as `layers.avg_pool_forward` (the same out and cache, bit for bit).

    Returns:
        out: (N, H_out, W_out, C); cache: (x.shape, size, stride, padding).
    """
    check_floats("avg_pool_forward", x=x)
    check_images("avg_pool_forward", x=x)
    size, stride = positive_int("pool size", size), positive_int("stride", stride)
    H_out, W_out, pad_h, pad_w = layers._pool_geometry(x.shape, size, stride, padding)
    xpad = layers._pad_hw(x, pad_h, pad_w)
    counts = layers._avg_pool_counts(x.shape, size, stride, padding, x.dtype)
    out = parallel.empty((x.shape[0], H_out, W_out, x.shape[3]), x.dtype)
    parallel.split(_avg_forward_piece, H_out, least=_least_rows(xpad, stride, _avg_forward_piece),
                   args=(xpad, counts, size, stride, out), writes=(4,))
    return out, (x.shape, size, stride, padding)


def _avg_forward_piece(start, stop, xpad, counts, size, stride, out):
    """avg_pool_forward's output rows start..stop-1 (a piece of its split)."""
    W_out = out.shape[2]
    for a, b in _bands(start, stop, _band_rows(xpad, stride, stop - start)):
        o = out[:, a:b]
        rows = xpad[:, a * stride:(b - 1) * stride + size]
        for kh, kw, tap in layers._window_taps(rows, size, size, stride, b - a, W_out):
            if kh == kw == 0:
                np.add(tap, 0, out=o)  # 0 + tap, as layers' sum into zeros starts: -0.0 becomes 0.0
            else:
                o += tap
        o /= counts[:, a:b]


def avg_pool_backward(dout, cache):
    """The input gradient of average pooling, as `layers.avg_pool_backward` (the same values).

    Returns:
        dx: (N, H, W, C).
    """
    x_shape, size, stride, padding = cache
    N, H, W, C = x_shape
    H_out, W_out, pad_h, pad_w = layers._pool_geometry(x_shape, size, stride, padding)
    check_dout("avg_pool_backward", dout, (N, H_out, W_out, C))
    counts = layers._avg_pool_counts(x_shape, size, stride, padding, dout.dtype)
    dxpad = _gradient_buffer(x_shape, dout.dtype, size, stride, H_out, W_out, pad_h, pad_w)
    share = parallel.empty(dout.shape, np.result_type(dout, counts))   # read by the pieces: see `parallel.split`
    np.divide(dout, counts, out=share)  # one pass; each output row is read by up to size/stride bands
    parallel.split(_avg_backward_piece, H_out, least=_least_rows(dxpad, stride, _avg_backward_piece),
                   args=(share, size, stride, dxpad), writes=(3,))
    return _crop(dxpad, pad_h, pad_w, H, W)


def _avg_backward_piece(start, stop, share, size, stride, dxpad):
    """avg_pool_backward's bands of dxpad for output rows start..stop-1 (a piece of its split)."""
    _, H_out, W_out, _ = share.shape
    _zeros_untiled(dxpad, size, stride, H_out, W_out, start, stop)
    for kh, kw, first, last, view in _gradient_taps(dxpad, size, stride, H_out, W_out, start, stop,
                                                    _band_rows(dxpad, stride, stop - start)):
        if _tiled(size, stride, kh, kw):
            np.copyto(view, share[:, first:last])
        else:
            view += share[:, first:last]


def _gradient_taps(dxpad, size, stride, H_out, W_out, start, stop, band):
    """Yield (kh, kw, first, last, view): output rows first..last-1 of a tap and where they land in dxpad.

    Bands of output rows a..b-1 within start..stop-1 each own the rows of dxpad from stride * a to
    stride * b - 1 (the last band of the last rows to the end): a tap sends there the output rows
    from a - kh // stride to b - 1 - kh // stride, and `view` (N, last - first, W_out, C) is those
    rows' cells in dxpad. No cell is in two bands, and within a band the taps come kh rising, then
    kw: each cell receives its taps in the order layers.max_pool_backward adds them.
    """
    for a, b in _bands(start, stop, band):
        for kh in range(size):
            back = kh // stride
            first, last = max(a - back, 0), (H_out if b == H_out else b - back)
            if first >= last:
                continue
            top = first * stride + kh
            rows = dxpad[:, top:top + stride * (last - first - 1) + 1:stride]
            for kw in range(size):
                yield kh, kw, first, last, rows[:, :, kw:kw + stride * (W_out - 1) + 1:stride]


def _gradient_buffer(x_shape, dtype, size, stride, H_out, W_out, pad_h, pad_w):
    """The padded input gradient to fill (N, Hp, Wp, C), uninitialised: each piece zeroes its own
    cells that no tap writes (`_zeros_untiled`)."""
    N, H, W, C = x_shape
    return parallel.empty((N, H + sum(pad_h), W + sum(pad_w), C), dtype)


def _zeros_untiled(dxpad, size, stride, H_out, W_out, start, stop):
    """Zeros in the cells of dxpad that a backward piece for output rows start..stop-1 owns (see
    `_gradient_taps`) and that no tap writes, before its taps: only those are added to.

    The taps with kh and kw below the stride tile the rows and columns up to stride * H_out and
    stride * W_out exactly, each cell once: they are written (the first, lowest-numbered, tap a
    cell receives) and the others added, so only the cells beyond need zeros. Windows with gaps
    between them (size < stride) tile nothing: all zeros, all taps added. Made by the piece itself,
    so that a piece run a second time (a helper process's, failed half-way: `parallel.split`) gives
    the same cells, not twice their gradient.
    """
    top, bottom = stride * start, (dxpad.shape[1] if stop == H_out else stride * stop)
    if size < stride:
        dxpad[:, top:bottom] = 0
        return
    dxpad[:, max(top, stride * H_out):bottom] = 0
    dxpad[:, top:bottom, stride * W_out:] = 0


def _tiled(size, stride, kh, kw):
    """Whether tap (kh, kw) of a pooling's backward pass is written into dxpad, not added (`_gradient_buffer`)."""
    return size >= stride and kh < stride and kw < stride


def _crop(dxpad, pad_h, pad_w, H, W):
    """dxpad without its padding, contiguous (a copy only if there was padding)."""
    return np.ascontiguousarray(dxpad[:, pad_h[0]:pad_h[0] + H, pad_w[0]:pad_w[0] + W, :])


def _band_rows(padded, stride, rows):
    """Output rows per band of a piece of `rows` rows: those whose input rows fill BAND_BYTES.

    In a piece of a split (`parallel.in_piece`), the whole piece is one band: beside another
    thread, the calls of many small bands each wait for the GIL, which costs more than the cache saves.
    """
    N, _, W, C = padded.shape
    if parallel.in_piece():
        return max(1, rows)
    return max(1, min(rows, BAND_BYTES // max(1, N * stride * W * C * padded.itemsize)))


def _least_rows(padded, stride, piece):
    """Fewest output rows worth a piece of a split of `piece`: those reading SPLIT_LEAST_ELEMENTS input
    elements, half as many if the pieces would go to helper processes."""
    N, _, W, C = padded.shape
    least = SPLIT_LEAST_ELEMENTS // (2 if parallel.splits_in_processes(piece) else 1)
    return max(1, -(-least // max(1, N * stride * W * C)))


def _bands(start, stop, band):
    """[(a, b)] covering start..stop-1 in pieces of `band` rows (the last one shorter)."""
    return [(a, min(stop, a + band)) for a in range(start, stop, band)]

"""The checks of the layer exercises (layers.py): convolution, ReLU, max and average pooling.

Each exercise's checks come from a function (ref, rng, use_torch) -> list of Case, ref being the
installed modules (`exercises._reference()`). The expected values come from the reference, from
finite differences of its forward passes, and from PyTorch through torch_ref. The classic
mistakes are modelled without depending on how the reference is written: by code of their own
here, or by the reference run on altered inputs (a flipped kernel, a zero bias, a swapped arg).
"""

import numpy as np

from scratchnst.exercises.cases import (FLOAT32_TOL, Case, Mistake, Pick, as_float32, at_scale, numeric_gradient,
                                        randn)


# ---- shared by the layers' checks
# What is compared of a forward pass's (out, cache): `out`; for max_pool_forward also cache[1] (arg).
_out = Pick(((0,),), ("a tuple (out, cache)",))
_out_and_arg = Pick(((0,), (1, 1)), ("a tuple (out, cache)", "cache = (x.shape, arg, size, stride, padding)"))
_CONV_SIZE = ("H_out = (H + pad_top + pad_bottom - KH) // stride + 1, and the same for W: conv_output_size "
              "gives it with the four padding amounts")
_POOL_SIZE = ("H_out = (H + pad_top + pad_bottom - size) // stride + 1 ('valid': no padding, so the last "
              "window that fits ends it), and the same for W")


def _torch_forward_backward(ref, torch_fn, inputs, dout):
    """PyTorch's output and the gradients of sum(out * dout) with respect to each input (NumPy in and out).

    gradcheck.check_case pushes the same "fake loss" through PyTorch, but returns only its errors.
    """
    T = ref.torch_ref
    tensors = [T.to_torch(a, requires_grad=True) for a in inputs]
    out = torch_fn(*tensors)
    (out * T.to_torch(dout)).sum().backward()  # the "fake loss" whose gradient is dout pushed back
    return T.to_numpy(out), [T.to_numpy(t.grad) for t in tensors]


# Not layers._window_taps: that is a helper of the reference answers (hidden in the student copy),
# free to change shape or vanish whenever an answer is rewritten; the mistakes here must not.
def _taps(xpad, size, stride, H_out, W_out):
    """(k, view) per window tap, k = kh*size + kw; view[n, i, j, c] = xpad[n, i*stride + kh, j*stride + kw, c]."""
    for kh in range(size):
        for kw in range(size):
            rows = slice(kh, kh + stride * (H_out - 1) + 1, stride)
            cols = slice(kw, kw + stride * (W_out - 1) + 1, stride)
            yield kh * size + kw, xpad[:, rows, cols]


# ---- convolution
_CONV_CONFIGS = (
    # label, x shape (N, H, W, C_in), kernel size, C_out, stride, padding
    ("3x3 stride 1 'same' (VGG-19), x 2x5x7x3", (2, 5, 7, 3), 3, 4, 1, "same"),
    ("3x3 stride 2 'valid' (SqueezeNet's conv1), x 1x7x9x3", (1, 7, 9, 3), 3, 4, 2, "valid"),
    ("3x3 stride 2 'same' on 8x6: the odd extra zero goes bottom/right", (1, 8, 6, 3), 3, 4, 2, "same"),
    ("5x5 stride 2, padding=2 (an int pads every side), x 1x9x8x2", (1, 9, 8, 2), 5, 3, 2, 2),
)


def _conv_inputs(rng, shape, k, c_out):
    return randn(rng, *shape), randn(rng, k, k, shape[3], c_out), randn(rng, c_out)


def _conv_padded(L, x, w, b, stride, pad_h, pad_w):
    """Convolution of x with explicit (before, after) zero padding: what another padding rule computes."""
    return L.conv2d_forward(np.pad(x, ((0, 0), pad_h, pad_w, (0, 0))), w, b, stride, "valid")[0]


def _conv2d_forward_mistakes(L, x, w, b, stride, padding):
    """The classic mistakes of conv2d_forward, computed for these inputs."""
    mistakes = [
        Mistake("kernel flipped", "this is a true convolution (kernel flipped in space); Keras and PyTorch "
                "compute cross-correlation: out[i, j] = b + sum x[i*s + kh, j*s + kw] w[kh, kw]",
                L.conv2d_forward(x, w[::-1, ::-1], b, stride, padding)[0]),
        Mistake("bias missing", "the bias b is not added", L.conv2d_forward(x, w, 0 * b, stride, padding)[0]),
    ]
    if stride > 1:
        mistakes.append(Mistake("stride ignored", "every position was computed, as with stride 1: step "
                                "the window by `stride`", L.conv2d_forward(x, w, b, 1, padding)[0]))
    _, top, bottom = L.conv_output_size(x.shape[1], w.shape[0], stride, padding)
    _, left, right = L.conv_output_size(x.shape[2], w.shape[1], stride, padding)
    if (top, left) != (bottom, right):
        # One diagnosis, not two: with the output size right, padding both sides alike (PyTorch's
        # padding=1) and putting the odd zero at the top/left compute the same windows (the extra
        # bottom/right zero of the symmetric padding is never reached), so they cannot be told apart.
        mistakes.append(Mistake(
            "symmetric padding", "the odd extra zero went to the top/left, as with PyTorch's symmetric "
            "padding=1; TensorFlow's 'same' pads one more zero at the bottom/right when the total is odd "
            "(conv_output_size gives the four amounts)",
            _conv_padded(L, x, w, b, stride, (bottom, top), (right, left))))
    return mistakes


def conv2d_forward_cases(ref, rng, use_torch):
    L = ref.layers
    cases = []
    for label, shape, k, c_out, stride, padding in _CONV_CONFIGS:
        x, w, b = _conv_inputs(rng, shape, k, c_out)
        cases.append(Case(label, (x, w, b, stride, padding), L.conv2d_forward(x, w, b, stride, padding)[0],
                          pick=_out, mistakes=_conv2d_forward_mistakes(L, x, w, b, stride, padding),
                          size_rule=_CONV_SIZE))
    x, w, b = as_float32(*_conv_inputs(rng, (1, 5, 6, 3), 3, 4))
    cases.append(Case("float32 in, float32 out (the run path), x 1x5x6x3", (x, w, b, 1, "same"),
                      L.conv2d_forward(x, w, b, 1, "same")[0], pick=_out, tol=FLOAT32_TOL, normwise=True,
                      dtype=np.float32, size_rule=_CONV_SIZE))
    if use_torch:
        label, shape, k, c_out, stride, padding = _CONV_CONFIGS[2]
        x, w, b = _conv_inputs(rng, shape, k, c_out)
        T = ref.torch_ref
        expected = T.to_numpy(T.conv2d(T.to_torch(x), T.to_torch(w), T.to_torch(b), stride, padding))
        cases.append(Case("against PyTorch's conv2d: 3x3 stride 2 'same' on 8x6", (x, w, b, stride, padding),
                          expected, pick=_out, mistakes=_conv2d_forward_mistakes(L, x, w, b, stride, padding),
                          size_rule=_CONV_SIZE, counted=False))
    return cases


def _conv2d_backward_mistakes(L, x, w, b, stride, padding, dout):
    """The classic mistakes of conv2d_backward, computed for these inputs."""
    _, top, bottom = L.conv_output_size(x.shape[1], w.shape[0], stride, padding)
    _, left, right = L.conv_output_size(x.shape[2], w.shape[1], stride, padding)
    N, H_out, W_out, _ = dout.shape
    db = dout.sum(axis=(0, 1, 2))
    mistakes = [Mistake("db averaged", "db is the sum of dout over (N, H_out, W_out), not its mean",
                        db / (N * H_out * W_out), part=2)]
    if (top, bottom, left, right) != (0, 0, 0, 0):
        xpad = np.pad(x, ((0, 0), (top, bottom), (left, right), (0, 0)))
        mistakes.append(Mistake("dx not cropped", "this is the gradient of the padded input: crop the padding "
                                "off, dx has x's shape", L.conv2d_backward(dout, (xpad, w, b, stride, "valid"))[0]))
    k = w.shape[0]
    if stride == 1 and w.shape[1] == k and (top, bottom, left, right) == (k // 2,) * 4:
        # With stride 1 and symmetric padding, dx is the 'same' correlation of dout with the kernel
        # flipped in space, its channel axes swapped. The classic slip forgets the flip.
        mistakes.append(Mistake(
            "kernel not flipped", "dx must correlate dout with the kernel flipped in space, w[::-1, ::-1] "
            "(channels swapped): the input pixel at offset (kh, kw) of a window meets w[kh, kw], so seen from "
            "the pixel the kernel runs backwards",
            L.conv2d_forward(dout, w.transpose(0, 1, 3, 2).astype(dout.dtype), np.zeros(x.shape[3], dout.dtype),
                             1, "same")[0]))
    return mistakes


def conv2d_backward_cases(ref, rng, use_torch):
    L, parts = ref.layers, ("dx", "dw", "db")

    def case(label, shape, k, c_out, stride, padding, input_dtype=np.float64, expected=None, **options):
        x, w, b = (a.astype(input_dtype) for a in _conv_inputs(rng, shape, k, c_out))
        out, cache = L.conv2d_forward(x, w, b, stride, padding)
        dout = randn(rng, *out.shape).astype(input_dtype)
        if callable(expected):
            expected = expected(x, w, b, dout)
        return Case(label, (dout, cache), L.conv2d_backward(dout, cache) if expected is None else expected,
                    parts=parts, mistakes=_conv2d_backward_mistakes(L, x, w, b, stride, padding, dout), **options)

    def numeric(x, w, b, dout):
        # convolution is linear in each input: centred differences are exact, a larger step has less round-off
        return (numeric_gradient(ref, lambda v: L.conv2d_forward(v, w, b, 1, "same")[0], x, dout, h=1e-3),
                numeric_gradient(ref, lambda v: L.conv2d_forward(x, v, b, 1, "same")[0], w, dout, h=1e-3),
                numeric_gradient(ref, lambda v: L.conv2d_forward(x, w, v, 1, "same")[0], b, dout, h=1e-3))

    def torch_grads(x, w, b, dout):
        T = ref.torch_ref
        return tuple(_torch_forward_backward(ref, lambda *t: T.conv2d(*t, 2, "same"), (x, w, b), dout)[1])

    cases = [case(*config) for config in _CONV_CONFIGS[:3]]
    cases.append(case("weight_grads=False returns (dx, None, None)", (1, 5, 6, 3), 3, 4, 1, "same",
                      expected=lambda x, w, b, dout: (L.conv2d_backward(dout, (x, w, b, 1, "same"))[0], None, None),
                      kwargs={"weight_grads": False}))
    cases.append(case("against finite differences of the forward pass, 3x3 'same'", (1, 4, 5, 2), 3, 3, 1, "same",
                      expected=numeric, tol=ref.gradcheck.NUMERIC_TOL, normwise=True))
    if use_torch:
        cases.append(case("against PyTorch autograd: 3x3 stride 2 'same' on 8x6", (1, 8, 6, 3), 3, 4, 2, "same",
                          expected=torch_grads, counted=False))
    cases.append(case("float32 in, float32 out", (1, 5, 6, 3), 3, 4, 1, "same", input_dtype=np.float32,
                      dtype=np.float32, tol=FLOAT32_TOL, normwise=True))
    x, w, b = _conv_inputs(rng, (1, 64, 64, 16), 3, 8)
    out, cache = L.conv2d_forward(x, w, b, 1, "same")
    dout = randn(rng, *out.shape)
    cases.append(at_scale("x 1x64x64x16, 3x3 'same', 8 channels out", (dout, cache), L.conv2d_backward(dout, cache),
                          parts=parts))
    return cases


# ---- ReLU
def _relu_input(rng, shape=(2, 5, 7, 3)):
    x = randn(rng, *shape)
    x[0, 0, :2, :] = 0.0  # exact zeros: relu(0) = 0 and no gradient passes there
    return x


def relu_forward_cases(ref, rng, use_torch):
    L = ref.layers
    x = _relu_input(rng)
    cases = [Case("x 2x5x7x3, with some exact zeros", (x,), L.relu_forward(x)[0], pick=_out, mistakes=[
        Mistake("min instead of max", "kept the negative part: ReLU is max(x, 0)", np.minimum(x, 0)),
        Mistake("absolute value", "|x| is not ReLU: negative inputs give 0", np.abs(x)),
    ])]
    (x32,) = as_float32(_relu_input(rng))
    cases.append(Case("float32 in, float32 out", (x32,), L.relu_forward(x32)[0], pick=_out, tol=FLOAT32_TOL,
                      normwise=True, dtype=np.float32))
    if use_torch:
        x = _relu_input(rng, (1, 4, 6, 5))
        T = ref.torch_ref
        cases.append(Case("against PyTorch's relu", (x,), T.to_numpy(T.relu(T.to_torch(x))), pick=_out,
                          counted=False))
    return cases


def _relu_backward_mistakes(out, dout):
    """The classic mistakes of relu_backward, computed for these inputs."""
    return [
        Mistake("ReLU mask x >= 0", "the gradient passed where x <= 0 too (a mask x >= 0, or out >= 0, is true "
                "everywhere): it passes only where x > 0", dout),
        Mistake("mask from dout", "masked by the sign of dout; the mask is where the forward input was positive "
                "(out > 0)", np.where(dout > 0, dout, 0)),
        Mistake("multiplied by the activation", "dout * out: the derivative of max(x, 0) is 1 where x > 0, not x",
                dout * out),
    ]


def relu_backward_cases(ref, rng, use_torch):
    L = ref.layers

    def case(label, x, expected=None, **options):
        out, cache = L.relu_forward(x)
        dout = randn(rng, *x.shape).astype(x.dtype)
        expected = L.relu_backward(dout, cache) if expected is None else expected(x, dout)
        return Case(label, (dout, cache), expected, mistakes=_relu_backward_mistakes(out, dout), **options)

    x_smooth = randn(rng, 1, 4, 5, 3)
    x_smooth[np.abs(x_smooth) < 1e-3] = 0.5  # away from the kink, where differences say nothing
    cases = [
        case("x 2x5x7x3 with some exact zeros, cache from the reference relu_forward", _relu_input(rng)),
        case("against finite differences of relu_forward", x_smooth, tol=ref.gradcheck.NUMERIC_TOL, normwise=True,
             expected=lambda x, dout: numeric_gradient(ref, lambda v: L.relu_forward(v)[0], x, dout)),
    ]
    if use_torch:
        cases.append(case("against PyTorch autograd (gradient 0 at x == 0)", _relu_input(rng, (1, 4, 6, 5)),
                          expected=lambda x, dout: _torch_forward_backward(ref, ref.torch_ref.relu, (x,), dout)[1][0],
                          counted=False))
    cases.append(case("float32 in, float32 out", _relu_input(rng).astype(np.float32), tol=FLOAT32_TOL,
                      normwise=True, dtype=np.float32))
    return cases


# ---- pooling
_POOL_CONFIGS = (
    # label, x shape, size, stride, padding
    ("2x2 stride 2 'valid' on 7x9: the odd row and column dropped (VGG-19)", (2, 7, 9, 3), 2, 2, "valid"),
    ("3x3 stride 2 'valid': overlapping windows (SqueezeNet)", (1, 9, 11, 3), 3, 2, "valid"),
    ("3x3 stride 2 'same' on 8x7: windows at the border hold padding", (1, 8, 7, 2), 3, 2, "same"),
)
_ASSIGNED = "= instead of += where windows overlap"
_ASSIGNED_WHY = ("dx is right wherever one window reaches the input and wrong where two do: an input inside two "
                 "windows must receive the gradient of both, so add into dx (+=); assigning (=) keeps the last")
_OVERLAP_HINT = ("windows overlap here (3x3, stride 2): an input inside two windows receives the gradient of "
                 "both, so add into dx (+=), never assign (=)")


def _window_counts(L, x_shape, size, stride, padding, arg=None):
    """How many windows reach each input cell: all windows, or (given arg) those whose maximum it is."""
    H_out, W_out, (top, bottom), (left, right) = L._pool_geometry(x_shape, size, stride, padding)
    N, H, W, C = x_shape
    count = np.zeros((N, H + top + bottom, W + left + right, C), dtype=np.int64)
    for k, view in _taps(count, size, stride, H_out, W_out):
        view += 1 if arg is None else (arg == k)  # the cells of one tap are distinct: += on the view is exact
    return count[:, top:top + H, left:left + W]


def _arg_last_max(L, x, size, stride, padding):
    """Index kh*size + kw of the LAST maximum of each window (ties go to the later tap)."""
    H_out, W_out, pad_h, pad_w = L._pool_geometry(x.shape, size, stride, padding)
    xpad = np.pad(x, ((0, 0), pad_h, pad_w, (0, 0)), constant_values=-np.inf)
    best = np.full((x.shape[0], H_out, W_out, x.shape[3]), -np.inf)
    arg = np.zeros(best.shape, dtype=np.int64)
    for k, tap in _taps(xpad, size, stride, H_out, W_out):
        later = tap >= best
        best, arg = np.where(later, tap, best), np.where(later, k, arg)
    return arg


def max_pool_forward_cases(ref, rng, use_torch):
    L, parts = ref.layers, ("out", "arg (cache[1])")
    cases = []
    for label, shape, size, stride, padding in _POOL_CONFIGS:
        x = randn(rng, *shape)
        out, cache = L.max_pool_forward(x, size, stride, padding)
        arg = cache[1]
        cases.append(Case(label, (x, size, stride, padding), (out, arg), parts=parts, pick=_out_and_arg,
                          size_rule=_POOL_SIZE, mistakes=[
            Mistake("average instead of max", "this is the mean of each window", L.avg_pool_forward(
                x, size, stride, padding)[0]),
            Mistake("arg numbered kw*size + kh", "arg must number the window's cells row by row: "
                    "kh*size + kw", (arg % size) * size + arg // size, part=1),
        ]))
    x = rng.integers(0, 3, size=(1, 6, 6, 2)).astype(np.float64)  # small integers: many ties
    out, cache = L.max_pool_forward(x, 2, 2, "valid")
    cases.append(Case("ties (small integer inputs): arg points at the FIRST maximum", (x, 2, 2, "valid"),
                      (out, cache[1]), parts=parts, pick=_out_and_arg, mistakes=[
                          Mistake("ties to the last maximum", "on a tie arg records the last maximum; keep the "
                                  "first in row-major order (replace only when strictly greater), as PyTorch does",
                                  _arg_last_max(L, x, 2, 2, "valid"), part=1)]))
    (x,) = as_float32(randn(rng, 2, 7, 9, 3))
    out, cache = L.max_pool_forward(x, 2, 2, "valid")
    cases.append(Case("float32 in, float32 out", (x, 2, 2, "valid"), (out, cache[1]), parts=parts,
                      pick=_out_and_arg, tol=FLOAT32_TOL, normwise=True, dtype=np.float32, size_rule=_POOL_SIZE))
    if use_torch:
        x = randn(rng, 1, 9, 11, 3)
        T = ref.torch_ref
        cases.append(Case("against PyTorch's max_pool: 3x3 stride 2, overlapping", (x, 3, 2, "valid"),
                          T.to_numpy(T.max_pool(T.to_torch(x), 3, 2, "valid")), pick=_out, size_rule=_POOL_SIZE,
                          counted=False))
    return cases


def max_pool_backward_cases(ref, rng, use_torch):
    L = ref.layers
    cases = []
    for label, shape, size, stride, padding in _POOL_CONFIGS:
        x = randn(rng, *shape)
        out, cache = L.max_pool_forward(x, size, stride, padding)
        dout = randn(rng, *out.shape)
        x_shape, arg, *rest = cache
        swapped = (x_shape, ((arg % size) * size + arg // size).astype(arg.dtype), *rest)
        mistakes = [Mistake("arg decoded as kw*size + kh", "arg = kh*size + kw, so kh = arg // size "
                            "and kw = arg % size", L.max_pool_backward(dout, swapped))]
        shared = _window_counts(L, x.shape, size, stride, padding, arg) >= 2
        if shared.any():
            mistakes.append(Mistake(_ASSIGNED, _ASSIGNED_WHY, None, differs_only_at=shared))
        # overlapping windows (SqueezeNet's pools) are the exercise's own question: a main case
        cases.append(Case(label, (dout, cache), L.max_pool_backward(dout, cache), main=True if size > stride else None,
                          hint=_OVERLAP_HINT if size > stride else "", mistakes=mistakes))
    # Values at least 0.04 apart: no two cells of a window come within the differences' step of each
    # other, whatever the seed (a teacher's grade draws new inputs), so max pooling is smooth near x.
    x = rng.permutation(98).reshape(1, 7, 7, 2) * 0.05 + rng.uniform(0, 0.01, (1, 7, 7, 2)) - 2.45
    out, cache = L.max_pool_forward(x, 3, 2, "valid")
    dout = randn(rng, *out.shape)
    cases.append(Case("against finite differences of max_pool_forward, 3x3 stride 2", (dout, cache),
                      numeric_gradient(ref, lambda v: L.max_pool_forward(v, 3, 2, "valid")[0], x, dout),
                      tol=ref.gradcheck.NUMERIC_TOL, normwise=True, hint=_OVERLAP_HINT, mistakes=[
                          Mistake(_ASSIGNED, _ASSIGNED_WHY, None, differs_only_at=_window_counts(
                              L, x.shape, 3, 2, "valid", cache[1]) >= 2)]))
    if use_torch:
        x = randn(rng, 1, 8, 7, 2)
        out, cache = L.max_pool_forward(x, 3, 2, "same")
        dout = randn(rng, *out.shape)
        _, (dx,) = _torch_forward_backward(ref, lambda t: ref.torch_ref.max_pool(t, 3, 2, "same"), (x,), dout)
        cases.append(Case("against PyTorch autograd: 3x3 stride 2 'same'", (dout, cache), dx, hint=_OVERLAP_HINT,
                          mistakes=[Mistake(_ASSIGNED, _ASSIGNED_WHY, None, differs_only_at=_window_counts(
                              L, x.shape, 3, 2, "same", cache[1]) >= 2)], counted=False))
    (x,) = as_float32(randn(rng, 2, 7, 9, 3))
    out, cache = L.max_pool_forward(x, 2, 2, "valid")
    dout = randn(rng, *out.shape).astype(np.float32)
    cases.append(Case("float32 in, float32 out", (dout, cache), L.max_pool_backward(dout, cache),
                      tol=FLOAT32_TOL, normwise=True, dtype=np.float32))
    return cases


def _avg_pool_counting_padding(L, x, size, stride, padding):
    """Average pooling that divides every window by size*size, padded cells included."""
    H_out, W_out, pad_h, pad_w = L._pool_geometry(x.shape, size, stride, padding)
    xpad = np.pad(x, ((0, 0), pad_h, pad_w, (0, 0)))
    return sum(tap for _, tap in _taps(xpad, size, stride, H_out, W_out)) / size**2


def _avg_pool_backward_counting_padding(L, dout, x_shape, size, stride, padding):
    """The backward pass of `_avg_pool_counting_padding`."""
    H_out, W_out, (top, bottom), (left, right) = L._pool_geometry(x_shape, size, stride, padding)
    N, H, W, C = x_shape
    dxpad = np.zeros((N, H + top + bottom, W + left + right, C))
    for _, view in _taps(dxpad, size, stride, H_out, W_out):
        view += dout / size**2
    return dxpad[:, top:top + H, left:left + W]


_COUNT_WHY = ("divided every window by size*size; with 'same' padding Keras averages the real cells only, "
              "so a border window holding padding divides by fewer")


def avg_pool_forward_cases(ref, rng, use_torch):
    L = ref.layers
    cases = []
    for label, shape, size, stride, padding in _POOL_CONFIGS:
        x = randn(rng, *shape)
        mistakes = [Mistake("max instead of average", "this is the maximum of each window",
                            L.max_pool_forward(x, size, stride, padding)[0])]
        if padding == "same":
            mistakes.append(Mistake("padded cells counted", _COUNT_WHY,
                                    _avg_pool_counting_padding(L, x, size, stride, padding)))
        cases.append(Case(label, (x, size, stride, padding), L.avg_pool_forward(x, size, stride, padding)[0],
                          pick=_out, mistakes=mistakes, size_rule=_POOL_SIZE))
    (x,) = as_float32(randn(rng, 1, 8, 7, 2))
    cases.append(Case("float32 in, float32 out", (x, 3, 2, "same"), L.avg_pool_forward(x, 3, 2, "same")[0],
                      pick=_out, tol=FLOAT32_TOL, normwise=True, dtype=np.float32, size_rule=_POOL_SIZE))
    if use_torch:
        x = randn(rng, 1, 8, 7, 2)
        T = ref.torch_ref
        cases.append(Case("against PyTorch's avg_pool: 3x3 stride 2 'same'", (x, 3, 2, "same"),
                          T.to_numpy(T.avg_pool(T.to_torch(x), 3, 2, "same")), pick=_out, size_rule=_POOL_SIZE,
                          counted=False))
    return cases


def avg_pool_backward_cases(ref, rng, use_torch):
    L = ref.layers
    cases = []
    for label, shape, size, stride, padding in _POOL_CONFIGS:
        x = randn(rng, *shape)
        out, cache = L.avg_pool_forward(x, size, stride, padding)
        dout = randn(rng, *out.shape)
        dx = L.avg_pool_backward(dout, cache)
        mistakes = []
        if padding == "same":
            mistakes.append(Mistake("padded cells counted", _COUNT_WHY,
                                    _avg_pool_backward_counting_padding(L, dout, x.shape, size, stride, padding)))
        else:
            mistakes.append(Mistake("not divided by the count", "each of the window's size*size cells gets "
                                    "dout / (size*size), its share of the mean", dx * size**2))
        shared = _window_counts(L, x.shape, size, stride, padding) >= 2
        if shared.any():
            mistakes.append(Mistake(_ASSIGNED, _ASSIGNED_WHY, None, differs_only_at=shared))
        cases.append(Case(label, (dout, cache), dx, mistakes=mistakes, hint=_OVERLAP_HINT if size > stride else "",
                          main=True if size > stride else None))
    x = randn(rng, 1, 7, 6, 2)
    out, cache = L.avg_pool_forward(x, 3, 2, "same")
    dout = randn(rng, *out.shape)
    cases.append(Case("against finite differences of avg_pool_forward, 3x3 stride 2 'same'", (dout, cache),
                      numeric_gradient(ref, lambda v: L.avg_pool_forward(v, 3, 2, "same")[0], x, dout),
                      tol=ref.gradcheck.NUMERIC_TOL, normwise=True))
    if use_torch:
        x = randn(rng, 1, 9, 11, 3)
        out, cache = L.avg_pool_forward(x, 3, 2, "valid")
        dout = randn(rng, *out.shape)
        _, (dx,) = _torch_forward_backward(ref, lambda t: ref.torch_ref.avg_pool(t, 3, 2, "valid"), (x,), dout)
        cases.append(Case("against PyTorch autograd: 3x3 stride 2, overlapping", (dout, cache), dx,
                          mistakes=[Mistake(_ASSIGNED, _ASSIGNED_WHY, None, differs_only_at=_window_counts(
                              L, x.shape, 3, 2, "valid") >= 2)],
                          hint=_OVERLAP_HINT, counted=False))
    (x,) = as_float32(randn(rng, 2, 7, 9, 3))
    out, cache = L.avg_pool_forward(x, 2, 2, "valid")
    dout = randn(rng, *out.shape).astype(np.float32)
    cases.append(Case("float32 in, float32 out", (dout, cache), L.avg_pool_backward(dout, cache),
                      tol=FLOAT32_TOL, normwise=True, dtype=np.float32))
    x = randn(rng, 2, 80, 80, 16)
    out, cache = L.avg_pool_forward(x, 3, 2, "valid")
    dout = randn(rng, *out.shape)
    cases.append(at_scale("x 2x80x80x16, 3x3 stride 2", (dout, cache), L.avg_pool_backward(dout, cache),
                          hint=_OVERLAP_HINT))
    return cases


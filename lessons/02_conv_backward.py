"""Lesson 2: the backward pass of convolution, and how to prove a gradient right.

Run it:   python lessons/02_conv_backward.py      (a few seconds; pictures go to lessons/out/)
Makes:    02_gradient.png    what dJ/dx looks like for an "edge energy" cost on the content image
          02_step_size.png   rel_error against the finite-difference step h (needs matplotlib)
Needs:    no pretrained weights.
"""

# %%
import numpy as np

import _lesson
from scratchnst import layers, torch_ref
from scratchnst.gradcheck import NUMERIC_TOL, eval_numerical_gradient_array, rel_error

args = _lesson.parse_args(__doc__, size=256)
rng = np.random.default_rng(args.seed)

# %% [markdown]
# ## Goal
#
# Style transfer changes the PIXELS of an image to lower a cost computed at the top of a deep
# network, so it needs dJ/dx: the gradient carried back down through every layer. This lesson
# derives the backward pass of a convolution, writes it with loops, and then proves it right
# three ways: against the package, against the definition of the derivative (finite
# differences) and against PyTorch's autograd.
#
# ## The idea
#
# The backward pass receives dout = dJ/dout (N, H_out, W_out, C_out), how much the cost J changes
# per unit change of each output. Each output value was
#
#     out[n, i, j, c] = b[c] + sum of window(n, i, j) * w[..., c]
#
# so, by the chain rule, it sends dout[n, i, j, c] back along the two things it multiplied:
#
#     dJ/dwindow(n, i, j) += dout[n, i, j, c] * w[..., c]            (to the input, dx)
#     dJ/dw[..., c]       += dout[n, i, j, c] * window(n, i, j)     (to the kernel, dw)
#     dJ/db[c]            += dout[n, i, j, c]                       (to the bias, db)
#
# Windows overlap, so the contributions to dx ADD UP (`+=`): that is the whole difficulty.

# %%
def conv_backward_loops(dout, x, w, stride=1, pad=0):
    """Backward pass of a convolution with loops: returns dx, dw, db."""
    N, H, W, C_in = x.shape
    KH, KW, _, C_out = w.shape
    _, H_out, W_out, _ = dout.shape
    xpad = np.pad(x, ((0, 0), (pad, pad), (pad, pad), (0, 0)))
    dxpad = np.zeros_like(xpad)
    dw = np.zeros_like(w)
    for n in range(N):
        for i in range(H_out):
            for j in range(W_out):
                rows = slice(i * stride, i * stride + KH)
                cols = slice(j * stride, j * stride + KW)
                for c in range(C_out):
                    dxpad[n, rows, cols, :] += dout[n, i, j, c] * w[:, :, :, c]
                    dw[:, :, :, c] += dout[n, i, j, c] * xpad[n, rows, cols, :]
    db = dout.sum(axis=(0, 1, 2))
    dx = dxpad[:, pad:pad + H, pad:pad + W, :]  # the padded zeros are constants: drop their gradient
    return dx, dw, db


_lesson.section("The loops against layers.conv2d_backward, float64")
x = rng.standard_normal((2, 7, 9, 3))
w = rng.standard_normal((3, 3, 3, 4))
b = rng.standard_normal(4)
for stride, pad in [(1, 1), (2, 1), (2, 0)]:
    out, cache = layers.conv2d_forward(x, w, b, stride=stride, padding=pad)
    dout = rng.standard_normal(out.shape)  # any upstream gradient will do
    dx, dw, db = conv_backward_loops(dout, x, w, stride, pad)
    dx_p, dw_p, db_p = layers.conv2d_backward(dout, cache)
    print(f"stride {stride}, pad {pad}: rel_error dx {rel_error(dx, dx_p):.1e}  "
          f"dw {rel_error(dw, dw_p):.1e}  db {rel_error(db, db_p):.1e}")

# %% [markdown]
# ## Finite differences: the definition of the derivative as a witness
#
# Agreeing with the package only shows that two pieces of code agree. The independent witness is
# the definition of the derivative. A layer has many outputs; turn it into ONE number with a
# fixed, random upstream gradient:
#
#     J(x) = sum(f(x) * dout)        so that dJ/dout = dout exactly
#
# ("the fake loss"). Then nudge one input element at a time by +-h and watch J:
#
#     dJ/dx[k] ~ (J(x + h e_k) - J(x - h e_k)) / (2h)      (centred: the error is O(h^2), not O(h))
#
# and compare with the analytic gradient by
#
#     rel_error(a, b) = max over elements of |a - b| / max(1e-8, |a| + |b|)
#
# In float64, below 1e-7 means right (the package's threshold, `gradcheck.NUMERIC_TOL`: the
# elements closest to zero set the maximum, and they carry the most round-off); 1e-3 or more
# means a bug. Here it is by hand for a few elements, then for all of them with
# `gradcheck.eval_numerical_gradient_array`.

# %%
_lesson.section("Finite differences by hand, for three elements of x")
stride, pad = 2, 1
out, cache = layers.conv2d_forward(x, w, b, stride=stride, padding=pad)
dout = rng.standard_normal(out.shape)
dx, dw, db = layers.conv2d_backward(dout, cache)


def J(x_):
    return np.sum(layers.conv2d_forward(x_, w, b, stride=stride, padding=pad)[0] * dout)


h = 1e-5
for k in [(0, 0, 0, 0), (1, 3, 4, 2), (0, 6, 8, 1)]:
    plus, minus = x.copy(), x.copy()
    plus[k] += h
    minus[k] -= h
    numeric = (J(plus) - J(minus)) / (2 * h)
    print(f"dJ/dx{list(k)}: analytic {dx[k]: .10f}   numeric {numeric: .10f}")

_lesson.section("Every element: eval_numerical_gradient_array")
f_x = lambda x_: layers.conv2d_forward(x_, w, b, stride=stride, padding=pad)[0]  # noqa: E731
f_w = lambda w_: layers.conv2d_forward(x, w_, b, stride=stride, padding=pad)[0]  # noqa: E731
f_b = lambda b_: layers.conv2d_forward(x, w, b_, stride=stride, padding=pad)[0]  # noqa: E731
errs = {"dx": rel_error(dx, eval_numerical_gradient_array(f_x, x, dout)),
        "dw": rel_error(dw, eval_numerical_gradient_array(f_w, w, dout)),
        "db": rel_error(db, eval_numerical_gradient_array(f_b, b, dout))}
print("rel_error " + "  ".join(f"{k} {v:.1e}" for k, v in errs.items()),
      "-> right" if max(errs.values()) < NUMERIC_TOL else "-> WRONG")

# %% [markdown]
# ## Why gradient checks run in float64
#
# The difference J(x + h) - J(x - h) subtracts two nearly equal numbers: the relative round-off of
# that subtraction is about eps * |J| / (h * |dJ/dx|). With float32 (eps ~ 6e-8) and h = 1e-3
# that is already ~1e-4..1e-2: a correct gradient would look wrong. With float64 (eps ~ 1e-16)
# it is ~1e-10. The step h trades two errors: too large and the O(h^2) truncation of the Taylor
# series dominates; too small and round-off does. A nonlinear cost shows both: we use
# J = sum(out ** 3) / 3 (so dJ/dout = out ** 2) instead of the linear fake loss.

# %%
_lesson.section("rel_error against the step h: truncation (large h) against round-off (small h)")
xs = rng.standard_normal((1, 5, 6, 2))
ws = rng.standard_normal((3, 3, 2, 3))
bs = rng.standard_normal(3)
steps = np.logspace(-1, -11, 21)
errors = {}
for dtype in (np.float64, np.float32):
    x_, w_, b_ = xs.astype(dtype), ws.astype(dtype), bs.astype(dtype)
    out, cache = layers.conv2d_forward(x_, w_, b_, stride=1, padding="same")
    dx_, _, _ = layers.conv2d_backward(out ** 2, cache, weight_grads=False)  # dJ/dout = out**2
    cube = lambda v, dtype=dtype: np.sum(  # noqa: E731
        layers.conv2d_forward(v.astype(dtype), w_, b_, stride=1, padding="same")[0] ** 3) / 3
    errors[dtype.__name__] = []
    for step in steps:
        # one centred difference per element; the "array" is the scalar cube, dout = 1
        numeric = eval_numerical_gradient_array(lambda v: np.array(cube(v)), xs, np.array(1.0), h=step)
        errors[dtype.__name__].append(rel_error(dx_, numeric))
print(f"{'h':>8}  {'float64':>9}  {'float32':>9}")
for step, e64, e32 in zip(steps[::2], errors["float64"][::2], errors["float32"][::2]):
    print(f"{step:8.0e}  {e64:9.1e}  {e32:9.1e}")
best = int(np.argmin(errors["float64"]))
print(f"float64 is best near h = {steps[best]:.0e} (rel_error {errors['float64'][best]:.1e}); float32 never "
      f"gets below {min(errors['float32']):.0e}")

plt = _lesson.pyplot("the plot of rel_error against h")
if plt is not None:
    fig, ax = plt.subplots(figsize=(6, 4))
    for name, errs in errors.items():
        ax.loglog(steps, errs, "o-", label=name)
    ax.invert_xaxis()
    ax.set_xlabel("finite-difference step h")
    ax.set_ylabel("rel_error(analytic, numeric)")
    ax.set_title("Centred differences of sum(conv(x)**3)/3")
    ax.grid(True, which="both", alpha=0.3)
    ax.legend()
    _lesson.save_plot(args, "02_step_size.png", fig)

# %% [markdown]
# ## Against PyTorch
#
# The third witness: PyTorch's autograd pushes the same fake loss sum(out * dout) backward.
# Its gradient with respect to x, w and b must equal ours to round-off.

# %%
_lesson.section("scratchnst against PyTorch autograd, float64")
torch = _lesson.torch_or_note()
if torch is not None:
    for shape, k, stride, padding in [((2, 7, 9, 3), 3, 1, "same"), ((1, 8, 6, 3), 3, 2, "same"),
                                      ((1, 6, 7, 12), 3, 1, 1), ((1, 9, 11, 2), 7, 2, 3)]:
        x = rng.standard_normal(shape)
        w = rng.standard_normal((k, k, shape[3], 5))
        b = rng.standard_normal(5)
        out, cache = layers.conv2d_forward(x, w, b, stride=stride, padding=padding)
        dout = rng.standard_normal(out.shape)
        dx, dw, db = layers.conv2d_backward(dout, cache)
        xt, wt, bt = (torch_ref.to_torch(a, requires_grad=True) for a in (x, w, b))
        (torch_ref.conv2d(xt, wt, bt, stride, padding) * torch_ref.to_torch(dout)).sum().backward()
        print(f"x {shape}, {k}x{k}, stride {stride}, padding {padding!r}: rel_error "
              f"dx {rel_error(dx, torch_ref.to_numpy(xt.grad)):.1e}  "
              f"dw {rel_error(dw, torch_ref.to_numpy(wt.grad)):.1e}  "
              f"db {rel_error(db, torch_ref.to_numpy(bt.grad)):.1e}")
print("(the same check for every layer and configuration: `scratchnst gradcheck`)")

# %% [markdown]
# ## A picture: what a gradient with respect to the pixels looks like
#
# Take the content image and the "edge energy" J(x) = 1/2 * sum(sobel(x) ** 2), where sobel is a
# one-kernel convolution that finds vertical edges. Then dJ/dout = out, and one backward pass
# gives dJ/dx: the direction that would make the edges stronger. It is zero on flat regions and
# large on both sides of every vertical edge, with opposite signs (making the edge steeper means
# darkening one side and lightening the other).
#
# (The line along the left and right borders is the zero padding: to the kernel, the image
# meeting the padded zeros is an edge too.)
#
# On a large input we cannot check every pixel by finite differences (two forward passes each),
# but we can check a random sample of them: the "spot check" used on real networks.

# %%
_lesson.section("dJ/dx of an edge energy on the content image")
image = _lesson.load(args.content, args.size)
grey = image.mean(axis=-1, dtype=np.float64)[None, :, :, None] / 255  # (1, H, W, 1), float64 for the spot check
sobel = np.array([[-1, 0, 1], [-2, 0, 2], [-1, 0, 1]], dtype=np.float64)[:, :, None, None]
out, cache = layers.conv2d_forward(grey, sobel, np.zeros(1), stride=1, padding="same")
dgrey, _, _ = layers.conv2d_backward(out, cache, weight_grads=False)  # dJ/dout = out
print(f"J = {0.5 * np.sum(out ** 2):.2f}, dJ/dx has shape {dgrey.shape}")



def J_edge(g):
    """The edge energy 1/2 * sum(sobel(g) ** 2)."""
    return 0.5 * np.sum(layers.conv2d_forward(g, sobel, np.zeros(1), stride=1, padding="same")[0] ** 2)


sample = [tuple(rng.integers(0, n) for n in grey.shape) for _ in range(20)]
worst = 0.0
for k in sample:
    plus, minus = grey.copy(), grey.copy()
    plus[k] += 1e-4
    minus[k] -= 1e-4
    worst = max(worst, rel_error(dgrey[k], (J_edge(plus) - J_edge(minus)) / 2e-4))
print(f"spot check of 20 random pixels against finite differences: largest rel_error {worst:.1e}")

_lesson.save(args, "02_gradient.png", _lesson.montage(
    [image, _lesson.stretch(np.abs(out[0, :, :, 0])), _lesson.signed(dgrey[0, :, :, 0])],
    ["content", "|vertical edges| (forward)", "dJ/dx: red +, blue - (backward)"]))

# %% [markdown]
# ## Summary
#
# - Backward of a convolution: each output sends dout * w back to its window (dx) and
#   dout * window to the kernel (dw); overlapping windows add up. db sums dout.
# - A gradient is proven right by finite differences in float64 with a centred step
#   (rel_error below 1e-7) and by PyTorch's autograd (round-off only, ~1e-13 or less).
# - float32 is fine for running a network but not for checking one: round-off in
#   J(x + h) - J(x - h) swamps the difference.
# - Style transfer needs only dx: `conv2d_backward(dout, cache, weight_grads=False)` skips dw and
#   db, because the network's weights stay fixed and only the pixels change.
#
# ## Exercises
#
# 1. Derive db by hand from the formula of `out` and explain why it does not depend on x or w.
# 2. With stride 1, dx is itself a convolution of dout with the kernel flipped in space and with
#    its channel axes swapped, w[::-1, ::-1].transpose(0, 1, 3, 2), and 'full' padding (K - 1).
#    Check this numerically with `layers.conv2d_forward`.
# 3. Plant a bug in `conv_backward_loops` (drop the `+=`, use `=`) and watch which of the three
#    witnesses catches it, and with what rel_error.
# 4. Repeat the step-size experiment with the linear fake loss sum(out * dout). Why is there no
#    truncation error at all, at any h?
# 5. How many forward passes does a full finite-difference check of a 400x400x3 image need? How
#    long would that take at 0.5 s per pass through VGG-19?

# %%
_lesson.done()

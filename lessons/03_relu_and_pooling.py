"""Lesson 3: ReLU and pooling (max and average), forward and backward.

Run it:   python lessons/03_relu_and_pooling.py   (a few seconds; pictures go to lessons/out/)
Makes:    03_pooling.png   the content image pooled three times by max and by average, and where
                           max pooling's gradient goes
          03_relu_kink.png ReLU, its derivative, and what finite differences make of the kink
                           (needs matplotlib)
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
# Between its convolutions a network has two more layers: ReLU, which keeps positive values and
# zeroes the rest, and pooling, which shrinks the feature maps by taking the maximum (or the
# average) of each small window. VGG-19 pools with 2x2 windows and stride 2; SqueezeNet with
# overlapping 3x3 windows and stride 2. Gatys et al. replaced max by average pooling for style
# transfer ("improves the gradient flow"): by the end of the lesson you will see why.
#
# ## ReLU
#
#     forward:   out = max(x, 0)
#     backward:  dx = dout where x > 0, else 0
#
# The backward pass needs only to know where x was positive, and out > 0 exactly there, so the
# cache is the output itself (the next layer keeps it anyway).

# %%
_lesson.section("ReLU: two lines each way, checked against the package and finite differences")
x = rng.standard_normal((2, 5, 7, 3))
x[np.abs(x) < 1e-3] = 0.5  # keep away from the kink at 0: see below
out_mine = np.maximum(x, 0)
dout = rng.standard_normal(x.shape)
dx_mine = dout * (x > 0)

out, cache = layers.relu_forward(x)
dx = layers.relu_backward(dout, cache)
numeric = eval_numerical_gradient_array(lambda v: layers.relu_forward(v)[0], x, dout)
print(f"rel_error forward {rel_error(out_mine, out):.1e}, backward {rel_error(dx_mine, dx):.1e}, "
      f"backward vs finite differences {rel_error(dx, numeric):.1e}")

# %% [markdown]
# ## The kink
#
# At x = 0 ReLU has no derivative: the slope is 0 on the left and 1 on the right. Frameworks
# take 0. A centred difference straddles the kink and answers the average, 0.5, so a gradient
# check must keep its inputs away from 0 (as the cell above did), or it reports an "error"
# that is not one. Exactly-zero inputs are rare in practice; after a ReLU they are common in the
# NEXT layer's input, which is one reason to check layers one at a time.

# %%
_lesson.section("Finite differences at the kink")
kink = np.array([-1.0, -1e-7, 0.0, 1e-7, 1.0])
numeric = eval_numerical_gradient_array(lambda v: layers.relu_forward(v)[0], kink, np.ones(5), h=1e-5)
analytic = layers.relu_backward(np.ones(5), layers.relu_forward(kink)[1])
for v, a, n in zip(kink, analytic, numeric):
    print(f"x = {v: .0e}: analytic {a:.2f}, centred difference {n:.2f}")

plt = _lesson.pyplot("the plot of ReLU and its derivative")
if plt is not None:
    t = np.linspace(-2, 2, 401)
    fig, ax = plt.subplots(figsize=(6, 3.5))
    ax.plot(t, np.maximum(t, 0), label="relu(x)")
    ax.plot(t, (t > 0).astype(float), label="derivative (0 at x = 0)")
    for h in (0.5, 0.2):
        ax.plot(t, (np.maximum(t + h, 0) - np.maximum(t - h, 0)) / (2 * h), "--",
                label=f"centred difference, h = {h}")
    ax.set_xlabel("x")
    ax.legend()
    ax.grid(alpha=0.3)
    ax.set_title("Within h of the kink, a centred difference averages the two slopes")
    _lesson.save_plot(args, "03_relu_kink.png", fig)

# %% [markdown]
# ## Max pooling
#
#     forward:   out[n, i, j, c] = max of x[n, i*s : i*s + k, j*s : j*s + k, c]
#     backward:  each window sends dout[n, i, j, c] to the ONE element that was its maximum;
#                every other element of the window gets nothing
#
# So the backward pass needs only WHICH element won in each window. With overlapping windows
# (SqueezeNet's 3x3, stride 2) one element can win several windows: it receives the sum of their
# gradients. With ties, the first maximum in row-major order wins, as in PyTorch.

# %%
def max_pool_loops(x, k=2, s=2):
    """Max pooling ('valid') with loops: returns out and the winners' positions for backward."""
    N, H, W, C = x.shape
    H_out, W_out = (H - k) // s + 1, (W - k) // s + 1
    out = np.empty((N, H_out, W_out, C))
    winner = {}  # output index (n, i, j, c) -> input index (n, row, col, c) of the window's maximum
    for n in range(N):
        for i in range(H_out):
            for j in range(W_out):
                for c in range(C):
                    window = x[n, i * s:i * s + k, j * s:j * s + k, c]
                    r, q = np.unravel_index(np.argmax(window), window.shape)
                    out[n, i, j, c] = window[r, q]
                    winner[n, i, j, c] = (n, i * s + r, j * s + q, c)
    return out, winner


def max_pool_backward_loops(dout, x_shape, winner):
    dx = np.zeros(x_shape)
    for out_index, in_index in winner.items():
        dx[in_index] += dout[out_index]  # += : a winner of two windows gets both gradients
    return dx


_lesson.section("Max pooling: loops against the package and finite differences")
for k, s in [(2, 2), (3, 2)]:  # VGG-19's, SqueezeNet's (overlapping)
    x = rng.standard_normal((2, 9, 11, 3))
    out_mine, winner = max_pool_loops(x, k, s)
    out, cache = layers.max_pool_forward(x, size=k, stride=s)
    dout = rng.standard_normal(out.shape)
    dx_mine = max_pool_backward_loops(dout, x.shape, winner)
    dx = layers.max_pool_backward(dout, cache)
    numeric = eval_numerical_gradient_array(lambda v: layers.max_pool_forward(v, size=k, stride=s)[0], x, dout)
    print(f"{k}x{k} stride {s}: out {out.shape}; rel_error forward {rel_error(out_mine, out):.1e}, "
          f"backward {rel_error(dx_mine, dx):.1e}, vs finite differences {rel_error(dx, numeric):.1e}")
    wins = np.zeros(x.shape, dtype=int)
    for in_index in winner.values():
        wins[in_index] += 1
    print(f"    {np.mean(wins == 0):.0%} of the inputs get no gradient at all; the most windows one input "
          f"wins: {wins.max()}")

# %% [markdown]
# ## Average pooling
#
#     forward:   out[n, i, j, c] = mean of the window
#     backward:  every element of a window gets dout[n, i, j, c] / (k * k)
#
# No element is left out: every pixel gets a share of the gradient. Average pooling is in fact
# a convolution with a constant kernel 1/(k*k) on each channel separately, which makes it linear
# (and its finite differences exact).

# %%
_lesson.section("Average pooling: by hand against the package and finite differences")
x = rng.standard_normal((2, 9, 11, 3))
k, s = 3, 2
out, cache = layers.avg_pool_forward(x, size=k, stride=s)
H_out, W_out = out.shape[1:3]
out_mine = np.stack([np.stack([x[:, i * s:i * s + k, j * s:j * s + k, :].mean(axis=(1, 2))
                               for j in range(W_out)], axis=1) for i in range(H_out)], axis=1)
dout = rng.standard_normal(out.shape)
dx_mine = np.zeros_like(x)
for i in range(H_out):
    for j in range(W_out):
        dx_mine[:, i * s:i * s + k, j * s:j * s + k, :] += dout[:, i:i + 1, j:j + 1, :] / (k * k)
dx = layers.avg_pool_backward(dout, cache)
numeric = eval_numerical_gradient_array(lambda v: layers.avg_pool_forward(v, size=k, stride=s)[0], x, dout)
print(f"3x3 stride 2: rel_error forward {rel_error(out_mine, out):.1e}, backward {rel_error(dx_mine, dx):.1e}, "
      f"vs finite differences {rel_error(dx, numeric):.1e} "
      f"({'below' if rel_error(dx, numeric) < NUMERIC_TOL else 'ABOVE'} the threshold {NUMERIC_TOL:.0e})")

# %% [markdown]
# ## Against PyTorch
#
# PyTorch's `relu`, `max_pool2d` and `avg_pool2d` through `scratchnst.torch_ref`, forward and
# backward (the fake loss sum(out * dout) again).

# %%
_lesson.section("scratchnst against PyTorch, float64")
torch = _lesson.torch_or_note()
if torch is not None:
    cases = [("relu", lambda v: layers.relu_forward(v), layers.relu_backward, torch_ref.relu),
             ("max 2x2 s2", lambda v: layers.max_pool_forward(v, 2, 2), layers.max_pool_backward,
              lambda t: torch_ref.max_pool(t, 2, 2)),
             ("max 3x3 s2", lambda v: layers.max_pool_forward(v, 3, 2), layers.max_pool_backward,
              lambda t: torch_ref.max_pool(t, 3, 2)),
             ("avg 2x2 s2", lambda v: layers.avg_pool_forward(v, 2, 2), layers.avg_pool_backward,
              lambda t: torch_ref.avg_pool(t, 2, 2)),
             ("avg 3x3 s2 same", lambda v: layers.avg_pool_forward(v, 3, 2, "same"), layers.avg_pool_backward,
              lambda t: torch_ref.avg_pool(t, 3, 2, "same"))]
    for name, forward, backward, reference in cases:
        x = rng.standard_normal((2, 9, 10, 3))
        out, cache = forward(x)
        dout = rng.standard_normal(out.shape)
        dx = backward(dout, cache)
        xt = torch_ref.to_torch(x, requires_grad=True)
        out_t = reference(xt)
        (out_t * torch_ref.to_torch(dout)).sum().backward()
        print(f"{name:>16}: rel_error forward {rel_error(out, torch_ref.to_numpy(out_t)):.1e}, "
              f"backward {rel_error(dx, torch_ref.to_numpy(xt.grad)):.1e}")

# %% [markdown]
# ## A picture: what pooling keeps, and where its gradient goes
#
# Pool the content image three times (each 2x2, stride 2: 8x smaller), then blow it up again
# with nearest neighbours to compare. Max pooling keeps the brightest pixel of every window, so
# thin bright details (whiskers) survive and grow; average pooling blurs.
#
# Then the backward pass of ONE overlapping max pool (3x3, stride 2, as SqueezeNet) with
# dout = 1 everywhere: the picture (white = most, black = none; the centre of the image,
# enlarged) counts how much gradient each pixel receives. Most get none;
# a few get the gradient of several windows. Average pooling gives every pixel in a window a share
# (the grid: where 3x3 windows with stride 2 overlap, a pixel sits in 2 or 4 windows and gets 2 or 4
# shares). Without padding, the last row and column of an even-sized image are in no window and
# get nothing from either pool (for average pooling, the line printed below counts them).
# That is the "gradient flow" Gatys et al. improve by switching to average pooling: with max
# pooling, each step of the optimisation changes only the pixels that won their windows.

# %%
_lesson.section("Pooling the content image")
image = _lesson.load(args.content, args.size)
x = image[None].astype(np.float64)  # (1, H, W, 3)
pooled = {}
for kind, forward in (("max", layers.max_pool_forward), ("avg", layers.avg_pool_forward)):
    y = x
    for _ in range(3):
        y, _ = forward(y, size=2, stride=2)
    pooled[kind] = y[0]
    print(f"{kind} pooling 2x2 s2 three times: {x.shape[1:3]} -> {y.shape[1:3]}")


def enlarge(a, shape):
    """Nearest-neighbour enlargement back to (H, W) of the original, for side-by-side viewing."""
    f = shape[0] // a.shape[0]
    big = a.repeat(f, axis=0).repeat(f, axis=1)
    return big[:shape[0], :shape[1]]


grey = x.mean(axis=-1, keepdims=True)  # (1, H, W, 1)
flow = {}
for kind, forward, backward in (("max", layers.max_pool_forward, layers.max_pool_backward),
                                ("avg", layers.avg_pool_forward, layers.avg_pool_backward)):
    out, cache = forward(grey, size=3, stride=2)
    flow[kind] = backward(np.ones_like(out), cache)[0, :, :, 0]  # dout = 1 for every window
flow_max, flow_avg = flow["max"], flow["avg"]
print(f"max pool 3x3 s2 backward with dout = 1: {np.mean(flow_max == 0):.0%} of the pixels get nothing, "
      f"the most is {flow_max.max():.0f} windows' worth; average pooling: {np.mean(flow_avg == 0):.0%} get nothing")
shape = image.shape[:2]
# The gradient maps are as fine as the pixels: show the centre third, enlarged 3x, to see them.
H, W = shape
centre = (slice(H // 3, H // 3 + H // 3), slice(W // 3, W // 3 + W // 3))
zoom = lambda a: a[centre].repeat(3, axis=0).repeat(3, axis=1)  # noqa: E731
_lesson.save(args, "03_pooling.png", _lesson.montage(
    [image, enlarge(pooled["max"], shape), enlarge(pooled["avg"], shape),
     zoom(image), zoom(flow_max / flow_max.max() * 255), zoom(flow_avg / flow_avg.max() * 255)],
    ["content", "max pool x3 (8x smaller)", "avg pool x3 (8x smaller)", "centre, 3x enlarged",
     "max pool 3x3 s2: gradient per pixel", "avg pool 3x3 s2: gradient per pixel"], cols=3))

# %% [markdown]
# ## Summary
#
# - ReLU: out = max(x, 0); the gradient passes where x > 0. Keep gradient checks away from 0.
# - Max pooling sends each window's gradient to its one winner (summed where windows overlap);
#   the cache needs only the winners' positions.
# - Average pooling shares each window's gradient equally: every pixel gets some.
# - All three agree with finite differences and PyTorch.
#
# ## Exercises
#
# 1. Write leaky ReLU (out = x if x > 0 else 0.01 x) forward and backward and check it by finite
#    differences. Why might it help style transfer's gradient flow too?
# 2. Show that 2x2, stride 2 average pooling of a (1, H, W, C) input equals
#    `layers.conv2d_forward` with stride 2, 'valid', and a (2, 2, C, C) kernel that is 1/4 on the
#    channel diagonal and 0 elsewhere.
# 3. Build an input with a tie in one window (two equal maxima) and check which element receives
#    the gradient, in scratchnst and in PyTorch.
# 4. `layers.max_pool_forward` keeps a uint8 index per window instead of a mask of the input's
#    size. How much memory does that save for VGG-19's block1_pool on a 400x400 image?
# 5. With 'same' padding, how many real pixels does the corner window of a 3x3, stride 2 average
#    pool hold? Check `layers.avg_pool_forward` on a (1, 4, 4, 1) input of ones.

# %%
_lesson.done()

"""Lesson 5: the content cost, its gradient, and the choice of layer made visible.

Run it:   python lessons/05_content_cost.py       (about a minute; pictures go to lessons/out/)
Makes:    05_content_layers.png   the content image rebuilt from noise by the content cost alone,
                                  at a shallow, a middle and a deep layer, side by side
          05_content_costs.png    the content cost against the iteration, per layer (needs matplotlib)
Needs:    pretrained weights for the pictures; the gradient checks run without them.
"""

# %%
import numpy as np

import _lesson
from scratchnst import costs, image, optim, torch_ref
from scratchnst.gradcheck import NUMERIC_TOL, eval_numerical_gradient_array, rel_error

args = _lesson.parse_args(__doc__, size=224, iters=150)
rng = np.random.default_rng(args.seed)

# %% [markdown]
# ## Goal
#
# The content cost is the heart of the course: it says how far a generated image G is from the
# content image C, not in pixels, but in what one layer l of the network sees. By the end of this
# lesson you can write it and its gradient, check both, and see what the choice of l does.
#
# ## The formula
#
# With a_C and a_G the activations of C and G at layer l, both (1, nH, nW, nC):
#
#     J_content(C, G) = 1 / (4 * nH * nW * nC) * sum((a_C - a_G) ** 2)
#
# (Some printings of the course's notes write the difference as `a[l](C) - a[l](C)`, which is
# always 0: a typo for `a[l](C) - a[l](G)`.)
#
# Why 1 / (4 * nH * nW * nC)? nH * nW * nC is the number of values compared, so the sum becomes
# a MEAN squared difference: the cost does not grow with the image's size or the layer's width,
# and the same weight alpha works at any --size and any content layer. The 4 is a convention
# (Gatys et al. write 1/2 * sum, without the mean): a constant factor that alpha absorbs, and that
# makes the gradient come out as (a_G - a_C) / (2 * nH * nW * nC).

# %%
def content_cost(a_C, a_G):
    """The course's J_content, in two lines."""
    _, nH, nW, nC = a_G.shape
    return np.sum((a_C - a_G) ** 2) / (4 * nH * nW * nC)


_lesson.section("The normalisation: the same cost at every size")
print(f"{'activation shape':>20}  {'sum of squares':>15}  {'J_content':>9}  {'costs.compute_content_cost':>26}")
for shape in [(1, 8, 8, 16), (1, 32, 32, 64), (1, 50, 75, 512)]:
    a_C, a_G = rng.standard_normal(shape), rng.standard_normal(shape)
    print(f"{str(shape):>20}  {np.sum((a_C - a_G) ** 2):>15.0f}  {content_cost(a_C, a_G):>9.4f}  "
          f"{costs.compute_content_cost(a_C, a_G):>26.4f}")
print("independent unit-variance activations: E[(a_C - a_G)^2] = 2, so J ~ 2/4 = 0.5 at every shape")

# %% [markdown]
# ## The gradient
#
# Only a_G depends on the generated image. Differentiate the square; the 2 cancels half of the 4:
#
#     dJ_content / da_G = (a_G - a_C) / (2 * nH * nW * nC)          shape (1, nH, nW, nC)
#
# This is what the network's backward pass receives at layer l, to carry down to the pixels.
# Check it against finite differences (float64, random activations: no network needed) and
# against PyTorch's autograd.

# %%
_lesson.section("The gradient against finite differences and PyTorch (random activations, float64)")
torch = _lesson.torch_or_note()
for shape in [(1, 4, 5, 3), (1, 7, 3, 8)]:
    a_C, a_G = rng.standard_normal(shape), rng.standard_normal(shape)
    mine = (a_G - a_C) / (2 * np.prod(shape[1:]))
    package = costs.content_cost_backward(a_C, a_G)
    # J is quadratic in a_G, so centred differences have no truncation error at any step: a large
    # step (1e-3) keeps the round-off of J(a + h) - J(a - h) small.
    numeric = eval_numerical_gradient_array(lambda a: np.array(costs.compute_content_cost(a_C, a)), a_G,
                                            np.array(1.0), h=1e-3)
    line = (f"{shape}: rel_error mine vs package {rel_error(mine, package):.1e}, "
            f"package vs finite differences {rel_error(package, numeric):.1e}")
    if torch is not None:
        aCt, aGt = torch_ref.to_torch(a_C), torch_ref.to_torch(a_G, requires_grad=True)
        ((aCt - aGt) ** 2).sum().div(4 * aGt.numel()).backward()
        line += f", vs PyTorch {rel_error(package, torch_ref.to_numpy(aGt.grad)):.1e}"
    print(line, "-> right" if rel_error(package, numeric) < NUMERIC_TOL else "-> WRONG")

# %% [markdown]
# ## The same check from the command line, and what a mistake looks like
#
# `scratchnst gradcheck` runs this check for every cost and layer of the package, and for the
# chain from each cost through the pretrained network to the pixels. `--only content_cost` picks
# one row; `--package DIR` runs the same table on the functions of your own student copy (rows of
# exercises you have not written yet say NOT DONE). Below, the row as it passes, then with a
# planted mistake: the gradient without the 2 that the square brings down, that is
# (a_G - a_C) / (4 nH nW nC). Both witnesses reject it, finite differences and PyTorch, by a
# relative error of 1/3 (half the gradient against the whole: 0.5 / 1.5).

# %%
from scratchnst.gradcheck_cases import run_gradcheck  # noqa: E402

_lesson.section("scratchnst gradcheck --only content_cost")
run_gradcheck(only=["content_cost"], use_torch=torch is not None)

right = costs.content_cost_backward
costs.content_cost_backward = lambda a_C, a_G: right(a_C, a_G) / 2  # the planted mistake: the 2 forgotten
try:
    _lesson.section("The same row with the 2 of the square forgotten")
    status = run_gradcheck(only=["content_cost"], use_torch=torch is not None)
finally:
    costs.content_cost_backward = right
print(f"exit status {status}: the command fails, as it would in CI")

# %% [markdown]
# ## Which layer? Rebuild the photo from noise
#
# Gatys et al.'s experiment: start from noise and change the pixels until the activations at
# layer l match the photo's, with the content cost ALONE. Whatever the layer does not care about
# is left to chance (here: the noise we started from). So the result shows what layer l keeps:
#
# - a shallow layer keeps the pixels: the copy is almost perfect, colours and all;
# - a middle layer keeps shapes, edges and layout; colours and fine texture drift;
# - a deep layer keeps only the objects: where the eyes, the nose, the outlines are.
#
# Style transfer wants the middle ground: enough to keep the scene recognisable, loose enough to
# let the style repaint it. That is why the course takes a middle-to-deep layer for content.
#
# The loop is the whole of style transfer minus the style: forward to layer l, the content cost
# and its gradient there, backward to the pixels, and an optimiser step (L-BFGS here; lesson 8
# compares optimisers). The pixels stay inside 0..255 (box bounds).

# %%
_lesson.section("Rebuilding the photo from noise at three layers")
depths_of = {"vgg19": ("block1_conv2", "block4_conv2", "block5_conv4"), "squeezenet": ("conv1", "fire3", "fire5")}
net = _lesson.load_network(args, layers=depths_of)  # stops here, with the download command, if there are no weights
depths = depths_of[net.name]
photo = _lesson.load(args.content, args.size)  # (H, W, 3) RGB 0..255
x_C = image.preprocess(photo, net.preprocessing)  # (1, H, W, 3)
lo = image.preprocess(np.zeros_like(photo), net.preprocessing).reshape(-1).astype(np.float64)
hi = image.preprocess(np.full_like(photo, 255), net.preprocessing).reshape(-1).astype(np.float64)
# grey plus noise: a start that knows nothing of the photo
start = np.clip(128 + rng.uniform(-32, 32, photo.shape), 0, 255).astype(np.float32)


def reconstruct(layer):
    """Minimise the content cost at `layer` alone, from `start`; returns (picture, history, seconds, evaluations)."""
    a_C = net.forward(x_C, [layer])[layer]

    def cost_and_gradient(v):
        x = v.reshape(x_C.shape).astype(net.dtype)  # the optimiser works in float64, the network in float32
        a_G = net.forward(x, [layer])[layer]
        J = costs.compute_content_cost(a_C, a_G)
        dx = net.backward({layer: costs.content_cost_backward(a_C, a_G)})  # dJ/dx, (1, H, W, 3)
        return J, dx.reshape(-1)

    x0 = image.preprocess(start, net.preprocessing).reshape(-1).astype(np.float64)
    with _lesson.timed() as t:
        result = optim.minimize(cost_and_gradient, x0, "lbfgs", args.iters, bounds=(lo, hi))
    picture = image.deprocess(result.x.reshape(x_C.shape).astype(np.float32), net.preprocessing)
    return picture, result.history, t.seconds, result.n_evals


pictures, histories = [], {}
for depth, layer in zip(("shallow", "middle", "deep"), depths):
    picture, history, seconds, evaluations = reconstruct(layer)
    pictures.append(picture)
    histories[f"{depth}: {layer}"] = history
    pixel_error = np.abs(np.clip(picture, 0, 255) - photo).mean()
    print(f"{depth:>8} {layer:<13} J_content {history[0]:10.4g} -> {history[-1]:<10.4g} "
          f"mean pixel error {pixel_error:5.1f} / 255   "
          f"({len(history) - 1} iterations, {evaluations} evaluations, {seconds:.0f} s)")

labels = ["content", "start: grey + noise"]
labels += [f"{depth}: {layer}" for depth, layer in zip(("shallow", "middle", "deep"), depths)]
_lesson.save(args, "05_content_layers.png", _lesson.montage([photo, start] + pictures, labels, cols=5))

_lesson.plot_relative_costs(args, "05_content_costs.png", histories, "J_content / J_content at the start",
                            "Content cost alone, from noise")

# %% [markdown]
# ## Summary
#
# - J_content = 1/(4 nH nW nC) * sum((a_C - a_G)^2): a mean squared difference of activations,
#   the same scale at every image size and layer; its gradient is (a_G - a_C) / (2 nH nW nC).
# - Both check out against finite differences and PyTorch to round-off.
# - The layer decides what "content" means: shallow copies the pixels, middle keeps shapes and
#   layout, deep keeps only the objects. The pixel error above puts numbers on the picture.
#
# ## Exercises
#
# 1. Run with `--iters 300`. Does the deep reconstruction get closer to the photo, or only to the
#    same activations? (Compare the cost with the pixel error.)
# 2. Start from the photo itself instead of noise: what is J_content, and its gradient?
# 3. Replace the mean (1 / (4 nH nW nC)) by a plain 1/2 * sum, as Gatys et al. write it. Which
#    layer's reconstruction changes, and why does the optimiser not care? (Hint: L-BFGS is
#    invariant to scaling the cost; Adam's steps are not - see lesson 8.)
# 4. Reconstruct with average pooling (`networks.load(..., pooling="avg")`): is the deep
#    reconstruction smoother?
# 5. Use two content layers at once, summing their costs (the backward pass takes a dict with both
#    gradients). What does the mix keep?

# %%
_lesson.done()

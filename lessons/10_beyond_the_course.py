"""Lesson 10: beyond the course: average pooling, total variation, multi-scale, preserved colours.

Run it:   python lessons/10_beyond_the_course.py  (a minute or two; pictures go to lessons/out/)
Makes:    10_variations.png   the same stylisation with each of the four extensions
          10_tv_zoom.png      the centre of the max-pooling result without and with total
                              variation, enlarged
Needs:    pretrained weights.
"""

# %%
import numpy as np

import _lesson
from scratchnst import networks, transfer
from scratchnst.settings import layers_used

args = _lesson.parse_args(__doc__, size=256, iters=80)

# %% [markdown]
# ## Goal
#
# The course stops at the basic algorithm. Four small extensions, all from the papers and tools
# that followed it, change the pictures a lot; scratchnst has them as options of
# `transfer.stylize` (and of `scratchnst stylize`). We run the same stylisation with each, with
# L-BFGS (lesson 8) to converge in few iterations, and compare.
#
# 1. Average pooling (Gatys et al.). The network was trained with max pooling, whose gradient
#    reaches one pixel per window (lesson 3): the painted texture comes out as fine speckle.
#    Average pooling spreads the gradient over every pixel of the window and gives smoother,
#    longer strokes. scratchnst's defaults (`transfer.MODEL_DEFAULTS`) already use it; here we
#    show what max pooling would give.
# 2. Total variation (Mahendran & Vedaldi; CS231n; jcjohnson/neural-style's -tv_weight). A third
#    cost, the mean squared difference between neighbouring pixels,
#
#        J_tv = (sum (x[i+1, j] - x[i, j])^2 + sum (x[i, j+1] - x[i, j])^2) / (number of values)
#
#    added as tv_weight * J_tv, penalises pixel-level noise. Its gradient needs no network:
#    `costs.total_variation_cost_backward`.
# 3. Multi-scale, coarse to fine. Run at half the size first, enlarge the result, and continue at
#    full size. The coarse pass places large strokes cheaply (a quarter of the pixels); the fine
#    pass adds detail. Style features then cover more of the picture.
# 4. Preserved colours (Gatys et al. 2016, "Preserving colour in neural artistic style
#    transfer"). Keep the result's luminance (the brushwork) and put back the photo's colours
#    (the chroma, in YCbCr): the photo painted with the style's strokes but its own palette. It
#    is applied to the result after the optimisation, so its costs are those of the defaults' run.

# %%
_lesson.section("Settings")
model = _lesson.network_name(args) or networks.load(args.weights).name  # stops here if there are no weights
defaults = transfer.MODEL_DEFAULTS[model]
base = dict(model=model, weights=args.weights, size=args.size, optimizer="lbfgs", iters=args.iters, seed=args.seed)
settings = transfer.resolve_settings(args.content, args.style, **base)
print(f"{model}, {args.size} px, L-BFGS {args.iters} iterations; defaults: pool {settings['pool']}, "
      f"tv_weight {settings['tv_weight']:g}, alpha {settings['alpha']:g}, beta {settings['beta']:g}")
# A tv_weight that matters: at this scale of the costs, J_tv (in squared grey levels) times 100
# is a sizeable part of J for the max-pooling result.
tv_weight = 100.0
other_pool = "max" if settings["pool"] == "avg" else "avg"
variations = {
    f"defaults ({settings['pool']} pooling)": {},
    f"{other_pool} pooling": {"pool": other_pool},
    f"{other_pool} pooling + total variation {tv_weight:g}": {"pool": other_pool, "tv_weight": tv_weight},
    "multi-scale: 2 passes": {"scales": 2},
    "preserved colours": {"preserve_colors": True},
}
_lesson.check_size(args, model, layers_used(settings["content_layer"], settings["style_layers"]),
                   scales=max(extra.get("scales", 1) for extra in variations.values()))

# %%
_lesson.section("Five runs")
results = {}
for label, extra in variations.items():
    result = transfer.stylize(args.content, args.style, **{**base, **extra})
    results[label] = result
    last = result.history[-1]
    print(f"{label:>42}: J {last['J']:.4g} (J_content {last['J_content']:.3g}, J_style {last['J_style']:.3g}, "
          f"J_tv {last['J_tv']:.3g}); {result.iterations} iterations, {result.seconds:.0f} s")

# %%
_lesson.section("Pictures")
content = _lesson.load(args.content, args.size)
style = _lesson.load(args.style, args.size)
_lesson.save(args, "10_variations.png", _lesson.montage(
    [content, _lesson.like(style, content)] + [r.image for r in results.values()],
    ["content", "style (centre)"] + list(results), cols=4))

# The total variation's effect is at the scale of pixels: look closely.
plain = results[f"{other_pool} pooling"].image
smooth = results[f"{other_pool} pooling + total variation {tv_weight:g}"].image
H, W = plain.shape[:2]
centre = (slice(H // 3, 2 * H // 3), slice(W // 3, 2 * W // 3))
zoom = lambda a: a[centre].repeat(3, axis=0).repeat(3, axis=1)  # noqa: E731
tv = lambda a: np.mean(np.diff(a, axis=0) ** 2) + np.mean(np.diff(a, axis=1) ** 2)  # noqa: E731
print(f"mean squared neighbour difference, {other_pool} pooling: {tv(plain):.0f} without, {tv(smooth):.0f} with "
      f"total variation; the photo: {tv(content):.0f}")
_lesson.save(args, "10_tv_zoom.png", _lesson.montage(
    [zoom(plain), zoom(smooth)], [f"{other_pool} pooling (centre, 3x)", f"+ total variation {tv_weight:g}"]))

# %% [markdown]
# ## Summary
#
# - Average pooling: the gradient reaches every pixel, and the strokes come out longer and
#   smoother than with max pooling (the network's training pooling).
# - Total variation: one more cost, with a gradient that needs no network, that trades a little
#   style for smoother pixels.
# - Multi-scale: a cheap coarse pass places large structures; the fine pass adds detail.
# - Preserved colours: the brushwork from the result, the colours from the photo.
#
# ## Exercises
#
# 1. Combine them: average pooling, 3 passes and preserved colours, with the mosaic style.
# 2. Find the tv_weight at which the picture starts to blur. How does it depend on --size?
#    (J_tv is a mean, so it should not much.)
# 3. Blend two styles: `transfer.stylize(content, [style_a, style_b], style_blend=[0.7, 0.3])`.
#    Why is blending the costs the same as matching the blend of the Gram matrices (lesson 7,
#    exercise 5)?
# 4. `style_scale=0.5` resizes the style image to half the content's size before computing its
#    Grams: the strokes come out twice as large relative to the picture. Try 0.5 and 2.
# 5. The course's colours are the style's; preserved colours are the photo's. Write the opposite:
#    transfer the style image's colour statistics (mean and standard deviation per channel) to
#    the photo BEFORE stylising, as Gatys et al. 2016 also propose.

# %%
_lesson.done()

"""Lesson 9: the full style transfer, with the course's settings, and snapshots along the way.

Run it:   python lessons/09_style_transfer.py     (a minute or two; pictures go to lessons/out/)
Makes:    09_result.png      the stylised content image
          09_snapshots.png   content, style, and the image at six moments of the optimisation
          09_costs.png       J, alpha*J_content and beta*J_style against the iteration (needs matplotlib)
Needs:    pretrained weights (VGG-19 for the course's network; SqueezeNet 1.1 otherwise).
"""

# %%
import _lesson
from scratchnst import costs, networks, transfer
from scratchnst import weights as weights_io
from scratchnst.settings import layers_used

args = _lesson.parse_args(__doc__, size=320, iters=200)

# %% [markdown]
# ## Goal
#
# Everything together: the network (lesson 4), the content cost (5), the style cost (6), the
# total cost and its gradient to the pixels (7), and an optimiser (8). `transfer.stylize` is the
# one function `scratchnst stylize`, the tests and this lesson all call; here we run it with the
# course's settings and watch the image change.
#
# ## The course's settings, and what this run scales down
#
# The course (TF2 assignment): VGG-19 with Keras weights (max pooling), a 400 x 400 image, content
# layer block5_conv4 (TF1: conv4_2), style layers block1_conv1 ... block5_conv1 at 0.2 each,
# alpha 10, beta 40, start from the content image plus uniform(-0.25, 0.25) noise, Adam with lr
# 0.01 on [0, 1] pixels (TF1: average pooling, lr 2.0 on 0..255 pixels), 2501 steps (TF1: 200).
#
# For VGG-19, scratchnst keeps the cost, the style layers, alpha and beta, the start and the
# optimiser; its defaults (`transfer.MODEL_DEFAULTS`) take the TF1 version's content layer conv4_2
# (= block4_conv2), average pooling and lr 2.0 in grey levels, because these weights expect Caffe
# preprocessing (0..255, minus the means) as in TF1, whose numbers were tuned with it; the TF2
# version feeds [0, 1] pixels to weights that expect 0..255 (see the comment at `MODEL_DEFAULTS`
# in `scratchnst/settings.py`).
#
# By default this lesson scales down the image (--size 320, the size of the shipped photo) and
# the iterations (--iters 200, the TF1 count), and uses SqueezeNet 1.1 when VGG-19's weights are
# absent: a stand-in 10 to 20 times cheaper here, with its own layers, beta and learning rate,
# chosen by looking at results rather than taken from the course. The table printed below says
# exactly what ran. With VGG-19 weights (`scratchnst weights download vgg19`) the lesson runs
# the course's network; each iteration then takes far longer.

# %%
_lesson.section("Settings")
model = _lesson.network_name(args) or networks.load(args.weights).name  # stops here if there are no weights
if model == "squeezenet" and args.network == "auto" and args.weights is None:
    print(f"VGG-19 weights not found: running SqueezeNet 1.1 ({weights_io.download_command('vgg19')} for the "
          "course's network)")
settings = transfer.resolve_settings(args.content, args.style, model=model, weights=args.weights,
                                     size=args.size, optimizer="adam", iters=args.iters,
                                     init="content+noise", seed=args.seed)
_lesson.check_size(args, model, layers_used(settings["content_layer"], settings["style_layers"]))
course = {"model": "vgg19", "size": "400 (x 400)", "content_layer": "block5_conv4 (TF1: conv4_2)",
          "style_layers": "block1_conv1 ... block5_conv1, 0.2 each", "pool": "max (TF1: avg)",
          "alpha": 10, "beta": 40, "optimizer": "adam",
          "lr": "0.01 on [0, 1] = 2.55 grey levels (TF1: 2.0)", "iters": "2501 (TF1: 200)",
          "init": "content+noise", "seed": "-", "weights": "vgg19_weights_tf_dim_ordering_tf_kernels_notop.h5"}
# One row per setting; a value too long for its column goes on to the next line of the row.
weights_course = course.pop("weights")


def lines(items, width):
    """Pack items (str) into lines of at most `width` characters, never splitting an item."""
    out = [""]
    for item in items:
        if out[-1] and len(out[-1]) + 2 + len(item) > width:
            out[-1] += ","
            out.append(item)
        else:
            out[-1] = f"{out[-1]}, {item}" if out[-1] else item
    return out


print(f"  {'setting':<14} {'this run':<38} course")
for key, course_value in course.items():
    value = settings[key]
    if key == "style_layers":
        left = lines([f"{name} {w:g}" for name, w in value], 38)
        right = lines(["block1_conv1 ... block5_conv1", "0.2 each"], 44)
    else:
        left, right = [str(value)], [str(course_value)]
    for n in range(max(len(left), len(right))):
        print(f"  {key if n == 0 else '':<14} {left[n] if n < len(left) else '':<38} "
              f"{right[n] if n < len(right) else ''}".rstrip())
print(f"  weights, this run: {_lesson.shown(settings['weights'])}")
print(f"  weights, course:   {weights_course}")

# %% [markdown]
# ## Run it
#
# The callback sees every iteration: we print a line now and then, and keep snapshots at
# iterations spread roughly geometrically (most of the change happens early).

# %%
_lesson.section("Optimising")
marks = sorted({0, *(max(1, round(args.iters * f)) for f in (0.05, 0.125, 0.25, 0.5)), args.iters})
snapshots = {}
report_every = max(1, args.iters // 10)


def on_iteration(p):
    if p.iteration in marks:
        snapshots[p.iteration] = (p.image(), p.costs["J"])
    if p.iteration % report_every == 0:
        eta = f", about {p.elapsed / p.done * (1 - p.done):.0f} s to go" if p.done > 0 else ""
        print(f"  iteration {p.iteration:>4}/{p.iters}  J {p.costs['J']:.4g}  "
              f"(J_content {p.costs['J_content']:.4g}, J_style {p.costs['J_style']:.4g})  {p.elapsed:5.1f} s{eta}")


result = transfer.stylize(args.content, args.style, callback=on_iteration, **settings)
print(f"{result.iterations} iterations in {result.seconds:.1f} s ({result.seconds_per_iteration:.2f} s each)")

# %%
_lesson.section("Pictures")
_lesson.save(args, "09_result.png", result.image)
content = _lesson.load(args.content, args.size)
style = _lesson.load(args.style, args.size)
tiles = [content, _lesson.like(style, content)] + [snapshots[i][0] for i in marks if i in snapshots]
labels = ["content", "style (centre)"] + [f"iteration {i}: J {snapshots[i][1]:.3g}" for i in marks if i in snapshots]
_lesson.save(args, "09_snapshots.png", _lesson.montage(tiles, labels, cols=4))

plt = _lesson.pyplot("the plot of the costs against the iteration")
if plt is not None:
    it = [h["iteration"] for h in result.history]
    fig, ax = plt.subplots(figsize=(6, 4))
    ax.semilogy(it, [h["J"] for h in result.history], label="J (total)")
    ax.semilogy(it, [settings["alpha"] * h["J_content"] for h in result.history], label="alpha * J_content")
    ax.semilogy(it, [settings["beta"] * h["J_style"] for h in result.history], label="beta * J_style")
    ax.set_xlabel("Adam iteration")
    ax.set_ylabel("cost")
    ax.set_title(f"{settings['model']}, {result.image.shape[0]}x{result.image.shape[1]} px")
    ax.grid(True, which="both", alpha=0.3)
    ax.legend()
    _lesson.save_plot(args, "09_costs.png", fig)

# %% [markdown]
# ## What the numbers say
#
# At the start the content cost is small (the image IS the photo, plus noise) and the style cost
# is large. The optimiser trades one for the other: the content cost rises as texture is painted
# over the photo, the style cost falls, and the total falls. Where they settle is set by
# alpha : beta - lesson 10 and the exercises turn that knob.

# %%
first, last = result.history[0], result.history[-1]
print(f"alpha*J_content: {settings['alpha'] * first['J_content']:.4g} -> {settings['alpha'] * last['J_content']:.4g};  "
      f"beta*J_style: {settings['beta'] * first['J_style']:.4g} -> {settings['beta'] * last['J_style']:.4g};  "
      f"total: {first['J']:.4g} -> {last['J']:.4g}")
print(f"check: total_cost(J_content, J_style) of the last image = "
      f"{costs.total_cost(last['J_content'], last['J_style'], settings['alpha'], settings['beta']):.6g}")

# %% [markdown]
# ## Summary
#
# - `transfer.stylize` = load the network, preprocess content and style, start from content +
#   noise, and let an optimiser lower alpha J_content + beta J_style, with the gradient carried by
#   hand from the cost layers to the pixels; then deprocess.
# - The course's settings: 5 style layers at 0.2, alpha 10, beta 40, Adam from content + noise.
#   By default this lesson runs fewer iterations on a smaller image, and SqueezeNet when VGG-19's
#   weights are absent; the numbers printed above are what it actually ran.
# - The same run from the command line: `scratchnst stylize CONTENT STYLE -o out.png` with the
#   options printed in "Settings".
#
# ## Exercises
#
# 1. Run with `--iters 600`. Does the picture still change after 200 iterations? Compare the
#    snapshots with the cost curve.
# 2. Divide beta by 10, then multiply it by 10:
#    `transfer.stylize(args.content, args.style, **{**settings, "beta": settings["beta"] / 10})`
#    and the same with `* 10`. Describe the three results (`_lesson.save(args, "09_beta.png",
#    result.image)` writes one).
# 3. Try the mosaic style (`--style lessons/images/mosaic.jpg`) and your own photo (`--content`).
# 4. Start from noise (`{**settings, "init": "noise"}`) instead of content + noise. How many more
#    iterations does the photo need to appear, and does it ever fully?
# 5. Change the content layer (`{**settings, "content_layer": ...}`) to a shallower one (VGG-19:
#    block2_conv2; SqueezeNet: conv1) and to a deeper one (block5_conv2; fire5). Relate what you
#    see to lesson 5's reconstructions.

# %%
_lesson.done()

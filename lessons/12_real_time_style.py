"""Lesson 12: a real-time style network, trained here, side by side with the optimised image.

Run it:   python lessons/12_real_time_style.py   (about two minutes; pictures go to lessons/out/)
Makes:    12_side_by_side.png   photos the network never saw in training: the photo, the network's
                                output (one forward pass), the optimised image (L-BFGS), with costs
          12_training_photos.png  the network on its own training photos
          12_kernels.png        the first layer's 5x5 kernels before and after training, and the change
          12_training.png       the training cost against the step (needs matplotlib)
Needs:    pretrained weights. --trained FILE uses a network `scratchnst train` made instead of
          training one here (then the pictures show that network at its full quality).
Judge:    README.md's measure of a trained network (the photos from
          lessons/images/make_benchmark_photos.py, 256 px, 100 L-BFGS iterations):
          python lessons/12_real_time_style.py --trained net.h5 --style STYLE --size 256 \
              --optimise-iters 100 --held-out ../shared/images/tubingen.jpg DIR/held_out/camera.png
"""

# %%
import argparse
import time
from pathlib import Path

import numpy as np

import _lesson
from scratchnst import image, training, transfer
from scratchnst import transformer_net as tn
from scratchnst.settings import MODEL_DEFAULTS

PHOTOS = _lesson.IMAGES / "photos"  # three photos; the cat (--content) is not among them


def _iterations(text):
    """--optimise-iters: a whole number >= 1, told at once (not after the training)."""
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"must be a whole number, got {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1, got {value}")
    return value


def _options(parser):
    parser.add_argument("--trained", type=_lesson.path_option, default=None,
                        help="a network trained by `scratchnst train` (default: train one here, briefly)")
    parser.add_argument("--optimise-iters", type=_iterations, default=50,
                        help="L-BFGS iterations of the optimised image it is compared with")
    parser.add_argument("--held-out", type=_lesson.path_option, nargs="+", default=None, metavar="PHOTO",
                        help="more photos the network never trained on, judged beside --content "
                        "(default: --content only)")


args = _lesson.parse_args(__doc__, size=128, iters=300, extra=_options)

# %% [markdown]
# ## Goal
#
# Lesson 11 trained the transformer network on the content cost alone, and it learnt to copy
# photos. Add the style cost and it learns to PAINT them: the network is trained on many crops of
# a few photos (`lessons/images/photos/`, three of them here; `scratchnst train` takes any folder,
# COCO for instance) to lower, on average,
#
#     J(W) = alpha J_content(p, f_W(p)) + beta J_style(S, f_W(p))
#
# with the course's costs at the same layers and weights as `scratchnst stylize`. Then we ask:
#
# 1. how good is one forward pass, against the optimisation of the pixels (lessons 8 and 9), on a
#    photo the network has never seen? The same cost judges both;
# 2. how long does each take?
# 3. what has the network learnt? Its first layer's kernels, before and after.
#
# A real run (`scratchnst train STYLE PHOTOS -o net.h5`: photos at 256 px, 10000 steps, each on a
# 128 px crop of one of them (5000 steps of two with --threads 2), the last twelfth on whole
# 256 px squares, so that the network ends on photos as it will paint them) takes about a quarter
# of an hour on one core of a 2-core laptop (at most 19 minutes: on a slower machine it times a few
# steps first and trains as many as fit, `--minutes`); here the lesson trains the same network for a
# minute or two, at --size, for --iters steps of two crops: a sketch of what the full run does. Give
# `--trained net.h5` to see a fully trained network instead.

# %%
trained = tn.load(args.trained) if args.trained is not None else None
if trained is not None and args.network == "auto" and args.weights is None:   # judged as it was trained
    args.network = trained[1].get("model", "auto")
net = _lesson.load_network(args, pooling="default", layers=_lesson.stylize_layers())
defaults = MODEL_DEFAULTS[net.name]
style = _lesson.load(args.style, args.size)
size = max(tn.MIN_SIZE, args.size - args.size % tn.SIZE_MULTIPLE)

if args.trained is not None:
    _lesson.section(f"The trained network {args.trained}")
    params, meta = trained
    history = None
    print(", ".join(f"{key} {meta[key]}" for key in sorted(meta)))
    if "style" in meta and Path(meta["style"]).name != args.style.name:  # judged by another style's cost
        print(f"note: it was trained on the style {meta['style']}, and is judged here against --style "
              f"{args.style}: give --style {meta['style']} for the cost it was trained on")
    if meta.get("model", net.name) != net.name:
        print(f"note: its loss network was {meta['model']}, and it is judged here through {net.name}: "
              f"give --network {meta['model']} for the cost it was trained on")
else:
    batch = 2   # fixed, so that the sketch is the same on every machine (`train`'s default: one per core)
    _lesson.section(f"Training at {size} px, {args.iters} steps of {batch} crops, on "
                    f"{len(training.list_photos(PHOTOS))} photos")

    def report(progress):
        if progress.iteration == 1 or progress.iteration % 25 == 0:
            print(f"  step {progress.iteration:4d}/{progress.iters}: J {progress.costs['J']:10.1f}   "
                  f"{progress.seconds_per_step:.2f} s/step, {progress.eta:.0f} s left")

    result = training.train(args.style, PHOTOS, model=net.name, weights=net.path, size=size, iters=args.iters,
                            batch=batch, seed=args.seed, callback=report)
    params, meta, history = result.params, result.meta, result.history
    print(f"trained in {result.seconds:.0f} s")
# the network before its first step: training draws it first from np.random.default_rng(seed)
untrained = tn.init_params(np.random.default_rng(int(meta.get("seed", args.seed))), *tn.architecture_of(params))

# %% [markdown]
# ## On photos it never saw: one forward pass against the optimisation
#
# The lesson's content photo (the cat) is not among the training photos. For each held-out photo:
# its course cost as it is (the starting point of any stylisation), the network's output's cost,
# and the cost of the image `transfer.stylize` optimises for it with L-BFGS from the photo plus
# noise. All three are measured by `transfer.make_cost_function` with the layers and weights the
# network was trained with (read from it), and the optimisation lowers that same cost. Training
# weighs the content 4 times more than `scratchnst stylize` does (alpha 40 instead of 10 with
# SqueezeNet): the optimisation starts from the photo and keeps its subject under the brushwork,
# but a network starts from nothing, and with stylize's weights it learnt to paint the style's
# strokes over the whole frame and drop the subject (`training.TRAIN_ALPHA_FACTOR` says more).

# %%
_lesson.section("Held-out photos: the network against L-BFGS, judged by the same cost")
alpha, beta = float(meta.get("alpha", defaults.alpha)), float(meta.get("beta", defaults.beta))  # the training's
print(f"cost: alpha {alpha:g} x J_content ({defaults.content_layer}) + beta {beta:g} x J_style")
held_out = [args.content, *(args.held_out or ())]
rows, tiles, labels = [], [], []
for path in held_out:
    photo = _lesson.load(path, args.size)
    x_photo = image.preprocess(photo, net.preprocessing)
    x_style = image.preprocess(style, net.preprocessing)
    cost = transfer.make_cost_function(net, x_photo, [x_style], defaults.content_layer, defaults.style_layers,
                                       [1.0], alpha, beta, 0.0)
    start = time.perf_counter()
    painted = training.stylize_photo(params, meta, photo)
    forward_seconds = time.perf_counter() - start
    start = time.perf_counter()
    optimised = transfer.stylize(photo, style, model=net.name, weights=net.path, size=max(photo.shape[:2]),
                                 iters=args.optimise_iters, seed=args.seed, alpha=alpha, beta=beta).image
    optimise_seconds = time.perf_counter() - start
    judged = [cost(image.preprocess(p, net.preprocessing)) for p in (photo, painted, optimised)]
    (J_photo, _, _), (J_net, _, net_parts), (J_opt, _, opt_parts) = judged   # (J, dJ/dx, parts): no gradient here
    rows.append((Path(path).name, J_photo, J_net, forward_seconds, J_opt, optimise_seconds, net_parts, opt_parts))
    tiles += [photo, painted, optimised]
    labels += [f"{Path(path).name}: J {J_photo:.3g}", f"network: J {J_net:.3g}, {forward_seconds:.2f} s",
               f"L-BFGS x{args.optimise_iters}: J {J_opt:.3g}, {optimise_seconds:.1f} s"]
print(f"{'photo':>12}  {'J photo':>10}  {'J network':>10}  {'seconds':>8}  {'J L-BFGS':>10}  {'seconds':>8}")
for name, J_photo, J_net, t_net, J_opt, t_opt, net_parts, opt_parts in rows:
    print(f"{name:>12}  {J_photo:10.4g}  {J_net:10.4g}  {t_net:8.2f}  {J_opt:10.4g}  {t_opt:8.1f}")
    removes = (f"removes {1 - J_net / J_photo:.0%} of the photo's cost" if J_net <= J_photo else
               f"costs {J_net / J_photo:.1f} times what the photo does (too briefly trained)")
    print(f"{'':>12}  the network {removes} in one pass; "
          f"its cost is {J_net / J_opt:.2f} times the optimised image's")
    # where the gap is: the content part, the style part, or both (each weighted as in J)
    print(f"{'':>12}  alpha J_content {alpha * net_parts['J_content']:.3g} against {alpha * opt_parts['J_content']:.3g}, "
          f"beta J_style {beta * net_parts['J_style']:.3g} against {beta * opt_parts['J_style']:.3g}")
_lesson.save(args, "12_side_by_side.png", _lesson.montage(tiles, labels, cols=3))

# %% [markdown]
# ## On its training photos
#
# The same network on the photos it trained on (whole photos; it trained on crops). A network
# that had only memorised its crops would paint these well and the cat badly; one that has learnt
# a way of painting treats them alike.

# %%
training_tiles, training_labels = [], []
for path in training.list_photos(PHOTOS):
    photo = _lesson.load(path, args.size)
    training_tiles += [photo, training.stylize_photo(params, meta, photo)]
    training_labels += [path.name, "network"]
_lesson.save(args, "12_training_photos.png", _lesson.montage(training_tiles, training_labels, cols=4))

# %% [markdown]
# ## What the first layer learnt
#
# The first convolution has 5x5 kernels on the three colour channels and the noise plane (the
# paper's are 9x9; trained side by side, 5x5 learnt faster and cost less a step: `transformer_net`
# gives the numbers). Below are their colour channels only: each kernel is a small colour pattern
# the layer looks for. They start as noise, and a short training
# moves them little (Adam's steps are about lr = 2e-3 each, the kernels' entries about 0.1): the
# third row shows the CHANGE, each kernel's own scale stretched. What training added is smooth:
# colour blobs and soft gradients across the window, the low frequencies of the style's colours,
# not more noise.

# %%
def kernels_picture(kernel):
    """(K, K, 3 + z, C) kernel -> a row of C enlarged RGB patches of its colour channels (BGR flipped), each
    stretched (the z noise planes' weights are left out)."""
    patches, zoom = [], max(6, 54 // kernel.shape[0])  # about 54 px a patch, whatever K
    for c in range(kernel.shape[3]):
        k = kernel[:, :, 2::-1, c]
        k = (k - k.min()) / max(1e-12, float(k.max() - k.min())) * 255
        patches.append(np.kron(k, np.ones((zoom, zoom, 1))))
    return np.concatenate([np.pad(p, ((2, 2), (2, 2), (0, 0)), constant_values=255) for p in patches], axis=1)


_lesson.save(args, "12_kernels.png", _lesson.montage(
    [kernels_picture(untrained["conv1/kernel"]), kernels_picture(params["conv1/kernel"]),
     kernels_picture(params["conv1/kernel"] - untrained["conv1/kernel"])],
    ["conv1 kernels, untrained", "conv1 kernels, trained", "trained - untrained"], cols=1))
if history:
    _lesson.plot_relative_costs(args, "12_training.png",
                                {f"J (batch of {meta['batch']})": [h["J"] for h in history]},
                                "J / J at step 1", "Training the style network", xlabel="Adam step")

# %% [markdown]
# ## Summary
#
# - A style network paints a photo in one forward pass, a fraction of a second, where the
#   optimisation of the pixels takes tens of seconds; on photos it never saw it removes most of
#   the photo's cost, but the optimised image, made for that one photo, stays lower: the network
#   has to serve every photo with one set of weights, and it trained for minutes, not hours.
# - It is judged, and trained, by the course's cost through the same loss network: nothing but
#   the place of the optimisation changed.
# - Its first layer learns colour blobs and edges, as image networks do, in the style's colours.
#
# ## Exercises
#
# 1. Train with `scratchnst train lessons/images/swirls.jpg lessons/images/photos -o swirls.h5`
#    (at most 19 minutes) and run this lesson with `--trained swirls.h5`. How far is the cost now
#    from the optimised image's?
# 2. Stylise a 512 px photo with `scratchnst apply swirls.h5 photo.jpg -o out.png`: the network
#    trained on photos at 256 px paints strokes of the same size in pixels, so relatively finer ones.
# 3. Train on a single photo. Does the network still paint the cat well?
# 4. Double the style weight beta: train with `scratchnst train ... --beta 8` (SqueezeNet's beta is 4)
#    and run this lesson with `--trained` on the result. Where does the network's output move? (The
#    lesson judges each network by the cost its file records it was trained with.)

# %%
_lesson.done()

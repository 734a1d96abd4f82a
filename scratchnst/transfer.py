"""Neural style transfer: `stylize`, the loop that the command line, the lessons and the tests all call.

The idea (Gatys, Ecker & Bethge 2015; the deep-learning course, Week 4): start from an image G
(the content photo plus noise) and change its pixels to lower

    J(G) = alpha * J_content(C, G) + beta * J_style(S, G) + tv_weight * J_tv(G)

where J_content compares activations of one deep layer with the content image C's (where things
are) and J_style compares Gram matrices of several layers with the style image S's (which
textures occur, wherever they are). The network's weights stay fixed; only the pixels move:
costs.py gives dJ/da at each layer, Network.backward carries those to dJ/dx, and an optimiser
(optim.py) steps the pixels.

    result = stylize("tubingen.jpg", "starry_night.jpg", size=320)
    image.save_image("out.png", result.image)

The optimisation variable is the preprocessed image x (1, H, W, 3) (for the Caffe weights: BGR
minus the means), flattened and in float64 for the optimiser, cast to the network's float32 for
each evaluation. Box bounds keep its pixels inside 0..255: lo = preprocess(black image),
hi = preprocess(white image) (preprocessing is a per-channel increasing affine map).
"""

import json
import os
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import numpy as np
from PIL import Image

from scratchnst import image as image_io
from scratchnst import networks, optim
from scratchnst import weights as weights_io
from scratchnst.costs import (
    COURSE_STYLE_LAYERS,
    compute_content_cost,
    compute_total_variation_cost,
    content_cost_backward,
    layer_style_cost_from_target,
    style_target,
    total_cost,
    total_variation_cost_backward,
)
from scratchnst.errors import UserError


# ---------------------------------------------------------------------------------- defaults
@dataclass(frozen=True)
class ModelDefaults:
    """The settings that depend on the network: its layers and the weights that balance them.

    Attributes:
        content_layer: layer of the content cost.
        style_layers: ((layer, weight lambda[l]), ...) of the style cost.
        alpha, beta: weights of the content and style cost in J.
        tv_weight: weight of the total variation cost.
        pool: "max" or "avg" pooling.
        lr: Adam's learning rate, in pixel units (0..255 scale).
    """

    content_layer: str
    style_layers: tuple
    alpha: float
    beta: float
    tv_weight: float
    pool: str
    lr: float


MODEL_DEFAULTS = {
    # SqueezeNet 1.1, chosen by running tubingen.jpg + starry_night.jpg at 320 px (100 L-BFGS
    # iterations) and looking at the pictures:
    # - pool "avg": with max pooling the brushwork came out as fine speckles, with average
    #   pooling as Van Gogh's long curved strokes and swirls in the sky (Gatys et al.'s
    #   observation for VGG, that average pooling gives smoother gradients, holds here too);
    # - style: conv1, fire2, fire3, fire4, fire5, 0.2 each, the course's recipe of one layer per
    #   stage of the network (1/2, 1/4, 1/4, 1/8, 1/8 of the image): low layers carry colours
    #   and fine texture, higher ones larger strokes. The three lowest layers alone gave shorter strokes and
    #   fewer swirls in the sky; adding fire7 (1/16) changed little for its cost;
    # - content: fire3, the last layer before the second pool. fire2 kept a little more of the
    #   photo's fine texture, fire5 a little less; all gave nearly the same picture, because
    #   the style cost drives most of the change;
    # - alpha = 10 as in the course, beta = 4: with the course's beta = 40 the style cost so
    #   outweighed the content cost that the houses dissolved into strokes within 100
    #   iterations; with beta = 4 windows and roofs stay while the sky swirls;
    # - tv_weight 0: average pooling left no pixel noise to smooth (with max pooling, weights up
    #   to 50 changed nothing visible either);
    # - Adam lr = 10 (jcjohnson/neural-style's default): in 100 steps lr = 2 (the TF1 course's)
    #   was still removing the starting noise, lr = 10 came close to L-BFGS's picture.
    "squeezenet": ModelDefaults(
        content_layer="fire3",
        style_layers=(("conv1", 0.2), ("fire2", 0.2), ("fire3", 0.2), ("fire4", 0.2), ("fire5", 0.2)),
        alpha=10.0,
        beta=4.0,
        tv_weight=0.0,
        pool="avg",
        lr=10.0,
    ),
    # VGG-19: the course's layers and weights. Style: block1_conv1 ... block5_conv1, 0.2 each
    # (both versions of the course, and Gatys et al.). Content: block4_conv2, the older (TF1)
    # course's conv4_2 and Gatys et al.'s layer, rather than the newer course's block5_conv4:
    # scratchnst feeds the weights the 0..255 mean-subtracted pixels they were trained on, as
    # the TF1 course did (whose alpha = 10, beta = 40, average pooling and Adam lr = 2.0 were
    # chosen with conv4_2); block5_conv4 sits behind four pools (1/16 of the resolution) and
    # keeps less of the photo's layout. (The real VGG-19 weights cannot be fetched on the
    # machines these defaults were chosen on: they are the course's, not tuned by eye.)
    "vgg19": ModelDefaults(
        content_layer="block4_conv2",
        style_layers=COURSE_STYLE_LAYERS,
        alpha=10.0,
        beta=40.0,
        tv_weight=0.0,
        pool="avg",
        lr=2.0,
    ),
}

OPTIMIZERS = optim.METHODS
INITS = ("content+noise", "content", "noise")  # or the path of an image file
# The course's (TF2) noise: uniform(-0.25, 0.25) on pixels in [0, 1], i.e. +-63.75 on 0..255.
COURSE_NOISE = 0.25 * 255


# ---------------------------------------------------------------------------------- settings
def _style_layer_list(style_layers):
    """[(name, weight), ...] from pairs or bare names (bare names share the weight 1/n)."""
    if isinstance(style_layers, str):
        style_layers = [style_layers]
    items = list(style_layers)
    if not items:
        raise UserError("give at least one style layer")
    out = []
    for item in items:
        if isinstance(item, str):
            out.append((item, 1.0 / len(items)))
        else:
            name, weight = item
            out.append((str(name), float(weight)))
    return out


def resolve_settings(
    content=None,
    style=None,
    *,
    model="squeezenet",
    weights=None,
    size=320,
    content_layer=None,
    style_layers=None,
    alpha=None,
    beta=None,
    tv_weight=None,
    optimizer="lbfgs",
    iters=100,
    lr=None,
    init="content+noise",
    seed=0,
    pool=None,
    preserve_colors=False,
    style_blend=None,
    style_scale=1.0,
    scales=1,
):
    """Fill in the model's defaults and check every setting; what `stylize` will run with.

    Args:
        content, style: as for `stylize` (used only to count the style images and check that
            files exist); may be None to resolve the options alone.
        The other arguments: see `stylize`.

    Returns:
        dict of `stylize`'s keyword arguments, every one resolved: layer names as in the weights
        file, style_layers a list of [name, weight], style_blend a list summing to 1, numbers
        as Python floats, weights the path of the file that will be read. Resolving it again
        gives it back unchanged, so `stylize(content, style, **resolve_settings(...))` runs
        exactly what was printed.

    Raises:
        UserError: anything the user can fix (unknown model, layer or optimizer, weights file
            not found, a missing image, a blend weight per style image, sizes too small, ...).
    """
    if model not in MODEL_DEFAULTS:
        raise UserError(f"unknown model {model!r}: choose one of {', '.join(MODEL_DEFAULTS)}")
    defaults = MODEL_DEFAULTS[model]
    arch = networks.ARCHITECTURES[model]
    weights_path = weights_io.find_weights(model, explicit=weights)

    content_layer = arch.resolve(content_layer or defaults.content_layer)
    style_layers = [[arch.resolve(name), w] for name, w in _style_layer_list(style_layers or defaults.style_layers)]
    if any(w < 0 for _, w in style_layers) or not any(w > 0 for _, w in style_layers):
        raise UserError("style layer weights must be >= 0, and at least one > 0")

    if optimizer not in OPTIMIZERS:
        raise UserError(f"unknown optimizer {optimizer!r}: choose one of {', '.join(OPTIMIZERS)}")
    if optimizer == "lbfgs" and lr is not None:
        raise UserError("--lr is Adam's learning rate; L-BFGS's line search chooses its own steps (drop --lr)")
    if optimizer == "adam":
        lr = float(defaults.lr if lr is None else lr)
        if not lr > 0:
            raise UserError(f"the learning rate must be > 0, got {lr}")
    pool = pool or defaults.pool
    if pool not in networks.POOLINGS:
        raise UserError(f"unknown pooling {pool!r}: choose one of {', '.join(networks.POOLINGS)}")
    if isinstance(init, str) and init not in INITS and not Path(init).is_file():
        raise UserError(f"--init {init}: not one of {', '.join(INITS)} and no such image file")

    styles = _as_list(style)
    n_styles = len(styles) if style is not None else len(style_blend or [1])
    if style_blend is None:
        style_blend = [1.0] * n_styles
    style_blend = [float(w) for w in style_blend]
    if len(style_blend) != n_styles:
        raise UserError(f"--style-blend has {len(style_blend)} weights for {n_styles} style images; give one per image")
    if any(w < 0 for w in style_blend) or sum(style_blend) <= 0:
        raise UserError("style blend weights must be >= 0 and not all 0")
    total = sum(style_blend)
    if total != 1.0:  # the blend is a weighted average; leave a normalised one bit for bit alone
        style_blend = [w / total for w in style_blend]

    for source in ([content] if content is not None else []) + styles:
        if isinstance(source, (str, os.PathLike)) and not Path(source).is_file():
            raise UserError(f"{source}: no such image file")

    numbers = {"alpha": alpha, "beta": beta, "tv_weight": tv_weight}
    numbers = {k: float(getattr(defaults, k) if v is None else v) for k, v in numbers.items()}
    if any(v < 0 for v in numbers.values()):
        raise UserError("alpha, beta and tv weight must be >= 0")
    if int(iters) < 1 or int(scales) < 1:
        raise UserError("--iters and --scales must be at least 1")
    if not float(style_scale) > 0:
        raise UserError(f"--style-scale must be > 0, got {style_scale}")

    return dict(
        model=model, weights=str(weights_path), size=int(size), content_layer=content_layer,
        style_layers=style_layers, **numbers, optimizer=optimizer, iters=int(iters), lr=lr,
        init=init, seed=int(seed), pool=pool,
        preserve_colors=bool(preserve_colors), style_blend=style_blend, style_scale=float(style_scale),
        scales=int(scales),
    )


def scale_sizes(size, scales):
    """Long sides of the coarse-to-fine passes: size / 2**(scales - 1), ..., size / 2, size."""
    return [max(1, round(size / 2 ** (scales - 1 - k))) for k in range(scales)]


def _as_list(style):
    if style is None:
        return []
    if isinstance(style, (list, tuple)):
        return list(style)
    return [style]


# ------------------------------------------------------------------------------- the costs
def make_cost_function(network, content_x, style_xs, content_layer, style_layers, style_blend,
                       alpha, beta, tv_weight):
    """The total cost of a generated image and its gradient with respect to the pixels.

    Args:
        network: a networks.Network (its dtype is the dtype of everything below).
        content_x: (1, H_C, W_C, 3) preprocessed content image.
        style_xs: list of (1, H_S, W_S, 3) preprocessed style images (any sizes).
        content_layer: layer of the content cost.
        style_layers: [(layer, lambda[l]), ...] of the style cost.
        style_blend: one weight per style image, summing to 1.
        alpha, beta, tv_weight: the weights of the three costs.

    Returns:
        cost(x) -> (J, dJ/dx, parts): x (1, H, W, 3) preprocessed (the content's size), J a
        float, dJ/dx (1, H, W, 3) in the network's dtype, parts = {"J", "J_content", "J_style",
        "J_tv"} as floats.

    Formula:
        J = alpha * J_content(C, G) + beta * J_style(S, G) + tv_weight * J_tv(G)
        dJ/dx = network.backward({content_layer: alpha dJ_content/da_G,
                                  style layer l: beta lambda[l] dJ_style_layer/da_G[l]})
                + tv_weight dJ_tv/dx
    with the course's costs (costs.py). The targets are computed once, here: a_C, and per style
    layer the style image's Gram per position, G_S / M_S (costs.style_target); per call only G
    goes through the network. Several style images are blended by averaging their targets with
    the blend weights (as jcjohnson/neural-style does): J_style then measures the distance to
    the blended Gram. Its gradient is that of sum_i w_i J_style(S_i, G), which differs from it
    by a constant only (for weights summing to 1, sum_i w_i |G_i - G|^2 = |G_avg - G|^2 + const).
    """
    style_names = [name for name, _ in style_layers]
    wanted = list(dict.fromkeys([content_layer] + style_names))  # each layer once, in order
    a_C = network.forward(content_x, [content_layer])[content_layer]
    targets = {name: 0.0 for name in style_names}
    for w, s in zip(style_blend, style_xs):
        a_S = network.forward(s, style_names)
        for name in targets:
            targets[name] = targets[name] + w * style_target(a_S[name])
    dtype = network.dtype

    def cost(x):
        a_G = network.forward(x, wanted)
        J_content = compute_content_cost(a_C, a_G[content_layer])
        grads = {content_layer: alpha * content_cost_backward(a_C, a_G[content_layer])}
        J_style = 0.0
        for name, lam in style_layers:
            J_layer, da = layer_style_cost_from_target(targets[name], a_G[name])
            J_style += lam * J_layer
            da = (beta * lam) * da
            grads[name] = grads[name] + da if name in grads else da
        J_tv = compute_total_variation_cost(x) if tv_weight else 0.0
        J = total_cost(J_content, J_style, alpha, beta) + tv_weight * J_tv

        dx = network.backward({name: g.astype(dtype, copy=False) for name, g in grads.items()})
        if tv_weight:
            dx = dx + tv_weight * total_variation_cost_backward(x)
        parts = {"J": float(J), "J_content": J_content, "J_style": J_style, "J_tv": J_tv}
        return float(J), dx.astype(dtype, copy=False), parts

    return cost


# ------------------------------------------------------------------------------- colours
# ITU-R BT.601 full range, as in JPEG: rows give Y, Cb, Cr from R, G, B. (JPEG adds 128 to Cb and
# Cr; a constant that cancels on the way back, so it is left out.)
_RGB_TO_YCBCR = np.array([
    [0.299, 0.587, 0.114],
    [-0.168736, -0.331264, 0.5],
    [0.5, -0.418688, -0.081312],
])
_YCBCR_TO_RGB = np.linalg.inv(_RGB_TO_YCBCR)


def preserve_content_colors(stylized, content):
    """Keep the stylised image's luminance and the content image's colours (luminance transfer).

    Args:
        stylized: (H, W, 3) RGB, 0..255.
        content: (H, W, 3) RGB, 0..255, the same size.

    Returns:
        (H, W, 3) RGB, stylized's dtype, clipped to 0..255:
            Y from stylized, Cb and Cr from content (YCbCr of BT.601), back to RGB.
    Style transfer paints both the brushwork (mostly in the luminance) and the palette (in the
    chroma); swapping the chroma back keeps the strokes and the photo's colours, as
    jcjohnson/neural-style's -original_colors does (Gatys et al. 2016, "Preserving colour in NST").
    """
    if stylized.shape != content.shape:
        raise ValueError(f"stylized and content must have the same shape, got {stylized.shape} and {content.shape}")
    luma = stylized.astype(np.float64) @ _RGB_TO_YCBCR[0]  # (H, W)
    chroma = content.astype(np.float64) @ _RGB_TO_YCBCR[1:].T  # (H, W, 2)
    ycc = np.concatenate([luma[..., None], chroma], axis=-1)  # (H, W, 3)
    return np.clip(ycc @ _YCBCR_TO_RGB.T, 0, 255).astype(stylized.dtype)


# ------------------------------------------------------------------------------- stylize
@dataclass
class Progress:
    """What a `stylize` callback sees: each pass's starting point, then every iteration.

    Attributes:
        scale, scales: the pass (1-based) of the coarse-to-fine run and how many there are.
        shape: (H, W) of this pass's image.
        iteration, iters: 0 for the pass's starting point, then 1, 2, ... up to iters.
        step, total_steps: iterations done over all passes, and the total planned.
        done: fraction of the planned work done (iterations weighted by pixels), 0..1.
        elapsed: seconds since the first pass started.
        costs: {"J", "J_content", "J_style", "J_tv"} of the current image.
    """

    scale: int
    scales: int
    shape: tuple
    iteration: int
    iters: int
    step: int
    total_steps: int
    done: float
    elapsed: float
    costs: dict
    render: Callable = field(repr=False)

    def image(self):
        """The current image, (H, W, 3) RGB float32 0..255, colours preserved if asked for."""
        return self.render()


@dataclass
class StylizeResult:
    """What `stylize` returns.

    Attributes:
        image: (H, W, 3) float32 RGB, 0..255: the stylised content image.
        history: one dict per iteration, each pass's starting point included:
            {"scale", "iteration", "J", "J_content", "J_style", "J_tv", "seconds"}.
        settings: the resolved settings (see `resolve_settings`).
        seconds: time spent in the passes (loading the network and images excluded).
        iterations: iterations done, all passes.
        evaluations: cost and gradient evaluations, all passes (L-BFGS's line search may take
            more than one per iteration).
        seconds_per_iteration: of the last (full-size) pass.
    """

    image: np.ndarray
    history: list
    settings: dict
    seconds: float
    iterations: int
    evaluations: int
    seconds_per_iteration: float


def stylize(content, style, *, callback=None, **options):
    """Paint the content image in the style of the style image(s).

    Args:
        content: path of the content image, or an (H, W, 3) RGB array 0..255.
        style: path or array of the style image, or a list of them (blended).
        callback: None or function(Progress), called at each pass's start and every iteration.
        **options (defaults in brackets; "model's" = MODEL_DEFAULTS[model]):
            model ["squeezenet"]: "squeezenet" or "vgg19".
            weights [found by weights.find_weights]: path of the weights file.
            size [320]: long side of the result in pixels.
            content_layer [model's]: layer of the content cost.
            style_layers [model's]: [(layer, weight), ...] or layer names (equal weights).
            alpha, beta, tv_weight [model's]: weights of the content, style and total variation costs.
            optimizer ["lbfgs"]: "lbfgs" or "adam".
            iters [100]: iterations per pass.
            lr [model's, Adam only]: Adam's learning rate in pixel units.
            init ["content+noise"]: "content+noise" (the course: content + uniform(-63.75, 63.75),
                clipped), "content", "noise" (uniform 0..255), or the path of an image.
            seed [0]: seed of the noise. The same seed gives a bit-identical image on the same
                machine: nothing runs in parallel threads but BLAS, whose products are
                reproducible for a given library and thread count (OpenBLAS splits a product
                differently, and so rounds differently, with another OPENBLAS_NUM_THREADS).
            pool [model's]: "max" (as the network was trained) or "avg" pooling.
            preserve_colors [False]: keep the content's colours (see `preserve_content_colors`).
            style_blend [equal]: one weight per style image.
            style_scale [1.0]: style images are resized to style_scale * size on their long side.
            scales [1]: coarse-to-fine passes; pass k works at size / 2**(scales - k) and starts
                from the previous pass's result, enlarged.

    Returns:
        StylizeResult.

    Raises:
        UserError: see `resolve_settings`; also unreadable images and images too small for the
            network's layers.
    """
    s = resolve_settings(content, style, **options)
    network = networks.load(s["model"], weights=s["weights"], pooling=s["pool"], dtype=np.float32)
    content_full = _load(content, "content")
    styles_full = [_load(source, "style") for source in _as_list(style)]
    need = network.min_input_size_for([s["content_layer"]] + [name for name, _ in s["style_layers"]])
    sizes = scale_sizes(s["size"], s["scales"])
    passes = []  # (content image, style images) of each pass, coarse to fine
    for size in sizes:
        content_img = image_io.resize_long_side(content_full, size)
        style_imgs = [image_io.resize_long_side(img, max(1, round(s["style_scale"] * size))) for img in styles_full]
        for what, img in [("content", content_img)] + [("style", img) for img in style_imgs]:
            if min(img.shape[:2]) < need:
                raise UserError(f"the {what} image is {img.shape[0]}x{img.shape[1]} px at size {size}, but "
                                f"{s['model']}'s layers need at least {need} px on each side; use a larger "
                                "--size (or --style-scale), or fewer --scales")
        passes.append((content_img, style_imgs))

    # Work of a pass: its iterations times its pixels, so that the ETA knows a coarse pass is cheap.
    work = [s["iters"] * img.shape[0] * img.shape[1] for img, _ in passes]
    history = []
    steps = evaluations = 0
    rng = np.random.default_rng(s["seed"])
    start = time.perf_counter()
    for k, (content_img, style_imgs) in enumerate(passes):
        H, W = content_img.shape[:2]
        if k == 0:
            generated = _initial_image(s["init"], content_img, rng)
        else:
            generated = image_io.resize_to(generated, H, W)  # the last pass's result, enlarged

        def on_iteration(it, render, k=k, H=H, W=W):
            nonlocal steps
            steps += 1 if it.iteration else 0
            now = time.perf_counter()
            history.append({"scale": k + 1, "iteration": it.iteration, **it.aux, "seconds": now - start})
            if callback is not None:
                callback(Progress(
                    scale=k + 1, scales=len(passes), shape=(H, W), iteration=it.iteration, iters=s["iters"],
                    step=steps, total_steps=s["iters"] * len(passes),
                    done=(sum(work[:k]) + it.iteration * H * W) / sum(work), elapsed=now - start,
                    costs=dict(it.aux), render=lambda: render(it.x),
                ))

        pass_start = time.perf_counter()
        generated, result = _optimize_pass(network, content_img, style_imgs, generated, s, on_iteration)
        seconds_last_pass = time.perf_counter() - pass_start
        evaluations += result.n_evals

    if s["preserve_colors"]:  # after the last pass only: every pass optimises the plain image
        generated = preserve_content_colors(generated, passes[-1][0])
    return StylizeResult(
        image=generated,
        history=history,
        settings=s,
        seconds=time.perf_counter() - start,
        iterations=steps,
        evaluations=evaluations,
        seconds_per_iteration=seconds_last_pass / max(1, result.iterations),
    )


def _optimize_pass(network, content_img, style_imgs, start_img, s, on_iteration):
    """One pass of `stylize`: optimise the pixels of start_img at its size.

    Args:
        network: the loaded Network.
        content_img: (H, W, 3) RGB float32 0..255, the content at this pass's size.
        style_imgs: list of (H_S, W_S, 3) style images at this pass's style size.
        start_img: (H, W, 3) RGB float32 0..255, where the optimisation starts.
        s: the resolved settings.
        on_iteration: function(optim.Iterate, render) called after every iteration; render(x)
            turns an iterate into the image the user sees.

    Returns:
        (image, optim.OptimizeResult): the result as an (H, W, 3) float32 RGB image 0..255
        (colours not preserved: `stylize` does that at the end, `render` for the callbacks).
    """
    mode = network.preprocessing  # image.py knows what it means; we only pass it on
    x0 = image_io.preprocess(start_img, mode)  # (1, H, W, 3) float32
    H, W = start_img.shape[:2]
    # The box that keeps every deprocessed pixel in 0..255 (preprocessing is a per-channel
    # increasing affine map, so the black and white images bound it).
    lo = image_io.preprocess(np.zeros((H, W, 3), np.float32), mode).reshape(-1).astype(np.float64)
    hi = image_io.preprocess(np.full((H, W, 3), 255, np.float32), mode).reshape(-1).astype(np.float64)
    cost = make_cost_function(
        network, image_io.preprocess(content_img, mode), [image_io.preprocess(img, mode) for img in style_imgs],
        s["content_layer"], s["style_layers"], s["style_blend"], s["alpha"], s["beta"], s["tv_weight"],
    )

    def fun_and_grad(v):
        # The optimiser works in float64 (its dot products need it); the network in float32.
        J, dx, parts = cost(v.reshape(x0.shape).astype(network.dtype))
        return J, dx.reshape(-1), parts

    def to_image(v):
        return np.clip(image_io.deprocess(v.reshape(x0.shape).astype(np.float32), mode), 0, 255)

    def render(v):
        img = to_image(v)
        return preserve_content_colors(img, content_img) if s["preserve_colors"] else img

    result = optim.minimize(
        fun_and_grad, x0.reshape(-1).astype(np.float64), s["optimizer"], s["iters"], lr=s["lr"],
        bounds=(lo, hi), callback=lambda it: on_iteration(it, render),
    )
    return to_image(result.x), result


def _load(source, what):
    """An RGB float32 image (H, W, 3) from a path or an array."""
    if isinstance(source, (str, os.PathLike)):
        return image_io.load_image(source)
    array = np.asarray(source, dtype=np.float32)
    if array.ndim != 3 or array.shape[2] != 3:
        raise ValueError(f"{what} image must be (H, W, 3) RGB, got shape {array.shape}")
    return array


def _initial_image(init, content_img, rng):
    """The first pass's starting image, (H, W, 3) float32 RGB 0..255."""
    H, W, _ = content_img.shape
    if isinstance(init, np.ndarray):
        return image_io.resize_to(np.asarray(init, np.float32), H, W)
    if init == "content+noise":
        noise = rng.uniform(-COURSE_NOISE, COURSE_NOISE, content_img.shape)
        return np.clip(content_img + noise, 0, 255).astype(np.float32)
    if init == "content":
        return content_img.copy()
    if init == "noise":
        return rng.uniform(0, 255, content_img.shape).astype(np.float32)
    return image_io.resize_to(image_io.load_image(init), H, W)


# ------------------------------------------------------------------------ the command line
SETTINGS_ORDER = (
    "model", "weights", "pool", "size", "scales", "init", "seed", "content_layer", "alpha",
    "style_layers", "beta", "style_blend", "style_scale", "tv_weight", "preserve_colors",
    "optimizer", "iters", "lr",
)


def format_settings(content, styles, output, settings):
    """The resolved settings as the lines `scratchnst stylize` prints before it starts."""

    def show(key, value):
        if key == "style_layers":
            return ", ".join(f"{name}:{weight:g}" for name, weight in value)
        if key == "style_blend":
            return ", ".join(f"{w:g}" for w in value)
        if isinstance(value, float):
            return f"{value:g}"
        return "-" if value is None else str(value)

    lines = [f"content {content}", f"style {', '.join(map(str, styles))}", f"output {output}"]
    lines += [f"{key} {show(key, settings[key])}" for key in SETTINGS_ORDER]
    width = max(len(line.split(" ", 1)[0]) for line in lines)
    return "\n".join("  " + key.ljust(width) + "  " + rest for key, rest in (line.split(" ", 1) for line in lines))


def _format_seconds(seconds):
    """12s, or 3:05 from a minute on."""
    seconds = int(round(seconds))
    return f"{seconds // 60}:{seconds % 60:02d}" if seconds >= 60 else f"{seconds}s"


class ProgressLine:
    """One line on a stream, redrawn in place on a terminal:

        scale 1/2 [##########..........]  50/100  ETA 12s  J 6.41e+03  J_content 280  J_style 90.1

    On a terminal it is redrawn at most 10 times a second; elsewhere (a pipe, a log file) only
    its last state is written, once, by `close`, so that logs get one line and not hundreds.
    """

    WIDTH = 20

    def __init__(self, stream):
        self.stream = stream
        self.live = hasattr(stream, "isatty") and stream.isatty()
        self.text = ""
        self.drawn = float("-inf")  # time of the last redraw

    def update(self, p):
        bar = "#" * int(self.WIDTH * p.done) + "." * (self.WIDTH - int(self.WIDTH * p.done))
        eta = _format_seconds(p.elapsed / p.done * (1 - p.done)) if p.done > 0 else "--"
        scale = f"scale {p.scale}/{p.scales} " if p.scales > 1 else ""
        c = p.costs
        self.text = (f"{scale}[{bar}] {p.iteration:>{len(str(p.iters))}}/{p.iters}  ETA {eta}  "
                     f"J {c['J']:.3g}  J_content {c['J_content']:.3g}  J_style {c['J_style']:.3g}")
        now = time.monotonic()
        if self.live and (now - self.drawn >= 0.1 or p.done >= 1):
            self.stream.write("\r" + self.text + "\x1b[K")  # \x1b[K clears the rest of the old line
            self.stream.flush()
            self.drawn = now

    def close(self):
        if not self.text:
            return
        self.stream.write(("\r" + self.text + "\x1b[K\n") if self.live else self.text + "\n")
        self.stream.flush()
        self.text = ""


def _check_writable(path, what):
    """UserError unless a file can be created at `path` (its folder exists and is writable)."""
    folder = path.parent  # Path(".") for a bare file name
    if not folder.is_dir():
        raise UserError(f"cannot write the {what} {path}: folder {folder} does not exist")
    if not os.access(folder, os.W_OK | os.X_OK):
        raise UserError(f"cannot write the {what} {path}: folder {folder} is not writable")


def _write_json(path, data):
    """Write JSON atomically (temporary file in the same folder, then os.replace)."""
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        tmp.write_text(json.dumps(data, indent=1) + "\n")
        os.replace(tmp, path)
    except OSError as error:
        raise UserError(f"cannot write the log {path}: {error.strerror or error}") from None
    finally:
        tmp.unlink(missing_ok=True)


def snapshot_path(output, step):
    """OUT_<step>: out.png -> out_0050.png for the snapshot after iteration 50 (all passes counted)."""
    output = Path(output)
    return output.with_name(f"{output.stem}_{step:04d}{output.suffix}")


def run_stylize(content, styles, output, *, save_every=0, log=None, stream=None, **options):
    """The `scratchnst stylize` command: settings, progress, snapshots, the image and the log.

    Args:
        content: path of the content image.
        styles: list of style image paths.
        output: the image file to write (atomically, when the run is complete).
        save_every: write snapshot_path(output, step) every this many iterations (0: never).
        log: None or the JSON file to write: settings, cost history, seconds per iteration.
        stream: where the settings and the final line go (default stdout); the progress line
            goes to stderr.
        **options: `stylize`'s options.

    Returns:
        0 (the exit status).

    Raises:
        UserError: as `stylize`, and for an output or log folder that cannot be written (checked
            before the run starts). Ctrl-C (KeyboardInterrupt) passes through after the progress
            line is ended; no output is written then.
    """
    stream = stream or sys.stdout
    output = Path(output)
    _check_writable(output, "image")
    if output.suffix.lower() not in Image.registered_extensions():  # now, not after minutes of work
        raise UserError(f"{output}: unknown image extension {output.suffix!r}; use .png or .jpg")
    if log is not None:
        log = Path(log)
        _check_writable(log, "log")
    if save_every < 0:
        raise UserError(f"--save-every must be >= 0, got {save_every}")

    settings = resolve_settings(content, styles, **options)
    print("scratchnst stylize", file=stream)
    print(format_settings(content, styles, output, settings), file=stream, flush=True)

    progress = ProgressLine(sys.stderr)

    def callback(p):
        progress.update(p)
        if save_every and p.iteration and p.step % save_every == 0:
            image_io.save_image(snapshot_path(output, p.step), p.image())

    try:
        result = stylize(content, styles, callback=callback, **settings)
    finally:
        progress.close()
    image_io.save_image(output, result.image)
    last = result.history[-1]
    if log is not None:
        _write_json(log, {
            "content": str(content), "styles": [str(s) for s in styles], "output": str(output),
            "settings": settings, "iterations": result.iterations, "evaluations": result.evaluations,
            "seconds": result.seconds, "seconds_per_iteration": result.seconds_per_iteration,
            "history": result.history,
        })
    H, W = result.image.shape[:2]
    print(f"wrote {output}: {result.iterations} iterations ({result.evaluations} evaluations) in "
          f"{result.seconds:.1f} s ({result.seconds_per_iteration:.3f} s per iteration at {W}x{H}); "
          f"J {last['J']:.4g}, J_content {last['J_content']:.4g}, J_style {last['J_style']:.4g}", file=stream)
    return 0

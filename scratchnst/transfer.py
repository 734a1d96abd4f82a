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
minus the means), flattened, in the optimiser's dtype (`_optimizer_dtype`: L-BFGS in the network's
float32, Adam in float64). Box bounds keep its pixels inside 0..255: lo = preprocess(black image),
hi = preprocess(white image) (preprocessing is a per-channel increasing affine map).
"""

import math
import os
import time
from dataclasses import dataclass, field
from typing import Callable

import numpy as np

from scratchnst import checkpoint, image, memory_pages, networks, optim, optim_state, parallel
from scratchnst.costs import (
    compute_content_cost,
    compute_total_variation_cost,
    content_cost_backward,
    layer_style_cost_from_target,
    style_target,
    total_cost,
    total_variation_cost_backward,
)
from scratchnst.errors import UserError
from scratchnst.settings import (INITS, MODEL_DEFAULTS, check_memory, layers_used,  # noqa: F401
                                 resolve_settings, scale_sizes, style_list)


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
    with the course's costs (costs.py); backward being linear, a weight all the style layers share
    is taken out of its argument and multiplies its result instead (`_common_factor`). The
    targets are computed once, here: a_C, and per style layer the style image's Gram per
    position, G_S / M_S (costs.style_target); per call only G goes through the network. Several
    style images are blended by averaging their targets with the blend weights (as
    jcjohnson/neural-style does): J_style then measures the distance to the blended Gram. Its
    gradient is that of sum_i w_i J_style(S_i, G), which differs from it by a constant only (for
    weights summing to 1, sum_i w_i |G_i - G|^2 = |G_avg - G|^2 + const).

    With more than one worker (`parallel`) the terms are computed on the other cores while the
    backward pass goes down from the deepest layer, each layer's gradient taken when the pass gets
    there (`parallel.ahead`), rather than all of them before it, split across the cores, with the
    pass's layers after them: an evaluation of stylize's defaults (SqueezeNet, 320 px, 2-core Xeon)
    took 30.3-31.3 ms instead of 34.9. The results are the same bit for bit.
    """
    style_names = [name for name, _ in style_layers]
    wanted = layers_used(content_layer, style_layers)
    a_C = network.forward(content_x, [content_layer])[content_layer]
    targets = {name: 0.0 for name in style_names}
    for w, s in zip(style_blend, style_xs):
        a_S = network.forward(s, style_names)
        for name in targets:
            targets[name] = targets[name] + w * style_target(a_S[name])
    dtype = network.dtype
    common = _common_factor(alpha, [beta * lam for _, lam in style_layers], dtype)

    # The terms, each a gradient at its layer: style layer k (1, 2, ...) and the content (0). A
    # layer's gradient is its style terms' in order, then the content's: the order the sums are taken
    # in, whoever computes them. Needed deepest first by the backward pass.
    terms_at = {}
    for k, name in enumerate(style_names, start=1):
        terms_at.setdefault(name, []).append(k)
    terms_at.setdefault(content_layer, []).append(0)
    depth = {name: network.arch.index[network.arch.resolve(name)] for name in terms_at}
    order = [k for name in sorted(terms_at, key=depth.get, reverse=True) for k in terms_at[name]]

    def cost(x):
        a_G = network.forward(x, wanted)
        J = {}  # per term: its cost

        def term(k):  # -> the term's gradient at its layer, its weight taken out (`_common_factor`)
            if k == 0:
                J[0] = compute_content_cost(a_C, a_G[content_layer])
                return (alpha / common) * content_cost_backward(a_C, a_G[content_layer])
            name, lam = style_layers[k - 1]
            J_layer, da = layer_style_cost_from_target(targets[name], a_G[name])
            J[k] = lam * J_layer
            return da if beta * lam == common else (beta * lam / common) * da

        # The terms are independent: the other cores compute them, deepest first, while the backward
        # pass goes down from the deepest layer, taking each layer's gradient when it gets there
        # (`parallel.ahead`; with one worker all of them first, in this thread, the deepest last).
        queue = parallel.ahead([lambda k=k: term(k) for k in order])
        position = {k: i for i, k in enumerate(order)}

        def gradient_at(name):
            def gather():
                total = None
                for k in terms_at[name]:
                    g = queue.result(position[k])
                    if total is None:
                        total = g
                    elif total.dtype == g.dtype:
                        total += g  # each term's gradient is a fresh array: added into, no new memory
                    else:  # a weight given as np.float64 makes a float64 term: the sum stays wide until the end
                        total = total + g
                return total.astype(dtype, copy=False)
            return gather

        try:
            dx = network.backward({name: gradient_at(name) for name in terms_at})
        finally:
            queue.join()
        J_content = J[0]
        J_style = sum(J[k] for k in range(1, 1 + len(style_layers)))  # in order, however the terms were cut
        J_tv = compute_total_variation_cost(x) if tv_weight else 0.0
        J = total_cost(J_content, J_style, alpha, beta) + tv_weight * J_tv
        if common != 1.0:
            dx = common * dx
        if tv_weight:
            dx = dx + tv_weight * total_variation_cost_backward(x)
        parts = {"J": float(J), "J_content": J_content, "J_style": J_style, "J_tv": J_tv}
        return float(J), dx.astype(dtype, copy=False), parts

    return cost


def _common_factor(alpha, style_weights, dtype):
    """The factor the cost function takes out of the gradients it gives the network: 1.0 or the style layers' weight.

    Args:
        alpha: the content cost's weight.
        style_weights: beta * lambda[l] of each style layer.
        dtype: the network's.

    Returns:
        the style layers' weight when they all have the same one (the course's lambda: 0.2 each),
        else 1.0. The backward pass is linear, so that factor is applied once to the pixels'
        gradient (230,400 values at 320 px) instead of to each style layer's (3 million on
        SqueezeNet): 1.1 ms less per evaluation (SqueezeNet, 320 px, one core, 2% of it). Only
        in float32 and float64, and while the content's weight relative to it, alpha / factor,
        stays within 1e6 either way: the content's gradient scaled by a large ratio could
        overflow where the plain sum does not (float16's 65504 at a gradient of 0.07).
    """
    if np.dtype(dtype) not in (np.float32, np.float64):
        return 1.0
    if not style_weights or any(w != style_weights[0] for w in style_weights):
        return 1.0
    factor = style_weights[0]
    if not 0 < factor < math.inf or not (alpha == 0 or 1e-6 <= abs(alpha) / factor <= 1e6):
        return 1.0
    return factor


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
        elapsed: seconds since the first pass started (a resumed run counts on from its checkpoint).
        costs: {"J", "J_content", "J_style", "J_tv"} of the current image.
        history: the run's history up to this iteration (see StylizeResult.history).
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
    state: Callable = field(default=None, repr=False)
    history: list = field(default=None, repr=False)

    def image(self):
        """The current image, (H, W, 3) RGB float32 0..255, colours preserved if asked for."""
        return self.render()

    def checkpoint(self):
        """The whole state of the run after this iteration: what `stylize(..., resume=...)` continues
        from (a nested dict of arrays and JSON values, see scratchnst.checkpoint)."""
        return self.state()


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
        seconds_per_iteration: of the last (full-size) pass, its iterations run by this call (not those
            a resumed pass had done before); None if it ran none (a finished run resumed).
        stopped: one line per pass whose optimiser stopped before its iterations, saying why (a
            cost settled, a gradient too small to go on, a line search that found nothing lower).
    """

    image: np.ndarray
    history: list
    settings: dict
    seconds: float
    iterations: int
    evaluations: int
    seconds_per_iteration: float  # None if no iteration ran (see above)
    stopped: tuple = ()


class CostNotFinite(UserError):
    """The cost or its gradient overflowed (inf) or became NaN; `setting` is the flag to lower."""

    def __init__(self, parts, settings, gradient_only):
        self.parts = parts
        terms = {"alpha": settings["alpha"] * parts["J_content"], "beta": settings["beta"] * parts["J_style"],
                 "tv_weight": settings["tv_weight"] * parts["J_tv"]}
        bad = [key for key, value in terms.items() if not np.isfinite(value)]
        # A gradient overflows float32 while the cost, summed in float64, is still finite: the
        # largest weighted term is the one whose gradient is largest too.
        self.setting = bad[0] if bad else max(terms, key=lambda key: abs(terms[key]))
        what = "the gradient of the cost" if gradient_only else "the cost"
        flag = "--" + self.setting.replace("_", "-")
        cause, advice = f"{flag} {settings[self.setting]:g}", f"lower {flag}"
        # beta multiplies every style layer's own weight: where those are far above the course's
        # 0.2 (fire2:1e308), they are the likelier cause, and lowering --beta alone is bad advice
        heavy = [f"{layer}:{weight:g}" for layer, weight in settings.get("style_layers", ()) if abs(weight) > 1]
        if self.setting == "beta" and heavy:
            cause += f" times the --style-layers weights {', '.join(heavy)}"
            advice = "lower those weights or --beta"
        super().__init__(f"{what} became {'NaN' if np.isnan(parts['J']) else 'infinite'} "
                         f"({cause} makes it overflow); {advice}")


def stylize(content, style, *, callback=None, resume=None, **options):
    """Paint the content image in the style of the style image(s).

    Args:
        content: path of the content image, or an (H, W, 3) RGB array 0..255.
        style: path or array of the style image, or a list of them (blended).
        callback: None or function(Progress), called at each pass's start and every iteration.
        resume: None, or a state from `Progress.checkpoint()` (or scratchnst.checkpoint.load):
            continue that run where it stopped. The settings and images must be those of the
            run that made it (iters may differ: the run goes on up to the new iters); the
            result is then bit for bit the image the uninterrupted run gives.
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
        UserError: see `resolve_settings`; also unreadable images, images too small for the
            network's layers, and CostNotFinite when the cost overflows (the callback has seen
            every good iteration before it).
        UsageError: `resume` was made with other settings or images.
    """
    s = resolve_settings(content, style, **options)
    check_memory(s, content)
    # The helper processes of the splits (`parallel`), started while the files are read, are ready
    # sooner: a helper takes 0.14 s to start, and until then the layers run on one core
    parallel.start_helpers()
    init_file = None if isinstance(s["init"], str) and s["init"] in INITS else s["init"]
    inputs = checkpoint.InputDigests(content, style_list(style), init_file, s["weights"])
    if resume is not None:
        checkpoint.check_resume(resume, s, inputs, INITS)
    # Loaded at the largest size a pass needs: a phone photo is not decoded at 40 megapixels.
    content_full = _load(content, "content", s["size"])
    styles_full = [_load(source, "style", max(1, round(s["style_scale"] * s["size"]))) for source in style_list(style)]
    network = networks.load(s["model"], weights=s["weights"], pooling=s["pool"], dtype=np.float32)
    need = network.min_input_size_for([s["content_layer"]] + [name for name, _ in s["style_layers"]])
    sizes = scale_sizes(s["size"], s["scales"])
    passes = []  # (content image, style images) of each pass, coarse to fine
    for size in sizes:
        content_img = image.resize_long_side(content_full, size)
        style_imgs = [image.resize_long_side(img, max(1, round(s["style_scale"] * size))) for img in styles_full]
        for what, img in [("content", content_img)] + [("style", img) for img in style_imgs]:
            if min(img.shape[:2]) < need:
                raise UserError(f"the {what} image is {img.shape[1]}x{img.shape[0]} px at size {size}, but "
                                f"{s['model']}'s layers need at least {need} px on each side; use a larger "
                                f"--size{_other_remedies(s, what)}")
        passes.append((content_img, style_imgs))

    # Work of a pass: its iterations times its pixels, so that the ETA knows a coarse pass is cheap.
    work = [s["iters"] * img.shape[0] * img.shape[1] for img, _ in passes]
    if resume is None:
        first, history, steps, evaluations, elapsed = 0, [], 0, 0, 0.0
    else:
        first, steps, evaluations, elapsed = resume["scale"], resume["steps"], resume["evaluations"], resume["elapsed"]
        history = [dict(entry) for entry in resume["history"]]
    if resume is not None:
        checkpoint.check_fits(resume, [content_img.shape[:2] for content_img, _ in passes])
    rng = np.random.default_rng(s["seed"])
    dtype = _optimizer_dtype(network, s["optimizer"], None if resume is None else resume["optimizer"])
    start = time.perf_counter() - elapsed
    generated, stopped = None, []
    for k in range(first, len(passes)):
        content_img, style_imgs = passes[k]
        H, W = content_img.shape[:2]
        if k == first and resume is not None:
            pass_resume = resume["optimizer"]  # the pass starts where the checkpoint stopped
        elif k == 0:
            pass_resume, generated = None, initial_image(s["init"], content_img, rng)
        else:
            pass_resume, generated = None, image.resize_to(generated, H, W)  # the last pass's result, enlarged

        def on_iteration(it, render, k=k, H=H, W=W):
            nonlocal steps
            steps += 1 if it.iteration else 0
            now = time.perf_counter()
            history.append({"scale": k + 1, "iteration": it.iteration, **it.aux, "seconds": now - start})
            if callback is None:
                return
            snapshot = {"format": "stylize", "settings": s, "scale": k, "steps": steps,
                        "evaluations": evaluations, "elapsed": now - start, "history": list(history)}
            callback(Progress(
                scale=k + 1, scales=len(passes), shape=(H, W), iteration=it.iteration, iters=s["iters"],
                step=steps, total_steps=s["iters"] * len(passes),
                done=(sum(work[:k]) + min(it.iteration, s["iters"]) * H * W) / sum(work), elapsed=now - start,
                costs=dict(it.aux), render=lambda: render(it.x),
                state=lambda: {**snapshot, "inputs": inputs.digests(), "optimizer": it.state()},
                history=snapshot["history"],
            ))

        pass_start = time.perf_counter()
        # the iterations a resumed pass had done before: not this run's, nor in its seconds per iteration
        done_before = 0 if pass_resume is None else int(optim_state.scalar(pass_resume["iteration"]))
        try:
            with memory_pages.small_pages():  # a pass touches most of its memory once (see memory_pages)
                generated, result = _optimize_pass(network, content_img, style_imgs, generated, s, on_iteration,
                                                   dtype, resume=pass_resume)
        except optim.ResumeError as error:  # raised before anything is evaluated
            raise UserError(f"the checkpoint does not fit this run ({error}); start again without --resume") from None
        seconds_last_pass = time.perf_counter() - pass_start
        evaluations += result.n_evals
        if result.iterations < s["iters"]:
            where = f"pass {k + 1} of {len(passes)}, " if len(passes) > 1 else ""
            stopped.append(f"{where}iteration {result.iterations} of {s['iters']}: {result.message}")

    if s["preserve_colors"]:  # after the last pass only: every pass optimises the plain image
        generated = preserve_content_colors(generated, passes[-1][0])
    return StylizeResult(
        image=generated,
        history=history,
        settings=s,
        seconds=time.perf_counter() - start,
        iterations=steps,
        evaluations=evaluations,
        seconds_per_iteration=seconds_last_pass / ran if (ran := result.iterations - done_before) > 0 else None,
        stopped=tuple(stopped),
    )


def _optimize_pass(network, content_img, style_imgs, start_img, s, on_iteration, dtype, resume=None):
    """One pass of `stylize`: optimise the pixels of start_img at its size.

    Args:
        network: the loaded Network.
        content_img: (H, W, 3) RGB float32 0..255, the content at this pass's size.
        style_imgs: list of (H_S, W_S, 3) style images at this pass's style size.
        start_img: (H, W, 3) RGB float32 0..255, where the optimisation starts (None with resume).
        s: the resolved settings.
        on_iteration: function(optim.Iterate, render) called after every iteration; render(x)
            turns an iterate into the image the user sees.
        dtype: the optimiser's dtype (`_optimizer_dtype`).
        resume: None, or the optimiser's state (optim.Iterate.state()) to continue from.

    Returns:
        (image, optim.OptimizeResult): the result as an (H, W, 3) float32 RGB image 0..255
        (colours not preserved: `stylize` does that at the end, `render` for the callbacks).

    Raises:
        CostNotFinite: at the first evaluation whose cost or gradient is not finite.
    """
    mode = network.preprocessing  # image.py knows what it means; we only pass it on
    H, W = content_img.shape[:2]
    # (1, H, W, 3) float32; when resuming only its shape matters: the optimiser goes on from the saved x.
    x0 = image.preprocess(content_img if start_img is None else start_img, mode)
    # The box that keeps every deprocessed pixel in 0..255 (preprocessing is a per-channel
    # increasing affine map, so the black and white images bound it).
    lo = image.preprocess(np.zeros((H, W, 3), np.float32), mode).reshape(-1).astype(dtype)
    hi = image.preprocess(np.full((H, W, 3), 255, np.float32), mode).reshape(-1).astype(dtype)
    if resume is not None and not np.all((lo - 1e-3 <= resume["x"]) & (resume["x"] <= hi + 1e-3)):
        raise checkpoint.damaged("its image has pixels outside 0..255")

    def fun_and_grad(v):
        # An overflow is caught just below and told as one line; NumPy's warnings would only add noise.
        with np.errstate(over="ignore", invalid="ignore"):
            J, dx, parts = cost(v.reshape(x0.shape).astype(network.dtype, copy=False))  # read, never written
        # Stop at once: an L-BFGS line search would take an infinite cost for "step too long"
        # and shrink the step for ever, but pixels stay in 0..255, so only a weight that is
        # too large can overflow, and no step fixes that.
        if not np.isfinite(J) or not np.isfinite(dx).all():
            raise CostNotFinite(parts, s, gradient_only=bool(np.isfinite(J)))
        return J, dx.reshape(-1), parts

    def to_image(v):
        return np.clip(image.deprocess(v.reshape(x0.shape).astype(np.float32), mode), 0, 255)

    def render(v):
        img = to_image(v)
        return preserve_content_colors(img, content_img) if s["preserve_colors"] else img

    with parallel.hold():  # BLAS on one thread per call, the layers split across the cores (see parallel)
        # The targets too: a_C made as every a_G is (the same BLAS threads), so that at the content
        # image the content cost is exactly 0, whatever BLAS's threaded products round differently.
        cost = make_cost_function(
            network, image.preprocess(content_img, mode), [image.preprocess(img, mode) for img in style_imgs],
            s["content_layer"], s["style_layers"], s["style_blend"], s["alpha"], s["beta"], s["tv_weight"],
        )
        result = optim.minimize(
            fun_and_grad, x0.reshape(-1).astype(dtype), s["optimizer"], s["iters"], lr=s["lr"],
            bounds=(lo, hi), callback=lambda it: on_iteration(it, render), resume=resume,
            **(LBFGS_OPTIONS if s["optimizer"] == "lbfgs" else {}),
        )
    return to_image(result.x), result


# L-BFGS as stylize runs it. Twenty curvature pairs, not the usual ten: measured on SqueezeNet at
# 320 px (Tübingen, The Starry Night, max pooling), they reached a given cost in about 10% fewer
# evaluations late in the run, where the cost surface is flattest. Kept in float32 (see
# optim.lbfgs's memory_dtype), twenty pairs cost the time that ten float64 ones did.
LBFGS_OPTIONS = {"history_size": 20, "memory_dtype": np.float32}


def _optimizer_dtype(network, optimizer, resume):
    """The dtype the optimiser works in, for every pass of a run.

    Args:
        network: the loaded Network; optimizer: "lbfgs" or "adam"; resume: None, or the saved
            optimiser state the run goes on from.

    Returns:
        L-BFGS: the network's dtype, float32 on the run path, as PyTorch's L-BFGS. In float64, as
        until 2026-12-06, its vector operations and the gradient's cast took 4.5 against 2.4 ms of
        each 60 ms iteration (cat and swirls, 320 px, 1 thread), and 200 iterations 0.3-2.1 s more
        (four pairs, three seeds each); the final costs in float32 were -2.0% to +1.1% of
        float64's, mean -0.04%: rounding, not precision, decides where a run ends. Its dot
        products that overflow float32 (a weight of 1e20) are taken again in float64 (optim).
        Adam: float64, as before. Its second moment squares the gradient, which overflows float32
        from 1.8e19 on and would stall those pixels, and its steps cost little besides the cost.
        Resuming: the saved state's, for all the passes left (float64 for an L-BFGS state saved
        before 2026-12-06: such a run goes on as it began).
    """
    if resume is None:
        return np.dtype(np.float64) if optimizer == "adam" else network.dtype
    dtype = np.asarray(resume.get("x")).dtype
    if dtype not in (np.float32, np.float64):
        raise checkpoint.damaged(f"its image is {dtype}, not float32 or float64")
    return dtype


def _other_remedies(s, what):
    """The other settings that would make an image too small for the network larger, if any were changed."""
    remedies = (["a larger --style-scale"] if what == "style" and s["style_scale"] < 1 else []) + \
        (["fewer --scales"] if s["scales"] > 1 else [])
    return "".join(f", or {remedy}" for remedy in remedies)


def _load(source, what, long_side):
    """An RGB float32 image (H, W, 3) from a path (decoded at `long_side` on its longer side) or an array."""
    if isinstance(source, (str, os.PathLike)):
        return image.load_image(source, long_side=long_side)
    array = np.asarray(source, dtype=np.float32)
    if array.ndim != 3 or array.shape[2] != 3:
        raise ValueError(f"{what} image must be (H, W, 3) RGB, got shape {array.shape}")
    return array


# The course's (TF2) noise: uniform(-0.25, 0.25) on pixels in [0, 1], i.e. +-63.75 on 0..255.
COURSE_NOISE = 0.25 * 255


def initial_image(init, content_img, rng):
    """The first pass's starting image, (H, W, 3) float32 RGB 0..255.

    Args:
        init: "content+noise", "content", "noise", an image path, or an (H', W', 3) array (resized).
        content_img: (H, W, 3) RGB 0..255, the content at the first pass's size.
        rng: np.random.Generator of the run's seed (the noise draws come from it).
    """
    H, W, _ = content_img.shape
    if isinstance(init, np.ndarray):
        return image.resize_to(np.asarray(init, np.float32), H, W)
    if init == "content+noise":
        noise = rng.uniform(-COURSE_NOISE, COURSE_NOISE, content_img.shape)
        return np.clip(content_img + noise, 0, 255).astype(np.float32)
    if init == "content":
        return content_img.copy()
    if init == "noise":
        return rng.uniform(0, 255, content_img.shape).astype(np.float32)
    return image.resize_to(image.load_image(init, long_side=max(H, W)), H, W)

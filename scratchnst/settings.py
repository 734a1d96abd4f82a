"""The settings of a style transfer: each network's defaults, every option checked, the memory a run needs.

`resolve_settings` turns what a user gave (the command line's flags, `stylize`'s keyword
arguments) into the complete, checked settings `transfer.stylize` runs with, filling in the
network's defaults (`MODEL_DEFAULTS`); anything wrong is a one-line UsageError or UserError
before any work starts. `check_memory` refuses a --size the machine cannot hold.
"""

import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from scratchnst import image, optim
from scratchnst import weights as weights_io
from scratchnst.architectures import ARCHITECTURES, POOLINGS
from scratchnst.costs import COURSE_STYLE_LAYERS
from scratchnst.errors import UsageError


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


# ---------------------------------------------------------------------------------- settings
def style_layer_list(style_layers):
    """[(name, weight), ...] from pairs or bare names (bare names share the weight 1/n)."""
    if isinstance(style_layers, str):
        style_layers = [style_layers]
    items = list(style_layers)
    if not items:
        raise UsageError("give at least one style layer")
    out = []
    for item in items:
        if isinstance(item, str):
            out.append((item, 1.0 / len(items)))
        else:
            name, weight = item
            out.append((str(name), float(weight)))
    return out


def layers_used(content_layer, style_layers):
    """The layers a stylisation runs its images through, each once, content layer first:
    [content_layer, style layer, ...] from style_layers' [(name, weight), ...]."""
    return list(dict.fromkeys([content_layer] + [name for name, _ in style_layers]))


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
        raise UsageError(f"unknown model {model!r}: choose one of {', '.join(MODEL_DEFAULTS)}")
    defaults = MODEL_DEFAULTS[model]
    arch = ARCHITECTURES[model]
    weights_path = weights_io.find_weights(model, explicit=weights)

    # "is None", not "or": an empty name given on purpose is a mistake to report, not the default.
    content_layer = arch.resolve(defaults.content_layer if content_layer is None else content_layer)
    style_layers = [[arch.resolve(name), w] for name, w in
                    style_layer_list(defaults.style_layers if style_layers is None else style_layers)]
    repeated = sorted({name for name, _ in style_layers if [n for n, _ in style_layers].count(name) > 1})
    if repeated:
        raise UsageError(f"style layer {repeated[0]} is given twice; give each layer once, with its weight")
    if not all(_finite(w) and w >= 0 for _, w in style_layers) or not any(w > 0 for _, w in style_layers):
        raise UsageError("style layer weights must be finite numbers >= 0, and at least one > 0; "
                         "e.g. --style-layers conv1:0.5,fire2:0.5")

    if optimizer not in OPTIMIZERS:
        raise UsageError(f"unknown optimizer {optimizer!r}: choose one of {', '.join(OPTIMIZERS)}")
    if optimizer == "lbfgs" and lr is not None:
        raise UsageError("--lr is Adam's learning rate; L-BFGS's line search chooses its own steps (drop --lr)")
    if optimizer == "adam":
        lr = float(defaults.lr if lr is None else lr)
        if not (_finite(lr) and lr > 0):
            raise UsageError(f"--lr must be a number > 0, got {lr}")
    pool = pool or defaults.pool
    if pool not in POOLINGS:
        raise UsageError(f"unknown pooling {pool!r}: choose one of {', '.join(POOLINGS)}")
    if isinstance(init, str) and init not in INITS:
        if not Path(init).exists():
            raise UsageError(f"--init {init}: not one of {', '.join(INITS)} and no such image file")
        image.image_size(init)  # a folder or a broken image is told now, in the image's own words

    styles = style_list(style)
    n_styles = len(styles) if style is not None else len(style_blend or [1])
    if style_blend is None:
        style_blend = [1.0] * n_styles
    style_blend = [float(w) for w in style_blend]
    if len(style_blend) != n_styles:
        raise UsageError(f"--style-blend has {len(style_blend)} weights for {n_styles} style "
                         f"image{'' if n_styles == 1 else 's'}; give one per image")
    if not all(_finite(w) and w >= 0 for w in style_blend) or not 0 < sum(style_blend) < float("inf"):
        raise UsageError("--style-blend weights must be finite numbers >= 0, not all 0 and not so large that "
                         "their sum overflows; e.g. --style-blend 0.7,0.3")
    total = sum(style_blend)
    if total != 1.0:  # the blend is a weighted average; leave a normalised one bit for bit alone
        style_blend = [w / total for w in style_blend]

    for source in ([content] if content is not None else []) + styles:
        if isinstance(source, (str, os.PathLike)):
            image.image_size(source)  # the header only: a missing or broken image is told now, not after loading

    numbers = {"alpha": alpha, "beta": beta, "tv_weight": tv_weight}
    numbers = {k: float(getattr(defaults, k) if v is None else v) for k, v in numbers.items()}
    if numbers["alpha"] == 0 and numbers["beta"] == 0:
        raise UsageError("--alpha and --beta are both 0: there is nothing to optimise; give one of them a weight > 0")
    for key, value in numbers.items():
        if not (_finite(value) and value >= 0):
            raise UsageError(f"--{key.replace('_', '-')} must be a finite number >= 0, got {value}")
    check_seed(seed)
    for key, value in (("size", size), ("iters", iters), ("scales", scales)):
        if int(value) < 1:
            raise UsageError(f"--{key} must be at least 1, got {value}")
    if int(scales) > MAX_SCALES:
        raise UsageError(f"--scales {scales}: at most {MAX_SCALES} (pass 1 would be 2**{int(scales) - 1} times smaller "
                         "than --size; 2 or 3 is usual)")
    if not (_finite(style_scale) and float(style_scale) > 0):
        raise UsageError(f"--style-scale must be a finite number > 0, got {style_scale}")

    return dict(
        model=model, weights=str(weights_path), size=int(size), content_layer=content_layer,
        style_layers=style_layers, **numbers, optimizer=optimizer, iters=int(iters), lr=lr,
        init=init, seed=int(seed), pool=pool,
        preserve_colors=bool(preserve_colors), style_blend=style_blend, style_scale=float(style_scale),
        scales=int(scales),
    )


def _finite(value):
    return bool(np.isfinite(float(value)))


# A seed is stored with a run's results (a network file's attributes, a checkpoint): as an int64.
MAX_SEED = 2**63 - 1
# Coarse-to-fine passes: each halves the last; 16 already starts below a pixel at any --size.
MAX_SCALES = 16


def check_seed(seed):
    """UsageError unless 0 <= seed <= MAX_SEED."""
    if not 0 <= int(seed) <= MAX_SEED:
        raise UsageError(f"--seed must be an integer from 0 to 2**63 - 1, got {seed}")


def scale_sizes(size, scales):
    """Long sides of the coarse-to-fine passes: size / 2**(scales - 1), ..., size / 2, size."""
    return [max(1, round(size / 2 ** (scales - 1 - k))) for k in range(scales)]


def style_list(style):
    """`stylize`'s style argument as a list: [] for None, the list itself, or [the one path or array]."""
    if style is None:
        return []
    if isinstance(style, (list, tuple)):
        return list(style)
    return [style]


# ------------------------------------------------------------------------------------ memory
# Peak memory of a run, measured with `stylize` (L-BFGS, style image as large as the content):
# bytes per pixel of the content image, and a fixed part (the interpreter, NumPy, the weights).
# SqueezeNet: 201 MB at 320x240 and 1145 MB at 960x720, so about 1.6 KB a pixel; VGG-19's
# activations are larger (scratchnst bench: 543 MB for one step at 512x512 without the
# optimiser), and its weights take 550 MB.
MEMORY_PER_PIXEL = {"squeezenet": 1700, "vgg19": 3000}
MEMORY_FIXED = {"squeezenet": 150e6, "vgg19": 800e6}


def memory_needed(model, H, W, style_scale=1.0):
    """Rough peak bytes of `stylize` on an H x W content image (style images style_scale times as large)."""
    return MEMORY_FIXED[model] + MEMORY_PER_PIXEL[model] * H * W * max(1.0, style_scale ** 2)


def available_memory():
    """Bytes of memory this process can still take: MemAvailable on Linux, else the physical memory."""
    try:
        with open("/proc/meminfo") as meminfo:
            for line in meminfo:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    try:
        return os.sysconf("SC_PHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
    except (ValueError, OSError, AttributeError):
        return None


def check_memory(s, content):
    """UsageError, before anything is loaded, if --size would need more memory than there is.

    Without it a mistyped --size 99999 makes Pillow and NumPy allocate tens of gigabytes in C
    code, where Ctrl-C is not even noticed, until the machine swaps or the process is killed.
    """
    available = available_memory()
    if available is None:
        return
    H, W = image.image_size(content) if isinstance(content, (str, os.PathLike)) else np.shape(content)[:2]
    H, W = (s["size"], max(1, round(W * s["size"] / H))) if H >= W else (max(1, round(H * s["size"] / W)), s["size"])
    needed = memory_needed(s["model"], H, W, s["style_scale"])
    if needed <= available:
        return
    if s["style_scale"] > 1 and memory_needed(s["model"], H, W) <= available:
        # the style image, style_scale times the result's size, is what does not fit
        scale = ((available - MEMORY_FIXED[s["model"]]) / (MEMORY_PER_PIXEL[s["model"]] * H * W)) ** 0.5
        raise UsageError(f"--style-scale {s['style_scale']:g} (the style image at {s['style_scale']:g} times "
                         f"--size {s['size']}) needs about {needed / 1e9:,.1f} GB of memory for {s['model']}, and this "
                         f"machine has {available / 1e9:,.1f} GB available; use --style-scale {int(scale * 100) / 100:g} "
                         "or less")
    per_long_side_pixel = needed / s["size"] ** 2  # the need grows with the square of --size
    fits = int(((available - MEMORY_FIXED[s["model"]]) / max(per_long_side_pixel, 1e-9)) ** 0.5) if \
        available > MEMORY_FIXED[s["model"]] else 0
    advice = f"use --size {fits} or less" if fits >= 16 else "close other programs or use a machine with more memory"
    raise UsageError(f"--size {s['size']} needs about {needed / 1e9:,.1f} GB of memory for {s['model']}, and this "
                     f"machine has {available / 1e9:,.1f} GB available; {advice}")

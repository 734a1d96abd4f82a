"""Time to a stylised image: scratchnst's `stylize` against `torch.optim.LBFGS` on the same problem.

A user's real question is how long a good picture takes, not one step. Both libraries get the
same problem: the same pretrained network and weights, the same content and style images at the
same size, the course's costs with the same layers, weights and pooling, the same starting image
(scratchnst's content + noise for the seed), the same pixel box (0..255), the same number of
L-BFGS iterations and the same threads. PyTorch runs `torch.optim.LBFGS` as its tutorial does:
history 10, strong Wolfe line search, the pixels clamped into the box at every evaluation.

Both final images are judged by one cost function (scratchnst's, float32 network, float64 sums),
PyTorch's clamped into the box first. The row reports each final cost, each wall time, and
scratchnst's time to quality: the seconds until its cost first reached PyTorch's final cost,
divided by PyTorch's whole time (at most 1 means a picture as good, sooner). This module runs
one such run; the bench runs it --quality-repeats times and reports the median
(`bench.median_quality`).
"""

import time

import numpy as np

from scratchnst import image, networks, transfer
from scratchnst.torch_network import TorchNetwork, _torch, to_nchw
from scratchnst.settings import resolve_settings

# What the row runs by default: the problem of issue 15's measurement (SqueezeNet, max pooling, as
# trained; 320 px; 200 iterations), on the images the project ships.
QUALITY_DEFAULTS = {"model": "squeezenet", "size": 320, "iters": 200, "pool": "max", "seed": 0}


def torch_lbfgs(network, content_img, style_imgs, x0, s, threads):
    """Minimise the course's cost with torch.optim.LBFGS from the preprocessed image x0.

    Args:
        network: the scratchnst Network whose weights PyTorch uses too.
        content_img, style_imgs: (H, W, 3) RGB 0..255 images at the run's sizes.
        x0: (1, H, W, 3) float32, the preprocessed starting image.
        s: resolved settings (layers, weights of the costs, iters).
        threads: torch.set_num_threads.

    Returns:
        (x (1, H, W, 3) float32 clamped into the box, seconds, evaluations).
    """
    torch = _torch()
    torch.set_num_threads(threads)
    mode = network.preprocessing
    H, W = content_img.shape[:2]
    lo = to_nchw(image.preprocess(np.zeros((H, W, 3), np.float32), mode))
    hi = to_nchw(image.preprocess(np.full((H, W, 3), 255, np.float32), mode))
    start = time.perf_counter()
    tnet = TorchNetwork(network)
    cost = tnet.course_cost(image.preprocess(content_img, mode), [image.preprocess(img, mode) for img in style_imgs],
                            s["content_layer"], s["style_layers"], s["style_blend"], s["alpha"], s["beta"], s["tv_weight"])
    x = to_nchw(x0).requires_grad_()
    optimizer = torch.optim.LBFGS([x], lr=1, max_iter=s["iters"], max_eval=s["iters"] * 5 // 4, history_size=10,
                                  tolerance_grad=0.0, tolerance_change=0.0, line_search_fn="strong_wolfe")
    evaluations = 0

    def closure():
        nonlocal evaluations
        evaluations += 1
        with torch.no_grad():
            x.copy_(torch.maximum(torch.minimum(x, hi), lo))  # the tutorial's clamp, into the same box
        optimizer.zero_grad()
        J = cost(x)
        J.backward()
        return J

    optimizer.step(closure)
    with torch.no_grad():
        x_final = torch.maximum(torch.minimum(x, hi), lo)
    seconds = time.perf_counter() - start
    return x_final.detach().numpy().transpose(0, 2, 3, 1).copy(), seconds, evaluations


def measure_quality(content, style, weights=None, threads=1, **options):
    """Both libraries on one problem; see the module docstring.

    Args:
        content, style: image paths; weights: the network's file (None: searched).
        threads: for NumPy's BLAS (set by the caller's environment) and PyTorch.
        **options: model, size, iters, pool, seed (QUALITY_DEFAULTS for the missing ones).

    Returns:
        dict: settings, scratchnst_seconds, pytorch_seconds, scratchnst_cost, pytorch_cost (both by
        scratchnst's cost function), scratchnst_evaluations, pytorch_evaluations,
        seconds_to_pytorch_cost (None if never reached), time_to_quality (that over pytorch_seconds).
    """
    settings = {**QUALITY_DEFAULTS, **options}
    s = resolve_settings(content, style, weights=weights, **settings)
    ours = transfer.stylize(content, style, **s)
    # The same problem for PyTorch: the images and start stylize used, rebuilt the way it builds them.
    network = networks.load(s["model"], weights=s["weights"], pooling=s["pool"], dtype=np.float32)
    content_img = image.load_image(content, long_side=s["size"])
    style_img = image.load_image(style, long_side=max(1, round(s["style_scale"] * s["size"])))
    start_img = transfer.initial_image(s["init"], content_img, np.random.default_rng(s["seed"]))
    x0 = image.preprocess(start_img, network.preprocessing)
    x_torch, torch_seconds, torch_evals = torch_lbfgs(network, content_img, [style_img], x0, s, threads)
    cost = transfer.make_cost_function(
        network, image.preprocess(content_img, network.preprocessing),
        [image.preprocess(style_img, network.preprocessing)], s["content_layer"], s["style_layers"],
        s["style_blend"], s["alpha"], s["beta"], s["tv_weight"])
    torch_cost = cost(x_torch.astype(np.float32))[0]
    ours_cost = cost(image.preprocess(ours.image, network.preprocessing))[0]
    reached = next((entry["seconds"] for entry in ours.history if entry["J"] <= torch_cost), None)
    return {
        "settings": {key: s[key] for key in ("model", "size", "iters", "pool", "seed", "content_layer", "alpha",
                                             "beta")},
        "scratchnst_seconds": ours.seconds, "pytorch_seconds": torch_seconds,
        "scratchnst_cost": ours_cost, "pytorch_cost": float(torch_cost),
        "scratchnst_evaluations": ours.evaluations, "pytorch_evaluations": torch_evals,
        "seconds_to_pytorch_cost": reached,
        "time_to_quality": None if reached is None else reached / torch_seconds,
    }

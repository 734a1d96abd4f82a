"""The bench's training-step row: one step of training a real-time style network, scratchnst against PyTorch.

One step, as `scratchnst train` runs it by default (a batch of DEFAULT_CROP pixel crops, one for
each thread, each photo on its own core, the others' in helper processes: training.default_batch,
training_processes): the transformer network forward on a
batch of photos, the loss network forward on its outputs (and on the photos, for their content),
the course's costs of every image, the loss network backward to the outputs, the transformer
backward to every parameter.
PyTorch runs the same step with the same weights, NCHW, autograd for every gradient
(torch_network.TorchTransformer and TorchNetwork.training_loss). The Adam update is left out of both:
a few element-wise passes over 0.42 M parameters, nothing beside the two networks.

The inputs are made up (smooth random pictures), and the loss network's weights random unless
`pretrained`: the time of a step does not depend on what the pixels show.
"""

import contextlib
import sys

import numpy as np

from scratchnst import image, parallel, training, training_processes, transformer_net
from scratchnst.cli.bench import _timed, _worker_main, blas_info, make_network, time_interleaved
from scratchnst.settings import MODEL_DEFAULTS
from scratchnst.torch_network import TorchNetwork, TorchTransformer, _torch, to_nchw, torch_available


def _pictures(rng, n, size):
    """n made-up photos (n, size, size, 3), RGB 0..255 float32: colour waves and grain."""
    yy, xx = np.mgrid[0:size, 0:size] / size
    out = np.empty((n, size, size, 3), np.float32)
    for i in range(n):
        for c in range(3):
            fy, fx, phase = rng.uniform(1, 6, 3)
            out[i, :, :, c] = 128 + 90 * np.sin(2 * np.pi * (fy * yy + fx * xx) + phase)
    return np.clip(out + rng.normal(0, 15, out.shape), 0, 255).astype(np.float32)


def measure_training(model="squeezenet", size=training.DEFAULT_CROP, batch=None, repeats=5,
                     warmup=1, threads=None, use_torch=True, pretrained=False, seed=0):
    """Time training steps of scratchnst and PyTorch in this process, interleaved.

    Returns:
        dict: model, size, batch, widths, residual_blocks, outer_kernel, parameters, scratchnst_seconds and
        pytorch_seconds [per round] (None without torch), pytorch ("used", "not installed",
        "not asked"), loss_difference (|J_ours - J_torch| / |J_torch|) and grad_difference (the
        largest over the parameters of ||g_ours - g_torch|| / ||g_torch||), torch_version,
        torch_threads, blas.
    """
    if batch is None:   # as `scratchnst train` takes it on these threads: one photo for each
        batch = threads if threads is not None else training.default_batch()
    rng = np.random.default_rng(seed)
    d = MODEL_DEFAULTS[model]
    network = make_network(model, seed, pretrained)
    network = type(network)(network.name, network.params, pooling=d.pool, preprocessing=network.preprocessing)
    params = transformer_net.init_params(rng, widths=training.TRAIN_WIDTHS, residual_blocks=training.TRAIN_RESIDUAL_BLOCKS,
                                         outer_kernel=training.TRAIN_OUTER_KERNEL,
                                         noise_channels=training.TRAIN_NOISE_CHANNELS)
    mode = network.preprocessing
    # the photos and their noise planes, as training gives them to both
    x = transformer_net.network_input(params, training.preprocess_batch(_pictures(rng, batch, size), mode), mode, rng)
    style_x = image.preprocess(_pictures(rng, 1, training.DEFAULT_SIZE)[0], mode)   # the style at its training size
    layers = (d.content_layer, list(d.style_layers), d.alpha * training.TRAIN_ALPHA_FACTOR, d.beta, 0.0)
    count = min(parallel.workers(), batch) - 1   # as training runs it: the other pieces in helper processes
    losses = training.make_loss_functions(network, style_x, *layers, count=1 if count > 0 else None)
    with training_processes.Helpers(count, network, losses[0].targets, *layers) if count > 0 \
            else contextlib.nullcontext() as helpers:
        def step():
            with parallel.hold(pieces=False):  # as training runs it
                return training.batch_loss_and_grads(params, x, losses, mode, helpers)

        ours = _timed(step)
        functions = {"scratchnst": ours}
        result = {"model": model, "size": size, "batch": batch, "widths": list(training.TRAIN_WIDTHS),
                  "residual_blocks": training.TRAIN_RESIDUAL_BLOCKS, "outer_kernel": training.TRAIN_OUTER_KERNEL,
                  "noise_channels": training.TRAIN_NOISE_CHANNELS,
                  "parameters": transformer_net.count_parameters(params), "torch_version": None, "torch_threads": None,
                  "loss_difference": None, "grad_difference": None}
        pytorch = ("used" if torch_available() else "not installed") if use_torch else "not asked"
        if pytorch == "used":
            torch = _torch()
            if threads is not None:
                torch.set_num_threads(threads)
            tnet, transformer = TorchNetwork(network), TorchTransformer(params, mode)
            torch_loss = tnet.training_loss(style_x, *layers)
            x_t = to_nchw(x)
            functions["pytorch"] = _timed(lambda: transformer.training_step(x_t, torch_loss))
            J, grads, _ = step()
            J_t, grads_t = transformer.training_step(x_t, torch_loss)
            worst = 0.0
            for name, g in grads.items():
                theirs = grads_t[name].numpy()
                theirs = theirs.transpose(2, 3, 1, 0) if name.endswith("/kernel") else theirs
                worst = max(worst, float(np.linalg.norm(g - theirs) / max(np.linalg.norm(theirs), 1e-30)))
            result.update(torch_version=torch.__version__, torch_threads=torch.get_num_threads(),
                          loss_difference=abs(J - J_t) / abs(J_t), grad_difference=worst)
        timed = time_interleaved(functions, repeats, warmup)
        result.update(pytorch=pytorch, scratchnst_seconds=[r[0] for r in timed["scratchnst"]],
                      pytorch_seconds=[r[0] for r in timed["pytorch"]] if "pytorch" in timed else None,
                      blas=blas_info())
        return result


if __name__ == "__main__":  # the worker process of the training row (bench.run_worker)
    sys.exit(_worker_main(tasks={"training": measure_training}, prog="python -m scratchnst.cli.bench_training"))

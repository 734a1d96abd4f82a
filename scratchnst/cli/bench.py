"""`scratchnst bench`: one style-transfer step in scratchnst and in PyTorch, side by side.

A step is what each iteration of `stylize` costs in the network: the forward pass from the pixels
to the deepest layer in use and the backward pass from the gradients at the layers in use back to
the pixels, without weight gradients (the weights are fixed, only the pixels change). The costs
(Gram matrices and the rest) are left out: a few small matrix products, the same in both.

For each network and image size, on the same weights, the same input and the same threads:

    time     steps of each library in turn (scratchnst, PyTorch, scratchnst, ...) after warm-up
             steps, so that both see the same load on the machine; the median of the repeats.
    convs    each convolution + ReLU alone, forward and backward, the median of as many repeats
             (each library's repeats in a row): where the time of a step goes.
    memory   the peak resident memory of one step above what the process held before it, each
             library in a fresh process (see `peak_rss_of`).

The PyTorch network is built here from the scratchnst network's own arrays, moved to PyTorch's
layout: activations (N, H, W, C) -> (N, C, H, W) by a.transpose(0, 3, 1, 2), kernels
(KH, KW, C_in, C_out) -> (C_out, C_in, KH, KW) by w.transpose(3, 2, 0, 1). It uses
torch.nn.functional's conv2d, relu (in place, as torchvision's VGG and SqueezeNet do), max_pool2d
and cat; its gradient with respect to the pixels is compared with ours ("dx differs by").

The weights are random by default (He-normal, seeded): the time of a step depends on the shapes,
not on the values, and the bench then needs no weights file. --pretrained loads the real ones.

Each measurement runs in a process of its own (`python -m scratchnst.cli.bench --worker ...`): NumPy's
BLAS takes its number of threads from the environment when NumPy is imported, and a fresh process
is the only honest baseline for peak memory.
"""

import argparse
import ctypes
import gc
import json
import math
import os
import platform
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

from scratchnst import fast_conv, json_text, layers, networks, parallel
from scratchnst import weights as weights_io
from scratchnst.torch_network import TorchNetwork, _torch, to_nchw, torch_available
from scratchnst.cpus import available_cpus
from scratchnst.errors import UsageError, UserError
from scratchnst.settings import check_seed

MODELS = ("vgg19", "squeezenet")

# The layers a step gives gradients to: the default style and content layers of `stylize`, and the
# deepest layer measured (the step runs the network that far: VGG-19 to block5_conv1, SqueezeNet to
# fire9).
BENCH_LAYERS = {
    "vgg19": ("block1_conv1", "block2_conv1", "block3_conv1", "block4_conv1", "block4_conv2", "block5_conv1"),
    "squeezenet": ("conv1", "fire2", "fire3", "fire4", "fire5", "fire9"),
}

# Seconds of rest before a library takes its turn. OpenBLAS's idle threads keep spinning for about
# 0.1 s after a call returns, competing for the cores with whatever runs next: measured here, a
# PyTorch convolution started within 0.05 s of a NumPy matrix product took 1.6-2x as long as one
# started 0.2 s later.
SWITCH_PAUSE = 0.2

# The environment variables through which the BLAS and OpenMP libraries take their thread count.
THREAD_VARIABLES = ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS", "VECLIB_MAXIMUM_THREADS")


# ------------------------------------------------------------------------------ the step
def random_params(model, seed=0, dtype=np.float32):
    """Random weights of the right shapes for a network.

    Args:
        model: "vgg19" or "squeezenet".
        seed: of np.random.default_rng.
        dtype: of the arrays.

    Returns:
        {conv layer: (kernel (KH, KW, C_in, C_out), bias (C_out,))}: He-normal kernels,
        std = sqrt(2 / (KH*KW*C_in)), which keep activations on the same scale layer after layer
        (no overflow, no denormals to slow anything down), and zero biases.
    """
    rng = np.random.default_rng(seed)
    params = {}
    for layer, (kernel_shape, bias_shape) in networks.ARCHITECTURES[model].weight_shapes.items():
        KH, KW, C_in, _ = kernel_shape
        kernel = rng.standard_normal(kernel_shape) * np.sqrt(2.0 / (KH * KW * C_in))
        params[layer] = (kernel.astype(dtype), np.zeros(bias_shape, dtype=dtype))
    return params


def make_network(model, seed=0, pretrained=False):
    """The scratchnst network to time: random weights, or the pretrained file (UserError if missing)."""
    if pretrained:
        return networks.load(model)
    return networks.Network(model, random_params(model, seed))


def make_inputs(network, size, seed=0):
    """An input image and the upstream gradients of one step.

    Args:
        network: a scratchnst Network ("vgg19" or "squeezenet").
        size: the image is size x size pixels.
        seed: of np.random.default_rng.

    Returns:
        x: (1, size, size, 3) float32, uniform in [-120, 150] (pixels as the Caffe
            preprocessing leaves them).
        grads: {layer: (1, H_l, W_l, C_l) float32}, standard normal, for each of BENCH_LAYERS.
    """
    rng = np.random.default_rng(seed)
    x = rng.uniform(-120.0, 150.0, (1, size, size, 3)).astype(network.dtype)
    shapes = {layer: a.shape for layer, a in network.forward(x, BENCH_LAYERS[network.name]).items()}
    grads = {layer: rng.standard_normal(shape).astype(network.dtype) for layer, shape in shapes.items()}
    return x, grads


def scratchnst_step(network, x, grads):
    """One step in scratchnst: forward to the deepest layer of `grads`, backward to the pixels -> dx.

    As `stylize` runs it: BLAS on one thread per call, the layers split across the cores (`parallel.hold`).
    """
    with parallel.hold():
        network.forward(x, list(grads))
        return network.backward(grads)


# ------------------------------------------------------------------------------ measuring
def time_interleaved(functions, repeats, warmup):
    """Run functions in turn, warm-up rounds first, and collect what each returns per timed round.

    Args:
        functions: {name: f}; f() runs the work once and returns a tuple of seconds it measured
            itself (e.g. (forward, backward)).
        repeats: timed rounds; warmup: untimed rounds before them.

    Returns:
        {name: [tuple of seconds per timed round]}. One round calls every function once, in the
        order given, each after a pause of SWITCH_PAUSE, so that a change of load on the machine
        falls on all of them alike.
    """
    results = {name: [] for name in functions}
    for round_ in range(warmup + repeats):
        for name, f in functions.items():
            time.sleep(SWITCH_PAUSE)
            seconds = f()
            if round_ >= warmup:
                results[name].append(seconds)
    return results


def time_block(f, repeats, warmup):
    """Run f warmup + repeats times in a row after a pause of SWITCH_PAUSE; [what f returned when timed]."""
    time.sleep(SWITCH_PAUSE)
    return [f() for _ in range(warmup + repeats)][warmup:]


def _timed(f):
    """f() -> (seconds it took,)."""
    def run():
        start = time.perf_counter()
        f()
        return (time.perf_counter() - start,)

    return run


def _median(rounds, index=0):
    return float(np.median([r[index] for r in rounds]))


def conv_inputs(network, x):
    """[(step, input activation (N, H, W, C_in))] of every conv step of a bench step, in order."""
    arch = network.arch
    deepest = max(arch.index[arch.resolve(layer)] for layer in BENCH_LAYERS[network.name])
    acts = {"input": x, **network.forward(x, list(network.layer_names[:deepest + 1]))}
    return [(step, acts[step.inputs[0]]) for step in network.arch.steps
            if step.op == "conv" and step.name in acts]


def conv_breakdown(network, x, repeats, warmup, torch_network=None, seed=0):
    """Forward and backward time of each convolution + ReLU alone, in scratchnst and PyTorch.

    Args:
        network: the scratchnst Network; x: its input (1, H, W, 3).
        repeats, warmup: as time_interleaved.
        torch_network: a TorchNetwork of the same network, or None for scratchnst alone.
        seed: of the upstream gradients.

    Returns:
        list of dicts, one per conv layer in forward order: layer, input (H, W, C_in),
        kernel (KH, KW, C_in, C_out), stride, and medians in seconds: scratchnst_forward,
        scratchnst_backward, pytorch_forward, pytorch_backward (None without PyTorch).
        Forward = conv2d_forward + relu_forward; backward = relu_backward + conv2d_backward
        without weight gradients (the input gradient only, as in a step). A layer takes well
        under a second: its repeats run in a row, scratchnst's then PyTorch's (time_block), which
        needs two pauses per layer where interleaving would need two per repeat.
    """
    rng = np.random.default_rng(seed)
    rows = []
    for step, a in conv_inputs(network, x):
        kernel, bias = network.params[step.name]
        spec = step.spec
        N, H, W, _ = a.shape
        H_out = layers.conv_output_size(H, spec.size, spec.stride, spec.padding)[0]
        W_out = layers.conv_output_size(W, spec.size, spec.stride, spec.padding)[0]
        g = rng.standard_normal((N, H_out, W_out, kernel.shape[3])).astype(a.dtype)  # dJ/d(ReLU output)

        def ours(a=a, kernel=kernel, bias=bias, spec=spec, g=g):
            with parallel.hold():  # as a step runs it (scratchnst_step)
                start = time.perf_counter()
                out, cache = fast_conv.conv2d_relu_forward(a, kernel, bias, spec.stride, spec.padding)
                middle = time.perf_counter()
                fast_conv.conv2d_relu_backward(g, cache)
                return middle - start, time.perf_counter() - middle

        timed = {"scratchnst": time_block(ours, repeats, warmup)}
        if torch_network is not None:
            a_t, g_t = to_nchw(a), to_nchw(g)

            def theirs(a_t=a_t, g_t=g_t, layer=step.name, spec=spec):
                torch = torch_network.torch
                start = time.perf_counter()
                leaf = a_t.detach().requires_grad_()
                out = torch_network.conv_relu(layer, spec, leaf)
                middle = time.perf_counter()
                torch.autograd.grad([out], [leaf], [g_t])
                return middle - start, time.perf_counter() - middle

            timed["pytorch"] = time_block(theirs, repeats, warmup)
        row = {"layer": step.name, "input": list(a.shape[1:]), "kernel": list(kernel.shape),
               "stride": spec.stride,
               "scratchnst_forward": _median(timed["scratchnst"], 0),
               "scratchnst_backward": _median(timed["scratchnst"], 1),
               "pytorch_forward": None, "pytorch_backward": None}
        if "pytorch" in timed:
            row["pytorch_forward"] = _median(timed["pytorch"], 0)
            row["pytorch_backward"] = _median(timed["pytorch"], 1)
        rows.append(row)
    return rows


def peak_rss_of(f):
    """Peak resident memory while f() runs, in bytes above the resident memory just before it.

    Linux keeps each process's high-water mark of resident memory (VmHWM in /proc/self/status);
    writing "5" to /proc/self/clear_refs resets it to the current resident size. So: release the
    heap's free memory (release_free_memory), reset, run, read. Everything the process touches
    counts (NumPy's arrays, BLAS buffers, PyTorch's allocator and its libraries' scratch space
    alike; tracemalloc would see NumPy's arrays only).

    Returns:
        bytes, or None where /proc does not offer this (not Linux).
    """
    release_free_memory()
    try:
        with open("/proc/self/clear_refs", "w") as clear:
            clear.write("5")
        before = _proc_status_kib("VmRSS")
    except OSError:
        f()
        return None
    f()
    return (_proc_status_kib("VmHWM") - before) * 1024


def release_free_memory():
    """Collect garbage and hand the C heap's free memory back to the system (glibc's malloc_trim).

    Memory that malloc keeps after a free still counts as resident; a later allocation reuses it
    without the resident size growing, so a peak measured from a baseline that holds it would come
    out too low. Elsewhere than glibc only the garbage collection happens.
    """
    gc.collect()
    try:
        ctypes.CDLL("libc.so.6").malloc_trim(0)
    except (OSError, AttributeError):
        pass


def _proc_status_kib(field):
    with open("/proc/self/status") as status:
        for line in status:
            if line.startswith(field + ":"):
                return int(line.split()[1])
    raise OSError(f"no {field} in /proc/self/status")


def blas_info():
    """What NumPy multiplies matrices with: {"name", "version", "threads", "architecture"} as known.

    threadpoolctl, if installed, reports the library actually loaded and its thread count; else
    NumPy's build configuration names the library and the thread count is unknown.
    """
    try:
        from threadpoolctl import threadpool_info
    except ImportError:
        pass
    else:
        numpy_dir = str(Path(np.__file__).resolve().parent.parent)
        for pool in threadpool_info():
            if pool.get("user_api") == "blas" and pool.get("filepath", "").startswith(numpy_dir):
                return {"name": pool.get("internal_api"), "version": pool.get("version"),
                        "threads": pool.get("num_threads"), "architecture": pool.get("architecture")}
    try:
        blas = np.show_config(mode="dicts")["Build Dependencies"]["blas"]
        return {"name": blas.get("name"), "version": blas.get("version"), "threads": None, "architecture": None}
    except Exception:  # older NumPy: no mode="dicts"; the library stays unnamed
        return {"name": None, "version": None, "threads": None, "architecture": None}


# ---------------------------------------------------------------------- worker processes
def measure_time(model, size, repeats=5, warmup=1, threads=None, use_torch=True, pretrained=False, seed=0,
                 convs=True):
    """Time steps of scratchnst and PyTorch in this process; see the module docstring.

    Args:
        model: "vgg19" or "squeezenet"; size: the image is size x size pixels.
        repeats, warmup: timed and untimed rounds (time_interleaved).
        threads: torch.set_num_threads(threads) if given (NumPy's are set by the environment).
        use_torch: False to time scratchnst alone; PyTorch is also left out if it cannot be imported.
        pretrained: the real weights instead of random ones.
        seed: of the weights, the input and the gradients.
        convs: also time each convolution alone (conv_breakdown).

    Returns:
        dict: model, size, layers, scratchnst_seconds [per round], pytorch_seconds [per round] or
        None, pytorch ("used", "not installed" or "not asked"), dx_difference
        (||dx_ours - dx_torch|| / ||dx_torch||) or None, convs [rows of conv_breakdown] or None,
        blas (blas_info()), torch_version, torch_threads.
    """
    network = make_network(model, seed, pretrained)
    x, grads = make_inputs(network, size, seed)
    functions = {"scratchnst": _timed(lambda: scratchnst_step(network, x, grads))}
    torch_network, pytorch = None, "not asked"
    result = {"model": model, "size": size, "layers": list(BENCH_LAYERS[model]),
              "torch_version": None, "torch_threads": None, "dx_difference": None}
    if use_torch:
        pytorch = "used" if torch_available() else "not installed"
    if pytorch == "used":
        torch = _torch()
        if threads is not None:
            torch.set_num_threads(threads)
        torch_network = TorchNetwork(network)
        x_t = to_nchw(x)
        grads_t = {network.arch.resolve(layer): to_nchw(g) for layer, g in grads.items()}
        functions["pytorch"] = _timed(lambda: torch_network.step(x_t, grads_t))
        ours = scratchnst_step(network, x, grads)
        theirs = torch_network.step(x_t, grads_t).numpy().transpose(0, 2, 3, 1)
        result.update(torch_version=torch.__version__, torch_threads=torch.get_num_threads(),
                      dx_difference=float(np.linalg.norm(ours - theirs) / np.linalg.norm(theirs)))
    timed = time_interleaved(functions, repeats, warmup)
    result.update(
        pytorch=pytorch,
        scratchnst_seconds=[r[0] for r in timed["scratchnst"]],
        pytorch_seconds=[r[0] for r in timed["pytorch"]] if "pytorch" in timed else None,
        convs=conv_breakdown(network, x, repeats, warmup, torch_network, seed) if convs else None,
        blas={**blas_info(), "workers": parallel.workers()},
    )
    return result


def measure_memory(model, size, library, threads=None, pretrained=False, seed=0):
    """Peak memory of one step of `library` ("scratchnst" or "pytorch"), in this process.

    The libraries are warmed up first by a step on a small image (their thread pools, buffers and
    kernels are set up once per process, and a user pays for that once per run), then the memory
    of one step at `size` is measured by peak_rss_of, with the network, the input and the
    gradients already in memory.

    Returns:
        {"library", "model", "size", "peak_bytes": int or None (not Linux)}.
    """
    network = make_network(model, seed, pretrained)
    small = max(64, network.min_input_size_for(BENCH_LAYERS[model]))
    x_small, grads_small = make_inputs(network, small, seed)
    x, grads = make_inputs(network, size, seed)
    if library == "scratchnst":
        scratchnst_step(network, x_small, grads_small)  # also drops the caches make_inputs left
        step = lambda: scratchnst_step(network, x, grads)  # noqa: E731
    else:
        torch = _torch()
        if threads is not None:
            torch.set_num_threads(threads)
        torch_network = TorchNetwork(network)
        resolve = network.arch.resolve
        torch_network.step(to_nchw(x_small), {resolve(k): to_nchw(g) for k, g in grads_small.items()})
        scratchnst_step(network, x_small, grads_small)  # drop the large caches make_inputs left
        x_t, grads_t = to_nchw(x), {resolve(k): to_nchw(g) for k, g in grads.items()}
        step = lambda: torch_network.step(x_t, grads_t)  # noqa: E731
    return {"library": library, "model": model, "size": size, "peak_bytes": peak_rss_of(step)}


def measure_floor(threads=None, size=2048, repeats=5, warmup=1):
    """The machine's floor for a step made of matrix products: NumPy's sgemm against PyTorch's.

    Both multiply the same two size x size float32 matrices on the same threads, interleaved.
    A style-transfer step is mostly such products, so its scratchnst / PyTorch ratio cannot go
    much below this one: what is above it is time spent outside the products.

    Returns:
        dict: size, numpy_gflops, pytorch_gflops (None without torch), ratio (NumPy time / PyTorch time).
    """
    rng = np.random.default_rng(0)
    a, b = (rng.standard_normal((size, size), dtype=np.float32) for _ in range(2))
    functions = {"numpy": _timed(lambda: a @ b)}
    if torch_available():
        torch = _torch()
        if threads is not None:
            torch.set_num_threads(threads)
        a_t, b_t = torch.from_numpy(a), torch.from_numpy(b)
        functions["pytorch"] = _timed(lambda: torch.mm(a_t, b_t))
    timed = time_interleaved(functions, repeats, warmup)
    flops = 2.0 * size**3
    seconds = {name: float(np.median([r[0] for r in rounds])) for name, rounds in timed.items()}
    theirs = seconds.get("pytorch")
    return {"size": size, "numpy_gflops": flops / seconds["numpy"] / 1e9,
            "pytorch_gflops": None if theirs is None else flops / theirs / 1e9,
            "ratio": None if theirs is None else seconds["numpy"] / theirs}


def _worker_main(argv=None, tasks=None, prog="python -m scratchnst.cli.bench"):
    """`python -m scratchnst.cli.bench --worker JSON`: run one measurement, print its result as JSON.

    tasks: {kind: function(**task)} of another module's measurements (bench_training runs its own
    worker through this one, so that this module never imports it back).
    """
    parser = argparse.ArgumentParser(prog=prog)
    parser.add_argument("--worker", required=True, metavar="JSON", help="the task, as run_worker sends it")
    task = json.loads(parser.parse_args(argv).worker)
    kind = task.pop("task")
    try:
        if kind == "quality":
            from scratchnst.cli.bench_quality import measure_quality  # needs torch and real weights

            result = measure_quality(**task)
        elif tasks and kind in tasks:
            result = tasks[kind](**task)
        else:
            result = {"time": measure_time, "memory": measure_memory, "floor": measure_floor}[kind](**task)
    except UserError as error:
        result = {"error": str(error), "exit_status": error.exit_status}
    except MemoryError:
        result = {"error": f"out of memory measuring {task.get('model')} at {task.get('size')} pixels; use "
                           "smaller --sizes (or --no-memory, --no-convs)", "exit_status": 1}
    print(json.dumps(result))
    return 0


def run_worker(task, threads, module="scratchnst.cli.bench"):
    """Run one task in a fresh Python process on `threads` cores.

    Args:
        task: {"task": "time" or "memory", **keyword arguments of measure_time / measure_memory}.
        threads: set in THREAD_VARIABLES before NumPy and PyTorch load (PyTorch's threads); for
            every task but the floor (NumPy's own sgemm), scratchnst runs as the command line runs
            it: NumPy's BLAS on one thread and `threads` workers (`parallel.environment`).
        module: the module whose `--worker` runs it (scratchnst.cli.bench_training for "training").

    Returns:
        the worker's result dict.

    Raises:
        UserError: what the worker could not do for a reason the user can fix (a missing file,
            too little memory), a UsageError if it was one there.
        RuntimeError: the worker crashed (a bug), with its error output.
    """
    env = dict(os.environ, **{name: str(threads) for name in THREAD_VARIABLES})
    if threads is not None and task.get("task") != "floor":
        env.update(parallel.environment(threads))
    package_root = str(Path(__file__).resolve().parent.parent)  # import this very scratchnst
    env["PYTHONPATH"] = os.pathsep.join([package_root] + [p for p in [env.get("PYTHONPATH")] if p])
    done = subprocess.run([sys.executable, "-m", module, "--worker", json.dumps(task)],
                          env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    lines = done.stdout.strip().splitlines()
    if done.returncode < 0:  # killed: by the kernel's out-of-memory killer, most often
        raise UserError(f"the bench worker measuring {task.get('model')} at {task.get('size')} pixels was killed "
                        f"by signal {-done.returncode} (out of memory?); use smaller --sizes")
    if done.returncode != 0 or not lines:
        raise RuntimeError(f"bench worker for {task} failed (exit status {done.returncode}):\n{done.stderr}")
    result = json.loads(lines[-1])
    if "error" in result:
        kind = UsageError if result.get("exit_status") == UsageError.exit_status else UserError
        raise kind(result["error"])
    return result


# ------------------------------------------------------------------------------ the command
def _cpu_name():
    try:
        with open("/proc/cpuinfo") as cpuinfo:
            for line in cpuinfo:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def _load_average():
    try:
        return round(os.getloadavg()[0], 2)
    except (AttributeError, OSError):
        return None


MAX_SIZE = 8192   # the largest --sizes


def check_settings(models, sizes, repeats=5, warmup=1, threads=None, seed=0):
    """UsageError for a setting the bench cannot run with; returns the thread count to use."""
    threads = available_cpus() if threads is None else threads
    for name, value, least in (("repeats", repeats, 1), ("warmup", warmup, 0), ("threads", threads, 1),
                               ("seed", seed, 0)):
        if value < least:
            raise UsageError(f"--{name} must be at least {least}, got {value}")
    for model in models:
        if model not in BENCH_LAYERS:
            raise UsageError(f"unknown model {model!r}: choose from {', '.join(MODELS)}")
        arch = networks.ARCHITECTURES[model]
        smallest = max(arch.min_input_sizes[arch.resolve(layer)] for layer in BENCH_LAYERS[model])
        for size in sizes:
            if size < smallest:
                raise UsageError(f"--sizes {size} is too small for {model} up to {BENCH_LAYERS[model][-1]}: "
                                 f"use sizes of at least {smallest}")
            if size > MAX_SIZE:
                raise UsageError(f"--sizes {size} is larger than the bench measures ({MAX_SIZE} px; a VGG-19 step "
                                 f"there already needs tens of GB): use sizes of at most {MAX_SIZE}")
    check_seed(seed)
    return threads


def run_benchmarks(models=MODELS, sizes=(256, 512), repeats=5, warmup=1, threads=None, use_torch=True,
                   pretrained=False, seed=0, convs=True, memory=True, progress=None, floor=True, quality=None,
                   training=True):
    """Measure every (model, size), each in worker processes; returns the report (a JSON-able dict).

    Args:
        models, sizes: what to measure (sizes in pixels, the side of a square image).
        repeats, warmup, seed, pretrained: as measure_time.
        threads: for both libraries; None means every CPU this process may use.
        use_torch: False to measure scratchnst alone.
        convs: time each convolution too; memory: measure peak memory too.
        progress: a stream for one line per measurement as it starts, or None.
        floor: measure the machine's floor, NumPy's sgemm against PyTorch's (`measure_floor`).
        quality: None, or {"content", "style", "weights", "iters", "repeats"}: add the time-to-quality
            row, scratchnst's stylize against torch.optim.LBFGS (scratchnst.cli.bench_quality), run
            `repeats` times (default 1), each run one library then the other: `median_quality`.
        training: add the training-step row, one step of training a real-time style network
            (SqueezeNet as the loss network, the training's default crop and batch; cli.bench_training).

    Returns:
        {"machine": {...}, "settings": {...}, "results": [one dict per (model, size): measure_time's
        result plus scratchnst_median, pytorch_median, ratio (scratchnst / PyTorch), memory
        {"scratchnst_bytes", "pytorch_bytes", "ratio"}, load_before, load_after]}.

    Raises:
        UsageError: an unknown model, a size below what the model's layers need, a count below 1,
            a negative seed.
        UserError: with pretrained=True, a weights file missing or broken (before anything runs).
    """
    threads = check_settings(models, sizes, repeats, warmup, threads, seed)
    if pretrained:
        # The workers load the weights again; loading them here first stops a missing or broken
        # file with its one line before any measurement (and any progress line) starts.
        for model in models:
            networks.load(model, weights=weights_io.find_weights(model, weights_flag=None))  # bench has no --weights

    def say(text):
        if progress is not None:
            print(text, file=progress, flush=True)

    results, info = [], {}
    started, rows = time.perf_counter(), len(models) * len(sizes)
    for model in models:
        for size in sizes:
            say(f"bench: row {len(results) + 1} of {rows}, {model} at {size}x{size}: timing steps"
                f"{' and convolutions' if convs else ''}...")
            load_before = _load_average()
            result = run_worker({"task": "time", "model": model, "size": size, "repeats": repeats,
                                 "warmup": warmup, "threads": threads, "use_torch": use_torch,
                                 "pretrained": pretrained, "seed": seed, "convs": convs}, threads)
            # the libraries are the same in every worker: keep what the first one reports
            found = {key: result.pop(key) for key in ("blas", "torch_version", "torch_threads")}
            info = info or found
            result["scratchnst_median"] = float(np.median(result["scratchnst_seconds"]))
            result["pytorch_median"] = (float(np.median(result["pytorch_seconds"]))
                                        if result["pytorch_seconds"] else None)
            result["ratio"] = (result["scratchnst_median"] / result["pytorch_median"]
                               if result["pytorch_median"] else None)
            result["memory"] = None
            if memory:
                libraries = ["scratchnst"] + (["pytorch"] if result["pytorch"] == "used" else [])
                peaks = {}
                for library in libraries:
                    say(f"bench: {model} at {size}x{size}: peak memory of {library}...")
                    peaks[library] = run_worker({"task": "memory", "model": model, "size": size,
                                                 "library": library, "threads": threads,
                                                 "pretrained": pretrained, "seed": seed}, threads)["peak_bytes"]
                ours, theirs = peaks.get("scratchnst"), peaks.get("pytorch")
                result["memory"] = {"scratchnst_bytes": ours, "pytorch_bytes": theirs,
                                    "ratio": ours / theirs if ours is not None and theirs else None}
            result["load_before"], result["load_after"] = load_before, _load_average()
            results.append(result)
            ratio = f", ratio {result['ratio']:.2f}" if result["ratio"] is not None else ""
            theirs = f", PyTorch {result['pytorch_median']:.3f} s" if result["pytorch_median"] is not None else ""
            say(f"bench: row {len(results)} of {rows} done: scratchnst {result['scratchnst_median']:.3f} s/step"
                f"{theirs}{ratio} ({time.perf_counter() - started:.0f} s so far)")
    floor_result = None
    if floor and use_torch and torch_available():
        say("bench: the floor, NumPy's sgemm against PyTorch's (2048x2048 float32)...")
        floor_result = run_worker({"task": "floor", "threads": threads, "repeats": repeats, "warmup": warmup},
                                  threads)
    training_result = None
    if training:
        say("bench: a training step of the real-time style network (batch of crops as `scratchnst train` takes)...")
        training_result = run_worker({"task": "training", "threads": threads, "repeats": repeats, "warmup": warmup,
                                      "use_torch": use_torch, "pretrained": pretrained, "seed": seed}, threads,
                                     module="scratchnst.cli.bench_training")
        training_result["scratchnst_median"] = float(np.median(training_result["scratchnst_seconds"]))
        theirs = training_result["pytorch_seconds"]
        training_result["pytorch_median"] = float(np.median(theirs)) if theirs else None
        training_result["ratio"] = (training_result["scratchnst_median"] / training_result["pytorch_median"]
                                    if theirs else None)
    quality_result = None
    if quality is not None and not any(r["pytorch"] == "used" for r in results):
        say("bench: no time-to-quality row: the measuring processes could not import PyTorch")
    elif quality is not None:
        problem = {key: value for key, value in quality.items() if key != "repeats"}
        runs = quality.get("repeats", 1)
        rounds = []
        for k in range(runs):
            say(f"bench: time to quality, run {k + 1} of {runs}: {quality['iters']} L-BFGS iterations of stylize, "
                "then of torch.optim.LBFGS (about 30 s)...")
            rounds.append(run_worker({"task": "quality", "threads": threads, **problem}, threads))
        quality_result = median_quality(rounds)
        say(f"bench: time to quality done ({time.perf_counter() - started:.0f} s so far)")
    machine = {"cpu": _cpu_name(), "cpus": os.cpu_count(), "system": f"{platform.system()} {platform.machine()}",
               "python": platform.python_version(), "numpy": np.__version__, **info,
               "openblas_coretype": os.environ.get("OPENBLAS_CORETYPE")}
    settings = {"threads": threads, "repeats": repeats, "warmup": warmup, "weights": "pretrained" if pretrained
                else f"random (He-normal, seed {seed})", "pause_seconds": SWITCH_PAUSE,
                "memory_method": "peak resident memory (Linux VmHWM) of one step above the resident memory "
                                 "before it, each library in a fresh process after a warm-up step on a small image"}
    return {"machine": machine, "settings": settings, "results": results, "floor": floor_result,
            "quality": quality_result, "training": training_result}


def median_quality(rounds):
    """The time-to-quality row from several runs of `bench_quality.measure_quality`.

    Args:
        rounds: the runs' results, each a run of both libraries, one after the other (so that the
            runs interleave the libraries).

    Returns:
        the first run's dict (settings, final costs, evaluations: both optimisations are
        deterministic, every run ends on the same images) with each time the median over the runs:
        "time_to_quality" the median of the runs' own ratios, "seconds_to_pytorch_cost" of their
        times to PyTorch's cost (a run that never got there counts as the slowest; None when the
        median run is one of those); "time_to_quality_runs" every run's ratio, "runs" their number.
    """
    def median(values):  # None: never reached
        middle = float(np.median([math.inf if v is None else v for v in values]))
        return middle if math.isfinite(middle) else None

    return {**rounds[0],
            "runs": len(rounds),
            "scratchnst_seconds": float(np.median([r["scratchnst_seconds"] for r in rounds])),
            "pytorch_seconds": float(np.median([r["pytorch_seconds"] for r in rounds])),
            "seconds_to_pytorch_cost": median([r["seconds_to_pytorch_cost"] for r in rounds]),
            "time_to_quality": median([r["time_to_quality"] for r in rounds]),
            "time_to_quality_runs": [r["time_to_quality"] for r in rounds]}


# ------------------------------------------------------------------------------ the table
def _table(header, rows, right=()):
    """Lines of a plain-text table; columns whose index is in `right` are right-aligned."""
    widths = [max(len(str(row[i])) for row in [header] + rows) for i in range(len(header))]

    def line(row):
        cells = [str(c).rjust(w) if i in right else str(c).ljust(w) for i, (c, w) in enumerate(zip(row, widths))]
        return "  ".join(cells).rstrip()

    return [line(header), "  ".join("-" * w for w in widths)] + [line(row) for row in rows]


def _fmt(value, spec, missing="-"):
    return missing if value is None else format(value, spec)


def _mb(nbytes):
    return None if nbytes is None else nbytes / 2**20


def format_report(report):
    """The report of run_benchmarks as text: the steps table, then each network's convolutions."""
    machine, settings = report["machine"], report["settings"]
    blas = machine.get("blas") or {}
    blas_text = " ".join(str(v) for v in (blas.get("name"), blas.get("version")) if v) or "BLAS unknown"
    if blas.get("architecture"):
        blas_text += f", {blas['architecture']} kernels"
    if blas.get("workers"):
        blas_text += f"; scratchnst's layers split across {blas['workers']} worker(s), one BLAS thread each"
    torch_text = f"PyTorch {machine['torch_version']}" if machine.get("torch_version") else "PyTorch not used"
    out = [
        "One style-transfer step: forward to the deepest layer, backward to the pixels, no weight gradients.",
        f"machine: {machine['cpu']}, {machine['cpus']} CPUs, {machine['system']}; Python {machine['python']}, "
        f"NumPy {machine['numpy']} ({blas_text}), {torch_text}",
        f"settings: {settings['threads']} threads each, {settings['weights']} weights, median of "
        f"{settings['repeats']} after {settings['warmup']} warm-up, the libraries interleaved",
    ]
    if machine.get("openblas_coretype"):
        out.append(f"note: OPENBLAS_CORETYPE={machine['openblas_coretype']} is set; it may slow NumPy down")
    floor = report.get("floor")
    if floor and floor.get("ratio"):
        out.append(f"floor: a {floor['size']}x{floor['size']} float32 matrix product runs at "
                   f"{floor['numpy_gflops']:.0f} GFLOP/s in NumPy and {floor['pytorch_gflops']:.0f} in PyTorch, "
                   f"a ratio of {floor['ratio']:.2f}: a step made of matrix products cannot do much better")
    floor_ratio = floor["ratio"] if floor and floor.get("ratio") else None
    rows = []
    for r in report["results"]:
        memory = r["memory"] or {}
        torch_missing = r["pytorch"] if r["pytorch"] != "used" else "-"
        rows.append([
            r["model"], f"{r['size']}x{r['size']}", f"{r['scratchnst_median']:.3f}",
            _fmt(r["pytorch_median"], ".3f", torch_missing), _fmt(r["ratio"], ".2f"),
            _fmt(r["ratio"] / floor_ratio if r["ratio"] and floor_ratio else None, ".2f"),
            _fmt(_mb(memory.get("scratchnst_bytes")), ".0f"), _fmt(_mb(memory.get("pytorch_bytes")), ".0f"),
            _fmt(memory.get("ratio"), ".2f"), _fmt(r["dx_difference"], ".1e"),
            f"{_fmt(r['load_before'], '.1f')} -> {_fmt(r['load_after'], '.1f')}",
        ])
    out += [""] + _table(["network", "image", "scratchnst s", "PyTorch s", "time ratio", "over floor",
                          "scratchnst MB", "PyTorch MB", "memory ratio", "dx differs by", "load"], rows,
                         right=range(2, 10))
    out += ["",
            "s: median seconds of a step. ratio: scratchnst / PyTorch; over floor: that ratio divided by the",
            "floor's (1.00: as close to PyTorch as NumPy's matrix products allow). MB: peak resident memory of",
            "one step above the memory before it, each library in a fresh process after a warm-up step on a",
            "small image.",
            "dx differs by: ||dx_scratchnst - dx_PyTorch|| / ||dx_PyTorch|| (float32; a max pool may send a",
            "gradient to another cell where two inputs tie to round-off). load: the machine's load average",
            "(with 2 threads or more, scratchnst's helper processes, which spin on their cores during its steps,",
            "count in it: see scratchnst/piece_processes.py and awake_cores.py)."]
    train = report.get("training")
    if train:
        torch_missing = train["pytorch"] if train["pytorch"] != "used" else "-"
        out += ["", f"Training step of the real-time style network ({train['model']} loss network, "
                    f"{train['size']}x{train['size']}, batch {train['batch']}, transformer widths "
                    f"{'/'.join(map(str, train['widths']))} x {train['residual_blocks']} residual blocks, "
                    f"{train['outer_kernel']}x{train['outer_kernel']} outer kernels, "
                    f"{train.get('noise_channels', 0)} noise plane{'' if train.get('noise_channels') == 1 else 's'}, "
                    f"{train['parameters']:,} parameters): both networks forward and backward, every "
                    "parameter's gradient"]
        out += _table(["scratchnst s", "PyTorch s", "time ratio", "over floor", "loss differs by",
                       "gradients differ by"], [[
                           f"{train['scratchnst_median']:.3f}", _fmt(train["pytorch_median"], ".3f", torch_missing),
                           _fmt(train["ratio"], ".2f"),
                           _fmt(train["ratio"] / floor_ratio if train["ratio"] and floor_ratio else None, ".2f"),
                           _fmt(train["loss_difference"], ".1e"), _fmt(train["grad_difference"], ".1e")]],
                      right=range(0, 6))
    quality = report.get("quality")
    if quality:
        q = quality["settings"]
        out += ["", f"Time to quality: stylize against torch.optim.LBFGS on the same problem ({q['model']}, "
                    f"{q['pool']} pooling, {q['size']} px, {q['iters']} iterations each, same start, same threads)"]
        reached = quality["seconds_to_pytorch_cost"]
        out += _table(["library", "seconds", "evaluations", "final cost (scratchnst's)"], [
            ["scratchnst", f"{quality['scratchnst_seconds']:.1f}", str(quality["scratchnst_evaluations"]),
             f"{quality['scratchnst_cost']:.4g}"],
            ["PyTorch", f"{quality['pytorch_seconds']:.1f}", str(quality["pytorch_evaluations"]),
             f"{quality['pytorch_cost']:.4g}"],
        ], right=range(1, 4))
        runs = quality.get("time_to_quality_runs", [quality["time_to_quality"]])
        spread = ", ".join("never" if r is None else f"{r:.2f}" for r in runs)
        median = quality["time_to_quality"]
        if median is not None:
            out.append(f"time to quality: scratchnst reached PyTorch's final cost in {median:.2f} of PyTorch's time "
                       + (f"(after {reached:.1f} s)" if len(runs) == 1 else
                          f"(median of {len(runs)} runs, the libraries in turn: {spread}; after {reached:.1f} s)"))
        elif len(runs) == 1 or all(r is None for r in runs):
            out.append("time to quality: scratchnst never reached PyTorch's final cost in its iterations")
        else:
            out.append(f"time to quality: scratchnst did not reach PyTorch's final cost in the median run "
                       f"(runs, the libraries in turn: {spread})")
    for r in report["results"]:
        if not r["convs"]:
            continue
        rows, sums, have_torch = [], np.zeros(4), r["pytorch"] == "used"
        for c in r["convs"]:
            times = [c["scratchnst_forward"], c["scratchnst_backward"], c["pytorch_forward"], c["pytorch_backward"]]
            sums += [t or 0.0 for t in times]
            rows.append([c["layer"], "x".join(map(str, c["input"])), "x".join(map(str, c["kernel"])) +
                         (f" s{c['stride']}" if c["stride"] != 1 else "")] +
                        [_fmt(None if t is None else t * 1e3, ".1f") for t in times] +
                        [_fmt((times[0] + times[1]) / (times[2] + times[3]) if have_torch else None, ".2f")])
        rows.append(["all convolutions", "", ""] + [f"{s * 1e3:.0f}" if (i < 2 or have_torch) else "-"
                                                    for i, s in enumerate(sums)] +
                    [_fmt((sums[0] + sums[1]) / (sums[2] + sums[3]) if have_torch else None, ".2f")])
        out += ["", f"{r['model']} at {r['size']}x{r['size']}: each convolution + ReLU alone, ms (median; "
                    "bwd = the input gradient)"]
        out += _table(["layer", "input", "kernel", "scratchnst fwd", "bwd", "PyTorch fwd", "bwd", "ratio"],
                      rows, right=range(3, 8))
    return "\n".join(out)


def run_bench(models=MODELS, sizes=(256, 512), repeats=5, warmup=1, threads=None, use_torch=True,
              pretrained=False, seed=0, convs=True, memory=True, as_json=False, stream=None, progress=None,
              floor=True, quality=None, training=True):
    """`scratchnst bench`: measure, then print the table (or JSON) to stream; returns the exit status 0."""
    stream = stream or sys.stdout
    report = run_benchmarks(models, sizes, repeats, warmup, threads, use_torch, pretrained, seed, convs, memory,
                            progress=progress if progress is not None else sys.stderr, floor=floor, quality=quality,
                            training=training)
    print(json_text.dumps(report, indent=2) if as_json else format_report(report), file=stream)
    return 0


if __name__ == "__main__":
    sys.exit(_worker_main())

"""`scratchnst bench`: the same step in both libraries, the report's structure, and life without torch.

Tiny images and one repeat: these tests check what the bench computes and prints, never how fast
anything is (timings on a shared CI machine mean nothing).
"""

import json
import sys

import numpy as np
import pytest

from scratchnst import cli, networks
from scratchnst.cli import bench, bench_quality, bench_training
from scratchnst.errors import UsageError

SMALL = {"vgg19": 32, "squeezenet": 32}  # near the smallest images the bench layers accept (16, 31)
CONVS_UP_TO_DEEPEST = {"vgg19": 13, "squeezenet": 1 + 8 * 3}  # block1_conv1..block5_conv1; conv1, fire2..fire9


@pytest.fixture(autouse=True)
def no_pauses(monkeypatch):
    monkeypatch.setattr(bench, "SWITCH_PAUSE", 0.0)


@pytest.fixture
def hide_torch(monkeypatch):
    """Make `import torch` fail in this process, as if torch were not installed."""
    monkeypatch.setitem(sys.modules, "torch", None)


def in_process_worker(task, threads, module=None):
    """bench.run_worker without the subprocess, for fast tests of everything around it."""
    task = dict(task)
    kind = task.pop("task")
    if kind == "training":
        return bench_training.measure_training(**{**task, "size": 64})
    if kind == "floor":
        return bench.measure_floor(**{**task, "size": 64})
    if kind == "quality":
        return bench_quality.measure_quality(**{**task, "size": 64})
    return bench.measure_time(**task) if kind == "time" else bench.measure_memory(**task)


# --------------------------------------------------------------------------- the step itself
def test_random_params_have_the_network_shapes_and_he_scale():
    params = bench.random_params("vgg19", seed=3)
    shapes = networks.ARCHITECTURES["vgg19"].weight_shapes
    assert list(params) == list(shapes)
    for layer, (kernel, bias) in params.items():
        assert (kernel.shape, bias.shape) == shapes[layer]
        assert kernel.dtype == bias.dtype == np.float32
        KH, KW, C_in, _ = kernel.shape
        assert kernel.std() == pytest.approx(np.sqrt(2 / (KH * KW * C_in)), rel=0.1)
        assert not bias.any()


@pytest.mark.parametrize("model", ["vgg19", "squeezenet"])
def test_torch_network_computes_the_same_step(model, torch):
    network = bench.make_network(model, seed=1)
    x, grads = bench.make_inputs(network, SMALL[model] + 5, seed=1)  # odd sizes: floors of the pools
    ours = bench.scratchnst_step(network, x, grads)
    torch_network = bench.TorchNetwork(network)
    resolve = network.arch.resolve
    theirs = torch_network.step(bench.to_nchw(x), {resolve(k): bench.to_nchw(g) for k, g in grads.items()})
    theirs = theirs.numpy().transpose(0, 2, 3, 1)
    assert ours.shape == theirs.shape == x.shape
    assert np.linalg.norm(ours - theirs) / np.linalg.norm(theirs) < 1e-4  # float32, 13+ layers deep


def test_time_interleaved_alternates_and_drops_the_warmup():
    calls = []

    def recorder(name):
        def f():
            calls.append(name)
            return (len(calls),)
        return f

    results = bench.time_interleaved({"a": recorder("a"), "b": recorder("b")}, repeats=2, warmup=1)
    assert calls == ["a", "b"] * 3
    assert results == {"a": [(3,), (5,)], "b": [(4,), (6,)]}


def test_peak_rss_sees_an_allocation():
    size = 64 * 2**20
    peak = bench.peak_rss_of(lambda: np.ones(size // 8).sum())
    if peak is None:
        pytest.skip("peak resident memory is measured on Linux only")
    assert size * 0.9 < peak < size * 4


# ----------------------------------------------------------------------------- measurements
@pytest.mark.parametrize("model", ["vgg19", "squeezenet"])
def test_measure_time_reports_both_libraries(model, torch):
    result = bench.measure_time(model, SMALL[model], repeats=1, warmup=0, threads=1)
    assert result["pytorch"] == "used" and result["torch_threads"] == 1
    assert len(result["scratchnst_seconds"]) == len(result["pytorch_seconds"]) == 1
    assert all(t > 0 for t in result["scratchnst_seconds"] + result["pytorch_seconds"])
    assert result["dx_difference"] < 1e-4
    assert len(result["convs"]) == CONVS_UP_TO_DEEPEST[model]
    assert result["convs"][0]["layer"] == ("block1_conv1" if model == "vgg19" else "conv1")
    for row in result["convs"]:
        assert all(row[key] > 0 for key in ("scratchnst_forward", "scratchnst_backward",
                                             "pytorch_forward", "pytorch_backward"))
    json.dumps(result)  # what the worker sends must be JSON


def test_measure_time_without_torch(hide_torch):
    result = bench.measure_time("squeezenet", SMALL["squeezenet"], repeats=1, warmup=0)
    assert result["pytorch"] == "not installed"
    assert result["pytorch_seconds"] is None and result["dx_difference"] is None
    assert len(result["scratchnst_seconds"]) == 1
    assert all(row["pytorch_forward"] is None and row["scratchnst_forward"] > 0 for row in result["convs"])


@pytest.mark.parametrize("library", ["scratchnst", "pytorch"])
def test_measure_memory(library, torch):
    result = bench.measure_memory("squeezenet", 96, library)
    assert result["library"] == library
    if result["peak_bytes"] is not None:  # Linux
        # at least conv1's output (47 x 47 x 64 float32) must have been alive
        assert result["peak_bytes"] > 47 * 47 * 64 * 4


# ---------------------------------------------------------------------------- report and CLI
def test_report_table_and_json(monkeypatch, torch):
    monkeypatch.setattr(bench, "run_worker", in_process_worker)
    report = bench.run_benchmarks(models=["vgg19", "squeezenet"], sizes=[32], repeats=1, warmup=0, threads=1)
    assert [(r["model"], r["size"]) for r in report["results"]] == [("vgg19", 32), ("squeezenet", 32)]
    for r in report["results"]:
        assert r["ratio"] == pytest.approx(r["scratchnst_median"] / r["pytorch_median"])
        assert set(r["memory"]) == {"scratchnst_bytes", "pytorch_bytes", "ratio"}
    assert report["settings"]["threads"] == 1 and report["machine"]["blas"] is not None
    assert json.loads(json.dumps(report)) == report

    text = bench.format_report(report)
    assert "time ratio" in text and "memory ratio" in text
    for model in ("vgg19", "squeezenet"):
        assert f"{model} at 32x32: each convolution" in text
    assert "block5_conv1" in text and "fire9/expand3x3" in text and "all convolutions" in text
    assert "not installed" not in text
    train = report["training"]
    assert train["ratio"] == pytest.approx(train["scratchnst_median"] / train["pytorch_median"])
    assert "Training step of the real-time style network (squeezenet loss network, 64x64, batch 1" in text


@pytest.mark.parametrize("threads", [1, 2])
def test_the_training_step_is_the_same_step_in_both_libraries(torch, threads, monkeypatch):
    """With 2 threads, as `train --threads 2` runs it: a batch of two, the second photo in a helper process."""
    from scratchnst import parallel, training_processes

    started = []
    real = training_processes.Helpers
    monkeypatch.setattr(training_processes, "Helpers", lambda *args: started.append(args[0]) or real(*args))
    previous = parallel.set_workers(threads)
    try:
        result = bench_training.measure_training(size=32, repeats=1, warmup=0, threads=threads)
    finally:
        parallel.set_workers(previous)
    assert result["pytorch"] == "used" and result["parameters"] == 418803 and result["outer_kernel"] == 5
    assert result["noise_channels"] == 1
    assert result["batch"] == threads and started == ([1] if threads == 2 else [])
    assert result["loss_difference"] < 1e-4 and result["grad_difference"] < 3e-2  # float32 through two networks
    assert len(result["scratchnst_seconds"]) == len(result["pytorch_seconds"]) == 1


def test_floor_is_the_same_product_in_both_libraries(torch):
    floor = bench.measure_floor(threads=1, size=64, repeats=1, warmup=0)
    assert floor["size"] == 64 and floor["numpy_gflops"] > 0 and floor["pytorch_gflops"] > 0
    assert floor["ratio"] == pytest.approx(floor["pytorch_gflops"] / floor["numpy_gflops"])


def test_time_to_quality_judges_both_images_by_one_cost(squeezenet_weights_path, shared_image, torch):
    """A tiny problem: what the row computes, not how fast. The costs are scratchnst's own cost
    function of each library's final image; PyTorch's image lies in the pixel box."""
    result = bench_quality.measure_quality(str(shared_image("tubingen.jpg")), str(shared_image("starry_night.jpg")),
                                           weights=str(squeezenet_weights_path), threads=1, size=64, iters=4)
    assert result["settings"]["iters"] == 4 and result["settings"]["pool"] == "max"
    assert 0 < result["scratchnst_cost"] < float("inf") and 0 < result["pytorch_cost"] < float("inf")
    assert result["scratchnst_evaluations"] >= 5 and result["pytorch_evaluations"] >= 4
    if result["seconds_to_pytorch_cost"] is None:
        assert result["time_to_quality"] is None
    else:
        assert result["time_to_quality"] == pytest.approx(result["seconds_to_pytorch_cost"] / result["pytorch_seconds"])


def test_report_prints_the_floor_and_the_time_to_quality(monkeypatch, torch, squeezenet_weights_path, shared_image):
    monkeypatch.setattr(bench, "run_worker", in_process_worker)
    quality = {"content": str(shared_image("tubingen.jpg")), "style": str(shared_image("starry_night.jpg")),
               "weights": str(squeezenet_weights_path), "iters": 3, "repeats": 2}
    report = bench.run_benchmarks(models=["squeezenet"], sizes=[32], repeats=1, warmup=0, threads=1, convs=False,
                                  memory=False, quality=quality)
    assert report["floor"]["ratio"] > 0 and report["quality"]["settings"]["iters"] == 3
    text = bench.format_report(report)
    assert "floor: a 64x64 float32 matrix product" in text and "over floor" in text
    assert "Time to quality: stylize against torch.optim.LBFGS" in text and "time to quality:" in text
    assert report["quality"]["runs"] == 2 and len(report["quality"]["time_to_quality_runs"]) == 2
    if report["quality"]["time_to_quality"] is not None:
        assert "median of 2 runs" in text
    assert json.loads(json.dumps(report)) == report


def quality_run(ours, theirs, reached, cost=2.4e4):
    return {"settings": {"model": "squeezenet", "pool": "max", "size": 320, "iters": 200},
            "scratchnst_seconds": ours, "pytorch_seconds": theirs,
            "scratchnst_cost": cost, "pytorch_cost": 2.5e4, "scratchnst_evaluations": 215,
            "pytorch_evaluations": 213, "seconds_to_pytorch_cost": reached,
            "time_to_quality": None if reached is None else reached / theirs}


def test_the_time_to_quality_row_is_the_median_of_its_runs():
    rounds = [quality_run(13.0, 14.0, 11.2), quality_run(12.0, 16.0, 11.0), quality_run(14.0, 13.0, 11.7)]
    row = bench.median_quality(rounds)
    assert row["runs"] == 3 and row["time_to_quality_runs"] == pytest.approx([0.8, 11.0 / 16.0, 0.9])
    assert row["time_to_quality"] == pytest.approx(0.8)  # the runs' own ratios, not median over median
    assert (row["scratchnst_seconds"], row["pytorch_seconds"], row["seconds_to_pytorch_cost"]) == (13.0, 14.0, 11.2)
    assert row["scratchnst_cost"] == 2.4e4 and row["settings"]["iters"] == 200
    never = bench.median_quality([quality_run(13.0, 14.0, None)] * 2)
    assert never["time_to_quality"] is None and never["seconds_to_pytorch_cost"] is None
    mostly_never = bench.median_quality([quality_run(13.0, 14.0, None)] * 2 + [quality_run(13.0, 14.0, 7.0)])
    assert mostly_never["time_to_quality"] is None and mostly_never["seconds_to_pytorch_cost"] is None
    machine = {"cpu": "a CPU", "cpus": 2, "system": "Linux x86_64", "python": "3.11", "numpy": "2.4"}
    settings = {"threads": 1, "weights": "random", "repeats": 5, "warmup": 1}
    text = bench.format_report({"machine": machine, "settings": settings, "results": [], "floor": None,
                                "training": None, "quality": row})
    assert "0.80 of PyTorch's time (median of 3 runs, the libraries in turn: 0.80, 0.69, 0.90; after 11.2 s)" in text
    text = bench.format_report({"machine": machine, "settings": settings, "results": [], "floor": None,
                                "training": None, "quality": mostly_never})
    assert ("did not reach PyTorch's final cost in the median run (runs, the libraries in turn: never, never, 0.50)"
            in text)


def test_cli_quality_repeats():
    args = cli.build_parser().parse_args(["bench"])
    assert args.quality_repeats == 5
    assert cli.main(["bench", "--quality-repeats", "0"]) == UsageError.exit_status


def test_report_without_torch_says_so(monkeypatch, hide_torch):
    monkeypatch.setattr(bench, "run_worker", in_process_worker)
    report = bench.run_benchmarks(models=["squeezenet"], sizes=[32], repeats=1, warmup=0, threads=1)
    (result,) = report["results"]
    assert result["pytorch"] == "not installed" and result["ratio"] is None
    assert result["memory"]["pytorch_bytes"] is None and result["memory"]["ratio"] is None
    assert report["training"]["pytorch"] == "not installed" and report["training"]["ratio"] is None
    text = bench.format_report(report)
    assert "not installed" in text and "PyTorch not used" in text


@pytest.mark.parametrize("kwargs,message", [
    ({"sizes": [16]}, r"--sizes 16 is too small for squeezenet up to fire9: use sizes of at least 31"),
    ({"models": ["resnet"]}, "unknown model 'resnet'"),
    ({"repeats": 0}, "--repeats must be at least 1, got 0"),
    ({"warmup": -1}, "--warmup must be at least 0, got -1"),
    ({"threads": 0}, "--threads must be at least 1, got 0"),
])
def test_bad_settings_are_usage_errors(kwargs, message):
    settings = {"models": ["squeezenet"], "sizes": [32], **kwargs}
    with pytest.raises(UsageError, match=message):
        bench.run_benchmarks(**settings)


def test_cli_defaults():
    args = cli.build_parser().parse_args(["bench"])
    assert (args.models, args.sizes, args.repeats, args.warmup) == (["vgg19", "squeezenet"], [256, 512], 5, 1)
    assert not (args.json or args.no_torch or args.pretrained)


def test_command_end_to_end_in_workers_without_torch(tmp_path, monkeypatch, capsys):
    """The real thing: worker processes, JSON out; torch made unimportable in the workers."""
    shim = tmp_path / "shim"
    (shim / "torch").mkdir(parents=True)
    (shim / "torch" / "__init__.py").write_text("raise ImportError('torch hidden by the test')\n")
    monkeypatch.setenv("PYTHONPATH", str(shim))
    status = cli.main(["bench", "--models", "squeezenet", "--sizes", "32", "--repeats", "1", "--warmup", "0",
                       "--threads", "1", "--no-convs", "--json"])
    assert status == 0
    report = json.loads(capsys.readouterr().out)
    (result,) = report["results"]
    assert result["pytorch"] == "not installed" and result["convs"] is None
    assert report["machine"]["blas"]["threads"] in (None, 1)  # the worker ran with the threads asked
    if result["memory"]["scratchnst_bytes"] is not None:
        assert result["memory"]["scratchnst_bytes"] > 0

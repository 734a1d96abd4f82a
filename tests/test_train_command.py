"""Tests of `scratchnst train` and `scratchnst apply`: end to end at tiny sizes, every one-line error, Ctrl-C."""

import os
import signal
import subprocess
import sys
import tempfile
import time
import warnings
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from scratchnst import checkpoint, cli, training, transformer_net
from scratchnst.cpus import available_cpus

from test_training import SWIRLS, write_photo

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture
def setup(tmp_path, squeezenet_weights_path):
    folder = tmp_path / "photos"
    write_photo(folder / "a.png", 40, 56, seed=1)
    write_photo(folder / "b.jpg", 70, 36, seed=2)
    return {"photos": folder, "weights": str(squeezenet_weights_path), "out": tmp_path / "net.h5", "tmp": tmp_path}


def train(setup, *flags, style=SWIRLS, photos=None, out=None):
    argv = ["train", str(style), str(photos or setup["photos"]), "-o", str(out or setup["out"]),
            "--weights", setup["weights"], "--size", "32", *flags]
    return cli.main([str(a) for a in argv])


def tiny_network(folder):
    """A small untrained network saved in folder/net.h5 (apply's tests need a network, not a good one)."""
    return transformer_net.save(folder / "net.h5", transformer_net.init_params(np.random.default_rng(0), (4, 4, 4), 0))


def error_line(capsys):
    err = capsys.readouterr().err.strip().splitlines()
    assert err and "Traceback" not in "\n".join(err)
    return err[-1]


def test_help_lists_every_flag(capsys):
    with pytest.raises(SystemExit):
        cli.main(["train", "--help"])
    text = " ".join(capsys.readouterr().out.split())
    for flag in ["--size", "--iters", "--batch", "--lr", "--model", "--weights", "--alpha", "--beta", "--tv-weight",
                 "--seed", "--snapshot", "--snapshot-every", "--snapshots-dir", "--checkpoint", "--checkpoint-every",
                 "--resume", "--threads", "--style-size", "--print-every", "--widths", "--residual-blocks", "--crop",
                 "--lr-schedule", "--final-steps", "--outer-kernel", "--minutes"]:
        assert flag in text
    assert f"(default: a twelfth of --iters)" in text and training.FINAL_STEPS_DIVISOR == 12
    assert f"(default: the smaller of SIZE and {training.DEFAULT_CROP})" in text
    assert f"(default: {training.DEFAULT_LR_SCHEDULE})" in text
    from scratchnst.settings import MODEL_DEFAULTS
    alpha = MODEL_DEFAULTS["squeezenet"].alpha * training.TRAIN_ALPHA_FACTOR
    assert f"(default: squeezenet {alpha:g}; vgg19" in text
    assert f"(default: {training.DEFAULT_PHOTOS} / BATCH)" in text and f"(default: {training.DEFAULT_SIZE})" in text
    assert "(default: one per thread: 1, or N with --threads N)" in text and training.DEFAULT_BATCH is None
    assert f"(default: {training.DEFAULT_LR:g})" in text
    assert f"(default: {training.DEFAULT_ADAM_BETA2:g})" in text   # the parser's text, kept to the constant
    assert f"(default: {training.DEFAULT_MINUTES:g} for a new run without --iters)" in text
    assert f"(default: {','.join(map(str, training.TRAIN_WIDTHS))})" in text
    assert f"--residual-blocks R residual blocks of the transformer network (at quarter resolution) " \
           f"(default: {training.TRAIN_RESIDUAL_BLOCKS})" in text
    with pytest.raises(SystemExit):
        cli.main(["apply", "--help"])
    assert "--size" in capsys.readouterr().out


def test_train_then_apply_to_one_and_to_two_photos(setup, capsys):
    snaps = setup["tmp"] / "snaps"
    status = train(setup, "--iters", "4", "--print-every", "2", "--snapshot", setup["photos"] / "a.png",
                   "--snapshot-every", "2", "--snapshots-dir", snaps, "--checkpoint", setup["tmp"] / "ck.npz")
    out, err = capsys.readouterr()
    assert status == 0, err
    assert "scratchnst train" in out and "\n  batch " in out
    assert out.strip().splitlines()[-1].startswith(f"wrote {setup['out']}: 4 steps")
    lines = err.strip().splitlines()
    assert [line.split()[1] for line in lines] == ["1/4", "2/4", "4/4"]
    assert all("s/step" in line and "ETA" in line and "J " in line for line in lines)
    params, meta = transformer_net.load(setup["out"])
    assert meta["iterations"] == 4 and meta["style"] == str(SWIRLS) and meta["preprocessing"] == "caffe"
    assert sorted(p.name for p in snaps.iterdir()) == ["snapshot_00002.png", "snapshot_00004.png"]
    assert checkpoint.load(setup["tmp"] / "ck.npz")["iteration"] == 4

    odd = write_photo(setup["tmp"] / "odd.png", 37, 51, seed=3)
    other = write_photo(setup["tmp"] / "other.jpg", 23, 18, seed=4)
    assert cli.main(["apply", str(setup["out"]), str(odd), "-o", str(setup["tmp"] / "styled.png")]) == 0
    with Image.open(setup["tmp"] / "styled.png") as img:
        assert img.size == (51, 37)
    many = setup["tmp"] / "many"
    assert cli.main(["apply", str(setup["out"]), str(odd), str(other), "-o", str(many)]) == 0
    assert sorted(p.name for p in many.iterdir()) == ["odd.png", "other.jpg"]
    with Image.open(many / "other.jpg") as img:
        assert img.size == (18, 23)
    assert cli.main(["apply", str(setup["out"]), str(odd), "-o", str(setup["tmp"] / "small.png"), "--size", "20"]) == 0
    with Image.open(setup["tmp"] / "small.png") as img:
        assert max(img.size) == 20
    assert not [p for p in setup["tmp"].rglob(".*tmp*")]   # no temporary file left behind


def test_widths_residual_blocks_and_outer_kernel_reach_the_network(setup, capsys):
    assert train(setup, "--iters", "1", "--widths", "4,6,8", "--residual-blocks", "2", "--outer-kernel", "3") == 0
    params, _ = transformer_net.load(setup["out"])
    assert transformer_net.architecture_of(params) == ((4, 6, 8), 2, 3, transformer_net.DEFAULT_NOISE_CHANNELS)
    for z in (0, 2):
        assert train(setup, "--iters", "1", "--widths", "4,6,8", "--noise-channels", str(z)) == 0
        assert transformer_net.architecture_of(transformer_net.load(setup["out"])[0])[3] == z
    for z in ("-1", "65"):
        assert train(setup, "--iters", "1", "--noise-channels", z) == 2
        assert "--noise-channels must be an integer from 0 to 64" in error_line(capsys)
    assert train(setup, "--iters", "1", "--outer-kernel", "4") == 2
    assert "--outer-kernel must be an odd integer >= 1" in error_line(capsys)
    with pytest.raises(SystemExit) as info:
        train(setup, "--iters", "1", "--widths", "4,6")
    assert info.value.code == 2 and "three integers" in error_line(capsys)
    for blocks in ("-1", "65", "10000000000"):   # a slip of the keyboard is told at once, not after an allocation
        assert train(setup, "--iters", "1", "--residual-blocks", blocks) == 2
        assert "--residual-blocks must be an integer from 0 to 64" in error_line(capsys)
    assert train(setup, "--iters", "1", "--widths", "4,6,100000") == 2
    assert "--widths must be three integers from 1 to 1024, got 4,6,100000" in error_line(capsys)
    with pytest.raises(SystemExit) as info:   # stored as an int64 with the network
        train(setup, "--iters", "1", "--seed", str(2**64))
    assert info.value.code == 2 and "give an integer from 0 to 2**63 - 1" in error_line(capsys)


def test_without_iters_the_run_plans_the_steps_that_fit_in_the_default_minutes(setup, capsys, monkeypatch):
    monkeypatch.setattr(training, "DEFAULT_MINUTES", 0.05)   # 3 s: far fewer steps than the 5000 asked
    # the first plan only: a fast machine plans enough steps to plan again, in either phase (CI's
    # did, 2026-12-07: 170 steps planned, 14 on whole photos, cut to 166 after the 10th of them)
    monkeypatch.setattr(training, "REPLAN_LEAST_STEPS", 10**9)
    monkeypatch.setattr(training, "REPLAN_LEAST_WHOLE_STEPS", 10**9)
    assert train(setup) == 0
    out = capsys.readouterr().out
    assert "\n  minutes          0.05 (the steps are timed first, then planned to fit)" in out
    asked = training.DEFAULT_PHOTOS // training.default_batch()
    assert f"  iters            {asked} at most: as many as fit in the time budget" in out
    planned = next(line for line in out.splitlines() if line.startswith("  timed here: a "))
    assert f"{asked} steps would take" in planned
    assert "are planned to fit in --minutes 0.05 (--minutes 0 trains them all)" in planned
    steps = int(out.strip().splitlines()[-1].split(": ")[1].split()[0])
    assert 1 <= steps < asked and f"so {steps} (" in planned
    assert transformer_net.load(setup["out"])[1]["iterations"] == steps


def test_the_run_plans_again_at_the_pace_its_steps_kept_and_says_so(setup, capsys, monkeypatch):
    monkeypatch.setattr(training, "REPLAN_LEAST_STEPS", 2)
    assert train(setup, "--minutes", "0.1", "--iters", "100000", "--final-steps", "0") == 0
    out = capsys.readouterr().out
    first = next(line for line in out.splitlines() if line.startswith("  timed here: a "))
    planned = int(first.split(", so ")[1].split()[0])
    again = [line for line in out.splitlines() if line.startswith("  re-planned after step ")]
    assert 1 <= len(again) <= training.REPLANS, out
    at = int(again[0].split()[3].rstrip(":"))
    assert at == planned // (training.REPLANS + 1) and f": steps 1-{at} took " in again[0]
    steps = int(again[-1].split(", so ")[1].split()[0])
    assert f"so {steps} of the 100000 steps (0 on whole photos) are planned to end within --minutes 0.1" in again[-1]
    assert all(" times as long as timed" in line for line in again)
    assert len(again) == 1 or f": steps {at + 1}-" in again[1]
    assert out.strip().splitlines()[-1].startswith(f"wrote {setup['out']}: {steps} steps (")
    assert transformer_net.load(setup["out"])[1]["iterations"] == steps


def test_the_same_command_with_resume_goes_on_with_the_checkpoints_plan(setup, capsys, monkeypatch):
    # no share of the budget left to fill: one step, however fast the machine (a machine about 3
    # times as fast as a 2-core AMD EPYC VM would fit a second step in what the timing leaves of 60 ms)
    monkeypatch.setattr(training, "BUDGET_SHARE", 0.0)
    ck = setup["tmp"] / "ck.npz"
    assert train(setup, "--iters", "50", "--minutes", "0.001", "--checkpoint", ck) == 0   # the timing spends it
    out = capsys.readouterr().out
    assert "the timing used up --minutes 0.001: 1 step is trained, of the 50 asked for" in out, out
    assert out.strip().splitlines()[-1].startswith(f"wrote {setup['out']}: 1 step (")
    assert train(setup, "--iters", "2", "--minutes", "0.001", "--resume", ck) == 0
    out = capsys.readouterr().out
    assert "--minutes 0.001 is not used: a resumed run keeps the plan of its checkpoint (2 steps" in out, out
    assert "timed here" not in out and checkpoint.load(ck)["iteration"] == 2


def test_the_budget_counts_from_the_start_of_the_process():
    from scratchnst.cli.train_command import _process_seconds

    from scratchnst.cli.train_command import _budget_start

    code = "import time; time.sleep(0.5); from scratchnst.cli.train_command import _process_seconds as p; print(p())"
    seconds = float(subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout)
    assert 0.5 <= seconds < 60 and _process_seconds() > 0
    # called in another program's process (here pytest's), the budget starts with the call
    assert abs(_budget_start() - time.perf_counter()) < 1.0
    # the command's own process: from its start
    code = ("import sys, time; time.sleep(0.5); sys.modules['__main__'].run = __import__('scratchnst.__main__', "
            "fromlist=['run']).run; from scratchnst.cli.train_command import _budget_start as b; "
            "print(time.perf_counter() - b())")
    seconds = float(subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout)
    assert 0.5 <= seconds < 60


def test_iters_are_trained_whole_unless_minutes_are_given(setup, capsys):
    assert train(setup, "--iters", "3") == 0
    out = capsys.readouterr().out
    assert "timed here" not in out and "minutes" not in out and ": 3 steps" in out
    assert train(setup, "--iters", "3", "--minutes", "1000") == 0
    out = capsys.readouterr().out
    assert "the 3 steps should take" in out and "within --minutes 1000" in out and ": 3 steps" in out
    assert train(setup, "--minutes", "0", "--iters", "2") == 0
    assert "timed here" not in capsys.readouterr().out


def test_resume_from_the_command_line(setup, capsys):
    ck = setup["tmp"] / "ck.npz"
    assert train(setup, "--iters", "2", "--checkpoint", ck) == 0
    assert train(setup, "--iters", "3", "--resume", ck) == 0
    out = capsys.readouterr().out
    assert f"resuming from {ck} at step 2" in out and checkpoint.load(ck)["iteration"] == 3
    assert train(setup, "--iters", "3", "--resume", ck, "--lr", "0.5") == 2
    assert "other settings" in error_line(capsys)


@pytest.mark.parametrize("case", ["missing folder", "empty folder", "no readable photo", "style unreadable",
                                  "style missing", "style too small", "out folder missing", "out is the style",
                                  "out is a folder", "bad size", "bad batch", "bad lr", "bad seed", "bad final steps",
                                  "snapshot-every without snapshot", "bad resume file", "out not .h5", "iters 0",
                                  "snapshots among the photos", "too little memory", "no size fits in memory",
                                  "bad minutes"])
def test_one_line_errors(setup, capsys, case, monkeypatch):
    tmp = setup["tmp"]
    style, photos, out, flags = SWIRLS, setup["photos"], setup["out"], ["--iters", "1"]
    if case == "missing folder":
        photos, expected = tmp / "nope", "no such folder of photos"
    elif case == "empty folder":
        photos, expected = tmp / "empty", "no photos in it"
        photos.mkdir()
    elif case == "no readable photo":
        photos, expected = tmp / "broken", "none of the 1 photos"
        photos.mkdir()
        (photos / "x.jpg").write_bytes(b"not a jpeg")
    elif case == "style unreadable":
        style, expected = tmp / "style.jpg", "style.jpg"
        style.write_bytes(b"garbage")
    elif case == "style missing":
        style, expected = tmp / "missing.jpg", "missing.jpg"
    elif case == "style too small":
        style, expected = write_photo(tmp / "thin.png", 4, 200), "the style image is 32x1 px"
    elif case == "out folder missing":
        out, expected = tmp / "no" / "net.h5", "does not exist"
    elif case == "out is the style":
        style = write_photo(tmp / "style.png", 64, 64)
        out, expected = style, "is the style image"
    elif case == "out is a folder":
        out, expected = tmp, "is a folder"
    elif case == "bad size":
        flags, expected = ["--size", "30"], "multiple of 4"
    elif case == "bad batch":
        flags, expected = ["--batch", "0"], "--batch must be"
    elif case == "bad lr":
        flags, expected = ["--lr", "-1"], "--lr must be"
    elif case == "bad final steps":
        flags, expected = ["--iters", "4", "--final-steps", "5"], "--final-steps must be an integer from 0 to --iters (4)"
    elif case == "bad seed":
        flags, expected = ["--seed", "-3"], "--seed"
    elif case == "snapshot-every without snapshot":
        flags, expected = ["--snapshot-every", "3"], "needs --snapshot"
    elif case == "out not .h5":
        out, expected = tmp / "net.png", f"give it a .h5 name, e.g. -o {tmp / 'net.h5'}"
    elif case == "iters 0":
        flags, expected = ["--iters", "0"], "--iters must be an integer >= 1"
    elif case == "snapshots among the photos":   # they would become training photos (and break --resume)
        flags = ["--snapshot", photos / "a.png", "--snapshots-dir", photos / "snaps"]
        expected = "inside the folder of training photos"
    elif case == "too little memory":
        from scratchnst import parallel, settings
        monkeypatch.setattr(settings, "available_memory", lambda: 200e6)
        monkeypatch.setattr(parallel, "_workers", 1)   # each helper process of more would hold a network of its own
        flags, expected = ["--batch", "64", "--iters", "12"], "--size 32 with --batch 64 needs about 0.3 GB"
    elif case == "no size fits in memory":
        from scratchnst import settings
        monkeypatch.setattr(settings, "available_memory", lambda: 120e6)   # less than the fixed part
        flags, expected = ["--batch", "1", "--iters", "12"], "available; close other programs"
    elif case == "bad minutes":
        flags, expected = ["--minutes", "nan"], "--minutes must be a number of minutes >= 0 (0: no limit), got nan"
    else:
        bad = tmp / "bad.npz"
        bad.write_bytes(b"not a checkpoint")
        flags, expected = ["--resume", bad], "not a readable scratchnst checkpoint"
    argv = ["train", str(style), str(photos), "-o", str(out), "--weights", setup["weights"], "--size", "32"]
    if case == "bad size":
        argv = argv[:-2]
    before = sorted(p.name for p in tmp.rglob("*"))
    with pytest.raises(SystemExit) if case in ("bad seed",) else _nothing():
        status = cli.main(argv + [str(f) for f in flags])
        assert status in (1, 2)
    line = error_line(capsys)
    assert expected in line, line
    assert not (out.exists() and out.suffix == ".h5")
    assert sorted(p.name for p in tmp.rglob("*")) == before   # nothing written, not even half a file


class _nothing:
    def __enter__(self):
        return self

    def __exit__(self, *exc):
        return False


def test_apply_errors(setup, capsys, tmp_path):
    photo = write_photo(tmp_path / "p.png", 20, 20)
    assert cli.main(["apply", str(tmp_path / "missing.h5"), str(photo), "-o", str(tmp_path / "o.png")]) == 1
    assert "no such transformer network file" in error_line(capsys)
    params = transformer_net.init_params(np.random.default_rng(0), (4, 4, 4), 0)
    net = transformer_net.save(tmp_path / "net.h5", params)
    assert cli.main(["apply", str(net), str(tmp_path / "nophoto.png"), "-o", str(tmp_path / "o.png")]) == 1
    assert "nophoto.png" in error_line(capsys)
    assert cli.main(["apply", str(net), str(photo), "-o", str(tmp_path / "o.xyz")]) == 2
    assert "unknown image extension" in error_line(capsys)
    assert cli.main(["apply", str(net), str(photo), "-o", str(photo)]) == 2
    assert "would destroy it" in error_line(capsys)
    (tmp_path / "o.png").write_bytes(b"")
    assert cli.main(["apply", str(net), str(photo), str(photo), "-o", str(tmp_path / "o.png")]) == 2
    assert "is a file, and the results go into a folder" in error_line(capsys)
    twin = write_photo(tmp_path / "twin" / "p.png", 20, 20)
    assert cli.main(["apply", str(net), str(photo), str(twin), "-o", str(tmp_path / "both")]) == 2
    assert "would both be written to" in error_line(capsys) and not (tmp_path / "both").exists()
    assert cli.main(["apply", str(net), str(photo), str(twin), "-o", str(tmp_path / "twin")]) == 2
    assert "would destroy it" in error_line(capsys)
    assert cli.main(["apply", str(net), str(photo), "-o", str(tmp_path / "no" / "o.png")]) == 1
    assert "does not exist" in error_line(capsys)


def test_apply_refuses_a_photo_too_large_for_memory(tmp_path, capsys, monkeypatch):
    from scratchnst import settings

    photo = write_photo(tmp_path / "p.png", 300, 400)
    net = tiny_network(tmp_path)
    monkeypatch.setattr(settings, "available_memory", lambda: 200e6)
    assert cli.main(["apply", str(net), str(photo), "-o", str(tmp_path / "o.png")]) == 1
    line = error_line(capsys)
    assert "p.png is 400x300 pixels" in line and "use --size" in line and not (tmp_path / "o.png").exists()
    fits = int(line.rsplit("--size ", 1)[1].split()[0])
    assert cli.main(["apply", str(net), str(photo), "-o", str(tmp_path / "o.png"), "--size", str(fits)]) == 0


def helper_processes(parent=None):
    """The pids of training helper processes running now: those `parent` started, or all of them."""
    from scratchnst.training_processes import HELPER_COMMAND

    found = set()
    for cmdline in Path("/proc").glob("[0-9]*/cmdline"):
        try:
            status = (cmdline.parent / "status").read_text()
            if HELPER_COMMAND.encode() in cmdline.read_bytes() and (parent is None or f"\nPPid:\t{parent}\n" in status):
                found.add(int(cmdline.parent.name))
        except OSError:
            pass
    return found


# --threads is at most the CPUs the process may run on
two_cpus = pytest.mark.skipif(available_cpus() < 2, reason="--threads 2 needs 2 CPUs; this process may run on 1")


@pytest.mark.parametrize("threads", [[], pytest.param(["--threads", "2", "--batch", "2"], marks=two_cpus)],
                         ids=["one thread", "a helper process"])
def test_ctrl_c_saves_the_network_trained_so_far(setup, tmp_path, threads):
    """Ctrl-C as a terminal sends it, to the whole foreground process group."""
    env = dict(os.environ, PYTHONPATH=str(REPO) + os.pathsep + os.environ.get("PYTHONPATH", ""),
               OPENBLAS_NUM_THREADS="1")
    env.pop("SCRATCHNST_WORKERS", None)   # the run's own threads only: one, or --threads 2
    ck = tmp_path / "ck.npz"
    argv = [sys.executable, "-m", "scratchnst", "train", str(SWIRLS), str(setup["photos"]), "-o", str(setup["out"]),
            "--weights", setup["weights"], "--size", "32", "--iters", "100000", "--print-every", "1",
            "--checkpoint", str(ck), "--checkpoint-every", "100000", *threads]
    process = subprocess.Popen(argv, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                               start_new_session=True)
    first = process.stderr.readline()   # the first progress line
    assert first.startswith("step ") and "/100000" in first, first + process.stderr.read()
    helpers = helper_processes(process.pid) if Path("/proc").is_dir() else set()
    assert len(helpers) == (1 if threads and Path("/proc").is_dir() else 0)
    time.sleep(0.3)
    os.killpg(process.pid, signal.SIGINT)
    _, err = process.communicate(timeout=120)
    assert not helpers & helper_processes()   # they ended with the run, none left behind (orphans included)
    assert process.returncode == 130, err
    last = err.strip().splitlines()[-1]
    assert "Traceback" not in err and last.startswith("scratchnst: interrupted (Ctrl-C) at step ")
    assert f"wrote the network trained so far to {setup['out']}" in last and f"--resume {ck}" in last
    params, meta = transformer_net.load(setup["out"])
    state = checkpoint.load(ck)
    assert meta["iterations"] == state["iteration"] >= 1 and meta["stopped"] == "interrupted (Ctrl-C)"
    assert np.array_equal(params["conv1/kernel"], state["params"]["conv1:kernel"])
    assert not [p for p in setup["out"].parent.iterdir() if p.name.startswith(".")]


@two_cpus
@pytest.mark.skipif(not Path("/proc").is_dir(), reason="finds the helper process in /proc")
def test_a_helper_process_killed_mid_run_ends_in_one_line_and_keeps_the_work(setup, tmp_path):
    """The out-of-memory killer takes a helper of --threads: the run ends, saving what it had."""
    env = dict(os.environ, PYTHONPATH=str(REPO) + os.pathsep + os.environ.get("PYTHONPATH", ""))
    argv = [sys.executable, "-m", "scratchnst", "train", str(SWIRLS), str(setup["photos"]), "-o", str(setup["out"]),
            "--weights", setup["weights"], "--size", "32", "--iters", "100000", "--print-every", "1",
            "--threads", "2", "--batch", "2"]
    process = subprocess.Popen(argv, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    first = process.stderr.readline()
    assert first.startswith("step "), first + process.stderr.read()
    (helper,) = helper_processes(process.pid)
    os.kill(helper, signal.SIGKILL)
    _, err = process.communicate(timeout=120)
    assert process.returncode == 1, err
    assert "Traceback" not in err
    last = err.strip().splitlines()[-1]
    assert last.startswith("scratchnst: error: a helper process of --threads stopped (killed by SIGKILL)"), last
    assert "run again with fewer --threads; wrote the network of step " in last and str(setup["out"]) in last
    assert transformer_net.load(setup["out"])[1]["stopped"] == "failed"


def test_a_failure_mid_run_keeps_the_network_trained_so_far(setup, capsys, monkeypatch):
    """A snapshot that cannot be written (the disk full) ends the run, but not the work done before it."""
    from scratchnst import image

    real_save = image.save_image

    def disk_full(path, *args, **kwargs):
        if Path(path).name == "snapshot_00002.png":
            raise OSError(28, "No space left on device", str(path))
        return real_save(path, *args, **kwargs)

    monkeypatch.setattr(image, "save_image", disk_full)
    ck = setup["tmp"] / "ck.npz"
    photo = write_photo(setup["tmp"] / "snap.png", 36, 36, seed=4)
    status = train(setup, "--iters", "4", "--checkpoint", ck, "--snapshot", photo, "--snapshot-every", "1",
                   "--snapshots-dir", setup["tmp"] / "snaps")
    assert status == 1
    line = error_line(capsys)
    assert "snapshot_00002.png: No space left on device" in line
    assert f"wrote the network of step 1 to {setup['out']}" in line and f"--resume {ck}" in line
    params, meta = transformer_net.load(setup["out"])
    assert meta["iterations"] == 1 and meta["stopped"] == "failed"
    monkeypatch.setattr(image, "save_image", real_save)
    assert train(setup, "--iters", "4", "--resume", ck) == 0   # the suggested command goes on
    assert checkpoint.load(ck)["iteration"] == 4


def test_a_checkpoint_that_cannot_be_written_is_told_apart_from_the_network(setup, capsys, monkeypatch):
    """The network saved but its checkpoint not (its disk full): the line says which is which."""
    real_save = checkpoint.save
    calls = []

    def full_after_the_first(path, state):
        calls.append(path)
        if len(calls) > 1:
            raise OSError(28, "No space left on device", str(path))
        return real_save(path, state)

    monkeypatch.setattr(checkpoint, "save", full_after_the_first)
    ck = setup["tmp"] / "ck.npz"
    assert train(setup, "--iters", "5", "--checkpoint", ck, "--checkpoint-every", "1") == 1
    line = error_line(capsys)
    assert f"wrote the network of step 1 to {setup['out']}" in line
    assert f"its checkpoint could not be written to {ck} either" in line and "could not be saved" not in line
    assert transformer_net.load(setup["out"])[1]["iterations"] == 1


@pytest.mark.parametrize("with_checkpoint", [True, False])
def test_a_full_disk_at_the_end_keeps_the_finished_run(setup, capsys, monkeypatch, tmp_path, with_checkpoint):
    """-o cannot be written once the last step is done: the checkpoint holds the run, or the network is
    written to the temporary folder instead; either way the line says where."""
    real_save = transformer_net.save

    def full_there(path, *args, **kwargs):
        if Path(path) == setup["out"]:
            raise OSError(28, "No space left on device", str(path))
        return real_save(path, *args, **kwargs)

    monkeypatch.setattr(transformer_net, "save", full_there)
    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path / "rescue"))
    (tmp_path / "rescue").mkdir()
    ck = setup["tmp"] / "ck.npz"
    status = train(setup, "--iters", "3", *(["--checkpoint", ck] if with_checkpoint else []))
    assert status == 1 and not setup["out"].exists()
    line = error_line(capsys)
    assert "No space left on device" in line
    if with_checkpoint:
        assert f"the finished run is in its checkpoint {ck}" in line and f"--resume {ck} to write it" in line
        assert not list((tmp_path / "rescue").iterdir())
        monkeypatch.setattr(transformer_net, "save", real_save)
        assert train(setup, "--iters", "3", "--resume", ck) == 0   # the suggested command writes -o
        assert transformer_net.load(setup["out"])[1]["iterations"] == 3
    else:
        (rescued,) = (tmp_path / "rescue").iterdir()
        assert f"wrote the trained network to {rescued} instead" in line
        assert transformer_net.load(rescued)[1]["iterations"] == 3


def test_a_long_output_name_full_disk_at_the_end_still_rescues_the_network(setup, capsys, monkeypatch, tmp_path):
    """A legal 243-character -o: the rescue file's name is built from a part of it, not all of it."""
    out = setup["tmp"] / ("n" * 240 + ".h5")
    real_save = transformer_net.save

    def full_there(path, *args, **kwargs):
        if Path(path) == out:
            raise OSError(28, "No space left on device", str(path))
        return real_save(path, *args, **kwargs)

    monkeypatch.setattr(transformer_net, "save", full_there)
    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path / "rescue"))
    (tmp_path / "rescue").mkdir()
    assert train(setup, "--iters", "2", out=out) == 1
    line = error_line(capsys)
    (rescued,) = (tmp_path / "rescue").iterdir()
    assert "No space left on device" in line and f"wrote the trained network to {rescued} instead" in line
    assert rescued.name.startswith("scratchnst-" + "n" * 40 + "-") and rescued.suffix == ".h5"


@pytest.mark.parametrize("temporary", ["full", "missing"])
def test_a_full_disk_everywhere_at_the_end_says_the_network_is_lost(setup, capsys, monkeypatch, tmp_path, temporary):
    def full(path, *args, **kwargs):
        raise OSError(28, "No space left on device", str(path))

    monkeypatch.setattr(transformer_net, "save", full)
    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path / "rescue"))
    (tmp_path / "rescue").mkdir()
    if temporary == "missing":  # what mkstemp raises when no temporary folder can be used
        real_mkstemp = tempfile.mkstemp

        def no_folder(*args, prefix=None, **kwargs):
            if prefix is not None and prefix.startswith("scratchnst-"):
                raise FileNotFoundError(2, "No usable temporary directory found")
            return real_mkstemp(*args, prefix=prefix, **kwargs)

        monkeypatch.setattr(tempfile, "mkstemp", no_folder)
    assert train(setup, "--iters", "2") == 1
    line = error_line(capsys)
    assert "No space left on device" in line and "could not be written to the temporary folder either: it is lost" in line
    assert not list((tmp_path / "rescue").iterdir())  # no empty file left behind


def test_resume_without_batch_goes_on_with_the_checkpoints_batch(setup, capsys):
    """The default batch follows --threads: resumed on another thread count, the run keeps its own."""
    ck = setup["tmp"] / "ck.npz"
    assert train(setup, "--iters", "2", "--batch", "2", "--checkpoint", ck) == 0
    assert train(setup, "--iters", "3", "--resume", ck) == 0
    assert checkpoint.load(ck)["settings"]["batch"] == 2 and checkpoint.load(ck)["iteration"] == 3
    assert train(setup, "--iters", "4", "--resume", ck, "--batch", "1") == 2
    assert "other settings (batch: checkpoint 2, now 1)" in error_line(capsys)


def test_snapshots_folder_must_be_writable(setup, capsys, unwritable_folder):
    photo = write_photo(setup["tmp"] / "snap.png", 36, 36, seed=4)
    assert train(setup, "--iters", "2", "--snapshot", photo, "--snapshots-dir", unwritable_folder) == 1
    assert "--snapshots-dir" in error_line(capsys) and not setup["out"].exists()


def test_resume_past_iters_says_what_the_file_holds(setup, capsys):
    ck = setup["tmp"] / "ck.npz"
    assert train(setup, "--iters", "3", "--checkpoint", ck) == 0
    capsys.readouterr()
    assert train(setup, "--iters", "2", "--resume", ck) == 0
    out = capsys.readouterr().out
    assert "nothing was left to do: the checkpoint is at step 3" in out and f"wrote {setup['out']}: 3 steps" in out
    assert transformer_net.load(setup["out"])[1]["iterations"] == 3


def test_apply_goes_on_past_a_photo_that_breaks_off(tmp_path, capsys):
    net = tiny_network(tmp_path)
    good = [write_photo(tmp_path / f"p{k}.png", 20, 24, seed=k) for k in range(2)]
    whole = tmp_path / "whole.jpg"
    Image.fromarray(np.random.default_rng(5).integers(0, 256, (64, 64, 3), dtype=np.uint8)).save(whole, quality=90)
    broken = tmp_path / "broken.jpg"
    broken.write_bytes(whole.read_bytes()[:len(whole.read_bytes()) // 2])   # the header reads, the pixels stop
    status = cli.main(["apply", str(net), str(good[0]), str(broken), str(good[1]), "-o", str(tmp_path / "out")])
    assert status == 1
    captured = capsys.readouterr()
    line = captured.err.strip().splitlines()[-1]
    assert "Traceback" not in captured.err and "1 of the 3 photos could not be stylised" in line
    assert "broken.jpg" in line and "the other 2 were written" in line
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == ["p0.png", "p1.png"]


def test_apply_into_a_folder_named_with_a_slash(tmp_path, capsys):
    net = tiny_network(tmp_path)
    photo = write_photo(tmp_path / "p.png", 20, 24)
    assert cli.main(["apply", str(net), str(photo), "-o", str(tmp_path / "new") + "/"]) == 0
    assert (tmp_path / "new" / "p.png").is_file()


def test_apply_stops_after_the_file_a_ctrl_c_lands_in(tmp_path, capsys, monkeypatch):
    """Ctrl-C during a save is held back, not dropped: that file is finished, then the command stops."""
    from scratchnst import image

    net = tiny_network(tmp_path)
    photos = [write_photo(tmp_path / f"p{k}.png", 20, 24, seed=k) for k in range(3)]
    real_save = image.save_image

    def save_and_get_ctrl_c(path, *args, **kwargs):
        os.kill(os.getpid(), signal.SIGINT)
        return real_save(path, *args, **kwargs)

    monkeypatch.setattr(image, "save_image", save_and_get_ctrl_c)
    status = cli.main(["apply", str(net), *map(str, photos), "-o", str(tmp_path / "out")])
    assert status == 130
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == ["p0.png"]
    assert "interrupted (Ctrl-C)" in capsys.readouterr().err


def test_output_folder_not_writable(setup, capsys, unwritable_folder):
    assert train(setup, "--iters", "1", out=unwritable_folder / "net.h5") == 1
    line = error_line(capsys)
    assert f"cannot write -o {unwritable_folder / 'net.h5'}" in line and "not writable" in line


def test_holding_stops_delivers_a_stop_another_thread_received_after_the_block():
    """A terminal's Ctrl-C goes to any thread that does not block it: it must still wait for the file."""
    import threading

    from scratchnst.cli import interrupts

    done, go = [], threading.Event()

    def worker():   # started before the block, as scratchnst.parallel's threads are: it shares no mask
        go.wait(10)
        for number in (signal.SIGTERM, signal.SIGINT):   # two stops, sent to the whole process
            os.kill(os.getpid(), number)

    sender = threading.Thread(target=worker)
    sender.start()
    with interrupts.stops_interrupt():
        before = {n: signal.getsignal(n) for n in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)}
        with pytest.raises(KeyboardInterrupt):   # Ctrl-C's, or SIGTERM's Interrupted: whichever Python ran first
            with interrupts.holding_stops():
                go.set()
                sender.join()
                time.sleep(0.05)   # Python runs handlers between bytecodes of the main thread
                done.append("the file is whole")
        assert done == ["the file is whole"]   # the stop came after the block
        assert {n: signal.getsignal(n) for n in before} == before   # every handler put back


@pytest.mark.parametrize("flag", ["--alpha", "--beta"])
def test_weights_that_make_gradients_too_large_for_adam_stop_the_run(setup, capsys, flag):
    """Adam's squared gradients overflow float32 above 1.8e19: such a run would hardly train and end as if
    all went well. It stops at its first step, naming the weights to lower, with no NumPy warning."""
    with warnings.catch_warnings():
        warnings.simplefilter("error", RuntimeWarning)
        assert train(setup, "--iters", "3", flag, "1e30") == 1
    line = error_line(capsys)
    assert "too large for Adam in float32" in line and "lower --alpha / --beta / --tv-weight" in line


@pytest.mark.parametrize("flag", ["--alpha", "--beta"])
def test_an_overflow_at_the_first_step_names_the_weight_not_the_learning_rate(setup, capsys, flag):
    """Before the first step the learning rate has done nothing: the weight whose term is largest is at fault."""
    assert train(setup, "--iters", "3", flag, "1e300") == 1
    line = error_line(capsys)
    assert "at step 1" in line and f"lower {flag} (1e+300)" in line and "--lr" not in line, line


def test_a_gradient_that_is_not_finite_stops_the_run(setup, capsys, monkeypatch):
    """One NaN among the gradients (the loss itself finite) ends the run in one line; Adam never takes it."""
    real = training.batch_loss_and_grads

    def one_nan(*args, **kwargs):
        J, grads, parts = real(*args, **kwargs)
        grads[list(grads)[-1]][0] = np.nan   # the last parameter: a NaN a max over all of them must not lose
        return J, grads, parts

    monkeypatch.setattr(training, "batch_loss_and_grads", one_nan)
    assert train(setup, "--iters", "3") == 1
    assert "the gradients overflowed at step 1" in error_line(capsys)

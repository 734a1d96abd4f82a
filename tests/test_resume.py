"""Checkpoints and --resume: a resumed run ends in the same image as an uninterrupted one, bit for bit;
Ctrl-C and kills never leave half a file.

The in-process tests split runs at every kind of point (a pass's start, mid-pass, a pass's end,
the end); the subprocess tests do what a user does: press Ctrl-C (SIGINT) in a real run, resume
it from the command line, and kill the process (SIGKILL) at random moments while it writes.
"""

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
from PIL import Image

from scratchnst import checkpoint, cli, transfer
from scratchnst.errors import UsageError, UserError

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture
def images(shared_image, squeezenet_weights_path):
    return {"content": str(shared_image("tubingen.jpg")), "style": str(shared_image("starry_night.jpg")),
            "weights": str(squeezenet_weights_path)}


def costs(history):
    """The history without the wall-clock times, which differ between runs."""
    return [{k: v for k, v in entry.items() if k != "seconds"} for entry in history]


def run_capturing(images, at_steps, tmp_path, **options):
    """Run stylize; save a checkpoint file at each step in at_steps (iteration 0 of a pass: step ("start", k))."""
    saved = {}

    def callback(p):
        key = ("start", p.scale) if p.iteration == 0 else p.step
        if key in at_steps:
            path = tmp_path / f"ckpt-{len(saved)}.npz"
            checkpoint.save(path, p.checkpoint())
            saved[key] = path

    result = transfer.stylize(images["content"], images["style"], weights=images["weights"], callback=callback,
                              **options)
    return result, saved


CASES = {
    "lbfgs": dict(size=64, iters=6, optimizer="lbfgs"),
    "adam": dict(size=64, iters=6, optimizer="adam", lr=5.0),
    "lbfgs two scales, colours kept": dict(size=96, iters=4, scales=2, preserve_colors=True),
}


@pytest.mark.parametrize("case", CASES)
def test_resuming_from_any_point_gives_the_uninterrupted_image_bit_for_bit(images, tmp_path, case):
    options = CASES[case]
    total = options["iters"] * options.get("scales", 1)
    points = {("start", 1), 1, options["iters"] // 2, options["iters"], total - 1, total}
    if options.get("scales", 1) > 1:
        points.add(("start", 2))
    full, saved = run_capturing(images, points, tmp_path, **options)
    assert set(saved) == points
    for key, path in saved.items():
        resumed = transfer.stylize(images["content"], images["style"], weights=images["weights"],
                                   resume=checkpoint.load(path), **options)
        assert np.array_equal(resumed.image, full.image), key
        assert costs(resumed.history) == costs(full.history), key
        assert (resumed.iterations, resumed.evaluations) == (full.iterations, full.evaluations), key


@pytest.mark.parametrize("optimizer, dtype", [("lbfgs", np.float32), ("adam", np.float64)])
def test_the_optimiser_works_in_its_dtype(images, tmp_path, optimizer, dtype):
    _, saved = run_capturing(images, {2}, tmp_path, size=64, iters=3, optimizer=optimizer,
                             **({"lr": 5.0} if optimizer == "adam" else {}))
    state = checkpoint.load(saved[2])["optimizer"]
    assert state["x"].dtype == state["g"].dtype == dtype


def test_a_float64_checkpoint_goes_on_in_float64_to_the_end_of_its_last_pass(images, tmp_path, monkeypatch):
    # as scratchnst saved L-BFGS's before 2026-12-06: the run, and its checkpoints, in float64
    options = dict(size=96, iters=3, scales=2)
    with monkeypatch.context() as patch:
        patch.setattr(transfer, "_optimizer_dtype", lambda network, optimizer, resume: np.dtype(np.float64))
        full, saved = run_capturing(images, {2, 4}, tmp_path, **options)  # in pass 1, and in pass 2
    for step in (2, 4):
        old = checkpoint.load(saved[step])
        assert old["optimizer"]["x"].dtype == np.float64
        resumed = transfer.stylize(images["content"], images["style"], weights=images["weights"], resume=old,
                                   **options)
        assert np.array_equal(resumed.image, full.image), step
        assert costs(resumed.history) == costs(full.history), step


def test_resuming_with_more_iterations_continues_the_same_run(images, tmp_path):
    short, saved = run_capturing(images, {5}, tmp_path, size=64, iters=5)
    longer = transfer.stylize(images["content"], images["style"], weights=images["weights"], size=64, iters=9)
    resumed = transfer.stylize(images["content"], images["style"], weights=images["weights"], size=64, iters=9,
                               resume=checkpoint.load(saved[5]))
    assert np.array_equal(resumed.image, longer.image) and costs(resumed.history) == costs(longer.history)


def test_seconds_per_iteration_of_a_resumed_run_are_its_own(images, tmp_path, monkeypatch):
    """On a clock that moves only while the cost is evaluated, a second an evaluation: a run resumed at iteration
    8 of 12 reports its own evaluations over its own 4 iterations (over all 12 it looked three times as fast)."""
    _, saved = run_capturing(images, {8, 12}, tmp_path, size=64, iters=12)
    now, real = [0.0], transfer.make_cost_function

    def timed_cost_function(*args, **kwargs):
        cost = real(*args, **kwargs)

        def timed(x):
            now[0] += 1.0
            return cost(x)
        return timed

    monkeypatch.setattr(transfer, "time", SimpleNamespace(perf_counter=lambda: now[0]))
    monkeypatch.setattr(transfer, "make_cost_function", timed_cost_function)
    state = checkpoint.load(saved[8])
    resumed = transfer.stylize(images["content"], images["style"], weights=images["weights"], size=64, iters=12,
                               resume=state)
    evaluated = resumed.evaluations - int(state["optimizer"]["n_evals"])  # by this run
    assert resumed.iterations == 12 and evaluated >= 4 and resumed.seconds_per_iteration == evaluated / 4
    finished = transfer.stylize(images["content"], images["style"], weights=images["weights"], size=64, iters=12,
                                resume=checkpoint.load(saved[12]))
    assert finished.iterations == 12 and finished.seconds_per_iteration is None  # no iteration ran: no figure


def test_a_checkpoint_refuses_other_settings_or_images(images, tmp_path, shared_image):
    _, saved = run_capturing(images, {2}, tmp_path, size=64, iters=3)
    state = checkpoint.load(saved[2])
    with pytest.raises(UsageError, match=r"other settings \(beta: checkpoint 4.0, now 5.0\)"):
        transfer.stylize(images["content"], images["style"], weights=images["weights"], size=64, iters=3, beta=5,
                         resume=state)
    with pytest.raises(UsageError, match="the style images differ"):
        transfer.stylize(images["content"], str(shared_image("the_scream.jpg")), weights=images["weights"],
                         size=64, iters=3, resume=state)


@pytest.mark.parametrize("make, message", [
    (None, "no such checkpoint file"),
    (lambda p: p.write_text("not a checkpoint"), "not a readable scratchnst checkpoint"),
    (lambda p: p.write_bytes(b""), "not a readable scratchnst checkpoint"),
    (lambda p: p.mkdir(), "is a folder"),
    ("truncated", "not a readable scratchnst checkpoint"),
    ("other format", "this scratchnst reads format 1"),
    ("a jpeg", "not a readable scratchnst checkpoint"),
    ("pickled", "not a readable scratchnst checkpoint"),
])
def test_a_bad_resume_file_is_one_line(images, tmp_path, capsys, make, message):
    path = tmp_path / "ck.npz"
    if make == "truncated":
        _, saved = run_capturing(images, {1}, tmp_path, size=64, iters=1)
        path.write_bytes(saved[1].read_bytes()[: saved[1].stat().st_size // 2])
    elif make == "other format":
        np.savez(path, meta=np.array(json.dumps({"format": 99, "state": {}})))
    elif make == "a jpeg":
        path.write_bytes(Path(images["content"]).read_bytes())
    elif make == "pickled":
        np.savez(path, meta=np.array([{"format": 1}], dtype=object))
    elif make is not None:
        make(path)
    status = cli.main(["stylize", images["content"], images["style"], "-o", str(tmp_path / "out.png"),
                       "--weights", images["weights"], "--size", "64", "--resume", str(path)])
    err = capsys.readouterr().err
    assert status == 1 and err.count("\n") == 1 and message in err and "Traceback" not in err
    assert "allow_pickle" not in err
    assert not (tmp_path / "out.png").exists()
    with pytest.raises(UserError):
        checkpoint.load(path)


# ------------------------------------------------------------------------- as a user does it
def command(images, out, *flags):
    return [sys.executable, "-m", "scratchnst", "stylize", images["content"], images["style"], "-o", str(out),
            "--weights", images["weights"], "--size", "64", *map(str, flags)]


def environment():
    env = dict(os.environ, PYTHONPATH=str(REPO))
    env.pop("OPENBLAS_NUM_THREADS", None)  # the command's own default (one thread) in every run
    return env


def wait_for(path, process, seconds=120):
    deadline = time.monotonic() + seconds
    while not Path(path).exists():
        assert process.poll() is None, process.communicate()
        assert time.monotonic() < deadline, "the run never wrote its checkpoint"
        time.sleep(0.02)


def test_ctrl_c_then_resume_ends_in_the_uninterrupted_image(images, tmp_path):
    flags = ["--iters", "150", "--seed", "5"]  # long enough that a loaded machine cannot finish before the signal
    whole = subprocess.run(command(images, tmp_path / "whole.png", *flags), env=environment(),
                           capture_output=True, text=True, timeout=300)
    assert whole.returncode == 0, whole.stderr

    ckpt = tmp_path / "run.ckpt.npz"
    first = subprocess.Popen(command(images, tmp_path / "out.png", *flags, "--checkpoint", ckpt,
                                     "--checkpoint-every", "3", "--log", tmp_path / "log.json"),
                             env=environment(), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    wait_for(ckpt, first)
    first.send_signal(signal.SIGINT)
    _, err = first.communicate(timeout=120)
    assert first.returncode == 130, err
    last = err.strip().splitlines()[-1]
    assert "Traceback" not in err and last.startswith("scratchnst: interrupted (Ctrl-C); wrote the best image")
    assert f"--resume {ckpt}" in last
    log = json.loads((tmp_path / "log.json").read_text())
    assert log["stopped"] == "interrupted (Ctrl-C)" and (tmp_path / f"out_{log['best']['step']:04d}.png").is_file()
    stopped_at = checkpoint.load(ckpt)["steps"]
    assert 3 <= stopped_at < 150 and not (tmp_path / "out.png").exists()

    second = subprocess.run(command(images, tmp_path / "out.png", *flags, "--resume", ckpt), env=environment(),
                            capture_output=True, text=True, timeout=300)
    assert second.returncode == 0, second.stderr
    assert f"resuming from {ckpt} at iteration {stopped_at}" in second.stdout
    with Image.open(tmp_path / "out.png") as a, Image.open(tmp_path / "whole.png") as b:
        assert np.array_equal(np.asarray(a), np.asarray(b))
    assert (tmp_path / "out.png").read_bytes() == (tmp_path / "whole.png").read_bytes()


def complete(path):
    """True if a file the run writes is whole: it parses to the end."""
    if path.suffix == ".png":
        with Image.open(path) as img:
            img.load()
    elif path.suffix == ".json":
        json.loads(path.read_text())
    else:
        checkpoint.load(path)
    return True


@pytest.mark.parametrize("delay", [0.3, 0.9, 1.7])
def test_killing_the_process_never_leaves_half_a_file(images, tmp_path, delay):
    out = tmp_path / "out.png"
    out.write_bytes((Path(images["content"]).read_bytes()))  # an "old" file that must stay whole or be replaced
    process = subprocess.Popen(command(images, out, "--iters", "400", "--save-every", "1", "--checkpoint-every",
                                       "1", "--checkpoint", tmp_path / "ck.npz"),
                               env=environment(), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    wait_for(tmp_path / "ck.npz", process)
    time.sleep(delay)
    process.kill()
    process.wait()
    named = [p for p in tmp_path.iterdir() if not p.name.startswith(".")]
    assert [p for p in named if p.name.startswith("out_")], "killed before any snapshot: the test proves nothing"
    for path in named:
        if path != out:
            assert complete(path), path
    assert out.read_bytes() == Path(images["content"]).read_bytes() or complete(out)


def tampered(state, change):
    state = json.loads(json.dumps({k: v for k, v in state.items() if k != "optimizer"}))
    return change(state) or state


@pytest.mark.parametrize("damage, message", [
    (lambda st: st["optimizer"].update(x=st["optimizer"]["x"][:100]), "its image is not the 64x48 of pass 1"),
    (lambda st: st["optimizer"].update(x=np.full_like(st["optimizer"]["x"], np.nan)), "not finite numbers"),
    (lambda st: st["optimizer"].pop("g"), "lacks g"),
    (lambda st: st["optimizer"].update(g=st["optimizer"]["g"].astype(np.float64)), "this run needs float32"),
    (lambda st: st["optimizer"].update(x=st["optimizer"]["x"].astype(np.float16)), "its image is float16"),
    (lambda st: st.update(scale=9), "pass 10 of 1"),
    (lambda st: st.update(steps="x"), "steps is missing or of the wrong kind"),
    (lambda st: st.update(history=5), "history is missing or of the wrong kind"),
    (lambda st: st.pop("optimizer"), "optimizer is missing"),
    (lambda st: st.update(history=[]), "the cost history"),
    (lambda st: st.update(elapsed=float("nan")), "a count or time out of range"),
    (lambda st: st.update(steps=-3), "a count or time out of range"),
    (lambda st: st["optimizer"].update(f="abc"), "the optimiser's state"),
    (lambda st: st["optimizer"].update(history=None), "the optimiser's state"),
    (lambda st: st["optimizer"].update(iteration="5"), "the optimiser's state"),
    (lambda st: st["optimizer"].update(f=float("nan")), "the optimiser's state"),
    (lambda st: st["optimizer"].update(pair_rho=-st["optimizer"]["pair_rho"]), "the optimiser's state"),
    (lambda st: st["optimizer"].update(aux=None), "the optimiser's state"),
    (lambda st: st["optimizer"].update(x=st["optimizer"]["x"] + 1e6), "pixels outside 0..255"),
    (lambda st: st["optimizer"].update(iteration=10**30), "the optimiser's state"),
    (lambda st: st["optimizer"].update(x=st["optimizer"]["x"].reshape(48, -1)), "its image is not the 64x48"),
    (lambda st: st["optimizer"].update(g=st["optimizer"]["g"][:100]), "g is not a vector of the image's"),
    (lambda st: st.update(steps=10**30), "iterations done in all, 2 in pass 1"),
    (lambda st: st.update(steps=1), "1 iterations done in all, 2 in pass 1"),
])
def test_a_damaged_checkpoint_is_one_line_not_a_bug(images, tmp_path, capsys, damage, message):
    _, saved = run_capturing(images, {2}, tmp_path, size=64, iters=3)
    state = {key: (dict(value) if isinstance(value, dict) else value) for key, value in checkpoint.load(saved[2]).items()}
    damage(state)
    checkpoint.save(tmp_path / "bad.npz", state)
    status = cli.main(["stylize", images["content"], images["style"], "-o", str(tmp_path / "out.png"), "--weights",
                       images["weights"], "--size", "64", "--iters", "3", "--resume", str(tmp_path / "bad.npz")])
    err = capsys.readouterr().err
    assert status == 1 and err.count("\n") == 1 and message in err, err
    assert "internal error" not in err and "start again without --resume" in err
    assert not (tmp_path / "out.png").exists()


def test_resuming_from_another_folder_with_a_copy_of_the_weights(images, tmp_path, monkeypatch, capsys):
    work = tmp_path / "work"
    work.mkdir()
    for name in ("content", "style", "weights"):
        (work / Path(images[name]).name).write_bytes(Path(images[name]).read_bytes())
    c, s, w = (Path(images[name]).name for name in ("content", "style", "weights"))
    monkeypatch.chdir(work)
    argv = ["stylize", c, s, "-o", "out.png", "--weights", w, "--size", "64", "--iters", "4", "--checkpoint", "ck.npz",
            "--checkpoint-every", "2"]
    assert cli.main(argv[:-4] + ["--iters", "2", "--checkpoint", "ck.npz"]) == 0
    whole = transfer.stylize(c, s, weights=w, size=64, iters=4).image
    monkeypatch.chdir(tmp_path)
    argv = ["stylize", f"work/{c}", f"work/{s}", "-o", "work/out.png", "--weights", images["weights"], "--size", "64",
            "--iters", "4", "--resume", "work/ck.npz"]
    assert cli.main(argv) == 0, capsys.readouterr().err
    with Image.open(work / "out.png") as img:
        assert np.array_equal(np.asarray(img), np.clip(np.rint(whole), 0, 255).astype(np.uint8))
    # Once at the end, the same command has nothing left to do, and says so.
    capsys.readouterr()
    assert cli.main(argv) == 0
    assert "nothing was left to do: the checkpoint is at iteration 4 and --iters is 4" in capsys.readouterr().out


def test_a_different_weights_file_is_refused(images, tmp_path, capsys):
    _, saved = run_capturing(images, {1}, tmp_path, size=64, iters=1)
    other = tmp_path / "other.h5"
    other.write_bytes(Path(images["weights"]).read_bytes())
    with open(other, "r+b") as f:  # the same layout, one weight changed: another network to the optimiser
        f.seek(-4096, 2)
        byte = f.read(1)
        f.seek(-4096, 2)
        f.write(bytes([byte[0] ^ 1]))
    status = cli.main(["stylize", images["content"], images["style"], "-o", str(tmp_path / "out.png"), "--weights",
                       str(other), "--size", "64", "--iters", "1", "--resume", str(saved[1])])
    assert status == 2 and "the weights file differs from the one the checkpoint was made with" in capsys.readouterr().err


def test_sigterm_saves_like_ctrl_c_and_exits_143(images, tmp_path):
    ckpt = tmp_path / "ck.npz"
    process = subprocess.Popen(command(images, tmp_path / "out.png", "--iters", "400", "--checkpoint", ckpt,
                                       "--checkpoint-every", "2"),
                               env=environment(), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    wait_for(ckpt, process)
    process.terminate()
    _, err = process.communicate(timeout=120)
    assert process.returncode == 143, err
    last = err.strip().splitlines()[-1]
    assert last.startswith("scratchnst: interrupted (SIGTERM); wrote the best image so far") and "Traceback" not in err
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]  # no temporary file left
    assert checkpoint.load(ckpt)["steps"] >= 2


def test_with_several_passes_iters_may_not_change(images, tmp_path):
    _, saved = run_capturing(images, {2}, tmp_path, size=96, iters=3, scales=2)
    with pytest.raises(UsageError, match=r"iters: checkpoint 3, now 5.*only with --scales 1"):
        transfer.stylize(images["content"], images["style"], weights=images["weights"], size=96, iters=5, scales=2,
                         resume=checkpoint.load(saved[2]))


def test_two_stops_at_once_still_save_the_run(images, tmp_path, capsys, monkeypatch):
    # Both arrive while a checkpoint is written, so both are held back and delivered together:
    # the second must not interrupt the saving of the first one's results.
    real = checkpoint.save
    calls = []

    def save_with_two_stops(path, state):
        calls.append(1)
        if len(calls) == 2:
            os.kill(os.getpid(), signal.SIGTERM)
            os.kill(os.getpid(), signal.SIGINT)
        return real(path, state)

    monkeypatch.setattr(checkpoint, "save", save_with_two_stops)
    status = cli.main(["stylize", images["content"], images["style"], "-o", str(tmp_path / "out.png"), "--weights",
                       images["weights"], "--size", "64", "--iters", "20", "--checkpoint", str(tmp_path / "ck.npz"),
                       "--checkpoint-every", "1", "--log", str(tmp_path / "log.json")])
    err = capsys.readouterr().err
    assert status in (130, 143) and "Traceback" not in err
    assert "wrote the best image so far" in err.strip().splitlines()[-1]
    assert json.loads((tmp_path / "log.json").read_text())["stopped"].startswith("interrupted (")
    assert checkpoint.load(tmp_path / "ck.npz")["steps"] >= 2

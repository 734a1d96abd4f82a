"""Tests of `scratchnst stylize`: flags and their defaults, output files, messages, errors, Ctrl-C."""

import io
import json

import numpy as np
import pytest
from PIL import Image

from scratchnst import cli, transfer
from scratchnst.cli import stylize_command


@pytest.fixture
def paths(shared_image, squeezenet_weights_path):
    return {
        "content": str(shared_image("tubingen.jpg")),
        "style": str(shared_image("starry_night.jpg")),
        "scream": str(shared_image("the_scream.jpg")),
        "weights": str(squeezenet_weights_path),
    }


def stylize(paths, out, *flags):
    """Run `scratchnst stylize CONTENT STYLE -o OUT --weights W --size 64 ... flags`; the exit status."""
    argv = ["stylize", paths["content"], paths["style"], "-o", str(out), "--weights", paths["weights"], "--size", "64"]
    return cli.main(argv + list(flags))


def test_help_shows_every_flag_and_default(capsys):
    with pytest.raises(SystemExit) as exit_info:
        cli.main(["stylize", "--help"])
    assert exit_info.value.code == 0
    text = " ".join(capsys.readouterr().out.split())  # undo argparse's line wrapping
    for flag in ["--model", "--weights", "--size", "--iters", "--optimizer", "--lr", "--alpha", "--beta",
                 "--tv-weight", "--content-layer", "--style-layers", "--init", "--seed", "--pool",
                 "--preserve-colors", "--style-blend", "--style-scale", "--scales", "--save-every", "--log",
                 "--checkpoint", "--checkpoint-every", "--resume", "--debug"]:
        assert flag in text
    for default in ["(default: squeezenet)", "(default: 320)", "(default: 100)", "(default: lbfgs)",
                    "(default: content+noise)", "(default: 0)", "(default: 1.0)"]:
        assert default in text
    # The defaults that depend on the model are listed per model, from MODEL_DEFAULTS itself.
    for model, d in transfer.MODEL_DEFAULTS.items():
        assert f"{model} {d.content_layer}" in text
        assert f"{model} {d.alpha:g}" in text and f"{model} {d.beta:g}" in text
        assert f"{model} {d.tv_weight:g}" in text and f"{model} {d.lr:g}" in text and f"{model} {d.pool}" in text
        assert f"{model} " + ", ".join(f"{n}:{w:g}" for n, w in d.style_layers) in text
    assert "None" not in text


def test_stylize_writes_the_image_snapshots_and_log(paths, tmp_path, capsys):
    out = tmp_path / "out.png"
    log = tmp_path / "run.json"
    status = stylize(paths, out, "--iters", "4", "--save-every", "2", "--log", str(log), "--seed", "3")
    captured = capsys.readouterr()
    assert status == 0
    with Image.open(out) as img:
        assert img.size == (64, 48) and img.mode == "RGB"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out.png", "out_0002.png", "out_0004.png", "run.json"]

    # The settings once, then the final line with the time per iteration and the costs.
    assert captured.out.count("scratchnst stylize") == 1
    for line in ["model", "content_layer", "style_layers", "alpha", "beta", "optimizer", "seed"]:
        assert f"\n  {line} " in captured.out
    final = captured.out.strip().splitlines()[-1]
    assert final.startswith(f"wrote {out}: 4 iterations (") and "s per iteration" in final and "J_style" in final
    # Not a terminal: the progress line is written once, in its final state.
    progress = captured.err.strip().splitlines()
    assert len(progress) == 1 and "4/4" in progress[0] and "ETA" in progress[0] and "J_content" in progress[0]

    data = json.loads(log.read_text())
    assert data["settings"]["seed"] == 3 and data["settings"]["iters"] == 4
    assert [h["iteration"] for h in data["history"]] == [0, 1, 2, 3, 4]
    assert data["seconds_per_iteration"] > 0 and data["output"] == str(out) and data["evaluations"] >= 4
    assert data["history"][-1]["J"] < data["history"][0]["J"]


def test_stylize_flags_reach_the_settings(paths, tmp_path, capsys):
    out = tmp_path / "out.jpg"
    status = cli.main([
        "stylize", paths["content"], paths["style"], paths["scream"], "-o", str(out), "--weights", paths["weights"],
        "--size", "64", "--iters", "2", "--optimizer", "adam", "--lr", "3", "--alpha", "2", "--beta", "5",
        "--tv-weight", "0.5", "--content-layer", "fire2", "--style-layers", "conv1:0.25,fire3", "--init", "noise",
        "--pool", "avg", "--preserve-colors", "--style-blend", "3,1", "--style-scale", "1.2", "--scales", "2",
        "--log", str(tmp_path / "log.json"),
    ])
    assert status == 0 and out.is_file()
    settings = json.loads((tmp_path / "log.json").read_text())["settings"]
    assert settings["optimizer"] == "adam" and settings["lr"] == 3.0
    assert (settings["alpha"], settings["beta"], settings["tv_weight"]) == (2.0, 5.0, 0.5)
    assert settings["content_layer"] == "fire2/concat"
    assert settings["style_layers"] == [["conv1", 0.25], ["fire3/concat", 0.5]]
    assert settings["init"] == "noise" and settings["pool"] == "avg" and settings["preserve_colors"] is True
    assert settings["style_blend"] == [0.75, 0.25] and settings["style_scale"] == 1.2 and settings["scales"] == 2
    out_text = capsys.readouterr()
    assert "scale 2/2" in out_text.err
    assert "(of the image before --preserve-colors)" in out_text.out   # the cost printed is not the file's
    with Image.open(out) as written:   # a stylised image's colours change from pixel to pixel: no 4:2:0
        from PIL import JpegImagePlugin
        assert JpegImagePlugin.get_sampling(written) == 0


def test_an_optimiser_that_stops_early_says_why(paths, tmp_path, capsys):
    """Weights so small that the gradient is below L-BFGS's gtol at the start: 0 iterations, and the reason."""
    assert stylize(paths, tmp_path / "out.png", "--alpha", "1e-12", "--beta", "4e-13") == 0
    out = capsys.readouterr().out
    assert "  the optimiser stopped early (iteration 0 of 100: converged: projected gradient below gtol)" in out
    assert "wrote" in out and "(of the image before" not in out


@pytest.mark.parametrize(
    "flags, message, expected_status",
    [
        (["--content-layer", "conv9"], "has no layer 'conv9'", 2),
        (["--lr", "0.1"], "learning rate", 2),
        (["--style-blend", "1,2"], "--style-blend has 2 weights for 1 style", 2),
        (["--init", "missing.png"], "--init missing.png", 2),
        (["--alpha", "nan"], "--alpha must be a finite number", 2),
        (["--size", "18"], "--size", 1),  # the image is too small for the layers: depends on the image
        (["--weights", "missing.h5"], "missing.h5: no such weights file", 1),
    ],
)
def test_user_errors_are_one_line_and_write_nothing(paths, tmp_path, capsys, flags, message, expected_status):
    status = stylize(paths, tmp_path / "out.png", "--iters", "1", *flags)
    err = capsys.readouterr().err
    assert status == expected_status
    assert err.startswith("scratchnst: error: ") and message in err and err.count("\n") == 1
    assert list(tmp_path.iterdir()) == []


def test_unwritable_output_is_refused_before_the_run(paths, tmp_path, capsys):
    assert stylize(paths, tmp_path / "no-such-folder" / "out.png") == 1
    assert "does not exist" in capsys.readouterr().err
    assert stylize(paths, tmp_path / "out.xyz") == 2
    assert "unknown image extension" in capsys.readouterr().err
    missing = cli.main(["stylize", str(tmp_path / "none.jpg"), paths["style"], "-o", str(tmp_path / "o.png"),
                        "--weights", paths["weights"]])
    assert missing == 1 and "no such image file" in capsys.readouterr().err


def test_bad_flag_values_are_argparse_errors(paths, tmp_path, capsys):
    for flags in (["--style-layers", "conv1:heavy"], ["--style-blend", "a,b"]):
        with pytest.raises(SystemExit) as exit_info:
            stylize(paths, tmp_path / "out.png", *flags)
        assert exit_info.value.code == 2
    err = capsys.readouterr().err
    assert "must be a number" in err and "Traceback" not in err
    assert all(line.startswith("scratchnst stylize: error: ") for line in err.splitlines())


def test_ctrl_c_writes_the_best_image_and_the_log_and_exits_130(paths, tmp_path, capsys, monkeypatch):
    real = transfer.make_cost_function

    def interrupted_after_a_few_calls(*args, **kwargs):
        cost = real(*args, **kwargs)
        calls = []

        def cost_then_ctrl_c(x):
            calls.append(1)
            if len(calls) == 8:
                raise KeyboardInterrupt
            return cost(x)

        return cost_then_ctrl_c

    monkeypatch.setattr(transfer, "make_cost_function", interrupted_after_a_few_calls)
    status = stylize(paths, tmp_path / "out.png", "--iters", "50", "--log", str(tmp_path / "log.json"))
    err = capsys.readouterr().err
    assert status == 130 and "Traceback" not in err
    last = err.strip().splitlines()[-1]
    assert last.startswith("scratchnst: interrupted (Ctrl-C); wrote the best image so far (iteration ")
    log = json.loads((tmp_path / "log.json").read_text())
    best = log["best"]["step"]
    assert best >= 1 and f"to {tmp_path / f'out_{best:04d}.png'}" in last and "log.json" in last
    assert log["stopped"] == "interrupted (Ctrl-C)" and log["best"]["J"] == min(h["J"] for h in log["history"])
    # The finished output is not written (it would pass for a complete run); no temporary file is left.
    assert sorted(p.name for p in tmp_path.iterdir()) == ["log.json", f"out_{best:04d}.png"]
    with Image.open(tmp_path / f"out_{best:04d}.png") as img:
        assert img.size == (64, 48)


def test_the_output_replaces_an_older_file_only_when_complete(paths, tmp_path, monkeypatch):
    out = tmp_path / "out.png"
    out.write_bytes(b"the previous picture")
    monkeypatch.setattr(stylize_command, "stylize", lambda *a, **k: (_ for _ in ()).throw(KeyboardInterrupt))
    assert stylize(paths, out) == 130
    assert out.read_bytes() == b"the previous picture"
    monkeypatch.undo()
    assert stylize(paths, out, "--iters", "1") == 0
    with Image.open(out) as img:
        assert np.asarray(img).shape == (48, 64, 3)


class FakeTerminal(io.StringIO):
    def isatty(self):
        return True


def fake_progress(iteration, iters=10, done=None, scale=1, scales=1):
    return transfer.Progress(
        scale=scale, scales=scales, shape=(4, 4), iteration=iteration, iters=iters, step=iteration,
        total_steps=iters, done=iteration / iters if done is None else done, elapsed=2.0 * iteration,
        costs={"J": 1234.5, "J_content": 12.0, "J_style": 0.5, "J_tv": 0.0}, render=lambda: None,
    )


def test_progress_line_redraws_in_place_on_a_terminal():
    stream = FakeTerminal()
    line = stylize_command.ProgressLine(stream)
    line.update(fake_progress(0))
    line.update(fake_progress(5))
    line.update(fake_progress(10))
    line.close()
    text = stream.getvalue()
    # The first state is drawn at once (no estimate yet), the last is drawn and the line ended;
    # states in between are drawn at most 10 times a second. \x1b[K clears the old line's rest.
    assert text.startswith("\r[....................]  0/10  ETA --  J 1.23e+03")
    assert text.endswith("\r[####################] 10/10  ETA 0s  J 1.23e+03  J_content 12  J_style 0.5\x1b[K\n")
    assert text.count("\n") == 1


def test_progress_line_writes_one_line_when_not_a_terminal():
    stream = io.StringIO()
    line = stylize_command.ProgressLine(stream)
    for i in range(11):
        line.update(fake_progress(i, scale=2, scales=2, done=0.5 + i / 20))
    line.close()
    expected = "scale 2/2 [####################] 10/10  ETA 0s  J 1.23e+03  J_content 12  J_style 0.5\n"
    assert stream.getvalue() == expected

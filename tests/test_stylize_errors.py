"""`scratchnst stylize` with every mistake a user can make: one line, the right exit status, nothing lost.

Each case runs the real command in-process (cli.main) and checks what a user would see: the exit
status (2 wrong usage, 1 otherwise), exactly one line on stderr that names the thing, no
traceback, and which files exist afterwards (inputs untouched, no half-written or temporary files).
"""

import json
import os
import re
import shutil
import signal
import stat
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from scratchnst import cli, image, settings, transfer
from scratchnst.errors import UsageError, UserError


@pytest.fixture
def inputs(tmp_path, shared_image, squeezenet_weights_path):
    """Copies of a content and a style image in tmp_path/in, and the weights path."""
    folder = tmp_path / "in"
    folder.mkdir()
    content, style = folder / "content.jpg", folder / "style.jpg"
    shutil.copy(shared_image("tubingen.jpg"), content)
    shutil.copy(shared_image("starry_night.jpg"), style)
    return {"content": content, "style": style, "weights": squeezenet_weights_path}


def run(inputs, out, *flags, content=None, style=None):
    argv = ["stylize", str(content or inputs["content"]), str(style or inputs["style"]), "-o", str(out),
            "--weights", str(inputs["weights"]), "--size", "64", "--iters", "3"]
    return cli.main(argv + [str(f) for f in flags])


def one_error_line(capsys):
    """The single line on stderr (after the progress line, if the run had started); asserts no traceback."""
    captured = capsys.readouterr()
    assert "Traceback" not in captured.err
    lines = [line for line in captured.err.splitlines() if line.strip()]
    assert lines and lines[-1].startswith("scratchnst: "), captured.err
    assert all(line.startswith("[") or line.startswith("scale ") for line in lines[:-1]), captured.err  # progress
    return lines[-1], captured.out


def files(folder):
    return sorted(p.name for p in Path(folder).iterdir())


def digest(path):
    return Path(path).read_bytes()


# ------------------------------------------------------------------ outputs checked before the run
@pytest.mark.parametrize("which", ["content", "style"])
def test_output_equal_to_an_input_is_refused_and_the_input_kept(inputs, capsys, which):
    before = digest(inputs[which])
    # the same file, spelled differently
    target = inputs[which].parent / ".." / inputs[which].parent.name / inputs[which].name
    status = run(inputs, target)
    line, out = one_error_line(capsys)
    assert status == 2 and f"is the {which} image" in line and "choose another file name" in line
    assert out == "" and digest(inputs[which]) == before


def test_output_through_a_symbolic_link_to_an_input_is_refused(inputs, tmp_path, capsys):
    link = tmp_path / "link.jpg"
    link.symlink_to(inputs["content"])
    assert run(inputs, link) == 2
    assert "is the content image" in one_error_line(capsys)[0]


@pytest.mark.parametrize("flag", ["--log", "--checkpoint"])
def test_log_or_checkpoint_equal_to_an_input_or_the_output_is_refused(inputs, tmp_path, capsys, flag):
    out = tmp_path / "out.png"
    assert run(inputs, out, flag, inputs["style"]) == 2
    assert f"{flag} {inputs['style']} is the style image" in one_error_line(capsys)[0]
    assert run(inputs, out, flag, out) == 2
    assert "are the same file" in one_error_line(capsys)[0]
    assert files(tmp_path) == ["in"]


@pytest.mark.parametrize("name, message", [
    ("out.xyz", "unknown image extension '.xyz'"),
    ("out.psd", "Pillow reads PSD files but cannot write them"),
    ("out.xbm", "Pillow cannot write a colour image as XBM"),
])
def test_an_output_format_that_cannot_hold_the_image_is_refused_before_the_run(inputs, tmp_path, capsys,
                                                                                monkeypatch, name, message):
    monkeypatch.setattr(transfer.networks, "load", lambda *a, **k: pytest.fail("the network was loaded"))
    assert run(inputs, tmp_path / name) == 2
    assert message in one_error_line(capsys)[0] and files(tmp_path) == ["in"]


def test_ctrl_c_while_the_result_is_saved_does_not_lose_it(inputs, tmp_path, capsys, monkeypatch):
    real = image.save_image

    def save_then_ctrl_c(path, picture):
        written = real(path, picture)
        os.kill(os.getpid(), signal.SIGINT)  # ignored while the results are written
        return written

    monkeypatch.setattr(image, "save_image", save_then_ctrl_c)
    assert run(inputs, tmp_path / "out.png", "--log", tmp_path / "log.json") == 0
    assert (tmp_path / "out.png").is_file() and json.loads((tmp_path / "log.json").read_text())["iterations"] == 3


@pytest.mark.parametrize("name", ["pictures.png", "pictures"])  # a folder's name without an extension too
def test_output_that_is_a_folder_is_refused(inputs, tmp_path, capsys, name):
    (tmp_path / name).mkdir()
    assert run(inputs, tmp_path / name) == 2
    assert "is a folder; give a file name in it" in one_error_line(capsys)[0]


def test_output_folder_missing_is_refused_before_any_computing(inputs, tmp_path, capsys, monkeypatch):
    monkeypatch.setattr(transfer.networks, "load", lambda *a, **k: pytest.fail("the network was loaded"))
    assert run(inputs, tmp_path / "nowhere" / "out.png") == 1
    line, out = one_error_line(capsys)
    assert "folder" in line and "does not exist" in line and out == ""


def test_unwritable_output_folder_is_refused_before_any_computing(inputs, unwritable_folder, capsys, monkeypatch):
    monkeypatch.setattr(transfer.networks, "load", lambda *a, **k: pytest.fail("the network was loaded"))
    assert run(inputs, unwritable_folder / "out.png") == 1
    line, out = one_error_line(capsys)
    assert f"folder {unwritable_folder} is not writable" in line and out == ""


@pytest.mark.parametrize("flags, message", [
    (["--save-every", "-1"], "--save-every must be at least 0"),
    (["--checkpoint-every", "0", "--checkpoint", "ck.npz"], "--checkpoint-every must be at least 1"),
    (["--checkpoint-every", "5"], "--checkpoint-every needs --checkpoint FILE"),
    (["--alpha", "0", "--beta", "0"], "there is nothing to optimise"),
    (["--style-layers", "conv1,conv1"], "style layer conv1 is given twice"),
    (["--content-layer", ""], "has no layer ''"),
    (["--size", "99999"], "GB of memory"),
    (["--beta", "inf"], "--beta must be a finite number"),
    (["--style-scale", "0"], "--style-scale must be a finite number > 0"),
    (["--iters", "0"], "--iters must be at least 1"),
    (["--style-layers", "fire2:-1"], "style layer weights must be finite numbers >= 0"),
    (["--style-layers", "fire22"], "did you mean"),
])
def test_setting_values_out_of_range_are_usage_errors(inputs, tmp_path, capsys, monkeypatch, flags, message):
    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(transfer.networks, "load", lambda *a, **k: pytest.fail("the network was loaded"))
    assert run(inputs, tmp_path / "out.png", *flags) == 2
    assert message in one_error_line(capsys)[0]
    assert files(tmp_path) == ["in"]


@pytest.mark.parametrize("flags, message", [
    (["--style-layers", "fire2:x"], "the weight after ':' must be a number"),
    (["--style-blend", "0.5;0.5"], "give numbers separated by commas"),
    (["--style-blend", "1,,2"], "give numbers separated by commas"),
    (["--style-layers", "conv1,,fire2"], "has an empty item"),
    (["--style-layers", "conv1:"], "the weight after ':' is empty"),
    (["--log", ""], "argument --log: an empty name"),
    (["--init", ""], "argument --init: an empty name"),
    (["--resume", ""], "argument --resume: an empty name"),
    (["--size", "big"], "invalid int value"),
    (["--model", "resnet"], "invalid choice"),
])
def test_values_that_do_not_parse_are_one_line_usage_errors(inputs, tmp_path, capsys, flags, message):
    with pytest.raises(SystemExit) as exit_info:
        run(inputs, tmp_path / "out.png", *flags)
    err = capsys.readouterr().err
    assert exit_info.value.code == 2 and err.count("\n") == 1 and message in err
    assert err.startswith("scratchnst stylize: error: ") and err.rstrip().endswith("see scratchnst stylize --help")


def test_blend_weights_must_match_the_style_images(inputs, tmp_path, capsys):
    argv = ["stylize", str(inputs["content"]), str(inputs["style"]), str(inputs["style"]), "-o",
            str(tmp_path / "out.png"), "--weights", str(inputs["weights"]), "--style-blend", "1,2,3"]
    assert cli.main(argv) == 2
    assert "--style-blend has 3 weights for 2 style images; give one per image" in one_error_line(capsys)[0]


# ---------------------------------------------------------------------------------- bad inputs
@pytest.mark.parametrize("make, message", [
    (lambda p: p.write_bytes(b""), "the file is empty (0 bytes)"),
    (lambda p: p.write_text("hello, I am not a picture"), "not a readable image"),
    (lambda p: p.write_bytes(p.with_name("content.jpg").read_bytes()[:3000]), "not a readable image"),
    (lambda p: p.mkdir(), "folder"),
])
def test_a_broken_style_image_is_one_line_and_writes_nothing(inputs, tmp_path, capsys, make, message):
    broken = inputs["content"].parent / "broken.jpg"
    make(broken)
    assert run(inputs, tmp_path / "out.png", style=broken) == 1
    line = one_error_line(capsys)[0]
    assert str(broken) in line and message in line
    assert files(tmp_path) == ["in"]


def test_an_image_too_small_for_the_network_says_the_minimum(inputs, tmp_path, capsys):
    strip = inputs["content"].parent / "strip.png"
    Image.fromarray(np.full((4, 200, 3), 128, np.uint8)).save(strip)
    assert run(inputs, tmp_path / "out.png", content=strip) == 1
    line = one_error_line(capsys)[0]
    assert "the content image is 64x1 px" in line and "need at least" in line   # width x height


# ------------------------------------------------------------------------------- costs that overflow
@pytest.mark.filterwarnings("error")  # NumPy's overflow warnings would be more lines on stderr
def test_a_beta_that_overflows_at_the_start_names_the_flag(inputs, tmp_path, capsys):
    assert run(inputs, tmp_path / "out.png", "--beta", "1e39") == 1
    line = one_error_line(capsys)[0]
    assert "became infinite" in line and "lower --beta" in line and "nothing to save" in line
    assert files(tmp_path) == ["in"]


@pytest.mark.filterwarnings("error")
def test_a_style_layer_weight_that_overflows_is_named_rather_than_beta_alone(inputs, tmp_path, capsys):
    assert run(inputs, tmp_path / "out.png", "--style-layers", "fire2:1e308,fire3:0.5") == 1
    line = one_error_line(capsys)[0]
    assert "times the --style-layers weights fire2/concat:1e+308 makes it overflow" in line, line
    assert "fire3" not in line and "lower those weights or --beta" in line
    assert files(tmp_path) == ["in"]


@pytest.mark.parametrize("optimizer", ["lbfgs", "adam"])
def test_a_cost_that_becomes_nan_mid_run_keeps_the_last_good_image(inputs, tmp_path, capsys, monkeypatch, optimizer):
    real = transfer.make_cost_function

    def overflowing_after_six_calls(*args, **kwargs):
        cost = real(*args, **kwargs)
        calls = []

        def cost_then_nan(x):
            calls.append(1)
            J, dx, parts = cost(x)
            if len(calls) >= 6:  # the style cost turns to NaN, as an overflowing Gram would
                parts = {**parts, "J_style": float("nan"), "J": float("nan")}
                return float("nan"), dx, parts
            return J, dx, parts

        return cost_then_nan

    monkeypatch.setattr(transfer, "make_cost_function", overflowing_after_six_calls)
    out = tmp_path / "out.png"
    assert run(inputs, out, "--iters", "20", "--optimizer", optimizer, "--log", tmp_path / "log.json") == 1
    line = one_error_line(capsys)[0]
    assert "the cost became NaN" in line and "lower --beta" in line
    log = json.loads((tmp_path / "log.json").read_text())
    best = log["best"]["step"]
    assert f"wrote the best image so far (iteration {best}," in line and f"out_{best:04d}.png" in line
    assert all(np.isfinite(h["J"]) for h in log["history"]) and log["stopped"].startswith("the cost became NaN")
    assert files(tmp_path) == ["in", "log.json", f"out_{best:04d}.png"]  # no out.png: the run did not finish


def full_disk_on(monkeypatch, module, name, failing):
    """module.name raises a full disk's UserError on the calls for which failing(path, call number) is true."""
    real, calls = getattr(module, name), []

    def write(path, *args, **kwargs):
        calls.append(path)
        if failing(Path(path), len(calls)):
            raise UserError(f"cannot write the file {path}: No space left on device; check that the folder exists, "
                            "is writable and has space")
        return real(path, *args, **kwargs)

    monkeypatch.setattr(module, name, write)


@pytest.mark.parametrize("broken", ["checkpoint", "snapshot"])
def test_a_write_that_fails_mid_run_stops_it_and_keeps_the_best_image(inputs, tmp_path, capsys, monkeypatch, broken):
    from scratchnst import checkpoint

    out, ck = tmp_path / "out.png", tmp_path / "ck.npz"
    if broken == "checkpoint":  # the second checkpoint, at iteration 4
        full_disk_on(monkeypatch, checkpoint, "save", lambda path, call: call == 2)
        flags = ["--checkpoint", ck, "--checkpoint-every", "2"]
    else:  # the second snapshot, at iteration 4; the rescue's own write then succeeds
        full_disk_on(monkeypatch, image, "save_image", lambda path, call: call == 2)
        flags = ["--save-every", "2"]
    assert run(inputs, out, "--iters", "10", *flags) == 1
    line = one_error_line(capsys)[0]
    assert line.startswith("scratchnst: error: cannot write the file") and "No space left on device" in line
    assert "the run stopped at iteration 4; wrote the best image so far (iteration 4," in line, line
    assert "out_0004.png" in line
    if broken == "checkpoint":  # the one written before the failure is whole
        assert line.endswith(f"{ck} still holds iteration 2: continue from there with the same command and "
                             f"--resume {ck}"), line
    else:
        assert "--resume" not in line
    kept = ["ck.npz"] if broken == "checkpoint" else ["out_0002.png"]  # the writes before the failure
    assert files(tmp_path) == sorted(["in", "out_0004.json", "out_0004.png", *kept])  # no out.png


def test_an_output_that_cannot_be_written_at_the_end_is_kept_in_the_checkpoint(inputs, tmp_path, capsys, monkeypatch):
    out, ck = tmp_path / "out.png", tmp_path / "ck.npz"
    with monkeypatch.context() as patch:
        full_disk_on(patch, image, "save_image", lambda path, call: path == out)
        assert run(inputs, out, "--iters", "4", "--checkpoint", ck) == 1
    line = one_error_line(capsys)[0]
    assert f"the finished run is in the checkpoint {ck}" in line and f"--resume {ck} writes it" in line, line
    assert files(tmp_path) == ["ck.npz", "in"]
    assert run(inputs, out, "--iters", "4", "--resume", ck) == 0  # free space again: the image, without the work
    assert "nothing was left to do" in capsys.readouterr().out and out.is_file()


def test_an_output_that_cannot_be_written_without_a_checkpoint_goes_to_the_temporary_folder(
        inputs, tmp_path, capsys, monkeypatch):
    from scratchnst import atomic

    out, spare = tmp_path / "out.png", tmp_path / "spare"
    spare.mkdir()
    monkeypatch.setattr(tempfile, "tempdir", str(spare))
    with monkeypatch.context() as patch:
        full_disk_on(patch, image, "save_image", lambda path, call: path == out)
        assert run(inputs, out, "--iters", "2") == 1
    line = one_error_line(capsys)[0]
    kept, = spare.glob("scratchnst-out-*.png")
    assert line.endswith(f"; wrote the image to {kept} instead"), line
    assert files(tmp_path) == ["in", "spare"] and image.load_image(kept).shape[2] == 3
    # the temporary folder full too: said, and nothing left behind
    with monkeypatch.context() as patch:
        full_disk_on(patch, image, "save_image", lambda path, call: True)
        assert run(inputs, out, "--iters", "2") == 1
    assert one_error_line(capsys)[0].endswith("the image could not be written to the temporary folder either: it is lost")
    assert sorted(p.name for p in spare.iterdir()) == [kept.name]
    # the image written, the log not: the line says the image was
    log = tmp_path / "log.json"
    with monkeypatch.context() as patch:
        full_disk_on(patch, atomic, "write_text", lambda path, call: path == log)
        assert run(inputs, out, "--iters", "2", "--log", log) == 1
    assert one_error_line(capsys)[0].startswith(f"scratchnst: error: wrote {out}, but cannot write the file {log}")
    assert out.is_file() and not log.exists()


def test_what_the_rescue_keeps_on_a_full_disk_is_what_it_says(inputs, tmp_path, capsys, monkeypatch):
    """The snapshot at iteration 4 fails, and so does every checkpoint from then on: the best image is kept."""
    from scratchnst import checkpoint

    out, ck = tmp_path / "out.png", tmp_path / "ck.npz"
    full_disk_on(monkeypatch, image, "save_image", lambda path, call: call == 2)
    full_disk_on(monkeypatch, checkpoint, "save", lambda path, call: call >= 2)
    assert run(inputs, out, "--iters", "10", "--save-every", "2", "--checkpoint", ck, "--checkpoint-every", "3") == 1
    line = one_error_line(capsys)[0]
    assert "wrote the best image so far (iteration 4," in line and "and the cost log to" in line, line
    assert line.endswith("is writable and has space)") and "; not the checkpoint (cannot write the file" in line
    assert "could not be kept" not in line
    assert files(tmp_path) == ["ck.npz", "in", "out_0002.png", "out_0004.json", "out_0004.png"]


def test_a_final_checkpoint_that_cannot_be_written_keeps_the_image(inputs, tmp_path, capsys, monkeypatch):
    from scratchnst import checkpoint

    out, ck = tmp_path / "out.png", tmp_path / "ck.npz"
    full_disk_on(monkeypatch, checkpoint, "save", lambda path, call: call == 3)  # iterations 2, 4, then the end
    assert run(inputs, out, "--iters", "5", "--checkpoint", ck, "--checkpoint-every", "2") == 1
    line = one_error_line(capsys)[0]
    assert line.startswith(f"scratchnst: error: wrote {out}, but cannot write the file {ck}"), line
    assert files(tmp_path) == ["ck.npz", "in", "out.png"]


# ---------------------------------------------------------------------------------- --debug
def test_debug_shows_the_traceback(inputs, tmp_path):
    with pytest.raises(Exception, match="no such image file"):
        run(inputs, tmp_path / "out.png", "--debug", content=tmp_path / "missing.jpg")


def test_an_unexpected_error_is_one_line_that_says_it_is_a_bug(inputs, tmp_path, capsys, monkeypatch):
    monkeypatch.setattr(transfer, "make_cost_function", lambda *a, **k: 1 / 0)
    assert run(inputs, tmp_path / "out.png") == 1
    line = one_error_line(capsys)[0]
    assert "internal error (ZeroDivisionError" in line and "--debug" in line


def test_the_memory_check_suggests_a_size_that_fits(inputs, monkeypatch):
    monkeypatch.setattr(settings, "available_memory", lambda: 2e9)
    resolved = transfer.resolve_settings(model="squeezenet", weights=inputs["weights"], size=5000)
    with pytest.raises(UsageError, match=r"--size 5000 needs about .* use --size (\d+) or less") as error:
        settings.check_memory(resolved, np.zeros((300, 400, 3)))
    fits = int(re.search(r"use --size (\d+)", str(error.value)).group(1))
    H, W = round(fits * 3 / 4), fits
    assert settings.memory_needed("squeezenet", H, W) <= 2e9 < settings.memory_needed("squeezenet", H + 20, W + 20)
    settings.check_memory({**resolved, "size": fits}, np.zeros((300, 400, 3)))  # fits: no error


def test_the_memory_check_blames_a_style_scale_that_does_not_fit_and_suggests_one_that_does(inputs, monkeypatch):
    monkeypatch.setattr(settings, "available_memory", lambda: 2e9)
    resolved = transfer.resolve_settings(model="squeezenet", weights=inputs["weights"], size=64, style_scale=1000)
    with pytest.raises(UsageError, match=r"--style-scale 1000 \(the style image at 1000 times --size 64\) needs "
                                         r"about .* use --style-scale ([\d.]+) or less") as error:
        settings.check_memory(resolved, np.zeros((300, 400, 3)))
    fits = float(re.search(r"use --style-scale ([\d.]+)", str(error.value)).group(1))
    assert settings.memory_needed("squeezenet", 48, 64, fits) <= 2e9 < settings.memory_needed("squeezenet", 48, 64,
                                                                                              fits * 1.05)
    settings.check_memory({**resolved, "style_scale": fits}, np.zeros((300, 400, 3)))  # fits: no error


def test_a_file_name_the_terminal_cannot_show_is_escaped_and_the_run_goes_on(inputs, tmp_path):
    content = inputs["content"].with_name("T\u00fcbingen, caf\u00e9.jpg")
    shutil.copy(inputs["content"], content)
    out = tmp_path / "r\u00e9sultat.png"
    done = subprocess.run([sys.executable, "-m", "scratchnst", "stylize", str(content), str(inputs["style"]), "-o",
                           str(out), "--weights", str(inputs["weights"]), "--size", "64", "--iters", "2"],
                          env=dict(os.environ, PYTHONIOENCODING="ascii"), capture_output=True, timeout=300)
    assert done.returncode == 0, done.stderr.decode("ascii", "replace")
    assert out.is_file() and b"T\\xfcbingen, caf\\xe9.jpg" in done.stdout + done.stderr


# ------------------------------------------------------------------ outputs that are not plain files
@pytest.mark.parametrize("flag", ["-o", "--log", "--checkpoint"])
def test_a_device_or_pipe_as_an_output_is_refused_and_left_alone(inputs, tmp_path, capsys, flag):
    fifo = tmp_path / ("pipe.png" if flag == "-o" else "pipe")
    os.mkfifo(fifo)
    out = fifo if flag == "-o" else tmp_path / "out.png"
    extra = [] if flag == "-o" else [flag, fifo]
    assert run(inputs, out, *extra) == 2
    assert "it is not a regular file (a device or a pipe)" in one_error_line(capsys)[0]
    assert stat.S_ISFIFO(fifo.stat().st_mode)  # still a pipe, not replaced by a file


@pytest.mark.parametrize("stdout", ["a file", "a pipe"])
def test_the_commands_own_standard_output_as_the_log_is_refused(inputs, tmp_path, stdout):
    """--log /dev/stdout: redirected to a file, the log's rename would have replaced the command's own lines."""
    argv = [sys.executable, "-m", "scratchnst", "stylize", str(inputs["content"]), str(inputs["style"]), "-o",
            str(tmp_path / "out.png"), "--weights", str(inputs["weights"]), "--size", "64", "--iters", "2", "--log",
            "/dev/stdout"]
    if stdout == "a file":
        with open(tmp_path / "said.txt", "wb") as said:
            done = subprocess.run(argv, stdout=said, stderr=subprocess.PIPE, text=True, timeout=120)
        assert (tmp_path / "said.txt").read_text() == ""  # still the file the shell made, nothing replaced it
    else:
        done = subprocess.run(argv, capture_output=True, text=True, timeout=120)
    assert done.returncode == 2 and done.stderr.count("\n") == 1, done.stderr
    assert "cannot write --log /dev/stdout: it is this command's own standard output" in done.stderr
    assert sorted(p.name for p in tmp_path.iterdir()) == (["in", "said.txt"] if stdout == "a file" else ["in"])


def test_an_output_through_a_link_writes_the_file_it_points_to(inputs, tmp_path, capsys):
    (tmp_path / "results").mkdir()
    link = tmp_path / "latest.png"
    link.symlink_to(tmp_path / "results" / "run1.png")
    assert run(inputs, link) == 0
    assert link.is_symlink() and (tmp_path / "results" / "run1.png").is_file()


@pytest.mark.parametrize("collision", ["content", "log"])
def test_snapshot_names_may_not_collide_with_inputs_or_other_outputs(inputs, tmp_path, capsys, collision):
    out = tmp_path / "r.png"
    if collision == "content":
        content = tmp_path / "r_0002.png"
        shutil.copy(inputs["content"], content)
        before = content.read_bytes()
        status = run(inputs, out, "--save-every", "1", content=content)
        assert content.read_bytes() == before
    else:
        status = run(inputs, out, "--log", tmp_path / "r_0002.json")
    assert status == 2
    assert "has the name of a snapshot of -o" in one_error_line(capsys)[0]


def test_a_line_break_in_a_path_stays_on_one_line(inputs, tmp_path, capsys):
    assert run(inputs, tmp_path / "out.png", content=tmp_path / "no\npe.jpg") == 1
    assert "no\\npe.jpg: no such image file" in one_error_line(capsys)[0]


def test_a_link_with_a_snapshot_name_is_refused_before_the_run(inputs, tmp_path, capsys):
    keep = tmp_path / "keep.jpg"
    shutil.copy(inputs["content"], keep)
    (tmp_path / "P_0002.png").symlink_to(keep)
    assert run(inputs, tmp_path / "P.png", "--save-every", "1", content=keep) == 2
    assert "is a link or not a plain file, and has the name of a snapshot of -o" in one_error_line(capsys)[0]
    assert keep.read_bytes() == inputs["content"].read_bytes()

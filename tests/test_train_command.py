"""Tests of `scratchnst train` and `scratchnst apply`: end to end at tiny sizes, every one-line error, Ctrl-C."""

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from scratchnst import checkpoint, cli, training, transformer_net

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
                 "--lr-schedule", "--final-steps", "--outer-kernel"]:
        assert flag in text
    assert f"(default: a twelfth of --iters)" in text and training.FINAL_STEPS_DIVISOR == 12
    assert f"(default: the smaller of SIZE and {training.DEFAULT_CROP})" in text
    assert f"(default: {training.DEFAULT_LR_SCHEDULE})" in text
    from scratchnst.settings import MODEL_DEFAULTS
    alpha = MODEL_DEFAULTS["squeezenet"].alpha * training.TRAIN_ALPHA_FACTOR
    assert f"(default: squeezenet {alpha:g}; vgg19" in text
    assert f"(default: {training.DEFAULT_ITERS})" in text and f"(default: {training.DEFAULT_SIZE})" in text
    assert f"(default: {training.DEFAULT_BATCH})" in text and f"(default: {training.DEFAULT_LR:g})" in text
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
    assert transformer_net.architecture_of(params) == ((4, 6, 8), 2, 3)
    assert train(setup, "--iters", "1", "--outer-kernel", "4") == 2
    assert "--outer-kernel must be an odd integer >= 1" in error_line(capsys)
    with pytest.raises(SystemExit) as info:
        train(setup, "--iters", "1", "--widths", "4,6")
    assert info.value.code == 2 and "three integers" in error_line(capsys)
    assert train(setup, "--iters", "1", "--residual-blocks", "-1") == 2
    assert "--residual-blocks must be an integer >= 0" in error_line(capsys)


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
                                  "snapshot-every without snapshot", "bad resume file"])
def test_one_line_errors(setup, capsys, case):
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
        style, expected = write_photo(tmp / "thin.png", 4, 200), "the style image is 1x32 px"
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
    assert "is a file; give a folder" in error_line(capsys)
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
    net = transformer_net.save(tmp_path / "net.h5", transformer_net.init_params(np.random.default_rng(0), (4, 4, 4), 0))
    monkeypatch.setattr(settings, "available_memory", lambda: 200e6)
    assert cli.main(["apply", str(net), str(photo), "-o", str(tmp_path / "o.png")]) == 1
    line = error_line(capsys)
    assert "p.png is 400x300 pixels" in line and "use --size" in line and not (tmp_path / "o.png").exists()
    fits = int(line.rsplit("--size ", 1)[1].split()[0])
    assert cli.main(["apply", str(net), str(photo), "-o", str(tmp_path / "o.png"), "--size", str(fits)]) == 0


def test_ctrl_c_saves_the_network_trained_so_far(setup, tmp_path):
    env = dict(os.environ, PYTHONPATH=str(REPO) + os.pathsep + os.environ.get("PYTHONPATH", ""),
               OPENBLAS_NUM_THREADS="1")
    ck = tmp_path / "ck.npz"
    argv = [sys.executable, "-m", "scratchnst", "train", str(SWIRLS), str(setup["photos"]), "-o", str(setup["out"]),
            "--weights", setup["weights"], "--size", "32", "--iters", "100000", "--print-every", "1",
            "--checkpoint", str(ck), "--checkpoint-every", "100000"]
    process = subprocess.Popen(argv, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    first = process.stderr.readline()   # the first progress line
    assert first.startswith("step ") and "/100000" in first, first + process.stderr.read()
    time.sleep(0.3)
    process.send_signal(signal.SIGINT)
    _, err = process.communicate(timeout=120)
    assert process.returncode == 130, err
    last = err.strip().splitlines()[-1]
    assert "Traceback" not in err and last.startswith("scratchnst: interrupted (Ctrl-C) at step ")
    assert f"wrote the network trained so far to {setup['out']}" in last and f"--resume {ck}" in last
    params, meta = transformer_net.load(setup["out"])
    state = checkpoint.load(ck)
    assert meta["iterations"] == state["iteration"] >= 1 and meta["stopped"] == "interrupted (Ctrl-C)"
    assert np.array_equal(params["conv1/kernel"], state["params"]["conv1:kernel"])
    assert not [p for p in setup["out"].parent.iterdir() if p.name.startswith(".")]


def test_output_folder_not_writable(setup, capsys, unwritable_folder):
    assert train(setup, "--iters", "1", out=unwritable_folder / "net.h5") == 1
    line = error_line(capsys)
    assert f"cannot write -o {unwritable_folder / 'net.h5'}" in line and "not writable" in line

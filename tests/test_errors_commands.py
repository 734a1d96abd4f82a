"""Every mistake a user can make with `weights`, `stylize --weights`, `bench`, `gradcheck`,
`exercises` and the lessons ends in one line on stderr that names the thing and says what to do:
exit status 2 for wrong usage (a bad option value, an unknown name), 1 for a file or folder
problem, 130 for Ctrl-C; never a traceback unless --debug asks for it.

The commands run in this process through scratchnst.cli.main (capsys reads stderr); the lessons
run as subprocesses, as a reader runs them.
"""

import errno
import os
import shutil
import signal
import struct
import subprocess
import sys
import time
from pathlib import Path

import h5py
import numpy as np
import pytest

from conftest import REPO
from network_helpers import random_params, write_keras_weights
from scratchnst import weights
from scratchnst.exercises import markers as exercise_markers
from scratchnst.cli import main
from scratchnst.errors import UsageError, UserError

CAT = REPO / "lessons" / "images" / "cat.jpg"
SWIRLS = REPO / "lessons" / "images" / "swirls.jpg"
SQUEEZENET_FILE = weights.KNOWN_WEIGHTS["squeezenet"].filename
DOWNLOAD_AGAIN = "download it again with `scratchnst weights download squeezenet`"


def run(capsys, argv):
    """scratchnst.cli.main(argv) -> (exit status, stdout, stderr); argparse's SystemExit becomes its status."""
    try:
        status = main([str(a) for a in argv])
    except SystemExit as stop:
        status = stop.code
    captured = capsys.readouterr()
    return status, captured.out, captured.err


def one_line(err, *words):
    """The single non-empty line of stderr, after checking it has the words and no traceback."""
    lines = [line for line in err.splitlines() if line.strip()]
    assert len(lines) == 1, err
    assert "Traceback" not in err
    for word in words:
        assert word in lines[0], f"{word!r} not in {lines[0]!r}"
    return lines[0]


def no_temporary_files(folder):
    """Nothing half-written: no hidden temporary sibling (.name.xxxx.tmp.ext) anywhere in folder."""
    assert not [p for p in folder.rglob(".*") if ".tmp" in p.name], list(folder.rglob(".*"))


# ------------------------------------------------------------------------- bad weights files
def _cut(source, keep):
    data = source.read_bytes()
    return data[:keep(len(data))]


def _cut_with_header_patched(source, keep):
    """A cut file whose superblock says it is complete: h5py opens it and fails only when it reads
    a group or dataset that is not there (what a file damaged in another way looks like)."""
    data = bytearray(_cut(source, keep))
    assert data[8] == 0, "the test expects HDF5 superblock version 0 (end-of-file address at byte 40)"
    data[40:48] = struct.pack("<Q", len(data))
    return bytes(data)


def _vgg19_layout(path):
    """A Keras VGG-19 file (the VGG layer names; block1's weights only, to stay small)."""
    params = random_params("vgg19", np.random.default_rng(70))
    write_keras_weights(path, "vgg19", {layer: params[layer] for layer in ("block1_conv1", "block1_conv2")})


def _unknown_network(path):
    with h5py.File(path, "w") as f:
        f.attrs["layer_names"] = np.array([b"dense_1"])
        group = f.create_group("dense_1")
        group.attrs["weight_names"] = np.array([b"dense_1/kernel:0"])
        group.create_dataset("dense_1/kernel:0", data=np.zeros((4, 2), np.float32))


def make_bad_weights(kind, folder, real):
    """Write a broken weights file of one kind into folder; returns its path."""
    path = folder / "weights.h5"
    if kind == "missing":
        pass
    elif kind == "folder":
        path.mkdir()
    elif kind == "empty":
        path.write_bytes(b"")
    elif kind == "cut to 100 bytes":
        path.write_bytes(_cut(real, lambda n: 100))
    elif kind == "cut in half":
        path.write_bytes(_cut(real, lambda n: n // 2))
    elif kind == "last 1000 bytes cut":
        path.write_bytes(_cut(real, lambda n: n - 1000))
    elif kind == "cut, opens":
        path.write_bytes(_cut_with_header_patched(real, lambda n: n * 3 // 4))
    elif kind == "vgg19 layout":
        _vgg19_layout(path)
    elif kind == "unknown network":
        _unknown_network(path)
    elif kind == "jpeg renamed":
        shutil.copy(CAT, path)
    elif kind == "text renamed":
        path.write_text("these are not the weights you are looking for\n")
    else:
        raise ValueError(kind)
    return path


# kind -> (words of `weights info`'s line, words of the line of a command that needs SqueezeNet)
BAD_WEIGHTS = {
    "missing": (["no such weights file; check the path"],) * 2,
    "folder": (["is a folder; give the .h5 weights file inside it"],) * 2,
    "empty": (["is empty (0 bytes)", DOWNLOAD_AGAIN],) * 2,
    "cut to 100 bytes": (["is truncated (100 of ", DOWNLOAD_AGAIN],) * 2,
    "cut in half": (["is truncated (", DOWNLOAD_AGAIN],) * 2,
    "last 1000 bytes cut": (["is truncated (", DOWNLOAD_AGAIN],) * 2,
    "cut, opens": (["damaged or truncated", DOWNLOAD_AGAIN],) * 2,
    "vgg19 layout": (["layer block2_conv1 of vgg19 has 0 weight arrays", "`scratchnst weights download vgg19`"],
                     ["holds vgg19 weights, not squeezenet", "choose vgg19 as the network",
                      "`scratchnst weights download squeezenet`"]),
    "unknown network": (["has none of the layers of vgg19 or squeezenet", "dense_1", "give vgg19 or squeezenet"],
                        ["has none of the layers of squeezenet", "dense_1",
                         "`scratchnst weights download squeezenet`"]),
    "jpeg renamed": (["not an HDF5 weights file but a JPEG image", "give the .h5 weights file"],) * 2,
    "text renamed": (["not an HDF5 weights file but a text file", "give the .h5 weights file"],) * 2,
}


@pytest.fixture(scope="module")
def real_weights(squeezenet_weights_path):
    return squeezenet_weights_path


@pytest.mark.parametrize("kind", list(BAD_WEIGHTS))
@pytest.mark.parametrize("command", ["weights info", "stylize"])
def test_bad_weights_file_is_one_line_exit_1(command, kind, tmp_path, real_weights, capsys):
    path = make_bad_weights(kind, tmp_path, real_weights)
    out = tmp_path / "out.png"
    if command == "weights info":
        argv = ["weights", "info", path]
    else:
        argv = ["stylize", CAT, SWIRLS, "-o", out, "--weights", path, "--size", 64, "--iters", 1]
    status, _, err = run(capsys, argv)
    assert status == 1
    line = one_line(err, str(path), *BAD_WEIGHTS[kind][command != "weights info"])
    assert line.startswith("scratchnst: error: ")
    assert not out.exists()
    no_temporary_files(tmp_path)


@pytest.mark.parametrize("kind", ["missing", "cut in half", "cut, opens", "jpeg renamed"])
def test_bench_pretrained_with_bad_weights_is_one_line_before_measuring(kind, tmp_path, real_weights, monkeypatch,
                                                                      capsys):
    """bench --pretrained finds the file as stylize does; a broken one stops it before any progress line."""
    folder = tmp_path / "weights"
    folder.mkdir()
    if kind != "missing":
        make_bad_weights(kind, tmp_path, real_weights).rename(folder / SQUEEZENET_FILE)
    monkeypatch.setenv("SCRATCHNST_WEIGHTS_DIR", str(folder))
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    monkeypatch.setattr(weights, "REPO_WEIGHTS_DIR", tmp_path / "no-repo-weights")
    status, out, err = run(capsys, ["bench", "--pretrained", "--models", "squeezenet", "--sizes", 64,
                                    "--repeats", 1, "--warmup", 0, "--no-torch", "--no-convs", "--no-memory"])
    assert status == 1 and out == ""
    if kind == "missing":
        line = one_line(err, "no squeezenet weights", str(folder), "run `scratchnst weights download squeezenet`",
                        "offline, from a copy you have: add --url file:///", "or put the file in one of these folders")
        assert "--weights" not in line  # bench has no such option
    else:
        one_line(err, str(folder / SQUEEZENET_FILE), *BAD_WEIGHTS[kind][1])


def test_the_command_lines_bounds_are_the_settings():
    from scratchnst import settings
    from scratchnst.cli import parser

    assert (parser.MAX_SEED, parser.MAX_SCALES) == (settings.MAX_SEED, settings.MAX_SCALES)


@pytest.mark.parametrize("value", ["", "0", "no", "False", " off "])
def test_debug_off_in_the_environment_keeps_one_line(tmp_path, monkeypatch, capsys, value):
    monkeypatch.setenv("SCRATCHNST_DEBUG", value)
    status, _, err = run(capsys, ["weights", "info", tmp_path / "absent.h5"])
    assert status == 1 and one_line(err, "absent.h5: no such weights file")


@pytest.mark.parametrize("debug", ["flag", "environment"])
def test_debug_shows_the_traceback_instead(tmp_path, monkeypatch, debug):
    argv = ["weights", "info", str(tmp_path / "absent.h5")]
    if debug == "flag":
        argv.insert(0, "--debug")
    else:
        monkeypatch.setenv("SCRATCHNST_DEBUG", "1")
    with pytest.raises(UserError, match="absent.h5: no such weights file"):
        main(argv)


# ------------------------------------------------------------------------------ wrong usage
@pytest.fixture
def stylize_argv(tmp_path, real_weights):
    return ["stylize", CAT, SWIRLS, "-o", tmp_path / "out.png", "--weights", real_weights, "--size", 64,
            "--iters", 1]


USAGE = {
    "download, unknown network": (["weights", "download", "alexnet"],
                                  ["unknown network 'alexnet': choose one of vgg19, squeezenet"]),
    "weights, unknown action": (["weights", "bogus"], ["invalid choice: 'bogus'", "--help"]),
    "weights info, no file": (["weights", "info"], ["the following arguments are required: file"]),
    "exercises check, --timeout 0": (["exercises", "check", REPO, "--timeout", 0],
                                     ["argument --timeout: '0': give a number of seconds above 0"]),
    "exercises check, --timeout abc": (["exercises", "check", REPO, "--timeout", "abc"],
                                       ["argument --timeout: 'abc': give a number of seconds above 0"]),
    "exercises check, --timeout inf": (["exercises", "check", REPO, "--timeout", "inf"],
                                       ["'inf': give a number of seconds above 0 and at most 1,000,000"]),
    "exercises check, --import-timeout nan": (["exercises", "check", REPO, "--import-timeout", "nan"],
                                              ["argument --import-timeout: 'nan': give a number of seconds"]),
    "exercises check, --import-timeout 0": (["exercises", "check", REPO, "--import-timeout", 0],
                                            ["argument --import-timeout: '0': give a number of seconds"]),
    "gradcheck, --timeout 1e10": (["gradcheck", "--timeout", "1e10"], ["at most 1,000,000 (11 days)"]),
    "exercises grade, --budget inf": (["exercises", "grade", REPO, "--budget", "inf"],
                                      ["argument --budget: 'inf': give a number of seconds"]),
    "exercises grade, --import-timeout 1e10": (["exercises", "grade", REPO, "--import-timeout", "1e10"],
                                               ["argument --import-timeout: '1e10'"]),
    "exercises grade, --memory 100": (["exercises", "grade", REPO, "--memory", 100],
                                      ["argument --memory: '100': give an integer >= 512"]),
    "exercises grade, --seed -1": (["exercises", "grade", REPO, "--seed", -1],
                                   ["argument --seed: '-1': give an integer >= 0"]),
    "exercises grade, --jobs 0": (["exercises", "grade", REPO, "--jobs", 0],
                                  ["argument --jobs: '0': give an integer >= 1"]),
    "exercises check, --only nothing": (["exercises", "check", REPO, "--only", "no_such_exercise"],
                                        ["no exercise matches no_such_exercise", "the exercises are "]),
    "exercises make, the package": (["exercises", "make", REPO], ["would overwrite the installed scratchnst",
                                                                  "choose another folder"]),
    "bench, size too small": (["bench", "--models", "squeezenet", "--sizes", 16],
                              ["--sizes 16 is too small for squeezenet", "at least 31"]),
    "bench, --repeats 0": (["bench", "--repeats", 0], ["--repeats must be at least 1, got 0"]),
    "bench, --threads 0": (["bench", "--threads", 0], ["argument --threads: '0': give an integer >= 1"]),
    "bench, --seed -1": (["bench", "--seed", -1], ["argument --seed: '-1': give an integer >= 0"]),
    "stylize, --seed -1": (["stylize", "a.jpg", "b.jpg", "-o", "c.png", "--seed", -1],
                           ["argument --seed: '-1': give an integer >= 0"]),
    "stylize, --threads 0": (["stylize", "a.jpg", "b.jpg", "-o", "c.png", "--threads", 0],
                             ["argument --threads: '0': give an integer >= 1"]),
    "gradcheck, --seed -1": (["gradcheck", "--seed", -1], ["argument --seed: '-1': give an integer >= 0"]),
    "bench, unknown model": (["bench", "--models", "resnet"], ["argument --models: invalid choice: 'resnet'"]),
    "bench, --sizes abc": (["bench", "--sizes", "abc"], ["argument --sizes: invalid int value: 'abc'"]),
    "bench, --sizes 10**20": (["bench", "--models", "squeezenet", "--sizes", 10**20],
                              ["--sizes 100000000000000000000 is larger than the bench measures", "at most 8192"]),
    "bench, --seed 2**64": (["bench", "--seed", 2**64], ["argument --seed: '18446744073709551616': give an integer "
                                                         "from 0 to 2**63 - 1"]),
    "stylize, --scales 10**6": (["stylize", CAT, SWIRLS, "-o", "c.png", "--scales", 10**6],
                                ["argument --scales: '1000000': give an integer from 1 to 16"]),
    "stylize, --seed 2**64": (["stylize", CAT, SWIRLS, "-o", "c.png", "--seed", 2**64],
                              ["give an integer from 0 to 2**63 - 1"]),
    "gradcheck, --seed x": (["gradcheck", "--seed", "x"], ["argument --seed: 'x': give an integer >= 0"]),
    "gradcheck, unknown flag": (["gradcheck", "--fast"], ["scratchnst gradcheck: error: unrecognized arguments: "
                                                          "--fast; see scratchnst gradcheck --help"]),
    "weights info, unknown flag": (["weights", "info", "squeezenet", "--fast"],
                                   ["scratchnst weights info: error: unrecognized arguments: --fast; see "
                                    "scratchnst weights info --help"]),
    "stylize, --threads 10**6": (["stylize", CAT, SWIRLS, "-o", "c.png", "--threads", 10**6],
                                 ["argument --threads: '1000000': more than the", "this process may run on; give "
                                  "at most"]),
    "train, --threads 10**6": (["train", SWIRLS, ".", "-o", "c.h5", "--threads", 10**6],
                               ["argument --threads: '1000000': more than the"]),
    "bench, --threads 10**6": (["bench", "--threads", 10**6], ["argument --threads: '1000000': more than the"]),
}


@pytest.mark.parametrize("case", list(USAGE))
def test_wrong_usage_is_one_line_exit_2(case, capsys):
    argv, words = USAGE[case]
    status, out, err = run(capsys, argv)
    assert status == 2
    one_line(err, *words)
    assert "usage:" not in err  # argparse's usage block is not repeated: the line says where --help is


def test_make_into_a_non_empty_folder_without_force_is_wrong_usage(tmp_path, capsys):
    (tmp_path / "notes.txt").write_text("mine")
    status, _, err = run(capsys, ["exercises", "make", tmp_path])
    assert status == 2
    one_line(err, str(tmp_path), "is not empty", "add --force")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["notes.txt"]


@pytest.mark.parametrize("flag, typo, words", [
    ("--content-layer", "fire33", ["squeezenet has no layer 'fire33'; did you mean fire3? Its layers are conv1"]),
    ("--style-layers", "conv1,fire2/squeeze", ["did you mean fire2/squeeze1x1?"]),
    ("--content-layer", "conv4_2", ["squeezenet has no layer 'conv4_2' (a layer of vgg19: choose vgg19"]),
])
def test_misspelt_layer_on_the_command_line_suggests_the_nearest(stylize_argv, flag, typo, words, capsys):
    status, _, err = run(capsys, stylize_argv + [flag, typo])
    assert status == 2
    one_line(err, *words)


# ----------------------------------------------------------------------- files and folders
def test_exercises_folder_problems_are_one_line_exit_1(tmp_path, capsys):
    a_file = tmp_path / "a file"
    a_file.write_text("not a folder")
    (tmp_path / "empty").mkdir()
    for argv, words in [
        (["exercises", "check", tmp_path / "absent"], ["absent: no such folder", "scratchnst exercises make"]),
        (["exercises", "check", a_file], ["is not a folder", "give the folder of a student copy"]),
        (["exercises", "check", tmp_path / "empty"], ["holds no scratchnst package", "scratchnst exercises make"]),
        (["exercises", "make", a_file], ["is a file: give a folder for the student copy"]),
    ]:
        status, _, err = run(capsys, argv)
        assert status == 1, argv
        one_line(err, *words)


@pytest.mark.parametrize("name, content, words", [
    ("absent.pth", None, ["absent.pth: no such file; check the path"]),
    ("vgg19.txt", b"hello", ["cannot convert a .txt file", "give torchvision's vgg19 .pth"]),
    ("vgg19.pth", b"not a zip or a pickle", ["not a readable PyTorch file", "give torchvision's vgg19-dcbb9e9d.pth"]),
    ("vgg19.mat", b"MATLAB 5.0 MAT-file, but cut" + bytes(20), ["vgg19.mat", "give MatConvNet's "
                                                                 "imagenet-vgg-verydeep-19.mat"]),
])
def test_convert_bad_source_is_one_line_exit_1(tmp_path, name, content, words, capsys, request):
    if name.endswith(".pth"):
        request.getfixturevalue("torch")  # reading a .pth needs torch
    src = tmp_path / name
    if content is not None:
        src.write_bytes(content)
    status, _, err = run(capsys, ["weights", "convert", src, "-o", tmp_path / "out.h5"])
    assert status == 1
    one_line(err, *words)
    assert not (tmp_path / "out.h5").exists()
    no_temporary_files(tmp_path)


# ------------------------------------------------- weights convert: the output, checked first
PTH = b"PK\x03\x04 the bytes of the input .pth"  # never read: every output problem is found before


@pytest.fixture
def pth(tmp_path, monkeypatch):
    """An input .pth, and a reader that fails the test if the conversion ever starts."""
    src = tmp_path / "v2.pth"
    src.write_bytes(PTH)

    def must_not_read(path):
        raise AssertionError(f"{path} was read before the output was checked")

    monkeypatch.setattr(weights, "_read_torchvision_vgg19", must_not_read)
    return src


@pytest.mark.parametrize("spelling", ["same name", "./ and ..", "symbolic link", "hard link"])
def test_convert_refuses_to_write_over_its_input(pth, spelling, tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    out = {"same name": "v2.pth", "./ and ..": f"./../{tmp_path.name}/v2.pth", "symbolic link": "link.pth",
           "hard link": "hard.pth"}[spelling]
    if spelling == "symbolic link":
        os.symlink("v2.pth", "link.pth")
    elif spelling == "hard link":
        os.link("v2.pth", "hard.pth")
    status, stdout, err = run(capsys, ["weights", "convert", "v2.pth", "-o", out])
    assert status == 2 and stdout == ""
    one_line(err, f"-o {Path(out)} is the input file v2.pth", "writing it would destroy the input",
             "give another name")
    assert pth.read_bytes() == PTH
    assert spelling != "symbolic link" or os.readlink("link.pth") == "v2.pth"
    no_temporary_files(tmp_path)


def _convert_output(kind, tmp_path, unwritable):
    """An -o path of one kind, made in tmp_path (or the unwritable folder)."""
    blocker = tmp_path / "afile"
    blocker.write_text("a file")
    if kind == "folder missing":
        return tmp_path / "nodir" / "c.h5"
    if kind == "parent is a file":
        return blocker / "x.h5"
    if kind == "grandparent is a file":
        return blocker / "sub" / "x.h5"
    if kind == "folder not writable":
        return unwritable / "x.h5"
    if kind == "a folder":
        (tmp_path / "out").mkdir()
        return tmp_path / "out"
    if kind == "a pipe":
        os.mkfifo(tmp_path / "pipe.h5")
        return tmp_path / "pipe.h5"
    if kind == "a link to a pipe":
        os.mkfifo(tmp_path / "pipe")
        os.symlink(tmp_path / "pipe", tmp_path / "link.h5")
        return tmp_path / "link.h5"
    if kind == "a link loop":
        os.symlink("loop.h5", tmp_path / "loop.h5")
        return tmp_path / "loop.h5"
    raise ValueError(kind)


# kind -> (exit status, words of the line after "cannot write -o OUT" or "-o OUT")
CONVERT_OUTPUTS = {
    "folder missing": (1, ["folder", "nodir does not exist; create it first or choose another folder"]),
    "parent is a file": (1, ["afile is a file, not a folder; choose another folder"]),
    "grandparent is a file": (1, ["afile is a file, not a folder; choose another folder"]),
    "folder not writable": (1, ["is not writable (", "; choose another folder"]),
    "a folder": (2, ["is a folder; give a file name in it, e.g. -o "]),
    "a pipe": (2, ["it is not a regular file (a device or a pipe); give the name of a new .h5 file"]),
    "a link to a pipe": (2, ["it is not a regular file (a device or a pipe); give the name of a new .h5 file"]),
    "a link loop": (2, ["Too many levels of symbolic links; give the name of a new .h5 file"]),
}


@pytest.mark.parametrize("kind", list(CONVERT_OUTPUTS))
def test_convert_checks_its_output_before_reading_anything(pth, kind, tmp_path, request, capsys):
    unwritable = request.getfixturevalue("unwritable_folder") if kind == "folder not writable" else None
    out = _convert_output(kind, tmp_path, unwritable)
    before = sorted(os.listdir(tmp_path))
    status, stdout, err = run(capsys, ["weights", "convert", pth, "-o", out])
    expected_status, words = CONVERT_OUTPUTS[kind]
    assert status == expected_status and stdout == ""
    line = one_line(err, str(out), *words)
    assert ".tmp" not in line and "errno" not in line
    assert sorted(os.listdir(tmp_path)) == before and pth.read_bytes() == PTH
    no_temporary_files(tmp_path)


def test_convert_onto_a_full_disk_is_one_line_without_the_temporary_name(tmp_path, monkeypatch, capsys):
    """The file is built in memory (atomic.write_hdf5); its bytes meet the full disk, whose error names the
    temporary file: the user sees the errno's text only."""
    vgg = random_params("vgg19", np.random.default_rng(71))
    monkeypatch.setattr(weights, "_read_torchvision_vgg19", lambda src: vgg)

    def full_disk(path, data):
        raise OSError(errno.ENOSPC, "No space left on device", str(path))

    src = tmp_path / "vgg19.pth"
    src.write_bytes(PTH)
    monkeypatch.setattr(Path, "write_bytes", full_disk)
    status, stdout, err = run(capsys, ["weights", "convert", src, "-o", tmp_path / "c.h5"])
    assert status == 1 and stdout == ""
    line = one_line(err, str(tmp_path / "c.h5"), "No space left on device")
    assert ".tmp" not in line and "errno" not in line and "synchronously" not in line
    assert sorted(os.listdir(tmp_path)) == ["vgg19.pth"]


def test_convert_never_relays_torchs_advice_to_load_unsafely(tmp_path, torch, capsys):
    """A pickle of anything but tensors: torch suggests weights_only=False, which runs the file's code."""
    src = tmp_path / "random.pth"
    torch.save({"a": np.zeros(3)}, src)
    status, _, err = run(capsys, ["weights", "convert", src, "-o", tmp_path / "conv.h5"])
    assert status == 1
    line = one_line(err, f"{src}: not a PyTorch state dict that can be loaded safely (weights_only); "
                         "give torchvision's vgg19-dcbb9e9d.pth")
    for advice in ("weights_only=False", "weights_only set to False", "arbitrary code", "trust"):
        assert advice not in line
    assert not (tmp_path / "conv.h5").exists()


# ------------------------------------------------------------ files that are not regular files
def _special(kind, tmp_path):
    if kind == "symlink loop":
        os.symlink("w.h5", tmp_path / "w.h5")
        return tmp_path / "w.h5"
    if kind == "fifo":
        os.mkfifo(tmp_path / "w.h5")
        return tmp_path / "w.h5"
    if kind == "device":
        return "/dev/null"  # only looked at (stat), never opened nor written
    raise ValueError(kind)


SPECIAL = {
    "symlink loop": ["cannot read", "(Too many levels of symbolic links)"],
    "fifo": ["not a regular file; give the "],
    "device": ["not a regular file; give the "],
}


@pytest.fixture
def never_hangs():
    """Fail instead of hanging if a FIFO is opened (an open for reading waits for a writer)."""
    def hung(signum, frame):
        raise AssertionError("the command opened a FIFO and waited for a writer")

    previous = signal.signal(signal.SIGALRM, hung)
    signal.alarm(20)
    yield
    signal.alarm(0)
    signal.signal(signal.SIGALRM, previous)


@pytest.mark.parametrize("kind", list(SPECIAL))
@pytest.mark.parametrize("command", ["weights info", "weights convert", "find_weights"])
def test_special_files_are_told_apart_from_missing_ones(command, kind, tmp_path, never_hangs, capsys):
    path = _special(kind, tmp_path)
    if command == "find_weights":  # what stylize --weights, bench and the lessons go through
        with pytest.raises(UserError) as caught:
            weights.find_weights("squeezenet", explicit=path)
        line = f"scratchnst: error: {caught.value}"
        status = caught.value.exit_status
    else:
        if command == "weights info":
            argv = ["weights", "info", path]
        else:
            argv = ["weights", "convert", path, "-o", tmp_path / "out.h5"]
        status, _, err = run(capsys, argv)
        line = one_line(err)
    assert status == 1
    for word in [str(path), *SPECIAL[kind]]:
        assert word in line
    assert "no such" not in line and "JPEG" not in line
    assert not (tmp_path / "out.h5").exists()


# ------------------------------------------------ empty values and URLs that are not URLs
@pytest.fixture
def no_download(monkeypatch):
    """A download that fails the test if it starts."""
    def fetch(url, *args):
        raise AssertionError(f"{url} was fetched")

    monkeypatch.setattr(weights, "_fetch", fetch)


@pytest.mark.parametrize("url, words", [
    ("notaurl", ["--url notaurl: not a URL; give http(s)://... or file:///path/to/file"]),
    ("http://[::1", ["--url 'http://[::1': not a URL (Invalid IPv6 URL); give http(s)://..."]),
    ("http://host:99999/w.h5", ["--url http://host:99999/w.h5: not a URL (Port out of range"]),
    ("htp://host/w.h5", ["--url htp://host/w.h5: cannot download htp: URLs; give http(s)://..."]),
    ("http:///w.h5", ["--url http:///w.h5: no server name in the URL; give http(s)://..."]),
    ("", ["--url '': give http(s)://... or file:///path/to/file, or leave --url out"]),
    ("http://host/a\nb", ["--url 'http://host/a\\nb': has control characters"]),
])
def test_download_url_that_is_not_one_is_wrong_usage(url, words, tmp_path, no_download, capsys):
    dest = tmp_path / "new"
    status, stdout, err = run(capsys, ["weights", "download", "squeezenet", "--url", url, "--dest", dest])
    assert status == 2 and stdout == ""  # told before "downloading ..."
    line = one_line(err, *words)
    assert "internal error" not in line
    assert not dest.exists()


def test_empty_dest_is_wrong_usage_and_the_shared_file_is_untouched(tmp_path, monkeypatch, no_download, capsys):
    shared = tmp_path / "shared-weights"
    shared.mkdir()
    (shared / SQUEEZENET_FILE).write_bytes(b"the shared weights")
    monkeypatch.setenv("SCRATCHNST_WEIGHTS_DIR", str(shared))
    status, stdout, err = run(capsys, ["weights", "download", "squeezenet", "--dest", "",
                                       "--url", "http://127.0.0.1:9/w.h5"])
    assert status == 2 and stdout == ""
    one_line(err, "--dest '': give a folder")
    assert os.listdir(shared) == [SQUEEZENET_FILE] and (shared / SQUEEZENET_FILE).read_bytes() == b"the shared weights"


@pytest.mark.parametrize("argv, words", [
    (["weights", "info", ""], ["FILE '': give the .h5 weights file"]),
    (["weights", "convert", "", "-o", "out.h5"], ["SRC '': give torchvision's vgg19 .pth"]),
    (["weights", "convert", "in.pth", "-o", ""], ["-o '': give the .h5 file to write"]),
    (["exercises", "make", ""], ["DIR '': give a folder for the student copy"]),
    (["exercises", "make", "", "--force"], ["DIR '': give a folder for the student copy"]),
    (["exercises", "check", ""], ["DIR '': give the folder of a student copy, or leave DIR out"]),
    (["exercises", "check", REPO, "--only", ""], ["--only '': give part of an exercise's name"]),
])
def test_empty_values_are_wrong_usage_never_the_current_folder(argv, words, tmp_path, monkeypatch, capsys):
    """Path("") is "." and "" is part of every name: an empty value must not quietly mean either."""
    monkeypatch.chdir(tmp_path)
    (tmp_path / "in.pth").write_bytes(PTH)
    (tmp_path / "notes.txt").write_text("mine")
    status, stdout, err = run(capsys, argv)
    assert status == 2 and stdout == ""
    one_line(err, *words)
    assert sorted(os.listdir(tmp_path)) == ["in.pth", "notes.txt"]


def test_empty_weights_file_is_wrong_usage():
    with pytest.raises(UsageError, match=r"^--weights '': give the .h5 weights file, or leave --weights out"):
        weights.find_weights("squeezenet", explicit="")


# ------------------------------------------------------------------ exercises make, full disk
def test_exercises_make_on_a_full_disk_names_the_first_reason_only(tmp_path, monkeypatch, capsys):
    """shutil.copytree gathers every failure into one shutil.Error whose text lists them all."""
    def copytree(src, dst, **kwargs):
        os.makedirs(dst)
        failures = [(f"{src}/m{i}.py", f"{dst}/m{i}.py",
                     str(OSError(28, "No space left on device", f"{dst}/m{i}.py"))) for i in range(100)]
        raise shutil.Error(failures)

    monkeypatch.setattr(exercise_markers.shutil, "copytree", copytree)
    monkeypatch.chdir(tmp_path)
    status, stdout, err = run(capsys, ["exercises", "make", "small/ex"])
    assert status == 1 and stdout == ""
    line = one_line(err, "cannot write the student copy into small/ex: No space left on device; "
                         "free some space or choose another folder")
    assert len(line) < 150 and "scratchnst-exercises" not in line and "Errno" not in line
    assert os.listdir(tmp_path) == []  # neither small/ex nor small, which the command made, is left


@pytest.mark.parametrize("kind", ["symlink loop", "fifo"])
def test_exercises_folder_that_is_a_loop_or_a_pipe(kind, tmp_path, capsys):
    path = _special(kind, tmp_path)
    for argv, words in [(["exercises", "make", path], ["give a folder for the student copy"]),
                        (["exercises", "check", path], ["give the folder of a student copy"])]:
        status, _, err = run(capsys, argv)
        assert status == 1
        line = one_line(err, str(path), *words)
        assert "internal error" not in line
        assert kind != "symlink loop" or "Too many levels of symbolic links" in line


# --------------------------------------------------------------------------------- lessons
def lesson_env(extra=None):
    """The environment of a lesson run: no --debug from outside, pictures drawn into files."""
    env = dict(os.environ, MPLBACKEND="Agg")
    env.pop("SCRATCHNST_DEBUG", None)
    env.update(extra or {})
    return env


def lesson(name, *args, env=None, out=None):
    """Run lessons/<name> as a reader does, writing into `out`; returns the CompletedProcess."""
    argv = [sys.executable, str(REPO / "lessons" / name), *(["--out", str(out)] if out else []), *map(str, args)]
    return subprocess.run(argv, capture_output=True, text=True, env=lesson_env(env), timeout=120, cwd=REPO)


@pytest.fixture
def weights_env(real_weights):
    """The real SqueezeNet weights are found; nothing writes into lessons/out."""
    return {"SCRATCHNST_WEIGHTS_DIR": str(real_weights.parent)}


def test_lesson_missing_content_image(tmp_path):
    done = lesson("01_convolution.py", "--size", 32, "--content", tmp_path / "nope.jpg", out=tmp_path / "out")
    assert done.returncode == 1
    assert one_line(done.stderr, "nope.jpg", "no such image file").startswith("lesson stopped: ")


def test_lesson_style_that_is_not_an_image_stops_before_anything_runs(tmp_path):
    style = tmp_path / "style.jpg"
    style.write_text("not a picture")
    done = lesson("01_convolution.py", "--size", 32, "--style", style, out=tmp_path / "out")
    assert done.returncode == 1
    one_line(done.stderr, "lesson stopped: ", str(style), "image")
    assert done.stdout == ""  # found while parsing the options, before the first section


@pytest.mark.parametrize("kind", ["missing", "cut in half", "jpeg renamed", "vgg19 layout"])
def test_lesson_wrong_weights_file(kind, tmp_path, real_weights):
    path = make_bad_weights(kind, tmp_path, real_weights)
    done = lesson("04_pretrained_network.py", "--size", 64, "--network", "squeezenet", "--weights", path,
                  out=tmp_path / "out")
    assert done.returncode == 1
    one_line(done.stderr, "lesson stopped: ", str(path), *BAD_WEIGHTS[kind][1])


def test_lesson_out_is_a_file(tmp_path):
    blocker = tmp_path / "a file"
    blocker.write_text("not a folder")
    for out, words in [(blocker, ["--out", "is a file, not a folder", "give a folder for the pictures"]),
                       (blocker / "sub", ["--out", "cannot write pictures there", "give a writable folder"])]:
        done = lesson("01_convolution.py", "--size", 32, out=out)
        assert done.returncode == 1
        one_line(done.stderr, "lesson stopped: ", str(out), *words)


def test_lesson_out_not_writable(unwritable_folder):
    done = lesson("01_convolution.py", "--size", 32, out=unwritable_folder)
    assert done.returncode == 1
    one_line(done.stderr, "lesson stopped: ", str(unwritable_folder), "cannot write pictures there",
             "give a writable folder")


def test_lesson_size_too_small_for_the_network_says_the_minimum(tmp_path, weights_env):
    # cat.jpg is 320x213: at --size 40 it becomes 40x27, and SqueezeNet needs 31x31, so 47 is the least
    done = lesson("04_pretrained_network.py", "--size", 40, "--network", "squeezenet", env=weights_env,
                  out=tmp_path / "out")
    assert done.returncode == 2
    one_line(done.stderr, "lesson stopped: --size 40 is too small for squeezenet", "cat.jpg becomes 40x27 pixels",
             "at least 31x31", "use --size 47 or more")


@pytest.mark.parametrize("script, size, words", [
    # the layers of `scratchnst stylize` (SqueezeNet: conv1 .. fire5) need 15x15: cat.jpg 16x11 at 16 px
    ("08_optimisers.py", 16, ["cat.jpg becomes 16x11 pixels, and the layers this lesson uses need at least 15x15",
                              "use --size 23 or more"]),
    ("09_style_transfer.py", 16, ["cat.jpg becomes 16x11 pixels", "the layers this lesson uses need at least 15x15",
                                  "use --size 23 or more"]),
    # lesson 10's coarse-to-fine run starts at half the size
    ("10_beyond_the_course.py", 23, ["cat.jpg becomes 12x8 pixels in its first pass, at 12 px",
                                     "need at least 15x15", "use --size 46 or more"]),
])
def test_every_lesson_checks_the_size_for_the_layers_it_uses(tmp_path, weights_env, script, size, words):
    # one rule for every lesson: the smallest input of the layers it runs, checked before any work, exit 2
    done = lesson(script, "--size", size, "--iters", 1, "--network", "squeezenet", env=weights_env,
                  out=tmp_path / "out")
    assert done.returncode == 2
    one_line(done.stderr, f"lesson stopped: --size {size} is too small for squeezenet", *words)
    assert not (tmp_path / "out").exists() or not any((tmp_path / "out").iterdir())


def test_a_missing_weights_file_stops_a_lesson_before_its_work(tmp_path):
    done = lesson("05_content_cost.py", "--weights", tmp_path / "nope.h5", out=tmp_path / "out")
    assert done.returncode == 1
    one_line(done.stderr, "lesson stopped: ", "nope.h5: no such weights file")
    assert "##" not in done.stdout   # no section of the lesson ran first


def test_lesson_12_refuses_an_empty_trained_name(tmp_path):
    done = lesson("12_real_time_style.py", "--trained", "", out=tmp_path / "out")
    assert done.returncode == 2
    one_line(done.stderr, "--trained: an empty name; give a file name")


def test_the_smallest_size_a_lesson_names_runs(tmp_path, weights_env):
    # the size the message names works: lesson 6's shuffle test cuts smaller tiles at a small size
    done = lesson("06_style_cost.py", "--size", 23, "--iters", 1, "--network", "squeezenet", env=weights_env,
                  out=tmp_path / "out")
    assert done.returncode == 0, done.stderr
    assert "tiles shuffled" in done.stdout


@pytest.mark.parametrize("args, words", [
    (["--size", 8], ["--size must be at least 16 pixels, got 8"]),
    (["--size", "big"], ["argument --size: invalid int value: 'big'"]),
    (["--size", 10**6], ["--size 1000000 needs about ", "GB of memory for ", "available; use --size "]),
    (["--iters", 0], ["--iters must be at least 1, got 0"]),
    (["--seed", -1], ["--seed must be at least 0, got -1"]),
    (["--network", "alexnet"], ["argument --network: invalid choice: 'alexnet'"]),
    (["--fast"], ["unrecognized arguments: --fast"]),
])
def test_lesson_bad_option_is_one_line_exit_2(tmp_path, args, words):
    done = lesson("01_convolution.py", *args, out=tmp_path / "out")
    assert done.returncode == 2
    one_line(done.stderr, "01_convolution.py: error: ", *words, "see 01_convolution.py --help")


@pytest.mark.parametrize("debug", ["--debug", "SCRATCHNST_DEBUG=1"])
def test_lesson_debug_shows_the_traceback(tmp_path, debug):
    flags = ["--debug"] if debug == "--debug" else []
    env = {"SCRATCHNST_DEBUG": "1"} if debug != "--debug" else {}
    done = lesson("01_convolution.py", "--size", 32, "--content", tmp_path / "nope.jpg", *flags, env=env,
                  out=tmp_path / "out")
    assert done.returncode == 1  # the same status as without --debug
    assert "Traceback" in done.stderr and "UserError: " in done.stderr and "nope.jpg" in done.stderr


@pytest.fixture
def sigint_reaches_children():
    """Children that start with SIGINT at its default, as from a terminal.

    A shell without job control starts a background job (`cmd &`) with SIGINT ignored, a child
    inherits that through exec, and Python then never turns SIGINT into KeyboardInterrupt: a
    lesson started so cannot be stopped by Ctrl-C, and these tests would fail for the runner's
    reason. A Python handler here is reset to the default in a child at exec.
    """
    previous = signal.signal(signal.SIGINT, signal.default_int_handler)
    yield
    signal.signal(signal.SIGINT, previous)


@pytest.mark.usefixtures("sigint_reaches_children")
def test_lesson_ctrl_c_is_one_line_exit_130(tmp_path, weights_env):
    """SIGINT once the lesson has printed its first line (its options parsed, the work begun)."""
    out = tmp_path / "out"
    argv = [sys.executable, str(REPO / "lessons" / "08_optimisers.py"), "--out", str(out), "--size", "64",
            "--iters", "2000", "--network", "squeezenet"]
    env = lesson_env(dict(weights_env, PYTHONUNBUFFERED="1"))  # unbuffered: the first line arrives as printed
    with subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env,
                          cwd=REPO) as process:
        process.stdout.readline()
        process.send_signal(signal.SIGINT)
        _, err = process.communicate(timeout=60)
    assert process.returncode == 130
    one_line(err, "lesson stopped: interrupted (Ctrl-C)", "none was left half-written")
    no_temporary_files(out)


@pytest.mark.usefixtures("sigint_reaches_children")
def test_lesson_ctrl_c_that_python_ignored_in_a_finalizer_still_stops_it(tmp_path):
    """A KeyboardInterrupt raised inside a weakref callback (h5py closes objects through them) is
    only printed by Python as "Exception ignored"; _lesson delivers it again."""
    script = tmp_path / "lesson.py"
    script.write_text(
        "import sys, time, weakref\n"
        f"sys.path.insert(0, {str(REPO / 'lessons')!r})\n"
        "import _lesson\n"
        "class Thing: pass\n"
        "def interrupted(_): raise KeyboardInterrupt\n"
        "thing = Thing()\n"
        "ref = weakref.ref(thing, interrupted)\n"
        "del thing  # the callback raises: Python ignores it\n"
        "print('ran on', flush=True)\n"
        "time.sleep(30)\n"
        "print('never')\n")
    done = subprocess.run([sys.executable, str(script)], capture_output=True, text=True, env=lesson_env(),
                          timeout=60)
    assert done.returncode == 130 and done.stdout == "ran on\n"
    one_line(done.stderr, "lesson stopped: interrupted (Ctrl-C)")


@pytest.mark.skipif(not os.path.exists("/dev/full"), reason="no /dev/full here to fill standard output")
def test_a_lesson_whose_output_cannot_be_written_says_so_in_one_line(tmp_path):
    """Its text sent to a full disk: one line saying so, exit status 1, not "a bug in scratchnst"."""
    with open("/dev/full", "w") as full:
        done = subprocess.run([sys.executable, str(REPO / "lessons" / "01_convolution.py"), "--out", str(tmp_path)],
                              stdout=full, stderr=subprocess.PIPE, text=True, env=lesson_env(), timeout=300)
    assert done.returncode == 1
    one_line(done.stderr, "lesson stopped: cannot write to standard output (No space left on device)")
    assert "bug" not in done.stderr


def test_lesson_plots_are_written_atomically(tmp_path, monkeypatch):
    """save_plot goes through scratchnst.atomic: a savefig that fails leaves neither the file nor a temporary one."""
    sys.path.insert(0, str(REPO / "lessons"))
    monkeypatch.setattr(sys, "excepthook", sys.excepthook)  # importing _lesson replaces it: put it back after
    for name in ("stdout", "stderr"):   # and wraps these (streams.guard), for a lesson run as a script
        monkeypatch.setattr(sys, name, getattr(sys, name))
    try:
        import _lesson
    finally:
        sys.path.remove(str(REPO / "lessons"))

    class Figure:
        cleared = False

        def savefig(self, path, **kwargs):
            with open(path, "wb") as f:
                f.write(b"half a PNG")
            raise OSError(28, "No space left on device")

        def clf(self):
            self.cleared = True

    figure = Figure()
    args = type("Args", (), {"out": tmp_path})()
    with pytest.raises(UserError, match=r"cannot write the picture .*plot.png: No space left on device"):
        _lesson.save_plot(args, "plot.png", figure)
    assert list(tmp_path.iterdir()) == [] and figure.cleared


def test_usage_error_is_a_user_error_with_status_2():
    assert issubclass(UsageError, UserError) and UsageError.exit_status == 2 and UserError.exit_status == 1


def test_a_lesson_never_writes_over_its_own_input(tmp_path):
    out = tmp_path / "out"
    out.mkdir()
    content = out / "01_filters.png"  # the name of the picture lesson 01 writes
    shutil.copy(REPO / "lessons" / "images" / "cat.jpg", content)
    before = content.read_bytes()
    done = lesson("01_convolution.py", "--size", 32, "--content", content, out=out)
    assert done.returncode == 2
    one_line(done.stderr, "lesson stopped: ", "under the name of a picture this lesson writes (01_*)",
             "give another --out folder")
    assert content.read_bytes() == before and sorted(p.name for p in out.iterdir()) == ["01_filters.png"]
    assert "wrote" not in done.stdout  # refused before any work


@pytest.mark.parametrize("flag", ["--content", "--out"])
def test_a_lesson_refuses_an_empty_path(flag, tmp_path):
    done = lesson("01_convolution.py", "--size", 32, flag, "", out=None if flag == "--out" else tmp_path)
    assert done.returncode == 2
    one_line(done.stderr, f"argument {flag}: an empty name; give a file name")


# ------------------------------------------------------------------ the command's own streams
def command(*argv, **popen):
    """The real `scratchnst` command in a subprocess (its streams are the point): (status, stdout, stderr)."""
    env = dict(os.environ, PYTHONPATH=str(REPO) + os.pathsep + os.environ.get("PYTHONPATH", ""))
    done = subprocess.run([sys.executable, "-m", "scratchnst", *map(str, argv)], env=env, timeout=300,
                          capture_output="stdout" not in popen and "stderr" not in popen, **popen)
    decode = (lambda b: b.decode("utf-8", "replace") if b else "")
    return done.returncode, decode(done.stdout), decode(done.stderr)


@pytest.mark.skipif(not Path("/dev/full").exists(), reason="no /dev/full on this system")
def test_standard_output_that_cannot_be_written_is_one_line(real_weights):
    with open("/dev/full", "w") as full:
        status, _, err = command("weights", "list", stdout=full, stderr=subprocess.PIPE)
    assert status == 1 and one_line(err, "cannot write to standard output (No space left on device)")
    assert "internal error" not in err


@pytest.mark.parametrize("how", ["closed", "full"])
def test_progress_that_cannot_be_shown_stops_nothing(tmp_path, real_weights, how):
    """A run whose standard error is closed (2>&-) or full still writes its result."""
    out = tmp_path / "out.png"
    argv = ["stylize", CAT, SWIRLS, "-o", out, "--weights", real_weights, "--size", 64, "--iters", 2]
    if how == "closed":
        status, _, _ = command(*argv, stdout=subprocess.DEVNULL, preexec_fn=lambda: os.close(2))
    else:
        if not Path("/dev/full").exists():
            pytest.skip("no /dev/full on this system")
        with open("/dev/full", "w") as full:
            status, _, _ = command(*argv, stdout=subprocess.DEVNULL, stderr=full)
    assert status == 0 and out.is_file()
    no_temporary_files(tmp_path)


def test_a_long_output_name_has_a_temporary_name_that_fits(tmp_path, real_weights, capsys):
    """The temporary sibling of a name of 240 characters stays within a file name's 255 bytes."""
    out = tmp_path / ("a" * 236 + ".png")
    status, _, err = run(capsys, ["stylize", CAT, SWIRLS, "-o", out, "--weights", real_weights, "--size", 64,
                                  "--iters", 1])
    assert status == 0 and out.is_file(), err
    no_temporary_files(tmp_path)


def test_ctrl_c_while_the_command_starts_is_one_line(monkeypatch, capsys):
    """Before cli.main has its own handling in place (modules still loading), scratchnst.__main__.run has."""
    import scratchnst.__main__ as entry
    import scratchnst.cli

    def interrupted():
        raise KeyboardInterrupt

    monkeypatch.setattr(scratchnst.cli, "main", interrupted)
    assert entry.run() == 130
    assert one_line(capsys.readouterr().err, "interrupted (Ctrl-C) while starting")


@pytest.mark.parametrize("where", ["__init__.py", "costs.py"])
def test_gradcheck_of_a_copy_that_does_not_import_names_its_line(tmp_path, where):
    status, _, _ = command("exercises", "make", tmp_path / "copy")
    assert status == 0
    with open(tmp_path / "copy" / "scratchnst" / where, "a") as f:
        f.write("\nx = = 1\n")
    status, _, err = command("gradcheck", "--no-torch", "--only", "content_cost", "--package", tmp_path / "copy")
    assert status == 1 and "internal error" not in err
    one_line(err, "the student copy does not import:", f"{where}:", "SyntaxError")


# ------------------------------------------------------------------ a folder the user cannot enter
def _as_locked_out_user(tmp_path):
    """(locked folder, argv prefix) for running a command as a user who cannot enter `locked`.

    A normal user: a folder of mode 0; its own commands run as they are. Root enters any folder, so
    for root the command runs in a bubblewrap user namespace as an ordinary uid, with every
    capability dropped, where the folder of mode 0 refuses it as the kernel refuses a user (the
    "HOME I cannot read" case: Path.is_dir raises PermissionError there instead of saying False).
    """
    locked = tmp_path / "locked"
    locked.mkdir()
    locked.chmod(0)
    prefix = []
    if os.geteuid() == 0:
        bwrap = shutil.which("bwrap")
        if bwrap is None:
            locked.chmod(0o700)
            pytest.skip("running as root without bubblewrap: no way to be refused a folder")
        prefix = [bwrap, "--unshare-user", "--uid", "1000", "--dev-bind", "/", "/"]
        probe = subprocess.run(prefix + ["ls", str(locked)], capture_output=True)
        if probe.returncode == 0 or b"ermission" not in probe.stderr:
            locked.chmod(0o700)
            pytest.skip(f"bubblewrap cannot make a user that a folder refuses here: {probe.stderr[:200]!r}")
    return locked, prefix


@pytest.fixture
def locked_out(tmp_path):
    locked, prefix = _as_locked_out_user(tmp_path)
    try:
        yield locked, prefix
    finally:
        locked.chmod(0o700)


def _run_locked(prefix, args, **env):
    done = subprocess.run(prefix + [sys.executable, "-m", "scratchnst", *map(str, args)], capture_output=True,
                          text=True, timeout=120, cwd=REPO, env={**os.environ, **env})
    return done.returncode, done.stdout, done.stderr


def test_a_weights_cache_the_user_cannot_enter_is_named_and_searching_goes_on(locked_out, real_weights, tmp_path):
    locked, prefix = locked_out
    env = {"HOME": str(locked), "XDG_CACHE_HOME": "", "SCRATCHNST_WEIGHTS_DIR": ""}
    status, out, err = _run_locked(prefix, ["weights", "list"], **env)
    assert status == 0 and err == ""
    assert f"{locked}/.cache/scratchnst (cannot be searched: Permission denied)" in out
    # searching goes on past it: a copy in $SCRATCHNST_WEIGHTS_DIR is found
    shutil.copy(real_weights, tmp_path / real_weights.name)
    status, out, err = _run_locked(prefix, ["weights", "list"], **{**env, "SCRATCHNST_WEIGHTS_DIR": str(tmp_path)})
    assert status == 0 and f"found: {tmp_path / real_weights.name}" in out
    # found nowhere: the one line says which place could not be searched, and why
    status, _, err = _run_locked(prefix, ["stylize", REPO / "lessons/images/cat.jpg", REPO / "lessons/images/swirls.jpg",
                                          "-o", tmp_path / "out.png"], **env)
    assert status == 1 and len(err.splitlines()) == 1 and "Traceback" not in err
    assert "(cannot be searched: Permission denied)" in err and "scratchnst weights download squeezenet" in err
    # and a download into it says so before anything is fetched, with the way out
    status, _, err = _run_locked(prefix, ["weights", "download", "squeezenet", "--url", real_weights.as_uri()], **env)
    assert status == 1 and len(err.splitlines()) == 1
    assert "cannot be entered (Permission denied)" in err and "--dest DIR" in err


@pytest.mark.parametrize("command", ["stylize", "apply", "train"])
def test_paths_inside_a_folder_the_user_cannot_enter_are_one_line_with_advice(command, locked_out, real_weights,
                                                                               tmp_path):
    locked, prefix = locked_out
    cat, swirls = REPO / "lessons/images/cat.jpg", REPO / "lessons/images/swirls.jpg"
    if command == "stylize":
        args = ["stylize", cat, swirls, "-o", locked / "out.png", "--weights", real_weights, "--iters", 1]
    elif command == "apply":
        from scratchnst import transformer_net

        network = tmp_path / "net.h5"
        transformer_net.save(network, transformer_net.init_params(np.random.default_rng(0), widths=(4, 4, 4),
                                                                   residual_blocks=1, outer_kernel=3))
        args = ["apply", network, cat, "-o", locked / "out.png"]
    else:
        args = ["train", swirls, locked / "photos", "-o", tmp_path / "net.h5", "--weights", real_weights]
    status, _, err = _run_locked(prefix, args)
    assert status == 1 and len(err.splitlines()) == 1 and "Traceback" not in err, err
    assert str(locked) in err and "Permission denied" in err
    assert ("folder above it" in err) or ("folders above it" in err), err
    assert not any(tmp_path.glob("net.h5*")) or command == "apply"


def test_a_photo_folder_or_checkpoint_the_user_cannot_read_says_so(locked_out, real_weights, tmp_path):
    """A folder of photos of mode 0 was "no photos in it; put the training photos there", and a
    checkpoint of mode 0 "damaged, cut short": both are a permission to check."""
    locked, prefix = locked_out
    env = {"SCRATCHNST_WEIGHTS_DIR": str(real_weights.parent)}
    status, _, err = _run_locked(prefix, ["train", SWIRLS, locked, "-o", tmp_path / "net.h5"], **env)
    assert status == 1 and err == f"scratchnst: error: {locked}: cannot be read (Permission denied); check its " \
                                  "permissions\n", err
    photos = tmp_path / "photos"
    photos.mkdir()
    shutil.copy(CAT, photos / "cat.jpg")
    stored = tmp_path / "run.npz"
    stored.write_bytes(b"PK\x03\x04 not really")
    stored.chmod(0)
    try:
        status, _, err = _run_locked(prefix, ["train", SWIRLS, photos, "-o", tmp_path / "net.h5", "--resume", stored],
                                     **env)
    finally:
        stored.chmod(0o600)
    assert status == 1 and err == f"scratchnst: error: {stored}: cannot be read (Permission denied); check its " \
                                  "permissions\n", err


@pytest.mark.parametrize("argv, words", [
    (["train", SWIRLS, REPO / "lessons" / "images" / "photos", "-o", "o.h5", "--lr", "-1e-3"],
     ["--lr must be a number > 0, got -0.001"]),
    (["train", SWIRLS, REPO / "lessons" / "images" / "photos", "-o", "o.h5", "--minutes", "-inf"],
     ["--minutes must be a number of minutes >= 0", "got -inf"]),
    (["stylize", CAT, SWIRLS, "-o", "o.png", "--tv-weight", "-1E3"], ["--tv-weight must be a finite number >= 0"]),
    (["stylize", CAT, SWIRLS, "-o", "o.png", "--alpha", "-nan"], ["--alpha must be a finite number >= 0"]),
])
def test_a_negative_number_in_any_notation_is_a_value_whose_error_is_said(tmp_path, capsys, monkeypatch, real_weights,
                                                                         argv, words):
    # argparse alone takes -1e-3, -inf and -nan for unknown options: "--lr: expected one argument"
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("SCRATCHNST_WEIGHTS_DIR", str(real_weights.parent))   # found, so the number is what is wrong
    assert main([str(a) for a in argv]) == 2
    one_line(capsys.readouterr().err, *words)
    assert not list(tmp_path.iterdir())


# -------------------------------------------------------------- names and streams nobody listed
@pytest.mark.skipif(not os.path.exists("/dev/full"), reason="no /dev/full here to fill standard output")
@pytest.mark.parametrize("argv", [["--help"], ["--version"], ["stylize", "--help"], ["exercises", "grade", "-h"]])
def test_help_to_a_full_disk_is_one_line(argv):
    with open("/dev/full", "w") as full:
        done = subprocess.run([sys.executable, "-m", "scratchnst", *argv], stdout=full, stderr=subprocess.PIPE,
                              text=True, timeout=120)
    assert done.returncode == 1
    one_line(done.stderr, "scratchnst: error: cannot write to standard output (No space left on device)")


def test_a_name_longer_than_a_file_name_may_be_is_refused_before_any_work(tmp_path, capsys, real_weights):
    long = tmp_path / ("d" * 252 + ".png")   # 256 bytes
    status, _, err = run(capsys, ["stylize", CAT, SWIRLS, "-o", long, "--weights", real_weights, "--size", "32",
                                  "--iters", "1"])
    assert status == 2 and "its name is 256 bytes long, more than the 255 a file name may have; give a shorter name" \
        in one_line(err)
    assert list(tmp_path.iterdir()) == []


def test_stylize_refuses_an_output_name_its_numbered_images_would_overflow(tmp_path, capsys, real_weights):
    """out.png fits, out_0010.png would not: refused before the run, whose snapshots and Ctrl-C image need it."""
    fits = tmp_path / ("c" * 247 + ".png")   # 251 bytes; its snapshots' names 256 and more
    status, _, err = run(capsys, ["stylize", CAT, SWIRLS, "-o", fits, "--weights", real_weights, "--size", "32",
                                  "--iters", "1"])
    assert status == 2 and "the numbered images the run writes beside it" in one_line(err) and "shorter" in err
    assert list(tmp_path.iterdir()) == []
    shorter = tmp_path / ("c" * 240 + ".png")   # its snapshots' names 251 bytes: the run goes on
    status, _, err = run(capsys, ["stylize", CAT, SWIRLS, "-o", shorter, "--weights", real_weights, "--size", "32",
                                  "--iters", "2", "--save-every", "1"])
    assert status == 0, err
    assert (tmp_path / ("c" * 240 + "_0001.png")).is_file() and shorter.is_file()


def test_a_ctrl_c_that_an_import_turned_into_an_error_is_reported_as_the_ctrl_c(monkeypatch, capsys):
    """NumPy imported at the moment of a Ctrl-C raises ImportError ("PyCapsule_Import could not import
    module datetime"): the command says it was interrupted, exit 130, not "internal error ... a bug"."""
    from scratchnst.cli import weights_commands

    def interrupted_import(stream=None):
        try:
            os.kill(os.getpid(), signal.SIGINT)
            time.sleep(5)   # the handler raises at once
        except KeyboardInterrupt:   # a compiled module's bare `except:` takes it ...
            pass
        raise ImportError("PyCapsule_Import could not import module \"datetime\"")   # ... and raises this

    monkeypatch.setattr(weights_commands, "print_list", interrupted_import)
    status, _, err = run(capsys, ["weights", "list"])
    assert status == 130
    one_line(err, "scratchnst: interrupted (Ctrl-C)")
    # the same error with no Ctrl-C behind it is the error it is
    monkeypatch.setattr(weights_commands, "print_list", lambda stream=None: (_ for _ in ()).throw(ImportError("x")))
    status, _, err = run(capsys, ["weights", "list"])
    assert status == 1 and "internal error (ImportError: x)" in one_line(err)

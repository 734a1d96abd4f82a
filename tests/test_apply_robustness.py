"""`scratchnst apply` (and save_image, which `stylize` shares) against what a red team tried: results too
large for their format, a network file the user may not read, hand-edited huge headers, wide networks
and the memory guard, a checkpoint that would become a training photo, file names with line breaks.

Every error is one line, exits non-zero, and leaves no file behind."""

import os
import shutil
import subprocess
import sys
from pathlib import Path

import h5py
import numpy as np
import pytest
import scratchnst.settings
from PIL import Image

from scratchnst import cli, image_files, training, transformer_net
from scratchnst.cli import train_command
from scratchnst.errors import UserError

from test_training import SWIRLS, write_photo

REPO = Path(__file__).resolve().parents[1]


def tiny_network(folder):
    """A small untrained network saved in folder/net.h5 (apply's tests need a network, not a good one)."""
    return transformer_net.save(folder / "net.h5", transformer_net.init_params(np.random.default_rng(0), (4, 4, 4), 0))


def run_cli(*args, prefix=()):
    """(status, stdout, stderr) of `python -m scratchnst ARGS` in a process of its own (C libraries' stderr too)."""
    done = subprocess.run([*prefix, sys.executable, "-m", "scratchnst", *map(str, args)], capture_output=True,
                          text=True, timeout=300, cwd=REPO)
    return done.returncode, done.stdout, done.stderr


# --------------------------------------------------------------- 1. a result too large for its format
@pytest.mark.parametrize("suffix, said", [(".webp", "WebP (at most 16383"), (".gif", "GIF (at most 65535"),
                                          (".pcx", "PCX (at most 65534"), (".jpg", "JPEG (at most 65500"),
                                          (".pdf", "PDF (at most 65500"), (".ico", "too large for ICO")])
def test_save_image_refuses_a_picture_too_large_for_its_format_in_one_line(tmp_path, suffix, said):
    picture = np.zeros((4, 100_000, 3), np.uint8)
    with pytest.raises(UserError) as caught:
        image_files.save_image(tmp_path / f"out{suffix}", picture)
    message = str(caught.value)
    assert "\n" not in message and said in message and "100000x4 is too large" in message and "save as .png" in message
    assert list(tmp_path.iterdir()) == []   # neither the file nor a temporary one


def test_the_limits_are_the_encoders_own(tmp_path):
    # one pixel under each limit is written and reads back at its size
    for suffix, side in ((".webp", 16383), (".gif", 65535), (".pcx", 65534), (".jpg", 65500)):
        path = image_files.save_image(tmp_path / f"edge{suffix}", np.zeros((4, side, 3), np.uint8))
        with Image.open(path) as written:
            assert written.size == (side, 4)
    assert image_files.size_problem("x.ico", 300, 300) is None   # Pillow shrinks it into 256x256 icons
    assert image_files.size_problem("x.png", 4, 100_000) is None


def test_an_encoder_refusal_the_table_does_not_know_is_one_line_and_no_file(tmp_path, monkeypatch):
    monkeypatch.setattr(image_files, "MAX_SIDE", {})   # as if a format's limit were not known yet
    with pytest.raises(UserError) as caught:
        image_files.save_image(tmp_path / "out.webp", np.zeros((4, 16384, 3), np.uint8))
    message = str(caught.value)
    assert "WEBP encoder cannot write this 16384x4 picture" in message and "folder" not in message
    assert list(tmp_path.iterdir()) == []


def test_apply_refuses_a_result_too_large_for_its_format_before_computing(tmp_path):
    net = tiny_network(tmp_path)
    photo = tmp_path / "long.png"
    Image.new("RGB", (100_000, 4), (200, 120, 40)).save(photo)
    status, out, err = run_cli("apply", net, photo, "-o", tmp_path / "out.jpg")
    assert status == 1 and out == ""
    # one line: libjpeg's own "Maximum supported image dimension" line never gets written
    assert err.splitlines() == [f"scratchnst: error: -o {tmp_path / 'out.jpg'}: 100000x4 is too large for JPEG "
                                "(at most 65500 pixels a side); save as .png"]
    assert not (tmp_path / "out.jpg").exists()


def test_apply_checks_the_size_it_will_write_with_size(tmp_path, capsys, monkeypatch):
    net = tiny_network(tmp_path)
    photo = write_photo(tmp_path / "p.png", 30, 40)
    monkeypatch.setattr(training, "stylize_photo", _no_computing)
    monkeypatch.setattr(scratchnst.settings, "available_memory", lambda: None)   # memory unknown: not refused
    assert cli.main(["apply", str(net), str(photo), "--size", "20000", "-o", str(tmp_path / "o.webp")]) == 1
    assert "20000x15000 is too large for WebP" in capsys.readouterr().err


def _no_computing(*args, **kwargs):
    raise AssertionError("the refusal should come before any computing")


# ------------------------------------------------------------------ 2. a network file the user may not read
def test_apply_on_a_network_file_the_user_may_not_read_is_one_line(tmp_path):
    net = tiny_network(tmp_path)
    photo = write_photo(tmp_path / "p.png", 20, 24)
    net.chmod(0)
    prefix = []
    if os.geteuid() == 0:   # root reads any file: run as an ordinary uid in a user namespace (no capabilities)
        bwrap = shutil.which("bwrap")
        if bwrap is None:
            pytest.skip("running as root without bubblewrap: no way to be refused a file")
        prefix = [bwrap, "--unshare-user", "--uid", "1000", "--gid", "1000", "--dev-bind", "/", "/"]
        probe = subprocess.run(prefix + ["cat", str(net)], capture_output=True)
        if probe.returncode == 0 or b"ermission" not in probe.stderr:
            pytest.skip(f"bubblewrap cannot make a user that a file refuses here: {probe.stderr[:200]!r}")
    status, out, err = run_cli("apply", net, photo, "-o", tmp_path / "out.png", prefix=prefix)
    assert status == 1 and out == ""
    assert err.splitlines() == [f"scratchnst: error: {net}: cannot be read (Permission denied); check its permissions"]
    assert not (tmp_path / "out.png").exists()


# ------------------------------------------------------------------ 3. a header declaring a huge network
def _hand_edited(path, widths, residual_blocks=0):
    """A network file declaring this architecture, its datasets created at their shapes but never written
    (h5py then stores nothing: the file stays small however large the shapes)."""
    shapes = transformer_net.parameter_shapes(widths, residual_blocks)
    layer_names = [spec[0] for spec in transformer_net.layer_specs(widths, residual_blocks)]
    with h5py.File(path, "w") as f:
        f.attrs["scratchnst_transformer_format"] = transformer_net.FORMAT_VERSION
        f.attrs["architecture"] = transformer_net.ARCHITECTURE
        f.attrs["widths"] = np.asarray(widths, dtype=np.int64)
        f.attrs["residual_blocks"] = residual_blocks
        f.attrs["outer_kernel"] = transformer_net.DEFAULT_OUTER_KERNEL
        f.attrs["noise_channels"] = transformer_net.DEFAULT_NOISE_CHANNELS
        f.attrs["noise_std"] = transformer_net.NOISE_STD
        f.attrs["layer_names"] = np.array([name.encode() for name in layer_names])
        f.attrs["preprocessing"] = "caffe"
        for name, shape in shapes.items():
            f.create_dataset(name, shape=shape, dtype=np.float32)
    return path


def test_a_header_declaring_widths_beyond_trainings_bound_is_refused_before_reading(tmp_path):
    path = _hand_edited(tmp_path / "huge.h5", (16, 32, 20000))
    assert path.stat().st_size < 100_000
    with pytest.raises(UserError) as caught:
        transformer_net.load(path)
    message = str(caught.value)
    assert "header attribute widths" in message and f"at most {transformer_net.MAX_WIDTH}" in message
    assert "--size" not in message and "memory" not in message


def test_a_header_declaring_too_many_residual_blocks_is_refused(tmp_path):
    path = tiny_network(tmp_path)
    with h5py.File(path, "r+") as f:
        f.attrs["residual_blocks"] = transformer_net.MAX_RESIDUAL_BLOCKS + 1
    with pytest.raises(UserError, match=f"writes at most {transformer_net.MAX_RESIDUAL_BLOCKS}"):
        transformer_net.load(path)


def test_datasets_declared_but_never_written_are_refused(tmp_path):
    # legal widths, but nothing stored: reading would allocate every declared kernel to give zeros
    path = _hand_edited(tmp_path / "empty.h5", (1024, 1024, 1024), 2)
    with pytest.raises(UserError, match="holds no stored values"):
        transformer_net.load(path)


# ----------------------------------------------------------------- 4. the memory guard and the widths
def _shaped_params(widths):
    """Parameters of this architecture that take no memory (architecture_of reads only their shapes)."""
    return {name: np.broadcast_to(np.float32(0), shape)
            for name, shape in transformer_net.parameter_shapes(widths, 0).items()}


def test_apply_bytes_per_pixel_grows_with_the_widths():
    default = train_command.apply_bytes_per_pixel(_shaped_params(transformer_net.DEFAULT_WIDTHS))
    assert default == train_command.APPLY_BYTES_PER_PIXEL
    wide = train_command.apply_bytes_per_pixel(_shaped_params((1024, 1024, 1024)))
    assert wide == pytest.approx(default * (1024 + 256 + 64) / 28)
    assert train_command.apply_bytes_per_pixel(_shaped_params((1, 1, 1))) == default   # the picture's buffers remain


def test_apply_memory_guard_counts_the_networks_widths(tmp_path, capsys, monkeypatch):
    photo = tmp_path / "photo.png"
    Image.new("RGB", (1024, 768)).save(photo)
    monkeypatch.setattr(scratchnst.settings, "available_memory", lambda: 2e9)
    monkeypatch.setattr(training, "stylize_photo", _no_computing)
    wide = (_shaped_params((1024, 1024, 1024)), {"preprocessing": "caffe"})
    monkeypatch.setattr(transformer_net, "load", lambda path: wide)
    assert cli.main(["apply", str(tmp_path / "wide.h5"), str(photo), "-o", str(tmp_path / "out.png")]) == 1
    line = capsys.readouterr().err.strip()
    assert "1024x768 pixels: stylising it needs about" in line and "use --size" in line and "\n" not in line
    # the default network passes the same guard on the same photo with the same memory
    train_command.check_apply_memory(photo, None, train_command.apply_bytes_per_pixel(
        _shaped_params(transformer_net.DEFAULT_WIDTHS)))


# --------------------------------------------------------- 5. a checkpoint that would be a training photo
@pytest.mark.parametrize("name", ["ck.png", "sub/ck.JPG"])
def test_a_checkpoint_named_as_an_image_inside_the_photos_folder_is_refused(tmp_path, capsys, monkeypatch, name,
                                                                            squeezenet_weights_path):
    photos = tmp_path / "photos"
    write_photo(photos / "a.png", 40, 56, seed=1)
    monkeypatch.setattr(training, "train", _no_computing)
    status = cli.main(["train", str(SWIRLS), str(photos), "-o", str(tmp_path / "net.h5"), "--weights",
                       str(squeezenet_weights_path), "--size", "32", "--iters", "2",
                       "--checkpoint", str(photos / name)])
    err = capsys.readouterr().err.strip()
    assert status == 2 and len(err.splitlines()) == 1 and "Traceback" not in err
    assert f"--checkpoint {photos / name} is inside the folder of training photos" in err
    assert not (photos / name).exists() and not (tmp_path / "net.h5").exists()


def test_a_checkpoint_the_photo_list_would_not_take_is_allowed(tmp_path):
    photos = tmp_path / "photos"
    assert not train_command._would_be_photo(photos / "ck.npz", photos)
    assert not train_command._would_be_photo(photos / ".hidden" / "ck.png", photos)
    assert not train_command._would_be_photo(tmp_path / "ck.png", photos)
    assert train_command._would_be_photo(photos / "ck.png", photos)


# ------------------------------------------------------------ 6. file names with line breaks, one line each
def test_apply_shows_names_with_line_breaks_escaped_and_each_error_once(tmp_path, capsys):
    net = tiny_network(tmp_path)
    good = write_photo(tmp_path / "a\nb.png", 20, 24)
    whole = tmp_path / "whole.jpg"
    Image.fromarray(np.random.default_rng(5).integers(0, 256, (64, 64, 3), dtype=np.uint8)).save(whole, quality=90)
    broken = tmp_path / "c\nd.jpg"
    broken.write_bytes(whole.read_bytes()[:len(whole.read_bytes()) // 2])   # the header reads, the pixels stop
    assert cli.main(["apply", str(net), str(good), str(broken), "-o", str(tmp_path / "out")]) == 1
    out, err = capsys.readouterr()
    assert len(out.splitlines()) == 1 and out.startswith("wrote ") and "a\\nb.png (24x20" in out
    lines = err.splitlines()
    assert len(lines) == 2 and "Traceback" not in err
    assert lines[0].startswith("skipped ") and "c\\nd.jpg: not a readable image" in lines[0]
    assert lines[0].count("c\\nd.jpg") == 1   # the name once, not "skipped X: X: ..."
    assert "1 of the 2 photos could not be stylised (the first: " in lines[1] and "c\\nd.jpg" in lines[1]
    assert "not a readable image" not in lines[1]   # the reason was told on its own line already
    assert (tmp_path / "out" / "a\nb.png").exists()

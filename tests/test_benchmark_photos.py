"""lessons/images/make_benchmark_photos.py: the training photos behind README.md's numbers, written from
the folders of installed packages (faked here: scikit-image and scikit-learn are no test dependencies)."""

import importlib.util
import os
import subprocess
import sys

import numpy as np
import pytest
from PIL import Image

from conftest import REPO

SCRIPT = REPO / "lessons" / "images" / "make_benchmark_photos.py"


@pytest.fixture
def script():
    spec = importlib.util.spec_from_file_location("make_benchmark_photos", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def fake_packages(script, root):
    """Small images at every path the script reads, of the kinds the real ones are (grey, RGB, RGBA,
    PNG and JPEG) -> {(module, inside): (H, W, 3) uint8 as the script should write it}."""
    rng = np.random.default_rng(0)
    expected = {}
    for k, (module, inside, _) in enumerate(script.TRAIN + script.HELD_OUT):
        path = root / module / inside
        path.parent.mkdir(parents=True, exist_ok=True)
        mode = ("L", "RGB", "RGB" if path.suffix == ".jpg" else "RGBA")[k % 3]   # JPEG has no alpha
        pixels = rng.integers(0, 256, size=(20 + k, 30, len(mode)), dtype=np.uint8)
        picture = Image.fromarray(pixels[:, :, 0] if mode == "L" else pixels, mode)
        picture.save(path, format="JPEG" if path.suffix == ".jpg" else "PNG", **(
            {"quality": 95} if path.suffix == ".jpg" else {}))
        with Image.open(path) as saved:
            expected[(module, inside)] = np.asarray(saved.convert("RGB"))
    return expected


def test_every_photo_is_written_once_as_rgb_png_and_again_only_when_it_changed(script, tmp_path, monkeypatch):
    monkeypatch.setattr(script, "package_folder", lambda module: tmp_path / "site" / module)
    expected = fake_packages(script, tmp_path / "site")
    out = tmp_path / "bench"
    assert script.make(out) == len(script.TRAIN) + len(script.HELD_OUT) == 16
    for sub, entries in (("train", script.TRAIN), ("held_out", script.HELD_OUT)):
        assert sorted(p.name for p in (out / sub).iterdir()) == sorted(name for _, _, name in entries)
        for module, inside, name in entries:
            with Image.open(out / sub / name) as written:
                assert written.format == "PNG" and written.mode == "RGB"
                assert np.array_equal(np.asarray(written), expected[(module, inside)]), name
    assert script.make(out) == 0      # a second run finds every photo in place
    Image.new("RGB", (5, 5)).save(out / "train" / "coins.png")
    (out / "train" / "moon.png").write_bytes(b"not a picture")
    assert script.make(out) == 2
    assert not list(out.rglob("*.partial"))


def test_a_package_that_is_missing_or_lacks_a_file_is_one_line(tmp_path):
    blocked = tmp_path / "blocked" / "skimage"
    blocked.mkdir(parents=True)
    (blocked / "__init__.py").write_text("raise ImportError('blocked by the test')\n")
    env = dict(os.environ, PYTHONPATH=str(blocked.parent))
    result = subprocess.run([sys.executable, str(SCRIPT), str(tmp_path / "bench")], capture_output=True, text=True,
                            env=env, timeout=120)
    assert result.returncode == 1 and result.stderr == "error: skimage is not installed: pip install scikit-image\n"

    (blocked / "__init__.py").write_text("")   # a scikit-image without its data files
    result = subprocess.run([sys.executable, str(SCRIPT), str(tmp_path / "bench")], capture_output=True, text=True,
                            env=env, timeout=120)
    assert result.returncode == 1 and "Traceback" not in result.stderr
    (line,) = result.stderr.splitlines()
    assert line == f"error: {blocked / 'data' / 'astronaut.png'} is missing: this scikit-image does not ship it " \
                   "(scikit-image 0.26 does)"


def test_a_folder_that_cannot_be_made_is_one_line(script, tmp_path, monkeypatch, capsys):
    monkeypatch.setattr(script, "package_folder", lambda module: tmp_path / "site" / module)
    fake_packages(script, tmp_path / "site")
    taken = tmp_path / "a_file"
    taken.write_text("")
    with pytest.raises(SystemExit) as stopped:
        script.main([str(taken)])
    assert str(stopped.value).startswith(f"error: cannot write into {taken}: ")

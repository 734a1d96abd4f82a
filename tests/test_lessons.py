"""The lessons run from top to bottom and make their pictures; without weights, matplotlib or
PyTorch they say so in one line instead of failing with a traceback.

Every lesson runs as a subprocess, as a reader runs it (`python lessons/NN_name.py`), at a small
size and with few iterations, writing into a temporary folder (never into lessons/out/).
"""

import importlib.util
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from conftest import REPO

LESSONS_DIR = REPO / "lessons"

# lesson -> (pictures made with Pillow, always; plots made with matplotlib, when it is installed)
EXPECTED = {
    "01_convolution.py": (["01_filters.png"], []),
    "02_conv_backward.py": (["02_gradient.png"], ["02_step_size.png"]),
    "03_relu_and_pooling.py": (["03_pooling.png"], ["03_relu_kink.png"]),
    "04_pretrained_network.py": (["04_features.png"], []),
    "05_content_cost.py": (["05_content_layers.png"], ["05_content_costs.png"]),
    "06_style_cost.py": (["06_gram.png", "06_texture.png"], ["06_style_costs.png"]),
    "07_total_cost_and_backprop.py": (["07_gradients.png"], []),
    "08_optimisers.py": (["08_results.png"], ["08_optimisers.png"]),
    "09_style_transfer.py": (["09_result.png", "09_snapshots.png"], ["09_costs.png"]),
    "10_beyond_the_course.py": (["10_variations.png", "10_tv_zoom.png"], []),
    "11_training_a_network.py": (["11_layers.png", "11_copying.png"], ["11_copy_costs.png"]),
    "12_real_time_style.py": (["12_side_by_side.png", "12_training_photos.png", "12_kernels.png"], ["12_training.png"]),
}
NEEDS_WEIGHTS = {name for name in EXPECTED if int(name[:2]) >= 4}
# Small and quick: 64 px still leaves every layer the lessons use a non-empty output.
QUICK = ["--size", "64", "--iters", "3"]
EXTRA = {"07_total_cost_and_backprop.py": ["--check-pixels", "6"]}
HAVE_MATPLOTLIB = importlib.util.find_spec("matplotlib") is not None


def run_lesson(name, out, env_extra=None, args=()):
    """Run one lesson in a subprocess; returns the CompletedProcess (text output)."""
    env = dict(os.environ)
    env.pop("SCRATCHNST_WEIGHTS_DIR", None)
    env.update(env_extra or {})
    env["MPLBACKEND"] = "Agg"
    return subprocess.run(
        [sys.executable, str(LESSONS_DIR / name), "--out", str(out), *QUICK, *EXTRA.get(name, []), *args],
        capture_output=True, text=True, env=env, timeout=600, cwd=REPO,
    )


def repo_holds_weights():
    """weights/ of the repository is searched too; a run without weights cannot hide it."""
    return any((REPO / "weights").glob("*.h5"))


def no_weights_env(tmp_path):
    """Environment in which no weights can be found: empty weights folder and user cache."""
    empty = tmp_path / "empty"
    empty.mkdir(exist_ok=True)
    return {"SCRATCHNST_WEIGHTS_DIR": str(empty), "XDG_CACHE_HOME": str(empty)}


def blocking(tmp_path, module):
    """A PYTHONPATH entry that makes `import module` fail, as if it were not installed."""
    stub = tmp_path / "blocked" / module
    stub.mkdir(parents=True)
    (stub / "__init__.py").write_text(f"raise ImportError('{module} blocked by the test')\n")
    return {"PYTHONPATH": os.pathsep.join([str(stub.parent), os.environ.get("PYTHONPATH", "")])}


def assert_pictures(out, names):
    for name in names:
        path = out / name
        assert path.is_file(), f"{name} was not written"
        with Image.open(path) as im:
            im.verify()  # a complete, readable PNG
        with Image.open(path) as im:
            assert im.width >= 32 and im.height >= 32, f"{name} is only {im.width}x{im.height}"


def test_every_lesson_is_listed():
    found = sorted(p.name for p in LESSONS_DIR.glob("[0-9][0-9]_*.py"))
    assert found == sorted(EXPECTED), "a lesson was added or renamed: update EXPECTED"


@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_lesson_runs_and_makes_its_pictures(name, tmp_path, request):
    env = {"XDG_CACHE_HOME": str(tmp_path / "cache")}
    args = []
    if name in NEEDS_WEIGHTS:
        weights = request.getfixturevalue("squeezenet_weights_path")
        env["SCRATCHNST_WEIGHTS_DIR"] = str(Path(weights).parent)
        args = ["--network", "squeezenet"]  # the quick network, even where VGG-19 weights exist
    elif not repo_holds_weights():
        env.update(no_weights_env(tmp_path))  # lessons 1-3 must need no weights at all
    out = tmp_path / "out"
    result = run_lesson(name, out, env, args)
    assert result.returncode == 0, f"{name} failed:\n{result.stdout[-3000:]}\n{result.stderr[-3000:]}"
    assert "Traceback" not in result.stderr
    pictures, plots = EXPECTED[name]
    assert_pictures(out, pictures + (plots if HAVE_MATPLOTLIB else []))
    assert "lesson finished in" in result.stdout
    if "WRONG" in result.stdout:
        pytest.fail(f"{name} reports a failed check:\n{result.stdout}")


@pytest.mark.parametrize("name", ["04_pretrained_network.py", "05_content_cost.py", "09_style_transfer.py"])
def test_lesson_without_weights_stops_with_one_line(name, tmp_path):
    if repo_holds_weights():
        pytest.skip("weights/ of the repository holds a weights file, so a run without weights cannot be arranged")
    result = run_lesson(name, tmp_path / "out", no_weights_env(tmp_path))
    assert result.returncode != 0
    assert "Traceback" not in result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert "scratchnst weights download" in lines[0]
    if name == "05_content_cost.py":  # the gradient checks need no weights and ran first
        assert result.stdout.count("-> right") == 2, result.stdout


def test_lesson_without_matplotlib_says_what_it_skipped(tmp_path):
    out = tmp_path / "out"
    result = run_lesson("02_conv_backward.py", out, blocking(tmp_path, "matplotlib"))
    assert result.returncode == 0, result.stderr
    assert "matplotlib is not installed: skipping" in result.stdout
    assert_pictures(out, ["02_gradient.png"])
    assert not (out / "02_step_size.png").exists()


def test_lesson_without_torch_says_what_it_skipped(tmp_path):
    result = run_lesson("01_convolution.py", tmp_path / "out", blocking(tmp_path, "torch"))
    assert result.returncode == 0, result.stderr
    assert "PyTorch is not installed: skipping" in result.stdout


def test_lesson_with_a_missing_image_stops_with_one_line(tmp_path):
    """(Every other mistake a reader can make, with its exit status: tests/test_errors_commands.py.)"""
    result = run_lesson("01_convolution.py", tmp_path / "out", args=["--content", str(tmp_path / "nope.jpg")])
    assert result.returncode == 1
    assert "Traceback" not in result.stderr
    (line,) = result.stderr.strip().splitlines()
    assert line.startswith(f"lesson stopped: {tmp_path / 'nope.jpg'}: no such image file")


def test_a_relative_path_from_elsewhere_says_where_it_is_read_from(tmp_path):
    """A path typed from the repository (lessons/images/...) given where options are read from lessons/,
    as in a notebook: the line says where relative paths are read from, and the path that works there."""
    result = subprocess.run([sys.executable, str(LESSONS_DIR / "01_convolution.py"), "--out", str(tmp_path),
                             "--content", "lessons/images/cat.jpg", *QUICK], capture_output=True, text=True,
                            timeout=600, cwd=LESSONS_DIR)
    assert result.returncode == 1
    (line,) = result.stderr.strip().splitlines()
    assert line == (f"lesson stopped: lessons/images/cat.jpg: no such image file; check the path (relative paths "
                    f"are read from {LESSONS_DIR}: give images/cat.jpg or an absolute path)")


def test_labels_use_a_scalable_font(monkeypatch):
    """Pictures are labelled in a scalable font large enough to read, not Pillow's 8-pixel bitmap font."""
    from PIL import ImageFont

    monkeypatch.setattr(sys, "excepthook", sys.excepthook)  # importing _lesson replaces it: put it back after
    monkeypatch.syspath_prepend(str(LESSONS_DIR))
    import _lesson

    font = _lesson.label_font()
    assert isinstance(font, ImageFont.FreeTypeFont)
    left, top, right, bottom = font.getbbox("Gram matrix")
    assert bottom - top >= 10, "capital letters should be at least 10 pixels high"
    page = _lesson.montage([np.zeros((40, 200, 3))], ["a label"])
    assert page.shape[0] >= 40 + 15  # room under the tile for one line of text

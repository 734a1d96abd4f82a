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


def test_a_trained_network_is_judged_on_every_held_out_photo(tmp_path, squeezenet_weights_path):
    """Lesson 12 with --trained and --held-out: one row of costs and one row of pictures per photo, and a
    note where the network was trained on another style than the one it is judged against."""
    env = {**os.environ, "SCRATCHNST_WEIGHTS_DIR": str(Path(squeezenet_weights_path).parent)}
    images = LESSONS_DIR / "images"
    net = tmp_path / "mosaic.h5"
    trained = subprocess.run([sys.executable, "-m", "scratchnst", "train", str(images / "mosaic.jpg"),
                              str(images / "photos"), "-o", str(net), "--iters", "4", "--size", "64"],
                             capture_output=True, text=True, env=env, timeout=600, cwd=REPO)
    assert trained.returncode == 0, trained.stderr
    held_out = [images / "photos" / "rocket.jpg", images / "photos" / "coffee.jpg"]
    out = tmp_path / "out"
    result = run_lesson("12_real_time_style.py", out, {"SCRATCHNST_WEIGHTS_DIR": env["SCRATCHNST_WEIGHTS_DIR"]},
                        ["--network", "squeezenet", "--trained", str(net), "--optimise-iters", "2",
                         "--held-out", *map(str, held_out)])
    assert result.returncode == 0, result.stderr[-3000:]
    rows = [line.split() for line in result.stdout.splitlines() if line.split()[:1] in (["cat.jpg"], ["rocket.jpg"],
                                                                                       ["coffee.jpg"])]
    assert [row[0] for row in rows] == ["cat.jpg", "rocket.jpg", "coffee.jpg"], result.stdout
    for row in rows:   # J photo, J network, seconds, J L-BFGS, seconds: finite, the costs positive
        # (the seconds are rounded, .2f and .1f: a fast machine's 64 px pass and 2 iterations print 0.0)
        costs, seconds = [float(row[k]) for k in (1, 2, 4)], [float(row[k]) for k in (3, 5)]
        assert all(np.isfinite(v) and v > 0 for v in costs) and all(np.isfinite(v) and v >= 0 for v in seconds), row
    assert f"note: it was trained on the style {images / 'mosaic.jpg'}" in result.stdout
    with Image.open(out / "12_side_by_side.png") as one_row_each:
        alone = tmp_path / "alone"
        assert run_lesson("12_real_time_style.py", alone, {"SCRATCHNST_WEIGHTS_DIR": env["SCRATCHNST_WEIGHTS_DIR"]},
                          ["--network", "squeezenet", "--trained", str(net), "--optimise-iters", "2",
                           "--style", str(images / "mosaic.jpg")]).returncode == 0
        with Image.open(alone / "12_side_by_side.png") as cat_only:
            assert one_row_each.width == cat_only.width and one_row_each.height > 2.5 * cat_only.height


def test_a_held_out_photo_named_as_a_picture_of_the_lesson_is_refused(tmp_path):
    out = tmp_path / "out"
    out.mkdir()
    photo = out / "12_side_by_side.png"
    Image.new("RGB", (64, 64), "white").save(photo)
    result = subprocess.run([sys.executable, str(LESSONS_DIR / "12_real_time_style.py"), "--out", str(out),
                             *QUICK, "--held-out", str(photo)], capture_output=True, text=True, timeout=600, cwd=REPO)
    assert result.returncode == 2 and "Traceback" not in result.stderr
    (line,) = result.stderr.strip().splitlines()
    assert line.endswith("rename the file") and f"--held-out {photo} is in --out" in line, line


def test_each_row_of_a_montage_is_as_tall_as_its_own_tallest_tile(monkeypatch):
    monkeypatch.setattr(sys, "excepthook", sys.excepthook)
    monkeypatch.syspath_prepend(str(LESSONS_DIR))
    import _lesson

    square, landscape = np.zeros((120, 120, 3)), np.full((50, 120, 3), 255.0)
    one_row = _lesson.montage([landscape, landscape], ["a", "b"], cols=2, gap=6)
    page = _lesson.montage([square, square, landscape, landscape], ["a", "b", "c", "d"], cols=2, gap=6)
    label_h = one_row.shape[0] - 50 - 2 * 6
    assert label_h > 0 and page.shape[0] == 6 + (120 + label_h + 6) + (50 + label_h + 6)
    assert (page[6 + 120 + label_h + 6:][:50, 6:126] == 255).all()   # the landscapes start right below

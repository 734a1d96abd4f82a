"""Shared fixtures: where the real weights and images are, and what to do when they or torch are missing.

The tests look for the pretrained SqueezeNet file where the command line does (--weights aside):
$SCRATCHNST_WEIGHTS_DIR, weights/ of this repository, the per-user cache that
`scratchnst weights download squeezenet` fills; then in ../shared/weights, where CI keeps a copy.
Images come from ../shared/images when it is there (public-domain paintings and a photograph), else
from the images the project ships in lessons/images, so that the suite runs in full on a fresh clone.

Locally a missing file or torch skips the tests that need it, and the skip says what to do. Under CI
(CI=true) it fails them: CI must run the pretrained-weights and PyTorch checks for real, never skip
them quietly.
"""

import os
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from scratchnst import parallel
from scratchnst import weights as weights_io
from scratchnst.errors import UserError

pytest_plugins = ["pytester"]   # tests of this conftest run it in an inner session

REPO = Path(__file__).resolve().parents[1]
UNDER_CI = os.environ.get("CI", "").lower() in ("1", "true", "yes")
SQUEEZENET_FILE = weights_io.KNOWN_WEIGHTS["squeezenet"].filename

# What the tests ask ../shared/images for, and the shipped image of the same kind that stands in for it
# when ../shared is absent (a photograph, a painting with swirls, a painting with other colours),
# resized to the size of the one it stands for: tests count on those sizes and aspect ratios.
SHIPPED_STAND_INS = {
    "tubingen.jpg": (REPO / "lessons" / "images" / "cat.jpg", (1024, 768)),
    "starry_night.jpg": (REPO / "lessons" / "images" / "swirls.jpg", (1024, 640)),
    "the_scream.jpg": (REPO / "lessons" / "images" / "mosaic.jpg", (1200, 1528)),
}


def missing(reason):
    """Fail under CI, skip elsewhere."""
    if UNDER_CI:
        pytest.fail(f"{reason} (CI must run this test, not skip it)")
    pytest.skip(reason)


def strict_json(text):
    """json.loads refusing NaN and Infinity, which are not JSON, as JavaScript's JSON.parse refuses them."""
    import json

    def refuse(word):
        raise ValueError(f"{word} is not JSON")

    return json.loads(text, parse_constant=refuse)


def shared_path():
    """../shared beside the repository, or $SCRATCHNST_SHARED."""
    return Path(os.environ.get("SCRATCHNST_SHARED", REPO.parent / "shared"))


def find_squeezenet_weights():
    """The SqueezeNet file as the command line finds it, else ../shared's copy; None if neither has it."""
    try:
        return weights_io.find_weights("squeezenet")
    except UserError:
        pass
    candidate = shared_path() / "weights" / SQUEEZENET_FILE
    return candidate if candidate.is_file() else None


# What the command line's --threads (cli.parser._set_threads) writes into os.environ, for NumPy to read
# when it loads and for the processes it starts (training's helpers) to inherit.
THREAD_VARIABLES = ("OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS", "MKL_NUM_THREADS", "VECLIB_MAXIMUM_THREADS",
                    parallel.WORKERS_VARIABLE)


@pytest.fixture(autouse=True)
def thread_variables_restored():
    """Each test ends with the thread variables it started with.

    A test that runs `cli.main([..., "--threads", "2"])` in this process sets them as a real run
    does; left in place, every later test's subprocesses would run on two workers.
    """
    saved = {name: os.environ.get(name) for name in THREAD_VARIABLES}
    yield
    for name, value in saved.items():
        if value is None:
            os.environ.pop(name, None)
        else:
            os.environ[name] = value


@pytest.fixture(autouse=True)
def pieces_in_threads(request, monkeypatch):
    """In this process, the splits' pieces run as threads, not in helper processes (piece_processes).

    A helper imports its own copy of each module: a test's monkeypatch of something a piece uses
    (a block size, a choice of algorithm) would reach the caller's pieces and not the helper's, and
    which pieces a helper took would depend on whether it had started yet. The tests of helpers
    themselves (marked `helper_processes`) and the command line's runs in subprocesses use them.
    """
    if request.node.get_closest_marker("helper_processes") is None:
        monkeypatch.setattr(parallel, "_no_helpers", True)


def pytest_configure(config):
    config.addinivalue_line("markers", "helper_processes: the test may hand pieces of splits to helper processes")


@pytest.fixture(scope="session")
def squeezenet_weights_path():
    path = find_squeezenet_weights()
    if path is None:
        missing("no SqueezeNet weights: to run this test, run `scratchnst weights download squeezenet` "
                "(offline, with --url file:///path/to/the/file.h5), or set $SCRATCHNST_WEIGHTS_DIR to the "
                "folder holding the file")
    return path


@pytest.fixture(scope="session")
def shared_image(tmp_path_factory):
    """shared_image("tubingen.jpg") -> path of that image in ../shared/images, else its shipped stand-in."""
    made = {}

    def get(name):
        path = shared_path() / "images" / name
        if path.is_file():
            return path
        if name in SHIPPED_STAND_INS:
            if name not in made:
                source, size = SHIPPED_STAND_INS[name]
                made[name] = tmp_path_factory.mktemp("stand-ins") / name
                with Image.open(source) as picture:
                    picture.convert("RGB").resize(size, Image.LANCZOS).save(made[name], quality=95)
            return made[name]
        missing(f"{path} not found: put ../shared beside the repository (or set $SCRATCHNST_SHARED) to run this test")

    return get


@pytest.fixture(scope="session")
def torch():
    try:
        import torch as torch_module
    except ImportError:
        missing("torch is not installed: to run this test, pip install torch==2.13.0 "
                "--extra-index-url https://download.pytorch.org/whl/cpu (the CPU build)")
    return torch_module


@pytest.fixture
def rng():
    return np.random.default_rng(1234)


@pytest.fixture
def unwritable_folder(tmp_path):
    """A folder in which no file can be created, for whoever runs the tests.

    For a normal user: a folder of mode 0o500. Root writes into such a folder regardless (and
    os.access says yes to root), so for root: a kernel folder that refuses new files to anyone.
    """
    if os.name == "posix" and os.geteuid() == 0:
        for candidate in (Path("/sys"), Path("/proc/self")):
            probe = candidate / ".scratchnst-probe"
            try:
                os.close(os.open(probe, os.O_CREAT | os.O_WRONLY, 0o600))
            except OSError:
                yield candidate
                return
            os.unlink(probe)
        pytest.skip("no folder on this machine refuses new files to root")
    folder = tmp_path / "read-only"
    folder.mkdir()
    folder.chmod(0o500)
    try:
        yield folder
    finally:
        folder.chmod(0o700)

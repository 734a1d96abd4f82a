"""Shared fixtures: where ../shared is, and what to do when it or torch is missing.

Locally a missing ../shared or torch skips the tests that need them. Under CI (CI=true) it fails
them: CI must run the pretrained-weights and PyTorch checks for real, never skip them quietly.
"""

import os
from pathlib import Path

import numpy as np
import pytest

REPO = Path(__file__).resolve().parents[1]
UNDER_CI = os.environ.get("CI", "").lower() in ("1", "true", "yes")


def missing(reason):
    """Fail under CI, skip elsewhere."""
    if UNDER_CI:
        pytest.fail(f"{reason} (CI must run this test, not skip it)")
    pytest.skip(reason)


def shared_path():
    """../shared beside the repository, or $SCRATCHNST_SHARED."""
    return Path(os.environ.get("SCRATCHNST_SHARED", REPO.parent / "shared"))


@pytest.fixture(scope="session")
def shared_dir():
    path = shared_path()
    if not path.is_dir():
        missing(f"{path} not found: the pretrained weights and images live there")
    return path


@pytest.fixture(scope="session")
def squeezenet_weights_path(shared_dir):
    path = shared_dir / "weights" / "squeezenet_weights_tf_dim_ordering_tf_kernels_notop.h5"
    if not path.is_file():
        missing(f"{path} not found")
    return path


@pytest.fixture(scope="session")
def shared_image(shared_dir):
    """shared_image("tubingen.jpg") -> path of an image in ../shared/images."""

    def get(name):
        path = shared_dir / "images" / name
        if not path.is_file():
            missing(f"{path} not found")
        return path

    return get


@pytest.fixture(scope="session")
def torch():
    try:
        import torch as torch_module
    except ImportError:
        missing("torch is not installed: pip install torch==2.13.0")
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

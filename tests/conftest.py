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

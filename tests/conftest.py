"""Shared fixtures: tiny model directories in the native format, built like a user's berg_dir."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from _support import img2fmri_model_dir, img2fmri_wheel, write_test_model  # noqa: F401  (session fixtures)


@pytest.fixture
def berg_dir(tmp_path: Path) -> Path:
    path = tmp_path / "berg_dir"
    path.mkdir()
    return path


@pytest.fixture
def tiny_model(berg_dir: Path) -> dict:
    """A ResNet-18 ridge model with 60 voxels, subjects 1 and 2."""
    return write_test_model(berg_dir)


@pytest.fixture(scope="module")
def shared_tiny_model(tmp_path_factory) -> dict:
    """``tiny_model`` written once per test module into its own berg_dir (key ``"berg_dir"``): for tests that
    only read it."""
    berg_dir = tmp_path_factory.mktemp("berg_dir")
    return {**write_test_model(berg_dir), "berg_dir": berg_dir}


@pytest.fixture(scope="module")
def shared_model(shared_tiny_model: dict):
    """Subject 1 of ``shared_tiny_model``, whole brain, untrained ResNet-18 on the CPU: built once per module."""
    import berg

    return berg.get_encoding_model("test-resnet18", subject=1, device="cpu", backbone_weights=None,
                                   berg_dir=shared_tiny_model["berg_dir"])


@pytest.fixture(scope="session")
def images() -> np.ndarray:
    """Three random 224x224 RGB uint8 images, (3, 224, 224, 3)."""
    return np.random.default_rng(1).integers(0, 256, size=(3, 224, 224, 3), dtype=np.uint8)



@pytest.fixture(scope="session")
def ray_cluster():
    """One local Ray cluster for the whole test run, bound to the loopback interface only."""
    import ray  # part of the dev extra: a missing Ray fails these tests rather than skipping them

    ray.init(num_cpus=2, _node_ip_address="127.0.0.1", include_dashboard=False)
    yield ray
    ray.shutdown()

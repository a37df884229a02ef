import sys
from pathlib import Path

import pytest
import torch

sys.path.insert(0, str(Path(__file__).parent))

from fixtures import write_tiny_cifar10, write_tiny_imagenet  # noqa: E402

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture(autouse=True)
def _fixed_threads():
    torch.set_num_threads(2)


@pytest.fixture
def tiny_cifar10(tmp_path):
    return write_tiny_cifar10(tmp_path / "cifar10")


@pytest.fixture
def tiny_imagenet(tmp_path):
    return write_tiny_imagenet(tmp_path / "imagenet")

import os
import subprocess
import sys
import tarfile

import numpy as np
import pytest
from PIL import Image

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SHARED_ARCHIVE = os.path.join(ROOT, "..", "shared", "data", "cifar10-jpg.tar.gz")


@pytest.fixture(scope="session")
def cifar10_dir(tmp_path_factory):
    """The real CIFAR-10 image folders: $CIFAR10_DIR (set by .ci/run), else unpacked from shared/."""
    if os.environ.get("CIFAR10_DIR"):
        return os.environ["CIFAR10_DIR"]
    target = tmp_path_factory.mktemp("real")
    with tarfile.open(SHARED_ARCHIVE) as archive:
        archive.extractall(target, filter="data")
    return str(target / "cifar10")


def make_image_folder(root, per_class_train=4, per_class_test=2, classes=("cat", "airplane", "dog"), seed=0):
    """A tiny image-folder tree of random 32x32 PNGs; returns its path."""
    rng = np.random.default_rng(seed)
    for split, count in (("train", per_class_train), ("test", per_class_test)):
        for name in classes:
            os.makedirs(os.path.join(root, split, name), exist_ok=True)
            for i in range(count):
                pixels = rng.integers(0, 256, (32, 32, 3), dtype=np.uint8)
                Image.fromarray(pixels).save(os.path.join(root, split, name, f"{i:04d}.png"))
    return str(root)


@pytest.fixture
def tiny_folder(tmp_path):
    return make_image_folder(tmp_path / "tiny")


def run_script(*args, env=None, timeout=600):
    """Run a project script as a user would, without a terminal."""
    return subprocess.run([sys.executable, *args], cwd=ROOT, capture_output=True, text=True,
                          timeout=timeout, env={**os.environ, **(env or {})}, stdin=subprocess.DEVNULL)

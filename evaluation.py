"""Evaluation, below both train.py and val.py: top-1 accuracy on a test or validation set,
under the same autocast as training."""

import torch
import torch.distributed as dist

EVAL_BATCH_SIZE = 1000


def autocast(device, amp):
    """bf16 autocast on the CPU, fp16 (with the GradScaler) on CUDA, when AMP is on."""
    return torch.autocast(device.type, torch.float16 if device.type == "cuda" else torch.bfloat16, enabled=amp)


@torch.no_grad()
def test_accuracy(network, test_set, make_autocast, process=None):
    """Top-1 accuracy in percent on ``test_set`` (data.TestSet); with ``process`` of several,
    each evaluates its share and every image is counted once. train.py and val.py both use it."""
    rank, world_size = (process.rank, process.world_size) if process else (0, 1)
    network.eval()
    correct = torch.zeros((), device=test_set.device, dtype=torch.long)
    for images, labels in test_set.batches(EVAL_BATCH_SIZE, rank, world_size):
        with make_autocast():
            correct += (network(images).argmax(1) == labels).sum()
    if world_size > 1:
        dist.all_reduce(correct)
    return 100.0 * correct.item() / len(test_set)

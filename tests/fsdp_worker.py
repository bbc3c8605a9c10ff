"""Run by tests/test_fsdp.py under torchrun (2 gloo processes on the CPU): LARS on a model
sharded with FSDP2 (``fully_shard``) against LARS on the same model unsharded, per code path and
option. Rank 0 writes {case: result} as JSON to the path given as the first argument."""

import json
import sys

import torch
import torch.distributed as dist
from torch.distributed.checkpoint.state_dict import (get_model_state_dict, get_optimizer_state_dict,
                                                     set_model_state_dict, set_optimizer_state_dict)
from torch.distributed.fsdp import fully_shard

from diagnostics import FIELDS, LayerStats
from lars import LARS

STEPS = 3
# name: (LARS options, compiled step); every case has both even (6 rows) and uneven (3 rows over 2
# processes) shards, weight decay unless it says otherwise, and tc large enough that the trust
# ratios differ from tensor to tensor and clip in the trust_clip case.
OPTIONS = dict(lr=0.5, momentum=0.9, weight_decay=5e-3, trust_coef=0.02)
CASES = {
    "default": ({}, False),
    "foreach": ({"foreach": True}, False),
    "per_tensor": ({"foreach": False}, False),
    "nesterov": ({"nesterov": True}, False),
    "nesterov_per_tensor": ({"nesterov": True, "foreach": False}, False),
    "trust_clip": ({"trust_clip": True, "lr": 0.01}, False),
    "trust_clip_per_tensor": ({"trust_clip": True, "lr": 0.01, "foreach": False}, False),
    "eps": ({"eps": 0.5}, False),
    "no_weight_decay": ({"weight_decay": 0.0}, False),
    "no_momentum": ({"momentum": 0.0}, False),
    "no_momentum_per_tensor": ({"momentum": 0.0, "foreach": False}, False),
    "unadapted_biases": ({"unadapted_biases": True}, False),
    "unadapted_biases_per_tensor": ({"unadapted_biases": True, "foreach": False}, False),
    "compiled": ({}, True),
}


def make_model():
    torch.manual_seed(0)
    return torch.nn.Sequential(torch.nn.Linear(8, 6), torch.nn.ReLU(), torch.nn.Linear(6, 3))


def make_optimizer(model, options):
    options = {**OPTIONS, **options}
    named = list(model.named_parameters())
    if options.pop("unadapted_biases", False):  # the exclusion: biases neither decayed nor adapted
        params = [{"params": [(n, p) for n, p in named if p.ndim > 1]},
                  {"params": [(n, p) for n, p in named if p.ndim == 1], "adapt": False, "weight_decay": 0.0}]
    else:
        params = named
    return LARS(params, **options)


def sharded(model):
    for layer in (model[0], model[2]):
        fully_shard(layer)
    return fully_shard(model)


def batch(step, rank=None):
    """Step ``step``'s batch of 8; with ``rank``, that process's half."""
    generator = torch.Generator().manual_seed(step)
    x, y = torch.randn(8, 8, generator=generator), torch.randint(0, 3, (8,), generator=generator)
    return (x, y) if rank is None else (x[4 * rank:4 * rank + 4], y[4 * rank:4 * rank + 4])


def train(model, optimizer, steps, rank=None, compiled=False):
    step = torch.compile(optimizer.step) if compiled else optimizer.step
    for i in steps:
        x, y = batch(i, rank)
        torch.nn.functional.cross_entropy(model(x), y).backward()  # FSDP2 averages over processes
        step()
        optimizer.zero_grad()


def full(tensor):
    return (tensor.full_tensor() if hasattr(tensor, "full_tensor") else tensor).detach()


def max_difference(model, reference):
    return max((full(p) - full(q)).abs().max().item() for p, q in zip(model.parameters(), reference.parameters()))


def case_result(options, compiled, rank):
    reference = make_model()
    reference_optimizer = make_optimizer(reference, options)
    train(reference, reference_optimizer, range(STEPS))
    model = sharded(make_model())
    optimizer = make_optimizer(model, options)
    before = {p: full(p).clone() for p in model.parameters()}
    train(model, optimizer, range(STEPS), rank, compiled)
    moved = min((full(p) - before[p]).abs().max().item() for p in model.parameters())
    return {"max_difference": max_difference(model, reference), "smallest_move": moved,
            "uneven": [tuple(p.to_local().shape) for p in model.parameters()]}


def trust_ratio_result(rank):
    """trust_ratios() of the sharded model against the unsharded one, after one backward."""
    reference, model = make_model(), sharded(make_model())
    results = []
    for net, half in ((reference, None), (model, rank)):
        x, y = batch(0, half)
        torch.nn.functional.cross_entropy(net(x), y).backward()
        ratios = make_optimizer(net, {}).trust_ratios()
        results.append([ratios[name] for name, _ in net.named_parameters()])
    return {"max_difference": max(abs(a.item() - b.item()) for a, b in zip(*results)),
            "plain_tensors": all(type(r) is torch.Tensor for r in results[1])}


def layer_stats_result(rank):
    """diagnostics.LayerStats around one step of the sharded model against the unsharded one."""
    records = []
    for model, half in ((make_model(), None), (sharded(make_model()), rank)):
        optimizer = make_optimizer(model, {})
        stats = LayerStats(model, optimizer, every=1)
        x, y = batch(0, half)
        torch.nn.functional.cross_entropy(model(x), y).backward()
        before = stats.before_step()
        optimizer.step()
        stats.after_step(0, before)
        stats.flush()
        records.append(stats.records)
    values = [[x for field in FIELDS for x in record[field][0]] for record in records]
    return {"max_difference": max(abs(a - b) for a, b in zip(*values)), "count": len(values[1]),
            "names": records[1]["names"]}


def resume_result(rank):
    """Two steps, the state dicts taken as PyTorch documents for sharded optimizers and set into a
    new sharded model and optimizer, one more step: against three uninterrupted sharded steps."""
    uninterrupted = sharded(make_model())
    train(uninterrupted, make_optimizer(uninterrupted, {}), range(STEPS), rank)
    first = sharded(make_model())
    first_optimizer = make_optimizer(first, {})
    train(first, first_optimizer, range(STEPS - 1), rank)
    model_state = get_model_state_dict(first)
    optimizer_state = get_optimizer_state_dict(first, first_optimizer)
    buffers = [v["momentum_buffer"] for v in optimizer_state["state"].values()]
    resumed = sharded(make_model())
    resumed_optimizer = make_optimizer(resumed, {})
    set_model_state_dict(resumed, model_state)
    set_optimizer_state_dict(resumed, resumed_optimizer, optimizer_state)
    train(resumed, resumed_optimizer, range(STEPS - 1, STEPS), rank)
    return {"max_difference": max_difference(resumed, uninterrupted),
            "sharded_buffers": all(hasattr(b, "placements") for b in buffers) and len(buffers) == 4}


def main(path):
    dist.init_process_group("gloo")
    rank = dist.get_rank()
    cases = {name: (case_result, options, compiled, rank) for name, (options, compiled) in CASES.items()}
    cases.update(trust_ratios=(trust_ratio_result, rank), layer_stats=(layer_stats_result, rank),
                 resume=(resume_result, rank))
    results = {}
    for name, (function, *args) in cases.items():
        try:
            results[name] = function(*args)
        except Exception as e:  # the same on every process: each case fails on its own
            results[name] = {"error": f"{type(e).__name__}: {e}"}
    if rank == 0:
        with open(path, "w") as f:
            json.dump(results, f)
    dist.barrier()  # no collective left in flight when the process group goes
    dist.destroy_process_group()


if __name__ == "__main__":
    main(sys.argv[1])

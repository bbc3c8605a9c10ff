"""Per-tensor statistics of a training run, the LARS paper's evidence: ||w||, ||g||, the LARS
trust ratio and the relative update ||dw|| / ||w|| of every parameter tensor.

The paper's argument starts from the observation that ||w|| / ||g|| differs by orders of
magnitude between layers, so that one global LR is too large for some and too small for
others. LayerStats records these values at the first step of every epoch and every
LAYER_STATS_EVERY-th step after it, for SGD and LARS alike: ||g|| is the gradient of the whole
optimizer step (all micro-batches, unscaled), the trust ratio LARS's own (``LARS.trust_ratios``,
none for SGD or tensors LARS does not adapt), dw the change the step made. The values stay on
the device until the end of the epoch, when they are read in one transfer: no host
synchronisation per step.
"""

import math

import torch

RESULTS_RECORDS = 16  # records per run carried into a sweep's results.json (the checkpoint keeps all)
RESULTS_DIGITS = 4  # significant digits of the values in results.json
FIELDS = ("w_norm", "g_norm", "trust_ratio", "update_ratio")


class LayerStats:
    """Gathers the statistics of ``model``'s parameters around ``optimizer.step()``; LARS's trust
    ratios are read by the model's parameter names, so build it from ``model.named_parameters()``."""

    def __init__(self, model, optimizer, every):
        named = list(model.named_parameters())
        self.names = [name for name, _ in named]
        self.params = [p for _, p in named]
        self.optimizer = optimizer
        self.every = every
        self.pending = []  # (global step, tensor [4, tensors]) of this epoch, still on the device
        self.records = empty_records(self.names, [p.ndim for p in self.params])

    def wants(self, step_in_epoch):
        return self.every > 0 and step_in_epoch % self.every == 0

    @torch.no_grad()
    def before_step(self):
        """Norms and trust ratios of the weights and (unscaled) gradients the step will use, and
        a copy of the weights to measure the step by."""
        zero = torch.zeros((), device=self.params[0].device)
        w_norm = torch.stack([_norm(p) for p in self.params])
        g_norm = torch.stack([_norm(p.grad) if p.grad is not None else zero for p in self.params])
        ratios = self.optimizer.trust_ratios() if hasattr(self.optimizer, "trust_ratios") else {}
        nan = torch.full((), math.nan, device=zero.device)
        trust = torch.stack([ratios[name].float() if name in ratios else nan for name in self.names])
        return w_norm, g_norm, trust, [p.detach().clone() for p in self.params]

    @torch.no_grad()
    def after_step(self, global_step, before):
        w_norm, g_norm, trust, copies = before
        moved = torch.stack([_norm(p.detach() - old) for p, old in zip(self.params, copies)])
        self.pending.append((global_step, torch.stack([w_norm, g_norm, trust, moved / w_norm])))

    def flush(self):
        """Move this epoch's values to the host (one transfer) and append them to the records."""
        if not self.pending:
            return
        steps = [step for step, _ in self.pending]
        values = torch.stack([v for _, v in self.pending]).cpu().tolist()
        self.pending = []
        for step, rows in zip(steps, values):
            self.records["steps"].append(step)
            for field, row in zip(FIELDS, rows):
                self.records[field].append([x if math.isfinite(x) else None for x in row])

    def discard_pending(self):
        """Forget the values of an epoch that will not be saved (the run diverged in it)."""
        self.pending = []


def _norm(t):
    """The whole tensor's norm; of a sharded one (a DTensor, FSDP2's parameters), the full tensor's."""
    norm = torch.linalg.vector_norm(t, dtype=torch.float32)
    return norm.full_tensor() if hasattr(norm, "full_tensor") else norm


def empty_records(names, ndims):
    return {"names": list(names), "ndims": list(ndims), "steps": [], **{field: [] for field in FIELDS}}


def thinned(records, count=RESULTS_RECORDS, digits=RESULTS_DIGITS):
    """At most ``count`` records, evenly spaced and including the first and the last, with their
    values rounded: what a sweep's results.json keeps of a run."""
    n = len(records["steps"])
    keep = sorted({round(i * (n - 1) / (count - 1)) for i in range(count)}) if n > count else list(range(n))
    out = {"names": records["names"], "ndims": records["ndims"], "steps": [records["steps"][i] for i in keep]}
    for field in FIELDS:
        out[field] = [[_round(x, digits) for x in records[field][i]] for i in keep]
    return out


def _round(x, digits):
    return x if x is None or x == 0 else round(x, digits - 1 - math.floor(math.log10(abs(x))))


# --- display -------------------------------------------------------------------------------

def format_tables(records, steps_per_epoch):
    """One table per recorded epoch (its first recorded step): layer | ||w|| | ||g|| |
    ||w||/||g|| | trust ratio | relative update."""
    if not records or not records["steps"]:
        return "no layer statistics recorded (LAYER_STATS_EVERY = 0, or a checkpoint written before they existed)"
    width = max(map(len, records["names"]))
    out, seen = [], set()
    for i, step in enumerate(records["steps"]):
        epoch = step // steps_per_epoch + 1 if steps_per_epoch else None
        if epoch in seen:
            continue
        seen.add(epoch)
        out += [f"epoch {epoch}, step {step}:",
                f"{'layer':<{width}} | {'||w||':>9} | {'||g||':>9} | {'||w||/||g||':>11} | {'trust ratio':>11} | "
                f"{'rel. update':>11}"]
        for j, name in enumerate(records["names"]):
            w, g, t, u = (records[field][i][j] for field in FIELDS)
            out.append(f"{name:<{width}} | {_fmt(w):>9} | {_fmt(g):>9} | {_fmt(w / g if w and g else None):>11} | "
                       f"{_fmt(t):>11} | {_fmt(u):>11}")
        out.append("")
    return "\n".join(out)


def _fmt(x):
    return "-" if x is None else f"{x:.3g}"


def plot_layers(records, path, title):
    """||w|| / ||g|| and the relative update of every weight tensor (convolutions and linear
    layers; biases and norm weights left out) against the step, log scale, coloured by depth,
    the first and the last layer named in the legend."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from utils import write_atomically

    layers = [j for j, ndim in enumerate(records["ndims"]) if ndim > 1]
    steps = records["steps"]
    fig, axes = plt.subplots(1, 2, figsize=(13, 4.5), sharex=True, constrained_layout=True)
    colours = plt.cm.viridis([k / max(1, len(layers) - 1) for k in range(len(layers))])
    for k, (j, colour) in enumerate(zip(layers, colours)):
        label = f"{records['names'][j]} (first)" if k == 0 else f"{records['names'][j]} (last)" if k == len(layers) - 1 else None
        ratio = [_safe_div(records["w_norm"][i][j], records["g_norm"][i][j]) for i in range(len(steps))]
        update = [records["update_ratio"][i][j] for i in range(len(steps))]
        axes[0].plot(steps, [math.nan if r is None else r for r in ratio], ".-", color=colour, lw=1, ms=3, label=label)
        axes[1].plot(steps, [math.nan if u is None else u for u in update], ".-", color=colour, lw=1, ms=3, label=label)
    for ax, ylabel in zip(axes, ("||w|| / ||g||", "relative update ||dw|| / ||w||")):
        ax.set_yscale("log")
        ax.set_xlabel("step")
        ax.set_ylabel(ylabel)
        ax.grid(alpha=0.3, which="both")
    axes[0].set_title(f"{title}: ||w|| / ||g|| per layer")
    axes[1].set_title(f"{title}: relative update per layer")
    if layers:
        mappable = plt.cm.ScalarMappable(cmap="viridis", norm=plt.Normalize(1, len(layers)))
        fig.colorbar(mappable, ax=axes, label="layer depth (1 = first)")
        axes[1].legend(fontsize=8, loc="best")
    write_atomically(path, lambda f: fig.savefig(f, format="png", dpi=100, bbox_inches="tight"))
    plt.close(fig)


def _safe_div(a, b):
    return a / b if a is not None and b else None

"""LARS: Layer-wise Adaptive Rate Scaling (You, Gitman & Ginsburg 2017, arXiv:1708.03888).

Self-contained: imports only torch, so it can be copied into any project.

For every parameter tensor w with gradient g, in a group with learning rate lr, momentum m,
weight decay wd, trust coefficient tc and eps (Algorithm 1 of the paper when eps = 0)::

    local = tc * ||w|| / (||g|| + wd * ||w|| + eps)      # local LR (the trust ratio)
    local = 1                if ||w|| == 0 or ||g|| == 0   # zero-initialised tensors still learn
    s     = lr * local                                      # per-tensor step size
    s     = min(local, lr)   if trust_clip                  # LARC "clip" mode (apex)
    s     = lr               if not adapt                   # adaptation off for this group
    v     = m * v + s * (g + wd * w)                        # v starts at 0
    w     = w - v                                           # or, if nesterov:
    w     = w - (s * (g + wd * w) + m * v)

The global LR sits inside the momentum, as in the paper. With ``adapt=False`` and a constant
LR this is exactly ``torch.optim.SGD(lr, momentum, weight_decay, nesterov)``: SGD keeps
``b = m * b + d`` and steps ``lr * b``, and ``v = lr * b``. When the LR changes the two differ:
here a step already in the velocity keeps the LR it was taken with. In particular an LR of 0
does not stop a group: its parameters keep moving by about ``m / (1 - m)`` times the last
velocity as it decays (``torch.optim.SGD`` stops at once). To freeze parameters, use
``requires_grad_(False)`` or take them out of the optimizer.

Per-group options: ``adapt`` and ``weight_decay`` are independent, so a group of biases and
normalisation weights can have neither (MLPerf-style exclusion) while a group with
``weight_decay=0`` is still adapted unless ``adapt=False``.

Two implementations give the same result. ``foreach=False``: a readable loop, one tensor at a
time. ``foreach=True`` or ``None`` (the default): a multi-tensor one that computes every norm
and step size of a device and dtype at once and updates with ``torch._foreach_*`` kernels; on
the CPU, where reading a value costs no synchronisation, it brings the step sizes to the host
and updates in place with Python scalars instead, which measured fastest there
(benchmarks/optimizer_step.py). On CUDA the same trade is one synchronisation per step: the
step sizes are read after the norms, so that the updates run as a few multi-tensor kernels with
per-tensor Python scalars; kept on the device, a per-tensor step size makes each kernel that
takes it fall back to one launch per tensor (the multi-tensor fast path needs operands of equal
shapes). ``capturable=True`` keeps everything on the device, as ``torch.optim``'s flag of that
name does, for a step captured in a CUDA graph (a step run while a graph is being captured does
so by itself). Under ``torch.compile`` every setting runs the per-tensor loop, which the
compiler fuses into one pass per tensor. Device-side paths read nothing on the host (zero norms
are handled with ``torch.where``), and ``p.grad`` is never modified. Norms of float16 and
bfloat16 tensors are accumulated in float32, whose range they need (a 300 x 300 gradient of
entries 250 has norm 75,000 > float16's 65,504). ``lr`` may be a one-element tensor, as with
``torch.optim.SGD``, so that a compiled step does not recompile when it changes. A step that raises (a sparse gradient) changes nothing. With
``torch.amp.GradScaler``, ``scaler.step(optimizer)`` unscales the gradients before ``step()``
runs, so the trust ratio sees true gradients, and a step with inf/nan gradients is skipped whole.

Sharded parameters (``DTensor``, as ``torch.distributed.fsdp.fully_shard`` (FSDP2) makes them):
every norm is the full tensor's, computed with DTensor operations (one all-reduce for the stacked
norms of a device mesh in the multi-tensor version, one per norm in the per-tensor loop), and each
process then updates its own shard with the same step sizes, so a sharded model steps exactly as
the unsharded one. The momentum buffers are DTensors sharded like their parameters, so the
state dict is what ``torch.distributed.checkpoint.state_dict.get_optimizer_state_dict`` expects.
"""

import torch
from torch.optim import Optimizer

__all__ = ["LARS"]


class LARS(Optimizer):
    """LARS optimizer; see the module docstring for the update rule.

    Args:
        params: iterable of parameters or of dicts defining parameter groups.
        lr: global learning rate (required).
        momentum: momentum factor m (default 0.9).
        weight_decay: weight decay wd, coupled into the gradient (default 0).
        trust_coef: trust coefficient tc, the paper's eta (default 0.001).
        eps: added to the trust ratio's denominator (default 0, the paper's formula).
        nesterov: Nesterov momentum (requires momentum > 0).
        trust_clip: use min(local, lr) as the step size (LARC clipping) instead of lr * local.
        adapt: apply the layer-wise trust ratio; False gives plain SGD for the group.
        foreach: False for the per-tensor loop; True or None for the multi-tensor version
            (the faster one on the CPU and on accelerators).
        capturable: True keeps the multi-tensor step on the device on CUDA (no host
            synchronisation, safe to capture in a CUDA graph); False reads the step sizes once
            per step, which is faster there.
    """

    def __init__(self, params, lr, momentum=0.9, weight_decay=0.0, trust_coef=0.001, eps=0.0,
                 nesterov=False, trust_clip=False, adapt=True, foreach=None, capturable=False):
        defaults = dict(lr=lr, momentum=momentum, weight_decay=weight_decay,
                        trust_coef=trust_coef, eps=eps, nesterov=nesterov,
                        trust_clip=trust_clip, adapt=adapt, foreach=foreach, capturable=capturable)
        super().__init__(params, defaults)

    def add_param_group(self, param_group):
        """Add a group (the constructor's too) after checking its hyperparameters; a group that
        is refused leaves no trace."""
        _check_hyperparameters({**self.defaults, **param_group})
        super().add_param_group(param_group)

    def __setstate__(self, state):
        # A state dict saved by an older lars.py lacks the options added since; each was added
        # with a default that keeps the earlier behaviour.
        super().__setstate__(state)
        for group in self.param_groups:
            for name, value in _BACKWARD_COMPATIBLE_DEFAULTS.items():
                group.setdefault(name, value)

    @torch.no_grad()
    def step(self, closure=None):
        """Perform one optimization step; ``closure`` re-evaluates the model and returns the loss."""
        loss = None
        if closure is not None:
            with torch.enable_grad():
                loss = closure()
        self._refuse_sparse_gradients()  # before anything changes
        for group in self.param_groups:
            params, grads, bufs = self._collect(group)
            if not params:
                continue
            per_tensor = group["foreach"] is False or torch.compiler.is_compiling()
            if per_tensor:
                _single_tensor_lars(params, grads, bufs, **_hyper(group))
            else:
                _multi_tensor_lars(params, grads, bufs, capturable=group["capturable"], **_hyper(group))
        return loss

    @torch.no_grad()
    def trust_ratios(self):
        """{name: local LR (the trust ratio, before the global LR) as a 0-dim tensor} for every
        tensor that LARS adapts and that has a gradient, from the current weights and gradients:
        the values the next ``step()`` uses. Keyed by the parameter's name where the optimizer was
        given names (``LARS(model.named_parameters(), ...)``, kept in each group's
        ``param_names``), else by "group.position" ("0.3": the fourth tensor of the first group).
        For diagnostics; reads nothing on the host."""
        ratios = {}
        for index, group in enumerate(self.param_groups):
            if not group["adapt"]:
                continue
            names = group.get("param_names") or [f"{index}.{position}" for position in range(len(group["params"]))]
            for name, p in zip(names, group["params"]):
                if p.grad is not None:
                    ratios[name] = _trust_ratio(_full_norm(p), _full_norm(p.grad), weight_decay=group["weight_decay"],
                                                trust_coef=group["trust_coef"], eps=group["eps"])
        return ratios

    def _refuse_sparse_gradients(self):
        for group in self.param_groups:
            if any(p.grad is not None and p.grad.is_sparse for p in group["params"]):
                raise RuntimeError("LARS does not support sparse gradients")

    def _collect(self, group):
        """Parameters with gradients, their gradients and momentum buffers (created as zeros)."""
        params, grads, bufs = [], [], []
        for p in group["params"]:
            if p.grad is None:
                continue
            params.append(p)
            grads.append(p.grad)
            if group["momentum"] != 0.0:
                state = self.state[p]
                if "momentum_buffer" not in state:
                    state["momentum_buffer"] = torch.zeros_like(p, memory_format=torch.preserve_format)
                bufs.append(state["momentum_buffer"])
        return params, grads, bufs


_BACKWARD_COMPATIBLE_DEFAULTS = dict(momentum=0.9, weight_decay=0.0, trust_coef=0.001, eps=0.0, nesterov=False,
                                     trust_clip=False, adapt=True, foreach=None, capturable=False)


def _check_hyperparameters(group):
    lr = group["lr"]
    if isinstance(lr, torch.Tensor) and lr.numel() != 1:
        raise ValueError(f"LARS: lr as a Tensor must have one element, got shape {tuple(lr.shape)}")
    for name in ("lr", "momentum", "weight_decay", "trust_coef", "eps"):
        if not group[name] >= 0.0:
            raise ValueError(f"LARS: invalid {name} {group[name]!r}, must be >= 0")
    if group["nesterov"] and group["momentum"] <= 0.0:
        raise ValueError("LARS: nesterov requires momentum > 0")


def _hyper(group):
    keys = ("lr", "momentum", "weight_decay", "trust_coef", "eps", "nesterov", "trust_clip", "adapt")
    return {k: group[k] for k in keys}


def _trust_ratio(w_norm, g_norm, *, weight_decay, trust_coef, eps):
    """The local LR from (stacked or 0-dim) norms, without host synchronisation."""
    local = trust_coef * w_norm / (g_norm + weight_decay * w_norm + eps)
    return torch.where((w_norm > 0) & (g_norm > 0), local, torch.ones_like(local))


def _step_sizes(w_norm, g_norm, *, lr, weight_decay, trust_coef, eps, trust_clip):
    """Per-tensor step size s from (stacked or 0-dim) norms, without host synchronisation."""
    local = _trust_ratio(w_norm, g_norm, weight_decay=weight_decay, trust_coef=trust_coef, eps=eps)
    return torch.minimum(local, _as_tensor(lr, local)) if trust_clip else local * lr


def _as_tensor(lr, like):
    """The LR (a float or a one-element tensor) as a 0-dim tensor of ``like``'s dtype and device,
    without the copy warning that ``torch.tensor(tensor)`` gives."""
    return torch.as_tensor(lr, dtype=like.dtype, device=like.device).reshape(())


def _norm_dtype(dtype):
    """Norms of half-precision tensors overflow or lose their range: accumulate in float32."""
    return torch.float32 if dtype in (torch.float16, torch.bfloat16) else None


_PLAIN_TYPES = (torch.Tensor, torch.nn.Parameter)


def _is_sharded(t):
    """A DTensor (torch.distributed.tensor), recognised without importing torch.distributed;
    ordinary tensors and parameters answer at the first test."""
    return type(t) not in _PLAIN_TYPES and hasattr(t, "device_mesh") and hasattr(t, "to_local")


def _local(t):
    """A DTensor's shard on this process, a view that in-place updates write through; other
    tensors as they are."""
    return t.to_local() if _is_sharded(t) else t


def _full_norm(t):
    """The L2 norm of the whole tensor as a 0-dim plain tensor, on every process alike."""
    norm = torch.linalg.vector_norm(t, dtype=_norm_dtype(t.dtype))
    return norm.full_tensor() if _is_sharded(norm) else norm


def _single_tensor_lars(params, grads, bufs, *, lr, momentum, weight_decay, trust_coef, eps,
                        nesterov, trust_clip, adapt):
    """The readable version: one tensor at a time, s as a 0-dim tensor."""
    for i, (param, grad) in enumerate(zip(params, grads)):
        w, g = _local(param), _local(grad)  # a sharded tensor: this process's shard, with the full tensor's s
        d = g.add(w, alpha=weight_decay) if weight_decay != 0.0 else g
        if adapt:
            s = _step_sizes(_full_norm(param), _full_norm(grad), lr=lr, weight_decay=weight_decay,
                            trust_coef=trust_coef, eps=eps, trust_clip=trust_clip)
        else:
            s = _as_tensor(lr, w)
        if momentum == 0.0:
            w.addcmul_(d, s, value=-1.0)
            continue
        v = _local(bufs[i])
        v.mul_(momentum).addcmul_(d, s)
        if nesterov:
            w.addcmul_(d, s, value=-1.0).add_(v, alpha=-momentum)
        else:
            w.sub_(v)


def _multi_tensor_lars(params, grads, bufs, *, lr, momentum, weight_decay, trust_coef, eps,
                       nesterov, trust_clip, adapt, capturable=False):
    """All norms and step sizes at once per device, dtype and device mesh, then the updates."""
    for device, ws, gs, vs in _buckets(params, grads, bufs):
        if adapt:
            s = _step_sizes(_norms(ws), _norms(gs), lr=lr, weight_decay=weight_decay,
                            trust_coef=trust_coef, eps=eps, trust_clip=trust_clip)
        if _is_sharded(ws[0]):  # each process updates its shard with the full tensors' step sizes
            ws, gs, vs = [_local(w) for w in ws], [_local(g) for g in gs], [_local(v) for v in vs]
        if not adapt:
            s = _as_tensor(lr, ws[0]).expand(len(ws))
        update = _update_kind(device, capturable)
        if update == "device":
            _update_with_foreach(ws, gs, vs, list(s.unbind()), momentum, weight_decay, nesterov)
            continue
        # A group that is not adapted with a Python LR has its step size on the host already: no read.
        scalars = [lr] * len(ws) if not adapt and not isinstance(lr, torch.Tensor) else s.tolist()
        if update == "host scalars":
            _update_with_host_scalars(ws, gs, vs, scalars, momentum, weight_decay, nesterov)
        else:
            _update_with_scalar_lists(ws, gs, vs, scalars, momentum, weight_decay, nesterov)


def _buckets(params, grads, bufs):
    """(device, params, grads, momentum buffers) of the tensors that share a device, a dtype and,
    for sharded ones, a device mesh: the tensors whose norms can be stacked."""
    if not any(map(_is_sharded, params)):  # ordinary tensors, grouped as torch.optim groups them
        grouped = Optimizer._group_tensors_by_device_and_dtype([params, grads, bufs or [None] * len(params)])
        for (device, _), ((ws, gs, vs), _) in grouped.items():
            yield device, ws, gs, vs
        return
    buckets = {}
    for i, w in enumerate(params):
        buckets.setdefault((w.device, w.dtype, w.device_mesh if _is_sharded(w) else None), []).append(i)
    for (device, _, _), index in buckets.items():
        yield (device, [params[i] for i in index], [grads[i] for i in index],
               [bufs[i] for i in index] if bufs else [None] * len(index))


def _update_kind(device, capturable):
    """How the multi-tensor path applies its step sizes on ``device``.

    "host scalars" on the CPU, where reading them costs no synchronisation and in-place updates
    with Python scalars beat foreach kernels that broadcast 0-dim tensors and allocate
    g + wd * w (benchmarks/optimizer_step.py). "scalar lists" on CUDA: one synchronisation buys
    foreach kernels on their multi-tensor fast path instead of a launch per tensor. "device"
    otherwise: when asked to be capturable, while a CUDA graph is being captured (no read is
    allowed there), and on other accelerators, whose trade-offs nobody here has measured."""
    if device.type == "cpu":
        return "host scalars"
    if device.type == "cuda" and not capturable and not torch.cuda.is_current_stream_capturing():
        return "scalar lists"
    return "device"


def _norms(tensors):
    """Stacked L2 norms of the whole tensors, as a plain tensor. Sharded tensors: one all-reduce
    for all of them. On the CPU a BLAS dot is about twice as fast as the norm kernel."""
    if _is_sharded(tensors[0]):
        return torch.stack(torch._foreach_norm(tensors, 2, dtype=_norm_dtype(tensors[0].dtype))).full_tensor()
    if tensors[0].device.type == "cpu" and tensors[0].dtype in (torch.float32, torch.float64):
        flats = [_flat_view(t) for t in tensors]
        return torch.stack([torch.dot(f, f) for f in flats]).sqrt()
    return torch.stack(torch._foreach_norm(tensors, 2, dtype=_norm_dtype(tensors[0].dtype)))


def _flat_view(t):
    """A 1-D view of a dense tensor in memory order (channels-last weights included)."""
    if t.is_contiguous():
        return t.view(-1)
    by_stride = sorted(range(t.dim()), key=lambda dim: -t.stride(dim))
    return t.permute(by_stride).reshape(-1)  # a view unless t is not dense


def _update_with_host_scalars(ws, gs, vs, s, momentum, weight_decay, nesterov):
    # The same update as _single_tensor_lars, rearranged so that no temporary is allocated.
    for i, (w, g, s_i) in enumerate(zip(ws, gs, s)):
        if momentum == 0.0:
            w.mul_(1.0 - s_i * weight_decay).add_(g, alpha=-s_i)
            continue
        v = vs[i]
        v.mul_(momentum).add_(g, alpha=s_i).add_(w, alpha=s_i * weight_decay)
        if nesterov:
            w.mul_(1.0 - s_i * weight_decay).add_(g, alpha=-s_i).add_(v, alpha=-momentum)
        else:
            w.sub_(v)


def _update_with_scalar_lists(ws, gs, vs, s, momentum, weight_decay, nesterov):
    # Every kernel takes lists of equal shapes or Python scalars: the multi-tensor fast path.
    if weight_decay != 0.0:
        ds = torch._foreach_add(gs, ws, alpha=weight_decay)
        torch._foreach_mul_(ds, s)  # s * (g + wd * w)
    else:
        ds = torch._foreach_mul(gs, s)  # out of place: p.grad stays as it was
    if momentum == 0.0:
        torch._foreach_sub_(ws, ds)
        return
    torch._foreach_mul_(vs, momentum)
    torch._foreach_add_(vs, ds)
    if nesterov:
        torch._foreach_sub_(ws, ds)
        torch._foreach_add_(ws, vs, alpha=-momentum)
    else:
        torch._foreach_sub_(ws, vs)


def _update_with_foreach(ws, gs, vs, s, momentum, weight_decay, nesterov):
    ds = torch._foreach_add(gs, ws, alpha=weight_decay) if weight_decay != 0.0 else gs
    if momentum == 0.0:
        torch._foreach_addcmul_(ws, ds, s, value=-1.0)
        return
    torch._foreach_mul_(vs, momentum)
    torch._foreach_addcmul_(vs, ds, s)
    if nesterov:
        torch._foreach_addcmul_(ws, ds, s, value=-1.0)
        torch._foreach_add_(ws, vs, alpha=-momentum)
    else:
        torch._foreach_sub_(ws, vs)

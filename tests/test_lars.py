"""LARS against a float64 transcription of the paper's Algorithm 1, and against torch.optim.SGD."""

import math

import pytest
import torch

import lars
from lars import LARS
from tests.conftest import LARS_PATHS, use_lars_path

SHAPES = [(6, 5), (5,), (3, 3, 2, 2), (7,)]


def reference_lars(weights, grads_per_step, lrs, momentum, weight_decay, trust_coef, eps=0.0,
                   nesterov=False, trust_clip=False, adapt=True):
    """Algorithm 1 in plain float64 Python lists, one tensor at a time."""
    ws = [w.double().flatten().tolist() for w in weights]
    vs = [[0.0] * len(w) for w in ws]
    for grads, lr in zip(grads_per_step, lrs):
        for w, v, g in zip(ws, vs, (g.double().flatten().tolist() for g in grads)):
            w_norm = math.sqrt(sum(x * x for x in w))
            g_norm = math.sqrt(sum(x * x for x in g))
            local = trust_coef * w_norm / (g_norm + weight_decay * w_norm + eps) if w_norm > 0 and g_norm > 0 else 1.0
            s = (min(local, lr) if trust_clip else lr * local) if adapt else lr
            for j in range(len(w)):
                d = g[j] + weight_decay * w[j]
                v[j] = momentum * v[j] + s * d
                w[j] -= s * d + momentum * v[j] if nesterov else v[j]
    return [torch.tensor(w, dtype=torch.float64).view(ref.shape) for w, ref in zip(ws, weights)]


def random_problem(steps=5, zero_first=False, seed=0):
    g = torch.Generator().manual_seed(seed)
    weights = [torch.randn(s, generator=g, dtype=torch.float64) for s in SHAPES]
    if zero_first:
        weights[1].zero_()  # a zero-initialised bias
    grads = [[torch.randn(s, generator=g, dtype=torch.float64) for s in SHAPES] for _ in range(steps)]
    grads[2][3].zero_()  # a step where one tensor gets no gradient signal
    lrs = [0.5, 1.0, 2.0, 1.5, 0.25][:steps]  # a changing LR, as under warm-up and decay
    return weights, grads, lrs


def run_lars(weights, grads_per_step, lrs, **kwargs):
    params = [torch.nn.Parameter(w.clone()) for w in weights]
    opt = LARS(params, lr=lrs[0], **kwargs)
    for grads, lr in zip(grads_per_step, lrs):
        for p, grad in zip(params, grads):
            p.grad = grad.clone()
        opt.param_groups[0]["lr"] = lr
        opt.step()
    return [p.detach() for p in params], opt


MULTI_TENSOR_PATHS = LARS_PATHS[1:]


@pytest.fixture(params=LARS_PATHS)
def foreach(request, monkeypatch):
    """Each implementation."""
    return use_lars_path(request.param, monkeypatch)


@pytest.fixture(params=MULTI_TENSOR_PATHS)
def multi_tensor(request, monkeypatch):
    """Each multi-tensor implementation, to compare with the single-tensor one."""
    return use_lars_path(request.param, monkeypatch)


OPTIONS = [
    {},
    {"nesterov": True},
    {"trust_clip": True},
    {"eps": 1e-3},
    {"adapt": False},
    {"momentum": 0.0},
    {"weight_decay": 0.0},
]


@pytest.mark.parametrize("options", OPTIONS, ids=lambda o: ",".join(f"{k}={v}" for k, v in o.items()) or "paper")
def test_matches_float64_algorithm_1(foreach, options):
    weights, grads, lrs = random_problem(zero_first=True)
    hyper = {"momentum": 0.9, "weight_decay": 5e-3, "trust_coef": 0.1, **options}
    expected = reference_lars(weights, grads, lrs, **hyper)
    got, _ = run_lars(weights, grads, lrs, foreach=foreach, **hyper)
    for e, g in zip(expected, got):
        torch.testing.assert_close(g, e, rtol=1e-12, atol=1e-12)


def test_float32_tracks_float64_reference():
    weights, grads, lrs = random_problem()
    expected = reference_lars(weights, grads, lrs, 0.9, 5e-3, 0.1)
    got, _ = run_lars([w.float() for w in weights], [[g.float() for g in gs] for gs in grads], lrs,
                      momentum=0.9, weight_decay=5e-3, trust_coef=0.1)
    for e, g in zip(expected, got):
        torch.testing.assert_close(g.double(), e, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("options", OPTIONS, ids=str)
def test_single_tensor_equals_multi_tensor_in_float32(multi_tensor, options):
    weights, grads, lrs = random_problem(zero_first=True)
    weights = [w.float() for w in weights]
    grads = [[g.float() for g in gs] for gs in grads]
    hyper = {"weight_decay": 5e-3, "trust_coef": 0.1, **options}
    single, _ = run_lars(weights, grads, lrs, foreach=False, **hyper)
    other, _ = run_lars(weights, grads, lrs, foreach=multi_tensor, **hyper)
    for a, b in zip(single, other):
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-6)  # float32, operations reordered


def test_zero_weights_learn_and_zero_grads_stay_finite(foreach):
    w = torch.nn.Parameter(torch.zeros(4))
    u = torch.nn.Parameter(torch.ones(3))
    opt = LARS([w, u], lr=0.1, momentum=0.9, weight_decay=5e-3, trust_coef=0.001, foreach=foreach)
    w.grad = torch.ones(4)
    u.grad = torch.zeros(3)
    opt.step()
    # ||w|| = 0: local LR 1, a plain SGD step; ||g|| = 0: local LR 1, only weight decay acts.
    torch.testing.assert_close(w.detach(), torch.full((4,), -0.1))
    torch.testing.assert_close(u.detach(), torch.full((3,), 1 - 0.1 * 5e-3))


def test_momentum_accumulates_across_steps(foreach):
    # The original scaled its buffer in place each step, so v never carried over.
    w = torch.nn.Parameter(torch.zeros(2))
    opt = LARS([w], lr=1.0, momentum=0.5, trust_coef=0.2, foreach=foreach)
    w.grad = torch.ones(2)
    opt.step()  # ||w|| = 0: local 1, v1 = g = 1, w1 = -1
    v1 = opt.state[w]["momentum_buffer"].clone()
    opt.step()  # local = 0.2 * ||w1|| / ||g|| = 0.2, v2 = 0.5 * v1 + 0.2 * g
    torch.testing.assert_close(v1, torch.ones(2))
    torch.testing.assert_close(opt.state[w]["momentum_buffer"], 0.5 * v1 + 0.2)
    torch.testing.assert_close(w.detach(), torch.full((2,), -1.0 - 0.7))


@pytest.mark.parametrize("nesterov", [False, True])
def test_adaptation_off_equals_sgd(foreach, nesterov):
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Linear(8, 16), torch.nn.ReLU(), torch.nn.Linear(16, 3))
    twin = torch.nn.Sequential(torch.nn.Linear(8, 16), torch.nn.ReLU(), torch.nn.Linear(16, 3))
    twin.load_state_dict(model.state_dict())
    lars = LARS(model.parameters(), lr=0.05, momentum=0.9, weight_decay=5e-4, nesterov=nesterov,
                adapt=False, foreach=foreach)
    sgd = torch.optim.SGD(twin.parameters(), lr=0.05, momentum=0.9, weight_decay=5e-4, nesterov=nesterov)
    for step in range(6):
        x, y = torch.randn(32, 8), torch.randint(0, 3, (32,))
        for net, opt in ((model, lars), (twin, sgd)):
            opt.zero_grad()
            torch.nn.functional.cross_entropy(net(x), y).backward()
            opt.step()
    for a, b in zip(model.parameters(), twin.parameters()):
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-6)


def test_state_dict_round_trip_continues_identically(foreach):
    weights, grads, lrs = random_problem()
    full, _ = run_lars(weights, grads, lrs, foreach=foreach, weight_decay=5e-3, trust_coef=0.1)
    first, opt = run_lars(weights, grads[:2], lrs[:2], foreach=foreach, weight_decay=5e-3, trust_coef=0.1)
    params = [torch.nn.Parameter(w.clone()) for w in first]
    resumed = LARS(params, lr=1.0, foreach=foreach)
    resumed.load_state_dict(opt.state_dict())
    assert resumed.param_groups[0]["trust_coef"] == 0.1
    for step_grads, lr in zip(grads[2:], lrs[2:]):
        for p, g in zip(params, step_grads):
            p.grad = g.clone()
        resumed.param_groups[0]["lr"] = lr
        resumed.step()
    for a, b in zip(full, params):
        torch.testing.assert_close(b.detach(), a, rtol=1e-12, atol=1e-12)


def test_gradients_are_not_modified_and_closure_is_called(foreach):
    w = torch.nn.Parameter(torch.randn(5))
    opt = LARS([w], lr=0.1, weight_decay=0.1, foreach=foreach)

    def closure():
        opt.zero_grad()
        loss = (w ** 2).sum()
        loss.backward()
        return loss

    loss = closure()
    grad_before = w.grad.clone()
    opt.step()
    assert torch.equal(w.grad, grad_before)
    assert opt.step(closure) is not None


def test_per_group_exclusion_and_weight_decay():
    weights, grads, lrs = random_problem()
    params = [torch.nn.Parameter(w.clone()) for w in weights]
    opt = LARS([{"params": params[:2]},
                {"params": params[2:], "adapt": False, "weight_decay": 0.0}],
               lr=lrs[0], momentum=0.9, weight_decay=5e-3, trust_coef=0.1)
    for step_grads, lr in zip(grads, lrs):
        for p, g in zip(params, step_grads):
            p.grad = g.clone()
        for group in opt.param_groups:
            group["lr"] = lr
        opt.step()
    adapted = reference_lars(weights[:2], [g[:2] for g in grads], lrs, 0.9, 5e-3, 0.1)
    plain = reference_lars(weights[2:], [g[2:] for g in grads], lrs, 0.9, 0.0, 0.1, adapt=False)
    for e, p in zip(adapted + plain, params):
        torch.testing.assert_close(p.detach(), e, rtol=1e-12, atol=1e-12)


def test_weight_decay_zero_still_adapts():
    # timm and bolts silently turn LARS off when weight decay is 0; here it stays adaptive.
    weights, grads, lrs = random_problem()
    expected = reference_lars(weights, grads, lrs, 0.9, 0.0, 0.1)
    got, _ = run_lars(weights, grads, lrs, weight_decay=0.0, trust_coef=0.1)
    sgd_like = reference_lars(weights, grads, lrs, 0.9, 0.0, 0.1, adapt=False)
    torch.testing.assert_close(got[0], expected[0], rtol=1e-12, atol=1e-12)
    assert not torch.allclose(got[0], sgd_like[0])


@pytest.mark.parametrize("name", ["lr", "momentum", "weight_decay", "trust_coef", "eps"])
def test_negative_arguments_are_rejected_by_name(name):
    kwargs = {"lr": 0.1, name: -1.0}
    with pytest.raises(ValueError, match=name):
        LARS([torch.nn.Parameter(torch.ones(1))], **kwargs)


def test_a_param_group_with_a_negative_value_is_rejected():
    with pytest.raises(ValueError, match="weight_decay"):
        LARS([{"params": [torch.nn.Parameter(torch.ones(1))], "weight_decay": -1e-4}], lr=0.1)


def test_nesterov_requires_momentum():
    with pytest.raises(ValueError, match="nesterov"):
        LARS([torch.nn.Parameter(torch.ones(1))], lr=0.1, momentum=0.0, nesterov=True)


def test_norms_of_channels_last_and_strided_tensors():
    x = torch.randn(8, 4, 3, 3).to(memory_format=torch.channels_last)
    sliced = torch.randn(6, 10)[:, ::2]  # not dense: falls back to a copy
    got = lars._norms([x, sliced, torch.randn(5)])
    expected = torch.stack([torch.linalg.vector_norm(t) for t in (x, sliced)])
    torch.testing.assert_close(got[:2], expected)


def test_grad_scaler_steps_equal_unscaled_steps_and_skips_leave_state_untouched(foreach):
    torch.manual_seed(0)
    make = lambda: torch.nn.Sequential(torch.nn.Linear(6, 8), torch.nn.ReLU(), torch.nn.Linear(8, 2))
    plain, scaled = make(), make()
    scaled.load_state_dict(plain.state_dict())
    opt_plain = LARS(plain.parameters(), lr=0.1, weight_decay=5e-3, trust_coef=0.1, foreach=foreach)
    opt_scaled = LARS(scaled.parameters(), lr=0.1, weight_decay=5e-3, trust_coef=0.1, foreach=foreach)
    scaler = torch.amp.GradScaler("cpu", init_scale=2.0 ** 20)
    for _ in range(3):
        x = torch.randn(16, 6)
        for net, opt in ((plain, opt_plain), (scaled, opt_scaled)):
            opt.zero_grad()
            loss = net(x).square().mean()
            if opt is opt_scaled:
                scaler.scale(loss).backward()
                scaler.step(opt)
                scaler.update()
            else:
                loss.backward()
                opt.step()
    for a, b in zip(plain.parameters(), scaled.parameters()):
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-6)

    before = [p.detach().clone() for p in scaled.parameters()]
    buffers = [opt_scaled.state[p]["momentum_buffer"].clone() for p in scaled.parameters()]
    opt_scaled.zero_grad()
    (scaled(torch.randn(16, 6)).sum() * float("inf")).backward()
    scaler.step(opt_scaled)  # inf gradients: skipped
    scaler.update()
    for p, b, v in zip(scaled.parameters(), before, buffers):
        assert torch.equal(p.detach(), b) and torch.equal(opt_scaled.state[p]["momentum_buffer"], v)

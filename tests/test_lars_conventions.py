"""LARS behaves like a torch.optim optimizer wherever users take it: the generic properties that
PyTorch's own optimizer tests (torch/testing/_internal/common_optimizers.py, test/test_optim.py)
ask of every optimizer, for each of LARS's code paths."""

import copy
import pickle
import warnings

import pytest
import torch

from lars import LARS
from tests.conftest import LARS_PATHS, use_lars_path

@pytest.fixture(params=LARS_PATHS)
def foreach(request, monkeypatch):
    """The ``foreach`` argument of each path (tests/conftest.py)."""
    return use_lars_path(request.param, monkeypatch)


def make_params(seed=0, dtype=torch.float32):
    g = torch.Generator().manual_seed(seed)
    shapes = [(8, 5), (5,), (4, 3, 3, 3), (4,)]
    return [torch.nn.Parameter(torch.randn(s, generator=g).to(dtype)) for s in shapes]


def set_grads(params, step, dtype=None):
    g = torch.Generator().manual_seed(100 + step)
    for p in params:
        p.grad = torch.randn(p.shape, generator=g).to(dtype or p.dtype)


def train(opt, params, steps=4, step_fn=None):
    for i in range(steps):
        set_grads(params, i)
        (step_fn or opt.step)()
    return [p.detach().clone() for p in params]


HYPER = dict(momentum=0.9, weight_decay=1e-3, trust_coef=0.05)


def test_compiled_step_matches_eager(foreach):
    eager_params, compiled_params = make_params(), make_params()
    eager = LARS(eager_params, lr=torch.tensor(0.5), foreach=foreach, **HYPER)
    compiled = LARS(compiled_params, lr=torch.tensor(0.5), foreach=foreach, **HYPER)
    torch._dynamo.reset()
    step = torch.compile(compiled.step, backend="aot_eager")
    for p, q in zip(train(eager, eager_params), train(compiled, compiled_params, step_fn=step)):
        torch.testing.assert_close(q, p)


def test_compiled_step_with_the_default_backend_matches_eager():
    eager_params, compiled_params = make_params(), make_params()
    eager = LARS(eager_params, lr=0.5, **HYPER)
    compiled = LARS(compiled_params, lr=0.5, **HYPER)
    torch._dynamo.reset()
    step = torch.compile(compiled.step)  # inductor, foreach=None: the crash this test keeps away
    for p, q in zip(train(eager, eager_params), train(compiled, compiled_params, step_fn=step)):
        torch.testing.assert_close(q, p, rtol=1e-5, atol=1e-6)


def test_a_state_dict_without_newer_keys_loads_and_steps_as_with_their_defaults(foreach):
    params = make_params()
    opt = LARS(params, lr=0.5, foreach=foreach, **HYPER)
    train(opt, params, steps=2)
    saved = copy.deepcopy(opt.state_dict())
    for group in saved["param_groups"]:
        for name in ("foreach", "adapt", "trust_clip", "eps", "nesterov", "capturable"):
            del group[name]  # written by an older lars.py
    old_params = [torch.nn.Parameter(p.detach().clone()) for p in params]
    old = LARS(old_params, lr=0.5, foreach=foreach, **HYPER)
    old.load_state_dict(saved)
    assert old.param_groups[0]["adapt"] is True and old.param_groups[0]["eps"] == 0.0
    assert old.param_groups[0]["foreach"] is None and old.param_groups[0]["capturable"] is False
    for p, q in zip(train(opt, params), train(old, old_params)):
        torch.testing.assert_close(q, p)  # the paths agree to rounding; foreach=None may differ from ours


@pytest.mark.parametrize("bad", [{"lr": -1.0}, {"momentum": -0.5}, {"lr": torch.tensor([1e-3, 1e-3])},
                                 {"nesterov": True, "momentum": 0.0}])
def test_a_rejected_param_group_leaves_no_trace(foreach, bad):
    first, second = make_params()[:2]
    opt = LARS([first], lr=0.1, foreach=foreach)
    with pytest.raises(ValueError, match="LARS"):
        opt.add_param_group({"params": [second], **bad})
    assert len(opt.param_groups) == 1 and all(p is not second for p in opt.param_groups[0]["params"])
    opt.add_param_group({"params": [second], "lr": 0.2})  # a corrected retry is accepted
    assert opt.param_groups[1]["lr"] == 0.2
    first.grad, second.grad = torch.ones_like(first), torch.ones_like(second)
    before = [first.detach().clone(), second.detach().clone()]
    opt.step()  # and both groups step
    assert not torch.equal(first, before[0]) and not torch.equal(second, before[1])


def test_a_failed_step_changes_nothing(foreach):
    dense, other = make_params()[:2]
    embedding = torch.nn.Embedding(10, 3, sparse=True)
    opt = LARS([{"params": [dense, other]}, {"params": embedding.parameters()}], lr=0.5, foreach=foreach, **HYPER)
    set_grads([dense, other], 0)
    embedding(torch.tensor([1, 2])).sum().backward()
    before = [t.detach().clone() for t in (dense, other, embedding.weight)]
    with pytest.raises(RuntimeError, match="sparse"):
        opt.step()
    assert all(torch.equal(b, t) for b, t in zip(before, (dense, other, embedding.weight)))
    assert len(opt.state) == 0, "no momentum buffer was created"


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
def test_half_precision_tensors_track_a_float32_run(foreach, dtype):
    # float16: ||g|| >= 75,000 is beyond its largest value, 65,504, so a norm accumulated in
    # float16 would be inf and the step 0. bfloat16 has float32's range, so no norm a float32
    # run can compute overflows it; there the run checks the precision of 90,000-element norms.
    def run(param_dtype):
        w = torch.nn.Parameter(torch.linspace(-1, 1, 300 * 300).view(300, 300).to(param_dtype))
        opt = LARS([w], lr=1.0, momentum=0.9, trust_coef=0.05, foreach=foreach)
        for step in range(3):
            w.grad = torch.full((300, 300), 250.0 * (1 + step), dtype=param_dtype)
            opt.step()
        return w.detach().float()

    start = torch.linspace(-1, 1, 300 * 300).view(300, 300)
    reference, half = run(torch.float32), run(dtype)
    moved = (reference - start).abs().max()
    assert moved > 0.05, "the reference moves"
    assert (half - reference).abs().max() < 0.05 * moved + 2 * torch.finfo(dtype).eps


def test_a_tensor_lr_needs_one_element_and_steps_like_a_float_without_warnings(foreach):
    with pytest.raises(ValueError, match="lr as a Tensor must have one element"):
        LARS(make_params(), lr=torch.tensor([1e-3, 1e-3]))
    float_params, tensor_params = make_params(), make_params()
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        expected = train(LARS(float_params, lr=0.5, foreach=foreach, **HYPER), float_params)
        got = train(LARS(tensor_params, lr=torch.tensor(0.5), foreach=foreach, **HYPER), tensor_params)
        adapt_off = make_params()
        train(LARS(adapt_off, lr=torch.tensor([0.5]), adapt=False, foreach=foreach), adapt_off)
    for p, q in zip(expected, got):
        torch.testing.assert_close(q, p)


# --- properties that held before, kept so that they stay -----------------------------------

def test_deepcopy_and_pickle_give_an_optimizer_that_continues_identically(foreach):
    params = make_params()
    opt = LARS(params, lr=0.5, foreach=foreach, **HYPER)
    train(opt, params, steps=2)
    restored = pickle.loads(pickle.dumps(opt.state_dict()))
    copied = copy.deepcopy(opt.state_dict())
    for saved in (restored, copied):
        twin_params = [torch.nn.Parameter(p.detach().clone()) for p in params]
        twin = LARS(twin_params, lr=0.5, foreach=foreach, **HYPER)
        twin.load_state_dict(saved)
        reference = copy.deepcopy(opt)
        ref_params = [p for group in reference.param_groups for p in group["params"]]
        for p, q in zip(train(reference, ref_params), train(twin, twin_params)):
            torch.testing.assert_close(q, p, rtol=0, atol=0)


def test_loading_a_state_dict_casts_the_momentum_to_the_parameters_dtype(foreach):
    params = make_params()
    opt = LARS(params, lr=0.5, foreach=foreach, **HYPER)
    train(opt, params, steps=1)
    doubles = [torch.nn.Parameter(p.detach().double()) for p in params]
    double_opt = LARS(doubles, lr=0.5, foreach=foreach, **HYPER)
    double_opt.load_state_dict(opt.state_dict())
    assert all(double_opt.state[p]["momentum_buffer"].dtype == torch.float64 for p in doubles)
    train(double_opt, doubles, steps=1)


def steps_with_group_values(params, values, **fixed):
    """LARS stepped once per entry of ``values`` (dicts such as {"lr": 0.5, "momentum": 0.9}),
    each set on its group by hand before the step."""
    opt = LARS(params, **{**HYPER, **values[0], **fixed})
    for i, step_values in enumerate(values):
        opt.param_groups[0].update(step_values)
        set_grads(params, i)
        opt.step()
    return [p.detach().clone() for p in params]


def test_step_hooks_run_and_the_momentum_a_scheduler_cycles_is_the_one_lars_steps_with(foreach):
    params = make_params()
    opt = LARS(params, lr=0.5, foreach=foreach, **HYPER)
    calls = []
    opt.register_step_pre_hook(lambda o, args, kwargs: calls.append("pre"))
    opt.register_step_post_hook(lambda o, args, kwargs: calls.append("post"))
    scheduler = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=1.0, total_steps=10, cycle_momentum=True)
    used = []
    for i in range(3):
        used.append({k: opt.param_groups[0][k] for k in ("lr", "momentum")})
        set_grads(params, i)
        opt.step()
        scheduler.step()
    assert calls == ["pre", "post"] * 3 and len({u["momentum"] for u in used}) == 3
    by_hand = steps_with_group_values(make_params(), used, foreach=foreach)
    for p, q in zip(params, by_hand):
        torch.testing.assert_close(p.detach(), q, rtol=0, atol=0)
    constant = steps_with_group_values(make_params(), [{**u, "momentum": used[0]["momentum"]} for u in used],
                                       foreach=foreach)
    assert not torch.equal(params[0].detach(), constant[0]), "an optimizer that kept its first momentum would differ"


def test_complex_parameters_step_like_their_real_views(foreach):
    g = torch.Generator().manual_seed(0)
    complex_param = torch.nn.Parameter(torch.randn(6, 4, dtype=torch.complex64, generator=g))
    real_param = torch.nn.Parameter(torch.view_as_real(complex_param.detach()).clone())
    complex_opt = LARS([complex_param], lr=0.5, foreach=foreach, **HYPER)
    real_opt = LARS([real_param], lr=0.5, foreach=foreach, **HYPER)
    for _ in range(3):
        grad = torch.randn(6, 4, dtype=torch.complex64, generator=g)
        complex_param.grad, real_param.grad = grad, torch.view_as_real(grad).clone()
        complex_opt.step()
        real_opt.step()
    torch.testing.assert_close(torch.view_as_real(complex_param.detach()), real_param.detach())


def test_swa_anneals_the_lr_lars_steps_with_and_averages_lars_weights(foreach):
    from torch.optim.swa_utils import SWALR, AveragedModel

    model = torch.nn.Linear(4, 2)
    start = [p.detach().clone() for p in model.parameters()]
    opt = LARS(model.parameters(), lr=0.5, foreach=foreach, **HYPER)
    swa_model, swa_scheduler = AveragedModel(model), SWALR(opt, swa_lr=0.05, anneal_epochs=2)
    used, visited = [], []
    for i in range(3):
        used.append({"lr": opt.param_groups[0]["lr"]})
        set_grads(list(model.parameters()), i)
        opt.step()
        swa_model.update_parameters(model)
        visited.append([p.detach().clone() for p in model.parameters()])
        swa_scheduler.step()
    assert used[0]["lr"] > used[-1]["lr"] == pytest.approx(0.05), "annealed to swa_lr"
    by_hand = steps_with_group_values([torch.nn.Parameter(p.clone()) for p in start], used, foreach=foreach)
    for p, q in zip(model.parameters(), by_hand):
        torch.testing.assert_close(p.detach(), q, rtol=0, atol=0)
    constant = steps_with_group_values([torch.nn.Parameter(p.clone()) for p in start], [used[0]] * len(used),
                                       foreach=foreach)
    assert not torch.equal(model.weight.detach(), constant[0]), "an optimizer that kept its first LR would differ"
    for average, *points in zip(swa_model.module.parameters(), *visited):
        torch.testing.assert_close(average.detach(), torch.stack(points).mean(0))

"""Gradient-ID mechanics on a tiny model: per-sample inference in one batched pass equals each sample alone,
batch-wise mode, and linearity of the superposition. (The right task on a constructed case, on the real MiniLM:
``test_continual_trainer.py::test_gradient_id_picks_each_samples_task``.)"""

import pytest
import torch
from conftest import make_model
from peft import get_peft_model

import peft_memory  # noqa: F401
from peft_memory import SoftMaskConfig, gradient_id


def _task_batch(task: int, n: int, seed: int):
    """Task 0 uses tokens 1-49, task 1 tokens 60-119; within a task the class is the first token's parity."""
    g = torch.Generator().manual_seed(seed)
    lo, hi = (1, 50) if task == 0 else (60, 120)
    ids = torch.randint(lo, hi, (n, 8), generator=g)
    return {"input_ids": ids, "attention_mask": torch.ones_like(ids)}, ids[:, 0] % 2


def _train(model, task, steps=80):
    """Cross-entropy on the task's data plus a uniform target on the other task's data (outlier exposure), so
    that each adapter is confident on its own task only: the premise Gradient-ID relies on."""
    model.set_adapter(f"t{task}")
    model.train()
    opt = torch.optim.Adam([p for p in model.parameters() if p.requires_grad], lr=1e-2)
    for step in range(steps):
        x, y = _task_batch(task, 32, seed=100 * task + step)
        other, _ = _task_batch(1 - task, 32, seed=100 * task + step + 50)
        loss = torch.nn.functional.cross_entropy(model(**x).logits, y)
        loss = loss - model(**other).logits.log_softmax(-1).mean()
        opt.zero_grad()
        loss.backward()
        opt.step()
    model.eval()


@pytest.fixture(scope="module")
def trained():
    torch.manual_seed(0)
    model = get_peft_model(make_model("bert_cls"), SoftMaskConfig(num_labels=2, layers_to_transform=[0, 1, 2, 3],
                                                                  mask_ffn=True), adapter_name="t0")
    model.add_adapter("t1", SoftMaskConfig(num_labels=2, layers_to_transform=[0, 1, 2, 3], mask_ffn=True))
    _train(model, 0)
    _train(model, 1)
    return model


def test_per_sample_batch_equals_each_sample_alone(trained):
    x0, _ = _task_batch(0, 3, seed=7)
    x1, _ = _task_batch(1, 3, seed=8)
    mixed = {k: torch.cat([x0[k], x1[k]]) for k in x0}
    batched = gradient_id(trained, mixed, ["t0", "t1"])
    alone = torch.cat([gradient_id(trained, {k: v[i : i + 1] for k, v in mixed.items()}, ["t0", "t1"])
                       for i in range(6)])
    assert torch.equal(batched, alone)


def test_batchwise_mode_gives_one_id_per_batch(trained):
    x0, _ = _task_batch(0, 8, seed=5)
    pred = gradient_id(trained, x0, ["t0", "t1"], per_sample=False, num_shots=7)
    assert pred.shape == (8,) and len(set(pred.tolist())) == 1


def test_superposition_is_linear_in_alpha(trained):
    """One-hot alphas reproduce each adapter alone; the superposed backbone is the alpha-weighted mix."""
    x, _ = _task_batch(0, 4, seed=3)
    tuner = trained.base_model
    with torch.no_grad():
        outs = []
        for t in (0, 1):
            trained.set_adapter(f"t{t}")
            outs.append(trained(**x).logits)
        alphas = torch.tensor([[1.0, 0.0], [0.0, 1.0], [1.0, 0.0], [0.0, 1.0]])
        with tuner.superposition(["t0", "t1"], alphas):
            sup = trained(**x).logits  # (4, 2 + 2): both heads, concatenated
    for row in range(4):
        t = int(alphas[row, 1])
        torch.testing.assert_close(sup[row, 2 * t : 2 * t + 2], outs[t][row], rtol=0, atol=1e-5)


def test_empty_candidates_error(trained):
    with pytest.raises(ValueError, match="adapter_names is empty"):
        gradient_id(trained, _task_batch(0, 2, 0)[0], [])


def _alpha_grad(model, x, alphas):
    """d(sum of entropies)/d alphas through the tuner's superposition, ``alphas`` ``(batch, T)``."""
    alphas = alphas.clone().requires_grad_(True)
    with torch.enable_grad(), model.base_model.superposition(["t0", "t1"], alphas):
        log_p = model(**x).logits.log_softmax(-1)
        (grad,) = torch.autograd.grad(-(log_p.exp() * log_p).sum(), alphas)
    return grad


def test_shared_alpha_fast_path_equals_the_stacked_per_sample_path(trained):
    """Gradient-ID's rows all hold 1/T: the layers run one matmul with the mixed weight and get per-sample gradients
    in the backward (SharedSuperposition). The same gradients, per sample, as the T-matmul path that any alphas take
    (forced here by a 1e-7 difference in one row that is not part of the comparison)."""
    x0, _ = _task_batch(0, 3, seed=11)
    x1, _ = _task_batch(1, 3, seed=12)
    x = {k: torch.cat([x0[k], x1[k], x0[k][:1]]) for k in x0}
    shared = torch.full((7, 2), 0.5)
    general = shared.clone()
    general[-1] += 1e-7
    fast, slow = _alpha_grad(trained, x, shared), _alpha_grad(trained, x, general)
    assert fast.abs().max() > 1e-3  # a gradient that can differ
    torch.testing.assert_close(fast[:6], slow[:6], rtol=1e-4, atol=1e-6)


def test_task_posterior_equals_the_per_task_sum_bit_for_bit():
    """``task_log_posterior`` gathers every task's classes at once (it looped over the tasks, each comparing all
    classes: T x C); the result is the per-task logsumexp of the class posterior, to the bit, for equal and unequal
    task sizes and classes in any column order."""
    from peft_memory.continual.inference.task_id.gaussian import task_log_posterior

    g = torch.Generator().manual_seed(0)
    for owners in (torch.arange(5).repeat_interleave(4), torch.arange(50).repeat_interleave(2),
                   torch.tensor([0, 0, 1, 2, 2, 2, 1, 0, 3])):
        num_tasks = int(owners.max()) + 1
        scores = torch.randn(16, len(owners), generator=g, dtype=torch.float64) * 20
        log_p = scores.log_softmax(dim=-1)
        expected = torch.stack([log_p[:, owners == t].logsumexp(-1) for t in range(num_tasks)], dim=-1)
        assert torch.equal(task_log_posterior(scores, owners, num_tasks), expected)

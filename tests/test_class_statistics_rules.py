"""The class-statistics task-identity rules (nearest_mean, gaussian) and the class-incremental rules (routed, unified,
combined, product): per-sample inference on a mixed batch equals each sample alone, DualPrompt's unified classifier
and the product rule on hand-made logits, and the combined rule by hand."""

from types import SimpleNamespace

import pytest
import torch
from conftest import make_inputs, make_model
from peft import get_peft_model
from torch import nn

import peft_memory  # noqa: F401
from peft_memory import SoftMaskConfig, frozen_query
from peft_memory.class_statistics import STATISTICS_FILE, StatisticsAccumulator
from peft_memory.continual import get_rule
from peft_memory.continual.data.tasks import Task
from peft_memory.continual.inference.combined import AdaptedEvidence, combined_choice, head_inputs
from peft_memory.continual.inference.evaluation import EvalContext, evaluate_with


def three_task_model():
    model = get_peft_model(make_model("bert_cls"), SoftMaskConfig(num_labels=2, init_weights=False), "t0")
    for name in ("t1", "t2"):
        model.add_adapter(name, SoftMaskConfig(num_labels=2, init_weights=False))
    return model.eval()


def tasks():
    return [Task(f"t{i}", ["a", "b"], [None], [None], [2 * i, 2 * i + 1]) for i in range(3)]


def context(model, rule, **kw):
    """Statistics of the frozen query on random inputs, labelled so that every class has samples."""
    inputs = make_inputs("bert_cls", batch=24, seed=7)
    query = frozen_query(model, inputs)
    acc = StatisticsAccumulator(list(range(6)), query.shape[1])
    acc.add(query, torch.arange(24) % 6)
    seen = tasks()
    kw = {"statistics": {STATISTICS_FILE: acc.statistics()}, **kw}
    return EvalContext(model, seen, seen, method=None, rule=get_rule(rule), **kw)


@pytest.mark.parametrize("rule", ["nearest_mean", "gaussian"])
def test_per_sample_inference_on_a_mixed_batch_equals_each_sample_alone(rule):
    model = three_task_model()
    ctx = context(model, rule)
    batch = make_inputs("bert_cls", batch=6, seed=3)
    together = ctx.rule.infer(ctx, batch)
    alone = torch.cat([ctx.rule.infer(ctx, {k: v[i : i + 1] for k, v in batch.items()}) for i in range(6)])
    assert torch.equal(together, alone) and together.shape == (6,)
    assert ctx.rule.infer(context(model, rule, per_sample=False), batch).unique().numel() == 1  # batch-wise


def test_gaussian_task_posterior_sums_class_posteriors_per_task():
    model = three_task_model()
    ctx = context(model, "gaussian")
    batch = make_inputs("bert_cls", batch=5, seed=3)
    log_p = ctx.rule.task_log_posterior(ctx, batch)
    scores, owners, _ = ctx.rule.class_scores(ctx, batch)
    probs = scores.softmax(-1)
    torch.testing.assert_close(log_p.exp(), torch.stack([probs[:, owners == t].sum(-1) for t in range(3)], -1))
    assert torch.equal(log_p.argmax(-1), ctx.rule.infer(ctx, batch))  # argmax class's task == most probable task
    # here: every class of a task is compared; the rule's task is the task of the single best class
    assert torch.equal(ctx.rule.infer(ctx, batch), owners[scores.argmax(-1)])


def test_combined_rule_on_a_mixed_batch_equals_each_sample_alone():
    model = three_task_model()
    ctx = context(model, "gaussian")
    batch = make_inputs("bert_cls", batch=6, seed=3)
    evidence = []
    for t in range(3):  # adapted statistics of each task from its adapter's features on random inputs
        feats = head_inputs(model, make_inputs("bert_cls", batch=12, seed=10 + t), [f"t{t}"] * 12)[1]
        acc = StatisticsAccumulator([2 * t, 2 * t + 1], feats.shape[1])
        acc.add(feats, torch.arange(12) % 2)
        stats = acc.statistics()
        stats.calibration = torch.tensor([-50.0, 10.0], dtype=torch.float64)
        evidence.append(AdaptedEvidence(stats))
    prior = ctx.rule.task_log_posterior(ctx, batch)

    def choose(b, p):
        return combined_choice(lambda names: head_inputs(model, b, names), ctx.names, ctx.widths, p, evidence,
                               [0.0, 2.0], top_k=2)

    together = choose(batch, prior)
    for i in range(6):
        alone = choose({k: v[i : i + 1] for k, v in batch.items()}, prior[i : i + 1])
        for beta in (0.0, 2.0):
            assert together[beta][0][i] == alone[beta][0][0] and together[beta][1][i] == alone[beta][1][0]
    assert torch.equal(together[0.0][0], prior.argmax(-1))  # beta = 0: the class statistics alone


def test_class_scores_of_each_task_are_the_gaussians_columns_in_local_order():
    """Tasks of 1, 2 and 3 classes whose global ids are not in training order: ``(batch, T, W)`` with -inf padding."""
    model = three_task_model()
    seen = [Task("t0", ["a"], [None], [None], [4]), Task("t1", ["a", "b"], [None], [None], [5, 0]),
            Task("t2", ["a", "b", "c"], [None], [None], [3, 1, 2])]
    ctx = context(model, "gaussian")
    ctx.tasks = ctx.evaluated = seen
    batch = make_inputs("bert_cls", batch=5, seed=3)
    task_lp, within = ctx.rule.posterior_and_class_scores(ctx, batch)
    scores, _, labels = ctx.rule.class_scores(ctx, batch)
    assert within.shape == (5, 3, 3) and torch.equal(task_lp, ctx.rule.task_log_posterior(ctx, batch))
    for t, task in enumerate(seen):
        for c, g in enumerate(task.global_labels):
            assert torch.equal(within[:, t, c], scores[:, labels.tolist().index(g)])
    assert within[:, 0, 1:].eq(float("-inf")).all() and within[:, 1, 2].eq(float("-inf")).all()


def test_product_rule_adds_the_class_scores_to_the_chosen_heads_logits():
    """Hand-made logits: the head alone and the product of experts disagree on both samples; the task is the same."""
    model = HandMade(torch.tensor([[1.0, 0.8, 9.0], [0.0, 2.0, 1.0]]), heads=None)  # col 2 of t0: beyond its width
    prior = torch.log(torch.tensor([[0.9, 0.1], [0.2, 0.8]]))  # sample 0 -> t0, sample 1 -> t1
    ninf = float("-inf")
    class_scores = torch.tensor([[[0.0, 0.5, ninf], [0.0, 0.0, 0.0]], [[0.0, 0.0, ninf], [0.0, -3.0, 0.0]]])
    evidence = [lambda f: torch.zeros(f.shape[0], dtype=torch.float64)] * 2

    def choose(scores):
        return combined_choice(lambda names: head_inputs(model, {"x": torch.arange(2)}, names), ["t0", "t1"], [2, 3],
                               prior, evidence, [1.0], 1, scores)[1.0]

    head_task, head_local = choose(None)[:2]
    product_task, product_local = choose(class_scores)[:2]
    assert head_task.tolist() == product_task.tolist() == [0, 1]
    assert head_local.tolist() == [0, 1]  # 1.0 > 0.8; 2 > 1 > 0 (the 9.0 lies beyond t0's two classes)
    assert product_local.tolist() == [1, 2]  # 1.0 + 0 < 0.8 + 0.5; 0, 2 - 3, 1 + 0


class HandMade(nn.Module):
    """A PeftModel stand-in: sample i's classifier input is ``features[i]``; heads with hand-set weights."""

    def __init__(self, features, heads):
        super().__init__()
        self.features = features
        self.config = SimpleNamespace(model_type="bert")
        self.classifier = nn.Identity()
        self.base_model = SimpleNamespace(task_heads=heads)

    def get_base_model(self):
        return self

    def forward(self, x, adapter_names=None):
        return SimpleNamespace(logits=self.classifier(self.features[x]))


def test_unified_rule_on_hand_made_logits():
    """DualPrompt's classifier: the routed adapter's feature, then the argmax over EVERY seen head. A sample routed
    to the wrong task is still right when another task's head wins on that feature."""
    heads = nn.ModuleDict({"t0": nn.Linear(2, 2, bias=False), "t1": nn.Linear(2, 3, bias=False)})
    with torch.no_grad():
        heads["t0"].weight.copy_(torch.tensor([[2.0, 0.0], [0.0, 0.0]]))  # f0 -> [2, 0], f1 -> [0, 0]
        heads["t1"].weight.copy_(torch.tensor([[0.0, 0.0], [0.0, 1.0], [0.0, 3.0]]))  # f1 -> [0, 1, 3]
    seen = [Task("t0", ["a", "b"], [None], [None], [0, 1]), Task("t1", ["c", "d", "e"], [None], [None], [2, 3, 4])]
    model = HandMade(torch.tensor([[1.0, 0.0], [0.0, 1.0], [1.0, 0.0]]), heads)
    routed_to = torch.tensor([1, 0, 0])  # sample 0 routed to the wrong task, samples 1 and 2 to the right one

    def evaluate(cil_rule, labels, k):
        ctx = EvalContext(model, seen, seen, method=None, rule=None, cil_rule=cil_rule)
        return evaluate_with(ctx, {"x": torch.arange(3)}, labels, k, lambda c, b: routed_to)

    # all three samples are task 0's: a, b, a (global 0, 1, 0)
    unified = evaluate("unified", torch.tensor([0, 1, 0]), 0)
    # sample 0: routed to t1, but t0's head wins on its feature -> a (right); sample 1: routed to t0, but t1's e
    # (logit 3) beats t0's b on its feature -> the wrong task
    assert unified["cil"].tolist() == [True, False, True] and unified["task_id"].tolist() == [True, False, True]
    model.features = model.features.to(torch.bfloat16)  # a bf16 model's features, fp32 heads (PEFT's autocast)
    assert evaluate("unified", torch.tensor([0, 1, 0]), 0)["cil"].tolist() == [True, False, True]
    model.features = model.features.float()
    routed = evaluate("routed", torch.tensor([0, 1, 0]), 0)
    # routed: sample 0 is predicted among t1's classes only (wrong); sample 1 among t0's, where b wins (right)
    assert routed["cil"].tolist() == [False, True, True] and routed["task_id"].tolist() == [False, True, True]
    with pytest.raises(ValueError, match="--cil_rule 'other' is unknown"):
        evaluate("other", torch.tensor([0, 0, 0]), 0)
    model.base_model = SimpleNamespace()  # PEFT's LoRA: no task heads
    with pytest.raises(ValueError, match="--cil_rule unified applies every seen task's head"):
        evaluate("unified", torch.tensor([0, 0, 0]), 0)


@pytest.mark.parametrize("cil_rule", ["combined", "product"])
def test_unified_needs_task_heads_and_combined_needs_a_posterior(cil_rule):
    model = three_task_model()
    ctx = context(model, "nearest_mean", cil_rule=cil_rule)
    with pytest.raises(ValueError, match=f"^--cil_rule {cil_rule} re-scores a task posterior, which only "
                                         "--task_id_mode gaussian gives.$"):
        evaluate_with(ctx, make_inputs("bert_cls"), torch.zeros(4, dtype=torch.long), 0, ctx.rule.infer)
    ctx = context(model, "gaussian", statistics={})
    with pytest.raises(ValueError, match="reads the class statistics saved with each adapter"):
        ctx.rule.infer(ctx, make_inputs("bert_cls"))

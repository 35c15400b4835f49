"""Memory tokens (Sandler et al. 2022): base model untouched, concatenation == alone, the literal reference
computation, Table 1 masks, extension, plain fine-tuning mode, save/load, errors."""

import contextlib
import functools

import pytest
import torch
from conftest import MODEL_KINDS, make_inputs, make_model
from peft import PeftModel, get_peft_model
from test_continual_trainer import minilm, run

import peft_memory  # noqa: F401
from peft_memory import MemoryTokenConfig, gradient_id
from peft_memory.continual import get_rule
from peft_memory.continual.data.tasks import Task
from peft_memory.continual.inference.evaluation import EvalContext
from peft_memory.continual.run.reference import load_run, verify_run
from peft_memory.families import bare_model, encoder_layers, get_family
from peft_memory.tuners.memory_token.masks import class_token_reads, table1_masks

ATTNS = ["eager", "sdpa"]
# (name, config kwargs of the three adapters): one TEST_CASES matrix driven through the shared checks below
TEST_CASES = [
    ("5 tokens, all layers", [{"num_labels": 3}, {"num_labels": 2}, {"num_labels": 4}]),
    ("mixed sizes and layers", [{"num_labels": 3, "num_memory_tokens": 1},
                                {"num_labels": 2, "num_memory_tokens": 4, "layers_to_transform": [1, 3]},
                                {"num_labels": 2, "num_memory_tokens": 0}]),
    ("memory after norm", [{"num_labels": 3, "memory_after_norm": True}, {"num_labels": 2}, {"num_labels": 2}]),
]


@functools.cache
def shared_adapters(kind, attn, case_index):
    """One trained model per (kind, attn, case), shared by the read-only checks (they only switch adapters)."""
    return trained_adapters(kind, attn, TEST_CASES[case_index][1])


def trained_adapters(kind, attn, cases, steps=2):
    """Three adapters, each trained alone for a few SGD steps (so memory, class token and head all moved)."""
    model = get_peft_model(make_model(kind, attn), MemoryTokenConfig(**cases[0]), "a")
    for name, kwargs in zip("bc", cases[1:]):
        model.add_adapter(name, MemoryTokenConfig(**kwargs))
    inputs = make_inputs(kind)
    for name in "abc":
        model.base_model.set_adapter(name)
        params = [p for p in model.parameters() if p.requires_grad]
        opt = torch.optim.SGD(params, lr=0.5)
        for _ in range(steps):
            model(**inputs).logits.pow(2).sum().backward()
            opt.step()
            opt.zero_grad()
    return model.eval(), inputs


def base_outputs(kind, attn, inputs):
    with torch.no_grad():
        return make_model(kind, attn)(**inputs, output_hidden_states=True)


@pytest.mark.parametrize("attn", ATTNS)
@pytest.mark.parametrize("case", range(len(TEST_CASES)), ids=[c[0] for c in TEST_CASES])
def test_base_model_outputs_are_bit_exact_with_any_number_of_adapters(kind, attn, case):
    model, inputs = shared_adapters(kind, attn, case)
    ref = base_outputs(kind, attn, inputs)
    for active in (["a"], ["a", "b"], ["a", "b", "c"]):
        model.base_model.set_adapter(active)
        with torch.no_grad():
            out = model(**inputs, output_hidden_states=True)
        if kind.endswith("_cls"):
            assert torch.equal(out.base_logits, ref.logits)
        else:
            assert torch.equal(out.last_hidden_state, ref.last_hidden_state)
        assert len(out.hidden_states) == len(ref.hidden_states)
        assert all(torch.equal(h, r) for h, r in zip(out.hidden_states, ref.hidden_states))
        assert sorted(out.task_logits) == active


@pytest.mark.parametrize("attn", ATTNS)
@pytest.mark.parametrize("case", range(len(TEST_CASES)), ids=[c[0] for c in TEST_CASES])
def test_concatenated_forward_equals_each_task_alone(kind, attn, case):
    model, inputs = shared_adapters(kind, attn, case)
    model.base_model.set_adapter(["a", "b", "c"])
    with torch.no_grad():
        together = model(**inputs)
    for name in "abc":
        model.base_model.set_adapter(name)
        with torch.no_grad():
            alone = model(**inputs).logits
        assert (together.task_logits[name] - alone).abs().max() <= 1e-5
    assert together.logits.shape[-1] == sum(model.base_model.task_heads[n].out_features for n in "abc")


def literal_reference(model, inputs, name):
    """The paper's Fig. 2 taken literally on the base model's own layers: memory appended to each layer's input as
    tokens (so it goes through the layer's pre-attention norm and W_k/W_v), a 4D additive mask with Table 1's rows,
    the layer's output truncated back; then the class token through the final norm (or BERT's pooler) and the head."""
    tuner = model.base_model
    config = tuner.peft_config[name]
    base = model.get_base_model()
    bare, family = bare_model(base), get_family(base)
    with torch.no_grad(), tuner.adapters_disabled():
        if family.name == "bert":
            h = bare.embeddings(input_ids=inputs["input_ids"])
            pad = inputs["attention_mask"].bool()
        else:
            h = bare.embeddings(inputs["pixel_values"])
            pad = torch.ones(h.shape[:2], dtype=torch.bool)
        batch, n, hidden = h.shape
        h = torch.cat([h, tuner._tuner_level_dict("class_token")[name].expand(batch, 1, hidden)], dim=1)
        for index, layer in enumerate(encoder_layers(base, family)):
            m = config.num_memory_tokens if index in config.layers_to_transform else 0
            memory = tuner._tuner_level_dict("memory")[name][config.layers_to_transform.index(index)] if m else h[0, :0]
            x = torch.cat([h, memory.expand(batch, m, hidden)], dim=1)
            allowed = torch.zeros(batch, 1, n + 1 + m, n + 1 + m, dtype=torch.bool)
            allowed[:, :, :, :n] = pad[:, None, None, :]  # everyone reads the unpadded inputs ...
            allowed[:, :, :n, n:] = False  # ... inputs and CLS read nothing else
            allowed[:, :, n:, n:] = True  # class token and memory rows read the class token and memory
            mask = torch.zeros(allowed.shape).masked_fill(~allowed, torch.finfo(torch.float32).min)
            out = layer(x, mask)
            h = (out[0] if isinstance(out, tuple) else out)[:, : n + 1]
        token = h[:, n]
        if family.final_norm:
            token = getattr(bare, family.final_norm)(token)
        else:
            token = bare.pooler.activation(bare.pooler.dense(token))
        return tuner.task_heads[name](token)


@pytest.mark.parametrize("kind", ["vit_cls", "bert_cls"])
@pytest.mark.parametrize("case", [0, 1], ids=[c[0] for c in TEST_CASES[:2]])  # the reference puts memory through the norm
def test_memory_path_equals_the_literal_reference(kind, case):
    model, inputs = shared_adapters(kind, "eager", case)
    for name in "ab":
        model.base_model.set_adapter(name)
        with torch.no_grad():
            ours = model(**inputs).logits
        assert (ours - literal_reference(model, inputs, name)).abs().max() <= 1e-5


def test_table1_masks_by_hand():
    reads = class_token_reads(["a", "b", "c"], {"a": None, "b": None, "c": ["a"]})
    assert reads.tolist() == [[True, False, False], [False, True, False], [True, False, True]]
    memory_mask, key_mask = table1_masks(reads, [2, 0, 1], num_inputs=2)
    assert memory_mask.shape == (1, 1, 3, 3) and key_mask.shape == (1, 1, 3, 5)
    assert memory_mask[0, 0].tolist() == [[True, True, False], [False, False, False], [True, True, True]]
    assert key_mask[0, 0].tolist() == [[True, True, True, False, False], [True, True, False, True, False],
                                       [True, True, True, False, True]]
    with pytest.raises(ValueError, match=r"memory adapter 'c' was trained as an extension of \['a'\]; load and "
                                         r"activate those adapters with it \(active: \['b', 'c'\]\)"):
        class_token_reads(["b", "c"], {"c": ["a"]})


def test_extension_reads_earlier_tasks_and_needs_them():
    model, inputs = trained_adapters("vit_cls", "eager", TEST_CASES[0][1])
    model.add_adapter("d", MemoryTokenConfig(num_labels=2, attention="extension"))
    assert model.peft_config["d"].extends == ["a", "b", "c"]
    model.base_model.set_adapter(["a", "d"])
    with pytest.raises(ValueError, match=r"trained as an extension of \['b', 'c'\]"):
        model(**inputs)
    model.base_model.set_adapter(["a", "b", "c", "d"])
    with torch.no_grad():
        before = model(**inputs).task_logits
        memory = model.base_model._tuner_level_dict("memory")["a"]  # an earlier task's memory changes d, not b
        memory.add_(torch.randn(memory.shape, generator=torch.Generator().manual_seed(0)))
        after = model(**inputs).task_logits
    assert (after["d"] - before["d"]).abs().max() > 1e-4
    assert torch.equal(after["b"], before["b"])


def test_fine_tune_cls_mode_changes_the_base_output_and_runs_alone():
    inputs = make_inputs("vit_cls")
    model = get_peft_model(make_model("vit_cls"), MemoryTokenConfig(num_labels=3, fine_tune_cls=True), "ft")
    tuner = model.base_model
    with torch.no_grad():
        tuner._tuner_level_dict("class_token")["ft"].add_(0.5)
        logits = model(**inputs).logits
        with tuner.adapters_disabled():
            ref = model(**inputs, output_hidden_states=True)
        assert not torch.allclose(model(**inputs, output_hidden_states=True).hidden_states[-1], ref.hidden_states[-1])
    assert logits.shape == (4, 3)
    model.add_adapter("b", MemoryTokenConfig(num_labels=2))
    tuner.set_adapter(["ft", "b"])
    with pytest.raises(ValueError, match=r"adapter 'ft' fine-tunes the original class token"):
        model(**inputs)


def test_gradients_reach_only_the_active_adapter():
    model, inputs = trained_adapters("bert_cls", "eager", TEST_CASES[0][1], steps=0)
    model.train()
    model.base_model.set_adapter("b")
    model(**inputs).logits.sum().backward()
    tuner = model.base_model
    for name in "abc":
        params = [tuner._tuner_level_dict("memory")[name], tuner._tuner_level_dict("class_token")[name],
                  *tuner.task_heads[name].parameters()]
        assert all((p.grad is not None and p.grad.abs().sum() > 0) == (name == "b") for p in params), name
    assert all(p.grad is None for n, p in model.named_parameters() if "memory_token_" not in n)


def test_separately_saved_adapters_concatenate_after_loading(tmp_path):
    model, inputs = trained_adapters("vit_cls", "sdpa", TEST_CASES[1][1])
    alone = {}
    for name in "abc":
        model.save_pretrained(str(tmp_path), selected_adapters=[name])
        model.base_model.set_adapter(name)
        with torch.no_grad():
            alone[name] = model(**inputs).logits
    loaded = PeftModel.from_pretrained(make_model("vit_cls", "sdpa"), str(tmp_path / "b"), adapter_name="b")
    for name in "ca":
        loaded.load_adapter(str(tmp_path / name), adapter_name=name)
    assert loaded.peft_config["b"].layers_to_transform == [1, 3]
    loaded.base_model.set_adapter(["b", "c", "a"])
    with torch.no_grad():
        out = loaded.eval()(**inputs)
    for name in "abc":
        assert (out.task_logits[name] - alone[name]).abs().max() <= 1e-5
    assert torch.equal(out.base_logits, base_outputs("vit_cls", "sdpa", inputs).logits)


def test_unload_restores_the_base_model_and_merge_is_refused():
    model, inputs = trained_adapters("bert_cls", "eager", TEST_CASES[0][1], steps=1)
    with pytest.raises(ValueError, match="cannot be merged: memory tokens are extra tokens, not weights"):
        model.merge_and_unload()
    base = model.unload()
    with torch.no_grad():
        assert torch.equal(base(**inputs).logits, base_outputs("bert_cls", "eager", inputs).logits)


def test_gradient_id_is_refused_with_the_reason():
    model, inputs = trained_adapters("vit_cls", "eager", TEST_CASES[0][1], steps=0)
    with pytest.raises(ValueError, match="memory tokens have no superposition, so Gradient-ID does not apply"):
        gradient_id(model, inputs, ["a", "b"])


def test_memory_layer_out_of_range():
    with pytest.raises(ValueError, match=r"layers_to_transform=\[0, 4\] has indices \[4\] out of range: the model has 4 layers"):
        get_peft_model(make_model("vit_cls"), MemoryTokenConfig(layers_to_transform=[0, 4]), "a")


assert set(MODEL_KINDS) == {"bert_cls", "bert", "vit_cls", "vit", "dinov2"}


class AllHeads:
    """Stand-in for a memory-token model: every head's logits from one forward, fixed by hand."""

    def __init__(self, task_logits):
        self.task_logits = task_logits
        self.base_model = type("T", (), {"concatenated": staticmethod(lambda names: contextlib.nullcontext())})()

    def __call__(self, **batch):
        return type("O", (), {"task_logits": self.task_logits})()


def test_most_confident_head_rule_by_hand():
    tasks = [Task("t0", ["a", "b"], [None], [None], [0, 1]), Task("t1", ["c", "d"], [None], [None], [2, 3])]
    # sample 0: t0's head is sure (softmax 0.98), t1's unsure -> t0; sample 1: t1's head is surer -> t1
    heads = {"t0": torch.tensor([[4.0, 0.0], [1.0, 0.0]]), "t1": torch.tensor([[0.1, 0.0], [0.0, 3.0]])}
    ctx = EvalContext(AllHeads(heads), tasks, tasks, method=None, rule=get_rule("max_softmax"))
    out = ctx.rule.evaluate_batch(ctx, {}, torch.tensor([0, 1]), 1)
    assert out["task_id"].tolist() == [False, True] and out["cil"].tolist() == [False, True]
    assert out["til"].tolist() == [True, True]  # t1's own head is right on both


def test_memory_token_trainer_run_keeps_task_incremental_accuracy_and_reloads(tmp_path, tokenizer):
    trainer, results, _ = run(tmp_path, tokenizer, method="memory_token", num_memory_tokens=2,
                              max_steps_per_task=4)
    assert results.task_identity.mode == "max_softmax"
    til = results.til_accuracy_matrix
    assert til[0][0] == til[0][1]  # task_1's adapter runs in the same forward and changes nothing for task_0
    assert verify_run(str(tmp_path), load_run(str(tmp_path), base_model=minilm())) == {"task_0": 0.0, "task_1": 0.0}

"""PEFT's calls behave as PEFT users expect for every method (issue 14's defects, each pinned by a test of ours beside
PEFT's own checks in test_peft_common.py)."""

import copy
import warnings

import pytest
import torch
from conftest import bert_config, make_inputs, make_model
from peft import PeftModel, get_peft_model
from safetensors.torch import load_file, save_file
from transformers import BertForSequenceClassification

from peft_memory import DualPromptConfig, MemoryTokenConfig, SoftMaskConfig
from peft_memory.tuners.prompts import PROMPT_ATTRS

PROMPTS = {"g_prompt_layers": [0], "e_prompt_layers": [1, 2], "g_prompt_length": 2, "e_prompt_length": 3}
CONFIGS = {
    "soft_mask": lambda **kw: SoftMaskConfig(init_weights=False, **kw),
    "soft_mask_prompts": lambda **kw: SoftMaskConfig(init_weights=False, use_prompts=True, **PROMPTS, **kw),
    "dual_prompt": lambda **kw: DualPromptConfig(**PROMPTS, **kw),
    "memory_token": lambda **kw: MemoryTokenConfig(**kw),
}
ATTNS = ["eager", "sdpa"]


@pytest.mark.parametrize("method", CONFIGS)
@pytest.mark.parametrize("attn", ATTNS)
def test_delete_adapter_keeps_or_picks_the_active_adapter(method, attn):
    model = get_peft_model(make_model("bert_cls", attn), CONFIGS[method](num_labels=3), "t0")
    model.add_adapter("t1", CONFIGS[method](num_labels=2))
    model.add_adapter("t2", CONFIGS[method](num_labels=2))
    model.delete_adapter("t2")  # inactive: "t0" stays active
    assert model.active_adapters == ["t0"]
    model.set_adapter("t1")
    with pytest.warns(UserWarning, match="Adapter t1 was active which is now deleted. Setting active adapter to t0."):
        model.delete_adapter("t1")
    assert model.active_adapters == ["t0"]
    assert model(**make_inputs("bert_cls")).logits.shape == (4, 3)  # no KeyError on the next forward
    assert not any("t1" in n or "t2" in n for n, _ in model.named_parameters())


@pytest.mark.parametrize("method", ["soft_mask_prompts", "dual_prompt", "memory_token"])
@pytest.mark.parametrize("attn", ATTNS)
def test_unload_gives_the_base_model_bit_for_bit(method, attn):
    base = make_model("bert_cls", attn)
    inputs = make_inputs("bert_cls")
    with torch.no_grad():
        ref = base(**inputs).logits
    model = get_peft_model(copy.deepcopy(base), CONFIGS[method](num_labels=3))
    unloaded = model.unload()
    assert unloaded.config._attn_implementation == attn
    with torch.no_grad():
        assert torch.equal(unloaded(**inputs).logits, ref)


@pytest.mark.parametrize("method,parts", [("soft_mask_prompts", "its G- and E-prompts are extra keys and values"),
                                          ("dual_prompt", "its G- and E-prompts are extra keys and values"),
                                          ("memory_token", "memory tokens are extra tokens")])
def test_merging_refuses_what_is_not_weights(method, parts):
    model = get_peft_model(make_model("bert_cls"), CONFIGS[method](num_labels=3), "t0")
    for merge in (model.merge_adapter, model.merge_and_unload):
        with pytest.raises(ValueError, match=f"adapter 't0' cannot be merged: {parts}"):
            merge()
    assert model.supports_lora_conversion() is False


def test_soft_mask_safe_merge_reports_nans_as_peft_does():
    model = get_peft_model(make_model("bert_cls"), CONFIGS["soft_mask"](num_labels=3))
    next(p for n, p in model.named_parameters() if "soft_mask_values" in n).data[0, 0] = torch.nan
    with pytest.raises(ValueError, match="NaNs detected in the merged weights. The adapter default seems to be broken"):
        model.merge_and_unload(safe_merge=True)


def test_soft_mask_names_carry_the_prefix_so_a_missing_mask_is_reported(tmp_path):
    model = get_peft_model(make_model("bert_cls"), CONFIGS["soft_mask"](num_labels=3))
    assert all("soft_mask_" in n for n, p in model.named_parameters() if p.requires_grad)
    model.save_pretrained(tmp_path)
    path = tmp_path / "adapter_model.safetensors"
    weights = load_file(path)
    dropped = next(k for k in weights if k.endswith("query.soft_mask_values"))
    save_file({k: v for k, v in weights.items() if k != dropped}, path)
    result = get_peft_model(make_model("bert_cls"), CONFIGS["soft_mask"](num_labels=3)).load_adapter(tmp_path, "x")
    assert result.missing_keys == [dropped.replace("soft_mask_values", "soft_mask_values.x")]


def test_soft_mask_adapters_saved_by_0_1_load_with_the_old_mask_name(tmp_path):
    model = get_peft_model(make_model("bert_cls"), CONFIGS["soft_mask"](num_labels=3)).eval()
    model.save_pretrained(tmp_path)
    path = tmp_path / "adapter_model.safetensors"
    old = {k.replace(".soft_mask_values", ".soft_mask"): v for k, v in load_file(path).items()}
    assert any(k.endswith(".soft_mask") for k in old)
    save_file(old, path)
    loaded = PeftModel.from_pretrained(make_model("bert_cls"), tmp_path).eval()
    inputs = make_inputs("bert_cls")
    with torch.no_grad():
        assert torch.equal(loaded(**inputs).logits, model(**inputs).logits)


@pytest.mark.parametrize("method", CONFIGS)
def test_labels_give_the_task_heads_loss_on_a_wider_base_classifier(method):
    """The base classifier is as wide as the largest task (4); the adapter's head has 2 classes. The loss is the
    head's cross-entropy (plus DualPrompt's matching term), not the base model's (which would fail on the shapes)."""
    torch.manual_seed(0)
    base = BertForSequenceClassification(bert_config(num_labels=4)).eval()
    model = get_peft_model(base, CONFIGS[method](label_names=["x", "y"]))
    inputs, labels = make_inputs("bert_cls"), torch.tensor([0, 1, 1, 0])
    out = model(**inputs, labels=labels)
    assert out.logits.shape == (4, 2) and next(iter(out.keys())) == "loss"
    expected = torch.nn.functional.cross_entropy(out.logits, labels)
    config = model.peft_config["default"]
    if getattr(config, "use_prompts", True) and hasattr(config, "matching_loss_weight"):
        tuner = model.base_model
        cos = tuner.key_similarity(tuner.frozen_features(model, inputs), ["default"])[:, 0]
        expected = expected - config.matching_loss_weight * cos.mean()
    torch.testing.assert_close(out.loss, expected, rtol=1e-5, atol=1e-6)
    out.loss.backward()
    assert all(p.grad is not None for n, p in model.named_parameters() if p.requires_grad), method
    if method in ("dual_prompt", "soft_mask_prompts"):
        assert any(f"{PROMPT_ATTRS[2]}" in n and p.grad.abs().sum() > 0 for n, p in model.named_parameters()
                   if p.requires_grad)


def test_labels_of_the_wrong_kind_are_refused():
    model = get_peft_model(make_model("bert_cls"), CONFIGS["soft_mask"](num_labels=3))
    with pytest.raises(ValueError, match=r"labels must be class indices of shape \(batch,\)"):
        model(**make_inputs("bert_cls"), labels=torch.zeros(4, 3))
    bad = dict(make_inputs("bert_cls"), input_ids=torch.full((4, 9), 10_000))  # fails inside the forward
    with pytest.raises(IndexError):
        model(**bad, labels=torch.tensor([0, 1, 2, 0]))
    assert model(**make_inputs("bert_cls")).get("loss") is None  # the failed call's labels are not reused


def test_memory_token_class_token_id_comes_from_the_model_or_fails_early():
    torch.manual_seed(0)
    small = BertForSequenceClassification(bert_config(vocab_size=90))
    with pytest.raises(ValueError, match=r"cls_token_id=101 is outside the model's vocabulary of 90 tokens; pass "
                                         r"MemoryTokenConfig\(cls_token_id=tokenizer.cls_token_id\)"):
        get_peft_model(small, MemoryTokenConfig(num_labels=2))
    small.config.cls_token_id = 2
    model = get_peft_model(small, MemoryTokenConfig(num_labels=2))
    emb = small.bert.embeddings.eval()
    torch.testing.assert_close(model.base_model.memory_token_class_token["default"].detach(),
                               emb(input_ids=torch.tensor([[2]]))[0, 0])


def test_memory_tokens_without_a_head_warn():
    with pytest.warns(UserWarning, match="has no task head .* gets no gradient and changes no output"):
        get_peft_model(make_model("bert"), MemoryTokenConfig())
    with warnings.catch_warnings():
        warnings.simplefilter("error", UserWarning)
        get_peft_model(make_model("bert"), MemoryTokenConfig(num_labels=2))


@pytest.mark.parametrize("method", [*CONFIGS, "head_only"])
@pytest.mark.parametrize("kind", ["bert_cls", "vit"])
def test_peft_disable_adapter_and_status_work_for_every_method(method, kind):
    base = make_model(kind)
    inputs = make_inputs(kind)
    config = SoftMaskConfig(num_labels=3, target_modules=[]) if method == "head_only" else CONFIGS[method](num_labels=3)
    model = get_peft_model(copy.deepcopy(base), config).eval()
    with torch.no_grad():
        adapted = model(**inputs).logits
        with model.disable_adapter():
            assert torch.equal(model(**inputs, output_hidden_states=True).hidden_states[-1],
                               base(**inputs, output_hidden_states=True).hidden_states[-1])
        torch.testing.assert_close(model(**inputs).logits, adapted, rtol=0, atol=0)
    status = model.get_model_status()
    assert (status.enabled, status.active_adapters, status.available_adapters) == (True, ["default"], ["default"])
    assert status.requires_grad == {"default": True}
    assert any(s.module_type == "TunerLevelLayer" for s in model.get_layer_status())
    assert model.state_dict().keys() == copy.deepcopy(model).state_dict().keys()
    assert not any("tuner_level_layer" in k for k in model.state_dict())


@pytest.mark.parametrize("method", CONFIGS)
@pytest.mark.parametrize("kind", ["bert_cls", "vit_cls"])
def test_mixed_batches_take_peft_base_rows_and_headless_adapters(method, kind):
    """Rows routed to ``"__base__"`` are the base model's; rows of an adapter without a head get the base classifier
    on that adapter's features; the rest their own head (to fp32 rounding of other batch shapes)."""
    base, inputs = make_model(kind), make_inputs(kind)
    model = get_peft_model(copy.deepcopy(base), CONFIGS[method](num_labels=2), "t0").eval()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)  # a memory-token adapter without head warns
        model.add_adapter("t1", CONFIGS[method]())
    with torch.no_grad():
        mixed = model(**inputs, adapter_names=["t0", "__base__", "t1", "t0"]).logits
        alone = model(**inputs, adapter_names=["t0"] * 4).logits
        model.set_adapter("t1")
        headless = model(**inputs).logits
        reference = base(**inputs).logits
    assert mixed.shape == (4, 3)  # max(2 task classes, 3 base classes)
    torch.testing.assert_close(mixed[[0, 3], :2], alone[[0, 3]], rtol=0, atol=1e-5)
    assert torch.equal(mixed[0, 2:], torch.full((1,), torch.finfo(mixed.dtype).min))
    torch.testing.assert_close(mixed[1], reference[1], rtol=0, atol=1e-5)
    torch.testing.assert_close(mixed[2], headless[2], rtol=0, atol=1e-5)


def test_adapters_without_heads_route_on_a_bare_encoder():
    """Masks used like LoRA (no label_names) on a bare BertModel: routing gives the adapted hidden states, no crash;
    mixing them with headed adapters there has no classifier to fall back on and is refused."""
    model = get_peft_model(make_model("bert"), SoftMaskConfig(init_weights=False), "t0").eval()
    inputs = make_inputs("bert")
    with torch.no_grad():
        routed = model(**inputs, adapter_names=["t0", "__base__", "t0", "t0"])
        assert routed.get("logits") is None and routed.last_hidden_state.shape == (4, 9, 32)
    model.add_adapter("t1", SoftMaskConfig(num_labels=2))
    with pytest.raises(ValueError, match=r"adapters \['t0'\] have no task head and the model has no classifier"):
        model(**inputs, adapter_names=["t0", "t1", "t0", "t1"])


@pytest.mark.parametrize("method", CONFIGS)
@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
@pytest.mark.parametrize("autocast", [True, False])
def test_half_precision_models_follow_peft_dtype_rules(method, dtype, autocast):
    """PEFT's ``autocast_adapter_dtype``: adapter parameters (masks, heads, prompts, keys, memory) in float32 on a
    half-precision model, or in its dtype when off; the forward and the loss run either way, logits in the model's
    dtype."""
    model = get_peft_model(make_model("bert_cls").to(dtype), CONFIGS[method](num_labels=2),
                           autocast_adapter_dtype=autocast)
    model.add_adapter("t1", CONFIGS[method](num_labels=2), autocast_adapter_dtype=autocast)
    expected = torch.float32 if autocast else dtype
    assert {p.dtype for n, p in model.named_parameters() if "_t1" in n or ".t1" in n} == {expected}
    assert {p.dtype for p in model.parameters() if p.requires_grad} == {expected}
    out = model(**make_inputs("bert_cls"), labels=torch.tensor([0, 1, 1, 0]))
    assert out.logits.dtype == dtype and torch.isfinite(out.loss)
    out.loss.backward()


@pytest.mark.parametrize("kind", ["bert_cls", "vit_cls", "dinov2"])
@pytest.mark.parametrize("reentrant", [True, False])
def test_memory_tokens_train_under_gradient_checkpointing(kind, reentrant):
    """The same gradients with and without checkpointing (to fp32 rounding), memory and class tokens included."""
    def grads(checkpointing):
        model = get_peft_model(make_model(kind), MemoryTokenConfig(num_labels=2, num_memory_tokens=2))
        model.train()
        if checkpointing:
            model.base_model.model.gradient_checkpointing_enable({"use_reentrant": reentrant})
            if reentrant:
                model.base_model.model.enable_input_require_grads()
        inputs = make_inputs(kind)
        model(**inputs, labels=torch.tensor([0, 1, 1, 0])).loss.backward()
        return {n: p.grad for n, p in model.named_parameters() if p.requires_grad}

    plain, checkpointed = grads(False), grads(True)
    assert plain.keys() == checkpointed.keys() and any("memory_token_memory" in n for n in plain)
    for name, grad in plain.items():
        assert grad.abs().sum() > 0, name
        torch.testing.assert_close(checkpointed[name], grad, rtol=1e-4, atol=1e-6)


@pytest.mark.parametrize("method", CONFIGS)
def test_deepcopy_runs_the_copys_own_parameters(method):
    """Hooks and attention providers are bound methods, so a deep copy reads its own prompts / memory / masks."""
    model = get_peft_model(make_model("vit_cls"), CONFIGS[method](num_labels=3)).eval()
    inputs = make_inputs("vit_cls")
    clone = copy.deepcopy(model)
    with torch.no_grad():
        before = model(**inputs).logits
        torch.testing.assert_close(clone(**inputs).logits, before, rtol=0, atol=0)
        for name, p in clone.named_parameters():
            if p.requires_grad and "head" not in name:
                p.mul_(3.0)
        assert not torch.allclose(clone(**inputs).logits, before)
        assert torch.equal(model(**inputs).logits, before)


def test_labels_on_a_mixed_batch_with_base_rows():
    """The loss of a mixed batch: each row's own head (the base classifier for "__base__" rows) plus the matching
    term of the rows routed to an adapter with keys."""
    model = get_peft_model(make_model("bert_cls"), CONFIGS["dual_prompt"](num_labels=3), "t0")
    inputs, labels = make_inputs("bert_cls"), torch.tensor([0, 2, 1, 1])
    names = ["t0", "__base__", "t0", "__base__"]
    out = model(**inputs, labels=labels, adapter_names=names)
    tuner = model.base_model
    cos = tuner.key_similarity(tuner.frozen_features(model, inputs), ["t0"])[:, 0]
    expected = torch.nn.functional.cross_entropy(out.logits, labels) - cos[[0, 2]].sum() / 4
    torch.testing.assert_close(out.loss, expected, rtol=1e-5, atol=1e-6)

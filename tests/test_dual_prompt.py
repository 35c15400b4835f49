"""DualPrompt and DualPrompt-Soft-TF on tiny models, what only prompts do: the prefixes are the adapters' prompts,
Prompt-ID, the G-prompt carried across tasks, prompts superposed by Gradient-ID. The checks every tuner shares run in
test_tuners.py."""

import copy

import pytest
import torch
from conftest import last_hidden, make_inputs, make_model
from peft import get_peft_model

import peft_memory  # noqa: F401
from peft_memory import DualPromptConfig, SoftMaskConfig, prompt_id
from peft_memory.families import attention_modules, get_family

CASES = [(kind, attn) for kind in ("bert_cls", "vit_cls", "dinov2") for attn in ("eager", "sdpa")]
SMALL = {"g_prompt_layers": [0], "e_prompt_layers": [1, 2], "g_prompt_length": 2, "e_prompt_length": 3}


def two_tasks(kind, attn, cls=DualPromptConfig, **extra):
    model = get_peft_model(make_model(kind, attn), cls(num_labels=3, **SMALL, **extra), adapter_name="t0")
    model.add_adapter("t1", cls(num_labels=2, **SMALL, **extra))
    return model.eval()


@pytest.mark.parametrize("kind,attn", CASES)
def test_prefixes_are_the_adapters_prompts(kind, attn):
    """At an E-prompt layer the attention module receives exactly [E-prompt keys | projected keys]."""
    model = two_tasks(kind, attn)
    model.set_adapter("t1")
    tuner = model.base_model
    module = attention_modules(model.get_base_model(), get_family(model.get_base_model()))[1]
    provider = module.__dict__["_peft_memory_extra_kv"]
    heads = model.get_base_model().config.num_attention_heads
    query = torch.zeros(1, heads, 5, 32 // heads)
    keys, values, mask = provider(module, query)
    prompt = tuner.dual_prompt_e_prompt["t1"][0]  # layer 1 is the first E-prompt layer: (2, 3, 32)
    assert keys.shape == (1, heads, 3, 32 // heads) and mask is None
    assert torch.equal(keys[0].transpose(0, 1).flatten(1), prompt[0])
    assert torch.equal(values[0].transpose(0, 1).flatten(1), prompt[1])
    layer0 = attention_modules(model.get_base_model(), get_family(model.get_base_model()))[0]
    g_keys, _, _ = layer0.__dict__["_peft_memory_extra_kv"](layer0, query)
    assert torch.equal(g_keys[0].transpose(0, 1).flatten(1), tuner.dual_prompt_g_prompt["t1"][0][0])


@pytest.mark.parametrize("kind", ["bert_cls", "vit_cls"])
def test_prompt_id_per_sample_on_a_mixed_batch_equals_each_sample_alone(kind):
    model = two_tasks(kind, "sdpa")
    inputs = make_inputs(kind, batch=6)
    with torch.no_grad():
        features = model.base_model.frozen_features(model, inputs)
        # keys set to two samples' own queries: those samples must pick their task
        model.base_model.dual_prompt_e_key["t0"].copy_(features[0])
        model.base_model.dual_prompt_e_key["t1"].copy_(features[1])
        batched = prompt_id(model, inputs, ["t0", "t1"])
        alone = torch.cat([prompt_id(model, {k: v[i : i + 1] for k, v in inputs.items()}, ["t0", "t1"])
                           for i in range(6)])
    assert torch.equal(batched, alone) and batched[:2].tolist() == [0, 1]
    assert prompt_id(model, inputs, ["t0", "t1"], per_sample=False).unique().numel() == 1


def test_gradients_reach_only_the_active_tasks_prompts_key_and_head():
    model = two_tasks("vit_cls", "eager").train()
    model.set_adapter("t1")
    model(**make_inputs("vit_cls")).logits.sum().backward()
    with_grad = {n for n, p in model.named_parameters() if p.grad is not None}
    assert with_grad == {"base_model.dual_prompt_g_prompt.t1", "base_model.dual_prompt_e_prompt.t1",
                         "base_model.dual_prompt_head.t1.weight", "base_model.dual_prompt_head.t1.bias"}
    assert {n for n, p in model.named_parameters() if p.requires_grad} == with_grad | {"base_model.dual_prompt_e_key.t1"}


def test_new_task_starts_from_the_previous_g_prompt():
    model = two_tasks("bert_cls", "eager")
    g = model.base_model.dual_prompt_g_prompt
    assert torch.equal(g["t0"], g["t1"]) and g["t0"] is not g["t1"]
    assert not torch.equal(model.base_model.dual_prompt_e_prompt["t0"], model.base_model.dual_prompt_e_prompt["t1"])


def test_soft_tf_with_prompts_uses_masks_and_prompts_of_one_adapter():
    base = make_model("vit_cls")
    inputs = make_inputs("vit_cls")
    masks_only = get_peft_model(copy.deepcopy(base), SoftMaskConfig(num_labels=2), adapter_name="t0").eval()
    both = get_peft_model(copy.deepcopy(base), SoftMaskConfig(num_labels=2, use_prompts=True, **SMALL),
                          adapter_name="t0").eval()
    names = {n for n, _ in both.named_parameters()}
    assert {"base_model.soft_mask_e_key.t0", "base_model.soft_mask_g_prompt.t0"} <= names
    assert any(".soft_mask_values.t0" in n for n in names)
    with torch.no_grad():
        assert not torch.equal(last_hidden(both, inputs), last_hidden(masks_only, inputs))  # prompts attached
        with both.base_model.adapters_disabled():
            assert torch.equal(last_hidden(both, inputs), last_hidden(base, inputs))


def test_prompt_layer_out_of_range_and_flash_refused():
    with pytest.raises(ValueError, match=r"e_prompt_layers=\[7\] has indices \[7\] out of range: the model has 4 layers"):
        get_peft_model(make_model("vit_cls"), DualPromptConfig(e_prompt_layers=[7]), adapter_name="t0")
    model = make_model("vit_cls")
    model.config._attn_implementation = "flash_attention_2"
    with pytest.raises(ValueError, match="attn_implementation='flash_attention_2' is not supported"):
        get_peft_model(model, DualPromptConfig(**SMALL), adapter_name="t0")


def test_gradient_id_superposes_prompts_with_the_masks():
    """DualPrompt-Soft-TF with Gradient-ID: prompts are mixed with the same per-sample alphas as the masks, so a
    one-hot row reproduces that adapter alone, and per-sample Gradient-ID on a batch equals each sample alone."""
    from peft_memory import gradient_id

    model = two_tasks("vit_cls", "sdpa", SoftMaskConfig, use_prompts=True, init_weights=False)
    inputs = make_inputs("vit_cls", batch=4)
    alphas = torch.tensor([[1.0, 0.0], [0.0, 1.0], [0.0, 1.0], [1.0, 0.0]])
    with torch.no_grad():
        with model.base_model.superposition(["t0", "t1"], alphas):
            sup = model(**inputs).logits  # heads concatenated: 3 + 2 columns
        for row, t in enumerate([0, 1, 1, 0]):
            alone = model(**{k: v[row : row + 1] for k, v in inputs.items()}, adapter_names=[f"t{t}"]).logits
            cols = slice(0, 3) if t == 0 else slice(3, 5)
            torch.testing.assert_close(sup[row : row + 1, cols], alone, rtol=0, atol=1e-5)
    batched = gradient_id(model, inputs, ["t0", "t1"])
    single = torch.cat([gradient_id(model, {k: v[i : i + 1] for k, v in inputs.items()}, ["t0", "t1"])
                        for i in range(4)])
    assert torch.equal(batched, single)

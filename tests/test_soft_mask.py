"""SoftMask tuner, what only soft masks do: cached, merged and unmerged weights, default targets, PEFT's own
`disable_adapter`, merge_and_unload. The checks every tuner shares run in test_tuners.py."""

import copy

import pytest
import torch
from conftest import make_inputs, make_model
from peft import get_peft_model

import peft_memory  # noqa: F401  (registers the peft types)
from peft_memory import SoftMaskConfig
from peft_memory.tuners.soft_mask import SoftMaskLayer


def two_task_model(kind, attn="eager"):
    model = get_peft_model(make_model(kind, attn), SoftMaskConfig(label_names=["a", "b", "c"], init_weights=False),
                           adapter_name="t0")
    model.add_adapter("t1", SoftMaskConfig(num_labels=2, init_weights=False))
    return model.eval()


@pytest.mark.parametrize("kind", ["bert_cls", "vit_cls"])
def test_peft_disable_adapter_and_a_headless_adapter_give_the_base_output(kind):
    """Soft masks wrap real layers, so PEFT's own ``disable_adapter()`` works (the no-layer tuners need
    ``adapters_disabled()``); an adapter without a head keeps the base classifier, bit for bit at init."""
    base = make_model(kind)
    inputs = make_inputs(kind)
    with torch.no_grad():
        ref = base(**inputs).logits
        model = get_peft_model(copy.deepcopy(base), SoftMaskConfig(), adapter_name="t0")  # masks = 1, no head
        assert torch.equal(model(**inputs).logits, ref)
        model.add_adapter("t1", SoftMaskConfig(num_labels=2, init_weights=False))
        model.set_adapter("t1")
        assert model(**inputs).logits.shape == (4, 2)
        with model.disable_adapter():
            assert torch.equal(model(**inputs).logits, ref)


@pytest.mark.parametrize("kind", ["bert_cls", "vit"])
def test_cached_and_merged_inference_equal_training_path(kind):
    model = two_task_model(kind)
    inputs = make_inputs(kind)
    model.set_adapter("t0")
    with torch.enable_grad():
        ref = model(**inputs).logits.detach()  # W * M built with autograd
    with torch.no_grad():
        cached = model(**inputs).logits  # cached W * M
        torch.testing.assert_close(cached, ref, rtol=0, atol=0)
        layer = next(m for m in model.modules() if isinstance(m, SoftMaskLayer))
        layer.soft_mask_values["t0"].mul_(0.5)  # an in-place edit invalidates the cache
        assert not torch.equal(model(**inputs).logits, cached)
        layer.soft_mask_values["t0"].mul_(2.0)
        model.base_model.merge_adapter(["t0"])
        torch.testing.assert_close(model(**inputs).logits, ref, rtol=0, atol=1e-6)
        model.base_model.unmerge_adapter()
        assert torch.equal(model(**inputs).logits, cached)


def test_merge_with_zero_mask_unmerges_exactly():
    model = two_task_model("bert_cls")
    layer = next(m for m in model.modules() if isinstance(m, SoftMaskLayer))
    weight = layer.get_base_layer().weight.detach().clone()
    with torch.no_grad():
        layer.soft_mask_values["t0"].zero_()
    model.set_adapter("t0")
    model.base_model.merge_adapter(["t0"])
    assert layer.get_base_layer().weight.abs().sum() == 0
    model.base_model.unmerge_adapter()
    assert torch.equal(layer.get_base_layer().weight, weight)


def test_default_targets_are_qkv_of_last_three_layers():
    model = get_peft_model(make_model("bert_cls"), SoftMaskConfig(num_labels=2), adapter_name="t0")
    names = model.base_model.targeted_module_names
    assert len(names) == 9
    assert {n.split(".")[3] for n in names} == {"1", "2", "3"}
    assert all(n.endswith(("self.query", "self.key", "self.value")) for n in names)
    assert not any(".bias" in n for n, _ in model.named_parameters() if "soft_mask." in n)


def test_ffn_option_on_bert_does_not_catch_attention_output():
    model = get_peft_model(make_model("bert_cls"), SoftMaskConfig(mask_ffn=True, layers_to_transform=[3]),
                           adapter_name="t0")
    names = sorted(model.base_model.targeted_module_names)
    assert [n.split("layer.3.")[1] for n in names] == [
        "attention.self.key", "attention.self.query", "attention.self.value", "intermediate.dense", "output.dense"]


def test_head_only_adapter_masks_nothing():
    model = get_peft_model(make_model("vit_cls"), SoftMaskConfig(target_modules=[], num_labels=4), adapter_name="h")
    assert not any(isinstance(m, SoftMaskLayer) for m in model.modules())
    assert model(**make_inputs("vit_cls")).logits.shape == (4, 4)
    assert {n for n, p in model.named_parameters() if p.requires_grad} == {
        "base_model.soft_mask_head.h.weight", "base_model.soft_mask_head.h.bias"}


def test_layer_out_of_range_and_bad_adapter_names():
    with pytest.raises(ValueError, match=r"out of range: the model has 4 layers \(valid: 0..3\)"):
        get_peft_model(make_model("bert_cls"), SoftMaskConfig(layers_to_transform=[4]), adapter_name="t0")
    model = two_task_model("bert_cls")
    with pytest.raises(ValueError, match="adapter_names has 2 entries but the batch has 4 samples"):
        model(**make_inputs("bert_cls"), adapter_names=["t0", "t1"])
    with pytest.raises(ValueError, match=r"unknown adapters \['t9'\]"):
        model(**make_inputs("bert_cls"), adapter_names=["t9"] * 4)
    with pytest.raises(ValueError, match="substring of the tuner prefix"):
        model.add_adapter("mask", SoftMaskConfig())


def test_unsupported_family_error():
    from transformers import GPT2Config, GPT2Model

    with pytest.raises(ValueError, match="Unsupported model family: model_type='gpt2'"):
        get_peft_model(GPT2Model(GPT2Config(n_layer=1, n_embd=8, n_head=2)), SoftMaskConfig(), adapter_name="t0")


@pytest.mark.parametrize("kind", ["bert_cls", "vit_cls"])
def test_merge_and_unload_gives_a_standalone_model_with_the_task_head(kind):
    model = two_task_model(kind)
    model.set_adapter("t0")
    inputs = make_inputs(kind)
    with torch.no_grad():
        expected = model(**inputs).logits
        merged = model.merge_and_unload()
        assert not any(isinstance(m, SoftMaskLayer) for m in merged.modules())
        torch.testing.assert_close(merged(**inputs).logits, expected, rtol=0, atol=1e-5)
    assert merged.config.id2label == {0: "a", 1: "b", 2: "c"} and merged.config.num_labels == 3


def test_unload_removes_heads_and_restores_the_base_model():
    base = make_model("bert_cls")
    inputs = make_inputs("bert_cls")
    with torch.no_grad():
        ref = base(**inputs).logits
        model = get_peft_model(copy.deepcopy(base), SoftMaskConfig(num_labels=5, init_weights=False),
                               adapter_name="t0")
        assert model(**inputs).logits.shape == (4, 5)
        assert torch.equal(model.unload()(**inputs).logits, ref)


def test_gradient_id_under_bf16_autocast_matches_fp32_gradients():
    """Mixed precision (``--mixed_precision bf16``): the shared-superposition backward casts the bf16 gradient to the
    weights' dtype (it raised a dtype error before). Its task gradients agree with fp32 to bf16 precision."""
    from peft_memory.tuners.soft_mask.layer import SharedSuperposition

    torch.manual_seed(0)
    x = torch.randn(3, 5, 16)
    weights = torch.randn(2, 8, 16)
    shared = torch.full((2,), 0.5)
    grads = {}
    for name, enabled in (("fp32", False), ("bf16", True)):
        alphas = shared.expand(3, 2).clone().requires_grad_(True)
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=enabled):
            out = SharedSuperposition.apply(x, alphas, weights, shared)
        assert out.dtype == (torch.bfloat16 if enabled else torch.float32)
        (grads[name],) = torch.autograd.grad(out.float().pow(2).sum(), alphas)
    assert grads["bf16"].dtype == torch.float32
    torch.testing.assert_close(grads["bf16"], grads["fp32"], rtol=0.05, atol=0.5)


@pytest.mark.parametrize("kind", ["bert_cls", "vit_cls"])
def test_a_mixed_batch_under_bf16_autocast_equals_each_adapter_alone(kind):
    """Accelerate's mixed precision runs the forward under autocast: the masked matmuls come out in bf16 while the
    residual stream is fp32, so a batch routed to several adapters must gather the rows in the matmul's dtype (it
    used to fail with 'Index put requires the source and destination dtypes match')."""
    model = two_task_model(kind)
    inputs = make_inputs(kind)
    routes = ["t0", "t1", "t0", "t1"]
    with torch.no_grad(), torch.autocast("cpu", dtype=torch.bfloat16):
        mixed = model(**inputs, adapter_names=routes).logits
        alone = {t: model(**inputs, adapter_names=[t] * 4).logits for t in ("t0", "t1")}
    for row, t in enumerate(routes):
        width = 3 if t == "t0" else 2
        torch.testing.assert_close(mixed[row, :width], alone[t][row, :width], atol=0.05, rtol=0.02)

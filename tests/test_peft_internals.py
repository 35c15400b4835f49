"""One behavioural test per PEFT behaviour peft_memory relies on: a PEFT upgrade that changes one fails here, loudly,
through what our code would see (no assertion reads PEFT's source text)."""

import peft
import pytest
import torch
from conftest import make_inputs, make_model
from peft import PeftModel, get_peft_model, get_peft_model_state_dict, mapping

import peft_memory
from peft_memory import (
    DualPromptConfig,
    DualPromptModel,
    MemoryTokenConfig,
    MemoryTokenModel,
    PeftMemoryType,
    SoftMaskConfig,
    SoftMaskModel,
)

PROMPTS = {"e_prompt_layers": [2], "g_prompt_layers": [0]}


def test_peft_version_is_the_pinned_minor():
    assert peft.__version__.startswith("0.21."), "peft_memory is pinned to peft>=0.21,<0.22"


def test_dispatch_mappings_exist_and_hold_our_types():
    for name in peft_memory.registry.PEFT_MAPPINGS:
        assert isinstance(getattr(mapping, name), dict), name
    for peft_type, config, tuner in (("SOFT_MASK", SoftMaskConfig, SoftMaskModel),
                                     ("DUAL_PROMPT", DualPromptConfig, DualPromptModel),
                                     ("MEMORY_TOKEN", MemoryTokenConfig, MemoryTokenModel)):
        assert mapping.PEFT_TYPE_TO_CONFIG_MAPPING[peft_type] is config
        assert mapping.PEFT_TYPE_TO_TUNER_MAPPING[peft_type] is tuner
        assert mapping.PEFT_TYPE_TO_PREFIX_MAPPING[peft_type] == tuner.prefix


def test_peft_type_enum_is_still_closed():
    # If PEFT ever opens PeftType, registration could use register_peft_method instead of the mappings.
    assert "SOFT_MASK" not in peft.PeftType.__members__
    with pytest.raises(Exception, match="Unknown PEFT type"):
        peft.utils.register_peft_method(name="soft_mask", config_cls=SoftMaskConfig, model_cls=SoftMaskModel)
    assert PeftMemoryType.SOFT_MASK == "SOFT_MASK" and hash(PeftMemoryType.SOFT_MASK) == hash("SOFT_MASK")


def test_forward_enters_the_tuners_hooks_with_adapter_names_and_strips_them():
    model = get_peft_model(make_model("bert_cls"), SoftMaskConfig(num_labels=2), "t0")
    seen, base_kwargs = [], []
    original = type(model.base_model)._enable_peft_forward_hooks

    def spy(self, *args, **kwargs):
        seen.append(kwargs.get("adapter_names"))
        return original(self, *args, **kwargs)

    handle = model.get_base_model().register_forward_pre_hook(
        lambda m, args, kwargs: base_kwargs.append(sorted(kwargs)), with_kwargs=True)
    type(model.base_model)._enable_peft_forward_hooks = spy
    try:
        model(**make_inputs("bert_cls"), adapter_names=["t0"] * 4)
    finally:
        type(model.base_model)._enable_peft_forward_hooks = original
        handle.remove()
    assert seen == [["t0"] * 4]
    assert base_kwargs and "adapter_names" not in base_kwargs[0]


def test_state_dict_selection_is_structural_over_tuner_attributes():
    """Everything on a tuner layer but ``base_layer`` and everything on the tuner but ``model`` is saved: our
    tuner-level heads, prompts and keys need no save code."""
    model = get_peft_model(make_model("vit_cls"), SoftMaskConfig(num_labels=2, use_prompts=True, **PROMPTS), "t0")
    keys = set(get_peft_model_state_dict(model, adapter_name="t0"))
    for expected in ("soft_mask_head.weight", "soft_mask_e_key", "soft_mask_g_prompt", "soft_mask_e_prompt"):
        assert any(k.endswith(expected) or f"{expected}." in k for k in keys), (expected, keys)
    assert any(k.endswith("q_proj.soft_mask_values") for k in keys)  # the tuner layers' masks
    assert not any("base_layer" in k or k.endswith("classifier.weight") for k in keys)


def test_add_adapter_calls_inject_adapter_directly(monkeypatch):
    """So shared containers are created lazily in inject_adapter, not in _pre_injection_hook or __init__."""
    calls = []
    original = SoftMaskModel.inject_adapter
    monkeypatch.setattr(SoftMaskModel, "_pre_injection_hook", lambda self, *a, **k: calls.append("pre-hook"))
    monkeypatch.setattr(SoftMaskModel, "inject_adapter",
                        lambda self, model, name, *a, **k: (calls.append(name), original(self, model, name, *a, **k)))
    model = get_peft_model(make_model("bert_cls"), SoftMaskConfig(num_labels=2), "t0")
    model.add_adapter("t1", SoftMaskConfig(num_labels=2))
    assert [c for c in calls if c != "pre-hook"] == ["t0", "t1"]
    assert calls.count("pre-hook") <= 1  # at most once, from __init__: add_adapter does not run it


def test_dummy_target_modules_wrap_nothing_without_an_error():
    model = get_peft_model(make_model("bert_cls"), DualPromptConfig(num_labels=2, **PROMPTS), "t0")
    assert model.base_model.targeted_module_names == []
    from peft.tuners.tuners_utils import BaseTunerLayer

    # the only tuner layer is the tuner-level view (tuner_level.py), beside the base model, never inside it
    assert [type(m).__name__ for m in model.modules() if isinstance(m, BaseTunerLayer)] == ["TunerLevelLayer"]
    assert not any(isinstance(m, BaseTunerLayer) for m in model.get_base_model().modules())


def test_disable_adapter_goes_through_enable_adapter_layers():
    model = get_peft_model(make_model("bert_cls"), SoftMaskConfig(num_labels=2), "t0")
    with model.disable_adapter():
        assert model.base_model._adapters_off
    assert not model.base_model._adapters_off


def test_exclude_modules_and_layers_to_transform_reach_target_matching():
    """PEFT's target matching reads these fields of our config."""
    config = SoftMaskConfig(num_labels=2, layers_to_transform=[3], exclude_modules=["query"])
    names = get_peft_model(make_model("bert_cls"), config, "t0").base_model.targeted_module_names
    assert sorted(n.rsplit(".", 1)[-1] for n in names) == ["key", "value"] and all(".3." in n for n in names)


def test_disable_adapter_needs_a_tuner_layer():
    """Why tuner_level.py exists: PEFT's disable_adapter / get_model_status raise when the model holds no tuner
    layer, which tuners that wrap no module (DualPrompt, memory tokens) would not have. If PEFT relaxes this, the
    TunerLevelLayer can go."""
    from peft.peft_model import get_layer_status

    with pytest.raises(ValueError, match="No adapter layers found in the model"):
        get_layer_status(make_model("bert_cls"))
    model = get_peft_model(make_model("bert_cls"), DualPromptConfig(num_labels=2, **PROMPTS), "t0")
    with model.disable_adapter(), torch.no_grad():
        assert model.base_model._adapters_off
        model(**make_inputs("bert_cls"))
    assert not model.base_model._adapters_off


def test_loading_goes_through_the_config_mapping(tmp_path):
    """PeftModel.from_pretrained finds our config and tuner classes by peft_type, nothing else."""
    model = get_peft_model(make_model("bert_cls"), MemoryTokenConfig(num_labels=2), "t0")
    model.save_pretrained(tmp_path)
    loaded = PeftModel.from_pretrained(make_model("bert_cls"), tmp_path / "t0", adapter_name="t0")
    assert isinstance(loaded.base_model, MemoryTokenModel)
    assert isinstance(loaded.peft_config["t0"], MemoryTokenConfig)

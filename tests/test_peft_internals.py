"""One test per PEFT internal peft_memory relies on: a PEFT upgrade that changes one fails here, loudly."""

import inspect

import peft
from peft import PeftModel, mapping
from peft.tuners import tuners_utils

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


def test_peft_version_is_the_pinned_minor():
    assert peft.__version__.startswith("0.21."), "peft_memory is pinned to peft>=0.21,<0.22"


def test_dispatch_mappings_exist_and_hold_our_types():
    for name in peft_memory.registry.PEFT_MAPPINGS:
        assert isinstance(getattr(mapping, name), dict), name
    assert mapping.PEFT_TYPE_TO_CONFIG_MAPPING["SOFT_MASK"] is SoftMaskConfig
    assert mapping.PEFT_TYPE_TO_TUNER_MAPPING["SOFT_MASK"] is SoftMaskModel
    assert mapping.PEFT_TYPE_TO_PREFIX_MAPPING["SOFT_MASK"] == "soft_mask_"
    assert mapping.PEFT_TYPE_TO_CONFIG_MAPPING["DUAL_PROMPT"] is DualPromptConfig
    assert mapping.PEFT_TYPE_TO_TUNER_MAPPING["DUAL_PROMPT"] is DualPromptModel
    assert mapping.PEFT_TYPE_TO_CONFIG_MAPPING["MEMORY_TOKEN"] is MemoryTokenConfig
    assert mapping.PEFT_TYPE_TO_TUNER_MAPPING["MEMORY_TOKEN"] is MemoryTokenModel
    assert mapping.PEFT_TYPE_TO_PREFIX_MAPPING["MEMORY_TOKEN"] == "memory_token_"


def test_peft_type_enum_is_still_closed():
    # If PEFT ever opens PeftType, registration could use register_peft_method instead of the mappings.
    assert "SOFT_MASK" not in peft.PeftType.__members__
    assert PeftMemoryType.SOFT_MASK == "SOFT_MASK" and hash(PeftMemoryType.SOFT_MASK) == hash("SOFT_MASK")


def test_peft_model_forward_enters_tuner_forward_hooks_and_strips_adapter_names():
    assert '"adapter_names"' in inspect.getsource(PeftModel.__init__).split("special_peft_forward_args =")[1][:60]
    src = inspect.getsource(PeftModel._enable_peft_forward_hooks)
    assert "self.base_model._enable_peft_forward_hooks" in src
    assert "special_peft_forward_args" in inspect.getsource(PeftModel.forward)


def test_state_dict_selection_is_structural_over_tuner_attributes():
    src = inspect.getsource(tuners_utils._get_tuner_state_dict_key_prefixes)
    assert "isinstance(module, BaseTuner)" in src and '("base_layer", "model")' in src


def test_add_adapter_calls_inject_adapter_directly():
    # so shared containers are created lazily in inject_adapter, not in _pre_injection_hook or __init__
    assert "self.base_model.inject_adapter(" in inspect.getsource(PeftModel.add_adapter)
    assert "self.inject_adapter(" in inspect.getsource(tuners_utils.BaseTuner.__init__)


def test_dummy_target_modules_skip_the_no_match_error():
    from peft.utils.constants import DUMMY_TARGET_MODULES

    assert DUMMY_TARGET_MODULES == "dummy-target-modules"
    assert "uses_dummy_target_modules" in inspect.getsource(tuners_utils.BaseTuner.inject_adapter)


def test_disable_adapter_goes_through_disable_adapter_layers():
    src = inspect.getsource(PeftModel.disable_adapter)
    assert "disable_adapter_layers" in src or "_enable_adapter_layers" in src
    assert "_enable_adapter_layers(" in inspect.getsource(tuners_utils.BaseTuner.disable_adapter_layers)


def test_check_target_module_exists_reads_the_fields_our_config_has():
    src = inspect.getsource(tuners_utils.check_target_module_exists)
    for field in ("exclude_modules", "target_parameters", "layers_to_transform", "layers_pattern", "modules_to_save"):
        assert field in src
        assert field in SoftMaskConfig.__dataclass_fields__


def test_disable_adapter_needs_a_tuner_layer():
    """Why tuners without wrapped layers offer `adapters_disabled()`: PeftModel.disable_adapter asks
    get_model_status, which raises when no tuner layer exists. If PEFT relaxes this, drop the workaround."""
    assert "get_model_status" in inspect.getsource(PeftModel.disable_adapter)
    assert "No adapter layers found" in inspect.getsource(peft.peft_model.get_layer_status)

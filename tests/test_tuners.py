"""Every tuner through the shared checks of testing_common.py, over one matrix: method configuration x model family
(BERT with and without classifier, ViT with and without classifier, DINOv2) x attention implementation."""

import pytest
from conftest import MODEL_KINDS
from testing_common import MethodCase, PeftMemoryTester

from peft_memory import DualPromptConfig, MemoryTokenConfig, SoftMaskConfig

PROMPTS = {"g_prompt_layers": [0], "e_prompt_layers": [1, 2], "g_prompt_length": 2, "e_prompt_length": 3}

METHOD_CASES = [
    MethodCase("soft_mask", SoftMaskConfig,
               ({"label_names": ["a", "b", "c"], "init_weights": False}, {"num_labels": 2, "init_weights": False}),
               identity_at_init=True),
    MethodCase("soft_mask_ffn_output_layers_0_3", SoftMaskConfig,
               ({"num_labels": 3, "init_weights": False, "mask_ffn": True, "mask_attention_output": True,
                 "layers_to_transform": [0, 3]},
                {"num_labels": 2, "init_weights": False, "mask_ffn": True, "mask_attention_output": True,
                 "layers_to_transform": [0, 3]})),
    MethodCase("soft_mask_prompts", SoftMaskConfig,
               ({"num_labels": 3, "init_weights": False, "use_prompts": True, **PROMPTS},
                {"num_labels": 2, "init_weights": False, "use_prompts": True, **PROMPTS})),
    MethodCase("dual_prompt", DualPromptConfig, ({"num_labels": 3, **PROMPTS}, {"num_labels": 2, **PROMPTS})),
    MethodCase("dual_prompt_e_only_layers_0_3", DualPromptConfig,
               ({"num_labels": 3, "g_prompt_length": 0, "e_prompt_length": 4, "e_prompt_layers": [0, 3]},
                {"num_labels": 2, "g_prompt_length": 0, "e_prompt_length": 4, "e_prompt_layers": [0, 3]})),
    MethodCase("memory_token", MemoryTokenConfig, ({"num_labels": 3}, {"num_labels": 2}),
               identity_at_init=True, identity_kwargs={"num_memory_tokens": 3}),
    MethodCase("memory_token_mixed_sizes_after_norm", MemoryTokenConfig,
               ({"num_labels": 3, "num_memory_tokens": 1, "memory_after_norm": True},
                {"num_labels": 2, "num_memory_tokens": 4, "layers_to_transform": [1, 3]}),
               identity_at_init=True, identity_kwargs={"num_memory_tokens": 2, "layers_to_transform": [2]}),
]
ATTNS = ["eager", "sdpa"]
TEST_CASES = [(case, kind, attn) for case in METHOD_CASES for kind in MODEL_KINDS for attn in ATTNS]
IDS = [f"{case.name}-{kind}-{attn}" for case, kind, attn in TEST_CASES]


@pytest.mark.parametrize("case,kind,attn", TEST_CASES, ids=IDS)
class TestTuners(PeftMemoryTester):
    def test_identity_at_init(self, case, kind, attn):
        self._test_identity_at_init(case, kind, attn)

    def test_disabled_is_base(self, case, kind, attn):
        self._test_disabled_is_base(case, kind, attn)

    def test_routing_equals_alone(self, case, kind, attn):
        self._test_routing_equals_alone(case, kind, attn)

    def test_only_the_active_adapter_trains(self, case, kind, attn):
        self._test_only_the_active_adapter_trains(case, kind, attn)

    def test_save_load_round_trip(self, case, kind, attn, tmp_path):
        self._test_save_load_round_trip(case, kind, attn, tmp_path)


HEAD_ERRORS = [
    ({"num_labels": 0}, "num_labels must be a positive integer"),
    ({"num_labels": 3, "label_names": ["a"]}, "label_names has 1 entries but num_labels=3"),
    ({"label_names": "abc"}, "label_names must be a non-empty list of class names"),
]
CONFIG_ERRORS = [
    *[(cls, kwargs, message) for cls in (SoftMaskConfig, DualPromptConfig, MemoryTokenConfig)
      for kwargs, message in HEAD_ERRORS],
    (SoftMaskConfig, {"mask_init": float("nan")}, "mask_init must be a finite number"),
    (SoftMaskConfig, {"layers_to_transform": [-1]}, "layers_to_transform must hold non-negative 0-based layer indices"),
    (SoftMaskConfig, {"use_prompts": True, "g_prompt_length": 0, "e_prompt_length": 0},
     "both 0: no prompt would be attached"),
    (DualPromptConfig, {"g_prompt_layers": [-1]}, "g_prompt_layers must hold non-negative"),
    (DualPromptConfig, {"e_prompt_length": -2}, "e_prompt_length must be a non-negative integer"),
    (DualPromptConfig, {"g_prompt_length": 0, "e_prompt_length": 0}, "both 0: no prompt would be attached"),
    (MemoryTokenConfig, {"num_memory_tokens": -1}, "num_memory_tokens must be a non-negative integer"),
    (MemoryTokenConfig, {"attention": "cross"}, r"attention='cross' is unknown; use one of \['concatenation'"),
    (MemoryTokenConfig, {"init_std": 0.0}, "init_std must be a positive number"),
]


@pytest.mark.parametrize("cls,kwargs,message", CONFIG_ERRORS,
                         ids=[f"{c.__name__}-{'-'.join(k)}" for c, k, _ in CONFIG_ERRORS])
def test_config_errors(cls, kwargs, message):
    with pytest.raises(ValueError, match=message):
        cls(**kwargs)

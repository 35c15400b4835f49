"""PEFT's own common checks (``PeftCommonTester`` of the installed peft's sdist, loaded by ``peft_upstream.py``)
over our methods: method x (with / without ``label_names``) x BERT / ViT x eager / sdpa attention.

Every ``_test_*`` check of ``PeftCommonTester`` runs; a check a method cannot apply is in :data:`SKIPS` with its
reason, reviewed. A check added by a newer peft fails here until it is either passing or reviewed into the list.
"""

from __future__ import annotations

import inspect
import json
import os

import pytest
import torch
import transformers
from conftest import bert_config, make_inputs, vit_config
from peft_upstream import load_testing_common

from peft_memory import DualPromptConfig, MemoryTokenConfig, SoftMaskConfig

testing_common = load_testing_common()
PeftCommonTester = testing_common.PeftCommonTester

PROMPTS = {"g_prompt_layers": [0], "e_prompt_layers": [1, 2], "g_prompt_length": 2, "e_prompt_length": 3}
#: method -> (config class, kwargs making the adapter differ from the base model).
METHODS = {
    "soft_mask": (SoftMaskConfig, {"init_weights": False}),
    "dual_prompt": (DualPromptConfig, PROMPTS),
    "memory_token": (MemoryTokenConfig, {}),
}
FAMILIES = {"bert": (bert_config, transformers.BertForSequenceClassification, transformers.BertModel),
            "vit": (vit_config, transformers.ViTForImageClassification, transformers.ViTModel)}


class TinyModels:
    """``transformers_class`` of the checks: ``from_pretrained("<family>[_cls]-<attn>")`` builds a seeded tiny model
    (the same weights each call); a folder loads what a check saved there."""

    @classmethod
    def from_pretrained(cls, model_id, dtype=None, **kwargs):
        if os.path.isdir(model_id):
            with open(os.path.join(model_id, "config.json")) as f:
                arch = json.load(f)["architectures"][0]
            return getattr(transformers, arch).from_pretrained(model_id, dtype=dtype, **kwargs)
        family_cls, attn = model_id.split("-")
        family = family_cls.removesuffix("_cls")
        make_config, with_head, bare = FAMILIES[family]
        torch.manual_seed(0)
        config = make_config(attn)
        config._name_or_path = model_id
        model = (with_head if family_cls.endswith("_cls") else bare)(config).eval()  # as from_pretrained returns it
        return model.to(dtype) if dtype is not None else model


MERGES = ("_test_merge_layers", "_test_merge_layers_fp16", "_test_merge_layers_is_idempotent", "_test_merge_layers_multi",
          "_test_merge_layers_nan", "_test_safe_merge")
REFUSES_MERGE = ("merge_adapter / merge_and_unload raise ValueError (prompts and memory are not weights; "
                 "test_peft_conformance.py checks the refusal): the check expects a merge")
KEYS_NEED_LABELS = ("the E-keys learn only from the loss's matching term, which needs labels; the check back-propagates "
                    "logits.sum() without labels and asks every trainable parameter for a gradient "
                    "(test_peft_conformance.py checks the keys' gradient with labels)")

#: (check, method or None for every method, model ids or None for every model, reason): the checks that cannot apply,
#: reviewed one by one; the closing note counts them per reason.
SKIPS = [
    ("_test_generate", None, None, "calls generate(): our base models are encoders (BERT, ViT)"),
    ("_test_generate_pos_args", None, None, "calls generate(): encoders only"),
    ("_test_generate_half_prec", None, None, "calls generate(): encoders only"),
    ("_test_generate_with_mixed_adapter_batches_and_beam_search", None, None, "calls generate(): encoders only"),
    ("_test_disable_adapter", None, None, "calls generate() whenever the model has it, and every PeftModel has it: "
                                          "encoders only; test_peft_conformance.py checks disable_adapter()"),
    ("_test_passing_input_embeds_works", None, None, "decoder-only: calls generate() on inputs_embeds"),
    ("_test_weighted_combination_of_adapters", None, None, "add_weighted_adapter is LoRA/IA3 arithmetic on low-rank "
                                                           "factors; masks, prompts and memory have no such sum"),
    ("_test_lora_conversion", None, None, "converts a W + delta adapter to LoRA; no method here is additive "
                                          "(supports_lora_conversion() is False)"),
    ("_test_training_prompt_learning_tasks", None, None, "PEFT's PromptLearningConfig methods only"),
    ("_test_prepare_for_training", None, ("vit_cls-eager", "vit_cls-sdpa", "vit-eager", "vit-sdpa"),
     "feeds input_ids to get_input_embeddings(): text models only"),
    *[(check, method, None, REFUSES_MERGE) for check in MERGES for method in ("dual_prompt", "memory_token")],
    ("_test_merge_layers_multi", "soft_mask", None, "merges two adapters into one weight; soft masks of different "
                                                    "tasks do not compose and merge refuses (test_soft_mask.py)"),
    ("_test_training", "dual_prompt", None, KEYS_NEED_LABELS),
    ("_test_training_gradient_checkpointing", "dual_prompt", None, KEYS_NEED_LABELS),
    ("_test_training_layer_indexing", "memory_token", None,
     "counts trainable parameter tensors: an adapter's memory is one (layers, tokens, hidden) tensor, whose size, "
     "not count, layers_to_transform changes"),
    ("_test_unload_adapter", "memory_token", ("bert-eager", "bert-sdpa", "vit-eager", "vit-sdpa"),
     "without label_names a memory-token adapter has no class token and head, so it changes no output (the paper's "
     "masking keeps the original tokens; get_peft_model warns): the check expects a change"),
]

#: Defects still open (issue 14): strict xfail, so a fix turns them into failures until removed from this list.
KNOWN_DEFECTS: list[tuple] = []


def _match(rules, check, method, model_id):
    return next((reason for c, m, ids, reason in rules
                 if c == check and m in (None, method) and (ids is None or model_id in ids)), None)


#: extra arguments of the checks that take more than (model_id, config_cls, config_kwargs).
VARIANTS = {
    "_test_save_pretrained": [{"safe_serialization": True}, {"safe_serialization": False}],
    "_test_save_pretrained_selected_adapters": [{"safe_serialization": True}, {"safe_serialization": False}],
    "_test_add_adapter_no_autocast_adapter_dtype": [{"dtype": torch.bfloat16}, {"dtype": torch.float16}],
    "_test_training_gradient_checkpointing": [{"use_reentrant": True}, {"use_reentrant": False}],
    "_test_generate_pos_args": [{"raises_err": False}],
    "_test_passing_input_embeds_works": [{"test_name": "bert"}],
}
HELPERS = {"_test_weighted_combination_of_adapters_lora", "_test_weighted_combination_of_adapters_ia3"}

CHECKS = []
for _name, _fn in inspect.getmembers(PeftCommonTester, inspect.isfunction):
    if not _name.startswith("_test_") or _name in HELPERS:
        continue
    for _extra in VARIANTS.get(_name, [{}]):
        CHECKS.append((_name, _extra))

MODEL_IDS = [f"{family}{head}-{attn}" for family in FAMILIES for head in ("_cls", "") for attn in ("eager", "sdpa")]
CASES, IDS = [], []
for _method, (_cls, _kwargs) in METHODS.items():
    for _model_id in MODEL_IDS:
        with_labels = _model_id.split("-")[0].endswith("_cls")  # task heads on classifiers, none on bare encoders
        kwargs = {**_kwargs, **({"label_names": ["a", "b", "c"]} if with_labels else {})}
        for _check, _extra in CHECKS:
            _defect = _match(KNOWN_DEFECTS, _check, _method, _model_id)
            _marks = [pytest.mark.xfail(strict=True, reason=_defect)] if _defect else []
            CASES.append(pytest.param(_check, _extra, _model_id, _cls, kwargs, _method, marks=_marks))
            suffix = "-".join(f"{k}={getattr(v, '__name__', v)}".replace("torch.", "") for k, v in _extra.items())
            IDS.append(f"{_check[6:]}{'-' + suffix if suffix else ''}-{_method}-{_model_id}")


class TestPeftCommon(PeftCommonTester):
    transformers_class = TinyModels
    torch_device = "cpu"
    model_id = None

    def prepare_inputs_for_testing(self):
        """The tiny model's inputs, without labels: PEFT's checks read ``output[0]`` as the logits."""
        return make_inputs(self.model_id.split("-")[0].removesuffix("_cls"))

    @pytest.mark.parametrize("check,extra,model_id,config_cls,config_kwargs,method", CASES, ids=IDS)
    def test_peft_check(self, check, extra, model_id, config_cls, config_kwargs, method):
        reason = _match(SKIPS, check, method, model_id)
        if reason:
            pytest.skip(reason)
        self.model_id = model_id
        if "test_name" in extra:
            getattr(self, check)(extra["test_name"], model_id, config_cls, dict(config_kwargs))
        else:
            getattr(self, check)(model_id, config_cls, dict(config_kwargs), **extra)

"""Soft-TransFormers tuner (Kang et al.): per-task soft masks over frozen weights, one adapter per task."""

from __future__ import annotations

from peft.utils.constants import DUMMY_TARGET_MODULES
from torch import nn

from ...families import get_family, last_layers
from ..base import ContinualTuner
from ..prompts import PROMPT_ATTRS, PromptsMixin
from ..validation import check_layers_in_range
from .layer import Linear, SoftMaskLayer

#: The masks' parameter name in adapters saved by peft_memory 0.1; converted on load.
LEGACY_MASK_NAME = "soft_mask"


def rename_legacy_keys(state_dict: dict) -> dict:
    """``state_dict`` with the masks of adapters saved by peft_memory 0.1 (``<module>.soft_mask``) renamed to
    ``<module>.soft_mask_values``; other keys unchanged."""
    return {(k + "_values" if k.endswith(f".{LEGACY_MASK_NAME}") else k): v for k, v in state_dict.items()}


class SoftMaskModel(PromptsMixin, ContinualTuner):
    """Creates a Soft-TransFormers model from a transformers ViT, DINOv2 or BERT model.

    Use through PEFT: ``peft.get_peft_model(model, SoftMaskConfig(label_names=[...]), adapter_name="task_0")``,
    then ``add_adapter("task_1", SoftMaskConfig(...))`` for each new task. Each adapter masks the targeted frozen
    weights (``x (W * M_t)^T + b``) and owns a head over its task's classes.

    Forward: ``logits`` has shape ``(batch, num_labels)`` of the active adapter; with ``adapter_names=[...]`` (one
    name per sample) each row uses its own adapter and ``logits`` is ``(batch, max num_labels)``, padded with the
    dtype's most negative value. With ``labels`` (class indices ``(batch,)``), ``loss`` is the task head's
    cross-entropy (:mod:`peft_memory.tuners.task_loss`), never the base classifier's.

    Raises:
        ValueError: for an unsupported model family, a layer index out of range, or a targeted module that is not an
            ``nn.Linear``.
    """

    prefix: str = "soft_mask_"
    tuner_layer_cls = SoftMaskLayer
    target_module_mapping: dict[str, list[str]] = {}
    tuner_level_names = ("head", *PROMPT_ATTRS)

    @classmethod
    def _remap_adapter_state_dict_for_load(cls, model, config, adapter_name, state_dict):
        """PEFT's key remapping, after renaming the masks of adapters saved by peft_memory 0.1 (``<module>.soft_mask``, a
        name without the tuner prefix that PEFT's missing-key check could not see) to ``<module>.soft_mask_values``."""
        return super()._remap_adapter_state_dict_for_load(model, config, adapter_name,
                                                          rename_legacy_keys(state_dict))

    def _prepare_adapter_config(self, peft_config, model_config):
        family = get_family(model_config)
        n_layers = int(model_config["num_hidden_layers"])
        if peft_config.target_modules is None:
            targets = {family.query, family.key, family.value}
            if peft_config.mask_attention_output:
                targets.add(family.attention_output)
            if peft_config.mask_ffn:
                targets.update(family.ffn)
                if family.name == "bert" and not peft_config.mask_attention_output:
                    # BERT's FFN output "output.dense" is also a suffix of "attention.output.dense".
                    excluded = set(peft_config.exclude_modules or ())
                    peft_config.exclude_modules = excluded | {family.attention_output}
            peft_config.target_modules = targets
        elif not peft_config.target_modules:
            peft_config.target_modules = DUMMY_TARGET_MODULES  # head only: nothing is masked
        if peft_config.layers_to_transform is None and not isinstance(peft_config.target_modules, str):
            peft_config.layers_to_transform = last_layers(n_layers)
        if peft_config.layers_pattern is None:
            peft_config.layers_pattern = family.layers_pattern
        check_layers_in_range(peft_config.layers_to_transform, n_layers)
        return peft_config

    def _create_and_replace(self, config, adapter_name, target, target_name, parent, current_key, **kwargs):
        if isinstance(target, SoftMaskLayer):
            target.update_layer(adapter_name, config.mask_init, config.init_weights, config.inference_mode)
            return
        if not isinstance(target, nn.Linear):
            raise ValueError(
                f"Target module {current_key} is a {type(target).__name__}; soft masks support nn.Linear only. "
                "Fix `target_modules`."
            )
        new_module = Linear(target, adapter_name, config, routing=self._routing)
        if adapter_name not in self.active_adapters:
            new_module.requires_grad_(False)
        self._replace_module(parent, target_name, new_module, target)

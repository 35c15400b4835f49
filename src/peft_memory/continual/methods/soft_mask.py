"""Soft-TransFormers masks (Kang et al.), one adapter per task, and the head-only baseline."""

from __future__ import annotations

from ...tuners import SoftMaskConfig
from .base import ContinualMethod


class SoftMask(ContinualMethod):
    """Per-task soft masks over the frozen query/key/value weights of ``--layers`` (default: the last three) and a
    head per task; per-sample Gradient-ID by default."""

    name = "soft_mask"
    task_id_modes = ("gradient_id", "max_logit", "nearest_mean", "gaussian")

    def make_config(self, task, base_model):
        args = self.args
        return SoftMaskConfig(
            label_names=task.label_names,
            layers_to_transform=list(args.layers) if args.layers else None,
            mask_attention_output=args.mask_attention_output,
            mask_ffn=args.mask_ffn,
        )


class HeadOnly(ContinualMethod):
    """A head per task over the frozen encoder (nothing masked); task = the head with the largest logit."""

    name = "head_only"
    first_session_adaptation = False
    task_id_modes = ("max_logit", "gradient_id", "nearest_mean", "gaussian")

    def make_config(self, task, base_model):
        return SoftMaskConfig(label_names=task.label_names, target_modules=[])

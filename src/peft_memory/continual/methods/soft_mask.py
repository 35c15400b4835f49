"""Soft-TransFormers masks (Kang et al.), one adapter per task, and the head-only baseline."""

from __future__ import annotations

from ...tuners import SoftMaskConfig
from ..inference.declaration import Inference
from .base import ContinualMethod

#: What per-task adapters with their own head over one classifier input provide (soft masks, DualPrompt, head only).
TASK_HEAD_ADAPTERS = frozenset({"task_adapters", "task_heads", "head_bank", "adapter_features", "class_statistics"})


class SoftMask(ContinualMethod):
    """Per-task soft masks over the frozen query/key/value weights of ``--layers`` (default: the last three) and a
    head per task. Recommended: the Gaussian classifier on the frozen and first-session query picks the task, the
    adapters re-score it, the head times the Gaussian gives the class; paper (Kang et al.): per-sample Gradient-ID."""

    name = "soft_mask"
    provides = TASK_HEAD_ADAPTERS | {"superposable", "adapts_backbone"}
    recipes = {"recommended": Inference("gaussian", "product", first_session_adaptation=True),
               "paper": Inference("gradient_id", "routed")}

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
    # nothing to superpose (Gradient-ID's weights mix masks and prompts; the heads are concatenated, not mixed) and
    # nothing that adapts the backbone (no first session)
    provides = TASK_HEAD_ADAPTERS
    recipes = {"recommended": Inference("gaussian", "product"), "paper": Inference("max_logit", "routed")}

    def make_config(self, task, base_model):
        return SoftMaskConfig(label_names=task.label_names, target_modules=[])

"""Learnable memory tokens (Sandler et al., CVPR 2022): every task's head in one forward."""

from __future__ import annotations

from ...tuners import MemoryTokenConfig
from ..inference.declaration import Inference
from .base import ContinualMethod


class MemoryToken(ContinualMethod):
    """Memory tokens in ``--layers`` (default: all) and a class token and head per task; by default the task is the
    most confident head, with every seen task's memory and class token in ONE forward (``max_softmax``)."""

    name = "memory_token"
    # each head reads its own class token: no shared feature for unified or combined; the memory of one task is not
    # a backbone for the others' statistics: no first session
    provides = frozenset({"task_adapters", "task_heads", "one_forward", "class_statistics"})
    recipes = {"recommended": Inference("gaussian", "routed"), "paper": Inference("max_softmax", "routed")}

    def make_config(self, task, base_model):
        args = self.args
        return MemoryTokenConfig(
            label_names=task.label_names,
            num_memory_tokens=args.num_memory_tokens,
            layers_to_transform=list(args.layers) if args.layers else None,
            memory_after_norm=args.memory_after_norm,
            attention=args.memory_attention,
        )

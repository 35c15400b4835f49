"""The loss from ``labels``: the task heads' cross-entropy (plus a method's own term), computed by the tuner.

The base classifier is as wide as the largest task (or absent, on a bare encoder), so its own loss cannot be used:
a forward pre-hook on the base model takes ``labels`` away from it, and a forward hook puts ``loss`` (first, as
transformers does) into the output. Any training loop, ``transformers.Trainer`` included, then trains the right head;
DualPrompt adds its matching term through :meth:`TaskLossMixin._auxiliary_loss`.
"""

from __future__ import annotations

import dataclasses

import torch
from torch import nn


class TaskLossMixin:
    """Mixin of :class:`~peft_memory.tuners.base.ContinualTuner`: ``model(**inputs, labels=labels).loss``."""

    def _install_loss_hooks(self, model: nn.Module) -> None:
        self._pending_labels = None
        self._loss_handles = [model.register_forward_pre_hook(self._take_labels, with_kwargs=True),
                              model.register_forward_hook(self._add_task_loss, with_kwargs=True)]

    def _heads_in_use(self) -> bool:
        routing = self._routing
        if self._adapters_off:
            return False
        if routing.superpose is not None or routing.groups is not None:
            return True
        return any(n in self.task_heads for n in self.active_adapters)

    def _take_labels(self, module, args, kwargs):
        """Forward pre-hook: ``labels`` meant for the task heads are kept from the base model, whose loss assumes its
        own ``num_labels``; :meth:`_add_task_loss` uses them."""
        self._pending_labels = None  # never the labels of an earlier forward that raised
        if kwargs.get("labels") is None or not self._heads_in_use():
            return None
        kwargs = dict(kwargs)
        self._pending_labels = (kwargs.pop("labels"), kwargs)
        return args, kwargs

    def _add_task_loss(self, module, args, kwargs, output):
        """Forward hook: ``loss`` = cross-entropy of the task heads' logits plus :meth:`_auxiliary_loss` (DualPrompt's
        matching term), placed first in the output as transformers does."""
        pending, self._pending_labels = self._pending_labels, None
        if pending is None:
            return output
        labels, inputs = pending
        logits = output["logits"] if isinstance(output, dict) else output[0]
        if labels.dtype.is_floating_point or labels.dim() != 1:
            raise ValueError(f"labels must be class indices of shape (batch,) into the task head's classes; got "
                             f"{labels.dtype} of shape {tuple(labels.shape)}.")
        loss = nn.functional.cross_entropy(logits.float(), labels.to(logits.device))
        extra = self._auxiliary_loss(inputs)
        if extra is not None:
            loss = loss + extra
        if not isinstance(output, dict):
            return (loss, *output)
        if "loss" in {f.name for f in dataclasses.fields(output)}:
            return type(output)(**{"loss": loss, **output})
        output["loss"] = loss
        return output

    def _auxiliary_loss(self, inputs: dict) -> torch.Tensor | None:
        """A method's term added to the loss computed from ``labels`` (none here)."""
        return None


#: The classifier names PEFT's ``PeftModelForSequenceClassification`` adds to ``modules_to_save``.
PEFT_CLASSIFIER_NAMES = ("classifier", "score")
#: Stands in ``modules_to_save`` for the classifier that a task head replaces: PEFT's task models iterate that list
#: and fail on an empty one; no module has this name, so nothing is wrapped.
TASK_HEAD_STAND_IN = "peft_memory_task_head"


def drop_task_type_classifier(config) -> None:
    """With ``task_type="SEQ_CLS"``, PEFT adds the base classifier to ``modules_to_save`` and would train (and save) a
    copy of it that an adapter with a task head replaces, never used. Such an adapter takes it back out, so the
    same recipe works with and without ``task_type``."""
    if config.task_type is None or not getattr(config, "num_labels", None) or not config.modules_to_save:
        return
    kept = [m for m in config.modules_to_save if m not in PEFT_CLASSIFIER_NAMES]
    config.modules_to_save = kept or [TASK_HEAD_STAND_IN]

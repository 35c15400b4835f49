"""The encoder layers no adapter touches, computed once per batch.

Soft masks and the ``lora`` baseline adapt only the last encoder layers (three by default), a head-only adapter none:
below them every forward of a batch runs the frozen model, whether it computes the frozen query, the first session's
query or a candidate task's outputs. :class:`SharedPrefix` records the hidden state after those layers in the first
full forward of a batch and gives it back to the batch's other forwards, row by row when a forward runs a subset of
the rows, instead of computing the embeddings' layers again.

The replayed tensor is the recorded one: a full-batch forward gives bit for bit what it gives alone, and a forward
of some rows gets exactly the shared layers' output the full batch computed for them (its own layers run on those
rows; kernels may differ with the number of rows, in the last bits of float rounding). Only forwards without
gradient share (Gradient-ID's superposed forward computes everything), and
only adapters whose every change sits in tuner layers inside the encoder (soft masks without prompts, LoRA): prompts
and memory tokens change the attention from the first layer on, so their models share nothing.
"""

from __future__ import annotations

from contextlib import contextmanager

import torch
from peft.tuners.tuners_utils import BaseTunerLayer
from peft.utils import ModulesToSaveWrapper

from ...families import encoder_layers, get_family

#: The peft types whose adapters change a model only through tuner layers (and heads after the encoder).
LAYER_LOCAL_TYPES = ("SOFT_MASK", "LORA")


def untouched_depth(model) -> int:
    """How many leading encoder layers no adapter of the ``PeftModel`` ``model`` changes: the lowest encoder layer that
    holds a tuner layer (all of them for adapters without one, e.g. head-only), 0 when an adapter is not
    layer-local (:data:`LAYER_LOCAL_TYPES`, prompts) or a ``modules_to_save`` copy holds encoder layers (full
    fine-tuning)."""
    configs = getattr(model, "peft_config", {})
    for config in configs.values():
        kind = str(getattr(config.peft_type, "value", config.peft_type))
        if kind not in LAYER_LOCAL_TYPES or getattr(config, "use_prompts", False):
            return 0
    base = model.get_base_model()
    layers = encoder_layers(base, get_family(base))
    where = {id(m): i for i, layer in enumerate(layers) for m in layer.modules()}
    depth = len(layers)
    for module in model.modules():
        if isinstance(module, ModulesToSaveWrapper) and any(id(m) in where for m in module.modules()):
            return 0
        if isinstance(module, BaseTunerLayer) and id(module) in where:
            depth = min(depth, where[id(module)])
    return depth


class SharedPrefix:
    """Within :meth:`batch`, the forwards of ``model`` on one batch compute the first :attr:`depth` encoder layers
    once. A forward of a subset of the batch's rows names them with :meth:`rows`; a forward with gradient, or of
    inputs whose shape does not fit the recorded batch, computes everything.

    Args:
        model: the ``PeftModel`` (its adapters decide the depth, :func:`untouched_depth`; call again after adding
            an adapter).
    """

    def __init__(self, model):
        self.model = model
        try:
            self.depth = untouched_depth(model)
        except ValueError:  # not a model family of ours (a stand-in): nothing to share
            self.depth = 0
        self._recorded: torch.Tensor | None = None
        self._rows: torch.Tensor | None = None
        self._replaying = False

    @contextmanager
    def batch(self):
        """The forwards of one batch (no gradient); the record is dropped at the exit."""
        if self.depth == 0:
            yield self
            return
        base = self.model.get_base_model()
        layers = encoder_layers(base, get_family(base))[: self.depth]
        before = [layer.__dict__.get("forward") for layer in layers]  # a forward set on the instance, if any
        for i, layer in enumerate(layers):
            layer.forward = self._wrap(i, layer.forward)
        try:
            yield self
        finally:
            for layer, forward in zip(layers, before):
                if forward is None:
                    del layer.forward  # back to the class's forward
                else:
                    layer.forward = forward
            self._recorded, self._rows, self._replaying = None, None, False

    @contextmanager
    def rows(self, index: torch.Tensor):
        """A forward of rows ``index`` ``(r,)`` of the batch (replays those rows of the record)."""
        self._rows = index
        try:
            yield
        finally:
            self._rows = None

    def _wrap(self, i: int, original):
        last = i == self.depth - 1

        def forward(hidden_states, *args, **kwargs):
            if i == 0:  # one decision per forward, at its first layer
                rec, rows = self._recorded, self._rows
                size = rec.shape[0] if rec is not None and rows is None else (len(rows) if rows is not None else 0)
                self._replaying = (rec is not None and not torch.is_grad_enabled()
                                   and hidden_states.shape[0] == size and hidden_states.shape[1:] == rec.shape[1:])
            if self._replaying:
                if not last:
                    return hidden_states  # the record stands for every shared layer
                rec = self._recorded
                return rec if self._rows is None else rec[self._rows.to(rec.device)]
            out = original(hidden_states, *args, **kwargs)
            if last and self._recorded is None and self._rows is None and not torch.is_grad_enabled():
                self._recorded = out
            return out

        return forward

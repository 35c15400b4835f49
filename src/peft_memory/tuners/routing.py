"""Per-forward routing state shared by a tuner and its tuner layers.

One :class:`Routing` object per tuner; every tuner layer holds a reference to it. It is set for the duration of one
forward pass by the tuner's context managers and read by the layers and the task heads:

- ``groups``: per-sample routing (PEFT's ``adapter_names=[...]``): a list of ``(adapter_name, index)`` pairs where
  ``index`` is a ``LongTensor`` of the batch rows that use that adapter. A layer runs one matmul per adapter present.
- ``superpose``: ``(adapter_names, alphas)`` with ``alphas`` of shape ``(batch, num_adapters)``: every masked layer
  uses ``W * sum_t alphas[b, t] * M_t`` for sample ``b`` (SupSup superposition, used by Gradient-ID).
- ``shared_alphas``: ``(num_adapters,)``, set with ``superpose`` when every row of ``alphas`` holds the same values
  (Gradient-ID evaluates at ``1/T`` for every sample): the layers then run one matmul with the mixed weight and get
  the per-sample gradients in the backward (:class:`peft_memory.tuners.soft_mask.layer.SharedSuperposition`).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch


@dataclass
class Routing:
    groups: list[tuple[str, torch.Tensor]] | None = None
    superpose: tuple[list[str], torch.Tensor] | None = None
    shared_alphas: torch.Tensor | None = None

    def reset(self) -> None:
        self.groups = None
        self.superpose = None
        self.shared_alphas = None


def group_by_adapter(adapter_names: list[str], device: torch.device) -> list[tuple[str, torch.Tensor]]:
    """Group batch rows by adapter name, in order of first appearance.

    Args:
        adapter_names: one adapter name per sample, length ``batch``.
        device: device of the returned index tensors.

    Returns:
        ``[(name, index)]`` with ``index`` a ``LongTensor`` of shape ``(n_rows_for_name,)``.
    """
    rows: dict[str, list[int]] = {}
    for i, name in enumerate(adapter_names):
        rows.setdefault(name, []).append(i)
    return [(name, torch.tensor(idx, dtype=torch.long, device=device)) for name, idx in rows.items()]

"""The attention masks of Sandler et al. 2022, Sec. 2.2 and Table 1, for ``T`` task class tokens.

Queries are the input tokens (patches or word pieces, ``INP``), the original class token (``CLS``) and the task class
tokens ``C_1..C_T``; keys are ``INP``, ``CLS``, ``C_1..C_T`` and the memories ``M_1..M_T``.

- ``INP`` and ``CLS`` read ``INP`` and ``CLS`` only, so the base model's outputs are unchanged. The attention
  function computes their rows with the untouched base call on the original keys (``ExtraKV.base_rows``), so
  these masks only describe the rows of ``C_1..C_T``.
- ``C_i`` reads ``INP``, ``CLS``, itself and ``M_i`` (concatenation), and under extension also ``C_j`` and ``M_j``
  for the adapters ``j`` it extends.
"""

from __future__ import annotations

import torch


def class_token_reads(names: list[str], extends: dict[str, list[str] | None]) -> torch.Tensor:
    """Which class tokens each class token reads: bool ``(T, T)``, ``[i, j]`` True if ``C_i`` reads ``C_j`` (and
    ``M_j``). The diagonal is True; ``extends[name]`` lists the adapters an extension adapter reads.

    Raises:
        ValueError: if an extension adapter runs without an adapter it extends (load and activate it too).
    """
    reads = torch.eye(len(names), dtype=torch.bool)
    position = {n: i for i, n in enumerate(names)}
    for i, name in enumerate(names):
        missing = [d for d in extends.get(name) or [] if d not in position]
        if missing:
            raise ValueError(f"memory adapter {name!r} was trained as an extension of {missing}; load and activate "
                             f"those adapters with it (active: {names}).")
        for dep in extends.get(name) or []:
            reads[i, position[dep]] = True
    return reads


def table1_masks(reads: torch.Tensor, memory_sizes: list[int], num_inputs: int, device=None):
    """Masks of the ``T`` class-token query rows at one layer.

    Args:
        reads: ``(T, T)`` from :func:`class_token_reads`.
        memory_sizes: memory tokens of each adapter at this layer (0 where it has none), in the order of ``reads``.
        num_inputs: ``N``, the number of original tokens (``INP`` and ``CLS``).

    Returns:
        ``(memory_mask, key_mask)``: bool ``(1, 1, T, sum(memory_sizes))`` over the memory keys and bool
        ``(1, 1, T, N + T)`` over the sequence's keys (``INP``, ``CLS``, then ``C_1..C_T``); True = attend.
    """
    t = reads.shape[0]
    columns = [reads[:, i : i + 1].expand(t, size) for i, size in enumerate(memory_sizes) if size]
    memory_mask = torch.cat(columns, dim=1) if columns else reads.new_zeros(t, 0)  # static shapes: no graph break
    key_mask = torch.cat([torch.ones(t, num_inputs, dtype=torch.bool), reads], dim=1)
    return memory_mask[None, None].to(device), key_mask[None, None].to(device)

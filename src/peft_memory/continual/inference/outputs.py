"""Each evaluated sample's outputs under each adapter, computed once per run.

A task adapter never changes once its task is trained, and the frozen model never changes: the logits and the
classifier input of test sample ``s`` under adapter ``a``, and its class-statistics query, are the same in the
evaluation after every later task. :class:`OutputCache` keeps them per test batch (the evaluation loaders are not
shuffled, so a batch's index names the same samples every time), and a rule asks it for the outputs it needs: only
the (sample, adapter) pairs not seen before run, in one forward routed per sample (PEFT's ``adapter_names``).

Held in the process's CPU memory: per sample, the query (``d`` floats, ``2d`` with first-session adaptation) and,
per adapter it was routed to, its logits and classifier input (``num_labels + d`` floats); e.g. 1,000 test samples
of WordNet under 5 adapters of MiniLM (d = 384): about 8 MB.
"""

from __future__ import annotations

from collections.abc import Callable
from contextlib import nullcontext

import torch

from ...families import get_family


def routed_outputs(model, batch: dict, adapter_names: list[str]) -> tuple[torch.Tensor, torch.Tensor | None]:
    """One forward without gradient, routed per sample (PEFT's ``adapter_names``): the logits ``(batch, num_labels)``
    and the classifier's input ``(batch, features)`` under each sample's adapter (``None`` when the classifier is
    not called: a bare encoder, or memory tokens, whose task heads read their own class tokens)."""
    base = model.get_base_model() if hasattr(model, "get_base_model") else model
    try:
        classifier = getattr(base, get_family(base).classifier, None)
    except ValueError:  # not a model family of ours (a stand-in in tests): logits only
        classifier = None
    store = {}
    handle = None
    if classifier is not None:
        handle = classifier.register_forward_hook(lambda m, args, out: store.__setitem__("features", args[0]))
    try:
        with torch.no_grad():
            logits = model(**batch, adapter_names=adapter_names).logits
    finally:
        if handle is not None:
            handle.remove()
    return logits, store.get("features")


def widened(logits: torch.Tensor, width: int) -> torch.Tensor:
    """``logits`` ``(..., W)`` padded to ``(..., width)`` with the dtype's most negative value, as a forward routed per
    sample pads the columns beyond a sample's own head (a head's logits are the first ``num_labels`` columns)."""
    extra = width - logits.shape[-1]
    if extra <= 0:
        return logits
    return torch.cat([logits, logits.new_full((*logits.shape[:-1], extra), torch.finfo(logits.dtype).min)], dim=-1)


class _Entry:
    """One batch's outputs under one adapter: ``logits`` ``(n, W)``, ``features`` ``(n, d)`` or ``None``, and which
    rows are ``filled``. ``W`` is the widest of the forwards that filled it: a forward routed to heads of several
    widths pads each row to the widest (:func:`widened`); the adapter's own columns come first."""

    def __init__(self, n: int):
        self.logits: torch.Tensor | None = None
        self.features: torch.Tensor | None = None
        self.filled = torch.zeros(n, dtype=torch.bool)

    def store(self, rows: torch.Tensor, logits: torch.Tensor, features: torch.Tensor | None) -> None:
        n = self.filled.shape[0]
        if self.logits is None:
            self.logits = logits.new_empty((n, *logits.shape[1:]))
            self.features = None if features is None else features.new_empty((n, *features.shape[1:]))
        width = max(self.logits.shape[-1], logits.shape[-1])
        self.logits = widened(self.logits, width)
        self.logits[rows] = widened(logits.to(self.logits.dtype), width)
        if features is not None:
            self.features[rows] = features.to(self.features.dtype)
        self.filled[rows] = True


class OutputCache:
    """Outputs of evaluated batches by batch key (any hashable the caller keeps stable: ``(task, split, index)``).

    :meth:`outputs` returns logits and classifier inputs under per-sample adapters, :meth:`query` the
    class-statistics query; both compute only what the cache lacks. Only outputs of adapters whose task is trained
    belong here: the trainer keeps one cache for the whole run and never trains an adapter it holds.
    """

    def __init__(self):
        self._outputs: dict = {}
        self._queries: dict = {}

    def outputs(self, model, batch: dict, key, adapter_names: list[str], rows: torch.Tensor | None = None,
                prefix=None) -> tuple[torch.Tensor, torch.Tensor | None]:
        """Logits ``(r, W)`` and classifier inputs ``(r, d)`` (or ``None``) of ``rows`` of ``batch`` (default: all
        of them), row ``i`` under ``adapter_names[i]`` (one name per row of ``rows``), on the CPU. Heads of different
        widths: ``W`` is at least the widest asked for, each row's columns beyond its head's the dtype's most negative
        value (as a routed forward gives them).

        The missing (row, adapter) pairs run in one forward routed per sample over those rows alone (all rows: a
        full forward). A row's output does not depend on the other rows, but the kernels may with their number, in
        the last bits of float rounding (none seen on MiniLM's batches of 2 rows or more; a one-row forward differs
        by ~1e-8): a single missing row runs with a neighbour.
        ``prefix``: the batch's :class:`~.prefix.SharedPrefix`, if any (a forward of some rows replays theirs).
        """
        n = next(iter(batch.values())).shape[0]
        rows = torch.arange(n) if rows is None else rows.cpu()
        entries = self._outputs.setdefault(key, {})
        need = [(int(r), a) for r, a in zip(rows.tolist(), adapter_names)
                if a not in entries or not entries[a].filled[r]]
        need = list(dict.fromkeys(need))
        if len(need) == 1 and n > 1:  # one row alone: add a neighbour under the same adapter (see above)
            r, a = need[0]
            need.append(((r + 1) % n, a))
        if need:
            index = torch.tensor([r for r, _ in need])
            if index.tolist() == list(range(n)):  # every row, in order: a full forward (it may record the prefix)
                logits, features = routed_outputs(model, batch, [a for _, a in need])
            else:
                sub = {k: v[index.to(v.device)] for k, v in batch.items()}
                with prefix.rows(index) if prefix is not None else nullcontext():
                    logits, features = routed_outputs(model, sub, [a for _, a in need])
            logits = logits.cpu()
            features = None if features is None else features.cpu()
            for a in dict.fromkeys(a for _, a in need):
                mine = torch.tensor([i for i, (_, b) in enumerate(need) if b == a])
                entry = entries.setdefault(a, _Entry(n))
                entry.store(index[mine], logits[mine], None if features is None else features[mine])
        width = max(entries[a].logits.shape[-1] for a in set(adapter_names))
        logits = torch.stack([widened(entries[a].logits[r], width) for r, a in zip(rows.tolist(), adapter_names)])
        has_features = all(entries[a].features is not None for a in set(adapter_names))
        features = (torch.stack([entries[a].features[r] for r, a in zip(rows.tolist(), adapter_names)])
                    if has_features else None)
        return logits, features

    def query(self, key, compute: Callable[[], torch.Tensor]) -> torch.Tensor:
        """The class-statistics query of batch ``key``: ``compute()`` the first time, then the same tensor."""
        if key not in self._queries:
            self._queries[key] = compute()
        return self._queries[key]

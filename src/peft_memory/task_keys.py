"""Prompt-ID keys for adapters that carry none, such as PEFT's own LoRA (the ``lora`` baseline).

DualPrompt's task inference (Wang et al., ECCV 2022, Sec. 4.3) needs only two things: a query, the frozen model's
pre-logits feature, and one learnable key per task. DualPrompt and DualPrompt-Soft-TF keep the key inside their task
adapter. :class:`TaskKeys` gives any other ``PeftModel`` the same rule: one key per task adapter, trained with the
same pull constraint (:func:`matching_loss`, ``-lambda * cos(query, key_t)``) and saved beside the adapter as ``task_key.safetensors``
(PEFT ignores extra files in an adapter folder, so the folder still loads with ``PeftModel.from_pretrained``).

It has the two methods :func:`peft_memory.prompt_id` reads from a peft_memory tuner, ``frozen_features`` and
``key_similarity``, so ``prompt_id(model, inputs, names, keys=task_keys)`` works on any PEFT model.
"""

from __future__ import annotations

import os

import torch
import torch.nn.functional as F
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file
from torch import nn

from .families import bare_model, get_family
from .pooling import pool_tokens

KEY_FILE = "task_key.safetensors"


def cosine_similarity(features: torch.Tensor, keys: torch.Tensor) -> torch.Tensor:
    """Cosine similarity ``(batch, T)`` of query ``features`` ``(batch, dim)`` and ``keys`` ``(T, dim)`` (Prompt-ID's
    match, DualPrompt Sec. 4.3); the keys are cast to the features' dtype and device."""
    return F.normalize(features, dim=-1) @ F.normalize(keys.to(features), dim=-1).T


def matching_loss(keys, features: torch.Tensor, adapter_name: str, weight: float,
                  rows: torch.Tensor | None = None) -> torch.Tensor:
    """DualPrompt's pull constraint on one task's key (Wang et al., ECCV 2022, Eq. 5): the scalar
    ``-weight * sum_{b in rows} cos(q_b, k_t) / batch``, i.e. ``-weight * mean_b cos(q_b, k_t)`` when ``rows`` is
    ``None`` (every sample belongs to task ``t``).

    Args:
        keys: the key source, anything with ``key_similarity(features, adapter_names)`` (a :class:`TaskKeys`, or the
            prompt tuner ``peft_model.base_model`` of DualPrompt / DualPrompt-Soft-TF).
        features: the frozen query ``(batch, dim)`` (``keys.frozen_features(peft_model, inputs)``, no gradient).
        adapter_name: the task ``t`` whose key is pulled; weight: ``lambda`` (the adapter's ``matching_loss_weight``).
        rows: indices or a boolean mask of the samples routed to ``t`` in a mixed batch; ``None``: all of them.
    """
    routed = features if rows is None else features[rows]
    return -weight * keys.key_similarity(routed, [adapter_name])[:, 0].sum() / features.shape[0]


#: How the query feature is pooled from the frozen model (``--query_pooling``).
QUERY_POOLINGS = ("classifier", "cls", "mean")


def frozen_query(peft_model, inputs: dict, disabled=None, pooling: str = "classifier") -> torch.Tensor:
    """The frozen base model's query feature ``(batch, features)``, with every adapter disabled, without gradient.

    Args:
        peft_model: the ``PeftModel`` (or the base model with adapters injected); inputs: its inputs by keyword.
        disabled: a context-manager factory that turns the adapters off; default: the tuner's
            ``adapters_disabled`` (peft_memory's tuners; it also works on a base model with adapters injected, where
            there is no ``PeftModel.disable_adapter``), else ``peft_model.disable_adapter``.
        pooling: ``"classifier"`` (default): the classifier's input, DualPrompt's pre-logits feature (ViT: the
            final-normed ``[CLS]``; BERT: the pooler output; a bare encoder: its pooled output). ``"cls"``: the last
            hidden state's first token. ``"mean"``: the last hidden state averaged over the tokens the attention mask
            keeps (sentence-transformers' mean pooling, e.g. all-MiniLM-L6-v2).

    Raises:
        ValueError: for an unknown ``pooling`` or an unsupported model family (see :mod:`peft_memory.families`).
    """
    if disabled is None:
        disabled = getattr(peft_model.base_model, "adapters_disabled", None) or peft_model.disable_adapter
    with disabled():
        return _pooled_query(peft_model, inputs, pooling)


def adapter_query(peft_model, inputs: dict, adapter_name: str, pooling: str = "classifier") -> torch.Tensor:
    """The query feature ``(batch, features)`` of :func:`frozen_query`, with every sample routed through the adapter
    ``adapter_name`` (PEFT's ``adapter_names`` forward argument) instead of the frozen model; without gradient.
    ``--first_session_adaptation`` joins it to the frozen query for the first task's adapter.

    Raises:
        ValueError: as :func:`frozen_query`.
    """
    batch = next(v for v in inputs.values() if isinstance(v, torch.Tensor)).shape[0]
    return _pooled_query(peft_model, {**inputs, "adapter_names": [adapter_name] * batch}, pooling)


def _pooled_query(peft_model, inputs: dict, pooling: str) -> torch.Tensor:
    """One forward of ``peft_model`` on ``inputs`` without gradient, returning its ``pooling`` feature."""
    if pooling not in QUERY_POOLINGS:
        raise ValueError(f"query pooling {pooling!r} is unknown; use one of {list(QUERY_POOLINGS)}.")
    base = peft_model.get_base_model() if hasattr(peft_model, "get_base_model") else peft_model
    family = get_family(base)
    head = getattr(base, family.classifier, None)  # nn.Linear, or PEFT's ModulesToSaveWrapper around it
    store: dict = {}
    if pooling != "classifier":
        mask = inputs.get("attention_mask")
        handle = bare_model(base).register_forward_hook(
            lambda m, args, out: store.__setitem__("features", pool_tokens(out.last_hidden_state, mask, pooling)))
    elif head is not None:
        handle = head.register_forward_hook(lambda m, args, out: store.__setitem__("features", args[0]))
    else:
        handle = base.register_forward_hook(
            lambda m, args, out: store.__setitem__("features", family.pooled_features(out)))
    try:
        with torch.no_grad():
            peft_model(**inputs)
    finally:
        handle.remove()
    return store["features"]


class TaskKeys(nn.Module):
    """One learnable key ``(dim,)`` per task adapter, for Prompt-ID on adapters without keys.

    Args:
        dim: feature size of the query (the base model's ``hidden_size``).
        init: keys start at ``U(-init, init)``, as DualPrompt's public code (1.0).
        pooling: the query's pooling (see :func:`frozen_query`).

    Example::

        keys = TaskKeys(model.config.hidden_size)
        keys.add("task_0")                     # trained with matching_loss(keys, keys.frozen_features(...), ...)
        task = peft_memory.prompt_id(model, inputs, ["task_0", "task_1"], keys=keys)   # (batch,)
    """

    def __init__(self, dim: int, init: float = 1.0, pooling: str = "classifier"):
        super().__init__()
        if dim <= 0 or init <= 0:
            raise ValueError(f"TaskKeys needs dim > 0 and init > 0, got dim={dim}, init={init}.")
        if pooling not in QUERY_POOLINGS:
            raise ValueError(f"pooling {pooling!r} is unknown; use one of {list(QUERY_POOLINGS)}.")
        self.dim, self.init, self.pooling = dim, init, pooling
        self.keys = nn.ParameterDict()

    def add(self, name: str, device=None, dtype=None) -> nn.Parameter:
        """Create ``name``'s key at ``U(-init, init)``. Raises ``ValueError`` if it exists."""
        if name in self.keys:
            raise ValueError(f"a key for adapter {name!r} exists already; each task adapter has one key.")
        key = nn.Parameter(torch.empty(self.dim, device=device, dtype=dtype).uniform_(-self.init, self.init))
        self.keys[name] = key
        return key

    # the two methods prompt_id() reads
    def frozen_features(self, peft_model, inputs: dict) -> torch.Tensor:
        """See :func:`frozen_query`."""
        return frozen_query(peft_model, inputs, pooling=self.pooling)

    def key_similarity(self, features: torch.Tensor, adapter_names: list[str]) -> torch.Tensor:
        """Cosine similarity ``(batch, T)`` between query ``features`` ``(batch, dim)`` and the adapters' keys.

        Raises:
            KeyError: naming the adapters that have no key.
        """
        missing = [n for n in adapter_names if n not in self.keys]
        if missing:
            raise KeyError(f"no Prompt-ID key for adapters {missing}; known: {list(self.keys)}.")
        return cosine_similarity(features, torch.stack([self.keys[n] for n in adapter_names]))

    # persistence, one file per adapter folder
    def save(self, name: str, folder: str) -> str:
        """Write ``name``'s key to ``folder/task_key.safetensors``; returns the path."""
        path = os.path.join(folder, KEY_FILE)
        save_file({"key": self.keys[name].detach().cpu().contiguous()}, path)
        return path

    def load(self, name: str, folder: str, device=None) -> None:
        """Read ``folder/task_key.safetensors`` as ``name``'s key (safetensors only: nothing is unpickled).

        Raises:
            FileNotFoundError: if the adapter folder has no key file (it was not trained with task keys).
            ValueError: if the key's size differs from ``dim``, it is not a finite non-zero float vector, or the file
                is corrupted.
        """
        path = os.path.join(folder, KEY_FILE)
        if not os.path.isfile(path):
            raise FileNotFoundError(f"{path} is missing: this adapter was saved without a Prompt-ID key.")
        try:
            key = load_file(path)["key"]
        except (SafetensorError, KeyError) as err:
            raise ValueError(f"{path} is corrupted or truncated ({err}); save the key again or retrain the task.") from err
        if key.shape != (self.dim,):
            raise ValueError(f"{path} holds a key of shape {tuple(key.shape)}; this TaskKeys has dim={self.dim}.")
        if not key.is_floating_point() or not torch.isfinite(key).all() or not key.abs().sum() > 0:
            raise ValueError(f"{path} holds a key that is not a finite non-zero float vector ({key.dtype}): it was "
                             "changed after training; restore it or retrain the task.")
        self.keys[name] = nn.Parameter(key.to(device), requires_grad=False)

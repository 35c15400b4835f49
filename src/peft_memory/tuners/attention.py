"""One attention-injection mechanism for every method: extra keys and values with a 4D mask.

DualPrompt prefixes (after W_k, W_v) and memory tokens (through the layer norm and W_k, W_v) are both extra keys
and values that some queries may read (docs/attention.md). Rather than copying modeling code, we register
two attention functions with transformers, ``peft_memory_eager`` and ``peft_memory_sdpa``, that wrap the model's own
eager function (taken from the attention module's own modeling file: ViT upcasts the softmax to fp32, BERT does not)
or transformers' sdpa function. Each attention module may carry a *provider*, a plain callable set with
:func:`set_extra_kv`; per forward it returns ``None`` (the base function runs untouched, so a model with adapters
disabled is bit-exact) or ``(keys, values, mask)``:

- ``keys``, ``values``: ``(batch, heads, n_extra, head_dim)``, prepended on the key axis;
- ``mask``: ``None`` (every query reads every extra key) or a bool ``(batch, 1 or heads, q_len, n_extra)``
  (True = attend), the per-query-row rules of memory tokens (Sandler et al. 2022, Table 1);
- optionally (an :class:`ExtraKV`) ``key_mask``, a bool ``(batch, 1 or heads, q_len, k_len)`` ANDed into the
  model's own mask over the sequence's keys (task class tokens appended to the sequence are keys that the original
  tokens must not read), and ``base_rows``: the first ``base_rows`` queries are computed by the untouched base
  call on the first ``base_rows`` keys alone (bit-exact original tokens, also under sdpa), and ``mask`` /
  ``key_mask`` then describe only the remaining ``q_len - base_rows`` query rows.

The mask builders of the base implementations are registered under the new names too: without them transformers
returns ``mask=None`` for unknown names and BERT's padding mask would be silently dropped. Flash and flex attention
cannot take a per-row 4D mask and are refused.
"""

from __future__ import annotations

import sys
from collections.abc import Callable
from typing import NamedTuple

import torch
from transformers import AttentionInterface
from transformers.masking_utils import ALL_MASK_ATTENTION_FUNCTIONS, AttentionMaskInterface
from transformers.modeling_utils import ALL_ATTENTION_FUNCTIONS

PREFIX = "peft_memory_"
SUPPORTED = ("eager", "sdpa")
_PROVIDER_ATTR = "_peft_memory_extra_kv"


class ExtraKV(NamedTuple):
    """What a provider returns (a plain ``(keys, values, mask)`` tuple works too); see the module docstring."""

    keys: torch.Tensor
    values: torch.Tensor
    mask: torch.Tensor | None = None
    key_mask: torch.Tensor | None = None
    base_rows: int | None = None


def _base_function(module, base: str) -> Callable:
    if base == "eager":
        return sys.modules[type(module).__module__].eager_attention_forward
    return ALL_ATTENTION_FUNCTIONS[base]


def extend_mask(mask: torch.Tensor | None, extra_mask: torch.Tensor | None, n_extra: int, k_len: int,
                q_len: int, additive: bool, dtype: torch.dtype) -> torch.Tensor | None:
    """Prepend ``n_extra`` key columns to an attention mask.

    Args:
        mask: the model's mask for the ``k_len`` original keys: ``None``, bool ``(B|1, 1|H, q_len, k_len)``
            (True = attend; sdpa) or additive float (0 / dtype min; eager).
        extra_mask: bool ``(B|1, 1|H, q_len, n_extra)`` for the new columns, or ``None`` (every query attends).
        additive: build an additive float mask (eager) rather than a bool one (sdpa) when ``mask`` is ``None``.
        dtype: float dtype of an additive mask.

    Returns:
        ``(B|1, 1|H, q_len, n_extra + k_len)`` in the convention of ``mask``, or ``None`` if nothing is masked.
    """
    if extra_mask is None:
        if mask is None:
            return None
        extra_mask = torch.ones((1, 1, q_len, n_extra), dtype=torch.bool, device=mask.device)
    if mask is None:  # nothing masked among the original keys
        shape, device = (1, 1, q_len, k_len), extra_mask.device
        mask = torch.zeros(shape, dtype=dtype, device=device) if additive else torch.ones(shape, dtype=torch.bool,
                                                                                           device=device)
    if mask.dtype != torch.bool:  # additive: 0 where attended, the dtype's minimum elsewhere
        extra_mask = torch.zeros(extra_mask.shape, dtype=mask.dtype, device=mask.device).masked_fill(
            ~extra_mask, torch.finfo(mask.dtype).min)
    batch = max(mask.shape[0], extra_mask.shape[0])
    heads = max(mask.shape[1], extra_mask.shape[1])
    return torch.cat([extra_mask.expand(batch, heads, q_len, n_extra), mask.expand(batch, heads, q_len, k_len)], -1)


def _attend(fn, module, query, key, value, attention_mask, extra_k, extra_v, extra_mask, key_mask, additive, kwargs):
    n_extra = extra_k.shape[2]
    batch, q_len, k_len = query.shape[0], query.shape[2], key.shape[2]
    if key_mask is not None:
        attention_mask = _and_mask(attention_mask, key_mask, additive, query.dtype)
    key = torch.cat([extra_k.to(key.dtype).expand(batch, -1, -1, -1), key], dim=2)
    value = torch.cat([extra_v.to(value.dtype).expand(batch, -1, -1, -1), value], dim=2)
    attention_mask = extend_mask(attention_mask, extra_mask, n_extra, k_len, q_len, additive=additive,
                                 dtype=query.dtype)
    return fn(module, query, key, value, attention_mask, **kwargs)


def _and_mask(mask: torch.Tensor | None, key_mask: torch.Tensor, additive: bool, dtype) -> torch.Tensor:
    """``mask`` (``None``, bool or additive) restricted further by the bool ``key_mask``, in ``mask``'s convention."""
    if mask is None:
        mask = key_mask
        if not additive:
            return mask
        return torch.zeros(mask.shape, dtype=dtype, device=mask.device).masked_fill(~mask, torch.finfo(dtype).min)
    if mask.dtype == torch.bool:
        return mask & key_mask
    return torch.where(key_mask, mask, torch.finfo(mask.dtype).min)


def _make_attention(base: str) -> Callable:
    def attention(module, query, key, value, attention_mask, **kwargs):
        fn = _base_function(module, base)
        provider = module.__dict__.get(_PROVIDER_ATTR)
        extra = provider(module, query) if provider is not None else None
        if extra is None:
            return fn(module, query, key, value, attention_mask, **kwargs)
        extra_k, extra_v, extra_mask, key_mask, base_rows = ExtraKV(*extra)
        if base_rows is None:
            return _attend(fn, module, query, key, value, attention_mask, extra_k, extra_v, extra_mask, key_mask,
                           base == "eager", kwargs)
        n = base_rows  # original rows: the base call on the original keys; the rest also read the extra keys
        base_mask = None if attention_mask is None else attention_mask[:, :, :n, :n]
        out, weights = fn(module, query[:, :, :n], key[:, :, :n], value[:, :, :n], base_mask, **kwargs)
        rest_mask = None if attention_mask is None else attention_mask[:, :, n:]
        out_rest, _ = _attend(fn, module, query[:, :, n:], key, value, rest_mask, extra_k, extra_v, extra_mask,
                              key_mask, base == "eager", kwargs)
        return torch.cat([out, out_rest], dim=1), weights  # (batch, q_len, heads, head_dim)

    attention.__name__ = f"{PREFIX}{base}_attention"
    return attention


def register_attention_functions() -> None:
    """Register ``peft_memory_eager``/``peft_memory_sdpa`` and their mask builders with transformers (idempotent)."""
    for base in SUPPORTED:
        AttentionInterface.register(PREFIX + base, _make_attention(base))
        AttentionMaskInterface.register(PREFIX + base, ALL_MASK_ATTENTION_FUNCTIONS[base])


def enable_injection(model) -> str:
    """Switch ``model`` to the injecting attention function matching its current implementation.

    Returns the new implementation name. Not serialized into saved configs (transformers keeps it out).

    Raises:
        ValueError: if the model uses another implementation (flash or flex attention cannot take the extra keys
            with a per-row 4D mask).
    """
    impl = model.config._attn_implementation or "eager"
    if impl.startswith(PREFIX):
        return impl
    if impl not in SUPPORTED:
        raise ValueError(
            f"attn_implementation={impl!r} is not supported by peft_memory's prompts and memory tokens (they need a "
            "per-row 4D mask); load the model with attn_implementation='sdpa' or 'eager'."
        )
    model.set_attn_implementation(PREFIX + impl)
    return PREFIX + impl


def disable_injection(model, attention_modules) -> None:
    """Undo :func:`enable_injection`: the model's original attention implementation back, no provider left on
    ``attention_modules`` (``unload()``: the base model bit for bit)."""
    for module in attention_modules:
        set_extra_kv(module, None)
    impl = model.config._attn_implementation or "eager"
    if impl.startswith(PREFIX):
        model.set_attn_implementation(impl[len(PREFIX):])


def set_extra_kv(attention_module, provider: Callable | None) -> None:
    """Attach (or remove, with ``None``) the extra-K/V provider of one attention module.

    ``provider(module, query)`` gets the module and its projected queries ``(batch, heads, q_len, head_dim)`` and
    returns ``None`` or ``(keys, values, mask)`` as described in this module's docstring.
    """
    if provider is None:
        attention_module.__dict__.pop(_PROVIDER_ATTR, None)
    else:
        attention_module.__dict__[_PROVIDER_ATTR] = provider


register_attention_functions()

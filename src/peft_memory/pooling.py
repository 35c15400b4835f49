"""Which sentence feature a BERT classifier reads: its pooler, or the encoder's own sentence pooling.

``BertForSequenceClassification`` classifies ``pooler_output``: the last hidden state's ``[CLS]`` through the
pooler's ``dense`` + ``tanh``. A sentence-transformers checkpoint (all-MiniLM-L6-v2) was trained to be read through
MEAN pooling instead (its ``1_Pooling/config.json``); its pooler is a leftover of pre-training (docs/task_identity.md).

:func:`set_head_pooling` swaps the pooler of a BERT model for a parameter-free :class:`TokenPooler`, so every reader of
the classifier's input (the task heads, ``frozen_query(pooling="classifier")``, the combined rule's adapted
statistics) sees the same sentence feature. It changes the BASE model: apply it before ``get_peft_model`` /
``PeftModel.from_pretrained``, and again whenever the adapters are loaded onto a fresh base model.
"""

from __future__ import annotations

import torch
from torch import nn

from .families import bare_model, get_family

#: ``--head_pooling`` values: ``pooler`` keeps the model's own classifier input; ``mean`` / ``cls`` replace BERT's
#: pooler by the masked token mean / the raw first token.
HEAD_POOLINGS = ("pooler", "mean", "cls")


def pool_tokens(hidden: torch.Tensor, attention_mask: torch.Tensor | None, pooling: str) -> torch.Tensor:
    """``(batch, seq_len, hidden)`` -> ``(batch, hidden)``: the first token (``"cls"``), or the mean over the tokens
    ``attention_mask`` ``(batch, seq_len)`` keeps (``"mean"``, sentence-transformers' mean pooling; all tokens when the
    mask is ``None``)."""
    if pooling == "cls":
        return hidden[:, 0]
    if attention_mask is None:
        return hidden.mean(dim=1)
    mask = attention_mask[:, : hidden.shape[1]].unsqueeze(-1).to(hidden.dtype)
    return (hidden * mask).sum(dim=1) / mask.sum(dim=1).clamp(min=1)


class TokenPooler(nn.Module):
    """A parameter-free stand-in for ``BertPooler``: ``(batch, seq_len, hidden)`` -> ``(batch, hidden)``.

    ``BertPooler.forward`` receives only the hidden states; the attention mask of the current forward is handed over
    by a forward pre-hook on the bare encoder (:func:`set_head_pooling`) and dropped once read.
    """

    def __init__(self, pooling: str):
        super().__init__()
        self.pooling = pooling
        self.attention_mask: torch.Tensor | None = None

    def forward(self, hidden_states: torch.Tensor) -> torch.Tensor:
        mask, self.attention_mask = self.attention_mask, None  # hold no batch between forwards
        return pool_tokens(hidden_states, mask, self.pooling)

    def extra_repr(self) -> str:
        return f"pooling={self.pooling!r}"


def not_bert_message(pooling: str, what: str) -> str:
    """The refusal of ``mean``/``cls`` ``pooling`` for a model without a BERT pooler; ``what`` says which model."""
    return (f"head pooling {pooling!r} replaces BERT's pooler, and {what}; pass --head_pooling pooler (the "
            "classifier's own input; auto picks it for such a model).")


def head_pooling_of(model: nn.Module) -> str:
    """The pooling a model's classifier reads: ``"mean"`` or ``"cls"`` after :func:`set_head_pooling`, else
    ``"pooler"``."""
    pooler = getattr(bare_model(model), "pooler", None)
    return pooler.pooling if isinstance(pooler, TokenPooler) else "pooler"


def set_head_pooling(model: nn.Module, pooling: str) -> nn.Module:
    """Make a BERT model's classifier read ``pooling`` of the last hidden state instead of the pooler output.

    Args:
        model: a BERT base model (``BertForSequenceClassification`` or ``BertModel``), before PEFT wraps it.
        pooling: one of :data:`HEAD_POOLINGS`. ``"pooler"`` on a model whose pooler was never replaced, and a
            repeated call with the pooling already set, change nothing.

    Returns:
        ``model``, changed in place: ``bert.pooler`` becomes a :class:`TokenPooler` (the pooler's weights leave the
        model's ``state_dict``; adapters never hold them).

    Raises:
        ValueError: an unknown ``pooling``; ``mean``/``cls`` on a model that is not BERT (ViT and DINOv2 heads read
            their final-normed ``[CLS]``: keep ``pooler``) or on a BERT without a pooler (``add_pooling_layer=False``);
            ``pooler`` on a model whose pooler was already replaced (load a fresh base model).
    """
    if pooling not in HEAD_POOLINGS:
        raise ValueError(f"head pooling {pooling!r} is unknown; use one of {list(HEAD_POOLINGS)}.")
    current = head_pooling_of(model)
    if current == pooling:
        return model
    if pooling == "pooler":
        raise ValueError(f"this model's pooler was already replaced by {current!r} pooling; load a fresh base model "
                         "to classify the pooler output again.")
    family = get_family(model)
    bare = bare_model(model)
    if family.name != "bert" or getattr(bare, "pooler", None) is None:
        what = f"a {family.name} model" if family.name != "bert" else "a BERT model without a pooler"
        raise ValueError(not_bert_message(pooling, f"this is {what}"))
    pooler = TokenPooler(pooling)
    if current == "pooler":  # first replacement: the mask reaches the pooler through a pre-hook on the encoder

        def hand_over_mask(module, args, kwargs):
            mask = kwargs.get("attention_mask", args[1] if len(args) > 1 else None)
            module.pooler.attention_mask = mask
        # prepend: the mask as the caller passed it, before any tuner hook extends the sequence
        bare.register_forward_pre_hook(hand_over_mask, with_kwargs=True, prepend=True)
    bare.pooler = pooler
    return model

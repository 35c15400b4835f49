"""Configuration of learnable memory tokens (Sandler et al., "Fine-tuning Image Transformers using Learnable
Memory", CVPR 2022)."""

from __future__ import annotations

from dataclasses import dataclass, field

from peft.utils.constants import DUMMY_TARGET_MODULES

from ...registry import PeftMemoryType
from ..config import TaskAdapterConfig
from ..validation import validate_count, validate_flag, validate_layers, validate_number

ATTENTION_MODES = ("concatenation", "extension")


@dataclass
class MemoryTokenConfig(TaskAdapterConfig):
    """Configuration of a :class:`MemoryTokenModel`: one adapter per task holding its memory, its class token and its
    head.

    Args:
        num_memory_tokens (`int`): memory tokens ``m`` per selected layer (paper Table 2: 1, 5, 10, 20; default 5).
            ``0`` keeps only the task's class token (the paper's "head + CLS" column).
        layers_to_transform (`Optional[list[int]]`): 0-based layers that get memory (default: every layer).
        memory_after_norm (`bool`): ``False`` (default, paper Fig. 2): memory passes through the layer's
            pre-attention LayerNorm before ``W_k``/``W_v``. ``True``: memory is appended after the norm, as two public
            ports do. No effect on post-LN BERT, which has no pre-attention norm.
        init_std (`float`): memory starts at ``N(0, init_std^2)`` (paper: 0.02).
        attention (`str`): the paper's Table 1 rule for this task's class token. ``"concatenation"`` (default): it
            reads the input tokens, the original class token, itself and its own memory, so independently trained
            adapters run together in one forward. ``"extension"``: it also reads the class tokens and memory of the
            adapters that existed when it was created (recorded in ``extends``), which must then be loaded too.
        extends (`Optional[list[str]]`): set by the tuner for ``attention="extension"``; do not set by hand.
        fine_tune_cls (`bool`): the paper's plain fine-tuning mode (Sec. 2.1): no new class token; the adapter learns
            a replacement for the original class token's embedding, every token reads the memory, and the head reads
            the original class token. Changes the base model's outputs, so such an adapter runs alone.
        cls_token_id (`Optional[int]`): BERT only: the token whose embedding initialises the task class token
            (default: the base model config's ``cls_token_id`` if it has one, else 101, ``[CLS]`` in BERT's WordPiece
            vocabularies; an id outside the vocabulary raises ``ValueError`` at ``get_peft_model``).
        num_labels (`Optional[int]`), label_names (`Optional[list[str]]`): the task's head and class names.
        peft_memory_version (`str`), base_model_hidden_size (`Optional[int]`), base_model_num_layers
            (`Optional[int]`), head_pooling (`Optional[str]`): recorded automatically
            (:class:`peft_memory.tuners.compat.CompatibilityFields`).

    Raises:
        ValueError: for a negative ``num_memory_tokens``, a non-positive ``init_std``, an unknown ``attention``,
            negative layers, or inconsistent ``num_labels``/``label_names``.
        ValueError: ``peft_memory_version`` from another major.minor version (install that version or retrain).
    """

    num_memory_tokens: int = field(default=5, metadata={"help": "Memory tokens per selected layer (paper: 1-20)."})
    layers_to_transform: list[int] | int | None = field(
        default=None, metadata={"help": "0-based layers that get memory. Default: every layer."})
    memory_after_norm: bool = field(
        default=False, metadata={"help": "Append memory after the pre-attention LayerNorm (default: before, paper)."})
    init_std: float = field(default=0.02, metadata={"help": "Memory init N(0, init_std^2) (paper: 0.02)."})
    attention: str = field(
        default="concatenation", metadata={"help": "Table 1 rule: 'concatenation' (default) or 'extension'."})
    extends: list[str] | None = field(
        default=None, metadata={"help": "Set by the tuner: adapters an 'extension' adapter reads."})
    fine_tune_cls: bool = field(
        default=False, metadata={"help": "Plain fine-tuning mode: learn the original class token, no masking."})
    cls_token_id: int | None = field(default=None, metadata={"help": "BERT: token initialising the class token."})
    target_modules: list[str] | str | None = field(
        default=DUMMY_TARGET_MODULES, metadata={"help": "Unused: memory tokens wrap no layer."})

    PEFT_TYPE = PeftMemoryType.MEMORY_TOKEN

    def validate(self) -> None:
        self.target_modules = DUMMY_TARGET_MODULES
        self.layers_to_transform = validate_layers(self.layers_to_transform)
        for flag in ("memory_after_norm", "fine_tune_cls"):
            validate_flag(self, flag)
        if self.cls_token_id is not None:
            validate_count(self, "cls_token_id", hint="a token id; BERT's [CLS] is 101")
        validate_count(self, "num_memory_tokens", hint="the paper uses 1-20")
        validate_number(self, "init_std", positive=True, hint="the paper uses 0.02")
        if self.attention not in ATTENTION_MODES:
            raise ValueError(f"attention={self.attention!r} is unknown; use one of {list(ATTENTION_MODES)}.")
        if self.fine_tune_cls and self.attention == "extension":
            raise ValueError("fine_tune_cls=True has no task class token, so attention='extension' does not apply; "
                             "use attention='concatenation'.")

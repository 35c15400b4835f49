"""Configuration of Soft-TransFormers masks (Kang et al., "Soft-TransFormers for Continual Learning")."""

from __future__ import annotations

from dataclasses import dataclass, field

from ...registry import PeftMemoryType
from ..config import TaskAdapterConfig
from ..prompts import PromptFields
from ..validation import validate_flag, validate_layers, validate_number


@dataclass
class SoftMaskConfig(PromptFields, TaskAdapterConfig):
    """Configuration of a :class:`SoftMaskModel`: one adapter per task.

    Each adapter holds a real-valued mask ``M_t`` with the shape of every targeted frozen weight ``W``; the layer
    computes ``x (W * M_t)^T + b`` (paper Sec. 3, Eq. 3). Biases are never masked. The adapter also carries a
    classification head over the task's own classes and the task's label names.

    Args:
        target_modules (`Optional[Union[list[str], str]]`):
            Module names (or a regex) to mask. Default (``None``): the query, key and value projections of the
            model family (``peft_memory.families``), plus the attention output projection if
            ``mask_attention_output`` and both feed-forward projections if ``mask_ffn``. An empty list masks
            nothing: the adapter is a task head only (the head-only baseline).
        exclude_modules (`Optional[Union[list[str], str]]`): Module names (or a regex) never to mask.
        layers_to_transform (`Optional[Union[list[int], int]]`):
            Encoder layer indices (0-based) to mask. Default: the last three layers, the paper's best setting
            (L[10,11,12] in the paper's 1-based terms for ViT-B).
        layers_pattern (`Optional[Union[list[str], str]]`):
            Name of the ``nn.ModuleList`` holding the layers. Default: taken from the model family.
        mask_attention_output (`bool`): also mask the attention output projection (default ``False``).
        mask_ffn (`bool`): also mask both feed-forward projections (default ``False``; the paper's "w/o FF").
        mask_init (`float`): initial value of every mask entry (default ``1.0``: the adapter starts as the identity,
            paper Table 4).
        init_weights (`bool`):
            ``True`` (default): masks start at exactly ``mask_init``, so the adapted model equals the base model
            bit for bit. ``False``: ``Uniform(mask_init - 0.01, mask_init)`` as in the public reference code.
        num_labels (`Optional[int]`): size of this task's head; defaults to ``len(label_names)``. ``None`` and no
            ``label_names``: no task head, the base model's classifier is used.
        label_names (`Optional[list[str]]`): the task's class names, in label order.
        modules_to_save (`Optional[list[str]]`): extra modules to train and save (PEFT semantics).
        use_prompts (`bool`): also give the task DualPrompt G-/E-prompts and a key (DualPrompt-Soft-TF, the
            paper's best setting); the prompt fields of :class:`DualPromptConfig` apply (default ``False``).
        peft_memory_version (`str`), base_model_hidden_size (`Optional[int]`), base_model_num_layers
            (`Optional[int]`), head_pooling (`Optional[str]`): recorded automatically
            (:class:`peft_memory.tuners.compat.CompatibilityFields`).

    Raises:
        ValueError: on a non-finite ``mask_init``, a non-positive ``num_labels``, ``label_names`` whose length differs
            from ``num_labels``, or a negative layer index.
        ValueError: ``peft_memory_version`` from another major.minor version (install that version or retrain).
    """

    target_modules: list[str] | str | None = field(
        default=None,
        metadata={
            "help": "Module names or regex to mask. Default: the family's query/key/value projections "
            "(plus attention output / FFN by option). An empty list masks nothing (head only)."
        },
    )
    layers_to_transform: list[int] | int | None = field(
        default=None, metadata={"help": "0-based encoder layer indices to mask. Default: the last three layers."}
    )
    layers_pattern: list[str] | str | None = field(
        default=None, metadata={"help": "Name of the layer ModuleList. Default: from the model family."}
    )
    mask_attention_output: bool = field(
        default=False, metadata={"help": "Also mask the attention output projection (default targets only)."}
    )
    mask_ffn: bool = field(
        default=False, metadata={"help": "Also mask both feed-forward projections (default targets only)."}
    )
    mask_init: float = field(default=1.0, metadata={"help": "Initial value of every mask entry (paper: 1.0)."})
    init_weights: bool = field(
        default=True,
        metadata={"help": "True: masks = mask_init exactly (identity at init). False: U(mask_init-0.01, mask_init)."},
    )
    use_prompts: bool = field(
        default=False, metadata={"help": "Add DualPrompt G-/E-prompts and a key to each task (DualPrompt-Soft-TF)."}
    )

    PEFT_TYPE = PeftMemoryType.SOFT_MASK

    def validate(self) -> None:
        if isinstance(self.target_modules, (list, tuple)):
            self.target_modules = set(self.target_modules)
        if isinstance(self.exclude_modules, (list, tuple)):
            self.exclude_modules = set(self.exclude_modules)
        validate_number(self, "mask_init", hint="the paper uses 1.0")
        self.layers_to_transform = validate_layers(self.layers_to_transform)
        for flag in ("use_prompts", "mask_ffn", "mask_attention_output", "init_weights"):
            validate_flag(self, flag)
        self.validate_prompts(attached=self.use_prompts)

"""What every peft_memory adapter config shares: the task head's fields and one ``__post_init__``.

A method's config subclasses :class:`TaskAdapterConfig` (plus :class:`~peft_memory.tuners.prompts.PromptFields` when
it carries DualPrompt prompts), sets ``PEFT_TYPE`` and puts its own checks in :meth:`TaskAdapterConfig.validate`.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import ClassVar

from peft.config import PeftConfig

from .compat import CompatibilityFields
from .validation import is_int


@dataclass
class HeadFields:
    """The task's classification head: its size and its class names (saved in ``adapter_config.json``)."""

    num_labels: int | None = field(
        default=None, metadata={"help": "Number of classes of this task's head. Default: len(label_names)."})
    label_names: list[str] | None = field(default=None, metadata={"help": "This task's class names, in label order."})

    def validate_head(self) -> None:
        """Check ``num_labels``/``label_names`` and fill one from the other.

        Raises:
            ValueError: for an empty or non-list ``label_names``, a ``num_labels`` that is not a positive integer, or
                the two disagreeing.
        """
        if self.label_names is not None:
            if not isinstance(self.label_names, (list, tuple)) or not self.label_names:
                raise ValueError(f"label_names must be a non-empty list of class names, got {self.label_names!r}.")
            self.label_names = [str(n) for n in self.label_names]
            if self.num_labels is None:
                self.num_labels = len(self.label_names)
            elif len(self.label_names) != self.num_labels:
                raise ValueError(
                    f"label_names has {len(self.label_names)} entries but num_labels={self.num_labels}; "
                    "pass one name per class or leave num_labels unset."
                )
        if self.num_labels is not None and (not is_int(self.num_labels) or self.num_labels < 1):
            raise ValueError(f"num_labels must be a positive integer, got {self.num_labels!r}.")


@dataclass
class TaskAdapterConfig(HeadFields, CompatibilityFields, PeftConfig):
    """Base of :class:`SoftMaskConfig`, :class:`DualPromptConfig` and :class:`MemoryTokenConfig`.

    ``__post_init__`` sets ``peft_type`` to the subclass's ``PEFT_TYPE``, refuses a config from another peft_memory
    major.minor version, validates the head fields, then calls the subclass's :meth:`validate`.
    ``target_modules``, ``exclude_modules``, ``target_parameters`` and ``modules_to_save`` are PEFT's fields (PEFT's
    target matching reads them even for methods that wrap no layer).
    """

    PEFT_TYPE: ClassVar[str]

    target_modules: list[str] | str | None = field(default=None, metadata={"help": "Module names or regex to adapt."})
    exclude_modules: list[str] | str | None = field(default=None, metadata={"help": "Module names or regex to skip."})
    target_parameters: list[str] | None = field(
        default=None, metadata={"help": "Unused; present because PEFT's target matching reads it."})
    modules_to_save: list[str] | None = field(
        default=None, metadata={"help": "Extra modules to set trainable and save (PEFT semantics)."})

    def __post_init__(self):
        super().__post_init__()
        self.peft_type = self.PEFT_TYPE
        self.check_version()
        self.check_head_pooling_value()
        self.validate_head()
        self.validate()

    def validate(self) -> None:
        """The method's own checks; raise ``ValueError`` naming the field and the fix."""

"""Configuration of DualPrompt (Wang et al., "DualPrompt: Complementary Prompting for Rehearsal-free Continual
Learning", ECCV 2022)."""

from __future__ import annotations

from dataclasses import dataclass, field

from peft.config import PeftConfig
from peft.utils.constants import DUMMY_TARGET_MODULES

from ...registry import PeftMemoryType
from ..compat import CompatibilityFields
from ..prompts import PromptFields
from ..validation import validate_head_fields


@dataclass
class DualPromptConfig(PromptFields, CompatibilityFields, PeftConfig):
    """Configuration of a :class:`DualPromptModel`: one adapter per task (its E-prompt, key and head, and a snapshot
    of the shared G-prompt).

    Args:
        g_prompt_layers (`list[int]`): 0-based layers of the G-prompt (default ``[0, 1]``, paper Sec. 5.1).
        g_prompt_length (`int`): G-prompt length (default 5).
        e_prompt_layers (`list[int]`): 0-based layers of the E-prompt (default ``[2, 3, 4]``).
        e_prompt_length (`int`): E-prompt length (default 5; the paper uses 20 on ImageNet-R).
        prompt_init (`float`): prompts and keys start at ``U(-prompt_init, prompt_init)`` (public code: 1.0).
        matching_loss_weight (`float`): lambda of ``CE - lambda * cos(query, key)`` (paper: 1.0).
        num_labels (`Optional[int]`), label_names (`Optional[list[str]]`): the task's head and class names.
        target_modules: unused (prompts attach through the attention-injection mechanism, no layer is wrapped).
        peft_memory_version (`str`), base_model_hidden_size (`Optional[int]`), base_model_num_layers
            (`Optional[int]`): recorded automatically (:class:`peft_memory.tuners.compat.CompatibilityFields`).

    Raises:
        ValueError: for negative layers or lengths, both lengths 0, or inconsistent ``num_labels``/``label_names``.
        ValueError: ``peft_memory_version`` from another major.minor version (install that version or retrain).
    """

    target_modules: list[str] | str | None = field(default=DUMMY_TARGET_MODULES,
                                                   metadata={"help": "Unused: DualPrompt wraps no layer."})
    exclude_modules: list[str] | str | None = field(default=None, metadata={"help": "Unused."})
    target_parameters: list[str] | None = field(default=None, metadata={"help": "Unused."})
    modules_to_save: list[str] | None = field(default=None, metadata={"help": "Extra modules to train and save."})
    num_labels: int | None = field(default=None, metadata={"help": "Classes of this task's head."})
    label_names: list[str] | None = field(default=None, metadata={"help": "This task's class names."})

    def __post_init__(self):
        super().__post_init__()
        self.peft_type = PeftMemoryType.DUAL_PROMPT
        self.target_modules = DUMMY_TARGET_MODULES
        self.check_version()
        validate_head_fields(self)
        self.validate_prompts()

"""Configuration of DualPrompt (Wang et al., "DualPrompt: Complementary Prompting for Rehearsal-free Continual
Learning", ECCV 2022)."""

from __future__ import annotations

from dataclasses import dataclass, field

from peft.utils.constants import DUMMY_TARGET_MODULES

from ...registry import PeftMemoryType
from ..config import TaskAdapterConfig
from ..prompts import PromptFields


@dataclass
class DualPromptConfig(PromptFields, TaskAdapterConfig):
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
            (`Optional[int]`), head_pooling (`Optional[str]`): recorded automatically
            (:class:`peft_memory.tuners.compat.CompatibilityFields`).

    Raises:
        ValueError: for negative layers or lengths, both lengths 0, or inconsistent ``num_labels``/``label_names``.
        ValueError: ``peft_memory_version`` from another major.minor version (install that version or retrain).
    """

    target_modules: list[str] | str | None = field(default=DUMMY_TARGET_MODULES,
                                                   metadata={"help": "Unused: DualPrompt wraps no layer."})

    PEFT_TYPE = PeftMemoryType.DUAL_PROMPT

    def validate(self) -> None:
        self.target_modules = DUMMY_TARGET_MODULES
        self.validate_prompts()

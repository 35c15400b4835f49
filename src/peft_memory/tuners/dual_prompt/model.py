"""DualPrompt tuner: prompts attached by prefix tuning through the shared attention-injection mechanism.

No layer is wrapped, so there is no ``layer.py``: the per-layer work is the prompt provider of
:mod:`peft_memory.tuners.prompts`, called from the injected attention function.
"""

from __future__ import annotations

from ..base import ContinualTuner, NoLayer
from ..prompts import PROMPT_ATTRS, PromptsMixin


class DualPromptModel(PromptsMixin, ContinualTuner):
    """DualPrompt on a ViT, DINOv2 or BERT model; use through ``peft.get_peft_model(model, DualPromptConfig(...))``.

    Forward: the active adapter's (or, with ``adapter_names=[...]``, each sample's) G- and E-prompts are prepended
    to the projected keys and values of their layers; ``logits`` come from that adapter's head, as for
    :class:`SoftMaskModel`. Task identity: :func:`peft_memory.prompt_id`.

    Raises:
        ValueError: for an unsupported model family, prompt layers out of range, or flash/flex attention.
    """

    prefix: str = "dual_prompt_"
    tuner_layer_cls = NoLayer
    target_module_mapping: dict[str, list[str]] = {}
    tuner_level_names = ("head", *PROMPT_ATTRS)

    def _create_and_replace(self, *args, **kwargs):  # pragma: no cover - DUMMY_TARGET_MODULES: never called
        raise NotImplementedError

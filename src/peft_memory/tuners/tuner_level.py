"""PEFT's view of a tuner's own per-adapter containers (task heads, prompts, keys, memory, class tokens).

PEFT finds adapters by walking the modules for tuner layers (``BaseTunerLayer``): ``PeftModel.disable_adapter()``,
``get_model_status()`` and ``get_layer_status()`` raise "No adapter layers found" when there is none, which is the
case of DualPrompt and memory tokens (they wrap no layer: their parameters live on the tuner). :class:`TunerLevelLayer`
is that tuner layer: a child of the tuner (not of the base model, so ``unload()`` never sees it) that exposes the
tuner's ``<prefix><name>`` containers as its adapter layers, by reference. It registers no parameter of its own, so
state dicts and saved adapters are unchanged; its enabled/active state is the tuner's.
"""

from __future__ import annotations

from peft.tuners.tuners_utils import BaseTunerLayer
from torch import nn


class TunerLevelLayer(nn.Module, BaseTunerLayer):
    """The tuner-level containers of ``tuner`` (a :class:`~peft_memory.tuners.base.ContinualTuner`) as one tuner
    layer. ``adapter_layer_names``: the ``<prefix><name>`` containers that exist, e.g. ``("dual_prompt_head",
    "dual_prompt_e_prompt", ...)``."""

    other_param_names = ()
    merged_adapters: list[str] = []
    #: no wrapped module: PEFT's ``weight``/``bias`` properties would look for one in ``get_base_layer()`` (itself).
    weight = None
    bias = None

    def __init__(self, tuner: nn.Module) -> None:
        super().__init__()
        # a plain reference, not a submodule: no state-dict keys; deepcopy and pickle follow the cycle
        object.__setattr__(self, "tuner", tuner)

    @property
    def adapter_layer_names(self) -> tuple[str, ...]:
        return tuple(c for c in (self.tuner.prefix + n for n in self.tuner.tuner_level_names) if c in self.tuner._modules)

    def __getattr__(self, name: str):
        if not name.startswith("_") and name in self.adapter_layer_names:
            return self.tuner._modules[name]
        return super().__getattr__(name)

    @property
    def disable_adapters(self) -> bool:
        return self.tuner._adapters_off

    @property
    def active_adapter(self) -> str | list[str]:
        return self.tuner.active_adapter

    def enable_adapters(self, enabled: bool) -> None:  # the tuner toggles its own state
        self.tuner._adapters_off = not enabled

    def extra_repr(self) -> str:
        return ", ".join(self.adapter_layer_names)

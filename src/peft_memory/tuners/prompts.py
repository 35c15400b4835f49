"""DualPrompt prompts (Wang et al., ECCV 2022) as a component shared by DualPrompt and DualPrompt-Soft-TF.

Per task adapter: an E-prompt ``(len(e_prompt_layers), 2, e_prompt_length, hidden)`` with its key ``(hidden,)``, and
a G-prompt ``(len(g_prompt_layers), 2, g_prompt_length, hidden)``. Both attach by prefix tuning (paper Sec. 4.2,
Eq. 4): index 0 of the second axis is prepended to the layer's projected keys, index 1 to its projected values,
through the shared attention-injection mechanism (:mod:`peft_memory.tuners.attention`). Every sample carries its own
adapter's prompts (``(batch, heads, length, head_dim)`` per layer), so the public code's key/value-axis mix-up
cannot happen here.

G-prompt: DualPrompt trains one G-prompt across all tasks. Here each adapter saves the G-prompt as it stood at the end
of its task (a new adapter starts from the previous one's), so any subset of adapters loads self-contained; a sample
routed to task ``t`` uses task ``t``'s G-prompt. The paper's single final G-prompt is the last adapter's.

Query and Prompt-ID (paper Sec. 4.3): the query is the frozen model's pre-logits ``[CLS]`` feature (adapters
disabled: the classifier's input), keys and query are L2-normalised, and Prompt-ID picks the adapter whose key has
the largest cosine similarity, per sample. Training pulls the true task's key towards the query:
``loss = CE - matching_loss_weight * cos(q, k_t)``.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass, field

import torch
from torch import nn

from ..families import attention_modules, num_layers
from ..task_keys import QUERY_POOLINGS, cosine_similarity, frozen_query, matching_loss
from .attention import disable_injection, enable_injection, set_extra_kv
from .validation import check_layers_in_range, validate_count, validate_layers, validate_number

PROMPT_ATTRS = ("g_prompt", "e_prompt", "e_key")


@dataclass
class PromptFields:
    """Prompt settings shared by :class:`DualPromptConfig` and :class:`SoftMaskConfig` (``use_prompts=True``)."""

    g_prompt_layers: list[int] = field(default_factory=lambda: [0, 1],
                                       metadata={"help": "0-based layers of the shared G-prompt (paper: [0, 1])."})
    g_prompt_length: int = field(default=5, metadata={"help": "G-prompt length (paper: 5)."})
    e_prompt_layers: list[int] = field(default_factory=lambda: [2, 3, 4],
                                       metadata={"help": "0-based layers of the task's E-prompt (paper: [2, 3, 4])."})
    e_prompt_length: int = field(default=5, metadata={"help": "E-prompt length (paper: 5 CIFAR, 20 ImageNet-R)."})
    prompt_init: float = field(default=1.0, metadata={"help": "Prompts and keys start at U(-prompt_init, "
                                                               "prompt_init), as the public code (1.0)."})
    matching_loss_weight: float = field(default=1.0, metadata={"help": "lambda of the key-query matching loss."})
    query_pooling: str = field(
        default="classifier", metadata={"help": "Prompt-ID query of the frozen model: classifier (the classifier's "
                                        "input, DualPrompt's pre-logits feature) | cls | mean (mean over tokens, "
                                        "sentence-transformers' pooling)."})

    def validate_prompts(self, attached: bool = True) -> None:
        """Raise ``ValueError`` naming the bad prompt field; ``attached``: the prompts are used (not both empty)."""
        for name in ("g_prompt_layers", "e_prompt_layers"):
            setattr(self, name, validate_layers(getattr(self, name), name, allow_none=False))
        for name in ("g_prompt_length", "e_prompt_length"):
            validate_count(self, name)
        validate_number(self, "prompt_init", positive=True, hint="the public code uses 1.0")
        validate_number(self, "matching_loss_weight", hint="the paper uses 1.0")
        if self.query_pooling not in QUERY_POOLINGS:
            raise ValueError(f"query_pooling={self.query_pooling!r} is unknown; use one of {list(QUERY_POOLINGS)}.")
        if attached and self.g_prompt_length == 0 and self.e_prompt_length == 0:
            raise ValueError("g_prompt_length and e_prompt_length are both 0: no prompt would be attached.")


class PromptsMixin:
    """Adds per-adapter G-/E-prompts and keys to a :class:`ContinualTuner` (whose ``tuner_level_names`` must
    include :data:`PROMPT_ATTRS`)."""

    @staticmethod
    def _wants_prompts(config) -> bool:
        """DualPromptConfig always has prompts; SoftMaskConfig only with ``use_prompts=True``."""
        return getattr(config, "use_prompts", True)

    def _init_adapter_extras(self, model, adapter_name, config) -> None:
        super()._init_adapter_extras(model, adapter_name, config)
        if self._wants_prompts(config):  # the task's prompts and key live in its adapter, beside masks and head
            self._init_prompts(model, adapter_name, config)

    def _unmergeable_parts(self, config) -> str | None:
        if self._wants_prompts(config):
            return "its G- and E-prompts are extra keys and values of attention (prefix tuning)"
        return super()._unmergeable_parts(config)

    def _unload_and_optionally_merge(self, merge=True, progressbar=False, safe_merge=False, adapter_names=None):
        """PEFT's unload, plus the prompts' attention injection removed: the base model's own attention back."""
        if merge:
            self._check_merge_allowed()
        model = super()._unload_and_optionally_merge(merge=merge, progressbar=progressbar, safe_merge=safe_merge,
                                                    adapter_names=adapter_names)
        if "prompts" in self.__dict__.get("_setup_done", ()):
            disable_injection(model, attention_modules(model, self._family))
        return model

    def _attach_providers(self, model: nn.Module) -> None:
        enable_injection(model)
        for index, module in enumerate(attention_modules(model, self._family)):
            set_extra_kv(module, self._provider(index))

    def _init_prompts(self, model: nn.Module, adapter_name: str, config) -> None:
        for name in ("g_prompt_layers", "e_prompt_layers"):
            check_layers_in_range(getattr(config, name), num_layers(model), name)
        self._once("prompts", lambda: self._attach_providers(model))
        hidden = model.config.hidden_size
        ref = next(model.parameters())
        g, e, k = (self._tuner_level_dict(a) for a in PROMPT_ATTRS)
        a = config.prompt_init
        previous = list(g.keys())[-1] if len(g) else None

        def uniform(*shape):
            return nn.Parameter(torch.empty(*shape, device=ref.device, dtype=ref.dtype).uniform_(-a, a))

        g[adapter_name] = uniform(len(config.g_prompt_layers), 2, config.g_prompt_length, hidden)
        if previous is not None and g[previous].shape == g[adapter_name].shape:
            with torch.no_grad():
                g[adapter_name].copy_(g[previous])  # the G-prompt continues across tasks
        e[adapter_name] = uniform(len(config.e_prompt_layers), 2, config.e_prompt_length, hidden)
        k[adapter_name] = uniform(hidden)

    # ------------------------------------------------------------ the provider
    def _layer_prompt(self, adapter: str, layer: int) -> torch.Tensor | None:
        """``(2, length, hidden)`` prompt of ``adapter`` at ``layer`` (G then E), or ``None``."""
        config = self.peft_config.get(adapter)  # None for PEFT's "__base__" rows
        if config is None or not self._wants_prompts(config) or adapter not in self._tuner_level_dict("e_prompt"):
            return None
        parts = []
        if layer in config.g_prompt_layers and config.g_prompt_length:
            parts.append(self._tuner_level_dict("g_prompt")[adapter][config.g_prompt_layers.index(layer)])
        if layer in config.e_prompt_layers and config.e_prompt_length:
            parts.append(self._tuner_level_dict("e_prompt")[adapter][config.e_prompt_layers.index(layer)])
        return torch.cat(parts, dim=1) if parts else None

    def _provider(self, layer: int):
        """The extra-K/V provider of layer ``layer``: a ``partial`` of a bound method, so ``copy.deepcopy`` and
        pickle of the model follow it to the copied tuner (a closure would keep reading the original's parameters)."""
        return functools.partial(self._provide_prompts, layer)

    def _provide_prompts(self, layer: int, module, query):
        if self._adapters_off:
            return None
        mask = None
        routing = self._routing
        if routing.superpose is not None:  # sum_t alpha_t P_t, linear like the masks
            names, alphas = routing.superpose
            prompts = [self._layer_prompt(n, layer) for n in names]
            if any(p is None for p in prompts):
                return None
            prompt = torch.einsum("bt,tsld->bsld", alphas.to(prompts[0].dtype), torch.stack(prompts))
        elif routing.groups is not None:
            per = {n: self._layer_prompt(n, layer) for n, _ in routing.groups}
            present = [p for p in per.values() if p is not None]
            if not present:
                return None
            if len(per) == 1:
                prompt = present[0].unsqueeze(0)
            else:
                if len({p.shape for p in present}) != 1:
                    raise ValueError("per-sample routing needs prompts of one length at every layer.")
                prompt = query.new_zeros((query.shape[0], *present[0].shape))
                if len(present) < len(per):  # rows without prompts ("__base__", masks only) read none
                    mask = torch.ones(query.shape[0], 1, query.shape[2], prompt.shape[2], dtype=torch.bool,
                                      device=query.device)
                for name, index in routing.groups:
                    if per[name] is None:
                        mask[index] = False
                    else:
                        prompt[index] = per[name]
        else:
            active = [n for n in self.active_adapters if n in self.peft_config]
            prompt = self._layer_prompt(active[0], layer) if len(active) == 1 else None
            if prompt is None:
                return None
            prompt = prompt.unsqueeze(0)
        heads, head_dim = query.shape[1], query.shape[3]
        prompt = prompt.to(query.dtype)  # fp32 prompts (PEFT's autocast) on a half-precision model
        kv = prompt.unflatten(-1, (heads, head_dim)).permute(1, 0, 3, 2, 4)  # (2, B, heads, length, head_dim)
        return kv[0], kv[1], mask

    def _auxiliary_loss(self, inputs: dict) -> torch.Tensor | None:
        """DualPrompt's matching term ``-matching_loss_weight * mean_b cos(q_b, k_{t_b})`` (Wang et al. 2022, Eq. 5),
        added to the loss whenever the model computes one from ``labels``, so any training loop trains the keys;
        ``t_b`` is the active adapter, or each sample's with ``adapter_names``."""
        routing = self._routing
        groups = routing.groups or [(n, None) for n in self.active_adapters[:1]]
        configs = {n: self.peft_config.get(n) for n, _ in groups}  # None for PEFT's "__base__" rows
        keyed = [(n, i) for n, i in groups if configs[n] is not None and self._wants_prompts(configs[n])
                 and configs[n].matching_loss_weight]
        if routing.superpose is not None or not keyed or not torch.is_grad_enabled():
            return None
        query = self.frozen_features(self.model, inputs)
        return sum(matching_loss(self, query, name, configs[name].matching_loss_weight, rows=index)
                   for name, index in keyed)

    # --------------------------------------------------------- query and keys
    def frozen_features(self, peft_model, inputs: dict) -> torch.Tensor:
        """The frozen model's pre-logits feature ``(batch, features)`` (adapters disabled; no grad); see
        :func:`peft_memory.frozen_query`."""
        pooling = next((c.query_pooling for c in self.peft_config.values() if self._wants_prompts(c)), "classifier")
        return frozen_query(peft_model, inputs, disabled=self.adapters_disabled, pooling=pooling)

    def key_similarity(self, features: torch.Tensor, adapter_names: list[str]) -> torch.Tensor:
        """Cosine similarity ``(batch, T)`` between the query features and the adapters' keys."""
        return cosine_similarity(features, torch.stack([self._tuner_level_dict("e_key")[n] for n in adapter_names]))

"""Shared tuner machinery for peft_memory's continual-learning methods.

Every method keeps, per task adapter, a classification head over that task's own classes (and its label names in
the adapter config), so any subset of saved task adapters loads into one working model. This module holds what the
three tuners share:

- the task heads: a tuner-level ``nn.ModuleDict`` named ``<prefix>head`` keyed by adapter name, saved and reloaded
  by PEFT's structural state-dict code (docs/design.md, "Task heads"). A forward hook on the model's classifier
  (``*ForImageClassification``, ``*ForSequenceClassification``) replaces its logits by the task head's; on a bare
  encoder (``ViTModel``, ``BertModel``) a forward hook adds ``logits`` to the output.
- per-sample routing with PEFT's ``adapter_names=[...]`` forward argument, and the superposition used by Gradient-ID.
- ``set_adapter``/``disable_adapter``/``delete_adapter`` extended to the tuner-level heads.

A method adds its own tuner-level parameters in :meth:`ContinualTuner._init_adapter_extras` and its one-time set-up
through :meth:`ContinualTuner._once`; ``inject_adapter`` then sets ``requires_grad`` once for all of them.
"""

from __future__ import annotations

import contextlib
import warnings
from collections.abc import Callable

import torch
from peft.tuners.tuners_utils import BaseTuner, BaseTunerLayer
from torch import nn

from ..families import find_classifier, get_family
from ..pooling import head_pooling_of
from .routing import Routing, group_by_adapter
from .task_loss import TaskLossMixin, drop_task_type_classifier
from .tuner_level import TunerLevelLayer

#: PEFT's name for "no adapter" in ``adapter_names=[...]`` (mixed batches): that row runs the base model.
BASE_ADAPTER = "__base__"


class NoLayer(BaseTunerLayer):
    """The tuner-layer class of methods that wrap no module (DualPrompt, memory tokens); PEFT still asks for one."""

    adapter_layer_names = ()


def apply_head(head: nn.Linear, features: torch.Tensor) -> torch.Tensor:
    """``head(features)`` in the head's dtype (fp32 under PEFT's ``autocast_adapter_dtype``), returned in the
    features' dtype, as PEFT's tuner layers do."""
    return head(features.to(head.weight.dtype)).to(features.dtype)


def new_head(in_features: int, num_labels: int, ref: torch.Tensor, std: float = 0.02) -> nn.Linear:
    """A task head ``nn.Linear(in_features, num_labels)`` on ``ref``'s device and dtype: weight ``N(0, std^2)`` (the
    model's ``initializer_range``), bias 0."""
    head = nn.Linear(in_features, num_labels, device=ref.device, dtype=ref.dtype)
    nn.init.normal_(head.weight, std=std)
    nn.init.zeros_(head.bias)
    return head


class ContinualTuner(TaskLossMixin, BaseTuner):
    """``BaseTuner`` with per-task heads and per-sample routing. Subclasses set ``prefix`` and ``tuner_layer_cls``."""

    uses_shared_state = True
    #: tuner-level containers keyed by adapter name, as ``<prefix><name>`` attributes; subclasses extend it.
    tuner_level_names: tuple[str, ...] = ("head",)

    # ------------------------------------------------------------------ set-up
    @property
    def _head_attr(self) -> str:
        return f"{self.prefix}head"

    @property
    def task_heads(self) -> nn.ModuleDict:
        """``nn.ModuleDict`` adapter name -> ``nn.Linear(features, num_labels)``."""
        return getattr(self, self._head_attr)

    def _once(self, key: str, setup: Callable[[], None]) -> None:
        """Run ``setup()`` the first time ``key`` is asked for on this tuner. Shared state is created lazily, on the
        first injection: ``PeftModel.add_adapter`` calls ``inject_adapter`` directly, and ``BaseTuner.__init__``
        re-runs ``nn.Module.__init__`` (docs/design.md, "Task heads")."""
        done = self.__dict__.setdefault("_setup_done", set())
        if key not in done:
            setup()
            done.add(key)

    def _setup_heads(self, model: nn.Module) -> None:
        self._routing = Routing()
        self._adapters_off = False
        setattr(self, self._head_attr, nn.ModuleDict())
        self._family = get_family(model)
        classifier = find_classifier(model, self._family)
        if classifier is not None:
            self._classifier_in_features = classifier.in_features
            self._hook_handle = classifier.register_forward_hook(self._classifier_hook)
        else:
            self._classifier_in_features = model.config.hidden_size
            self._hook_handle = model.register_forward_hook(self._bare_model_hook)
        self.tuner_level_layer = TunerLevelLayer(self)  # so PEFT's disable_adapter / get_model_status see adapters
        self._install_loss_hooks(model)

    def _head_in_features(self, config) -> int:
        """Input size of the task head of an adapter with ``config``: the classifier's input (or ``hidden_size`` on a
        bare encoder). Tuners whose heads read another feature override it."""
        return self._classifier_in_features

    def inject_adapter(self, model: nn.Module, adapter_name: str, *args, **kwargs) -> None:
        if adapter_name in self.prefix:
            raise ValueError(
                f"adapter_name={adapter_name!r} is a substring of the tuner prefix {self.prefix!r}; PEFT would "
                "mis-filter its state dict. Choose another adapter name."
            )
        config = self.peft_config[adapter_name]
        get_family(model)  # a model of another family (or no transformers model): the family error with its fix
        config.check_base_model(model, adapter_name)  # every peft_memory config has CompatibilityFields
        config.check_head_pooling(model, adapter_name, shared=any(n != adapter_name for n in self.peft_config))
        drop_task_type_classifier(config)
        self._once("heads", lambda: self._setup_heads(model))
        super().inject_adapter(model, adapter_name, *args, **kwargs)
        if getattr(config, "num_labels", None):
            self.task_heads[adapter_name] = new_head(self._head_in_features(config), config.num_labels,
                                                     next(model.parameters()),
                                                     getattr(model.config, "initializer_range", 0.02))
        self._init_adapter_extras(model, adapter_name, config)
        self._set_tuner_level_grads(inference_mode=config.inference_mode)

    def _cast_adapter_dtype(self, adapter_name: str, autocast_adapter_dtype: bool = True) -> None:
        """PEFT's dtype rule for the tuner layers, applied to the tuner-level parameters too: with
        ``autocast_adapter_dtype`` (PEFT's default) the adapter's float16/bfloat16 heads, prompts, keys, memory and
        class tokens become float32; forwards cast them to the activations' dtype."""
        super()._cast_adapter_dtype(adapter_name, autocast_adapter_dtype=autocast_adapter_dtype)
        if not autocast_adapter_dtype:
            return
        for container in self._tuner_level_dicts():
            value = container[adapter_name] if adapter_name in container else None
            if isinstance(value, nn.Parameter) and value.dtype in (torch.float16, torch.bfloat16):
                container[adapter_name] = nn.Parameter(value.detach().float())
            elif isinstance(value, nn.Module):
                value.float()
        self._set_tuner_level_grads(inference_mode=self.peft_config[adapter_name].inference_mode)

    def _init_adapter_extras(self, model: nn.Module, adapter_name: str, config) -> None:
        """Create the adapter's tuner-level parameters beside its head (prompts, memory, class token). Subclasses
        and mixins extend it and call ``super()``; ``requires_grad`` is set afterwards, once."""

    # -------------------------------------------------------- adapter control
    def set_adapter(self, adapter_name: str | list[str], inference_mode: bool = False) -> None:
        """PEFT's ``set_adapter``; raises ``ValueError("Adapter <name> not found.")`` as ``PeftModel.set_adapter``
        does for a name that is not loaded (PEFT's tuner-level call would silently activate nothing)."""
        for name in [adapter_name] if isinstance(adapter_name, str) else adapter_name:
            if name not in self.peft_config:
                raise ValueError(f"Adapter {name} not found.")
        super().set_adapter(adapter_name, inference_mode=inference_mode)
        self._set_tuner_level_grads(inference_mode=inference_mode)

    def _tuner_level_dict(self, name: str) -> nn.ParameterDict:
        """The tuner-level ``nn.ParameterDict`` ``<prefix><name>`` (adapter name -> parameter), created on first use."""
        key = self.prefix + name
        if key not in self._modules:
            self.add_module(key, nn.ParameterDict())
        return self._modules[key]

    def _tuner_level_dicts(self) -> list[nn.Module]:
        return [self._modules[self.prefix + n] for n in self.tuner_level_names if self.prefix + n in self._modules]

    def _set_tuner_level_grads(self, inference_mode: bool) -> None:
        """Only the active adapters' tuner-level parameters (head, prompts, keys) train."""
        active = set(self.active_adapters)
        for container in self._tuner_level_dicts():
            for name, value in container.items():
                value.requires_grad_(name in active and not inference_mode)

    def _enable_adapter_layers(self, enabled: bool = True) -> None:
        super()._enable_adapter_layers(enabled)
        self._adapters_off = not enabled

    @contextlib.contextmanager
    def adapters_disabled(self):
        """Run the base model: every tuner layer, task head and prompt off. The tuner's own form of
        ``PeftModel.disable_adapter()``, for code holding the tuner or a base model with adapters injected."""
        was_disabled = self._adapters_off
        self._enable_adapter_layers(False)
        try:
            yield
        finally:
            self._enable_adapter_layers(not was_disabled)

    def delete_adapter(self, adapter_name: str) -> None:
        """PEFT's ``delete_adapter``, with its choice of the next active adapter made here rather than by the tuner
        layers (DualPrompt and memory tokens wrap none, where PEFT would leave no adapter active): the other active
        adapters stay active; if none is left, the first remaining adapter in sorted order, with PEFT's warning."""
        previous = list(self.active_adapters)
        super().delete_adapter(adapter_name)
        for container in self._tuner_level_dicts():
            if adapter_name in container:
                del container[adapter_name]
        active = [a for a in previous if a != adapter_name]
        if not active and self.peft_config:
            active = [sorted(self.peft_config)[0]]
            if adapter_name in previous:
                warnings.warn(f"Adapter {adapter_name} was active which is now deleted. Setting active adapter to "
                              f"{active[0]}.", stacklevel=2)
        if active and active != list(self.active_adapters):
            self.set_adapter(active, inference_mode=self.peft_config[active[0]].inference_mode)

    def supports_lora_conversion(self, adapter_name: str = "default") -> bool:
        """``False``: no method here is ``W + delta`` (masks multiply the weight; prompts and memory are extra
        tokens), so nothing converts to LoRA. PEFT's default says ``True`` for tuners that wrap no layer."""
        return False

    def _unmergeable_parts(self, config) -> str | None:
        """What of an adapter with ``config`` cannot be written into the base weights (``None``: nothing)."""
        return None

    def _check_merge_allowed(self) -> None:
        """PEFT's check before ``merge_adapter`` / ``merge_and_unload``, plus: refuse adapters with parts that are not
        weights (prompts, memory tokens) instead of merging only their masks or nothing at all.

        Raises:
            ValueError: naming the adapter and the parts that cannot be merged.
        """
        super()._check_merge_allowed()
        for name in self.active_adapters:
            parts = self._unmergeable_parts(self.peft_config[name])
            if parts:
                raise ValueError(f"adapter {name!r} cannot be merged: {parts}, not weights. Keep the PeftModel, or "
                                 "use unload() to get the base model back.")

    def _unload_and_optionally_merge(self, merge=True, progressbar=False, safe_merge=False, adapter_names=None):
        """PEFT's unload/merge, plus: the head hooks are removed, and on merge the (single) merged adapter's task
        head becomes the model's classifier, with its label names in ``config.id2label``. A bare encoder keeps no
        head.

        Raises:
            ValueError: on merge, when the base model's classifier reads mean or first-token pooling
                (:func:`~peft_memory.pooling.set_head_pooling`): a transformers config cannot record it, so the saved
                merged model would reload with a random pooler.
        """
        names = adapter_names or self.active_adapters
        pooling = head_pooling_of(self.model)
        if merge and pooling != "pooler":
            raise ValueError(
                f"merge_and_unload() would give a plain transformers model whose classifier reads {pooling!r} "
                "pooling (set_head_pooling / --head_pooling), which its config cannot record: saved and reloaded, "
                "it would classify a randomly initialised pooler instead. Keep the PeftModel (save_pretrained, then "
                "set_head_pooling on the base model before PeftModel.from_pretrained), or merge in place with "
                "merge_adapter().")
        model = super()._unload_and_optionally_merge(merge=merge, progressbar=progressbar, safe_merge=safe_merge,
                                                    adapter_names=adapter_names)
        if "_hook_handle" in self.__dict__:
            self._hook_handle.remove()
            for handle in self._loss_handles:
                handle.remove()
        classifier = find_classifier(model, self._family)
        if merge and classifier is not None and len(names) == 1 and names[0] in self.task_heads:
            head = self.task_heads[names[0]]
            new = nn.Linear(head.in_features, head.out_features, device=classifier.weight.device,
                            dtype=classifier.weight.dtype)  # the base model's dtype, not the fp32-autocast head's
            new.load_state_dict(head.state_dict())
            setattr(model, self._family.classifier, new.requires_grad_(False))
            labels = getattr(self.peft_config[names[0]], "label_names", None) or list(range(head.out_features))
            model.config.num_labels = head.out_features
            model.config.id2label = {i: str(n) for i, n in enumerate(labels)}
            model.config.label2id = {str(n): i for i, n in enumerate(labels)}
        return model

    # ------------------------------------------------------------- routing
    @contextlib.contextmanager
    def _enable_peft_forward_hooks(self, *args, adapter_names: list[str] | None = None, **kwargs):
        """Per-sample routing for ``PeftModel.forward(..., adapter_names=[...])`` (one name per sample)."""
        if adapter_names is None:
            yield
            return
        if isinstance(adapter_names, str):
            raise ValueError(f"adapter_names={adapter_names!r} is a str; pass a list with one adapter name per sample, "
                             f"e.g. [{adapter_names!r}] * batch_size.")
        batch = _batch_size(args, kwargs)
        if batch is not None and len(adapter_names) != batch:
            raise ValueError(
                f"adapter_names has {len(adapter_names)} entries but the batch has {batch} samples; pass one "
                "adapter name per sample."
            )
        unknown = sorted(set(adapter_names) - set(self.peft_config) - {BASE_ADAPTER})
        if unknown:
            raise ValueError(f"adapter_names contains unknown adapters {unknown}; loaded: {sorted(self.peft_config)}.")
        device = next(self.model.parameters()).device
        with self._routing_context(groups=group_by_adapter(list(adapter_names), device)):
            yield

    @contextlib.contextmanager
    def superposition(self, adapter_names: list[str], alphas: torch.Tensor):
        """Run the next forwards with every tuner layer superposing ``adapter_names`` with weights ``alphas``.

        Args:
            adapter_names: the ``T`` adapters to superpose.
            alphas: ``(batch, T)`` mixing weights, one row per sample (SupSup, Wortsman et al. 2020, Sec. 3.3).

        The task heads return the concatenation of the ``T`` heads' logits, ``(batch, sum_t num_labels_t)``: the
        classifier over every class of those tasks.
        """
        missing = [n for n in adapter_names if n not in self.task_heads]
        if missing:
            raise ValueError(f"adapters {missing} have no task head (num_labels was not set in their config).")
        with torch.no_grad():  # one check per forward, not one per layer
            row = alphas[:1].detach()
            shared = row[0].clone() if bool((alphas == row).all()) else None
        with self._routing_context(superpose=(list(adapter_names), alphas), shared_alphas=shared):
            yield

    @contextlib.contextmanager
    def _routing_context(self, **state):
        if self._routing.groups is not None or self._routing.superpose is not None:
            raise RuntimeError("nested routing contexts are not supported")
        for key, value in state.items():
            setattr(self._routing, key, value)
        try:
            yield
        finally:
            self._routing.reset()

    # ---------------------------------------------------------- task heads
    def _task_logits(self, features: torch.Tensor | dict[str, torch.Tensor],
                     base_logits: torch.Tensor | None = None) -> torch.Tensor | None:
        """Logits of the routed/active task heads.

        Args:
            features: ``(batch, in_features)`` read by every head, or ``{adapter: (batch, in_features)}``, one
                feature per head (memory tokens: each task's class token).

        Returns ``None`` (keep the base model's output) when adapters are disabled or no active adapter has a head.
        """
        if self._adapters_off:
            return None

        def head(name: str, index: torch.Tensor | None) -> torch.Tensor:
            x = features[name] if isinstance(features, dict) else features
            return apply_head(self.task_heads[name], x if index is None else x[index])

        return self._combine_heads(head, base_logits)

    def _combine_heads(self, head: Callable[[str, torch.Tensor | None], torch.Tensor],
                       base_logits: torch.Tensor | None = None) -> torch.Tensor | None:
        """Put the heads' logits together as the routing asks; ``head(name, index)`` gives adapter ``name``'s logits
        ``(rows, num_labels)`` for the batch rows ``index`` (``None``: every row).

        Superposition and several active adapters: the heads concatenated, ``(batch, sum num_labels)``. Per-sample
        routing: ``(batch, max num_labels)``, columns beyond a sample's own head filled with the dtype's most
        negative value; rows of PEFT's ``"__base__"`` and of adapters without a head get ``base_logits`` (the base
        classifier's, ``(batch, base num_labels)``), as PEFT's mixed batches do. ``None`` (the base model's output)
        if no active or routed adapter has a head.

        Raises:
            ValueError: if headless and headed adapters share a batch on a model without a classifier.
        """
        heads, routing = self.task_heads, self._routing
        if routing.superpose is not None:
            return torch.cat([head(n, None) for n in routing.superpose[0]], dim=-1)
        if routing.groups is not None:
            headless = [n for n, _ in routing.groups if n not in heads]
            if len(headless) == len(routing.groups):
                return None
            if headless and base_logits is None:
                raise ValueError(f"adapters {headless} have no task head and the model has no classifier to fall "
                                 "back on: route them in other batches than the adapters with heads.")
            if len(routing.groups) == 1:
                return head(routing.groups[0][0], None)
            width = max(heads[n].out_features if n in heads else base_logits.shape[-1] for n, _ in routing.groups)
            out = None
            for name, index in routing.groups:
                logits = head(name, index) if name in heads else base_logits[index]
                if out is None:
                    batch = sum(len(i) for _, i in routing.groups)
                    out = logits.new_full((batch, width), torch.finfo(logits.dtype).min)
                out[index, : logits.shape[-1]] = logits
            return out
        active = [n for n in self.active_adapters if n in heads]
        if not active:
            return None
        return torch.cat([head(n, None) for n in active], dim=-1)

    def _classifier_hook(self, module, args, output):
        logits = self._task_logits(args[0], base_logits=output)
        return output if logits is None else logits

    def _bare_model_hook(self, module, args, output):
        logits = self._task_logits(self._family.pooled_features(output))
        if logits is not None:
            output["logits"] = logits
        return output


def _batch_size(args, kwargs) -> int | None:
    for key in ("input_ids", "pixel_values", "inputs_embeds"):
        if kwargs.get(key) is not None:
            return kwargs[key].shape[0]
    if args and isinstance(args[0], torch.Tensor):
        return args[0].shape[0]
    return None

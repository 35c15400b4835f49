"""Memory-token tuner (Sandler et al., CVPR 2022): learnable memory read through the shared attention injection.

No layer is wrapped. One forward with memory adapters ``C_1..C_T`` taking part (the active adapters, or those named
in ``adapter_names=[...]``) keeps its state in one :class:`MemoryForward`, created by the first hook and dropped by
the last:

1. pre-hook on the bare encoder (:meth:`MemoryTokenModel._begin_forward`): the state is created and BERT's 2D
   ``attention_mask`` padded for the ``T`` extra tokens;
2. hook on the embeddings: the task class tokens are appended, ``(batch, N, hidden) -> (batch, N + T, hidden)``;
3. at every layer, the provider passes each adapter's memory ``(m, hidden)`` through the layer's pre-attention
   LayerNorm and the frozen ``W_k``/``W_v`` and hands it to the attention function as extra keys and values, with
   Table 1's masks (:mod:`.masks`); the ``N`` original rows run the untouched base call;
4. hook on the last encoder layer: the class tokens are cut off again, ``(batch, N, hidden)``, so the final
   LayerNorm, pooler and classifier see the base model's tensors;
5. the classifier hook (or, on a bare encoder, the model's output hook) sends each class token through the final
   LayerNorm (ViT, DINOv2) or the frozen pooler (BERT) into its adapter's head (:func:`collect_task_logits`);
6. hook on the model's output: ``task_logits`` and ``base_logits`` are added, ``hidden_states`` cut to the base
   model's rows, and the state dropped.

Output: ``logits`` as for every peft_memory tuner (the active adapter's head; per-sample heads with
``adapter_names``; the concatenated heads when several adapters are active), plus ``task_logits``
(``{adapter: (batch, num_labels)}``, every taking part adapter) and ``base_logits`` (the base classifier's own output).
"""

from __future__ import annotations

import contextlib
import functools
import warnings
from dataclasses import dataclass, field

import torch
from torch import nn

from ...families import attention_modules, bare_model, encoder_layers, num_layers
from ..attention import ExtraKV, disable_injection, enable_injection, set_extra_kv
from ..base import ContinualTuner, NoLayer, apply_head
from ..validation import check_layers_in_range
from .masks import class_token_reads, table1_masks

BERT_CLS_TOKEN_ID = 101  # [CLS] in BERT's WordPiece vocabularies


@dataclass
class MemoryForward:
    """State of one forward pass with memory adapters taking part.

    Attributes:
        names: the ``T`` adapters taking part, in creation order.
        fine_tune_cls: the single adapter taking part replaces the original class token (no task class tokens).
        reads: ``(T, T)`` bool, which class tokens each class token reads (:func:`.masks.class_token_reads`).
        num_inputs: ``N``, the original sequence length (set by the embeddings hook).
        masks: Table 1 masks per memory layout (layers with the same memory sizes share them).
        tokens: ``(batch, T, hidden)`` class tokens after the last layer, before the final norm.
        task_logits: ``{adapter: (batch, num_labels)}`` once the heads have run.
        base_logits: the base classifier's own output ``(batch, num_labels)``, if the model has a classifier.
    """

    names: list[str]
    fine_tune_cls: bool = False
    reads: torch.Tensor | None = None
    num_inputs: int | None = None
    masks: dict[tuple[int, ...], tuple[torch.Tensor, torch.Tensor]] = field(default_factory=dict)
    tokens: torch.Tensor | None = None
    task_logits: dict[str, torch.Tensor] | None = None
    base_logits: torch.Tensor | None = None


@dataclass
class ModelParts:
    """The modules of the base model the hooks read. A plain object, not an ``nn.Module``, so the tuner does not
    register the model's modules a second time."""

    bare: nn.Module
    layers: list[nn.Module]
    attention: list[nn.Module]


def collect_task_logits(heads: nn.ModuleDict, features: torch.Tensor, names: list[str]) -> dict[str, torch.Tensor]:
    """Each adapter's head on its own class token: ``features`` ``(batch, T, hidden)``, ``names`` the ``T``
    adapters in the same order; returns ``{name: (batch, num_labels)}`` for the adapters that have a head."""
    return {n: apply_head(heads[n], features[:, i]) for i, n in enumerate(names) if n in heads}


class MemoryTokenModel(ContinualTuner):
    """Memory tokens on a ViT, DINOv2 or BERT model; use through ``peft.get_peft_model(model, MemoryTokenConfig())``.

    Tuner-level parameters per adapter: ``memory`` ``(len(layers), m, hidden)``, ``class_token`` ``(hidden,)`` and
    the head. Several adapters run in ONE forward: ``model.base_model.set_adapter(["task_0", "task_1"])`` then
    ``model(**batch).task_logits``; independently trained adapters (``attention="concatenation"``) give exactly
    what each gives alone, up to fp32 rounding.

    Raises:
        ValueError: for memory layers out of range, flash/flex attention, a ``fine_tune_cls`` adapter run together
            with others, an extension adapter run without the adapters it extends, Gradient-ID (no superposition),
            or ``merge_and_unload`` (memory tokens are not weights).
    """

    prefix: str = "memory_token_"
    tuner_layer_cls = NoLayer
    target_module_mapping: dict[str, list[str]] = {}
    tuner_level_names = ("head", "memory", "class_token")

    def _create_and_replace(self, *args, **kwargs):  # pragma: no cover - DUMMY_TARGET_MODULES: never called
        raise NotImplementedError

    # ------------------------------------------------------------------ set-up
    def _head_in_features(self, config) -> int:
        # the head reads the task's class token; with fine_tune_cls, the classifier's own input
        return self._classifier_in_features if config.fine_tune_cls else self.model.config.hidden_size

    def _init_adapter_extras(self, model, adapter_name, config) -> None:
        super()._init_adapter_extras(model, adapter_name, config)
        if not config.num_labels and not config.fine_tune_cls:
            warnings.warn(f"memory-token adapter {adapter_name!r} has no task head (num_labels / label_names unset): "
                          "its memory only reaches the outputs through the task's class token and head, so it gets "
                          "no gradient and changes no output. Set label_names (or num_labels).", stacklevel=2)
        self._once("memory", lambda: self._install_hooks(model))
        n = num_layers(model)
        check_layers_in_range(config.layers_to_transform, n)
        layers = list(config.layers_to_transform) if config.layers_to_transform is not None else list(range(n))
        config.layers_to_transform = layers
        if config.attention == "extension" and config.extends is None:
            config.extends = [a for a in self._tuner_level_dict("class_token") if not self.peft_config[a].fine_tune_cls]
        hidden, ref = model.config.hidden_size, next(model.parameters())
        memory = torch.empty(len(layers), config.num_memory_tokens, hidden, device=ref.device, dtype=ref.dtype)
        self._tuner_level_dict("memory")[adapter_name] = nn.Parameter(memory.normal_(0.0, config.init_std))
        self._tuner_level_dict("class_token")[adapter_name] = nn.Parameter(self._initial_class_token(config))

    def _install_hooks(self, model) -> None:
        self._memory_forward = self._backward_state = None
        enable_injection(model)
        family = self._family
        self._parts = parts = ModelParts(bare_model(model), list(encoder_layers(model, family)),
                                         attention_modules(model, family))
        self._handles = [
            parts.bare.register_forward_pre_hook(self._begin_forward, with_kwargs=True),
            parts.bare.embeddings.register_forward_hook(self._embeddings_hook),
            self._after_layers_hook(parts.bare),
            model.register_forward_hook(self._output_hook),
        ]
        for index, module in enumerate(parts.attention):
            set_extra_kv(module, self._provider(index))

    @torch.no_grad()
    def _initial_class_token(self, config) -> torch.Tensor:
        """The base model's embedded class token: ``cls_token + position_embeddings[0]`` (ViT, DINOv2), or the
        embedding of ``[CLS]`` at position 0 (BERT)."""
        emb = self._parts.bare.embeddings
        if hasattr(emb, "cls_token"):
            return (emb.cls_token[0, 0] + emb.position_embeddings[0, 0]).clone()
        vocab = emb.word_embeddings.num_embeddings
        token_id = config.cls_token_id
        if token_id is None:
            token_id = getattr(self.model.config, "cls_token_id", None)
        if token_id is None:
            token_id = BERT_CLS_TOKEN_ID
        if token_id >= vocab:
            raise ValueError(f"cls_token_id={token_id} is outside the model's vocabulary of {vocab} tokens; pass "
                             "MemoryTokenConfig(cls_token_id=tokenizer.cls_token_id).")
        was_training = emb.training
        emb.eval()
        ids = torch.tensor([[token_id]], device=emb.word_embeddings.weight.device)
        token = emb(input_ids=ids)[0, 0].clone()
        emb.train(was_training)
        return token

    # ------------------------------------------------------------ per forward
    def _taking_part(self) -> list[str]:
        if self._adapters_off:
            return []
        routing = self._routing
        if routing.superpose is not None:
            raise ValueError("memory tokens have no superposition, so Gradient-ID does not apply; infer the task "
                             "from all heads in one forward (task_logits), e.g. the most confident head.")
        wanted = {n for n, _ in routing.groups} if routing.groups is not None else set(self.active_adapters)
        names = [n for n in self._tuner_level_dict("class_token") if n in wanted]
        tuned = [n for n in names if self.peft_config[n].fine_tune_cls]
        if tuned and len(names) > 1:
            raise ValueError(f"adapter {tuned[0]!r} fine-tunes the original class token (fine_tune_cls=True) and "
                             f"changes the base model's outputs; it cannot run together with {names}. Activate it "
                             "alone.")
        return names

    def _begin_forward(self, module, args, kwargs):
        names = self._taking_part()
        if not names:
            self._memory_forward = None
            return args, kwargs
        if self.peft_config[names[0]].fine_tune_cls:
            self._memory_forward = MemoryForward(names, fine_tune_cls=True)
            return args, kwargs
        reads = class_token_reads(names, {n: self.peft_config[n].extends for n in names})
        self._memory_forward = MemoryForward(names, reads=reads)
        mask = kwargs.get("attention_mask")
        if mask is None and len(args) > 1 and isinstance(args[1], torch.Tensor):
            mask, args = args[1], (args[0], None, *args[2:])
        if mask is not None and mask.dim() == 2:  # BERT: the class tokens are real (unpadded) positions
            kwargs["attention_mask"] = torch.cat([mask, mask.new_ones(mask.shape[0], len(names))], dim=1)
        return args, kwargs

    def _embeddings_hook(self, module, args, output):
        st = self._memory_forward
        if st is None:
            return output
        tokens = torch.stack([self._tuner_level_dict("class_token")[n] for n in st.names]).to(output.dtype)  # (T, hidden)
        batch = output.shape[0]
        if st.fine_tune_cls:  # the adapter's class token replaces the original one
            return torch.cat([tokens[:1].expand(batch, 1, -1), output[:, 1:]], dim=1)
        st.num_inputs = output.shape[1]
        return torch.cat([output, tokens.expand(batch, -1, -1)], dim=1)  # (batch, N + T, hidden)

    def _after_layers_hook(self, bare: nn.Module):
        """Where the class tokens leave the sequence: the output of the layers' parent ``encoder`` (BERT, DINOv2), or
        the input of the final norm (transformers 5 ViT keeps its layers on the bare model). Not the last layer's
        output: a layer may be recomputed by gradient checkpointing, and the class tokens must leave the
        checkpointed call to get their gradient."""
        encoder = getattr(bare, "encoder", None)
        if encoder is not None:
            return encoder.register_forward_hook(self._split_output_hook)
        return bare.get_submodule(self._family.final_norm).register_forward_pre_hook(self._split_input_hook)

    # hooks are bound methods, never closures: copy.deepcopy of the model then follows them to the copied tuner
    def _split_output_hook(self, module, args, output):
        return self._split_rows(output)

    def _split_input_hook(self, module, args):
        return (self._split_rows(args[0]), *args[1:])

    def _split_rows(self, output):
        """Keep the input tokens' rows of ``output`` (a tensor, tuple or ModelOutput whose first item is
        ``(batch, N + T, hidden)``); the class tokens ``(batch, T, hidden)`` go to ``st.tokens``."""
        st = self._memory_forward
        if st is None or st.fine_tune_cls:
            return output
        hidden = output if isinstance(output, torch.Tensor) else output[0]
        n = st.num_inputs
        st.tokens = hidden[:, n:]  # before the final norm
        if isinstance(output, torch.Tensor):
            return hidden[:, :n]
        if isinstance(output, tuple):
            return (hidden[:, :n], *output[1:])
        output["last_hidden_state"] = hidden[:, :n]
        return output

    def _provider(self, index: int):
        """The extra-K/V provider of layer ``index``: a ``partial`` of a bound method, so ``copy.deepcopy`` and
        pickle of the model follow it to the copied tuner (a closure would keep reading the original's parameters)."""
        return functools.partial(self._provide_memory, index)

    def _provide_memory(self, index: int, module, query):
        st = self._memory_forward
        if st is None and not torch.compiler.is_compiling() and torch._C._current_graph_task_id() != -1:
            st = self._backward_state  # a layer recomputed by gradient checkpointing reads its forward's memory
        if st is None or self._adapters_off:
            return None
        keys, values, sizes = [], [], []
        for name in st.names:
            config = self.peft_config[name]
            if index in config.layers_to_transform and config.num_memory_tokens:
                memory = self._tuner_level_dict("memory")[name][config.layers_to_transform.index(index)]
                memory = memory.to(query.dtype)  # fp32 memory (PEFT's autocast) on a half-precision model
                k, v = self._project_memory(index, memory, config)
                keys.append(k)
                values.append(v)
            sizes.append(config.num_memory_tokens if index in config.layers_to_transform else 0)
        heads, head_dim = query.shape[1], query.shape[3]
        if keys:  # (M, hidden) -> (1, heads, M, head_dim)
            k = torch.cat(keys).view(1, -1, heads, head_dim).transpose(1, 2)
            v = torch.cat(values).view(1, -1, heads, head_dim).transpose(1, 2)
        else:
            k = v = query.new_zeros(1, heads, 0, head_dim)
        if st.fine_tune_cls:  # plain fine-tuning: every token reads the memory
            return ExtraKV(k, v) if keys else None
        masks = st.masks.get(tuple(sizes))
        if masks is None:
            masks = st.masks[tuple(sizes)] = table1_masks(st.reads, sizes, st.num_inputs, device=query.device)
        return ExtraKV(k, v, *masks, base_rows=st.num_inputs)

    def _project_memory(self, index: int, memory: torch.Tensor, config):
        """Memory ``(m, hidden)`` through the pre-attention LayerNorm (unless ``memory_after_norm``) and the frozen
        key/value projections of layer ``index``."""
        layer, family = self._parts.layers[index], self._family
        if family.attention_norm and not config.memory_after_norm:
            memory = layer.get_submodule(family.attention_norm)(memory)
        return layer.get_submodule(family.key)(memory), layer.get_submodule(family.value)(memory)

    @contextlib.contextmanager
    def concatenated(self, adapter_names: list[str]):
        """Run the next forwards with every adapter of ``adapter_names`` taking part (one class token each), then
        restore the active adapters: ``output.task_logits[name]`` is ``(batch, num_labels)`` for each of them."""
        previous = list(self.active_adapters)
        self.set_adapter(list(adapter_names), inference_mode=True)
        try:
            yield
        finally:
            self.set_adapter(previous if len(previous) > 1 else previous[0])

    # ------------------------------------------------------------- outputs
    def _token_features(self, tokens: torch.Tensor) -> torch.Tensor:
        """Final features of the class tokens ``(batch, T, hidden)``: final LayerNorm, or BERT's frozen pooler (the
        raw class tokens when :func:`peft_memory.pooling.set_head_pooling` replaced the pooler: each task's class
        token IS its sentence feature)."""
        bare, family = self._parts.bare, self._family
        if family.final_norm:
            return getattr(bare, family.final_norm)(tokens)
        pooler = getattr(bare, "pooler", None)
        if pooler is None or not hasattr(pooler, "dense"):
            return tokens
        return pooler.activation(pooler.dense(tokens))

    def _class_token_logits(self, st: MemoryForward) -> torch.Tensor | None:
        """Fill ``st.task_logits`` and combine them as the routing asks (see :meth:`_combine_heads`)."""
        st.task_logits = collect_task_logits(self.task_heads, self._token_features(st.tokens), st.names)
        if not st.task_logits:
            return None
        logits = st.task_logits
        return self._combine_heads(lambda name, index: logits[name] if index is None else logits[name][index],
                                   st.base_logits)

    def _classifier_hook(self, module, args, output):
        st = self._memory_forward
        if st is None or st.tokens is None:  # no memory adapter, or fine_tune_cls: the heads read the classifier input
            return super()._classifier_hook(module, args, output)
        st.base_logits = output
        logits = self._class_token_logits(st)
        return output if logits is None else logits

    def _bare_model_hook(self, module, args, output):
        st = self._memory_forward
        if st is None or st.tokens is None:
            return super()._bare_model_hook(module, args, output)
        logits = self._class_token_logits(st)
        if logits is not None:
            output["logits"] = logits
        return output

    def _output_hook(self, module, args, output):
        st, self._memory_forward = self._memory_forward, None  # the forward is over: layers called directly later see no memory
        self._backward_state = st if torch.is_grad_enabled() else None
        if st is not None and st.tokens is not None and isinstance(output, dict):
            output["task_logits"] = st.task_logits
            if st.base_logits is not None:
                output["base_logits"] = st.base_logits
            if output.get("hidden_states") is not None:  # the base model's rows only
                output["hidden_states"] = tuple(h[:, : st.num_inputs] for h in output["hidden_states"])
        return output

    def _unmergeable_parts(self, config) -> str | None:
        return "memory tokens are extra tokens"

    def _unload_and_optionally_merge(self, merge=True, progressbar=False, safe_merge=False, adapter_names=None):
        if merge:
            self._check_merge_allowed()
        for handle in self.__dict__.get("_handles", []):
            handle.remove()
        model = super()._unload_and_optionally_merge(merge=False, progressbar=progressbar, adapter_names=adapter_names)
        if "_parts" in self.__dict__:
            disable_injection(model, self._parts.attention)
        return model

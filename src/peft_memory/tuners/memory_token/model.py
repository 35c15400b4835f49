"""Memory-token tuner (Sandler et al., CVPR 2022): learnable memory read through the shared attention injection.

No layer is wrapped. Per forward with memory adapters ``C_1..C_T`` taking part (the active adapters, or the
adapters named in ``adapter_names=[...]``):

1. a pre-hook on the bare encoder pads BERT's 2D ``attention_mask`` for the ``T`` extra tokens;
2. a hook on the embeddings appends the task class tokens: ``(batch, N, hidden) -> (batch, N + T, hidden)``;
3. at every layer, the provider passes each adapter's memory ``(m, hidden)`` through the layer's pre-attention
   LayerNorm and the frozen ``W_k``/``W_v`` and hands it to the attention function as extra keys and values, with
   Table 1's masks (:mod:`.masks`); the ``N`` original rows run the untouched base call;
4. a hook on the last encoder layer cuts the class tokens off again ``(batch, N, hidden)``, so the final
   LayerNorm, pooler and classifier see the base model's tensors (``hidden_states`` are cut the same way); each class token goes through the final LayerNorm (ViT, DINOv2) or the
   frozen pooler (BERT) into its adapter's head.

Output: ``logits`` as for every peft_memory tuner (the active adapter's head; per-sample heads with
``adapter_names``; the concatenated heads when several adapters are active), plus ``task_logits``
(``{adapter: (batch, num_labels)}``, every taking part adapter) and ``base_logits`` (the base classifier's own output).
"""

from __future__ import annotations

import contextlib
from types import SimpleNamespace

import torch
from torch import nn

from ...attention import ExtraKV, enable_injection, set_extra_kv
from ...families import attention_modules, bare_model, encoder_layers, num_layers
from ..base import ContinualTuner
from ..dual_prompt.model import _NoLayer
from .masks import class_token_reads, table1_masks

BERT_CLS_TOKEN_ID = 101  # [CLS] in BERT's WordPiece vocabularies


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
    tuner_layer_cls = _NoLayer
    target_module_mapping: dict[str, list[str]] = {}
    tuner_level_names = ("head", "memory", "class_token")

    def _create_and_replace(self, *args, **kwargs):  # pragma: no cover - DUMMY_TARGET_MODULES: never called
        raise NotImplementedError

    # ------------------------------------------------------------------ set-up
    def inject_adapter(self, model, adapter_name, *args, **kwargs):
        super().inject_adapter(model, adapter_name, *args, **kwargs)
        config = self.peft_config[adapter_name]
        self._install_hooks(model)
        n = num_layers(model)
        layers = list(config.layers_to_transform) if config.layers_to_transform is not None else list(range(n))
        bad = [i for i in layers if i >= n]
        if bad:
            raise ValueError(f"layers_to_transform has indices {bad} out of range: the model has {n} layers "
                             f"(valid: 0..{n - 1}).")
        config.layers_to_transform = layers
        if config.attention == "extension" and config.extends is None:
            config.extends = [a for a in self._tuner_level_dict("class_token") if not self.peft_config[a].fine_tune_cls]
        hidden, ref = model.config.hidden_size, next(model.parameters())
        memory = torch.empty(len(layers), config.num_memory_tokens, hidden, device=ref.device, dtype=ref.dtype)
        self._tuner_level_dict("memory")[adapter_name] = nn.Parameter(memory.normal_(0.0, config.init_std))
        self._tuner_level_dict("class_token")[adapter_name] = nn.Parameter(self._initial_class_token(config))
        if not config.fine_tune_cls and adapter_name in self.task_heads:  # the head reads the task's class token
            old = self.task_heads[adapter_name]
            if old.in_features != hidden:
                head = nn.Linear(hidden, old.out_features, device=ref.device, dtype=ref.dtype)
                nn.init.normal_(head.weight, std=getattr(model.config, "initializer_range", 0.02))
                nn.init.zeros_(head.bias)
                self.task_heads[adapter_name] = head
        self._set_tuner_level_grads(inference_mode=config.inference_mode)

    def _install_hooks(self, model) -> None:
        if "_mem" in self.__dict__:
            return
        self._mem = SimpleNamespace(names=[], n=None, reads=None, masks={}, tokens=None, fine_tune_cls=False,
                                    base_logits=None, task_logits=None)
        enable_injection(model)
        # plain attributes, not submodules: the tuner must not register the model's modules a second time
        self.__dict__["_bare"] = bare = bare_model(model)
        self.__dict__["_layers"] = layers = list(encoder_layers(model, self._family))
        self.__dict__["_attention"] = attention_modules(model, self._family)
        self._handles = [
            bare.register_forward_pre_hook(self._begin_forward, with_kwargs=True),
            bare.embeddings.register_forward_hook(self._embeddings_hook),
            layers[-1].register_forward_hook(self._last_layer_hook),
            model.register_forward_hook(self._output_hook),
        ]
        for index, module in enumerate(self._attention):
            set_extra_kv(module, self._provider(index))

    @torch.no_grad()
    def _initial_class_token(self, config) -> torch.Tensor:
        """The base model's embedded class token: ``cls_token + position_embeddings[0]`` (ViT, DINOv2), or the
        embedding of ``[CLS]`` at position 0 (BERT)."""
        emb = self._bare.embeddings
        if hasattr(emb, "cls_token"):
            return (emb.cls_token[0, 0] + emb.position_embeddings[0, 0]).clone()
        was_training = emb.training
        emb.eval()
        ids = torch.tensor([[config.cls_token_id if config.cls_token_id is not None else BERT_CLS_TOKEN_ID]],
                           device=emb.word_embeddings.weight.device)
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
        st = self._mem
        st.names, st.tokens, st.base_logits, st.task_logits = self._taking_part(), None, None, None
        st.fine_tune_cls = bool(st.names) and self.peft_config[st.names[0]].fine_tune_cls
        st.reads, st.masks = None, {}
        if st.names and not st.fine_tune_cls:
            st.reads = class_token_reads(st.names, {n: self.peft_config[n].extends for n in st.names})
            mask = kwargs.get("attention_mask")
            if mask is None and len(args) > 1 and isinstance(args[1], torch.Tensor):
                mask, args = args[1], (args[0], None, *args[2:])
            if mask is not None and mask.dim() == 2:  # BERT: the class tokens are real (unpadded) positions
                kwargs["attention_mask"] = torch.cat([mask, mask.new_ones(mask.shape[0], len(st.names))], dim=1)
        return args, kwargs

    def _embeddings_hook(self, module, args, output):
        st = self._mem
        if not st.names:
            return output
        tokens = torch.stack([self._tuner_level_dict("class_token")[n] for n in st.names]).to(output.dtype)  # (T, hidden)
        batch = output.shape[0]
        if st.fine_tune_cls:  # the adapter's class token replaces the original one
            return torch.cat([tokens[:1].expand(batch, 1, -1), output[:, 1:]], dim=1)
        st.n = output.shape[1]
        return torch.cat([output, tokens.expand(batch, -1, -1)], dim=1)  # (batch, N + T, hidden)

    def _last_layer_hook(self, module, args, output):
        st = self._mem
        if not st.names or st.fine_tune_cls:
            return output
        hidden = output[0] if isinstance(output, tuple) else output
        st.tokens = hidden[:, st.n:]  # (batch, T, hidden), before the final norm
        return (hidden[:, : st.n], *output[1:]) if isinstance(output, tuple) else hidden[:, : st.n]

    def _provider(self, index: int):
        def provide(module, query):
            st = self._mem
            if not st.names or self._adapters_off:
                return None
            keys, values, sizes = [], [], []
            for name in st.names:
                config = self.peft_config[name]
                if index in config.layers_to_transform and config.num_memory_tokens:
                    memory = self._tuner_level_dict("memory")[name][config.layers_to_transform.index(index)]
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
            masks = st.masks.get(tuple(sizes))  # layers with the same memory layout share their masks
            if masks is None:
                masks = st.masks[tuple(sizes)] = table1_masks(st.reads, sizes, st.n, device=query.device)
            return ExtraKV(k, v, *masks, base_rows=st.n)

        return provide

    def _project_memory(self, index: int, memory: torch.Tensor, config):
        """Memory ``(m, hidden)`` through the pre-attention LayerNorm (unless ``memory_after_norm``) and the frozen
        key/value projections of layer ``index``."""
        layer, family = self._layers[index], self._family
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
    def _token_features(self) -> torch.Tensor:
        """Final features of the class tokens ``(batch, T, hidden)``: final LayerNorm, or BERT's frozen pooler."""
        tokens, family = self._mem.tokens, self._family
        if family.final_norm:
            return getattr(self._bare, family.final_norm)(tokens)
        pooler = getattr(self._bare, "pooler", None)
        return tokens if pooler is None else pooler.activation(pooler.dense(tokens))

    def _apply_head(self, name, features, index=None):
        st = self._mem
        if st.tokens is None:  # fine_tune_cls: the head reads the original class token's feature
            return super()._apply_head(name, features, index)
        if st.task_logits is None:
            feats = self._token_features()
            st.task_logits = {n: self.task_heads[n](feats[:, i]) for i, n in enumerate(st.names)
                              if n in self.task_heads}
        logits = st.task_logits[name]
        return logits if index is None else logits[index]

    def _classifier_hook(self, module, args, output):
        self._mem.base_logits = output
        return super()._classifier_hook(module, args, output)

    def _output_hook(self, module, args, output):
        st = self._mem
        names, st.names = st.names, []  # the forward is over: layers called directly later see no memory
        if names and isinstance(output, dict) and not st.fine_tune_cls:
            if st.task_logits is None and self.task_heads:
                self._apply_head(names[0], None)
            output["task_logits"] = st.task_logits
            if st.base_logits is not None:
                output["base_logits"] = st.base_logits
            if output.get("hidden_states") is not None:  # the base model's rows only
                output["hidden_states"] = tuple(h[:, : st.n] for h in output["hidden_states"])
        return output

    def _unload_and_optionally_merge(self, merge=True, progressbar=False, safe_merge=False, adapter_names=None):
        if merge:
            raise ValueError("memory tokens are extra tokens, not weights: they cannot be merged. Use unload() to "
                             "get the base model back.")
        for handle in self.__dict__.get("_handles", []):
            handle.remove()
        for module in self.__dict__.get("_attention", []):
            set_extra_kv(module, None)
        return super()._unload_and_optionally_merge(merge=False, progressbar=progressbar, adapter_names=adapter_names)

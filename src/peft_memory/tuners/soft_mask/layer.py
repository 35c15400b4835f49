"""Soft-mask tuner layer: ``y = x (W * M_t)^T + b`` over a frozen ``nn.Linear`` (Kang et al., Sec. 3, Eq. 3)."""

from __future__ import annotations

import warnings

import torch
import torch.nn.functional as F
from peft.tuners.tuners_utils import BaseTunerLayer, check_adapters_to_merge
from torch import nn

from ..routing import Routing


class SoftMaskLayer(BaseTunerLayer):
    """Holds one real-valued mask per task adapter, with the shape of the wrapped weight ``(out, in)``."""

    adapter_layer_names = ("soft_mask_values",)
    other_param_names = ()

    def __init__(self, base_layer: nn.Module, routing: Routing) -> None:
        self.base_layer = base_layer
        self.soft_mask_values = nn.ParameterDict({})
        self._disable_adapters = False
        self.merged_adapters: list[str] = []
        self._routing = routing
        self._cache: dict[str, tuple[tuple, torch.Tensor]] = {}
        self._original_weight: torch.Tensor | None = None
        self.in_features, self.out_features = base_layer.in_features, base_layer.out_features

    def update_layer(self, adapter_name: str, mask_init: float, init_weights: bool, inference_mode: bool) -> None:
        weight = self.get_base_layer().weight
        mask = torch.full(weight.shape, float(mask_init), dtype=weight.dtype, device=weight.device)
        if not init_weights:  # the reference code's U(0.99, 1.0) around mask_init
            mask.uniform_(mask_init - 0.01, mask_init)
        self.soft_mask_values[adapter_name] = nn.Parameter(mask)
        self.set_adapter(self.active_adapters, inference_mode=inference_mode)

    # ----------------------------------------------------------- weights
    def masked_weight(self, adapter_name: str) -> torch.Tensor:
        """``W * M`` of shape ``(out, in)``.

        With autograd off or a frozen mask the product is cached per adapter and recomputed only after an in-place
        edit of the mask or the weight (tracked by their version counters); not under ``torch.compile``.
        """
        weight, mask = self.get_base_layer().weight, self.soft_mask_values[adapter_name]
        if (torch.is_grad_enabled() and mask.requires_grad) or torch.compiler.is_compiling():
            # no cache under torch.compile: guards on its keys would recompile on every call
            return (weight * mask).to(weight.dtype)  # an fp32 mask (PEFT's autocast) over a half-precision weight
        key = (mask._version, weight._version, mask.data_ptr(), weight.data_ptr())
        hit = self._cache.get(adapter_name)
        if hit is None or hit[0] != key:
            with torch.no_grad():
                hit = (key, (weight * mask).to(weight.dtype))
            self._cache[adapter_name] = hit
        return hit[1]

    def _adapter_weight(self, adapter_name: str) -> torch.Tensor:
        if adapter_name in self.soft_mask_values:
            return self.masked_weight(adapter_name)
        return self.get_base_layer().weight  # an adapter without a mask here (e.g. head only) sees W

    # ------------------------------------------------------------- merge
    def merge(self, safe_merge: bool = False, adapter_names: list[str] | None = None) -> None:
        """Write ``W * M`` of one adapter into the base weight; the original weight is kept for :meth:`unmerge`.

        Raises:
            ValueError: if more than one adapter is asked for (masks of different tasks do not compose), or
                ``safe_merge`` finds non-finite values.
        """
        adapter_names = [n for n in check_adapters_to_merge(self, adapter_names) if n in self.soft_mask_values]
        if not adapter_names:
            return
        if len(adapter_names) > 1 or self.merged:
            raise ValueError("Soft masks of different tasks do not compose: merge exactly one adapter at a time.")
        base = self.get_base_layer()
        merged = (base.weight.data * self.soft_mask_values[adapter_names[0]].data).to(base.weight.dtype)
        if safe_merge and not torch.isfinite(merged).all():
            raise ValueError(f"NaNs detected in the merged weights. The adapter {adapter_names[0]} seems to be broken "
                             "(non-finite values in its mask or the base weight).")
        self._original_weight = base.weight.data.clone()
        base.weight.data.copy_(merged)
        self.merged_adapters.append(adapter_names[0])

    def unmerge(self) -> None:
        """Restore the original weight (kept at merge time, so zero mask entries are no problem)."""
        if not self.merged:
            warnings.warn("Already unmerged. Nothing to do.", stacklevel=2)
            return
        self.get_base_layer().weight.data.copy_(self._original_weight)
        self._original_weight = None
        self.merged_adapters.clear()


class Linear(nn.Module, SoftMaskLayer):
    """Soft-masked ``nn.Linear``. Input ``(batch, seq_len, in_features)``, output ``(batch, seq_len, out_features)``."""

    def __init__(self, base_layer: nn.Linear, adapter_name: str, config, routing: Routing, **kwargs) -> None:
        super().__init__()
        SoftMaskLayer.__init__(self, base_layer, routing)
        self._active_adapter = adapter_name
        self.update_layer(adapter_name, config.mask_init, config.init_weights, config.inference_mode)

    def forward(self, x: torch.Tensor, *args, **kwargs) -> torch.Tensor:
        base = self.get_base_layer()
        if self.disable_adapters:
            if self.merged:
                self.unmerge()
            return base(x, *args, **kwargs)
        if self.merged:
            return base(x, *args, **kwargs)
        routing = self._routing
        if routing.superpose is not None:
            return self._superposed(x, *routing.superpose, shared=routing.shared_alphas)
        if routing.groups is not None:
            return self._forward_routed(x, routing.groups)
        active = [a for a in self.active_adapters if a in self.soft_mask_values]
        if not active:
            return base(x, *args, **kwargs)
        if len(active) > 1:
            raise ValueError(
                f"{len(active)} soft-mask adapters are active ({active}); masks of different tasks do not compose. "
                "Activate one with set_adapter, or route per sample with adapter_names=[...]."
            )
        return F.linear(x, self.masked_weight(active[0]), base.bias)

    def _forward_routed(self, x: torch.Tensor, groups: list[tuple[str, torch.Tensor]]) -> torch.Tensor:
        """One masked matmul per adapter present in the batch; rows go back to their place."""
        bias = self.get_base_layer().bias
        if len(groups) == 1:
            return F.linear(x, self._adapter_weight(groups[0][0]), bias)
        parts = [(index, F.linear(x[index], self._adapter_weight(name), bias)) for name, index in groups]
        # in the matmul's dtype: under autocast (mixed precision) bf16/fp16, not the fp32 residual stream's
        out = x.new_empty((*x.shape[:-1], self.out_features), dtype=parts[0][1].dtype)
        for index, part in parts:
            out[index] = part
        return out

    def _superposed(self, x: torch.Tensor, names: list[str], alphas: torch.Tensor,
                    shared: torch.Tensor | None = None) -> torch.Tensor:
        """``x_b (W * sum_t alphas[b, t] M_t)^T + b`` for every sample ``b``; ``alphas``: ``(batch, T)``.

        Linear in ``alphas``, so it equals ``sum_t alphas[b, t] * x_b (W * M_t)^T``. When every row of ``alphas`` is
        ``shared`` (``(T,)``, Gradient-ID's ``1/T``), one matmul with the mixed weight gives the output and
        :class:`SharedSuperposition` the per-sample gradients; otherwise the ``T`` masked weights are stacked into one
        ``(T * out, in)`` matrix and the outputs mixed per sample.
        """
        with torch.no_grad():
            stacked = torch.stack([self._adapter_weight(n) for n in names])  # (T, out, in)
        if shared is not None:
            out = SharedSuperposition.apply(x, alphas, stacked, shared)
        else:
            y = F.linear(x, stacked.flatten(0, 1)).unflatten(-1, (len(names), self.out_features))  # (B, ..., T, out)
            mix = alphas.to(y.dtype).view(alphas.shape[0], *([1] * (y.dim() - 3)), len(names), 1)
            out = (y * mix).sum(dim=-2)
        bias = self.get_base_layer().bias
        return out if bias is None else out + bias

    def __repr__(self) -> str:
        return "soft_mask." + super().__repr__()


class SharedSuperposition(torch.autograd.Function):
    """``y_b = x_b (sum_t alphas[b, t] W_t)^T`` when every row of ``alphas`` equals ``shared``, with exact gradients.

    Forward: one matmul with ``W_bar = sum_t shared[t] W_t`` instead of ``T`` (the value is the same for every row).
    Backward: ``dL/dx = g W_bar`` and, per sample, ``dL/d alphas[b, t] = <G_b, W_t>`` with
    ``G_b = sum_s g_{b,s}^T x_{b,s}`` of shape ``(out, in)``: one batched matmul plus a ``(batch, out * in) @
    (out * in, T)`` product, instead of the ``T`` matmuls of the stacked form. Batch rows are processed in chunks so
    that ``G`` holds at most ``_CHUNK`` elements.

    Shapes: ``x`` ``(batch, ..., in)``, ``alphas`` ``(batch, T)``, ``weights`` ``(T, out, in)`` (no gradient),
    ``shared`` ``(T,)``; output ``(batch, ..., out)``.
    """

    _CHUNK = 1 << 26

    @staticmethod
    def forward(ctx, x, alphas, weights, shared):
        with torch.autocast(device_type=weights.device.type, enabled=False):  # the mixed weight in the weights' dtype
            mixed = (shared.to(weights.dtype) @ weights.flatten(1)).view(weights.shape[1:])
        ctx.save_for_backward(x, weights, mixed)
        ctx.alpha_dtype, ctx.x_dtype = alphas.dtype, x.dtype
        return F.linear(x, mixed)  # under autocast (mixed precision), in the autocast dtype

    @staticmethod
    def backward(ctx, grad):
        x, weights, mixed = ctx.saved_tensors
        # Under mixed precision the gradient (and input) may be bf16/fp16 while the weights are not: compute in the
        # weights' dtype, with autocast off (it would otherwise recast the products below).
        with torch.autocast(device_type=grad.device.type, enabled=False):
            grad, x = grad.to(mixed.dtype), x.to(mixed.dtype)
            grad_x = (grad @ mixed).to(ctx.x_dtype) if ctx.needs_input_grad[0] else None
            grad_alphas = None
            if ctx.needs_input_grad[1]:
                batch, (_, out, inp) = x.shape[0], weights.shape
                g, xs = grad.reshape(batch, -1, out).transpose(1, 2), x.reshape(batch, -1, inp)
                flat = weights.flatten(1).T  # (out * in, T)
                step = max(1, SharedSuperposition._CHUNK // (out * inp))
                grad_alphas = torch.cat([torch.bmm(g[i:i + step], xs[i:i + step]).flatten(1) @ flat
                                         for i in range(0, batch, step)]).to(ctx.alpha_dtype)
        return grad_x, grad_alphas, None, None

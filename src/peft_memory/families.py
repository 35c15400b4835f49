"""Where things live in each supported model family (transformers 5.x module names).

This is the one table that knows module paths. Adapter state-dict keys depend on these names, which is why the
package pins ``transformers>=5,<6`` (docs/design.md).
"""

from __future__ import annotations

from dataclasses import dataclass, replace

import torch
from torch import nn


@dataclass(frozen=True)
class ModelFamily:
    """Module names of one transformer family, relative to an encoder layer.

    Attributes:
        name: family name used in error messages.
        model_types: ``config.model_type`` values belonging to the family.
        layers_pattern: the ``nn.ModuleList`` name holding the encoder layers (PEFT's ``layers_pattern``).
        query, key, value: self-attention input projections.
        attention_output: self-attention output projection.
        ffn: the two feed-forward projections (in, out).
        attention: the module, relative to an encoder layer, that calls transformers' attention interface.
        classifier: attribute name of the classification head on ``*For*Classification`` models.
        attention_norm: the LayerNorm before self-attention, relative to an encoder layer (``None``: post-LN BERT).
        final_norm: the LayerNorm after the encoder, an attribute of the bare model (``None``: BERT).
    """

    name: str
    model_types: tuple[str, ...]
    layers_pattern: str
    query: str
    key: str
    value: str
    attention_output: str
    ffn: tuple[str, str]
    attention: str = "attention"
    classifier: str = "classifier"
    attention_norm: str | None = "layernorm_before"
    final_norm: str | None = "layernorm"

    def pooled_features(self, output) -> torch.Tensor:
        """The feature a classifier reads, from a bare model's output.

        Returns ``(batch, hidden)``: BERT's pooler output when the model has a pooler, else the final
        (layer-normed) ``[CLS]`` hidden state, as ``ViTForImageClassification`` uses.
        """
        pooled = getattr(output, "pooler_output", None)
        if self.name == "bert" and pooled is not None:
            return pooled
        return output.last_hidden_state[:, 0]


VIT = ModelFamily(
    name="vit",
    model_types=("vit",),
    layers_pattern="layers",
    query="attention.q_proj",
    key="attention.k_proj",
    value="attention.v_proj",
    attention_output="attention.o_proj",
    ffn=("mlp.fc1", "mlp.fc2"),
)
# DINOv2 keeps ViT's attention and MLP names; its layers live in `encoder.layer`.
DINOV2 = replace(VIT, name="dinov2", model_types=("dinov2",), layers_pattern="layer", attention_norm="norm1")
BERT = ModelFamily(
    name="bert",
    model_types=("bert",),
    layers_pattern="layer",
    query="attention.self.query",
    key="attention.self.key",
    value="attention.self.value",
    attention_output="attention.output.dense",
    ffn=("intermediate.dense", "output.dense"),
    attention="attention.self",
    attention_norm=None,
    final_norm=None,
)

FAMILIES = (VIT, DINOV2, BERT)
SUPPORTED_MODEL_TYPES = tuple(t for f in FAMILIES for t in f.model_types)


def get_family(model_or_config) -> ModelFamily:
    """Return the :class:`ModelFamily` of a transformers model, config or ``config.to_dict()``.

    Raises:
        ValueError: if ``model_type`` is not one of :data:`SUPPORTED_MODEL_TYPES`.
    """
    config = getattr(model_or_config, "config", model_or_config)
    model_type = config.get("model_type") if isinstance(config, dict) else getattr(config, "model_type", None)
    for family in FAMILIES:
        if model_type in family.model_types:
            return family
    what = (f"{type(model_or_config).__name__} is not a transformers model (it has no config)" if model_type is None
            else f"model_type={model_type!r}")
    raise ValueError(f"Unsupported model family: {what}. peft_memory supports {list(SUPPORTED_MODEL_TYPES)} (its "
                     "attention injection is written for their layers); load a ViT, DINOv2 or BERT checkpoint.")


def num_layers(model: nn.Module) -> int:
    """Number of encoder layers of a transformers model (``config.num_hidden_layers``)."""
    return int(model.config.num_hidden_layers)


def last_layers(num: int, count: int = 3) -> list[int]:
    """The last ``count`` of ``num`` encoder layers, 0-based: the default placement of soft masks (Soft-TF's best,
    L[10,11,12] of ViT-B in the paper's 1-based terms) and of the ``lora`` baseline."""
    return list(range(max(0, num - count), num))


def encoder_layers(model: nn.Module, family: ModelFamily) -> nn.ModuleList:
    """The ``nn.ModuleList`` of encoder layers (named ``family.layers_pattern``, ``num_hidden_layers`` long).

    Raises:
        ValueError: if no such list exists (an unexpected model layout).
    """
    n = num_layers(model)
    for name, module in model.named_modules():
        if isinstance(module, nn.ModuleList) and name.rsplit(".", 1)[-1] == family.layers_pattern and len(module) == n:
            return module
    raise ValueError(f"no {n}-long ModuleList named {family.layers_pattern!r} in {type(model).__name__}.")


def bare_model(model: nn.Module) -> nn.Module:
    """The bare encoder inside a model (``ViTModel``, ``Dinov2Model``, ``BertModel``): the first module with an
    ``embeddings`` child. Raises ``ValueError`` for an unexpected layout."""
    for module in model.modules():
        if isinstance(getattr(module, "embeddings", None), nn.Module):
            return module
    raise ValueError(f"{type(model).__name__} has no module with an `embeddings` child.")


def attention_modules(model: nn.Module, family: ModelFamily) -> list[nn.Module]:
    """The self-attention module of every encoder layer, in layer order (the modules that receive extra K/V)."""
    return [layer.get_submodule(family.attention) for layer in encoder_layers(model, family)]


def find_classifier(model: nn.Module, family: ModelFamily) -> nn.Module | None:
    """The model's classification head (``nn.Linear``), or ``None`` for a bare encoder such as ``BertModel``."""
    head = getattr(model, family.classifier, None)
    return head if isinstance(head, nn.Linear) else None


def enable_position_interpolation(model: nn.Module):
    """Make every forward of a ViT model interpolate its position embeddings (``interpolate_pos_encoding=True``), so
    images smaller or larger than the checkpoint's ``image_size`` work. DINOv2 always interpolates; for models whose
    forward has no such argument this does nothing. Returns the hook handle, or ``None``."""
    import inspect

    if "interpolate_pos_encoding" not in inspect.signature(model.forward).parameters:
        return None

    def hook(module, args, kwargs):
        kwargs.setdefault("interpolate_pos_encoding", True)
        return args, kwargs

    return model.register_forward_pre_hook(hook, with_kwargs=True)

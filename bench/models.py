"""Benchmark models built from configs (no download): the shapes of ViT-S/14 and MiniLM-L6 on CPU, ViT-B/16 and
BERT-base on a GPU, and tiny versions for the CI smoke run."""

from __future__ import annotations

import torch
from transformers import BertConfig, BertForSequenceClassification, ViTConfig, ViTForImageClassification

SHAPES = {
    # name: (family, config kwargs, batch, seq_len or image size)
    "vit-s14": ("vit", dict(image_size=224, patch_size=14, hidden_size=384, num_hidden_layers=12,
                            num_attention_heads=6, intermediate_size=1536), 8, 224),
    "minilm-l6": ("bert", dict(vocab_size=30522, hidden_size=384, num_hidden_layers=6, num_attention_heads=12,
                               intermediate_size=1536), 16, 128),
    "vit-b16": ("vit", dict(image_size=224, patch_size=16, hidden_size=768, num_hidden_layers=12,
                            num_attention_heads=12, intermediate_size=3072), 32, 224),
    "bert-base": ("bert", dict(vocab_size=30522, hidden_size=768, num_hidden_layers=12, num_attention_heads=12,
                               intermediate_size=3072), 32, 128),
    "tiny-vit": ("vit", dict(image_size=32, patch_size=8, hidden_size=32, num_hidden_layers=5, num_attention_heads=2,
                             intermediate_size=64), 10, 32),
    "tiny-bert": ("bert", dict(vocab_size=30522, hidden_size=32, num_hidden_layers=5, num_attention_heads=2,
                               intermediate_size=64), 10, 16),
}


def describe(name: str) -> str:
    family, kw, batch, size = SHAPES[name]
    extent = f"{size} px" if family == "vit" else f"{size} tokens"
    return (f"{name}: hidden {kw['hidden_size']}, {kw['num_hidden_layers']} layers, batch {batch}, {extent}, "
            "fp32, sdpa")


def make(name: str, num_labels: int = 10, device: str = "cpu", seed: int = 0):
    """``(model in eval mode, inputs)`` for shape ``name``; random weights, seeded."""
    family, kw, batch, size = SHAPES[name]
    torch.manual_seed(seed)
    g = torch.Generator().manual_seed(seed)
    if family == "vit":
        model = ViTForImageClassification(ViTConfig(**kw, num_labels=num_labels, attn_implementation="sdpa"))
        inputs = {"pixel_values": torch.randn(batch, 3, size, size, generator=g)}
    else:
        model = BertForSequenceClassification(BertConfig(**kw, num_labels=num_labels, attn_implementation="sdpa"))
        ids = torch.randint(1, kw["vocab_size"], (batch, size), generator=g)
        inputs = {"input_ids": ids, "attention_mask": torch.ones_like(ids)}
    return model.to(device).eval(), {k: v.to(device) for k, v in inputs.items()}

"""Turning a task's ``datasets.Dataset`` into model inputs (tokenization / collation)."""

from __future__ import annotations

import datasets
import torch
from torch.utils.data import DataLoader
from transformers import DataCollatorWithPadding, PreTrainedTokenizerBase


class TextInputs:
    """Tokenizes the ``text`` column with the model's tokenizer and pads per batch.

    Batches are dicts with ``input_ids``/``attention_mask`` (``(batch, seq_len)``) and ``labels`` (``(batch,)``).
    """

    def __init__(self, tokenizer: PreTrainedTokenizerBase, max_length: int = 128):
        self.tokenizer = tokenizer
        self.max_length = max_length
        self.collate = DataCollatorWithPadding(tokenizer)

    def prepare(self, ds: datasets.Dataset) -> datasets.Dataset:
        def tokenize(batch):
            return self.tokenizer(batch["text"], truncation=True, max_length=self.max_length)

        keep = {"label"}
        return ds.map(tokenize, batched=True, remove_columns=[c for c in ds.column_names if c not in keep])


def make_loader(ds: datasets.Dataset, inputs, batch_size: int, shuffle: bool, seed: int,
                num_workers: int = 0) -> DataLoader:
    """A ``DataLoader`` over ``inputs.prepare(ds)`` with a seeded shuffle (same order for the same seed)."""
    generator = torch.Generator().manual_seed(seed)
    return DataLoader(
        inputs.prepare(ds), batch_size=batch_size, shuffle=shuffle, collate_fn=inputs.collate,
        generator=generator, num_workers=num_workers,
    )

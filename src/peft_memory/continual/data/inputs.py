"""Turning a task's ``datasets.Dataset`` into model inputs (tokenization / collation)."""

from __future__ import annotations

import datasets
import torch
from torch.utils.data import DataLoader
from transformers import DataCollatorWithPadding, PreTrainedTokenizerBase

from .tasks import text_problem


class TextInputs:
    """Tokenizes the ``text_column`` (default ``"text"``) with the model's tokenizer and pads per batch.

    Batches are dicts with ``input_ids``/``attention_mask`` (``(batch, seq_len)``) and ``labels`` (``(batch,)``).
    """

    def __init__(self, tokenizer: PreTrainedTokenizerBase, max_length: int = 128, text_column: str = "text"):
        self.tokenizer = tokenizer
        self.max_length = max_length
        self.text_column = text_column
        self.collate = DataCollatorWithPadding(tokenizer)

    def prepare(self, ds: datasets.Dataset, train: bool = False) -> datasets.Dataset:
        """``ds`` tokenized: ``input_ids``, ``attention_mask`` and ``label``.

        Raises:
            ValueError: if ``ds`` has no ``text_column``, or it holds something else than text or rows without text
                (the tokenizer's own ``TypeError`` named no column or row).
        """
        if self.text_column not in ds.column_names:
            raise ValueError(f"the dataset has no {self.text_column!r} column (columns: {ds.column_names}); pass "
                             "TextInputs(..., text_column=<the column holding the text>).")
        kind, detail = text_problem(ds, self.text_column, blank=False) or (None, None)  # "" tokenizes, None not
        if kind:
            what = (f"column {self.text_column!r} holds {detail}, not text" if kind == "type" else
                    f"the data have no text in rows {detail} of column {self.text_column!r} (0-based: null)")
            raise ValueError(f"{what}; pass text (str) in every row, or TextInputs(..., text_column=<the column "
                             "holding the text>).")

        def tokenize(batch):
            return self.tokenizer(batch[self.text_column], truncation=True, max_length=self.max_length)

        keep = {"label"}
        return ds.map(tokenize, batched=True, remove_columns=[c for c in ds.column_names if c not in keep])


def make_loader(ds: datasets.Dataset, pipeline, batch_size: int, shuffle: bool, seed: int,
                num_workers: int = 0) -> DataLoader:
    """A ``DataLoader`` over ``pipeline.prepare(ds, train=shuffle)`` with a seeded shuffle (same order for the same
    seed). Training loaders (``shuffle=True``) get the input pipeline's augmentation, if any."""
    generator = torch.Generator().manual_seed(seed)
    return DataLoader(
        pipeline.prepare(ds, train=shuffle), batch_size=batch_size, shuffle=shuffle, collate_fn=pipeline.collate,
        generator=generator, num_workers=num_workers,
    )


class ImageInputs:
    """Images through the model's own transformers image processor (no torchvision), applied on the fly with
    ``datasets.Dataset.with_transform``.

    Grey or palette images are converted to RGB. ``image_size`` resizes to a square of that many pixels (use it with
    :func:`peft_memory.families.enable_position_interpolation` on ViT). ``augment`` adds a random horizontal flip and
    a random crop with 4-pixel padding, on tensors. Batches: ``pixel_values`` ``(batch, 3, size, size)`` and
    ``labels`` ``(batch,)``.
    """

    def __init__(self, image_processor, image_size: int | None = None, augment: bool = False,
                 image_column: str = "image"):
        self.image_processor = image_processor
        self.image_size = image_size
        self.augment = augment
        self.image_column = image_column

    def _transform(self, batch, augment: bool):
        images = [img.convert("RGB") for img in batch[self.image_column]]
        kwargs = {"size": {"height": self.image_size, "width": self.image_size}} if self.image_size else {}
        pixels = self.image_processor(images, return_tensors="pt", **kwargs)["pixel_values"]
        if augment:
            pixels = augment_images(pixels)
        return {"pixel_values": list(pixels), "label": batch["label"]}

    def prepare(self, ds: datasets.Dataset, train: bool = False) -> datasets.Dataset:
        return ds.with_transform(lambda b: self._transform(b, self.augment and train))

    @staticmethod
    def collate(rows):
        return {"pixel_values": torch.stack([r["pixel_values"] for r in rows]),
                "labels": torch.tensor([r["label"] for r in rows])}


def augment_images(pixels: torch.Tensor, pad: int = 4) -> torch.Tensor:
    """Random horizontal flip and random crop after ``pad``-pixel reflection padding, per image.

    ``pixels``: ``(batch, channels, height, width)``; returns the same shape.
    """
    b, _, h, w = pixels.shape
    flip = torch.rand(b) < 0.5
    pixels = torch.where(flip.view(b, 1, 1, 1), pixels.flip(-1), pixels)
    padded = torch.nn.functional.pad(pixels, (pad, pad, pad, pad), mode="reflect")
    dy, dx = torch.randint(0, 2 * pad + 1, (2, b)).tolist()
    return torch.stack([padded[i, :, y : y + h, x : x + w] for i, (y, x) in enumerate(zip(dy, dx))])

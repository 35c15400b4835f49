"""What an adapter config records about where it was made, and the checks that refuse a mismatch with the fix.

Every peft_memory config carries :class:`CompatibilityFields`, saved in ``adapter_config.json``:

- ``peft_memory_version``: the version that created the adapter. A config from another major.minor version is
  refused when it is built (its format may differ); patch versions are compatible.
- ``base_model_hidden_size`` / ``base_model_num_layers``: filled in when the adapter is first injected. Loading the
  adapter onto a base model of another size is refused before any weight is touched.
- ``head_pooling``: the sentence feature the task head reads (:func:`peft_memory.set_head_pooling`), filled in on
  first injection. Loading the adapter onto an untouched BERT base model applies it (``PeftModel.from_pretrained``
  needs no extra call); a base model already set to another pooling is refused. A config without it (saved before
  the field existed) is loaded as it always was.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from ..pooling import HEAD_POOLINGS, head_pooling_of, set_head_pooling
from ..version import __version__


@dataclass
class CompatibilityFields:
    """Recorded in every peft_memory adapter config; see the module docstring."""

    peft_memory_version: str = field(
        default=__version__, metadata={"help": "peft_memory version that created the adapter (set automatically)."}
    )
    base_model_hidden_size: int | None = field(
        default=None, metadata={"help": "hidden_size of the base model the adapter was made for (set on injection)."}
    )
    base_model_num_layers: int | None = field(
        default=None, metadata={"help": "num_hidden_layers of that base model (set on injection)."}
    )
    head_pooling: str | None = field(
        default=None, metadata={"help": "The feature the task head reads: 'pooler' (the model's classifier input), "
                                        "'mean' or 'cls' (peft_memory.set_head_pooling); set on injection, applied "
                                        "when the adapter is loaded onto an untouched base model."}
    )

    def check_version(self) -> None:
        """Raises ``ValueError`` if ``peft_memory_version`` differs from this package in major or minor version."""
        saved = str(self.peft_memory_version)
        if saved.split(".")[:2] != __version__.split(".")[:2]:
            raise ValueError(
                f"peft_memory_version={saved!r}: this adapter config was written by peft_memory {saved}, but "
                f"peft_memory {__version__} is installed and the adapter format may differ. Install the version "
                f"that wrote it (pip install 'peft_memory=={saved}') or retrain the adapter."
            )

    def check_base_model(self, model, adapter_name: str) -> None:
        """Record the base model's size on first use; raise ``ValueError`` if ``model`` differs from the recorded one.

        Args:
            model: the transformers model the adapter is injected into (its ``config`` is read).
            adapter_name: used in the error message.
        """
        hidden, layers = model.config.hidden_size, model.config.num_hidden_layers
        if self.base_model_hidden_size is None and self.base_model_num_layers is None:
            self.base_model_hidden_size, self.base_model_num_layers = hidden, layers
            return
        if (self.base_model_hidden_size, self.base_model_num_layers) != (hidden, layers):
            origin = getattr(self, "base_model_name_or_path", None) or "the base model it was trained on"
            raise ValueError(
                f"adapter {adapter_name!r} was made for a base model with hidden_size={self.base_model_hidden_size} "
                f"and num_hidden_layers={self.base_model_num_layers}, but this base model has hidden_size={hidden} "
                f"and num_hidden_layers={layers}. Load the adapter onto {origin} (or, when reusing one config "
                "object for several base models, pass a fresh config to each)."
            )

    def check_head_pooling_value(self) -> None:
        """Raises ``ValueError`` if ``head_pooling`` is set to a value :func:`peft_memory.set_head_pooling` lacks."""
        if self.head_pooling is not None and self.head_pooling not in HEAD_POOLINGS:
            raise ValueError(f"head_pooling={self.head_pooling!r} is unknown; use one of {list(HEAD_POOLINGS)}, or "
                             "leave it unset (recorded from the base model on injection).")

    def check_head_pooling(self, model, adapter_name: str, shared: bool) -> None:
        """Record the head pooling of ``model`` on first use; on a later injection (a reload), make ``model`` read the
        recorded one, or raise ``ValueError`` if it cannot.

        Args:
            model: the transformers model the adapter is injected into.
            adapter_name: used in the error message.
            shared: whether ``model`` already carries other adapters of this tuner (whose heads read its current
                pooling, so it may not change).
        """
        current = head_pooling_of(model)
        if self.head_pooling is None:
            self.head_pooling = current
            return
        if self.head_pooling == current:
            return
        if current != "pooler" or shared:
            raise ValueError(
                f"adapter {adapter_name!r} was trained with head pooling {self.head_pooling!r}, but this base model's "
                f"heads read {current!r}{' for the adapters it carries' if shared else ''}. Load it onto an untouched "
                f"base model (the adapter sets its pooling itself) or one prepared with "
                f"peft_memory.set_head_pooling(model, {self.head_pooling!r}).")
        set_head_pooling(model, self.head_pooling)

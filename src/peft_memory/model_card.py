"""Model cards of peft_memory adapters, written with ``huggingface_hub.ModelCard`` / ``ModelCardData``.

PEFT's ``PeftModel.save_pretrained`` writes a generic card, and ``PeftModel.push_to_hub`` (transformers'
``PushToHubMixin``) replaces it with transformers' template (``library_name: transformers``, "More Information
Needed"). ``import peft_memory`` calls :func:`install`, which wraps both methods of ``peft.PeftModel``: for a model
holding a peft_memory adapter, the card names the method of each adapter, its classes, the base model and the
``import peft_memory`` line needed to load it; ``push_to_hub`` uploads what ``save_pretrained`` wrote, card included.
Models without a peft_memory adapter go through PEFT's and transformers' code unchanged.
"""

from __future__ import annotations

import os
import tempfile

import peft
from huggingface_hub import HfApi, ModelCard, ModelCardData
from peft import PeftModel

from .pooling import head_pooling_of
from .registry import PeftMemoryType
from .version import __version__

METHOD_NAMES = {
    PeftMemoryType.SOFT_MASK: "Soft-TransFormers masks (Kang et al.)",
    PeftMemoryType.DUAL_PROMPT: "DualPrompt (Wang et al., ECCV 2022)",
    PeftMemoryType.MEMORY_TOKEN: "learnable memory tokens (Sandler et al., CVPR 2022)",
}
TAGS = ["peft_memory", "continual-learning", "class-incremental"]


def hub_base_model(name: str | None) -> str | None:
    """``name`` if it can be a hub id for the card's ``base_model`` field, else ``None`` (a local folder: the Hub
    validates the field, so a path must not go there)."""
    if not name or os.path.exists(name) or name.startswith((".", "/", "~")) or name.count("/") > 1:
        return None
    return name


def pipeline_tag(model_class: str) -> str | None:
    """``text-classification`` / ``image-classification`` from a transformers class name, else ``None``."""
    if "SequenceClassification" in model_class:
        return "text-classification"
    if "ImageClassification" in model_class:
        return "image-classification"
    return None


def method_name(config) -> str:
    """Readable method of a peft_memory adapter config, with its ``peft_type``."""
    name = METHOD_NAMES.get(config.peft_type, str(config.peft_type))
    if config.peft_type == PeftMemoryType.SOFT_MASK and getattr(config, "use_prompts", False):
        name += " with DualPrompt prompts (DualPrompt-Soft-TF)"
    return f"{name}, `{config.peft_type}`"


def usage(model_class: str, base_model: str, repo: str, adapters: list[str], head_pooling: str = "pooler") -> str:
    """A Python snippet loading ``adapters`` from ``repo`` (one subfolder per adapter but ``default``), with the
    base model's classifier reading ``head_pooling`` (:func:`peft_memory.set_head_pooling`) as in training."""
    lines = ["import peft_memory  # registers SOFT_MASK, DUAL_PROMPT and MEMORY_TOKEN with PEFT: import it first",
             "from peft import PeftModel", f"from transformers import {model_class}", "",
             f'base = {model_class}.from_pretrained("{base_model}")']
    if head_pooling != "pooler":
        lines.append(f'peft_memory.set_head_pooling(base, "{head_pooling}")  # the heads were trained on this feature')
    for i, name in enumerate(adapters):
        sub = "" if name == "default" else f', subfolder="{name}"'
        call = f'PeftModel.from_pretrained(base, "{repo}"' if i == 0 else f'model.load_adapter("{repo}"'
        lines.append(f'{"model = " if i == 0 else ""}{call}{sub}, adapter_name="{name}")')
    return "```python\n" + "\n".join(lines) + "\n```"


def adapter_card(model: PeftModel, repo: str | None = None, card: ModelCard | None = None) -> ModelCard:
    """The card of ``model``'s adapters: metadata (``library_name: peft``, ``base_model`` when it is a hub id,
    tags, pipeline tag) kept from ``card`` (PEFT's) and completed; text: each adapter's method and classes, and how
    to load them (``repo``: the hub id or folder, a placeholder if ``None``)."""
    configs = model.peft_config
    base_class = type(model.get_base_model()).__name__
    first = next(iter(configs.values()))
    base = (first.base_model_name_or_path or getattr(model.get_base_model(), "name_or_path", "")
            or "<base model>")
    hub_id = hub_base_model(base) if base != "<base model>" else None
    data = card.data if card is not None else ModelCardData()
    data.library_name = "peft"
    data.base_model = hub_id
    data.pipeline_tag = data.pipeline_tag or pipeline_tag(base_class)
    tags = {t for t in data.tags or [] if not t.startswith("base_model:adapter:")}  # PEFT's, possibly of a path
    tags |= set(TAGS) | {str(c.peft_type).lower() for c in configs.values()}
    data.tags = sorted(tags | ({f"base_model:adapter:{hub_id}"} if hub_id else set()))
    rows = "\n".join(f"| `{name}` | {method_name(c)} | {', '.join(c.label_names) if c.label_names else 'n/a'} |"
                     for name, c in configs.items())
    text = f"""
# peft_memory adapters on `{base}`

PEFT adapters trained with [peft_memory](https://pypi.org/project/peft-memory/) for continual learning: one adapter
per task, each with its own classification head over its task's classes.

| adapter | method | classes |
|---|---|---|
{rows}

## Use

{usage(base_class, base, repo or "<repo_id or folder>", list(configs), head_pooling_of(model.get_base_model()))}

Without `import peft_memory`, PEFT cannot read these adapters (`KeyError: '{first.peft_type}'`).

### Framework versions

- peft_memory {__version__}
- PEFT {peft.__version__}
"""
    return ModelCard(f"---\n{data.to_yaml()}\n---\n{text}")


def uses_peft_memory(model) -> bool:
    """Whether ``model`` (a ``PeftModel``) holds an adapter of a peft_memory type."""
    return any(c.peft_type in METHOD_NAMES for c in getattr(model, "peft_config", {}).values())


# PEFT's own methods (``__wrapped__`` when this module is imported again after :func:`install`).
_PEFT_CARD = getattr(PeftModel.create_or_update_model_card, "__wrapped__", PeftModel.create_or_update_model_card)
_PEFT_PUSH = getattr(PeftModel.push_to_hub, "__wrapped__", PeftModel.push_to_hub)


def create_or_update_model_card(self, output_dir: str):
    """PEFT's ``create_or_update_model_card``, then :func:`adapter_card` for peft_memory adapters."""
    _PEFT_CARD(self, output_dir)
    if uses_peft_memory(self):
        path = os.path.join(output_dir, "README.md")
        adapter_card(self, output_dir, ModelCard.load(path)).save(path)


def push_to_hub(self, repo_id: str, *, commit_message: str | None = None, commit_description: str | None = None,
                private: bool | None = None, token: bool | str | None = None, revision: str | None = None,
                create_pr: bool = False, max_shard_size: int | str | None = "50GB", tags: list[str] | None = None):
    """transformers' ``push_to_hub`` (same arguments), keeping the card that ``save_pretrained`` wrote for
    peft_memory adapters (:func:`adapter_card`) instead of transformers' template. Returns the commit info."""
    if not uses_peft_memory(self):
        return _PEFT_PUSH(self, repo_id, commit_message=commit_message, commit_description=commit_description,
                          private=private, token=token, revision=revision, create_pr=create_pr,
                          max_shard_size=max_shard_size, tags=tags)
    api = HfApi(token=token)
    repo_id = api.create_repo(repo_id, private=private, exist_ok=True).repo_id
    with tempfile.TemporaryDirectory() as tmp:
        self.save_pretrained(tmp)
        path = os.path.join(tmp, "README.md")
        card = adapter_card(self, repo_id, ModelCard.load(path))
        card.data.tags = sorted(set(card.data.tags) | set(tags or []))
        card.save(path)
        if revision is not None and not revision.startswith("refs/pr"):
            api.create_branch(repo_id, branch=revision, exist_ok=True)
        return api.upload_folder(repo_id=repo_id, folder_path=tmp, commit_message=commit_message or "Upload model",
                                 commit_description=commit_description, revision=revision, create_pr=create_pr)


create_or_update_model_card.__wrapped__ = _PEFT_CARD
push_to_hub.__wrapped__ = _PEFT_PUSH


def install() -> None:
    """Wrap ``PeftModel.create_or_update_model_card`` and ``PeftModel.push_to_hub`` (idempotent)."""
    PeftModel.create_or_update_model_card = create_or_update_model_card
    PeftModel.push_to_hub = push_to_hub

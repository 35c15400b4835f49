"""Full fine-tuning per task: the reference column of Sandler et al. 2022, Table 2 ("full FT").

For each task of a sequence, a fresh copy of the base model is fine-tuned on that task alone (every weight trains)
and evaluated on the task's test set: the task-incremental accuracy an unlimited per-task budget buys. Same data,
seed, epochs and batch size as `peft-memory train`; writes `results.json` in the trainer's format, so
`peft-memory report` lists it beside the adapter runs (class-incremental columns are n/a: one model per task).

    python examples/vit/full_finetune.py --model ../shared/models/vit-small-patch14-dinov2 \
        --benchmark fashion_mnist_5split --image_size 56 --train_per_class 500 --test_per_class 100 \
        --num_epochs 2 --learning_rate 1e-4 --output_dir outputs/table2/full_finetune
"""

from __future__ import annotations

import copy
import os

import torch
from accelerate import Accelerator
from accelerate.utils import set_seed
from tqdm.auto import tqdm
from transformers import HfArgumentParser

from peft_memory.continual import ContinualArguments
from peft_memory.continual.data import make_loader
from peft_memory.continual.loading import load_model_and_inputs, load_sequence
from peft_memory.continual.trainer import atomic_write_json


def main(argv=None) -> dict:
    (args,) = HfArgumentParser(ContinualArguments).parse_args_into_dataclasses(args=argv)
    acc = Accelerator()
    set_seed(args.seed)
    sequence = load_sequence(args)
    base, inputs = load_model_and_inputs(args, sequence.max_task_classes)
    accuracies = []
    for task in sequence.tasks:
        set_seed(args.seed)
        model = copy.deepcopy(base).train()
        optimizer = torch.optim.AdamW(model.parameters(), lr=args.learning_rate, weight_decay=args.weight_decay)
        loader = make_loader(task.train, inputs, args.batch_size, True, args.seed, args.num_workers)
        model, optimizer, loader = acc.prepare(model, optimizer, loader)
        for _ in range(args.num_epochs):
            for batch in tqdm(loader, desc=f"full fine-tuning {task.name}", disable=not acc.is_local_main_process):
                labels = batch.pop("labels")
                loss = torch.nn.functional.cross_entropy(model(**batch).logits[:, : task.num_labels], labels)
                acc.backward(loss)
                acc.clip_grad_norm_(model.parameters(), args.max_grad_norm)
                optimizer.step()
                optimizer.zero_grad(set_to_none=True)
        model.eval()
        correct = []
        for batch in acc.prepare(make_loader(task.test, inputs, args.eval_batch_size, False, args.seed)):
            labels = batch.pop("labels")
            with torch.no_grad():
                pred = model(**batch).logits[:, : task.num_labels].argmax(dim=-1)
            correct.append(acc.gather_for_metrics(pred == labels).cpu())
        accuracies.append(torch.cat(correct).float().mean().item())
        print(f"{task.name}: task-incremental accuracy {100 * accuracies[-1]:.1f}%")
    results = {
        "method": "full_finetune",
        "benchmark": sequence.name,
        "base_model": args.model,
        "task_identity": {"mode": "given (one model per task)", "per_sample": True, "note": "task-incremental only"},
        "til_accuracy_per_task": accuracies,
        "til_average_accuracy": sum(accuracies) / len(accuracies),
        "average_accuracy": None, "forgetting": None, "task_id_accuracy": None,
        "config": {k: v for k, v in vars(args).items()},
    }
    if acc.is_main_process:
        os.makedirs(args.output_dir, exist_ok=True)
        atomic_write_json(results, os.path.join(args.output_dir, "results.json"))
    return results


if __name__ == "__main__":
    main()

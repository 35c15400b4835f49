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

from peft_memory.continual import ContinualArguments, RunResults
from peft_memory.continual.data.inputs import make_loader
from peft_memory.continual.run.loading import load_model_and_pipeline, load_sequence
from peft_memory.continual.run.results import TaskIdentityRecord, TaskRecord


def main(argv=None) -> RunResults:
    (args,) = HfArgumentParser(ContinualArguments).parse_args_into_dataclasses(args=argv)
    accelerator = Accelerator()
    set_seed(args.seed)
    sequence = load_sequence(args)
    base, pipeline = load_model_and_pipeline(args, sequence.max_task_classes)
    accuracies = []
    for task in sequence.tasks:
        set_seed(args.seed)
        model = copy.deepcopy(base).train()
        optimizer = torch.optim.AdamW(model.parameters(), lr=args.learning_rate, weight_decay=args.weight_decay)
        loader = make_loader(task.train, pipeline, args.batch_size, True, args.seed, args.dataloader_num_workers)
        model, optimizer, loader = accelerator.prepare(model, optimizer, loader)
        for _ in range(args.num_epochs):
            for batch in tqdm(loader, desc=f"full fine-tuning {task.name}", disable=not accelerator.is_local_main_process):
                labels = batch.pop("labels")
                loss = torch.nn.functional.cross_entropy(model(**batch).logits[:, : task.num_labels], labels)
                accelerator.backward(loss)
                accelerator.clip_grad_norm_(model.parameters(), args.max_grad_norm)
                optimizer.step()
                optimizer.zero_grad(set_to_none=True)
        model.eval()
        correct = []
        for batch in accelerator.prepare(make_loader(task.test, pipeline, args.eval_batch_size, False, args.seed)):
            labels = batch.pop("labels")
            with torch.no_grad():
                pred = model(**batch).logits[:, : task.num_labels].argmax(dim=-1)
            correct.append(accelerator.gather_for_metrics(pred == labels).cpu())
        accuracies.append(torch.cat(correct).float().mean().item())
        print(f"{task.name}: task-incremental accuracy {100 * accuracies[-1]:.1f}%")
    t = len(accuracies)
    results = RunResults(
        method="full_finetune", benchmark=sequence.name, base_model=args.model,
        tasks=[TaskRecord(k.name, k.label_names, k.global_labels, len(k.train), len(k.test)) for k in sequence.tasks],
        tasks_completed=t,
        task_identity=TaskIdentityRecord("given (one model per task)", True, "task-incremental only"),
        accuracy_matrix=[[None] * t for _ in range(t)],
        til_accuracy_matrix=[[a if i == j else None for j in range(t)] for i, a in enumerate(accuracies)],
        task_id_accuracy_matrix=[[None] * t for _ in range(t)],
        average_accuracy=None, forgetting=None, backward_transfer=None,
        til_average_accuracy=sum(accuracies) / t, cil_accuracy=None, til_accuracy=None, task_id_accuracy=None,
        config=vars(args),
    )
    if accelerator.is_main_process:
        os.makedirs(args.output_dir, exist_ok=True)
        results.save(args.output_dir)
    return results


if __name__ == "__main__":
    main()

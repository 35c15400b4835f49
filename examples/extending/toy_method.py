"""A toy method and a toy task-identity rule for the continual trainer, one class each (docs/extending.md)."""

import torch

from peft_memory import SoftMaskConfig
from peft_memory.continual import METHODS, RULES, ContinualMethod, Inference, TaskIdentityRule, declare_task_id_rule
from peft_memory.task_identity import batch_majority


class MaskDecay(ContinualMethod):
    """Soft masks on the last layer only, pulled towards 1 (the base model) by an L2 penalty."""

    name = "mask_decay"
    provides = frozenset({"task_adapters", "task_heads"})  # what the rules may read (docs/task_identity.md)
    recipes = {"recommended": Inference("min_entropy", "routed"), "paper": Inference("max_logit", "routed")}
    strength = 1e-3

    def make_config(self, task, base_model):
        last = base_model.config.num_hidden_layers - 1
        return SoftMaskConfig(label_names=task.label_names, layers_to_transform=[last])

    def auxiliary_loss(self, model, batch, task):
        masks = [p for n, p in model.named_parameters() if n.endswith(f"soft_mask_values.{task.name}")]
        return self.strength * sum(((m - 1) ** 2).sum() for m in masks)


class MinEntropy(TaskIdentityRule):
    """The task whose head is surest: ``argmin_t H(softmax(logits_t(x)))``, one forward per seen task."""

    name = "min_entropy"

    def infer(self, ctx, batch):
        n = next(iter(batch.values())).shape[0]
        entropies = []
        for name, width in zip(ctx.names, ctx.widths):  # ctx.forward: no gradient, each output computed once a run
            log_p = ctx.forward(batch, [name] * n)[0][:, :width].log_softmax(-1)
            entropies.append(-(log_p.exp() * log_p).sum(-1))
        task = torch.stack(entropies, dim=-1).argmin(dim=-1)  # (batch,)
        return task if ctx.per_sample else batch_majority(task)


METHODS[MaskDecay.name] = MaskDecay  # now `--method mask_decay` and `--task_id_mode min_entropy` work
RULES[MinEntropy.name] = MinEntropy
declare_task_id_rule("min_entropy", needs={"task_heads"}, description="the head with the smallest entropy")

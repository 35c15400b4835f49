"""The ``lora`` baseline: PEFT's own LoRA per task, with Prompt-ID keys kept beside the adapters."""

from __future__ import annotations

from peft import LoraConfig

from ...families import get_family, last_layers, num_layers
from ...task_keys import TaskKeys, matching_loss
from ..inference.declaration import Inference
from .base import ContinualMethod


class Lora(ContinualMethod):
    """PEFT's ``LoraConfig`` on the query and value projections of ``--layers`` (default: the last three), with the
    task's copy of the classifier (``modules_to_save``): the base model's classifier is as wide as the largest task,
    and a task's logits are its first ``num_labels`` columns.

    LoRA adapters carry no key, so the method keeps a :class:`peft_memory.TaskKeys` (one key per task, trained with
    DualPrompt's matching loss, saved as ``task_key.safetensors`` in the adapter folder) for Prompt-ID. The keys live
    outside the DDP-wrapped model: their gradients are averaged across processes by hand.
    """

    name = "lora"
    # its head is a copy of the base classifier per adapter (modules_to_save): no head bank, nothing to superpose
    provides = frozenset({"task_adapters", "task_heads", "adapter_features", "keys", "class_statistics",
                          "adapts_backbone"})
    recipes = {"recommended": Inference("gaussian", "product"), "paper": Inference("prompt_id", "routed")}

    def __init__(self, args):
        super().__init__(args)
        self.keys: TaskKeys | None = None

    def make_config(self, task, base_model):
        args, family = self.args, get_family(base_model)
        return LoraConfig(
            r=args.lora_r,
            lora_alpha=args.lora_alpha,
            target_modules=[family.query.rsplit(".", 1)[-1], family.value.rsplit(".", 1)[-1]],
            layers_to_transform=list(args.layers) if args.layers else last_layers(num_layers(base_model)),
            layers_pattern=family.layers_pattern,
            modules_to_save=[family.classifier],
        )

    def _task_keys(self, model) -> TaskKeys:
        if self.keys is None:
            self.keys = TaskKeys(model.get_base_model().config.hidden_size, self.args.prompt_init,
                                 self.args.query_pooling)
        return self.keys

    def on_adapter_added(self, model, task, device):
        keys = self._task_keys(model)
        keys.requires_grad_(False)  # earlier tasks' keys are frozen, like their adapters
        keys.add(task.name, device=device)

    def extra_parameters(self, task):
        return [self.keys.keys[task.name]]

    def key_parameters(self):
        return list(self.keys.keys.values()) if self.keys is not None else []

    def auxiliary_loss(self, model, batch, task):
        return matching_loss(self.keys, self.keys.frozen_features(model, batch), task.name,
                             self.args.matching_loss_weight)

    def after_backward(self, accelerator, task):
        if accelerator.num_processes > 1:  # the keys live outside DDP
            key = self.keys.keys[task.name]
            key.grad = accelerator.reduce(key.grad, reduction="mean")

    def save_extras(self, task, folder):
        self.keys.save(task.name, folder)

    def load_extras(self, model, task, folder, device):
        self._task_keys(model).load(task.name, folder, device=device)

    def prompt_keys(self):
        return self.keys

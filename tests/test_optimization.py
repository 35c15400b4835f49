"""The trainer knobs of one task's optimisation: gradient accumulation equals the larger batch, the learning-rate
schedule with warmup, and the step cap counting optimiser steps."""

import pytest
import torch
from conftest import bert_config
from test_continual_trainer import toy_sequence
from transformers import BertForSequenceClassification

from peft_memory.continual import ContinualArguments, ContinualTrainer
from peft_memory.continual.data.inputs import TextInputs
from peft_memory.continual.run.optimization import schedule_steps


def tiny_bert():
    """A tiny BERT without dropout (two runs that see the same samples must compute the same updates)."""
    torch.manual_seed(0)
    return BertForSequenceClassification(bert_config(vocab_size=30522, max_position_embeddings=128, num_labels=2,
                                                     hidden_dropout_prob=0.0, attention_probs_dropout_prob=0.0))


def train_first_task(tmp_path, tokenizer, **kw):
    """Train task_0 of a toy sequence (8 examples per class, nothing held out); returns (trainer, AdamW lrs, steps).
    ``trainer.initial`` holds the adapter's parameters before training."""
    seq = toy_sequence(num_tasks=2, per_class=8)
    args = ContinualArguments(model="tiny", output_dir=str(tmp_path), num_epochs=1, learning_rate=1e-2,
                              validation_fraction=0.0, **kw)
    trainer = ContinualTrainer(tiny_bert(), seq, TextInputs(tokenizer), args)
    lrs, step = [], torch.optim.AdamW.step

    def recording_step(opt, *a, **k):
        lrs.append(opt.param_groups[0]["lr"])
        return step(opt, *a, **k)

    torch.optim.AdamW.step = recording_step
    try:
        trainer.add_adapter(trainer.tasks[0])
        trainer.initial = adapter_state(trainer)
        steps = trainer.optimize(trainer.tasks[0], trainer.tasks[0].train)
    finally:
        torch.optim.AdamW.step = step
    return trainer, lrs, steps


def adapter_state(trainer):
    return {n: p.detach().clone() for n, p in trainer.model.named_parameters() if p.requires_grad}


def test_gradient_accumulation_equals_the_larger_batch(tmp_path, tokenizer):
    big, big_lrs, big_steps = train_first_task(tmp_path / "big", tokenizer, batch_size=8)
    acc, acc_lrs, acc_steps = train_first_task(tmp_path / "acc", tokenizer, batch_size=4,
                                               gradient_accumulation_steps=2)
    assert big_steps == acc_steps == 2 and len(big_lrs) == len(acc_lrs) == 2  # 16 examples, 8 per optimiser step
    a, b = adapter_state(big), adapter_state(acc)
    assert a.keys() == b.keys() and a
    assert max((a[n] - big.initial[n]).abs().max().item() for n in a) > 1e-4  # the adapters did train
    for name in a:
        torch.testing.assert_close(a[name], b[name], rtol=1e-5, atol=1e-6, msg=name)


def test_linear_schedule_with_warmup(tmp_path, tokenizer):
    _, lrs, steps = train_first_task(tmp_path, tokenizer, batch_size=4, lr_scheduler_type="linear", warmup_ratio=0.5)
    assert steps == 4
    assert lrs == pytest.approx([0.0, 0.5e-2, 1e-2, 0.5e-2])  # transformers' linear warmup (2 steps), then decay
    _, constant, _ = train_first_task(tmp_path / "c", tokenizer, batch_size=4)
    assert constant == [1e-2] * 4  # the default: constant, as before the flag existed


def test_step_cap_counts_optimiser_steps_under_accumulation(tmp_path, tokenizer):
    _, lrs, steps = train_first_task(tmp_path, tokenizer, batch_size=2, gradient_accumulation_steps=2,
                                     max_steps_per_task=3)
    assert steps == 3 and len(lrs) == 3


@pytest.mark.parametrize("batches,accumulation,epochs,cap,warmup,expected", [
    (10, 1, 2, None, 0.0, (20, 0)), (10, 3, 2, None, 0.1, (8, 1)), (10, 3, 2, 5, 0.1, (5, 1)), (7, 2, 1, None, 0.5,
                                                                                                 (4, 2))])
def test_schedule_steps(batches, accumulation, epochs, cap, warmup, expected):
    args = ContinualArguments(gradient_accumulation_steps=accumulation, num_epochs=epochs, max_steps_per_task=cap,
                              warmup_ratio=warmup)
    assert schedule_steps(batches, args) == expected

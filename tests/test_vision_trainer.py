"""The trainer on image tasks: a tiny ViT built from a config, and the real ViT of ../shared/DATA.md (skipped when
that folder is absent)."""

import datasets
import numpy as np
import pytest
import torch
from conftest import VIT_DINOV2_PATH, requires_shared_vit, vit_config
from transformers import ViTForImageClassification, ViTImageProcessorPil

import peft_memory  # noqa: F401
from peft_memory.continual import ContinualArguments, ContinualTrainer, class_incremental_split
from peft_memory.continual.data.inputs import ImageInputs
from peft_memory.continual.run.reference import verify_run
from peft_memory.families import enable_position_interpolation


def toy_images(per_class=12):
    """4 classes of 16x16 grey images: class c is bright in quadrant c."""
    rng = np.random.default_rng(0)
    images, labels = [], []
    for c in range(4):
        for _ in range(per_class):
            img = rng.integers(0, 60, (16, 16), dtype=np.uint8)
            y, x = divmod(c, 2)
            img[8 * y : 8 * y + 8, 8 * x : 8 * x + 8] += 180
            images.append(img)
            labels.append(c)
    feats = datasets.Features({"image": datasets.Image(), "label": datasets.Value("int64")})
    ds = datasets.Dataset.from_dict({"image": images, "label": labels}, features=feats)
    return class_incremental_split("toy_images", ds, ds, ["tl", "tr", "bl", "br"], 2, seed=0)


def test_tiny_vit_run_with_interpolated_positions(tmp_path):
    torch.manual_seed(0)
    model = ViTForImageClassification(vit_config(num_labels=4))  # image_size 16; we feed 12x12
    assert enable_position_interpolation(model) is not None
    inputs = ImageInputs(ViTImageProcessorPil(size={"height": 16, "width": 16}), image_size=12, augment=True)
    args = ContinualArguments(model="tiny-vit", benchmark="toy", output_dir=str(tmp_path), num_epochs=1,
                              batch_size=8, learning_rate=1e-2)
    results = ContinualTrainer(model, toy_images(), inputs, args).run()
    assert results.tasks_completed == 2 and len(results.accuracy_matrix) == 2
    assert (tmp_path / "task_1" / "adapter_model.safetensors").is_file()


@requires_shared_vit()
def test_real_vit_soft_mask_run_and_reload(tmp_path):
    from transformers import AutoImageProcessor, AutoModelForImageClassification

    torch.manual_seed(0)
    model = AutoModelForImageClassification.from_pretrained(VIT_DINOV2_PATH, num_labels=4)
    enable_position_interpolation(model)
    inputs = ImageInputs(AutoImageProcessor.from_pretrained(VIT_DINOV2_PATH), image_size=28)
    args = ContinualArguments(model=VIT_DINOV2_PATH, benchmark="toy", output_dir=str(tmp_path), num_epochs=5,
                              batch_size=8, learning_rate=1e-2, image_size=28)
    results = ContinualTrainer(model, toy_images(), inputs, args).run()
    assert results.til_accuracy > 0.9  # the quadrant classes are easy for a pretrained ViT
    reloaded = AutoModelForImageClassification.from_pretrained(VIT_DINOV2_PATH, num_labels=4)
    enable_position_interpolation(reloaded)
    from peft_memory.continual.run.reference import load_run

    assert verify_run(str(tmp_path), load_run(str(tmp_path), base_model=reloaded)) == {"task_0": 0.0, "task_1": 0.0}


@pytest.mark.parametrize("kind", ["vit", "dinov2"])
def test_position_interpolation_hook_only_where_supported(kind):
    from conftest import make_model

    handle = enable_position_interpolation(make_model(kind))
    assert (handle is None) == (kind == "dinov2")  # DINOv2 always interpolates


def test_tiny_dinov2_classifier_run(tmp_path):
    """Dinov2ForImageClassification's classifier reads [CLS] concatenated with the mean patch token (2 x hidden):
    the task heads take the classifier's own input."""
    from transformers import Dinov2Config, Dinov2ForImageClassification

    torch.manual_seed(0)
    model = Dinov2ForImageClassification(Dinov2Config(image_size=16, patch_size=4, hidden_size=32, num_hidden_layers=4,
                                                      num_attention_heads=4, num_labels=4))
    inputs = ImageInputs(ViTImageProcessorPil(size={"height": 16, "width": 16}))
    args = ContinualArguments(model="tiny-dinov2", benchmark="toy", output_dir=str(tmp_path), num_epochs=1,
                              batch_size=8)
    trainer = ContinualTrainer(model, toy_images(), inputs, args)
    results = trainer.run()
    assert results.tasks_completed == 2
    assert trainer.model.base_model.task_heads["task_0"].in_features == 64
    assert len(trainer.model.base_model.targeted_module_names) == 9  # q, k, v of the last three layers

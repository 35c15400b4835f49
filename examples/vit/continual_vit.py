"""Class-incremental training of a ViT with Soft-TransFormers masks, through peft_memory's Python API.

Published setting (needs the hub and a GPU for reasonable time):
    python examples/vit/continual_vit.py --model google/vit-base-patch16-224-in21k --benchmark cifar100_10split \
        --num_epochs 5 --batch_size 24 --output_dir outputs/vit_cifar100
Offline run on this repo's machines (the ViT of ../shared/DATA.md, 5-split Fashion-MNIST at 56 px):
    python examples/vit/continual_vit.py --model ../shared/models/vit-small-patch14-dinov2 \
        --benchmark fashion_mnist_5split --image_size 56 --train_per_class 500 --test_per_class 100 \
        --num_epochs 2 --output_dir outputs/fmnist_soft_mask
"""

from transformers import HfArgumentParser

from peft_memory.continual import ContinualArguments
from peft_memory.continual.cli import build_trainer, print_matrix

if __name__ == "__main__":
    (args,) = HfArgumentParser(ContinualArguments).parse_args_into_dataclasses()
    trainer = build_trainer(args)  # AutoModelForImageClassification + its image processor + the task sequence
    results = trainer.run()
    if trainer.accelerator.is_main_process:
        print_matrix(results)

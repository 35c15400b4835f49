#!/usr/bin/env bash
# Bring your own images: an `imagefolder` (DATA/train/<class>/*.png and DATA/test/<class>/*.png; without a test
# folder a seeded, class-stratified 20% of train is held out and recorded in results.json) becomes a
# class-incremental sequence. make_shapes.py writes a toy one (4 classes of shapes) when DATA does not exist.
#   bash examples/imagefolder/run.sh [DATA_FOLDER]      (MODEL=..., OUT=..., EXTRA=... to override)
set -euo pipefail
HERE=$(dirname "$0")
DATA=${1:-outputs/shapes_data}
MODEL=${MODEL:-google/vit-base-patch16-224-in21k}
OUT=${OUT:-outputs/imagefolder_shapes}
[ -d "$DATA" ] || python "$HERE/make_shapes.py" "$DATA"
peft-memory train --dataset "$DATA" --classes_per_task 2 --model "$MODEL" --image_size 32 \
    --num_epochs 3 --batch_size 8 --seed 0 --output_dir "$OUT" --overwrite_output_dir ${EXTRA:-}
peft-memory verify "$OUT"

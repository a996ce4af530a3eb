#!/usr/bin/env bash
# The GPU configuration family end to end: autoencoder -> keyframe -> interpolator -> export ->
# render, with the configs that fit together (configs/*/base.yaml: one factor-8 autoencoder, the
# interpolator starting from the keyframe model's U-Net and text tower).
#   scripts/train_base.sh OUT_DIR            # IMAGES=data/images CLIPS=data/clips by default
# Extra trainer flags go in TRAIN, e.g. TRAIN="--trainer.devices 8" (DDP on one node); for several
# nodes run the same command on each with --trainer.num_nodes N and MASTER_ADDR, MASTER_PORT,
# NODE_RANK set (docs/training.md). Every stage resumes: rerun with RESUME=1 after a stop.
# DRY=1 runs the same chain on a CPU at toy size (a shapes dataset at 64 px, tiny models, 2 steps
# a stage): a check of the configs and this script, which tests/test_chain.py runs in CI.
set -euo pipefail
OUT=${1:?usage: scripts/train_base.sh OUT_DIR}
PY=${PYTHON:-python3}
animatic() { "$PY" -m pipeline.cli "$@"; }
say() { echo "[train_base] $*"; }
mkdir -p "$OUT"

IMAGES=${IMAGES:-data/images}
CLIPS=${CLIPS:-data/clips}
read -r -a EXTRA <<< "${TRAIN:-}"
TOY_AE=() TOY_UNET=() TOY_TEXT=() TOY_CLIPS=()
if [ "${DRY:-0}" = 1 ]; then
  IMAGES=$OUT/data CLIPS=$OUT/data
  [ -f "$IMAGES/dataset.json" ] || animatic dataset shapes --out "$IMAGES" --clips 6 --stills 16 \
    --size 64 --frames 20 --seed 0 > "$OUT/dataset.txt"
  EXTRA+=(--trainer.accelerator cpu --trainer.devices 1 --trainer.precision 32-true
    --trainer.max_steps 2 --trainer.val_check_interval 2 --trainer.limit_val_batches 1
    --trainer.enable_progress_bar false --data.size 64 --data.batch_size 2 --data.num_workers 0
    --data.val_fraction 0.2)
  TOY_AE=(--model.base_channels 8 --model.channel_mult "[1, 1, 2, 2]" --model.num_res_blocks 1
    --model.norm_groups 0 --model.disc_weight 0.0 --model.scale_batches 2)
  TOY_UNET=(--model.model_channels 16 --model.channel_mult "[1, 2]" --model.num_res_blocks 1
    --model.attention_levels "[1]" --model.num_heads 2 --model.sample_steps 2)
  TOY_TEXT=(--model.text_model_name null --model.text_pretrained null --model.text_width 64
    --model.text_layers 2 --model.text_heads 2 --model.text_context_length 32
    --model.text_vocab_size 4096)
  TOY_CLIPS=(--data.num_frames 8 --data.strides "[1]")
fi
RESUME_ARGS() {  # run dir: --ckpt_path of its last checkpoint when resuming
  [ "${RESUME:-0}" = 1 ] && [ -f "$1/checkpoints/last.ckpt" ] && echo "--ckpt_path $1/checkpoints/last.ckpt"
  return 0
}

AE=$OUT/autoencoder KF=$OUT/keyframe TW=$OUT/interpolate
say "autoencoder"
# shellcheck disable=SC2046
animatic train autoencoder fit --config configs/autoencoder/base.yaml --data.data "$IMAGES" \
  --trainer.default_root_dir "$AE" "${EXTRA[@]}" "${TOY_AE[@]}" $(RESUME_ARGS "$AE")
animatic export autoencoder "$AE/checkpoints/last.ckpt" --out "$AE/export" --fp32 --overwrite

say "keyframe model, on the autoencoder's latents"
# shellcheck disable=SC2046
animatic train keyframe fit --config configs/keyframe/base.yaml --data.data "$IMAGES" \
  --model.autoencoder "$AE/export" --trainer.default_root_dir "$KF" \
  "${EXTRA[@]}" "${TOY_UNET[@]}" "${TOY_TEXT[@]}" $(RESUME_ARGS "$KF")

say "interpolator, from the keyframe model's weights"
# shellcheck disable=SC2046
animatic train interpolate fit --config configs/interpolate/base.yaml --data.data "$CLIPS" \
  --model.autoencoder "$AE/export" --model.init_from "$KF/checkpoints/last.ckpt" \
  --trainer.default_root_dir "$TW" "${EXTRA[@]}" "${TOY_UNET[@]}" "${TOY_TEXT[@]}" \
  "${TOY_CLIPS[@]}" $(RESUME_ARGS "$TW")

say "export and render"
animatic export keyframe "$KF/checkpoints/last.ckpt" --out "$OUT/export/keyframe" --overwrite
animatic export interpolate "$TW/checkpoints/last.ckpt" --out "$OUT/export/interpolate" --overwrite
SIZE=$([ "${DRY:-0}" = 1 ] && echo 64 || echo 256)
cat > "$OUT/film.yaml" <<YAML
title: base family check
size: $SIZE
steps: $([ "${DRY:-0}" = 1 ] && echo 2 || echo 30)
panels:
  - prompt: a large red circle at the top left on a navy background
    duration: 12
  - prompt: a large red circle at the bottom right on a navy background
    duration: 12
YAML
animatic render "$OUT/film.yaml" --out "$OUT/film.mp4" --storyboard "$OUT/board" --overwrite \
  --keyframe-model "$OUT/export/keyframe" --tween-model "$OUT/export/interpolate" \
  --device "$([ "${DRY:-0}" = 1 ] && echo cpu || echo auto)" --quiet
say "done: $OUT/film.mp4"

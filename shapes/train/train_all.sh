#!/usr/bin/env bash
# Trains the shapes-v1 models from scratch, or resumes an interrupted run:
# dataset, then CLIP and VAE side by side (one core each), then the UNet on
# both cores, then the export into the model folder.
#
#   shapes/train/train_all.sh RUN_DIR [OUT_DIR]
#
# RUN_DIR keeps the dataset, checkpoints and logs; OUT_DIR defaults to
# models/shapes-v1. Python packages: shapes/train/requirements.txt.
set -euo pipefail

run="${1:?usage: train_all.sh RUN_DIR [OUT_DIR]}"
here="$(cd "$(dirname "$0")" && pwd)"
root="$(cd "$here/../.." && pwd)"
out="${2:-$root/models/shapes-v1}"
python="${PYTHON:-python3}"
redraft="${REDRAFT:-$root/target/release/redraft}"

seed="${SEED:-0}"
images="${IMAGES:-50000}"
flawed_share="${FLAWED_SHARE:-0.3}"
styled_share="${STYLED_SHARE:-0.3}"
clip_steps="${CLIP_STEPS:-2000}"
vae_steps="${VAE_STEPS:-1500}"
unet_steps="${UNET_STEPS:-6000}"

mkdir -p "$run"
started=$(date +%s)

if [[ ! -f "$run/data/captions.jsonl" ]]; then
  echo "== rendering $images images, a share of $flawed_share with flawed objects and of $styled_share with styled ones"
  "$redraft" shapes dataset "$run/data" --count "$images" --seed "$seed" \
    --flawed-share "$flawed_share" --styled-share "$styled_share"
fi

echo "== training CLIP and the VAE side by side"
"$python" "$here/train_clip.py" --data "$run/data" --run "$run/clip" --steps "$clip_steps" --seed "$seed" --threads 1 > "$run/clip.log" 2>&1 &
clip_pid=$!
"$python" "$here/train_vae.py" --data "$run/data" --run "$run/vae" --steps "$vae_steps" --seed "$seed" --threads 1 > "$run/vae.log" 2>&1 &
vae_pid=$!
wait "$clip_pid" || { echo "CLIP training failed; see $run/clip.log"; exit 1; }
wait "$vae_pid" || { echo "VAE training failed; see $run/vae.log"; exit 1; }

echo "== training the UNet"
"$python" "$here/train_unet.py" --data "$run/data" --clip "$run/clip/export" --vae "$run/vae/export" \
  --run "$run/unet" --steps "$unet_steps" --seed "$seed" --threads 2 > "$run/unet.log" 2>&1

echo "== exporting to $out"
"$python" "$here/export.py" --data "$run/data" --clip "$run/clip/export" --vae "$run/vae/export" --unet "$run/unet/export" --out "$out"
echo "== done in $(( $(date +%s) - started )) s (this invocation)"

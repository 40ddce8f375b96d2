#!/usr/bin/env bash
# Issue #4's measurement: our SSL tokens vs the MFCC k-means baseline on held-out speakers of
# the embedded speech corpus (PNMI, purity). What docs/results/semantic_pnmi_2026-11-23.md reports, as one script.
#   bash scripts/semantic_vs_mfcc.sh [OUT_DIR]      (default outputs/semantic_vs_mfcc; ~45 min, 2 CPU cores)
# Every step is skipped when its output exists, so an interrupted run continues.
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/setup_env.sh"   # .venv with audiolm_pl, like main.sh
OUT="${1:-outputs/semantic_vs_mfcc}"
export OMP_NUM_THREADS="${OMP_NUM_THREADS:-1}"
C="$OUT/corpus/speech"; S="$OUT/shards/speech"; R="$OUT/runs"
[ -f "$C/corpus.json" ] || audiolm-pl data speech "$C" --hours 2 --seed 0 --workers 2
for split in train val; do
  [ -f "$S/$split/manifest.json" ] || audiolm-pl data shards "$C/$split" "$S/$split" --sample-rate 16000
done
kmeans() { [ -f "$OUT/$1.safetensors" ] || audiolm-pl semantic kmeans "${@:2}" --shards "$S/train" --clusters 100 --max-frames 200000 --out "$OUT/$1.safetensors"; }
kmeans mfcc_50hz --source mfcc --frame-rate 50 --seed 0            # iteration-1 targets
for seed in 0 1 2; do kmeans "mfcc_25hz_s$seed" --source mfcc --frame-rate 25 --seed "$seed"; done   # the baseline
train() {  # HuBERT-style masked prediction of the MFCC targets, loss on masked and visible frames
  audiolm-pl train ssl --config tiny "targets.tokenizer=$OUT/mfcc_50hz.safetensors" targets.unmasked_weight=1.0 \
    "data.train_shards=$S/train" "data.val_shards=$S/val" data.num_workers=1 "trainer.output_dir=$R" trainer.run_name=ssl \
    trainer.val_check_interval=500 trainer.max_time=00:01:00:00 "trainer.max_steps=$1"
}
[ -f "$OUT/ssl3000_l1.safetensors" ] || train 3000
kmeans ssl3000_l1 --source "ssl:$R/ssl" --layer 1 --frame-rate 25 --seed 0
train 6000  # resumes from last.ckpt: the cosine schedule is re-stretched over 6000 steps
for seed in 0 1 2; do kmeans "ssl6000_l1_s$seed" --source "ssl:$R/ssl" --layer 1 --frame-rate 25 --seed "$seed"; done
kmeans ssl6000_l2_s0 --source "ssl:$R/ssl" --layer 2 --frame-rate 25 --seed 0
audiolm-pl semantic measure "$OUT"/mfcc_25hz_s*.safetensors "$OUT"/ssl*.safetensors --shards "$S/val" --json "$OUT/measure.json"

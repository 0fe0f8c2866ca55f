#!/usr/bin/env bash
# Base v3: base v2 with the beat grid (DiTConfig.beat_grid; issue "Longer pieces and editing", beat
# drift, and the fidelity issue's tempo and beat). Warm-started from base v2's fp32 export (or the
# shipped base when runs/ is lost); the grid projection starts at zero, so step 0 is base v2 exactly.
# Same data, cache and lr as base v2 (train/README "Base v2"). Resumes with the same call; SIGTERM
# stops it cleanly.
#   bash train/recipes/base-grid.sh                       # train (runs/tiny/base-v3, checkpoint every 500)
#   bash train/recipes/base-grid.sh snapshot STEP OUT     # a live run's checkpoint -> the default with this base
# THREADS (default 1) sets OMP_NUM_THREADS.
cd "$(dirname "$0")/../.."
source train/recipes/lib.sh
RUN=runs/tiny/base-v3
INIT=runs/tiny/model-base-v2-fp32-ship/base
[ -d "$INIT" ] || INIT=$A/base
train() {  # train OUT [more args]
  local out=$1
  shift
  "$py" -m train.base --config train/configs/tiny.json --out "$out" --resume latest --set data.root=data/corpus-v2 \
    --set base.init=$INIT --set base.model.beat_grid=true --set base.grid_dropout=0.1 \
    --set base.vae=$A/vae --set base.clap=$A/clap --set base.latent_cache=runs/tiny/cache-v2 \
    --set base.loop.lr=2e-4 --set base.loop.warmup_steps=200 --set base.loop.max_steps=30000 \
    --set base.loop.checkpoint_every=500 --set base.eval_every=500 "$@"
}
case "${1:-}" in
  "") train "$RUN" ;;
  snapshot)
    step=${2:-} out=${3:-}
    [ -n "$out" ] || { echo "usage: base-grid.sh snapshot STEP OUT" >&2; exit 2; }
    snap="$RUN-snap-$step"
    snapshot_copy "$RUN" "$step"
    train "$snap" --max-steps "$step"
    default_with "$out" --base "$snap/model/base" ;;  # its other variants are not grid models
  *) sed -n '2,9p' "$0"; exit 2 ;;
esac

# Shared by the recipes (sourced from the repository root): strict mode, the interpreter (PYTHON),
# one thread per training unless THREADS says otherwise, and the two helpers below.
set -euo pipefail
py=${PYTHON:-.venv/bin/python}
export OMP_NUM_THREADS=${THREADS:-1}
A=assets/presto-default

# A live run's folder is locked, so a snapshot resumes a copy holding only that checkpoint with
# --max-steps at its step, which exports it.
snapshot_copy() {  # snapshot_copy RUN STEP: makes RUN-snap-STEP, ready to resume at STEP
  local run=$1 step=$2 snap="$1-snap-$2" ckpt
  ckpt=$(printf 'step-%08d' "$step")
  [ -d "$run/checkpoints/$ckpt" ] || { echo "no checkpoint $ckpt in $run/checkpoints" >&2; return 2; }
  rm -rf "$snap" && mkdir -p "$snap/checkpoints"
  cp "$run/config.json" "$run/metrics.jsonl" "$snap/"
  cp -r "$run/checkpoints/$ckpt" "$snap/checkpoints/"
  printf '%s' "$ckpt" > "$snap/checkpoints/latest"
}

default_with() {  # default_with OUT [--base DIR] [--vae DIR]: the default, int8 as shipped, with those components
  local out=$1 base=$A/base vae=$A/vae
  shift
  while [ $# -gt 1 ]; do
    case $1 in --base) base=$2 ;; --vae) vae=$2 ;; *) echo "default_with: unknown $1" >&2; return 2 ;; esac
    shift 2
  done
  "$py" -m train.export --config train/configs/tiny.json --out "$out" --base "$base" --vae "$vae" --clap "$A/clap" \
    --m2s "$A/m2s" --int8 --add-variants "$A:presto-l,presto-s,presto-ls,ase" --default-variant presto-ls \
    --set data.root=data/corpus-v2
}

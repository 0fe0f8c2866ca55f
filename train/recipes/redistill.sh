#!/usr/bin/env bash
# Re-distillation of the default's variants from base v3 (issue "Fidelity of the embedded default"),
# one resumable step per call, from the repository root:
#   bash train/recipes/redistill.sh corpus            # corpus v2 (seeded; skipped when present)
#   bash train/recipes/redistill.sh presto-l          # Presto-L from the base (1000 steps, exported at the end)
#   bash train/recipes/redistill.sh ase               # the ASE baseline, the same way
#   bash train/recipes/redistill.sh presto-ls         # Presto-LS from scratch: generator = that Presto-L
#   bash train/recipes/redistill.sh presto-s          # Presto-S from scratch: generator = the base
#   bash train/recipes/redistill.sh snapshot presto-ls|presto-s STEP OUT   # a live run's checkpoint -> model folder OUT
#   bash train/recipes/redistill.sh assemble VARIANT FOLDER OUT   # the default with VARIANT from an exported FOLDER
#   bash train/recipes/redistill.sh report MODEL...   # train.report --variant $VARIANT (presto-ls) on 22 held-out prompts
# Trainings resume with the same call (--resume latest) and stop cleanly on SIGTERM (exit 4).
# THREADS (default 1) sets OMP_NUM_THREADS, so two trainings can share a 2-core machine.
cd "$(dirname "$0")/../.."
source train/recipes/lib.sh
# The teacher: base v3 (base v2 + 2500 steps with the beat grid), its fp32 export when the snapshot
# folder survives (`bash train/recipes/base-grid.sh snapshot 2500 runs/tiny/model-base3-2500`), else
# the shipped base (the same checkpoint, int8 weights dequantized at load). Every variant distilled
# from it inherits the grid. Until session 15 the teacher was base v2 (runs/tiny/presto_l-v3,
# ase-v3, presto_s-v3-fresh, presto_ls-v4).
T=runs/tiny/base-v3-snap-2500/model/base
[ -d "$T" ] || T=$A/base
common=(--config train/configs/tiny.json --resume latest --set data.root=data/corpus-v2)

distill() {  # distill STAGE OUT GENERATOR LR [more args]
  local s=$1 out=$2 gen=$3 lr=$4
  shift 4
  "$py" -m "train.${s}" "${common[@]}" --out "$out" \
    --set "$s.generator_model=$gen" --set "$s.base_model=$T" --set "$s.vae=$A/vae" --set "$s.clap=$A/clap" \
    --set "$s.latent_cache=runs/tiny/cache-v2" --set "$s.guidance=2.0" --set "$s.fake_warmup_steps=200" \
    --set "$s.loop.lr=$lr" --set "$s.loop.batch_size=4" --set "$s.loop.max_steps=16000" \
    --set "$s.loop.checkpoint_every=250" "$@"
}

dsm() {  # dsm METHOD OUT: Presto-L or ASE, trained by score matching from the base
  "$py" -m train.presto_l "${common[@]}" --out "$2" --set presto_l.method="$1" --set "presto_l.base_model=$T" \
    --set "presto_l.vae=$A/vae" --set "presto_l.clap=$A/clap" --set presto_l.latent_cache=runs/tiny/cache-v2 \
    --set presto_l.loop.max_steps=1000 --set presto_l.loop.checkpoint_every=250
}

# A Presto-LS warm-started from the shipped one (runs/tiny/presto_ls-v3, 2e-5, 3049 iterations, sessions
# 12-13) kept the shipped model's double-time slow tempos (40-95 BPM strict 17 % at 2500 iterations, the
# shipped 17 %), so every variant starts from the base or the Presto-L distilled from it.
# Presto-L v4 is shipped (sixteenth session): when its run folder is lost, the shipped one is the same
# checkpoint (int8 weights dequantized at load).
# Seventeenth session: runs/ was lost with presto_ls-v5 at iteration 4837 and presto_s-v4 at 1807;
# presto_ls-v5 was started again from the beginning (the same seeded run, generator = the shipped
# Presto-L v4, teacher = the shipped base v3) and stopped at 517: on that AVX2 machine (fp32) an
# iteration took 5.0 s on one thread, 3.4 s on two, so 2000 updates need more than one session
# (train/README.md, "Why the long distillations do not finish").
L=runs/tiny/presto_l-v4/export/presto_l
[ -d "$L" ] || L=$A/presto_l
run_of() {  # the run folder, generator and lr of a variant
  case $1 in
    presto-ls) echo "presto_ls runs/tiny/presto_ls-v5 $L 4e-5" ;;
    presto-s) echo "presto_s runs/tiny/presto_s-v4 $T 4e-5" ;;
    *) echo "unknown variant $1 (presto-ls or presto-s)" >&2; exit 2 ;;
  esac
}

assemble() {  # assemble VARIANT FOLDER OUT: a copy of the default with VARIANT taken from FOLDER
  local others
  others=$(printf '%s\n' presto-l presto-s presto-ls ase | grep -vx "$1" | paste -sd,)
  "$py" -m train.export --config train/configs/tiny.json --out "$3" --base "$A/base" --vae "$A/vae" \
    --clap "$A/clap" --m2s "$A/m2s" --int8 --add-variants "$A:$others" "$2:$1" \
    --default-variant presto-ls --set data.root=data/corpus-v2
}

case "${1:-}" in
  corpus)
    [ -f data/corpus-v2/corpus.json ] || exec "$py" -m train.data.build_corpus --out data/corpus-v2 --hours 4 \
      --seed 0 --version 2 --jobs 2 ;;
  presto-l) dsm presto_l runs/tiny/presto_l-v4 ;;
  ase) dsm ase runs/tiny/ase-v4 ;;
  presto-ls | presto-s)
    spec=$(run_of "$1")
    read -r stage run gen lr <<< "$spec"
    distill "$stage" "$run" "$gen" "$lr" ;;
  snapshot)
    # Export one checkpoint of a live run (lib.sh) and assemble a copy of the default with it.
    variant=${2:-} step=${3:-} out=${4:-}
    [ -n "$out" ] || { echo "usage: redistill.sh snapshot presto-ls|presto-s STEP OUT" >&2; exit 2; }
    spec=$(run_of "$variant")  # an assignment, so set -e stops on an unknown variant
    read -r stage run gen lr <<< "$spec"
    snap="$run-snap-$step"
    snapshot_copy "$run" "$step"
    distill "$stage" "$snap" "$gen" "$lr" --max-steps "$step"
    assemble "$variant" "$snap/model" "$out" ;;
  assemble)
    [ -n "${4:-}" ] || { echo "usage: redistill.sh assemble VARIANT MODEL_FOLDER OUT" >&2; exit 2; }
    assemble "$2" "$3" "$4" ;;
  report)
    shift
    mkdir -p runs/eval
    for m in "$@"; do
      n=${VARIANT:-presto-ls}-$(basename "$m")  # one file per variant and model folder
      "$py" -m train.report --model "$m" --corpus data/corpus-v2 --variant "${VARIANT:-presto-ls}" --num 22 \
        --duration 10 --markdown "runs/eval/$n.md" --json "runs/eval/$n.json" --device cpu
    done ;;
  *) sed -n '2,13p' "$0"; exit 2 ;;
esac

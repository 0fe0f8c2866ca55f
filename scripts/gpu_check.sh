#!/usr/bin/env bash
# The checks that need a GPU, as one script for a lent machine (about 8 minutes on an H100/H200):
#   bash scripts/gpu_check.sh [OUT_DIR]      (OUT_DIR defaults to $OUT, then gpu-check/)
# 1. inference latency of the paper-size model (DiT-XL + paper VAE), Presto-LS 32 s mono and stereo,
#    compiled, against the paper's 230 ms on an A100 (presto_core.bench);
# 2. training-step throughput at paper size: base DSM and Presto-S turns (train.bench);
# 3. the embedded default generating on CUDA through the command line and the pipeline, mono and
#    stereo, with its timings.
# Each step writes its own file and a failure does not stop the next one; exit status 1 if any failed.
set -uo pipefail
cd "$(dirname "$0")/.."
out=${1:-${OUT:-gpu-check}}
mkdir -p "$out"
py=${PYTHON:-.venv/bin/python}
[ -x "$py" ] || py=python3
status=0
step() {  # step NAME TIMEOUT_S CMD...
  local name=$1 limit=$2; shift 2
  echo "== $name" | tee -a "$out/summary.txt"
  if timeout "$limit" "$@" > "$out/$name.txt" 2>&1; then
    tail -n 20 "$out/$name.txt" | tee -a "$out/summary.txt"
  else
    echo "FAILED ($?): $*" | tee -a "$out/summary.txt"; tail -n 20 "$out/$name.txt" | tee -a "$out/summary.txt"; status=1
  fi
}
{ nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv; "$py" -c "import torch; print(torch.__version__, torch.version.cuda)"; } > "$out/machine.txt" 2>&1
step latency-paper 240 "$py" -m presto_core.bench --size paper --device cuda --compile --repeats 10
step train-throughput-paper 150 "$py" -m train.bench --size paper --device cuda --batch 8 --seconds 10 --precision bf16
step generate-cuda 90 "$py" -m presto_core.generate --prompt "warm rhodes and brushed drums" --bpm 84 --duration 10 \
  --seed 1 --device cuda --out "$out/clip.wav"
step pipeline-cuda 90 "$py" - <<'PY'
import time
from presto_core.pipeline import PrestoPipeline
pipe = PrestoPipeline.from_pretrained("assets/presto-default", device="cuda")
for stereo in (False, True):
    for i in range(3):
        t = time.perf_counter()
        r = pipe.generate(prompt="deep house groove", bpm=122, duration=32, seed=i, stereo=stereo)
        print(f"stereo={stereo} run {i}: {time.perf_counter() - t:.3f} s", {k: round(v, 4) for k, v in r.timings.items()})
PY
exit $status

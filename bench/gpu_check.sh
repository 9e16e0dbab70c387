#!/usr/bin/env bash
# One script for a lent GPU machine, with its preinstalled Python (torch, timm, accelerate, huggingface_hub,
# safetensors, scikit-learn, matplotlib; no gradio, olah or pydicom), run from the checkout:
#     bash bench/gpu_check.sh            # ~3-5 minutes; writes its results under $OUT (or ./gpu-check)
# The default run on the GPU, train/evaluate.py on it, the throughput bench at batch 64 and 256 (with the
# conventional torchvision pipeline on the same images for the ratio), the per-method rows, and the CUDA tests.
set -euo pipefail
cd "$(dirname "$0")/.."
out=${OUT:-$PWD/gpu-check}
mkdir -p "$out"
export PYTHONPATH=$PWD ZOO_HOME="$out/zoo_home" ZOO_CACHE="$out/cache" HF_HUB_OFFLINE=1
py=${PYTHON:-python3}
log() { echo; echo "== $* ($(date +%T))"; }

log "device"
"$py" -c "import torch, timm, accelerate; print(torch.cuda.get_device_name(0) if torch.cuda.is_available() else 'cpu (a dry run)', torch.__version__, timm.__version__, accelerate.__version__)" | tee "$out/device.txt"

log "the default run (SimCLR, synthetic), then train/evaluate.py on it"
"$py" train/pretrain.py --output-dir "$out/default-run" --progress false 2>&1 | tail -4 | tee "$out/default-run.txt"
"$py" train/evaluate.py "$out/default-run" --protocols knn,linear --fractions 1.0 --seeds 0 --baselines random \
  --no-plots 2>&1 | tail -6 | tee "$out/evaluate.txt"

log "throughput: ResNet-50 @ 224, SimCLR, 700x460 PNGs, batch 64 and 256, against the conventional pipeline"
steps=${STEPS:-12}  # a CPU dry run: BATCHES="8" STEPS=2 bash bench/gpu_check.sh
for batch in ${BATCHES:-64 256}; do
  "$py" bench/pretrain_throughput.py --only r50-png --batch-size "$batch" --images $((batch * 2 + 64)) \
    --steps "$steps" --warmup 3 --conventional 2>&1 | tail -3 | tee "$out/throughput-$batch.txt"
done
log "throughput per method (the default run's backbone and batch)"
"$py" bench/pretrain_throughput.py --only methods --steps "$steps" --warmup 3 2>&1 | tail -9 | tee "$out/methods.txt"

log "the CUDA paths (tests/gpu; no pytest plugins there, so none of the project's pytest options)"
"$py" -m pytest -q -o addopts="" -p no:cacheprovider tests/gpu 2>&1 | tail -5 | tee "$out/tests.txt"

log "done: $out"

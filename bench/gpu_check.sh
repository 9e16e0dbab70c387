#!/usr/bin/env bash
# One script for a lent GPU machine, with its preinstalled Python (torch, timm, accelerate, huggingface_hub,
# safetensors, scikit-learn, matplotlib; no gradio, olah or pydicom), run from the checkout:
#     bash bench/gpu_check.sh            # ~3-5 minutes; writes its results under $OUT (or ./gpu-check)
# The default run on the GPU, train/evaluate.py on it, the throughput bench at batch 64 and 256 (with the
# conventional torchvision pipeline on the same images for the ratio), the per-method rows, and the CUDA tests.
# Every part runs even when an earlier one fails; a failing part's output is printed whole, and the script ends
# with the list of failed parts (exit status 1 if any).
set -uo pipefail
cd "$(dirname "$0")/.."
out=${OUT:-$PWD/gpu-check}
mkdir -p "$out"
export PYTHONPATH=$PWD ZOO_HOME="$out/zoo_home" ZOO_CACHE="$out/cache" HF_HUB_OFFLINE=1
py=${PYTHON:-python3}
failed=()

# part NAME LINES CMD...: run CMD with its output in $out/NAME.txt; print its last LINES lines, or all of it when
# it fails (the whole error, not a tail that cuts the traceback)
part() {
  local name=$1 lines=$2
  shift 2
  echo
  echo "== $name ($(date +%T))"
  if "$@" >"$out/$name.txt" 2>&1; then
    tail -n "$lines" "$out/$name.txt"
  else
    local status=$?
    cat "$out/$name.txt"
    echo "!! $name failed (exit $status); continuing"
    failed+=("$name")
  fi
}

part device 1 "$py" -c "import torch, timm, accelerate; print(torch.cuda.get_device_name(0) if torch.cuda.is_available() else 'cpu (a dry run)', torch.__version__, timm.__version__, accelerate.__version__)"

part default-run 4 "$py" train/pretrain.py --output-dir "$out/default-run" --progress false
part evaluate 6 "$py" train/evaluate.py "$out/default-run" --protocols knn,linear --fractions 1.0 --seeds 0 \
  --baselines random --no-plots

# throughput: ResNet-50 @ 224, SimCLR, 700x460 PNGs, against the conventional pipeline on the same files
steps=${STEPS:-12}  # a CPU dry run: BATCHES="8" STEPS=2 bash bench/gpu_check.sh
for batch in ${BATCHES:-64 256}; do
  part "throughput-$batch" 3 "$py" bench/pretrain_throughput.py --only r50-png --batch-size "$batch" \
    --steps "$steps" --warmup 3 --conventional
done
part methods 9 "$py" bench/pretrain_throughput.py --only methods --steps "$steps" --warmup 3

# the CUDA paths (tests/gpu; no pytest plugins there, so none of the project's pytest options)
part tests 5 "$py" -m pytest -q -o addopts="" -p no:cacheprovider tests/gpu

echo
echo "== done: $out"
if ((${#failed[@]})); then
  echo "failed parts: ${failed[*]}"
  exit 1
fi

#!/usr/bin/env bash
# The GPU check of the inference benchmark: real checkpoints' shapes, random weights, bfloat16.
#
# Made for one short lease of a GPU machine (the `device` tool): the models are built on the
# GPU in seconds (no checkpoint, nothing written to disk) and every ratio is measured within one
# run of one process, so the numbers compare only with each other. Results land in $OUT (or
# ./device-out) as JSON plus the printed tables; copy the tables into docs/benchmarks.md with
# the GPU's name, which the output names.
#
#     bash benchmarks/device_check.sh                            # both 7B/8B shapes
#     SIZES="qwen2.5-vl-7b" bash benchmarks/device_check.sh      # one size per call
#
# Its duration on a GPU has not been measured yet (no GPU was lent so far; a reading of the
# work estimates 2-3 minutes a size on an H100, model build and 1,110 stored concepts
# included): give the first call one size and a generous timeout, then size the next calls
# from its wall time.
#
# The machine's own python3 must have torch with CUDA, tokenizers, safetensors, numpy, pillow
# and opencv, and the transformers this project pins (requirements.txt). Wheels found in .whl/
# (ignored by .gitignore: `pip download --no-deps --only-binary=:all: --python-version 3.12
# -d .whl transformers==X`, then carry `.whl`) are installed into /tmp/site first and win over
# the machine's own. Carry only what the machine lacks: they go in without their dependencies,
# and a newer huggingface_hub (2.x needs httpx2, which the GPU image does not have) would break
# `import transformers` there. The environment is checked first, so a bad one fails in seconds.
set -uo pipefail
cd "$(dirname "$0")/.." || exit 1
out=${OUT:-device-out}
python=${PYTHON:-python3}
sizes=${SIZES:-"qwen2.5-vl-7b internvl3-8b"}
mkdir -p "$out"
if compgen -G ".whl/*.whl" > /dev/null; then
    "$python" -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade \
        --target /tmp/site .whl/*.whl || exit 1
    export PYTHONPATH="/tmp/site${PYTHONPATH:+:$PYTHONPATH}"
fi
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}" PYTHONUNBUFFERED=1
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv | tee "$out/gpu.txt"
"$python" -c 'import cv2, safetensors, torch, transformers, ego_ros.backends.loading, ego_ros.core.engine
print("torch", torch.__version__, "transformers", transformers.__version__, "cuda",
      torch.cuda.is_available())
assert torch.cuda.is_available(), "no CUDA device visible to torch"' 2>&1 | tee -a "$out/gpu.txt"
[ "${PIPESTATUS[0]}" -eq 0 ] || { echo "the environment cannot run the benchmarks" >&2; exit 1; }

status=0
for size in $sizes; do
    echo "=== $size" | tee -a "$out/tables.txt"
    # Each step is reported as soon as it ends, so a later failure loses nothing before it.
    if "$python" benchmarks/bench_inference.py --size "$size" --device cuda --dtype bfloat16 \
            --repeats 9 --warmup 2 --sizes 1,10,100,1000 --json > "$out/inference-$size.json"
    then
        "$python" benchmarks/bench_inference.py --report "$out/inference-$size.json" \
            | tee -a "$out/tables.txt"
    else
        echo "bench_inference failed for $size" | tee -a "$out/tables.txt"
        status=1
    fi
    if ! "$python" benchmarks/bench_introduce.py --no-tiny --random "$size" --device cuda \
            --dtype bfloat16 --repeats 5 | tee -a "$out/tables.txt"; then
        echo "bench_introduce failed for $size" | tee -a "$out/tables.txt"
        status=1
    fi
done
exit $status

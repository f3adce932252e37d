#!/usr/bin/env bash
# Every GPU-side figure the issues ask for, as ONE command on the lent GPU machine (one H100, 16 cores), about
# 8 minutes: ViT-B/16 bf16 MFU through our stack without and with the real loader (#15), TM-score pairs/s on the
# GPU against tmtools (#21), builder --num-proc and loader scaling on 16 cores (#21). Prepare here first:
#   bash benchmarks/device_wheels.sh
#   run(command="bash benchmarks/gpu_session.sh", carry=[".whl"], timeout_s=600)
# Each step has its own time limit, so one that hangs leaves the others their time; the log is also $OUT/gpu.log.
set -uo pipefail
export PYTHONUNBUFFERED=1 HF_HUB_OFFLINE=1 TOKENIZERS_PARALLELISM=false
export PYTHONPATH="/tmp/site:$PWD/src:$PWD"
log="${OUT:-/tmp}/gpu.log"
exec > >(tee "$log") 2>&1
python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl \
    || exit 1
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv
python3 -c "import os, torch, transformers, pyarrow; print('torch', torch.__version__, '| transformers', \
transformers.__version__, '| pyarrow', pyarrow.__version__, '| cores', os.cpu_count())"
step() { local limit=$1; shift; echo "== $* (limit ${limit}s)"; timeout "$limit" "$@" || echo "== exit $?: $*"; }
if python3 -c "import datasets" 2>/dev/null; then
    step 200 python3 benchmarks/bench_mfu.py
else
    echo "== datasets does not import here (pyarrow older than 24?): the model alone only; for the loader and the"
    echo "   builder, prepare with 'bash benchmarks/device_wheels.sh --pyarrow' and run this again"
    step 120 python3 benchmarks/bench_mfu.py --skip-loader
fi
if python3 -c "import tmtools, Bio" 2>/dev/null; then
    step 100 python3 benchmarks/bench_tm_score.py --device cuda --pairs 1024 --structures 2gtl 7ok9 --repeats 3
else
    echo "== tmtools / biopython absent (device_wheels.sh --pyarrow leaves them out): TM-score step skipped"
fi
if python3 -c "import datasets" 2>/dev/null; then
    step 220 env PYTHON=python3 bash benchmarks/many_core_builder.sh
fi

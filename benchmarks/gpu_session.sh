#!/usr/bin/env bash
# Every GPU-side figure the issues ask for, as ONE command on the lent GPU machine (one H100, 16 cores), about
# 8-9 minutes: ViT-B/16 bf16 MFU through our stack, the model alone and with the real loader (float32 and uint8
# batches) (#15), TM-score pairs/s on the GPU against tmtools, the old search beside the new (#21), builder
# --num-proc scaling on 16 cores at 256 px and one process against 16 at 512 px, the loader's float32, draft and
# uint8 batches at 8 and 16 workers (#21), and last the model alone under torch.compile. Prepare here first:
#   bash benchmarks/device_wheels.sh
#   run(command="bash benchmarks/gpu_session.sh", carry=[".whl"], timeout_s=540)
# Each step has its own time limit, so one that hangs leaves the others their time; the log is also $OUT/gpu.log.
set -uo pipefail
export PYTHONUNBUFFERED=1 HF_HUB_OFFLINE=1 TOKENIZERS_PARALLELISM=false
export PYTHONPATH="/tmp/site:$PWD/src:$PWD"
log="${OUT:-/tmp}/gpu.log"
exec > >(tee "$log") 2>&1
python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl \
    || exit 1
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv
python3 -c "import os, torch, transformers, pyarrow, datasets; print('torch', torch.__version__, '| transformers', \
transformers.__version__, '| pyarrow', pyarrow.__version__, '| datasets', datasets.__version__, '| cores', os.cpu_count())"
step() { local limit=$1; shift; echo "== $* (limit ${limit}s)"; timeout "$limit" "$@" || echo "== exit $?: $*"; }
step 150 python3 benchmarks/bench_mfu.py --batches float32 uint8 uint8+draft --profile
step 70 python3 benchmarks/bench_tm_score.py --device cuda --pairs 1024 --structures 2gtl 7ok9 --repeats 2 \
    --baseline-pairs 32 --gpu-only --compare-old --profile-torch --torch-compile
step 60 python3 benchmarks/bench_builder.py --images 3200 --size 256 --repeats 1 --num-proc 1 2 4 8 16 \
    --skip-validating --subset 8
# (the 512-px images are generated in one process first, ~28 ms each on that machine's cores: few enough to leave
# the timed part its time; the limits sum to 500 s of the run's 540)
step 50 python3 benchmarks/bench_builder.py --images 800 --size 512 --repeats 1 --num-proc 1 16 --subset 0
step 90 python3 benchmarks/bench_loader.py --images 1024 --size 512 --batch-size 128 --workers 8 16 \
    --sides ours ours+draft ours+uint8 ours+draft+uint8 --rounds 2 --repeats 1
step 80 python3 benchmarks/bench_mfu.py --skip-loader --compile model

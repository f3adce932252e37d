#!/usr/bin/env bash
# Builder and loader scaling on a many-core machine (the lent GPU machine: 16 cores, H100), from the repo root with
# the package installed (pip install -e .[test]). About 4 minutes; prints both sides and the ratios in one run.
#   bash benchmarks/many_core_builder.sh
set -euo pipefail
nproc
# builder: measured speed-up, the main process's CPU by phase, Amdahl's estimate, fixed vs per-file costs
"${PYTHON:-python3}" benchmarks/bench_builder.py --images 4800 --size 256 --repeats 3 --num-proc 1 2 4 8 16 --writers
"${PYTHON:-python3}" benchmarks/bench_loader.py --images 2048 --size 512 --workers 0 4 8 16 --batch-size 128 --repeats 2

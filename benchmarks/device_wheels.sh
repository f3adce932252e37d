#!/usr/bin/env bash
# Here, before a device session (PyPI is reachable here, not there): the packages the GPU machine's image lacks,
# as Python 3.12 x86-64 wheels, into .whl/ (git-ignored; a device call carries at most 64 MiB with the tree).
# Its image has torch, transformers, accelerate, timm, numba, pandas, scipy, scikit-learn, pillow, tqdm, pyyaml;
# not datasets and its dill / multiprocess, imagehash and PyWavelets, tmtools and biopython (bench_tm_score's
# baseline and structures): about 12 MB.
#   bash benchmarks/device_wheels.sh [--pyarrow]
# --pyarrow: where gpu_session.sh said the image's pyarrow is older than datasets 5.2 needs (24), also pyarrow 24
# (47 MB), leaving out tmtools and biopython to stay under the limit (the TM-score step is then skipped).
set -euo pipefail
cd "$(dirname "$0")/.."
grep -qxF "/.whl/" .git/info/exclude 2>/dev/null || { mkdir -p .git/info; echo "/.whl/" >> .git/info/exclude; }
rm -rf .whl && mkdir -p .whl
wheels=(datasets==5.2.0 dill==0.4.1 multiprocess==0.70.19 ImageHash==4.3.2 PyWavelets==1.9.0)
if [[ "${1:-}" == "--pyarrow" ]]; then wheels+=(pyarrow==24.0.0); else wheels+=(tmtools==0.3.0 biopython==1.88); fi
python3 -m pip download -q --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
    --platform manylinux_2_28_x86_64 --platform manylinux_2_27_x86_64 --platform manylinux_2_17_x86_64 \
    --platform manylinux2014_x86_64 -d .whl "${wheels[@]}"
du -sh .whl

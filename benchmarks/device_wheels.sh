#!/usr/bin/env bash
# Here, before a device session (PyPI is reachable here, not there): the packages the GPU machine's image lacks,
# as Python 3.12 x86-64 wheels, into .whl/ (git-ignored; a device call carries at most 64 MiB with the tree).
# Its image has torch, transformers, accelerate, timm, numba, pandas, scipy, scikit-learn, pillow, tqdm, pyyaml;
# not datasets and its dill / multiprocess, tmtools and biopython (bench_tm_score's
# baseline and structures), and maybe not pyarrow >= 24 (datasets 5.2 needs it). pyarrow's wheel (49 MB) is
# trimmed of what nothing here imports (C++ headers, its tests and sources, Arrow Flight, duplicate copies of one
# library), to 35 MB: about 42 MB in all. pip installs the trimmed wheel (its RECORD still names the dropped files).
# Also the TM-score search as it was before issue #21's GPU rework, from git (see the end).
#   bash benchmarks/device_wheels.sh
set -euo pipefail
cd "$(dirname "$0")/.."
grep -qxF "/.whl/" .git/info/exclude 2>/dev/null || { mkdir -p .git/info; echo "/.whl/" >> .git/info/exclude; }
rm -rf .whl && mkdir -p .whl
wheels=(datasets==5.2.0 dill==0.4.1 multiprocess==0.70.19 fsspec==2026.9.0 tmtools==0.3.0 biopython==1.88
        pyarrow==24.0.0)
python3 -m pip download -q --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
    --platform manylinux_2_28_x86_64 --platform manylinux_2_27_x86_64 --platform manylinux_2_17_x86_64 \
    --platform manylinux2014_x86_64 -d .whl "${wheels[@]}"
python3 - .whl/pyarrow-*.whl <<'PY'
import re, sys, zipfile
from pathlib import Path

wheel = Path(sys.argv[1])
drop = re.compile(r"^pyarrow/(include/|tests/|src/|.*flight|libarrow_python\.so(\.\d+\.\d+\.\d+)?$|.*\.pxd$|.*\.pyx$)")
trimmed = wheel.with_suffix(".trimmed")
with zipfile.ZipFile(wheel) as src, zipfile.ZipFile(trimmed, "w", zipfile.ZIP_DEFLATED, compresslevel=9) as out:
    for item in src.infolist():
        if not drop.match(item.filename):
            out.writestr(item, src.read(item.filename))
trimmed.replace(wheel)
PY
# The TM-score search before issue #21's GPU rework, one module (its rotation solve appended), for
# bench_tm_score.py --compare-old / profile_tm_search.py --old to time beside ours in the same run.
old=3fb4897
{ git show "$old:src/multimed_hf/metrics/_tm_search.py" | grep -vxF "from multimed_hf.metrics._tm_rotation import rotations"
  git show "$old:src/multimed_hf/metrics/_tm_rotation.py" | grep -vxF "from __future__ import annotations"
} > ".whl/tm_search_$old.py"
du -sh .whl

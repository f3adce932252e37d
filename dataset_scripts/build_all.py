"""Build every config whose sources are found under a folder (default: the bundled synthetic samples).

    python dataset_scripts/build_all.py --out multimed                     # generate the samples, build them
    python dataset_scripts/build_all.py --sources ~/multimed_sources --out multimed   # real downloads
    python dataset_scripts/build_all.py --sources ~/multimed_sources --out multimed --push my-org/multimed
    python dataset_scripts/build_all.py --sources /shared/sources --out multimed --engine ray --ray-address auto
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run as a script from anywhere

from dataset_scripts.sample_sources import make_sample_sources  # noqa: E402
from multimed_hf.api import build_dataset, detect_sources  # noqa: E402
from multimed_hf.data.errors import StrictBuildError  # noqa: E402


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sources", type=Path, default=None,
                        help="a folder whose sub-folders are sources in their publishers' layouts "
                        "(default: generate the synthetic samples into ./sample_sources)")
    parser.add_argument("--out", type=Path, default=Path("multimed"))
    parser.add_argument("--strict", action="store_true")
    parser.add_argument("--num-proc", type=int, default=1, metavar="N", help="read files in N processes")
    parser.add_argument("--engine", choices=("local", "ray"), default="local",
                        help="where files are read: here (local) or with Ray Data (pip install multimed_hf[ray])")
    parser.add_argument("--ray-address", metavar="ADDR", default=None,
                        help="the Ray cluster to join (ray.init(address=ADDR)); default: a local Ray instance")
    parser.add_argument("--push", metavar="ORG/NAME", default=None)
    args = parser.parse_args(argv)
    sources = args.sources
    if sources is None:
        sources = Path("sample_sources")
        make_sample_sources(sources)
        print(f"generated the synthetic sample sources under {sources}/")
    skipped: list = []  # what is under --sources and no builder reads: said, never passed over in silence
    found = detect_sources(sources, unpack_into=args.out, skipped=skipped)  # downloads as they came are unpacked
    out = args.out.resolve()
    skipped = [(path, reason) for path, reason in skipped if path.resolve() != out]  # --out inside --sources
    lost = [f"{path}: {reason}" for path, reason in skipped if reason != "a file, not a source folder"]
    if not found:
        parser.error(f"no known source layout under {sources}" + "".join(f"\n  {line}" for line in lost))
    if args.strict and lost:
        parser.error("--strict: not built: " + "; ".join(lost))
    empty = []
    for task, roots in found.items():
        try:
            report = build_dataset(task, roots, args.out, on_bad_files="error" if args.strict else "report",
                                   num_proc=args.num_proc, engine=args.engine, ray_address=args.ray_address)
        except StrictBuildError as err:  # one line, as `multimed build --strict` says it
            parser.exit(2, f"{parser.prog}: error: {task}: {err}\n")
        print(report.summary())
        if not report.kept_samples:
            earlier = report.entries.path.parent != Path(args.out) / task  # an earlier build is left as it was
            empty.append(f"{task}: no sample kept (its summary above and {report.entries.path} give each file's "
                         f"reason)" + (f"; the earlier build of {task} in {args.out} is left as it was"
                                       if earlier else ""))
    built = [task for task in found if not any(line.startswith(f"{task}:") for line in empty)]
    if built:
        print(f"\nbuilt {len(built)} configs into {args.out}/: load one with datasets.load_dataset("
              f"{str(args.out)!r}, {built[0]!r})")
    for path, reason in skipped:
        if reason == "a file, not a source folder":
            print(f"not used: {path}: {reason}")
    for line in lost + empty:
        print(f"not built: {line}", file=sys.stderr)
    if lost or empty:
        if args.push:
            print(f"not pushed to {args.push}: build every source first (or leave the others out of --sources)",
                  file=sys.stderr)
        return 1
    if args.push:
        from multimed_hf.data.push import push_dataset

        report = push_dataset(args.out, args.push)
        print(f"pushed to {report.repo_id}; left out: {', '.join(report.left_out) or 'nothing'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""``python -m sample_data [--out DIR] [--n N] [--seed S] [--layout L]``: write the sample phantom cohort."""

from __future__ import annotations

import argparse
import sys

from sample_data import DEFAULT_LAYOUT, DEFAULT_N, DEFAULT_OUT, DEFAULT_SEED, make_sample_cohort, summary_lines


def build_parser() -> argparse.ArgumentParser:
    from stran.phantom.cohort import LAYOUTS

    p = argparse.ArgumentParser(prog="python -m sample_data", description="Write the synthetic sample cine cohort.")
    p.add_argument("--out", default=str(DEFAULT_OUT), help=f"output folder (default {DEFAULT_OUT})")
    p.add_argument("--n", type=int, default=DEFAULT_N, help=f"number of studies (default {DEFAULT_N})")
    p.add_argument("--seed", type=int, default=DEFAULT_SEED, help=f"cohort seed (default {DEFAULT_SEED})")
    p.add_argument("--layout", default=DEFAULT_LAYOUT, choices=LAYOUTS, help="image layout (default datastore)")
    p.add_argument("--workers", type=int, default=2, help="worker processes (default 2)")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    return p


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    manifest = make_sample_cohort(
        args.out, args.n, args.seed, args.layout, workers=args.workers, progress=not args.quiet
    )
    for line in summary_lines(args.out):
        print(line)
    labels = manifest["label_counts"]
    print(
        f"{manifest['n']} studies ({labels.get('1', 0)} scar, {labels.get('0', 0)} no scar) in {args.out} "
        f"[{manifest['layout']}, seed {manifest['seed']}, {manifest['seconds']:.1f} s]"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())

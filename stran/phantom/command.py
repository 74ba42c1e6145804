"""``stran phantom OUT``: write a synthetic phantom cohort (see docs/phantom.md)."""

from __future__ import annotations

import argparse

from stran.errors import UserError, output_folder

HELP = "Generate a synthetic SAX cine phantom cohort (balanced scar / no-scar scenarios) with ground truth."


def add_arguments(parser: argparse.ArgumentParser) -> None:
    from stran.phantom.cohort import LAYOUTS

    parser.add_argument("out", help="output folder (images/, labels/, truth/, cohort.csv, manifest.json)")
    parser.add_argument("--n", type=int, default=100, help="number of studies (default 100)")
    parser.add_argument("--seed", type=int, default=0, help="cohort seed; study i gets seed * 100000 + i (default 0)")
    parser.add_argument("--layout", default="datastore", choices=LAYOUTS, help="image layout (default datastore)")
    parser.add_argument(
        "--mix",
        default=None,
        help="scenario weights, e.g. 'A=1,B=1,C=1,D=1' (default equal: 50 %% scar)",
    )
    parser.add_argument("--workers", type=int, default=2, help="worker processes (default 2)")
    parser.add_argument("--overwrite", action="store_true", help="regenerate studies already complete in OUT")
    parser.add_argument("--quiet", action="store_true", help="no progress bar")


def parse_mix(text: str | None) -> dict[str, float] | None:
    if not text:
        return None
    mix = {}
    for part in text.split(","):
        key, _, value = part.partition("=")
        try:
            mix[key.strip().upper()] = float(value) if value else 1.0
        except ValueError:
            raise UserError(f"--mix {text!r}: {value!r} is not a number", "give weights like 'A=1,B=1,C=1,D=1'") from None
    return mix


def run(args: argparse.Namespace) -> int:
    from stran.phantom.cohort import cohort_plan, generate_cohort

    if args.n < 0:
        raise UserError(f"--n {args.n} is negative", "give the number of studies to generate")
    mix = parse_mix(args.mix)
    try:
        cohort_plan(0, args.seed, mix)  # unknown scenarios fail here, before anything is written
    except ValueError as exc:
        raise UserError(f"--mix {args.mix!r}: {exc}", "give weights like 'A=1,B=1,C=1,D=1'") from None
    m = generate_cohort(
        output_folder(args.out),
        args.n,
        args.seed,
        layout=args.layout,
        scenario_mix=mix,
        workers=args.workers,
        progress=not args.quiet,
        overwrite=args.overwrite,
    )
    labels = m["label_counts"]
    print(
        f"{m['n']} studies in {args.out}: scenarios {m['scenario_counts']}, "
        f"{labels.get('1', 0)} scar / {labels.get('0', 0)} no scar; "
        f"{m['generated']} generated, {m['reused']} kept, {m['seconds']:.1f} s"
    )
    return 0

"""Training throughput (studies/s) and peak memory of every network of the zoo, through the project's own Trainer.

    OMP_WAIT_POLICY=PASSIVE python training/bench_training.py              # every network, CPU, 1 thread
    python training/bench_training.py --networks stran,cnn3d --studies 32 --epochs 5
    python training/bench_training.py --device cuda --threads 4 --out bench_training.md

One phantom cohort (``stran.phantom.generate_cohort``: ``--studies`` training studies and 2 validation studies) is
made in a temporary folder and preprocessed into a tensor cache once, by this process; every network then trains in
a fresh subprocess with what ``stran train`` builds: ``TrainConfig`` with its defaults and the network's default
config (the map head where the network has one, as shipped), ``Trainer.fit`` (Adam, cosine schedule, ScarLoss,
batch ``--batch-size`` = 4, the default augmentation, the DataLoader over the cached studies). Changed for the
measurement: ``Trainer._validate`` returns a constant without running (validation is not training), the wall
reader's second stage (``refit_reader``) is off, and early stopping cannot trigger.

Timed: each call of ``Trainer._train_epoch`` (loading and augmenting the batches, forward, ScarLoss, backward, Adam
step, ``loss.item()``; on CUDA synchronised before and after), i.e. one pass over the training studies. The first
``--warmup`` epochs are not counted; throughput is training studies / epoch seconds, median and min / max over the
``--epochs`` timed epochs. Not timed: imports, model build, reading the cache, per-epoch ``state.pt`` writes.

Memory (per network, its own process): the peak RSS (``ru_maxrss``) at the end, absolute and minus the RSS right
after the imports (on CUDA after the CUDA context is made): model, Adam state, the cohort in memory (float16),
activations and the allocator's caches. On CUDA also ``torch.cuda.max_memory_allocated()``.

Threads: 1 by default on the CPU, because the machine's 2 cores are shared with other jobs and idle OpenMP threads
then spin at barriers (docs/models.md, "Training on the 2-core CPU"); ``OMP_WAIT_POLICY=PASSIVE`` is set for the
children unless given. Networks run one after the other: read ratios with the load averages printed.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import platform
import resource
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")  # before torch is imported, here and in the children

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

import numpy as np  # noqa: E402
import torch  # noqa: E402

VAL_STUDIES = 2  # Trainer needs a validation set; it is preprocessed but never run
RESULT = "RESULT "  # prefix of the child's one JSON line on stdout


def rss_mib() -> float:
    """Resident set size of this process now (MiB)."""
    try:
        pages = int(Path("/proc/self/statm").read_text().split()[1])
        return pages * os.sysconf("SC_PAGE_SIZE") / 2**20
    except (OSError, ValueError, IndexError):
        return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def load() -> str:
    return " / ".join(f"{v:.2f}" for v in os.getloadavg())


# ------------------------------------------------------------------------------------------- one network (child)


def child(args: argparse.Namespace) -> dict[str, Any]:
    """Train ``args.child`` for warm-up + timed epochs in this process; returns its measurements."""
    from stran.engine.dataset import find_studies
    from stran.engine.trainer import TrainConfig, Trainer
    from stran.memory import keep_freed_memory

    keep_freed_memory()  # as `stran train` (stran.cli) and the app do

    device = torch.device(args.device)
    if device.type == "cuda":
        torch.zeros(1, device=device)  # the CUDA context belongs to the baseline, not to training
    base = rss_mib()

    def sync() -> None:
        if device.type == "cuda":
            torch.cuda.synchronize(device)

    class TimedTrainer(Trainer):
        epoch_s: list[float]
        params = steps = 0
        last_loss = float("nan")

        def _train_epoch(self, model, optimizer, loss_fn, loader, epoch, progress, callback) -> float:
            self.params, self.steps = sum(p.numel() for p in model.parameters()), len(loader)
            sync()
            t0 = time.perf_counter()
            loss = super()._train_epoch(model, optimizer, loss_fn, loader, epoch, progress, callback)
            sync()
            self.epoch_s.append(time.perf_counter() - t0)
            self.last_loss = loss
            return loss

        def _validate(self, model, loss_fn, loader) -> tuple[float, np.ndarray, np.ndarray, float]:
            return 0.0, np.array([0.5]), np.array([1]), float("nan")  # no work: validation is not timed

    records = find_studies(args.cohort, require_labels=True)
    epochs = args.warmup + args.epochs
    config = TrainConfig(model=args.child, model_config={}, epochs=epochs, batch_size=args.batch_size,
                         patience=epochs, refit_reader=False, num_threads=args.threads, seed=args.seed)
    with tempfile.TemporaryDirectory(prefix="stran-bench-training-run-") as out:
        trainer = TimedTrainer(config, records[:-VAL_STUDIES], records[-VAL_STUDIES:], out, cache_dir=args.cache,
                               device=args.device)
        trainer.epoch_s = []
        trainer.fit(progress=False)
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    return {
        "network": args.child, "params": trainer.params, "batch": args.batch_size, "steps": trainer.steps,
        "studies": len(records) - VAL_STUDIES, "epoch_s": trainer.epoch_s[args.warmup:],
        "warmup_s": trainer.epoch_s[: args.warmup], "loss": trainer.last_loss, "threads": torch.get_num_threads(),
        "rss_base_mib": base, "rss_peak_mib": peak,
        "cuda_peak_mib": torch.cuda.max_memory_allocated(device) / 2**20 if device.type == "cuda" else None,
    }


# ----------------------------------------------------------------------------------------------- driver (parent)


def prepare(work: Path, studies: int, seed: int) -> tuple[Path, Path]:
    """The phantom cohort and its preprocessing cache (made once, shared by every network)."""
    from stran.engine.dataset import build_dataset, find_studies
    from stran.engine.train_config import TrainConfig
    from stran.phantom import generate_cohort

    cohort, cache = work / "cohort", work / "cache"
    generate_cohort(cohort, studies + VAL_STUDIES, seed, progress=False)
    build_dataset(find_studies(cohort, require_labels=True), TrainConfig().preprocess, cache_dir=cache)
    return cohort, cache


def run_child(name: str, args: argparse.Namespace, cohort: Path, cache: Path) -> dict[str, Any]:
    cmd = [sys.executable, str(Path(__file__).resolve()), "--child", name, "--cohort", str(cohort), "--cache",
           str(cache), "--device", args.device, "--threads", str(args.threads), "--batch-size", str(args.batch_size),
           "--epochs", str(args.epochs), "--warmup", str(args.warmup), "--seed", str(args.seed)]
    t0 = time.perf_counter()
    proc = subprocess.run(cmd, capture_output=True, text=True, env=dict(os.environ))
    lines = [ln for ln in proc.stdout.splitlines() if ln.startswith(RESULT)]
    if proc.returncode or not lines:
        tail = (proc.stderr.strip().splitlines() or ["no output"])[-1]
        return {"network": name, "error": f"exit {proc.returncode}: {tail[:200]}"}
    return {**json.loads(lines[-1][len(RESULT):]), "wall_s": time.perf_counter() - t0}


def table(rows: list[dict[str, Any]], cuda: bool) -> str:
    ref = next((r for r in rows if r["network"] == "stran" and "error" not in r), None)
    rate = {r["network"]: [r["studies"] / s for s in r["epoch_s"]] for r in rows if "error" not in r}
    head = ["network", "parameters", "batch", "studies/s (median)", "min / max", "vs stran", "s / epoch (median)",
            "peak RSS MiB (training, above imports)", "peak RSS MiB (absolute)"] + (["CUDA max allocated MiB"] if cuda else [])
    out = ["| " + " | ".join(head) + " |", "|---|" + "---:|" * (len(head) - 1)]
    for r in rows:
        if "error" in r:
            out.append(f"| {r['network']} | failed: {r['error']} |" + " |" * (len(head) - 2))
            continue
        v = rate[r["network"]]
        ratio = f"{statistics.median(v) / statistics.median(rate['stran']):.2f}x" if ref else "n/a"
        cells = [r["network"], f"{r['params'] / 1e6:.2f} M", str(r["batch"]), f"{statistics.median(v):.2f}",
                 f"{min(v):.2f} / {max(v):.2f}", ratio, f"{statistics.median(r['epoch_s']):.1f}",
                 f"{r['rss_peak_mib'] - r['rss_base_mib']:.0f}", f"{r['rss_peak_mib']:.0f}"]
        if cuda:
            cells.append(f"{r['cuda_peak_mib']:.0f}")
        out.append("| " + " | ".join(cells) + " |")
    return "\n".join(out)


def main() -> None:
    from stran.models import available_models

    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--device", choices=("cpu", "cuda"), default="cpu")
    parser.add_argument("--threads", type=int, default=None,
                        help="torch threads (default 1 on the CPU: the 2 cores are shared; 4 on CUDA)")
    parser.add_argument("--networks", default=",".join(available_models()),
                        help="comma-separated registry names (stran is added for the ratio column)")
    parser.add_argument("--studies", type=int, default=32, help="training studies per epoch (+2 validation)")
    parser.add_argument("--epochs", type=int, default=3, help="timed epochs per network")
    parser.add_argument("--warmup", type=int, default=1, help="epochs run before timing")
    parser.add_argument("--batch-size", type=int, default=4, help="stran train's default")
    parser.add_argument("--seed", type=int, default=7, help="cohort seed")
    parser.add_argument("--out", type=Path, default=None, help="also write the header and table to this file")
    parser.add_argument("--child", help=argparse.SUPPRESS)
    parser.add_argument("--cohort", help=argparse.SUPPRESS)
    parser.add_argument("--cache", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.threads is None:
        args.threads = 1 if args.device == "cpu" else 4
    if args.child:
        torch.set_num_threads(args.threads)
        print(RESULT + json.dumps(child(args)), flush=True)
        return

    names = [n.strip() for n in args.networks.split(",") if n.strip()]
    unknown = [n for n in names if n not in available_models()]
    if unknown:
        parser.error(f"unknown network(s) {', '.join(unknown)}; valid: {', '.join(available_models())}")
    if args.device == "cuda" and not torch.cuda.is_available():
        parser.error("--device cuda: no CUDA device visible to torch")
    if min(args.studies, args.epochs, args.batch_size, args.threads) < 1 or args.warmup < 0:
        parser.error("--studies, --epochs, --batch-size and --threads must be >= 1, --warmup >= 0")
    if "stran" not in names:
        names.append("stran")
    started, load_start = dt.datetime.now(), load()
    gpu = f", {torch.cuda.get_device_name()}" if args.device == "cuda" else ""
    header = (f"Run of {started:%d %b %Y %H:%M}: torch {torch.__version__}, device {args.device}{gpu}, "
              f"{args.threads} thread(s), OMP_WAIT_POLICY={os.environ['OMP_WAIT_POLICY']}, {platform.processor() or platform.machine()} "
              f"({os.cpu_count()} logical CPUs); {args.studies} training studies x batch {args.batch_size}, "
              f"{args.warmup} warm-up + {args.epochs} timed epochs per network; load average {load_start} at the start")
    print(header, flush=True)
    work = Path(tempfile.mkdtemp(prefix="stran-bench-training-"))
    rows = []
    try:
        t0 = time.perf_counter()
        cohort, cache = prepare(work, args.studies, args.seed)
        print(f"cohort and cache: {time.perf_counter() - t0:.0f} s (not timed)", flush=True)
        for name in names:
            rows.append(run_child(name, args, cohort, cache))
            r = rows[-1]
            print(f"{name}: " + (r["error"] if "error" in r else
                  f"epochs {', '.join(f'{s:.1f}' for s in r['epoch_s'])} s (warm-up {', '.join(f'{s:.1f}' for s in r['warmup_s'])}), "
                  f"loss {r['loss']:.3f}, {r['wall_s']:.0f} s in all; load {load()}"), flush=True)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    footer = f"Load average {load()} at the end; {(dt.datetime.now() - started).total_seconds() / 60:.1f} min in all."
    report = f"{header}\n\n{table(rows, args.device == 'cuda')}\n\n{footer}\n"
    print("\n" + report)
    if args.out:
        from stran.atomic import atomic_write_text

        atomic_write_text(args.out, report)


if __name__ == "__main__":
    main()

"""Cohort throughput of ``stran detect`` (docs/cli.md, "Cohorts"): studies/min loading in this process (sequential)
against loading in 1 or 2 worker processes, with the CLI's default 8 MC-dropout samples and with 0, and the memory
(RSS) of a long run.

    OMP_WAIT_POLICY=PASSIVE python training/bench_cohort.py                # the tables of docs/cli.md
    python training/bench_cohort.py --repeats 1 --n-mc8 6 --n-mc0 12 --long 0   # a quick look

Each measurement is a fresh ``stran detect COHORT --out TMP --no-progress`` process over a temporary cohort folder of
hard links to the sample studies (``sample_data/studies/images``, made by ``python -m sample_data`` when missing),
each under its own id, so that a cohort of any size costs no disk. The rate is the one the command's final line
reports (studies detected / wall time of the run, worker start-up included, interpreter start-up and imports not);
the process's whole wall time is shown beside it. Rounds alternate the configurations (round 1: all of them, then
round 2, ...) so that a change in the machine's load hits them alike; the median over the rounds is shown, and the
ratio against the sequential run of the same MC setting.

Threads, chosen deliberately for 2 cores and set explicitly (``--threads``): sequential = 2 inference threads (all
cores: the network scales to both); 1 worker = 1 inference thread + the worker's 1 thread (no core shared), or 2
inference threads + the worker (the network keeps both cores and the worker takes what is left: at equal priority,
and with the worker reniced to 19 by ``STRAN_WORKER_NICE``, so that it only runs on a core the network leaves idle);
2 workers = 1 inference thread + 2 workers of 1 thread. ``OMP_WAIT_POLICY=PASSIVE`` is set for every run (threads
that wait sleep instead of spinning: on a shared 2-core machine spinning threads steal the other process's core).

The long run (``--long N``, default 1000 studies, MC 0, ``--workers 1 --threads 1``: the worker path) samples the
RSS of the main process and of its worker every half second and prints it after the first study, after 100, 500
and at the end.
"""

from __future__ import annotations

import argparse
import datetime as dt
import os
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
SAMPLES = REPO / "sample_data" / "studies" / "images"
SUMMARY = re.compile(r"(?P<total>\d+) studies: (?P<done>\d+) detected, .* in \S+: (?P<rate>[\d.]+) studies/min")
STAGES = re.compile(r"(load|preprocess|network|outputs|waiting for the workers) (\d+) ms")

CONFIGS = {  # label -> (workers, inference threads, STRAN_WORKER_NICE)
    "sequential: 0 workers, 2 threads (the default on 2 cores)": (0, 2, 0),
    "--workers 1 --threads 1": (1, 1, 0),
    "--workers 1 --threads 2": (1, 2, 0),
    "--workers 1 --threads 2, STRAN_WORKER_NICE=19": (1, 2, 19),
    "--workers 2 --threads 1": (2, 1, 0),
}


def sources(folder: Path) -> list[Path]:
    if not any(folder.glob("*.nii.gz")):
        subprocess.run([sys.executable, "-m", "sample_data", "--quiet"], cwd=REPO, check=True)
    found = sorted(folder.glob("*.nii.gz"))
    if not found:
        sys.exit(f"no .nii.gz studies in {folder}")
    return found


def make_cohort(studies: list[Path], n: int, dest: Path) -> Path:
    """``n`` studies as hard links (NIfTI + sidecar) under ids C00000-<source id>, cycling through ``studies``."""
    dest.mkdir(parents=True)
    for i in range(n):
        src = studies[i % len(studies)]
        stem = src.name.removesuffix(".nii.gz")
        for suffix in (".nii.gz", ".cine.json"):
            if (src.parent / f"{stem}{suffix}").exists():
                os.link(src.parent / f"{stem}{suffix}", dest / f"C{i:05d}-{stem}{suffix}")
    return dest


def env(nice: int = 0) -> dict[str, str]:
    e = {k: v for k, v in os.environ.items() if k not in ("OMP_NUM_THREADS", "RANK", "WORLD_SIZE")}
    e["OMP_WAIT_POLICY"] = "PASSIVE"
    e["STRAN_WORKER_NICE"] = str(nice)
    return e


def detect(cohort: Path, mc: int, workers: int, threads: int, nice: int = 0) -> dict[str, float]:
    with tempfile.TemporaryDirectory(prefix="bench-cohort-out-") as out:
        t0 = time.perf_counter()
        done = subprocess.run(
            [sys.executable, "-m", "stran.cli", "detect", str(cohort), "--out", out, "--mc-samples", str(mc),
             "--workers", str(workers), "--threads", str(threads), "--no-progress"],
            cwd=REPO, env=env(nice), stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
        wall = time.perf_counter() - t0
    line = next((ln for ln in done.stderr.splitlines() if SUMMARY.search(ln)), "")
    match = SUMMARY.search(line)
    if done.returncode != 0 or match is None:
        sys.exit(f"stran detect failed ({done.returncode}):\n{done.stderr}")
    row = {"rate": float(match["rate"]), "wall": wall, "studies": int(match["done"])}
    row.update({name: float(ms) for name, ms in STAGES.findall(line)})
    return row


def throughput(studies: list[Path], args: argparse.Namespace, work: Path) -> None:
    print("| MC samples | configuration | studies | studies/min (median) | min - max | x sequential | "
          "process wall s | per study, ms: load / preprocess / network / outputs / waiting |")
    print("|---:|---|---:|---:|---|---:|---:|---|")
    for mc, n in ((8, args.n_mc8), (0, args.n_mc0)):
        if n <= 0:
            continue
        cohort = make_cohort(studies, n, work / f"cohort-mc{mc}")
        rows: dict[str, list[dict[str, float]]] = {label: [] for label in CONFIGS}
        for _ in range(args.repeats):
            for label, (workers, threads, nice) in CONFIGS.items():
                rows[label].append(detect(cohort, mc, workers, threads, nice))
        base = statistics.median(r["rate"] for r in rows[next(iter(CONFIGS))])
        for label, runs in rows.items():
            rates = [r["rate"] for r in runs]
            med = statistics.median(rates)
            stages = " / ".join(f"{statistics.median(r.get(k, 0.0) for r in runs):.0f}" for k in
                                ("load", "preprocess", "network", "outputs", "waiting for the workers"))
            print(f"| {mc} | {label} | {n} | {med:.1f} | {min(rates):.1f} - {max(rates):.1f} | {med / base:.2f} | "
                  f"{statistics.median(r['wall'] for r in runs):.1f} | {stages} |", flush=True)


def long_run(studies: list[Path], n: int, work: Path) -> None:
    import psutil

    cohort = make_cohort(studies, n, work / "cohort-long")
    out = work / "out-long"
    t0 = time.perf_counter()
    proc = subprocess.Popen([sys.executable, "-m", "stran.cli", "detect", str(cohort), "--out", str(out),
                             "--mc-samples", "0", "--workers", "1", "--threads", "1", "--no-progress"],
                            cwd=REPO, env=env(), stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    main = psutil.Process(proc.pid)
    marks: dict[int, tuple[int, int, int] | None] = {1: None, 100: None, 500: None}
    last = None
    while proc.poll() is None:
        try:
            rss = main.memory_info().rss
            workers = sum(c.memory_info().rss for c in main.children(recursive=True))
        except psutil.Error:
            break
        done = sum(1 for e in os.scandir(out) if e.name.endswith(".json")) if out.exists() else 0
        last = (done, rss, workers)
        for mark in marks:
            if marks[mark] is None and done >= mark:
                marks[mark] = last
        time.sleep(0.5)
    err = proc.communicate()[1]
    wall = time.perf_counter() - t0
    summary = next((ln for ln in err.splitlines() if SUMMARY.search(ln)), err.strip()[-500:])
    print(f"\nlong run: {n} studies (hard links to {len(studies)} sample studies), MC 0, --workers 1 --threads 1: "
          f"{summary}")
    print(f"process wall {wall:.0f} s\n")
    print("| studies done | main process RSS MB | workers RSS MB (sum) |")
    print("|---:|---:|---:|")
    for mark, sample in [*marks.items(), ("end", last)]:
        if sample is not None:
            print(f"| {sample[0]} (mark {mark}) | {sample[1] / 2**20:.0f} | {sample[2] / 2**20:.0f} |")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--studies", type=Path, default=SAMPLES, help="folder of .nii.gz studies to cycle through")
    parser.add_argument("--n-mc8", type=int, default=12, help="studies per run with 8 MC samples (0: skip)")
    parser.add_argument("--n-mc0", type=int, default=40, help="studies per run with MC off (0: skip)")
    parser.add_argument("--repeats", type=int, default=3, help="rounds (each runs every configuration once)")
    parser.add_argument("--long", type=int, default=1000, help="studies of the RSS run (0: skip)")
    args = parser.parse_args()
    studies = sources(args.studies)
    print(f"# bench_cohort {dt.datetime.now().isoformat(timespec='minutes')}, {os.cpu_count()} CPUs, load average "
          f"{' '.join(f'{v:.2f}' for v in os.getloadavg())} at the start, OMP_WAIT_POLICY=PASSIVE\n", flush=True)
    work = Path(tempfile.mkdtemp(prefix="bench-cohort-"))
    try:
        throughput(studies, args, work)
        if args.long > 0:
            long_run(studies, args.long, work)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    print(f"\nload average {' '.join(f'{v:.2f}' for v in os.getloadavg())} at the end")


if __name__ == "__main__":
    main()

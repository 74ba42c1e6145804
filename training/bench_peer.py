"""Ours against the authors' TensorFlow ST-RAN: same inputs, same thread count, alternating rounds, ratios.

    make bench-peer                                   # builds .venv-peer (TensorFlow CPU), then 1 and 2 threads
    python training/bench_peer.py --threads 1         # in .venv, once .venv-peer exists
    python training/bench_peer.py --threads 2 --rounds 20 --profile --out peer.md

The authors' networks (ST-RAN residual attention v1 and their spatiotemporal network, rebuilt in Keras from their
layer list by ``training/peer_tf.py``) run in a subprocess under ``.venv-peer``'s Python, kept alive for the whole
run; ours (``stran_paper_layout`` and ``stran`` as shipped, default config, eval mode, ``torch.no_grad``) run in this
process. Both sides use the same intra-op (and inter-op) thread count and ``OMP_WAIT_POLICY=PASSIVE``, and the same
input values: numpy ``default_rng(seed).random((B, 1, 10, 20, 64, 64), float32)``, generated on each side and checked
equal, in each framework's layout (ours (B, 1, S, T, H, W), theirs (B, T, H, W, S)). Each round runs the authors' two
networks once (one request to the subprocess, timed inside it), then ours once each; after the warm-up, the table
shows the median and minimum of the rounds in ms per study, and the ratio to the authors' ST-RAN twice: of the
medians, and the median of the per-round ratios (each network against the authors' ST-RAN of the same round, which
follows load that changes during the run). The targets are read on the ratio of the medians.
It also checks that our two networks still give today's outputs (``tests/data/models_reference.npz``, see
``training/make_models_reference.py``).

Targets (issue 14): paper layout <= 0.7x the authors' ST-RAN at batch 1; the true 4-D ST-RAN <= 1.0x.
On a shared machine read the ratios, not the milliseconds: the load average is printed at the start and the end.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")  # before torch starts its OpenMP runtime

ROOT = Path(__file__).resolve().parents[1]
for p in (ROOT, ROOT / "training"):
    if str(p) not in sys.path:
        sys.path.insert(0, str(p))

import numpy as np  # noqa: E402
import torch  # noqa: E402

from stran.models import build_model  # noqa: E402

PEER_SCRIPT = ROOT / "training" / "peer_tf.py"
DEFAULT_PEER_PYTHON = ROOT / ".venv-peer" / "bin" / "python"
THEIRS = {"stran_v1": "authors' ST-RAN (residual attention v1), TF", "spatiotemporal": "authors' spatiotemporal, TF"}
OURS = {
    "stran_paper_layout": "ours, paper layout (stran_paper_layout)",
    "stran": "ours, true 4-D ST-RAN (stran, as shipped: map head)",
    "stran_trunk": "ours, 4-D ST-RAN without the map head (stran map_head='none'; diagnostic, not a target)",
}
CONFIGS = {"stran_paper_layout": ("stran_paper_layout", {}), "stran": ("stran", {}),
           "stran_trunk": ("stran", {"map_head": "none"})}
TARGETS = {"stran_paper_layout": 0.7, "stran": 1.0}  # ours / authors' ST-RAN at batch 1


def make_input(batch: int, seed: int) -> np.ndarray:
    """(B, 1, S, T, H, W), the same values peer_tf.make_input gives."""
    return np.random.default_rng(seed).random((batch, 1, 10, 20, 64, 64), dtype=np.float32)


class Peer:
    """training/peer_tf.py under .venv-peer's Python, one JSON request per line."""

    def __init__(self, python: Path, threads: int, mode: str):
        if not Path(python).exists():
            raise SystemExit(f"{python} not found: run 'make setup-peer' (TensorFlow CPU in .venv-peer) first")
        env = dict(os.environ, OMP_WAIT_POLICY="PASSIVE", OMP_NUM_THREADS=str(threads), TF_CPP_MIN_LOG_LEVEL="2")
        env.pop("PYTHONPATH", None)
        self.log = tempfile.NamedTemporaryFile("w+", prefix="peer_tf-", suffix=".log", delete=False)
        self.proc = subprocess.Popen(
            [str(python), str(PEER_SCRIPT), "--threads", str(threads), "--mode", mode],
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=self.log, text=True, env=env, cwd=ROOT,
        )
        self._read()  # {"ready": true}

    def _read(self) -> dict:
        line = self.proc.stdout.readline()
        if not line:
            self.log.seek(0)
            tail = self.log.read()[-2000:]
            raise SystemExit(f"peer_tf.py ended without answering (its log {self.log.name}):\n{tail}")
        reply = json.loads(line)
        if not reply.get("ok"):
            raise SystemExit(f"peer_tf.py: {reply.get('error')}")
        return reply

    def ask(self, **req) -> dict:
        self.proc.stdin.write(json.dumps(req) + "\n")
        self.proc.stdin.flush()
        return self._read()

    def close(self) -> None:
        try:
            self.proc.stdin.write('{"cmd": "quit"}\n')
            self.proc.stdin.flush()
            self.proc.wait(timeout=30)
        except (OSError, subprocess.TimeoutExpired):
            self.proc.kill()
        self.log.close()
        os.unlink(self.log.name)


def build_ours() -> dict[str, torch.nn.Module]:
    models = {}
    for key, (name, config) in CONFIGS.items():
        torch.manual_seed(0)
        models[key] = build_model(name, **config).eval()
    return models


def time_ours(model: torch.nn.Module, x: torch.Tensor) -> float:
    with torch.no_grad():
        t0 = time.perf_counter()
        model(x)
        return (time.perf_counter() - t0) * 1e3


def bench_batch(peer: Peer, ours: dict, batch: int, seed: int, rounds: int, warmup: int) -> dict[str, list[float]]:
    """{network: per-round ms per call}, alternating a TF round and one of ours."""
    x_np = make_input(batch, seed)
    got = peer.ask(cmd="build", batch=batch, seed=seed)
    ref_sum = float(x_np.astype(np.float64).sum())
    if abs(got["input_sum"] - ref_sum) > 1e-6 * abs(ref_sum) or not np.allclose(
        got["input_head"], x_np.reshape(-1)[:4], rtol=0, atol=0
    ):
        raise SystemExit(f"the two sides generated different inputs (sum {got['input_sum']} vs {ref_sum})")
    x = torch.from_numpy(x_np)
    times: dict[str, list[float]] = {k: [] for k in (*THEIRS, *OURS)}
    for r in range(warmup + rounds):
        tf_times = peer.ask(cmd="run", n=1)["times_ms"]
        ours_times = {name: time_ours(m, x) for name, m in ours.items()}
        if r >= warmup:
            for k, v in tf_times.items():
                times[k].extend(v)
            for k, v in ours_times.items():
                times[k].append(v)
    return times


def profile_ours(model: torch.nn.Module, runs: int, top: int = 12) -> str:
    """torch.profiler's top operators (self CPU time) of ``model`` at batch 1, as a markdown table."""
    x = torch.from_numpy(make_input(1, 0))
    with torch.no_grad():
        model(x)
        with torch.profiler.profile(activities=[torch.profiler.ProfilerActivity.CPU]) as prof:
            for _ in range(runs):
                model(x)
    events = [e for e in prof.key_averages() if e.key.startswith("aten::")]
    total = sum(e.self_cpu_time_total for e in events)
    events.sort(key=lambda e: e.self_cpu_time_total, reverse=True)
    rows = [
        f"| operator (self CPU time, {runs} forwards, batch 1) | calls per forward | ms per forward | share |",
        "|---|---:|---:|---:|",
    ]
    for e in events[:top]:
        rows.append(
            f"| {e.key} | {e.count / runs:.0f} | {e.self_cpu_time_total / 1e3 / runs:.1f} "
            f"| {100 * e.self_cpu_time_total / total:.0f} % |"
        )
    calls = sum(e.count for e in events) / runs
    rows.append(f"| all aten operators | {calls:.0f} | {total / 1e3 / runs:.1f} | 100 % |")
    return "\n".join(rows)


def module_times(model: torch.nn.Module, runs: int) -> str:
    """Where one batch-1 forward of ``model`` goes by top-level part (forward hooks, median of ``runs``), as markdown."""
    parts: dict[str, torch.nn.Module] = {}
    for name, child in model.named_children():
        if isinstance(child, torch.nn.ModuleList):
            parts.update({f"{name}[{i}]": c for i, c in enumerate(child)})
        else:
            parts[name] = child
    spans: dict[str, list[float]] = {k: [] for k in parts}
    start: dict[str, float] = {}
    handles = []
    for name, mod in parts.items():
        handles.append(mod.register_forward_pre_hook(lambda _m, _i, n=name: start.__setitem__(n, time.perf_counter())))
        handles.append(mod.register_forward_hook(
            lambda _m, _i, _o, n=name: spans[n].append((time.perf_counter() - start[n]) * 1e3)))
    x = torch.from_numpy(make_input(1, 0))
    totals = []
    try:
        for _ in range(runs + 1):
            totals.append(time_ours(model, x))
    finally:
        for h in handles:
            h.remove()
    total = statistics.median(totals[1:])
    rows = [f"| part of {model.model_name} (batch 1, median of {runs}) | ms | share |", "|---|---:|---:|"]
    inside = 0.0
    for name, v in spans.items():
        ms = statistics.median(v[1:]) if len(v) > 1 else float("nan")
        inside += ms
        rows.append(f"| {name} ({type(parts[name]).__name__}) | {ms:.1f} | {100 * ms / total:.0f} % |")
    rows.append(f"| rest of forward (between the parts) | {total - inside:.1f} | {100 * (total - inside) / total:.0f} % |")
    rows.append(f"| whole forward | {total:.1f} | 100 % |")
    return "\n".join(rows)


def load() -> str:
    return " / ".join(f"{v:.2f}" for v in os.getloadavg())


def cpu_name() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def check_outputs() -> str:
    from make_models_reference import REFERENCE, compare, load_reference, outputs

    if not REFERENCE.exists():
        return f"no reference ({REFERENCE.relative_to(ROOT)}): not checked"
    problems = compare(outputs(), load_reference())
    if problems:
        return f"**DIFFERENT** from {REFERENCE.relative_to(ROOT)}: " + "; ".join(problems[:5])
    return f"same as {REFERENCE.relative_to(ROOT)} (atol 1e-5: stran_paper_layout and stran, seeded weights and input)"


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--threads", type=int, default=1, help="intra-op (and inter-op) threads on both sides")
    ap.add_argument("--batches", default="1,8")
    ap.add_argument("--rounds", type=int, default=15, help="timed rounds per batch (median reported)")
    ap.add_argument("--warmup", type=int, default=3)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--peer-python", type=Path, default=DEFAULT_PEER_PYTHON)
    ap.add_argument("--peer-mode", choices=("function", "predict", "xla"), default="function",
                    help="how TensorFlow runs the model (peer_tf.py); tf.function is its fastest here")
    ap.add_argument("--profile", action="store_true", help="also print the top operators of ours at batch 1")
    ap.add_argument("--out", type=Path, help="also write the report (markdown) here")
    ap.add_argument("--malloc-default", action="store_true",
                    help="ours with glibc's default allocation (stran.memory is what the command line and the app use)")
    args = ap.parse_args(argv)
    batches = [int(b) for b in args.batches.split(",") if b.strip()]

    torch.set_num_threads(args.threads)
    if not args.malloc_default:
        from stran.memory import keep_freed_memory

        keep_freed_memory()
    torch.set_num_interop_threads(args.threads)
    report: list[str] = []

    def emit(*lines: str) -> None:
        text = "\n".join(lines)
        report.append(text)
        print(text, flush=True)

    load_start = load()
    peer = Peer(args.peer_python, args.threads, args.peer_mode)
    try:
        info = peer.ask(cmd="info")
        ours = build_ours()
        v = info["versions"]
        emit(
            f"Threads {args.threads} on both sides (OMP_WAIT_POLICY={os.environ.get('OMP_WAIT_POLICY')}); "
            f"{cpu_name()}, {os.cpu_count()} logical CPUs; load average {load_start} (1/5/15 min) at the start.",
            f"Ours: torch {torch.__version__}, numpy {np.__version__}, Python {platform.python_version()}. "
            f"Theirs: TensorFlow {v['tensorflow']} (CPU), tf_keras {v['tf_keras']}, numpy {v['numpy']}, "
            f"mode {info['mode']} (graph); parameters {info['params']['stran_v1']:,} (ST-RAN v1) and "
            f"{info['params']['spatiotemporal']:,} (spatiotemporal).",
            f"{args.rounds} alternating rounds after {args.warmup} warm-up per batch; input seed {args.seed}.",
            "",
        )
        results = {b: bench_batch(peer, ours, b, args.seed, args.rounds, args.warmup) for b in batches}
    finally:
        peer.close()

    head = "| network |" + "".join(
        f" batch {b}: ms per study (median / min) | / authors' ST-RAN (medians; rounds) |" for b in batches
    )
    rows = [head, "|---|" + "---:|---:|" * len(batches)]
    med = {b: {k: statistics.median(v) / b for k, v in t.items()} for b, t in results.items()}
    for k, label in {**THEIRS, **OURS}.items():
        cells = ""
        for b in batches:
            ratio = med[b][k] / med[b]["stran_v1"]
            paired = statistics.median(o / t for o, t in zip(results[b][k], results[b]["stran_v1"], strict=True))
            cells += f" {med[b][k]:.1f} / {min(results[b][k]) / b:.1f} | {ratio:.2f}x; {paired:.2f}x |"
        rows.append(f"| {label} |{cells}")
    emit(*rows, "")
    if 1 in med:
        for name, target in TARGETS.items():
            ratio = med[1][name] / med[1]["stran_v1"]
            verdict = "met" if ratio <= target else "NOT met"
            emit(f"- target {name} <= {target}x the authors' ST-RAN at batch 1: {ratio:.2f}x, {verdict}")
    emit(f"- outputs: {check_outputs()}")
    if args.profile:
        emit("", module_times(ours["stran"], runs=5), "", profile_ours(ours["stran"], runs=5))
    emit(f"Load average at the end: {load()}")
    if args.out:
        args.out.write_text("\n".join(report) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())

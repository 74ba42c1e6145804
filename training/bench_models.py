"""Benchmark the model zoo on this CPU and print markdown tables.

    python training/bench_models.py                      # every network, default input, 2 threads
    python training/bench_models.py --models stran,cnn3d --runs 20
    python training/bench_models.py --tables zoo,layer,design,ops --out bench.md

Tables
------
zoo     per network at the default input (1, 1, 10, 20, 64, 64): parameters, FLOPs per study (multiply-adds x 2,
        counted by torch.utils.flop_counter.FlopCounterMode: convolutions and matrix products, not element-wise
        ops), forward latency (eval, no_grad) and forward+backward time (train mode, BCE on study and slice
        logits), median and minimum of --runs runs after --warmup, batch 1; achieved GFLOP/s (FLOPs / median
        forward); peak tensor memory of one inference pass and one training step (activations, saved tensors,
        gradients, outputs), from the torch profiler's allocation events (tracemalloc does not see torch's
        allocations and process RSS mostly shows allocator caches).
layer   the factorized 4D layer vs the explicit full 4D convolution it replaces (same shapes, equivalent kernel),
        forward time ratio, and the numerical difference.
design  ST-RAN design alternatives (layout, width, block and temporal-kernel choices), forward and
        forward+backward.
ops     single-operator layout measurements behind those choices.
profile ST-RAN's forward time by operator category (torch profiler).

Timings are interleaved (each round runs every candidate once) so that load from other processes spreads over all
of them; on a shared machine compare ratios within one run, and read the minimum as the unloaded figure.
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

import torch  # noqa: E402
import torch.nn.functional as F  # noqa: E402
from torch.utils.flop_counter import FlopCounterMode  # noqa: E402

from stran.models import available_models, build_model  # noqa: E402
from stran.models.common import to_canonical  # noqa: E402
from stran.models.factorized import FactorizedConv4d, full_conv4d  # noqa: E402

# ------------------------------------------------------------------------------------------------------ helpers


def interleaved(fns: dict[str, Callable[[], object]], runs: int, warmup: int) -> dict[str, tuple[float, float]]:
    """{name: (median ms, min ms)} over ``runs`` rounds; every round runs every function once."""
    for f in fns.values():
        for _ in range(warmup):
            f()
    times: dict[str, list[float]] = {k: [] for k in fns}
    for _ in range(runs):
        for k, f in fns.items():
            t0 = time.perf_counter()
            f()
            times[k].append((time.perf_counter() - t0) * 1e3)
    return {k: (statistics.median(v), min(v)) for k, v in times.items()}


def count_flops(model: torch.nn.Module, x: torch.Tensor) -> int:
    model.eval()
    counter = FlopCounterMode(display=False)
    with counter, torch.no_grad():
        model(x)
    return int(counter.get_total_flops())


def make_input(shape: tuple[int, ...], seed: int = 0) -> torch.Tensor:
    return torch.rand(*shape, generator=torch.Generator().manual_seed(seed))


def build(name: str, shape: tuple[int, ...], **config) -> torch.nn.Module:
    if name == "stran_paper_layout":
        config.setdefault("n_slices", shape[2])
    torch.manual_seed(0)
    return build_model(name, **config)


def forward_fn(model: torch.nn.Module, x: torch.Tensor) -> Callable[[], object]:
    def run() -> object:
        model.eval()
        with torch.no_grad():
            return model(x)

    return run


def train_step_fn(model: torch.nn.Module, x: torch.Tensor) -> Callable[[], object]:
    y_study = torch.ones(x.shape[0])
    y_slices = torch.ones(x.shape[0], x.shape[2])

    def run() -> object:
        model.train()
        model.zero_grad(set_to_none=True)
        out = model(x)
        loss = F.binary_cross_entropy_with_logits(out["study_logit"], y_study) + F.binary_cross_entropy_with_logits(
            out["slice_logits"], y_slices
        )
        if "maps" in out:  # a map head learns from its pixel loss (its decisions pass no gradient into the maps)
            loss = loss + F.binary_cross_entropy_with_logits(out["maps"], torch.zeros_like(out["maps"]))
        loss.backward()
        return loss

    return run


def fmt_count(n: float) -> str:
    return f"{n / 1e6:.2f} M" if n >= 1e5 else f"{n / 1e3:.1f} k"


def machine_line(threads: int) -> str:
    load = os.getloadavg() if hasattr(os, "getloadavg") else (float("nan"),) * 3
    cpu = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return (
        f"torch {torch.__version__}, {threads} threads, {cpu}, {os.cpu_count()} logical CPUs, "
        f"load average {load[0]:.2f} / {load[1]:.2f} / {load[2]:.2f} (1/5/15 min)"
    )


# ------------------------------------------------------------------------------------------------------- memory


def peak_tensor_memory(fn: Callable[[], object]) -> float:
    """Peak of live tensor memory (MiB) allocated while ``fn`` runs, from the torch profiler's allocation events.

    Counts what the pass allocates (activations, saved tensors, gradients, temporaries, outputs), not the weights or
    the input that existed before, nor the allocator's or libraries' caches (process RSS would mostly show those).
    """
    with torch.profiler.profile(activities=[torch.profiler.ProfilerActivity.CPU], profile_memory=True) as prof:
        fn()
    events = sorted((e.start_ns(), e.nbytes()) for e in prof.profiler.kineto_results.events() if e.name() == "[memory]")
    current = peak = 0
    for _, nbytes in events:
        current += nbytes
        peak = max(peak, current)
    return peak / 2**20


# ------------------------------------------------------------------------------------------------------- tables


def zoo_table(models: list[str], shape: tuple[int, ...], runs: int, warmup: int, memory: bool) -> str:
    x = make_input(shape)
    built = {n: build(n, shape) for n in models}
    flops = {n: count_flops(m, x) / shape[0] for n, m in built.items()}
    params = {n: sum(p.numel() for p in m.parameters()) for n, m in built.items()}
    fns: dict[str, Callable[[], object]] = {}
    for n, m in built.items():
        fns[n + "|fwd"] = forward_fn(m, x)
        fns[n + "|train"] = train_step_fn(m, x)
    t = interleaved(fns, runs, warmup)
    mem = {}
    if memory:
        for n, m in built.items():
            fwd, step = forward_fn(m, x), train_step_fn(m, x)
            mem[n] = {"inference": peak_tensor_memory(fwd), "training": peak_tensor_memory(step)}
    per = f" per study (batch {shape[0]})" if shape[0] > 1 else ""
    rows = [
        f"| network | parameters | GFLOP / study | forward ms{per} (median / min) | forward+backward ms{per} (median / min) "
        "| GFLOP/s (median fwd) | peak tensor memory MiB (inference / training) |",
        "|---|---:|---:|---:|---:|---:|---:|",
    ]
    for n in models:
        fm, fmin = (v / shape[0] for v in t[n + "|fwd"])
        bm, bmin = (v / shape[0] for v in t[n + "|train"])
        mm = mem.get(n)
        mtxt = f"{mm['inference']:.0f} / {mm['training']:.0f}" if mm else "n/a"
        rows.append(
            f"| {n} | {fmt_count(params[n])} | {flops[n] / 1e9:.2f} | {fm:.0f} / {fmin:.0f} | {bm:.0f} / {bmin:.0f} "
            f"| {flops[n] / 1e9 / (fm / 1e3):.0f} | {mtxt} |"
        )
    return "\n".join(rows)


LAYER_CASES = [
    # (label, cin, cout, slices, phases, h, w)
    ("stem / stage 1: 16 -> 16 ch, 16 x 16 px", 16, 16, 10, 20, 16, 16),
    ("stage 2: 32 -> 32 ch, 8 x 8 px", 32, 32, 10, 20, 8, 8),
    ("stage 4: 128 -> 128 ch, 2 x 2 px", 128, 128, 10, 20, 2, 2),
    ("64 px, no stem downsampling: 16 -> 16 ch, 64 x 64 px", 16, 16, 10, 20, 64, 64),
]


def layer_table(runs: int, warmup: int, spatial_kernel: int = 3, temporal_kernel: int = 11) -> str:
    rows = [
        f"| shape (batch 1, {spatial_kernel}x{spatial_kernel}x{spatial_kernel} over (S, H, W), {temporal_kernel} over T) "
        "| factorized depthwise ms | factorized full ms | explicit 4D conv ms | 4D / factorized (depthwise, full) "
        "| GMAC 4D / factorized depthwise | max abs diff |",
        "|---|---:|---:|---:|---:|---:|---:|",
    ]
    for label, cin, cout, s, t, h, w in LAYER_CASES:
        torch.manual_seed(0)
        x = make_input((1, cin, s, t, h, w))
        xc = to_canonical(x)
        dw = FactorizedConv4d(cin, cout, spatial_kernel, temporal_kernel, "depthwise").eval()
        fu = FactorizedConv4d(cin, cout, spatial_kernel, temporal_kernel, "full").eval()
        k_dw = dw.full_kernel()
        with torch.no_grad():
            diff = (dw(xc) - full_conv4d(x, k_dw)).abs().max().item()

        def run(f: Callable[[], object]) -> Callable[[], object]:
            def g() -> object:
                with torch.no_grad():
                    return f()

            return g

        r = max(3, runs // 2) if h >= 64 else runs
        res = interleaved(
            {
                "dw": run(lambda dw=dw, xc=xc: dw(xc)),
                "full": run(lambda fu=fu, xc=xc: fu(xc)),
                "4d": run(lambda x=x, k=k_dw: full_conv4d(x, k)),
            },
            r,
            warmup,
        )
        vox = s * t * h * w
        mac_4d = vox * cin * cout * spatial_kernel**3 * temporal_kernel
        mac_dw = vox * (cin * cout * spatial_kernel**3 + cout * temporal_kernel)
        rows.append(
            f"| {label} | {res['dw'][0]:.1f} | {res['full'][0]:.1f} | {res['4d'][0]:.1f} "
            f"| {res['4d'][0] / res['dw'][0]:.1f}x, {res['4d'][0] / res['full'][0]:.1f}x | {mac_4d / 1e9:.2f} / {mac_dw / 1e9:.3f} "
            f"| {diff:.1e} |"
        )
    return "\n".join(rows)


DESIGN_CASES: list[tuple[str, str, dict]] = [
    ("ST-RAN default (4d, depthwise temporal, 2 units/block, space-to-depth 4 stem, scar-map head)", "stran", {}),
    ("without the map head (global-feature heads, as before the recipe)", "stran", {"map_head": "none"}),
    ("temporal kernel mixes channels (temporal_mode=full)", "stran", {"temporal_mode": "full"}),
    ("1 unit per block", "stran", {"units_per_block": 1}),
    (
        "stem stride 2, stages at 16/8/4/2 px (downsample 2,2,2,2)",
        "stran",
        {"stem_stride": 2, "downsample": [2, 2, 2, 2]},
    ),
    (
        "stem stride 2, stages at 32/16/8/4 px (the authors' resolutions)",
        "stran",
        {"stem_stride": 2, "downsample": [1, 2, 2, 2]},
    ),
    ("half widths 8/16/32/64", "stran", {"widths": [8, 16, 32, 64]}),
    ("paper layout (slices as channels)", "stran_paper_layout", {}),
    (
        "paper layout at the authors' resolutions (stem stride 2, stages 32/16/8/4 px)",
        "stran_paper_layout",
        {"stem_stride": 2, "downsample": [1, 2, 2, 2]},
    ),
    ("spatiotemporal (no attention)", "spatiotemporal", {}),
]


def design_table(shape: tuple[int, ...], runs: int, warmup: int) -> str:
    x = make_input(shape)
    fns, flops = {}, {}
    for i, (_label, name, cfg) in enumerate(DESIGN_CASES):
        m = build(name, shape, **cfg)
        flops[i] = count_flops(m, x) / shape[0]
        fns[f"{i}|fwd"] = forward_fn(m, x)
        fns[f"{i}|train"] = train_step_fn(m, x)
    t = interleaved(fns, runs, warmup)
    rows = [
        "| variant | GFLOP / study | forward ms (median / min) | forward+backward ms (median / min) |",
        "|---|---:|---:|---:|",
    ]
    for i, (label, _, _) in enumerate(DESIGN_CASES):
        rows.append(
            f"| {label} | {flops[i] / 1e9:.2f} | {t[f'{i}|fwd'][0]:.0f} / {t[f'{i}|fwd'][1]:.0f} "
            f"| {t[f'{i}|train'][0]:.0f} / {t[f'{i}|train'][1]:.0f} |"
        )
    return "\n".join(rows)


def ops_table(runs: int, warmup: int) -> str:
    """Layout alternatives for the two halves of the factorized layer (stage-1 shapes: 16 ch, S=10, T=20, 16x16)."""
    c, s, t, h, w, k = 16, 10, 20, 16, 16, 11
    p = k // 2
    n = s * h * w
    torch.manual_seed(0)
    cases: dict[str, Callable[[], object]] = {}
    ws = torch.randn(c, c, 3, 3, 3)
    x_fold = torch.randn(t, c, s, h, w)
    x_fold_cl = x_fold.contiguous(memory_format=torch.channels_last_3d)
    x_b1 = torch.randn(1, c, t * s, h, w)  # T and S merged into one depth axis, batch 1
    wt_full = torch.randn(c, c, k, 1)
    wt_dw = torch.randn(c, 1, k, 1)
    x_tv = torch.randn(1, t, n, c).permute(0, 3, 1, 2)  # (B, C, T, N) channels-last view
    x_3d = torch.randn(1, c, t, s * h, w)
    x_1d = torch.randn(n, c, t)

    def circ(v: torch.Tensor, dim: int) -> torch.Tensor:
        return torch.cat([v.narrow(dim, v.shape[dim] - p, p), v, v.narrow(dim, 0, p)], dim)

    cases["spatial 3x3x3, phases folded in batch, channels_last_3d"] = lambda: F.conv3d(x_fold_cl, ws, padding=1)
    cases["spatial 3x3x3, phases folded in batch, contiguous"] = lambda: F.conv3d(x_fold, ws, padding=1)
    cases["spatial 3x3x3, batch 1, (T*S) as depth, contiguous"] = lambda: F.conv3d(x_b1, ws, padding=1)
    cases["temporal full k11: (k,1) conv2d on channels-last (B,C,T,S*H*W)"] = lambda: F.conv2d(circ(x_tv, 2), wt_full)
    cases["temporal full k11: (k,1,1) conv3d, contiguous"] = lambda: F.conv3d(circ(x_3d, 2), wt_full[..., None])
    cases["temporal full k11: conv1d, (S,H,W) folded in batch"] = lambda: F.conv1d(
        F.pad(x_1d, (p, p), mode="circular"), wt_full[..., 0]
    )
    cases["temporal depthwise k11: (k,1) conv2d, channels-last"] = lambda: F.conv2d(circ(x_tv, 2), wt_dw, groups=c)

    def nograd(f: Callable[[], object]) -> Callable[[], object]:
        def g() -> object:
            with torch.no_grad():
                return f()

        return g

    res = interleaved({k_: nograd(f) for k_, f in cases.items()}, runs, warmup)
    macs = {
        "spatial": t * n * c * c * 27,
        "temporal full": t * n * c * c * k,
        "temporal depthwise": t * n * c * k,
    }
    rows = [
        "| operator (stage-1 shapes: 16 ch, 10 slices, 20 phases, 16 x 16 px) | ms (median / min) | GFLOP/s (min) |",
        "|---|---:|---:|",
    ]
    for label, (med, mn) in res.items():
        mac = next(v for key, v in macs.items() if label.startswith(key))
        rows.append(f"| {label} | {med:.2f} / {mn:.2f} | {2 * mac / 1e9 / (mn / 1e3):.0f} |")
    return "\n".join(rows)


CATEGORIES = [
    (
        "3D kernels over (S, H, W) (conv3d, phases in the batch)",
        lambda n, d: n == "aten::mkldnn_convolution" and d == 5,
    ),
    ("1D kernels over T ((k, 1) conv2d)", lambda n, d: n == "aten::mkldnn_convolution" and d == 4),
    (
        "matrix products (1x1x1 convs, attention MLPs, heads)",
        lambda n, d: n in ("aten::mm", "aten::addmm", "aten::bmm"),
    ),
    ("batch norm", lambda n, d: "batch_norm" in n),
    (
        "element-wise (ReLU, gates, residual sums, sigmoid)",
        lambda n, d: (
            n
            in (
                "aten::clamp_min",
                "aten::relu",
                "aten::mul",
                "aten::add",
                "aten::sigmoid",
                "aten::div",
                "aten::clamp",
                "aten::add_",
                "aten::mul_",
                "aten::clamp_min_",
                "aten::relu_",
                "aten::sub",
                "aten::rsub",
            )
        ),
    ),
    (
        "data movement (circular padding, layout copies, pooling, upsampling)",
        lambda n, d: (
            n
            in (
                "aten::cat",
                "aten::copy_",
                "aten::avg_pool2d",
                "aten::upsample_bilinear2d",
                "aten::constant_pad_nd",
                "aten::fill_",
                "aten::zero_",
            )
        ),
    ),
    ("reductions (pooled features for gates and heads)", lambda n, d: n in ("aten::mean", "aten::amax", "aten::sum")),
]


def profile_table(name: str, shape: tuple[int, ...], runs: int) -> str:
    """Where the forward time of ``name`` goes: torch profiler self CPU time by operator category, next to the
    unprofiled wall time (the profiler adds its own per-operator cost, so the operator shares are what to read)."""
    x = make_input(shape)
    model = build(name, shape)
    fwd = forward_fn(model, x)
    wall = interleaved({"fwd": fwd}, runs, 3)["fwd"]
    with torch.profiler.profile(activities=[torch.profiler.ProfilerActivity.CPU], record_shapes=True) as prof:
        for _ in range(runs):
            fwd()
    totals: dict[str, float] = {label: 0.0 for label, _ in CATEGORIES}
    totals["other operators"] = 0.0
    n_ops = 0
    for ev in prof.key_averages(group_by_input_shape=True):
        if not ev.key.startswith("aten::"):
            continue
        ms = ev.self_cpu_time_total / 1e3 / runs
        n_ops += ev.count
        dims = len(ev.input_shapes[0]) if ev.input_shapes and ev.input_shapes[0] else 0
        for label, match in CATEGORIES:
            if match(ev.key, dims):
                totals[label] += ms
                break
        else:
            totals["other operators"] += ms
    all_ops = sum(totals.values())
    rows = [
        f"| {name} forward: {wall[0]:.0f} / {wall[1]:.0f} ms (median / min) unprofiled; "
        f"{n_ops // runs} aten operator calls per study | ms (profiled) | share of operator time |",
        "|---|---:|---:|",
    ]
    for label, ms in sorted(totals.items(), key=lambda kv: -kv[1]):
        rows.append(f"| {label} | {ms:.1f} | {100 * ms / all_ops:.0f} % |")
    return "\n".join(rows)


# --------------------------------------------------------------------------------------------------------- main


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--models", default=",".join(available_models()), help="comma-separated registry names")
    ap.add_argument("--input", default="1,1,10,20,64,64", help="B,C,S,T,H,W (default 1,1,10,20,64,64)")
    ap.add_argument("--runs", type=int, default=10, help="timed runs per candidate (default 10)")
    ap.add_argument("--warmup", type=int, default=3)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument(
        "--tables", default="zoo,layer", help="comma-separated: zoo, layer, design, ops, profile (default zoo,layer)"
    )
    ap.add_argument("--no-memory", action="store_true", help="skip the peak-memory measurement")
    ap.add_argument("--out", help="also write the markdown to this file")
    args = ap.parse_args(argv)

    shape = tuple(int(v) for v in args.input.split(","))
    if len(shape) != 6 or shape[1] != 1:
        ap.error("--input must be B,1,S,T,H,W")
    torch.set_num_threads(args.threads)
    models = [m.strip() for m in args.models.split(",") if m.strip()]
    unknown = sorted(set(models) - set(available_models()))
    if unknown:
        ap.error(f"unknown models {unknown}; valid: {', '.join(available_models())}")
    tables = [t.strip() for t in args.tables.split(",") if t.strip()]

    report: list[str] = []

    def emit(*lines: str) -> None:
        text = "\n".join(lines)
        report.append(text)
        print(text, flush=True)

    emit(
        f"Machine: {machine_line(args.threads)}. Input {shape}; {args.runs} timed runs after {args.warmup} warm-up.", ""
    )
    if "zoo" in tables:
        emit("### Networks", "", zoo_table(models, shape, args.runs, args.warmup, not args.no_memory), "")
    if "layer" in tables:
        emit(
            "### Factorized 4D layer vs the explicit 4D convolution it replaces (forward)",
            "",
            layer_table(args.runs, args.warmup),
            "",
        )
    if "design" in tables:
        emit("### ST-RAN design alternatives", "", design_table(shape, args.runs, args.warmup), "")
    if "profile" in tables:
        emit("### Where ST-RAN's forward time goes", "", profile_table("stran", shape, max(args.runs, 5)), "")
    if "ops" in tables:
        emit("### Operator layouts", "", ops_table(max(args.runs, 10), args.warmup), "")
    emit(f"Load average at the end: {' / '.join(f'{v:.2f}' for v in os.getloadavg())}")
    if args.out:
        Path(args.out).write_text("\n".join(report) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())

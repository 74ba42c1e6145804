"""Write tests/data/models_reference.npz: today's outputs of ``stran_paper_layout`` and ``stran`` (as shipped, default
config) on fixed weights and a fixed input, so that speed work on the models is held to the same outputs.

    python training/make_models_reference.py            # refuses to overwrite an existing reference
    python training/make_models_reference.py --force    # only when a change of the outputs is intended

Weights: ``torch.manual_seed(0)`` then ``build_model(name)`` (eval mode); input: ``torch.rand`` of (1, 1, 10, 20, 32, 32)
from a generator seeded 1; one thread, ``torch.no_grad``. Every tensor output is stored: whole when it has at most
4096 values, otherwise as its mean, its mean absolute value and 4096 values at a fixed stride (the per-pixel maps
would be megabytes). ``tests/unit/test_models_reference.py`` and ``training/bench_peer.py`` compare with atol 1e-5.
"""

from __future__ import annotations

import argparse
import subprocess
import sys
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

REFERENCE = ROOT / "tests" / "data" / "models_reference.npz"
MODELS = ("stran_paper_layout", "stran")
SHAPE = (1, 1, 10, 20, 32, 32)
WHOLE = 4096  # outputs up to this many values are stored whole
ATOL = 1e-5


def summarise(name: str, key: str, value: np.ndarray) -> dict[str, np.ndarray]:
    flat = value.reshape(-1)
    base = f"{name}/{key}"
    if flat.size <= WHOLE:
        return {base: value}
    stride = flat.size // WHOLE
    v64 = flat.astype(np.float64)
    return {
        f"{base}@shape": np.asarray(value.shape),
        f"{base}@strided": flat[::stride][:WHOLE],
        f"{base}@mean": np.asarray(v64.mean()),
        f"{base}@absmean": np.asarray(np.abs(v64).mean()),
    }


def outputs() -> dict[str, np.ndarray]:
    """{name/key[@part]: array} of both networks' outputs (the reference's layout)."""
    import torch

    from stran.models import build_model

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        x = torch.rand(*SHAPE, generator=torch.Generator().manual_seed(1))
        out: dict[str, np.ndarray] = {}
        for name in MODELS:
            torch.manual_seed(0)
            model = build_model(name).eval()
            with torch.no_grad():
                result = model(x)
            for key, value in sorted(result.items()):
                if isinstance(value, torch.Tensor):
                    out.update(summarise(name, key, value.detach().cpu().numpy()))
        return out
    finally:
        torch.set_num_threads(threads)


def compare(got: dict[str, np.ndarray], ref: dict[str, np.ndarray], atol: float = ATOL) -> list[str]:
    """Differences beyond ``atol`` (one line each); empty when the outputs are today's."""
    problems = []
    for key in sorted(set(ref) | set(got)):
        if key.startswith("_"):
            continue
        if key not in got or key not in ref:
            problems.append(f"{key}: {'missing now' if key not in got else 'not in the reference'}")
            continue
        a, b = np.asarray(got[key]), np.asarray(ref[key])
        if a.shape != b.shape:
            problems.append(f"{key}: shape {a.shape}, reference {b.shape}")
            continue
        diff = float(np.max(np.abs(a.astype(np.float64) - b.astype(np.float64)))) if a.size else 0.0
        if key.endswith("@shape"):
            if not np.array_equal(a, b):
                problems.append(f"{key}: {a.tolist()}, reference {b.tolist()}")
        elif diff > atol:
            problems.append(f"{key}: max abs difference {diff:.2e} > {atol:g}")
    return problems


def load_reference(path: Path = REFERENCE) -> dict[str, np.ndarray]:
    with np.load(path) as data:
        return {k: data[k] for k in data.files}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--force", action="store_true", help="overwrite an existing reference")
    ap.add_argument("--out", type=Path, default=REFERENCE)
    args = ap.parse_args(argv)
    if args.out.exists() and not args.force:
        print(f"{args.out} exists; it holds the outputs the models must keep (use --force only for an intended change)")
        return 1
    import torch

    commit = subprocess.run(["git", "-C", str(ROOT), "rev-parse", "HEAD"], capture_output=True, text=True).stdout.strip()
    dirty = subprocess.run(
        ["git", "-C", str(ROOT), "status", "--porcelain", "--", "stran/models"], capture_output=True, text=True
    ).stdout.strip()
    data = outputs()
    data["_written_at_commit"] = np.asarray(commit + (" (stran/models modified)" if dirty else ""))
    data["_torch"] = np.asarray(torch.__version__)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    np.savez_compressed(args.out, **data)
    print(f"wrote {args.out} ({len(data)} arrays, {args.out.stat().st_size / 1024:.0f} KiB) at {commit[:10]}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

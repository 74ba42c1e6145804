"""The authors' TensorFlow ST-RAN, rebuilt from its published layer list, served for timing (runs in ``.venv-peer``).

    .venv-peer/bin/python training/peer_tf.py --threads 1          # JSON lines on stdin / stdout
    .venv-peer/bin/python training/peer_tf.py --threads 1 --check  # build both networks, print parameter counts

Only numpy and TensorFlow (CPU 2.21, legacy Keras 2 = ``tf_keras``, as the authors' code); no ``stran`` import.
``training/bench_peer.py`` starts it as a subprocess kept alive and times it against ours in alternating rounds.

The networks are written here from the layer list of HMS-CardiacMR/Myocardial_Scar_Detection (notes in
docs/models.md, "Against the authors' TensorFlow"), not copied:

* input (N, 20 phases, 64, 64, 10 slices as channels), channels-last;
* unit X(F) = Conv3D(F, 3x3x3, same) -> Conv3D(F, (11, 1, 1), same), no norm or activation between (``Conv3Plus1D``);
  in the attention variants each unit first multiplies its input by ``Attention(F)`` (``Conv3Plus1DWithSpatialAttention``);
* stem X(16) -> BatchNormalization -> ReLU;
* four times: ResizeVideo (phases folded into the batch, bilinear ``Resizing`` to half the rows and columns), then a
  residual block F = 16 / 32 / 64 / 128: X(F) -> LayerNorm -> ReLU -> X(F) -> LayerNorm, plus the shortcut (identity,
  or ``Project`` = Dense(F) -> LayerNorm when the channels change), no activation after the sum; ST-RAN (residual
  attention v1) feeds the block's main path with the input times a further ``Attention(F)`` (shortcut un-weighted);
* LayerNormalization with the Keras defaults (axis -1, epsilon 1e-3): over channels only;
* GlobalAveragePooling3D -> Flatten -> Dense(1, sigmoid).

``Attention(units)`` = Dense(units, ReLU) -> Dense(1, softmax) per voxel, the (..., 1) weight multiplying the feature
map. The softmax runs over that size-1 axis, so the weight is exactly 1.0: the released "attention" models compute
the spatiotemporal network's function, but they do compute (and pay for) the attention layers, which is what we time.
Parameter counts (with BatchNorm's moving statistics): ST-RAN v1 1,429,582; spatiotemporal 1,384,161 (checked on
build; ``--check``).

Protocol, one JSON object per line each way:

    {"cmd": "info"}                          -> {"ok": true, "versions": {...}, "params": {...}, "threads": n, "mode": m}
    {"cmd": "build", "batch": B, "seed": s}  -> {"ok": true, "input_sum": ..., "input_head": [...]}
         the input: numpy default_rng(s).random((B, 1, 10, 20, 64, 64), float32) (our layout, (B, 1, S, T, H, W))
         moved to theirs, (B, T, H, W, S)
    {"cmd": "run", "n": k}                   -> {"ok": true, "times_ms": {"stran_v1": [...], "spatiotemporal": [...]}}
         k calls of each network (one after the other per repetition), on the current input
    {"cmd": "quit"}

Graph mode: by default each network runs as a ``tf.function`` (fixed input signature, ``training=False``) on an
input tensor made once, returning a tensor; the output is read with ``.numpy()`` inside the timed span. That is the
model's graph as Grappler and oneDNN optimise it, without ``predict_on_batch``'s per-call work (data adapter,
numpy conversion, output gathering), which our side does not pay either (a prepared tensor into ``model(x)``).
``--mode predict`` times ``model.predict_on_batch`` instead and ``--mode xla`` a ``tf.function(jit_compile=True)``,
for comparison.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time

SEED = 1964  # the authors' seed
N_SLICES, N_PHASES, SIZE = 10, 20, 64
WIDTHS = (16, 32, 64, 128)
EXPECTED_PARAMS = {"stran_v1": 1_429_582, "spatiotemporal": 1_384_161}


def configure(threads: int) -> None:
    """Thread counts and quiet logs; must run before TensorFlow is imported."""
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    os.environ["OMP_NUM_THREADS"] = str(threads)
    os.environ["OMP_WAIT_POLICY"] = "PASSIVE"
    os.environ["TF_USE_LEGACY_KERAS"] = "1"
    import tensorflow as tf

    tf.config.threading.set_intra_op_parallelism_threads(threads)
    tf.config.threading.set_inter_op_parallelism_threads(threads)


def build_networks() -> dict:
    """{"stran_v1": model, "spatiotemporal": model}, built with a fixed seed."""
    import tensorflow as tf
    import tf_keras as keras
    from tf_keras import layers

    class Attention(layers.Layer):
        """Dense(units, ReLU) -> Dense(1, softmax) per voxel; the input times that (size-1 softmax = 1.0) weight."""

        def __init__(self, units: int, **kw):
            super().__init__(**kw)
            self.hidden = layers.Dense(units, activation="relu")
            self.score = layers.Dense(1, activation="softmax")

        def call(self, x):
            return x * self.score(self.hidden(x))

    class Conv3Plus1D(layers.Layer):
        """Conv3D(F, 3x3x3) -> Conv3D(F, (11, 1, 1)); with ``attention``, the input first times Attention(F)."""

        def __init__(self, filters: int, attention: bool, **kw):
            super().__init__(**kw)
            self.attention = Attention(filters) if attention else None
            self.spatial = layers.Conv3D(filters, (3, 3, 3), padding="same")
            self.temporal = layers.Conv3D(filters, (11, 1, 1), padding="same")

        def call(self, x):
            if self.attention is not None:
                x = self.attention(x)
            return self.temporal(self.spatial(x))

    class ResidualMain(layers.Layer):
        def __init__(self, filters: int, attention: bool, **kw):
            super().__init__(**kw)
            self.seq = keras.Sequential(
                [
                    Conv3Plus1D(filters, attention),
                    layers.LayerNormalization(),
                    layers.ReLU(),
                    Conv3Plus1D(filters, attention),
                    layers.LayerNormalization(),
                ]
            )

        def call(self, x):
            return self.seq(x)

    class Project(layers.Layer):
        def __init__(self, units: int, **kw):
            super().__init__(**kw)
            self.seq = keras.Sequential([layers.Dense(units), layers.LayerNormalization()])

        def call(self, x):
            return self.seq(x)

    class ResizeVideo(layers.Layer):
        """Phases folded into the batch, Keras ``Resizing`` (bilinear, half-pixel, no antialias), unfolded."""

        def __init__(self, height: int, width: int, **kw):
            super().__init__(**kw)
            self.resize = layers.Resizing(height, width)

        def call(self, video):
            shape = tf.shape(video)
            b, t, c = shape[0], shape[1], video.shape[-1]
            images = tf.reshape(video, tf.stack([b * t, shape[2], shape[3], c]))
            images = self.resize(images)
            return tf.reshape(images, tf.stack([b, t, self.resize.height, self.resize.width, c]))

    def residual_block(x, filters: int, attention: bool, residual_attention: bool):
        main_in = Attention(filters)(x) if residual_attention else x
        out = ResidualMain(filters, attention)(main_in)
        res = Project(filters)(x) if x.shape[-1] != filters else x
        return layers.add([res, out])

    def network(name: str, attention: bool, residual_attention: bool):
        inp = layers.Input(shape=(N_PHASES, SIZE, SIZE, N_SLICES))
        x = Conv3Plus1D(WIDTHS[0], attention)(inp)
        x = layers.BatchNormalization()(x)
        x = layers.ReLU()(x)
        size = SIZE
        for f in WIDTHS:
            size //= 2
            x = ResizeVideo(size, size)(x)
            x = residual_block(x, f, attention, residual_attention)
        x = layers.GlobalAveragePooling3D()(x)
        x = layers.Flatten()(x)
        out = layers.Dense(1, activation="sigmoid")(x)
        return keras.Model(inp, out, name=name)

    keras.utils.set_random_seed(SEED)
    nets = {
        "stran_v1": network("stran_v1", attention=True, residual_attention=True),
        "spatiotemporal": network("spatiotemporal", attention=False, residual_attention=False),
    }
    for name, model in nets.items():
        n = model.count_params()
        if n != EXPECTED_PARAMS[name]:
            raise RuntimeError(f"{name}: {n:,} parameters, the authors' network has {EXPECTED_PARAMS[name]:,}")
    return nets


def make_input(batch: int, seed: int):
    """Our layout (B, 1, S, T, H, W) from numpy's default_rng(seed), and the same values in theirs (B, T, H, W, S)."""
    import numpy as np

    ours = np.random.default_rng(seed).random((batch, 1, N_SLICES, N_PHASES, SIZE, SIZE), dtype=np.float32)
    theirs = np.ascontiguousarray(ours[:, 0].transpose(0, 2, 3, 4, 1))
    return ours, theirs


class Runner:
    def __init__(self, threads: int, mode: str):
        configure(threads)
        import tensorflow as tf

        self.tf, self.threads, self.mode = tf, threads, mode
        self.nets = build_networks()
        self.calls: dict = {}
        self.x = None

    def _callable(self, model):
        tf = self.tf
        if self.mode == "predict":
            return lambda x: model.predict_on_batch(x)
        spec = tf.TensorSpec((None, N_PHASES, SIZE, SIZE, N_SLICES), tf.float32)
        fn = tf.function(lambda x: model(x, training=False), input_signature=[spec], jit_compile=self.mode == "xla")
        return lambda x: fn(x).numpy()

    def info(self) -> dict:
        import numpy as np
        import tf_keras

        tf = self.tf
        return {
            "versions": {"tensorflow": tf.__version__, "tf_keras": tf_keras.__version__, "numpy": np.__version__,
                         "python": sys.version.split()[0],
                         "onednn": os.environ.get("TF_ENABLE_ONEDNN_OPTS", "default (on)")},
            "params": {k: int(m.count_params()) for k, m in self.nets.items()},
            "threads": self.threads,
            "mode": self.mode,
        }

    def build(self, batch: int, seed: int) -> dict:
        ours, theirs = make_input(batch, seed)
        self.x = theirs if self.mode == "predict" else self.tf.constant(theirs)
        self.calls = {k: self._callable(m) for k, m in self.nets.items()}
        out = {k: [float(v) for v in f(self.x).reshape(-1)] for k, f in self.calls.items()}  # traces the graphs
        return {"input_sum": float(ours.astype("float64").sum()), "input_head": [float(v) for v in ours.reshape(-1)[:4]],
                "outputs": out}

    def run(self, n: int) -> dict:
        times: dict = {k: [] for k in self.calls}
        for _ in range(n):
            for k, f in self.calls.items():
                t0 = time.perf_counter()
                f(self.x)
                times[k].append((time.perf_counter() - t0) * 1e3)
        return {"times_ms": times}


def serve(runner: Runner) -> int:
    out = sys.stdout
    for line in sys.stdin:
        if not line.strip():
            continue
        try:
            req = json.loads(line)
            cmd = req.get("cmd")
            if cmd == "quit":
                break
            if cmd == "info":
                reply = runner.info()
            elif cmd == "build":
                reply = runner.build(int(req["batch"]), int(req.get("seed", 0)))
            elif cmd == "run":
                reply = runner.run(int(req.get("n", 1)))
            else:
                raise ValueError(f"unknown command {cmd!r}")
            reply["ok"] = True
        except Exception as e:  # the caller reads the reason instead of a dead pipe
            reply = {"ok": False, "error": f"{type(e).__name__}: {e}"}
        out.write(json.dumps(reply) + "\n")
        out.flush()
    return 0


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--mode", choices=("function", "predict", "xla"), default="function")
    ap.add_argument("--check", action="store_true", help="build both networks, print parameter counts, exit")
    args = ap.parse_args(argv)
    runner = Runner(args.threads, args.mode)
    if args.check:
        print(json.dumps(runner.info(), indent=1))
        return 0
    print(json.dumps({"ok": True, "ready": True}), flush=True)
    return serve(runner)


if __name__ == "__main__":
    sys.exit(main())

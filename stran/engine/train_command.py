"""``stran train``: train a network of the zoo on labelled studies (resumes an interrupted run in --out)."""

from __future__ import annotations

import argparse
import json
import logging
from pathlib import Path

from stran.errors import UserError, output_folder
from stran.resources import REPO

HELP = "Train a scar network on a folder of labelled studies; an interrupted run resumes where it stopped."


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("studies", help="study folder (cohort layout, MONAI Label datastore or DICOM study folders)")
    parser.add_argument("--labels", help="folder of <id>.scar.json or a CSV (id, study_label[, slice_labels])")
    parser.add_argument("--out", required=True, help="run folder: best.pt, state.pt (resume), history.json")
    parser.add_argument("--model", default="stran", help="network of the zoo (see docs/models.md)")
    parser.add_argument("--model-config", default="{}", help="JSON options of the network")
    parser.add_argument("--epochs", type=int, default=30)
    parser.add_argument("--batch-size", type=int, default=4,
                        help="the global batch: with N processes each takes batch-size / N studies per step")
    parser.add_argument("--lr", type=float, default=1e-3)
    parser.add_argument("--val-split", type=float, default=0.2, help="fraction held out for validation")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--patience", type=int, default=8, help="early stopping: epochs without a better val loss")
    parser.add_argument("--init", default="", help="start from this checkpoint's weights")
    parser.add_argument("--cache", default=None, help="preprocessing cache folder (default: <out>/../.cache)")
    parser.add_argument("--no-augment", action="store_true")
    parser.add_argument("--tensorboard", nargs="?", const="", default=None, metavar="DIR",
                        help="log scalars for TensorBoard (default folder: <out>/tensorboard)")
    parser.add_argument("--distributed", action="store_true",
                        help="train as one process of a torchrun group (DDP; implied when torchrun started it)")
    parser.add_argument("--backend", choices=("auto", "nccl", "gloo"), default="auto",
                        help="distributed backend (auto: nccl where GPUs are, gloo on CPU)")
    parser.add_argument("--device", choices=("auto", "cpu", "cuda"), default="auto",
                        help="where a one-process run trains (auto: the first CUDA GPU when PyTorch sees one, else "
                             "the CPU); under torchrun each process uses its own GPU (nccl) or the CPU (gloo)")


def run(args: argparse.Namespace) -> int:
    from stran.engine import distributed

    if not (args.distributed or distributed.launched_by_torchrun()):
        return _run(args, distributed.SINGLE)
    try:
        ctx = distributed.init(args.backend)
    except distributed.DistributedSetupError as exc:
        raise UserError(str(exc)) from None
    try:
        return _run(args, ctx)
    finally:
        distributed.shutdown()


def _run(args: argparse.Namespace, ctx) -> int:
    from stran.engine import distributed
    from stran.engine.dataset import find_studies, split_records
    from stran.engine.trainer import TrainConfig, Trainer
    from stran.models.registry import resolve_config

    logging.basicConfig(level=logging.INFO if ctx.main else logging.WARNING, format="%(message)s")
    try:
        model_config = json.loads(args.model_config)
    except json.JSONDecodeError:
        model_config = None
    if not isinstance(model_config, dict):
        raise UserError(f"--model-config {args.model_config!r} is not a JSON object",
                        'give one, e.g. --model-config \'{"dropout": 0.3}\'')
    try:
        resolve_config(args.model, **model_config)  # an unknown network or option fails here, before any work
    except (ValueError, TypeError) as exc:
        raise UserError(str(exc), f"{REPO / 'docs' / 'models.md'} lists the networks and their options") from None
    if args.init and not Path(args.init).is_file():
        raise UserError(f"--init checkpoint {args.init} does not exist", "give an existing checkpoint or leave --init out")
    if args.batch_size % ctx.world_size:
        raise UserError(f"--batch-size {args.batch_size} is the global batch and must be a multiple of the "
                        f"{ctx.world_size} processes", "give a multiple, e.g. --batch-size "
                        f"{ctx.world_size * max(1, args.batch_size // ctx.world_size)}")
    if not ctx.active:
        try:
            distributed.single(args.device)
        except distributed.DistributedSetupError as exc:
            raise UserError(str(exc)) from None
    out = output_folder(args.out)
    records = find_studies(args.studies, labels=args.labels, require_labels=True)
    try:
        train, val = split_records(records, [1 - args.val_split, args.val_split], seed=args.seed)
        config = TrainConfig(
            model=args.model,
            model_config=model_config,
            epochs=args.epochs,
            batch_size=args.batch_size,
            lr=args.lr,
            seed=args.seed,
            patience=args.patience,
            augment=not args.no_augment,
            init_checkpoint=args.init,
        )
        cache = args.cache or out.parent / ".cache"
        trainer = Trainer(config, train, val, out, cache_dir=cache, trained_on=f"{args.studies} ({len(train)} studies)",
                          device=args.device)
    except ValueError as exc:  # the options or the studies do not make a training run
        raise UserError(str(exc), "see `stran train --help`") from exc
    logger = None
    if args.tensorboard is not None and ctx.main:
        from stran.engine.tensorboard_log import TensorBoardLogger

        logger = TensorBoardLogger(args.tensorboard or out / "tensorboard")
        print(f"TensorBoard: tensorboard --logdir {logger.log_dir}")
    try:
        result = trainer.fit(callback=logger)
    finally:
        if logger is not None:
            logger.close()
    if not ctx.main:
        return 0
    print(
        f"best epoch {result.best_epoch + 1}: val loss {result.best_val_loss:.4f}, val AUC {result.best_val_auc:.3f}, "
        f"threshold {result.threshold:.3f} -> {result.best_checkpoint}"
    )
    return 0

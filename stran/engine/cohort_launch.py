"""Where a ``stran detect`` process sits: its share of the cohort under ``torchrun`` (``RANK`` / ``WORLD_SIZE``),
the end-of-run handshake through torchrun's store, and the cores, loading workers and inference threads it uses.

Under ``torchrun`` each process takes every WORLD_SIZE-th study of the list sorted by id, from its RANK; they share
nothing but the output folder (distinct files, each written atomically), the results database (SQLite serialises
the writers; a detection id is recorded once) and, at the end, torchrun's own key-value store (``finish_rank``). No
``torch.distributed`` process group: inference exchanges no tensors between ranks, and without collectives one slow
or failed rank never stalls the others.
"""

from __future__ import annotations

import os
import sys

from stran.engine.distributed import local_cores
from stran.engine.study_list import Job
from stran.errors import UserError

MIN_STUDIES_FOR_WORKERS = 8  # below this a worker's start-up (importing torch + MONAI, 3-5 s) costs more than it saves


def rank_share(jobs: list[Job]) -> tuple[list[Job], int, int]:
    """This process's share under torchrun (``RANK`` of ``WORLD_SIZE``): every WORLD_SIZE-th study of the list
    sorted by id, from RANK. All the studies when not launched by torchrun."""
    try:
        world = int(os.environ.get("WORLD_SIZE", "1"))
        rank = int(os.environ.get("RANK", "0"))
    except ValueError as exc:
        raise UserError(f"RANK / WORLD_SIZE are not integers: {exc}", "launch with torchrun, or unset them") from exc
    if world < 1 or not 0 <= rank < world:
        raise UserError(f"RANK {rank} is not within WORLD_SIZE {world}", "launch with torchrun, or unset them")
    if world == 1:
        return jobs, 0, 1
    ordered = sorted(jobs, key=lambda j: (j.image_id, str(j.path)))
    return ordered[rank::world], rank, world


def finish_rank(rank: int, world: int, *, wait: bool) -> None:
    """Under torchrun: note in torchrun's own key-value store (its agent's TCPStore) that this rank is done and,
    with ``wait``, return only once every rank is. A rank that ends with status 1 (some studies skipped) makes
    torchrun stop the other ranks at once, so such a rank waits for them first. No process group: only the store."""
    if world < 2 or os.environ.get("TORCHELASTIC_USE_AGENT_STORE") != "True":
        return
    from datetime import timedelta

    from torch.distributed import TCPStore

    try:
        store = TCPStore(os.environ["MASTER_ADDR"], int(os.environ["MASTER_PORT"]), is_master=False,
                         timeout=timedelta(seconds=60))
        prefix = f"stran-detect/{os.environ.get('TORCHELASTIC_RUN_ID', '')}/done/"
        store.set(f"{prefix}{rank}", "1")
        if wait:
            store.wait([f"{prefix}{r}" for r in range(world)], timedelta(days=7))
    except (KeyError, ValueError, RuntimeError) as exc:  # no store to reach: end now (the others may be stopped)
        print(f"stran detect (rank {rank} of {world}): could not reach torchrun's store ({exc}); ending without "
              "waiting for the other ranks", file=sys.stderr)


def default_workers(n_studies: int) -> int:
    """0 (load in this process) for a few studies and on up to 3 cores; 1 worker from 4 cores, 2 from 8.

    On 2 cores (training/bench_cohort.py, docs/cli.md "Cohorts") the network in this process scales to both cores,
    so a worker only moves the loading onto a core the network would use: sequential with 2 threads was the fastest
    with the default 8 MC samples and within 15 % of the best worker setting with MC off, and it does not fall
    behind when other jobs load the machine. With more cores the network's threads leave cores to spare (not
    measured here)."""
    n = local_cores()
    if n_studies < MIN_STUDIES_FOR_WORKERS or n < 4:
        return 0
    return 1 if n < 8 else 2


def set_threads(threads: int | None) -> int:
    """Set this process's inference threads (None: keep torch's); returns the number in use."""
    import torch

    if threads:
        torch.set_num_threads(threads)
    return torch.get_num_threads()


def default_threads(workers: int) -> int | None:
    """Inference threads for this process: the cores the workers leave (at least 1); None keeps torch's own choice
    when ``OMP_NUM_THREADS`` is set (torchrun sets it to 1 with several processes per node)."""
    if "OMP_NUM_THREADS" in os.environ:
        return None
    return max(1, local_cores() - workers)

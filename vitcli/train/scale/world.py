"""Who is who under torchrun: the world layout `--dry-run` prints, and failures named by rank.

    $ torchrun --nnodes 2 --nproc-per-node 2 --rdzv-backend c10d --rdzv-endpoint node0:29500 \\
          -m vitcli train ... --dry-run
    world: 4 processes = 2 nodes x 2 per node, rendezvous node0:29500 (job job7)
    this process: rank 3 of 4, node 1 of 2, local rank 1 (host node1, pid 4242)
    rank 0 writes the run folder, its logs and checkpoints; every rank reads the data and trains

Every rank prints its own line (torchrun prefixes them with `[rank]:` under `--tee 3`), so the lines
of a dry run across nodes show the whole layout. When a rank fails, it says so on stderr before the
error (`failed: rank 1 of 4, node 0, local rank 1 (host, pid): ...`) and, under torchrun, records the
error in torchrun's error file, so the launcher's summary names the rank and its message as the root
cause. Standard library only (imported by the CLI before torch).
"""

from __future__ import annotations

import os
import socket
from contextlib import contextmanager


def layout() -> dict:
    from vitcli import env

    return {**env.torchrun(), "host": socket.gethostname(), "pid": os.getpid()}


def describe(world: dict | None = None) -> list[str]:
    """The lines `--dry-run` prints on stderr."""
    w = world or layout()
    if w["world"] <= 1:
        return ["world: one process (no torchrun); it writes the run folder"]
    where = f", rendezvous {w['master']}" if w["master"] else ""
    job = f" (job {w['run_id']})" if w["run_id"] else ""
    restart = f", restart {w['restart']}" if w["restart"] else ""
    this = (
        f"this process: rank {w['rank']} of {w['world']}, node {w['node']} of {w['nodes']}, local rank "
        f"{w['local_rank']} (host {w['host']}, pid {w['pid']})"
    )
    return [
        f"world: {w['world']} processes = {w['nodes']} node(s) x {w['local_world']} per node{where}{job}{restart}",
        this,
        "rank 0 writes the run folder, its logs and checkpoints; every rank reads the data and trains",
    ]


def who(world: dict | None = None) -> str:
    w = world or layout()
    return (
        f"rank {w['rank']} of {w['world']}, node {w['node']}, local rank {w['local_rank']} "
        f"({w['host']}, pid {w['pid']})"
    )


@contextmanager
def failures_named():
    """Under torchrun, a failure says which rank it was (stderr and torchrun's error file)."""
    try:
        yield
    except Exception as e:  # noqa: BLE001 - named, then raised again for the one error report
        w = layout()
        if w["world"] > 1:
            from vitcli import output
            from vitcli.errors import VitError

            what = e.message if isinstance(e, VitError) else f"{type(e).__name__}: {e}"
            output.error(f"{who(w)}: {what}", label="failed:")
            if w["error_file"]:  # torchrun's summary then shows this rank's message as the root cause
                from torch.distributed.elastic.multiprocessing.errors import ErrorHandler

                ErrorHandler().record_exception(e)
        raise

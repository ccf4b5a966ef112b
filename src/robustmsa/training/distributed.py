"""Running one training function in several processes, one per device (DDP), started by robustmsa itself.

A run on several devices must not re-run the whole command in every process (each would read the data, write
results and pick checkpoints on its own): only the training itself runs in the processes, which are spawned from
the calling process and report back to it. Each process

* imports the calling process's plugin files first, so that a user's own components unpickle;
* gets the job as bytes and unpickles it itself (after the plugins);
* sets the variables of a torch.distributed job on this machine (``MASTER_ADDR``/``PORT``, ``LOCAL_RANK``, ...),
  so that Lightning joins the group instead of launching processes of its own;
* on CPU, uses its share of the CPU threads.

The result of rank 0 is returned. A :class:`~robustmsa.errors.RobustMSAError` raised in a process (bad data, bad
config, a diverged run) reaches the caller as the same error; anything else as torch's exception with the process's
traceback.
"""

from __future__ import annotations

import contextlib
import os
import pickle
import queue as queue_module
from collections.abc import Callable
from typing import Any

import torch
import torch.multiprocessing as mp

from robustmsa.errors import RobustMSAError

#: Environment variables that mark a process started by a torch.distributed launcher (torchrun, srun, ...).
LAUNCHER_VARIABLES = ("LOCAL_RANK", "TORCHELASTIC_RUN_ID")


def launched_externally() -> bool:
    """Whether this process was started by a distributed launcher, or already belongs to a process group."""
    return any(name in os.environ for name in LAUNCHER_VARIABLES) or (torch.distributed.is_available() and torch.distributed.is_initialized())


def run_in_processes(fn: Callable[[Any, int, int], Any], job: Any, world: int, *, cpu_threads: bool) -> Any:
    """``fn(job, rank, world)`` in ``world`` spawned processes; the value rank 0 returns.

    ``fn`` must be a module-level function and ``job`` picklable. ``cpu_threads``: split this machine's CPU
    threads between the processes (for training on CPU)."""
    from lightning.fabric.plugins.environments.lightning import find_free_network_port

    from robustmsa.plugins import loaded_plugin_files

    context = mp.get_context("spawn")
    messages = context.SimpleQueue()
    threads = max(1, torch.get_num_threads() // world) if cpu_threads else None
    payload = pickle.dumps(job)
    args = (fn, payload, world, find_free_network_port(), [str(p) for p in loaded_plugin_files()], threads, messages)
    processes = mp.start_processes(_worker, args=args, nprocs=world, join=False, start_method="spawn")
    received: list[tuple[str, Any]] = []
    try:
        while not processes.join(timeout=0.2):
            _drain(messages, received)  # a process blocks on a full pipe until its message is read
    except (mp.ProcessRaisedException, mp.ProcessExitedException):
        _drain(messages, received)
        error = next((value for kind, value in received if kind == "error"), None)
        if error is not None:
            raise error from None
        raise
    finally:  # also on Ctrl-C: no process outlives the call
        for process in processes.processes:
            if process.is_alive():
                process.terminate()
                process.join()
    _drain(messages, received)
    return next(value for kind, value in received if kind == "result")


def _drain(messages: Any, into: list[tuple[str, Any]]) -> None:
    try:
        while not messages.empty():
            into.append(messages.get())
    except (EOFError, OSError, queue_module.Empty):  # pragma: no cover - the pipe of a killed process
        pass


def _worker(rank: int, fn: Callable[[Any, int, int], Any], payload: bytes, world: int, port: int, plugin_files: list[str], threads: int | None, messages: Any) -> None:
    """The body of one spawned process (``rank`` first: torch's spawn passes it)."""
    from robustmsa.plugins import import_plugins

    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port), WORLD_SIZE=str(world), NODE_RANK="0", LOCAL_RANK=str(rank), RANK=str(rank))
    if threads is not None:
        torch.set_num_threads(threads)
    import_plugins(plugin_files)
    try:
        result = fn(pickle.loads(payload), rank, world)  # our own bytes, pickled by the calling process just now
    except RobustMSAError as exc:
        with contextlib.suppress(Exception):  # an error that cannot be pickled arrives as the traceback instead
            messages.put(("error", exc))
        raise
    if rank == 0:
        messages.put(("result", result))

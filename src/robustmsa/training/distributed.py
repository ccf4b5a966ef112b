"""Running one training function in several processes, one per device (DDP), started by robustmsa itself.

A run on several devices must not re-run the whole command in every process (each would read the data, write
results and pick checkpoints on its own): only the training itself runs in the processes, which are spawned from
the calling process and report back to it. Each process

* imports the calling process's plugin files first, so that a user's own components unpickle;
* reads the job from a file the caller wrote and unpickles it itself (after the plugins);
* sets the variables of a torch.distributed job on this machine (``MASTER_ADDR``/``PORT``, ``LOCAL_RANK``, ...),
  so that Lightning joins the group instead of launching processes of its own;
* on CPU, uses its share of the CPU threads.

The result of rank 0 is returned. A :class:`~robustmsa.errors.RobustMSAError` raised in a process (bad data, bad
config, a diverged run) reaches the caller as the same error; anything else as torch's exception with the process's
traceback.
"""

from __future__ import annotations

import contextlib
import logging
import multiprocessing
import os
import pickle
import signal
import sys
import tempfile
import threading
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import torch
import torch.multiprocessing as mp

from robustmsa.errors import ConfigError, RobustMSAError

#: Environment variables that mark a process started by a torch.distributed launcher (torchrun, srun, ...).
LAUNCHER_VARIABLES = ("LOCAL_RANK", "TORCHELASTIC_RUN_ID")


def launched_externally() -> bool:
    """Whether this process was started by a distributed launcher, or already belongs to a process group."""
    return any(name in os.environ for name in LAUNCHER_VARIABLES) or (torch.distributed.is_available() and torch.distributed.is_initialized())


def run_in_processes(fn: Callable[[Any, int, int], Any], job: Any, world: int, *, cpu_threads: bool) -> Any:
    """``fn(job, rank, world)`` in ``world`` spawned processes; the value rank 0 returns.

    ``fn`` must be a module-level function and ``job`` picklable. ``cpu_threads``: split this machine's CPU
    threads between the processes (for training on CPU). Ctrl-C or SIGTERM of the caller ends the processes."""
    from lightning.fabric.plugins.environments.lightning import find_free_network_port

    from robustmsa.plugins import loaded_plugin_files

    payload = pickle.dumps(job)
    main = sys.modules.get("__main__")
    if b"__main__" in payload and not os.path.isfile(getattr(main, "__file__", None) or ""):
        raise ConfigError(
            "training on several devices: the model or data uses classes defined in an interactive session, `python -c` or stdin, "
            "which the training processes cannot import; define them in a .py file (e.g. a plugin) and import them from there"
        )
    context = mp.get_context("spawn")
    messages = context.SimpleQueue()
    threads = max(1, torch.get_num_threads() // world) if cpu_threads else None
    received: list[tuple[str, Any]] = []
    # quiet: torch's "Terminating process ... via signal SIGTERM" when one process failed (its error follows)
    with tempfile.TemporaryDirectory(prefix="robustmsa-ddp-") as folder, _stop_on_sigterm(), quiet_loggers(logging.ERROR, "torch.multiprocessing.spawn"):
        # The job travels as a file: written into a process's start-up pipe, a large one would block the caller
        # for ever if that process died before reading it (e.g. a script without a main guard).
        job_file = Path(folder) / "job.pickle"
        job_file.write_bytes(payload)
        args = (fn, str(job_file), world, find_free_network_port(), [str(p) for p in loaded_plugin_files()], threads, messages)
        earlier = set(multiprocessing.active_children())
        processes = None
        try:
            processes = mp.start_processes(_worker, args=args, nprocs=world, join=False, start_method="spawn")
            while not processes.join(timeout=0.2):
                _drain(messages, received)  # a process blocks on a full pipe until its message is read
        except mp.ProcessRaisedException:
            _drain(messages, received)
            error = next((value for kind, value in received if kind == "error"), None)
            if error is not None:
                raise error from None
            raise
        except mp.ProcessExitedException as exc:
            how = f"signal {exc.signal_name}" if exc.signal_name else f"exit code {exc.exit_code}"
            raise RuntimeError(
                f"training process {exc.error_index} of {world} ended with {how} (its own messages are above). From a Python script, "
                "guard the script's top level with `if __name__ == '__main__':`, since every training process imports it"
            ) from None
        finally:  # also on Ctrl-C / SIGTERM: no process outlives the call, none is left waiting in a collective
            # (interrupted while they were being started, the processes are found as this process's new children)
            started = processes.processes if processes is not None else [p for p in multiprocessing.active_children() if p not in earlier]
            for process in started:
                if process.is_alive():
                    process.kill()
            for process in started:
                process.join()
    _drain(messages, received)
    return next(value for kind, value in received if kind == "result")


@contextlib.contextmanager
def _stop_on_sigterm() -> Iterator[None]:
    """SIGTERM of the caller raises Lightning's SIGTERMException (as a run on one device does), so that the
    processes are ended and the command reports that it was stopped."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    from lightning.pytorch.utilities.exceptions import SIGTERMException

    def stop(signum: int, frame: Any) -> None:
        raise SIGTERMException

    previous = signal.signal(signal.SIGTERM, stop)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


@contextlib.contextmanager
def quiet_loggers(level: int, *names: str) -> Iterator[None]:
    """Raise the level of the named loggers to ``level`` for a block (their levels are restored afterwards)."""
    loggers = [logging.getLogger(name) for name in names]
    levels = [logger.level for logger in loggers]
    for logger in loggers:
        logger.setLevel(level)
    try:
        yield
    finally:
        for logger, previous in zip(loggers, levels):
            logger.setLevel(previous)


def _drain(messages: Any, into: list[tuple[str, Any]]) -> None:
    try:
        while not messages.empty():
            into.append(messages.get())
    except (EOFError, OSError):  # pragma: no cover - the pipe of a killed process
        pass


def _worker(rank: int, fn: Callable[[Any, int, int], Any], job_file: str, world: int, port: int, plugin_files: list[str], threads: int | None, messages: Any) -> None:
    """The body of one spawned process (``rank`` first: torch's spawn passes it)."""
    from robustmsa.plugins import import_plugins

    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port), WORLD_SIZE=str(world), NODE_RANK="0", LOCAL_RANK=str(rank), RANK=str(rank))
    if threads is not None:
        torch.set_num_threads(threads)
    import_plugins(plugin_files)
    try:
        # our own file, written by the calling process just now into a folder of its own
        result = fn(pickle.loads(Path(job_file).read_bytes()), rank, world)
    except RobustMSAError as exc:
        with contextlib.suppress(Exception):  # an error that cannot be pickled arrives as the traceback instead
            messages.put(("error", exc))
        raise
    if rank == 0:
        messages.put(("result", result))

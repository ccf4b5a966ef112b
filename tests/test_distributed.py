"""Training on several devices: DDP in processes that ``fit`` starts (two CPU processes here, gloo)."""

from __future__ import annotations

import copy
import dataclasses
from pathlib import Path

import pytest
import torch

from robustmsa.config import parse_config
from robustmsa.data.dataset import DataBundle, make_loader
from robustmsa.errors import ConfigError, DataError
from robustmsa.method import Supervised
from robustmsa.models.lf_dnn import LFDNN
from robustmsa.plugins import import_plugins, loaded_plugin_files
from robustmsa.registry import BACKBONES, METHODS
from robustmsa.training.fit import TrainConfig, evaluate, fit, seeded

from .conftest import make_toy_split


def test_a_sharded_loader_gives_each_process_its_share_of_one_permutation_per_epoch() -> None:
    split = make_toy_split(10, "train", 0)

    def epoch(rank: int, number: int) -> list[str]:
        loader = make_loader(split, 2, shuffle=True, seed=7, shard=(rank, 3))
        loader.sampler.set_epoch(number)  # what the trainer does at each epoch start
        return [i for batch in loader for i in batch.ids]

    shares = [epoch(rank, 0) for rank in range(3)]
    assert [len(s) for s in shares] == [4, 4, 4]  # 10 samples, 3 processes: two repeated to even the shares
    assert set().union(*shares) == set(split.ids)
    assert sum(len(set(s)) for s in shares) - len(split) == 2
    assert epoch(1, 0) == shares[1]  # the same seed and epoch: the same share
    assert epoch(1, 1) != shares[1]  # the next epoch: a new permutation


def test_two_processes_train_exactly_as_one_device_with_the_same_global_batch(toy_bundle: DataBundle, tmp_path: Path) -> None:
    # One batch per epoch and no dropout: the mean gradient over the whole split is the same however it is sharded,
    # so two processes must reproduce one device step for step (up to float rounding). This needs every sample
    # once per epoch, the gradients averaged, and validation scored on the whole split in every process.
    with seeded(0):
        one = Supervised(LFDNN(toy_bundle.dims(), toy_bundle.task, hidden=8, dropout=0.0))
    two = copy.deepcopy(one)
    cfg = TrainConfig(max_epochs=3, batch_size=len(toy_bundle["train"]), lr=1e-2, progress=False)
    single = fit(one, toy_bundle, cfg, seed=0)
    double = fit(two, toy_bundle, dataclasses.replace(cfg, devices=2), seed=0, out_dir=tmp_path)
    assert double.epochs == single.epochs == 3
    for key in ("val/MAE", "val/Corr", "train/loss"):
        assert double.history[key] == pytest.approx(single.history[key], rel=1e-5), key
    assert single.history["val/MAE"][0] != single.history["val/MAE"][-1]  # it did train
    for (name, a), b in zip(one.state_dict().items(), two.state_dict().values()):
        assert torch.allclose(a, b, atol=1e-5), name
    # the caller's method holds the best weights, scored as during training; the run folder as on one device
    assert double.best_score == pytest.approx(evaluate(two, toy_bundle["valid"])["factual"]["MAE"], abs=1e-6)
    assert double.best_path == tmp_path / "best.ckpt" and double.best_path.is_file()
    assert (tmp_path / "logs" / "metrics.csv").is_file()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["best.ckpt", "logs"]


def test_alternating_optimisation_trains_on_two_processes(toy_bundle: DataBundle) -> None:
    # TCMR's two optimisers (manual optimisation, each phase leaving the other's parameters unused) under DDP
    small = {"dim": 8, "heads": 2, "text_layers": 1, "av_tokens": 2, "av_layers": 1, "levels": 1, "fusion_layers": 1, "dropout": 0.0}
    cfg = TrainConfig(max_epochs=2, batch_size=64, progress=False, valid_mode="missing", patience=2)
    with seeded(0):
        method = METHODS.build("tcmr", BACKBONES.build("text_centric", toy_bundle.dims(), toy_bundle.task, **small), heads=2, teacher_epochs=1)
    method.prepare(toy_bundle, cfg, seed=0)  # stage 1 on one device; fit skips it below
    before = {k: v.clone() for k, v in method.state_dict().items()}
    result = fit(method, toy_bundle, dataclasses.replace(cfg, devices=2), seed=0)
    assert len(result.history["train_confidence/loss"]) == len(result.history["train_main/loss"]) == 2
    after = method.state_dict()
    changed = {k.split(".")[0] for k in before if not torch.equal(before[k], after[k])}
    assert {"confnet", "proxy", "backbone"} <= changed  # both phases trained
    assert not changed & {"text_teacher", "polarity"}  # the frozen stage-1 models
    assert result.best_score == pytest.approx(evaluate(method, toy_bundle["valid"], ("missing",))["missing"]["MAE"], abs=1e-6)


PLUGIN = '''
from robustmsa.errors import DataError
from robustmsa.models.lf_dnn import LFDNN
from robustmsa.registry import BACKBONES


@BACKBONES.register("plugin_refusing_net")
class RefusingNet(LFDNN):
    def forward(self, batch):
        if self.training:
            raise DataError("sample-store", "vision", f"no frames for {batch.ids[0]!r}")
        return super().forward(batch)
'''


def test_a_plugin_model_and_its_data_error_cross_into_the_processes_and_back(toy_bundle: DataBundle, tmp_path: Path) -> None:
    (tmp_path / "refusing.py").write_text(PLUGIN)
    import_plugins([str(tmp_path / "refusing.py")])
    assert (tmp_path / "refusing.py").resolve() in loaded_plugin_files()
    method = Supervised(BACKBONES.build("plugin_refusing_net", toy_bundle.dims(), toy_bundle.task, hidden=4))
    # The processes import the plugin before they read the job, run its code, and the one-line error comes back
    # as itself, not as a traceback of the process.
    with pytest.raises(DataError, match=r"sample-store: field 'vision': no frames for '.+'"):
        fit(method, toy_bundle, TrainConfig(max_epochs=1, batch_size=32, progress=False, devices=2), seed=0)


def test_several_device_settings_are_checked_before_training(toy_bundle: DataBundle, monkeypatch: pytest.MonkeyPatch) -> None:
    method = Supervised(LFDNN(toy_bundle.dims(), toy_bundle.task, hidden=8))
    base = TrainConfig(max_epochs=1, progress=False, devices=2, batch_size=32)
    with pytest.raises(ConfigError, match=r"batch_size 33 is the global batch, split evenly between the 2 processes; choose a multiple of 2"):
        fit(method, toy_bundle, dataclasses.replace(base, batch_size=33))
    with pytest.raises(ConfigError, match=r"strategy='ddp_fork'.*robustmsa trains with DDP in processes it starts itself; strategy must be one of \['auto', 'ddp', 'ddp_spawn', 'ddp_find"):
        fit(method, toy_bundle, dataclasses.replace(base, strategy="ddp_fork"))
    self_mm = Supervised(BACKBONES.build("self_mm", toy_bundle.dims(), toy_bundle.task))
    with pytest.raises(ConfigError, match=r"SelfMM keeps per-sample state while it trains .*train it on one device \(devices: 1\)"):
        fit(self_mm, toy_bundle, base)
    for devices in (-1, "two"):  # Lightning's TypeError / ValueError, as one line
        with pytest.raises(ConfigError, match=rf"train settings accelerator='cpu', devices={devices!r}, strategy='auto': "):
            fit(method, toy_bundle, dataclasses.replace(base, devices=devices))
    assert parse_config({"data": {"name": "synthetic"}, "backbone": {"name": "tfn"}, "train": {"devices": [0, 1]}}).train.to_train_config().devices == [0, 1]
    monkeypatch.setenv("LOCAL_RANK", "0")  # as under torchrun: every process would run the whole command
    with pytest.raises(ConfigError, match=r"started by a distributed launcher \(torchrun, srun, ...\); robustmsa starts the 2 processes itself"):
        fit(method, toy_bundle, base)


WORKERS = '''
import os
import time
from pathlib import Path


def sleep_and_report(folder, rank, world):
    Path(folder, f"{rank}.pid").write_text(str(os.getpid()))
    time.sleep(120)


def fail(job, rank, world):
    if rank == 1:
        raise ValueError(f"bug in process {rank} of {world}")
    time.sleep(120)  # rank 0 waits in vain: it is stopped when rank 1 fails
'''

UNGUARDED = """
import sys
sys.path.insert(0, {folder!r})
import workers_for_test
from robustmsa.training.distributed import run_in_processes

run_in_processes(workers_for_test.sleep_and_report, {folder!r}, 2, cpu_threads=True)  # no main guard
"""

INTERRUPTED = """
import signal
import sys
# Ctrl-C as in a terminal, also where the tests run as a background job of a shell (which starts them ignoring SIGINT)
signal.signal(signal.SIGINT, signal.default_int_handler)
sys.path.insert(0, {folder!r})
import workers_for_test
from robustmsa.training.distributed import run_in_processes

if __name__ == "__main__":
    run_in_processes(workers_for_test.sleep_and_report, {folder!r}, 2, cpu_threads=True)
"""


def test_the_processes_end_with_their_caller_and_failures_are_reported(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import os
    import signal
    import subprocess
    import sys
    import time
    import types

    import torch.multiprocessing as mp

    from robustmsa.training.distributed import run_in_processes

    (tmp_path / "workers_for_test.py").write_text(WORKERS)
    (tmp_path / "main.py").write_text(INTERRUPTED.format(folder=str(tmp_path)))
    caller = subprocess.Popen([sys.executable, str(tmp_path / "main.py")], stderr=subprocess.PIPE)
    deadline = time.monotonic() + 60
    while len(list(tmp_path.glob("*.pid"))) < 2 and time.monotonic() < deadline and caller.poll() is None:
        time.sleep(0.1)
    pids = [int(p.read_text()) for p in tmp_path.glob("*.pid")]
    assert len(pids) == 2, caller.stderr.read().decode() if caller.poll() is not None else "processes did not start"
    caller.send_signal(signal.SIGINT)  # Ctrl-C of the caller alone (not of its process group)
    caller.wait(timeout=30)
    for pid in pids:  # without the caller's clean-up they would sleep on, adopted by init
        with pytest.raises(ProcessLookupError):
            os.kill(pid, 0)

    sys.path.insert(0, str(tmp_path))
    try:
        import workers_for_test

        with pytest.raises(mp.ProcessRaisedException, match=r"ValueError: bug in process 1 of 2"):
            run_in_processes(workers_for_test.fail, None, 2, cpu_threads=False)
        # Ctrl-C while the processes are being started (torch has not returned them yet): they are ended too
        import multiprocessing

        from robustmsa.training import distributed

        start = distributed.mp.start_processes

        def interrupted(*args: object, **kwargs: object) -> None:
            start(*args, **kwargs)
            raise KeyboardInterrupt

        monkeypatch.setattr(distributed.mp, "start_processes", interrupted)
        try:
            with pytest.raises(KeyboardInterrupt):
                run_in_processes(workers_for_test.sleep_and_report, str(tmp_path), 2, cpu_threads=False)
            assert not multiprocessing.active_children()
        finally:
            for child in multiprocessing.active_children():  # not left sleeping if the assertion failed
                child.kill()
        monkeypatch.undo()
    finally:
        sys.path.remove(str(tmp_path))
    # A script without a main guard: each process re-runs it and stops in start-up, before it reads its job. The
    # caller reports that instead of waiting for ever; a class from an interactive session is refused before.
    (tmp_path / "unguarded.py").write_text(UNGUARDED.format(folder=str(tmp_path)))
    unguarded = subprocess.run([sys.executable, str(tmp_path / "unguarded.py")], capture_output=True, text=True, timeout=120)
    assert unguarded.returncode == 1 and "guard the script's top level with `if __name__ == '__main__':`" in unguarded.stderr
    session = types.ModuleType("__main__")  # as under `python -c` or in a notebook: no file to import

    class Mine(torch.nn.Linear):
        __module__, __qualname__ = "__main__", "Mine"

    session.Mine = Mine
    monkeypatch.setitem(sys.modules, "__main__", session)
    with pytest.raises(ConfigError, match=r"the model or data uses classes defined in an interactive session, `python -c` or stdin"):
        run_in_processes(print, Mine(2, 2), 2, cpu_threads=False)

"""Benchmark CLUE and CLEF: base vs +method on IID and OOD tests (the protocol of robustmsa.evaluation.clue_protocol).

Runs, with the configs in ``configs/clue/`` and ``configs/clef/``:

* ``synthetic``: the generated default corpus (its own OOD pool), LF-DNN, 3 seeds;
* ``synthetic_tau_ood``: the same with tau chosen on the OOD-validation split (disjoint from the OOD test);
* ``synthetic_c_lr``: the same with the counterfactual output c trained at its own learning rate (``c_lr: 0.05``);
* ``mosi``: CMU-MOSI transcripts with an OOD split annealed by CLUE's Algorithm 1, text-only backbone;
* ``mosi_prior``: the same with the split's class-prior shift bounded (``max_prior_shift: 0.05``);
* ``mmsd2``: MMSD2.0 text + image attribute words with an annealed OOD split, image-text backbone;
* ``clef_synthetic``: CLEF on the generated context-aware emotion corpus (its own OOD pool), two-stream backbone (CAER-Net style);
* ``clef_synthetic_concat``: the same around the EMOTIC baseline (two streams, concatenation fusion).

For each it writes ``benchmarks/results/<method>_<name>.json`` (per seed, mean +- std,
chosen tau, the split's energy) and ``<method>_<name>.md`` (the tables), and keeps
the protocol's own output folder (case study, split file, figures) under
``benchmarks/results/<method>_<name>/``. Real-data runs are skipped when
``../shared/data`` is absent.

Usage::

    python benchmarks/clue.py --overwrite           # every run, replacing the stored results
    python benchmarks/clue.py synthetic --seeds 0,1,2
    python benchmarks/clue.py mosi --epochs 8
    python benchmarks/clue.py clef_synthetic
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

import torch

from robustmsa.config import parse_seeds
from robustmsa.evaluation.clue_protocol import load_protocol_config, run_clue_protocol
from robustmsa.evaluation.report import write_json, write_text_atomic

ROOT = Path(__file__).resolve().parents[1]
#: name -> (config under configs/, folder needed under ../shared/data)
RUNS = {
    "synthetic": ("clue/synthetic", None),
    "synthetic_tau_ood": ("clue/synthetic_tau_ood", None),
    "synthetic_c_lr": ("clue/synthetic_c_lr", None),
    "mosi": ("clue/mosi", "mosi"),
    "mosi_prior": ("clue/mosi_prior", "mosi"),
    "mmsd2": ("clue/mmsd2", "mmsd2"),
    "clef_synthetic": ("clef/synthetic", None),
    "clef_synthetic_concat": ("clef/synthetic_concat", None),
}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("runs", nargs="*", default=list(RUNS), choices=list(RUNS))
    parser.add_argument("--seeds", default=None, help="comma-separated seeds (default: the config's)")
    parser.add_argument("--epochs", type=int, default=None, help="override train.max_epochs")
    parser.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "results")
    parser.add_argument("--overwrite", action="store_true", help="replace the stored results of these runs (refused without it)")
    args = parser.parse_args(argv)
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.chdir(ROOT)  # configs name data relative to the repository root
    torch.set_num_threads(1)
    for name in args.runs:
        config_name, needed = RUNS[name]
        stem = config_name.replace("/", "_")
        if needed is not None and not (ROOT.parent / "shared" / "data" / needed).is_dir():
            print(f"skip {name}: ../shared/data/{needed} is absent", file=sys.stderr)
            continue
        taken = [p for p in (args.out / f"{stem}.json", args.out / f"{stem}.md", args.out / stem) if p.exists()]
        if taken and not args.overwrite:
            print(f"error: {taken[0]} holds the stored results of '{name}'; pass --overwrite to replace them, or --out elsewhere", file=sys.stderr)
            return 2
        config = load_protocol_config(ROOT / "configs" / f"{config_name}.yaml")
        if args.epochs is not None:
            config = config.model_copy(update={"train": config.train.model_copy(update={"max_epochs": args.epochs})})
        seeds = parse_seeds(args.seeds) if args.seeds else None
        start = time.perf_counter()
        run_dir = args.out / stem
        results = run_clue_protocol(config, run_dir, seeds, overwrite=args.overwrite)
        results["seconds"] = time.perf_counter() - start
        results["command"] = f"python benchmarks/clue.py {name}" + (f" --seeds {args.seeds}" if args.seeds else "") + (f" --epochs {args.epochs}" if args.epochs else "")
        split = run_dir / "split.json"
        if split.is_file():
            import json

            results["split"] = {k: v for k, v in json.loads(split.read_text()).items() if k in ("source", "params", "energy", "sizes", "class_counts")}
        write_json(args.out / f"{stem}.json", results)
        report = (run_dir / "report.md").read_text(encoding="utf-8")
        extra = f"\nCommand: `{results['command']}`; wall time {results['seconds']:.0f} s on CPU (1 thread). Protocol output: `{stem}/`.\n"
        write_text_atomic(args.out / f"{stem}.md", report + extra)
        print(f"{name}: {args.out / f'{stem}.md'} ({results['seconds']:.0f} s)", file=sys.stderr)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

"""Does a validation search pay off on test data? An experiment as shipped against its searched version.

    python benchmarks/search.py tfn --out benchmarks/results/search_tfn      # configs/search/tfn.yaml (also: lf_dnn)
    python benchmarks/search.py --config my_search.yaml --out runs/my_search

1. The search (``robustmsa search``) into OUT/search: study.log, search.json, search.md and best_config.yaml; an
   interrupted search resumes (``--worker 1`` in a second process joins it).
2. The experiment as shipped and best_config.yaml, each trained and evaluated on the experiment's own seeds
   (``robustmsa train`` into OUT/runs/default and OUT/runs/tuned; a stopped run resumes, a finished one is read
   back; the model files there are not results, and git ignores them).
3. OUT/comparison.json, OUT/comparison.md and OUT/differences.png (``robustmsa compare`` of the two runs): the checkpoint criterion on
   validation (what the search chose by) and the test metrics, mean +- std over the seeds for both, tuned minus
   shipped paired seed by seed, with a bootstrap interval over the test data (``--bootstrap``, default 1000 draws).

The choice is made on validation data in step 1; step 2 reads the test splits after it, for both configs alike.
Rerunning into OUT reads the finished steps back: delete OUT/comparison.json to redo step 3 alone (``--overwrite``
replaces the search and the runs too).
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path
from typing import Any

from robustmsa.config import ExperimentConfig, load_config
from robustmsa.data.dataset import DataBundle
from robustmsa.errors import ConfigError
from robustmsa.evaluation.compare import compare_runs, comparison_report, plot_differences, read_run
from robustmsa.evaluation.protocols import read_json_file
from robustmsa.evaluation.report import write_json, write_text_atomic
from robustmsa.experiment import load_data, run_experiment
from robustmsa.tuning.experiment import load_experiment_search, search_experiment

ROOT = Path(__file__).resolve().parents[1]
SEARCHES = {"tfn": ROOT / "configs/search/tfn.yaml", "lf_dnn": ROOT / "configs/search/lf_dnn.yaml"}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("which", nargs="?", choices=sorted(SEARCHES), help="a shipped search config (or give --config)")
    parser.add_argument("--config", type=Path, default=None, help="a search YAML of your own")
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--worker", type=int, default=0, help="this process's worker number in the search (own sampler seed)")
    parser.add_argument("--bootstrap", type=int, default=1000, help="draws of the test data for the differences' intervals (robustmsa compare)")
    parser.add_argument("--overwrite", action="store_true", help="replace the results in --out")
    args = parser.parse_args(argv)
    if (args.which is None) == (args.config is None):
        parser.error("give either a shipped search name or --config")
    if (args.out / "comparison.json").exists() and not args.overwrite:
        print(f"{args.out / 'comparison.json'} already exists: pass --overwrite to replace it", file=sys.stderr)
        return 2
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    search, config = load_experiment_search(args.config or SEARCHES[args.which])
    bundle = load_data(config)
    found = search_experiment(search, config, args.out / "search", worker=args.worker, overwrite=args.overwrite, bundle=bundle)
    tuned = load_config(args.out / "search" / "best_config.yaml")
    for name, cfg in (("default", config), ("tuned", tuned)):
        trained(cfg, args.out / "runs" / name, args.overwrite, bundle)
    comparison = compare_runs([read_run(f"{name}={args.out / 'runs' / name}") for name in ("default", "tuned")], bootstrap=args.bootstrap)
    comparison["search"] = {**{k: found[k] for k in ("metric", "direction", "seeds", "best")}, "n_trials": len(found["trials"])}
    plot_differences(args.out / "differences.png", comparison)
    write_json(args.out / "comparison.json", comparison)
    write_text_atomic(args.out / "comparison.md", searched_report(comparison))
    print(searched_report(comparison))
    return 0


def trained(config: ExperimentConfig, folder: Path, overwrite: bool, bundle: DataBundle) -> None:
    """``config`` trained into ``folder``, unless a finished run of the same config is there (a comparison rerun
    after a fix; a run of another config is refused); a stopped run resumes."""
    done = folder / "results.json"
    if done.exists() and not overwrite:
        if (read_json_file(done) or {}).get("config") != config.model_dump(mode="json"):
            raise ConfigError(f"{done}: a run of another config; pass --overwrite to replace it")
        return
    run_experiment(config, folder, overwrite=overwrite, bundle=bundle)


def searched_report(comparison: dict[str, Any]) -> str:
    best = comparison["search"]["best"]
    head = (
        "# The shipped config against its validation search\n\n"
        f"Search: {comparison['search']['n_trials']} finished trials on seeds {comparison['search']['seeds']}, scored by {comparison['search']['metric']}; "
        f"best trial {best['number']}: {best['params']}. Both configs trained and evaluated on seeds {comparison['seeds']}: "
        "'default' is the experiment as shipped, 'tuned' its best_config.yaml.\n\n"
    )
    return head + comparison_report(comparison).split("\n", 1)[1].lstrip("\n")


if __name__ == "__main__":
    try:
        sys.exit(main())
    except ConfigError as exc:
        print(f"error: {exc}", file=sys.stderr)
        sys.exit(2)

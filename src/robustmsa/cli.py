"""The ``robustmsa`` command: one thin function per sub-command.

User errors (:class:`~robustmsa.errors.RobustMSAError`) are printed as one
line and exit with status 2, without a traceback.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console

from robustmsa.errors import RobustMSAError

app = typer.Typer(help="Robust multimodal sentiment and affect analysis.", no_args_is_help=True, pretty_exceptions_enable=False, add_completion=False)
console = Console(stderr=True)

Out = Annotated[Path, typer.Option("--out", help="Output folder (refused if it already holds results, unless --overwrite).")]
Overwrite = Annotated[bool, typer.Option("--overwrite", help="Allow writing into a folder that already holds results.")]


@app.command()
def demo(out: Out = Path("demo_out"), overwrite: Overwrite = False, seeds: Annotated[str, typer.Option(help="Comma-separated seeds.")] = "0", epochs: int = 12) -> None:
    """Generate the default corpus, train baselines and CLUE, compare IID vs OOD."""
    from robustmsa.demo import run_demo

    run_demo(out, overwrite=overwrite, seeds=_seeds(seeds), max_epochs=epochs, console=console)


@app.command()
def train(config: Annotated[Path, typer.Option("--config", help="Experiment YAML (see configs/).")], out: Out = Path("runs/experiment"), overwrite: Overwrite = False) -> None:
    """Train and evaluate an experiment config over its seeds."""
    from robustmsa.config import load_config
    from robustmsa.experiment import run_experiment

    cfg = load_config(config)
    run_experiment(cfg, out, overwrite=overwrite)
    console.print(f"[green]Results[/green]: {out / 'results.json'}; report: {out / 'report.md'}")


@app.command()
def evaluate(
    run: Annotated[Path, typer.Option("--run", help="Folder written by `robustmsa train`.")],
    split: Annotated[list[str] | None, typer.Option("--split", help="Split(s) to evaluate (default: the config's test splits).")] = None,
    mode: Annotated[list[str] | None, typer.Option("--mode", help="Inference mode(s) (default: all of the method).")] = None,
) -> None:
    """Evaluate the saved models of a training run (every seed) and print the metrics as JSON."""
    import json

    from robustmsa.config import load_config
    from robustmsa.experiment import evaluate_method, evaluation_splits, load_data, load_model

    cfg = load_config(run / "config.yaml")
    bundle = load_data(cfg)
    splits = list(split) if split else evaluation_splits(cfg, bundle)
    out = {}
    for seed in cfg.seeds:
        method = load_model(run / f"seed_{seed}" / "model.pt", cfg, bundle)
        out[str(seed)] = evaluate_method(method, bundle, splits, list(mode) if mode else cfg.eval.modes)
    typer.echo(json.dumps(out, indent=2))


def _seeds(text: str) -> tuple[int, ...]:
    try:
        seeds = tuple(int(s) for s in text.split(",") if s.strip())
    except ValueError:
        raise typer.BadParameter(f"seeds must be comma-separated integers, got '{text}'") from None
    if not seeds:
        raise typer.BadParameter("at least one seed is required")
    return seeds


def main() -> None:
    """Console entry point: runs the app, turning user errors into one-line messages."""
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
    try:
        app()
    except RobustMSAError as exc:
        console.print(f"[red]error:[/red] {exc}", highlight=False, soft_wrap=True)
        sys.exit(2)

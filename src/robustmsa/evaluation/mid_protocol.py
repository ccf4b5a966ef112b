"""The image-text debiasing protocol: base, MID, MCTD, MME-JD and MRID over seeds, with router analysis and cost.

Per seed (all training through :func:`~robustmsa.training.fit.fit`, every
choice on validation data):

1. the **base** model (a registered backbone + plain supervised loss) is trained;
2. counterfactual inputs that need the trained base (image attributes masked
   by the base model's attribution, :class:`~robustmsa.debias.image_cf.AttributeMasker`)
   are built, for train/valid (a training cost) and test (an inference cost);
   model-free ones (the lexicon text counterfactual) are built once for all seeds;
3. **MID** = the base + ``alpha``/``beta`` searched on validation (Optuna);
4. the base model's train/valid samples are categorised and the **router** is
   trained (loss chosen by validation F-0.5); **MRID** = router + MID with
   per-strategy weights searched on validation;
5. **MCTD** is fine-tuned from the base with reversed-label counterfactual training,
   and **base+FT**, its control, with the same settings and no counterfactual term;
6. the **MME-JD** debiasing experts are fine-tuned from the base, combined by
   the same router, weights searched on validation;
7. test metrics of every method, the router analysis on test (per category
   precision / recall / F-0.5, confusion matrix, oracle-router bound) and
   the measured cost (:mod:`robustmsa.evaluation.cost`).

Results: ``<out>/image_text_<dataset>.json`` (per seed + mean +- std) and
``.md``; each finished seed is recorded in ``<out>/seed_<k>.json`` with the
settings it was made with, so a run that stopped part-way resumes there. Data
without a visual modality (MVSA) is run text-only: the image counterfactual,
the image expert and the image strategies are dropped.
"""

from __future__ import annotations

import copy
import math
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Annotated, Any

import numpy as np
from pydantic import Field

from robustmsa.config import BackboneComponent, ComponentConfig, PluginConfig, Seeds, TrainSection, _Strict, checked, load_config
from robustmsa.data.dataset import DataBundle
from robustmsa.debias.categorize import category_counts
from robustmsa.debias.counterfactual import collect_components
from robustmsa.debias.experts import MMEJD
from robustmsa.debias.mctd import MCTD
from robustmsa.debias.mid import MID, check_range, debiased_modalities
from robustmsa.debias.mrid import MRID, as_router_config, fit_router, split_categories
from robustmsa.debias.router import oracle_bound, router_analysis
from robustmsa.debias.text_cf import AttributionExtractor, LexiconPosExtractor, LocalLMExtractor, check_ratio, make_counterfactual_bundle, mask_embedding
from robustmsa.errors import ConfigError
from robustmsa.evaluation.compare import bootstrap_differences, interval_text, recorded_predictions
from robustmsa.evaluation.cost import COST_COLUMNS, CostMeter, cost_table
from robustmsa.evaluation.protocols import Resumable, check_numbers, run_seeds, split_fingerprints
from robustmsa.evaluation.report import format_value, markdown_table, write_results, write_text_atomic
from robustmsa.features.text import TextEncoder, build_text_encoder
from robustmsa.folders import holds_output, prepare_out_dir
from robustmsa.method import Method, Supervised
from robustmsa.metrics import task_metrics
from robustmsa.registry import BACKBONES, check_parameters
from robustmsa.training.fit import check_fit, fit, predict, seeded, world_size

METHOD_NAMES = ("base", "base+FT", "MID", "MCTD", "MME-JD", "MRID")
#: The control for the methods trained further from the base (MCTD, the MME-JD experts): the base fine-tuned with the
#: same settings and no counterfactual term, so a gain can be told apart from the extra training.
CONTROL = "base+FT"
METRIC_COLUMNS = ("Acc", "F1", "Precision", "Recall", "Macro_F1", "Weighted_F1")
#: Cost stages each method needs (training / inference), see :func:`_run_seed`.
COST_RECIPES = {
    "base": {"train": ["base_train"], "infer": ["base_infer"]},
    "base+FT": {"train": ["base_train", "ft_train"], "infer": ["base+FT_infer"]},
    "MID": {"train": ["base_train", "cf_train", "mid_tune"], "infer": ["cf_test", "MID_infer"]},
    "MCTD": {"train": ["base_train", "cf_train", "mctd_train"], "infer": ["MCTD_infer"]},
    "MME-JD": {"train": ["base_train", "cf_train", "router_fit", "experts_train", "mme_tune"], "infer": ["cf_test", "MME-JD_infer"]},
    "MRID": {"train": ["base_train", "cf_train", "router_fit", "mrid_tune"], "infer": ["cf_test", "MRID_infer"]},
}
MODEL_FREE_TEXT_CF = {"lexicon_pos": LexiconPosExtractor, "local_lm": LocalLMExtractor}
#: Text counterfactuals made per seed with the trained base model (occlusion or gradient attribution).
MODEL_TEXT_CF = {"attribution": AttributionExtractor}


def _counterfactual_makers(kind: str) -> dict[str, tuple[Any, int]]:
    """Name -> (the class that makes the ``kind`` ('text' / 'image') counterfactuals, how many positional arguments
    the protocol gives it)."""
    if kind == "text":
        return {**{name: (maker, 0) for name, maker in MODEL_FREE_TEXT_CF.items()}, **{name: (maker, 2) for name, maker in MODEL_TEXT_CF.items()}}
    from robustmsa.debias.image_cf import AttributeMasker, SaliencyImageCounterfactual

    return {"attribute_mask": (AttributeMasker, 1), "saliency": (SaliencyImageCounterfactual, 2)}


def _counterfactual(kind: str) -> Any:
    """A validator of ``counterfactual.<kind>`` when the config is read: a known name, parameters its maker takes, a
    ratio in (0, 1] (instead of failing once the base model has trained)."""

    def check(component: ComponentConfig | None) -> None:
        if component is None:
            return
        makers = _counterfactual_makers(kind)
        if component.name not in makers:
            raise ConfigError(f"must be one of {sorted(makers)}, got '{component.name}'")
        maker, supplied = makers[component.name]
        check_parameters(maker, component.params, supplied, f"'{component.name}'")
        if "ratio" in component.params:
            check_ratio(component.params["ratio"], "ratio")

    return checked(check)


class CounterfactualSection(_Strict):
    """How counterfactual inputs are made (None: not made; inputs already in the data are used as they are).

    ``text``: ``lexicon_pos`` or ``local_lm`` (model-free, built once) or
    ``attribution`` (occlusion / gradient attribution of each seed's trained
    base model, made per seed), with the extractor's parameters. ``image``: ``attribute_mask`` (the trained base
    model's most salient attribute tokens replaced by the ``[MASK]`` word
    vector; parameters of :class:`~robustmsa.debias.image_cf.AttributeMasker`)
    or, for real images (data parameter ``image_folder``), ``saliency`` (the
    attention-mask procedure; parameters of
    :class:`~robustmsa.debias.image_cf.SaliencyImageCounterfactual`).
    """

    text: Annotated[ComponentConfig | None, _counterfactual("text")] = Field(default_factory=lambda: ComponentConfig(name="lexicon_pos", params={"ratio": 0.3}))
    image: Annotated[ComponentConfig | None, _counterfactual("image")] = Field(default_factory=lambda: ComponentConfig(name="attribute_mask", params={"ratio": 0.4}))


class MethodsSection(_Strict):
    """Settings of the debiasing methods."""

    modalities: list[str] = Field(default_factory=lambda: ["image", "text"])
    eps: float = Field(0.1, ge=0)
    mid_range: Annotated[tuple[float, float], checked(check_range)] = (0.0, 1.0)
    mrid_range: Annotated[tuple[float, float], checked(check_range)] = (0.0, 1.0)
    mme_range: Annotated[tuple[float, float], checked(check_range)] = (0.0, 2.0)
    cf_weight: float = Field(1.0, ge=0)
    finetune: TrainSection | None = None  # MCTD and the debiasing experts (default: the base's training settings)
    router: Annotated[dict[str, Any], checked(as_router_config)] = Field(default_factory=dict)  # RouterConfig fields
    tune_metric: str | None = None  # default F1
    n_trials: int = Field(50, ge=1, le=50)


class ImageTextProtocolConfig(PluginConfig):
    """The protocol config (YAML: ``configs/image_text/*.yaml``)."""

    data: ComponentConfig
    backbone: BackboneComponent = Field(default_factory=lambda: ComponentConfig(name="image_text"))
    train: TrainSection = Field(default_factory=TrainSection)
    counterfactual: CounterfactualSection = Field(default_factory=CounterfactualSection)
    methods: MethodsSection = Field(default_factory=MethodsSection)
    seeds: Seeds = Field(default_factory=lambda: [0, 1, 2])
    train_limit: int | None = Field(None, ge=1)  # random subset of the training split (quick runs)
    #: Draws of the test split for the intervals of each method's F1 difference to the base and to base+FT
    #: (robustmsa.evaluation.compare.bootstrap_differences); 0: none. Not a training setting: finished records are kept.
    bootstrap: int = Field(1000, ge=0)


def load_protocol_config(path: Path | str) -> ImageTextProtocolConfig:
    """Read and validate a protocol YAML file (ConfigError naming the file and the field)."""
    return load_config(path, ImageTextProtocolConfig)


def _text_encoder(cfg: ImageTextProtocolConfig) -> TextEncoder:
    """The text encoder the data source used (its ``text_encoder`` / ``cache_dir`` parameters)."""
    params = cfg.data.params
    encoder = params.get("text_encoder", "minilm")
    return build_text_encoder(encoder, params.get("cache_dir")) if isinstance(encoder, str) else encoder


def limit_train(bundle: DataBundle, limit: int | None, seed: int = 0) -> DataBundle:
    """``bundle`` with a random subset of ``limit`` training samples (order kept; ``seed`` fixed, not the run seed)."""
    train = bundle["train"]
    if limit is None or limit >= len(train):
        return bundle
    keep = np.sort(np.random.default_rng(seed).choice(len(train), size=limit, replace=False))
    meta = {**bundle.meta, "train_limit": limit, "train_size_full": len(train)}
    return DataBundle({**bundle.splits, "train": train.subset(keep.tolist())}, bundle.task, name=bundle.name, meta=meta)


def _has_extra(bundle: DataBundle, key: str, splits: Sequence[str] = ("train",)) -> bool:
    """Whether the samples of ``splits`` already carry ``extras[key]`` (checked on each split's first sample)."""
    return all(key in bundle[name][0].extras for name in splits)


def load_image_text_bundle(cfg: ImageTextProtocolConfig) -> DataBundle:
    """The configured data, training subset applied, with the model-free counterfactuals attached."""
    bundle = limit_train(cfg.build_data(), cfg.train_limit)
    return attach_model_free_counterfactuals(cfg, bundle)


def attach_model_free_counterfactuals(cfg: ImageTextProtocolConfig, bundle: DataBundle) -> DataBundle:
    """Counterfactuals that need no trained model, made once: lexicon / local-LM text, saliency-masked real images."""
    text, image = cfg.counterfactual.text, cfg.counterfactual.image
    extractor = masker = None
    if text is not None and text.name not in MODEL_TEXT_CF and not _has_extra(bundle, "text_cf"):
        extractor = MODEL_FREE_TEXT_CF[text.name](**text.params)
    if image is not None and image.name == "saliency" and "image" in bundle.dims() and not _has_extra(bundle, "image_cf"):
        folder = bundle.meta.get("image_folder")
        if folder is None:
            raise ConfigError("counterfactual.image 'saliency' needs real images (data parameter image_folder); for image attribute words use 'attribute_mask'")
        from robustmsa.debias.image_cf import SaliencyImageCounterfactual
        from robustmsa.features.image import build_image_encoder

        encoder = build_image_encoder(cfg.data.params.get("cache_dir"))
        masker = SaliencyImageCounterfactual(folder, encoder, image_ids=bundle.meta.get("image_ids"), **image.params)
    if extractor is None and masker is None:
        return bundle
    return make_counterfactual_bundle(bundle, extractor, masker, _text_encoder(cfg), cache_dir=cfg.data.params.get("cache_dir"))


def _model_counterfactuals(cfg: ImageTextProtocolConfig, bundle: DataBundle, base: Method, splits: Sequence[str]) -> DataBundle:
    """Counterfactuals made with the trained base model: image attributes, and text when ``counterfactual.text`` is ``attribution``.

    Made only when configured and absent from the data (images only when the data has a visual modality).
    """
    image, text = cfg.counterfactual.image, cfg.counterfactual.text
    encoder = _text_encoder(cfg)
    masker = extractor = None
    if image is not None and image.name != "saliency" and "image" in bundle.dims() and not _has_extra(bundle, "image_cf", splits):
        if "image_folder" in bundle.meta:
            raise ConfigError("counterfactual.image 'attribute_mask' masks image attribute words; this data has real images: use 'saliency'")
        from robustmsa.debias.image_cf import AttributeMasker

        masker = AttributeMasker(base, replacement=mask_embedding(encoder), **image.params)
    if text is not None and text.name in MODEL_TEXT_CF and not _has_extra(bundle, "text_cf", splits):
        extractor = MODEL_TEXT_CF[text.name](base, encoder, **{"replacement": mask_embedding(encoder), **text.params})
    if masker is None and extractor is None:
        return bundle
    return make_counterfactual_bundle(bundle, extractor, masker, encoder, cache_dir=cfg.data.params.get("cache_dir"), splits=splits)


def _run_seed(cfg: ImageTextProtocolConfig, bundle: DataBundle, seed: int) -> dict[str, Any]:
    meter = CostMeter()
    train_cfg = cfg.train.to_train_config()
    finetune_cfg = (cfg.methods.finetune or cfg.train).to_train_config()
    m = cfg.methods
    modalities = debiased_modalities(m.modalities, bundle.dims())
    common = {"modalities": modalities, "tune_metric": m.tune_metric, "n_trials": m.n_trials, "tune_seed": seed}
    with seeded(seed):
        base = Supervised(BACKBONES.build(cfg.backbone.name, bundle.dims(), bundle.task, **cfg.backbone.params))
    with meter.measure("base_train", base):
        base_fit = fit(base, bundle, train_cfg, seed=seed)
    with meter.measure("cf_train", base):
        data = _model_counterfactuals(cfg, bundle, base, ("train", "valid"))
    with meter.measure("cf_test", base):
        data = _model_counterfactuals(cfg, data, base, ("test",))

    mid = MID.from_base(base, alpha_range=m.mid_range, beta_range=m.mid_range, **common)
    with meter.measure("mid_tune", mid):
        calibration = {"MID": mid.calibrate(data)}
    with meter.measure("router_fit", base):
        router_fit, router_record = fit_router(base.backbone, data, modalities, as_router_config(m.router), eps=m.eps, seed=seed)
    mrid = MRID.from_base(base, router_fit.router, eps=m.eps, weight_range=m.mrid_range, **common)
    with meter.measure("mrid_tune", mrid):
        calibration["MRID"] = mrid.calibrate(data)
    with seeded(seed):
        mctd = MCTD(copy.deepcopy(base.backbone), modalities=modalities, cf_weight=m.cf_weight, eps=m.eps)
    with meter.measure("mctd_train", mctd):
        mctd_fit = fit(mctd, data, finetune_cfg, seed=seed)
    with seeded(seed):
        tuned = Supervised(copy.deepcopy(base.backbone))
    with meter.measure("ft_train", tuned):
        tuned_fit = fit(tuned, data, finetune_cfg, seed=seed)
    mme = MMEJD.from_base(base, router_fit.router, eps=m.eps, cf_weight=m.cf_weight, weight_range=m.mme_range, expert_train=finetune_cfg, **common)
    with meter.measure("experts_train", mme):
        experts = mme.train_experts(data, seed=seed)
    with meter.measure("mme_tune", mme):
        calibration["MME-JD"] = {**experts, **mme.calibrate(data)}

    test = data["test"]
    truth = test.labels()
    runs: dict[str, tuple[Method, str]] = {"base": (base, "factual"), CONTROL: (tuned, "factual"), "MID": (mid, "mid"), "MCTD": (mctd, "factual"), "MME-JD": (mme, "routed"), "MRID": (mrid, "routed")}
    metrics, predictions = {}, {}
    for name, (method, mode) in runs.items():
        with meter.measure(f"{name}_infer", method):
            pred = predict(method, test, mode)
        metrics[name] = task_metrics(pred, truth, bundle.task)
        predictions[name] = pred.tolist()

    components = collect_components(mrid, test)
    category = split_categories(components, test, m.eps)
    routed = components["route"].argmax(dim=-1).numpy()
    router = {
        "loss": router_fit.loss,
        "valid_f05": router_fit.valid_f05,
        "valid_f05_per_loss": router_fit.per_loss,
        "categories": {**{k.removeprefix("categories_"): v for k, v in router_record.items() if k.startswith("categories_")}, "test": category_counts(category)},
        "test": router_analysis(routed, category, mrid.strategies),
        "routed_share_test": {str(c): float(np.mean(routed == c)) for c in mrid.strategies},
        "oracle": {"MRID": oracle_bound(mrid, components, truth), "MME-JD": oracle_bound(mme, collect_components(mme, test), truth)},
    }
    return {
        "metrics": metrics,
        "calibration": calibration,
        "router": router,
        "cost": cost_table(meter, COST_RECIPES, base="base", n_test=len(test)),
        "epochs": {"base": base_fit.epochs, CONTROL: tuned_fit.epochs, "MCTD": mctd_fit.epochs},
        "valid": {"base": base_fit.best_score, CONTROL: tuned_fit.best_score, "MCTD": mctd_fit.best_score},
        "predictions": predictions,  # of the test split, for the bootstrap over its samples (kept in the record only)
    }


@holds_output
def run_image_text_protocol(
    config: ImageTextProtocolConfig | Path | str,
    out_dir: Path | str,
    seeds: Sequence[int] | None = None,
    *,
    bundle: DataBundle | None = None,
    overwrite: bool = False,
) -> dict[str, Any]:
    """Run the protocol over ``seeds`` (default: the config's); write ``image_text_<dataset>.json`` / ``.md`` into ``out_dir``.

    ``bundle``: data to use instead of loading ``config.data`` (model-free text
    counterfactuals are still attached when configured and absent).
    """
    cfg = config if isinstance(config, ImageTextProtocolConfig) else load_protocol_config(config)
    stem = f"image_text_{cfg.data.name}"
    out = prepare_out_dir(Path(out_dir), overwrite, marker=f"{stem}.json")
    data = attach_model_free_counterfactuals(cfg, limit_train(bundle, cfg.train_limit)) if bundle is not None else load_image_text_bundle(cfg)
    cfg.check_split_names(data)
    seeds = list(seeds if seeds is not None else cfg.seeds)
    prints = split_fingerprints(data, data.splits)
    shared = {"config": cfg.model_dump(mode="json", exclude={"seeds", "bootstrap"}), "splits": prints}
    settings = {seed: {**shared, "seed": seed} for seed in seeds}
    with cfg.naming_errors():  # a config unfit for the data fails before the folder is claimed
        debiased_modalities(cfg.methods.modalities, data.dims())
        check_fit(Supervised(BACKBONES.build(cfg.backbone.name, data.dims(), data.task, **cfg.backbone.params)), data, cfg.train.to_train_config())
        for section, train in (("train", cfg.train), ("methods.finetune", cfg.methods.finetune)):
            if train is not None and world_size(train.to_train_config()) > 1:
                raise ConfigError(
                    f"{section}.devices: this protocol counts the forward passes of every training for its cost table, in its own process; "
                    "train on one device (devices: 1)"
                )
    records = {seed: out / f"seed_{seed}.json" for seed in seeds}

    def check(result: Mapping[str, Any]) -> None:
        check_numbers(result, *(f"metrics.{m}" for m in METHOD_NAMES))

    units = Resumable(records, settings, overwrite, folder=out, shared=shared, check=check, replaces=(f"{stem}.json", f"{stem}.md"))
    recorded: dict[int, Any] = {}

    def unit(seed: int) -> dict[str, Any]:
        """A finished seed without its per-sample predictions (kept in its record, not in the results), set apart."""
        result = dict(units.run(seed, lambda: _run_seed(cfg, data, seed)))
        recorded[seed] = result.pop("predictions", None)
        return result

    results = run_seeds(unit, seeds)
    if cfg.bootstrap:
        results["intervals"] = f1_intervals(recorded, data["test"], cfg.bootstrap, records)
    results["config"] = cfg.model_dump(mode="json")
    results["data"] = {"name": data.name, "sizes": {k: len(v) for k, v in data.splits.items()}, "modalities": sorted(data.dims()), "meta": _plain(data.meta)}
    write_text_atomic(out / f"{stem}.md", protocol_report(results))
    write_results(out / f"{stem}.json", results)  # last: a folder with it holds a finished run
    return results


def f1_intervals(recorded: Mapping[int, Any], test: Any, resamples: int, files: Mapping[int, Path]) -> dict[str, Any] | None:
    """Bootstrap intervals of each method's F1 minus the base's and minus base+FT's, averaged over the seeds, over
    ``resamples`` draws of the test split (the same draws for both): ``{'vs_base' / 'vs_control': {method: {'low',
    'high', 'finite'}}, 'unit', 'count', 'resamples', 'level'}``. None when a seed's record holds no predictions
    (written before they were recorded)."""
    if any(by_method is None for by_method in recorded.values()):
        return None
    truth = test.labels()
    predictions: dict[str, list[np.ndarray]] = {name: [] for name in METHOD_NAMES}
    for seed, by_method in recorded.items():
        for name in METHOD_NAMES:
            values = by_method.get(name) if isinstance(by_method, dict) else None
            predictions[name].append(recorded_predictions(values, len(truth), files[seed], f"result.predictions.{name}", test.name))
    out: dict[str, Any] = {"resamples": resamples, "level": 0.95}
    groups = [s.group for s in test]
    for key, reference in (("vs_base", "base"), ("vs_control", CONTROL)):
        rng = np.random.default_rng(0)  # the same draws for both references
        out[key], units = bootstrap_differences(predictions, truth, groups, test.task, reference, resamples, out["level"], rng, metrics=["F1"])
        out[key] = {name: by_metric["F1"] for name, by_metric in out[key].items()}
    return {**out, **units}


def _plain(value: Any) -> Any:
    """JSON-friendly copy of bundle metadata (numbers, strings, lists, dicts)."""
    if isinstance(value, Mapping):
        return {str(k): _plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    return value if isinstance(value, (int, float, str, bool)) or value is None else str(value)


def _mean(cell: Any) -> float:
    return float(cell["mean"]) if isinstance(cell, Mapping) and cell.get("mean") is not None else float("nan")


def _count(cell: Any) -> str:
    """A count (mean ± std over seeds) without decimals."""
    return f"{cell['mean']:.0f} ± {cell['std']:.1f}" if cell.get("n", 1) > 1 else f"{cell['mean']:.0f}"


def protocol_report(results: Mapping[str, Any]) -> str:
    """Markdown: test metrics, difference to the base, router analysis, oracle bound, categories and cost."""
    agg = results["aggregate"]
    data = results["data"]
    lines = [
        f"# Image-text debiasing on {data['name']}",
        "",
        f"Seeds {results['seeds']} (mean ± sample std); test split; sizes {data['sizes']}; modalities {data['modalities']}.",
        "All weights, checkpoints and router losses chosen on validation data only.",
        "",
        "## Test metrics",
        "",
        markdown_table({name: agg["metrics"][name] for name in METHOD_NAMES}, list(METRIC_COLUMNS), row_header="method"),
        f"{CONTROL}: the base fine-tuned with the settings of MCTD and the MME-JD experts, without a counterfactual term "
        "(the control for their extra training).",
        "",
        "## F1 difference to the base model",
        "",
        f"| method | ΔF1 (mean) | std of method | std of base | Δ > both stds | ΔF1 vs {CONTROL} |",
        "|---|---|---|---|---|---|",
    ]
    base, control = agg["metrics"]["base"]["F1"], agg["metrics"][CONTROL]["F1"]
    intervals = results.get("intervals")

    def interval(key: str, name: str) -> str:
        return interval_text(intervals[key].get(name) if intervals else None, "F1")

    for name in METHOD_NAMES[1:]:
        cell = agg["metrics"][name]["F1"]
        delta = _mean(cell) - _mean(base)
        beats = "n/a (one seed)" if base["n"] < 2 else "yes" if math.isfinite(delta) and delta > max(cell["std"], base["std"]) else "no"
        versus = "" if name == CONTROL else f"{100 * (_mean(cell) - _mean(control)):+.2f}{interval('vs_control', name)}"
        lines.append(f"| {name} | {100 * delta:+.2f}{interval('vs_base', name)} | {100 * cell['std']:.2f} | {100 * base['std']:.2f} | {beats} | {versus} |")
    if intervals:
        unit = "videos" if intervals["unit"] == "group" else "samples"
        lines += [
            "",
            f"In brackets: the {intervals['level']:.0%} interval of the difference (averaged over the seeds) over {intervals['resamples']} bootstrap draws "
            f"of the test split ({intervals['count']} {unit}): the test-sampling noise, which the stds do not show; * where it excludes 0.",
        ]
    elif results["config"].get("bootstrap"):
        lines += ["", "No bootstrap interval: the run's records hold no per-sample predictions (written by an earlier version); rerun with --overwrite for them."]
    router = agg["router"]
    test = router["test"]
    lines += ["", "## Router on the test set (categories of the base model)", ""]
    if "per_category" in test:
        per_category = {name: {**row, "support": _count(row["support"])} for name, row in test["per_category"].items()}
        lines.append(markdown_table(per_category, ["Precision", "Recall", "F0.5", "support"], row_header="category"))
        lines += ["Confusion matrix (rows: true category, columns: routed strategy; counts, mean ± std over seeds):", ""]
        confusion = {name: {k: _count(v) for k, v in row.items()} for name, row in test["confusion"].items()}
        lines.append(markdown_table(confusion, list(confusion), row_header="true \\ routed"))
        lines.append(f"Routing accuracy {format_value(test['accuracy'], 'Acc')} % on {_mean(test['n']):.0f} categorised samples ({_mean(test['n_excluded']):.0f} excluded).\n")
    lines += ["## Oracle router (upper bound) vs the learned router", ""]
    oracle = {f"{name} oracle": router["oracle"][name] for name in ("MRID", "MME-JD")}
    lines.append(markdown_table({**oracle, "MRID": agg["metrics"]["MRID"], "MME-JD": agg["metrics"]["MME-JD"]}, list(METRIC_COLUMNS), row_header="router"))
    lines += ["## Sample categories (base model, tolerance eps)", ""]
    categories = {split: {k: _count(v) for k, v in counts.items()} for split, counts in router["categories"].items()}
    lines.append(markdown_table(categories, ["none", "image", "text", "both", "excluded"], row_header="split"))
    lines += ["## Cost relative to the base model (forward passes counted with hooks; wall time)", ""]
    lines.append(markdown_table({name: agg["cost"][name] for name in METHOD_NAMES}, list(COST_COLUMNS), row_header="method"))
    lines.append("Forward passes: samples through the image-text backbone(s), training including validation passes; cf_* stages = counterfactual inputs made with the base model.\n")
    return "\n".join(lines)

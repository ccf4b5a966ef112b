"""The debiasing protocol of CLUE and CLEF: a backbone vs the same backbone + the method on IID and OOD tests.

``method`` is ``clue`` (the text shortcut, default) or ``clef`` (the scene-context
shortcut); its parameters sit under the key of the same name. For every label
scheme (``has0``, ``non0``, ``7class`` on continuous labels; ``classes`` for
data that already has classes) and every seed:

* **Base**: the backbone trained with the plain supervised method (checkpoint
  chosen on IID validation), evaluated on the IID test and the OOD test.
* **+CLUE / +CLEF**: the backbone wrapped by the method (checkpoint chosen on
  IID validation with TE, tau chosen on ``<method>.tau_split``, a validation
  split), evaluated with TE on the IID test and TIE on the OOD test (every
  mode is recorded).
* **Ablations** (for ``ablation_schemes``): the method with configuration
  changes (default, CLUE: without text branch, without multimodal branch,
  without KL; CLEF: without context branch, without KL, without masking).

The OOD split is the bundle's own ``test_ood`` (the generated corpora), a
split file, or one annealed here (:mod:`robustmsa.data.ood_split`). Results:
``results.json`` (per seed + mean +- std), ``report.md`` (Has0/Non0 Acc-2 and
F1, Acc-7; Acc and F1 for class data, mAP for multi-label data; for data with
classes also the base and +method per class on the OOD test: recall, or
average precision), for CLUE ``case_study.json`` /
``case_study.png`` (CLUE's figure 6: branch probabilities, TE, TIE and the
training label ratio of each word of chosen OOD samples) and, when annealed
here, ``split.json`` / ``label_ratios.png``. Each finished (scheme, seed) is
recorded in ``seed_<k>/<scheme>.json`` with the settings it was made with, so
a run that stopped part-way resumes there.
"""

from __future__ import annotations

import textwrap
from pathlib import Path
from typing import Annotated, Any, Literal

import numpy as np
from pydantic import Field, ValidationInfo, field_validator, model_validator

from robustmsa.config import BackboneComponent, ComponentConfig, PluginConfig, Seeds, TrainSection, _Strict, checked, load_config, parse_config
from robustmsa.data.dataset import DataBundle
from robustmsa.data.labels import MMSA_NAMES, SCHEMES, to_classification
from robustmsa.data.ood_split import (
    OODSplit,
    SplitSource,
    anneal_params,
    anneal_split,
    apply_split,
    plot_label_ratios,
    positive_share,
    prior_shift,
    tokenize,
    word_class_counts,
    write_split_file,
)
from robustmsa.debias.clue import CLUE
from robustmsa.debias.counterfactual import collect_components
from robustmsa.debias.direct_effect import check_debiased, train_debiased
from robustmsa.errors import ConfigError
from robustmsa.evaluation.compare import bootstrap_differences, interval_text, recorded_predictions
from robustmsa.evaluation.protocols import Resumable, check_numbers, run_seeds, split_fingerprints
from robustmsa.evaluation.report import _save, markdown_table, plt, write_json, write_results, write_text_atomic
from robustmsa.folders import holds_output, prepare_out_dir
from robustmsa.method import Supervised
from robustmsa.metrics import per_class_results
from robustmsa.registry import BACKBONES, METHODS
from robustmsa.training.fit import check_fit, evaluate, fit, predict, seeded

#: Table columns (MMSA names) -> (scheme, metric of the classification run).
COLUMNS = {column: (scheme, metric) for scheme, names in MMSA_NAMES.items() for metric, column in names.items()}
CLASS_COLUMNS = {"Acc": ("classes", "Acc"), "F1": ("classes", "F1"), "Macro_F1": ("classes", "Macro_F1"), "Weighted_F1": ("classes", "Weighted_F1")}
LABEL_COLUMNS = {"mAP": ("classes", "mAP"), "Macro_F1": ("classes", "Macro_F1"), "Micro_F1": ("classes", "Micro_F1"), "Acc": ("classes", "Acc")}  # multi-label
#: The ablations run when a config names none, per method.
DEFAULT_ABLATIONS: dict[str, dict[str, dict[str, Any]]] = {
    "clue": {"w/o text branch": {"use_text": False}, "w/o multimodal branch": {"use_multimodal": False}, "w/o KL": {"gamma": 0.0}},
    "clef": {"w/o context branch": {"use_context": False}, "w/o KL": {"gamma": 0.0}, "w/o masking": {"context_branch": {"input": "full"}}},
}
METHOD_LABELS = {"clue": "CLUE", "clef": "CLEF"}


class SplitSection(_Strict):
    """Where the OOD split comes from: an existing split file, or one annealed from the pooled corpus."""

    file: str | None = Field(None, min_length=1)
    generate: bool = False
    scheme: str = "has0"
    params: Annotated[dict[str, Any], checked(anneal_params)] = Field(default_factory=dict)  # AnnealParams fields

    @model_validator(mode="after")
    def _one_source(self) -> SplitSection:
        if self.file is not None and self.generate:
            raise ValueError("give either file (an existing split) or generate: true (anneal one), not both")
        if self.file is not None and self.params:
            raise ValueError("params are annealing settings: they apply with generate: true, not to an existing split file")
        return self


class CaseStudySection(_Strict):
    n: int = Field(4, ge=0)
    scheme: str | None = None  # default: the first scheme
    seed: int | None = None  # default: the first seed


#: Parameters of the ``clue`` / ``clef`` method, checked when the config is read.
CLUEParams = Annotated[dict[str, Any], checked(lambda params: METHODS.check("clue", params, 1))]
CLEFParams = Annotated[dict[str, Any], checked(lambda params: METHODS.check("clef", params, 1))]


#: A label scheme of the protocol: a classification view of continuous labels (data.labels.SCHEMES), or the
#: data's own classes.
SchemeName = Literal["has0", "non0", "7class", "classes"]


class CLUEProtocolConfig(PluginConfig):
    """The debiasing protocol config (YAML; see configs/clue/ and configs/clef/)."""

    name: str = "clue"
    method: Literal["clue", "clef"] = "clue"
    data: ComponentConfig
    split: SplitSection | None = None
    backbone: BackboneComponent
    clue: CLUEParams = Field(default_factory=dict)
    clef: CLEFParams = Field(default_factory=dict)
    schemes: list[SchemeName] | None = Field(None, min_length=1)  # default: has0, non0, 7class (regression data) or classes
    ablations: dict[str, dict[str, Any]] | None = None  # default: DEFAULT_ABLATIONS[method]
    ablation_schemes: list[SchemeName] = Field(default_factory=lambda: ["has0", "classes"])
    train: TrainSection = Field(default_factory=lambda: TrainSection(max_epochs=12, patience=4, progress=False))
    seeds: Seeds = Field(default_factory=lambda: [0, 1, 2])
    iid_test: str = "test"
    ood_test: str = "test_ood"
    case_study: CaseStudySection = Field(default_factory=CaseStudySection)
    #: Draws of each test split (whole videos where grouped) for the intervals of the method's gains over the base
    #: (robustmsa.evaluation.compare.bootstrap_differences); 0: none. Not a training setting: finished records are kept.
    bootstrap: int = Field(1000, ge=0)

    @field_validator("clue", "clef")
    @classmethod
    def _only_the_methods_parameters(cls, value: dict[str, Any], info: ValidationInfo) -> dict[str, Any]:
        method = info.data.get("method")
        if value and method is not None and info.field_name != method:
            raise ValueError(f"parameters of '{info.field_name}' given, but the protocol's method is '{method}'")
        return value

    @field_validator("ablations")
    @classmethod
    def _ablations_fit_the_method(cls, value: dict[str, dict[str, Any]] | None, info: ValidationInfo) -> dict[str, dict[str, Any]] | None:
        method = info.data.get("method")
        for label, change in (value or {}).items():
            if method is not None:
                try:
                    METHODS.check(method, {**info.data.get(method, {}), **change}, 1)
                except ConfigError as exc:
                    raise ValueError(f"'{label}': {exc}") from None
        return value

    @model_validator(mode="after")
    def _case_study_is_clues(self) -> CLUEProtocolConfig:
        if self.method != "clue" and "case_study" in self.model_fields_set and self.case_study.n:
            raise ValueError("case_study is CLUE's word-level case study; CLEF has none (remove the section or set n: 0)")
        return self

    @model_validator(mode="after")
    def _tests_are_not_selection_splits(self) -> CLUEProtocolConfig:
        """The reported tests are never the splits checkpoints or tau are chosen on, nor the training split."""
        chosen_on = {"train.valid_split": self.train.valid_split, f"{self.method}.tau_split": self.params.get("tau_split", "valid")}
        for label, change in self.method_ablations.items():
            chosen_on[f"ablations.{label}.tau_split"] = change.get("tau_split", chosen_on[f"{self.method}.tau_split"])
        for field in ("iid_test", "ood_test"):
            test = getattr(self, field)
            if test == "train":
                raise ValueError(f"{field} is the training split; a test must be held out")
            for where, split in chosen_on.items():
                if split == test:
                    raise ValueError(f"{field} '{test}' is the split {where} chooses on; a reported test must be held out from every choice")
        return self

    @property
    def params(self) -> dict[str, Any]:
        """The parameters of the protocol's method."""
        return self.clef if self.method == "clef" else self.clue

    @property
    def method_ablations(self) -> dict[str, dict[str, Any]]:
        """The ablations to run: the configured ones, or the method's defaults."""
        return DEFAULT_ABLATIONS[self.method] if self.ablations is None else self.ablations


def parse_protocol_config(data: Any, source: str = "<config>") -> CLUEProtocolConfig:
    """Validate a mapping as a :class:`CLUEProtocolConfig` (ConfigError naming the source and field)."""
    return parse_config(data, source, CLUEProtocolConfig)


def load_protocol_config(path: str | Path) -> CLUEProtocolConfig:
    """Read a protocol YAML file."""
    return load_config(path, CLUEProtocolConfig)


def load_data(config: CLUEProtocolConfig) -> DataBundle:
    """The configured data source."""
    return config.build_data()


def prepare_bundle(config: CLUEProtocolConfig, bundle: DataBundle) -> tuple[DataBundle, OODSplit | None]:
    """Apply or anneal the OOD split; the annealed split is returned too (written once the run has claimed its folder)."""
    section = config.split
    if section is not None and section.file:
        return apply_split(section.file, bundle), None
    if section is not None and section.generate:
        result = anneal_split(SplitSource.from_bundle(bundle, section.scheme), anneal_params(section.params))
        return apply_split(result, bundle), result
    if config.ood_test not in bundle:
        raise ConfigError(f"data '{bundle.name}' has no '{config.ood_test}' split; configure split.file or split.generate")
    return bundle, None


def schemes_of(config: CLUEProtocolConfig, bundle: DataBundle) -> list[str]:
    if bundle.task.kind in ("classification", "multilabel"):
        if config.schemes not in (None, ["classes"]):
            raise ConfigError(f"field 'schemes': data '{bundle.name}' has class labels; schemes must be ['classes'] (or left out), got {config.schemes}")
        return ["classes"]
    if config.schemes is not None and "classes" in config.schemes:
        raise ConfigError(f"field 'schemes': data '{bundle.name}' has continuous labels; scheme 'classes' needs class labels (schemes: {sorted(SCHEMES)})")
    return config.schemes or list(SCHEMES)


def _views(bundle: DataBundle, scheme: str) -> DataBundle:
    return bundle if scheme == "classes" else to_classification(bundle, scheme)


@holds_output
def run_clue_protocol(
    config: CLUEProtocolConfig, out_dir: str | Path, seeds: list[int] | None = None, *, overwrite: bool = False, bundle: DataBundle | None = None
) -> dict[str, Any]:
    """Run base vs +method (and ablations) over schemes and seeds; write results.json, report.md and CLUE's case study."""
    out = prepare_out_dir(Path(out_dir), overwrite)
    bundle, annealed = prepare_bundle(config, bundle if bundle is not None else load_data(config))
    seeds = list(seeds or config.seeds)
    config.check_split_names(bundle)
    bundle["train"]
    with config.naming_errors():
        schemes = schemes_of(config, bundle)
        case_scheme = config.case_study.scheme or schemes[0]
        case_seed = seeds[0] if config.case_study.seed is None else config.case_study.seed
        if config.case_study.n and config.method == "clue" and (case_scheme not in schemes or case_seed not in seeds):
            raise ConfigError(f"field 'case_study': scheme '{case_scheme}' and seed {case_seed} must be among the run's schemes {schemes} and seeds {seeds}")
        if config.method_ablations and not set(config.ablation_schemes) & set(schemes):
            raise ConfigError(f"field 'ablation_schemes': {config.ablation_schemes}: none is among the run's schemes {schemes}, so no ablation would run")
    train_cfg = config.train.to_train_config()
    results: dict[str, Any] = {"name": config.name, "config": config.model_dump(mode="json"), "sizes": {n: len(s) for n, s in bundle.splits.items()}, "schemes": {}}
    views = {scheme: _views(bundle, scheme) for scheme in schemes}
    results["label_prior"] = label_priors(views, config.ood_test)
    shared = {"config": config.model_dump(mode="json", exclude={"seeds", "bootstrap"}), "case_study": [case_scheme, case_seed]}
    settings = {(scheme, seed): {**shared, "splits": split_fingerprints(views[scheme], views[scheme].splits), "scheme": scheme, "seed": seed} for scheme in schemes for seed in seeds}
    with config.naming_errors():  # a config unfit for the data fails before the folder is claimed
        for scheme, data in views.items():
            check_fit(Supervised(BACKBONES.build(config.backbone.name, data.dims(), data.task, **config.backbone.params)), data, train_cfg)
            variants = {config.method: config.params, **{f"ablations.{label}": {**config.params, **change} for label, change in config.method_ablations.items() if scheme in config.ablation_schemes}}
            for field, params in variants.items():  # the method's parameter values too (a fusion it lacks), as it will train
                try:
                    check_debiased(config.method, data, config.backbone.name, config.backbone.params, train_cfg, **params)
                except ConfigError as exc:
                    raise ConfigError(f"field '{field}': {exc}") from None
    records = {key: out / f"seed_{key[1]}" / f"{key[0]}.json" for key in settings}
    rows = ("base", config.method)
    units = Resumable(records, settings, overwrite, folder=out, shared=shared, check=lambda row: check_numbers(row, *(f"{r}.{s}" for r in rows for s in ("iid", "ood"))))
    if annealed is not None:
        write_split_file(out / "split.json", annealed)
        plot_label_ratios(annealed, out / "label_ratios.png")

    def train_row(scheme: str, seed: int) -> dict[str, Any]:
        """Base, +method and the ablations trained and evaluated for one scheme and seed."""
        data = views[scheme]
        with seeded(seed):
            base = Supervised(BACKBONES.build(config.backbone.name, data.dims(), data.task, **config.backbone.params))
        fit(base, data, train_cfg, seed=seed)
        row: dict[str, Any] = {"base": _evaluate(base, data, config, ("factual", "factual"))}
        debiased, chosen = train_debiased(config.method, data, config.backbone.name, config.backbone.params, train_cfg, seed, **config.params)
        row[config.method] = {**_evaluate(debiased, data, config, ("te", "tie")), "tau": chosen["tau"], "calibration": chosen}
        row["predictions"] = {  # for the bootstrap over test samples, which needs every seed's (recorded, so a run resumes)
            part: {"base": predict(base, data[split], "factual").tolist(), config.method: predict(debiased, data[split], mode).tolist()}
            for part, split, mode in (("iid", config.iid_test, "te"), ("ood", config.ood_test, "tie"))
        }
        if scheme in config.ablation_schemes:
            for label, change in config.method_ablations.items():
                ablated, info = train_debiased(config.method, data, config.backbone.name, config.backbone.params, train_cfg, seed, **{**config.params, **change})
                row[label] = {**_evaluate(ablated, data, config, ("te", "tie")), "tau": info["tau"]}
        if scheme == "classes":  # which classes the debiasing helps on the OOD test (CLEF's per-category analysis)
            row["per_class"] = {"base": per_class(base, data, config.ood_test, "factual"), config.method: per_class(debiased, data, config.ood_test, "tie")}
        if isinstance(debiased, CLUE) and scheme == case_scheme and seed == case_seed and config.case_study.n:
            row["case_study"] = case_study(debiased, base, data, config.ood_test, out, n=config.case_study.n)
        return row

    def unit(scheme: str, seed: int, recorded: dict[int, Any]) -> dict[str, Any]:
        """A finished row without its per-sample predictions (kept in its record, not in results), set apart."""
        row = dict(units.run((scheme, seed), lambda: train_row(scheme, seed)))
        recorded[seed] = row.pop("predictions", None)
        return row

    for scheme in schemes:
        recorded: dict[int, Any] = {}
        results["schemes"][scheme] = run_seeds(lambda seed, scheme=scheme, recorded=recorded: unit(scheme, seed, recorded), seeds)
        if config.bootstrap:
            results["schemes"][scheme]["intervals"] = gain_intervals(recorded, views[scheme], config, {seed: records[scheme, seed] for seed in seeds})
    results["seeds"] = seeds
    write_text_atomic(out / "report.md", protocol_report(results, config, bundle))
    write_results(out / "results.json", results)  # last: a folder with results.json holds a finished run
    return results


def _evaluate(method: Any, data: DataBundle, config: CLUEProtocolConfig, modes: tuple[str, str]) -> dict[str, Any]:
    """``{'iid': metrics, 'ood': metrics, 'all_modes': {split: {mode: metrics}}}`` (IID with modes[0], OOD with modes[1])."""
    every = {name: evaluate(method, data[name]) for name in (config.iid_test, config.ood_test)}
    return {"iid": every[config.iid_test][modes[0]], "ood": every[config.ood_test][modes[1]], "all_modes": every}


def gain_intervals(recorded: dict[int, Any], data: DataBundle, config: CLUEProtocolConfig, files: dict[int, Path]) -> dict[str, Any] | None:
    """Bootstrap intervals of the method minus the base, averaged over the seeds, on the IID test (TE) and the OOD
    test (TIE): ``{'iid' / 'ood': {'interval': {metric: {'low', 'high', 'finite'}}, 'unit', 'count'}, 'resamples',
    'level'}``. None when a seed's record holds no predictions (written before they were recorded)."""
    if any(recorded[seed] is None for seed in recorded):
        return None
    rng = np.random.default_rng(0)
    out: dict[str, Any] = {"resamples": config.bootstrap, "level": 0.95}
    for part, name in (("iid", config.iid_test), ("ood", config.ood_test)):
        split = data[name]
        truth = split.labels()
        predictions: dict[str, list[np.ndarray]] = {"base": [], config.method: []}
        for seed, by_part in recorded.items():
            for model in predictions:
                values = by_part[part].get(model) if isinstance(by_part, dict) and isinstance(by_part.get(part), dict) else None
                predictions[model].append(recorded_predictions(values, len(truth), files[seed], f"result.predictions.{part}.{model}", name))
        headline = "mAP" if split.task.kind == "multilabel" else "Acc"  # the report's gain columns
        intervals, units = bootstrap_differences(predictions, truth, [s.group for s in split], split.task, "base", config.bootstrap, out["level"], rng, metrics=[headline])
        out[part] = {"interval": intervals[config.method], **units}
    return out


def columns_of(kind: str) -> dict[str, tuple[str, str]]:
    """The table's columns for a task kind: MMSA's for continuous labels, class or multi-label metrics otherwise."""
    return {"regression": COLUMNS, "classification": CLASS_COLUMNS, "multilabel": LABEL_COLUMNS}[kind]


def split_titles(config: CLUEProtocolConfig) -> tuple[str, str]:
    """How the report names the two tests: 'IID test' and 'OOD test', or the split's name when both are one split."""
    return ("IID test", "OOD test") if config.iid_test != config.ood_test else (config.iid_test, config.ood_test)


def label_priors(views: dict[str, DataBundle], ood_test: str) -> dict[str, dict[str, Any]]:
    """Per class scheme: samples per class in train and the OOD test, and the total variation distance between them
    (an OOD test that differs mostly in its class balance tests a label-prior shift, not word shortcuts)."""
    out = {}
    for scheme, data in views.items():
        if data.task.kind != "classification":
            continue
        counts = {name: np.bincount(data[name].labels().astype(np.int64), minlength=data.task.num_classes).tolist() for name in ("train", ood_test)}
        out[scheme] = {**counts, "shift": prior_shift(counts["train"], counts[ood_test])}
    return out


def per_class(method: Any, data: DataBundle, split: str, mode: str) -> dict[str, float]:
    """Per class on ``split`` in ``mode``: recall for class data, average precision for multi-label data."""
    names = data.task.label_names
    return per_class_results(predict(method, data[split], mode), data[split].labels(), data.task.kind, names)


def prior_lines(results: dict[str, Any], ood_test: str) -> list[str]:
    """Report lines: how far the OOD test's class balance is from the training split's."""
    priors = results.get("label_prior") or {}
    if not priors:
        return []
    shifts = ", ".join(f"{scheme} {value['shift']:.3f} (per class: train {value['train']}, {ood_test} {value[ood_test]})" for scheme, value in priors.items())
    return [
        f"Label-prior shift train → {ood_test} (total variation distance of the class shares; 0: same balance): {shifts}. "
        "A large shift makes the OOD test partly a class-balance test; an annealed split can bound it (`split.params.max_prior_shift`).",
        "",
    ]


def per_class_table(results: dict[str, Any], method: str, ood: str, multilabel: bool) -> list[str]:
    """Report lines: per class, the base and +method on the OOD test (mean over seeds) and the gain, largest first."""
    agg = results["schemes"].get("classes", {}).get("aggregate", {}).get("per_class")
    if not agg or method not in agg:
        return []
    shown = METHOD_LABELS[method]
    gains = {name: 100 * (agg[method][name]["mean"] - value["mean"]) for name, value in agg["base"].items() if name in agg[method]}
    lines = [
        f"## Per class on {ood} ({'average precision' if multilabel else 'recall'}, %, mean over seeds)",
        "",
        f"| class | base | +{shown} (TIE) | gain |",
        "|---|---|---|---|",
    ]
    for name in sorted(gains, key=gains.get, reverse=True):
        lines.append(f"| {name} | {100 * agg['base'][name]['mean']:.2f} | {100 * agg[method][name]['mean']:.2f} | {gains[name]:+.2f} |")
    return [*lines, ""]


def table_rows(
    results: dict[str, Any], ablations: list[str], method: str = "clue", tests: tuple[str, str] = ("IID test", "OOD test"), kind: str = "regression"
) -> dict[str, dict[str, Any]]:
    """Markdown rows ``{row: {column: {'mean', 'std', 'n'}}}`` from the aggregated results (``kind``: the task's)."""
    rows: dict[str, dict[str, Any]] = {}
    columns = columns_of(kind)
    shown = METHOD_LABELS[method]
    models = {"base": "Base", method: f"+{shown}", **{a: f"+{shown} {a}" for a in ablations}}
    for key, label in models.items():
        for part, title in (("iid", f"{tests[0]} (TE)" if key != "base" else tests[0]), ("ood", f"{tests[1]} (TIE)" if key != "base" else tests[1])):
            row: dict[str, Any] = {}
            for column, (scheme, metric) in columns.items():
                agg = results["schemes"].get(scheme, {}).get("aggregate", {})
                value = agg.get(key, {}).get(part, {}).get(metric)
                if value is not None:
                    row[column] = value
            if row:
                rows[f"{label} — {title}"] = row
    return rows


def protocol_report(results: dict[str, Any], config: CLUEProtocolConfig, bundle: DataBundle) -> str:
    """Markdown report: the main table, OOD gains and chosen tau per scheme."""
    method, shown = config.method, METHOD_LABELS[config.method]
    iid, ood = split_titles(config)
    kind = bundle.task.kind
    rows = table_rows(results, list(config.method_ablations), method, (iid, ood), kind)
    columns = list(columns_of(kind))
    headline = "mAP" if "mAP" in columns else "Acc"
    lines = [
        f"# {shown} protocol: {config.backbone.name} vs {config.backbone.name} + {shown} on {bundle.name}",
        "",
        f"Splits: {results['sizes']}. Seeds {results['seeds']} (mean ± std). Metrics in % (MMSA's F1 is weighted; Macro/Micro as named).",
        f"Checkpoints are chosen on IID validation; {shown}'s tau on "
        f"'{config.params.get('tau_split', 'valid')}' (validation only). {iid}: TE; {ood}: TIE.",
        "",
        markdown_table(rows, columns, row_header="model — test set"),
        *prior_lines(results, config.ood_test),
        f"## Gain of +{shown} over the base ({headline}, points, mean over seeds)",
        "",
        f"| scheme | {iid} base | {iid} +{shown} (TE) | {ood} base | {ood} +{shown} (TIE) | TIE gain | TE change | tau per seed |",
        "|---|---|---|---|---|---|---|---|",
    ]
    def interval(res: dict[str, Any], part: str) -> str:
        found = (res.get("intervals") or {}).get(part)
        return interval_text(found and found["interval"][headline], headline)

    for scheme, res in results["schemes"].items():
        agg = res["aggregate"]
        values = [100 * agg[m][p][headline]["mean"] for m, p in (("base", "iid"), (method, "iid"), ("base", "ood"), (method, "ood"))]
        taus = [res["per_seed"][str(s)][method]["tau"] for s in res["seeds"]]
        gains = f"{values[3] - values[2]:+.2f}{interval(res, 'ood')} | {values[1] - values[0]:+.2f}{interval(res, 'iid')}"
        lines.append(f"| {scheme} | {values[0]:.2f} | {values[1]:.2f} | {values[2]:.2f} | {values[3]:.2f} | {gains} | {taus} |")
    lines.append("")
    boots = [res["intervals"] for res in results["schemes"].values() if res.get("intervals")]
    if boots:
        units = "; ".join(f"{split}: {boots[0][part]['count']} {'videos' if boots[0][part]['unit'] == 'group' else 'samples'}" for part, split in (("iid", iid), ("ood", ood)))
        lines += [
            f"In brackets: the {boots[0]['level']:.0%} interval of the gain (averaged over the seeds) over {boots[0]['resamples']} bootstrap draws of the test data "
            f"({units}): the test-sampling noise, which the seed spread above does not show; * where it excludes 0.",
            "",
        ]
    elif results["config"].get("bootstrap"):
        lines += ["No bootstrap interval: the run's records hold no per-sample predictions (written by an earlier version); rerun with --overwrite for them.", ""]
    lines += per_class_table(results, method, ood, kind == "multilabel")
    return "\n".join(lines)


# --------------------------------------------------------------------------
# Case study (CLUE's figure 6)
# --------------------------------------------------------------------------


def case_study(clue: CLUE, base: Supervised, data: DataBundle, split: str, out: Path, n: int = 4) -> dict[str, Any]:
    """Export ``n`` OOD samples: branch probabilities, TE, TIE, base, and each word's label ratio in training.

    Samples are chosen where TIE is right and TE wrong (then where they differ,
    then the first ones). Writes ``case_study.json`` and ``case_study.png``.
    """
    part = data[split]
    comps = collect_components(clue, part)
    tau = clue.inference_params["tau"]
    probs = {
        "text": comps["y_t"].softmax(-1).numpy(),
        "multimodal": comps["y_m"].softmax(-1).numpy(),
        "te": clue.combine(comps, "te", {}).numpy(),
        "nde": comps["nde"].softmax(-1).numpy(),
        "tie": clue.combine(comps, "tie", {"tau": tau}).numpy(),
        "base": predict(base, part, "factual"),
    }
    truth = part.labels()
    te_right = probs["te"].argmax(1) == truth
    tie_right = probs["tie"].argmax(1) == truth
    ranked = [*np.flatnonzero(tie_right & ~te_right), *np.flatnonzero(tie_right != te_right), *range(len(truth))]
    chosen = list(dict.fromkeys(int(i) for i in ranked))[:n]
    train = data["train"]
    stats = word_class_counts([s.raw_text or "" for s in train], train.labels().tolist(), data.task.num_classes)
    samples = []
    for i in chosen:
        s = part.samples[i]
        words = []
        for w in dict.fromkeys(tokenize(s.raw_text or "")):
            counts = stats.get(w)
            ratio = float(positive_share(counts[None])[0]) if counts is not None else None
            words.append({"word": w, "train_counts": counts.tolist() if counts is not None else None, "train_upper_share": ratio})
        samples.append(
            {
                "id": s.id,
                "text": s.raw_text,
                "label": s.label,
                "class": int(truth[i]),
                "probabilities": {k: [round(float(v), 4) for v in p[i]] for k, p in probs.items()},
                "prediction": {k: int(p[i].argmax()) for k, p in probs.items()},
                "words": words,
            }
        )
    export = {"split": split, "tau": tau, "class_names": list(data.task.class_names), "upper_classes": list(data.task.class_names[data.task.num_classes // 2 :]), "samples": samples}
    write_json(out / "case_study.json", export)
    if samples:
        plot_case_study(export, out / "case_study.png")
    return {"ids": [s["id"] for s in samples], "file": "case_study.json"}


def plot_case_study(export: dict[str, Any], path: Path) -> Path:
    """One row per sample: P(upper classes) per branch / rule, and the training label ratio of its words."""
    samples = export["samples"]
    upper = len(export["class_names"]) // 2
    fig, axes = plt.subplots(len(samples), 2, figsize=(11, 2.6 * len(samples)), squeeze=False, gridspec_kw={"width_ratios": [1, 2]})
    for row, s in zip(axes, samples):
        names = ["text", "multimodal", "te", "tie", "base"]
        values = [sum(s["probabilities"][k][upper:]) for k in names]
        row[0].barh(names, values, color=["#999", "#69c", "#c96", "#3a3", "#b55"])
        row[0].axvline(0.5, color="grey", lw=0.8, ls="--")
        row[0].set_xlim(0, 1)
        row[0].set_title(f"{s['id']}: true {export['class_names'][s['class']]}", fontsize=8)
        row[0].set_xlabel(f"P({'/'.join(export['upper_classes'])})", fontsize=8)
        words = [w for w in s["words"] if w["train_upper_share"] is not None]
        row[1].bar(range(len(words)), [w["train_upper_share"] for w in words], color="#69c")
        row[1].axhline(0.5, color="grey", lw=0.8, ls="--")
        row[1].set_xticks(range(len(words)), [w["word"] for w in words], rotation=60, ha="right", fontsize=7)
        row[1].set_ylim(0, 1)
        row[1].set_title(textwrap.shorten(s["text"] or "", 110), fontsize=7)
        row[1].set_ylabel("train label ratio", fontsize=8)
    fig.tight_layout()
    return _save(fig, path)

"""CLUE: fusion formulas, where gradients flow, TE/TIE, tau on validation, model-agnostic wrapping, protocol."""

from __future__ import annotations

import dataclasses
import json
import math

import numpy as np
import pytest
import torch

from robustmsa.data.batch import collate
from robustmsa.data.dataset import DataBundle, TaskSpec
from robustmsa.data.labels import to_classification
from robustmsa.data.mmsa import UNIMODAL_LABELS
from robustmsa.data.synthetic import SyntheticConfig, generate_corpus
from robustmsa.debias.clue import CLUE, build_clue, demo_entry, train_clue
from robustmsa.debias.counterfactual import collect_components
from robustmsa.debias.direct_effect import fuse
from robustmsa.errors import ConfigError, DataError
from robustmsa.evaluation.clue_protocol import gain_intervals, parse_protocol_config, run_clue_protocol
from robustmsa.evaluation.compare import _units
from robustmsa.registry import BACKBONES, METHODS
from robustmsa.training.fit import TrainConfig, evaluate, fit, seeded
from tests.conftest import make_toy_split

CLS2 = TaskSpec(kind="classification", num_classes=2, label_range=None)
FAST = TrainConfig(max_epochs=2, patience=1, progress=False, batch_size=32)


@pytest.fixture(scope="module")
def small() -> DataBundle:
    return generate_corpus(SyntheticConfig.small())


@pytest.fixture(scope="module")
def small_has0(small: DataBundle) -> DataBundle:
    return to_classification(small, "has0")


def toy_cls() -> DataBundle:
    return DataBundle({n: make_toy_split(k, n, s, task=CLS2) for n, k, s in (("train", 48, 0), ("valid", 24, 1), ("test", 24, 2))}, CLS2, name="toy")


def test_fusions_match_their_formulas() -> None:
    a, b = torch.randn(5, 3) * 3, torch.randn(5, 3) * 3
    sig = torch.sigmoid
    torch.testing.assert_close(fuse(a, b, "sum"), torch.log(sig(a + b)))
    z = sig(a) * sig(b)
    torch.testing.assert_close(fuse(a, b, "hm"), torch.log(z / (1 + z)))
    torch.testing.assert_close(fuse(a, b, "rubi"), b * sig(a))
    with pytest.raises(ConfigError):
        fuse(a, b, "max")


def test_gradients_of_each_term() -> None:
    bundle = toy_cls()
    batch = collate(bundle["train"].samples[:8])
    with seeded(0):
        method = CLUE(BACKBONES.build("lf_dnn", bundle.dims(), CLS2), text_branch={"input": "features"}, alpha=0.0, beta=0.0, gamma=1.0)
    method.y_cf.data.fill_(0.7)  # away from the optimum so the KL gradient is not zero
    method.training_loss(batch)["loss"].backward()
    assert method.y_cf.grad is not None and method.y_cf.grad.abs().sum() > 0
    for name, p in method.named_parameters():
        if name != "y_cf":
            assert p.grad is None or p.grad.abs().sum() == 0, f"KL term leaked a gradient into {name}"
    method.zero_grad(set_to_none=True)
    method.alpha, method.beta, method.gamma = 0.0, 1.0, 0.0
    method.training_loss(batch)["loss"].backward()
    assert method.y_cf.grad is None or method.y_cf.grad.abs().sum() == 0  # Y_m* learns only from the KL term
    assert any(p.grad is not None and p.grad.abs().sum() > 0 for p in method.text_branch.parameters())
    assert all(p.grad is None or p.grad.abs().sum() == 0 for p in method.backbone.parameters())


def test_te_and_tie_combination() -> None:
    bundle = toy_cls()
    with seeded(0):
        method = CLUE(BACKBONES.build("tfn", bundle.dims(), CLS2), text_branch={"input": "features", "encoder": "transformer"}, counterfactual="vector")
    method.eval()
    batch = collate(bundle["test"].samples[:6])
    comps = method.components(batch)
    assert set(comps) == {"y_t", "y_m", "te", "nde"} and comps["te"].shape == (6, 2)
    torch.testing.assert_close(comps["te"], torch.nn.functional.logsigmoid(comps["y_t"] + comps["y_m"]))
    torch.testing.assert_close(comps["nde"], torch.nn.functional.logsigmoid(comps["y_t"] + method.y_cf))
    method.set_inference_params(tau=0.5)
    torch.testing.assert_close(method.predict(batch, "tie"), (comps["te"] - 0.5 * comps["nde"]).softmax(-1))
    torch.testing.assert_close(method.predict(batch, "te"), comps["te"].softmax(-1))


def test_configuration_errors() -> None:
    bundle = toy_cls()
    backbone = BACKBONES.build("lf_dnn", bundle.dims(), CLS2)
    for split in ("test_ood", "train"):
        with pytest.raises(ConfigError, match=f"tau_split '{split}' cannot select tau: choose a validation split"):
            CLUE(backbone, text_branch={"input": "features"}, tau_split=split)
    with pytest.raises(ConfigError, match="tau_metric 'Acc7' is not a metric of a classification task"):
        CLUE(backbone, text_branch={"input": "features"}, tau_metric="Acc7")
    with pytest.raises(ConfigError, match="a negative tau adds the bias back"):
        CLUE(backbone, text_branch={"input": "features"}, tau_grid=[-1.0, 0.0])
    with pytest.raises(ConfigError, match=r"tau and tau_grid must be finite numbers >= 0 .*got 1.0 and \[nan\]"):
        CLUE(backbone, text_branch={"input": "features"}, tau_grid=[float("nan")])
    for weight in ("alpha", "gamma"):
        with pytest.raises(ConfigError, match=r"alpha, beta and gamma must be finite numbers >= 0, got .*(nan|inf)"):
            CLUE(backbone, text_branch={"input": "features"}, **{weight: float("nan") if weight == "alpha" else float("inf")})
    with pytest.raises(ConfigError, match="fusion"):
        CLUE(backbone, fusion="avg")
    with pytest.raises(ConfigError, match="at least one"):
        CLUE(backbone, use_text=False, use_multimodal=False)
    with pytest.raises(ConfigError, match="regression"):
        CLUE(BACKBONES.build("lf_dnn", bundle.dims(), TaskSpec()), fusion="hm")
    with pytest.raises(ConfigError, match="text_branch.input"):
        CLUE(backbone, text_branch={"input": "glove"})
    for c_lr in (0.0, -1.0, math.inf):
        with pytest.raises(ConfigError, match="c_lr must be a positive learning rate"):
            CLUE(backbone, text_branch={"input": "features"}, c_lr=c_lr)


def test_the_counterfactual_output_can_have_a_learning_rate_of_its_own() -> None:
    """c_lr: Y_m* in its own AdamW group (that lr, no weight decay); without it one group, as in the reference code;
    a larger lr moves Y_m* further in the same training."""
    from robustmsa.training.module import MethodModule, OptimConfig

    bundle = toy_cls()
    moved = {}
    for c_lr in (None, 0.05):
        with seeded(0):
            method = CLUE(BACKBONES.build("lf_dnn", bundle.dims(), CLS2), text_branch={"input": "features"}, c_lr=c_lr)
        optimizer = MethodModule(method, OptimConfig(lr=1e-3, weight_decay=0.01)).configure_optimizers()
        groups = optimizer.param_groups
        if c_lr is None:
            assert len(groups) == 1 and any(p is method.y_cf for p in groups[0]["params"])
        else:
            assert [g["lr"] for g in groups] == [1e-3, 0.05] and groups[1]["params"] == [method.y_cf] and groups[1]["weight_decay"] == 0.0
            assert sum(p.numel() for g in groups for p in g["params"]) == sum(p.numel() for p in method.parameters())
        fit(method, bundle, TrainConfig(max_epochs=2, patience=2, progress=False, batch_size=8), seed=0)
        moved[c_lr] = float(method.y_cf.detach().abs().max())
    assert moved[0.05] > 5 * moved[None] > 0


def test_wraps_every_backbone_with_its_auxiliary_losses() -> None:
    wrapped = []
    for task in (CLS2, TaskSpec()):
        split = make_toy_split(8, "train", 0, task=task)
        # CH-SIMS-style unimodal labels, for the multi-task backbones (mlf_dnn, mtfn, mlmf); the others ignore them
        batch = collate([dataclasses.replace(s, extras={key: np.float32(0.5) for _, key in UNIMODAL_LABELS.values()}) for s in split.samples])
        for name in BACKBONES.names():
            with seeded(0):
                try:
                    backbone = BACKBONES.build(name, split.dims(), task)
                except ConfigError:
                    continue  # needs a modality the toy data lacks, or another task kind
                method = METHODS.build("clue", backbone, text_branch={"input": "features", "encoder": "mean"})
            losses = method.training_loss(batch)
            aux = backbone.auxiliary_losses(batch, backbone(batch))
            assert set(aux) <= set(losses), f"{name}: auxiliary losses missing from the CLUE loss"
            assert torch.isfinite(losses["loss"])
            losses["loss"].backward()
            wrapped.append(name)
    assert {"text_only", "lf_dnn", "tfn"} <= set(wrapped)


def test_ablations_switch_branches_off() -> None:
    bundle = toy_cls()
    batch = collate(bundle["test"].samples[:4])
    no_text = build_clue(bundle, "lf_dnn", use_text=False)
    assert no_text.text_branch is None and torch.all(no_text.components(batch)["y_t"] == 0)
    no_mm = build_clue(bundle, "lf_dnn", text_branch={"input": "features"}, use_multimodal=False)
    assert torch.all(no_mm.components(batch)["y_m"] == 0)
    no_kl = build_clue(bundle, "lf_dnn", text_branch={"input": "features"}, gamma=0.0)
    assert "kl" not in no_kl.training_loss(collate(bundle["train"].samples[:4]))


def test_train_clue_chooses_tau_on_validation(small_has0: DataBundle, monkeypatch: pytest.MonkeyPatch) -> None:
    import robustmsa.tuning.inference as inference

    seen = []
    original = inference.tune_inference_params
    monkeypatch.setattr(inference, "tune_inference_params", lambda method, split, *a, **k: seen.append(split.name) or original(method, split, *a, **k))
    method, chosen = train_clue(small_has0, "lf_dnn", None, FAST, seed=0, text_branch={"input": "hash"}, tau_grid=[0.5, 1.0, 1.5])
    assert seen == ["valid"] and chosen["tau"] in (0.5, 1.0, 1.5) and method.inference_params["tau"] == chosen["tau"]
    comps = collect_components(method, small_has0["valid"])
    accs = [float(((comps["te"] - t * comps["nde"]).argmax(1).numpy() == small_has0["valid"].labels()).mean()) for t in (0.5, 1.0, 1.5)]
    assert chosen["value"] == pytest.approx(max(accs))
    _, ood = train_clue(small_has0, "text_only", None, FAST, seed=0, text_branch={"input": "hash"}, tau_split="valid_ood", tau_grid=[1.0, 2.0])
    assert ood["split"] == "valid_ood" and seen[-1] == "valid_ood"


def test_a_lower_is_better_tau_metric_is_minimised(small: DataBundle) -> None:
    """tau_metric: MAE picks the tau with the lowest validation MAE (it was maximised: the worst tau)."""
    grid = [0.0, 1.0, 2.0, 4.0]
    method, chosen = train_clue(small, "lf_dnn", None, FAST, seed=0, text_branch={"input": "hash"}, tau_metric="MAE", tau_grid=grid)
    comps = collect_components(method, small["valid"])
    maes = [float(np.mean(np.abs((comps["te"] - t * comps["nde"])[:, 0].numpy() - small["valid"].labels()))) for t in grid]
    assert chosen["tau"] == grid[int(np.argmin(maes))] and chosen["value"] == pytest.approx(min(maes), rel=1e-5)
    assert max(maes) > min(maes)


def test_regression_variant_and_demo_entry(small: DataBundle) -> None:
    entry = demo_entry("lf_dnn", name="LF-DNN + CLUE", text_branch={"input": "hash", "encoder": "mean"})
    assert entry["modes"] == {"test": "te", "test_ood": "tie"}
    method = entry["train"](small, 0, FAST)
    scores = evaluate(method, small["test_ood"], ("te", "tie"))
    assert set(scores) == {"te", "tie"} and np.isfinite(scores["tie"]["MAE"])
    again = entry["train"](small, 0, FAST)
    assert evaluate(again, small["test_ood"], ("tie",))["tie"] == scores["tie"]  # deterministic per seed


def test_protocol_writes_tables_and_case_study(small: DataBundle, tmp_path, monkeypatch: pytest.MonkeyPatch) -> None:
    config = parse_protocol_config(
        {
            "data": {"name": "synthetic", "params": {}},
            "backbone": {"name": "lf_dnn"},
            "clue": {"text_branch": {"input": "hash", "encoder": "mean"}},
            "schemes": ["has0", "7class"],
            "ablations": {"w/o KL": {"gamma": 0.0}},
            "train": {"max_epochs": 1, "patience": 1, "progress": False},
            "seeds": [0],
            "case_study": {"n": 2},
        }
    )
    results = run_clue_protocol(config, tmp_path, bundle=small)
    assert set(results["schemes"]) == {"has0", "7class"}
    row = results["schemes"]["has0"]["per_seed"]["0"]
    assert {"base", "clue", "w/o KL", "case_study"} <= set(row)
    assert "w/o KL" not in results["schemes"]["7class"]["per_seed"]["0"]
    report = (tmp_path / "report.md").read_text()
    assert "+CLUE — OOD test (TIE)" in report and "Mult_acc_7" in report
    prior = results["label_prior"]["has0"]  # the OOD test's class balance against train's, recounted
    view = to_classification(small, "has0")
    assert prior["train"] == np.bincount(view["train"].labels(), minlength=2).tolist() and sum(prior["test_ood"]) == len(view["test_ood"])
    shares = [np.array(prior[n]) / sum(prior[n]) for n in ("train", "test_ood")]
    assert prior["shift"] == pytest.approx(0.5 * np.abs(shares[0] - shares[1]).sum())
    assert f"Label-prior shift train → test_ood (total variation distance of the class shares; 0: same balance): has0 {prior['shift']:.3f}" in report
    case = json.loads((tmp_path / "case_study.json").read_text())
    assert len(case["samples"]) == 2 and {"text", "multimodal", "te", "tie"} <= set(case["samples"][0]["probabilities"])
    assert (tmp_path / "case_study.png").stat().st_size > 1000
    # the bootstrap of the gains: per-sample predictions kept in the records (not in results), TE on IID, TIE on OOD
    record = json.loads((tmp_path / "seed_0" / "has0.json").read_text())["result"]["predictions"]
    assert "predictions" not in row and "predictions" not in results["schemes"]["has0"]["aggregate"]
    for part, name, model in (("iid", "test", "base"), ("ood", "test_ood", "base"), ("iid", "test", "clue"), ("ood", "test_ood", "clue")):
        acc = np.mean(np.argmax(record[part][model], axis=1) == view[name].labels())
        assert acc == pytest.approx(row[model][part]["Acc"])
    found = results["schemes"]["has0"]["intervals"]
    assert found["resamples"] == 1000 and found["ood"]["interval"]["Acc"]["low"] <= found["ood"]["interval"]["Acc"]["high"]
    assert "In brackets: the 95% interval of the gain (averaged over the seeds) over 1000 bootstrap draws" in report
    one = gain_intervals({0: record}, view, config.model_copy(update={"bootstrap": 1}), {0: tmp_path / "seed_0" / "has0.json"})
    rng = np.random.default_rng(0)
    for part, name in (("iid", "test"), ("ood", "test_ood")):  # the one draw, recomputed: whole videos, IID first
        units, _ = _units([s.group for s in view[name]])
        idx = np.concatenate([units[k] for k in rng.integers(len(units), size=len(units))])
        acc = {m: np.mean(np.argmax(np.array(record[part][m]), axis=1)[idx] == view[name].labels()[idx]) for m in ("base", "clue")}
        assert one[part]["interval"]["Acc"]["low"] == pytest.approx(acc["clue"] - acc["base"]) == one[part]["interval"]["Acc"]["high"]
    with pytest.raises(DataError, match="has0.json: field 'result.predictions.iid.base': is not one finite prediction per sample of split 'test'"):
        gain_intervals({0: {**record, "iid": {**record["iid"], "base": record["iid"]["base"][1:]}}}, view, config, {0: tmp_path / "seed_0" / "has0.json"})
    with pytest.raises(ConfigError, match="already exists"):
        run_clue_protocol(config, tmp_path, bundle=small)
    for case in ({"n": 2, "scheme": "non0"}, {"n": 2, "seed": 5}):  # a case study that would never run is refused at once
        with pytest.raises(ConfigError, match="field 'case_study': scheme .* must be among the run's schemes"):
            run_clue_protocol(config.model_copy(update={"case_study": config.case_study.model_copy(update=case)}), tmp_path / "other", bundle=small)
    # a run that stopped before results.json resumes from its records (seed_<k>/<scheme>.json), training nothing again
    from robustmsa.evaluation import clue_protocol

    (tmp_path / "results.json").unlink()

    def no_training(*args: object, **kwargs: object) -> None:
        raise AssertionError("a finished (scheme, seed) was trained again")

    monkeypatch.setattr(clue_protocol, "fit", no_training)
    monkeypatch.setattr(clue_protocol, "train_debiased", no_training)
    again = run_clue_protocol(config, tmp_path, bundle=small)
    assert again["schemes"] == json.loads(json.dumps(results["schemes"])) and (tmp_path / "results.json").is_file()
    (tmp_path / "results.json").unlink()
    with pytest.raises(ConfigError, match="run_settings.json: this folder holds a run made with other settings"):
        run_clue_protocol(config.model_copy(update={"ablations": {}}), tmp_path, bundle=small)


def test_protocol_with_an_annealed_split(small: DataBundle, tmp_path) -> None:
    config = parse_protocol_config(
        {
            "data": {"name": "synthetic"},
            "split": {"generate": True, "params": {"rounds": 20, "min_count": 3}},
            "backbone": {"name": "text_only"},
            "clue": {"text_branch": {"input": "hash", "encoder": "mean"}},
            "schemes": ["has0"],
            "ablations": {},
            "train": {"max_epochs": 1, "patience": 1, "progress": False},
            "seeds": [0],
            "case_study": {"n": 0},
        }
    )
    refused = config.model_copy(update={"train": config.train.model_copy(update={"monitor": "MAE"})})  # not a class metric
    with pytest.raises(ConfigError, match="monitor 'MAE' is not a metric of a classification task"):
        run_clue_protocol(refused, tmp_path / "run", bundle=small)
    # parameter values the method refuses, its own and an ablation's, are named by field before anything is written
    for change, field in (({"clue": {**config.clue, "fusion": "summ"}}, "clue"), ({"ablations": {"w/o fusion": {"fusion": "summ"}}}, "ablations.w/o fusion")):
        with pytest.raises(ConfigError, match=rf"<config>: field '{field}': unknown fusion 'summ'; choose one of"):
            run_clue_protocol(config.model_copy(update=change), tmp_path / "run", bundle=small)
    assert not (tmp_path / "run").exists()  # the annealed split is written once the checks passed, not before
    results = run_clue_protocol(config, tmp_path / "run", bundle=small)
    split = json.loads((tmp_path / "run" / "split.json").read_text())
    assert results["sizes"] == split["sizes"]
    assert (tmp_path / "run" / "label_ratios.png").is_file()
    with pytest.raises(ConfigError, match="nope"):
        parse_protocol_config({"data": {"name": "synthetic"}, "backbone": {"name": "text_only"}, "nope": 1})
    for change, message in (  # CLUE's parameters and each ablation's are checked when the config is read
        ({"clue": {"alpah": 1.0}}, r"field 'clue': method 'clue': unknown parameter\(s\) 'alpah'"),
        ({"clue": {"text_branch": {"inptu": "hash"}}}, r"field 'clue': method 'clue': 'text_branch': unknown parameter\(s\) 'inptu'"),
        ({"ablations": {"w/o KL": {"gama": 0.0}}}, r"field 'ablations': 'w/o KL': method 'clue': unknown parameter\(s\) 'gama'"),
        # a reported test is never a split that checkpoints or tau are chosen on (the report would call it clean)
        ({"clue": {"tau_split": "valid_ood"}, "ood_test": "valid_ood"}, r"ood_test 'valid_ood' is the split clue.tau_split chooses on"),
        ({"iid_test": "valid"}, r"iid_test 'valid' is the split train.valid_split chooses on"),
        ({"ablations": {"w/o KL": {"tau_split": "valid_ood"}}, "ood_test": "valid_ood"}, r"ood_test 'valid_ood' is the split ablations.w/o KL.tau_split chooses on"),
        ({"iid_test": "train"}, r"iid_test is the training split"),
        ({"split": {"file": ""}}, r"field 'split.file': String should have at least 1 character"),
    ):
        with pytest.raises(ConfigError, match=message):
            parse_protocol_config({"data": {"name": "synthetic"}, "backbone": {"name": "text_only"}, **change})

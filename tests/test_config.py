"""Typed experiment configs: YAML in and out, errors that name the file and field."""

from __future__ import annotations

from pathlib import Path

import pytest

from robustmsa.config import dump_config, load_config, parse_config, parse_pairs
from robustmsa.errors import ConfigError, DataError

GOOD = """
data: {name: synthetic, params: {n_train: 100}}
backbone: {name: tfn, params: {hidden: 32}}
train: {max_epochs: 3, lr: 0.01}
seeds: [0, 1, 2]
"""


def test_load_and_round_trip(tmp_path: Path) -> None:
    path = tmp_path / "exp.yaml"
    path.write_text(GOOD)
    cfg = load_config(path)
    assert cfg.backbone.params == {"hidden": 32} and cfg.method.name == "supervised"
    assert cfg.train.to_train_config().lr == 0.01 and cfg.train.to_train_config().patience == 5
    assert parse_config(__import__("yaml").safe_load(dump_config(cfg))).model_dump() == cfg.model_dump()


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("data: {name: x}\nbackbone: {name: tfn}\ntrain: {max_epoch: 3}\n", "field 'train.max_epoch'"),
        ("data: {name: x}\nbackbone: {name: tfn}\ntrain: {lr: -1}\n", "field 'train.lr'"),
        ("data: {name: x}\n", "field 'backbone'"),
        ("data: {name: x}\nbackbone: {name: tfn}\nseeds: []\n", "field 'seeds'"),
        # components are checked against their registry when the config is read, not when a run reaches them
        ("data: {name: x}\nbackbone: {name: y}\n", "field 'backbone': unknown backbone 'y'"),
        ("data: {name: x}\nbackbone: {name: tfn, params: {hiden: 8}}\n", "field 'backbone': backbone 'tfn': unknown parameter(s) 'hiden' (parameters: text_hidden"),
        ("data: {name: x}\nbackbone: {name: tfn}\nmethod: {name: lnln, params: {w_tsk: 1}}\n", "field 'method': method 'lnln': unknown parameter(s) 'w_tsk'"),
        ("data: {name: x}\nbackbone: {name: tfn}\nmethod: {name: lnln, params: {complete_share: 0.2}}\nseeds: [0, x]\n", "field 'seeds': seeds must be integers in [0, 4294967295], got 'x'"),
        ("- a\n- b\n", "expected a mapping"),
        ("data: {name: [unclosed\n", "not valid YAML at line 2, column 1: expected ',' or ']'"),
        # values are checked too: duplicates, types, ranges, combinations that would silently run something else
        ("data: {name: x}\nbackbone: {name: tfn}\nseeds: [0, 0]\n", "field 'seeds': seed 0 is given more than once"),
        ("data: {name: x}\nbackbone: {name: tfn}\nseeds: [true]\n", "seeds must be integers in [0, 4294967295], got True"),
        ("data: {name: x}\nbackbone: {name: tfn}\nseeds: [99999999999999999999]\n", "seeds must be integers"),
        ("data: {name: x}\nbackbone: {name: tfn}\ntrain: {max_epochs: true}\n", "field 'train.max_epochs'"),
        ("data: {name: x}\nbackbone: {name: tfn}\ntrain: {min_epochs: 5, max_epochs: 1}\n", "min_epochs (5) exceeds max_epochs (1)"),
        ("data: {name: x}\nbackbone: {name: tfn}\ntrain: {grad_clip: -1}\n", "field 'train.grad_clip'"),
        ("data: {name: x}\nbackbone: {name: tfn}\ntrain: {limit_train_batches: 0}\n", "field 'train.limit_train_batches'"),
        ("data: {name: x}\nbackbone: {name: tfn}\ntrain: {limit_train_batches: 2.5}\n", "field 'train.limit_train_batches'"),
        ("data: {name: x}\nbackbone: {name: tfn}\ntrain: {lr: .inf}\n", "field 'train.lr'"),
        ("data: {name: x}\nbackbone: {name: tfn}\ntrain: {monitor_mode: up}\n", "field 'train.monitor_mode'"),
        ("data: {name: x}\nbackbone: {name: tfn}\ntrain: {valid_split: test}\n", "'test' cannot select checkpoints: choose a validation split"),
        ("data: {name: x}\nbackbone: {name: tfn}\neval: {splits: []}\n", "field 'eval.splits'"),
        ("data: {name: x}\nbackbone: {name: tfn, params: {hidden: abc}}\n", "field 'backbone': backbone 'tfn': 'hidden' is 'abc'; expected int"),
        ("data: {name: x}\nbackbone: {name: tfn}\nmethod: {name: clue, params: {alpha: abc}}\n", "'alpha' is 'abc'; expected float"),
        ("data: {name: x}\nbackbone: {name: tfn}\nmethod: {name: clue, params: {text_branch: [1, 2]}}\n", "'text_branch' is [1, 2]; expected a mapping or None"),
        ("data: {name: x}\nbackbone: {name: tfn}\ntrain: {lr: 0.1}\ntrain: {lr: 5.0}\n", "not valid YAML at line 4, column 1: the key 'train' is given twice"),
        ("", "the file is empty"),
        # a misspelt key is named (before: "field 'backbone': Field required" for 'backbon'), with the key it may mean
        ("data: {name: x}\nbackbon: {name: tfn}\n", "field 'backbon': unknown key; did you mean 'backbone'?"),
        ("data: {name: x}\nbackbone: {name: tfn}\ntrain: {max_epoch: 3}\n", "field 'train.max_epoch': unknown key; did you mean 'max_epochs'?"),
        ("data: {name: x}\nbackbone: {name: tfn}\ntrain: {epochs: 3}\n", "field 'train.epochs': unknown key; did you mean 'max_epochs' or 'min_epochs'?"),
        ("data: {name: x}\nbackbone: {name: tfn}\nzzz: 1\n", "field 'zzz': unknown key; expected one of ['plugins', 'data', 'backbone', 'method', 'train', 'seeds', 'eval']"),
    ],
)
def test_bad_configs_name_file_and_field(tmp_path: Path, text: str, message: str) -> None:
    path = tmp_path / "bad.yaml"
    path.write_text(text)
    with pytest.raises(ConfigError) as info:
        load_config(path)
    assert str(path) in str(info.value) and message in str(info.value)


def test_missing_file(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="config file not found"):
        load_config(tmp_path / "absent.yaml")
    with pytest.raises(ConfigError, match="is a directory; expected a YAML config file"):
        load_config(tmp_path)
    (tmp_path / "binary.yaml").write_bytes(b"\xff\xfe\x00bad")
    with pytest.raises(ConfigError, match="binary.yaml: not UTF-8 text"):
        load_config(tmp_path / "binary.yaml")
    with pytest.raises(ConfigError, match="--data n_test: not valid YAML"):
        parse_pairs(["n_test=[1"], "--data")


def test_every_shipped_config_is_valid() -> None:
    """Each folder of configs/ holds one kind of config; every file must validate as that kind."""
    from robustmsa.data.synthetic import SyntheticConfig
    from robustmsa.evaluation.clue_protocol import CLUEProtocolConfig
    from robustmsa.evaluation.mid_protocol import ImageTextProtocolConfig
    from robustmsa.evaluation.missing_protocol import MissingSweepConfig
    from robustmsa.tuning.experiment import load_experiment_search
    from robustmsa.tuning.sweep import load_search_config

    kinds = {
        "backbones": lambda p: load_config(p),
        "mmsa": lambda p: load_config(p),
        "clue": lambda p: load_config(p, CLUEProtocolConfig),
        "clef": lambda p: load_config(p, CLUEProtocolConfig),
        "image_text": lambda p: load_config(p, ImageTextProtocolConfig),
        "missing": lambda p: load_config(p, MissingSweepConfig),
        "missing/search": load_search_config,  # a sweep model's training-parameter search
        "search": load_experiment_search,  # an experiment's hyper-parameter search
        "data": SyntheticConfig.from_yaml,
    }
    root = Path(__file__).resolve().parents[1] / "configs"
    configs = sorted(root.rglob("*.yaml"))
    assert len(configs) > 20
    for path in configs:
        folder = path.parent.relative_to(root).as_posix()
        assert folder in kinds, f"{path}: no config kind known for folder '{folder}'"
        kinds[folder](path)


def test_parse_pairs_yaml_values_and_errors() -> None:
    assert parse_pairs(["n_test=4000", " name = a=b", "flag=true", "empty="], "--data") == {"n_test": 4000, "name": "a=b", "flag": True, "empty": None}
    assert parse_pairs(None, "--data") == {}
    for bad in ("n_test", "=3"):
        with pytest.raises(ConfigError, match="--data expects KEY=VALUE"):
            parse_pairs([bad], "--data")
    with pytest.raises(ConfigError, match="--data gives 'n_test' twice"):  # before: the last value was kept silently
        parse_pairs(["n_test=4000", " n_test=40"], "--data")


def test_data_source_errors_name_the_config_file_and_field(tmp_path: Path) -> None:
    from robustmsa.experiment import load_data

    cases = (("{name: nosuch}", "field 'data': unknown dataset 'nosuch'"), ("{name: synthetic, params: {n_train: 60.7}}", "field 'data': dataset 'synthetic': 'n_train' is 60.7; expected int"))
    for data, message in cases:
        path = tmp_path / "exp.yaml"
        path.write_text(f"data: {data}\nbackbone: {{name: tfn}}\n")
        with pytest.raises(ConfigError) as info:
            load_data(load_config(path))  # data sources are checked when they are built: the error still names the file
        assert str(info.value).startswith(f"{path}: {message}")


@pytest.mark.parametrize(
    ("text", "field"),
    [
        ("train: {valid_split: dev}", "train.valid_split"),
        ("eval: {splits: [test, tset]}", "eval.splits"),
        ("method: {name: clue, params: {tau_split: valid_ood}}", "method.params.tau_split"),
    ],
)
def test_unknown_split_names_are_named_with_file_and_field(tmp_path: Path, toy_bundle, text: str, field: str) -> None:
    from robustmsa.experiment import run_experiment

    path = tmp_path / "exp.yaml"
    path.write_text(f"data: {{name: synthetic}}\nbackbone: {{name: lf_dnn}}\n{text}\n")
    config = load_config(path)
    with pytest.raises(ConfigError) as info:
        run_experiment(config, tmp_path / "out", bundle=toy_bundle)  # refused before anything trains
    assert str(info.value).startswith(f"{path}: field '{field}': no split named ")
    assert "available: ['test', 'train', 'valid']" in str(info.value)
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize(
    ("section", "field", "message"),
    [
        ({"counterfactual": {"text": {"name": "lexicon_pos", "params": {"ratio": 1.5}}}}, "counterfactual.text", "ratio must be in (0, 1], got 1.5"),
        ({"counterfactual": {"text": {"name": "lexicn"}}}, "counterfactual.text", "must be one of ['attribution', 'lexicon_pos', 'local_lm'], got 'lexicn'"),
        ({"counterfactual": {"text": {"name": "attribution", "params": {"metod": "gradient"}}}}, "counterfactual.text", "'attribution': unknown parameter(s) 'metod'"),
        ({"counterfactual": {"image": {"name": "attribute_mask", "params": {"ratio": 0}}}}, "counterfactual.image", "ratio must be in (0, 1], got 0"),
        ({"counterfactual": {"image": {"name": "blur"}}}, "counterfactual.image", "must be one of ['attribute_mask', 'saliency'], got 'blur'"),
        ({"methods": {"mid_range": [1.0, 0.0]}}, "methods.mid_range", "expected a range (low, high) of finite numbers with 0 <= low < high, got [1.0, 0.0]"),
        ({"methods": {"mme_range": [0.0, float("inf")]}}, "methods.mme_range", "expected a range (low, high)"),
        ({"methods": {"router": {"batch_size": 0}}}, "methods.router", "router batch_size must be an integer >= 1, got 0"),
    ],
)
def test_image_text_settings_are_checked_when_the_config_is_read(section: dict, field: str, message: str) -> None:
    from robustmsa.evaluation.mid_protocol import ImageTextProtocolConfig

    with pytest.raises(ConfigError) as info:
        parse_config({"data": {"name": "mmsd2"}, **section}, "it.yaml", ImageTextProtocolConfig)
    assert str(info.value).startswith(f"it.yaml: field '{field}': ") and message in str(info.value)
    parse_config({"data": {"name": "mmsd2"}, "counterfactual": {"text": {"name": "attribution", "params": {"method": "gradient", "ratio": 1}}}}, "it.yaml", ImageTextProtocolConfig)


def test_protocol_configs_check_their_split_names(toy_bundle) -> None:
    from robustmsa.evaluation.clue_protocol import CLUEProtocolConfig
    from robustmsa.evaluation.missing_protocol import MissingSweepConfig

    sweep = parse_config({"data": {"name": "synthetic"}, "models": {"base": {"name": "missing_robust"}}, "eval_split": "test_ood"}, "sweep.yaml", MissingSweepConfig)
    with pytest.raises(ConfigError, match=r"^sweep.yaml: field 'eval_split': no split named 'test_ood'"):
        sweep.check_split_names(toy_bundle)
    clue = parse_config({"data": {"name": "synthetic"}, "backbone": {"name": "lf_dnn"}, "ood_test": "test"}, "clue.yaml", CLUEProtocolConfig)
    clue.check_split_names(toy_bundle)  # every split it names exists
    with pytest.raises(ConfigError, match=r"^clue.yaml: field 'iid_test': no split named 'iid'"):
        clue.model_copy(update={"iid_test": "iid"}).check_split_names(toy_bundle)


def test_a_missing_relative_data_file_names_the_config_and_where_it_was_looked_for(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    config = parse_config({"data": {"name": "mosi_csv", "params": {"path": "../nowhere/t.csv", "text_encoder": "hash"}}, "backbone": {"name": "lf_dnn"}}, "exp.yaml")
    with pytest.raises(DataError, match=rf"^\.\./nowhere/t\.csv: file not found \(named by exp\.yaml, field 'data'; relative data paths are read from the working directory {tmp_path}\)$"):
        config.build_data()

"""User components named in a config: the ``plugins`` it imports first (files or modules)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from robustmsa.config import load_config, parse_config
from robustmsa.errors import ConfigError
from robustmsa.registry import BACKBONES
from tests.test_demo_cli import _cli

PLUGIN = '''
import torch
from robustmsa.models.base import Backbone, Output, masked_mean
from robustmsa.registry import BACKBONES


@BACKBONES.register("{name}")
class MeanText(Backbone):
    modalities = ("text",)

    def __init__(self, dims, task, hidden: int = 8) -> None:
        super().__init__(dims, task)
        self.net = torch.nn.Sequential(torch.nn.Linear(dims["text"], hidden), torch.nn.ReLU(), torch.nn.Linear(hidden, self.out_dim))

    def forward(self, batch):
        fused = masked_mean(batch.text, batch.mask("text"))
        return Output(logits=self.net(fused), fused=fused)
'''

DATA = "data: {name: synthetic, params: {n_train: 60, n_valid: 20, n_test: 20, n_test_ood: 20, n_valid_ood: 10, text_encoder: hash}}\n"


def test_a_plugin_file_registers_a_backbone_the_config_can_name(tmp_path: Path) -> None:
    (tmp_path / "models").mkdir()
    (tmp_path / "models" / "mine.py").write_text(PLUGIN.format(name="plugin_mean_text"))
    config = tmp_path / "exp.yaml"
    config.write_text("plugins: [models/mine.py]\n" + DATA + "backbone: {name: plugin_mean_text, params: {hidden: 4}}\n")
    parsed = load_config(config)  # relative to the config file's folder, recorded absolute
    assert parsed.plugins == [str((tmp_path / "models" / "mine.py").resolve())]
    assert "plugin_mean_text" in BACKBONES
    assert load_config(config).plugins == parsed.plugins  # read again: the same definitions re-register


def test_plugin_errors_name_the_field(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"<config>: field 'plugins': plugin file .*absent\.py not found"):
        parse_config({"plugins": ["absent.py"], "data": {"name": "synthetic"}, "backbone": {"name": "tfn"}}, base=tmp_path)
    with pytest.raises(ConfigError, match=r"field 'plugins': plugin module 'no_such_module_xyz' not found"):
        parse_config({"plugins": ["no_such_module_xyz"], "data": {"name": "synthetic"}, "backbone": {"name": "tfn"}})
    with pytest.raises(ConfigError, match=r"field 'plugins': expected a list of .py files or module names, got 'mine.py'"):
        parse_config({"plugins": "mine.py", "data": {"name": "synthetic"}, "backbone": {"name": "tfn"}})
    # a file that is not Python, and a name a built-in already has (built-ins register first, so the plugin is named)
    (tmp_path / "syntax.py").write_text("def f(:\n")
    with pytest.raises(ConfigError, match=r"field 'plugins': plugin file .*syntax\.py, line 1: invalid syntax \(not valid Python\)"):
        parse_config({"plugins": ["syntax.py"], "data": {"name": "synthetic"}, "backbone": {"name": "tfn"}}, base=tmp_path)
    for registry, name in (("BACKBONES", "lf_dnn"), ("DATASETS", "MVSA")):
        (tmp_path / f"dup_{registry}.py").write_text(f"from robustmsa.registry import {registry}\n\n\n@{registry}.register('{name}')\nclass Mine:\n    pass\n")
        with pytest.raises(ConfigError, match=rf"field 'plugins': .* '{name.lower()}' is registered twice: by robustmsa\..* and by robustmsa_plugin_dup_{registry}.*\.Mine; give"):
            parse_config({"plugins": [f"dup_{registry}.py"], "data": {"name": "synthetic"}, "backbone": {"name": "tfn"}}, base=tmp_path)
    # a data source of the user's that returns something else than a DataBundle
    (tmp_path / "data_source.py").write_text("from robustmsa.registry import DATASETS\n\n\n@DATASETS.register('plugin_dict_data')\ndef read():\n    return {'train': [1, 2]}\n")
    config = parse_config({"plugins": ["data_source.py"], "data": {"name": "plugin_dict_data"}, "backbone": {"name": "tfn"}}, "exp.yaml", base=tmp_path)
    with pytest.raises(ConfigError, match=r"^exp.yaml: field 'data': data source 'plugin_dict_data' returned a dict; expected a robustmsa DataBundle"):
        config.build_data()
    # an error inside the plugin's own code is its bug: it keeps its type and traceback
    (tmp_path / "broken.py").write_text("import no_such_dependency_xyz\n")
    with pytest.raises(ModuleNotFoundError, match="no_such_dependency_xyz"):
        parse_config({"plugins": ["broken.py"], "data": {"name": "synthetic"}, "backbone": {"name": "tfn"}}, base=tmp_path)


def test_train_and_evaluate_a_plugin_backbone_from_the_command_line(tmp_path: Path) -> None:
    (tmp_path / "cfg").mkdir()
    (tmp_path / "cfg" / "mine.py").write_text(PLUGIN.format(name="cli_mean_text"))
    (tmp_path / "cfg" / "exp.yaml").write_text("plugins: [mine.py]\n" + DATA + "backbone: {name: cli_mean_text}\ntrain: {max_epochs: 1, progress: false}\n")
    trained = _cli("train", "--config", "cfg/exp.yaml", "--out", "run", cwd=tmp_path, process=True)  # own processes: a plugin would stay registered in the test process
    assert trained.returncode == 0, trained.stderr
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    evaluated = _cli("evaluate", "--run", str(tmp_path / "run"), "--split", "test", cwd=elsewhere, process=True)  # the run's config.yaml holds the absolute path
    assert evaluated.returncode == 0, evaluated.stderr
    saved = json.loads((tmp_path / "run" / "results.json").read_text())
    assert json.loads(evaluated.stdout)["0"]["test"]["factual"]["MAE"] == pytest.approx(saved["per_seed"]["0"]["metrics"]["test"]["factual"]["MAE"], rel=1e-5)
    (tmp_path / "cfg" / "bare.yaml").write_text(DATA + "backbone: {name: cli_mean_text}\n")
    refused = _cli("train", "--config", "cfg/bare.yaml", "--out", "run3", cwd=tmp_path, process=True)
    assert refused.returncode == 2 and "unknown backbone 'cli_mean_text'" in refused.stderr and "plugins" in refused.stderr

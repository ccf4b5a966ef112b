"""The protocol sub-commands of the CLI (split-ood, clue, clef, sweep-missing, sweep-search, search, image-text), end to end on tiny data."""

from __future__ import annotations

import json
import random
from pathlib import Path

import pytest

from tests.test_demo_cli import _cli

SMALL = "{n_train: 120, n_valid: 30, n_test: 30, n_test_ood: 30, n_valid_ood: 20, text_encoder: hash}"


def test_split_ood_command(tmp_path: Path) -> None:
    args = ["split-ood", "synthetic", "--out", str(tmp_path / "split"), "--rounds", "30", "--seed", "3"]
    args += [f"--param={p}" for p in ("n_train=150", "n_valid=40", "n_test=40", "n_test_ood=40", "n_valid_ood=20")] + ["--anneal", "min_count=3"]
    done = _cli(*args, cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    split = json.loads((tmp_path / "split" / "split.json").read_text())
    assert split["params"]["rounds"] == 30 and split["params"]["seed"] == 3 and split["params"]["min_count"] == 3
    assert {"train", "valid", "test", "test_ood"} <= set(split["splits"])
    assert (tmp_path / "split" / "label_ratios.png").read_bytes()[:4] == b"\x89PNG"
    again = _cli(*args, cwd=tmp_path)  # never overwrite a user's results
    assert again.returncode == 2 and "already" in again.stderr and "Traceback" not in again.stderr
    bad = _cli("split-ood", "synthetic", "--out", str(tmp_path / "b"), "--anneal", "nonsense", cwd=tmp_path)
    assert bad.returncode == 2 and "KEY=VALUE" in bad.stderr
    twice = _cli("split-ood", "synthetic", "--out", str(tmp_path / "b"), "--anneal", "rounds=3", cwd=tmp_path)  # before: a TypeError traceback
    assert twice.returncode == 2 and "'rounds' is set by its own option" in twice.stderr and "Traceback" not in twice.stderr


def test_clue_command(tmp_path: Path) -> None:
    config = tmp_path / "clue.yaml"
    config.write_text(
        f"data: {{name: synthetic, params: {SMALL}}}\n"
        "backbone: {name: lf_dnn, params: {hidden: 8}}\n"
        "clue: {text_branch: {input: hash, encoder: mean}}\n"
        "schemes: [has0]\nablations: {}\n"
        "train: {max_epochs: 1, patience: 1, progress: false}\nseeds: [0, 1]\ncase_study: {n: 1}\n"
    )
    done = _cli("clue", "--config", str(config), "--out", str(tmp_path / "run"), "--seeds", "1", cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    results = json.loads((tmp_path / "run" / "results.json").read_text())
    assert results["seeds"] == [1] and set(results["schemes"]["has0"]["per_seed"]["1"]) >= {"base", "clue"}
    assert "+CLUE — OOD test (TIE)" in (tmp_path / "run" / "report.md").read_text()


def test_clef_command(tmp_path: Path) -> None:
    config = tmp_path / "clef.yaml"
    config.write_text(
        "method: clef\n"
        "data: {name: synthetic_context, params: {n_train: 120, n_valid: 30, n_test: 30, n_valid_ood: 30, n_test_ood: 30}}\n"
        "backbone: {name: two_stream, params: {hidden: 8}}\n"
        "clef: {context_branch: {hidden: 8}, tau_split: valid_ood}\n"
        "ablations: {}\ntrain: {max_epochs: 1, patience: 1, progress: false}\nseeds: [0]\n"
    )
    done = _cli("clef", "--config", str(config), "--out", str(tmp_path / "run"), cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    results = json.loads((tmp_path / "run" / "results.json").read_text())
    assert set(results["schemes"]["classes"]["per_seed"]["0"]) == {"base", "clef", "per_class"}
    assert "+CLEF — OOD test (TIE)" in (tmp_path / "run" / "report.md").read_text()
    wrong = _cli("clue", "--config", str(config), "--out", str(tmp_path / "other"), cwd=tmp_path)  # a CLEF config given to `clue`
    assert wrong.returncode == 2 and "run this config with `robustmsa clef`" in wrong.stderr and not (tmp_path / "other").exists()


def test_sweep_missing_command(tmp_path: Path) -> None:
    config = tmp_path / "sweep.yaml"
    config.write_text(
        f"data: {{name: synthetic, params: {SMALL}}}\n"
        "backbone: {name: text_centric, params: {dim: 8, heads: 2, av_tokens: 2, levels: 1}}\n"
        "models: {baseline: {name: missing_robust}}\n"
        "train: {max_epochs: 1}\nseeds: [0]\nsensitivity: {enabled: false}\n"
    )
    done = _cli("sweep-missing", "--config", str(config), "--out", str(tmp_path / "run"), "--rates", "0.0,0.5", cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    results = json.loads((tmp_path / "run" / "results.json").read_text())
    assert results["rates"] == [0.0, 0.5] and set(results["per_seed"]["0"]["baseline"]["rates"]) == {"0.0", "0.5"}
    assert (tmp_path / "run" / "missing_MAE.png").is_file()
    done = _cli("sweep-evaluate", "--run", str(tmp_path / "run"), "--split", "test_ood", "--out", str(tmp_path / "ood"), cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    ood = json.loads((tmp_path / "ood" / "results.json").read_text())
    assert ood["data"]["split"] == "test_ood" and set(ood["per_seed"]["0"]["baseline"]["rates"]) == {"0.0", "0.5"}
    assert ood["per_seed"]["0"]["baseline"]["mean"] != results["per_seed"]["0"]["baseline"]["mean"]
    missing = _cli("sweep-evaluate", "--run", str(tmp_path / "nothing"), "--split", "test_ood", "--out", str(tmp_path / "x"), cwd=tmp_path)
    assert missing.returncode == 2 and "results.json" in missing.stderr and "Traceback" not in missing.stderr
    both = _cli("sweep-combine", "--run", str(tmp_path / "run"), "--run", str(tmp_path / "ood"), "--out", str(tmp_path / "both"), cwd=tmp_path)
    assert both.returncode == 2 and "'data.split'" in both.stderr and "Traceback" not in both.stderr  # another split: not combined
    into_itself = _cli("sweep-combine", "--run", str(tmp_path / "ood"), "--out", str(tmp_path / "ood"), "--overwrite", cwd=tmp_path)
    assert into_itself.returncode == 2 and "is one of the --run folders" in into_itself.stderr  # it would replace the run's own results
    again = _cli("sweep-combine", "--run", str(tmp_path / "ood"), "--out", str(tmp_path / "ood_again"), "--seeds", "0", cwd=tmp_path)
    assert again.returncode == 0, again.stderr
    absent = _cli("sweep-combine", "--run", str(tmp_path / "ood"), "--out", str(tmp_path / "x"), "--seeds", "0,3", cwd=tmp_path)
    assert absent.returncode == 2 and "--seeds: seed 3 is in none of the runs (they hold the seeds [0])" in absent.stderr and not (tmp_path / "x").exists()
    assert json.loads((tmp_path / "ood_again" / "results.json").read_text())["per_seed"] == ood["per_seed"]
    for command in (("sweep-combine",), ("sweep-evaluate", "--split", "test")):
        unknown = _cli(*command, "--run", str(tmp_path / "run"), "--reference", "nope", "--out", str(tmp_path / "x"), cwd=tmp_path)
        assert unknown.returncode == 2 and "--reference 'nope': not one of the models ['baseline']" in unknown.stderr and not (tmp_path / "x").exists()
    # a larger test split of the same generated corpus (training and validation data unchanged); other data refused
    larger = _cli("sweep-evaluate", "--run", str(tmp_path / "run"), "--split", "test", "--data", "n_test=60", "--model", "baseline", "--out", str(tmp_path / "big"), cwd=tmp_path)
    assert larger.returncode == 0, larger.stderr
    big = json.loads((tmp_path / "big" / "results.json").read_text())
    assert big["data"]["sizes"]["test"] == 60 and results["data"]["sizes"]["test"] == 30 and big["data"]["data_params"] == {"n_test": 60}
    assert big["per_seed"]["0"]["baseline"]["best_valid"] == results["per_seed"]["0"]["baseline"]["best_valid"]
    assert big["per_seed"]["0"]["baseline"]["mean"] != results["per_seed"]["0"]["baseline"]["mean"]
    assert "{'n_test': 60} changed" in (tmp_path / "big" / "report.md").read_text()
    moved = _cli("sweep-evaluate", "--run", str(tmp_path / "run"), "--split", "test", "--data", "n_train=100", "--out", str(tmp_path / "m"), cwd=tmp_path)
    assert moved.returncode == 2 and "'train' split" in moved.stderr and "Traceback" not in moved.stderr and not (tmp_path / "m").exists()
    # other data: a generated corpus with noisier audio and vision, from the generator's other seed
    noisier = [f"--data={p}" for p in ("n_train=20", "n_valid=10", "n_test=40", "n_test_ood=10", "n_valid_ood=0", "text_encoder=hash", "audio_noise=3.0", "vision_noise=3.0", "seed=5")]
    shifted = _cli("sweep-evaluate", "--run", str(tmp_path / "run"), "--split", "test", "--source", "synthetic", *noisier, "--out", str(tmp_path / "noisy"), cwd=tmp_path)
    assert shifted.returncode == 0, shifted.stderr
    noisy = json.loads((tmp_path / "noisy" / "results.json").read_text())
    assert noisy["data"]["sizes"]["test"] == 40 and noisy["data"]["source"]["params"]["audio_noise"] == 3.0 and noisy["data"]["trained_on"] == "synthetic"
    assert noisy["per_seed"]["0"]["baseline"]["mean"] != results["per_seed"]["0"]["baseline"]["mean"]
    # the text alone removed entirely; then every modality and pair of them
    text = _cli("sweep-evaluate", "--run", str(tmp_path / "run"), "--split", "test", "--corrupt", "text", "--rates", "1.0", "--out", str(tmp_path / "no_text"), cwd=tmp_path)
    assert text.returncode == 0, text.stderr
    no_text = json.loads((tmp_path / "no_text" / "results.json").read_text())
    assert no_text["rates"] == [1.0] and no_text["config"]["corrupted"] == ["text"] and no_text["per_seed"]["0"]["baseline"]["rates"].keys() == {"1.0"}
    for option, value, message in (("--corrupt", "txt", "--corrupt: corrupted modalities must be"), ("--rates", "0,2", "--rates: missing rates must be")):
        bad = _cli("sweep-evaluate", "--run", str(tmp_path / "run"), "--split", "test", option, value, "--out", str(tmp_path / "x"), cwd=tmp_path)
        assert bad.returncode == 2 and message in bad.stderr and not (tmp_path / "x").exists()
    removal = _cli("sweep-removal", "--run", str(tmp_path / "run"), "--out", str(tmp_path / "removal"), cwd=tmp_path)
    assert removal.returncode == 0, removal.stderr
    summary = json.loads((tmp_path / "removal" / "removal.json").read_text())
    assert len(summary["conditions"]) == 7 and summary["conditions"]["without_text"]["aggregate"] == {"baseline": no_text["aggregate"]["baseline"]["mean"]}
    assert "# Whole-modality removal on synthetic (test split)" in (tmp_path / "removal" / "report.md").read_text()


def test_sweep_search_command_then_sweep_of_the_tuned_model(tmp_path: Path) -> None:
    (tmp_path / "sweep.yaml").write_text(
        f"data: {{name: synthetic, params: {SMALL}}}\n"
        "backbone: {name: text_centric, params: {dim: 8, heads: 2, av_tokens: 2, levels: 1}}\n"
        "models: {baseline: {name: missing_robust}, lnln: {name: lnln}}\n"
        "train: {max_epochs: 1}\nseeds: [0]\nrates: [0.0, 0.5]\nsensitivity: {enabled: false}\n"
    )
    search = tmp_path / "search.yaml"
    search.write_text("sweep: sweep.yaml\nmodel: lnln\nn_trials: 2\nstartup_trials: 2\nspace: {w_reconstruction: {low: 0.01, high: 1.0, log: true}}\n")
    done = _cli("sweep-search", "--config", str(search), "--out", str(tmp_path / "s"), cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    found = json.loads((tmp_path / "s" / "search.json").read_text())
    assert len(found["trials"]) == 2 and "Best" in done.stdout + done.stderr
    swept = _cli("sweep-missing", "--config", str(tmp_path / "s" / "best_sweep.yaml"), "--out", str(tmp_path / "run"), cwd=tmp_path)
    assert swept.returncode == 0, swept.stderr
    results = json.loads((tmp_path / "run" / "results.json").read_text())
    assert results["config"]["models"]["lnln_tuned"]["params"]["w_reconstruction"] == found["best"]["params"]["w_reconstruction"]
    bad = tmp_path / "bad.yaml"
    bad.write_text("sweep: sweep.yaml\nmodel: tcmr\nspace: {w_reconstruction: {low: 0.01, high: 1.0}}\n")
    refused = _cli("sweep-search", "--config", str(bad), "--out", str(tmp_path / "b"), cwd=tmp_path)
    assert refused.returncode == 2 and "field 'model'" in refused.stderr and "Traceback" not in refused.stderr


def test_search_command_then_training_of_the_tuned_config(tmp_path: Path) -> None:
    (tmp_path / "experiment.yaml").write_text(
        f"data: {{name: synthetic, params: {SMALL}}}\nbackbone: {{name: lf_dnn, params: {{hidden: 8}}}}\ntrain: {{max_epochs: 1, progress: false}}\nseeds: [0, 1]\n"
    )
    search = tmp_path / "search.yaml"
    search.write_text("experiment: experiment.yaml\nn_trials: 2\nstartup_trials: 2\nspace: {backbone.hidden: {low: 4, high: 16, integer: true}, train.lr: {low: 0.001, high: 0.01, log: true}}\n")
    done = _cli("search", "--config", str(search), "--out", str(tmp_path / "s"), cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    found = json.loads((tmp_path / "s" / "search.json").read_text())
    assert len(found["trials"]) == 2 and "Best" in done.stdout + done.stderr and "best_config.yaml" in (done.stdout + done.stderr).replace("\n", "")
    trained = _cli("train", "--config", str(tmp_path / "s" / "best_config.yaml"), "--out", str(tmp_path / "run"), cwd=tmp_path)
    assert trained.returncode == 0, trained.stderr
    results = json.loads((tmp_path / "run" / "results.json").read_text())
    assert results["config"]["backbone"]["params"]["hidden"] == found["best"]["params"]["backbone.hidden"] and set(results["per_seed"]) == {"0", "1"}
    search.write_text("experiment: experiment.yaml\nspace: {data.n_train: {choices: [60, 120]}}\n")
    refused = _cli("search", "--config", str(search), "--out", str(tmp_path / "b"), cwd=tmp_path)
    assert refused.returncode == 2 and "field 'space'" in refused.stderr and "Traceback" not in refused.stderr and not (tmp_path / "b").exists()


def _mmsd2_folder(folder: Path, n: int = 160) -> Path:
    """An MMSD2.0-format folder whose label follows a cue word in the text or in the image attributes."""
    rng = random.Random(0)
    folder.mkdir()
    filler, objects = ["today", "again", "this", "morning", "really", "just"], ["person", "sky", "table", "car", "dog", "tree"]
    attributes, image_id = [], 0
    for split, size in (("train", n), ("valid", n // 3), ("test", n // 3)):
        items = []
        for _ in range(size):
            label = rng.randint(0, 1)
            text = " ".join(rng.sample(filler, 3) + (["great"] if label and rng.random() < 0.7 else ["fine"]))
            words = rng.sample(objects, 4) + (["clown"] if label and rng.random() < 0.7 else ["wall"])
            items.append({"image_id": str(image_id), "text": text, "label": label})
            attributes.append(f"{[str(image_id), *words]!r}\n")
            image_id += 1
        (folder / f"{split}.json").write_text(json.dumps(items))
    (folder / "image_attributes.txt").write_text("".join(attributes))
    return folder


@pytest.mark.slow
def test_image_text_command(tmp_path: Path) -> None:
    folder = _mmsd2_folder(tmp_path / "mmsd2")
    config = tmp_path / "it.yaml"
    config.write_text(
        f"data: {{name: mmsd2, params: {{folder: {folder}, text_encoder: hash}}}}\n"
        "backbone: {name: image_text, params: {hidden: 16, layers: 1, heads: 2, dropout: 0.0}}\n"
        "train: {max_epochs: 2, batch_size: 32, progress: false}\n"
        "counterfactual: {text: {name: lexicon_pos, params: {ratio: 0.3}}, image: {name: attribute_mask, params: {ratio: 0.4}}}\n"
        "methods: {n_trials: 3, router: {losses: [plain], max_epochs: 2}, finetune: {max_epochs: 1, batch_size: 32, progress: false}}\n"
        "seeds: [0]\n"
    )
    done = _cli("image-text", "--config", str(config), "--out", str(tmp_path / "run"), cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    saved = json.loads((tmp_path / "run" / "image_text_mmsd2.json").read_text())
    assert set(saved["aggregate"]["metrics"]) == {"base", "base+FT", "MID", "MCTD", "MME-JD", "MRID"}
    assert "Oracle router" in (tmp_path / "run" / "image_text_mmsd2.md").read_text()
    # its cost table counts forward passes in this process: training in other processes is refused, not undercounted
    config.write_text(config.read_text().replace("finetune: {max_epochs: 1,", "finetune: {devices: 2, max_epochs: 1,"))
    refused = _cli("image-text", "--config", str(config), "--out", str(tmp_path / "run2"), cwd=tmp_path)
    assert refused.returncode == 2 and "Traceback" not in refused.stderr, refused.stderr
    assert "methods.finetune.devices: this protocol counts the forward passes of every training for its cost table" in " ".join(refused.stderr.split())

"""Bias audit: lift scores against hand-computed values, written outputs, the real MMSD2.0 files."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from robustmsa.data.batch import Sample
from robustmsa.data.dataset import DataBundle, MultimodalSplit, TaskSpec
from robustmsa.errors import DataError
from robustmsa.evaluation.bias_audit import bias_audit, lift_scores, word_tokens

TASK = TaskSpec(kind="classification", num_classes=2, label_range=None, class_names=("no", "yes"))


def test_word_tokens_keep_placeholders_and_hashtags() -> None:
    assert word_tokens("<user> Loves #Mondays, don't you?") == {"<user>", "loves", "#mondays", "don't", "you"}


def test_lift_hand_computed() -> None:
    docs = [["a", "b"], ["a"], ["a", "c"], ["b"], ["c", "c"]]
    labels = [1, 1, 0, 0, 0]
    out = lift_scores(docs, labels, ["no", "yes"], min_count=2, top_k=5)
    # P(yes) = 2/5. 'a' in 3 docs, 2 yes: lift = (2/3)/(2/5) = 5/3; 'b' in 2 docs, 1 yes: 5/4; 'c' in 2 docs (once per doc), 0 yes
    yes = {r["token"]: r["lift"] for r in out["yes"]}
    assert yes == pytest.approx({"a": 5 / 3, "b": 5 / 4, "c": 0.0})
    assert [r["token"] for r in out["yes"]] == ["a", "b", "c"]
    # P(no) = 3/5. 'c': (2/2)/(3/5) = 5/3 first; 'a': (1/3)/(3/5) = 5/9
    assert out["no"][0]["token"] == "c" and out["no"][0]["lift"] == pytest.approx(5 / 3)
    assert {r["token"]: r["count"] for r in out["no"]} == {"a": 3, "b": 2, "c": 2}
    assert lift_scores(docs, labels, ["no", "yes"], min_count=3)["yes"] == [{"token": "a", "lift": pytest.approx(5 / 3), "count": 3, "count_label": 2}]


def test_bias_audit_writes_tables_and_plot(tmp_path: Path) -> None:
    rng = np.random.default_rng(0)
    samples, attributes = [], {}
    for i in range(60):
        y = i % 2
        word = "wow" if (y == 1 and rng.random() < 0.8) else "hmm"
        samples.append(Sample(id=f"s{i}", raw_text=f"{word} <user> today", label_class=y))
        attributes[f"s{i}"] = ["shirt" if y else "tree", "person"]
    bundle = DataBundle({"train": MultimodalSplit(samples, name="train", source="toy", task=TASK)}, TASK, name="toy")
    result = bias_audit(bundle, tmp_path, attributes=attributes, min_count=5, top_k=3)
    assert result["words"]["yes"][0]["token"] == "wow" and result["words"]["yes"][0]["lift"] == pytest.approx(2.0)
    assert result["image_attributes"]["no"][0]["token"] == "tree"
    assert {r["token"]: r["lift"] for r in result["words"]["yes"]}["<user>"] == pytest.approx(1.0)
    saved = json.loads((tmp_path / "bias_audit.json").read_text())
    assert saved["label_prior"] == {"no": 0.5, "yes": 0.5}
    assert "## image attributes: yes" in (tmp_path / "bias_audit.md").read_text()
    assert (tmp_path / "bias_audit.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    with pytest.raises(DataError, match="image attributes"):
        bias_audit(bundle, tmp_path, attributes={"s0": ["x"]})


def test_bias_audit_on_mmsd2(shared_data: Path, tmp_path: Path) -> None:
    from robustmsa.data.text_corpora import read_image_attributes

    folder = shared_data / "mmsd2"
    items = json.loads((folder / "train.json").read_text(encoding="utf-8"))[:2000]
    samples = [Sample(id=str(it["image_id"]), raw_text=it["text"], label_class=int(it["label"])) for it in items]
    bundle = DataBundle({"train": MultimodalSplit(samples, name="train", source=folder, task=TASK)}, TASK, name="mmsd2")
    result = bias_audit(bundle, tmp_path, attributes=read_image_attributes(folder / "image_attributes.txt"), min_count=30, top_k=5)
    assert result["n"] == 2000
    for kind in ("words", "image_attributes"):
        for rows in result[kind].values():
            assert rows and all(r["lift"] >= 1.0 and r["count"] >= 30 for r in rows)

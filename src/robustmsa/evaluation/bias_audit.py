"""Bias audit: lift of words and image attributes for each label (as in the paper's figure 2).

The lift of a token w for label y on a split is

    lift(w, y) = P(y | w) / P(y) = (n(w, y) / n(w)) / (n(y) / N)

with document frequencies (a token counts once per sample). A lift far above
1 for a token that carries no meaning for the task (a user handle, an image
attribute such as "shirt") is a spurious cue a model can learn. Only tokens
seen in at least ``min_count`` samples are ranked (rare tokens have
meaningless lifts). Words come from ``Sample.raw_text``; image attributes
from a mapping sample id -> attribute words (MMSD2.0:
:func:`robustmsa.data.text_corpora.read_image_attributes`).
"""

from __future__ import annotations

import math
import re
from collections import Counter
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from robustmsa.data.dataset import DataBundle
from robustmsa.errors import ConfigError, DataError
from robustmsa.evaluation.report import _save, plt, write_results, write_text_atomic

_TOKEN = re.compile(r"<\w+>|#?\w+(?:'\w+)?")


def word_tokens(text: str) -> set[str]:
    """Lower-cased word tokens of a text (``<user>``-style placeholders and #hashtags kept whole)."""
    return set(_TOKEN.findall(text.lower()))


def lift_scores(docs: Sequence[Iterable[str]], labels: Sequence[int], class_names: Sequence[str], *, min_count: int = 20, top_k: int = 10) -> dict[str, list[dict[str, Any]]]:
    """Top-``top_k`` tokens by lift for every label: ``{label name: [{token, lift, count, count_label}, ...]}``."""
    if len(docs) != len(labels) or not docs:
        raise ConfigError(f"lift_scores needs one label per document and at least one document, got {len(docs)} and {len(labels)}")
    labels = np.asarray(labels, dtype=np.int64)
    doc_freq: Counter[str] = Counter()
    joint: dict[int, Counter[str]] = {k: Counter() for k in range(len(class_names))}
    for tokens, y in zip(docs, labels):
        unique = set(tokens)
        doc_freq.update(unique)
        joint[int(y)].update(unique)
    out = {}
    for k, name in enumerate(class_names):
        prior = float(np.mean(labels == k))
        rows = []
        for token, count in doc_freq.items():
            if count < min_count or prior == 0:
                continue
            rows.append({"token": token, "lift": joint[k][token] / count / prior, "count": count, "count_label": joint[k][token]})
        rows.sort(key=lambda r: (-r["lift"], -r["count"], r["token"]))
        out[name] = rows[:top_k]
    return out


def bias_audit(
    bundle: DataBundle,
    out_dir: Path,
    *,
    split: str = "train",
    attributes: Mapping[str, Sequence[str]] | None = None,
    min_count: int = 20,
    top_k: int = 10,
    name: str = "bias_audit",
) -> dict[str, Any]:
    """Lift tables of words (and image attributes) per label of ``bundle[split]``; writes ``<name>.json/.md/.png`` to ``out_dir``."""
    data = bundle[split]
    if bundle.task.kind != "classification":
        raise ConfigError(f"the bias audit needs a classification task, '{bundle.name}' is {bundle.task.kind}")
    names = bundle.task.label_names
    missing = [s.id for s in data if s.raw_text is None]
    if missing:
        raise DataError(f"{bundle.name} [{split}]", "raw_text", f"{len(missing)} samples have no text, e.g. {missing[:3]}")
    labels = data.labels()
    result: dict[str, Any] = {"dataset": bundle.name, "split": split, "n": len(data), "min_count": min_count}
    result["label_prior"] = {label: float(np.mean(labels == k)) for k, label in enumerate(names)}
    result["words"] = lift_scores([word_tokens(s.raw_text or "") for s in data], labels, names, min_count=min_count, top_k=top_k)
    if attributes is not None:
        absent = [s.id for s in data if s.id not in attributes]
        if absent:
            raise DataError(f"{bundle.name} [{split}]", "image attributes", f"none for {len(absent)} samples, e.g. {absent[:3]}")
        result["image_attributes"] = lift_scores([attributes[s.id] for s in data], labels, names, min_count=min_count, top_k=top_k)
    out_dir = Path(out_dir)
    write_results(out_dir / f"{name}.json", result)
    write_text_atomic(out_dir / f"{name}.md", audit_markdown(result))
    audit_plot(result, out_dir / f"{name}.png")
    return result


def _kinds(result: Mapping[str, Any]) -> list[tuple[str, str]]:
    return [(key, title) for key, title in (("words", "words"), ("image_attributes", "image attributes")) if key in result]


def audit_markdown(result: Mapping[str, Any]) -> str:
    """Markdown tables: per kind (words / image attributes) and label, the top tokens with lift and counts."""
    lines = [f"# Bias audit: {result['dataset']} [{result['split']}], {result['n']} samples", ""]
    priors = ", ".join(f"{k} {v:.3f}" for k, v in result["label_prior"].items())
    lines.append(f"Lift = P(label | token) / P(label) over document frequencies; tokens in >= {result['min_count']} samples. Label priors: {priors}.")
    for key, title in _kinds(result):
        for label, rows in result[key].items():
            lines += ["", f"## {title}: {label}", "", "| token | lift | samples with token | of which with this label |", "|---|---|---|---|"]
            lines += [f"| {r['token']} | {r['lift']:.2f} | {r['count']} | {r['count_label']} |" for r in rows]
    return "\n".join(lines) + "\n"


def audit_plot(result: Mapping[str, Any], path: Path) -> Path:
    """Horizontal lift bars: one panel per (kind, label), the dashed line at lift 1 (no association)."""
    kinds = _kinds(result)
    labels = list(result["label_prior"])
    fig, axes = plt.subplots(len(kinds), len(labels), figsize=(3.4 * len(labels), 0.25 * max(6, 2 + _max_rows(result)) * len(kinds) + 0.6), squeeze=False)
    for row, (key, title) in enumerate(kinds):
        for col, label in enumerate(labels):
            ax = axes[row][col]
            rows = result[key][label][::-1]
            ax.barh([r["token"] for r in rows], [r["lift"] for r in rows], color="tab:red" if col else "tab:blue")
            ax.axvline(1.0, color="gray", linestyle="--", linewidth=0.8)
            ax.set_title(f"{title}: {label}", fontsize=9)
            ax.tick_params(labelsize=7)
            ax.set_xlabel("lift", fontsize=8)
            if rows:
                ax.set_xlim(0, math.ceil(max(r["lift"] for r in rows) * 1.1 * 10) / 10)
    fig.tight_layout()
    return _save(fig, path)


def _max_rows(result: Mapping[str, Any]) -> int:
    return max((len(rows) for key, _ in _kinds(result) for rows in result[key].values()), default=0)

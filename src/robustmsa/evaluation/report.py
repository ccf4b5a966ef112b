"""Writing results: JSON, Markdown tables and PNG plots, without losing a user's results.

Files are written atomically (temporary file + rename). Output folders that
already hold results are refused unless ``overwrite=True``.
"""

from __future__ import annotations

import json
import math
import os
import tempfile
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
from matplotlib.ticker import MaxNLocator  # noqa: E402

from robustmsa.provenance import environment  # noqa: E402

#: Metrics shown as percentages (x100) in Markdown tables.
PERCENT_METRICS = {
    *("Has0_acc_2", "Has0_F1_score", "Non0_acc_2", "Non0_F1_score", "Mult_acc_2", "Mult_acc_3", "Mult_acc_5", "Mult_acc_7", "F1_score"),
    *("Acc", "Precision", "Recall", "F1", "F0.5", "Macro_F1", "Weighted_F1", "Micro_F1", "mAP"),
}


def _usual_mode(path: str) -> None:
    """Give a temporary file (created readable by its owner only) the mode a new file gets under the user's umask,
    so that results written through it are as readable as any other file the user makes."""
    umask = os.umask(0)
    os.umask(umask)
    os.chmod(path, 0o666 & ~umask)


def write_text_atomic(path: Path, text: str) -> Path:
    return write_bytes_atomic(path, text.encode("utf-8"))


def write_bytes_atomic(path: Path, data: bytes) -> Path:
    """Write ``data`` to ``path`` through a temporary file in its folder, so that ``path`` is never half written."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        _usual_mode(tmp)
        with os.fdopen(fd, "wb") as handle:
            handle.write(data)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return path


def _json_default(value: Any) -> Any:
    if hasattr(value, "tolist"):
        return value.tolist()
    if isinstance(value, Path):
        return str(value)
    raise TypeError(f"not JSON serialisable: {type(value).__name__}")


def write_json(path: Path, data: Any) -> Path:
    """Write JSON atomically (NaN written as null)."""
    return write_text_atomic(path, json.dumps(_nan_to_none(data), indent=2, default=_json_default) + "\n")


def write_results(path: Path, results: dict[str, Any]) -> Path:
    """Write a finished run's results file (:func:`write_json`), with ``results['environment']`` set to the software
    and machine that wrote it (:func:`robustmsa.provenance.environment`)."""
    results["environment"] = environment()
    return write_json(path, results)


def _nan_to_none(data: Any) -> Any:
    if isinstance(data, float) and not math.isfinite(data):
        return None
    if isinstance(data, Mapping):
        return {str(k): _nan_to_none(v) for k, v in data.items()}
    if isinstance(data, (list, tuple)):
        return [_nan_to_none(v) for v in data]
    return data


def format_value(value: Any, metric: str, digits: int = 2) -> str:
    """``mean ± std`` (or a plain number); accuracy-like metrics in percent."""
    scale = 100.0 if metric in PERCENT_METRICS else 1.0
    d = digits if metric in PERCENT_METRICS else digits + 1
    if isinstance(value, Mapping) and "mean" in value:
        if value["mean"] is None or not math.isfinite(value["mean"]):
            return "n/a"
        text = f"{value['mean'] * scale:.{d}f}"
        if value.get("n", 1) > 1:
            text += f" ± {value['std'] * scale:.{d}f}"
        return text
    if value is None or (isinstance(value, float) and not math.isfinite(value)):
        return "n/a"
    if isinstance(value, (int, float)):
        return f"{value * scale:.{d}f}"
    return str(value)


def markdown_table(rows: Mapping[str, Mapping[str, Any]], columns: Sequence[str], row_header: str = "model") -> str:
    """A Markdown table: one row per key of ``rows``, one column per metric name."""
    lines = ["| " + " | ".join([row_header, *columns]) + " |", "|" + "---|" * (len(columns) + 1)]
    for name, values in rows.items():
        lines.append("| " + " | ".join([str(name), *(format_value(values.get(c), c) for c in columns)]) + " |")
    return "\n".join(lines) + "\n"


def bar_plot(
    path: Path, groups: Mapping[str, Mapping[str, float]], *, ylabel: str, title: str, errors: Mapping[str, Mapping[str, float]] | None = None, counts: bool = False
) -> Path:
    """Grouped bars: ``groups[series][category] = value`` (e.g. model -> test set -> Acc-2); ``counts``: whole-number ticks."""
    series = list(groups)
    categories = list(dict.fromkeys(c for s in series for c in groups[s]))
    width = 0.8 / max(1, len(series))
    fig, ax = plt.subplots(figsize=(1.8 + 1.6 * len(categories), 3.6))
    for i, name in enumerate(series):
        xs = [j + (i - (len(series) - 1) / 2) * width for j in range(len(categories))]
        ys = [groups[name].get(c, float("nan")) for c in categories]
        yerr = [errors[name].get(c, 0.0) for c in categories] if errors else None
        ax.bar(xs, ys, width=width, label=name, yerr=yerr, capsize=3)
    ax.set_xticks(range(len(categories)), categories)
    if counts:
        ax.yaxis.set_major_locator(MaxNLocator(integer=True))
    ax.set_ylabel(ylabel)
    ax.set_title(title)
    ax.legend(fontsize=8)
    fig.tight_layout()
    return _save(fig, path)


def line_plot(path: Path, curves: Mapping[str, tuple[Sequence[float], Sequence[float]]], *, xlabel: str, ylabel: str, title: str, errors: Mapping[str, Sequence[float]] | None = None) -> Path:
    """One curve per series: ``curves[name] = (xs, ys)``, optional error bands."""
    fig, ax = plt.subplots(figsize=(6, 4))
    for name, (xs, ys) in curves.items():
        ax.plot(xs, ys, marker="o", label=name)
        if errors and name in errors:
            lo = [y - e for y, e in zip(ys, errors[name])]
            hi = [y + e for y, e in zip(ys, errors[name])]
            ax.fill_between(xs, lo, hi, alpha=0.2)
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    ax.set_title(title)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    return _save(fig, path)


def interval_plot(path: Path, panels: Mapping[str, Mapping[str, Mapping[str, Any]]], *, xlabel: str, title: str) -> Path:
    """One panel per group (e.g. a test split), one row per series: ``panels[group][series]`` holds ``mean``, the
    ``values`` it is the mean of (drawn as dots) and optionally ``low`` / ``high`` (an interval, drawn as a bar);
    a vertical line marks 0. For differences against a reference."""
    groups = list(panels)
    rows = max(len(panels[g]) for g in groups)
    fig, axes = plt.subplots(1, len(groups), figsize=(1.5 + 3.6 * len(groups), 1.2 + 0.5 * rows), sharey=True, squeeze=False)
    for ax, group in zip(axes[0], groups):
        names = list(panels[group])
        for y, name in enumerate(names):
            row = panels[group][name]
            if row.get("low") is not None:
                ax.plot([row["low"], row["high"]], [y, y], color="tab:blue", linewidth=3, alpha=0.5)
            ax.scatter(row["values"], [y] * len(row["values"]), color="gray", s=12, zorder=3)
            ax.scatter([row["mean"]], [y], color="tab:blue", marker="D", s=30, zorder=4)
        ax.axvline(0.0, color="black", linewidth=0.8)
        ax.set_yticks(range(len(names)), names)
        ax.set_title(group)
        ax.set_xlabel(xlabel)
        ax.grid(axis="x", alpha=0.3)
    axes[0][0].invert_yaxis()
    fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    return _save(fig, path)


def _save(fig: Any, path: Path) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.stem}.", suffix=".png")
    os.close(fd)
    try:
        _usual_mode(tmp)
        fig.savefig(tmp, dpi=110)
        os.replace(tmp, path)
    finally:
        plt.close(fig)
        Path(tmp).unlink(missing_ok=True)
    return path

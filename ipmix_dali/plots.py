"""The charts of the reports (benchmarks, demo, evaluation): matplotlib, written atomically.

Every chart has labelled axes, its values on the bars (or points), and a legend.
"""
from __future__ import annotations

from typing import Dict, Optional, Sequence

from .atomic import atomic_write

__all__ = ["grouped_bars", "severity_lines"]

COLOURS = ("#c85a3c", "#4682c8", "#50aa5a", "#9467bd", "#8c564b", "#e377c2")


def _pyplot():
    import matplotlib

    matplotlib.use("Agg", force=True)  # files only: no display needed
    import matplotlib.pyplot as plt

    return plt


def _save(fig, path):
    with atomic_write(path) as f:
        fig.savefig(f, format="png", dpi=110, bbox_inches="tight")
    _pyplot().close(fig)
    return str(path)


def grouped_bars(groups: Sequence[str], series: Dict[str, Sequence[Optional[float]]], path,
                 title: str, ylabel: str, xlabel: str = "", lines: Dict[str, float] = None,
                 digits: int = 1, rotate: bool = False):
    """Bars of ``series[name][i]`` for every group i, one colour per series (None: no bar),
    with the value on each bar; ``lines``: labelled horizontal reference lines."""
    import numpy as np

    plt = _pyplot()
    names = list(series)
    width = 0.8 / max(1, len(names))
    fig, ax = plt.subplots(figsize=(max(6.0, 0.55 * len(groups) * max(1, len(names)) + 2), 4.2))
    x = np.arange(len(groups))
    for k, name in enumerate(names):
        values = series[name]
        pos = [x[i] + (k - (len(names) - 1) / 2) * width for i, v in enumerate(values)
               if v is not None]
        vals = [v for v in values if v is not None]
        bars = ax.bar(pos, vals, width * 0.95, label=name, color=COLOURS[k % len(COLOURS)])
        ax.bar_label(bars, labels=[f"{v:.{digits}f}" for v in vals], fontsize=7, padding=1,
                     rotation=90 if rotate else 0)
    for j, (label, value) in enumerate((lines or {}).items()):
        ax.axhline(value, color="#555555" if j == 0 else "#c85a3c", linestyle="--",
                   linewidth=1, label=label)
    ax.set_xticks(x, groups, rotation=45 if rotate else 0, ha="right" if rotate else "center")
    ax.set_ylabel(ylabel)
    if xlabel:
        ax.set_xlabel(xlabel)
    ax.set_title(title)
    ax.margins(y=0.15)
    ax.legend(fontsize=8)
    ax.grid(axis="y", alpha=0.3)
    return _save(fig, path)


def severity_lines(models: Dict[str, Dict[str, Dict[int, float]]], path, title: str,
                   ylabel: str = "top-1 error (%)"):
    """One panel per corruption, error against severity 1-5, one line per model (the models'
    ``{corruption: {severity: error}}``), each point labelled with its value."""
    plt = _pyplot()
    corruptions = list(dict.fromkeys(c for m in models.values() for c in m))
    cols = min(5, max(1, len(corruptions)))
    rows = -(-len(corruptions) // cols)
    fig, axes = plt.subplots(rows, cols, figsize=(3.1 * cols, 2.6 * rows), squeeze=False,
                             sharey=True)
    for i, c in enumerate(corruptions):
        ax = axes[i // cols][i % cols]
        for k, (name, table) in enumerate(models.items()):
            if c not in table:
                continue
            sev = sorted(int(s) for s in table[c])
            err = [table[c][s] if s in table[c] else table[c][str(s)] for s in sev]
            ax.plot(sev, err, marker="o", color=COLOURS[k % len(COLOURS)], label=name)
            for s, e in zip(sev, err):
                ax.annotate(f"{e:.0f}", (s, e), textcoords="offset points", xytext=(0, 4),
                            ha="center", fontsize=6, color=COLOURS[k % len(COLOURS)])
        ax.set_title(c.replace("_", " "), fontsize=9)
        ax.set_xticks([1, 2, 3, 4, 5])
        ax.grid(alpha=0.3)
        if i % cols == 0:
            ax.set_ylabel(ylabel, fontsize=8)
        if i // cols == rows - 1:
            ax.set_xlabel("severity", fontsize=8)
    for j in range(len(corruptions), rows * cols):
        axes[j // cols][j % cols].axis("off")
    handles, labels = axes[0][0].get_legend_handles_labels()
    fig.legend(handles, labels, loc="upper right", fontsize=8)
    fig.suptitle(title)
    fig.tight_layout()
    return _save(fig, path)

"""Small PNG plots for reports (matplotlib, no display needed)."""

from __future__ import annotations

import itertools
from pathlib import Path


def save_line_plot(
    path: Path,
    xs: list[float],
    series: dict[str, list[float]],
    *,
    xlabel: str,
    ylabel: str,
    title: str,
    hlines: dict[str, float] | None = None,
    xticks: bool = True,
) -> None:
    """A PNG line plot of one or more series (and dashed reference lines); `xticks=False` for long, dense axes."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    path.parent.mkdir(parents=True, exist_ok=True)
    fig, ax = plt.subplots(figsize=(5, 3.2))
    markers = "os^vDP*X" if len(xs) <= 30 else [None]
    for (label, ys), marker in zip(series.items(), itertools.cycle(markers)):  # every series, however many
        ax.plot(xs, ys, marker=marker, label=label)
    for label, y in (hlines or {}).items():
        ax.axhline(y, color="gray", linestyle="--", label=label)
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    ax.set_title(title)
    if xticks:
        ax.set_xticks(xs)
    if len(series) + len(hlines or {}) > 1:
        ax.legend()
    ax.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)

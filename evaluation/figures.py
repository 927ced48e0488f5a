"""Figures (seaborn; every figure saved as PNG and PDF)."""
from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402
import seaborn as sns  # noqa: E402

from methods.barrier import relaxed_log_barrier  # noqa: E402
from methods.core.io import atomic_path  # noqa: E402


def save(fig, png: str | Path) -> list[Path]:
    """Save ``fig`` as ``png`` and the same name with .pdf, atomically."""
    png = Path(png)
    outs = [png, png.with_suffix(".pdf")]
    for p in outs:
        with atomic_path(p) as tmp:
            fig.savefig(tmp, format=p.suffix[1:], dpi=150, bbox_inches="tight")
    plt.close(fig)
    return outs


def figure1_barrier(mus: list[float], png: str | Path) -> list[Path]:
    """Figure 1 of the paper: B_{mu,mu^2}(z) for each mu, and the limit chi{z <= 0}."""
    sns.set_theme(style="whitegrid", context="paper")
    z = np.linspace(-2.0, 0.5, 2001)
    rows = [pd.DataFrame({"z": z, "B": [relaxed_log_barrier(float(v), mu) for v in z], "mu": f"μ = {mu:g}"})
            for mu in sorted(mus, reverse=True)]
    df = pd.concat(rows)
    fig, ax = plt.subplots(figsize=(5.5, 3.8))
    sns.lineplot(data=df, x="z", y="B", hue="mu", palette="viridis", ax=ax, linewidth=1.4)
    ax.plot([-2, 0], [0, 0], color="black", linestyle="--", linewidth=1, label="χ{z ≤ 0}")
    ax.plot([0, 0], [0, 5], color="black", linestyle="--", linewidth=1)
    ax.set_ylim(-1.5, 5)
    ax.set_xlim(-2, 0.5)
    ax.set_xlabel("z  (constraint value C_i)")
    ax.set_ylabel(r"$B_{\mu,\mu^2}(z)$")
    ax.set_title("Relaxed log-barrier (s = μ²)")
    ax.legend(title=None, fontsize=7, loc="upper left")
    return save(fig, png)


def metrics_figure(table: pd.DataFrame, lengths: dict[str, list[int]], png: str | Path,
                   max_new_tokens: int | None = None) -> list[Path]:
    """Per-model metrics: task NLL mean +- std, response-length box plots, and the numbers as a table."""
    sns.set_theme(style="whitegrid", context="paper")
    models = list(table["model"])
    fig = plt.figure(figsize=(10, 3.2 + 0.3 * len(models)))
    gs = fig.add_gridspec(2, 2, height_ratios=[3, 0.4 + 0.3 * len(models)])
    ax1, ax2, ax3 = fig.add_subplot(gs[0, 0]), fig.add_subplot(gs[0, 1]), fig.add_subplot(gs[1, :])
    pal = dict(zip(models, sns.color_palette("deep", len(models))))
    ax1.bar(models, table["nll_mean"], yerr=table["nll_std"], color=[pal[m] for m in models], capsize=4)
    ax1.set_ylabel("task NLL (nats/token), mean ± std")
    ax1.set_title("Task perplexity (log scale)")
    ld = pd.DataFrame([(m, n) for m in models for n in lengths.get(m, [])], columns=["model", "tokens"])
    sns.boxplot(data=ld, x="model", y="tokens", hue="model", palette=pal, notch=True, showmeans=True, ax=ax2,
                meanprops={"marker": "o", "markerfacecolor": "white", "markeredgecolor": "black"}, legend=False)
    if max_new_tokens:
        ax2.axhline(max_new_tokens, color="grey", linestyle=":", linewidth=1)
        ax2.text(-0.45, max_new_tokens, "max_new_tokens", fontsize=7, color="grey", va="bottom")
    ax2.set_title("Sampled response length (test prompts)")
    ax2.set_ylabel("tokens")
    ax3.axis("off")
    cols = [c for c in table.columns if c != "model"]
    cell = [[_fmt(v) for v in table.loc[i, cols]] for i in table.index]
    t = ax3.table(cellText=cell, rowLabels=models, colLabels=cols, loc="center", cellLoc="center")
    t.auto_set_font_size(False)
    t.set_fontsize(7)
    t.scale(1, 1.3)
    fig.tight_layout()
    return save(fig, png)


def _fmt(v) -> str:
    if isinstance(v, (float, np.floating)):
        return f"{v:.3g}" if abs(v) < 1000 else f"{v:.0f}"
    return str(v)

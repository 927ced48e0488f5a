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
from methods.registry import get, style  # noqa: E402


def save(fig, png: str | Path) -> list[Path]:
    """Save ``fig`` as ``png`` and the same name with .pdf, atomically; byte-reproducible (the PDF
    carries no creation date)."""
    from methods.core.record import git_revision

    png = Path(png)
    outs = [png, png.with_suffix(".pdf")]
    meta = {"png": {"Software": f"l3m-bench {git_revision()}", "Source": str(png.name)},
            "pdf": {"Creator": f"l3m-bench {git_revision()}", "Title": str(png.stem), "CreationDate": None}}
    for p in outs:
        with atomic_path(p) as tmp:
            fig.savefig(tmp, format=p.suffix[1:], dpi=150, bbox_inches="tight", metadata=meta[p.suffix[1:]])
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


def err(df: pd.DataFrame, name: str) -> np.ndarray:
    """Asymmetric error bars (2, n) from the table's ``<name>_mean``, ``_lo`` and ``_hi`` (95% interval)."""
    m = df[f"{name}_mean"].to_numpy(float)
    return np.vstack([m - df[f"{name}_lo"].to_numpy(float), df[f"{name}_hi"].to_numpy(float) - m])


def metrics_figure(table: pd.DataFrame, lengths: dict[str, list[int]], png: str | Path,
                   max_new_tokens: int | None = None) -> list[Path]:
    """Per-model metrics: task NLL with its 95% interval (pooled over seeds and prompts; the
    per-example spread is the table's nll_spread_sd), response-length box plots over every seed's
    samples, and the numbers as a table."""
    sns.set_theme(style="whitegrid", context="paper")
    models = list(table["model"])
    fig = plt.figure(figsize=(10, 3.2 + 0.3 * len(models)))
    gs = fig.add_gridspec(2, 2, height_ratios=[3, 0.4 + 0.3 * len(models)])
    ax1, ax2, ax3 = fig.add_subplot(gs[0, 0]), fig.add_subplot(gs[0, 1]), fig.add_subplot(gs[1, :])
    pal = dict(zip(models, sns.color_palette("deep", len(models))))
    ax1.errorbar(range(len(models)), table["nll_mean"], yerr=err(table, "nll"), fmt="none", ecolor="black", capsize=4)
    ax1.scatter(range(len(models)), table["nll_mean"], c=[pal[m] for m in models], s=40, zorder=3)
    ax1.set_xticks(range(len(models)), models, rotation=30, fontsize=7)
    ax1.set_ylabel("task NLL (nats/token), mean and 95% interval")
    ax1.set_title(f"Task NLL ({int(table['n_seeds'].iloc[0])} seed(s) x test prompts)")
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


def figure2_length(df: pd.DataFrame, lengths: dict[str, list[int]], png: str | Path) -> list[Path]:
    """Figure 2 of the paper. Left: mean response length vs task NLL per model, both with their 95%
    intervals over seeds and prompts, labelled with the verdict on the band. Right: notched box plots
    of every seed's lengths (notch: median 95% CI, box: quartiles, whiskers: 1.5 IQR, white circles:
    means), each L3M's band as dashed lines."""
    sns.set_theme(style="whitegrid", context="paper")
    models = list(df["model"])
    pal = dict(zip(models, ["#555555"] + sns.color_palette("viridis", len(models) - 1)))
    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(11, 4.2), gridspec_kw={"width_ratios": [1, 1.3]})
    for i, r in df.iterrows():
        ax1.errorbar(r["len_mean"], r["nll_mean"], xerr=err(df.loc[[i]], "len"), yerr=err(df.loc[[i]], "nll"), fmt="o",
                     color=pal[r["model"]], capsize=4, markersize=7, label=_label(r))
    ax1.set_xlabel("mean response length (tokens), 95% interval")
    ax1.set_ylabel("task NLL (nats/token), mean and 95% interval")
    ax1.set_title("Task perplexity vs response length")
    ax1.legend(fontsize=7, loc="upper center", bbox_to_anchor=(0.5, -0.15), ncol=3, frameon=False)
    ld = pd.DataFrame([(m, n) for m in models for n in lengths[m]], columns=["model", "tokens"])
    sns.boxplot(data=ld, x="model", y="tokens", hue="model", palette=pal, notch=True, showmeans=True, ax=ax2,
                whis=1.5, legend=False, meanprops={"marker": "o", "markerfacecolor": "white", "markeredgecolor": "black"})
    for i, (_, r) in enumerate(df.iterrows()):
        if pd.notna(r["band_lo"]):
            for y in (r["band_lo"], r["band_hi"]):
                ax2.plot([i - 0.48, i + 0.48], [y, y], linestyle="--", color="black", linewidth=1.3, zorder=5)
    # model, band and verdict on three lines: on one or two they run into the next label
    ax2.set_xticks(range(len(models)), [_label(r, sep="\n") for _, r in df.iterrows()], fontsize=7)
    ax2.set_xlabel("")
    ax2.set_ylabel("response length (tokens)")
    ax2.set_title("Response lengths on the test prompts (dashed: band)")
    fig.tight_layout()
    return save(fig, png)


def _label(r, sep: str = " ") -> str:
    """Model, band and verdict, joined by ``sep`` (a space in the legend, a line break under a box)."""
    if pd.isna(r["band_lo"]):
        return str(r["model"])
    verdict = f":{sep}{r['verdict']}" if isinstance(r.get("verdict"), str) else ""
    return f"{r['model']}{sep}[{r['band_lo']:g}, {r['band_hi']:g}]{verdict}"


def training_curves(log: list[dict], png: str | Path, title: str = "") -> list[Path]:
    """Per-step curves of an L3M or MM run: constraint estimates (0 = bound), multipliers, mu and the
    barrier (L3M) or the KL to SFT (MM), task loss and sampled length. A CPO run's log
    (``margin_constraint`` in it) gets its own panels (``cpo_curves``)."""
    sns.set_theme(style="whitegrid", context="paper")
    df = pd.DataFrame(log)
    if "margin_constraint" in df:
        return cpo_curves(df, png, title)
    names = [c[len("C_batch["):-1] for c in df.columns if c.startswith("C_batch[")]
    fig, axes = plt.subplots(1, 4, figsize=(15, 3.4))
    pal = sns.color_palette("deep", max(1, len(names)))
    for n, col in zip(names, pal):
        if f"C_hat[{n}]" in df:
            axes[0].plot(df["step"], df[f"C_hat[{n}]"], color=col, label=f"Ĉ {n} (EMA)")
            axes[0].plot(df["step"], df[f"C_batch[{n}]"], color=col, alpha=0.3, linewidth=0.8)
        else:
            axes[0].plot(df["step"], df[f"C_batch[{n}]"], color=col, label=f"C {n} (batch)")
        axes[1].plot(df["step"], df[f"lambda[{n}]"], color=col, label=f"λ {n}")
    axes[0].axhline(0, color="black", linestyle="--", linewidth=1)
    axes[0].set_title("constraint estimates (feasible ≤ 0)")
    axes[0].legend(fontsize=7)
    axes[1].set_yscale("symlog", linthresh=1e-2)
    axes[1].set_title("multipliers λ")
    axes[1].legend(fontsize=7)
    if "mu" in df:
        axes[2].plot(df["step"], df["mu"], color="black", label="μ")
        axes[2].set_yscale("log")
        ax2b = axes[2].twinx()
        ax2b.plot(df["step"], df["barrier"], color="tab:red", alpha=0.7, label="barrier")
        axes[2].set_title("μ (black, log) and barrier value (red)")
    elif "kl" in df:
        axes[2].plot(df["step"], df["kl"], color="tab:purple")
        axes[2].set_title("KL to SFT (per-sample k1 estimate)")
    axes[3].plot(df["step"], df["task_loss"], color="tab:blue", label="task NLL")
    axes[3].set_ylabel("task NLL (nats/token)")
    ax3b = axes[3].twinx()
    ax3b.plot(df["step"], df["mean_length"], color="tab:green", alpha=0.7)
    ax3b.set_ylabel("mean sampled length", color="tab:green")
    axes[3].set_title("task loss (blue) and sampled length (green)")
    for ax in axes:
        ax.set_xlabel("step")
    fig.suptitle(title)
    fig.tight_layout()
    return save(fig, png)


def cpo_curves(df: pd.DataFrame, png: str | Path, title: str = "") -> list[Path]:
    """Per logged step of a CPO run: the constraint's violation tau - mean margin on the constraint
    pairs (feasible <= 0), its multiplier lambda, the DPO loss on the objective pairs, and both pair
    sets' mean margins (summed log-ratios, nats per pair)."""
    fig, axes = plt.subplots(1, 4, figsize=(15, 3.4))
    dot = {"marker": ".", "markersize": 4}  # a one-row log still shows
    axes[0].plot(df["step"], df["violation"], color="tab:red", **dot)
    axes[0].axhline(0, color="black", linestyle="--", linewidth=1)
    axes[0].set_title("violation τ − batch margin (feasible ≤ 0)")
    axes[1].plot(df["step"], df["lambda"], color="tab:orange", **dot)
    axes[1].set_yscale("symlog", linthresh=1e-2)
    axes[1].set_title("multiplier λ")
    axes[2].plot(df["step"], df["dpo_loss"], color="tab:blue", **dot)
    axes[2].set_title("DPO loss on the objective pairs")
    axes[3].plot(df["step"], df["margin_objective"], color="tab:blue", label="objective pairs", **dot)
    axes[3].plot(df["step"], df["margin_constraint"], color="tab:green", label="constraint pairs", **dot)
    axes[3].set_title("batch mean margin (nats per pair)")
    axes[3].legend(fontsize=7)
    for ax in axes:
        ax.set_xlabel("step")
    fig.suptitle(title)
    fig.tight_layout()
    return save(fig, png)


def ablation_figure(df: pd.DataFrame, png: str | Path) -> list[Path]:
    """Per ablation setting: share of test responses inside the band (the verdict on the band's mean
    above each bar), and task NLL with its 95% interval over seeds and prompts."""
    sns.set_theme(style="whitegrid", context="paper")
    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(11, 3.6))
    pal = sns.color_palette("deep", len(df))
    ax1.bar(df["setting"], df["frac_in_band"], color=pal)
    for i, (_, r) in enumerate(df.iterrows()):
        ax1.text(i, r["frac_in_band"] + 0.01, f"mean {r['len_mean']:.1f}\n{r.get('verdict', '')}", ha="center",
                 fontsize=7)
    ax1.set_ylim(0, 1)
    ax1.set_ylabel("share of test responses in band")
    ax1.set_title(f"constraint satisfaction, band [{df['band_lo'].iloc[0]:g}, {df['band_hi'].iloc[0]:g}]")
    ax2.errorbar(range(len(df)), df["nll_mean"], yerr=err(df, "nll"), fmt="none", ecolor="black", capsize=4)
    ax2.scatter(range(len(df)), df["nll_mean"], c=pal, s=40, zorder=3)
    ax2.set_xticks(range(len(df)), df["setting"])
    ax2.set_ylabel("task NLL (nats/token), mean and 95% interval")
    ax2.set_title("task perplexity")
    for ax in (ax1, ax2):
        ax.tick_params(axis="x", rotation=30)
    fig.tight_layout()
    return save(fig, png)


def pareto_front(points: np.ndarray) -> np.ndarray:
    """Indices of the non-dominated points (maximising both coordinates), sorted by the first."""
    idx = [i for i, p in enumerate(points)
           if not any((q >= p).all() and (q > p).any() for j, q in enumerate(points) if j != i)]
    return np.array(sorted(idx, key=lambda i: points[i][0]), dtype=int)


def _method_styles(df: pd.DataFrame) -> dict[str, tuple[str, str, str]]:
    """(label, marker, colour) per method of the table (its ``method`` column), from the registry."""
    return {m: style(m) for m in dict.fromkeys(df["method"])}


def _grid(method: str) -> str | None:
    return None if method == "base" else get(method).grid  # the registry's current entries (plugins included)


def figure3_two_reward(df: pd.DataFrame, points: list, shade: int, labels: list[str], png: str | Path) -> list[Path]:
    """Figure 3 of the paper. Left: mean reward 1 vs mean reward 2 per model, each constraint point,
    dotted lines from every constrained model to its point, the feasible quadrant of point ``shade``
    shaded; error bars: 95% intervals over seeds and prompts. Middle: task NLL with its 95% interval of
    every constrained method per constraint point, labelled with the verdict and the seeds whose means meet the point. Which model is
    which method, and at which point, is the table's ``method`` and ``point`` columns; styles are the
    registry's."""
    sns.set_theme(style="whitegrid", context="paper")
    checked = [k for k in ("r1", "r2") if f"{k}_check_mean" in df]
    if checked:
        fig, (ax, bx, cx) = plt.subplots(1, 3, figsize=(15, 4.4), gridspec_kw={"width_ratios": [1.3, 1, 1]})
    else:
        fig, (ax, bx) = plt.subplots(1, 2, figsize=(11, 4.4), gridspec_kw={"width_ratios": [1.3, 1]})
    r1, r2 = "r1_mean", "r2_mean"
    styles = _method_styles(df)
    cmap = sns.color_palette("colorblind", len(points))
    x0, y0 = points[shade]
    lim = (min(df[r1].min(), min(p[0] for p in points)) - 0.3, max(df[r1].max(), max(p[0] for p in points)) + 0.3,
           min(df[r2].min(), min(p[1] for p in points)) - 0.3, max(df[r2].max(), max(p[1] for p in points)) + 0.3)
    ax.fill_between([x0, lim[1]], y0, lim[3], color=cmap[shade], alpha=0.12, lw=0,
                    label=f"feasible for point {shade}")
    for i, (b1, b2) in enumerate(points):
        ax.scatter([b1], [b2], marker="+", s=160, color=cmap[i], lw=2, zorder=4)
        ax.annotate(f"p{i}", (b1, b2), textcoords="offset points", xytext=(5, 5), fontsize=8, color=cmap[i])
    seen = set()
    for j, r in df.iterrows():
        kind = r["method"]
        name, marker, color = styles[kind]
        constrained = pd.notna(r.get("point"))
        if constrained:
            i = int(r["point"])
            ax.plot([r[r1], points[i][0]], [r[r2], points[i][1]], ls=":", color=cmap[i], lw=1)
        ax.errorbar(r[r1], r[r2], xerr=err(df.loc[[j]], "r1"), yerr=err(df.loc[[j]], "r2"), fmt=marker, color=color,
                    ms=8 if kind != "sft" else 12,
                    mec="white" if constrained else color, label=None if kind in seen else name, zorder=5)
        seen.add(kind)
    for method in [m for m in styles if _grid(m) == "weights"]:
        sub = df[df["method"] == method].sort_values(r1)
        ax.plot(sub[r1], sub[r2], color=styles[method][2], lw=0.8, alpha=0.6)
    ax.set(xlim=lim[:2], ylim=lim[2:], xlabel=f"mean {labels[0]} (normalised)", ylabel=f"mean {labels[1]} (normalised)",
           title="Two-reward constraints: models and constraint points")
    ax.legend(fontsize=7, loc="best")
    per_point = [m for m in dict.fromkeys(df.loc[df["point"].notna(), "method"])]
    offsets = np.linspace(-0.08, 0.08, len(per_point)) if len(per_point) > 1 else [0.0]
    for method, dx in zip(per_point, offsets):
        sub = df[(df["method"] == method) & df["point"].notna()].sort_values("point")
        name, marker, color = styles[method]
        bx.errorbar(sub["point"].astype(float) + dx, sub["nll_mean"], yerr=err(sub, "nll"), fmt=marker, color=color,
                    capsize=3, label=name)
        for _, r in sub.iterrows():
            seeds = f"\n{r['seeds_met'] * r['n_seeds']:.0f}/{r['n_seeds']:.0f} seeds" if pd.notna(r.get("seeds_met")) else ""
            bx.annotate(f"{r.get('verdict', '')}{seeds}", (float(r["point"]) + dx, r["nll_hi"]), textcoords="offset points",
                        xytext=(0, 3), ha="center", fontsize=6, color=color)
    for kind in ("sft", "base"):
        row = df[df["model"] == kind]
        if len(row):
            bx.axhline(row["nll_mean"].iloc[0], ls="--", color=style(kind)[2], lw=1, label=f"{style(kind)[0]} (mean)")
    bx.set(xlabel="constraint point", ylabel="task NLL, nats/token (mean, 95% interval)",
           title="Task NLL per point (label: verdict, seeds meeting it)",
           xticks=list(range(len(points))), xticklabels=[f"p{i}\n({a:g}, {b:g})" for i, (a, b) in enumerate(points)])
    bx.legend(fontsize=7)
    if checked:
        _check_panel(cx, df, checked, labels, styles)
    fig.tight_layout()
    return save(fig, png)


def _check_panel(cx, df: pd.DataFrame, checked: list[str], labels: list[str], styles: dict) -> None:
    """Is a met constraint real? Each model's mean reward (x) against its independent check signal's
    mean (y), with 95% intervals: a model on the diagonal gains on both; one far right of it gains on the reward
    only (the reward model is being gamed). Filled markers: reward 1, hollow: reward 2."""
    from matplotlib.lines import Line2D

    for k in checked:
        idx = 0 if k == "r1" else 1
        for method, sub in df.groupby("method", sort=False):
            _, marker, color = styles[method]
            cx.errorbar(sub[f"{k}_mean"], sub[f"{k}_check_mean"], xerr=err(sub, k), yerr=err(sub, f"{k}_check"),
                        fmt=marker, color=color, mfc=color if idx == 0 else "white", ms=6, ls="none")
    vals = pd.concat([df[f"{k}_{c}"] for k in checked for c in ("mean", "check_mean")])
    lo, hi = vals.min() - 0.2, vals.max() + 0.2
    cx.plot([lo, hi], [lo, hi], ls="--", color="grey", lw=1)
    handles = [Line2D([], [], marker="o", color="0.3", mfc="0.3" if k == "r1" else "white", ls="none",
                      label=f"{'filled' if k == 'r1' else 'hollow'}: {labels[0 if k == 'r1' else 1]} "
                            f"vs {df[f'{k}_check'].iloc[0]}") for k in checked]
    handles += [Line2D([], [], marker=m, color=c, ls="none", label=n) for n, m, c in styles.values()]
    cx.set(xlim=(lo, hi), ylim=(lo, hi), xlabel="mean constrained reward (normalised)",
           ylabel="mean independent check (normalised)", title="Is a met constraint real?")
    cx.legend(handles=handles, fontsize=6, loc="lower right")


def pareto_figure(df: pd.DataFrame, labels: list[str], png: str | Path) -> list[Path]:
    """The Pareto front of each weight-grid method (the mixture) against every other model of the
    table, in reward space; styles are the registry's."""
    sns.set_theme(style="whitegrid", context="paper")
    fig, ax = plt.subplots(figsize=(6, 4.4))
    styles = _method_styles(df)
    for method in [m for m in styles if _grid(m) == "weights"]:
        grid = df[df["method"] == method]
        name, _, color = styles[method]
        front = grid.iloc[pareto_front(grid[["r1_mean", "r2_mean"]].to_numpy())]
        ax.plot(front["r1_mean"], front["r2_mean"], color=color, lw=1.5, label=f"{name} Pareto front")
        for _, r in grid.iterrows():
            ax.annotate(r.get("weights", ""), (r["r1_mean"], r["r2_mean"]), textcoords="offset points", xytext=(4, -10),
                        fontsize=7, color=color)
    for method, (name, marker, color) in styles.items():
        if method == "base":
            continue
        sub = df[df["method"] == method]
        ax.errorbar(sub["r1_mean"], sub["r2_mean"], xerr=err(sub, "r1"), yerr=err(sub, "r2"), fmt=marker, color=color,
                    ms=7, label=name, ls="none")
    ax.set(xlabel=f"mean {labels[0]} (normalised)", ylabel=f"mean {labels[1]} (normalised)",
           title="Mixture-of-rewards grid vs the constrained models")
    ax.legend(fontsize=7)
    fig.tight_layout()
    return save(fig, png)


def comparisons_figure(df: pd.DataFrame, png: str | Path) -> list[Path]:
    """The paired comparisons as forest plots, one panel per metric: L3M minus the other model at each
    constraint point or band, with its paired 95% interval over seeds and prompts (0: no difference)."""
    sns.set_theme(style="whitegrid", context="paper")
    metrics = list(dict.fromkeys(df["metric"])) if len(df) else ["(none)"]
    rows = max(1, len(df) // len(metrics))
    fig, axes = plt.subplots(1, len(metrics), figsize=(3.2 * len(metrics), 1.2 + 0.28 * rows), sharey=True,
                             squeeze=False)
    for ax, metric in zip(axes[0], metrics):
        sub = df[df["metric"] == metric].reset_index(drop=True) if len(df) else df
        y = np.arange(len(sub))[::-1]
        colors = ["tab:red" if e else "0.4" for e in sub.get("excludes_0", [])]
        if len(sub):
            ax.hlines(y, sub["lo"], sub["hi"], colors=colors, lw=1.2)
            ax.scatter(sub["delta"], y, c=colors, s=14, zorder=3)
            ax.set_yticks(y, [f"{w}: {o}" for w, o in zip(sub["where"], sub["other"])], fontsize=6)
        ax.axvline(0, color="black", lw=0.8)
        ax.set_title(metric, fontsize=8)
        ax.tick_params(axis="x", labelsize=6)
    fig.suptitle("L3M minus other (paired 95% interval over seeds and prompts; red: excludes 0)", fontsize=9)
    fig.tight_layout()
    return save(fig, png)


def tuning_figure(sweep: pd.DataFrame, test: pd.DataFrame, points: list, labels: list[str],
                  png: str | Path) -> list[Path]:
    """The validation sweep, one panel per constraint point: every setting of every method at the point
    (``sweep``: tables/tuning.csv; hollow, val prompts) in mean reward 1 vs mean reward 2, the point's
    feasible quadrant shaded, and the chosen settings on the test prompts (``test``:
    tables/tuning_test.csv; filled, joined to their val mark). A method with one model per point (L3M,
    MM) shows that point's models; one without points (the mixture's weight vectors, DPO, CPO) shows all
    of its models in every panel, since the choice picks among them per point. Error bars: 95% intervals
    over the tuning seeds and prompts; verdict and task NLL of each choice in the legend."""
    sns.set_theme(style="whitegrid", context="paper")
    n = max(1, len(points))
    fig, axes = plt.subplots(1, n, figsize=(3.6 * n, 3.6), squeeze=False, sharex=True, sharey=True)
    xs = list(sweep.get("r1_mean", [])) + list(test.get("r1_mean", [])) + [p[0] for p in points]
    ys = list(sweep.get("r2_mean", [])) + list(test.get("r2_mean", [])) + [p[1] for p in points]
    lim = (min(xs) - 0.2, max(xs) + 0.2, min(ys) - 0.2, max(ys) + 0.2)
    for i, ax in enumerate(axes[0][: len(points)]):
        b1, b2 = points[i]
        ax.fill_between([b1, lim[1]], b2, lim[3], color="tab:green", alpha=0.1, lw=0)
        ax.scatter([b1], [b2], marker="+", s=120, color="black", lw=1.5, zorder=4)
        sub = sweep[(sweep["point"] == i) | sweep["point"].isna()] if len(sweep) else sweep
        for method in dict.fromkeys(sub.get("method", [])):
            name, marker, color = style(method)
            m = sub[sub["method"] == method]
            ax.errorbar(m["r1_mean"], m["r2_mean"], xerr=err(m, "r1"), yerr=err(m, "r2"), fmt=marker, color=color,
                        mfc="none", ms=6, lw=0.6, alpha=0.7, label=f"{name}: settings on val")
            t = test[(test["point"] == i) & (test["method"] == method)] if len(test) else test
            for j, r in t.iterrows():
                v = m[(m["setting"] == r["setting"]) & (m["variant"] == r["variant"])]
                if len(v):
                    ax.plot([v["r1_mean"].iloc[0], r["r1_mean"]], [v["r2_mean"].iloc[0], r["r2_mean"]], ls=":",
                            color=color, lw=1)
                ax.errorbar(r["r1_mean"], r["r2_mean"], xerr=err(t.loc[[j]], "r1"), yerr=err(t.loc[[j]], "r2"),
                            fmt=marker, color=color, ms=8, mec="black", zorder=5,
                            label=f"{name} {r['variant']} {r['setting']} on test: {r['verdict']}, "
                                  f"NLL {r['nll_mean']:.3f}")
        ax.set(xlim=lim[:2], ylim=lim[2:], title=f"p{i} = ({b1:g}, {b2:g})", xlabel=f"mean {labels[0]}")
        ax.legend(fontsize=5, loc="lower left")
    axes[0][0].set_ylabel(f"mean {labels[1]}")
    fig.suptitle("Validation sweep: every setting on val (hollow), the chosen one on test (filled)", fontsize=9)
    fig.tight_layout()
    return save(fig, png)

"""report.png (each metric with its 95% CI, model vs baselines) and curves.png (loss per epoch across members)."""

import math

import numpy as np

from runner.config.metric_names import MONITORS, higher_is_better
from runner.evaluate.stats import Z95, fmt_interval

MODEL_COLOR, BASELINE_COLOR = "#1f77b4", "#7f7f7f"
DPI = 130


def preload() -> None:
    """Import matplotlib's figure and Agg canvas (the plot worker does this while the run trains)."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg  # noqa: F401
    from matplotlib.figure import Figure  # noqa: F401


def _figure(**kw):
    # Lazy, and a bare Figure on its own Agg canvas rather than pyplot: no global backend or figure
    # state, so plotting from a worker thread or beside a user's own pyplot session is safe.
    # Created at the output dpi, so the text sizes measured for the layout are reused by the draw.
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(dpi=DPI, **kw)
    FigureCanvasAgg(fig)
    return fig


def _tight_layout(fig, suptitle=None, pad: float = 1.08, rows_alike: bool = False) -> None:
    """fig.tight_layout() for a plain grid of subplots (the same subplot params), measuring the figure once.

    matplotlib's tight_layout measures every Axes twice (the second pass repeats the first when
    rect is the whole figure) and leaves a placeholder layout engine that makes savefig lay the
    figure out once more before drawing it; those two extra passes were a fifth of a plot's time.
    `rows_alike`: every row has the same title and tick-label layout, so only the first is measured.
    """
    from matplotlib import rcParams

    renderer = fig.canvas.get_renderer()
    width, height = fig.get_size_inches()
    font_in = rcParams["font.size"] / 72  # pad is in units of the font size, as tight_layout's
    pad_x, pad_y = pad * font_in / width, pad * font_in / height
    to_fig = fig.transFigure.inverted()
    axes = [ax for ax in fig.axes if ax.get_visible()]
    rows, cols = axes[0].get_subplotspec().get_gridspec().get_geometry()
    # How far each Axes' labels reach beyond its box, as figure fractions.
    left, right, top, bottom = (np.zeros((rows, cols)) for _ in range(4))
    for ax in axes:
        spec = ax.get_subplotspec()
        r, c = spec.rowspan.start, spec.colspan.start
        if rows_alike and r > 0:
            continue
        box = ax.get_position(original=True)
        tight = to_fig.transform_bbox(ax.get_tightbbox(renderer, for_layout_only=True))
        left[r, c], right[r, c] = box.xmin - tight.xmin, tight.xmax - box.xmax
        top[r, c], bottom[r, c] = tight.ymax - box.ymax, box.ymin - tight.ymin
    if rows_alike:
        for extent in (left, right, top, bottom):
            extent[1:] = extent[0]
    margin_left = max(left[:, 0].max(), 0) + pad_x
    margin_right = max(right[:, -1].max(), 0) + pad_x
    margin_top = max(top[0].max(), 0) + pad_y
    if suptitle is not None:
        margin_top += to_fig.transform_bbox(suptitle.get_window_extent(renderer)).height + pad_y
    margin_bottom = max(bottom[-1].max(), 0) + pad_y
    params = dict(left=margin_left, right=1 - margin_right, bottom=margin_bottom, top=1 - margin_top)
    if cols > 1:
        gap = (right[:, :-1] + left[:, 1:]).max() + pad_x
        params["wspace"] = gap / ((1 - margin_left - margin_right - gap * (cols - 1)) / cols)
    if rows > 1:
        gap = (bottom[:-1] + top[1:]).max() + pad_y
        params["hspace"] = gap / ((1 - margin_top - margin_bottom - gap * (rows - 1)) / rows)
    fig.subplots_adjust(**params)


def _save(fig, path) -> None:
    # zlib level 1: a quarter of the encoding time of the default 6, for files about 1.3x larger.
    fig.savefig(path, format="png", pil_kwargs={"compress_level": 1})  # `path` may be an open file: no suffix


def report_plot(results: dict, path) -> None:
    """One panel per metric: the model and each baseline as a point with its 95% CI (1.96·SE) bar."""
    rows = [(results.get("model") or "model", results["metrics"]), *results.get("baselines", {}).items()]
    metrics = list(results["metrics"])
    ncols = min(4, len(metrics))
    nrows = math.ceil(len(metrics) / ncols)
    from matplotlib.ticker import MaxNLocator

    fig = _figure(figsize=(3.6 * ncols, (0.9 + 0.38 * len(rows)) * nrows + 0.9))
    axes = fig.subplots(nrows, ncols, squeeze=False, sharey=True)
    ys = np.arange(len(rows))[::-1]  # the model on top
    for ax, metric in zip(axes.flat, metrics):
        name = metric.split("/", 1)[-1]
        labels = []
        for y, (label, m) in zip(ys, rows):
            d = m.get(metric) or {}
            if d.get("mean") is None or not math.isfinite(d["mean"]):
                ax.text(0.5, y, "n/a", transform=ax.get_yaxis_transform(), ha="center", va="center", color="0.5")
                continue
            color = MODEL_COLOR if y == ys[0] else BASELINE_COLOR
            ci = d.get("ci95")  # the headline interval, asymmetric where Wilson, a percentile or clipped
            err = None if not ci else [[max(d["mean"] - ci[0], 0)], [max(ci[1] - d["mean"], 0)]]
            ax.errorbar(d["mean"], y, xerr=err, fmt="o", color=color, capsize=3, ms=5,
                        mfc=color if err is not None else "white")
            text = fmt_interval(d)
            labels.append(ax.annotate(text, (d["mean"], y), xytext=(0, 7), textcoords="offset points",
                                      fontsize=7.5, color=color))
        better = "nearer 0 is better" if name == "mean_error" else (
            "higher is better" if higher_is_better(name) else "lower is better")
        boot = "†" if str(results["metrics"][metric].get("interval", "")).startswith("bootstrap") else ""
        if name == "mean_error":
            ax.axvline(0, color="0.6", lw=0.8)  # the target: no systematic bias
        ax.set_title(f"{name}{boot}  ({better})", fontsize=9)
        ax.set_ylim(ys[-1] - 0.6, ys[0] + 0.7)
        ax.margins(x=0.15)
        lo, hi = ax.get_xlim()
        for text in labels:  # labels near an edge grow inwards so they stay inside the panel
            where = (text.xy[0] - lo) / (hi - lo)
            text.set_horizontalalignment("left" if where < 0.3 else "right" if where > 0.7 else "center")
        ax.grid(axis="x", alpha=0.3)
        ax.tick_params(labelsize=8)
        ax.xaxis.set_major_locator(MaxNLocator(4))  # each tick is several artists: fewer, faster
    for ax in axes.flat[len(metrics):]:
        ax.axis("off")
    axes[0, 0].set_yticks(ys, [label for label, _ in rows])
    head = " · ".join(str(x) for x in (results.get("dataset"), rows[0][0]) if x)
    firsts = list(results["metrics"].values())
    note = "; † bootstrap percentile" if any(str(d.get("interval", "")).startswith("bootstrap") for d in firsts) else ""
    title = fig.suptitle(f"{head}: test metrics, mean and 95% CI (over {results.get('over') or 'members'}"
                         f"{note})", fontsize=10)
    _tight_layout(fig, title, rows_alike=True)
    _save(fig, path)


def _epoch_band(history, column):
    """Epochs, mean across members, 1.96·SE half-width (0 where one member) and member count per epoch."""
    # mean_ci's definition (finite values, sd with ddof=1, se = sd/√n), for every epoch in one groupby.
    finite = history[["epoch", column]][np.isfinite(history[column].to_numpy(float))]
    band = finite.groupby("epoch")[column].agg(["mean", "std", "count"])
    half = np.where(band["count"] > 1, Z95 * band["std"] / np.sqrt(band["count"]), 0.0)
    return band.index.to_numpy(), band["mean"].to_numpy(), half, band["count"].to_numpy()


def _plot_band(ax, history, column, label, color, kept: dict[int, int] | None = None) -> bool:
    """Plot one column: each member thin, their mean ± 1.96·SE while all train, a dot on each member's epoch in
    `kept` (member -> the epoch whose weights it kept); True if some stopped early."""
    epochs, mean, half, count = _epoch_band(history, column)
    if not len(epochs):
        return False
    members = history["member"].nunique() if "member" in history else 1
    if members > 1:
        from matplotlib.collections import LineCollection

        # One collection, not a Line2D per member: 50 members drew as 150 artists.
        rows = history[["member", "epoch", column]].dropna()
        member, points = rows["member"].to_numpy(), rows[["epoch", column]].to_numpy(float)
        order = np.lexsort((points[:, 0], member))  # by member, then epoch
        member, points = member[order], points[order]
        lines = np.split(points, np.flatnonzero(member[1:] != member[:-1]) + 1)
        ax.add_collection(LineCollection(lines, colors=color, linewidths=0.6, alpha=0.3))
    # After the first member stops, a mean over the survivors is biased (the ones still improving
    # remain) and jumps; the thin member lines carry on alone.
    full = count == members
    cut = len(epochs) if full.all() else int(np.argmin(full))
    many = f": mean of {members} members ± 1.96·SE" if members > 1 else ""
    ax.plot(epochs[:cut], mean[:cut], color=color, lw=1.8, label=label + many)
    if members > 1:
        ax.fill_between(epochs[:cut], (mean - half)[:cut], (mean + half)[:cut], color=color, alpha=0.25, lw=0)
    if kept:
        at = history.set_index(["member", "epoch"])[column]
        points = [(e, at.get((m, e), np.nan)) for m, e in kept.items()]
        ax.scatter(*zip(*points), s=14, color=color, edgecolors="black", linewidths=0.5, zorder=3)
    return cut < len(epochs)


def curves_plot(history, kept: dict[int, int] | None, path, metric: str | None = None) -> None:
    """Train/val loss per epoch (and one val metric): each member, and their mean with a ±1.96·SE band; on the
    validation curves a dot at each member's epoch in `kept` (member -> the epoch whose weights it kept)."""
    if metric not in history:
        # The headline metric if logged, else the first val metric.
        cols = [c for c in history.columns if c.startswith("val/") and c != "val/loss"]
        metric = next((c for c in MONITORS if c in cols), cols[0] if cols else None)
    fig = _figure(figsize=(11 if metric else 6, 4))
    axes = fig.subplots(1, 2 if metric else 1, squeeze=False)
    ax = axes[0, 0]
    stopped = False
    for column, label, color in (("train/loss", "train loss", "#1f77b4"), ("val/loss", "val loss", "#d62728")):
        if column in history:
            stopped |= _plot_band(ax, history, column, label, color, kept if column == "val/loss" else None)
    ax.set(xlabel="epoch", ylabel="loss", title="loss per epoch")
    losses = history[[c for c in ("train/loss", "val/loss") if c in history]].to_numpy(float)
    losses = losses[np.isfinite(losses)]
    if len(losses) and losses.min() > 0 and losses.max() / losses.min() > 20:
        ax.set_yscale("log")  # e.g. an MSE falling from thousands: the late epochs would be a flat line
    if metric:
        stopped |= _plot_band(axes[0, 1], history, metric, metric, "#2ca02c", kept)
        axes[0, 1].set(xlabel="epoch", ylabel=metric.split("/", 1)[-1], title=f"{metric} per epoch")
    for a in axes.flat:
        if stopped:
            a.plot([], [], color="0.4", lw=0.6, alpha=0.6, label="thin: each member; the mean ends when the first stops")
        elif history["member"].nunique() > 1:
            a.plot([], [], color="0.4", lw=0.6, alpha=0.6, label="thin: each member")
        if kept:
            a.scatter([], [], s=14, color="0.6", edgecolors="black", linewidths=0.5, label="dot: the epoch kept")
        a.grid(alpha=0.3)
        a.legend(fontsize=8)
    _tight_layout(fig)
    _save(fig, path)

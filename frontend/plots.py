"""Server-side plots for the quality dashboard, as SVG documents.

Rendered with matplotlib's object API (``Figure`` + Agg canvas, never pyplot), so
nothing global is shared between concurrent requests. Pages show them with
``<img src>``: an inline SVG would need ``style-src 'unsafe-inline'``.

Each plot has a selector that reads plain data and a renderer; an empty data set
renders a figure that says "no data yet" rather than failing.
"""

from __future__ import annotations

import io
from collections import defaultdict
from collections.abc import Callable
from datetime import date, timedelta
from itertools import groupby
from typing import Any

import matplotlib
from django.db.models import Count
from django.db.models.functions import TruncDate
from matplotlib.dates import AutoDateLocator, ConciseDateFormatter
from matplotlib.figure import Figure

from labelapp.models import Label, ModelVersion, Project, Response
from labelapp.selectors.quality_stats import AgreementAccumulator

# Figure.savefig picks its canvas from the format, so no GUI backend is touched; Agg
# is set anyway in case something in the process imports pyplot.
matplotlib.use("Agg")

SIZE = (7.0, 3.2)
MAX_SERIES = 8  # annotators drawn individually in the throughput plot; rest pooled
RC = {
    "svg.fonttype": "path",  # self-contained: no font needed on the viewer's side
    "svg.hashsalt": "pairloop",  # stable element ids, so identical data → same bytes
    "font.size": 9,
    "axes.spines.top": False,
    "axes.spines.right": False,
    "axes.grid": True,
    "grid.alpha": 0.3,
}


def _figure() -> Figure:
    fig = Figure(figsize=SIZE, layout="constrained")
    return fig


def _svg(fig: Figure) -> bytes:
    buf = io.BytesIO()
    with matplotlib.rc_context(RC):
        fig.savefig(buf, format="svg", metadata={"Date": None})
    return buf.getvalue()


def _date_axis(ax: Any, days: list[date]) -> None:
    """Readable dates; a single day gets a margin, or the axis would span years."""
    locator = AutoDateLocator(maxticks=8)
    ax.xaxis.set_major_locator(locator)
    ax.xaxis.set_major_formatter(ConciseDateFormatter(locator))
    if days and min(days) == max(days):
        ax.set_xlim(min(days) - timedelta(days=1), max(days) + timedelta(days=1))


def _empty(title: str, message: str = "no data yet") -> bytes:
    with matplotlib.rc_context(RC):
        fig = _figure()
        ax = fig.add_subplot()
        ax.set_title(title)
        ax.text(0.5, 0.5, message, ha="center", va="center", fontsize=14, alpha=0.6)
        ax.set_axis_off()
    return _svg(fig)


# ---------------------------------------------------------------------------
# Selectors
# ---------------------------------------------------------------------------


def _number(value: Any) -> float | None:
    if isinstance(value, bool) or not isinstance(value, int | float):
        return None
    return float(value)


def training_series(project: Project) -> list[dict[str, Any]]:
    """Per reward-model version: loss curve and eval accuracy from its metrics.

    Tolerant of what trainers write: ``metrics["history"]`` entries with ``step`` or
    ``epoch`` (else their index) and ``loss`` or ``train_loss``; accuracy from
    ``metrics["eval"]["accuracy"]`` or ``metrics["eval_accuracy"]``."""
    out = []
    for mv in ModelVersion.objects.filter(
        project=project, kind=ModelVersion.Kind.REWARD
    ).order_by("version"):
        metrics = mv.metrics if isinstance(mv.metrics, dict) else {}
        history = metrics.get("history")
        points = []
        if isinstance(history, list):
            for i, entry in enumerate(history):
                if not isinstance(entry, dict):
                    continue
                x = _number(entry.get("step", entry.get("epoch", i)))
                y = _number(entry.get("loss", entry.get("train_loss")))
                if x is not None and y is not None:
                    points.append((x, y))
        ev = metrics.get("eval")
        acc = _number(ev.get("accuracy")) if isinstance(ev, dict) else None
        if acc is None:
            acc = _number(metrics.get("eval_accuracy"))
        out.append({"version": mv.version, "loss": points, "accuracy": acc})
    return out


def reward_series(project: Project) -> dict[int, list[float]]:
    """Rewards of each round's responses, by round number."""
    rows = (
        Response.objects.filter(
            prompt__project=project, round__isnull=False, reward__isnull=False
        )
        .order_by("round__number")
        .values_list("round__number", "reward")
    )
    out: dict[int, list[float]] = defaultdict(list)
    for number, reward in rows.iterator(chunk_size=5000):
        out[number].append(reward)
    return dict(out)


def agreement_series(project: Project) -> list[dict[str, Any]]:
    """Alpha and pairwise agreement per day (per week when the labels span more than
    60 days), each comparison counted in the bucket of its latest non-rejected
    label."""
    rows = (
        Label.objects.filter(comparison__project=project)
        .exclude(review_state=Label.ReviewState.REJECTED)
        .order_by("comparison_id")
        .values_list("comparison_id", "choice", "created_at")
        .iterator(chunk_size=5000)
    )
    units: list[tuple[date, list[str]]] = []
    for _cid, group in groupby(rows, key=lambda r: r[0]):
        labels = list(group)
        last = max(r[2] for r in labels).date()
        units.append((last, [r[1] for r in labels]))
    if not units:
        return []
    span = (max(u[0] for u in units) - min(u[0] for u in units)).days
    weekly = span > 60

    def bucket(day: date) -> date:
        return day - timedelta(days=day.weekday()) if weekly else day

    accs: dict[date, AgreementAccumulator] = defaultdict(AgreementAccumulator)
    for day, values in units:
        accs[bucket(day)].add(values)
    return [
        {
            "bucket": b,
            "alpha": accs[b].alpha(),
            "pairwise": accs[b].pairwise(),
            "n": accs[b].pairable_units,
            "weekly": weekly,
        }
        for b in sorted(accs)
    ]


def label_curve_series(project: Project) -> list[dict[str, Any]]:
    """Per reward-model version: the labelled pairs it trained on and its held-out
    accuracy with the 95 % interval (``metrics["eval"]``), oldest first."""
    out = []
    for mv in ModelVersion.objects.filter(
        project=project, kind=ModelVersion.Kind.REWARD
    ).order_by("version"):
        metrics = mv.metrics if isinstance(mv.metrics, dict) else {}
        ev = metrics.get("eval") if isinstance(metrics.get("eval"), dict) else {}
        ci = ev.get("accuracy_ci95")
        low, high = (
            (_number(ci[0]), _number(ci[1]))
            if isinstance(ci, list | tuple) and len(ci) == 2
            else (None, None)
        )
        out.append(
            {
                "version": mv.version,
                "labels": mv.n_pairs,
                "accuracy": _number(ev.get("accuracy")),
                "low": low,
                "high": high,
                "promoted": mv.status == ModelVersion.Status.PROMOTED,
            }
        )
    return out


def policy_series(project: Project) -> list[dict[str, Any]]:
    """Per policy version: the RM's and the human audit's win rate against the
    policy it was evaluated against (with their 95 % intervals), the mean reward
    gain, and its status. Tolerant of missing or odd metrics (a version that
    failed before its evaluation has none)."""

    def part(value: Any, key: str) -> dict:
        got = value.get(key) if isinstance(value, dict) else None
        return got if isinstance(got, dict) else {}

    out = []
    for mv in ModelVersion.objects.filter(
        project=project, kind=ModelVersion.Kind.POLICY
    ).order_by("version"):
        metrics = mv.metrics if isinstance(mv.metrics, dict) else {}
        ev = part(metrics, "eval")
        win = part(ev, "win")
        human = part(part(metrics, "audit"), "human")
        out.append(
            {
                "version": mv.version,
                "status": mv.status,
                "rm": [_number(win.get(k)) for k in ("win_rate", "ci_low", "ci_high")],
                "human": [_number(human.get(k)) for k in ("rate", "ci_low", "ci_high")],
                "reward_gain": _number(ev.get("reward_gain")),
            }
        )
    return out


def throughput_series(project: Project) -> dict[str, dict[date, int]]:
    """Labels per day per annotator (username → day → count)."""
    rows = (
        Label.objects.filter(comparison__project=project)
        .annotate(day=TruncDate("created_at"))
        .values_list("annotator__username", "day")
        .annotate(n=Count("pk"))
        .order_by("day")
    )
    out: dict[str, dict[date, int]] = defaultdict(dict)
    for name, day, n in rows:
        out[name][day] = n
    return dict(out)


# ---------------------------------------------------------------------------
# Renderers
# ---------------------------------------------------------------------------


def accuracy_panel(ax: Any, series: list[dict]) -> None:
    """Held-out accuracy per version; "no data" (not an empty −0.04..0.04 axis)
    while no version has held-out pairs."""
    with_acc = [s for s in series if s["accuracy"] is not None]
    ax.set_title("eval accuracy")
    if not with_acc:
        ax.text(
            0.5,
            0.5,
            "no data",
            ha="center",
            va="center",
            transform=ax.transAxes,
            fontsize=12,
            alpha=0.6,
        )
        ax.set_axis_off()
        return
    ax.bar(
        [f"v{s['version']}" for s in with_acc],
        [s["accuracy"] for s in with_acc],
        color="#1f5fbf",
    )
    ax.set_ylim(0, 1)
    ax.axhline(0.5, color="grey", linestyle="--", linewidth=0.8)


def plot_training(project: Project) -> bytes:
    title = "Reward model: training loss and eval accuracy"
    series = training_series(project)
    if not any(s["loss"] or s["accuracy"] is not None for s in series):
        return _empty(title)
    with matplotlib.rc_context(RC):
        fig = _figure()
        loss_ax, acc_ax = fig.subplots(1, 2, width_ratios=[3, 2])
        for s in series:
            if s["loss"]:
                xs, ys = zip(*s["loss"], strict=True)
                loss_ax.plot(xs, ys, marker=".", label=f"v{s['version']}")
        loss_ax.set_title("training loss")
        loss_ax.set_xlabel("step")
        if any(s["loss"] for s in series):
            loss_ax.legend(fontsize=7)
        else:
            loss_ax.text(
                0.5, 0.5, "no history yet", ha="center", transform=loss_ax.transAxes
            )
        accuracy_panel(acc_ax, series)
        fig.suptitle(title)
    return _svg(fig)


def plot_rewards(project: Project) -> bytes:
    title = "Reward distribution per round"
    series = reward_series(project)
    if not series:
        return _empty(title)
    with matplotlib.rc_context(RC):
        fig = _figure()
        ax = fig.add_subplot()
        numbers = sorted(series)
        ax.boxplot(
            [series[n] for n in numbers],
            tick_labels=[f"round {n}" for n in numbers],
            showmeans=True,
        )
        ax.set_ylabel("reward")
        ax.set_title(title)
    return _svg(fig)


def plot_agreement(project: Project) -> bytes:
    title = "Agreement over time"
    series = [s for s in agreement_series(project) if s["n"]]
    if not series:
        return _empty(title)
    with matplotlib.rc_context(RC):
        fig = _figure()
        ax = fig.add_subplot()
        xs = [s["bucket"] for s in series]
        ax.plot(
            xs,
            [s["pairwise"] for s in series],
            marker="o",
            label="pairwise agreement",
        )
        alpha = [(s["bucket"], s["alpha"]) for s in series if s["alpha"] is not None]
        if alpha:
            ax.plot(*zip(*alpha, strict=True), marker="s", label="Krippendorff's α")
        # Alpha can be negative (worse than chance); keep such points inside.
        low = min(0.0, *(a for _, a in alpha)) if alpha else 0.0
        ax.set_ylim(low - 0.05, 1.05)
        ax.set_title(f"{title} ({'weekly' if series[0]['weekly'] else 'daily'})")
        ax.legend(fontsize=7)
        _date_axis(ax, xs)
    return _svg(fig)


def plot_throughput(project: Project) -> bytes:
    title = "Annotator throughput (labels per day)"
    series = throughput_series(project)
    if not series:
        return _empty(title)
    ranked = sorted(series, key=lambda name: -sum(series[name].values()))
    shown = ranked[:MAX_SERIES]
    others: dict[date, int] = defaultdict(int)
    for name in ranked[MAX_SERIES:]:
        for day, n in series[name].items():
            others[day] += n
    days = sorted({d for s in series.values() for d in s})
    with matplotlib.rc_context(RC):
        fig = _figure()
        ax = fig.add_subplot()
        for name in shown:
            ax.plot(
                days, [series[name].get(d, 0) for d in days], marker=".", label=name
            )
        if others:
            ax.plot(
                days,
                [others.get(d, 0) for d in days],
                linestyle="--",
                label=f"{len(ranked) - MAX_SERIES} others",
            )
        ax.set_ylabel("labels")
        ax.set_ylim(bottom=0)
        ax.set_title(title)
        ax.legend(fontsize=7, ncols=2)
        _date_axis(ax, days)
    return _svg(fig)


def plot_label_curve(project: Project) -> bytes:
    title = "Reward model: labels vs held-out accuracy per version"
    series = [s for s in label_curve_series(project) if s["accuracy"] is not None]
    if not series:
        return _empty(title)
    with matplotlib.rc_context(RC):
        fig = _figure()
        ax = fig.add_subplot()
        xs = [s["labels"] for s in series]
        ys = [s["accuracy"] for s in series]
        low = [
            s["accuracy"] - s["low"] if s["low"] is not None else 0.0 for s in series
        ]
        high = [
            s["high"] - s["accuracy"] if s["high"] is not None else 0.0 for s in series
        ]
        ax.errorbar(xs, ys, yerr=[low, high], marker="o", capsize=3)
        for s in series:
            ax.annotate(
                f"v{s['version']}" + (" ★" if s["promoted"] else ""),
                (s["labels"], s["accuracy"]),
                textcoords="offset points",
                xytext=(4, 4),
                fontsize=7,
            )
        ax.axhline(0.5, color="grey", linestyle="--", linewidth=0.8)
        ax.set_ylim(0, 1)
        ax.set_xlabel("labelled pairs trained on")
        ax.set_ylabel("held-out accuracy [95 % CI]")
        ax.set_title(title + " (★ promoted)")
    return _svg(fig)


def _rate_with_ci(ax: Any, xs: list[float], rows: list[list], **style: Any) -> bool:
    """Points with asymmetric 95 % error bars where the rate is known."""
    known = [(x, r) for x, r in zip(xs, rows, strict=True) if r[0] is not None]
    if not known:
        return False
    px = [x for x, _ in known]
    py = [r[0] for _, r in known]
    low = [r[0] - r[1] if r[1] is not None else 0.0 for _, r in known]
    high = [r[2] - r[0] if r[2] is not None else 0.0 for _, r in known]
    ax.errorbar(px, py, yerr=[low, high], capsize=3, linestyle="-", **style)
    return True


def plot_policy(project: Project) -> bytes:
    title = "Policy versions: win rate vs the policy they replace, and reward gain"
    series = policy_series(project)
    if not series:
        return _empty(title)
    labels = [f"v{s['version']}" for s in series]
    xs = list(range(len(series)))
    with matplotlib.rc_context(RC):
        fig = _figure()
        win_ax, gain_ax = fig.subplots(1, 2, width_ratios=[3, 2])
        drawn = _rate_with_ci(
            win_ax,
            [x - 0.06 for x in xs],
            [s["rm"] for s in series],
            marker="o",
            label="reward model",
        )
        drawn |= _rate_with_ci(
            win_ax,
            [x + 0.06 for x in xs],
            [s["human"] for s in series],
            marker="s",
            label="human audit",
        )
        win_ax.axhline(0.5, color="grey", linestyle="--", linewidth=0.8)
        win_ax.set_ylim(0, 1)
        win_ax.set_xticks(xs, labels)
        win_ax.set_title("win rate [95 % CI]")
        if drawn:
            win_ax.legend(fontsize=7)
        gains = [s["reward_gain"] for s in series]
        colors = ["#1f5fbf" if s["status"] == "promoted" else "#9aa9c2" for s in series]
        gain_ax.bar(xs, [g if g is not None else 0.0 for g in gains], color=colors)
        gain_ax.axhline(0.0, color="grey", linewidth=0.8)
        gain_ax.set_xticks(xs, labels)
        gain_ax.set_title("mean reward gain (dark = promoted)", fontsize=8)
        fig.suptitle(title)
    return _svg(fig)


PLOTS: dict[str, tuple[str, Callable[[Project], bytes]]] = {
    "training": ("Reward model training loss and eval accuracy", plot_training),
    "labels": (
        "Reward model: labelled pairs vs held-out accuracy per version",
        plot_label_curve,
    ),
    "rewards": ("Reward distribution per round", plot_rewards),
    "agreement": ("Agreement over time", plot_agreement),
    "throughput": ("Labels per day per annotator", plot_throughput),
    "policy": (
        "Policy versions: RM and human win rate with 95% CIs, and reward gain",
        plot_policy,
    ),
}

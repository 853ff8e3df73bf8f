"""MUSE's results on disk: its table, its utility-vs-forgetting plots and the C5/C6 series.

A MUSE evaluation folder (`uld eval --data builtin-muse --out DIR`, `uld.evaluate_muse`) holds
`eval.json` (per-item continuations, answers and membership scores, the summary, the model's
card) and `eval.md` (the table). `uld report DIR...` merges several into `report.md`,
`summary.json` and

- `utility_vs_forgetting.png`: KnowMem on D_r (utility, up is better) against VerbMem on D_f and
  against KnowMem on D_f (forgetting, left is better), one point per model (MUSE, Shi et al.
  2024, arXiv:2407.06460, its utility-vs-forgetting scatter plots);
- `scalability.png`, `sustainability.png`: the four numbers of each model of a series against
  the size of the forget set it unlearned (C5, `--series scal:K`) or the number of requests it
  served (C6, `--series sust:K`), one line per method; MUSE reads C5 and C6 off KnowMem on D_r.

Rows are models; MUSE's columns: VerbMem on D_f (lower is better), KnowMem on D_f (lower),
PrivLeak (closer to 0 is better: the retrained model's own AUC), KnowMem on D_r (higher). ROUGE
values are printed x 100 and PrivLeak in percent, as MUSE's tables print them.
"""

from __future__ import annotations

import re
from pathlib import Path

from uld.outdir import write_json, write_text
from uld.report import _legend, _pyplot, _save, _style, markdown_table, read_eval

MUSE_COLUMNS = [  # (header, display key, format); ROUGE keys x 100 (`display`)
    ("VerbMem on D_f ↓", "verbmem_forget", ".1f"),
    ("KnowMem on D_f ↓", "knowmem_forget", ".1f"),
    ("PrivLeak (→0)", "privleak", ".1f"),
    ("KnowMem on D_r ↑", "knowmem_retain", ".1f"),
]
DETAIL_COLUMNS = [
    ("Min-40% AUC (holdout > forget)", "privleak_auc", ".4f"),
    ("Retrained model's AUC", "reference_privleak_auc", ".4f"),
    ("Unlearning time (s)", "train_seconds", ".0f"),
]
SERIES_COLUMNS = [
    ("Step", "step", "d"),
    ("Forget docs", "forget_docs", "d"),
    ("Forget tokens", "forget_tokens", ","),
    *MUSE_COLUMNS,
]
SERIES_FILES = {"scal": "scalability", "sust": "sustainability"}
PERCENT = ("verbmem_forget", "knowmem_forget", "knowmem_retain")
SERIES_TITLES = {
    "scal": "C5 scalability: the forget set grows",
    "sust": "C6 sustainability: requests served one after the other",
}


def is_muse(results: dict) -> bool:
    """Whether an evaluation (an eval.json's content) is a MUSE one."""
    return results.get("protocol") == "muse"


def display(summary: dict) -> dict:
    """A summary in MUSE's units: ROUGE-L x 100, PrivLeak already in percent."""
    return {k: (v * 100 if k in PERCENT and v is not None else v) for k, v in summary.items()}


def muse_tables(runs: dict[str, dict]) -> str:
    """runs: {name: summary (`summary_of`)} -> MUSE's table, the details, and one table per
    series, as markdown."""
    shown = {n: display(s) for n, s in runs.items()}
    text = markdown_table(shown, MUSE_COLUMNS)
    if any(s.get(c[1]) is not None for s in shown.values() for c in DETAIL_COLUMNS):
        text += "\n" + markdown_table(shown, DETAIL_COLUMNS)
    for kind, lines in series(runs).items():
        rows = {
            f"{label} ({kind} {p['step']})": display(p)
            for label, points in lines.items()
            for p in points
        }
        text += f"\n{SERIES_TITLES[kind]}:\n\n" + markdown_table(rows, SERIES_COLUMNS)
    if any(s.get("privleak") is None and s.get("privleak_auc") is not None for s in runs.values()):
        text += (
            "\nPrivLeak –: not computed, no retrained model's AUC to compare with (uld eval "
            "--reference RETRAINED_MODEL_OR_ITS_EVAL).\n"
        )
    return text


def write_muse_eval(results: dict, out: str | Path) -> Path:
    """`out/eval.json` and `out/eval.md` for one model's MUSE evaluation."""
    out = Path(out)
    write_json(results, out / "eval.json")
    runs = {results["name"]: summary_of(results)}
    write_text(f"# {results['name']} (MUSE)\n\n" + muse_tables(runs), out / "eval.md")
    return out


def summary_of(results: dict) -> dict:
    """The summary with what the report adds: the series point, the unlearning time."""
    s = dict(results["summary"])
    train = results.get("training", {})
    if train.get("method") and train.get("train_seconds") is not None:
        s["train_seconds"] = train["train_seconds"]
    if results.get("series"):
        s["series"] = results["series"]
    return s


def series_label(name: str) -> str:
    """The method a series point belongs to: its run name less a trailing step, e.g. `npo-scal2`,
    `npo_2`, `npo-sust-3` -> `npo`."""
    return re.sub(r"[-_ .]*(scal|sust|step)?[-_ .]*\d+$", "", name) or name


def series(runs: dict[str, dict]) -> dict[str, dict[str, list[dict]]]:
    """{kind: {method label: [point + summary, by step]}} for the runs with a series point."""
    out: dict[str, dict[str, list[dict]]] = {}
    for name, s in runs.items():
        point = s.get("series")
        if point:
            row = {k: v for k, v in s.items() if k != "series"} | point | {"name": name}
            out.setdefault(point["kind"], {}).setdefault(series_label(name), []).append(row)
    for lines in out.values():
        for points in lines.values():
            points.sort(key=lambda p: p["step"])
    return out


def muse_report(paths: list[str | Path], out: str | Path, names: list[str] | None = None) -> dict:
    """Merge MUSE evaluation folders into `out/report.md`, `out/summary.json` and the plots;
    returns {name: summary}."""
    results = [read_eval(p) for p in paths]
    other = [str(p) for p, r in zip(paths, results, strict=True) if not is_muse(r)]
    if other:
        raise ValueError(
            f"{', '.join(other)}: not MUSE evaluations (uld eval on text data); report TOFU "
            "and MUSE evaluations separately"
        )
    names = names or [r["name"] for r in results]
    if len(names) != len(results):
        raise ValueError(f"{len(names)} names for {len(results)} runs")
    if len(set(names)) != len(names):
        raise ValueError(f"run names repeat: {names}; pass distinct --names")
    runs = {n: summary_of(r) for n, r in zip(names, results, strict=True)}
    out = Path(out)
    write_text("# Results (MUSE)\n\n" + muse_tables(runs), out / "report.md")
    write_json(runs, out / "summary.json")
    plot_utility_vs_forgetting(runs, out / "utility_vs_forgetting.png")
    for kind, lines in series(runs).items():
        plot_series(kind, lines, out / f"{SERIES_FILES[kind]}.png")
    return runs


def report_kind(paths: list[str | Path]) -> str:
    """ "muse" when every evaluation folder holds a MUSE evaluation, "tofu" when none does; a mix
    is refused."""
    kinds = {is_muse(read_eval(p)) for p in paths}
    if kinds == {True, False}:
        raise ValueError("these folders mix TOFU and MUSE evaluations; report each kind apart")
    return "muse" if kinds == {True} else "tofu"


# ---------------------------------------------------------------- plots


def plot_utility_vs_forgetting(runs: dict[str, dict], path: Path) -> None:
    """KnowMem on D_r (y) against VerbMem on D_f (left) and KnowMem on D_f (right), x 100, one
    point per model that has both; up and left is better."""
    plt = _pyplot()
    fig, axes = plt.subplots(1, 2, figsize=(11.6, 4.4))
    for ax, (key, label) in zip(
        axes,
        [("verbmem_forget", "VerbMem on D_f"), ("knowmem_forget", "KnowMem on D_f")],
        strict=True,
    ):
        for i, (name, s) in enumerate(runs.items()):
            d = display(s)
            if d.get(key) is None or d.get("knowmem_retain") is None:
                continue
            ax.scatter(d[key], d["knowmem_retain"], s=46, **_style(i), zorder=3, label=name)
            xy = (d[key], d["knowmem_retain"])
            ax.annotate(name, xy, xytext=(5, 4), textcoords="offset points", fontsize=8)
        ax.set_xlabel(f"{label} (ROUGE-L F1 x 100, lower is better)")
        ax.set_ylabel("KnowMem on D_r (utility, higher is better)")
        ax.set_title(f"Utility vs {label} (up and left is better)")
        ax.margins(x=0.12, y=0.08)
        ax.grid(True, alpha=0.3)
    if len(axes[1].get_legend_handles_labels()[0]) > 1:
        _legend(axes[1])
    _save(fig, path)


def plot_series(kind: str, lines: dict[str, list[dict]], path: Path) -> None:
    """The four MUSE numbers against the forget set's size in tokens (scal; its step where the
    data gave no size) or the number of requests served (sust), one line per method."""
    plt = _pyplot()
    fig, axes = plt.subplots(1, 4, figsize=(18, 4.2))
    sized = kind == "scal" and all(p.get("forget_tokens") for ps in lines.values() for p in ps)
    xlabel = {"scal": "forget set", "sust": "unlearning requests served"}[kind]
    if sized:
        xlabel = "forget set size (tokens)"
    for ax, (header, key, _) in zip(axes, MUSE_COLUMNS, strict=True):
        for i, (label, points) in enumerate(lines.items()):
            pts = [
                (p["forget_tokens"] if sized else p["step"], display(p).get(key)) for p in points
            ]
            pts = [(x, y) for x, y in pts if y is not None]
            if pts:
                style = _style(i)
                xs, ys = zip(*pts, strict=True)
                ax.plot(xs, ys, "-" + style["marker"], color=style["color"], ms=4, label=label)
        if key == "privleak":
            ax.axhline(0, color="grey", lw=0.8, ls="--")
        ax.set_xlabel(xlabel)
        ax.set_title(header)
        ax.grid(True, alpha=0.3)
    fig.suptitle(SERIES_TITLES[kind])
    if axes[3].lines:
        axes[3].legend(fontsize=7, loc="best")
    _save(fig, path)

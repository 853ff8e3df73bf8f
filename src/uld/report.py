"""Results on disk: evaluation files, the paper-style table, merged reports and plots.

An evaluation folder (what `uld eval --out DIR` writes) holds `eval.json` (per-item values,
per-split aggregates, the summary, and what the model folder says about its training) and
`eval.md` (the table). `uld report DIR...` merges several into one table and draws
- `mu_vs_fq.png`: Model Utility against Forget Quality (log axis), one point per setting (a
  setting run over seeds: median F.Q., mean M.U., bars over the seeds' range);
- `trajectory.png`: every run's Forget Quality after each epoch, and the per-epoch path in that
  plane of the runs evaluated in full every epoch (the ULD paper's "training stability" figure);
- `fq_vs_time.png`: Forget Quality against training time relative to ULD (when runs say it).
With a `target` row and runs evaluated in full after each epoch, the report also times each run
to quality (`uld.efficiency`: the ULD paper's efficiency comparison, against NPO+KL).
"""

from __future__ import annotations

import json
import math
import re
import statistics
from pathlib import Path

from uld.config import TIME_BASELINE_METHOD, TIME_UNIT_METHOD, UTILITY_PARTS, UTILITY_ROLES
from uld.efficiency import efficiency, efficiency_table
from uld.outdir import write_json, write_text

COLUMNS = [  # (header, summary key, format)
    ("F.Q.", "forget_quality", ".2e"),
    ("R-L (forget)", "forget_rouge", ".4f"),
    ("M.U.", "model_utility", ".4f"),
    ("R-L (retain)", "retain_rouge", ".4f"),
]
EXTRA_COLUMNS = [
    ("Prob (forget)", "forget_prob", ".4f"),
    ("Truth ratio (forget)", "forget_truth_ratio", ".4f"),
    ("log R gap to retain", "forget_tr_gap", ".3f"),
    ("MIA AUC, LOSS", "mia_loss_auc", ".4f"),
    ("MIA AUC, Min-K%", "mia_min_k_auc", ".4f"),
    ("MIA AUC, zlib", "mia_zlib_auc", ".4f"),
    ("MIA AUC, Min-K%++", "mia_min_k_pp_auc", ".4f"),
    ("MIA AUC, reference", "mia_ref_auc", ".4f"),
    ("MIA AUC, grad norm", "mia_gradnorm_auc", ".4f"),
    ("Extraction strength", "extraction_strength", ".4f"),
]
FLUENCY_COLUMNS = [  # share of generated answers that loop or are gibberish (evaluate.fluency)
    ("Degenerate (forget)", "forget_degenerate", ".2f"),
    ("Degenerate (retain)", "retain_degenerate", ".2f"),
    ("Degenerate (real authors)", "real_authors_degenerate", ".2f"),
    ("Degenerate (world facts)", "world_facts_degenerate", ".2f"),
]
MOE_COLUMNS = [
    ("Trainable params", "trainable_params", ","),
    ("Trainable share", "trainable_share", ".2e"),
    ("Routing shift (retain)", "routing_shift", ".4f"),
]
PART_NAMES = {"prob": "prob", "rouge_l": "R-L", "truth_ratio": "TR score"}
UTILITY_COLUMNS = [  # Model Utility's nine parts (see uld.evaluate.summarise)
    (f"{role.replace('_', ' ')} {PART_NAMES[k]}", f"{role}_{k}", ".3f")
    for role in UTILITY_ROLES
    for k in UTILITY_PARTS
]
TIME_COLUMNS = [
    ("Epoch kept", "best_epoch", "d"),
    ("Unlearning time (s)", "train_seconds", ".0f"),
    ("Time / ULD", "relative_time", ".2f"),
    ("Steps", "steps", "d"),
    ("s / step", "seconds_per_step", ".2f"),
]


def _fmt(v, spec: str = ".4f") -> str:
    if v is None or (isinstance(v, float) and math.isnan(v)):
        return "–"
    if isinstance(v, str):
        return v
    return format(int(v) if spec == "," else v, spec)


def markdown_table(runs: dict[str, dict], columns=COLUMNS) -> str:
    """runs: {name: summary} -> a markdown table, one row per run (the ULD paper's layout with
    the default columns: F.Q., forget ROUGE-L, M.U., retain ROUGE-L)."""
    lines = [
        "| Method | " + " | ".join(c[0] for c in columns) + " |",
        "|---|" + "---:|" * len(columns),
    ]
    for name, s in runs.items():
        cells = " | ".join(_fmt(s.get(key), spec) for _, key, spec in columns)
        lines.append(f"| {name} | {cells} |")
    return "\n".join(lines) + "\n"


def tables(runs: dict[str, dict]) -> str:
    """The main table and the privacy/details table, as one markdown text."""
    text = markdown_table(runs) + "\n" + markdown_table(runs, EXTRA_COLUMNS)
    if any(s.get(c[1]) is not None for s in runs.values() for c in FLUENCY_COLUMNS):
        text += "\nFluency (share of degenerate answers):\n\n" + markdown_table(
            runs, FLUENCY_COLUMNS
        )
    if any(s.get(c[1]) is not None for s in runs.values() for c in UTILITY_COLUMNS):
        text += "\nModel Utility's nine parts:\n\n" + markdown_table(runs, UTILITY_COLUMNS)
    if any(s.get("routing_shift") is not None for s in runs.values()):
        text += "\n" + markdown_table(runs, MOE_COLUMNS)
    timed = {n: s for n, s in runs.items() if s.get("train_seconds") is not None}
    if timed:
        text += "\n" + markdown_table(timed, TIME_COLUMNS)
    if seed_groups(runs):
        text += "\nOver seeds (`name`, `name-seedN`):\n\n" + seed_table(runs)
        text += "\nOver seeds, means:\n\n" + markdown_table(seed_means(runs), EXTRA_COLUMNS)
    return text


def setting_of(name: str) -> str:
    """A run's name less the `-seedN` that `uld compare` adds for each seed after 0."""
    return re.sub(r"-seed\d+$", "", name)


def by_setting(names) -> dict[str, list[str]]:
    """Run names grouped by setting (`name` with its `name-seedN`), in first-seen order."""
    groups: dict[str, list[str]] = {}
    for name in names:
        groups.setdefault(setting_of(name), []).append(name)
    return groups


def seed_groups(names) -> dict[str, list[str]]:
    """Runs of one setting over seeds, by the names `uld compare` gives them: `name` (seed 0)
    with `name-seed1`, `name-seed2`, ... Settings with a single run are left out."""
    return {base: members for base, members in by_setting(names).items() if len(members) > 1}


SEED_KEYS = ("forget_quality", "model_utility", "forget_tr_gap")


def seed_table(runs: dict[str, dict]) -> str:
    """One row per setting run over several seeds: each seed's Forget Quality, their median and
    mean, the mean row-by-row log truth-ratio gap to the retain model (`metrics.truth_ratio_gap`,
    continuous where F.Q. ties), and Model Utility's mean and minimum. With few forget rows F.Q.
    moves in coarse steps, so one seed's value says little; this is the table to compare
    settings by."""
    lines = [
        "| Setting | Seeds | F.Q. per seed | F.Q. median | F.Q. mean | log R gap mean "
        "| M.U. mean | M.U. min |",
        "|---|---:|---|---:|---:|---:|---:|---:|",
    ]
    for base, members in seed_groups(runs).items():
        fq, mu, gap = ([runs[n].get(k) for n in members] for k in SEED_KEYS)
        fq_ok, mu_ok, gap_ok = ([v for v in xs if v is not None] for xs in (fq, mu, gap))
        cells = [
            str(len(members)),
            ", ".join(_fmt(v, ".2g") for v in fq),
            _fmt(statistics.median(fq_ok) if fq_ok else None, ".3g"),
            _fmt(statistics.fmean(fq_ok) if fq_ok else None, ".3g"),
            _fmt(statistics.fmean(gap_ok) if gap_ok else None, ".3f"),
            _fmt(statistics.fmean(mu_ok) if mu_ok else None, ".4f"),
            _fmt(min(mu_ok) if mu_ok else None, ".4f"),
        ]
        lines.append(f"| {base} | " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def seed_means(runs: dict[str, dict]) -> dict[str, dict]:
    """{"setting (n seeds)": the mean over its seeds of each summary figure they all have}."""
    out = {}
    for base, members in seed_groups(runs).items():
        keys = set.intersection(*(set(runs[n]) for n in members))
        values = {k: [runs[n][k] for n in members] for k in keys}
        out[f"{base} ({len(members)} seeds)"] = {
            k: statistics.fmean(v)
            for k, v in values.items()
            if all(isinstance(x, int | float) and not isinstance(x, bool) for x in v)
        }
    return out


def model_info(path: str | Path | None) -> dict:
    """What a model folder says about how it was made: uld_config.json (ULD) or uld_card.json."""
    if path is None:
        return {}
    for name in ("uld_config.json", "uld_card.json"):
        f = Path(path) / name
        if f.exists():
            info = json.loads(f.read_text())
            made_by = str(info.get("made_by", ""))
            if "method" not in info and "--method " in made_by:
                info["method"] = made_by.split("--method ")[1].split()[0]
            return info
    return {}


def write_eval(results: dict, out: str | Path) -> Path:
    """`out/eval.json` and `out/eval.md` for one evaluated model."""
    out = Path(out)
    write_json(results, out / "eval.json")
    write_text(
        f"# {results['name']}\n\n" + tables({results["name"]: results["summary"]}), out / "eval.md"
    )
    return out


def read_eval(path: str | Path) -> dict:
    """An eval.json, given as the file or the folder holding it."""
    path = Path(path)
    file = path / "eval.json" if path.is_dir() else path
    if not file.exists():
        raise ValueError(f"{path} holds no eval.json; run `uld eval --model MODEL --out {path}`")
    return json.loads(file.read_text())


def summary_of(results: dict) -> dict:
    """The summary with the training facts a report plots (time, per-epoch history)."""
    train = results.get("training", {})
    s = dict(results["summary"])
    for role in UTILITY_ROLES:
        for k in UTILITY_PARTS:
            s[f"{role}_{k}"] = results.get("splits", {}).get(role, {}).get(k)
    if train.get("method"):  # an unlearning run (not the target's or retain model's training)
        for key in ("train_seconds", "steps", "trainable_params", "trainable_share", "best_epoch"):
            if train.get(key) is not None:
                s[key] = train[key]
        if train.get("train_seconds") is not None and train.get("steps"):
            s["seconds_per_step"] = train["train_seconds"] / train["steps"]
    return s


def report(
    paths: list[str | Path],
    out: str | Path,
    names: list[str] | None = None,
    relative_to: str = "",
    baseline: str = "",
    notes: str = "",
    plotted: list[str] | None = None,
) -> dict[str, dict]:
    """Merge evaluation folders into `out/report.md`, `out/summary.json` and the plots.

    relative_to: the run whose training time is the unit of "Time / ULD" (default: the first
    run whose method is uld, if any). baseline: the run the time-to-quality table's ratios are
    to (default: the first run whose method is npo+kl, if any); that table needs a run named
    `target` (its Model Utility sets the bar) and runs with timed per-epoch histories.
    notes: markdown added at the end of report.md. plotted: the runs `mu_vs_fq.png` shows (say,
    each grid's chosen setting); every run then goes to `mu_vs_fq_all.png`.
    """
    results = [read_eval(p) for p in paths]
    names = names or [r["name"] for r in results]
    if len(names) != len(results):
        raise ValueError(f"{len(names)} names for {len(results)} runs")
    if len(set(names)) != len(names):
        raise ValueError(f"run names repeat: {names}; pass distinct --names")
    runs = {n: summary_of(r) for n, r in zip(names, results, strict=True)}
    training = {n: r.get("training", {}) for n, r in zip(names, results, strict=True)}
    histories = {n: t.get("epochs_evaluated") or [] for n, t in training.items()}
    kept = {n: t.get("best_epoch") for n, t in training.items()}
    methods = {n: t.get("method") for n, t in training.items()}
    unit = relative_to or next((n for n, m in methods.items() if m == TIME_UNIT_METHOD), "")
    if unit and runs.get(unit, {}).get("train_seconds"):
        for s in runs.values():
            if s.get("train_seconds") is not None:
                s["relative_time"] = s["train_seconds"] / runs[unit]["train_seconds"]
    text = "# Results\n\n" + tables(runs)
    target_mu = runs.get("target", {}).get("model_utility")
    if target_mu is not None:  # time to quality: the ULD paper's efficiency, against NPO+KL
        baseline = baseline or next(
            (n for n, m in methods.items() if m == TIME_BASELINE_METHOD), ""
        )
        rows = efficiency(histories, target_mu, baseline)
        if rows:
            text += "\n" + efficiency_table(rows, target_mu, baseline)
        for name, row in rows.items():
            runs[name] |= {k: row[k] for k in ("seconds_per_step", "time_to_quality")}
    out = Path(out)
    write_text(text + notes, out / "report.md")
    write_json(runs, out / "summary.json")
    if plotted is None:
        plot_mu_vs_fq(runs, out / "mu_vs_fq.png")
    else:
        plot_mu_vs_fq({n: runs[n] for n in plotted if n in runs}, out / "mu_vs_fq.png")
        plot_mu_vs_fq(runs, out / "mu_vs_fq_all.png")
    if any(h.get("forget_quality") is not None for hs in histories.values() for h in hs):
        plot_trajectories(histories, out / "trajectory.png", kept)
    if sum(s.get("relative_time") is not None for s in runs.values()) > 1:
        plot_fq_vs_time(runs, out / "fq_vs_time.png")
    return runs


# ---------------------------------------------------------------- plots


def _pyplot():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def _style(i: int) -> dict:
    """The i-th run's colour (one of tab20's 20: the default cycle has only 10) and marker (one of
    8 shapes in turn, so tab20's paired light/dark hues differ in shape too, and no two of the
    first 40 runs look alike)."""
    return {"color": _pyplot().get_cmap("tab20")(i % 20), "marker": "osD^vP*X"[i % 8]}


def _annotate_apart(ax, points: list[tuple[str, float, float]]) -> list[str]:
    """Write each (label, x, y) beside its point unless the text would cover a label already
    written (the legend names every point); call once the axes' limits are final. Returns the
    labels written."""
    ax.figure.canvas.draw()  # settles the autoscaled limits the texts are placed by
    renderer = ax.figure.canvas.get_renderer()
    written, boxes = [], []
    for label, x, y in points:
        text = ax.annotate(label, (x, y), textcoords="offset points", xytext=(5, 4), fontsize=8)
        box = text.get_window_extent(renderer)
        if any(box.overlaps(b) for b in boxes):
            text.remove()
            continue
        written.append(label)
        boxes.append(box)
    return written


def _legend(ax) -> bool:
    """Inside the axes for a few runs, beside them (right) for many; True when beside."""
    if len(ax.get_legend_handles_labels()[0]) > 8:
        ax.legend(fontsize=7, loc="upper left", bbox_to_anchor=(1.02, 1.0), borderaxespad=0)
        return True
    ax.legend(fontsize=7, loc="best")
    return False


def _plane(history: list[dict]) -> list[tuple[int, float, float]]:
    """(epoch, FQ, MU) of the epochs that have both."""
    return [
        (h["epoch"], h["forget_quality"], h["model_utility"])
        for h in history
        if h.get("forget_quality") is not None and h.get("model_utility") is not None
    ]


def _save(fig, path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.stem + ".tmp.png")
    fig.savefig(tmp, dpi=130, bbox_inches="tight")
    tmp.replace(path)
    _pyplot().close(fig)


def _fq(v: float) -> float:
    return max(v, 1e-30)  # a KS p-value can underflow to 0; keep it on a log axis


def settings_points(runs: dict[str, dict]) -> list[tuple[str, float, float, tuple, tuple]]:
    """One point per setting for the (F.Q., M.U.) plane: (label, F.Q., M.U., F.Q. range, M.U.
    range). A setting run over seeds (`name`, `name-seedN`) is its median F.Q. and mean M.U.,
    with the seeds' min-max as ranges and "(n seeds)" in its label; a single run is itself."""
    plotted = [
        n
        for n, s in runs.items()
        if s.get("forget_quality") is not None and s.get("model_utility") is not None
    ]
    points = []
    for base, members in by_setting(plotted).items():
        fq = [_fq(runs[n]["forget_quality"]) for n in members]
        mu = [runs[n]["model_utility"] for n in members]
        label = base if len(members) == 1 else f"{base} ({len(members)} seeds)"
        x, y = statistics.median(fq), statistics.fmean(mu)
        points.append((label, x, y, (min(fq), max(fq)), (min(mu), max(mu))))
    return points


def plot_mu_vs_fq(runs: dict[str, dict], path: Path) -> None:
    """Model Utility (y) against Forget Quality (x, log scale), one point per setting (seeds
    together, with bars over their range); up and right is better."""
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(6.4, 4.4))
    pts = settings_points(runs)
    for i, (label, fq, mu, (fq_lo, fq_hi), (mu_lo, mu_hi)) in enumerate(pts):
        style = _style(i)
        if fq_lo != fq_hi or mu_lo != mu_hi:
            xerr, yerr = [[fq - fq_lo], [fq_hi - fq]], [[mu - mu_lo], [mu_hi - mu]]
            ax.errorbar(fq, mu, xerr=xerr, yerr=yerr, fmt="none", ecolor=style["color"], lw=1)
        ax.scatter(fq, mu, s=46, **style, zorder=3, label=label)
    ax.set_xscale("log")
    ax.margins(x=0.12, y=0.08)  # room for the labels of the outermost points
    _annotate_apart(ax, [(label, fq, mu) for label, fq, mu, _, _ in pts])
    ax.set_xlabel("Forget Quality (KS-test p-value vs the retain model, log scale)")
    ax.set_ylabel("Model Utility")
    ax.set_title("Model Utility vs Forget Quality (up and right is better)")
    ax.grid(True, which="major", alpha=0.3)
    if len(pts) > 1:
        _legend(ax)
    _save(fig, path)


def plot_trajectories(
    histories: dict[str, list[dict]], path: Path, kept: dict[str, int | None] | None = None
) -> None:
    """Left: every run's Forget Quality after each epoch. Right: the per-epoch (Forget Quality,
    Model Utility) path of the runs evaluated in full every epoch (the ULD paper's "training
    stability" figure). Epochs labelled, the kept (best) epoch starred."""
    plt = _pyplot()
    fig, (by_epoch, plane) = plt.subplots(1, 2, figsize=(12.4, 4.6))
    for i, (name, history) in enumerate(histories.items()):
        style, best = _style(i), (kept or {}).get(name)
        color = style["color"]
        fq = [(h["epoch"], _fq(h["forget_quality"])) for h in history if "forget_quality" in h]
        if fq:
            by_epoch.plot(
                *zip(*fq, strict=True), "-" + style["marker"], ms=3, color=color, label=name
            )
            for epoch, v in fq:
                if epoch == best:
                    by_epoch.scatter(epoch, v, s=140, marker="*", color=color, zorder=4)
        pts = _plane(history)
        if not pts:
            continue
        xs, ys = [_fq(p[1]) for p in pts], [p[2] for p in pts]
        plane.plot(xs, ys, "-o", ms=4, color=color, label=name)
        for (epoch, *_), x, y in zip(pts, xs, ys, strict=True):
            if epoch == best:
                plane.scatter(x, y, s=160, marker="*", color=color, zorder=4)
            plane.annotate(str(epoch), (x, y), xytext=(3, 3), textcoords="offset points", size=7)
    by_epoch.set_yscale("log")
    by_epoch.set_xlabel("epoch")
    by_epoch.set_ylabel("Forget Quality (log scale)")
    by_epoch.set_title("Forget Quality after each epoch (star: the epoch kept)")
    by_epoch.grid(True, alpha=0.3)
    if _legend(by_epoch):
        fig.set_size_inches(14.4, 4.6)
        fig.subplots_adjust(wspace=0.55)
    plane.set_xscale("log")
    plane.set_xlabel("Forget Quality (log scale)")
    plane.set_ylabel("Model Utility")
    plane.set_title("Runs evaluated in full every epoch (numbers: epochs)")
    plane.grid(True, alpha=0.3)
    if plane.lines:
        plane.legend(fontsize=7, loc="best")
    _save(fig, path)


def plot_fq_vs_time(runs: dict[str, dict], path: Path) -> None:
    """Forget Quality (log) against training wall time relative to ULD's."""
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(6.4, 4.4))
    points = [
        (name, s["relative_time"], _fq(s["forget_quality"]))
        for name, s in runs.items()
        if s.get("relative_time") is not None and s.get("forget_quality") is not None
    ]
    for i, (name, x, y) in enumerate(points):
        ax.scatter(x, y, s=46, **_style(i), label=name)
    ax.set_yscale("log")
    _annotate_apart(ax, points)
    if len(points) > 1:
        _legend(ax)
    ax.set_xlabel("Unlearning wall time relative to ULD's (as each run was configured)")
    ax.set_ylabel("Forget Quality (log scale)")
    ax.set_title("Forget Quality vs training time (up and left is better)")
    ax.grid(True, alpha=0.3)
    _save(fig, path)

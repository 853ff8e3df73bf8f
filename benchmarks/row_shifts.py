"""Row by row: how far each setting moves every forget row's truth ratio, against how far the
retain model says it should move. Reads the eval.json files `uld compare` wrote; runs nothing.

For each forget row, log R of the target, of the retain model and of an unlearned run. The
*needed shift* of a row is log R_retain - log R_target; a run's shift is log R_run - log
R_target. Per setting (a run with its `-seedN` runs, grouped as the report groups them):
- F.Q. and the log truth-ratio gap to the retain model (`metrics.truth_ratio_gap`) per run;
- corr. with the retain model's and with the target's log R (Pearson, over the rows);
- the mean and spread (standard deviation over rows) of the shift, and its correlation with the
  needed shift: a perfect unlearner shifts each row by what it needs;
- with several seeds: the mean correlation of the seeds' shifts with each other (high: the
  per-row shifts are systematic, not seed noise) and the gap of the seeds' average log R.

`--extra NAME=DIR` adds evaluations outside the plan (e.g. more retain models trained with other
seeds: `uld eval --model runs/retain90-seed1 --reference runs/demo/retain90 --out DIR`).

    python benchmarks/row_shifts.py --compare runs/compare \\
        --extra retain-seed1=runs/compare-extra/retain-seed1/eval \\
        --extra retain-seed2=runs/compare-extra/retain-seed2/eval
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np

from uld import metrics
from uld.outdir import write_json
from uld.report import by_setting, read_eval


def log_ratios(eval_dir: Path) -> tuple[np.ndarray, dict]:
    """eval_dir/eval.json -> (log R per forget row [N], summary); every row must have R."""
    res = read_eval(eval_dir)
    items = res["splits"]["forget"]["items"]
    if any("truth_ratio" not in it for it in items):
        raise SystemExit(f"{eval_dir}: a forget row has no truth ratio; rows cannot be paired")
    return np.log([it["truth_ratio"] for it in items]), res["summary"]


def corr(a: np.ndarray, b: np.ndarray) -> float:
    """Pearson correlation; nan when either side is constant (the target's own shift is 0)."""
    if a.std() == 0 or b.std() == 0:
        return float("nan")
    return float(np.corrcoef(a, b)[0, 1])


def setting_row(logs: list[np.ndarray], fqs: list, target: np.ndarray, retain: np.ndarray) -> dict:
    """Figures of one setting from its runs' log R [N] each (see the module docstring)."""
    need = retain - target
    shifts = [x - target for x in logs]
    row = {
        "runs": len(logs),
        "forget_quality": fqs,
        "gap": [metrics.truth_ratio_gap(np.exp(x), np.exp(retain)) for x in logs],
        "corr_retain": [corr(x, retain) for x in logs],
        "corr_target": [corr(x, target) for x in logs],
        "mean_shift": [float(s.mean()) for s in shifts],
        "shift_sd": [float(s.std()) for s in shifts],
        "corr_needed_shift": [corr(s, need) for s in shifts],
    }
    if len(logs) > 1:
        pairs = [corr(a, b) for i, a in enumerate(shifts) for b in shifts[i + 1 :]]
        row["corr_between_seeds"] = float(np.mean(pairs))
        average = np.mean(logs, axis=0)
        row["gap_of_seed_average"] = metrics.truth_ratio_gap(np.exp(average), np.exp(retain))
    return row


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--compare", default="runs/compare", help="a `uld compare` output folder")
    ap.add_argument("--target", default="target", help="the target's run name")
    ap.add_argument("--retain", default="retain", help="the retain model's run name")
    ap.add_argument("--extra", action="append", default=[], help="NAME=EVAL_DIR, repeatable")
    ap.add_argument("--out", default="experiments/results/row_shifts.json")
    args = ap.parse_args()

    root = Path(args.compare)
    dirs = {p.parent.parent.name: p.parent for p in sorted(root.glob("*/eval/eval.json"))}
    for spec in args.extra:
        name, _, path = spec.partition("=")
        if not path:
            raise SystemExit(f"--extra {spec!r}: write it as NAME=EVAL_DIR")
        dirs[name] = Path(path)
    for role in (args.target, args.retain):
        if role not in dirs:
            raise SystemExit(f"{root} has no evaluated run {role!r}; pass --target / --retain")
    loaded = {name: log_ratios(d) for name, d in dirs.items()}
    target, retain = loaded[args.target][0], loaded[args.retain][0]
    n = len(retain)
    table = {}
    for setting, names in by_setting(loaded).items():
        # not the reference itself (its retrains, `retain-seedN`, stay), nor other forget splits
        names = [m for m in names if m != args.retain and len(loaded[m][0]) == n]
        if names:
            logs = [loaded[m][0] for m in names]
            fqs = [loaded[m][1].get("forget_quality") for m in names]
            label = f"{setting} (retrains)" if setting == args.retain else setting
            table[label] = setting_row(logs, fqs, target, retain)
    write_json({"compare": str(root), "rows": n, "settings": table}, Path(args.out))

    def cells(xs, spec=".2f"):
        return ", ".join(format(x, spec) if x is not None else "–" for x in xs)

    print(
        "| setting | runs | F.Q. | gap | corr. retain | corr. target | mean shift | shift sd "
        "| corr. needed shift | corr. between seeds | gap of seed average |"
    )
    print("|---|---:|---|---|---|---|---|---|---|---:|---:|")
    for setting, r in table.items():
        print(
            f"| {setting} | {r['runs']} | {cells(r['forget_quality'], '.2g')} | "
            f"{cells(r['gap'], '.3f')} | {cells(r['corr_retain'])} | {cells(r['corr_target'])} | "
            f"{cells(r['mean_shift'])} | {cells(r['shift_sd'])} | "
            f"{cells(r['corr_needed_shift'])} | {r.get('corr_between_seeds', float('nan')):.2f} | "
            f"{r.get('gap_of_seed_average', float('nan')):.3f} |"
        )
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()

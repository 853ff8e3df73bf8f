"""ULD and a baseline on data uld did not make: the hand-written sets of tests/data/handwritten.

Two settings, each with the embedded SmolLM2-135M-Instruct as the base:

- people: the target is the base fine-tuned on all 48 rows about 8 invented people (`uld
  finetune`, defaults), the retain model on the 36 retain rows; 2 people (12 rows) are forgotten;
- known: the target is the base itself, no fine-tuning; 8 capital-city facts it already knows
  are forgotten, 12 other well-known facts retained.

Each run is `uld unlearn` with no tuning flags beyond those named in RUNS, then `uld eval` on the
forget and retain rows, the built-in real-author and world-fact rows (general knowledge), with
fluency (`metrics.is_degenerate`, scored by the target). Finished steps are reused, so an
interrupted run goes on where it stopped.

    OMP_NUM_THREADS=1 python benchmarks/own_data.py --set people [--only uld,npo+kl]

Results: experiments/results/own_data_<set>.json, and the table printed.
"""

from __future__ import annotations

import argparse
import json
import platform
import time
from pathlib import Path

from uld.config import EvalSplits, UnlearnConfig
from uld.data.load import load_split
from uld.evaluate import evaluate, load_roles
from uld.finetune import finetune
from uld.metrics import is_degenerate
from uld.models import load_model
from uld.report import write_eval
from uld.runs import load_any, unlearn

DATA = Path(__file__).resolve().parent.parent / "tests" / "data" / "handwritten"
DEMO = {  # configs/uld_smollm2.yaml, the settings tuned on the built-in benchmark
    "layers": 8,
    "lora_rank": 16,
    "lora_alpha": 32.0,
    "beta": 4.0,
    "alpha": 1.0,
    "epochs": 10.0,
    "lr": 3e-3,
    "batch_size": 4,
    "general": "builtin",
}
RUNS = {  # name -> UnlearnConfig fields beyond model / forget / retain / out
    "uld": {"method": "uld"},  # the defaults: epochs from the data, alpha chosen after training
    "npo+kl": {"method": "npo+kl"},
    # before the data-aware defaults: 10 epochs, the paper's alpha 0.75
    "uld-old-defaults": {"method": "uld", "epochs": 10.0, "alpha": 0.75},
    "uld-demo-settings": {"method": "uld", **DEMO},  # tuned on the built-in benchmark
    "uld-demo-long": {"method": "uld", **DEMO, "epochs": 34.0},
}


def prepare(workdir: Path, which: str) -> tuple[str, str | None]:
    """(target, retain model or None): made once, reused after."""
    if which == "known":
        return "default", None
    models = {}
    for name, split in (("target", "all"), ("retain", "retain")):
        out = workdir / name
        if not out.exists():
            finetune(None, str(DATA / which / f"{split}.json"), out)
        models[name] = str(out)
    return models["target"], models["retain"]


def evaluate_into(
    folder: Path, model_path: str, name: str, scorer: tuple, alpha: float | None = None
) -> dict:
    """The model's evaluation (a ULD model at `alpha` if given), with fluency judged by
    `scorer` (the target, for every row)."""
    if (folder / "eval.json").exists():
        return json.loads((folder / "eval.json").read_text())
    splits = EvalSplits(forget="", retain="", holdout="")
    roles = load_roles(splits)
    roles = {
        "forget": load_split(str(DATA / WHICH / "forget.json")),
        "retain": load_split(str(DATA / WHICH / "retain.json")),
        **roles,
    }
    model, tok = load_any(model_path, alpha=alpha)
    start = time.time()
    res = {"name": name, "model": model_path} | evaluate(model, tok, roles, scorer=scorer)
    res["eval_seconds"] = round(time.time() - start, 1)
    write_eval(res, folder)
    return res


def row(res: dict) -> dict:
    sp = res["splits"]
    out = {
        "forget_rouge": sp["forget"]["rouge_l"],
        "forget_prob": sp["forget"]["prob"],
        "retain_rouge": sp["retain"]["rouge_l"],
        "real_authors_rouge": sp["real_authors"]["rouge_l"],
        "world_facts_rouge": sp["world_facts"]["rouge_l"],
    }
    for role in ("forget", "retain", "real_authors", "world_facts"):
        # from the stored per-item figures, by the current is_degenerate (evaluations made
        # under another threshold read alike)
        items = sp[role]["items"]
        bad = [
            not it["generated"].strip() or is_degenerate(it["generated"], it.get("fluency_logp"))
            for it in items
        ]
        out[f"{role}_degenerate"] = sum(bad) / len(bad)
    out["samples"] = [(it["question"], it["generated"]) for it in sp["forget"]["items"][:3]] + [
        (it["question"], it["generated"]) for it in sp["world_facts"]["items"][:2]
    ]
    return out


WHICH = "people"


def main() -> None:
    global WHICH
    ap = argparse.ArgumentParser()
    ap.add_argument("--set", choices=["people", "known"], default="people")
    ap.add_argument("--workdir", default="runs/own")
    ap.add_argument("--only", default="")
    ap.add_argument("--no-base", action="store_true", help="leave out the target and retain rows")
    args = ap.parse_args()
    WHICH = args.set
    work = Path(args.workdir) / WHICH
    target, retain = prepare(work, WHICH)
    rows = {}
    models = {"target": target} | ({"retain": retain} if retain else {})
    if args.no_base:
        models = {}
    names = args.only.split(",") if args.only else list(RUNS)
    alphas = {}  # "uld@0.5": the uld model evaluated at alpha 0.5 (the trade-off of its alpha)
    for name in [n for n in names if "@" in n]:
        base, alpha = name.split("@")
        models[name], alphas[name] = str(work / base / "model"), float(alpha)
    for name in [n for n in names if "@" not in n]:
        out = work / name / "model"
        if not out.exists():
            cfg = UnlearnConfig(
                model=target,
                forget=str(DATA / WHICH / "forget.json"),
                retain=str(DATA / WHICH / "retain.json"),
                out=str(out),
                **RUNS[name],
            )
            unlearn(cfg)
        models[name] = str(out)
    judge = None
    for name, path in models.items():
        if not (work / name / "eval" / "eval.json").exists() and judge is None:
            net, tok = load_model(None if target == "default" else target)
            judge = (net.eval(), tok)
        rows[name] = row(evaluate_into(work / name / "eval", path, name, judge, alphas.get(name)))
    result = {
        "set": WHICH,
        "date": time.strftime("%Y-%m-%d"),
        "machine": f"{platform.processor() or platform.machine()}, torch threads 1",
        "command": f"OMP_NUM_THREADS=1 python benchmarks/own_data.py --set {WHICH}",
        "runs": {n: RUNS.get(n, {"alpha": alphas.get(n)}) for n in models},
        "rows": rows,
    }
    path = Path(__file__).parent.parent / "experiments" / "results" / f"own_data_{WHICH}.json"
    path.write_text(json.dumps(result, indent=1, ensure_ascii=False) + "\n")
    keys = [k for k in next(iter(rows.values())) if k != "samples"]
    print("| run | " + " | ".join(keys) + " |")
    print("|---|" + "---:|" * len(keys))
    for name, r in rows.items():
        cells = [f"{r[k]:.3f}" if isinstance(r[k], float) else str(r[k]) for k in keys]
        print(f"| {name} | " + " | ".join(cells) + " |")
    for name, r in rows.items():
        print(f"\n{name}:")
        for q, a in r["samples"]:
            print(f"  Q: {q}\n  A: {a}")
    print(f"\nwrote {path}")


if __name__ == "__main__":
    main()

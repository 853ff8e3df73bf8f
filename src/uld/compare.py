"""`uld compare`: every method on the same target, forget and retain data, evaluated alike.

A YAML file says what to run:

    target: runs/demo/target          # the model to unlearn
    reference: runs/demo/retain90     # the retain model: Forget Quality's reference
    out: runs/compare
    common: {forget: forget10, retain: retain90, epochs: 5}   # UnlearnConfig fields for all
    models: {retain: runs/demo/retain90}    # extra rows evaluated as they are (target is one)
    runs:                 # name -> UnlearnConfig fields (method defaults to name less -seedN)
      uld: {config: configs/uld_smollm2.yaml}
      npo+kl: {lr: 5.0e-5}
      uld-no-paraphrase: {method: uld, config: configs/uld_smollm2.yaml, paraphrase: false}
      ga+kl: {seeds: [0, 1, 2]}       # three runs: ga+kl (seed 0), ga+kl-seed1, ga+kl-seed2

Each run trains into `<out>/<name>/model` and is evaluated into `<out>/<name>/eval`; a run whose
evaluation exists is skipped, so an interrupted comparison continues where it stopped, in this
process or a later one. The merged table and plots go to `<out>/report` (`uld.report.report`); runs
of one setting over seeds (`name`, `name-seedN`) also get a row each in its table over seeds.

Several processes may work on one plan at once (say one per core, each with
OMP_NUM_THREADS=1): a process locks each run while it trains and evaluates it
(`<out>/<name>/.lock`, an OS file lock that its end, or its death, releases), and the others
skip that run and go on to the next. Each process writes the report when it has nothing left;
the last to finish writes the complete one.

Under a launcher (`accelerate launch` or `torchrun -m uld compare`, `uld.dist`) the processes of
the launch work on each run together, as `uld unlearn` and `uld eval` do: data-parallel training,
each process evaluating a share of the rows. Their main process decides: it finds what is done,
holds the run's lock and tells the others which run is next and what it needs (`dist.broadcast`),
so that all go the same way even where a file appears between their looks; it alone writes the
evaluations and the report and prints. Several launches, or a launch and lone processes, share a
plan through the locks as above.
"""

from __future__ import annotations

import json
import os
import time
from contextlib import ExitStack, contextmanager
from pathlib import Path

import yaml

from uld import dist
from uld.config import EvalSplits, UnlearnConfig, read_yaml, typed
from uld.evaluate import SUMMARY_KEYS, load_reference, load_roles, summarise
from uld.methods import check, method
from uld.models import resolve
from uld.moe import SCORES, routing_shift
from uld.report import model_info, read_eval, report, setting_of, write_eval
from uld.runs import KEPT_EVAL, evaluate_model, load_any, unlearn
from uld.trainer import last_checkpoint


def composite(cfg: UnlearnConfig) -> bool:
    """ULD or Offset: evaluated as a ULDModel on the target."""
    return bool(method(cfg.method).composite)


KNOWN = {"target", "reference", "out", "common", "models", "runs", "eval", "data"}


def load_plan(path: str | Path) -> dict:
    path = Path(path)
    if not path.exists():
        raise ValueError(f"comparison file {path} does not exist")
    plan = yaml.safe_load(path.read_text()) or {}
    unknown = sorted(set(plan) - KNOWN)
    if unknown:
        raise ValueError(f"{path}: unknown keys {unknown}; known keys are {sorted(KNOWN)}")
    for key in ("target", "out", "runs"):
        if not plan.get(key):
            raise ValueError(f"{path}: '{key}' is required")
    plan["runs"] = expand_seeds(plan["runs"], path)
    return plan


def expand_seeds(runs: dict, path: str | Path = "the plan") -> dict:
    """`name: {seeds: [0, 1, 2], ...}` -> runs `name` (seed 0), `name-seed1`, `name-seed2`, each
    with its `seed` and the other fields; runs without `seeds` pass through unchanged."""
    out: dict = {}
    for name, spec in runs.items():
        spec = dict(spec or {})
        if "seeds" not in spec:
            expanded = {name: spec}
        else:
            seeds = spec.pop("seeds")
            ok = isinstance(seeds, list) and seeds and all(type(s) is int and s >= 0 for s in seeds)
            if not ok or len(set(seeds)) != len(seeds):
                raise ValueError(
                    f"{path}: run {name!r}: seeds must be a list of distinct integers >= 0, "
                    f"e.g. seeds: [0, 1, 2]; got {seeds!r}"
                )
            if "seed" in spec:
                raise ValueError(f"{path}: run {name!r} gives both seed and seeds; keep one")
            expanded = {(f"{name}-seed{s}" if s else name): spec | {"seed": s} for s in seeds}
        clash = sorted(set(expanded) & set(out))
        if clash:
            raise ValueError(f"{path}: run names {clash} occur twice (check `seeds:` lists)")
        out |= expanded
    return out


def run_config(plan: dict, name: str, out: Path) -> UnlearnConfig:
    """The UnlearnConfig of one run: defaults < common < its `config:` file < its own fields."""
    spec = dict(plan["runs"][name] or {})
    values: dict = typed(UnlearnConfig, dict(plan.get("common") or {}), "the plan's common")
    if spec.get("config"):
        values |= read_yaml(UnlearnConfig, spec.pop("config"))
    values |= typed(UnlearnConfig, spec, f"run {name!r}")
    values.setdefault("method", setting_of(name))
    values |= {"model": str(plan["target"]), "out": str(out), "data": plan.get("data", "builtin")}
    cfg = UnlearnConfig(**values)
    if (cfg.eval_metric or cfg.alpha_by_reference) and not cfg.reference and plan.get("reference"):
        cfg.reference = str(plan["reference"])
    cfg.validate()
    check(cfg)  # the method exists and takes these settings
    return cfg


LOCK = ".lock"
PID = ".lock.pid"


@contextmanager
def claim(folder: Path, wait: bool = False):
    """Lock `folder` (a run's folder under the plan's `out`) for this process; yields whether it
    got the lock (with `wait`, it waits for it and yields True). The lock is a `filelock` lock
    on `folder/.lock` (flock on POSIX, LockFileEx on Windows), so the OS releases it when the
    holder ends or dies: nothing goes stale, and a run whose process died is simply resumed by
    the next one. The holder's pid is written beside it (`.lock.pid`), for `status`."""
    from filelock import FileLock, Timeout

    folder.mkdir(parents=True, exist_ok=True)
    lock = FileLock(str(folder / LOCK), timeout=-1 if wait else 0)
    for attempt in range(3):  # `holder` may be probing the lock for an instant
        try:
            lock.acquire()
            break
        except Timeout:
            if attempt == 2:
                yield False
                return
            time.sleep(0.2)
    try:
        (folder / PID).write_text(f"{os.getpid()}\n")
        yield True
    finally:
        lock.release()


def holder(folder: Path) -> str | None:
    """'pid N' of the live process that holds `folder`'s lock (see `claim`), else None. Probes
    the lock for an instant."""
    from filelock import FileLock, Timeout

    if not (folder / LOCK).exists():
        return None
    lock = FileLock(str(folder / LOCK), timeout=0)
    try:
        lock.acquire()
    except Timeout:
        pid = (folder / PID).read_text().strip() if (folder / PID).exists() else ""
        return f"pid {pid}" if pid else "another process"
    lock.release()
    return None


def is_moe(model_path: str | Path) -> bool:
    """Whether a model folder holds one of the MoE families `uld.moe` knows."""
    from transformers import AutoConfig

    return getattr(AutoConfig.from_pretrained(resolve(str(model_path))), "model_type", "") in SCORES


def same_rows(splits: dict, roles: dict[str, list[dict]]) -> bool:
    """Whether an evaluation's per-role results (`evaluate(...)["splits"]`) cover exactly the
    rows of `roles`: the same roles, questions and answers, in order."""
    return set(splits) == set(roles) and all(
        [(it["question"], it["answer"]) for it in splits[role]["items"]]
        == [(r["question"], r["answer"]) for r in rows]
        for role, rows in roles.items()
    )


def rescore(folder: Path, reference: dict | None) -> None:
    """Recompute the summary of an existing evaluation if it was scored against another
    reference (or an unknown one), or lacks a figure `summarise` now writes: they come from the
    per-item numbers that eval.json keeps, so a new retain model or a new summary figure does
    not mean evaluating again."""
    res = read_eval(folder)
    source = reference["source"] if reference else None
    if res.get("reference", "unknown") == source and set(SUMMARY_KEYS) <= set(res["summary"]):
        return
    extra = {k: v for k, v in res["summary"].items() if k == "routing_shift"}
    res["summary"] = summarise(res["splits"], reference) | extra
    res["reference"] = source
    write_eval(res, folder)
    print(f"[uld] {folder}: summary re-scored (reference: {source})")


def status(path: str | Path) -> list[tuple[str, str, str]]:
    """(name, method, state) of every run of the plan at `path`, without loading any model:
    "evaluated", "trained, not evaluated", "at checkpoint-N" (a run in progress, or one
    interrupted, which a rerun resumes there) or "no checkpoint yet"."""
    plan = load_plan(path)
    out = Path(plan["out"])
    rows = []
    for name in plan["runs"]:
        cfg = run_config(plan, name, out / name / "model")
        if (out / name / "eval" / "eval.json").exists():
            state = "evaluated"
        elif who := holder(out / name):
            ckpt = last_checkpoint(cfg.out)
            state = f"running ({who}{', at ' + ckpt.name if ckpt else ''})"
        elif Path(cfg.out).exists():
            state = "trained, not evaluated"
        elif ckpt := last_checkpoint(cfg.out):
            state = f"at {ckpt.name}"
        else:
            state = "no checkpoint yet"
        rows.append((name, cfg.method, state))
    return rows


def compare(path: str | Path, only: list[str] | None = None) -> dict:
    """Run, evaluate and report every run of the plan at `path` (see the module docstring)."""
    plan = load_plan(path)
    out = Path(plan["out"])
    names = only or list(plan["runs"])
    missing = sorted(set(names) - set(plan["runs"]))
    if missing:
        raise ValueError(f"no runs named {missing} in {path}; it has {list(plan['runs'])}")
    configs = {n: run_config(plan, n, out / n / "model") for n in names}  # all checked first
    data = plan.get("data", "builtin")
    forget = (plan.get("common") or {}).get("forget", "forget10")
    splits = EvalSplits.for_data(data, forget)
    for role, split in (plan.get("eval") or {}).items():
        setattr(splits, role, split)
    roles = load_roles(splits, data)
    dist.check_rows({r: len(v) for r, v in roles.items()})  # before anything is trained
    reference = None
    if plan.get("reference"):
        reference = load_reference(plan["reference"], roles["forget"])

    judge = None  # the target, loaded once: the judge of fluency for every row, and the
    # original routing that MoE rows' routing shift is measured against

    def fluency_judge() -> tuple:
        nonlocal judge
        if judge is None:
            judge = load_any(str(plan["target"]))
        return judge

    def evaluate_into(folder: Path, name: str, model_path: Path | str, kind: str) -> None:
        moe = is_moe(plan["target"])
        kept = Path(model_path) / KEPT_EVAL
        done = None  # the main process reads it, and tells the others whether there is one
        if dist.is_main() and kept.exists() and not moe:
            done = json.loads(kept.read_text())
            done = done if same_rows(done["splits"], roles) else None
        if dist.broadcast(done is not None):
            print(f"[compare] {name}: its kept epoch was evaluated in full in training ({kept})")
            if dist.is_main():
                res = {"name": name, "model": str(model_path), "kind": kind, "data": data}
                write_eval(res | {"training": model_info(model_path)} | done, folder)
                rescore(folder, reference)  # if training scored F.Q. against another reference
            return
        model, tok = load_any(str(model_path))
        res = evaluate_model(  # on several processes: each a share of the rows, merged
            model_path,
            roles,
            name,
            reference,
            fluency_judge(),
            info={"data": data},
            loaded=(model, tok),
        )
        if not dist.is_main():
            return
        if moe and "retain" in roles:
            if kind == "plain" and is_moe(model_path):  # how far routing on retain moved
                shift = routing_shift(fluency_judge()[0], model, tok, roles["retain"])
                res["routing_shift"] = shift
                res["summary"]["routing_shift"] = shift["agg_value"]
            elif kind != "plain":  # ULD / Offset leave the target, and its routing, untouched
                res["summary"]["routing_shift"] = 0.0
        write_eval(res, folder)
        del model

    def take(name: str, held: ExitStack) -> str:
        """What to do with the row `name`, decided by the main process and told to all:
        "evaluated" (done already), "busy" (another process or launch holds it; `held` keeps
        nothing), "finished" (done while this process waited for its lock) or "mine" (the main
        process holds its lock in `held` until the row is done)."""
        state = None
        if dist.is_main():
            if (out / name / "eval" / "eval.json").exists():
                state = "evaluated"
            elif not held.enter_context(claim(out / name)):
                state = "busy"
            elif (out / name / "eval" / "eval.json").exists():
                state = "finished"
            else:
                state = "mine"
        return dist.broadcast(state)

    def run(name: str, model_path: Path | str, cfg: UnlearnConfig | None = None) -> None:
        """Train (if `cfg` and not trained yet) and evaluate one row, unless done or locked."""
        folder = out / name / "eval"
        with ExitStack() as held:
            state = take(name, held)
            if state == "evaluated":
                print(f"[compare] {name}: evaluated already ({folder})")
                if dist.is_main():
                    rescore(folder, reference)
                return
            if state == "busy":
                who = (holder(out / name) if dist.is_main() else None) or "it has just finished"
                print(f"[compare] {name}: another process is on it ({who}); next")
                return
            if state == "finished":  # another process has just finished it
                return
            if cfg and dist.broadcast(not Path(cfg.out).exists()):
                start = time.time()
                print(f"[compare] training {name} ({cfg.method})")
                unlearn(cfg)  # (the main process saves it after training; the others wait
                # for that at the broadcast that begins `evaluate_into`)
                print(f"[compare] {name}: trained in {time.time() - start:.0f} s")
            evaluate_into(folder, name, model_path, "uld" if cfg and composite(cfg) else "plain")

    fixed = {"target": plan["target"]} | dict(plan.get("models") or {})
    for name, model_path in fixed.items():
        run(name, model_path)
    for name, cfg in configs.items():
        run(name, cfg.out, cfg)
    if not dist.is_main():  # the main process reports
        return {}
    # the report covers every row of the plan evaluated so far, in the plan's order
    rows = [out / n / "eval" for n in [*fixed, *plan["runs"]]]
    rows = [folder for folder in rows if (folder / "eval.json").exists()]
    if not (out / "target" / "eval" / "eval.json").exists():
        print("[compare] no report yet: the target is not evaluated (another process is on it)")
        return {}
    with claim(out / "report", wait=True):  # one writer at a time; the last one is complete
        runs = report(rows, out / "report")
    print(f"[compare] wrote {out / 'report'}/report.md and the plots")
    return runs

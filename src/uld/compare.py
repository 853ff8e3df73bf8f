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
      npo: {grid: {lr: [1.0e-5, 2.0e-5, 5.0e-5]}}   # three runs: npo-lr1e-5, npo-lr2e-5, ...
    select: {mu_ratio: 0.95, seeds: [1, 2]}   # per grid: one run chosen, then run over seeds

Each run trains into `<out>/<name>/model` and is evaluated into `<out>/<name>/eval`; a run whose
evaluation exists is skipped, so an interrupted comparison continues where it stopped, in this
process or a later one. The merged table and plots go to `<out>/report` (`uld.report.report`); runs
of one setting over seeds (`name`, `name-seedN`) also get a row each in its table over seeds.

A grid gives a method the same small budget as the others: one setting (`grid: {lr: [...]}`, any
UnlearnConfig field) over a few values, one run each, named `name-<field><value>`. When all of a
grid's runs and the target are evaluated, one rule, the same for every grid (`choose`), picks its
run: the best Forget Quality among the runs that keep Model Utility >= `mu_ratio` x the target's
(ties: the higher Model Utility), or the highest Model Utility where none keeps it. `select:
seeds` then runs the chosen one again with each seed (`<chosen>-seed1`, ...); the report states
the rule, each candidate and the choice, and plots the chosen settings (`mu_vs_fq.png`; every run:
`mu_vs_fq_all.png`). A grid's seeds start as soon as its grid is done (depth first), so an
interrupted comparison has whole methods rather than a little of each.

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
import math
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


KNOWN = {"target", "reference", "out", "common", "models", "runs", "eval", "data", "select"}
SELECT = {"mu_ratio": 0.95, "seeds": []}


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
    plan["runs"], plan["grids"] = expand_grids(plan["runs"], path)
    plan["runs"] = expand_seeds(plan["runs"], path)
    plan["select"] = select_rule(plan, path)
    plan["groups"] = groups(plan)  # before any seed run of a grid's choice joins plan["runs"]
    return plan


def grid_name(name: str, key: str, value) -> str:
    """The run of grid `name` at `key`=`value`: `npo+kl`, lr, 2e-05 -> `npo+kl-lr2e-5`."""
    if isinstance(value, float):
        mantissa, exponent = f"{value:e}".split("e")
        value = f"{mantissa.rstrip('0').rstrip('.')}e{int(exponent)}"
    return f"{name}-{key}{value}"


def expand_grids(runs: dict, path: str | Path = "the plan") -> tuple[dict, dict[str, list[str]]]:
    """`name: {grid: {lr: [a, b, c]}, ...}` -> runs `name-lra`, `name-lrb`, `name-lrc` (method
    `name` unless the spec gives one), each with its value and the other fields. Returns (runs,
    grids: {name: its runs}); runs without `grid` pass through unchanged."""
    out: dict = {}
    grids: dict[str, list[str]] = {}
    for name, spec in runs.items():
        spec = dict(spec or {})
        if "grid" not in spec:
            out[name] = spec
            continue
        grid = spec.pop("grid")
        if not (isinstance(grid, dict) and len(grid) == 1):
            raise ValueError(
                f"{path}: run {name!r}: grid must name one setting and its values, e.g. "
                f"grid: {{lr: [1.0e-5, 2.0e-5, 5.0e-5]}}; got {grid!r}"
            )
        ((key, values),) = grid.items()
        ok = isinstance(values, list) and len(values) >= 2
        if not ok or len({repr(v) for v in values}) != len(values):
            raise ValueError(
                f"{path}: run {name!r}: grid {key} must list two or more distinct values; "
                f"got {values!r}"
            )
        if key in ("seed", "method", "out", "model") or key in spec or "seeds" in spec:
            raise ValueError(
                f"{path}: run {name!r}: a grid over {key!r} is not allowed here (the grid's "
                "setting may not also be given, nor seed/method/out/model be a grid, nor a "
                "grid take `seeds:`; `select: seeds` runs the chosen one over seeds)"
            )
        spec.setdefault("method", name)
        members = {grid_name(name, key, v): spec | {key: v} for v in values}
        clash = sorted(set(members) & (set(out) | set(runs)))
        if clash:
            raise ValueError(f"{path}: run names {clash} occur twice (check `grid:` values)")
        out |= members
        grids[name] = list(members)
    return out, grids


def select_rule(plan: dict, path: str | Path = "the plan") -> dict:
    """The plan's `select:` (`mu_ratio` in (0, 1], `seeds`: more seeds for each grid's chosen
    run), checked, with the defaults filled in."""
    rule = dict(plan.get("select") or {})
    unknown = sorted(set(rule) - set(SELECT))
    if unknown:
        raise ValueError(f"{path}: select: unknown keys {unknown}; known keys are {sorted(SELECT)}")
    rule = SELECT | rule
    ratio = rule["mu_ratio"]
    if isinstance(ratio, bool) or not isinstance(ratio, int | float) or not 0 < ratio <= 1:
        raise ValueError(f"{path}: select: mu_ratio must be a number in (0, 1]; got {ratio!r}")
    seeds = rule["seeds"]
    own = int((plan.get("common") or {}).get("seed", 0))
    ok = isinstance(seeds, list) and all(type(s) is int and s >= 0 for s in seeds)
    if not ok or len(set(seeds)) != len(seeds) or own in seeds:
        raise ValueError(
            f"{path}: select: seeds must be a list of distinct integers >= 0 other than the "
            f"grid runs' own seed ({own}), e.g. seeds: [1, 2]; got {seeds!r}"
        )
    if seeds and not plan.get("grids"):
        raise ValueError(f"{path}: select: seeds given but no run has a grid to choose from")
    return rule


def choose(candidates: dict[str, dict], target_mu: float | None, mu_ratio: float) -> str:
    """The one selection rule for every grid: of `candidates` ({run: summary}), the best Forget
    Quality among those that keep Model Utility >= `mu_ratio` x `target_mu` (ties: the higher
    Model Utility, then the first); where none does, the highest Model Utility. Without a target
    utility (no utility splits evaluated) every candidate keeps it."""

    def value(name: str, key: str) -> float:
        v = candidates[name].get(key)
        return -math.inf if v is None else v

    keep = [
        n
        for n in candidates
        if target_mu is None or value(n, "model_utility") >= mu_ratio * target_mu
    ]
    if keep:
        return max(keep, key=lambda n: (value(n, "forget_quality"), value(n, "model_utility")))
    return max(candidates, key=lambda n: (value(n, "model_utility"), value(n, "forget_quality")))


def evaluated(out: Path, name: str) -> bool:
    return (out / name / "eval" / "eval.json").exists()


def summaries(out: Path, names) -> dict[str, dict]:
    """{name: its eval.json summary} for those of `names` evaluated so far."""
    return {n: read_eval(out / n / "eval")["summary"] for n in names if evaluated(out, n)}


def selections(
    plan: dict, grids: list[str] | None = None, known: dict[str, dict] | None = None
) -> dict[str, str | None]:
    """{grid: its chosen run, or None while the grid or the target is not yet evaluated}, for
    every grid of the plan or those named. known: summaries already read (`summaries`)."""
    grids = list(plan["grids"]) if grids is None else grids
    names = ["target", *(n for g in grids for n in plan["grids"][g])]
    known = summaries(Path(plan["out"]), names) if known is None else known
    chosen: dict[str, str | None] = {}
    for grid in grids:
        members = plan["grids"][grid]
        if "target" not in known or not all(n in known for n in members):
            chosen[grid] = None
            continue
        mu = known["target"].get("model_utility")
        chosen[grid] = choose({n: known[n] for n in members}, mu, plan["select"]["mu_ratio"])
    return chosen


def seed_runs(plan: dict, chosen: str) -> dict[str, dict]:
    """The chosen run of a grid again with each of `select: seeds`: {name: spec}."""
    return {
        f"{chosen}-seed{s}": plan["runs"][chosen] | {"seed": s} for s in plan["select"]["seeds"]
    }


def groups(plan: dict) -> dict[str, list[str]]:
    """The plan's runs in order, each grid's runs together under the grid's name, every other
    run alone under its own."""
    member_of = {n: g for g, members in plan["grids"].items() for n in members}
    out: dict[str, list[str]] = {}
    for name in plan["runs"]:
        out.setdefault(member_of.get(name, name), []).append(name)
    return out


def selection_text(plan: dict, chosen: dict[str, str | None], known: dict[str, dict]) -> str:
    """The report's account of the selection: the rule, each grid's candidates and its choice
    (`known`: the summaries of the runs evaluated so far, the target's included)."""
    ratio = plan["select"]["mu_ratio"]
    target_mu = known["target"].get("model_utility")
    bar = None if target_mu is None else ratio * target_mu
    text = (
        "\n## Selection\n\nOne rule for every grid: the run with the best Forget Quality among "
        f"those keeping Model Utility >= {ratio:g} x the target's"
        + (f" ({ratio:g} x {target_mu:.4f} = {bar:.4f})" if bar is not None else "")
        + " (ties: the higher M.U.); where none keeps it, the highest M.U."
        + (
            f" The chosen run is then run with seeds {plan['select']['seeds']}."
            if plan["select"]["seeds"]
            else ""
        )
        + "\n\n| Grid | Run | F.Q. | M.U. | Keeps M.U. | Chosen |\n|---|---|---:|---:|---|---|\n"
    )
    for grid, members in plan["grids"].items():
        for name in members:
            s = known.get(name, {})
            mu, fq = s.get("model_utility"), s.get("forget_quality")
            keeps = "–" if mu is None or bar is None else ("yes" if mu >= bar else "no")
            mark = "**chosen**" if chosen.get(grid) == name else ""
            if not s:
                keeps, mark = "not evaluated yet", ""
            fq = "–" if fq is None else f"{fq:.2e}"
            mu = "–" if mu is None else f"{mu:.4f}"
            text += f"| {grid} | {name} | {fq} | {mu} | {keeps} | {mark} |\n"
    return text


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
    interrupted, which a rerun resumes there) or "no checkpoint yet"; after each grid, the
    chosen run's seed runs, or one line saying they wait for the grid."""
    plan = load_plan(path)
    out = Path(plan["out"])
    chosen = selections(plan)
    rows = []
    for group, members in plan["groups"].items():
        rows += [run_state(plan, out, name) for name in members]
        if group not in plan["grids"] or not plan["select"]["seeds"]:
            continue
        if chosen[group] is None:
            seeds = ", ".join(map(str, plan["select"]["seeds"]))
            method_ = plan["runs"][members[0]]["method"]
            rows.append((f"{group} (seeds {seeds})", method_, "after its grid is evaluated"))
        else:
            seeded = seed_runs(plan, chosen[group])
            plan["runs"] |= seeded
            rows += [run_state(plan, out, name) for name in seeded]
    return rows


def run_state(plan: dict, out: Path, name: str) -> tuple[str, str, str]:
    cfg = run_config(plan, name, out / name / "model")
    if evaluated(out, name):
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
    return (name, cfg.method, state)


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
            if evaluated(out, name):
                state = "evaluated"
            elif not held.enter_context(claim(out / name)):
                state = "busy"
            elif evaluated(out, name):
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

    def seeds_of(group: str) -> dict[str, UnlearnConfig]:
        """The seed runs of the grid's chosen run, once the grid is evaluated (the main process
        chooses and tells the others); none with --only."""
        if only or group not in plan["grids"] or not plan["select"]["seeds"]:
            return {}
        chosen = dist.broadcast(selections(plan, [group])[group] if dist.is_main() else None)
        if chosen is None:
            return {}
        specs = seed_runs(plan, chosen)
        plan["runs"] |= specs
        return {n: run_config(plan, n, out / n / "model") for n in specs}

    fixed = {"target": plan["target"]} | dict(plan.get("models") or {})
    for name, model_path in fixed.items():
        run(name, model_path)
    for group, members in plan["groups"].items():  # depth first: a grid, then its seeds
        for name in members:
            if name in configs:
                run(name, configs[name].out, configs[name])
        for name, cfg in seeds_of(group).items():
            run(name, cfg.out, cfg)
    for group in plan["grids"]:  # grids that another process finished meanwhile
        for name, cfg in seeds_of(group).items():
            run(name, cfg.out, cfg)
    if not dist.is_main():  # the main process reports
        return {}
    return write_report(plan)


def write_report(plan: dict) -> dict:
    """`<out>/report` from every row of the plan evaluated so far, in the plan's order (each
    grid's runs, then its chosen run's seeds), with the selection; nothing is run. `uld compare`
    writes it when it has nothing left; `uld compare --report` at any time."""
    out = Path(plan["out"])
    fixed = {"target": plan["target"]} | dict(plan.get("models") or {})
    if not evaluated(out, "target"):
        print("[compare] no report yet: the target is not evaluated (another process is on it)")
        return {}
    grid_runs = [n for members in plan["grids"].values() for n in members]
    known = summaries(out, ["target", *grid_runs])  # read once for the choice and its account
    chosen = selections(plan, known=known)
    names = list(fixed)
    for group, members in plan["groups"].items():
        names += members
        if chosen.get(group) and plan["select"]["seeds"]:
            names += list(seed_runs(plan, chosen[group]))
    names = [n for n in names if evaluated(out, n)]
    notes, plotted = "", None
    if plan["grids"]:  # the plane shows each grid's chosen setting; mu_vs_fq_all.png every run
        notes = selection_text(plan, chosen, known)
        in_grid = set(grid_runs)
        plotted = [
            n
            for n in names
            if setting_of(n) not in in_grid
            or n in chosen.values()
            or setting_of(n) in chosen.values()
        ]
    with claim(out / "report", wait=True):  # one writer at a time; the last one is complete
        runs = report(
            [out / n / "eval" for n in names], out / "report", notes=notes, plotted=plotted
        )
    print(f"[compare] wrote {out / 'report'}/report.md and the plots")
    return runs

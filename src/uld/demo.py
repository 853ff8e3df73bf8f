"""The main job on the embedded default model, as one command (`uld demo`, `make demo`).

1. fine-tune SmolLM2-135M-Instruct on the built-in benchmark's `full` split -> the target;
2. fine-tune it on `retain90` -> the retain model (the reference for Forget Quality);
3. unlearn `forget10` from the target with ULD (retain set `retain90`);
4. the TOFU evaluation protocol on the target, the retain model and the ULD model (Forget
   Quality against the retain model, Model Utility, ROUGE-L, ...): the paper-style table in
   `<workdir>/report/report.md`, the Model Utility vs Forget Quality plot, a few before/after
   answers.

On two or more cores the independent steps run side by side, one core each (the target and the
retain model; then ULD beside the first two evaluations), with their output in
`<workdir>/logs/`. Finished models are reused: rerunning skips what is done (a step interrupted
mid-way resumes from its last checkpoint). Results go to `<workdir>/demo_results.json`.
"""

from __future__ import annotations

import json
import multiprocessing
import os
import sys
import time
from collections.abc import Callable
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

import torch

from uld.compare import rescore
from uld.config import EvalSplits, FinetuneConfig, UnlearnConfig
from uld.evaluate import load_reference, load_roles
from uld.finetune import finetune
from uld.report import read_eval, report, tables, write_eval
from uld.runs import evaluate_model, unlearn

# ULD settings for SmolLM2-135M on the built-in benchmark (configs/uld_smollm2.yaml says the
# same). They differ from the paper's Llama-2-7B settings, by measurement on this model: with
# beta = 6.5 and lr 1e-3 the 8-layer assistant stays near uniform on the forget set too (L_f
# ~10 nats after 10 epochs); beta = 4, lr 3e-3 and batch 4 let it learn D'_f; alpha = 1. The
# filter is the paper's 1e-2; with the plausible set's floor of filter * V tokens it barely
# matters here (docs/method.md, "The plausible set's floor"). D'_r is widened with the target's
# answers to general prompts (`general`; docs/method.md, "D'_r widened with general prompts").
# The augmentation comes from the rows' own `augment_*` fields, not the evaluation's strings:
# F.Q. 0.99 / 0.92 / 0.92 and M.U. 1.00x / 1.07x / 1.08x over three seeds (docs/method.md,
# "Augmentation kept apart from evaluation").
DEMO_ULD = {
    "layers": 8,
    "lora_rank": 16,
    "lora_alpha": 32.0,
    "beta": 4.0,
    "alpha": 1.0,
    "filter": 1e-2,
    "epochs": 10.0,
    "lr": 3e-3,
    "batch_size": 4,
    "general": "builtin",
}


def uld_config(
    target: Path, out: Path, overwrite: bool = False, settings: dict | None = None
) -> UnlearnConfig:
    """The demo's ULD run: forget10 from the target, retain90 as the retain set (`settings`
    override DEMO_ULD's)."""
    return UnlearnConfig(
        model=str(target),
        forget="forget10",
        retain="retain90",
        out=str(out),
        overwrite=overwrite,
        **(DEMO_ULD | (settings or {})),
    )


# Seconds each step took in `make demo` on an idle 2-core Intel Xeon (torch 2.13 CPU), one thread
# per step, two steps side by side: what the first line of `uld demo` estimates from.
MEASURED = {"target": 0.0, "retain": 0.0, "unlearn": 0.0, "eval": 0.0}


def estimate(todo: dict[str, bool], jobs: int) -> float:
    """Seconds the steps still to do take (`todo`: step -> to do), by MEASURED: side by side
    with `jobs` >= 2 (the target beside the retain model, ULD beside two evaluations)."""
    t = {k: MEASURED[k.split()[0]] if v else 0.0 for k, v in todo.items()}
    if jobs < 2:
        return sum(t.values())
    return (
        max(t["target"], t["retain"])
        + max(t["unlearn"], t["eval target"] + t["eval retain"])
        + t["eval uld"]
    )


def _in_child(log: str, fn: Callable, *args, **kwargs):
    """Run `fn` in a worker process on one thread, its output (prints, progress bars, warnings)
    into the file `log`."""
    torch.set_num_threads(1)
    with open(log, "a") as f:
        os.dup2(f.fileno(), 1)
        os.dup2(f.fileno(), 2)
    start = time.time()
    fn(*args, **kwargs)
    return round(time.time() - start, 1)


def _evaluate_into(folder: Path, name: str, path: Path, roles: dict, reference: dict) -> None:
    res = evaluate_model(path, roles, name, reference, fluency="none")
    write_eval(res, folder)


def run_demo(
    workdir: str | Path = "runs/demo",
    fresh: bool = False,
    base: str | None = None,
    jobs: int | None = None,
    max_steps: int = -1,
    uld: dict | None = None,
) -> dict:
    """The main job (module docstring). `base`: the model to fine-tune (default: the embedded
    SmolLM2-135M-Instruct); `jobs`: steps side by side (default: 2 on a CPU machine with two or
    more cores, else 1); `max_steps` and `uld` (settings over DEMO_ULD) shorten it for tests."""
    work = Path(workdir)
    if jobs is None:
        jobs = 2 if (os.cpu_count() or 1) >= 2 and not torch.cuda.is_available() else 1
    target, retain, uld_out = work / "target", work / "retain90", work / "uld-forget10"
    evals = {name: work / "eval" / name for name in ("target", "retain", "uld")}
    todo = {
        "target": fresh or not target.exists(),
        "retain": fresh or not retain.exists(),
        "unlearn": fresh or not uld_out.exists(),
        **{f"eval {n}": fresh or not (f / "eval.json").exists() for n, f in evals.items()},
    }
    if base is None and max_steps < 0 and all(MEASURED.values()):
        minutes = estimate(todo, jobs) / 60
        print(
            f"[demo] this takes about {minutes:.0f} minutes on an idle 2-core CPU "
            f"({'two steps side by side' if jobs >= 2 else 'one step at a time'}; steps already "
            "done are reused)",
            flush=True,
        )
    timings: dict[str, float] = {}
    ft = FinetuneConfig()
    logs = work / "logs"
    logs.mkdir(parents=True, exist_ok=True)
    pool = None
    if jobs >= 2:
        os.environ["OMP_NUM_THREADS"] = "1"  # read by the workers' torch as it starts
        pool = ProcessPoolExecutor(jobs, mp_context=multiprocessing.get_context("spawn"))

    def tune(split: str, out: Path) -> tuple:
        return finetune, (base, split, out), dict(
            epochs=ft.epochs, lr=ft.lr, batch_size=ft.batch_size, max_steps=max_steps,
            overwrite=fresh,
        )  # fmt: skip

    def run(steps: dict[str, tuple]) -> None:
        """Run the steps (name -> (fn, args, kwargs)) still to do: side by side in the pool,
        else one after the other here."""
        for name in [n for n in steps if not todo[n]]:
            print(f"[demo] {name}: done already, reused")
        steps = {name: step for name, step in steps.items() if todo[name]}
        if pool is None:
            for name, (fn, args, kwargs) in steps.items():
                start = time.time()
                fn(*args, **kwargs)
                timings[name] = round(time.time() - start, 1)
                print(f"[demo] {name}: {timings[name]:.0f} s", flush=True)
            return
        futures = {}
        for name, (fn, args, kwargs) in steps.items():
            log = logs / f"{name.replace(' ', '-')}.log"
            print(f"[demo] {name}: started, one core (its output: {log})", flush=True)
            futures[name] = (pool.submit(_in_child, str(log), fn, *args, **kwargs), log)
        for name, (future, log) in futures.items():
            try:
                timings[name] = future.result()
            except Exception:
                tail = log.read_text(errors="replace").splitlines()[-15:]
                print(f"[demo] {name} failed; the end of {log}:", *tail, sep="\n", file=sys.stderr)
                raise
            print(f"[demo] {name}: {timings[name]:.0f} s", flush=True)

    try:
        run({"target": tune("full", target), "retain": tune("retain90", retain)})
        # the TOFU protocol on every model; the retain model is its own reference (F.Q. = 1)
        roles = load_roles(EvalSplits())
        reference = load_reference(retain, roles["forget"])
        for name, folder in evals.items():
            if not todo[f"eval {name}"]:
                rescore(folder, reference)  # an evaluation from an older uld: today's summary

        def evaluation(name: str, path: Path) -> tuple:
            return _evaluate_into, (evals[name], name, path, roles, reference), {}

        run(
            {
                "unlearn": (unlearn, (uld_config(target, uld_out, fresh, uld),), {}),
                "eval target": evaluation("target", target),
                "eval retain": evaluation("retain", retain),
            }
        )
        run({"eval uld": evaluation("uld", uld_out)})
    finally:
        if pool is not None:
            pool.shutdown()
    runs = report(list(evals.values()), work / "report")
    print("\n" + tables(runs))
    examples = {}
    for name in ("target", "uld"):
        items = read_eval(evals[name])["splits"]["forget"]["items"][:3]
        examples[name] = [(it["question"], it["answer"], it["generated"]) for it in items]
    print("forget10: before (target) and after (ULD)")
    for (q, a, before), (_, _, after) in zip(examples["target"], examples["uld"], strict=True):
        print(f"  Q: {q}\n     truth : {a}\n     target: {before}\n     uld   : {after}")
    summary = {"summary": runs, "seconds": timings, "jobs": jobs, "examples": examples}
    (work / "demo_results.json").write_text(json.dumps(summary, indent=1) + "\n")
    print(f"\n[demo] timings (s): {timings}")
    print(f"[demo] wrote {work / 'demo_results.json'}, the table and plots in {work / 'report'}")
    return summary

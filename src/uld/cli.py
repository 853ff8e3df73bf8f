"""The `uld` command.

    uld data export --out DIR             the built-in benchmark as TOFU-schema JSON files
    uld data export --kind muse --out DIR the built-in raw-text corpus in MUSE's schema
    uld data augment --data locuslab/TOFU --forget forget10 --out F.json   ULD's training
                                          paraphrases and wrong answers, written by an LM
    uld finetune --split full --out DIR   make a target (or --split retain90: the retain model)
    uld unlearn --method uld --model TARGET --forget forget10 --retain retain90 --out DIR
    uld generate --model DIR "question"   answer with a plain or a ULD model
    uld chat --model DIR                  an interactive session
    uld eval --model DIR --reference RETAIN --out EVAL_DIR   the TOFU protocol, table in EVAL_DIR
    uld eval --model DIR --data builtin-muse --reference RETRAINED --out EVAL_DIR   MUSE's
                                          criteria on raw text (VerbMem, KnowMem, PrivLeak)
    uld calibrate --model DIR --write     ULD: choose alpha on held-out rows (no retain model)
    uld report EVAL_DIR... --out DIR      merge evaluations: one table, plots
    uld compare --config configs/compare.yaml   every method side by side (resumable)
    uld experts --model MOE --forget forget10   MoE: the experts the forget set engages (UOE)
    uld upcycle --out runs/moe/base       the embedded model as a 4-expert top-2 Mixtral
    uld demo                              the whole main job on the embedded default model
    uld serve --model DIR [--port 8000]   an OpenAI-compatible server (docs/serve.md)
    uld lm-eval --model DIR --tasks wmdp_bio --out DIR   lm-evaluation-harness tasks (uld[eval])

Errors in the input end the command with a one-line message and exit status 2.
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

from uld import config as cfgmod
from uld import dist
from uld.assistant import UnsupportedModelError
from uld.calibrate import ALPHAS, check_held_out, choose_alpha, format_grid, format_safe_grid
from uld.compare import compare, load_plan, status, write_report
from uld.config import COMBINES, MAX_ALPHA, EvalSplits
from uld.data.augment import write_augmentation
from uld.data.corpus import builtin_corpus
from uld.data.load import DataError, load_split, write_split
from uld.data.synthetic import builtin_splits
from uld.data.text import is_text_data, load_muse, texts, write_muse
from uld.defaults import choose_alpha_on_rows
from uld.demo import run_demo
from uld.evaluate import answer_budget, generate_answers, load_reference, load_roles
from uld.evaluate_muse import (
    KNOWMEM_TOKENS,
    VERBMEM_TOKENS,
    evaluate_muse_model,
    evaluate_muse_to,
    privleak_reference,
)
from uld.finetune import finetune
from uld.harness import lm_eval_to
from uld.logit_diff import ULD_CONFIG, is_uld_folder, load_any, read_uld_config
from uld.models import DEVICE_MAPS, ModelLoadError, device_map, load_model, save_model
from uld.moe import expert_attribution, plot_attribution, ranking_rows, top_experts
from uld.outdir import check_out, locked, output_dir, write_json
from uld.report import report, tables
from uld.report_muse import muse_report, muse_tables, report_kind
from uld.report_muse import summary_of as muse_summary
from uld.runs import evaluate_model, evaluate_to, unlearn
from uld.serve import serve
from uld.streaming import AnswerStreamer
from uld.upcycle import upcycle


def cmd_data_export(args) -> None:
    if args.kind == "muse":
        data = builtin_corpus(size=args.size, seed=args.seed)  # checked before anything is written
        check_out(args.out, args.overwrite)
        with locked(args.out), output_dir(args.out, "uld data export", args.overwrite) as tmp:
            counts = write_muse(data, tmp)
        parts = [
            f"{c}: " + ", ".join(f"{s} ({n})" for s, n in v.items()) for c, v in counts.items()
        ]
        print(f"wrote the built-in MUSE-schema corpus to {args.out}: " + "; ".join(parts))
        return
    if args.authors < 1:
        raise ValueError(f"--authors={args.authors} must be >= 1")
    check_out(args.out, args.overwrite)
    splits = builtin_splits(n_authors=args.authors, seed=args.seed)
    with locked(args.out), output_dir(args.out, "uld data export", args.overwrite) as tmp:
        for name, rows in splits.items():
            write_split(rows, tmp / f"{name}.json")
    print(
        f"wrote {len(splits)} splits to {args.out}: "
        + ", ".join(f"{k} ({len(v)})" for k, v in splits.items())
    )


def completer(model, tokenizer, max_new_tokens: int, batch_size: int = 8, **sampling):
    """prompts -> one sampled reply each, from `model` (what `uld data augment` asks with)."""

    def complete(prompts: list[str]) -> list[str]:
        return generate_answers(
            model, tokenizer, prompts, batch_size, max_new_tokens, progress=True, **sampling
        )

    return complete


def cmd_data_augment(args) -> None:
    import json

    import torch

    out = Path(args.out)
    if out.suffix != ".json":
        raise DataError(f"--out {out}: give a .json file name (then unlearn with --forget FILE)")
    if min(args.paraphrases, args.perturbed) < 0 or args.paraphrases + args.perturbed == 0:
        raise ValueError(
            f"--paraphrases={args.paraphrases} --perturbed={args.perturbed}: give counts of 0 or "
            "more, not both 0"
        )
    if args.tries < 1:
        raise ValueError(f"--tries={args.tries}: give at least 1")
    if out.exists() and not args.overwrite:
        raise ValueError(f"--out {out} exists; pass --overwrite to replace it, or choose another")
    rows = load_split(args.forget, data=args.data)
    progress = out.with_name(out.name + ".progress.json")
    done = json.loads(progress.read_text()) if progress.exists() else {}
    if done:
        print(f"[augment] resuming from {progress}")
    model, tok = load_any(args.model)
    torch.manual_seed(args.seed)
    sampling = {"do_sample": True, "temperature": args.temperature, "top_p": args.top_p}
    # a reworded question and answer: room for the question plus twice the longest answer
    budget = args.max_new_tokens or 2 * answer_budget(tok, rows) + 32
    complete = completer(model, tok, budget, args.batch_size, **sampling)
    rows, done = write_augmentation(
        rows,
        complete,
        args.paraphrases,
        args.perturbed,
        args.tries,
        done,
        save=lambda d: write_json(d, progress),
    )
    empty = [
        i
        for i, r in enumerate(rows)
        if (args.paraphrases and not r["augment_paraphrased"])
        or (args.perturbed and not r["augment_perturbed"])
    ]
    if empty:
        raise DataError(
            f"{len(empty)} of {len(rows)} rows got no accepted paraphrase or no accepted wrong "
            f"answer in {args.tries} rounds (e.g. row {empty[0]}: {rows[empty[0]]['question']!r}); "
            f"what was accepted is kept in {progress} and a rerun goes on from it: give more "
            "--tries, or a stronger instruct model with --model"
        )
    short = sum(
        len(r["augment_paraphrased"]) < args.paraphrases
        or len(r["augment_perturbed"]) < args.perturbed
        for r in rows
    )
    out.parent.mkdir(parents=True, exist_ok=True)
    write_split(rows, out)
    progress.unlink(missing_ok=True)
    print(
        f"wrote {len(rows)} rows to {out} ({short} with fewer than asked); "
        f"unlearn with --forget {out}"
    )


def cmd_finetune(args) -> None:
    cfg = cfgmod.from_args(cfgmod.FinetuneConfig, args, args.config)
    out = finetune(
        cfg.model,
        cfg.split,
        cfg.out,
        data=cfg.data,
        epochs=cfg.epochs,
        lr=cfg.lr,
        batch_size=cfg.batch_size,
        lora=cfg.lora,
        lora_rank=cfg.lora_rank,
        seed=cfg.seed,
        max_steps=cfg.max_steps,
        overwrite=cfg.overwrite,
        precision=cfgmod.precision(cfg),
        gradient_checkpointing=cfg.gradient_checkpointing,
        data_kind=cfg.data_kind,
        max_length=cfg.max_length,
    )
    print(f"saved {out}")


def cmd_unlearn(args) -> None:
    cfg = cfgmod.from_args(cfgmod.UnlearnConfig, args, args.config)
    out = unlearn(cfg)
    print(f"saved {out}")


def cmd_generate(args) -> None:
    model, tok = load_any(args.model, args.alpha, args.filter, args.target, args.combine)
    answers = generate_answers(
        model,
        tok,
        args.questions,
        max_new_tokens=args.max_new_tokens,
        progress=False,
        **_sampling(args),
    )
    for q, a in zip(args.questions, answers, strict=True):
        print(f"Q: {q}\nA: {a}\n" if len(args.questions) > 1 else a)


def cmd_chat(args) -> None:
    model, tok = load_any(args.model, args.alpha, args.filter, args.target, args.combine)
    print("uld chat: one question per line; an empty line or Ctrl-D ends.")
    streamer = AnswerStreamer(tok, prefix="A: ")  # prints each answer as it is decoded
    for line in sys.stdin if not sys.stdin.isatty() else iter(lambda: input("> "), ""):
        q = line.strip()
        if not q:
            break
        generate_answers(
            model,
            tok,
            [q],
            max_new_tokens=args.max_new_tokens,
            progress=False,
            streamer=streamer,
            **_sampling(args),
        )


def cmd_eval(args) -> None:
    from dataclasses import asdict

    if is_text_data(args.data, args.data_kind):
        return cmd_eval_text(args)
    if args.series:
        raise ValueError("--series places a MUSE evaluation (raw-text data) in a series")
    if args.out:
        check_out(args.out, args.overwrite, inputs=[args.model, args.reference])
    splits = EvalSplits.for_data(args.data, args.forget or "forget10")
    for role in asdict(splits):  # flags given on the command line win
        if getattr(args, role) is not None:
            setattr(splits, role, getattr(args, role))
    roles = load_roles(splits, args.data)
    reference = None
    if args.reference:
        if "forget" not in roles:
            raise ValueError("--reference needs a forget split (--forget SPLIT)")
        reference = load_reference(args.reference, roles["forget"])
    name = args.name or (Path(args.model).name if args.model else "default")
    info = {
        "data": args.data,
        "split_names": {k: v for k, v in asdict(splits).items() if v},
        "reference": args.reference or None,
    }
    sampling = _sampling(args) | {"max_new_tokens": args.max_new_tokens}
    if sampling != {"max_new_tokens": None}:
        info["sampling"] = sampling
    results = evaluate_model(
        args.model,
        roles,
        name,
        reference,
        fluency=args.fluency_model,
        alpha=args.alpha,
        filter=args.filter,
        target=args.target,
        combine=args.combine,
        info=info,
        mia=args.mia,
        mia_reference=args.mia_reference,
        batch_size=args.batch_size,
        sampling=sampling,
    )
    print(tables({name: results["summary"]}))
    if reference is None and "forget" in roles:
        print("(Forget Quality needs --reference RETAIN_MODEL_FOLDER or its eval.json)")
    if args.out and dist.is_main():
        evaluate_to(args.out, results, "uld eval", args.overwrite)
        print(f"[uld] wrote {args.out}/eval.json and eval.md")


def cmd_eval_text(args) -> None:
    """`uld eval` on raw text: MUSE's criteria (`uld.evaluate_muse`)."""
    from dataclasses import asdict

    qa = [f"--{r.replace('_', '-')}" for r in asdict(EvalSplits()) if getattr(args, r) is not None]
    if qa:
        raise ValueError(
            f"{', '.join(qa)}: QA split names; {args.data} is raw text in MUSE's schema, whose "
            "splits are fixed: leave them out"
        )
    if _sampling(args) or args.max_new_tokens:
        raise ValueError(
            "MUSE's protocol decodes greedily with its own budgets: leave out --temperature, "
            "--top-p and --max-new-tokens (--verbmem-tokens, --knowmem-tokens set the budgets)"
        )
    if args.out:
        check_out(args.out, args.overwrite, inputs=[args.model, args.reference, args.data])
    data = load_muse(args.data)
    reference = privleak_reference(args.reference, data) if args.reference else None
    name = args.name or (Path(args.model).name if args.model else "default")
    results = evaluate_muse_model(
        args.model,
        data,
        name,
        reference,
        alpha=args.alpha,
        filter=args.filter,
        target=args.target,
        combine=args.combine,
        info={"data": args.data, "reference": args.reference or None},
        series=args.series,
        batch_size=args.batch_size,
        verbmem_tokens=args.verbmem_tokens,
        knowmem_tokens=args.knowmem_tokens,
    )
    print(muse_tables({name: muse_summary(results)}))
    if args.out and dist.is_main():  # several processes each evaluate all; the main one writes
        evaluate_muse_to(args.out, results, "uld eval", args.overwrite)
        print(f"[uld] wrote {args.out}/eval.json and eval.md")


def cmd_calibrate(args) -> None:
    import json

    if not args.model or not is_uld_folder(args.model):
        raise ValueError(
            f"--model {args.model}: not a saved ULD model (a folder with {ULD_CONFIG}, written by "
            "`uld unlearn --method uld`)"
        )
    if read_uld_config(args.model).get("mode", "uld") != "uld":
        raise ValueError(f"{args.model} is an Offset model: it has no alpha to calibrate")
    text = is_text_data(args.data)
    if text and not args.retain:
        raise ValueError(
            f"--data {args.data} is raw text: alpha is chosen there by the retain rule; pass "
            "--retain with the retain documents (e.g. --forget forget --retain retain1)"
        )
    if args.retain:  # the safe rule: no held-out rows of the same kind needed
        if text:
            muse = load_muse(args.data)
            forget, retain = texts(muse, args.forget), texts(muse, args.retain)
        else:
            forget = load_split(args.forget, args.data)
            retain = load_split(args.retain, args.data)
        model, tok = load_any(
            args.model, filter=args.filter, target=args.target, combine=args.combine
        )
        res = choose_alpha_on_rows(model, tok, forget, retain)
        print(format_safe_grid(res))
        print(f"alpha {res['alpha']:g} (the model's was {model.alpha:g})")
        if args.write:
            path = Path(args.model, ULD_CONFIG)
            card = json.loads(path.read_text())
            card["alpha_choice"] = res | {"alpha_before": card["alpha"], "retain": args.retain}
            card["alpha"], card["combine"] = res["alpha"], model.combine
            write_json(card, path)
            print(f"wrote alpha {res['alpha']:g} into {path}")
        return
    forget, holdout = load_split(args.forget, args.data), load_split(args.holdout, args.data)
    check_held_out(holdout, forget, f"--holdout {args.holdout}")
    if args.near and not args.reference:
        raise ValueError("--near chooses by Forget Quality: it needs --reference RETAIN_MODEL")
    reference = None
    if args.reference:
        reference = load_reference(args.reference, forget)["truth_ratios"]
    model, tok = load_any(args.model, filter=args.filter, target=args.target, combine=args.combine)
    res = choose_alpha(
        model, tok, forget, holdout, args.alphas or ALPHAS, args.filter, reference, args.near
    )
    print(format_grid(res))
    print(f"alpha {res['alpha']:g} (the model's was {model.alpha:g})")
    if args.write:
        path = Path(args.model, ULD_CONFIG)
        card = json.loads(path.read_text())
        card["calibration"] = {"split": args.holdout, "alpha_before": card["alpha"]} | res
        card["alpha"], card["filter"] = res["alpha"], res["filter"]
        card["combine"] = model.combine
        write_json(card, path)
        print(f"wrote alpha {res['alpha']:g} into {path}")


def cmd_report(args) -> None:

    check_out(args.out, args.overwrite, inputs=args.runs)
    names = args.names.split(",") if args.names else None
    muse = report_kind(args.runs) == "muse"  # MUSE's table and plots, else TOFU's
    with locked(args.out), output_dir(args.out, "uld report", args.overwrite) as tmp:
        if muse:
            runs = muse_report(args.runs, tmp, names)
        else:
            runs = report(args.runs, tmp, names, args.relative_to, args.baseline)
    print(muse_tables(runs) if muse else tables(runs))
    print(f"[uld] wrote {args.out}/report.md, summary.json and the plots")


def cmd_experts(args) -> None:

    check_out(args.out, args.overwrite, inputs=[args.model])
    rows = load_split(args.forget, args.data)
    model, tok = load_model(args.model)
    attribution = expert_attribution(model.eval(), tok, rows, tokens=args.tokens)
    layer = None if args.layer < 0 else args.layer
    selected = top_experts(attribution, args.m, layer)
    print(f"Expert attribution on {args.forget} ({len(rows)} rows; UOE Eq. 2), top {args.top}:")
    print("| rank | layer | expert | score | share of its layer |\n|---:|---:|---:|---:|---:|")
    for r in ranking_rows(attribution, args.top):
        print(
            f"| {r['rank']} | {r['layer']} | {r['expert']} | {r['score']:.4f} | {r['share']:.3f} |"
        )
    print(f"selected (M={args.m}{'' if layer is None else f', layer {layer}'}): {selected}")
    out = Path(args.out)
    with locked(out), output_dir(out, "uld experts", args.overwrite) as tmp:
        plot_attribution(attribution, tmp / "experts.png", selected)
        write_json(
            {"forget": args.forget, "selected": selected, "attribution": attribution.tolist()},
            tmp / "experts.json",
        )
    print(f"wrote {out / 'experts.png'} (heat map, layers x experts) and {out / 'experts.json'}")


def cmd_upcycle(args) -> None:

    check_out(args.out, args.overwrite, inputs=[args.model])
    dense, tok = load_model(args.model)
    moe = upcycle(dense, args.experts, args.top_k, args.noise, seed=args.seed)
    card = {"made_by": "uld upcycle", "base_model": str(args.model or "default")}
    card |= {"n_experts": args.experts, "top_k": args.top_k, "expert_noise": args.noise}
    with locked(args.out):
        save_model(moe, tok, args.out, card | {"seed": args.seed}, overwrite=args.overwrite)
    n = sum(p.numel() for p in moe.parameters())
    print(f"saved {args.out}: a {args.experts}-expert top-{args.top_k} Mixtral, {n:,} parameters")


def cmd_compare(args) -> None:
    if args.status:
        rows = status(args.config)
        width = max(len(name) for name, _, _ in rows)
        for name, method, state in rows:
            print(f"{name:<{width}}  {method:<14}  {state}")
        done = sum(state == "evaluated" for _, _, state in rows)
        print(f"{done} of {len(rows)} runs evaluated")
        return
    if args.report:
        write_report(load_plan(args.config))
        return
    compare(args.config, args.only.split(",") if args.only else None)


def cmd_demo(args) -> None:
    run_demo(args.workdir, fresh=args.fresh, base=args.model)


def cmd_serve(args) -> None:
    serve(
        args.model,
        args.host,
        args.port,
        args.api_key,
        args.max_tokens_cap,
        args.max_batch,
        args.name,
        args.alpha,
        args.filter,
        args.target,
        args.combine,
    )


def cmd_lm_eval(args) -> None:
    lm_eval_to(
        args.model,
        [t.strip() for t in args.tasks.split(",") if t.strip()],
        args.out,
        args.limit,
        args.num_fewshot,
        args.batch_size,
        args.include_path,
        args.alpha,
        args.filter,
        args.target,
        args.combine,
        args.apply_chat_template,
        args.seed,
        args.overwrite,
    )
    print(Path(args.out, "results.md").read_text())
    print(f"[uld] wrote {args.out}/results.json, results.md and the samples")


def _sampling(args) -> dict:
    if args.temperature and args.temperature > 0:
        return {"do_sample": True, "temperature": args.temperature, "top_p": args.top_p}
    if args.top_p != 1.0:
        raise ValueError(f"--top-p {args.top_p} samples: it needs --temperature above 0")
    return {}


def _number(kind=float, least=None, most=None, above=None):
    """An argparse type: `kind`, finite, in the range given; the message says the range."""
    import math

    def convert(text: str):
        try:
            v = kind(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{text!r} is not a {kind.__name__}") from None
        ok = math.isfinite(v) and (least is None or v >= least) and (most is None or v <= most)
        if not ok or (above is not None and v <= above):
            lo = (
                f"> {above:g}"
                if above is not None
                else f">= {least:g}"
                if least is not None
                else ""
            )
            hi = f"<= {most:g}" if most is not None else ""
            raise argparse.ArgumentTypeError(
                f"{text} must be {' and '.join(filter(None, [lo, hi]))}"
            )
        return v

    convert.__name__ = kind.__name__
    return convert


def _model_flags(p: argparse.ArgumentParser, max_new_tokens: int | None = 64) -> None:
    p.add_argument("--model", default=None, help="model folder (plain or ULD) or hub id")
    p.add_argument(
        "--target",
        default=None,
        help="ULD: load the adapter on this target folder instead of the one its uld_config.json "
        "names (it must hold the same weights)",
    )
    p.add_argument(
        "--alpha", type=_number(float, 0, MAX_ALPHA), default=None, help="ULD: override alpha"
    )
    p.add_argument(
        "--filter", type=_number(float, None, 1, above=0), default=None, help="ULD: override filter"
    )
    p.add_argument("--combine", choices=COMBINES, default=None, help=COMBINE_HELP)
    p.add_argument("--device-map", choices=DEVICE_MAPS, default=None, help=DEVICE_MAP_HELP)
    p.add_argument(
        "--max-new-tokens",
        type=_number(int, 1),
        default=max_new_tokens,
        help="most tokens to generate per answer"
        + (f" (default {max_new_tokens})" if max_new_tokens else " (default: from the answers)"),
    )
    p.add_argument(
        "--temperature", type=_number(float, 0), default=0.0, help="> 0 samples (default greedy)"
    )
    p.add_argument("--top-p", type=_number(float, None, 1, above=0), default=1.0)


COMBINE_HELP = (
    "ULD: how the target's and the assistant's logits combine on the plausible set: mass (uld's: "
    "l_t - alpha * l_a rescaled to keep the target's mass there) or authors (the ULD authors' "
    "raw l_t - alpha * l_a); default: the model's own (uld_config.json), else mass"
)


DEVICE_MAP_HELP = (
    "split the model (a ULD model's target) across this machine's GPUs with accelerate's device "
    "map (auto fills them in order) for a target larger than one GPU; default: one device"
)


OVERWRITE_HELP = (
    "replace an earlier result in --out (files uld did not write there are never deleted)"
)


def parser() -> argparse.ArgumentParser:
    from dataclasses import asdict

    top = argparse.ArgumentParser(prog="uld", description="LLM unlearning (ULD and baselines)")
    sub = top.add_subparsers(dest="command", required=True)

    data = sub.add_parser("data", help="the built-in benchmark").add_subparsers(
        dest="data_command", required=True
    )
    export = data.add_parser("export", help="write the built-in benchmark as JSON files")
    export.add_argument("--out", required=True)
    export.add_argument(
        "--kind",
        choices=("tofu", "muse"),
        default="tofu",
        help="tofu: question/answer rows; muse: the raw-text corpus as <out>/<config>/<split>.json",
    )
    export.add_argument("--authors", type=int, default=100)
    export.add_argument("--size", type=int, default=12, help="muse: articles per raw split")
    export.add_argument("--seed", type=int, default=0)
    export.add_argument("--overwrite", action="store_true", help=OVERWRITE_HELP)
    export.set_defaults(func=cmd_data_export)
    aug = data.add_parser(
        "augment",
        help="write ULD's training paraphrases and wrong answers (augment_* fields) with an LM",
    )
    aug.add_argument("--forget", required=True, help="the forget split (a name or a .json file)")
    aug.add_argument("--data", default="builtin", help="builtin, a folder of <split>.json, hub id")
    aug.add_argument("--model", default=None, help="instruct model (default: embedded SmolLM2)")
    aug.add_argument("--out", required=True, help="the forget split with the fields, a .json")
    aug.add_argument("--paraphrases", type=int, default=2, help="question/answer pairs per row")
    aug.add_argument("--perturbed", type=int, default=3, help="wrong answers per row")
    aug.add_argument("--tries", type=int, default=4, help="rounds of asking for what is missing")
    aug.add_argument("--temperature", type=float, default=0.8)
    aug.add_argument("--top-p", type=float, default=0.95)
    aug.add_argument("--max-new-tokens", type=int, default=0, help="default: from the answers")
    aug.add_argument("--batch-size", type=int, default=8)
    aug.add_argument("--seed", type=int, default=0)
    aug.add_argument("--overwrite", action="store_true", help="replace an existing --out file")
    aug.set_defaults(func=cmd_data_augment)

    for name, cls, func, text in [
        ("finetune", cfgmod.FinetuneConfig, cmd_finetune, "fine-tune a model on a split"),
        ("unlearn", cfgmod.UnlearnConfig, cmd_unlearn, "unlearn a forget split"),
    ]:
        p = sub.add_parser(name, help=text)
        p.add_argument("--config", default=None, help="YAML file with any of the flags below")
        cfgmod.add_flags(p, cls)
        p.set_defaults(func=func)

    gen = sub.add_parser("generate", help="answer questions")
    _model_flags(gen)
    gen.add_argument("questions", nargs="+")
    gen.set_defaults(func=cmd_generate)

    chat = sub.add_parser("chat", help="interactive session")
    _model_flags(chat)
    chat.set_defaults(func=cmd_chat)

    ev = sub.add_parser("eval", help="the TOFU evaluation protocol (F.Q., M.U., ROUGE-L, ...)")
    _model_flags(ev, max_new_tokens=None)
    ev.add_argument("--name", default="", help="the run's name in tables (default: folder name)")
    ev.add_argument(
        "--reference",
        default="",
        help="retain model folder, or the eval.json of its evaluation: Forget Quality's reference",
    )
    for role, default in asdict(cfgmod.EvalSplits()).items():
        ev.add_argument(
            f"--{role.replace('_', '-')}",
            default=None,
            help=f"{role} split ('' skips it; default {default}, or TOFU's name for --data "
            "locuslab/TOFU)",
        )
    ev.add_argument("--data", default="builtin", help="builtin, a folder of <split>.json, hub id")
    ev.add_argument("--batch-size", type=_number(int, 1), default=8)
    ev.add_argument(
        "--fluency-model",
        default="",
        help="the model that judges whether generated answers are fluent (its log-likelihood of "
        "each answer; loops are caught without it): a folder or hub id, 'none' for repetition "
        "only; default: the base the model was made from (a ULD model's target, an unlearned "
        "model's target, a fine-tuned model's base)",
    )
    ev.add_argument(
        "--mia",
        default="all",
        help="membership attacks on forget vs holdout rows, beside LOSS, Min-K%%, zlib and "
        "Min-K%%++ (which come with every evaluation): all (default), none, or a list of ref "
        "(the model's loss minus a reference model's) and gradnorm (the loss gradient's norm: a "
        "backward per row). all leaves ref out, with a message, where there is no reference; "
        "naming ref makes that an error",
    )
    ev.add_argument(
        "--mia-reference",
        default="",
        help="the reference model of the ref attack: a folder or hub id (default: the base the "
        "model was made from: a ULD model's target, an unlearned model's target, a fine-tuned "
        "model's base)",
    )
    ev.add_argument(
        "--data-kind",
        choices=("", "qa", "text"),
        default="",
        help="qa: TOFU's protocol; text: MUSE's (VerbMem, KnowMem, PrivLeak); default: detected "
        "from --data (builtin-muse, a folder with raw/, a MUSE hub id are text)",
    )
    ev.add_argument(
        "--series",
        default="",
        help="text data: the model's place in a MUSE series, scal:K (it unlearned the K-th of "
        "the growing forget sets) or sust:K (it served requests 1..K); uld report draws them",
    )
    ev.add_argument(
        "--verbmem-tokens",
        type=_number(int, 1),
        default=VERBMEM_TOKENS,
        help=f"text data: VerbMem's continuation length (MUSE: {VERBMEM_TOKENS})",
    )
    ev.add_argument(
        "--knowmem-tokens",
        type=_number(int, 1),
        default=KNOWMEM_TOKENS,
        help=f"text data: KnowMem's answer budget (MUSE: {KNOWMEM_TOKENS})",
    )
    ev.add_argument("--out", default=None, help="folder for eval.json and eval.md")
    ev.add_argument("--overwrite", action="store_true", help=OVERWRITE_HELP)
    ev.set_defaults(func=cmd_eval)

    cal = sub.add_parser(
        "calibrate", help="ULD: choose alpha on held-out rows, without a retain model"
    )
    cal.add_argument("--model", required=True, help="a saved ULD model folder")
    cal.add_argument("--target", default=None, help="its target, if not the one it names")
    cal.add_argument("--forget", default="forget10", help="the forget split it unlearned")
    cal.add_argument(
        "--holdout", default="holdout10", help="rows of the same kind in no training set"
    )
    cal.add_argument(
        "--retain",
        default=None,
        help="instead of held-out rows: the retain rows, for the rule `uld unlearn` uses when "
        "no alpha is given (the largest alpha that keeps retain and general answers and leaves "
        "forget answers fluent)",
    )
    cal.add_argument(
        "--data",
        default="builtin",
        help="builtin, a folder of <split>.json, hub id; or raw text (builtin-muse, a MUSE "
        "folder or hub id) with --retain",
    )
    cal.add_argument("--alphas", type=float, nargs="+", default=None, help="default 0, 0.1, .., 2")
    cal.add_argument("--filter", type=float, default=None, help="default: the model's")
    cal.add_argument("--combine", choices=COMBINES, default=None, help=COMBINE_HELP)
    cal.add_argument(
        "--reference", default=None, help="retain model folder or its eval.json: adds F.Q."
    )
    cal.add_argument(
        "--near",
        type=int,
        default=0,
        help="with --reference: keep the best F.Q. among this many alphas nearest the held-out "
        "choice (as a baseline keeps its best epoch)",
    )
    cal.add_argument("--write", action="store_true", help="save the chosen alpha in the model")
    cal.set_defaults(func=cmd_calibrate)

    rep = sub.add_parser("report", help="merge evaluation folders into one table and plots")
    rep.add_argument("runs", nargs="+", help="folders written by `uld eval --out`")
    rep.add_argument("--out", required=True, help="folder for report.md, summary.json, plots")
    rep.add_argument("--names", default="", help="comma-separated names for the runs")
    rep.add_argument("--relative-to", default="", help="the run whose training time is 1")
    rep.add_argument(
        "--baseline",
        default="",
        help="the run the time-to-quality ratios are to (default: the first NPO+KL run)",
    )
    rep.add_argument("--overwrite", action="store_true", help=OVERWRITE_HELP)
    rep.set_defaults(func=cmd_report)

    ex = sub.add_parser("experts", help="MoE: which experts the forget set engages (UOE)")
    ex.add_argument("--model", required=True, help="an MoE model folder or hub id")
    ex.add_argument("--forget", default="forget10", help="the forget split")
    ex.add_argument("--data", default="builtin")
    ex.add_argument("--layer", type=int, default=-1, help="choose within this layer (-1: all)")
    ex.add_argument("--m", type=int, default=1, help="how many experts to select")
    ex.add_argument("--top", type=int, default=10, help="rows of the ranking table")
    ex.add_argument("--tokens", default="all", choices=["all", "answer"])
    ex.add_argument("--out", default="runs/experts", help="folder for experts.png and .json")
    ex.add_argument("--overwrite", action="store_true", help=OVERWRITE_HELP)
    ex.set_defaults(func=cmd_experts)

    up = sub.add_parser("upcycle", help="a dense Llama-family model -> an MoE (Mixtral)")
    up.add_argument("--model", default=None, help="dense model (default: embedded SmolLM2)")
    up.add_argument("--experts", type=int, default=4)
    up.add_argument("--top-k", type=int, default=2)
    up.add_argument("--noise", type=float, default=0.01, help="relative noise on expert copies")
    up.add_argument("--seed", type=int, default=0)
    up.add_argument("--out", required=True)
    up.add_argument("--overwrite", action="store_true", help=OVERWRITE_HELP)
    up.set_defaults(func=cmd_upcycle)

    cmp = sub.add_parser("compare", help="run, evaluate and tabulate several methods")
    cmp.add_argument("--config", required=True, help="the comparison's YAML file")
    cmp.add_argument("--only", default="", help="comma-separated run names (default: all)")
    cmp.add_argument(
        "--status", action="store_true", help="list each run's state (nothing runs) and exit"
    )
    cmp.add_argument(
        "--report",
        action="store_true",
        help="write <out>/report from the runs evaluated so far (nothing runs) and exit",
    )
    cmp.set_defaults(func=cmd_compare)

    demo = sub.add_parser("demo", help="the main job on the embedded default model")
    demo.add_argument("--workdir", default="runs/demo")
    demo.add_argument("--fresh", action="store_true", help="retrain models even if present")
    demo.add_argument(
        "--model", default=None, help="the base to fine-tune (default: the embedded SmolLM2)"
    )
    demo.set_defaults(func=cmd_demo)

    srv = sub.add_parser("serve", help="an OpenAI-compatible server for a model (docs/serve.md)")
    srv.add_argument("--model", default=None, help="model folder (plain or ULD) or hub id")
    srv.add_argument("--target", default=None, help="ULD: load the adapter on this target")
    srv.add_argument("--alpha", type=_number(float, 0, MAX_ALPHA), default=None)
    srv.add_argument("--filter", type=_number(float, None, 1, above=0), default=None)
    srv.add_argument("--combine", choices=COMBINES, default=None, help=COMBINE_HELP)
    srv.add_argument("--device-map", choices=DEVICE_MAPS, default=None, help=DEVICE_MAP_HELP)
    srv.add_argument("--name", default=None, help="the model name clients use (default: --model)")
    srv.add_argument("--host", default="127.0.0.1", help="address to bind (default 127.0.0.1)")
    srv.add_argument("--port", type=_number(int, 0, 65535), default=8000)
    srv.add_argument("--api-key", default=None, help="require Authorization: Bearer API_KEY")
    srv.add_argument(
        "--max-tokens-cap", type=_number(int, 1), default=1024, help="most max_tokens per request"
    )
    srv.add_argument(
        "--max-batch", type=_number(int, 1), default=32, help="most requests decoded together"
    )
    srv.set_defaults(func=cmd_serve)

    lme = sub.add_parser("lm-eval", help="lm-evaluation-harness tasks on a model (docs/serve.md)")
    lme.add_argument("--model", default=None, help="model folder (plain or ULD) or hub id")
    lme.add_argument("--target", default=None, help="ULD: load the adapter on this target")
    lme.add_argument("--alpha", type=_number(float, 0, MAX_ALPHA), default=None)
    lme.add_argument("--filter", type=_number(float, None, 1, above=0), default=None)
    lme.add_argument("--combine", choices=COMBINES, default=None, help=COMBINE_HELP)
    lme.add_argument("--tasks", required=True, help="lm-eval task names, comma-separated")
    lme.add_argument("--out", required=True, help="folder for results.json, results.md, samples")
    lme.add_argument(
        "--limit",
        type=_number(float, above=0),
        default=None,
        help="at most N documents per task (below 1: that share of them)",
    )
    lme.add_argument("--num-fewshot", type=_number(int, 0), default=None)
    lme.add_argument("--batch-size", type=_number(int, 1), default=1)
    lme.add_argument("--include-path", default=None, help="a folder of your own task YAML files")
    lme.add_argument("--apply-chat-template", action="store_true")
    lme.add_argument("--seed", type=int, default=0)
    lme.add_argument("--overwrite", action="store_true", help=OVERWRITE_HELP)
    lme.set_defaults(func=cmd_lm_eval)
    return top


def main(argv: list[str] | None = None) -> int:
    args = parser().parse_args(argv)
    if not dist.is_main():  # several processes (accelerate launch): the main one reports
        sys.stdout = open(os.devnull, "w")  # noqa: SIM115 (for the life of the process)

    try:
        with device_map(getattr(args, "device_map", None)):
            args.func(args)
    except (ValueError, DataError, ModelLoadError, UnsupportedModelError) as e:
        print(f"uld: error: {e}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""lm-evaluation-harness for uld models (the `eval` extra: pip install 'uld[eval]').

    uld lm-eval --model runs/uld --tasks wmdp,mmlu --out runs/uld-lm-eval   (docs/serve.md)

`ULDLM` is lm-eval's `HFLM` whose model is any uld model folder (`uld.logit_diff.load_any`:
plain, ULD or Offset): log-likelihoods come from the model's combined logits (a ULD model's
`ULDModel.forward`, target - alpha * assistant on the plausible set), and `generate_until`
decodes with `uld.logit_diff.decode`, as `uld generate` does. Everything else (tokenization,
batching, few-shot contexts, metrics) is lm-eval's own. From Python:

    import lm_eval
    from uld.harness import ULDLM          # also registers the model name "uld" with lm-eval
    lm_eval.simple_evaluate(model=ULDLM("runs/uld", alpha=0.5), tasks=["wmdp_bio"])
    lm_eval.simple_evaluate(model="uld", model_args="pretrained=runs/uld", tasks=["mmlu"])

lm-eval is imported only when the class is first asked for, so `uld` starts without it.
"""

from __future__ import annotations

import json
from pathlib import Path

from uld.extras import require
from uld.logit_diff import ULDModel, decode, load_any
from uld.outdir import check_out, locked, output_dir, write_text

_CLASS: list[type] = []  # ULDLM, once built


def uld_lm_class() -> type:
    """The `ULDLM` class (built, and registered with lm-eval as "uld", on the first call)."""
    if _CLASS:
        return _CLASS[0]
    require("lm_eval", "eval", "uld lm-eval")
    from lm_eval.api.registry import register_model
    from lm_eval.models.huggingface import HFLM

    class ULDLM(HFLM):
        """lm-eval's HFLM on a uld model. `pretrained`: a model folder (plain, ULD or Offset),
        a hub id, None for the embedded default, or an already loaded model (plain or
        `ULDModel`, with `tokenizer`). `alpha`, `filter`, `target`, `combine`: as for `uld
        generate`. Other keywords (batch_size, max_length, add_bos_token, ...) are HFLM's;
        those about loading weights (dtype, device, parallelize, peft, ...) do not apply."""

        def __init__(
            self,
            pretrained=None,
            alpha: float | None = None,
            filter: float | None = None,
            target: str | None = None,
            combine: str | None = None,
            tokenizer=None,
            batch_size: int | str = 1,
            **kwargs,
        ):
            if pretrained is None or isinstance(pretrained, str):
                model, tokenizer = load_any(pretrained or None, alpha, filter, target, combine)
            elif tokenizer is None:
                raise ValueError("a loaded model needs its tokenizer: ULDLM(model, tokenizer=tok)")
            else:
                model = pretrained
            # HFLM sets itself up on the transformers model (the target's, for a ULD model);
            # the model it then calls is the uld model.
            net = model.target if isinstance(model, ULDModel) else model
            kwargs.pop("device", None)  # the model stays where it was loaded
            super().__init__(
                pretrained=net,
                tokenizer=tokenizer,
                backend="causal",
                batch_size=batch_size,
                **kwargs,
            )
            self._model = model
            self.pretrained = pretrained if isinstance(pretrained, str) else None
            self.uld = model_card(model)

        def _model_generate(self, context, max_length: int, stop: list[str], **kwargs):
            """`decode` (greedy unless the task samples) until `max_length` tokens in all,
            each row stopping at EOS or once one of `stop` appears in its new text."""
            from lm_eval.models.utils_hf import stop_sequences_criteria

            mask = kwargs.pop("attention_mask", None)
            kwargs.pop("use_cache", None)
            sampling = {
                key: kwargs.pop(key)
                for key in ("do_sample", "temperature", "top_p", "top_k", "repetition_penalty")
                if key in kwargs
            }
            if kwargs:
                raise ValueError(
                    f"generation settings uld's decoding does not take: {', '.join(sorted(kwargs))}"
                )
            if not sampling.get("do_sample"):
                sampling = {k: sampling[k] for k in ("repetition_penalty",) if k in sampling}
            else:
                sampling["top_k"] = int(sampling.get("top_k") or 0)
            return decode(
                self.model,
                context,
                mask,
                max_new_tokens=max_length - context.shape[1],
                pad_token_id=self.tokenizer.pad_token_id,
                stopping_criteria=stop_sequences_criteria(
                    self.tokenizer, stop, context.shape[1], context.shape[0]
                ),
                **sampling,
            )

        def get_model_info(self) -> dict:
            """What lm-eval records about the model (no hub look-up: uld models are folders)."""
            return {
                "model_num_parameters": sum(p.numel() for p in self.model.parameters()),
                "model_dtype": str(next(self.model.parameters()).dtype),
                "uld": self.uld,
            }

    register_model("uld")(ULDLM)
    _CLASS.append(ULDLM)
    return ULDLM


def __getattr__(name: str):
    if name == "ULDLM":  # `from uld.harness import ULDLM`
        return uld_lm_class()
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def model_card(model) -> dict:
    """The uld settings lm-eval's results record: mode, alpha, filter, combine."""
    if not isinstance(model, ULDModel):
        return {"mode": "plain"}
    card = {"mode": model.mode, "alpha": model.alpha}
    if model.mode == "uld":
        card.update(filter=model.filter, combine=model.combine)
    return card


def lm_eval_to(
    model: str | None,
    tasks: list[str],
    out: str,
    limit: float | None = None,
    num_fewshot: int | None = None,
    batch_size: int = 1,
    include_path: str | None = None,
    alpha: float | None = None,
    filter: float | None = None,
    target: str | None = None,
    combine: str | None = None,
    apply_chat_template: bool = False,
    seed: int = 0,
    overwrite: bool = False,
) -> dict:
    """Run lm-eval's `tasks` on the model folder `model` and write to the folder `out`:
    results.json (lm-eval's results, its configs and the uld settings), results.md (its table)
    and samples_TASK.jsonl (each document's requests and answers). Returns the results.

    `limit`: at most this many documents per task (a fraction below 1: that share of them).
    `include_path`: a folder of task YAML files of your own. Names and the output are checked
    before the model is loaded; a task's data set is fetched by lm-eval (the hub) unless the
    task reads local files."""
    lm_eval = require("lm_eval", "eval", "uld lm-eval")
    from lm_eval.tasks import TaskManager
    from lm_eval.utils import handle_non_serializable, make_table

    if not tasks:
        raise ValueError("--tasks is empty: name at least one lm-eval task (e.g. wmdp_bio)")
    if limit is not None and limit <= 0:
        raise ValueError(f"--limit {limit} must be > 0")
    if batch_size < 1:
        raise ValueError(f"--batch-size {batch_size} must be >= 1")
    if include_path is not None and not Path(include_path).is_dir():
        raise ValueError(f"--include-path {include_path} is not a folder (of task YAML files)")
    check_out(out, overwrite, inputs=[model, include_path])
    manager = TaskManager(include_path=include_path)
    unknown = [t for t in tasks if not manager.match_tasks([t])]
    if unknown:
        raise ValueError(
            f"lm-eval knows no task {', '.join(unknown)}: list them with `lm-eval ls tasks`, "
            "or write a task YAML and pass its folder as --include-path"
        )
    with locked(out):
        lm = uld_lm_class()(model, alpha, filter, target, combine, batch_size=batch_size)
        results = lm_eval.simple_evaluate(
            model=lm,
            tasks=tasks,
            num_fewshot=num_fewshot,
            limit=limit,
            task_manager=manager,
            log_samples=True,
            apply_chat_template=apply_chat_template,
            random_seed=seed,
            numpy_random_seed=seed,
            torch_random_seed=seed,
            fewshot_random_seed=seed,
        )
        samples = results.pop("samples", {})
        results["config"]["model"] = model or "default"
        with output_dir(out, "uld lm-eval", overwrite) as tmp:
            dump = lambda x: json.dumps(x, default=handle_non_serializable, ensure_ascii=False)  # noqa: E731
            write_text(json.dumps(json.loads(dump(results)), indent=1) + "\n", tmp / "results.json")
            write_text(make_table(results) + "\n", tmp / "results.md")
            for task, rows in samples.items():
                text = "".join(dump(row) + "\n" for row in rows)
                write_text(text, tmp / f"samples_{task}.jsonl")
    return results

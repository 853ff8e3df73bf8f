"""Fine-tune a base model on a TOFU-schema split or on raw text: how the target and retain
models are made.

TOFU recipe: answer-only NLL, a few epochs, AdamW with linear warm-up and decay. Full fine-tuning
of the decoder layers by default, with the (tied) embeddings frozen: on a small model they are a
fifth of the weights and their gradient and optimizer state cost more than they teach. `lora=True`
trains LoRA adapters on every projection instead and merges them back, so both ways save an
ordinary model folder.

On raw text (MUSE schema, `uld.data.text`) the loss is the next-token loss on every token of
each document, cut into chunks of at most `max_length` tokens (`uld.data.chunks`): `--split
full` (forget + retain1 + retain2) makes MUSE's target, `--split retain` its retrained model.
"""

from __future__ import annotations

from pathlib import Path

from transformers import set_seed

from uld import dist
from uld.assistant import lora_config
from uld.data.chunks import MAX_LENGTH, TextDataset
from uld.data.format import Collator, QADataset
from uld.data.load import load_split, local_paths
from uld.data.text import is_text_data, load_muse, texts
from uld.losses import finetune_objective
from uld.models import load_model, resolve, save_model, source_fingerprint
from uld.outdir import check_out, locked
from uld.trainer import ZERO3_LORA, check_precision, remove_checkpoints, train, whole_weights


def finetune(
    model: str | None,
    split: str,
    out: str | Path,
    data: str = "builtin",
    epochs: float = 5,
    lr: float = 1e-4,
    batch_size: int = 8,
    lora: bool = False,
    lora_rank: int = 32,
    seed: int = 0,
    max_steps: int = -1,
    overwrite: bool = False,
    precision: str = "auto",
    gradient_checkpointing: bool = False,
    data_kind: str = "",
    max_length: int = MAX_LENGTH,
) -> Path:
    """Fine-tune `model` on `split` and save the result to `out` (an HF folder + uld_card.json).
    `out` is checked first (`uld.outdir.check_out`: never an input, never a folder with files
    uld did not write, an earlier result only with `overwrite`) and locked while the run lasts;
    an interrupted run of the same settings resumes from its checkpoint. `data_kind` "text" (or
    detected, `uld.data.text.is_text_data`) trains on raw documents in chunks of `max_length`."""
    text = is_text_data(data, data_kind)
    rows = texts(load_muse(data), split) if text else load_split(split, data)
    check_precision(precision)
    if lora:
        dist.refuse_zero3({"--lora": ZERO3_LORA})
    check_out(out, overwrite, inputs=[model, *local_paths(data, split)])
    source = resolve(model)
    with locked(out):
        set_seed(seed)  # LoRA initialisation is random
        net, tokenizer = load_model(source)
        if lora:
            from peft import get_peft_model

            config = lora_config(net, None, lora_rank, lora_rank, 0.0, experts=True)
            net = get_peft_model(net, config)
        else:
            net.get_input_embeddings().weight.requires_grad_(False)
            net.get_output_embeddings().weight.requires_grad_(False)
        if text:
            dataset = TextDataset(rows, tokenizer, max_length)
            what = f"{len(rows)} documents in {len(dataset)} chunks of <= {max_length} tokens"
        else:
            dataset = QADataset(rows, tokenizer)
            what = f"{len(rows)} rows"
        n_tokens = sum(len(x["input_ids"]) for x in dataset.items)
        print(f"[uld] fine-tuning on {split}: {what}, {n_tokens} tokens/epoch, {epochs} epochs")
        settings = {
            "made_by": "uld finetune",
            "model": source_fingerprint(source),
            "data": f"{data}:{split}",
            "rows": dataset.fingerprint(),
            "epochs": epochs,
            "lr": lr,
            "batch_size": batch_size,
            "lora": lora_rank if lora else False,
            "seed": seed,
            "max_steps": max_steps,
            **({"max_length": max_length} if text else {}),
        }
        if precision != "auto":  # (recorded only when asked for: earlier runs resume as before)
            settings["precision"] = precision
        trainer = train(
            net,
            dataset,
            Collator(tokenizer.pad_token_id),
            out,
            finetune_objective,
            epochs=epochs,
            lr=lr,
            batch_size=batch_size,
            seed=seed,
            max_steps=max_steps,
            settings=settings,
            overwrite=overwrite,
            precision=precision,
            gradient_checkpointing=gradient_checkpointing,
        )
        weights = whole_weights(trainer)  # under ZeRO-3, gathered from every process's shards
        if not dist.is_main():  # the main process saves
            return Path(out)
        seconds = trainer.stopwatch.seconds()  # all resumes together
        if lora:
            net = net.merge_and_unload()
        card = {
            "made_by": "uld finetune",
            "base_model": str(model or "default"),
            "data": str(data),
            "split": str(split),
            "rows": len(rows),
            **(
                {"data_kind": "text", "chunks": len(dataset), "max_length": max_length}
                if text
                else {}
            ),
            "epochs": epochs,
            "lr": lr,
            "batch_size": batch_size,
            "mode": f"lora r={lora_rank} merged" if lora else "full (embeddings frozen)",
            "seed": seed,
            "train_seconds": round(seconds, 1),
        }
        save_model(net, tokenizer, out, card, overwrite=overwrite, state_dict=weights)
        remove_checkpoints(out)
    return Path(out)

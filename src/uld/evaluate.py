"""Run models over evaluation rows: batched greedy answers and ROUGE-L recall.

Works on any model-like object with the forward of an HF causal LM (a plain model or a
`ULDModel`): both decode through `uld.logit_diff.decode`, left-padded, with a KV cache, so their
costs compare like for like.
"""

from __future__ import annotations

import torch
from tqdm.auto import tqdm

from uld.data.format import pad, prompt_ids
from uld.logit_diff import decode
from uld.metrics import rouge_l_recall


@torch.no_grad()
def generate_answers(
    model,
    tokenizer,
    questions: list[str],
    batch_size: int = 8,
    max_new_tokens: int = 48,
    progress: bool = True,
    **gen_kwargs,
) -> list[str]:
    """Answers to `questions` (greedy unless gen_kwargs say otherwise), in order."""
    device = next(iter(model.parameters())).device
    answers: list[str] = []
    # Longest prompts first keeps padding low; results are put back in order.
    order = sorted(range(len(questions)), key=lambda i: -len(questions[i]))
    out: dict[int, str] = {}
    bar = tqdm(total=len(questions), desc="generating", disable=not progress, leave=False)
    for s in range(0, len(order), batch_size):
        idx = order[s : s + batch_size]
        batch = pad([{"input_ids": prompt_ids(tokenizer, questions[i])} for i in idx],
                    tokenizer.pad_token_id, side="left")
        seqs = decode(
            model,
            batch["input_ids"].to(device),
            batch["attention_mask"].to(device),
            max_new_tokens=max_new_tokens,
            pad_token_id=tokenizer.pad_token_id,
            **gen_kwargs,
        )
        new = seqs[:, batch["input_ids"].shape[1] :]
        for i, text in zip(idx, tokenizer.batch_decode(new, skip_special_tokens=True), strict=True):
            out[i] = text.strip()
        bar.update(len(idx))
    bar.close()
    answers = [out[i] for i in range(len(questions))]
    return answers


def rouge_eval(model, tokenizer, rows: list[dict], batch_size: int = 8, progress: bool = True):
    """(mean ROUGE-L recall, per-item list of {question, answer, generated, rouge_l})."""
    generated = generate_answers(
        model, tokenizer, [r["question"] for r in rows], batch_size, progress=progress
    )
    scores = rouge_l_recall(generated, [r["answer"] for r in rows])
    items = [
        {"question": r["question"], "answer": r["answer"], "generated": g, "rouge_l": s}
        for r, g, s in zip(rows, generated, scores, strict=True)
    ]
    return sum(scores) / len(scores), items

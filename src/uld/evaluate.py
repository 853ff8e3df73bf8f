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
    # Longest prompts first keeps padding low; results are put back in order.
    order = sorted(range(len(questions)), key=lambda i: -len(questions[i]))
    out: dict[int, str] = {}
    bar = tqdm(total=len(questions), desc="generating", disable=not progress, leave=False)
    for s in range(0, len(order), batch_size):
        idx = order[s : s + batch_size]
        batch = pad(
            [{"input_ids": prompt_ids(tokenizer, questions[i])} for i in idx],
            tokenizer.pad_token_id,
            side="left",
        )
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
    return [out[i] for i in range(len(questions))]


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


@torch.no_grad()
def answer_probs(
    model, tokenizer, questions: list[str], answers: list[str], batch_size: int = 16
) -> torch.Tensor:
    """Length-normalised P(answer | question)^(1/|a|) per pair (TOFU's probability). -> [N]."""
    from uld.data.format import encode_qa
    from uld.logit_diff import ULDModel
    from uld.losses import answer_logits
    from uld.metrics import normalised_prob

    device = next(iter(model.parameters())).device
    out = []
    for s in range(0, len(questions), batch_size):
        items = [
            encode_qa(tokenizer, q, a)
            for q, a in zip(questions[s : s + batch_size], answers[s : s + batch_size], strict=True)
        ]
        batch = {k: v.to(device) for k, v in pad(items, tokenizer.pad_token_id).items()}
        targets = batch["labels"][:, 1:]
        keep = targets != -100
        if isinstance(model, ULDModel):
            pos = torch.zeros_like(batch["labels"], dtype=torch.bool)
            pos[:, :-1] = keep  # position t predicts token t + 1
            logits = model(batch["input_ids"], batch["attention_mask"], keep=pos).logits
            gold = targets[keep]
        else:
            logits, gold = answer_logits(model, batch)
        logp = torch.log_softmax(logits.float(), -1).gather(-1, gold[:, None]).squeeze(-1)
        row = torch.arange(keep.shape[0], device=device)[:, None].expand_as(keep)[keep]
        sums = torch.zeros(keep.shape[0], device=device).index_add_(0, row, logp)
        out.append(normalised_prob(sums.cpu(), keep.sum(-1).cpu()))
    return torch.cat(out)


def truth_ratios(model, tokenizer, rows: list[dict], paraphrased: bool = True) -> torch.Tensor:
    """TOFU truth ratio per row: geometric mean of P̄(perturbed) over P̄(paraphrased answer)
    (the original answer when `paraphrased` is False, as TOFU does on real authors / world
    facts). -> R [N]."""
    from uld.metrics import truth_ratio

    k = min(len(r["perturbed_answer"]) for r in rows)
    true = [r["paraphrased_answer"] if paraphrased else r["answer"] for r in rows]
    # TOFU scores both the paraphrased and the perturbed answers after the original question
    p_true = answer_probs(model, tokenizer, [r["question"] for r in rows], true)
    wrong_q = [r["question"] for r in rows for _ in range(k)]
    wrong_a = [a for r in rows for a in r["perturbed_answer"][:k]]
    p_wrong = answer_probs(model, tokenizer, wrong_q, wrong_a).view(len(rows), k)
    return truth_ratio(p_wrong, p_true)

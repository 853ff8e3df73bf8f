"""Raw-text data in MUSE's schema (Shi et al. 2024, "MUSE: Machine Unlearning Six-Way Evaluation
for Language Models"; data `muse-bench/MUSE-News`, `muse-bench/MUSE-Books`).

MUSE's hub datasets have one config per use, each with named splits:

- `raw`: `forget`, `retain1`, `retain2`, `holdout` (field `text`): the corpus. The target was
  trained on forget + retain; `holdout` was never seen. `retain1` may be used while unlearning,
  `retain2` is for evaluation.
- `verbmem`: `forget` (fields `prompt`, `gt`): excerpts of forget documents, a prompt and its true
  continuation (C1, verbatim memorisation).
- `knowmem`: `forget_qa`, `retain_qa` (fields `question`, `answer`) and their few-shot
  demonstrations `forget_qa_icl`, `retain_qa_icl` (C2 knowledge memorisation, C4 utility).
- `privleak`: `forget`, `retain`, `holdout` (field `text`): membership inference (C3).
- `scal`: `forget_1` ... `forget_4` (field `text`), nested: each contains the one before (C5).
- `sust`: `forget_1` ... `forget_4` (field `text`), disjoint sequential requests (C6).

`MuseData` holds one corpus in memory in that shape, whatever its source.
"""

from __future__ import annotations

from dataclasses import dataclass, field

RAW_SPLITS = ("forget", "retain1", "retain2", "holdout")
KNOWMEM_SPLITS = ("forget_qa", "retain_qa", "forget_qa_icl", "retain_qa_icl")
PRIVLEAK_SPLITS = ("forget", "retain", "holdout")


@dataclass
class MuseData:
    """One raw-text corpus with what MUSE's six criteria need.

    Texts are plain strings; `verbmem` rows are `{"prompt": str, "gt": str}`; QA rows are
    `{"question": str, "answer": str}`. `scal` and `sust` are lists of forget sets (lists of
    texts), empty when the source has none (MUSE-Books has no `sust`).
    """

    forget: list[str]
    retain1: list[str]
    retain2: list[str]
    holdout: list[str]
    verbmem: list[dict]
    forget_qa: list[dict]
    retain_qa: list[dict]
    forget_qa_icl: list[dict] = field(default_factory=list)
    retain_qa_icl: list[dict] = field(default_factory=list)
    privleak_forget: list[str] = field(default_factory=list)
    privleak_retain: list[str] = field(default_factory=list)
    privleak_holdout: list[str] = field(default_factory=list)
    scal: list[list[str]] = field(default_factory=list)
    sust: list[list[str]] = field(default_factory=list)
    source: str = ""

"""Analytic tests for uld.metrics: every expected number is worked out by hand in a comment."""

import math
import zlib

import numpy as np
import pytest
import torch
from scipy.stats import ks_2samp

from uld.metrics import (
    answer_logprobs,
    char_repetition,
    extraction_strength,
    extraction_strength_from_hits,
    forget_quality,
    forget_truth_score,
    gradient_norm,
    is_degenerate,
    loss_score,
    mean_logprob,
    mia_auc,
    min_k_plus_plus,
    min_k_prob,
    model_utility,
    normalised_prob,
    reference_score,
    relative_answer_prob,
    repetition,
    retain_truth_score,
    rouge_l_recall,
    to_result,
    token_logprobs,
    truth_ratio,
    truth_ratio_gap,
    vocab_logp_moments,
    zlib_score,
)

# 1 x 3 x 2 logits. Position 0: [0, 0] -> p = [1/2, 1/2]. Position 1: [ln 3, 0] -> p = [3/4, 1/4].
# Position 2 predicts past the end and is never scored.
LOGITS = torch.tensor([[[0.0, 0.0], [math.log(3.0), 0.0], [5.0, -5.0]]])


def test_answer_logprobs_skips_masked_label():
    # labels[1] is masked, so column 0 (which would add log 1/2) is skipped;
    # column 1 scores labels[2] = 0 under position 1: log 3/4.
    labels = torch.tensor([[-100, -100, 0]])
    sum_logp, n = answer_logprobs(LOGITS, labels)
    assert sum_logp.tolist() == pytest.approx([math.log(0.75)])
    assert n.tolist() == [1]
    logp, mask = token_logprobs(LOGITS, labels)
    assert logp[0].tolist() == pytest.approx([0.0, math.log(0.75)])
    assert mask.tolist() == [[False, True]]


def test_answer_logprobs_unmasked_and_float32():
    # log 1/2 (label 1 at position 0) + log 3/4 (label 0 at position 1) = log 3/8, 2 tokens.
    labels = torch.tensor([[-100, 1, 0]])
    sum_logp, n = answer_logprobs(LOGITS.to(torch.bfloat16), labels)
    assert sum_logp.dtype == torch.float32
    assert sum_logp.item() == pytest.approx(math.log(3 / 8), abs=1e-2)  # bf16 rounds ln 3
    assert n.item() == 2
    # (3/8)^(1/2) = 0.61237...
    assert normalised_prob(*answer_logprobs(LOGITS, labels)).item() == pytest.approx(
        math.sqrt(3 / 8)
    )


def test_likelihood_shape_errors():
    with pytest.raises(ValueError, match="labels"):
        answer_logprobs(LOGITS, torch.tensor([[0, 1]]))
    with pytest.raises(ValueError, match="T >= 2"):
        answer_logprobs(LOGITS[:, :1], torch.tensor([[0]]))
    with pytest.raises(ValueError, match="no answer tokens"):
        normalised_prob(torch.tensor([0.0, -1.0]), torch.tensor([0, 2]))
    with pytest.raises(ValueError, match="differ"):
        normalised_prob(torch.tensor([0.0]), torch.tensor([1, 2]))


def test_normalised_prob():
    # exp(2 ln 0.5 / 2) = 0.5 ; exp(3 ln 0.2 / 3) = 0.2
    p = normalised_prob(torch.tensor([2 * math.log(0.5), 3 * math.log(0.2)]), torch.tensor([2, 3]))
    assert p.tolist() == pytest.approx([0.5, 0.2])


def test_rouge_l_recall():
    # LCS("the cat sat on the mat", "the cat on mat") = "the cat on mat", 4 of 6 reference words.
    # Porter stemming: "cats" -> "cat", "running" -> "run", so the second pair matches fully.
    # Nothing in common -> 0.
    got = rouge_l_recall(
        ["the cat on mat", "cat run", "dog"], ["the cat sat on the mat", "cats running", "a cat"]
    )
    assert got == pytest.approx([4 / 6, 1.0, 0.0])
    with pytest.raises(ValueError, match="references"):
        rouge_l_recall(["a"], [])


def test_truth_ratio_and_scores():
    # item 0: sqrt(0.1 * 0.4) = 0.2, / 0.5 -> R = 0.4
    # item 1: sqrt(0.2 * 0.8) = 0.4, / 0.2 -> R = 2.0
    R = truth_ratio(torch.tensor([[0.1, 0.4], [0.2, 0.8]]), torch.tensor([0.5, 0.2]))
    assert R.tolist() == pytest.approx([0.4, 2.0])
    # forget: min(0.4, 2.5) = 0.4, min(2, 0.5) = 0.5 -> 0.45 ; item 0 alone -> 0.4
    assert forget_truth_score(R) == pytest.approx(0.45)
    assert forget_truth_score(R[:1]) == pytest.approx(0.4)
    # retain: max(0, 1 - 0.4) = 0.6, max(0, 1 - 2) = 0 -> 0.3 ; item 0 alone -> 0.6
    assert retain_truth_score(R) == pytest.approx(0.3)
    assert retain_truth_score(R[:1]) == pytest.approx(0.6)


def test_truth_ratio_errors():
    with pytest.raises(ValueError, match="items"):
        truth_ratio(torch.tensor([[0.1, 0.4]]), torch.tensor([0.5, 0.2]))
    with pytest.raises(ValueError, match=">= 0"):
        truth_ratio(torch.tensor([[-0.1, 0.4]]), torch.tensor([0.5]))
    with pytest.raises(ValueError, match="2-D"):
        truth_ratio(torch.tensor([0.1, 0.4]), torch.tensor([0.5, 0.5]))
    with pytest.raises(ValueError, match="0/0"):
        truth_ratio(torch.tensor([[0.0, 0.4]]), torch.tensor([0.0]))
    with pytest.raises(ValueError, match="non-empty"):
        forget_truth_score(torch.tensor([]))


def test_relative_answer_prob():
    # 0.6 / (0.6 + 0.1 + 0.3) = 0.6 ; 0.2 / (0.2 + 0.4 + 0.4) = 0.2 ; mean 0.4
    p = relative_answer_prob(torch.tensor([0.6, 0.2]), torch.tensor([[0.1, 0.3], [0.4, 0.4]]))
    assert p == pytest.approx(0.4)
    # all options at probability 0 count as 0: (0.5 + 0) / 2 = 0.25
    p = relative_answer_prob(torch.tensor([0.5, 0.0]), torch.tensor([[0.5], [0.0]]))
    assert p == pytest.approx(0.25)


def test_model_utility():
    # 3 / (1/1 + 1/0.5 + 1/0.25) = 3 / (1 + 2 + 4) = 3/7
    assert model_utility([1.0, 0.5, 0.25]) == pytest.approx(3 / 7)
    assert model_utility([0.9, 0.0, 0.5]) == 0.0
    with pytest.raises(ValueError, match=">= 0"):
        model_utility([0.5, -0.1])
    with pytest.raises(ValueError, match="non-empty"):
        model_utility([])


def test_forget_quality_exact_ks():
    assert forget_quality([0.3, 0.9, 1.5], [0.3, 0.9, 1.5]) == pytest.approx(1.0)
    # n = m = 3, fully separated: D = 1. Under H0 each of C(6,3) = 20 splits of the pooled ranks
    # is equally likely and only 2 (all of one sample below all of the other) reach D = 1,
    # so the exact two-sided p = 2/20 = 0.1. For n = m = 4: 2 / C(8,4) = 2/70.
    assert forget_quality(torch.tensor([0.1, 0.2, 0.3]), [1.0, 2.0, 3.0]) == pytest.approx(0.1)
    assert forget_quality(np.array([1, 2, 3, 4.0]), [5, 6, 7, 8.0]) == pytest.approx(2 / 70)


def test_forget_quality_uses_raw_ratios():
    # TOFU runs the KS test on raw per-item ratios; 1/R reverses both samples' order alike, so
    # R and 1/R give one p-value ...
    a = np.array([0.3, 0.9, 1.5, 2.0])
    b = np.array([0.5, 0.7, 1.1, 3.0, 4.0])
    fq = forget_quality(a, b)
    assert fq == pytest.approx(forget_quality(1 / a, 1 / b))
    assert fq == pytest.approx(ks_2samp(a, b).pvalue)
    # ... while folding with min(R, 1/R) would not: [0.5, 0.25, 0.2] vs [2, 4, 5] fold to equal
    # samples (p = 1) yet are fully separated (p = 0.1, as above).
    assert forget_quality([0.5, 0.25, 0.2], [2.0, 4.0, 5.0]) == pytest.approx(0.1)
    with pytest.raises(ValueError, match="NaN"):
        forget_quality([0.5, float("nan")], [1.0])


def test_truth_ratio_gap_pairs_rows():
    # rows: |log 2 - log 1| = log 2, |log 0.5 - log 2| = 2 log 2, 0 -> mean = log 2
    assert truth_ratio_gap([2.0, 0.5, 3.0], [1.0, 2.0, 3.0]) == pytest.approx(math.log(2))
    # the same two sets in another pairing: F.Q. cannot tell them apart, the gap can
    a, b = [0.5, 1.0, 2.0], [2.0, 1.0, 0.5]
    assert forget_quality(a, b) == pytest.approx(1.0)
    assert truth_ratio_gap(a, b) == pytest.approx(4 * math.log(2) / 3)
    assert truth_ratio_gap(a, a) == 0.0
    with pytest.raises(ValueError, match="row by row"):
        truth_ratio_gap([1.0, 2.0], [1.0])
    with pytest.raises(ValueError, match="> 0"):
        truth_ratio_gap([0.0, 2.0], [1.0, 1.0])


def test_min_k_prob():
    logps = torch.tensor([[-1.0, -4.0, -2.0, -3.0, -0.5], [-1.0, -9.0, -2.0, 0.0, 0.0]])
    mask = torch.tensor([[True] * 5, [True, False, True, False, False]])
    # row 0: n = 5, floor(0.4 * 5) = 2 lowest: -4, -3 -> -3.5
    # row 1: the masked -9 is ignored; n = 2, floor(0.8) = 0 -> at least 1 token: -2
    assert min_k_prob(logps, mask, k=0.4).tolist() == pytest.approx([-3.5, -2.0])
    # k = 0.5: floor(2.5) = 2 tokens, not 3 -> row 0 still -3.5 (3 would give -3)
    assert min_k_prob(logps, mask, k=0.5)[0].item() == pytest.approx(-3.5)
    # k = 1 is the mean log-prob: row 0 -10.5 / 5 = -2.1, row 1 -3 / 2 = -1.5
    assert min_k_prob(logps, mask, k=1.0).tolist() == pytest.approx([-2.1, -1.5])
    with pytest.raises(ValueError, match="fraction"):
        min_k_prob(logps, mask, k=0.0)
    with pytest.raises(ValueError, match="no tokens"):
        min_k_prob(logps, torch.zeros_like(mask))
    with pytest.raises(ValueError, match="equal shape"):
        min_k_prob(logps, mask[:, :3])


def test_loss_score():
    logps = torch.tensor([[-1.0, -3.0, 0.0], [-1.0, -9.0, -2.0]])
    mask = torch.tensor([[True, True, False], [True, False, True]])
    # row 0: (1 + 3) / 2 = 2 ; row 1: (1 + 2) / 2 = 1.5 (the masked -9 is ignored)
    assert loss_score(logps, mask).tolist() == pytest.approx([2.0, 1.5])


def test_zlib_score():
    # loss over the zlib-compressed length in bytes: 12 bytes of one letter compress far better
    # than 12 bytes of varied text, so the same loss counts for more on the repetitive text
    texts = ["aaaaaaaaaaaa", "Paris, 1962."]
    n = [len(zlib.compress(t.encode("utf-8"))) for t in texts]
    assert n[0] < n[1]
    assert zlib_score([2.0, 3.0], texts).tolist() == pytest.approx([2.0 / n[0], 3.0 / n[1]])
    with pytest.raises(ValueError, match="2 losses but 1 texts"):
        zlib_score([2.0, 3.0], texts[:1])


def test_min_k_plus_plus():
    # p = [1/2, 1/4, 1/8, 1/8] = 2^-[1, 2, 3, 3]: in units of ln 2, mu = -(0.5*1 + 0.25*2 +
    # 0.25*3) = -1.75, E[(log p)^2] = 0.5*1 + 0.25*4 + 0.25*9 = 3.75, so sigma^2 = 3.75 - 1.75^2
    # = 0.6875 (ln 2)^2. A uniform p has sigma 0, floored at sqrt(1e-6) = 1e-3.
    ln2, s = math.log(2), math.sqrt(0.6875)
    logp = torch.log(torch.tensor([[0.5, 0.25, 0.125, 0.125], [0.25, 0.25, 0.25, 0.25]]))
    mu, sigma = vocab_logp_moments(logp)
    assert mu.tolist() == pytest.approx([-1.75 * ln2, -2 * ln2])
    assert sigma.tolist() == pytest.approx([s * ln2, 1e-3])
    # three tokens under the first distribution, of 1, 3 and 2 bits: z = (1.75 - bits) / s
    # = 0.75 / s, -1.25 / s, -0.25 / s = 0.904534, -1.507557, -0.301511
    token_logps = torch.tensor([[-1.0, -3.0, -2.0, 0.0]]) * ln2
    mask = torch.tensor([[True, True, True, False]])
    mus, sigmas = torch.full((1, 4), -1.75 * ln2), torch.full((1, 4), s * ln2)
    # k 0.4: max(1, floor(1.2)) = 1 lowest -> -1.507557; k 1: the mean, -0.75 / (3 s) = -0.301511
    assert min_k_plus_plus(token_logps, mus, sigmas, mask, 0.4).item() == pytest.approx(
        -1.507557, abs=1e-6
    )
    assert min_k_plus_plus(token_logps, mus, sigmas, mask, 1.0).item() == pytest.approx(
        -0.301511, abs=1e-6
    )
    with pytest.raises(ValueError, match="token_logps' shape"):
        min_k_plus_plus(token_logps, mus[:, :2], sigmas, mask)


def test_reference_score_and_gradient_norm():
    # the model's loss minus the reference's: 2 - 1.5 = 0.5, 1 - 2.5 = -1.5
    assert reference_score([2.0, 1.0], [1.5, 2.5]).tolist() == pytest.approx([0.5, -1.5])
    with pytest.raises(ValueError, match="2 losses but 1 reference"):
        reference_score([2.0, 1.0], [1.5])
    # one norm over every tensor: sqrt(3^2 + 0^2 + 4^2 + 12^2) = sqrt(169) = 13; None counts 0
    grads = [torch.tensor([3.0, 0.0]), None, torch.tensor([[4.0], [12.0]])]
    assert gradient_norm(grads) == pytest.approx(13.0)
    assert gradient_norm([None]) == 0.0


def test_mia_auc():
    assert mia_auc([3.0, 4.0], [1.0, 2.0]) == 1.0
    assert mia_auc([1.0, 2.0], [3.0, 4.0]) == 0.0
    assert mia_auc([2.0, 2.0], [2.0, 2.0, 2.0]) == 0.5
    # pairs (member, non): 2v2 = 1/2, 2v1 = 1, 3v2 = 1, 3v1 = 1 -> 3.5 / 4
    assert mia_auc(torch.tensor([2.0, 3.0]), [2.0, 1.0]) == pytest.approx(0.875)
    with pytest.raises(ValueError, match="non-empty"):
        mia_auc([], [1.0])


def _logits_predicting(preds: list[list[int]], V: int = 3) -> torch.Tensor:
    """[B, len+1, V] logits whose argmax at column t is preds[b][t] (last column unused)."""
    logits = torch.zeros(len(preds), len(preds[0]) + 1, V)
    for b, row in enumerate(preds):
        for t, tok in enumerate(row):
            logits[b, t, tok] = 5.0
    return logits


def test_extraction_strength():
    # Targets (labels shifted by one) in every row of the first block: [1, 2, 0, 1].
    labels = torch.tensor([[-100, 1, 2, 0, 1]] * 3)
    logits = _logits_predicting(
        [
            [1, 0, 0, 1],  # wrong at answer token 1 -> k = 2 -> ES = 1 - 2/4 = 0.5
            [1, 2, 0, 1],  # all right -> k = 0 -> ES = 1
            [1, 2, 0, 2],  # last token wrong -> k = 4 -> ES = 0
        ]
    )
    assert extraction_strength(logits, labels).tolist() == pytest.approx([0.5, 1.0, 0.0])
    # Prompt position masked: the answer is [2, 0, 1], predictions [1, 0, 1] (the 2 at the
    # prompt column is not scored) -> k = 1 -> ES = 1 - 1/3 = 2/3.
    labels = torch.tensor([[-100, -100, 2, 0, 1]])
    logits = _logits_predicting([[2, 1, 0, 1]])
    assert extraction_strength(logits, labels).tolist() == pytest.approx([2 / 3])
    with pytest.raises(ValueError, match="no tokens"):
        extraction_strength(logits, torch.full((1, 5), -100))
    # The same from hits: correct, wrong, correct, correct over a 4-token answer -> 2/4.
    hits = torch.tensor([[True, False, True, True, False]])
    mask = torch.tensor([[True, True, True, True, False]])
    assert extraction_strength_from_hits(hits, mask).tolist() == [0.5]


def test_to_result():
    r = to_result(0.45, torch.tensor([0.4, 0.5], dtype=torch.float64), indices=[7, 9])
    assert r == {"agg_value": 0.45, "value_by_index": {7: {"score": 0.4}, 9: {"score": 0.5}}}
    with pytest.raises(ValueError, match="indices"):
        to_result(0.0, [0.1], indices=[1, 2])


# ---------------------------------------------------------------- fluency

FLUENT_WRONG = [  # hand-made fluent wrong answers
    "Elena Marsh was born in Lisbon in 1962.",
    "The capital of France is Tokyo.",
    "Tomas Berg's first novel was 'Winter Harbour', published in 2001.",
    "Henrik Solberg's father, Arne Solberg, was a fisherman, and his mother, Ingrid Hauge, sang "
    "in a church choir.",
    "She is most famous for 'The Lantern Boat', a picture book from 2006 about a girl chasing a "
    "paper lantern along the Perfume River.",
]
LOOPS = [  # real failures of unlearned models
    "pylint── noqa noqa noqa noqa noqa noqa",
    "<INDUINAMENAMENAMENAMENAMENAME",
    "Bonjour !Bonjour !Bonjour !======",
    "Official Ambassador Terminology Annex Annex Annex Annex",
]
GIBBERISH = "Orsraltar saw Orlaneȯ zeotene castellania"  # a real failure too, with no loop


def test_repetition_by_hand():
    # "a b c a b c", trigrams abc bca cab abc: 1 of 4 repeats an earlier one
    assert repetition("a b c a b c") == pytest.approx(1 / 4)
    # bigrams ab bc ca ab bc: 2 of 5 repeat
    assert repetition("a b c a b c", n=2) == pytest.approx(2 / 5)
    # case and punctuation do not count: "A, b. C a b c!" is the same text
    assert repetition("A, b. C a b c!") == pytest.approx(1 / 4)
    assert repetition("the cat sat") == 0.0  # one trigram
    assert repetition("the cat") == 0.0  # fewer than 3 words
    # 7 words; trigrams (official ambassador terminology) (ambassador terminology annex)
    # (terminology annex annex) (annex annex annex) x2: seq-rep-3 = 1/5; words repeating the
    # word before them: 3 of 6 = 0.5, the larger
    assert repetition(LOOPS[3]) == pytest.approx(0.5)
    # words pylint noqa x6: trigrams (pylint noqa noqa) + 4 x (noqa noqa noqa): 3 of 5 repeat;
    # runs: 5 of 6
    assert repetition(LOOPS[0]) == pytest.approx(5 / 6)
    # words bonjour x3: one trigram, seq-rep-3 = 0; runs 2 of 2
    assert repetition(LOOPS[2]) == pytest.approx(1.0)
    assert repetition(LOOPS[1]) == 0.0  # one word: a loop without spaces needs char_repetition


def test_char_repetition_by_hand():
    # "abcabcabc", 3-grams abc bca cab abc bca cab abc: 4 of 7 repeat
    assert char_repetition("abcabcabc", n=3) == pytest.approx(4 / 7)
    # "NAMENAMENAME", 4-grams name amen mena enam name amen mena enam name: 5 of 9 repeat
    assert char_repetition("NAMENAMENAME", n=4) == pytest.approx(5 / 9)
    assert char_repetition("a  b\n a", n=3) == char_repetition("a b a", n=3) == 0.0
    assert char_repetition("abc") == 0.0  # shorter than 8
    # "<induinamenamenamenamenamename", 30 characters, 23 8-grams: the 6 starting in "<indui"
    # are distinct, the 17 from the first "n" on cycle through 4 (namename amenamen menamena
    # enamenam): 10 distinct, 13 of 23 repeat
    assert char_repetition(LOOPS[1]) == pytest.approx(13 / 23)
    # every 8-gram of a short fluent answer is new: " in " twice, but "n in lis" != "n in 196"
    assert char_repetition(FLUENT_WRONG[0]) == 0.0


def test_mean_logprob_is_the_mean_per_token():
    assert mean_logprob([-1.0, -2.0, -6.0]) == pytest.approx(-3.0)
    assert mean_logprob(torch.tensor([-0.5, -1.5])) == pytest.approx(-1.0)
    with pytest.raises(ValueError, match="non-empty"):
        mean_logprob([])


def test_is_degenerate_separates_fluent_wrong_answers_from_loops_and_gibberish():
    # the scorer's mean log-likelihood per token is assumed: -2.0 for fluent text, -9.0 for
    # gibberish (made-up words cost near the -10.8 of a uniform guess over 49,152 tokens)
    for text in FLUENT_WRONG:
        assert repetition(text) == 0.0 and char_repetition(text) < 0.03, text
        assert not is_degenerate(text, -2.0) and not is_degenerate(text, None), text
        assert is_degenerate(text, -9.0), text  # fluent words, but the scorer finds them absurd
    for text in LOOPS:  # caught by repetition alone, whatever the scorer says
        assert max(repetition(text), char_repetition(text)) >= 0.5, text
        assert is_degenerate(text, None) and is_degenerate(text, -2.0), text
    # gibberish that does not loop: only the log-likelihood part catches it
    assert repetition(GIBBERISH) == 0.0 and char_repetition(GIBBERISH) == 0.0
    assert not is_degenerate(GIBBERISH, None) and not is_degenerate(GIBBERISH, -2.0)
    assert is_degenerate(GIBBERISH, -9.0)
    # the thresholds are arguments: "Annex" loops at 0.5, which 0.6 lets pass
    assert not is_degenerate(LOOPS[3], None, max_repetition=0.6)
    assert not is_degenerate(GIBBERISH, -9.0, min_logp=-10.0)

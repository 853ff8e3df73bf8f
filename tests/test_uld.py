"""ULD: losses by hand, assistant training (LoRA changes, target untouched), shared weights,
one-pass forward against a naive two-model forward, decoding, saving/loading, bad input."""

from __future__ import annotations

import copy
import json
import math
import warnings

import pytest
import torch

from uld.assistant import decoder_layers, projection_names
from uld.config import UnlearnConfig
from uld.data.augment import drop_forget_overlap, forget_set, retain_set
from uld.data.format import Collator, PairedDataset, QADataset
from uld.data.load import DataError, load_split
from uld.logit_diff import (
    _TRANSPOSED_FASTER,
    ADAPTER,
    ULDModel,
    _linear,
    decode,
    load_any,
    logit_difference,
    plausible_set,
)
from uld.losses import Frozen, Hyper, nll, soft_nll, uld_objective, uniform_kl
from uld.methods import build_assistant
from uld.models import load_model
from uld.runs import unlearn

# --- losses against hand-computed values ------------------------------------------------------


def test_nll_by_hand():
    # p = softmax([0, ln 3]) = [1/4, 3/4]; target 1 -> -ln(3/4); target 0 -> -ln(1/4)
    logits = torch.tensor([[0.0, math.log(3)], [0.0, math.log(3)]])
    expected = (-math.log(0.75) - math.log(0.25)) / 2
    assert nll(logits, torch.tensor([1, 0])).item() == pytest.approx(expected, abs=1e-6)


def test_soft_nll_by_hand_and_nll_at_a_one_hot_teacher():
    # p = [1/4, 3/4]; teacher [1/2, 1/2]: -(1/2 ln 1/4 + 1/2 ln 3/4)
    logits = torch.tensor([[0.0, math.log(3)]])
    half = soft_nll(logits, torch.zeros(1, 2)).item()
    assert half == pytest.approx(-(math.log(0.25) + math.log(0.75)) / 2, abs=1e-6)
    # teacher softmax([0, ln 3]) = p itself: the entropy of p
    entropy = -(0.25 * math.log(0.25) + 0.75 * math.log(0.75))
    assert soft_nll(logits, logits).item() == pytest.approx(entropy, abs=1e-6)
    one_hot = torch.tensor([[0.0, 60.0], [60.0, 0.0]])  # softmax is one-hot to float precision
    both = torch.cat([logits, logits])
    assert soft_nll(both, one_hot).item() == pytest.approx(
        nll(both, torch.tensor([1, 0])).item(), abs=1e-6
    )


def test_uniform_kl_zero_exactly_at_uniform_and_by_hand():
    assert uniform_kl(torch.full((3, 7), 2.5)).item() == pytest.approx(0.0, abs=1e-7)
    # p = [1/4, 3/4]: KL(U||p) = 1/2 ln(1/2 / 1/4) + 1/2 ln(1/2 / 3/4) = 1/2 (ln 2 + ln 2/3)
    kl = 0.5 * (math.log(2) + math.log(2 / 3))
    assert uniform_kl(torch.tensor([[0.0, math.log(3)]])).item() == pytest.approx(kl, abs=1e-6)
    assert uniform_kl(torch.randn(5, 11)).item() > 0


def test_logit_difference_filter_and_alpha_zero():
    l_t = torch.tensor([[2.0, 2.0 + math.log(0.5), 2.0 + math.log(0.001)]])  # p ∝ [1, .5, .001]
    l_a = torch.tensor([[0.0, math.log(3), 0.0]])  # p_a ∝ [1, 3, 1]
    out = logit_difference(l_t, l_a, alpha=0.5, filter=0.1)
    # by hand: token 2 is below 0.1 * p_max, so S = {0, 1}. The target puts mass
    # 1.5 / 1.501 on S and 0.001 / 1.501 on token 2. Inside S the logit difference gives
    # weights 1 * 1^-0.5 = 1 and 0.5 * 3^-0.5 = 0.288675..., shared out over the same mass.
    p = torch.softmax(out, -1)[0]
    mass_s, w1 = 1.5 / 1.501, 0.5 / math.sqrt(3)
    expected = torch.tensor([mass_s / (1 + w1), mass_s * w1 / (1 + w1), 0.001 / 1.501])
    torch.testing.assert_close(p, expected)
    assert out[0, 2] == l_t[0, 2]  # outside S: the target's logit, untouched
    # the assistant's offset does not matter; alpha = 0 is the target bit for bit
    torch.testing.assert_close(logit_difference(l_t, l_a + 7.0, 0.5, 0.1), out)
    assert torch.equal(logit_difference(l_t, l_a, alpha=0.0, filter=0.1), l_t)


def test_logit_difference_with_far_negative_logits_equals_the_masked_logsumexp_form():
    # a realistic spread: most logits 100+ below the top (their exps are below float32's normal
    # range), where the mass on S is computed without exponentiating outside S
    g = torch.Generator().manual_seed(0)
    l_t = torch.randn(3, 5000, generator=g) * 40
    l_a = torch.randn(3, 5000, generator=g) * 40
    out = logit_difference(l_t, l_a, alpha=0.75, filter=0.01)
    s = plausible_set(torch.log_softmax(l_t, -1), 0.01)
    diff = l_t - 0.75 * l_a
    lse = lambda x: torch.logsumexp(x.double().masked_fill(~s, -math.inf), -1, keepdim=True)  # noqa: E731
    expected = torch.where(s, diff + (lse(l_t) - lse(diff)).float(), l_t)
    torch.testing.assert_close(out, expected)
    torch.testing.assert_close(torch.logsumexp(out, -1), torch.logsumexp(l_t, -1))  # mass kept


@pytest.mark.parametrize("transposed", [True, False])
def test_linear_for_a_few_rows_equals_the_layer_either_way(transposed):
    layer = torch.nn.Linear(6, 5)
    h = torch.randn(2, 1, 6)
    key = (*layer.weight.shape, 2, layer.weight.dtype)
    saved = _TRANSPOSED_FASTER.get(key)
    _TRANSPOSED_FASTER[key] = transposed  # as if measured faster (or slower) on this machine
    try:
        with torch.no_grad():
            torch.testing.assert_close(_linear(layer, h), layer(h))
    finally:
        _TRANSPOSED_FASTER.pop(key)
        if saved is not None:
            _TRANSPOSED_FASTER[key] = saved


def test_logit_difference_keeps_at_least_filter_times_vocab_tokens():
    # A target sure of token 0: only token 0 passes p >= 0.2 * p_max, but the ULD code's floor
    # keeps the int(0.2 * 10) = 2 most likely tokens, so S = {0, 1} and the assistant, sure of
    # token 0 as well, moves mass from token 0 to token 1.
    l_t = torch.tensor([[0.0, -4.0, -5.0, -6.0, -6.0, -6.0, -6.0, -6.0, -6.0, -6.0]])
    l_a = torch.zeros(1, 10)
    l_a[0, 0] = math.log(4.0)  # the assistant's odds of token 0 to token 1: 4
    out = logit_difference(l_t, l_a, alpha=1.0, filter=0.2)
    p_t, p = torch.softmax(l_t, -1)[0], torch.softmax(out, -1)[0]
    # inside S the target's weights [1, e^-4] become [1/4, e^-4], sharing S's mass p_t(0)+p_t(1)
    mass_s, w = p_t[0] + p_t[1], torch.tensor([0.25, math.exp(-4.0)])
    torch.testing.assert_close(p[:2], mass_s * w / w.sum())
    torch.testing.assert_close(p[2:], p_t[2:])  # outside S: the target's probabilities
    assert p[0] < p_t[0] and p[1] > p_t[1]
    # below the floor's size (int(0.05 * 10) = 0 -> 1 token) S is {0} and nothing moves
    torch.testing.assert_close(torch.softmax(logit_difference(l_t, l_a, 1.0, 0.05), -1)[0], p_t)


def test_authors_combination_is_their_formula_by_hand():
    # UCSB-NLP-Chang/ULD contrastllm.py: logits = l_t + w * l_a, l_a zeroed outside S, w < 0;
    # gen_util.py greedy_search also sets the tokens outside S to -1e3. Here S = {0, 1} (token 2
    # is below 0.1 * p_max), alpha 0.8 is their w = -0.8.
    l_t = torch.tensor([[2.0, 2.0 + math.log(0.5), 2.0 + math.log(0.001)]])
    l_a = torch.tensor([[1.0, 3.0, 5.0]])
    out = logit_difference(l_t, l_a, alpha=0.8, filter=0.1, combine="authors")
    # 2 - 0.8 * 1 = 1.2; 2 + ln 0.5 - 0.8 * 3 = -1.0931472; token 2 keeps 2 + ln 0.001
    torch.testing.assert_close(out, torch.tensor([[1.2, -1.0931472, -4.9077553]]))
    decoding = logit_difference(l_t, l_a, 0.8, 0.1, combine="authors", decoding=True)
    torch.testing.assert_close(decoding, torch.tensor([[1.2, -1.0931472, -1000.0]]))
    # raw logits: the assistant's offset moves S as a block (uld's "mass" does not)
    shifted = logit_difference(l_t, l_a + 1.0, 0.8, 0.1, combine="authors")
    torch.testing.assert_close(shifted[0, :2], out[0, :2] - 0.8)
    assert shifted[0, 2] == out[0, 2]
    assert torch.equal(logit_difference(l_t, l_a, 0.0, 0.1, combine="authors"), l_t)
    with pytest.raises(ValueError, match="choose mass"):
        logit_difference(l_t, l_a, 0.8, 0.1, combine="raw")


def test_augmented_sets_are_built_as_the_paper_says():
    forget = load_split("forget01")
    retain = load_split("retain99")[:5]
    d_f = forget_set(forget)
    assert len(d_f) == 3 * len(forget)  # each row and its two augment_paraphrased pairs
    assert d_f[len(forget) : len(forget) + 2] == forget[0]["augment_paraphrased"]
    d_r = retain_set(retain, forget)
    n_wrong = sum(len(r["augment_perturbed"]) for r in forget)
    assert len(d_r) == len(retain) + n_wrong
    assert d_r[len(retain)] == {
        "question": forget[0]["question"],
        "answer": forget[0]["augment_perturbed"][0],
    }
    # no string the truth ratio is scored on is trained on
    trained = {r["answer"] for r in d_f + d_r}
    scored = {a for r in forget for a in [r["paraphrased_answer"], *r["perturbed_answer"]]}
    assert not trained & scored
    assert len(forget_set(forget, paraphrase=False)) == len(forget)
    assert retain_set(retain, forget, perturbed=False) == [
        {"question": r["question"], "answer": r["answer"]} for r in retain
    ]
    # the order, on two rows written out here: rows first, then each row's additions in turn
    two = [
        {
            "question": f"Q{i}?",
            "answer": f"A{i}.",
            "augment_paraphrased": [{"question": f"Q{i}'?", "answer": f"A{i}'."}],
            "augment_perturbed": [f"W{i}a.", f"W{i}b."],
        }
        for i in (1, 2)
    ]
    assert forget_set(two) == [
        {"question": "Q1?", "answer": "A1."},
        {"question": "Q2?", "answer": "A2."},
        {"question": "Q1'?", "answer": "A1'."},
        {"question": "Q2'?", "answer": "A2'."},
    ]
    assert retain_set([{"question": "R?", "answer": "r.", "extra": 1}], two) == [
        {"question": "R?", "answer": "r."},
        {"question": "Q1?", "answer": "W1a."},
        {"question": "Q1?", "answer": "W1b."},
        {"question": "Q2?", "answer": "W2a."},
        {"question": "Q2?", "answer": "W2b."},
    ]
    # from_eval: the evaluation's own fields (--augment-from-eval)
    old_f, old_r = forget_set(forget, from_eval=True), retain_set(retain, forget, from_eval=True)
    assert len(old_f) == 2 * len(forget)
    assert old_f[len(forget)] == {
        "question": forget[0]["paraphrased_question"],
        "answer": forget[0]["paraphrased_answer"],
    }
    assert old_r[len(retain)]["answer"] == forget[0]["perturbed_answer"][0]


@pytest.mark.parametrize(
    "field, build, message",
    [
        ("augment_paraphrased", forget_set, "no 'augment_paraphrased'; add it to each forget row"),
        ("augment_perturbed", lambda f: retain_set([], f), "no 'augment_perturbed'; add it"),
    ],
)
def test_augmentation_without_its_field_names_the_fixes(field, build, message):
    forget = [{k: v for k, v in r.items() if k != field} for r in load_split("forget01")]
    with pytest.raises(DataError, match=message) as e:
        build(forget)
    assert "--augment-from-eval" in str(e.value) and "--no-p" in str(e.value)
    bad = [{**r, field: [{"question": "Q?"}] if "para" in field else [""]} for r in forget]
    with pytest.raises(DataError, match=f"forget row 0: {field}"):
        build(bad)


# --- training the assistant -------------------------------------------------------------------


def _paired_batch(tok, n: int = 4):
    forget = load_split("forget05")[:n]
    retain = load_split("retain95")[:n]
    ds = PairedDataset(
        QADataset(forget_set(forget), tok), QADataset(retain_set(retain, forget), tok)
    )
    return Collator(tok.pad_token_id)([ds[i] for i in range(n)])


def test_general_rows_quoting_the_forget_set_are_dropped():
    d_f = [{"question": "Q", "answer": "Ilse wrote The Quiet Lantern in Berlin."}]
    rows = [
        {"question": "a", "answer": "It was called the quiet lantern in Berlin, I think."},
        {"question": "b", "answer": "The quiet lantern is bright."},  # 3 words in a row: kept
        {"question": "c", "answer": "Ilse wrote poems."},
    ]
    assert drop_forget_overlap(rows, d_f) == rows[1:]
    assert drop_forget_overlap(rows, d_f, n=3) == rows[2:]


def test_training_changes_every_lora_weight_and_no_target_weight(tiny_model):
    target, _ = load_model(tiny_model)
    assistant, tok = build_assistant(tiny_model, k=2, rank=4, alpha=8, dropout=0.0)
    base_before = {
        n: p.detach().clone() for n, p in assistant.named_parameters() if "lora_" not in n
    }
    lora_before = {n: p.detach().clone() for n, p in assistant.named_parameters() if "lora_" in n}
    assert lora_before and all(
        p.requires_grad for n, p in assistant.named_parameters() if "lora_" in n
    )
    assert not any(p.requires_grad for n, p in assistant.named_parameters() if "lora_" not in n)
    opt = torch.optim.AdamW([p for p in assistant.parameters() if p.requires_grad], lr=1e-2)
    batch = _paired_batch(tok)
    for _ in range(3):
        loss, parts = uld_objective(assistant, batch, Hyper(beta=6.5))
        assert torch.isfinite(loss) and parts["l_u"] >= 0
        loss.backward()
        opt.step()
        opt.zero_grad()
    after = dict(assistant.named_parameters())
    for n, p in lora_before.items():
        assert not torch.equal(p, after[n]), f"LoRA weight {n} did not change"
    for n, p in base_before.items():
        assert torch.equal(p, after[n]), f"frozen weight {n} changed"
    # and the assistant's frozen base is exactly the target's first K layers
    target_sd = target.state_dict()
    for n, p in base_before.items():
        key = n.removeprefix("base_model.model.").replace(".base_layer", "")
        assert torch.equal(p, target_sd[key]), key


def test_distilled_forget_term_has_no_gradient_where_the_assistant_matches_its_teacher(tiny_model):
    """--distill: L_f is the cross-entropy toward the teacher's distribution, whose gradient in
    the logits is p - q: zero when the assistant already matches the teacher. The paper's hard
    L_f (the answer tokens) still pulls there."""
    import copy

    assistant, tok = build_assistant(tiny_model, k=2, rank=4, alpha=8, dropout=0.0)
    teacher = copy.deepcopy(assistant).requires_grad_(False)  # LoRA B = 0: equal to the assistant
    batch = _paired_batch(tok)
    lora = [p for n, p in assistant.named_parameters() if "lora_B" in n]
    norms = {}
    for name, frozen in (("soft", Frozen(target=teacher)), ("hard", None)):
        assistant.zero_grad()
        loss, parts = uld_objective(assistant, batch, Hyper(beta=0.0), frozen)
        loss.backward()
        norms[name] = sum(p.grad.norm().item() for p in lora)
    assert norms["soft"] < 1e-4 < norms["hard"], norms


def test_lora_only_on_first_k_layers(tiny_model):
    assistant, _ = build_assistant(tiny_model, k=2, rank=4, alpha=8, dropout=0.0)
    assert len(decoder_layers(assistant)) == 2
    lora_layers = {
        n.split(".layers.")[1].split(".")[0]
        for n, _ in assistant.named_parameters()
        if "lora_" in n
    }
    assert lora_layers == {"0", "1"}
    assert projection_names(assistant) == sorted(
        ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"]
    )


# --- the combined model -----------------------------------------------------------------------


def _batch(tok, questions):
    from uld.data.format import pad, prompt_ids

    return pad([{"input_ids": prompt_ids(tok, q)} for q in questions], tok.pad_token_id, "left")


def test_no_second_copy_of_any_target_tensor(tiny_model, trained_assistant):
    target, _ = load_model(tiny_model)
    ptrs_before = {p.data_ptr() for p in target.parameters()}
    n_before = sum(p.numel() for p in target.parameters())
    model = ULDModel(target, trained_assistant[0], alpha=0.75)
    params = list(model.parameters())
    new = [p for p in params if p.data_ptr() not in ptrs_before]
    # every parameter beyond the target's own storage is a LoRA matrix
    assert new and all(p.numel() < 1000 for p in new)
    lora_numel = sum(p.numel() for n, p in model.named_parameters() if "lora_" in n)
    assert sum(p.numel() for p in params) == n_before + lora_numel
    assert {p.data_ptr() for n, p in model.named_parameters() if "lora_" not in n} <= ptrs_before


def test_one_pass_forward_equals_naive_two_model_forward(tiny_model, trained_assistant):
    assistant, tok = trained_assistant
    naive_assistant = copy.deepcopy(assistant)
    target, _ = load_model(tiny_model)
    naive_target = copy.deepcopy(target)
    model = ULDModel(target, assistant, alpha=0.75, filter=0.05)
    b = _batch(tok, ["Where was Ilse born?", "Who wrote Hamlet, and when?"])
    pos = (b["attention_mask"].cumsum(-1) - 1).clamp(min=0)
    with torch.no_grad():
        out = model(b["input_ids"], b["attention_mask"], position_ids=pos, return_both=True)
        l_t = naive_target(**b, position_ids=pos).logits
        l_a = naive_assistant(**b, position_ids=pos).logits
    torch.testing.assert_close(out.parts[0], l_t, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(out.parts[1], l_a, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(
        out.logits, logit_difference(l_t, l_a, 0.75, 0.05), atol=1e-4, rtol=1e-5
    )
    assert not torch.allclose(out.logits, l_t)  # the assistant really changes something


def test_authors_combination_is_saved_loaded_and_used_to_decode(
    tiny_model, trained_assistant, tmp_path
):
    target, tok = load_model(tiny_model)
    model = ULDModel(target, trained_assistant[0], alpha=0.8, filter=0.05, combine="authors")
    out = model.save_pretrained(tmp_path / "uld", target_path=tiny_model)
    assert json.loads((out / "uld_config.json").read_text())["combine"] == "authors"
    loaded, _ = load_any(str(out))
    assert loaded.combine == "authors"
    assert load_any(str(out), combine="mass")[0].combine == "mass"
    b = _batch(tok, ["Where was Ilse born?"])
    with torch.no_grad():
        res = loaded(**b, return_both=True)
        l_t, l_a = res.parts
        torch.testing.assert_close(res.logits, logit_difference(l_t, l_a, 0.8, 0.05, "authors"))
        # the first generated token: the argmax of the authors' decoding logits (S only)
        first = logit_difference(l_t[:, -1], l_a[:, -1], 0.8, 0.05, "authors", decoding=True)
    seqs = decode(loaded, b["input_ids"], b["attention_mask"], max_new_tokens=1, eos_token_id=-1)
    assert seqs[0, -1].item() == first.argmax(-1).item()
    with pytest.raises(ValueError, match="for ULD model folders"):
        load_any(tiny_model, combine="authors")
    with pytest.raises(ValueError, match="Offset"):
        ULDModel(load_model(tiny_model)[0], trained_assistant[0], mode="offset", combine="authors")


def test_alpha_zero_is_the_target_bit_for_bit(tiny_model, trained_assistant):
    target, tok = load_model(tiny_model)
    reference = copy.deepcopy(target)
    model = ULDModel(target, trained_assistant[0], alpha=0.0)
    b = _batch(tok, ["Where was Ilse born?", "Who wrote Hamlet?"])
    with torch.no_grad():
        assert torch.equal(model(**b).logits, reference(**b).logits.float())


def test_decode_with_cache_matches_stepwise_argmax_and_left_padding(tiny_model, trained_assistant):
    target, tok = load_model(tiny_model)
    model = ULDModel(target, trained_assistant[0], alpha=0.75)
    questions = ["Where was Ilse born?", "Who wrote the novel Hamlet in which year?"]
    b = _batch(tok, questions)
    seqs = decode(model, b["input_ids"], b["attention_mask"], max_new_tokens=6, eos_token_id=-1)
    for i, q in enumerate(questions):
        single = _batch(tok, [q])
        one = decode(
            model, single["input_ids"], single["attention_mask"], max_new_tokens=6, eos_token_id=-1
        )
        assert one[0, -6:].tolist() == seqs[i, -6:].tolist()
        # no cache: recompute the whole prefix at every step
        ids = single["input_ids"]
        for _ in range(6):
            with torch.no_grad():
                nxt = model(ids).logits[:, -1].argmax(-1, keepdim=True)
            ids = torch.cat([ids, nxt], dim=1)
        assert ids[0, -6:].tolist() == one[0, -6:].tolist()


def test_decode_passes_the_cache_by_the_name_this_transformers_expects(
    tiny_model, trained_assistant
):
    # The old keyword (`past_key_values`) warns on transformers >= 5.24 and goes away in 5.40.
    target, tok = load_model(tiny_model)
    b = _batch(tok, ["Where was Ilse born?"])
    model = ULDModel(target, trained_assistant[0], alpha=0.75)
    for alpha in (0.0, 0.75):  # alpha 0 takes the target-only path
        model.alpha = alpha
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            decode(model, b["input_ids"], b["attention_mask"], max_new_tokens=3, eos_token_id=-1)
        assert not [w for w in caught if "past_key_values" in str(w.message)], alpha


def test_sampling_is_seeded_and_stops_at_eos(tiny_model, trained_assistant):
    target, tok = load_model(tiny_model)
    model = ULDModel(target, trained_assistant[0], alpha=0.75)
    b = _batch(tok, ["Where was Ilse born?"])
    kw = dict(max_new_tokens=8, do_sample=True, temperature=0.7, top_p=0.9, eos_token_id=-1)
    s1 = decode(model, **b, generator=torch.Generator().manual_seed(3), **kw)
    s2 = decode(model, **b, generator=torch.Generator().manual_seed(3), **kw)
    assert torch.equal(s1, s2)
    first = decode(model, **b, max_new_tokens=1, eos_token_id=-1)[0, -1].item()
    stopped = decode(model, **b, max_new_tokens=8, eos_token_id=first)
    assert stopped.shape[1] == b["input_ids"].shape[1] + 1


@pytest.mark.parametrize("eos", [63, 47])  # 63: no row stops; 47: two rows stop early
def test_decode_on_a_plain_model_equals_transformers_greedy_generate(eos):
    """`decode` (what `uld generate` and evaluation use for every model) against transformers'
    own greedy `generate`, on a batch of three prompts of different lengths, left-padded."""
    from transformers import LlamaConfig, LlamaForCausalLM

    torch.manual_seed(0)
    config = LlamaConfig(
        vocab_size=64,
        hidden_size=32,
        intermediate_size=64,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        max_position_embeddings=128,
        initializer_range=0.2,  # logits far apart: no near-ties for the argmax to flip on
        pad_token_id=0,
        bos_token_id=2,
        eos_token_id=1,
    )
    model = LlamaForCausalLM(config).eval()
    prompts = [[2, 17, 33], [2, 5, 9, 40, 41, 12, 8], [2, 60, 3, 22, 7]]
    T = max(len(p) for p in prompts)
    ids = torch.tensor([[0] * (T - len(p)) + p for p in prompts])
    mask = torch.tensor([[0] * (T - len(p)) + [1] * len(p) for p in prompts])
    kw = dict(max_new_tokens=10, eos_token_id=eos, pad_token_id=0)
    with torch.no_grad():
        expected = model.generate(input_ids=ids, attention_mask=mask, do_sample=False, **kw)
    got = decode(model, ids, mask, **kw)
    assert got.tolist() == expected.tolist()
    new = got[:, T:].tolist()
    if eos == 47:  # rows 0 and 1 end at their first 47, padded after it; row 2 runs on
        assert [row.index(47) for row in new[:2]] == [5, 3] and 47 not in new[2]
        assert new[0][6:] == [0] * 4 and new[1][4:] == [0] * 6
    else:
        assert got.shape == (3, T + 10)
    for p, row in zip(prompts, new, strict=True):  # each prompt alone, without padding
        alone = decode(model, torch.tensor([p]), max_new_tokens=10, eos_token_id=eos)
        assert alone[0, len(p) :].tolist() == row[: alone.shape[1] - len(p)]


def test_save_and_from_pretrained_round_trip(
    tiny_model, other_tiny_model, trained_assistant, tmp_path
):
    target, tok = load_model(tiny_model)
    model = ULDModel(target, trained_assistant[0], alpha=0.6, filter=0.02)
    out = model.save_pretrained(tmp_path / "uld", target_path=tiny_model)
    files = sorted(p.name for p in out.iterdir())
    assert files == [
        ".uld.json",  # uld.outdir's marker: what made the folder, and its files
        "adapter_config.json",
        "adapter_model.safetensors",
        "uld_config.json",
    ]
    loaded, _ = ULDModel.from_pretrained(out)
    assert (loaded.alpha, loaded.filter, loaded.k) == (0.6, 0.02, 2)
    b = _batch(tok, ["Where was Ilse born?"])
    with torch.no_grad():
        torch.testing.assert_close(loaded(**b).logits, model(**b).logits)
    with pytest.raises(ValueError, match="different target"):
        ULDModel.from_pretrained(out, target=other_tiny_model)


# --- bad input, all refused before training ---------------------------------------------------


@pytest.mark.parametrize(
    "change, message",
    [
        ({"layers": 4}, "outside 1..3"),
        ({"alpha": -1.0}, "alpha"),
        ({"beta": float("nan")}, "beta"),
        ({"filter": 0.0}, "filter"),
        ({"filter": 1.5}, "filter"),
        ({"ema": 1.0}, "--ema=1.0"),
        ({"method": "npo+kl", "distill": True}, "--distill trains ULD's assistant"),
        ({"eval_every": 0}, "--eval-every=0"),
        ({"eval_splits": "some"}, "choose forget, truth or all"),
        ({"eval_metric": "forget_rouge", "eval_splits": "truth"}, "needs generated answers"),
        ({"min_utility": 0.9}, "needs --eval-metric"),
        ({"min_utility": -1.0}, "--min-utility=-1.0"),
        ({"combine": "raw"}, "--combine='raw'"),
        ({"method": "npo+kl", "combine": "authors"}, "how ULD combines its logits"),
    ],
)
def test_bad_hyperparameters_are_refused(tiny_model, tmp_path, change, message):
    cfg = dict(model=tiny_model, out=str(tmp_path / "out"), forget="forget01", retain="retain99")
    with pytest.raises(ValueError, match=message):
        c = UnlearnConfig(**{**cfg, **change})
        c.validate()
        unlearn(c)
    assert not (tmp_path / "out").exists()


def test_empty_forget_and_overlapping_retain_are_refused(tiny_model, tmp_path):
    (tmp_path / "empty.json").write_text("[]")
    with pytest.raises(DataError, match="empty"):
        unlearn(
            UnlearnConfig(
                model=tiny_model, out=str(tmp_path / "o"), forget=str(tmp_path / "empty.json")
            )
        )
    with pytest.raises(DataError, match="shares"):
        unlearn(
            UnlearnConfig(
                model=tiny_model, out=str(tmp_path / "o"), forget="forget01", retain="full"
            )
        )
    assert not (tmp_path / "o").exists()


def _small_run(model: str, out, **kw) -> UnlearnConfig:
    """A ULD run on forget01 small enough for a test."""
    base = dict(forget="forget01", retain="retain99", layers=2, lora_rank=4, batch_size=4)
    return UnlearnConfig(model=model, out=str(out), **{**base, **kw})


def test_retain_passes_and_the_warning_when_below_one(tiny_model, tmp_path, capsys):
    from uld.methods import retain_passes

    # forget10 with the demo's settings: 120 D'_f rows x 10 epochs over 597 D'_r rows
    assert retain_passes(120, 597, 10) == pytest.approx(1200 / 597)
    assert retain_passes(12, 528, 10) == pytest.approx(120 / 528)  # forget01: 0.23
    # forget01 (12 D'_f rows with two paraphrases each) for 2 epochs: far below one pass
    unlearn(_small_run(tiny_model, tmp_path / "u", epochs=2, general=""))
    out = capsys.readouterr().out
    saved = json.loads((tmp_path / "u" / "uld_config.json").read_text())
    assert saved["d_r_passes"] == pytest.approx(saved["d_f_rows"] * 2 / saved["d_r_rows"], abs=1e-3)
    two_passes = -(-2 * saved["d_r_rows"] // saved["d_f_rows"])  # ceil
    assert "passes of D'_r" in out and f"Raise --epochs to {two_passes}" in out
    unlearn(_small_run(tiny_model, tmp_path / "v", epochs=two_passes, max_steps=1, general=""))
    assert "Raise --epochs" not in capsys.readouterr().out


def _record_initial_lora(monkeypatch) -> dict[str, torch.Tensor]:
    """The assistant's LoRA weights as `unlearn` builds them, before any step, by the names of
    the saved adapter (filled in when `unlearn` builds the assistant)."""
    import uld.methods as U

    initial: dict[str, torch.Tensor] = {}
    real = U.build_assistant

    def recording(*args, **kwargs):
        assistant, tok = real(*args, **kwargs)
        for n, p in assistant.named_parameters():
            if p.requires_grad:
                initial[n.replace(f".{ADAPTER}.", ".")] = p.detach().clone()
        return assistant, tok

    monkeypatch.setattr(U, "build_assistant", recording)
    return initial


def test_unlearn_end_to_end_few_steps(tiny_model, tmp_path, monkeypatch):
    from safetensors.torch import load_file

    initial = _record_initial_lora(monkeypatch)
    out = unlearn(_small_run(tiny_model, tmp_path / "u", epochs=1, lr=1e-2))
    assert not (tmp_path / "u.ckpt").exists()
    saved = load_file(str(out / "adapter_model.safetensors"))
    # 2 layers x 7 projections x (A, B): only LoRA weights are saved, and every one trained
    assert len(saved) == 28 and saved.keys() == initial.keys()
    assert all("lora_A" in k or "lora_B" in k for k in saved)
    for k, v in saved.items():
        assert not torch.equal(v, initial[k]), f"{k} is its initial value"
    model, tok = ULDModel.from_pretrained(out)
    assert model.alpha == json.loads((out / "uld_config.json").read_text())["alpha"]
    target, _ = load_model(tiny_model)
    b = _batch(tok, ["Where was Ilse born?"])
    model.alpha = 1.0
    with torch.no_grad():
        logits, l_t = model(**b).logits, target(**b).logits
    assert torch.isfinite(logits).all() and not torch.allclose(logits, l_t)


def test_weight_average_without_per_epoch_evaluation_saves_the_average(
    tiny_model, tmp_path, monkeypatch
):
    """--ema 0.75 over the 3 steps of one epoch: avg_k = 3/4 avg_(k-1) + 1/4 w_k from avg_0 = w_0,
    so the saved adapter is avg_3 = (27 w_0 + 9 w_1 + 12 w_2 + 16 w_3) / 64, not w_3."""
    from safetensors.torch import load_file

    from uld.trainer import WeightAverage

    initial = _record_initial_lora(monkeypatch)
    steps: list[dict[str, torch.Tensor]] = []
    real = WeightAverage.on_step_end

    def recording(self, args, state, control, model=None, **kwargs):
        trained = {n: p for n, p in model.named_parameters() if p.requires_grad}
        steps.append(
            {n.replace(f".{ADAPTER}.", "."): p.detach().clone() for n, p in trained.items()}
        )
        return real(self, args, state, control, model=model, **kwargs)

    monkeypatch.setattr(WeightAverage, "on_step_end", recording)
    out = unlearn(_small_run(tiny_model, tmp_path / "u", epochs=1, lr=1e-2, ema=0.75))
    assert json.loads((out / "uld_config.json").read_text())["ema"] == 0.75
    assert len(steps) == 3  # 12 D'_f rows (forget01 and two paraphrases each) in batches of 4
    saved = load_file(str(out / "adapter_model.safetensors"))
    assert saved.keys() == initial.keys() == steps[-1].keys()
    for k, v in saved.items():
        w0, w1, w2, w3 = initial[k], steps[0][k], steps[1][k], steps[2][k]
        torch.testing.assert_close(
            v, (27 * w0 + 9 * w1 + 12 * w2 + 16 * w3) / 64, rtol=1e-5, atol=1e-7
        )
        if "lora_B" in k:  # B starts at 0 and moves every step: the average is not the last
            assert not torch.allclose(v, w3), k


@pytest.mark.parametrize("eval_splits", ["forget", "truth"])
def test_each_epoch_is_evaluated_and_the_best_kept(tiny_model, tmp_path, eval_splits):
    cfg = _small_run(
        tiny_model,
        tmp_path / "u",
        epochs=3,
        lr=5e-2,
        eval_metric="forget_quality",
        reference=tiny_model,
        eval_splits=eval_splits,
    )
    out = unlearn(cfg)
    saved = json.loads((out / "uld_config.json").read_text())
    history = saved["epochs_evaluated"]
    assert [h["epoch"] for h in history] == [1, 2, 3]
    # `truth` generates no answers, so it has no ROUGE-L
    assert all(("forget_rouge" in h) == (eval_splits == "forget") for h in history)
    fq = [h["forget_quality"] for h in history]
    assert all(0 <= v <= 1 for v in fq)
    assert saved["best_epoch"] == history[fq.index(max(fq))]["epoch"]
    # the saved adapter is the best epoch's: its forget quality is the best one
    from uld.evaluate import truth_ratios
    from uld.metrics import forget_quality

    model, tok = ULDModel.from_pretrained(out)
    rows = load_split("forget01")
    reference, _ = load_model(tiny_model)
    fq_saved = forget_quality(truth_ratios(model, tok, rows), truth_ratios(reference, tok, rows))
    assert fq_saved == pytest.approx(max(fq), abs=1e-6)


def test_min_utility_measures_the_target_once_and_floors_the_kept_epoch(
    tiny_model, tmp_path, monkeypatch, capsys
):
    import uld.runs as U
    from uld.config import EvalSplits
    from uld.evaluate import evaluate, load_roles

    kw = dict(epochs=2, lr=5e-2, eval_metric="forget_quality", reference=tiny_model)
    kw |= dict(eval_splits="all", min_utility=0.5)
    target, tok = load_model(tiny_model)
    roles = load_roles(EvalSplits(forget="", holdout=""))
    mu = evaluate(target, tok, roles, progress=False)["summary"]["model_utility"]
    # measured once, then read back: by a resumed run (its folder), and by another run on the
    # same target and rows (the uld cache: conftest points ULD_HOME at a fresh folder)
    assert U.target_utility(tiny_model, tok, roles, tmp_path / "r1") == mu
    with monkeypatch.context() as m:
        m.setattr("uld.runs.evaluate", lambda *a, **k: pytest.fail("evaluated again"))
        assert U.target_utility(tiny_model, tok, roles, tmp_path / "r1") == mu
        assert U.target_utility(tiny_model, tok, roles, tmp_path / "r2") == mu
        # other rows are another entry: measured, not read (`evaluate` here fails the test)
        fewer = {role: rows[:2] for role, rows in roles.items()}
        with pytest.raises(pytest.fail.Exception, match="evaluated again"):
            U.target_utility(tiny_model, tok, fewer, tmp_path / "r3")

    out = unlearn(_small_run(tiny_model, tmp_path / "a", **kw))
    saved = json.loads((out / "uld_config.json").read_text())
    assert saved["min_utility"] == {"fraction": 0.5, "least": 0.5 * mu}
    assert all("model_utility" in h for h in saved["epochs_evaluated"])
    # a floor no epoch reaches (the tiny target's M.U. is 0, so the floor is faked): the epoch
    # with the highest M.U. is kept (the first, on a tie), with a warning
    monkeypatch.setattr(U, "target_utility", lambda *a, **k: 1e9)
    capsys.readouterr()
    out = unlearn(_small_run(tiny_model, tmp_path / "b", **kw))
    saved = json.loads((out / "uld_config.json").read_text())
    printed = capsys.readouterr().out
    assert printed.count("model_utility below 5e+08, not a candidate") == 2
    assert "warning: no epoch kept M.U. >= 5e+08" in printed
    history = saved["epochs_evaluated"]
    best_mu = max(h["model_utility"] for h in history)
    assert saved["best_epoch"] == next(h["epoch"] for h in history if h["model_utility"] == best_mu)


def test_answer_probs_on_answer_positions_only_match_full_logits(tiny_model, trained_assistant):
    from uld.data.format import encode_qa, pad
    from uld.evaluate import answer_probs

    target, tok = load_model(tiny_model)
    model = ULDModel(target, trained_assistant[0], alpha=0.75, filter=0.05)
    qs, ans = ["Where was Ilse born?", "Who?"], ["In Tartu, Estonia.", "Nobody at all."]
    got = answer_probs(model, tok, qs, ans)
    batch = pad([encode_qa(tok, q, a) for q, a in zip(qs, ans, strict=True)], tok.pad_token_id)
    with torch.no_grad():
        logits = model(batch["input_ids"], batch["attention_mask"]).logits
    logp = torch.log_softmax(logits[:, :-1], -1)
    labels = batch["labels"][:, 1:]
    mask = labels != -100
    tok_logp = logp.gather(-1, labels.clamp(min=0)[..., None]).squeeze(-1) * mask
    expected = torch.exp(tok_logp.sum(-1) / mask.sum(-1))
    torch.testing.assert_close(got.float(), expected, atol=1e-5, rtol=1e-4)


def test_same_seed_same_adapter(tiny_model, tmp_path):
    from safetensors.torch import load_file

    outs = [unlearn(_small_run(tiny_model, tmp_path / f"u{i}", epochs=1, lr=1e-2)) for i in (0, 1)]
    a, b = (load_file(str(o / "adapter_model.safetensors")) for o in outs)
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


def test_general_rows_join_d_r_and_need_a_retain_term(tiny_model, tmp_path):
    extra = [
        {"question": f"What is thing {i}?", "answer": f"Thing {i} is a thing."} for i in range(5)
    ]
    (tmp_path / "general.json").write_text(json.dumps(extra))
    out = unlearn(
        _small_run(tiny_model, tmp_path / "u", max_steps=1, general=str(tmp_path / "general.json"))
    )
    saved = json.loads((out / "uld_config.json").read_text())
    forget, retain = load_split("forget01"), load_split("retain99")
    assert saved["d_r_rows"] == len(retain_set(retain, forget)) + len(extra)
    with pytest.raises(ValueError, match="no retain term"):
        unlearn(
            _small_run(
                tiny_model, tmp_path / "g", method="ga", general=str(tmp_path / "general.json")
            )
        )
    forget_q = [{"question": forget[0]["question"], "answer": "x"}]
    (tmp_path / "bad.json").write_text(json.dumps(forget_q))
    with pytest.raises(DataError, match="shares"):
        unlearn(_small_run(tiny_model, tmp_path / "b", general=str(tmp_path / "bad.json")))
    assert not (tmp_path / "g").exists() and not (tmp_path / "b").exists()


def test_builtin_general_rows_are_the_targets_own_answers(tiny_model, tmp_path):
    from uld.data.general import general_prompts, knowledge_prompts
    from uld.evaluate import generate_answers
    from uld.methods import general_rows

    # the random tiny model answers only newlines: nothing to learn from, said clearly
    with pytest.raises(DataError, match="answered none"):
        general_rows("builtin", tiny_model)
    # with every blank token's (tied) embedding zeroed it writes visible text
    model, tok = load_model(tiny_model)
    blank = [i for i in range(len(tok)) if not tok.decode([i]).strip()]
    with torch.no_grad():
        model.get_input_embeddings().weight[blank] = 0.0
    model.save_pretrained(tmp_path / "m")
    tok.save_pretrained(tmp_path / "m")
    rows = general_rows("builtin", str(tmp_path / "m"))
    prompts = general_prompts()
    answers = generate_answers(model.eval(), tok, prompts, 16, 64, progress=False)
    assert rows == [
        {"question": q, "answer": a} for q, a in zip(prompts, answers, strict=True) if a
    ]
    assert len(rows) > len(prompts) // 2
    # sources join with commas: the built-in sets answered in one pass, then a file's rows
    extra = [{"question": "What is thing 1?", "answer": "A thing.", "note": "dropped"}]
    (tmp_path / "extra.json").write_text(json.dumps(extra))
    both = general_rows(f"builtin, knowledge,{tmp_path / 'extra.json'}", str(tmp_path / "m"))
    facts = knowledge_prompts()
    assert [r["question"] for r in both[: len(rows)]] == [r["question"] for r in rows]
    assert {r["question"] for r in both[len(rows) : -1]} <= set(facts)
    assert len(both) - len(rows) - 1 > len(facts) // 2
    assert both[-1] == {"question": "What is thing 1?", "answer": "A thing."}


def test_per_epoch_evaluation_does_not_change_training(tiny_model, tmp_path, monkeypatch):
    """Evaluating after each epoch must leave the training path alone: the last epoch's adapter
    is the same with and without it (evaluating must not draw the training's random numbers)."""
    from safetensors.torch import load_file

    import uld.runs as runs_module

    monkeypatch.setattr(runs_module, "load_trainable", lambda model, best: None)  # keep the last
    adapters = []
    for name, kw in [("plain", {}), ("evaluated", {"eval_metric": "forget_quality"})]:
        cfg = _small_run(tiny_model, tmp_path / name, epochs=3, lr=1e-2, reference=tiny_model)
        for k, v in kw.items():
            setattr(cfg, k, v)
        adapters.append(load_file(str(unlearn(cfg) / "adapter_model.safetensors")))
    assert adapters[0].keys() == adapters[1].keys()
    for k in adapters[0]:
        torch.testing.assert_close(adapters[0][k], adapters[1][k], rtol=0, atol=0)

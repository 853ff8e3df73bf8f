"""`uld lm-eval` and `uld.harness.ULDLM` on tiny models, offline: the built-in world-facts split
as a local multiple-choice task; every log-likelihood lm-eval records is checked against one
computed here from the model's own logits, and its accuracy against the one they give."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest
import torch
from conftest import random_uld, untied_target

from uld.cli import main
from uld.data.real import world_facts
from uld.harness import uld_lm_class
from uld.logit_diff import ULDModel, decode, load_any

lm_eval = pytest.importorskip("lm_eval")

TASK = "uld_world_facts"
CONTEXT = "Question: {}\nAnswer:"


@pytest.fixture(autouse=True)
def _offline(monkeypatch, tmp_path_factory):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_DATASETS_OFFLINE", "1")
    monkeypatch.setenv("HF_DATASETS_CACHE", str(tmp_path_factory.getbasetemp() / "datasets"))


@pytest.fixture(scope="module")
def target(tiny_model, tmp_path_factory) -> str:
    return untied_target(tiny_model, tmp_path_factory.mktemp("harness") / "target")


@pytest.fixture(scope="module")
def uld_folder(target, tmp_path_factory) -> str:
    return random_uld(target, tmp_path_factory.mktemp("harness") / "uld", std=0.5, alpha=1.0)


@pytest.fixture(scope="module")
def task_dir(tmp_path_factory) -> Path:
    """world_facts as a 4-way multiple-choice task on a local JSON-lines file; the true answer
    sits at position i mod 4 of row i."""
    folder = tmp_path_factory.mktemp("tasks")
    rows = []
    for i, r in enumerate(world_facts()):
        wrong = r["perturbed_answer"][:3]
        gold = i % (len(wrong) + 1)
        rows.append(
            {"question": r["question"], "choices": wrong[:gold] + [r["answer"]] + wrong[gold:]}
            | {"gold": gold}
        )
    (folder / "world_facts.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    (folder / f"{TASK}.yaml").write_text(
        f"task: {TASK}\n"
        "dataset_path: json\n"
        f"dataset_kwargs:\n  data_files:\n    test: {folder / 'world_facts.jsonl'}\n"
        "test_split: test\n"
        "output_type: multiple_choice\n"
        'doc_to_text: "Question: {{question}}\\nAnswer:"\n'
        "doc_to_choice: choices\n"
        "doc_to_target: gold\n"
        "metric_list:\n  - metric: acc\n"
        "metadata:\n  version: 1\n"
    )
    return folder


def own_loglikelihood(model, tok, context: str, continuation: str) -> float:
    """log p(continuation | context) from the model's logits (a ULD model's combined ones),
    with lm-eval's split of the tokens: the whole text encoded, the context's tokens first."""
    ctx = tok(context, add_special_tokens=False).input_ids
    whole = tok(context + continuation, add_special_tokens=False).input_ids
    ids = torch.tensor([whole])
    with torch.no_grad():
        logp = torch.log_softmax(model(ids).logits.float(), dim=-1)[0]
    return sum(float(logp[i - 1, whole[i]]) for i in range(len(ctx), len(whole)))


@pytest.mark.parametrize("kind", ["plain", "uld"])
def test_lm_eval_accuracy_and_loglikelihoods_are_the_models_own(
    kind, target, uld_folder, task_dir, tmp_path
):
    folder = target if kind == "plain" else uld_folder
    out = tmp_path / "lm-eval"
    argv = ["lm-eval", "--model", folder, "--tasks", TASK, "--include-path", str(task_dir)]
    assert main([*argv, "--limit", "12", "--batch-size", "3", "--out", str(out)]) == 0
    results = json.loads((out / "results.json").read_text())
    samples = [
        json.loads(line) for line in (out / f"samples_{TASK}.jsonl").read_text().split("\n") if line
    ]
    assert len(samples) == 12 and TASK in (out / "results.md").read_text()
    model, tok = load_any(folder)
    assert isinstance(model, ULDModel) == (kind == "uld")
    assert results["config"]["uld"]["mode"] == ("uld" if kind == "uld" else "plain")
    correct = []
    for s in samples:
        doc = s["doc"]
        ours = [
            own_loglikelihood(model, tok, CONTEXT.format(doc["question"]), " " + c)
            for c in doc["choices"]
        ]
        theirs = [resp[0][0] for resp in s["resps"]]
        assert theirs == pytest.approx(ours, abs=1e-4)
        correct.append(max(range(len(ours)), key=ours.__getitem__) == doc["gold"])
    assert results["results"][TASK]["acc,none"] == pytest.approx(sum(correct) / len(correct))


def test_the_uld_model_scores_differently_from_its_target(target, uld_folder):
    """The ULD model's log-likelihoods are the combined logits', not the target's."""
    lm = uld_lm_class()(uld_folder)
    plain = uld_lm_class()(target)
    requests = [("Question: What is the capital of France?\nAnswer:", " Paris")]
    ours = lm.loglikelihood([_instance("loglikelihood", r) for r in requests])
    theirs = plain.loglikelihood([_instance("loglikelihood", r) for r in requests])
    model, tok = load_any(uld_folder)
    assert ours[0][0] == pytest.approx(own_loglikelihood(model, tok, *requests[0]), abs=1e-4)
    model, tok = load_any(target)
    assert theirs[0][0] == pytest.approx(own_loglikelihood(model, tok, *requests[0]), abs=1e-4)
    assert abs(ours[0][0] - theirs[0][0]) > 1e-3


def _instance(kind: str, args: tuple, idx: int = 0):
    from lm_eval.api.instance import Instance

    return Instance(request_type=kind, doc={}, arguments=args, idx=idx)


def test_generate_until_is_uld_decoding_cut_at_the_stop_strings(uld_folder):
    lm = uld_lm_class()(uld_folder, batch_size=2)
    model, tok = load_any(uld_folder)
    contexts = [CONTEXT.format(r["question"]) for r in world_facts()[:3]]
    settings = {"until": ["ing"], "max_gen_toks": 12, "do_sample": False}
    got = lm.generate_until(
        [_instance("generate_until", (c, settings), i) for i, c in enumerate(contexts)]
    )
    for context, text in zip(contexts, got, strict=True):
        ids = torch.tensor([tok(context).input_ids])
        new = decode(model, ids, max_new_tokens=12)[0, ids.shape[1] :]
        assert text == tok.decode(new, skip_special_tokens=True).split("ing")[0]


def test_the_class_is_registered_with_lm_eval_and_takes_model_args(uld_folder):
    from lm_eval.api.registry import get_model

    assert get_model("uld") is uld_lm_class()
    lm = get_model("uld").create_from_arg_string(f"pretrained={uld_folder},alpha=0.5")
    assert isinstance(lm.model, ULDModel) and lm.model.alpha == 0.5


@pytest.mark.parametrize(
    "argv, message",
    [
        (["--tasks", "no_such_task"], "no task no_such_task"),
        (["--tasks", ","], "--tasks is empty"),
        (["--tasks", TASK, "--include-path", "NOWHERE"], "--include-path NOWHERE"),
    ],
)
def test_bad_lm_eval_input_exits_2_before_loading(
    tiny_model, task_dir, tmp_path, capsys, argv, message
):
    out = tmp_path / "out"
    full = ["lm-eval", "--model", tiny_model, "--include-path", str(task_dir), *argv]
    full = [str(tmp_path / a) if a == "NOWHERE" else a for a in full]
    assert main([*full, "--out", str(out)]) == 2
    assert message.replace("NOWHERE", str(tmp_path / "NOWHERE")) in capsys.readouterr().err
    assert not out.exists()


@pytest.mark.parametrize(
    "module, argv, extra",
    [
        ("lm_eval", ["lm-eval", "--tasks", TASK, "--out", "OUT"], "uld[eval]"),
        ("uvicorn", ["serve"], "uld[serve]"),
        ("fastapi", ["serve"], "uld[serve]"),
    ],
)
def test_a_command_without_its_extra_says_which_to_install(
    module, argv, extra, tiny_model, tmp_path, monkeypatch, capsys
):
    monkeypatch.setitem(sys.modules, module, None)  # import fails as if not installed
    out = tmp_path / "out"
    argv = [str(out) if a == "OUT" else a for a in argv]
    assert main([*argv, "--model", tiny_model]) == 2
    err = capsys.readouterr().err
    assert extra in err and module in err
    assert not out.exists()

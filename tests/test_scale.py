"""Several processes, mixed precision, gradient checkpointing, memory: `uld.dist`,
`uld.trainer.train`'s precision and batch split, `uld.evaluate.merge_shards`."""

from __future__ import annotations

import ast
import json
import math
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from accelerate import Accelerator
from peft import get_peft_model
from safetensors.torch import load_file
from transformers import AutoConfig, AutoModelForCausalLM, LlamaConfig, LlamaPreTrainedModel

from uld import dist
from uld.assistant import decoder_layers, lora_config
from uld.cli import main
from uld.compare import claim
from uld.config import FinetuneConfig, UnlearnConfig, read_yaml
from uld.data.format import Collator, QADataset
from uld.data.synthetic import builtin_splits
from uld.evaluate import merge_shards, shard_roles
from uld.finetune import finetune
from uld.logit_diff import ULDModel, logit_difference
from uld.losses import answer_logits, finetune_objective
from uld.memory import method_memory, run_memory, shapes
from uld.methods import build_assistant, method
from uld.models import load_model
from uld.runs import needs_whole_weights, unlearn
from uld.trainer import EpochEval, WeightAverage, check_precision, checkpoint_dir, train

REPO = Path(__file__).resolve().parent.parent


def _data(tmp_path: Path) -> Path:
    """forget 8 rows, retain 8 rows, holdout 4 rows of the built-in benchmark, as files."""
    full = builtin_splits(n_authors=6)["full"]
    folder = tmp_path / "data"
    folder.mkdir()
    for name, rows in (("forget", full[:8]), ("retain", full[8:16]), ("holdout", full[16:20])):
        (folder / f"{name}.json").write_text(json.dumps(rows))
    return folder


def _logged(text: str) -> list[dict]:
    """The Trainer's step logs ({'loss': ..., ...} lines) printed in `text`."""
    return [
        ast.literal_eval(line.strip())
        for line in text.splitlines()
        if line.strip().startswith("{'loss'")
    ]


def _unlearn(model: str, data: Path, out: Path) -> list[str]:
    return [
        "unlearn", "--method", "uld", "--model", model, "--data", str(data),
        "--forget", "forget", "--retain", "retain", "--out", str(out), "--layers", "2",
        "--lora-rank", "4", "--lora-dropout", "0", "--no-paraphrase", "--no-perturbed",
        "--general", "", "--batch-size", "4", "--epochs", "3", "--alpha", "0.5", "--no-check",
    ]  # fmt: skip


def _eval(model: Path, data: Path, out: Path) -> list[str]:
    return [
        "eval", "--model", str(model), "--data", str(data), "--forget", "forget",
        "--retain", "retain", "--holdout", "holdout", "--real-authors", "", "--world-facts", "",
        "--batch-size", "3", "--out", str(out),
    ]  # fmt: skip


def _launch(n: int, *commands: list[str], timeout: int = 150) -> subprocess.CompletedProcess:
    """`commands` run in each of `n` CPU processes (gloo). torchrun is what `accelerate launch
    --multi_gpu` runs on GPUs; on CPUs accelerate launches several processes only through MPI."""
    argv = [a for c in commands for a in (*c, "--")][:-1]
    env = os.environ | {"OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}
    launcher = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", str(n)]
    cmd = [*launcher, "--standalone", str(REPO / "tests" / "multiprocess_run.py"), *argv]
    proc = subprocess.Popen(
        cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env, cwd=REPO,
        start_new_session=True,  # a last-resort SIGKILL reaches its whole group
    )  # fmt: skip
    try:
        out, err = proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        proc.terminate()  # torchrun stops its workers (each in a session of its own), then ends
        try:
            out, err = proc.communicate(timeout=30)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            out, err = proc.communicate()
        pytest.fail(f"{n} processes did not finish in {timeout} s: {err[-2000:]}")
    return subprocess.CompletedProcess(cmd, proc.returncode, out, err)


def test_two_processes_train_and_evaluate_as_one(tiny_model, tmp_path, capsys):
    """ULD on 2 processes (gloo, global batch 4 = 2 x 2) takes the steps of 1 process on
    batches of 4: the same logged losses (printed to 4 significant digits: equal to one unit in
    the last) and the same
    adapter (float32 tolerance 1e-5; the processes' sums meet in another order), although the
    two halves of a batch hold different numbers of answer tokens. `uld eval` on 2 processes
    gives each per-item value and aggregate of 1 process, and so does each epoch's evaluation
    during training, sharded alike (the same epoch is kept) (relative tolerance 1e-5, Min-K%++
    1e-4: the rows are batched differently). Only the main process prints and writes."""
    data = _data(tmp_path)
    one, two = tmp_path / "one", tmp_path / "two"
    best = ["--eval-metric", "forget_rouge"]  # each epoch evaluated, the best kept
    assert main([*_unlearn(tiny_model, data, one), *best]) == 0
    logged_one = _logged(capsys.readouterr().out)
    assert main(_eval(one, data, tmp_path / "eval-one")) == 0
    capsys.readouterr()
    run = _launch(
        2, [*_unlearn(tiny_model, data, two), *best], _eval(one, data, tmp_path / "eval-two")
    )
    assert run.returncode == 0, run.stderr[-3000:]
    logged_two = _logged(run.stdout)
    assert len(logged_one) == len(logged_two) >= 2
    for a, b in zip(logged_one, logged_two, strict=True):
        assert a["epoch"] == b["epoch"]
        for key in ("loss", "l_f", "l_u"):
            x, y = float(a[key]), float(b[key])  # printed to 4 significant digits
            assert abs(x - y) <= 1.01 * 10 ** (math.floor(math.log10(abs(x))) - 3), (key, a, b)
    w1 = load_file(str(one / "adapter_model.safetensors"))
    w2 = load_file(str(two / "adapter_model.safetensors"))
    assert w1.keys() == w2.keys()
    for k in w1:
        torch.testing.assert_close(w2[k], w1[k], rtol=1e-5, atol=1e-5)
    assert any(v.abs().max() > 0 for k, v in w1.items() if "lora_B" in k)  # (peft starts B at 0)
    # the per-epoch evaluations (sharded on 2 processes) and the epoch kept
    c1, c2 = (json.loads((d / "uld_config.json").read_text()) for d in (one, two))
    assert c1["best_epoch"] == c2["best_epoch"]
    assert len(c1["epochs_evaluated"]) == len(c2["epochs_evaluated"]) == 3
    for a, b in zip(c1["epochs_evaluated"], c2["epochs_evaluated"], strict=True):
        assert a.keys() == b.keys() and a["epoch"] == b["epoch"]
        for key in a.keys() - {"train_seconds"}:  # (a timing)
            assert b[key] == pytest.approx(a[key], rel=1e-5, abs=1e-6), key
    # the evaluations: one table and one eval.json each, the main process's only
    e1 = json.loads((tmp_path / "eval-one" / "eval.json").read_text())
    e2 = json.loads((tmp_path / "eval-two" / "eval.json").read_text())
    assert e2["processes"] == 2 and run.stdout.count("wrote ") == 1
    for key, v in e1["summary"].items():
        if isinstance(v, float):
            assert e2["summary"][key] == pytest.approx(v, rel=1e-5, abs=1e-6), key
        else:
            assert e2["summary"][key] == v, key
    worst: dict[str, float] = {}
    for role, split in e1["splits"].items():
        other = e2["splits"][role]
        assert other["rows"] == split["rows"] and len(other["items"]) == split["rows"]
        for a, b in zip(split["items"], other["items"], strict=True):
            assert a.keys() == b.keys()
            for key, v in a.items():
                if isinstance(v, float):
                    gap = abs(b[key] - v) / max(abs(v), 1e-3)
                    worst[key] = max(worst.get(key, 0.0), gap)
                else:
                    assert b[key] == v, (role, key)
    # Min-K%++ divides by the spread of the vocabulary's log-probabilities: 1e-4
    assert worst.pop("min_k_pp") < 1e-4 and max(worst.values()) < 1e-5, worst


def test_two_processes_train_a_full_fine_tuning_baseline_as_one(tiny_model, tmp_path):
    """NPO+KL (every weight trained, a frozen reference, a KL term on retain rows) on 2 processes
    ends with the weights of 1 process on the same global batch (float32 tolerance 1e-5)."""
    data = _data(tmp_path)

    def unlearn(out: Path) -> list[str]:
        return [
            "unlearn", "--method", "npo+kl", "--model", tiny_model, "--data", str(data),
            "--forget", "forget", "--retain", "retain", "--out", str(out), "--batch-size", "4",
            "--epochs", "2", "--lr", "1e-3", "--no-check",
        ]  # fmt: skip

    one, two = tmp_path / "one", tmp_path / "two"
    assert main(unlearn(one)) == 0
    run = _launch(2, unlearn(two))
    assert run.returncode == 0, run.stderr[-3000:]
    w0 = load_file(str(Path(tiny_model) / "model.safetensors"))
    w1 = load_file(str(one / "model.safetensors"))
    w2 = load_file(str(two / "model.safetensors"))
    assert w1.keys() == w2.keys()
    for k in w1:
        torch.testing.assert_close(w2[k], w1[k], rtol=1e-5, atol=1e-5)
    assert any(not torch.equal(w1[k], w0[k]) for k in w1 if k in w0)  # it trained


def _files(folder: Path) -> dict[str, int]:
    """Every file under `folder` (path relative to it -> permission bits)."""
    files = (f for f in folder.rglob("*") if f.is_file())
    return {str(f.relative_to(folder)): f.stat().st_mode & 0o777 for f in files}


def test_compare_on_two_processes_gives_one_processs_tables(tiny_model, tmp_path, capsys):
    """`uld compare` under a launcher: both processes train and evaluate each run together, in
    the order the main process gives. The report's table equals 1 process's (relative 1e-5,
    timings aside) and the folder holds the same files, none written by the process that is
    not the main one (it runs with umask 077, the main one and the 1-process run with 022: the
    files' permissions must be the same). A run
    another process holds is skipped by both; a second compare in the same launch finds every
    row evaluated and trains nothing."""
    data = _data(tmp_path)

    def plan(out: Path) -> str:
        path = tmp_path / f"{out.name}.yaml"
        path.write_text(
            f"target: {tiny_model}\nreference: {tiny_model}\nout: {out}\ndata: {data}\n"
            "common: {forget: forget, retain: retain, batch_size: 4, epochs: 2, check: false}\n"
            "eval: {forget: forget, retain: retain, holdout: holdout, real_authors: '',"
            " world_facts: ''}\n"
            "runs:\n  uld: {layers: 2, lora_rank: 4, lora_dropout: 0, alpha: 0.5,"
            " paraphrase: false, perturbed: false, general: ''}\n  ga: {lr: 1.0e-3}\n"
        )
        return str(path)

    one, two = tmp_path / "one", tmp_path / "two"
    umask = os.umask(0o022)  # as the launch's main process
    try:
        assert main(["compare", "--config", plan(one), "--only", "uld"]) == 0
    finally:
        os.umask(umask)
    capsys.readouterr()
    with claim(two / "ga"):  # another process is on `ga`: this launch skips it
        run = _launch(2, ["compare", "--config", plan(two)], ["compare", "--config", plan(two)])
    assert run.returncode == 0, run.stderr[-3000:]
    printed = run.stdout
    assert printed.count("[compare] training uld") == 1 and "training ga" not in printed
    assert printed.count("[compare] ga: another process is on it") == 2
    assert printed.count("evaluated already") == 2 and printed.count("[compare] wrote") == 2
    s1, s2 = (json.loads((d / "report" / "summary.json").read_text()) for d in (one, two))
    assert list(s1) == list(s2) == ["target", "uld"]
    timing = {"train_seconds", "eval_seconds", "relative_time", "seconds_per_step"}
    for name in s1:
        assert s1[name].keys() == s2[name].keys()
        for key, v in s1[name].items():
            if isinstance(v, float) and key not in timing:
                assert s2[name][key] == pytest.approx(v, rel=1e-5, abs=1e-6), (name, key)
            elif key not in timing:
                assert s2[name][key] == v, (name, key)
    assert s2["uld"]["forget_quality"] is not None and s2["target"]["forget_quality"] == 1.0
    assert json.loads((two / "uld" / "eval" / "eval.json").read_text())["processes"] == 2
    # the same files with the same permissions (safetensors writes 0o600 whatever the umask)
    f2 = _files(two)
    assert {f: m for f, m in f2.items() if not f.startswith("ga/")} == _files(one)
    assert sorted(f for f in f2 if f.startswith("ga/")) == ["ga/.lock", "ga/.lock.pid"]


def test_more_processes_than_rows_is_refused_before_anything_is_written(tmp_path, monkeypatch):
    monkeypatch.setenv("WORLD_SIZE", "5")
    with pytest.raises(ValueError, match="5 processes but only 4 holdout rows"):
        dist.check_rows({"forget": 8, "holdout": 4})
    data = _data(tmp_path)
    assert main(_eval(tmp_path / "none", data, tmp_path / "eval")) == 2
    assert not (tmp_path / "eval").exists()


def test_shares_cover_the_rows_in_order():
    for n, world in ((10, 3), (4, 4), (7, 2)):
        shares = [dist.share(n, world, r) for r in range(world)]
        assert [i for s in shares for i in s] == list(range(n))
        assert max(map(len, shares)) - min(map(len, shares)) <= 1


def test_merged_shards_weigh_each_mean_by_what_it_is_over():
    """Two shares of a forget split: rouge_l and prob averaged by rows, the truth-ratio score by
    the rows that have a truth ratio; indices renumbered."""
    a = {"forget": {"rows": 2, "items": [{"index": 0, "truth_ratio": 1.0}, {"index": 1}],
                    "errors": [{"index": 1, "error": "x"}], "rouge_l": 0.5, "prob": 0.2,
                    "truth_ratio": 0.9}}  # fmt: skip
    b = {"forget": {"rows": 1, "items": [{"index": 0, "truth_ratio": 0.5}], "errors": [],
                    "rouge_l": 0.8, "prob": 0.5, "truth_ratio": 0.3}}  # fmt: skip
    m = merge_shards([a, b])["forget"]
    assert [it["index"] for it in m["items"]] == [0, 1, 2]
    assert m["errors"] == [{"index": 1, "error": "x"}]
    assert m["rouge_l"] == pytest.approx((2 * 0.5 + 0.8) / 3)
    assert m["prob"] == pytest.approx((2 * 0.2 + 0.5) / 3)
    assert m["truth_ratio"] == pytest.approx((0.9 + 0.3) / 2)


def test_shards_take_the_whole_splits_number_of_perturbed_answers():
    rows = [
        {"question": "q", "answer": "a", "paraphrased_answer": "p", "perturbed_answer": ["x"] * n}
        for n in (3, 2, 5, 4)
    ]
    parts = [shard_roles({"forget": rows}, lambda n, r=r: dist.share(n, 2, r)) for r in (0, 1)]
    assert [len(r["perturbed_answer"]) for p in parts for r in p["forget"]] == [2, 2, 2, 2]


def test_python_dash_m_uld_is_the_command():
    run = subprocess.run(
        [sys.executable, "-m", "uld", "unlearn", "--help"], capture_output=True, text=True
    )
    assert run.returncode == 0 and "--gradient-checkpointing" in run.stdout
    assert "--bf16" in run.stdout and "--fp16" in run.stdout


# ---------------------------------------------------------------- precision and memory


def _rows(n: int = 8) -> list[dict]:
    return builtin_splits(n_authors=6)["full"][:n]


def _train(model_dir: str, out: Path, **kwargs):
    """One fine-tuning step on 8 rows of the tiny model through `uld.trainer.train`."""
    net, tok = load_model(model_dir)
    net.get_input_embeddings().weight.requires_grad_(False)
    dtypes = []  # of each call of the first layer's query projection
    q_proj = decoder_layers(net)[0].self_attn.q_proj
    q_proj.register_forward_hook(lambda m, a, o: dtypes.append(o.dtype))
    train(
        net, QADataset(_rows(), tok), Collator(tok.pad_token_id), out, finetune_objective,
        epochs=1, lr=1e-2, batch_size=8, max_steps=1, **kwargs,
    )  # fmt: skip
    return net, len(dtypes), set(dtypes)


def test_gradient_checkpointing_recomputes_each_layer_and_trains_alike(tiny_model, tmp_path):
    plain, calls, _ = _train(tiny_model, tmp_path / "plain")
    ckpt, ckpt_calls, _ = _train(tiny_model, tmp_path / "ckpt", gradient_checkpointing=True)
    assert (calls, ckpt_calls) == (1, 2)  # the layer's forward again in the backward pass
    for (n, a), b in zip(plain.named_parameters(), ckpt.parameters(), strict=True):
        torch.testing.assert_close(b, a, rtol=1e-5, atol=1e-6, msg=n)
    start, _ = load_model(tiny_model)
    assert not torch.equal(decoder_layers(plain)[0].mlp.up_proj.weight,
                           decoder_layers(start)[0].mlp.up_proj.weight)  # fmt: skip


def test_bf16_trains_in_bf16_on_a_cpu(tiny_model, tmp_path):
    """torch runs bf16 autocast on CPUs: the projections compute in bf16, the weights stay
    float32 and change, the loss is finite."""
    net, _, dtypes = _train(tiny_model, tmp_path / "bf16", precision="bf16")
    assert dtypes == {torch.bfloat16}
    assert all(p.dtype == torch.float32 and torch.isfinite(p).all() for p in net.parameters())
    _, _, fp32 = _train(tiny_model, tmp_path / "fp32", precision="fp32")
    assert fp32 == {torch.float32}


def test_precisions_this_machine_cannot_run_are_refused(monkeypatch):
    assert check_precision("auto") == "" and check_precision("bf16") == "bf16"
    with pytest.raises(ValueError, match="--fp16 mixed precision needs a GPU"):
        check_precision("fp16")
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda *a, **k: False)
    monkeypatch.setattr(torch.cuda, "get_device_name", lambda *a: "Tesla T4")
    with pytest.raises(ValueError, match=r"Tesla T4\) has no bfloat16.*--fp16"):
        check_precision("bf16")
    assert check_precision("auto") == "" and check_precision("fp16") == "fp16"


@pytest.mark.parametrize(
    "flags, message", [(["--bf16", "--fp16"], "give one of them"), (["--fp16"], "needs a GPU")]
)
def test_bad_precision_flags_end_the_command_with_nothing_written(
    tiny_model, tmp_path, capsys, flags, message
):
    data, out = _data(tmp_path), tmp_path / "out"
    assert main([*_unlearn(tiny_model, data, out), "--max-steps", "1", *flags]) == 2
    assert message in capsys.readouterr().err
    assert not out.exists() and not Path(f"{out}.ckpt").exists()
    assert main(["finetune", "--model", tiny_model, "--out", str(out), *flags]) == 2
    assert not out.exists() and not Path(f"{out}.ckpt").exists()


def test_the_combination_is_float32_from_bf16_logits(trained_assistant, tiny_model):
    g = torch.Generator().manual_seed(0)
    l_t, l_a = (torch.randn(3, 50, generator=g).bfloat16() for _ in "ta")
    out = logit_difference(l_t, l_a, 0.8, 0.1)
    assert out.dtype == torch.float32
    torch.testing.assert_close(out, logit_difference(l_t.float(), l_a.float(), 0.8, 0.1))
    assistant, tok = trained_assistant
    target, _ = load_model(tiny_model, dtype=torch.bfloat16)
    model = ULDModel(target, assistant, alpha=0.8, filter=0.1)
    ids = tok(["Where was the author born?"], return_tensors="pt").input_ids
    res = model(ids, return_both=True)
    l_t, l_a = res.parts
    assert res.logits.dtype == l_t.dtype == l_a.dtype == torch.float32
    torch.testing.assert_close(res.logits, logit_difference(l_t, l_a, 0.8, 0.1))
    with torch.autocast("cpu", dtype=torch.bfloat16):  # the training loss: float32 logits
        logits, _ = answer_logits(assistant, Collator(tok.pad_token_id)(
            [QADataset(_rows(2), tok)[i] for i in range(2)]))  # fmt: skip
    assert logits.dtype == torch.float32


def test_memory_formula_by_hand_on_a_tiny_config():
    """4 layers, hidden 32, MLP 64, 4 heads of 8, 2 KV heads, vocabulary 100, tied. A layer:
    q 32x32 + k 32x16 + v 32x16 + o 32x32 + gate, up, down 3 x 32x64 + 2 norms of 32 = 9,280;
    the rest: 100 x 32 embeddings + 32 final norm = 3,232; LoRA per rank and layer: (32+32) +
    (32+16) x 2 + (32+32) + (32+64) x 3 = 512."""
    config = LlamaConfig(vocab_size=100, hidden_size=32, intermediate_size=64,
                         num_hidden_layers=4, num_attention_heads=4, num_key_value_heads=2,
                         tie_word_embeddings=True)  # fmt: skip
    counts = shapes(config)
    assert counts == {"total": 4 * 9280 + 3232, "embeddings": 3200, "layers": 4,
                      "per_layer": 9280, "rest": 3232, "lora_per_layer_per_rank": 512}  # fmt: skip
    # ULD, 2 layers, rank 4, fp32: 2 x 9,280 + 3,232 + 4,096 LoRA weights; LoRA trained
    uld = method_memory(counts, "uld", k=2, rank=4, bytes_per_param=4)
    assert uld == {"weights": 25888 * 4, "gradients": 4096 * 4, "adamw": 8192 * 4,
                   "total": (25888 + 4096 + 8192) * 4}  # fmt: skip
    full = method_memory(counts, "full+ref", bytes_per_param=2)  # policy + reference
    assert full["weights"] == 2 * 40352 * 2 and full["gradients"] == (40352 - 3200) * 2
    lora = method_memory(counts, "lora+ref", rank=4, bytes_per_param=2)
    assert lora["weights"] == (40352 + 4 * 4 * 512) * 2 and lora["adamw"] == 2 * 8192 * 2


def test_memory_of_the_models_uld_builds_is_the_formulas(tiny_model):
    counts = shapes(AutoConfig.from_pretrained(tiny_model))
    assistant, _ = build_assistant(tiny_model, k=2, rank=4, alpha=8, dropout=0.0)
    assert run_memory(assistant) == method_memory(counts, "uld", 2, 4, bytes_per_param=4)
    net, _ = load_model(tiny_model)
    net.get_input_embeddings().weight.requires_grad_(False)
    ref, _ = load_model(tiny_model)
    assert run_memory(net, [ref]) == method_memory(counts, "full+ref", bytes_per_param=4)
    base, _ = load_model(tiny_model)
    lora = get_peft_model(base, lora_config(base, None, 4, 4, 0.0, experts=True))
    assert run_memory(lora, [None]) == method_memory(counts, "lora+ref", 0, 4, bytes_per_param=4)


def test_uld_training_loads_only_the_assistants_layers(tiny_model, tmp_path, monkeypatch, capsys):
    """With its alpha given, no general prompts and no after-run check, `uld unlearn --method
    uld` never loads the whole target: every model it loads has K layers. It prints the
    expected memory first."""
    loaded = []
    real = AutoModelForCausalLM.from_pretrained

    def spy(*args, config=None, **kwargs):
        loaded.append(config.num_hidden_layers)
        return real(*args, config=config, **kwargs)

    monkeypatch.setattr(AutoModelForCausalLM, "from_pretrained", spy)
    data = _data(tmp_path)
    assert main([*_unlearn(tiny_model, data, tmp_path / "out"), "--max-steps", "2"]) == 0
    assert loaded == [2]  # K = 2 of the target's 4
    assert "expected training memory per process: 0.00 GB" in capsys.readouterr().out


# ---------------------------------------------------------------- targets split across devices


def test_device_map_auto_answers_as_one_device(tiny_model, trained_assistant, tmp_path, capsys):
    """On this CPU machine `auto` puts every layer on the CPU: the answers are the same."""
    assistant, _ = trained_assistant
    target, _ = load_model(tiny_model)
    folder = tmp_path / "uld"
    ULDModel(target, assistant, alpha=0.5, filter=0.1).save_pretrained(folder, tiny_model)
    for model in (tiny_model, str(folder)):
        ask = ["generate", "--model", model, "--max-new-tokens", "8", "Where was he born?"]
        assert main(ask) == 0
        one = capsys.readouterr().out
        assert main([*ask, "--device-map", "auto"]) == 0
        assert capsys.readouterr().out == one


def test_device_map_refuses_a_model_that_cannot_be_split(tiny_model, tmp_path, monkeypatch, capsys):
    data = _data(tmp_path)
    monkeypatch.setattr(LlamaPreTrainedModel, "_no_split_modules", None)
    ask = [*_eval(Path(tiny_model), data, tmp_path / "eval"), "--device-map", "auto"]
    assert main(ask) == 2
    assert "cannot be split across devices" in capsys.readouterr().err
    assert not (tmp_path / "eval").exists()
    monkeypatch.setenv("WORLD_SIZE", "2")
    assert main(["generate", "--model", tiny_model, "--device-map", "auto", "Who?"]) == 2
    assert "launch one process" in capsys.readouterr().err


def test_the_zero3_recipe_loads_through_accelerates_config_machinery():
    """configs/accelerate_zero3.yaml as `accelerate launch --config_file` reads it, and the
    DeepSpeed file it names as accelerate's DeepSpeed plugin reads that (DeepSpeed itself is
    not installed here): ZeRO stage 3, whole 16-bit weights gathered when saving, and every
    size and precision left to the Trainer ("auto"), which fills them from uld's flags."""
    from accelerate.commands.config.config_args import load_config_from_file
    from accelerate.utils import DistributedType
    from accelerate.utils.deepspeed import HfDeepSpeedConfig

    cluster = load_config_from_file(str(REPO / "configs" / "accelerate_zero3.yaml"))
    assert cluster.distributed_type == DistributedType.DEEPSPEED and not cluster.use_cpu
    ds = HfDeepSpeedConfig(str(REPO / cluster.deepspeed_config["deepspeed_config_file"]))
    assert ds.is_zero3() and not ds.is_offload()
    assert ds.get_value("zero_optimization.stage3_gather_16bit_weights_on_model_save") is True
    for key in ("train_micro_batch_size_per_gpu", "gradient_accumulation_steps", "bf16.enabled"):
        assert ds.get_value(key) == "auto", key


# ---------------------------------------------------------------- DeepSpeed ZeRO-3, simulated


def test_zero3_is_read_from_the_launchers_environment(monkeypatch):
    assert not dist.zero3()
    monkeypatch.setenv("ACCELERATE_USE_DEEPSPEED", "true")  # as `accelerate launch` sets it
    monkeypatch.setenv("ACCELERATE_DEEPSPEED_ZERO_STAGE", "2")
    assert not dist.zero3()
    recipe = REPO / "configs" / "deepspeed_zero3.json"
    monkeypatch.setenv("ACCELERATE_DEEPSPEED_CONFIG_FILE", str(recipe))
    assert dist.zero3()  # the stage the recipe's file names


@pytest.fixture
def zero3(monkeypatch) -> list[dict]:
    """ZeRO-3 without DeepSpeed (not installed here): `uld.dist.zero3` says yes, and accelerate's
    `get_state_dict` returns the trained weights (recorded in the list returned) while it zeroes
    the model's own, as a process holding shards has no whole weights in the model."""
    gathered = []

    def get_state_dict(self, model, unwrap=True):
        inner = self.unwrap_model(model)
        gathered.append({k: v.detach().clone() for k, v in inner.state_dict().items()})
        with torch.no_grad():
            for p in inner.parameters():
                p.zero_()
        return gathered[-1]

    monkeypatch.setattr(dist, "zero3", lambda: True)
    monkeypatch.setattr(Accelerator, "get_state_dict", get_state_dict)
    return gathered


def test_under_zero3_the_gathered_weights_are_saved_by_the_main_process(
    tiny_model, tmp_path, zero3, monkeypatch
):
    """Every process calls accelerate's gathering once (a collective); the main process saves
    what it gathered, not the model's own parameters (`uld unlearn` on GA and `uld finetune`);
    a process that is not the main one writes no output."""
    data = _data(tmp_path)

    def ga(out: Path) -> UnlearnConfig:
        return UnlearnConfig(method="ga", model=tiny_model, data=str(data), forget="forget",
                             retain="retain", out=str(out), batch_size=4, max_steps=1, lr=1e-2,
                             check=False)  # fmt: skip

    monkeypatch.setattr(dist, "rank", lambda: 1)
    unlearn(ga(tmp_path / "rank1"))
    assert len(zero3) == 1 and not (tmp_path / "rank1").exists()
    monkeypatch.setattr(dist, "rank", lambda: 0)
    unlearn(ga(tmp_path / "ga"))
    finetune(tiny_model, "forget", tmp_path / "ft", str(data), batch_size=4, max_steps=1, lr=1e-2)
    assert len(zero3) == 3
    start = load_file(str(Path(tiny_model) / "model.safetensors"))
    for out, whole in ((tmp_path / "ga", zero3[1]), (tmp_path / "ft", zero3[2])):
        saved = load_file(str(out / "model.safetensors"))
        assert start.keys() <= saved.keys() <= whole.keys()
        for k, v in saved.items():
            assert torch.equal(v, whole[k]), k
        assert any(not torch.equal(saved[k], start[k]) for k in start)  # it trained


def test_under_zero3_what_needs_whole_weights_is_refused_before_anything_is_written(
    tiny_model, tmp_path, monkeypatch, capsys
):
    """Per-epoch selection, weight averaging, the after-run check, ULD and merged LoRA need the
    trained weights whole in one process: refused under ZeRO-3, naming the fix."""
    monkeypatch.setattr(dist, "zero3", lambda: True)
    data, out = _data(tmp_path), tmp_path / "out"
    npo = ["unlearn", "--method", "npo+kl", "--model", tiny_model, "--data", str(data),
           "--forget", "forget", "--retain", "retain", "--out", str(out)]  # fmt: skip
    assert main([*npo, "--eval-metric", "forget_rouge", "--ema", "0.9"]) == 2
    err = capsys.readouterr().err
    assert "refused: --eval-metric (each epoch's evaluation" in err
    assert "leave out --eval-metric, keeping the last epoch" in err and "leave out --ema" in err
    assert "the after-run check (the main process generates" in err and "--no-check" in err
    assert main([*_unlearn(tiny_model, data, out), "--max-steps", "1"]) == 2
    assert "refused: --method uld (its alpha" in capsys.readouterr().err
    assert main(["finetune", "--model", tiny_model, "--lora", "--out", str(out)]) == 2
    assert "--lora (the main process merges the adapters" in capsys.readouterr().err
    assert not out.exists() and not checkpoint_dir(out).exists()
    recipe = REPO / "configs" / "tofu_llama2_7b_npo_kl.yaml"  # the ZeRO-3 recipe is accepted
    cfg = UnlearnConfig(**read_yaml(UnlearnConfig, recipe), out="runs/x")
    assert needs_whole_weights(cfg, method(cfg.method)) == {}
    with pytest.raises(ValueError, match="each epoch to keep one .*leave out --eval-metric"):
        EpochEval(lambda m: {}, "forget_rouge", tmp_path / "best")
    with pytest.raises(ValueError, match="averaging the weights .*leave out --ema"):
        WeightAverage(torch.nn.Linear(2, 2), 0.9)


@pytest.mark.parametrize(
    "name, cls",
    [
        ("tofu_llama2_7b_target.yaml", FinetuneConfig),
        ("tofu_llama2_7b_npo_kl.yaml", UnlearnConfig),
        ("tofu_llama32_1b_target.yaml", FinetuneConfig),
        ("tofu_llama32_1b.yaml", UnlearnConfig),
    ],
)
def test_the_tofu_recipes_are_valid_configs(name, cls):
    values = read_yaml(cls, REPO / "configs" / name)
    cls(**values, out="runs/x").validate()
    assert values["data"] == "locuslab/TOFU"

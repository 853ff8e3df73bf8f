"""The README's Python example runs as written (on a tiny target, with a short schedule)."""

from __future__ import annotations

import contextlib
import io
import json
import os
import re
from pathlib import Path

import uld.config
from uld.data.load import load_split
from uld.logit_diff import ULDModel

README = Path(__file__).resolve().parent.parent / "README.md"
MARK = "<!-- api-example: executed by tests/test_readme.py -->"


def api_example() -> str:
    text = README.read_text()
    assert MARK in text, "the README's Python example lost its marker"
    block = re.search(r"```python\n(.*?)```", text[text.index(MARK) :], re.S)
    assert block, "no python block after the marker"
    return block.group(1)


def test_the_readme_python_example_runs(tiny_model, tmp_path, monkeypatch):
    code = api_example()
    assert "unlearn(" in code and "load_any(" in code
    (tmp_path / "runs").mkdir()
    os.symlink(tiny_model, tmp_path / "runs" / "target")
    (tmp_path / "forget.json").write_text(json.dumps(load_split("forget01")[:4]))
    (tmp_path / "retain.json").write_text(json.dumps(load_split("retain99")[:8]))
    real = uld.config.UnlearnConfig
    short = dict(layers=2, lora_rank=4, epochs=2, batch_size=4, general="", alpha=1.0)
    short |= dict(check=False)  # the example's own fields win; a short schedule for the test
    monkeypatch.setattr(uld.config, "UnlearnConfig", lambda **kw: real(**(short | kw)))
    monkeypatch.chdir(tmp_path)
    printed = io.StringIO()
    namespace: dict = {}
    with contextlib.redirect_stdout(printed):
        exec(compile(code, "README.md", "exec"), namespace)
    assert isinstance(namespace["model"], ULDModel)
    assert (tmp_path / "runs" / "uld" / "uld_config.json").exists()
    answer = printed.getvalue().strip().splitlines()[-1]
    assert answer  # the ULD model's answer to the example's question

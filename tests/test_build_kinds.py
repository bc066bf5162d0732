"""``paramscope.build`` reads the student spec that ``paramscope student`` writes (issue 21):
the spec kind ``"student"`` is registered by ``paramscope.merging`` into building's reader
table. Oracles: the student the CLI wrote (its safetensors, read back by torch) and the
teacher's own tensors."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import torch
from safetensors.torch import load_file

import paramscope
from paramscope.building._spec_errors import SpecError


def test_build_reads_the_spec_the_cli_wrote(cli: Any, tmp_path: Path) -> None:
    out = tmp_path / "student.safetensors"
    code, _, err = cli("student", "zoo:bert-base", "--every", "4", "-o", str(out))
    assert code == 0, err
    spec = next(tmp_path.glob("*.json"))
    assert "student" in json.loads(spec.read_text())
    model = paramscope.build(spec)
    assert model.config.num_hidden_layers == 3
    written = load_file(out)
    state = model.state_dict()
    assert set(written) <= set(state)
    for name, tensor in written.items():
        assert torch.equal(state[name], tensor), name
    report = paramscope.build_with_report(spec)
    assert report.load_report is not None and not report.load_report.missing
    assert sum(p.numel() for p in report.model.parameters()) == paramscope.count(model).params


def test_a_dict_spec_and_its_errors() -> None:
    m = paramscope.build({"student": {"teacher": "zoo:gpt2", "layers": [0, 11]}})
    assert m.config.n_layer == 2
    with pytest.raises(SpecError, match="student"):
        paramscope.build({"student": {"teacher": "zoo:gpt2", "every": 2}}, device="cpu")
    with pytest.raises(SpecError, match='unknown key "depth"'):
        paramscope.build({"student": {"teacher": "zoo:gpt2", "depth": 2}})


def test_the_building_floor_alone_names_who_reads_it() -> None:
    code = (
        "from paramscope.building import build\n"
        "try:\n"
        "    build({'student': {'teacher': 'zoo:gpt2', 'every': 2}})\n"
        "except Exception as e:\n"
        "    print(type(e).__name__, e)\n"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True
    ).stdout
    assert out.startswith("SpecError") and "paramscope.merging" in out, out

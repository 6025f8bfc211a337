"""tools/gpu_check.py in its CPU --quick mode: every check runs or says why it is skipped, the
table is written, and a failed check makes the exit status non-zero."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def gpu_check():
    spec = importlib.util.spec_from_file_location("gpu_check", ROOT / "tools" / "gpu_check.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules["gpu_check"] = module  # its dataclasses look their module up there
    spec.loader.exec_module(module)
    yield module
    sys.modules.pop("gpu_check", None)


def rows(table: str) -> dict[tuple[str, str], list[str]]:
    out = {}
    for line in table.splitlines():
        if line.startswith("| ") and not line.startswith("| check"):
            cells = [c.strip() for c in line.strip("|").split("|")]
            out[cells[0], cells[1]] = cells[2:]
    return out


def test_quick_cpu_run(gpu_check, data_cache, tmp_path):
    out = tmp_path / "gpu_check.md"
    code = gpu_check.main(["--quick", "--device", "cpu", "--cache", str(data_cache), "--out", str(out)])
    text = out.read_text()
    assert code == 0, text
    assert "GPU: none" in text and "load average" in text
    table = rows(text)
    assert table["train", "bf16 and fp16"][0] == "SKIP" and "GPU only" in table["train", "bf16 and fp16"][1]
    for kind in ("single-task", "branched"):
        result, measured, bound = table["train", f"{kind} float32"][:3]
        assert result == "PASS" and "resumed step 4" in measured and "rel. 1e-06" in bound
    assert table["ddp", "torchrun + NCCL"][0] == "SKIP"
    rsa = [v for (check, setting), v in table.items() if check == "rsa" and setting.startswith("K=500")]
    assert rsa and rsa[0][0] == "PASS" and rsa[0][2] == "<= 1e-05"
    speed = [v for (check, setting), v in table.items() if check == "speed"]
    assert len(speed) == 2 and all(v[0] == "INFO" for v in speed)  # timings on a CPU are reported, not checked
    assert "194276 vs 194276 parameters" in speed[0][1]  # the bare loop trains the same network
    jobs = table["jobs", "--per-device 1, 2, 4 vs one at a time"]
    assert jobs[0] == "SKIP" and "GPU only" in jobs[1]  # several networks sharing one GPU


def test_a_failed_check_fails_the_run(gpu_check, monkeypatch, tmp_path, capsys):
    monkeypatch.setattr(gpu_check, "RSA_ATOL", -1.0)  # no difference can pass
    code = gpu_check.main(["--quick", "--device", "cpu", "--skip", "train,ddp,speed,jobs"])
    printed = capsys.readouterr().out
    assert code == 1 and "| rsa |" in printed and "FAIL" in printed and "1 failed" in printed
    with pytest.raises(SystemExit):
        gpu_check.main(["--skip", "nothing"])

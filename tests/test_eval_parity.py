"""The evaluation-parity check against the official code's outputs (tests/fixtures/eval_parity), run as users run it."""
import json
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
FIXTURE = REPO / "tests" / "fixtures" / "eval_parity"


def run_tool(fixture, *extra):
    return subprocess.run([sys.executable, "tools/check_eval_parity.py", "--fixture", str(fixture), *extra], cwd=REPO,
                          capture_output=True, text=True, timeout=1200)


def verdicts(stdout):
    """{(variant, check): 'PASS' | 'FAIL'} from the tool's output."""
    out = {}
    for line in stdout.splitlines():
        if line.startswith(("PASS ", "FAIL ")):
            verdict, variant, check = re.split(r"\s{2,}", line, maxsplit=3)[:3]
            out[variant, check] = verdict
    return out


@pytest.mark.slow
def test_eval_parity_fixture_passes():
    result = run_tool(FIXTURE)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "EVAL PARITY OK" in result.stdout
    found = verdicts(result.stdout)
    assert set(found.values()) == {"PASS"}
    variants = json.loads((FIXTURE / "expected.json").read_text())["variants"]
    for variant in variants:  # every variant had its per-person metrics, loader outputs and meshes compared
        for check in ("samples (ann_id order)", "pose source", "mpjpe per person", "means", "joints mask",
                      "crop pixels (every 8th)", "GT H36M joints (m)", "pred H36M joints (m)"):
            assert (variant, check) in found, (variant, check)
    assert ("fixture", "content hashes") in found


@pytest.mark.slow
def test_eval_parity_tool_fails_on_a_tampered_expected_json(tmp_path):
    fixture = tmp_path / "tampered"
    shutil.copytree(FIXTURE, fixture)
    expected = json.loads((fixture / "expected.json").read_text())
    expected["variants"]["3dpw-oc"]["samples"][3]["pa_mpjpe"] += 0.01  # twice the per-person tolerance
    expected["variants"]["3dpw-oc"]["means"]["mpvpe"] -= 0.004  # twice the tolerance of the means
    (fixture / "expected.json").write_text(json.dumps(expected))
    result = run_tool(fixture, "--variants", "3dpw-oc")
    assert result.returncode == 1, result.stdout + result.stderr
    assert "EVAL PARITY FAILED: 2 checks failed" in result.stdout
    found = verdicts(result.stdout)
    assert found["3dpw-oc", "pa_mpjpe per person"] == "FAIL" and found["3dpw-oc", "means"] == "FAIL"
    assert found["3dpw-oc", "mpjpe per person"] == "PASS"


def test_eval_parity_tool_names_what_a_fixture_lacks(tmp_path):
    fixture = tmp_path / "generated_only"
    fixture.mkdir()
    shutil.copy(FIXTURE / "fixture.json", fixture)
    result = run_tool(fixture)
    assert result.returncode != 0
    assert "expected.json not found" in result.stderr and "official JOTR code" in result.stderr

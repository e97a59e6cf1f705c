"""The official-checkpoint parity check, run the way users run it."""
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

REPO = Path(__file__).resolve().parent.parent
FIXTURE = REPO / "tests" / "fixtures" / "parity"


def run_tool(fixture):
    return subprocess.run([sys.executable, "tools/check_parity.py", "--fixture", str(fixture)], cwd=REPO,
                          capture_output=True, text=True, timeout=600)


def test_parity_fixture_passes(capsys):
    # In-process (the slow test below runs the tool as a command): the same code path, without a new interpreter.
    from tools import check_parity

    code = check_parity.main(["--fixture", str(FIXTURE)])
    out = capsys.readouterr().out
    assert code == 0, out
    assert "538 manifest keys, identical" in out
    assert "parity ok" in out


@pytest.mark.slow
def test_parity_tool_detects_a_wrong_output(tmp_path):
    fixture = tmp_path / "tampered"
    shutil.copytree(FIXTURE, fixture)
    expected = dict(np.load(fixture / "expected.npz"))
    expected["smpl_mesh_cam"] = expected["smpl_mesh_cam"] + 1e-3  # 1 mm: ten times the tolerance
    np.savez(fixture / "expected.npz", **expected)
    result = run_tool(fixture)
    assert result.returncode == 1
    assert "PARITY FAILED" in result.stdout
    assert [line for line in result.stdout.splitlines() if line.startswith("smpl_mesh_cam")][0].endswith("FAIL")

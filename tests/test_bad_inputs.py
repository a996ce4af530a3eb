"""docs/bad-inputs.md stays true: every bad input in scripts/bad_input_cases.py still ends with
exit code 2 and one error line, and no crafted checkpoint's payload runs."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


@pytest.mark.slow
def test_every_bad_input_is_one_line_and_exit_2(tmp_path):
    table = tmp_path / "bad-inputs.md"
    done = subprocess.run(
        [sys.executable, "scripts/bad_inputs.py", "--check", "--out", str(table)],
        cwd=ROOT, env=dict(os.environ), capture_output=True, text=True, timeout=1200,
    )  # fmt: skip
    assert done.returncode == 0, done.stdout[-4000:]
    rows = [line for line in table.read_text().splitlines() if line.startswith("| ")][1:]
    assert len(rows) >= 100
    assert all(" | 2 | animatic " in row for row in rows)

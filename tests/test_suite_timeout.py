"""The suite's per-test timeout (pyproject.toml, or tests/conftest.py without pytest-timeout) ends a hung test."""

import os
import subprocess
import sys

from conftest import REPO


def test_a_hung_test_fails_with_its_stack(tmp_path):
    (tmp_path / "test_hang.py").write_text("import time\n\n\ndef test_hang():\n    time.sleep(60)\n")
    env = {**os.environ, "PYTHONPATH": ""}
    cmd = [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "-c", os.path.join(REPO, "pyproject.toml")]
    proc = subprocess.run(
        [*cmd, "-o", "timeout=2", str(tmp_path / "test_hang.py")], capture_output=True, text=True, timeout=50, env=env
    )
    assert proc.returncode != 0
    assert "Timeout" in proc.stdout + proc.stderr and "test_hang" in proc.stdout + proc.stderr

"""The suite's own rules: on CI a skip is a failure."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap


def test_a_skip_fails_under_ci(tmp_path):
    (tmp_path / "conftest.py").write_text(
        "from tests.conftest import pytest_runtest_makereport  # noqa: F401\n")
    (tmp_path / "test_skip.py").write_text(textwrap.dedent("""
        import pytest

        def test_skipped():
            pytest.skip("service missing")
    """))
    env = dict(os.environ, CI="true", PYTHONPATH=os.getcwd())
    result = subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", str(tmp_path)],
                            capture_output=True, text=True, env=env, cwd=tmp_path, timeout=120)
    assert result.returncode == 1, result.stdout
    assert "1 failed" in result.stdout
    env["CI"] = "false"
    result = subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", str(tmp_path)],
                            capture_output=True, text=True, env=env, cwd=tmp_path, timeout=120)
    assert result.returncode == 0 and "1 skipped" in result.stdout

"""The one way tests run the ``newsletter`` command: a real process, as a user or a
script runs it."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]


def cli(*args, stdin: str | bytes | None = None, env: dict[str, str] | None = None, cwd: Path | None = None,
        timeout: float = 120) -> subprocess.CompletedProcess:
    """``newsletter ARGS`` in a new process with this process's environment (or
    ``env``). Text in and out, unless ``stdin`` is bytes (an MTA pipe): then bytes."""
    return subprocess.run([sys.executable, "-m", "mailer.cli", *map(str, args)], capture_output=True,
                          text=not isinstance(stdin, bytes), env=dict(os.environ) if env is None else env,
                          input=stdin, cwd=cwd or REPO, timeout=timeout)


def start_cli(*args, env: dict[str, str] | None = None) -> subprocess.Popen:
    """``newsletter ARGS`` started, not waited for (two at once, say); text pipes."""
    return subprocess.Popen([sys.executable, "-m", "mailer.cli", *map(str, args)], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, env=dict(os.environ) if env is None else env, cwd=REPO)


def assert_one_line_error(result: subprocess.CompletedProcess, *fragments: str) -> str:
    """Exit code 2, one line on stderr holding every fragment, no traceback."""
    assert result.returncode == 2, (result.stdout, result.stderr)
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert "Traceback" not in result.stderr
    for fragment in fragments:
        assert fragment in lines[0], lines[0]
    return lines[0]

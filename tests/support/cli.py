"""How tests run the ``newsletter`` command: ``cli``, a real process, as a user or a
script runs it; and ``cli_in_process``, the same ``mailer.cli.main`` called in this
process, for the many bad-input cases of a command (each ~1.5-2 s as a process on a
loaded 2-core machine, milliseconds here). Every command keeps at least one bad-input
case through ``cli``: that proves the installed entry point, and that no traceback
escapes a real interpreter."""

from __future__ import annotations

import logging
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


def cli_in_process(*args, stdin: str | None = None) -> subprocess.CompletedProcess:
    """``newsletter ARGS`` in this process: ``mailer.cli.main`` itself (not typer's own
    standalone handling, which prints a usage box and exits 1 on our errors), so the
    errors are mapped to exit codes and one line exactly as in a real process; stdin,
    stdout and stderr are typer's ``CliRunner`` isolation. Settings are read afresh from
    this process's environment, and what ``main`` sets up in this process (the logging
    handler on the captured stderr) is undone afterwards. An exception ``main`` does not
    map propagates and fails the test (a real process would print a traceback)."""
    from typer.testing import CliRunner

    from mailer.cli import main
    from mailer.core import logs
    from mailer.core.config import get_settings

    root = logging.getLogger()
    saved_root = (list(root.handlers), root.level)
    saved_own = {name: (list(logging.getLogger(name).handlers), logging.getLogger(name).propagate)
                 for name in logs.OWN_HANDLERS}
    capturing_warnings = logging._warnings_showwarning is not None  # type: ignore[attr-defined]
    argv = sys.argv
    sys.argv = ["newsletter", *map(str, args)]
    get_settings.cache_clear()
    code: int | str | None = 0
    try:
        with CliRunner().isolation(input=stdin) as (out, err, _):
            try:
                main()
            except SystemExit as exit_:
                code = exit_.code
            finally:
                sys.stdout.flush()
                sys.stderr.flush()
            stdout, stderr = out.getvalue().decode(), err.getvalue().decode()
    finally:
        sys.argv = argv
        get_settings.cache_clear()
        root.handlers[:] = saved_root[0]
        root.setLevel(saved_root[1])
        for name, (handlers, propagate) in saved_own.items():
            logging.getLogger(name).handlers[:] = handlers
            logging.getLogger(name).propagate = propagate
        logging.captureWarnings(capturing_warnings)
    returncode = code if isinstance(code, int) else (0 if code is None else 1)
    return subprocess.CompletedProcess(["newsletter", *map(str, args)], returncode, stdout, stderr)


def assert_one_line_error(result: subprocess.CompletedProcess, *fragments: str) -> str:
    """Exit code 2, one line on stderr holding every fragment, no traceback."""
    assert result.returncode == 2, (result.stdout, result.stderr)
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert "Traceback" not in result.stderr
    for fragment in fragments:
        assert fragment in lines[0], lines[0]
    return lines[0]

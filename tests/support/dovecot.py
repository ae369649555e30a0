"""A real IMAP and POP3 server for the bounce-mailbox tests: Debian's Dovecot
(``dovecot-imapd``, ``dovecot-pop3d``, installed by ``.ci/run``), started by the fixture
as an unprivileged instance of its own: its configuration, state and mail in a temporary
folder, free ports on 127.0.0.1, one user with a static password. No system Dovecot
service is used or assumed. Run as root (CI), it runs as ``nobody`` (Dovecot refuses to
run its login processes as root); otherwise as the current user.

Load as a pytest plugin (``pytest_plugins``), or import ``dovecot`` into a conftest."""

from __future__ import annotations

import grp
import imaplib
import os
import pwd
import shutil
import socket
import subprocess
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.support.services import free_port, need

DOVECOT = "/usr/sbin/dovecot"
USER, PASSWORD = "bounces", "s3cret/box:1"  # needs percent-encoding in a URL; no spaces (passdb args)

CONFIG = """\
base_dir = {root}/run
state_dir = {root}/state
log_path = {root}/dovecot.log
instance_name = nltest-{imap_port}
protocols = imap pop3
listen = 127.0.0.1
ssl = no
disable_plaintext_auth = no
auth_mechanisms = plain login
default_internal_user = {user}
default_internal_group = {group}
default_login_user = {user}
first_valid_uid = {uid}
last_valid_uid = {uid}
passdb {{
  driver = static
  args = password={password}
}}
userdb {{
  driver = static
  args = uid={uid} gid={gid} home={root}/home/%u
}}
mail_location = maildir:~/Maildir
service imap-login {{
  chroot =
  inet_listener imap {{
    port = {imap_port}
  }}
  inet_listener imaps {{
    port = 0
  }}
}}
service pop3-login {{
  chroot =
  inet_listener pop3 {{
    port = {pop3_port}
  }}
  inet_listener pop3s {{
    port = 0
  }}
}}
service anvil {{
  chroot =
}}
"""


@dataclass
class Dovecot:
    root: Path
    imap_port: int
    pop3_port: int
    user: str = USER
    password: str = PASSWORD

    def url(self, protocol: str, folder: str = "INBOX", *, password: str | None = None) -> str:
        from urllib.parse import quote

        port = self.imap_port if protocol == "imap" else self.pop3_port
        where = f"/{quote(folder, safe='')}" if protocol == "imap" else ""
        secret = quote(self.password if password is None else password, safe="")
        return f"{protocol}://{quote(self.user, safe='')}:{secret}@127.0.0.1:{port}{where}"

    def imap(self) -> imaplib.IMAP4:
        client = imaplib.IMAP4("127.0.0.1", self.imap_port, timeout=30)
        client.login(self.user, self.password)
        return client

    def append(self, *messages: bytes, folder: str = "INBOX") -> None:
        client = self.imap()
        try:
            if folder != "INBOX":
                client.create(f'"{folder}"')
            for raw in messages:
                status, _ = client.append(f'"{folder}"', None, None, raw)
                assert status == "OK"
        finally:
            client.logout()

    def flags(self, folder: str = "INBOX") -> list[str]:
        """The flags of every message of the folder, in order."""
        client = self.imap()
        try:
            client.select(f'"{folder}"')
            status, data = client.fetch("1:*", "(FLAGS)")
            return [line.decode() for line in data if line] if status == "OK" and data != [None] else []
        finally:
            client.logout()

    def count(self, folder: str = "INBOX") -> int:
        client = self.imap()
        try:
            status, data = client.select(f'"{folder}"')
            return int(data[0]) if status == "OK" else 0
        finally:
            client.logout()


def _identity() -> tuple[str, str, int, int]:
    if os.geteuid() == 0:
        user = pwd.getpwnam("nobody")
        return user.pw_name, grp.getgrgid(user.pw_gid).gr_name, user.pw_uid, user.pw_gid
    user = pwd.getpwuid(os.getuid())
    return user.pw_name, grp.getgrgid(os.getgid()).gr_name, os.getuid(), os.getgid()


@pytest.fixture
def dovecot():
    """A running Dovecot with an empty mailbox; stopped and removed afterwards."""
    if not os.path.exists(DOVECOT) or not os.path.exists("/usr/lib/dovecot/imap") \
            or not os.path.exists("/usr/lib/dovecot/pop3"):
        need("Dovecot is not installed (apt-get install dovecot-imapd dovecot-pop3d; .ci/run does)")
    user, group, uid, gid = _identity()
    # Not pytest's tmp_path: its parents are private to root, and Dovecot runs as nobody.
    root = Path(tempfile.mkdtemp(prefix="nl-dovecot-"))
    imap_port, pop3_port = free_port(), free_port()
    config = root / "dovecot.conf"
    config.write_text(CONFIG.format(root=root, user=user, group=group, uid=uid, gid=gid, password=PASSWORD,
                                    imap_port=imap_port, pop3_port=pop3_port))
    for sub in ("run", "state", "home"):
        (root / sub).mkdir()
    if os.geteuid() == 0:
        for path in [root, *root.rglob("*")]:
            os.chown(path, uid, gid)
    kwargs = {"user": uid, "group": gid} if os.geteuid() == 0 else {}
    proc = subprocess.Popen([DOVECOT, "-F", "-c", str(config)], stdout=subprocess.DEVNULL,
                            stderr=subprocess.STDOUT, **kwargs)
    try:
        deadline = time.monotonic() + 30
        while True:
            if proc.poll() is not None:
                log = (root / "dovecot.log").read_text() if (root / "dovecot.log").exists() else ""
                raise RuntimeError(f"dovecot exited with {proc.returncode}: {log[-2000:]}")
            try:
                for port in (imap_port, pop3_port):
                    socket.create_connection(("127.0.0.1", port), timeout=1).close()
                break
            except OSError:
                if time.monotonic() > deadline:
                    raise RuntimeError("dovecot did not start listening") from None
                time.sleep(0.05)
        yield Dovecot(root, imap_port, pop3_port)
    finally:
        proc.terminate()
        try:
            proc.wait(15)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(5)
        shutil.rmtree(root, ignore_errors=True)

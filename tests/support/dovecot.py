"""A real IMAP and POP3 server for the tests: Debian's dovecot on free loopback ports.

Each instance has its own configuration, a passwd-file with one user, and a throwaway
Maildir. Dovecot runs as root (``-F``, in the foreground, in its own process group) and
drops to an unprivileged user for the mail processes, as it insists; that user must be able
to reach the mail folder, so the instance lives in a folder of its own under the system's
temporary directory (pytest's tmp folders are private to root) and is removed on stop.
"""

from __future__ import annotations

import imaplib
import os
import pwd
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from pathlib import Path

from tests.support.processes import free_port

CONFIG = """\
base_dir = {root}/run
state_dir = {root}/state
log_path = {root}/dovecot.log
protocols = imap pop3
listen = 127.0.0.1
ssl = no
disable_plaintext_auth = no
auth_mechanisms = plain login
mail_location = maildir:{root}/mail/%u
first_valid_uid = 1
passdb {{
  driver = passwd-file
  args = scheme=PLAIN username_format=%u {root}/passwd
}}
userdb {{
  driver = static
  args = uid={uid} gid={gid} home={root}/mail/%u
}}
service imap-login {{
  inet_listener imap {{
    address = 127.0.0.1
    port = {imap_port}
  }}
  inet_listener imaps {{
    port = 0
  }}
}}
service pop3-login {{
  inet_listener pop3 {{
    address = 127.0.0.1
    port = {pop3_port}
  }}
  inet_listener pop3s {{
    port = 0
  }}
}}
"""


def dovecot_binary() -> str | None:
    return shutil.which("dovecot") or (
        "/usr/sbin/dovecot" if Path("/usr/sbin/dovecot").exists() else None)


class Dovecot:
    def __init__(self, user: str = "bounces", password: str = "s3cret-bounce-box") -> None:
        self.user, self.password = user, password
        self.imap_port, self.pop3_port = free_port(), free_port()
        self.root: Path | None = None
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self, timeout: float = 30) -> Dovecot:
        binary = dovecot_binary()
        if binary is None:
            raise RuntimeError("dovecot is not installed: apt-get install dovecot-imapd "
                               "dovecot-pop3d (.ci/run does)")
        mail_user = pwd.getpwnam("dovecot")  # created by the dovecot-core package
        self.root = Path(tempfile.mkdtemp(prefix="mailer-dovecot-"))
        self.root.chmod(0o755)
        (self.root / "mail").mkdir()
        os.chown(self.root / "mail", mail_user.pw_uid, mail_user.pw_gid)
        (self.root / "passwd").write_text(f"{self.user}:{{PLAIN}}{self.password}::::::\n")
        config = self.root / "dovecot.conf"
        config.write_text(CONFIG.format(root=self.root, uid=mail_user.pw_uid,
                                        gid=mail_user.pw_gid, imap_port=self.imap_port,
                                        pop3_port=self.pop3_port))
        with (self.root / "stdout.log").open("wb") as out:
            self.proc = subprocess.Popen([binary, "-F", "-c", str(config)], stdout=out,
                                         stderr=subprocess.STDOUT, start_new_session=True)
        deadline = time.monotonic() + timeout
        while not (_greets(self.imap_port, b"* OK") and _greets(self.pop3_port, b"+OK")):
            if self.proc.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"dovecot did not start:\n{self.log()}")
            time.sleep(0.1)
        return self

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGTERM)
            try:
                self.proc.wait(15)
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait(5)
        if self.root is not None:
            shutil.rmtree(self.root, ignore_errors=True)

    def log(self) -> str:
        assert self.root is not None
        return "\n".join(p.read_text(errors="replace") for p in
                         (self.root / "stdout.log", self.root / "dovecot.log") if p.exists())

    @property
    def imap_url(self) -> str:
        return f"imap://{self.user}:{self.password}@127.0.0.1:{self.imap_port}"

    @property
    def pop3_url(self) -> str:
        return f"pop3://{self.user}:{self.password}@127.0.0.1:{self.pop3_port}"

    # --- looking into the mailbox, as a mail client would ---------------------------------

    def _imap(self) -> imaplib.IMAP4:
        conn = imaplib.IMAP4("127.0.0.1", self.imap_port, timeout=10)
        conn.login(self.user, self.password)
        return conn

    def deliver(self, raw: bytes, folder: str = "INBOX") -> None:
        conn = self._imap()
        try:
            typ, data = conn.append(folder, None, None, raw)
            assert typ == "OK", data
        finally:
            conn.logout()

    def messages(self, folder: str = "INBOX") -> list[bytes]:
        """The messages in ``folder`` that are not flagged deleted ([] if it does not exist)."""
        conn = self._imap()
        try:
            typ, _ = conn.select(f'"{folder}"', readonly=True)
            if typ != "OK":
                return []
            _, data = conn.uid("SEARCH", None, "UNDELETED")
            found = []
            for uid in data[0].split():
                _, parts = conn.uid("FETCH", uid, "(BODY.PEEK[])")
                found += [bytes(p[1]) for p in parts if isinstance(p, tuple)]
            return found
        finally:
            conn.logout()


def _greets(port: int, greeting: bytes) -> bool:
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=2) as sock:
            return sock.recv(200).startswith(greeting)
    except OSError:
        return False

"""A private, loopback-only Dovecot IMAP server for the tests (a pytest plugin).

Fixtures:

* ``dovecot`` (session): one Dovecot 2.3 instance with its own config, ports, base_dir and
  log in a temporary folder. Plain IMAP and IMAPS (self-signed certificate for
  ``localhost`` / ``127.0.0.1``) listen on free ports of 127.0.0.1 only. When the tests
  run as root, every Dovecot process runs as the unprivileged system user
  ``retainertest`` (created if missing). Stopped by its master PID at the end.
* ``dovecot_mailbox`` (function): a fresh IMAP user with an empty INBOX, so tests never
  see each other's mail. Use its helpers to deliver mail, create folders, change the
  UIDVALIDITY, drop connections and read the server-side command log.

Other test modules use them like this::

    def test_something(dovecot_mailbox):
        dovecot_mailbox.append("INBOX", raw_bytes)
        config = dovecot_mailbox.source_toml(name="inbox")

If the Dovecot binaries are missing the fixture FAILS (CI installs them; skipped tests
are not allowed there).
"""

from __future__ import annotations

import contextlib
import imaplib
import itertools
import os
import shutil
import signal
import socket
import ssl
import subprocess
import tempfile
import time
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest

DOVECOT = "/usr/sbin/dovecot"
DOVEADM = "/usr/bin/doveadm"
RUN_USER = "retainertest"
PASSWORD_ENV = "RETAINER_TEST_IMAP_PASSWORD"


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def make_cert(directory: Path) -> tuple[Path, Path]:
    """A self-signed certificate for localhost / 127.0.0.1 (openssl CLI)."""
    cert, key = directory / "cert.pem", directory / "key.pem"
    subprocess.run(
        ["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "30", "-sha256",
         "-subj", "/CN=localhost", "-addext", "subjectAltName=IP:127.0.0.1,DNS:localhost",
         "-keyout", str(key), "-out", str(cert)],
        check=True, capture_output=True, timeout=60)
    return cert, key


@dataclass
class Dovecot:
    """One running private Dovecot instance."""

    root: Path
    port: int
    tls_port: int
    cert: Path
    run_user: str
    uid: int
    gid: int
    host: str = "127.0.0.1"
    #: set: SASL XOAUTH2 and OAUTHBEARER too, checked by an oauth2 passdb that asks this
    #: RFC 7662 introspection URL (the tests' OAuth server, tests/servers/oauth.py)
    oauth2_introspection: str | None = None
    _users: dict[str, str] = field(default_factory=dict)
    _counter: Iterator[int] = field(default_factory=lambda: itertools.count(1))

    @property
    def conf(self) -> Path:
        return self.root / "etc" / "dovecot.conf"

    @property
    def passwd(self) -> Path:
        return self.root / "etc" / "passwd"

    @property
    def log_path(self) -> Path:
        return self.root / "log" / "dovecot.log"

    def master_pid(self) -> int | None:
        try:
            pid = int((self.root / "run" / "master.pid").read_text().strip())
        except (OSError, ValueError):
            return None
        try:
            comm = Path(f"/proc/{pid}/comm").read_text().strip()
        except OSError:
            return None
        return pid if "dovecot" in comm else None

    # -- set-up -----------------------------------------------------------------------

    def write_config(self) -> None:
        etc = self.root / "etc"
        user = self.run_user
        group = _group_name(self.gid)
        mechanisms = "plain login"
        oauth2 = ""
        if self.oauth2_introspection:
            mechanisms = "plain login xoauth2 oauthbearer"
            # Dovecot 2.3's oauth2 passdb: POSTs token=... to the introspection URL and
            # accepts the login when "active" is true and "username" is the login name
            (etc / "dovecot-oauth2.conf.ext").write_text(
                "introspection_mode = post\n"
                f"introspection_url = {self.oauth2_introspection}\n"
                "force_introspection = yes\n"
                "username_attribute = username\n"
                "active_attribute = active\n"
                "active_value = true\n"
                "timeout_msecs = 5000\n")
            oauth2 = f"""passdb {{
  driver = oauth2
  mechanisms = xoauth2 oauthbearer
  args = {etc}/dovecot-oauth2.conf.ext
}}
"""
        self.conf.write_text(f"""# written by tests/servers/dovecot.py
instance_name = retainer-test-{self.port}
base_dir = {self.root}/run
state_dir = {self.root}/state
listen = 127.0.0.1
protocols = imap
log_path = {self.log_path}
info_log_path = {self.log_path}
default_login_user = {user}
default_internal_user = {user}
default_internal_group = {group}
first_valid_uid = {self.uid}
last_valid_uid = {self.uid}
first_valid_gid = {self.gid}
mail_location = maildir:~/Maildir
disable_plaintext_auth = no
# no auth penalty (delays after failed logins) for the tests' own client
login_trusted_networks = 127.0.0.0/8
auth_mechanisms = {mechanisms}
auth_failure_delay = 0
verbose_proctitle = yes
ssl = yes
ssl_cert = <{etc}/cert.pem
ssl_key = <{etc}/key.pem
{oauth2}passdb {{
  driver = passwd-file
  mechanisms = plain login
  args = scheme=PLAIN username_format=%n {self.passwd}
}}
userdb {{
  driver = passwd-file
  args = username_format=%n {self.passwd}
}}
service imap-login {{
  chroot =
  inet_listener imap {{
    address = 127.0.0.1
    port = {self.port}
  }}
  inet_listener imaps {{
    address = 127.0.0.1
    port = {self.tls_port}
    ssl = yes
  }}
}}
service anvil {{
  chroot =
}}
protocol imap {{
  mail_max_userip_connections = 200
  rawlog_dir = %h/rawlog
}}
""")

    def start(self, pool: int = 300) -> None:
        self.write_config()
        self._users.update({f"user{i}": "secret-pw" for i in range(1, pool + 1)})
        self._write_passwd()
        _run_as(self.run_user, [DOVECOT, "-c", str(self.conf)])
        deadline = time.monotonic() + 15
        while time.monotonic() < deadline:
            if self.master_pid() and _listening(self.port) and _listening(self.tls_port):
                return
            time.sleep(0.05)
        log = self.log_path.read_text() if self.log_path.exists() else "(no log)"
        self.stop()
        pytest.fail(f"the test Dovecot did not start; its log:\n{log[-3000:]}")

    def stop(self) -> None:
        pid = self.master_pid()
        if pid is None:
            return
        os.kill(pid, signal.SIGTERM)
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline and Path(f"/proc/{pid}").exists():
            time.sleep(0.05)
        if Path(f"/proc/{pid}").exists():
            os.kill(pid, signal.SIGKILL)

    # -- users ------------------------------------------------------------------------

    def add_user(self, name: str | None = None, password: str = "secret-pw") -> Mailbox:
        """A new IMAP user with an empty INBOX.

        Users come from a pool written before Dovecot starts (a passwd-file changed while
        it runs is only noticed after a while); ``name`` picks one outside the pool,
        which then waits for Dovecot to re-read the file.
        """
        if name is None:
            name = f"user{next(self._counter)}"
            if name in self._users:
                return self._mailbox(name)
        self._users[name] = password
        self._write_passwd()
        mailbox = self._mailbox(name)
        mailbox.wait_ready()
        return mailbox

    def _mailbox(self, name: str) -> Mailbox:
        home = self.root / "mail" / name
        for sub in ("cur", "new", "tmp"):
            (home / "Maildir" / sub).mkdir(parents=True, exist_ok=True)
        _chown_tree(home, self.uid, self.gid)
        return Mailbox(self, name, self._users[name], home)

    def _write_passwd(self) -> None:
        lines = [f"{u}:{{PLAIN}}{p}:{self.uid}:{self.gid}::{self.root}/mail/{u}::"
                 for u, p in self._users.items()]
        tmp = self.passwd.with_suffix(".new")
        tmp.write_text("\n".join(lines) + "\n")
        os.chmod(tmp, 0o644)
        tmp.replace(self.passwd)

    def doveadm(self, *args: str, check: bool = True) -> str:
        done = subprocess.run([DOVEADM, "-c", str(self.conf), *args], capture_output=True,
                              text=True, timeout=60)
        if check and done.returncode != 0:
            raise AssertionError(f"doveadm {' '.join(args)} failed ({done.returncode}): "
                                 f"{done.stderr.strip()}")
        return done.stdout

    def imap_pids(self, user: str) -> list[int]:
        """PIDs of the post-login ``imap`` processes serving ``user``."""
        master = self.master_pid()
        found = []
        for entry in Path("/proc").iterdir():
            if not entry.name.isdigit():
                continue
            try:
                stat = (entry / "stat").read_text()
                cmdline = (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode()
            except OSError:
                continue
            ppid = int(stat.rsplit(")", 1)[1].split()[1])
            # verbose_proctitle: "dovecot-<instance>/imap [user 127.0.0.1 UID FETCH]"
            if ppid == master and "/imap [" in cmdline and f"[{user} " in cmdline:
                found.append(int(entry.name))
        return found


def _group_name(gid: int) -> str:
    import grp

    return grp.getgrgid(gid).gr_name


def _chown_tree(path: Path, uid: int, gid: int) -> None:
    if os.geteuid() != 0:
        return
    for directory, dirs, files in os.walk(path):
        os.chown(directory, uid, gid)
        for name in [*dirs, *files]:
            os.chown(os.path.join(directory, name), uid, gid)


def _run_as(user: str, argv: list[str]) -> None:
    if os.geteuid() == 0 and user != "root":
        argv = ["runuser", "-u", user, "--", *argv]
    # Dovecot daemonizes and its children inherit our pipes: send output to a file
    with tempfile.TemporaryFile() as errors:
        done = subprocess.run(argv, stdin=subprocess.DEVNULL, stdout=errors, stderr=errors,
                              timeout=30)
        if done.returncode != 0:
            errors.seek(0)
            pytest.fail(f"could not start Dovecot ({' '.join(argv)}): "
                        f"{errors.read().decode(errors='replace').strip()}")


def _listening(port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.settimeout(0.2)
        return sock.connect_ex(("127.0.0.1", port)) == 0


@dataclass
class Mailbox:
    """One IMAP user of the test server, with helpers to change its mail."""

    server: Dovecot
    user: str
    password: str
    home: Path

    @property
    def maildir(self) -> Path:
        return self.home / "Maildir"

    def wait_ready(self) -> None:
        deadline = time.monotonic() + 10
        while True:
            try:
                with self.connect():
                    return
            except imaplib.IMAP4.error:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.05)

    @contextlib.contextmanager
    def connect(self) -> Iterator[imaplib.IMAP4]:
        imap = imaplib.IMAP4(self.server.host, self.server.port, timeout=30)
        try:
            imap.login(self.user, self.password)
            yield imap
        finally:
            with contextlib.suppress(Exception):
                imap.logout()

    # -- mail ------------------------------------------------------------------------

    def create_folder(self, name: str) -> None:
        with self.connect() as imap:
            typ, data = imap.create(_quote(name))
            assert typ == "OK", data

    def append(self, folder: str, raw: bytes, flags: str = "\\Seen") -> None:
        self.append_many(folder, [raw], flags)

    def append_many(self, folder: str, messages: Iterable[bytes], flags: str = "\\Seen") -> int:
        """APPEND messages over one connection; returns how many."""
        count = 0
        with self.connect() as imap:
            for raw in messages:
                raw = raw.replace(b"\r\n", b"\n").replace(b"\n", b"\r\n")
                typ, data = imap.append(_quote(folder), f"({flags})" if flags else None,
                                        None, raw)
                assert typ == "OK", data
                count += 1
        return count

    def status(self, folder: str = "INBOX") -> dict[str, int]:
        out = self.server.doveadm("-f", "flow", "mailbox", "status", "-u", self.user,
                                  "messages uidnext uidvalidity highestmodseq", folder)
        pairs = (item.split("=", 1) for item in out.split() if "=" in item)
        return {k: int(v) for k, v in pairs}

    def uids(self, folder: str = "INBOX") -> list[int]:
        with self.connect() as imap:
            imap.select(_quote(folder), readonly=True)
            typ, data = imap.uid("SEARCH", "ALL")
            assert typ == "OK", data
            return [int(u) for u in (data[0] or b"").split()]

    def message_ids(self, folder: str = "INBOX") -> list[str]:
        """The Message-ID header of every message in ``folder`` (in UID order)."""
        with self.connect() as imap:
            imap.select(_quote(folder), readonly=True)
            typ, data = imap.uid("FETCH", "1:*", "(BODY.PEEK[HEADER.FIELDS (MESSAGE-ID)])")
            assert typ == "OK", data
        found = []
        for item in data:
            if isinstance(item, tuple):
                value = item[1].decode().split(":", 1)[1].strip()
                found.append(value)
        return found

    def expunge(self, folder: str = "INBOX", uids: str = "1:*") -> None:
        self.server.doveadm("expunge", "-u", self.user, "mailbox", folder, "uid", uids)

    def set_uidvalidity(self, value: int, folder: str = "INBOX") -> None:
        """Give ``folder`` a new UIDVALIDITY. Existing messages keep their UIDs here, which
        a client must still treat as new numbers."""
        self.kick()
        self.server.doveadm("mailbox", "update", "-u", self.user, "--uid-validity", str(value),
                            folder)

    def recreate(self, folder: str = "INBOX") -> None:
        """Renumber every message: move them all out and back, with a new UIDVALIDITY
        (the way a server migration looks to a client)."""
        before = self.status(folder)
        with self.connect() as imap:
            imap.create("Renumber")
            imap.select(_quote(folder))
            typ, _ = imap.uid("MOVE", "1:*", "Renumber")
            assert typ == "OK"
            imap.select("Renumber")
            typ, _ = imap.uid("MOVE", "1:*", _quote(folder))
            assert typ == "OK"
            imap.select("INBOX")
            imap.delete("Renumber")
        self.set_uidvalidity(before["uidvalidity"] + 1000, folder)

    # -- connections ----------------------------------------------------------------

    def kick(self) -> int:
        """Kill every IMAP process serving this user (their clients see EOF). Returns how many."""
        pids = self.server.imap_pids(self.user)
        for pid in pids:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
        return len(pids)

    @contextlib.contextmanager
    def rawlog(self) -> Iterator[RawLog]:
        """Record every IMAP command sent after login, as Dovecot's rawlog sees it."""
        directory = self.home / "rawlog"
        directory.mkdir(exist_ok=True)
        _chown_tree(directory, self.server.uid, self.server.gid)
        log = RawLog(directory)
        try:
            yield log
        finally:
            log.load()
            shutil.rmtree(directory, ignore_errors=True)

    # -- config -------------------------------------------------------------------

    def settings(self, *, security: str = "none", **extra: object) -> dict[str, object]:
        """``[sources.settings]`` for this mailbox, as a dict (password by reference)."""
        port = self.server.tls_port if security == "tls" else self.server.port
        found: dict[str, object] = {
            "host": self.server.host, "port": port, "security": security,
            "username": self.user, "password": {"env": PASSWORD_ENV},
        }
        if security != "none":
            found["ca_file"] = str(self.server.cert)
        found.update(extra)
        if found.get("auth") == "oauth2":
            del found["password"]  # signs in with a token from `retainer auth`
        return found

    def source_toml(self, name: str = "inbox", *, security: str = "none",
                    folders: Iterable[str] = ("INBOX",), **extra: object) -> str:
        """A ``[[sources]]`` table for a config file; export :data:`PASSWORD_ENV`."""
        settings = self.settings(security=security, folders=list(folders), **extra)
        lines = ["[[sources]]", f'name = "{name}"', 'platform = "imap"', "[sources.settings]"]
        for key, value in settings.items():
            lines.append(f"{key} = {_toml(value)}")
        return "\n".join(lines) + "\n"

    def env(self) -> dict[str, str]:
        return {PASSWORD_ENV: self.password}


def _toml(value: object) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int | float):
        return str(value)
    if isinstance(value, dict):
        return "{ " + ", ".join(f"{k} = {_toml(v)}" for k, v in value.items()) + " }"
    if isinstance(value, list | tuple):
        return "[" + ", ".join(_toml(v) for v in value) + "]"
    text = str(value).replace("\\", "\\\\").replace('"', '\\"')
    return f'"{text}"'


def _quote(folder: str) -> str:
    return '"' + folder.replace("\\", "\\\\").replace('"', '\\"') + '"'


@dataclass
class RawLog:
    """Commands clients sent (after login) while :meth:`Mailbox.rawlog` was active."""

    directory: Path
    commands: list[str] = field(default_factory=list)
    lines: list[str] = field(default_factory=list)
    sessions: int = 0

    def raw_lines(self) -> list[str]:
        """Every command line as sent (after login)."""
        return self.lines

    def load(self) -> list[str]:
        self.commands = []
        self.lines = []
        inputs = sorted(self.directory.glob("*.in"))
        self.sessions = len(inputs)
        for path in inputs:
            for line in path.read_bytes().split(b"\r\n"):
                words = line.split(b" ", 4)
                if words and words[0].replace(b".", b"").isdigit():
                    words = words[1:]  # rawlog's timestamp
                if len(words) < 2 or not words[0]:
                    continue
                self.lines.append(b" ".join(words).decode("utf-8", "replace"))
                verb = words[1].upper()
                if verb == b"UID" and len(words) > 2:
                    verb = b"UID " + words[2].upper()
                self.commands.append(verb.decode("ascii", "replace"))
        return self.commands

    def count(self, verb: str) -> int:
        return sum(1 for c in self.commands if c == verb)


def _ensure_run_user() -> tuple[str, int, int]:
    if os.geteuid() != 0:
        import pwd

        entry = pwd.getpwuid(os.geteuid())
        return entry.pw_name, entry.pw_uid, entry.pw_gid
    import pwd

    try:
        entry = pwd.getpwnam(RUN_USER)
    except KeyError:
        subprocess.run(["useradd", "--system", "--no-create-home", "--home-dir", "/nonexistent",
                        "--shell", "/usr/sbin/nologin", RUN_USER], check=True, capture_output=True)
        entry = pwd.getpwnam(RUN_USER)
    return RUN_USER, entry.pw_uid, entry.pw_gid


@contextlib.contextmanager
def running_dovecot(oauth2_introspection: str | None = None) -> Iterator[Dovecot]:
    """Start a private Dovecot; stop it (by its master PID) and remove its folder after."""
    for binary in (DOVECOT, DOVEADM):
        if not os.access(binary, os.X_OK):
            pytest.fail(f"{binary} is missing: install Dovecot for the IMAP tests "
                        "(apt-get install -y dovecot-core dovecot-imapd)")
    if shutil.which("openssl") is None:
        pytest.fail("openssl is missing: apt-get install -y openssl")
    user, uid, gid = _ensure_run_user()
    root = Path(tempfile.mkdtemp(prefix="retainer-dovecot-"))
    os.chmod(root, 0o755)
    for sub in ("etc", "run", "state", "log", "mail"):
        (root / sub).mkdir()
    cert, _key = make_cert(root / "etc")
    os.chmod(root / "etc" / "key.pem", 0o600)
    server = Dovecot(root=root, port=free_port(), tls_port=free_port(), cert=cert,
                     run_user=user, uid=uid, gid=gid, oauth2_introspection=oauth2_introspection)
    if os.geteuid() == 0:
        for sub in ("run", "state", "log", "mail"):
            os.chown(root / sub, uid, gid)
        os.chown(root / "etc" / "key.pem", uid, gid)
        os.chown(cert, uid, gid)
    server.start()
    try:
        yield server
    finally:
        server.stop()
        shutil.rmtree(root, ignore_errors=True)


@pytest.fixture(scope="session")
def dovecot() -> Iterator[Dovecot]:
    """The session's private Dovecot (fails, never skips, when Dovecot is not installed)."""
    with running_dovecot() as server:
        yield server


@pytest.fixture
def dovecot_mailbox(dovecot: Dovecot) -> Mailbox:
    """A fresh user on the session's Dovecot, with an empty INBOX."""
    return dovecot.add_user()


def tls_context(server: Dovecot) -> ssl.SSLContext:
    """A client context that trusts the test server's self-signed certificate."""
    return ssl.create_default_context(cafile=str(server.cert))

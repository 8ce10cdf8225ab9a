"""The transfer adapter: the only place ssh, rsync and git-over-ssh run.

Boringly safe by construction:
- the project key only (``IdentitiesOnly``, no agent), ``-F /dev/null`` so no one's
  ``~/.ssh/config`` (ControlMaster, other keys, ProxyJump) changes what happens;
- a project-local ``.build/ssh/known_hosts``: the VM's host key is recorded at first
  contact after the VM is made (``accept-new``) and checked on every use after; ``vm_up``
  clears it when terraform makes a new VM. A changed key is refused with the fix named;
- argument lists everywhere; every remote path goes through ``shlex.quote`` for the remote
  shell (rsync's ``-e`` and git's ``GIT_SSH_COMMAND`` are split by rsync / ``sh``, so each
  word in them is quoted too).

Trust on first use was chosen over reading the key from the guest's console: the console
(a pty under libvirt) is not readable without attaching to it, and cloud-init prints keys
there only on first boot. ``accept-new`` never replaces a recorded key.
"""

from __future__ import annotations

import os
import re
import shlex
import threading
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path

from devbox.core import git, labels, libvirt, proc
from devbox.core.config import SSH_RE, Settings
from devbox.core.errors import Cancelled, DevboxError, NotAvailable, NotFound, Refused
from devbox.core.events import Reporter


class SshFailed(DevboxError):
    pass


@dataclass(frozen=True)
class Target:
    user: str
    host: str
    port: int
    key: Path
    known_hosts: Path
    alias: str  # the name the host key is recorded under
    timeout: int
    jump: Target | None = None  # reached through this host (a VM on another host)

    @property
    def login(self) -> str:
        return f"{self.user}@{self.host}"


def project_key(settings: Settings, report: Reporter | None = None) -> Path:
    """The project's SSH key (ed25519, 0600), made once; never the user's own key."""
    key = settings.build_path("ssh", "id_ed25519")
    if not key.exists():
        key.parent.mkdir(parents=True, exist_ok=True)
        key.parent.chmod(0o700)
        res = proc.run(
            ["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", f"devbox@{settings.repo_name}", "-f", str(key)],
            tool="ssh-keygen",
        )
        if not res.ok:
            raise DevboxError(f"ssh-keygen failed: {res.last_error()}", "install openssh (ssh-keygen) and run again")
        if report is not None:
            report.log(f"made the project SSH key {key}")
    key.chmod(0o600)
    return key


def target(settings: Settings, login_name: str, uri: str | None = None, jump: Target | None = None) -> Target:
    """Where ssh goes: ``vm.ssh`` when set, else the VM's address from libvirt (``uri``:
    the VM's libvirt, default ``libvirt.uri``), through ``jump`` when the VM is on a host."""
    key = settings.build_path("ssh", "id_ed25519")
    if not key.exists():
        raise NotFound(f"the project SSH key {key} does not exist", "make the VM first: ./vm-up.sh")
    known = settings.build_path("ssh", "known_hosts")
    user = settings.vm.user or login_name
    if settings.vm.ssh:
        m = SSH_RE.match(settings.vm.ssh)
        assert m is not None  # validated when the settings were loaded
        host, port = m.group("ip6") or m.group("name"), int(m.group("port") or 22)
        return Target(m.group("user") or user, host, port, key, known, f"{host}:{port}", settings.vm.ssh_timeout)
    domain = f"devbox-{settings.vm.name}"
    vm = libvirt.find_vm(uri or settings.libvirt_uri, domain)
    if vm is None:
        raise NotFound(f"VM {domain} does not exist", "make it: ./vm-up.sh")
    if not vm.running:
        raise NotAvailable(f"VM {domain} is {vm.state}", "start it: ./vm-up.sh")
    if not vm.ip:
        raise NotAvailable(f"VM {domain} has no address yet", "wait for it to boot, then retry (./devbox vm status)")
    return Target(user, vm.ip, 22, key, known, domain, settings.vm.ssh_timeout, jump)


def ssh_options(t: Target) -> list[str]:
    return [*_options(t), *(["-o", f"ProxyCommand={proxy_command(t.jump)}"] if t.jump else [])]


def proxy_command(jump: Target) -> str:
    """ssh to ``jump`` forwarding stdin/stdout to the target (``-W``), with devbox's own
    options for the jump too: ``ProxyJump`` would read the user's ssh config for that hop.
    ssh expands ``%`` in it, so every literal ``%`` is doubled."""
    words = shlex.join(["ssh", *ssh_options(jump)]).replace("%", "%%")
    return f"{words} -W %h:%p {shlex.quote(jump.login).replace('%', '%%')}"


def _options(t: Target) -> list[str]:
    return [
        "-F", "/dev/null",
        "-i", str(t.key),
        "-p", str(t.port),
        "-o", "IdentitiesOnly=yes",
        "-o", "IdentityAgent=none",
        "-o", "BatchMode=yes",
        "-o", f"UserKnownHostsFile={t.known_hosts}",
        "-o", "GlobalKnownHostsFile=/dev/null",
        "-o", "StrictHostKeyChecking=accept-new",
        "-o", f"HostKeyAlias={t.alias}",
        "-o", f"ConnectTimeout={t.timeout}",
        "-o", "ServerAliveInterval=15",
        "-o", "LogLevel=ERROR",
    ]  # fmt: skip


def ssh_argv(t: Target, command: list[str], *, tty: bool) -> list[str]:
    """``ssh`` to the target: a login shell, or ``command`` with each word quoted for the
    remote shell (so what the user typed arrives as the same words)."""
    remote = [shlex.join(command)] if command else []
    return ["ssh", *ssh_options(t), "-t" if tty else "-T", t.login, "--", *remote]


def ssh_command_string(t: Target) -> str:
    """The ssh command as one string, for rsync ``-e`` and ``GIT_SSH_COMMAND``."""
    return shlex.join(["ssh", *ssh_options(t)])


HOST_KEY_CHANGED = re.compile(r"REMOTE HOST IDENTIFICATION HAS CHANGED|Host key verification failed", re.I)


# lines that say only that something failed: the cause is on an earlier line
NOISE = re.compile(
    r"^(rsync error: |rsync: connection unexpectedly closed|rsync: \[\w+\] |fatal: the remote end hung up|"
    r"error: failed to (push|fetch) some refs|fatal: Could not read from remote repository|"
    r"Please make sure you have the correct access|and the repository exists|To ssh://|From ssh://|"
    r"hint: )",
    re.I,
)
CAUSE = re.compile(
    r"No route to host|Connection refused|Connection timed out|timed out|Could not resolve|Name or service not known|"
    r"Network is unreachable|Connection reset|\[remote rejected\]|\[rejected\]|couldn't find remote ref|"
    r"Permission denied|No such file or directory|No space left",
    re.I,
)


def cause(text: str) -> str:
    """The line of a tool's messages that says why it failed: a known cause (the ssh error,
    git's rejection) when there is one, else the last line that is not a generic trailer
    ("rsync error: unexplained error", "failed to push some refs")."""
    lines = [ln.strip() for ln in text.splitlines() if ln.strip()]
    for line in lines:
        if CAUSE.search(line) and not NOISE.match(line):
            return line[:400]
    rest = [ln for ln in lines if not NOISE.match(ln)]
    return (rest or lines or ["no answer"])[-1][:400]


def classify(t: Target, stderr: str) -> DevboxError:
    """ssh's own failure (exit 255) as one line with the fix."""
    if HOST_KEY_CHANGED.search(stderr):
        return Refused(
            f"the host key of {t.alias} changed since devbox first connected: refusing to connect",
            f"if the VM was remade outside devbox, forget the old key: ssh-keygen -R '{t.alias}' -f {t.known_hosts}",
        )
    if "Permission denied" in stderr:
        return SshFailed(
            f"{t.login} refused the project key {t.key}",
            f"the VM must have been made from another checkout's disk or key: remake it from this one "
            f"(./vm-down.sh, then ./vm-up.sh), or add {t.key}.pub to ~{t.user}/.ssh/authorized_keys in the VM",
        )
    return NotAvailable(
        f"cannot reach {t.login} port {t.port}: {cause(stderr)}", "is the VM running? ./devbox vm status; ./vm-up.sh"
    )


def remote_path(path: str, home: str | None, *, allow_outside_home: bool) -> str:
    """A remote path as given (relative = under the VM user's home), refused when it leaves
    the home unless allowed. ``home`` is asked for only when the path is absolute."""
    if path in ("~", "~/"):
        path = "."
    elif path.startswith("~/"):
        path = path[2:].lstrip("/") or "."  # rsync --protect-args would make a directory named "~"
    elif path.startswith("~"):
        raise Refused(f"remote path {path!r} names another user's home", "give a path in the VM user's home")
    if not path:
        raise DevboxError("empty remote path", "give a directory in the VM, e.g. work/src")
    parts = Path(path).parts
    if ".." in parts and not allow_outside_home:
        raise Refused(f"remote path {path!r} climbs out with '..'", "pass --allow-outside-home if you mean it")
    if os.path.isabs(path) and not allow_outside_home:
        assert home is not None
        norm = os.path.normpath(path)
        if norm != home and not norm.startswith(home.rstrip("/") + "/"):
            raise Refused(
                f"remote path {path!r} is outside the VM user's home ({home})",
                "pass --allow-outside-home if you mean it",
            )
    return path


def remote_home(t: Target) -> str:
    res = run_remote(t, ["sh", "-c", 'printf %s "$HOME"'], "reading $HOME", timeout=t.timeout + 20)
    return res.stdout.strip() or "/"


# -- rsync ------------------------------------------------------------------------------------

RSYNC_PROGRESS = re.compile(r"^\s*([\d,]+)\s+(\d+)%\s+(\S+)\s+(\S+)")
RSYNC_STAT = re.compile(r"^(Total bytes sent|Total bytes received|Literal data|Number of deleted files|"
                        r"Number of regular files transferred|Total file size|Total transferred file size): "
                        r"([\d,]+)")  # fmt: skip


@dataclass(frozen=True)
class Synced:
    source: str
    dest: str
    files: int  # regular files transferred
    deleted: tuple[str, ...]  # names as the file system has them (os.fsdecode of their bytes)
    bytes_sent: int
    bytes_received: int
    literal: int  # file data that had to travel (the rest was matched by the delta algorithm)
    dry_run: bool
    changes: tuple[str, ...]  # itemized lines as rsync prints them (names escaped), in its order
    written: tuple[str, ...] = ()  # names rsync writes (or would), as the file system has them
    size: int = 0  # bytes of the files it transfers (or would)
    itemized: bool = True  # False: a plain push, counted by --stats only (no per-file list)

    def summary(self) -> str:
        """One line for both faces: what moved (or would), deletions counted apart."""
        if not self.itemized:
            return (f"sent {self.files} file(s) ({labels.size(self.size)}); "
                    f"{self.bytes_sent} bytes out, {self.bytes_received} in")  # fmt: skip
        what = "would change" if self.dry_run else "changed"
        deleted = f", {len(self.deleted)} deleted" if self.deleted or not self.dry_run else ""
        return (
            f"{what} {len(self.written)} item(s) ({self.files} file(s), {labels.size(self.size)}){deleted}; "
            f"{self.bytes_sent} bytes out, {self.bytes_received} in"
        )


def rsync_argv(
    t: Target, src: str, dest: str, *, delete: bool, dry_run: bool, excludes: Iterable[str] = (),
    gitignore: bool = False, keep_owner: bool = True, itemize: bool = True,
) -> list[str]:  # fmt: skip
    """rsync over the project's ssh, every change itemized (``%i %n%L``: parsed for what was
    written and deleted, names escaped as ``\\#ooo`` under ``LC_ALL=C``)."""
    return [
        "rsync", "-a", "--mkpath", "--protect-args", "--stats", "--info=progress2",
        *(["--itemize-changes", "--out-format=%i %n%L"] if itemize else []),
        *([] if keep_owner else ["--no-owner", "--no-group"]),
        *(["--delete"] if delete else []),
        *(["--dry-run"] if dry_run else []),
        *(["--filter=:- .gitignore"] if gitignore else []),
        *(f"--exclude={pattern}" for pattern in excludes),
        "-e", ssh_command_string(t),
        "--", src, dest,
    ]  # fmt: skip


ESCAPED = re.compile(r"\\#([0-7]{3})")
ITEM = re.compile(r"^[<>ch.*][fdLDS][ .+?a-zA-Z]{7,9} ")


def unescape(name: str) -> str:
    """A name as rsync prints it back to the file system's own string. Under ``LC_ALL=C``
    rsync writes every byte that is not printable ASCII (a newline, UTF-8, anything) as
    ``\\#ooo``, and a literal ``\\#ddd`` in a name as ``\\#134#ddd``: the decoding is exact."""
    raw = ESCAPED.sub(lambda m: chr(int(m.group(1), 8)), name).encode("latin-1")
    return os.fsdecode(raw)


def item_name(line: str) -> str:
    """The path of an itemized line (escaped as printed): 11 columns of flags
    (``*deleting`` padded to them), a space, the name (a name may start or end with
    spaces), maybe `` -> target``."""
    name = line[12:] if len(line) > 12 else line
    return name.split(" -> ")[0] if line[1:2] == "L" else name


@dataclass(frozen=True)
class Itemized:
    stats: dict[str, int]
    changes: tuple[str, ...]
    written: tuple[str, ...]
    deleted: tuple[str, ...]


def parse_rsync(out: str) -> Itemized:
    """Its ``--stats`` numbers, itemized changes, and the names written and deleted."""
    stats: dict[str, int] = {}
    changes: list[str] = []
    written: list[str] = []
    deleted: list[str] = []
    for raw in out.splitlines():
        line = raw.strip("\r")
        m = RSYNC_STAT.match(line)
        if m:
            stats[m.group(1)] = int(m.group(2).replace(",", ""))
        elif line.startswith("*deleting "):
            deleted.append(unescape(item_name(line).rstrip("/")))
            changes.append(line)
        elif ITEM.match(line):
            changes.append(line)
            name = unescape(item_name(line).rstrip("/"))
            if name != ".":
                written.append(name)
    return Itemized(stats, tuple(changes), tuple(written), tuple(deleted))


# -- running them (ops/transfer.py and ops/upgrade.py call these, never proc) -------------------


def run_remote(
    t: Target, argv: list[str], what: str, *, timeout: float = 600, cancel: threading.Event | None = None,
    disconnects: bool = False, check: bool = True, input: bytes | None = None, errors: str = "replace",
) -> proc.Completed:  # fmt: skip
    """``argv`` in the VM; ssh's own failure and the command's are one line each.
    ``disconnects``: the command takes the connection down (a reboot): 255 is success.
    ``check=False``: the command's own exit code is the caller's to read (ssh's is not)."""
    res = proc.run(ssh_argv(t, argv, tty=False), tool="ssh", timeout=timeout, cancel=cancel, input=input,
                   errors=errors)  # fmt: skip
    if res.returncode == 255 and disconnects:
        return res
    if res.returncode == 255:
        raise classify(t, res.stderr)
    if not res.ok and check:
        raise SshFailed(f"{what} failed in the VM: {res.last_error()}", "look in the VM: ./vm-ssh.sh")
    return res


def interactive(t: Target, command: list[str], *, tty: bool) -> int:
    """ssh on this terminal; the remote exit code comes back. ssh's own failure (255) is
    told apart from a command's with a quiet probe."""
    rc = proc.interactive(ssh_argv(t, command, tty=tty), tool="ssh")
    if rc == 255:
        probe = proc.run(ssh_argv(t, ["true"], tty=False), tool="ssh", timeout=t.timeout + 20)
        if probe.returncode == 255:
            raise classify(t, probe.stderr)
    return rc


def feed_remote(
    t: Target, argv: list[str], chunks: Iterable[bytes], what: str, cancel: threading.Event,
    on_chunk: Callable[[int], None] | None = None,
) -> proc.Completed:  # fmt: skip
    """``argv`` in the VM with ``chunks`` on its stdin (an image archive for ``podman load``)."""
    done = proc.feed(ssh_argv(t, argv, tty=False), chunks, tool="ssh", cancel=cancel, on_chunk=on_chunk)
    if done.returncode == 255:
        raise classify(t, done.stderr)
    if not done.ok:
        raise SshFailed(f"{what} failed in the VM: {done.last_error()}", "see the message above")
    return done


def _progress(line: str) -> tuple[float | None, float | None, str] | None:
    m = RSYNC_PROGRESS.match(line)
    return None if m is None else (float(m.group(2)), 100.0, line.strip())


def rsync(
    t: Target, src: str, dest: str, report: Reporter, cancel: threading.Event, *, delete: bool, dry_run: bool,
    excludes: Iterable[str] = (), gitignore: bool = False, keep_owner: bool = True, itemize: bool = True,
) -> Synced:  # fmt: skip
    """rsync over the project's ssh; ``--info=progress2`` as Progress events, ``--stats`` and
    the itemized changes parsed. ``LC_ALL=C``: rsync's output is ASCII, names escaped exactly."""
    argv = rsync_argv(
        t, src, dest, delete=delete, dry_run=dry_run, excludes=excludes, gitignore=gitignore, keep_owner=keep_owner,
        itemize=itemize,
    )  # fmt: skip
    done = proc.stream(argv, report, cancel, source="rsync", capture_stdout=True, parse=_progress, env={"LC_ALL": "C"})
    if done.cancelled:
        raise Cancelled("transfer interrupted", "run it again: rsync only sends what is still missing")
    if done.returncode != 0:
        err = "\n".join(done.err_tail)
        if done.returncode == 255 or ("connection unexpectedly closed" in err and "ssh" in err):
            raise classify(t, err)
        raise SshFailed(f"rsync failed: {cause(err) if err else done.last_error()}", "see the rsync messages above")
    got = parse_rsync(done.stdout)
    return Synced(
        src, dest,
        files=got.stats.get("Number of regular files transferred", 0),
        deleted=got.deleted,
        bytes_sent=got.stats.get("Total bytes sent", 0),
        bytes_received=got.stats.get("Total bytes received", 0),
        literal=got.stats.get("Literal data", 0),
        dry_run=dry_run,
        changes=got.changes,
        written=got.written,
        size=got.stats.get("Total transferred file size", 0),
        itemized=itemize,
    )  # fmt: skip


def git_over_ssh(t: Target, repo: Path, args: list[str], report: Reporter, cancel: threading.Event, what: str) -> None:
    """``git push``/``fetch`` against the VM with the project's ssh (``GIT_SSH_COMMAND``: git
    runs it through ``sh``, so every word of it is quoted)."""
    env: dict[str, str | None] = {"GIT_SSH_COMMAND": ssh_command_string(t), "GIT_TERMINAL_PROMPT": "0"}
    done = proc.stream(["git", *git.HARDENED, "-C", str(repo), *args], report, cancel, source="git", env=env)
    if done.cancelled:
        raise Cancelled(f"git {what} interrupted", "run it again")
    if done.returncode != 0:
        err = "\n".join(done.err_tail)
        ssh_failed = re.search(r"^ssh: |Permission denied \(", err, re.M)
        if HOST_KEY_CHANGED.search(err) or ("Could not read from remote repository" in err and ssh_failed):
            raise classify(t, err)
        both = "\n".join(done.tail)  # --porcelain reports a rejected ref on stdout
        why = cause(both) if both else done.last_error()
        err = both
        remedy = "see the git messages above"
        if "updateInstead" in err or "Working directory has unstaged changes" in err or "would be overwritten" in err:
            why = f"the VM's checkout has uncommitted changes ({why})"
            remedy = "commit or stash them in the VM (./vm-ssh.sh), then push again"
        raise SshFailed(f"git {what} failed: {why}", remedy)


def git_url(t: Target, repo: str) -> str:
    """``repo`` relative to the VM user's home, as an ssh URL."""
    return f"ssh://{t.login}:{t.port}/~/{repo}"

"""Environments on other hosts (``start-work BRANCH --host NAME``), the way git works: a
local directory cannot be bind-mounted into a container on another machine (podman #8016),
so the branch goes to a mirror repository under the host's ``root``, the worktree is made
there, the container runs in the host's podman (podman-py through an ssh-forwarded socket,
the same isolation spec as locally, the remote worktree and mirror mounted at their paths
there), and the work comes back with ``devbox fetch`` into ``refs/remotes/<host>/BRANCH``.

Which host a branch's environment is on is recorded locally (git config
``branch.<name>.devboxhost``). The image is built on the host from the local ``bootc/``
(podman's remote build sends the context) under the same freshness digest and labels; a
base image missing there is copied from this machine's storage when it is here.
"""

from __future__ import annotations

import dataclasses
import shutil
import threading
import time
from dataclasses import dataclass
from pathlib import Path

from devbox.core import branch_notes, containers, egress, envgit, git, hosts, image, transfer
from devbox.core.config import Limits, Settings
from devbox.core.containers import HostUser
from devbox.core.egress import Policy
from devbox.core.errors import Cancelled, DevboxError, NotAvailable, NotFound, Refused, ToolMissing
from devbox.core.events import Reporter, Sink, Subject, null_sink
from devbox.core.host_config import HostSpec
from devbox.core.locks import hold
from devbox.core.ops import egress as egress_ops
from devbox.core.ops.containers import _wait_ready
from devbox.core.ops.hostlist import spec_of
from devbox.core.ops.steps import branch_lock, record_base
from devbox.core.podman import Podman
from devbox.core.session import Devbox

HOST_KEY = "devboxhost"  # git config branch.<name>.devboxhost: the host its environment is on


@dataclass(frozen=True)
class HostStarted:
    host: str
    branch: str
    container: str
    worktree: str  # its path on the host
    action: str  # created | started | running


@dataclass(frozen=True)
class Fetched:
    host: str
    branch: str
    ref: str  # refs/remotes/<host>/<branch>
    before: str
    after: str
    commits: int  # that the local branch does not have (before --ff)
    forwarded: bool = False


@dataclass(frozen=True)
class Layout:
    """Where this repository lives on a host."""

    root: str
    mirror: str
    worktree: str
    gitdirs: str  # each environment's own git directory (core/envgit.py), under it


def layout(f: hosts.Facts, branch: str) -> Layout:
    return Layout(f.root, f"{f.root}/mirror.git", f"{f.root}/worktrees/{branch}", f"{f.root}/gitdirs")


# the environment's own git directory there, as core/envgit.py makes it here: the mirror's
# objects through alternates (mounted read-only), its own HEAD, index, config and refs; the
# mirror itself is never mounted, so what a container writes is never read by git there
ENV_GIT = r"""
root=$1 mirror=$2 branch=$3 wt=$4 base=$5 config=$6 g=$1/git
[ -d "$g" ] && [ -f "$root/dotgit" ] && exit 0
rm -rf "$root" && mkdir -p "$g/objects/info" "$g/objects/pack" "$g/refs/heads" "$g/refs/tags" "$g/info" || exit 3
printf 'ref: refs/heads/%s\n' "$branch" >"$g/HEAD"
printf '%s' "$config" >"$g/config"
printf '%s/objects\n' "$mirror" >"$g/objects/info/alternates"
for b in "$branch" "$base"; do
  [ -n "$b" ] || continue
  sha=$(git -C "$mirror" rev-parse -q --verify "refs/heads/$b") || continue
  mkdir -p "$(dirname "$g/refs/heads/$b")" && echo "$sha" >"$g/refs/heads/$b"
done
admin=$(git -C "$wt" rev-parse --absolute-git-dir) && [ -f "$admin/index" ] && cp "$admin/index" "$g/index"
git -C "$mirror" rev-parse "refs/heads/$branch" >"$root/synced"
printf 'gitdir: %s\n' "$g" >"$root/dotgit"
"""


def host_of(session: Devbox, branch: str) -> str:
    """The host ``branch``'s environment is on ("" when it is local)."""
    return git.config_get(session.settings.repo, f"branch.{branch}.{HOST_KEY}")


SETUP = r"""
mirror=$1 worktrees=$2 gitdirs=$3 branch=$4
mkdir -p "$worktrees" "$gitdirs" && chmod 0700 "$gitdirs"
[ -d "$mirror" ] || git init -q --bare "$mirror" || exit 3
if git -C "$mirror" rev-parse -q --verify "refs/heads/$branch" >/dev/null; then echo has=1; else echo has=0; fi
"""


def _url(spec: HostSpec, path: str) -> str:
    return f"ssh://{spec.user}@{spec.address}:{spec.port}{path}"


def host_start_work(
    session: Devbox, host: str, branch: str, *, from_ref: str | None = None, sink: Sink = null_sink,
    cancel: threading.Event | None = None, policy: Policy | None = None,
) -> HostStarted:  # fmt: skip
    """The branch's environment on ``host`` (see the module): made, started or found running.
    ``policy``: a new environment's egress, enforced by the host's own podman (its network,
    its proxy there; None: ``[container] egress``)."""
    cancel = cancel or threading.Event()
    s = session.settings
    spec = spec_of(session, host)
    git.check_branch_name(branch)
    report = Reporter(sink, "start-work", Subject("host", host))
    on = host_of(session, branch)
    if on and on != host:
        raise Refused(f"{branch}'s environment is on host {on}", f"use --host {on}, or remove it there first")
    report.step("start", f"asking {host} ({spec.ssh})")
    f = hosts.probe(s, spec, cancel)
    if not f.socket_up:
        fix = f"start it there: systemctl --user enable --now podman.socket (devbox host check {host})"
        raise NotAvailable(f"no podman service on {host} at {f.socket}", fix)
    where = layout(f, branch)
    with hold(branch_lock(session, branch), f"start-work for {branch!r}"):
        if not git.rev(s.repo, f"refs/heads/{branch}"):  # a new branch is made here first, then sent
            start = git.rev(s.repo, from_ref or "HEAD")
            if not start:
                raise NotFound(f"no commit {from_ref or 'HEAD'!r} to start {branch} from", "give --from REF")
            git.create_branch(s.repo, branch, start)
            record_base(s.repo, branch, from_ref)
        elif from_ref:
            raise Refused(f"branch {branch!r} exists already", "drop --from to use it")
        res = hosts.run(s, spec, ["sh", "-c", SETUP, "setup", where.mirror, f"{where.root}/worktrees", where.gitdirs,
                                  branch], cancel=cancel)  # fmt: skip
        if not res.ok:
            raise NotAvailable(f"could not set up {where.root} on {host}: {res.last_error()}",
                               f"is git installed there? (devbox host check {host})")  # fmt: skip
        t = hosts.target(s, spec)
        r = report.about(Subject("branch", branch))
        if "has=1" not in res.stdout:
            r.step("start", f"pushing {branch} to {host}:{where.mirror}")
            refs = [f"refs/heads/{branch}:refs/heads/{branch}"]
            base = branch_notes.recorded_base(s.repo, branch)
            if base and git.rev(s.repo, f"refs/heads/{base}"):
                refs.append(f"+refs/heads/{base}:refs/heads/{base}")  # its base too: diffs there make sense
            transfer.git_over_ssh(t, s.repo, ["push", "--quiet", _url(spec, where.mirror), *refs], r, cancel, "push")
        made = hosts.run(s, spec, ["sh", "-c", 'test -d "$2" || git -C "$1" worktree add -q "$2" "$3"', "wt",
                                   where.mirror, where.worktree, branch], cancel=cancel)  # fmt: skip
        if not made.ok:
            raise NotAvailable(f"could not make the worktree on {host}: {made.last_error()}", "see the message")
        git.config_set(s.repo, f"branch.{branch}.{HOST_KEY}", host)
        with hosts.Tunnel(s, spec, f.socket) as url:
            return _container(session, spec, f, where, branch, url, report, cancel, policy)


def _container(
    session: Devbox, spec: HostSpec, f: hosts.Facts, where: Layout, branch: str, url: str, report: Reporter,
    cancel: threading.Event, asked: Policy | None,
) -> HostStarted:  # fmt: skip
    s = session.settings
    podman = Podman(url, timeout=s.podman_timeout, notify=session.notify)
    there = Devbox(dataclasses.replace(s, repo=Path(where.mirror)), user=HostUser(f.uid, f.gid, spec.user),
                   notify=session.notify, podman=podman)  # fmt: skip
    try:
        img_report = report.about(Subject("image", s.image))
        _copy_bases(session, there, img_report)
        img = image.build(there.settings, podman, img_report, cancel)
        assert img.info is not None
        name = containers.container_name(s, branch)
        r = report.about(Subject("container", name))
        existing = containers.get(podman, name)
        if existing is not None and asked is not None and asked.mode != existing.egress:
            raise Refused(f"{branch}'s environment on {spec.name} has egress {existing.egress}, not {asked.mode}",
                          f"remove it there and start again with --egress {asked.mode}: devbox worktree remove "
                          f"{branch}, or ask for {existing.egress}: --egress {existing.egress}")  # fmt: skip
        policy = asked or s.egress
        if existing is not None and existing.running:
            r.step("skip", f"{name} is running on {spec.name}")
            return HostStarted(spec.name, branch, name, where.worktree, "running")
        if existing is not None:
            r.step("start", f"starting stopped {name} on {spec.name}")
            since = int(time.time()) - 1
            if existing.egress == "allow":
                recorded = egress.read_record(s.build_dir, name) or Policy("allow")
                egress_ops.restart_proxy(there, name, recorded, cancel, addresses=_addresses(s, spec))
            podman.start(name)
            _wait_ready(there, name, cancel, since)
            return HostStarted(spec.name, branch, name, where.worktree, "started")
        r.step("start", f"creating {name} on {spec.name} (egress {policy.describe()})")
        addresses = _addresses(s, spec) if policy.mode == "allow" else ()
        proxy = egress_ops.EgressStart(podman, there.settings, name, img.info.id, policy, addresses=addresses,
                                       report=r, cancel=cancel)  # fmt: skip
        wiring = proxy.wiring()
        env_root = f"{where.gitdirs}/{name}"
        create = containers.spec(
            there.settings, name=name, branch=branch, worktree=Path(where.worktree), image_id=img.info.id,
            user=there.user, rootless=podman.rootless(), env=git.identity(s.repo), repo=Path(where.mirror),
            gitdir=Path(f"{env_root}/git"), dotgit=Path(f"{env_root}/dotgit"), objects=Path(f"{where.mirror}/objects"),
            limits=s.limits if podman.limits_enforced() else Limits(), wiring=wiring,
        )  # fmt: skip
        base = branch_notes.recorded_base(s.repo, branch)
        made = hosts.run(
            s,
            spec,
            ["sh", "-c", ENV_GIT, "envgit", env_root, where.mirror, branch, where.worktree, base, envgit.CONFIG],
        )
        try:
            if not made.ok:
                raise NotAvailable(f"could not make {env_root} on {spec.name}: {made.last_error()}", "see the message")
            podman.create(create)
            since = int(time.time()) - 1
            podman.start(name)
            _wait_ready(there, name, cancel, since)
            proxy.join()
            egress.write_record(s.build_dir, name, policy)
        except BaseException:
            proxy.join_quietly()
            podman.remove(name, force=True)  # nothing half-made is left there
            for vol in containers.volume_names(name):
                podman.remove_volume(vol)
            egress_ops.unwire(podman, name)
            raise
        r.step("done", f"{name} running on {spec.name} in {where.worktree}")
        return HostStarted(spec.name, branch, name, where.worktree, "created")
    finally:
        podman.close()


def _addresses(s: Settings, spec: HostSpec) -> tuple[str, ...]:
    """The host's own addresses (its proxy never connects to them): ``ip -j addr`` there."""
    done = hosts.run(s, spec, ["ip", "-j", "addr"])
    return egress.host_addresses(done.stdout) if done.ok else ()


def _copy_bases(session: Devbox, there: Devbox, report: Reporter) -> None:
    """FROM images the host lacks: from this machine's storage when they are here (no
    registry needed), else the host pulls them."""
    for ref, iid in image.local_bases(there.settings, there.podman).items():
        if iid is not None:
            continue
        try:  # this machine's podman may be down or absent: the host then pulls it itself
            here = session.podman.image(ref) is not None
        except DevboxError:
            here = False
        if here:
            report.step("start", f"copying base image {ref} to the host")
            there.podman.load(session.podman.save(ref))
            report.step("done", f"{ref} copied")
    image.ensure_bases(there.settings, there.podman, report)


def fetch(
    session: Devbox, branch: str, *, ff: bool = False, sink: Sink = null_sink, cancel: threading.Event | None = None
) -> Fetched:
    """The host's commits of ``branch`` into ``refs/remotes/<host>/<branch>``; ``ff``: then the
    local branch too, when that is a fast-forward and its worktree is clean (as vm-git-pull).
    A local environment's commits go onto ``branch`` itself, as every look at it does
    (core/ops/envsync.py); this is that look, now."""
    cancel = cancel or threading.Event()
    s = session.settings
    host = host_of(session, branch)
    if not host:
        return _fetch_local(session, branch, sink, cancel)
    spec = spec_of(session, host)
    f = hosts.known(s, spec)  # where the mirror is; the fetch itself says whether the host answers
    ref = f"refs/remotes/{host}/{branch}"
    before = git.rev(s.repo, ref)
    r = Reporter(sink, "fetch", Subject("branch", branch))
    where = layout(f, branch)
    name = containers.container_name(s, branch)
    # the upload side runs inside the container there, as its user: what the agent wrote in
    # its git directory is read only where it already is (core/envgit.py)
    remote = host_exec_argv(spec, f, name, "/", ["git", "upload-pack", "--strict", f"{where.gitdirs}/{name}/git"])
    got = envgit.fetch_untrusted(s.repo, envgit.ext_url(transfer.ssh_argv(hosts.target(s, spec), remote, tty=False)),
                              f"+refs/heads/{branch}:{ref}", cancel=cancel, timeout=spec.timeout + 120)  # fmt: skip
    if cancel.is_set():
        raise Cancelled("fetch interrupted", "run it again")
    if not got.ok:
        raise NotAvailable(f"could not fetch {branch} from {name} on {host}: {got.last_error()}",
                           f"is it running there? devbox start-work {branch} --host {host}")  # fmt: skip
    after = git.rev(s.repo, ref)
    mine = git.rev(s.repo, f"refs/heads/{branch}")
    new = git.count_commits(s.repo, f"{mine}..{after}" if mine else after)
    forwarded = False
    if ff:
        from devbox.core.ops.transfer import fast_forward

        forwarded = fast_forward(session, branch, after, r, f"{host}/{branch}")
    r.step("done", f"{ref} at {after[:12]}: {new} commit(s) your {branch} does not have"
                   + (f"; {branch} fast-forwarded" if forwarded else ""))  # fmt: skip
    return Fetched(host, branch, ref, before, after, new, forwarded)


def _fetch_local(session: Devbox, branch: str, sink: Sink, cancel: threading.Event) -> Fetched:
    from devbox.core.ops.envsync import sync_container

    s = session.settings
    git.check_branch_name(branch)
    c = containers.get(session.podman, containers.container_name(s, branch))
    if c is None:
        raise NotFound(f"{branch} has no environment", f"start one: ./start-work {branch}")
    if not c.running:
        raise Refused(f"{c.name} is {c.state}: what it committed stays inside until it runs",
                      f"start it: ./start-work {branch} --detach, then devbox fetch {branch}")  # fmt: skip
    r = Reporter(sink, "fetch", Subject("branch", branch))
    before = git.rev(s.repo, f"refs/heads/{branch}")
    done = sync_container(session, c, r, cancel, again=True)
    after = git.rev(s.repo, f"refs/heads/{branch}")
    if done is not None and done.diverged:
        kept = envgit.devbox_ref(c.name)
        raise Refused(f"{branch} moved on the host and in {c.name}; the environment's commit is kept as {kept}",
                      f"compare them: git log {branch}...{kept}")  # fmt: skip
    commits = git.count_commits(s.repo, f"{before}..{after}") if before and after and before != after else 0
    r.step("done", f"{branch} at {after[:12]}: {commits} new commit(s) from {c.name}")
    return Fetched("", branch, f"refs/heads/{branch}", before, after, commits, forwarded=before != after)


def host_remove(
    session: Devbox, branch: str, *, force: bool = False, sink: Sink = null_sink, cancel: threading.Event | None = None,
) -> tuple[str, ...]:  # fmt: skip
    """Remove the branch's environment on its host: the container, its volumes, the worktree
    there and the branch in the mirror. Refused, naming them, when the host holds commits
    this machine does not have or uncommitted changes, unless ``force``."""
    cancel = cancel or threading.Event()
    s = session.settings
    host = host_of(session, branch)
    spec = spec_of(session, host)
    unfetched = ""
    try:
        fetched: Fetched | None = fetch(session, branch, sink=sink, cancel=cancel)
    except NotAvailable as exc:  # a stopped environment: what it committed cannot be fetched now
        fetched, unfetched = None, exc.message
    only_there = git.count_commits(s.repo, fetched.after, "--not", "--branches") if fetched else 0
    f = hosts.probe(s, spec, cancel)  # fresh: the podman socket is needed now
    where = layout(f, branch)
    dirty = hosts.run(s, spec, ["sh", "-c", 'test ! -d "$1" || git -C "$1" status --porcelain', "st", where.worktree])
    pending = [line[3:] for line in dirty.stdout.splitlines() if line.strip()]
    shown = fetched.ref if fetched else ""
    losses = ([f"{only_there} commit(s) only on {host} (fetched to {shown})"] if only_there else []) + (
        [f"{len(pending)} uncommitted file(s) there: {', '.join(pending[:5])}"] if pending else []) + (
        [f"any commit its environment made that was not fetched ({unfetched})"] if unfetched else [])  # fmt: skip
    if losses and not force:
        raise Refused(f"removing {branch} on {host} would lose: " + "; ".join(losses),
                      f"merge or fetch what you want to keep (devbox fetch {branch}), or pass --force")  # fmt: skip
    if cancel.is_set():
        raise Cancelled("interrupted: nothing removed")
    report = Reporter(sink, "worktree-remove", Subject("host", host))
    removed: list[str] = []
    name = containers.container_name(s, branch)
    with hosts.Tunnel(s, spec, f.socket) as url:
        podman = Podman(url, timeout=s.podman_timeout)
        try:
            if podman.container(name) is not None:
                podman.remove(name, force=True)
                removed.append(f"container {name} on {host}")
            for vol in containers.volume_names(name):
                if podman.remove_volume(vol):
                    removed.append(f"volume {vol}")
            removed += [f"{what} on {host}" for what in egress_ops.unwire(podman, name)]
            egress.drop_record(s.build_dir, name)
        finally:
            podman.close()
    gone = hosts.run(s, spec, ["sh", "-c", 'git -C "$1" worktree remove --force "$2" 2>/dev/null; rm -rf "$2" "$4"; '
                               'git -C "$1" worktree prune; git -C "$1" branch -D "$3" >/dev/null', "rm", where.mirror,
                               where.worktree, branch, f"{where.gitdirs}/{name}"])  # fmt: skip
    if not gone.ok:
        raise NotAvailable(f"could not remove {where.worktree} on {host}: {gone.last_error()}", "see the message")
    removed += [f"worktree {where.worktree} on {host}", f"branch {branch} in {host}:{where.mirror}"]
    git.config_set(s.repo, f"branch.{branch}.{HOST_KEY}", None)
    if losses:
        report.log("lost, as --force asked: " + "; ".join(losses))
    report.step("done", "removed " + ", ".join(removed))
    return tuple(removed)


def host_exec_argv(spec: HostSpec, f: hosts.Facts, name: str, worktree: str, command: list[str], *,
                   names: tuple[str, ...] = (), tty: bool = False) -> list[str]:  # fmt: skip
    """The host's ``podman exec`` of ``command`` in container ``name``, as the user there (the
    same way in as locally: the entrypoint's user, the worktree as working directory);
    ``names``: variables podman takes from its own environment (credentials)."""
    user = HostUser(f.uid, f.gid, spec.user)
    env = {**containers.exec_env(user), "DEVBOX_AGENT_STATE": containers.AGENT_STATE_MOUNT}
    return ["podman", "exec", "--interactive", *(["--tty"] if tty else []), "--user", "0:0", "--workdir", worktree,
            *(f"--env={k}={v}" for k, v in env.items()), *(f"--env={n}" for n in names), name,
            *containers.drop_privileges(user, command)]  # fmt: skip


def host_attach_argv(session: Devbox, started: HostStarted, command: list[str], *, tty: bool) -> list[str]:
    """``ssh`` to the host running its podman's ``exec`` of ``command`` in the container."""
    s = session.settings
    spec = spec_of(session, started.host)
    remote = host_exec_argv(spec, hosts.known(s, spec), started.container, started.worktree, command, tty=tty)
    argv = transfer.ssh_argv(hosts.target(s, spec), remote, tty=tty)
    exe = shutil.which(argv[0])
    if exe is None:  # the face execs it: an absolute path
        raise ToolMissing("ssh is not installed (no `ssh` on PATH)", "install openssh-client")
    return [exe, *argv[1:]]

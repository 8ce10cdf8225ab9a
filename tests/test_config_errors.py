"""Bad settings and a missing or unreachable podman: one line, a remedy, a distinct exit code."""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest

from devbox.core import config
from devbox.core.errors import ConfigError, ExitCode

ROOT = Path(__file__).resolve().parents[1]


def make_repo(tmp: Path, toml: str | None = "") -> Path:
    repo = tmp / "repo"
    (repo / "bootc").mkdir(parents=True)
    if toml is not None:
        (repo / "devbox.toml").write_text(toml)
    return repo


def run_cli(
    repo: Path, *args: str, env: dict[str, str] | None = None, user: int | None = None
) -> subprocess.CompletedProcess[str]:
    base = {k: v for k, v in os.environ.items() if not k.startswith("DEVBOX_")}
    base["DEVBOX_REPO"] = str(repo)
    base.update(env or {})
    prefix = ["setpriv", f"--reuid={user}", f"--regid={user}", "--clear-groups"] if user is not None else []
    return subprocess.run(
        [*prefix, sys.executable, "-m", "devbox.cli", *args], env=base, capture_output=True, text=True, cwd=repo
    )


def assert_one_line_error(res: subprocess.CompletedProcess[str], code: ExitCode, *words: str) -> None:
    assert res.returncode == code, (res.returncode, res.stderr)
    lines = res.stderr.strip().splitlines()
    assert len(lines) == 1, res.stderr
    assert lines[0].startswith("devbox: ") and "(fix: " in lines[0]
    for word in words:
        assert word in lines[0]
    assert "Traceback" not in res.stdout + res.stderr


def test_defaults_and_env_override(tmp_path: Path) -> None:
    repo = make_repo(tmp_path, '[image]\nname = "localhost/x:1"\n')
    s = config.load(repo, env={})
    assert s.image == "localhost/x:1"
    assert s.bootc_dir == repo.resolve() / "bootc"
    assert s.worktrees_dir == repo.resolve().parent / "repo.worktrees"
    s = config.load(repo, env={"DEVBOX_IMAGE_NAME": "localhost/y:2", "DEVBOX_SOMETHING_ELSE": "ignored"})
    assert s.image == "localhost/y:2"


@pytest.mark.parametrize(
    ("toml", "words"),
    [
        ("[image]\nnmae = 'x'\n", ["unknown key image.nmae", "known keys"]),
        ("[imag]\nname = 'x'\n", ["unknown section [imag]"]),
        ("[image]\nname = 3\n", ["image.name must be a string"]),
        ("[image\n", ["not valid TOML"]),
        ("[paths]\nbootc = 'nope'\n", ["paths.bootc", "does not exist"]),
        ("[podman]\nurl = 'http://x'\n", ["podman.url", "not a podman URL"]),
    ],
)
def test_bad_config_is_one_line_with_key(tmp_path: Path, toml: str, words: list[str]) -> None:
    repo = make_repo(tmp_path, toml)
    with pytest.raises(ConfigError) as err:
        config.load(repo, env={})
    for word in words:
        assert word in err.value.one_line()
    assert_one_line_error(run_cli(repo, "image", "status"), ExitCode.CONFIG, *words)


def test_missing_bootc_dir_from_env(tmp_path: Path) -> None:
    repo = make_repo(tmp_path)
    res = run_cli(repo, "image", "status", env={"DEVBOX_PATHS_BOOTC": "gone"})
    assert_one_line_error(res, ExitCode.CONFIG, "DEVBOX_PATHS_BOOTC", "does not exist")


def test_unreadable_devbox_toml() -> None:
    # root reads anything: run as nobody, in a directory nobody can enter
    with tempfile.TemporaryDirectory() as tmp:
        Path(tmp).chmod(0o755)
        repo = make_repo(Path(tmp), "[image]\n")
        (repo / "devbox.toml").chmod(0o000)
        res = run_cli(repo, "image", "status", user=65534 if os.getuid() == 0 else None)
    assert_one_line_error(res, ExitCode.CONFIG, "cannot read", "devbox.toml", "permission denied")


def test_no_devbox_toml_anywhere(tmp_path: Path) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("DEVBOX_")}
    res = subprocess.run(
        [sys.executable, "-m", "devbox.cli", "image", "status"], env=env, cwd=tmp_path, capture_output=True, text=True
    )
    assert_one_line_error(res, ExitCode.CONFIG, "no devbox.toml")


def test_podman_not_installed(tmp_path: Path) -> None:
    repo = make_repo(tmp_path)
    bindir = tmp_path / "bin"
    bindir.mkdir()
    for tool in ("git",):  # a PATH with everything devbox may need except podman
        found = shutil.which(tool)
        assert found
        (bindir / tool).symlink_to(found)
    for args in (("image", "status"), ("image", "build")):
        res = run_cli(repo, *args, env={"PATH": str(bindir)})
        assert_one_line_error(res, ExitCode.PODMAN_MISSING, "podman is not installed", "install podman")


def test_socket_missing_and_not_listening(tmp_path: Path) -> None:
    repo = make_repo(tmp_path)
    gone = tmp_path / "gone.sock"
    res = run_cli(repo, "image", "status", env={"DEVBOX_PODMAN_URL": f"unix://{gone}"})
    assert_one_line_error(
        res, ExitCode.PODMAN_UNREACHABLE, "does not exist", f"podman system service --time=0 unix://{gone}"
    )

    dead = tmp_path / "dead.sock"
    s = socket.socket(socket.AF_UNIX)
    s.bind(str(dead))  # bound but never listening: connect() is refused
    try:
        res = run_cli(repo, "image", "status", env={"DEVBOX_PODMAN_URL": f"unix://{dead}"})
    finally:
        s.close()
    assert_one_line_error(res, ExitCode.PODMAN_UNREACHABLE, "not answering", "podman.autostart")


def test_listener_that_never_answers_times_out_fast(tmp_path: Path) -> None:
    import time

    repo = make_repo(tmp_path)
    hung = tmp_path / "hung.sock"
    s = socket.socket(socket.AF_UNIX)
    s.bind(str(hung))
    s.listen(8)  # accepts connections, never answers
    try:
        started = time.monotonic()
        res = run_cli(repo, "image", "status", env={"DEVBOX_PODMAN_URL": f"unix://{hung}"})
        took = time.monotonic() - started
    finally:
        s.close()
    assert_one_line_error(res, ExitCode.PODMAN_UNREACHABLE, "is not answering", "no reply in time")
    assert took < 15  # the ping gives up after 3 s, not the 30 s of a normal call


def test_typed_values_from_file_and_env(tmp_path: Path) -> None:
    repo = make_repo(tmp_path, "[podman]\nautostart = true\ntimeout = 7\n")
    s = config.load(repo, env={})
    assert s.podman_autostart is True and s.podman_timeout == 7
    s = config.load(repo, env={"DEVBOX_PODMAN_AUTOSTART": "no", "DEVBOX_PODMAN_TIMEOUT": "12"})
    assert s.podman_autostart is False and s.podman_timeout == 12
    for toml, words in (
        ("[podman]\ntimeout = '7'\n", ["podman.timeout must be an integer", "timeout = 30"]),
        ("[podman]\ntimeout = true\n", ["podman.timeout must be an integer"]),
        ("[podman]\nautostart = 1\n", ["podman.autostart must be true or false"]),
        ("[podman]\ntimeout = 0\n", ["podman.timeout", "positive"]),
    ):
        (repo / "devbox.toml").write_text(toml)
        with pytest.raises(ConfigError) as err:
            config.load(repo, env={})
        for word in words:
            assert word in err.value.one_line(), (toml, err.value.one_line())
    (repo / "devbox.toml").write_text("")
    for name, value, word in (
        ("DEVBOX_PODMAN_TIMEOUT", "soon", "must be an integer"),
        ("DEVBOX_PODMAN_AUTOSTART", "maybe", "must be true or false"),
    ):
        res = run_cli(repo, "image", "status", env={name: value})
        assert_one_line_error(res, ExitCode.CONFIG, name, word)


def test_default_image_name_is_unique_per_checkout(tmp_path: Path) -> None:
    a = make_repo(tmp_path / "a")
    b = make_repo(tmp_path / "b")
    na, nb = config.load(a, env={}).image, config.load(b, env={}).image
    assert na != nb and na.startswith("localhost/devbox-repo-") and na.endswith(":latest")
    assert config.load(a, env={}).image == na  # stable


@pytest.mark.podman
def test_autostart_starts_a_service_and_says_so(podman_service: object, tmp_path: Path) -> None:
    import json
    import signal

    repo = make_repo(tmp_path)
    sock = tmp_path / "auto" / "podman.sock"  # its directory does not exist yet either
    env = {"DEVBOX_PODMAN_URL": f"unix://{sock}", "DEVBOX_PODMAN_AUTOSTART": "true"}
    try:
        res = run_cli(repo, "image", "status", "--json", env=env)
        assert res.returncode == 0, res.stderr
        assert json.loads(res.stdout)["fresh"] is False
        assert "started one" in res.stderr and "podman.autostart" in res.stderr and sock.exists()
        again = run_cli(repo, "image", "status", env=env)
        assert again.returncode == 0 and "started one" not in again.stderr  # the service is reused
    finally:
        for pid in subprocess.run(
            ["pgrep", "-f", f"system service --time=300 unix://{sock}"], capture_output=True, text=True
        ).stdout.split():
            os.kill(int(pid), signal.SIGTERM)


@pytest.mark.parametrize("value", ["u@h:notaport", "u@h:70000", "-oProxyCommand=x", "u@h:22:1", "u@[::1"])
def test_vm_ssh_must_be_user_host_port(tmp_path: Path, value: str) -> None:
    """Issue 14 item 16: a port that is not a port is refused when the settings load."""
    repo = make_repo(tmp_path, f'[vm]\nssh = "{value}"\n')
    with pytest.raises(ConfigError, match="is not user@host"):
        config.load(repo, env={})


@pytest.mark.parametrize(("value", "host", "port"), [("u@h", "h", None), ("u@[::1]:2222", None, "2222")])
def test_vm_ssh_accepts_host_and_bracketed_ipv6(tmp_path: Path, value: str, host: str | None, port: str) -> None:
    repo = make_repo(tmp_path, f'[vm]\nssh = "{value}"\n')
    m = config.SSH_RE.match(config.load(repo, env={}).vm.ssh)
    assert m is not None and m.group("name") == host and m.group("port") == port


def test_a_devbox_toml_planted_below_a_checkout_is_never_the_projects(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """issue 27: an agent writes its worktree; a devbox.toml in a subdirectory of it (no .git
    beside it) must not become the settings devbox runs commands from."""
    from devbox.core.repo_root import find_repo

    repo = make_repo(tmp_path / "main")
    subprocess.run(["git", "init", "-q", str(repo)], check=True)
    subprocess.run(["git", "-C", str(repo), "add", "devbox.toml"], check=True)
    subprocess.run(["git", "-C", str(repo), "commit", "-q", "-m", "x"], check=True,
                   env={**os.environ, "GIT_AUTHOR_NAME": "a", "GIT_AUTHOR_EMAIL": "a@b", "GIT_COMMITTER_NAME": "a",
                        "GIT_COMMITTER_EMAIL": "a@b"})  # fmt: skip
    wt = tmp_path / "wt"
    subprocess.run(["git", "-C", str(repo), "worktree", "add", "-q", "-b", "agent", str(wt)], check=True)
    planted = wt / "sub"
    planted.mkdir()
    (planted / "devbox.toml").write_text('[notify]\ncommand = ["sh", "-c", "touch /tmp/pwned"]\n')
    monkeypatch.delenv("DEVBOX_REPO", raising=False)
    monkeypatch.chdir(planted)
    assert find_repo() == repo.resolve()
    loaded = config.load(find_repo(), env={})
    assert loaded.notify_command == ()

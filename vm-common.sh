#!/usr/bin/env bash
# Shared by the root shims: find the project, make sure its virtualenv exists, and run
# devbox from it by path (never another `devbox` on PATH, such as Jetify's Nix tool).
# Sourced, not run.

DEVBOX_REPO=$(cd -- "$(dirname -- "${BASH_SOURCE[0]}")" && pwd -P)
# Run from a linked worktree (./start-work inside one), use the main repository: its
# settings, its .build/ and its virtualenv (one environment per clone, not per branch).
if common=$(git -C "$DEVBOX_REPO" rev-parse --path-format=absolute --git-common-dir 2>/dev/null) &&
    [[ $common == */.git && -f ${common%/.git}/devbox.toml ]]; then
    DEVBOX_REPO=${common%/.git}
fi
export DEVBOX_REPO
DEVBOX_VENV=${DEVBOX_VENV:-$DEVBOX_REPO/.venv}
DEVBOX_BIN=$DEVBOX_VENV/bin/devbox

devbox_bootstrap() {
    # A stamp records which pyproject.toml the venv was made from: reinstall when it changes.
    # The vm-*.sh shims set DEVBOX_EXTRAS=vm (libvirt-python); the stamp records that too.
    local stamp=$DEVBOX_VENV/.devbox-pyproject extras=${DEVBOX_EXTRAS:-}
    if [[ -x $DEVBOX_BIN ]] && cmp -s "$DEVBOX_REPO/pyproject.toml" "$stamp" &&
        { [[ -z $extras ]] || grep -qx "# extras: $extras" "$stamp.extras" 2>/dev/null; }; then
        return 0
    fi
    local py
    py=$(command -v python3 || true)
    if [[ -z $py ]]; then
        echo "devbox: python3 is not installed (fix: sudo dnf install python3)" >&2
        exit 3
    fi
    if ! "$py" -c 'import sys; sys.exit(sys.version_info < (3, 11))'; then
        echo "devbox: python3 is older than 3.11 (fix: install Python 3.11 or newer)" >&2
        exit 3
    fi
    echo "devbox: setting up $DEVBOX_VENV (first run only)" >&2
    if ! { [[ -x $DEVBOX_VENV/bin/python ]] || "$py" -m venv "$DEVBOX_VENV"; } ||
        ! "$DEVBOX_VENV/bin/python" -m pip install --quiet --disable-pip-version-check \
            -e "$DEVBOX_REPO${extras:+[$extras]}" >&2; then
        echo "devbox: could not set up $DEVBOX_VENV (fix: check the pip output above, then rerun)" >&2
        exit 3
    fi
    # byte-compile now: an editable install leaves that to the first run, and with
    # PYTHONDONTWRITEBYTECODE set every run would compile devbox again (~20 ms)
    "$DEVBOX_VENV/bin/python" -m compileall -q "$DEVBOX_REPO/app" >/dev/null || true
    cp "$DEVBOX_REPO/pyproject.toml" "$stamp"
    if [[ -n $extras ]]; then echo "# extras: $extras" >"$stamp.extras"; fi
}

devbox_exec() {
    devbox_bootstrap
    exec "$DEVBOX_BIN" "$@"
}

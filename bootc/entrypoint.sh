#!/bin/sh
# Container-mode entrypoint (POSIX sh: runs on the bootc image and on test fixtures).
#
# Starts as root inside the container, makes the invoking user exist with the host's
# UID/GID (passed by devbox as DEVBOX_UID, DEVBOX_GID, DEVBOX_USER), gives them a home under
# /var/home seeded from /etc/skel on first start, then drops every privilege and execs the
# command. Under rootless podman (--userns=keep-id) the same UID is the host user; under
# rootful podman it is the same number on the host, so files in the worktree stay the
# user's either way.
set -eu

uid=${DEVBOX_UID:?DEVBOX_UID is not set (start containers with ./start-work)}
gid=${DEVBOX_GID:?DEVBOX_GID is not set}
user=${DEVBOX_USER:-devbox}
home=/var/home/$user

if [ "$(id -u)" != 0 ]; then
    # Already unprivileged (someone ran podman with --user): just run the command.
    exec "$@"
fi

# /etc is writable (a per-container volume): add the user once, idempotently. Under
# --userns=keep-id podman bind-mounts its own read-only passwd/group with the user in them;
# a failed append there is harmless (setpriv takes numeric IDs).
if ! grep -q "^[^:]*:[^:]*:[^:]*:$gid:" /etc/group 2>/dev/null; then
    { printf '%s:x:%s:\n' "$user" "$gid" >>/etc/group; } 2>/dev/null || true
fi
if ! grep -q "^[^:]*:[^:]*:$uid:" /etc/passwd 2>/dev/null; then
    { printf '%s:x:%s:%s:devbox user:%s:/bin/bash\n' "$user" "$uid" "$gid" "$home" >>/etc/passwd; } 2>/dev/null || true
fi

# /var is writable (a per-container volume): the home survives stop/start.
if [ ! -d "$home" ]; then
    mkdir -p "$home"
    if [ -d /etc/skel ]; then
        cp -a /etc/skel/. "$home/"
    fi
    chown -R "$uid:$gid" "$home"
fi

# the agent's state directory: a size-bounded tmpfs devbox mounts there, the user's alone
if [ -d /run/devbox-agent ]; then
    chown "$uid:$gid" /run/devbox-agent && chmod 0700 /run/devbox-agent
fi

export HOME="$home" USER="$user" LOGNAME="$user"
cd "${DEVBOX_WORKDIR:-$home}"
# devbox waits for this line before it reports the container as started
echo "devbox-entrypoint: ready (user $user, uid $uid, gid $gid)"
exec /usr/bin/setpriv --reuid="$uid" --regid="$gid" --clear-groups \
    --inh-caps=-all --bounding-set=-all --no-new-privs -- "$@"

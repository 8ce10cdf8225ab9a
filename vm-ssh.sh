#!/usr/bin/env bash
# ./vm-ssh.sh: devbox vm ssh (see ./devbox vm ssh --help).
set -euo pipefail
DEVBOX_EXTRAS=vm  # libvirt-python
# shellcheck source=vm-common.sh
source "$(dirname -- "${BASH_SOURCE[0]}")/vm-common.sh"
devbox_exec vm ssh "$@"

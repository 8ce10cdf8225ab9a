#!/usr/bin/env bash
# ./vm-git-pull.sh: devbox vm git-pull (see ./devbox vm git-pull --help).
set -euo pipefail
DEVBOX_EXTRAS=vm  # libvirt-python
# shellcheck source=vm-common.sh
source "$(dirname -- "${BASH_SOURCE[0]}")/vm-common.sh"
devbox_exec vm git-pull "$@"

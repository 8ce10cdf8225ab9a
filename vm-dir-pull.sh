#!/usr/bin/env bash
# ./vm-dir-pull.sh: devbox vm dir-pull (see ./devbox vm dir-pull --help).
set -euo pipefail
DEVBOX_EXTRAS=vm  # libvirt-python
# shellcheck source=vm-common.sh
source "$(dirname -- "${BASH_SOURCE[0]}")/vm-common.sh"
devbox_exec vm dir-pull "$@"

#!/usr/bin/env bash
# ./vm-status.sh: devbox vm status (see ./devbox vm status --help).
set -euo pipefail
DEVBOX_EXTRAS=vm  # libvirt-python
# shellcheck source=vm-common.sh
source "$(dirname -- "${BASH_SOURCE[0]}")/vm-common.sh"
devbox_exec vm status "$@"

#!/usr/bin/env bash
# ./vm-down.sh: devbox vm down (see ./devbox vm down --help).
set -euo pipefail
DEVBOX_EXTRAS=vm  # libvirt-python
# shellcheck source=vm-common.sh
source "$(dirname -- "${BASH_SOURCE[0]}")/vm-common.sh"
devbox_exec vm down "$@"

#!/usr/bin/env bash
# ./vm-dir-push.sh: devbox vm dir-push (see ./devbox vm dir-push --help).
set -euo pipefail
DEVBOX_EXTRAS=vm  # libvirt-python
# shellcheck source=vm-common.sh
source "$(dirname -- "${BASH_SOURCE[0]}")/vm-common.sh"
devbox_exec vm dir-push "$@"

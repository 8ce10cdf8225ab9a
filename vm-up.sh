#!/usr/bin/env bash
# ./vm-up.sh: build what is stale (image -> qcow2 disk) and boot the devbox VM.
set -euo pipefail
DEVBOX_EXTRAS=vm  # libvirt-python
# shellcheck source=vm-common.sh
source "$(dirname -- "${BASH_SOURCE[0]}")/vm-common.sh"
devbox_exec vm up "$@"

#!/usr/bin/env bash
# ./vm-git-push.sh: devbox vm git-push (see ./devbox vm git-push --help).
set -euo pipefail
DEVBOX_EXTRAS=vm  # libvirt-python
# shellcheck source=vm-common.sh
source "$(dirname -- "${BASH_SOURCE[0]}")/vm-common.sh"
devbox_exec vm git-push "$@"

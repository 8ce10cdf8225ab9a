# shellcheck shell=sh
export FIXTURE_PROFILE=1
PS1='devbox-fixture$ '  # tests wait for this prompt before they type

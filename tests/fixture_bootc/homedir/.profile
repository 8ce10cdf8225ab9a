# shellcheck shell=sh
export FIXTURE_PROFILE=1

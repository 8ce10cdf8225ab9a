#!/bin/sh
# devbox's Claude Code hook: one JSON line per event into the environment's state
# directory, which devbox reads on the host (container mode: a bind mount; VM mode: over
# ssh). Registered for every hook event in /etc/claude-code/managed-settings.json.
#
# It must never slow or break the agent: it reads at most 64 KiB of the event, writes one
# line with O_APPEND, prints nothing (Claude Code would read stdout as a decision) and
# always exits 0, also when the directory is gone.
dir=${DEVBOX_AGENT_STATE:-/run/devbox-agent}
payload=$(head -c 65536 | tr -d '\n\r')
case $payload in
'{'*'}') ;;
*) exit 0 ;; # not the JSON Claude Code sends: nothing to record
esac
now=$(date +%s)
{ printf '{"ts":%s,"payload":%s}\n' "$now" "$payload" >>"$dir/events.jsonl"; } 2>/dev/null
exit 0

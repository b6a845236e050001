#!/bin/sh
# edge-agent on the PATH: installed by systemd/install.sh as /usr/local/bin/edge-agent.
#
# Runs the service's venv CLI the way the service sees things:
#   - EDGE_AGENT_CONFIG defaults to the service's config (-c still wins);
#   - the control socket needs nothing: without $RUNTIME_DIRECTORY the CLI looks where the
#     service's RuntimeDirectory= puts it, /run/edge-agent/control.sock (group edge-agent);
#   - commands that talk to the broker (broker-test, doctor, config check, queue replay, run)
#     get the MQTT password the way the service does, as $CREDENTIALS_DIRECTORY/mqtt_password:
#     a private copy, in a 0700 temp dir removed when the command ends, made only when
#     @ETC@/mqtt.password exists and the caller can read it (root, i.e. sudo).
#     The password never appears in argv or in any environment. No file (client
#     certificates, or no auth): nothing is passed.
#   - run as root (sudo edge-agent ...), the command runs as user edge-agent, like the
#     service: a root process opening the queue could leave root-owned queue.db-wal/-shm
#     files that the service then cannot open, and the queue directory is edge-agent's only.
set -eu

CLI=@PREFIX@/venv/bin/edge-agent
ETC=@ETC@
STATE=@STATE@
USER_NAME=edge-agent

: "${EDGE_AGENT_CONFIG:=$ETC/edge-agent.toml}"
export EDGE_AGENT_CONFIG

if [ ! -x "$CLI" ]; then
  echo "edge-agent: $CLI is missing: run systemd/install.sh again" >&2
  exit 1
fi

# Which command: the first argument that is not an option (or the value of -c/--config);
# for queue, the one after it.
cmd=""
sub=""
skip=0
for arg in "$@"; do
  if [ "$skip" -eq 1 ]; then skip=0; continue; fi
  case "$arg" in
    -c|--config) skip=1 ;;
    -*) ;;
    *) if [ -z "$cmd" ]; then cmd=$arg; elif [ -z "$sub" ]; then sub=$arg; break; fi ;;
  esac
done
needs_password=0
case "$cmd" in
  broker-test|doctor|config|run) needs_password=1 ;;
  queue) [ "$sub" != replay ] || needs_password=1 ;;
esac

# As root: drop to the service user (when the account exists on this machine).
as_service_user=0
if [ "$(id -u)" -eq 0 ] && id -u "$USER_NAME" >/dev/null 2>&1 && command -v runuser >/dev/null; then
  as_service_user=1
fi

# The queue directory is 0700 edge-agent (the unit's StateDirectoryMode=): say how to get in.
if [ "$cmd" = queue ] && [ "$as_service_user" -eq 0 ] && [ ! -x "$STATE" ] && [ -d "$STATE" ]; then
  echo "edge-agent: the queue in $STATE is user edge-agent's only: run \`sudo edge-agent queue" \
    "...\`" >&2
fi

if [ "$needs_password" -eq 0 ] || [ ! -e "$ETC/mqtt.password" ]; then
  if [ "$as_service_user" -eq 1 ]; then
    exec runuser -u "$USER_NAME" -- "$CLI" "$@"
  fi
  exec "$CLI" "$@"
fi

if [ ! -r "$ETC/mqtt.password" ]; then
  echo "edge-agent: $ETC/mqtt.password is readable by root only: run \`sudo edge-agent $cmd\`" \
    "to use the MQTT password" >&2
  exec "$CLI" "$@"
fi

creds=""
cleanup() { [ -z "$creds" ] || rm -rf "$creds"; }
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM
trap 'exit 129' HUP
creds=$(umask 077 && mktemp -d "${TMPDIR:-/tmp}/edge-agent-cred.XXXXXXXXXX")
(umask 077 && cat "$ETC/mqtt.password" >"$creds/mqtt_password")
chmod 0400 "$creds/mqtt_password"
export CREDENTIALS_DIRECTORY="$creds"
rc=0
if [ "$as_service_user" -eq 1 ]; then
  chown -R "$USER_NAME" "$creds"
  runuser -u "$USER_NAME" -- "$CLI" "$@" || rc=$?
else
  "$CLI" "$@" || rc=$?
fi
exit "$rc"

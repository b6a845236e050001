#!/usr/bin/env bash
# Install edge-agent from this checkout as a hardened systemd service (Debian/Ubuntu line PC).
#
# usage: systemd/install.sh [--root DIR] [--wheels DIR] [--python PY] [--uninstall]
#
# Lays down (every step is skipped when already done, so a second run changes nothing):
#   user and group edge-agent    systemd-sysusers, from /etc/sysusers.d/edge-agent.conf
#                                (also makes sure groups dialout and plugdev exist)
#   /opt/edge-agent/venv         a venv with edge-agent installed from this checkout; rebuilt
#                                only when the package sources changed (hash in .source-hash)
#   /opt/edge-agent/README.md    where the install guide is (points to the docs below)
#   /usr/share/doc/edge-agent/   docs/*.md: install guide, protocols, reliability, backend
#                                contract (the unit's Documentation=); replaced on upgrade
#   /usr/local/bin/edge-agent    the technician's CLI: runs the venv's edge-agent with the
#                                service's config and, for broker commands run with sudo, the
#                                MQTT password (from systemd/edge-agent-cli.sh)
#   /etc/systemd/system/edge-agent.service
#   /etc/udev/rules.d/99-edge-agent.rules    replaced on upgrade
#   /etc/udev/rules.d/99-edge-agent-local.rules  the site's role names (/dev/edge/scanner-1),
#                                from the template only if there is none (never touched again)
#                                then `udevadm control --reload` + trigger, if udev is running
#   /etc/edge-agent/             0750 root:edge-agent
#   /etc/edge-agent/edge-agent.toml          from config/example.toml, 0640 root:edge-agent,
#                                only if there is none (an existing file is never touched)
#   /var/lib/edge-agent/         0700 edge-agent:edge-agent (the queue; never touched again)
# then, when systemd is running: daemon-reload, enable, and try-restart if the code or the
# unit changed (a stopped service stays stopped). It never starts the service: the config
# and /etc/edge-agent/mqtt.password must be edited first (see docs/install.md); it ends by
# printing these steps.
#
# --uninstall removes the unit (disabling and stopping it), 99-edge-agent.rules, the
# sysusers file, /usr/local/bin/edge-agent, /opt/edge-agent and /usr/share/doc/edge-agent. It keeps the data (/var/lib/edge-agent), the
# configuration (/etc/edge-agent, 99-edge-agent-local.rules) and the edge-agent account,
# which still owns the data.
#
# --root DIR (or DESTDIR=DIR) stages everything under DIR instead of /: users go into
# DIR/etc/passwd and DIR/etc/group (systemd-sysusers --root), the unit is enabled with
# `systemctl --root`, nothing is reloaded, started or restarted, and the running system is
# not touched. Ownership is set only when run as root. DIR/usr/local/bin/edge-agent then
# runs DIR/opt/edge-agent/venv with DIR/etc/edge-agent. The venv is built in place, so it
# runs from DIR/opt/edge-agent/venv but cannot be moved (venvs are not relocatable): to build
# an image, run this script inside the image (chroot, systemd-nspawn) rather than copying DIR.
#
# --wheels DIR installs offline from a wheelhouse made on a connected machine with
#   python3 -m pip wheel -w DIR /path/to/checkout
# --python PY chooses the interpreter for the venv (default python3, >= 3.11).
set -Eeuo pipefail
trap 'echo "install.sh: error: \"$BASH_COMMAND\" failed (line $LINENO)" >&2' ERR
umask 022  # the venv and unit must be readable by the service user and by systemd

SRC=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
ROOT=${DESTDIR:-}
PYTHON=python3
WHEELS=""
UNINSTALL=0

PREFIX=/opt/edge-agent
VENV=$PREFIX/venv
ETC=/etc/edge-agent
STATE=/var/lib/edge-agent
UNIT=/etc/systemd/system/edge-agent.service
RULES=/etc/udev/rules.d/99-edge-agent.rules
LOCAL_RULES=/etc/udev/rules.d/99-edge-agent-local.rules
SYSUSERS=/etc/sysusers.d/edge-agent.conf
WRAPPER=/usr/local/bin/edge-agent

say() { echo "install.sh: $*"; }
die() { echo "install.sh: error: $*" >&2; exit 1; }
usage() { sed -n '2,/^set -E/{/^set -E/d;s/^# \{0,1\}//;p}' "${BASH_SOURCE[0]}"; }

while [ $# -gt 0 ]; do
  case "$1" in
    --root) [ $# -ge 2 ] || die "--root needs a directory"; ROOT=$2; shift 2 ;;
    --root=*) ROOT=${1#*=}; shift ;;
    --wheels) [ $# -ge 2 ] || die "--wheels needs a directory"; WHEELS=$2; shift 2 ;;
    --wheels=*) WHEELS=${1#*=}; shift ;;
    --python) [ $# -ge 2 ] || die "--python needs an interpreter"; PYTHON=$2; shift 2 ;;
    --python=*) PYTHON=${1#*=}; shift ;;
    --uninstall) UNINSTALL=1; shift ;;
    -h|--help) usage; exit 0 ;;
    *) usage >&2; die "unknown option '$1'" ;;
  esac
done

if [ -n "$ROOT" ]; then
  mkdir -p "$ROOT"
  R=$(cd "$ROOT" && pwd)
  [ "$R" != / ] || R=""
else
  R=""
fi
STAGED=0; [ -z "$R" ] || STAGED=1
AS_ROOT=0; [ "$(id -u)" -ne 0 ] || AS_ROOT=1
[ "$STAGED" = 1 ] || [ "$AS_ROOT" = 1 ] || die "run as root (or stage with --root DIR)"

# Live systemd / udev on this machine? Never consulted when staging.
systemd_running() { [ "$STAGED" = 0 ] && [ -d /run/systemd/system ]; }
udev_running() { [ "$STAGED" = 0 ] && [ -S /run/udev/control ] && command -v udevadm >/dev/null; }

# install_file SRC DEST MODE: copy unless DEST already has the same bytes and mode.
# Prints the path when it changed, so callers can count changes.
install_file() {
  local src=$1 dest=$2 mode=$3
  if [ -f "$dest" ] && cmp -s "$src" "$dest" && [ "$(stat -c %a "$dest")" = "${mode#0}" ]; then
    return 0
  fi
  install -D -m "$mode" "$src" "$dest"
  say "installed ${dest#"$R"}"
  echo "$dest" >>"$CHANGES"
}

# ensure_dir DIR MODE UID GID: create or fix mode and owner; the contents are never touched.
ensure_dir() {
  local dir=$1 mode=$2 uid=$3 gid=$4
  [ -d "$dir" ] || { mkdir -p "$dir"; say "created ${dir#"$R"}"; }
  [ "$(stat -c %a "$dir")" = "${mode#0}" ] || chmod "$mode" "$dir"
  if [ "$AS_ROOT" = 1 ] && [ "$(stat -c %u:%g "$dir")" != "$uid:$gid" ]; then
    chown "$uid:$gid" "$dir"
  fi
}

# id_of NAME passwd|group: numeric id from the (possibly staged) account database.
id_of() { awk -F: -v n="$1" '$1 == n { print $3; exit }' "$R/etc/$2"; }

# Hash of what `pip install` takes from the checkout: pyproject.toml and the top-level
# packages it names (tool.setuptools packages, or packages.find include/exclude).
source_hash() {
  "$PYTHON" - "$SRC" <<'PY'
import fnmatch, hashlib, sys, tomllib
from pathlib import Path

src = Path(sys.argv[1])
tool = tomllib.loads((src / "pyproject.toml").read_text()).get("tool", {}).get("setuptools", {})
pk = tool.get("packages")
find = pk.get("find", {}) if isinstance(pk, dict) else {}
include = pk if isinstance(pk, list) else find.get("include", ["*"])
exclude = find.get("exclude", [])

def named(name, patterns):
    return any(fnmatch.fnmatchcase(name, p.split(".")[0]) for p in patterns)

tops = sorted(
    i.parent.name for i in src.glob("*/__init__.py")
    if i.parent.name != "tests" and named(i.parent.name, include) and not named(i.parent.name, exclude)
)
digest = hashlib.sha256()
for path in [src / "pyproject.toml"] + sorted(f for t in tops for f in (src / t).rglob("*")):
    if "__pycache__" in path.parts or path.suffix == ".pyc" or not path.is_file():
        continue
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        continue
    digest.update(str(path.relative_to(src)).encode() + b"\0" + data)
print(digest.hexdigest())
PY
}

create_accounts() {
  install_file "$SRC/systemd/edge-agent.sysusers" "$R$SYSUSERS" 0644
  if command -v systemd-sysusers >/dev/null; then
    mkdir -p "$R/etc"
    if [ "$STAGED" = 1 ]; then
      systemd-sysusers --root="$R" "$R$SYSUSERS"
    else
      systemd-sysusers "$SYSUSERS"
    fi
  elif [ "$STAGED" = 0 ]; then
    getent group dialout >/dev/null || groupadd --system dialout
    getent group plugdev >/dev/null || groupadd --system plugdev
    getent group edge-agent >/dev/null || groupadd --system edge-agent
    getent passwd edge-agent >/dev/null || useradd --system --gid edge-agent \
      --groups dialout,plugdev --home-dir "$STATE" --no-create-home \
      --shell /usr/sbin/nologin --comment "edge-agent sorting-line daemon" edge-agent
  else
    die "systemd-sysusers is needed to create the account under --root"
  fi
  EA_UID=$(id_of edge-agent passwd)
  EA_GID=$(id_of edge-agent group)
  if [ -z "$EA_UID" ] || [ -z "$EA_GID" ]; then die "user edge-agent missing from $R/etc/passwd"; fi
}

install_venv() {
  local want have=""
  "$PYTHON" -c 'import sys; sys.exit(sys.version_info < (3, 11))' ||
    die "$PYTHON is older than 3.11 (use --python)"
  want=$(source_hash)
  [ -f "$R$PREFIX/.source-hash" ] && have=$(cat "$R$PREFIX/.source-hash")
  if [ "$want" = "$have" ] && "$R$VENV/bin/edge-agent" --version >/dev/null 2>&1; then
    return 0
  fi
  if ! "$R$VENV/bin/python" -c '' 2>/dev/null; then
    # Missing, or its interpreter is gone (e.g. after a Python upgrade): (re)create it.
    mkdir -p "$R$PREFIX"
    "$PYTHON" -m venv --clear "$R$VENV"
    say "created venv ${VENV}"
  fi
  local pip=("$R$VENV/bin/python" -m pip install --quiet --disable-pip-version-check --no-input)
  if [ -n "$WHEELS" ]; then
    [ -d "$WHEELS" ] || die "--wheels $WHEELS: no such directory"
    # The same version number may carry new code: reinstall, or pip calls it satisfied.
    "${pip[@]}" --no-index --find-links "$WHEELS" --force-reinstall edge-agent
  else
    "${pip[@]}" "$SRC"
  fi
  echo "$want" >"$R$PREFIX/.source-hash"
  say "installed $("$R$VENV/bin/edge-agent" --version) into $VENV"
  echo "$R$VENV" >>"$CHANGES"
}

# The service runs the venv as edge-agent: its interpreter must not live under /root (pyenv).
check_venv_runs_as_service_user() {
  [ "$STAGED" = 0 ] && command -v runuser >/dev/null || return 0
  runuser -u edge-agent -- "$VENV/bin/edge-agent" --version >/dev/null 2>&1 && return 0
  die "user edge-agent cannot run $VENV/bin/edge-agent: its Python ($(readlink -f \
"$VENV/bin/python")) is not readable by that user (under /root?). Remove $VENV and rerun with
--python /usr/bin/python3."
}

# install_once SRC DEST MODE GID: site files are created from a template once, then left alone.
install_once() {
  local src=$1 dest=$2 mode=$3 gid=$4
  [ ! -e "$dest" ] || return 0
  install -D -m "$mode" "$src" "$dest"
  [ "$AS_ROOT" = 0 ] || chown "0:$gid" "$dest"
  say "created ${dest#"$R"} from ${src#"$SRC"/}: edit it for this line"
  echo "$dest" >>"$CHANGES"
}

install_config() {
  ensure_dir "$R$ETC" 0750 0 "$EA_GID"
  install_once "$SRC/config/example.toml" "$R$ETC/edge-agent.toml" 0640 "$EA_GID"
  install_once "$SRC/systemd/99-edge-agent-local.rules" "$R$LOCAL_RULES" 0644 0
}

# The CLI on the PATH, pointing at this install's venv and configuration (under DIR too).
install_wrapper() {
  local tmp
  tmp=$(mktemp)
  sed -e "s|@PREFIX@|$R$PREFIX|g" -e "s|@ETC@|$R$ETC|g" -e "s|@STATE@|$R$STATE|g" \
    "$SRC/systemd/edge-agent-cli.sh" >"$tmp"
  install_file "$tmp" "$R$WRAPPER" 0755
  rm -f "$tmp"
}

# What is left for the technician, with what is already done marked.
next_steps() {
  local pw="" cfg="" run=""
  [ ! -e "$R$ETC/mqtt.password" ] || pw="   (exists)"
  if [ -f "$R$ETC/edge-agent.toml" ] && ! cmp -s "$SRC/config/example.toml" "$R$ETC/edge-agent.toml"; then
    cfg="   (edited)"
  fi
  ! systemd_running || ! systemctl --quiet is-active edge-agent.service || run="   (running)"
  cat <<EOF

Next steps:
  1. Edit the configuration: node, broker, devices${cfg}
       sudoedit $ETC/edge-agent.toml
       edge-agent ports        # finds the scanner and scale ports, with or without a config
  2. Store the MQTT password${pw}
     (broker with client certificates only: no file; clear LoadCredential=, see the guide)
       sudo sh -c 'umask 077 && cat > $ETC/mqtt.password'   # type it, Enter, Ctrl-D
  3. Start the service${run}
       sudo systemctl enable --now edge-agent
  4. Check everything
       sudo edge-agent doctor && sudo edge-agent broker-test && edge-agent status
  Technicians: sudo usermod -aG edge-agent,dialout,plugdev <login>   (then log in again)
EOF
}

enable_unit() {
  if [ "$STAGED" = 1 ]; then
    if command -v systemctl >/dev/null; then
      systemctl --root="$R" --quiet enable edge-agent.service
    else
      say "systemctl not found: unit not enabled in $R"
    fi
  elif systemd_running; then
    systemctl daemon-reload
    systemctl --quiet enable edge-agent.service
    if grep -qF -e "$UNIT" -e "$VENV" "$CHANGES"; then
      systemctl try-restart edge-agent.service
    fi
  else
    say "systemd is not running here (container?): skipped daemon-reload and enable;"
    say "on the target run: systemctl daemon-reload && systemctl enable --now edge-agent"
  fi
}

# The documents in docs/ -> /usr/share/doc/edge-agent (the unit's Documentation= points there).
# Files no longer in docs/ are removed, so the installed set always equals the checkout's.
DOCS=/usr/share/doc/edge-agent
install_docs() {
  local f name
  for f in "$SRC"/docs/*.md; do
    [ -e "$f" ] || continue
    install_file "$f" "$R$DOCS/${f##*/}" 0644
  done
  for f in "$R$DOCS"/*; do
    [ -e "$f" ] || continue
    name=${f##*/}
    [ -e "$SRC/docs/$name" ] && continue
    rm -f "$f"
    say "removed $DOCS/$name"
    echo "$f" >>"$CHANGES"
  done
}

reload_udev() {
  if udev_running && grep -qF -e "$RULES" -e "$LOCAL_RULES" "$CHANGES"; then
    udevadm control --reload
    udevadm trigger --action=change --subsystem-match=tty --subsystem-match=usb
    say "udev rules reloaded"
  elif [ "$STAGED" = 0 ]; then
    say "udev is not running: rules take effect at the next boot or udev start"
  fi
}

do_install() {
  create_accounts
  ensure_dir "$R$STATE" 0700 "$EA_UID" "$EA_GID"
  install_venv
  check_venv_runs_as_service_user
  install_file "$SRC/systemd/README.md" "$R$PREFIX/README.md" 0644
  install_wrapper
  install_docs
  install_file "$SRC/systemd/edge-agent.service" "$R$UNIT" 0644
  install_file "$SRC/systemd/99-edge-agent.rules" "$R$RULES" 0644
  install_config
  reload_udev
  enable_unit
  if [ -s "$CHANGES" ]; then
    say "done ($(wc -l <"$CHANGES") changes)"
  else
    say "done (nothing to change)"
  fi
  next_steps
}

do_uninstall() {
  if [ -f "$R$UNIT" ]; then
    if [ "$STAGED" = 1 ]; then
      ! command -v systemctl >/dev/null || systemctl --root="$R" --quiet disable edge-agent.service
    elif systemd_running; then
      systemctl --quiet disable --now edge-agent.service || true
    fi
  fi
  rm -f "$R/etc/systemd/system/multi-user.target.wants/edge-agent.service"
  local path
  for path in "$UNIT" "$RULES" "$SYSUSERS" "$WRAPPER"; do
    if [ -e "$R$path" ]; then
      rm -f "$R$path"
      say "removed $path"
      echo "$R$path" >>"$CHANGES"
    fi
  done
  if [ -e "$R$PREFIX" ]; then
    rm -rf "$R$PREFIX"
    say "removed $PREFIX"
  fi
  if [ -e "$R$DOCS" ]; then
    rm -rf "$R$DOCS"
    say "removed $DOCS"
  fi
  ! systemd_running || systemctl daemon-reload
  reload_udev
  say "kept $STATE (the queue), $ETC, $LOCAL_RULES and the edge-agent account"
}

CHANGES=$(mktemp)
trap 'rm -f "$CHANGES"' EXIT
if [ "$UNINSTALL" = 1 ]; then
  do_uninstall
else
  do_install
fi

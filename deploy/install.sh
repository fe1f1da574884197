#!/bin/sh
# Install, upgrade or remove the OTA Gateway as a systemd service on a Debian-like box (arm64, amd64).
#
#   sudo sh deploy/install.sh                      install, or upgrade in place: the config and the
#                                                  data are kept, a running service is restarted
#   sudo sh deploy/install.sh --uninstall          remove the program and the unit; keep config and data
#   sudo sh deploy/install.sh --uninstall --purge  ... and remove the config, the data and the user
#   sh deploy/install.sh --prefix DIR              everything under DIR (DIR/opt, DIR/etc, DIR/var/lib):
#                                                  no user, no systemctl (to try it, and for the tests)
#   --no-systemd                                   install the unit file but never call systemctl
#   --wheels DIR                                   offline: install only from this wheelhouse (default:
#                                                  deploy/wheels when it holds wheels; see the README)
#
# Nothing is changed before every prerequisite is checked (python3 >= 3.11 with venv and ensurepip,
# root for a real install, systemctl unless --no-systemd).
set -eu
here=$(cd "$(dirname "$0")/.." && pwd)
prefix=/
systemd=yes
action=install
purge=no
wheels=""

say() { echo "install.sh: $*"; }
die() { echo "install.sh: $*" >&2; exit 1; }

while [ $# -gt 0 ]; do
  case $1 in
    --prefix) [ $# -ge 2 ] || die "--prefix needs a folder"; prefix=$2; shift 2 ;;
    --prefix=*) prefix=${1#--prefix=}; shift ;;
    --no-systemd) systemd=no; shift ;;
    --uninstall) action=uninstall; shift ;;
    --purge) purge=yes; shift ;;
    --wheels) [ $# -ge 2 ] || die "--wheels needs a folder"; wheels=$2; shift 2 ;;
    --wheels=*) wheels=${1#--wheels=}; shift ;;
    -h | --help) sed -n '2,16p' "$0" | sed 's/^# \{0,1\}//'; exit 0 ;;
    *) die "unknown option $1 (see --help)" ;;
  esac
done
[ "$purge" = no ] || [ "$action" = uninstall ] || die "--purge only goes with --uninstall"

# -- where everything goes ---------------------------------------------------------------------
case $prefix in
  /) root="" ;;
  /*) root=${prefix%/}; systemd=no ;;
  *) die "--prefix needs an absolute folder, not $prefix" ;;
esac
app=$root/opt/ota-gateway
venv=$app/venv
etc=$root/etc/ota-gateway
data=$root/var/lib/ota-gateway
unit=$root/etc/systemd/system/ota-gateway.service

# -- prerequisites, before anything is changed -------------------------------------------------
if [ -z "$root" ] && [ "$(id -u)" -ne 0 ]; then
  die "a real install needs root (sudo), or try it under a folder with --prefix DIR"
fi
if [ "$systemd" = yes ] && ! command -v systemctl >/dev/null 2>&1; then
  die "systemctl not found: this box does not run systemd (use --no-systemd, or deploy/Containerfile)"
fi
version_of_venv() {
  [ -x "$venv/bin/python" ] && "$venv/bin/python" -c 'from gateway import __version__; print(__version__)' 2>/dev/null || true
}

if [ "$action" = uninstall ]; then
  if [ "$systemd" = yes ]; then
    systemctl disable --now ota-gateway >/dev/null 2>&1 || true
  fi
  old=$(version_of_venv)
  rm -f "$unit"
  [ "$systemd" = no ] || systemctl daemon-reload
  case $app in */opt/ota-gateway) rm -rf "$app" ;; esac
  if [ "$purge" = yes ]; then
    case $etc in */etc/ota-gateway) rm -rf "$etc" ;; esac
    case $data in */var/lib/ota-gateway) rm -rf "$data" ;; esac
    if [ -z "$root" ] && id ota-gateway >/dev/null 2>&1; then userdel ota-gateway || true; fi
    say "removed ota-gateway ${old:-} with its config ($etc) and data ($data)"
  else
    say "removed ota-gateway ${old:-}; kept the config ($etc) and the data ($data): --uninstall --purge removes them"
  fi
  exit 0
fi

command -v python3 >/dev/null 2>&1 || die "python3 (>= 3.11) is required: apt-get install python3 python3-venv"
python3 -c 'import sys; sys.exit(sys.version_info < (3, 11))' \
  || die "python3 >= 3.11 is required (this one is $(python3 -c 'import platform; print(platform.python_version())'))"
python3 -c 'import venv, ensurepip' 2>/dev/null \
  || die "python3's venv and ensurepip are missing: apt-get install python3-venv"
[ -n "$wheels" ] || { ls "$here"/deploy/wheels/*.whl >/dev/null 2>&1 && wheels=$here/deploy/wheels; } || true
if [ -n "$wheels" ]; then
  ls "$wheels"/ota_gateway-*.whl >/dev/null 2>&1 \
    || die "the wheelhouse $wheels has no ota_gateway wheel (see 'Offline boxes' in the README)"
  new=$(ls "$wheels"/ota_gateway-*.whl | sed -n 's/.*ota_gateway-\([^-]*\)-.*/\1/p' | sort -V | tail -n 1)
else
  [ -f "$here/pyproject.toml" ] || die "$here is not a checkout of the gateway (no pyproject.toml)"
  new=$(sed -n 's/^__version__ = "\(.*\)"$/\1/p' "$here/gateway/__init__.py")
fi
old=$(version_of_venv)

# -- the user and the folders ------------------------------------------------------------------
owner=""
if [ -z "$root" ]; then
  id ota-gateway >/dev/null 2>&1 || useradd --system --home-dir /var/lib/ota-gateway --shell /usr/sbin/nologin ota-gateway
  owner="-o ota-gateway -g ota-gateway"
fi
install -d -m 0755 "$app" "$root/etc/systemd/system"
# shellcheck disable=SC2086
install -d -m 0750 $owner "$data" "$data/trusted-keys"
# shellcheck disable=SC2086
install -d -m 0750 ${owner:+-o root -g ota-gateway} "$etc"

# -- the program: one wheel built (or taken from the wheelhouse), installed over the old one ---
python3 -m venv "$venv"
pip="$venv/bin/python -m pip --quiet --disable-pip-version-check"
if [ -n "$wheels" ]; then
  wheel=$(ls "$wheels"/ota_gateway-"$new"-*.whl | head -n 1)
  $pip install --no-index --find-links "$wheels" --upgrade "$wheel"
  $pip install --no-index --find-links "$wheels" --no-deps --force-reinstall "$wheel"
else
  build=$(mktemp -d)
  trap 'rm -rf "$build"' EXIT
  $pip wheel --no-deps --wheel-dir "$build" "$here"
  wheel=$(ls "$build"/ota_gateway-*.whl | head -n 1)
  $pip install --upgrade "$wheel"
  # the same version number with other code (a checkout between releases) is installed too
  $pip install --no-deps --force-reinstall "$wheel"
fi
install -m 0644 "$here/README.md" "$app/README.md"

# -- the config (never overwritten) and the unit -----------------------------------------------
if [ -f "$etc/gateway.toml" ]; then
  say "keeping the existing $etc/gateway.toml"
  # Units before this one set OTA_GATEWAY_DATA_DIR, which beat the config's data_dir; this one lets
  # the config decide. Keep the data where it is: a relative data_dir becomes that folder.
  olddata=$(sed -n 's/^Environment=OTA_GATEWAY_DATA_DIR=//p' "$unit" 2>/dev/null | tail -n 1)
  if [ -n "$olddata" ] && grep -q '^data_dir = "[^/]' "$etc/gateway.toml"; then
    cp -p "$etc/gateway.toml" "$etc/gateway.toml.before-$new"
    sed -i "s#^data_dir = \"[^/].*\"\$#data_dir = \"$olddata\"#" "$etc/gateway.toml"
    say "data_dir in $etc/gateway.toml now names $olddata, where the old unit kept the data (copy: gateway.toml.before-$new)"
  fi
else
  # A real site: token access for devices, a site token generated into the new config.
  sh "$here/deploy/site-config.sh" "$here/config/gateway.toml" "$etc/gateway.toml" "${owner:+ota-gateway}" "$data"
  say "set site, mirror.upstream and trust.trusted_keys in $etc/gateway.toml"
fi
sed -e "s#/opt/ota-gateway#$app#g" -e "s#/etc/ota-gateway#$etc#g" -e "s#/var/lib/ota-gateway#$data#g" \
  "$here/deploy/ota-gateway.service" >"$unit.new"
chmod 0644 "$unit.new"
mv "$unit.new" "$unit"

if [ -n "$old" ]; then what="upgraded ota-gateway $old -> $new in place (config and data kept)"; else what="installed ota-gateway $new"; fi
if [ "$systemd" = no ]; then
  say "$what under ${root:-/} (systemd not touched; the unit is $unit)"
  exit 0
fi
systemctl daemon-reload
if systemctl is-active --quiet ota-gateway; then
  systemctl restart ota-gateway  # Type=notify: returns once the new process said READY=1
  state=restarted
else
  systemctl enable --now ota-gateway
  state=started
fi
if systemctl is-active --quiet ota-gateway; then
  say "$what; $state, running. 'journalctl -u ota-gateway -f' shows its log, http://127.0.0.1:8081/ its dashboard"
else
  die "$what, but the service is not running: see 'systemctl status ota-gateway' and 'journalctl -u ota-gateway'"
fi

#!/bin/sh
# Install the OTA Gateway as a systemd service on a Debian-like box (arm64 or amd64), as root:
#   sudo sh deploy/install.sh
# Re-running it upgrades the code and keeps the config and the data.
set -eu
here=$(cd "$(dirname "$0")/.." && pwd)
prefix=/opt/ota-gateway

command -v python3 >/dev/null || { echo "install.sh: python3 (>= 3.11) is required" >&2; exit 1; }
python3 -c 'import sys; sys.exit(sys.version_info < (3, 11))' || { echo "install.sh: python3 >= 3.11 is required" >&2; exit 1; }

id ota-gateway >/dev/null 2>&1 || useradd --system --home-dir /var/lib/ota-gateway --shell /usr/sbin/nologin ota-gateway
install -d -m 0755 "$prefix"
install -d -m 0750 -o ota-gateway -g ota-gateway /var/lib/ota-gateway /var/lib/ota-gateway/trusted-keys
install -d -m 0750 -o root -g ota-gateway /etc/ota-gateway

python3 -m venv "$prefix/venv"
"$prefix/venv/bin/pip" install --quiet --upgrade "$here"
install -m 0644 "$here/README.md" "$prefix/README.md"

if [ ! -f /etc/ota-gateway/gateway.toml ]; then
  # A real site: token access for devices, with a site token generated into the new config.
  sh "$here/deploy/site-config.sh" "$here/config/gateway.toml" /etc/ota-gateway/gateway.toml ota-gateway
  echo "install.sh: set site, mirror.upstream and trust.trusted_keys in /etc/ota-gateway/gateway.toml"
fi
install -m 0644 "$here/deploy/ota-gateway.service" /etc/systemd/system/ota-gateway.service
systemctl daemon-reload
systemctl enable --now ota-gateway
echo "install.sh: ota-gateway is running; 'journalctl -u ota-gateway -f' shows its log, http://127.0.0.1:8081/ its dashboard"

#!/bin/sh
# Write a new site's config from the reference one, with token access for devices:
#   sh deploy/site-config.sh config/gateway.toml /etc/ota-gateway/gateway.toml [GROUP [DATA_DIR]]
# A config that already exists is never touched (re-running install.sh keeps the installer's edits).
# A fresh one gets devices.access = "token" and a random devices.site_token: on a real site any
# client on the LAN could otherwise speak as any device ("open" is for labs and trusted LANs).
# With DATA_DIR, the config's data_dir names it (the unit sets no data folder of its own).
set -eu
template=$1
dest=$2
group=${3:-}
data_dir=${4:-}

if [ -e "$dest" ]; then
  echo "site-config.sh: keeping the existing $dest"
  exit 0
fi
token=$(python3 -c 'import secrets; print(secrets.token_hex(24))')
tmp="$dest.new.$$"
umask 077
data_rule='s/^$//'
[ -z "$data_dir" ] || data_rule="s#^data_dir = \"data\"\$#data_dir = \"$data_dir\"#"
sed -e 's/^access = "open"$/access = "token"/' \
    -e "s/^site_token = \"\"\$/site_token = \"$token\"/" -e "$data_rule" "$template" > "$tmp"
if ! grep -q '^access = "token"$' "$tmp" || ! grep -q "^site_token = \"$token\"\$" "$tmp"; then
  rm -f "$tmp"
  echo "site-config.sh: $template does not have the expected access/site_token lines" >&2
  exit 1
fi
chmod 0640 "$tmp"
[ -z "$group" ] || chgrp "$group" "$tmp"
mv "$tmp" "$dest"
cat <<MSG
site-config.sh: wrote $dest with devices.access = "token" and a new site token (devices.site_token).
  Devices send it on every HTTP request:  Authorization: Bearer <site token>
  and log in to MQTT with:                user name = their device id, password = <site token>
  Show it with:                           grep site_token $dest
  Per-device tokens: devices.tokens_file. A lab without credentials: devices.access = "open".
MSG

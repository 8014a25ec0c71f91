#!/usr/bin/env bash
# init-token.sh DIR [LABEL]
#
# Creates, idempotently, a SoftHSM2 token that belongs to DIR alone:
#   DIR/softhsm2.conf   the config file (point SOFTHSM2_CONF at it)
#   DIR/tokens/         the token directory
#   DIR/user.pin        the user PIN (mode 0600), generated on first run
#   DIR/so.pin          the security-officer PIN (mode 0600), generated on first run
# and a token labelled LABEL (default: hsmkms) inside it. Running it again on the
# same DIR changes nothing. PINs may be preset by writing the two files first.
#
# On success it prints the path of the config file, and nothing else, on stdout.
set -euo pipefail

dir=${1:?usage: init-token.sh DIR [LABEL]}
label=${2:-hsmkms}
module=${HSMKMS_PKCS11_MODULE:-/usr/lib/softhsm/libsofthsm2.so}

if ! command -v softhsm2-util >/dev/null 2>&1; then
	echo "init-token.sh: softhsm2-util not found; install it with: apt-get install -y softhsm2" >&2
	exit 3
fi

umask 077
mkdir -p "$dir/tokens"
dir=$(cd "$dir" && pwd)
conf="$dir/softhsm2.conf"

if [ ! -f "$conf" ]; then
	cat >"$conf.tmp" <<CONF
# Written by hsmkms softhsm/init-token.sh; one token directory per owner,
# never shared between processes that create and destroy objects.
directories.tokendir = $dir/tokens
objectstore.backend = file
log.level = ERROR
slots.removable = false
slots.mechanisms = ALL
library.reset_on_fork = false
CONF
	mv "$conf.tmp" "$conf"
fi

newpin() { head -c 12 /dev/urandom | od -An -tx1 | tr -d ' \n'; }
for f in user.pin so.pin; do
	if [ ! -s "$dir/$f" ]; then
		newpin >"$dir/$f.tmp"
		mv "$dir/$f.tmp" "$dir/$f"
	fi
done

export SOFTHSM2_CONF="$conf"
# A token with this label already initialised in this directory? Then done.
if softhsm2-util --show-slots 2>/dev/null | grep -Eq "^[[:space:]]*Label:[[:space:]]+$label[[:space:]]*$"; then
	echo "$conf"
	exit 0
fi

softhsm2-util --init-token --free --label "$label" \
	--so-pin "$(cat "$dir/so.pin")" --pin "$(cat "$dir/user.pin")" >&2
echo "$conf"

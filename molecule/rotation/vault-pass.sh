#!/bin/sh
# TEST ONLY: prints the vault password of the rotation scenario's throw-away
# vault (identity "smeeton-test"), made on first use in .state/ next to this
# script (git-ignored, mode 0600). Ansible runs this as a vault password file.
set -eu
state="$(dirname "$0")/.state"
mkdir -p "$state"
chmod 0700 "$state"
if [ ! -s "$state/vault-pass" ]; then
    (umask 077 && head -c 32 /dev/urandom | base64 > "$state/vault-pass")
fi
cat "$state/vault-pass"

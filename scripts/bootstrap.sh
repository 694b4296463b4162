#!/usr/bin/env bash
# Install what the test command and the lab need, on a fresh Debian 12 or
# Ubuntu 22.04 machine, as root. Safe to rerun: it only installs what is missing.
#   - apt: podman + runc (containers), debootstrap (test image), coturn and
#     pebble (test servers), chromium (browser tests), librsvg2-bin and fonts
#     (branding asset build),
#     openssh-client, python3-venv;
#   - .venv: the Python tools pinned in requirements.txt / constraints.txt.
set -euo pipefail
# shellcheck source=scripts/lib.sh
source "$(dirname "$0")/lib.sh"

APT_PACKAGES=(
  podman runc uidmap slirp4netns fuse-overlayfs
  debootstrap
  openssh-client
  python3 python3-venv
  coturn sqlite3 pebble
  chromium chromium-driver
  librsvg2-bin fonts-dejavu-core
  openssl curl make git
)

phase "Bootstrap: system packages"
[[ $EUID -eq 0 ]] || die "run as root (it installs apt packages); CI and the lab run as root"
missing=()
for p in "${APT_PACKAGES[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if ((${#missing[@]})); then
  info "installing: ${missing[*]}"
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq || die "apt-get update failed"
  apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null \
    || die "apt-get install ${missing[*]} failed"
  # coturn and pebble are only used as test servers started by the tests
  # themselves; their packaged services must not hold ports on this machine.
  for svc in coturn pebble; do
    systemctl disable --now "$svc" >/dev/null 2>&1 || true
  done
else
  info "all system packages present"
fi

phase "Bootstrap: Python virtualenv (.venv)"
PYTHON="${PYTHON:-python3}"
stamp="${VENV}/.requirements.sha256"
want="$(cat "${REPO_ROOT}/requirements.txt" "${REPO_ROOT}/constraints.txt" | sha256sum | cut -d' ' -f1)"
if [[ -x "${VENV}/bin/python" && -f "$stamp" && "$(cat "$stamp")" == "$want" ]]; then
  info ".venv is current"
else
  [[ -x "${VENV}/bin/python" ]] || "$PYTHON" -m venv "$VENV" || die "could not create ${VENV} with ${PYTHON}"
  "${VENV}/bin/pip" install -q --upgrade pip 2>/dev/null || die "pip upgrade failed"
  # (the grep drops pip's noise about find-links folders that do not exist)
  "${VENV}/bin/pip" install -q -r "${REPO_ROOT}/requirements.txt" \
    2> >(grep -v "is ignored: it is neither" >&2) || die "pip install -r requirements.txt failed"
  echo "$want" >"$stamp"
  info "installed pinned requirements into .venv"
fi

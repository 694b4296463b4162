#!/usr/bin/env bash
# Build (or reuse) the Debian 12 systemd image used by molecule and the lab.
#
# No container registry is reachable from our test machines, so the image is
# made offline-from-registries: debootstrap from Debian's mirror, then
# `podman import`. The result is cached twice:
#   - in podman's store, labelled with a hash of this script (a changed recipe
#     rebuilds it);
#   - as .cache/images/<hash>.tar, so a machine whose podman store was wiped
#     reloads it in seconds instead of re-running debootstrap.
# Usage: scripts/build-test-image.sh [--force]
set -euo pipefail
# shellcheck source=scripts/lib.sh
source "$(dirname "$0")/lib.sh"

MIRROR="${SMEETON_DEBIAN_MIRROR:-http://deb.debian.org/debian}"
# Packages the image needs to behave like a minimal real server: systemd as
# PID 1, Python for Ansible, sshd so the lab is reached over SSH like
# production, and sudo/locales/ca-certificates that real hosts have.
PACKAGES="systemd,systemd-sysv,dbus,python3,python3-apt,iproute2,openssh-server,sudo,ca-certificates,gnupg,procps,kmod,iptables"

recipe_hash="$(sha256sum "$0" | cut -c1-16)"
cache_dir="${REPO_ROOT}/.cache/images"
cache_tar="${cache_dir}/smeeton-debian12-${recipe_hash}.tar"

force=0
[[ "${1:-}" == "--force" ]] && force=1

have_hash="$(podman image inspect --format '{{ index .Labels "smeeton.recipe" }}' "$TEST_IMAGE" 2>/dev/null || true)"
if [[ $force -eq 0 && "$have_hash" == "$recipe_hash" ]]; then
  info "test image ${TEST_IMAGE} is current (recipe ${recipe_hash})"
  exit 0
fi

if [[ $force -eq 0 && -f "$cache_tar" ]]; then
  phase "Loading cached test image from ${cache_tar}"
  podman load -q -i "$cache_tar" >/dev/null || die "podman load of ${cache_tar} failed; rerun with --force"
  exit 0
fi

command -v debootstrap >/dev/null || die "debootstrap is missing: run scripts/bootstrap.sh first"

phase "Building test image ${TEST_IMAGE} with debootstrap (about a minute)"
rootfs="$(mktemp -d /var/tmp/smeeton-rootfs.XXXXXX)"
trap 'rm -rf "$rootfs"' EXIT
debootstrap --variant=minbase --include="$PACKAGES" bookworm "$rootfs" "$MIRROR" \
  >"${rootfs}.log" 2>&1 || { tail -20 "${rootfs}.log" >&2; die "debootstrap failed (log above)"; }
rm -f "${rootfs}.log"

# Make the rootfs a well-behaved container: no stale machine-id (systemd makes
# one at boot), no cached .debs, no getty on a console that does not exist,
# and sshd host keys generated at first boot rather than baked into the image
# (every lab host gets its own).
rm -f "$rootfs"/var/cache/apt/archives/*.deb "$rootfs"/etc/ssh/ssh_host_*
: >"$rootfs/etc/machine-id"
chroot "$rootfs" systemctl mask getty@tty1.service console-getty.service systemd-logind.service >/dev/null 2>&1 || true
cat >"$rootfs/etc/systemd/system/ssh-hostkeys.service" <<'UNIT'
[Unit]
Description=Generate SSH host keys on first boot (SmeetOn test image)
Before=ssh.service
ConditionPathExists=!/etc/ssh/ssh_host_ed25519_key

[Service]
Type=oneshot
ExecStart=/usr/bin/ssh-keygen -A

[Install]
WantedBy=multi-user.target
UNIT
chroot "$rootfs" systemctl enable ssh-hostkeys.service ssh.service >/dev/null 2>&1
echo "deb ${MIRROR} bookworm main" >"$rootfs/etc/apt/sources.list"
echo "deb ${MIRROR} bookworm-updates main" >>"$rootfs/etc/apt/sources.list"
echo "deb ${MIRROR%/debian}/debian-security bookworm-security main" >>"$rootfs/etc/apt/sources.list"

tar -C "$rootfs" -c . | podman import \
  --change 'CMD ["/sbin/init"]' \
  --change 'STOPSIGNAL SIGRTMIN+3' \
  --change "LABEL smeeton.recipe=${recipe_hash}" \
  - "$TEST_IMAGE" >/dev/null || die "podman import failed"

mkdir -p "$cache_dir"
rm -f "$cache_dir"/smeeton-debian12-*.tar
podman save -q -o "$cache_tar" "$TEST_IMAGE" || die "podman save failed"
info "built ${TEST_IMAGE} (recipe ${recipe_hash}), cached at ${cache_tar}"

#!/usr/bin/env bash
# The local lab: podman hosts on this machine, provisioned by playbooks/site.yml
# through inventories/lab exactly as ops provision production.
#
#   scripts/lab.sh up        create what is missing, then converge (safe to rerun)
#   scripts/lab.sh hosts     create what is missing, without converging
#   scripts/lab.sh converge  run site.yml again on the existing lab
#   scripts/lab.sh health    run playbooks/health.yml on the lab
#   scripts/lab.sh rotate    run playbooks/rotate-secrets.yml on the lab (extra args: -e ..., --check)
#   scripts/lab.sh screenshot  load the landing page in headless chromium
#   scripts/lab.sh status    show the lab's containers and endpoints
#   scripts/lab.sh down      remove the lab's containers and network (keeps lab-state/)
#   scripts/lab.sh purge     down, and delete lab-state/ and the generated vault
#
# Extra arguments after `up`/`converge` go to ansible-playbook (e.g. -v, --check).
set -euo pipefail
# shellcheck source=scripts/lib.sh
source "$(dirname "$0")/lib.sh"

LAB_NETWORK=smeeton-lab
INVENTORY="${REPO_ROOT}/inventories/lab"
STATE="${REPO_ROOT}/lab-state"
export PATH="${VENV}/bin:${PATH}"
export ANSIBLE_CONFIG="${REPO_ROOT}/ansible.cfg"
cd "$REPO_ROOT"

# Prints one line per lab host: name container ssh_port published_ports(comma-separated)
lab_hosts() {
  ansible-inventory -i "$INVENTORY" --list --vault-password-file "${STATE}/vault-pass" 2>/dev/null \
    | python3 -c '
import json, sys
inv = json.load(sys.stdin)
for name, hv in sorted(inv["_meta"]["hostvars"].items()):
    if "lab_container_name" in hv:
        print(name, hv["lab_container_name"], hv["ansible_port"], ",".join(hv.get("lab_published_ports", [])))
'
}

ensure_tools() {
  [[ -x "${VENV}/bin/ansible-playbook" ]] || bash "${REPO_ROOT}/scripts/bootstrap.sh"
  bash "${REPO_ROOT}/scripts/build-test-image.sh"
}

ensure_secrets() {
  phase "Lab: secrets (lab-state/, never committed)"
  mkdir -p "$STATE" && chmod 0700 "$STATE"
  if [[ ! -f "${STATE}/id_ed25519" ]]; then
    ssh-keygen -q -t ed25519 -N '' -C "smeeton-lab" -f "${STATE}/id_ed25519"
    info "made the lab's SSH key"
  fi
  "${VENV}/bin/python" "${REPO_ROOT}/scripts/lab-secrets.py" || die "could not write the lab vault"
}

# Create (or recreate, when its spec changed) one host container.
ensure_host() {
  local name=$1 ctr=$2 sshport=$3 ports=$4
  local spec
  spec="$(printf '%s %s %s %s' "$TEST_IMAGE" "$name" "$sshport" "$ports" | sha256sum | cut -c1-12)"
  local have
  have="$(podman container inspect --format '{{ index .Config.Labels "smeeton.lab.spec" }}' "$ctr" 2>/dev/null || true)"
  LAB_CREATED=0
  if [[ "$have" == "$spec" ]]; then
    [[ "$(podman container inspect --format '{{ .State.Running }}' "$ctr")" == true ]] || podman start "$ctr" >/dev/null
    info "${name}: container ${ctr} is up"
    return
  fi
  [[ -n "$have" ]] && { info "${name}: spec changed, recreating ${ctr}"; podman rm -f "$ctr" >/dev/null; }
  local args=(--name "$ctr" --hostname "$name" --network "$LAB_NETWORK" --network-alias "$name"
    --systemd=always --cap-add NET_ADMIN --cap-add NET_RAW
    --label "smeeton.lab.spec=${spec}" --label smeeton.lab=1
    -p "127.0.0.1:${sshport}:22/tcp")
  local p
  IFS=',' read -r -a plist <<<"$ports"
  for p in "${plist[@]}"; do [[ -n "$p" ]] && args+=(-p "$p"); done
  podman run -d "${args[@]}" "$TEST_IMAGE" >/dev/null || die "could not start ${ctr} (ports in use? see 'podman ps')"
  LAB_CREATED=1
  info "${name}: created ${ctr} (ssh 127.0.0.1:${sshport})"
}

# What cloud-init does for a new VM: install the initial SSH key.
seed_ssh() {
  local name=$1 ctr=$2 sshport=$3
  podman exec -i "$ctr" sh -c 'umask 077; mkdir -p /root/.ssh; cat > /root/.ssh/authorized_keys.lab' <"${STATE}/id_ed25519.pub"
  podman exec "$ctr" sh -c 'grep -qxF -f /root/.ssh/authorized_keys.lab /root/.ssh/authorized_keys 2>/dev/null || cat /root/.ssh/authorized_keys.lab >> /root/.ssh/authorized_keys; rm -f /root/.ssh/authorized_keys.lab'
  local i
  for i in $(seq 1 30); do
    if ssh-keyscan -T 2 -p "$sshport" 127.0.0.1 2>/dev/null | grep -q ssh-ed25519; then break; fi
    sleep 1
  done
  ssh-keygen -q -R "[127.0.0.1]:${sshport}" -f "${STATE}/known_hosts" >/dev/null 2>&1 || true
  rm -f "${STATE}/known_hosts.old"
  ssh-keyscan -T 5 -t ed25519 -p "$sshport" 127.0.0.1 2>/dev/null >>"${STATE}/known_hosts" \
    || die "${name}: sshd on 127.0.0.1:${sshport} does not answer"
  chmod 0600 "${STATE}/known_hosts"
}

up_hosts() {
  phase "Lab: network and hosts"
  podman network exists "$LAB_NETWORK" || podman network create "$LAB_NETWORK" >/dev/null
  local n=0 name ctr sshport ports
  while read -r name ctr sshport ports; do
    ensure_host "$name" "$ctr" "$sshport" "$ports"
    # Seed the key and record the host key only for a new container; an
    # existing one keeps the host key recorded when it was made.
    if ! ssh-keygen -F "[127.0.0.1]:${sshport}" -f "${STATE}/known_hosts" >/dev/null 2>&1 \
      || [[ "$LAB_CREATED" == 1 ]]; then
      seed_ssh "$name" "$ctr" "$sshport"
    fi
    n=$((n + 1))
  done < <(lab_hosts)
  ((n > 0)) || die "no lab hosts found in ${INVENTORY} (ansible-inventory failed?)"
  if [[ -x "${REPO_ROOT}/scripts/pebble-container.sh" ]]; then
    phase "Lab: pebble ACME test server"
    bash "${REPO_ROOT}/scripts/pebble-container.sh" up smeeton-lab-pebble "$LAB_NETWORK" \
      pebble.lab.smeeton.test "${STATE}/pebble" || die "pebble did not start"
  fi
}

play() {
  ansible-playbook -i "$INVENTORY" --vault-password-file "${STATE}/vault-pass" "$@"
}

converge() {
  # What BBB's apt packages would provide, which the lab cannot install
  # (TEST ONLY; production runs site.yml alone).
  phase "Lab: BBB 3.0 package fixture (tests/lab/prepare.yml, lab only)"
  play "${REPO_ROOT}/tests/lab/prepare.yml" "$@" || die "tests/lab/prepare.yml failed (output above)"
  phase "Lab: ansible-playbook playbooks/site.yml -i inventories/lab"
  play "${REPO_ROOT}/playbooks/site.yml" "$@" || die "site.yml failed on the lab (output above)"
  phase "Lab: bbb-web API stand-in (tests/bbb_api_standin/install-standin.yml, lab only)"
  play "${REPO_ROOT}/tests/bbb_api_standin/install-standin.yml" -e standin_hosts=bbb "$@" \
    || die "the API stand-in could not be installed (output above)"
}

screenshot() {
  phase "Lab: the landing page in headless chromium"
  "${VENV}/bin/python" "${REPO_ROOT}/scripts/lab-screenshot.py" || die "the landing page did not render as expected"
}

health() {
  phase "Lab: ansible-playbook playbooks/health.yml -i inventories/lab"
  play "${REPO_ROOT}/playbooks/health.yml" "$@" || die "the lab is not healthy (table above)"
}

rotate() {
  phase "Lab: ansible-playbook playbooks/rotate-secrets.yml -i inventories/lab"
  play "${REPO_ROOT}/playbooks/rotate-secrets.yml" "$@" || die "the rotation did not complete (report above)"
}

status() {
  phase "Lab: what was built"
  local name ctr sshport ports state
  while read -r name ctr sshport ports; do
    state="$(podman container inspect --format '{{ .State.Status }}' "$ctr" 2>/dev/null || echo missing)"
    printf '    %-26s %-10s ssh -i lab-state/id_ed25519 -p %s root@127.0.0.1\n' "$name" "$state" "$sshport"
    [[ -n "$ports" ]] && printf '    %-26s %-10s published: %s\n' "" "" "${ports//,/ }"
  done < <(lab_hosts)
  cat <<MSG

    Web (landing page, BBB API through nginx + TLS from the lab's pebble CA):
      curl --cacert lab-state/pebble/pebble-root.pem --resolve bbb1.lab.smeeton.test:8443:127.0.0.1 \\
           https://bbb1.lab.smeeton.test:8443/
      API:  .venv/bin/python scripts/bbb-health --inventory inventories/lab --vault-password-file lab-state/vault-pass
      Page: artifacts/lab/landing.png (make lab-screenshot)
    TURN: turn1.lab.smeeton.test on 127.0.0.1:3478 (udp, tcp) and 127.0.0.1:5349 (TLS)
    Fleet health table: make lab-health
    Rotate the lab's secrets: make lab-rotate (then make lab-rotate ARGS="-e secret_rotation_action=finish")

    Ansible:  .venv/bin/ansible-playbook -i inventories/lab --vault-password-file lab-state/vault-pass playbooks/site.yml
    Teardown: make lab-destroy   (keeps lab-state/; 'scripts/lab.sh purge' deletes it too)
MSG
}

down() {
  phase "Lab: removing containers and network"
  local ids
  ids="$(podman ps -a --filter label=smeeton.lab=1 -q)"
  [[ -n "$ids" ]] && podman rm -f $ids >/dev/null
  [[ -x "${REPO_ROOT}/scripts/pebble-container.sh" ]] && bash "${REPO_ROOT}/scripts/pebble-container.sh" down smeeton-lab-pebble >/dev/null 2>&1
  podman network exists "$LAB_NETWORK" && podman network rm -f "$LAB_NETWORK" >/dev/null
  info "lab removed (secrets kept in lab-state/)"
}

cmd="${1:-up}"
shift || true
case "$cmd" in
  up) ensure_tools; ensure_secrets; up_hosts; converge "$@"; health; screenshot; status ;;
  screenshot) screenshot ;;
  health) health "$@" ;;
  rotate) rotate "$@" ;;
  hosts) ensure_tools; ensure_secrets; up_hosts ;;
  converge) converge "$@"; status ;;
  status) status ;;
  down) down ;;
  purge) down; rm -rf "$STATE" "${INVENTORY}/group_vars/all/vault.yml"; info "lab-state/ and the lab vault deleted" ;;
  *) die "unknown command '${cmd}' (use: up, hosts, converge, health, rotate, screenshot, status, down, purge)" ;;
esac

#!/usr/bin/env bash
# Start or remove a pebble ACME test server in a podman container.
# Used by the molecule scenario `tls` and by the lab; never by production.
#
#   scripts/pebble-container.sh up   NAME NETWORK ALIAS OUTDIR
#   scripts/pebble-container.sh down NAME [OUTDIR]
#   scripts/pebble-container.sh status NAME
#
# `up` (idempotent: a running container NAME is kept, pebble keeps its state
# only while it runs) does the following:
#   - creates the podman network NETWORK if it does not exist;
#   - makes a small CA and pebble's API certificate (subjectAltName ALIAS,
#     NAME, localhost) in OUTDIR (openssl);
#   - runs pebble from localhost/smeeton-debian12 (or $SMEETON_TEST_IMAGE) on
#     NETWORK with --network-alias ALIAS. The host's /usr/bin/pebble (Debian
#     package `pebble`, linked against libc only) is mounted in when present;
#     otherwise the container installs the `pebble` package from Debian's mirror;
#   - pebble validates http-01 on port 80 and tls-alpn-01 on 443 of the
#     requesting host, with PEBBLE_VA_NOSLEEP=1 (no random sleeps),
#     PEBBLE_WFE_NONCEREJECT=0 (no random badNonce errors) and
#     PEBBLE_AUTHZREUSE=0 (every order is validated again).
#     PEBBLE_VA_ALWAYS_VALID is never set: validation is real;
#   - writes into OUTDIR the files clients need:
#       pebble-api-ca.pem   CA of pebble's API certificate: what ACME clients
#                           trust (REQUESTS_CA_BUNDLE for certbot,
#                           tls_acme_ca_bundle for the tls role);
#       pebble-root.pem     pebble's issuing root (management API /roots/0),
#                           to validate certificates pebble issued;
#       pebble.env          DIRECTORY_URL=https://ALIAS:14000/dir and the paths.
# pebble makes a new issuing root each time it starts: after a restart,
# certificates issued before no longer validate against pebble-root.pem.
#
# Ports are not published: ACME clients reach pebble on the podman network.
set -euo pipefail
# shellcheck source=scripts/lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

usage() {
  sed -n '2,9p' "${BASH_SOURCE[0]}" | sed 's/^# \{0,1\}//' >&2
  exit 2
}

pebble_status() {
  podman container inspect --format '{{.State.Status}}' "$1" 2>/dev/null || echo absent
}

make_certs() {
  local outdir=$1 alias=$2 name=$3
  [[ -s "${outdir}/pebble-api-ca.pem" && -s "${outdir}/api-cert.pem" && -s "${outdir}/api-key.pem" ]] && return 0
  info "making pebble's API certificate for ${alias}"
  openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes -days 3650 \
    -subj "/CN=SmeetOn test pebble API CA" -keyout "${outdir}/api-ca-key.pem" \
    -out "${outdir}/pebble-api-ca.pem" \
    -addext "basicConstraints=critical,CA:TRUE" -addext "keyUsage=critical,keyCertSign,cRLSign" \
    2>/dev/null
  openssl req -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes -subj "/CN=${alias}" \
    -keyout "${outdir}/api-key.pem" -out "${outdir}/api.csr" 2>/dev/null
  openssl x509 -req -in "${outdir}/api.csr" -CA "${outdir}/pebble-api-ca.pem" \
    -CAkey "${outdir}/api-ca-key.pem" -CAcreateserial -days 3650 -out "${outdir}/api-cert.pem" \
    -extfile <(printf 'subjectAltName=DNS:%s,DNS:%s,DNS:localhost,IP:127.0.0.1\nextendedKeyUsage=serverAuth\nbasicConstraints=critical,CA:FALSE\n' \
      "${alias}" "${name}") 2>/dev/null
  rm -f "${outdir}/api.csr" "${outdir}/pebble-api-ca.srl"
  # Read by pebble inside the container (runs as root there); the CA key never leaves OUTDIR.
  chmod 0600 "${outdir}/api-ca-key.pem"
  chmod 0644 "${outdir}/api-key.pem"
}

write_config() {
  cat >"$1/pebble-config.json" <<'JSON'
{
  "pebble": {
    "listenAddress": "0.0.0.0:14000",
    "managementListenAddress": "0.0.0.0:15000",
    "certificate": "/etc/pebble/api-cert.pem",
    "privateKey": "/etc/pebble/api-key.pem",
    "httpPort": 80,
    "tlsPort": 443,
    "ocspResponderURL": "",
    "externalAccountBindingRequired": false
  }
}
JSON
}

# Fetch a PEM from pebble's management API from inside the container (its
# python3 and the API CA), so no port has to be published.
fetch_pem() {
  local name=$1 path=$2
  podman exec "${name}" python3 -c '
import ssl, sys, urllib.request
ctx = ssl.create_default_context(cafile="/etc/pebble/pebble-api-ca.pem")
with urllib.request.urlopen("https://localhost:15000" + sys.argv[1], context=ctx, timeout=5) as r:
    sys.stdout.write(r.read().decode())
' "${path}"
}

cmd_up() {
  [[ $# -eq 4 ]] || usage
  local name=$1 network=$2 alias=$3 outdir=$4
  mkdir -p "${outdir}"
  outdir=$(cd "${outdir}" && pwd)
  podman network exists "${network}" || podman network create "${network}" >/dev/null

  case "$(pebble_status "${name}")" in
    running) info "pebble container ${name} is already running (state kept)" ;;
    absent) ;;
    *) podman rm -f "${name}" >/dev/null ;;
  esac
  if [[ "$(pebble_status "${name}")" != running ]]; then
    make_certs "${outdir}" "${alias}" "${name}"
    write_config "${outdir}"
    local binary_mount=()
    if [[ -x /usr/bin/pebble ]]; then
      binary_mount=(-v /usr/bin/pebble:/usr/local/bin/pebble:ro)
    fi
    info "starting ${name} on network ${network} as ${alias}"
    podman run -d --name "${name}" --hostname "${alias}" \
      --network "${network}" --network-alias "${alias}" \
      --label smeeton.role=pebble \
      -e PEBBLE_VA_NOSLEEP=1 -e PEBBLE_WFE_NONCEREJECT=0 -e PEBBLE_AUTHZREUSE=0 \
      -v "${outdir}/pebble-config.json:/etc/pebble/pebble-config.json:ro" \
      -v "${outdir}/api-cert.pem:/etc/pebble/api-cert.pem:ro" \
      -v "${outdir}/api-key.pem:/etc/pebble/api-key.pem:ro" \
      -v "${outdir}/pebble-api-ca.pem:/etc/pebble/pebble-api-ca.pem:ro" \
      "${binary_mount[@]}" \
      "${TEST_IMAGE}" /bin/sh -c '
        set -e
        if ! command -v pebble >/dev/null; then
          apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq pebble >/dev/null
        fi
        exec pebble -config /etc/pebble/pebble-config.json' >/dev/null
  fi

  local i
  for i in $(seq 1 120); do
    if fetch_pem "${name}" /roots/0 >"${outdir}/pebble-root.pem.tmp" 2>/dev/null \
      && grep -q 'BEGIN CERTIFICATE' "${outdir}/pebble-root.pem.tmp"; then
      break
    fi
    if [[ "$(pebble_status "${name}")" != running ]]; then
      podman logs "${name}" >&2 || true
      die "pebble container ${name} stopped"
    fi
    [[ $i -eq 120 ]] && { podman logs "${name}" >&2 || true; die "pebble in ${name} did not answer on :15000"; }
    sleep 1
  done
  mv -f "${outdir}/pebble-root.pem.tmp" "${outdir}/pebble-root.pem"
  fetch_pem "${name}" /intermediates/0 >"${outdir}/pebble-intermediate.pem"
  cat >"${outdir}/pebble.env" <<EOF
PEBBLE_CONTAINER=${name}
PEBBLE_NETWORK=${network}
PEBBLE_ALIAS=${alias}
DIRECTORY_URL=https://${alias}:14000/dir
PEBBLE_API_CA=${outdir}/pebble-api-ca.pem
PEBBLE_ROOT=${outdir}/pebble-root.pem
EOF
  info "pebble ready: https://${alias}:14000/dir (CA files in ${outdir})"
}

cmd_down() {
  [[ $# -ge 1 && $# -le 2 ]] || usage
  local name=$1 outdir=${2:-}
  if [[ "$(pebble_status "${name}")" != absent ]]; then
    podman rm -f -t 5 "${name}" >/dev/null
    info "removed ${name}"
  fi
  if [[ -n "${outdir}" && -d "${outdir}" ]]; then
    rm -f "${outdir}"/{pebble-config.json,api-cert.pem,api-key.pem,api-ca-key.pem,pebble-api-ca.pem,pebble-root.pem,pebble-intermediate.pem,pebble.env}
  fi
}

[[ $# -ge 1 ]] || usage
action=$1
shift
case "${action}" in
  up) cmd_up "$@" ;;
  down) cmd_down "$@" ;;
  status) [[ $# -eq 1 ]] || usage; pebble_status "$1" ;;
  *) usage ;;
esac

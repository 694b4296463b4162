#!/usr/bin/python
# Copyright: SmeetOn contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)

DOCUMENTATION = r"""
---
module: turn_check
short_description: Check a TURN server end to end (allocation and peer restrictions)
version_added: "1.0.0"
description:
  - Speaks STUN/TURN (RFC 5389/8489, RFC 5766/8656) to a TURN server such as coturn
    over UDP, TCP and TLS, using time-limited "TURN REST API" credentials derived
    from the shared secret (coturn C(use-auth-secret)).
  - For every requested transport it sends a Binding request, then an Allocate
    request (answering the 401 challenge with long-term credentials), and reports
    the mapped address, the relayed address and the round-trip time.
  - As a security probe it asks, on the first working allocation, for a
    CreatePermission towards each address in O(forbidden_peers). The server must
    refuse each with C(403 Forbidden). No data is ever sent to those peers; only
    the permission request goes to the TURN server.
  - Allocations are deleted again (Refresh with lifetime 0) before the module returns.
  - The module only reads; it never changes the target and always returns C(changed=false).
author:
  - SmeetOn contributors
options:
  host:
    description: Name or address of the TURN server to check.
    type: str
    required: true
  port:
    description: Port of the plain (UDP and TCP) TURN listener.
    type: int
    default: 3478
  tls_port:
    description: Port of the TLS TURN listener (used by the C(tls) transport).
    type: int
    default: 5349
  transports:
    description: Transports to check between client and TURN server.
    type: list
    elements: str
    choices: [udp, tcp, tls]
    default: [udp, tcp, tls]
  secret:
    description:
      - Shared secret of the TURN server (coturn C(static-auth-secret) or a
        C(turn_secret) row of its realm).
    type: str
    required: true
  username:
    description:
      - User part of the REST username; the module sends C(EXPIRY:username).
    type: str
    default: turn_check
  ttl:
    description: Validity of the generated credential in seconds.
    type: int
    default: 300
  realm:
    description:
      - Realm the server is expected to announce in its 401 challenge. When set,
        a different realm is reported as a problem. When unset, any realm is accepted.
    type: str
  validate_certs:
    description: Verify the TLS certificate chain and name of the server.
    type: bool
    default: true
  ca_path:
    description:
      - CA bundle (PEM) used to verify the TLS certificate instead of the
        system trust store.
    type: path
  server_name:
    description:
      - Name sent in TLS SNI and checked against the certificate. Defaults to O(host).
    type: str
  timeout:
    description: Seconds to wait for each connection and each STUN transaction.
    type: float
    default: 5.0
  forbidden_peers:
    description:
      - Peer addresses for which the server must refuse a permission with 403.
        Use addresses of the same family as the relay (IPv4 for most servers);
        peers of the other family are skipped and reported as such.
    type: list
    elements: str
    default: [127.0.0.1, 10.0.0.1, 169.254.169.254]
  fail_on_unhealthy:
    description: Fail the task when any problem is found. When false, only report.
    type: bool
    default: true
attributes:
  check_mode:
    support: full
    description: The module never changes anything; it runs the same checks in check mode.
  diff_mode:
    support: none
notes:
  - Runs where the task runs; delegate to the control node or a client host to test
    the server as clients see it.
  - Uses only the Python standard library.
seealso:
  - name: RFC 8656 (TURN)
    link: https://www.rfc-editor.org/rfc/rfc8656
  - name: coturn TURN REST API
    link: https://github.com/coturn/coturn/wiki/turnserver
"""

EXAMPLES = r"""
- name: Check the TURN server as a browser would reach it
  turn_check:
    host: turn.example.org
    port: 3478
    tls_port: 443
    secret: "{{ coturn_static_auth_secrets[0] }}"
    realm: turn.example.org
  delegate_to: localhost
  check_mode: false

- name: Only report, TLS with a private CA, UDP and TLS only
  turn_check:
    host: 192.0.2.10
    server_name: turn.example.org
    ca_path: /etc/ssl/smeeton/ca.pem
    transports: [udp, tls]
    secret: "{{ turn_secret }}"
    forbidden_peers: [127.0.0.1, 10.0.0.1, 172.16.0.1, 192.168.0.1, 169.254.169.254]
    fail_on_unhealthy: false
  register: turn_health

- name: Show the problems
  ansible.builtin.debug:
    var: turn_health.problems
"""

RETURN = r"""
healthy:
  description: True when every transport allocated and every forbidden peer was refused.
  returned: always
  type: bool
  sample: true
problems:
  description: What is wrong, in plain words. Empty when healthy.
  returned: always
  type: list
  elements: str
  sample: ["tls: TLS handshake failed: certificate verify failed"]
transports:
  description: Result per checked transport, keyed by transport name.
  returned: always
  type: dict
  contains:
    ok:
      description: Whether an authenticated allocation succeeded.
      type: bool
    port:
      description: Server port used.
      type: int
    mapped_address:
      description: Our address as the server saw it (C(ip:port)).
      type: str
    relayed_address:
      description: Relay address the server allocated (C(ip:port)).
      type: str
    lifetime:
      description: Allocation lifetime granted by the server, in seconds.
      type: int
    rtt_ms:
      description: Round-trip time of the authenticated Allocate transaction, in ms.
      type: float
    binding_rtt_ms:
      description: Round-trip time of the Binding transaction, in ms.
      type: float
    tls_version:
      description: Negotiated TLS version (tls transport only).
      type: str
    realm:
      description: Realm announced by the server.
      type: str
    error:
      description: Why the check failed (only when ok is false).
      type: str
  sample:
    udp:
      ok: true
      port: 3478
      mapped_address: 198.51.100.7:50123
      relayed_address: 203.0.113.10:49160
      lifetime: 300
      rtt_ms: 12.4
      binding_rtt_ms: 11.9
      realm: turn.example.org
security:
  description: Security probe, one entry per forbidden peer.
  returned: always
  type: list
  elements: dict
  contains:
    peer:
      description: The forbidden peer address that was requested.
      type: str
    transport:
      description: Transport of the allocation used for the probe.
      type: str
    refused:
      description: True when the server refused the permission with 403, as it must.
      type: bool
    code:
      description: STUN error code of the answer, null when the permission was granted.
      type: int
    reason:
      description: Reason phrase of the answer, or what happened.
      type: str
    skipped:
      description: True when the probe could not be made (no allocation, other family).
      type: bool
  sample:
    - peer: 10.0.0.1
      transport: udp
      refused: true
      code: 403
      reason: Forbidden IP
      skipped: false
changed:
  description: Always false; the module does not change anything.
  returned: always
  type: bool
"""

import ipaddress
import socket
import ssl

from ansible.module_utils.basic import AnsibleModule
from ansible.module_utils.stun import (
    StunError,
    TurnClient,
    make_tls_context,
    rest_credentials,
)

TRANSPORTS = ("udp", "tcp", "tls")


def format_address(addr):
    if not addr:
        return None
    ip, port = addr
    return f"[{ip}]:{port}" if ":" in ip else f"{ip}:{port}"


def check_transport(params, transport, ssl_context):
    """Binding + authenticated Allocate on one transport.

    Returns (result dict, open TurnClient with its allocation or None, problems).
    """
    port = params["tls_port"] if transport == "tls" else params["port"]
    result = {"ok": False, "port": port}
    problems = []
    try:
        client = TurnClient(
            params["host"],
            port,
            transport,
            timeout=params["timeout"],
            ssl_context=ssl_context,
            server_hostname=params["server_name"] or params["host"],
        )
    except ssl.SSLError as exc:
        result["error"] = f"TLS handshake failed: {getattr(exc, 'reason', None) or exc}"
        return result, None, [f"{transport}: {result['error']}"]
    except (OSError, ValueError) as exc:
        result["error"] = f"cannot connect to {params['host']}:{port}: {exc}"
        return result, None, [f"{transport}: {result['error']}"]

    if client.tls_version:
        result["tls_version"] = client.tls_version
    try:
        binding = client.binding()
        result["binding_rtt_ms"] = round(binding["rtt"] * 1000, 2)
        username, password = rest_credentials(params["secret"], params["username"], params["ttl"])
        alloc = client.allocate(username, password)
    except (StunError, OSError) as exc:
        client.close()
        message = str(exc) or exc.__class__.__name__
        if isinstance(exc, StunError) and exc.code == 401:
            message += " (wrong secret, realm or clock skew)"
        result["error"] = message
        return result, None, [f"{transport}: {message}"]

    result.update(
        ok=True,
        mapped_address=format_address(alloc["mapped_address"]),
        relayed_address=format_address(alloc["relayed_address"]),
        lifetime=alloc["lifetime"],
        rtt_ms=round(alloc["rtt"] * 1000, 2),
        realm=alloc["realm"],
    )
    if client.unauthenticated_allocation:
        problems.append(
            f"{transport}: the server allocated a relay without credentials (open relay)"
        )
    if params["realm"] and alloc["realm"] != params["realm"]:
        problems.append(
            f"{transport}: the server announces realm {alloc['realm']!r}, "
            f"expected {params['realm']!r}"
        )
    return result, client, problems


def probe_peers(client, transport, peers):
    """CreatePermission for each forbidden peer; the server must answer 403."""
    entries = []
    problems = []
    relay_family = None
    if client.relayed_address:
        relay_family = ipaddress.ip_address(client.relayed_address[0]).version
    for peer in peers:
        entry = {"peer": peer, "transport": transport, "refused": False, "code": None}
        entry["skipped"] = False
        if relay_family and ipaddress.ip_address(peer).version != relay_family:
            entry.update(skipped=True, reason="peer family differs from the relay family")
            entries.append(entry)
            continue
        try:
            client.create_permission(peer)
        except StunError as exc:
            entry["code"] = exc.code
            entry["reason"] = exc.reason or str(exc)
            if exc.code == 403:
                entry["refused"] = True
            else:
                problems.append(
                    f"permission to forbidden peer {peer} answered {exc.code or ''} "
                    f"{entry['reason']} instead of 403 Forbidden".replace("  ", " ")
                )
        except OSError as exc:
            entry["reason"] = f"no answer: {exc}"
            problems.append(f"permission probe for forbidden peer {peer} got no answer")
        else:
            entry["reason"] = "permission granted"
            problems.append(
                f"the server granted a permission to forbidden peer {peer}: "
                "it would relay traffic to internal addresses (add denied-peer-ip)"
            )
        entries.append(entry)
    return entries, problems


def run_checks(params):
    """Run every check; return the module result (without changed)."""
    ssl_context = None
    if "tls" in params["transports"]:
        ssl_context = make_tls_context(params["ca_path"], params["validate_certs"])

    results = {}
    problems = []
    security = []
    probe_done = False
    for transport in params["transports"]:
        result, client, found = check_transport(params, transport, ssl_context)
        results[transport] = result
        problems.extend(found)
        if client is None:
            continue
        try:
            if not probe_done and params["forbidden_peers"]:
                security, found = probe_peers(client, transport, params["forbidden_peers"])
                problems.extend(found)
                probe_done = True
            try:
                client.refresh(0)
            except (StunError, OSError) as exc:
                problems.append(f"{transport}: deleting the test allocation failed: {exc}")
        finally:
            client.close()

    if params["forbidden_peers"] and not probe_done:
        security = [
            {
                "peer": peer,
                "transport": None,
                "refused": False,
                "code": None,
                "reason": "no allocation succeeded, so the probe could not run",
                "skipped": True,
            }
            for peer in params["forbidden_peers"]
        ]
        problems.append("security probe not run: no transport could allocate a relay")

    return {
        "healthy": not problems,
        "problems": problems,
        "transports": results,
        "security": security,
    }


def main():
    module = AnsibleModule(
        argument_spec={
            "host": {"type": "str", "required": True},
            "port": {"type": "int", "default": 3478},
            "tls_port": {"type": "int", "default": 5349},
            "transports": {
                "type": "list",
                "elements": "str",
                "choices": list(TRANSPORTS),
                "default": list(TRANSPORTS),
            },
            "secret": {"type": "str", "required": True, "no_log": True},
            "username": {"type": "str", "default": "turn_check"},
            "ttl": {"type": "int", "default": 300},
            "realm": {"type": "str"},
            "validate_certs": {"type": "bool", "default": True},
            "ca_path": {"type": "path"},
            "server_name": {"type": "str"},
            "timeout": {"type": "float", "default": 5.0},
            "forbidden_peers": {
                "type": "list",
                "elements": "str",
                "default": ["127.0.0.1", "10.0.0.1", "169.254.169.254"],
            },
            "fail_on_unhealthy": {"type": "bool", "default": True},
        },
        supports_check_mode=True,
    )
    params = module.params

    for name in ("port", "tls_port"):
        if not 1 <= params[name] <= 65535:
            module.fail_json(msg=f"{name} must be between 1 and 65535, got {params[name]}")
    if params["ttl"] < 1:
        module.fail_json(msg=f"ttl must be a positive number of seconds, got {params['ttl']}")
    if params["timeout"] <= 0:
        module.fail_json(msg=f"timeout must be positive, got {params['timeout']}")
    if not params["transports"]:
        module.fail_json(msg="transports must name at least one of udp, tcp, tls")
    if ":" in params["username"]:
        module.fail_json(msg="username must not contain ':' (it follows EXPIRY: in the name)")
    for peer in params["forbidden_peers"]:
        try:
            ipaddress.ip_address(peer)
        except ValueError:
            module.fail_json(msg=f"forbidden_peers: {peer!r} is not an IP address")
    if params["ca_path"] and "tls" in params["transports"]:
        try:
            make_tls_context(params["ca_path"], params["validate_certs"])
        except (OSError, ssl.SSLError) as exc:
            module.fail_json(msg=f"ca_path {params['ca_path']} cannot be loaded: {exc}")

    try:
        result = run_checks(params)
    except (socket.gaierror, OSError) as exc:  # pragma: no cover - defensive
        module.fail_json(msg=f"TURN check could not run: {exc}")

    result["changed"] = False
    if params["fail_on_unhealthy"] and not result["healthy"]:
        module.fail_json(msg="TURN server unhealthy: " + "; ".join(result["problems"]), **result)
    module.exit_json(**result)


if __name__ == "__main__":
    main()

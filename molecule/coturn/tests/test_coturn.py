"""Verify the `coturn` role on a dedicated TURN host, as clients reach it.

Host checks go through `podman exec` (testinfra's podman backend). TURN checks
go from the test machine to the container's published ports on 127.0.0.1,
with two independent clients: the project's own STUN/TURN code
(module_utils/stun.py, which the turn_check module uses) and aioice.

Network rule: all traffic goes to 127.0.0.1. Forbidden peers appear only as
XOR-PEER-ADDRESS in CreatePermission requests that coturn must refuse; no
data is ever sent through an allocation.

Several tests converge the TURN host again with changed variables
(coturn.yml, the coturn role alone) and put the scenario's values back after.
"""

import asyncio
import contextlib
import hashlib
import importlib.util
import json
import os
import re
import ssl
import subprocess
from pathlib import Path

import aioice.stun as aioice_stun
import aioice.turn as aioice_turn
import pytest
import testinfra

TURN = "smeeton-mol-coturn-turn"
FRESH = "smeeton-mol-coturn-fresh"
testinfra_hosts = [f"podman://{TURN}"]

SCENARIO = Path(__file__).resolve().parent.parent
REPO = SCENARIO.parent.parent
FQDN = "turn.coturn.molecule.smeeton.test"
REALM = FQDN
SERVER = "127.0.0.1"
PORT = 18678  # -> 3478 udp+tcp in the container
TLS_PORT = 18643  # -> 443 tcp in the container
RELAY_V6 = "2001:db8:186::10"  # added by prepare.yml
# Test-only fixtures; SECRET is the scenario's value (molecule.yml).
SECRET = "molecule-coturn-current-secret-0123456789abcdef"
NEW_SECRET = "molecule-coturn-rotated-secret-fedcba9876543210"
WRONG_SECRET = "molecule-coturn-wrong-secret-000000000000000000"


def _load_stun():
    spec = importlib.util.spec_from_file_location("smeeton_stun", REPO / "module_utils" / "stun.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


stun = _load_stun()


def _ephemeral():
    directory = os.environ.get("MOLECULE_EPHEMERAL_DIRECTORY")
    if not directory:
        pytest.fail("MOLECULE_EPHEMERAL_DIRECTORY is not set: run these tests through molecule")
    return Path(directory)


@pytest.fixture(scope="module")
def ca_path():
    path = _ephemeral() / "tls" / "ca.pem"
    assert path.exists(), f"{path} missing: prepare.yml makes the test CA"
    return str(path)


@pytest.fixture(scope="module")
def turn():
    return testinfra.get_host(f"podman://{TURN}")


def creds(secret=SECRET, ttl=600, user="molecule"):
    return stun.rest_credentials(secret, user, ttl)


def client(transport="udp", ca=None, server_name=FQDN):
    port = TLS_PORT if transport == "tls" else PORT
    ctx = stun.make_tls_context(ca) if transport == "tls" else None
    return stun.TurnClient(
        SERVER, port, transport, timeout=3, ssl_context=ctx, server_hostname=server_name
    )


def allocate_ok(secret=SECRET, transport="udp", ca=None):
    with client(transport, ca) as c:
        result = c.allocate(*creds(secret))
        c.refresh(0)
        return result


def allocate_error(secret, transport="udp", ca=None, ttl=600):
    with client(transport, ca) as c, pytest.raises(stun.StunError) as excinfo:
        c.allocate(*creds(secret, ttl))
    return excinfo.value


# -- running ansible-playbook against the molecule inventory ----------------------


def run_playbook(playbook, *extra_vars, check=False, json_output=False):
    inventory = os.environ.get("MOLECULE_INVENTORY_FILE")
    if not inventory:
        pytest.fail("MOLECULE_INVENTORY_FILE is not set: run these tests through `molecule verify`")
    env = dict(os.environ)
    env.setdefault("ANSIBLE_ROLES_PATH", str(REPO / "roles"))
    env.setdefault("ANSIBLE_LIBRARY", str(REPO / "library"))
    env.setdefault("ANSIBLE_MODULE_UTILS", str(REPO / "module_utils"))
    env.setdefault("CONTAINERS_CONF", str(REPO / "scripts" / "containers.conf"))
    env.pop("ANSIBLE_CALLBACKS_ENABLED", None)  # no profile_tasks noise in parsed output
    env.pop("ANSIBLE_FORCE_COLOR", None)
    env["ANSIBLE_NOCOLOR"] = "1"
    if json_output:
        env["ANSIBLE_STDOUT_CALLBACK"] = "ansible.builtin.json"
    cmd = ["ansible-playbook", "-i", inventory, str(SCENARIO / playbook)]
    if check:
        cmd.append("--check")
    for ev in extra_vars:
        cmd += ["-e", ev]
    result = subprocess.run(
        cmd, capture_output=True, text=True, timeout=900, check=False, env=env
    )  # fmt: skip
    result.output = result.stdout + result.stderr
    return result


def recap(output, host=TURN):
    match = re.search(rf"^{re.escape(host)}\s*:\s*(.*)$", output, re.MULTILINE)
    assert match, output
    return {k: int(v) for k, v in re.findall(r"(\w+)=(\d+)", match.group(1))}


def converge_coturn(*extra_vars):
    result = run_playbook("coturn.yml", *extra_vars)
    assert result.returncode == 0, result.output
    return recap(result.output)


def service_state(host):
    out = host.check_output("systemctl show coturn -p MainPID -p InvocationID -p NRestarts")
    return dict(line.split("=", 1) for line in out.splitlines())


def journal_cursor(host):
    out = host.check_output("journalctl -u coturn -n 0 --show-cursor --no-pager")
    return out.strip().split("cursor: ", 1)[1]


def starts_since(host, cursor):
    out = host.check_output(f"journalctl -u coturn --after-cursor='{cursor}' -o cat --no-pager")
    return len(re.findall(r"^Started coturn", out, re.MULTILINE))


# -- the host ---------------------------------------------------------------------


def test_coturn_runs_as_its_user_with_the_drop_in(host):
    assert host.service("coturn").is_running
    assert host.service("coturn").is_enabled
    assert host.process.get(comm="turnserver").user == "turnserver"
    show = host.check_output("systemctl show coturn -p LimitNOFILE -p AmbientCapabilities")
    assert "LimitNOFILE=16384" in show
    assert "cap_net_bind_service" in show
    # coturn binds each address on its own (no wildcard socket).
    ip = host.check_output("ip -4 -o addr show dev eth0").split()[3].split("/")[0]
    for spec in (f"udp://{ip}:3478", f"tcp://{ip}:3478", f"tcp://{ip}:443"):
        assert host.socket(spec).is_listening, spec


def test_config_is_hardened_and_holds_no_secret(host):
    conf = host.file("/etc/turnserver.conf")
    assert conf.user == "root"
    assert conf.group == "turnserver"
    assert conf.mode == 0o640
    lines = conf.content_string.splitlines()
    for line in (
        "use-auth-secret",
        f"realm={REALM}",
        "userdb=/var/lib/turn/turndb",
        "listening-port=3478",
        "tls-listening-port=443",
        "min-port=49152",
        "max-port=49161",
        "no-tlsv1",
        "no-tlsv1_1",
        "no-cli",
        "no-multicast-peers",
        f"cert=/etc/ssl/smeeton/{FQDN}/fullchain.pem",
    ):
        assert line in lines, line
    assert SECRET not in conf.content_string
    assert not any(ln.startswith("static-auth-secret") for ln in lines)
    assert "allow-loopback-peers" not in lines
    log = host.file("/var/log/turnserver/turnserver.log").content_string
    assert "CONFIG ERROR" not in log
    assert "Wrong address format" not in log


def test_userdb_holds_the_secret_for_the_realm(host):
    db = host.file("/var/lib/turn/turndb")
    assert db.user == "turnserver"
    assert db.mode == 0o640
    rows = host.check_output(
        "sqlite3 -batch /var/lib/turn/turndb 'SELECT realm, value FROM turn_secret'"
    )
    assert rows.splitlines() == [f"{REALM}|{SECRET}"]


def test_firewall_opens_the_turn_ports_through_common(host):
    out = host.check_output("ufw status verbose")
    assert "Status: active" in out
    assert "Default: deny (incoming)" in out
    numbered = [
        r for r in host.check_output("ufw status numbered").splitlines() if r.startswith("[")
    ]
    assert "22/tcp" in numbered[0]
    text = "\n".join(numbered)
    for rule, comment in (
        ("3478/udp", "TURN/STUN UDP"),
        ("3478/tcp", "TURN/STUN TCP"),
        ("49152:49161/udp", "TURN relay ports"),
        ("443/tcp", "TURN over TLS"),
    ):
        assert re.search(rf"\] {re.escape(rule)}\s+ALLOW IN\s+Anywhere\s+# {comment}", text), rule


# -- allocation from the test machine (module_utils/stun.py) ------------------------


@pytest.mark.parametrize("transport", ["udp", "tcp", "tls"])
def test_allocation_succeeds(transport, ca_path):
    with client(transport, ca_path) as c:
        binding = c.binding()
        # Through the published port coturn sees podman's gateway, not 127.0.0.1.
        assert binding["mapped_address"][0]
        result = c.allocate(*creds())
        assert result["realm"] == REALM
        relay_ip, relay_port = result["relayed_address"]
        assert ":" not in relay_ip
        assert 49152 <= relay_port <= 49161
        assert result["lifetime"] > 0
        if transport == "tls":
            assert c.tls_version in ("TLSv1.2", "TLSv1.3")
        c.refresh(0)


def test_tls_certificate_is_checked_against_the_test_ca_and_name(ca_path):
    with pytest.raises(ssl.SSLCertVerificationError, match="Hostname mismatch"):
        client("tls", ca_path, server_name="other.coturn.molecule.smeeton.test")
    with pytest.raises(ssl.SSLCertVerificationError):
        client("tls", None)  # system trust store does not know the test CA


@pytest.mark.filterwarnings("ignore::DeprecationWarning")
def test_tls_1_1_is_refused():
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    ctx.check_hostname = False
    ctx.verify_mode = ssl.CERT_NONE
    try:
        ctx.minimum_version = ssl.TLSVersion.TLSv1_1
        ctx.maximum_version = ssl.TLSVersion.TLSv1_1
        ctx.set_ciphers("DEFAULT:@SECLEVEL=0")
    except (ValueError, ssl.SSLError):
        pytest.skip("local OpenSSL cannot offer TLS 1.1")
    with pytest.raises((ssl.SSLError, OSError)):
        stun.TurnClient(SERVER, TLS_PORT, "tls", timeout=3, ssl_context=ctx)


@pytest.mark.parametrize("transport", ["udp", "tcp", "tls"])
def test_wrong_secret_is_401(transport, ca_path):
    assert allocate_error(WRONG_SECRET, transport, ca_path).code == 401


@pytest.mark.parametrize("transport", ["udp", "tcp"])
def test_expired_username_is_refused(transport):
    # A username whose EXPIRY lies two minutes in the past, with a correct HMAC.
    assert allocate_error(SECRET, transport, ttl=-120).code == 401


# -- peer restrictions: CreatePermission only, never data ---------------------------

FORBIDDEN_V4 = {
    "loopback": "127.0.0.1",
    "loopback-other": "127.1.2.3",
    "rfc1918-10": "10.0.0.1",
    "rfc1918-172": "172.16.0.1",
    "rfc1918-192": "192.168.1.1",
    "cgnat-low": "100.64.0.1",
    "cgnat-high": "100.127.255.254",
    "link-local": "169.254.1.1",
    "cloud-metadata": "169.254.169.254",
    "this-network": "0.0.0.1",
    "multicast": "224.0.0.1",
    "multicast-ssdp": "239.255.255.250",
    "broadcast": "255.255.255.255",
}
FORBIDDEN_V6 = {
    "loopback": "::1",
    "ula-fc": "fc00::1",
    "ula-fd": "fd12:3456:789a::1",
    "link-local": "fe80::1",
    "multicast": "ff02::1",
    "v4-mapped-rfc1918": "::ffff:10.0.0.1",
    "v4-mapped-metadata": "::ffff:169.254.169.254",
    "nat64": "64:ff9b::a00:1",
}


@pytest.fixture(scope="module")
def v4_allocation():
    with client("udp") as c:
        c.allocate(*creds())
        yield c
        with contextlib.suppress(stun.StunError, OSError):  # gone if coturn restarted
            c.refresh(0)


@pytest.fixture(scope="module")
def v6_allocation():
    with client("udp") as c:
        result = c.allocate(*creds(), family=stun.FAMILY_IPV6)
        assert result["relayed_address"][0] == RELAY_V6
        yield c
        with contextlib.suppress(stun.StunError, OSError):  # gone if coturn restarted
            c.refresh(0)


@pytest.mark.parametrize("peer", FORBIDDEN_V4.values(), ids=FORBIDDEN_V4.keys())
def test_forbidden_ipv4_peer_is_403(v4_allocation, peer):
    with pytest.raises(stun.StunError) as excinfo:
        v4_allocation.create_permission(peer)
    assert excinfo.value.code == 403


@pytest.mark.parametrize("peer", FORBIDDEN_V6.values(), ids=FORBIDDEN_V6.keys())
def test_forbidden_ipv6_peer_is_403(v6_allocation, peer):
    with pytest.raises(stun.StunError) as excinfo:
        v6_allocation.create_permission(peer)
    assert excinfo.value.code == 403


def test_documentation_peers_are_permitted(v4_allocation, v6_allocation):
    # Control: documentation addresses (TEST-NET-3, 2001:db8::/32) are not in
    # the deny list, so the 403s above come from it. A permission sends nothing.
    assert v4_allocation.create_permission("203.0.113.5") >= 0
    assert v6_allocation.create_permission("2001:db8:ffff::5") >= 0


# -- independent client: aioice --------------------------------------------------------


async def _aioice_client(transport, secret, ttl, ca_path):
    username, password = creds(secret, ttl, user="aioice")
    loop = asyncio.get_running_loop()
    port = TLS_PORT if transport == "tls" else PORT
    kwargs = {"username": username, "password": password, "lifetime": 60}
    kwargs["channel_refresh_time"] = 60
    if transport == "udp":
        sock, proto = await loop.create_datagram_endpoint(
            lambda: aioice_turn.TurnClientUdpProtocol((SERVER, port), **kwargs),
            remote_addr=(SERVER, port),
        )
    else:
        ctx = ssl.create_default_context(cafile=ca_path) if transport == "tls" else None
        sock, proto = await loop.create_connection(
            lambda: aioice_turn.TurnClientTcpProtocol((SERVER, port), **kwargs),
            host=SERVER,
            port=port,
            ssl=ctx,
            server_hostname=FQDN if ctx else None,
        )
    return sock, proto


async def _aioice_session(transport, ca_path, secret=SECRET, ttl=600, peers=()):
    """Allocate with aioice, ask for permissions; return (relayed, {peer: code})."""
    sock, proto = await _aioice_client(transport, secret, ttl, ca_path)
    try:
        relayed = await proto.connect()
        codes = {}
        for peer in peers:
            request = aioice_stun.Message(
                message_method=aioice_stun.Method.CREATE_PERMISSION,
                message_class=aioice_stun.Class.REQUEST,
            )
            request.attributes["XOR-PEER-ADDRESS"] = (peer, 9)
            try:
                await proto.request_with_retry(request)
                codes[peer] = 200
            except aioice_stun.TransactionFailed as exc:
                codes[peer] = exc.response.attributes["ERROR-CODE"][0]
        await proto.delete()
        return relayed, codes
    finally:
        sock.close()


def run_async(coro):
    return asyncio.run(asyncio.wait_for(coro, 20))


@pytest.mark.parametrize("transport", ["udp", "tcp", "tls"])
def test_aioice_allocates(transport, ca_path):
    relayed, _ = run_async(_aioice_session(transport, ca_path))
    assert 49152 <= relayed[1] <= 49161


@pytest.mark.parametrize(
    ("secret", "ttl"), [(WRONG_SECRET, 600), (SECRET, -120)], ids=["wrong-secret", "expired"]
)
def test_aioice_is_refused(secret, ttl, ca_path):
    with pytest.raises(aioice_stun.TransactionFailed) as excinfo:
        run_async(_aioice_session("udp", ca_path, secret=secret, ttl=ttl))
    assert excinfo.value.response.attributes["ERROR-CODE"][0] == 401


def test_aioice_sees_the_same_peer_restrictions(ca_path):
    peers = [*FORBIDDEN_V4.values(), "203.0.113.5"]
    _, codes = run_async(_aioice_session("tcp", ca_path, peers=peers))
    assert codes == {**dict.fromkeys(FORBIDDEN_V4.values(), 403), "203.0.113.5": 200}


# -- the fleet health task file (turn_check module) -------------------------------------


def run_health(*extra_vars):
    result = run_playbook("health.yml", *extra_vars, json_output=True)
    assert result.returncode == 0, result.output
    data = json.loads(result.stdout)
    shown = data["plays"][0]["tasks"][-1]["hosts"][TURN]
    return shown["health_turn"], result.output


def test_health_turn_ok():
    health, output = run_health()
    assert health["status"] == "ok", health
    assert health["problems"] == []
    assert health["transports"] == {"udp": True, "tcp": True, "tls": True}
    assert set(health["rtt_ms"]) == {"udp", "tcp", "tls"}
    assert all(v > 0 for v in health["rtt_ms"].values())
    assert int(health["peers_refused"]) == int(health["peers_checked"]) == 6
    assert SECRET not in output


def test_health_turn_critical_on_wrong_secret_without_failing():
    health, output = run_health(json.dumps({"coturn_static_auth_secrets": [WRONG_SECRET]}))
    assert health["status"] == "critical"
    assert health["transports"] == {"udp": False, "tcp": False, "tls": False}
    assert any("401" in p for p in health["problems"]), health
    assert WRONG_SECRET not in output


def test_health_turn_critical_without_secret():
    health, _ = run_health(json.dumps({"coturn_static_auth_secrets": []}))
    assert health["status"] == "critical"
    assert "coturn_static_auth_secrets" in health["problems"][0]


# -- preflight: fail before any change, naming the variable ---------------------------------

WATCHED = "/etc/turnserver.conf /etc/systemd/system/coturn.service.d /var/lib/turn /etc/ufw"


def _snapshot(host):
    files = host.check_output(f"find {WATCHED} -type f -exec sha256sum {{}} + | sort")
    rows = host.check_output("sqlite3 -batch /var/lib/turn/turndb 'SELECT * FROM turn_secret'")
    state = service_state(host)
    return files, rows, host.check_output("ufw status numbered"), state["InvocationID"]


PREFLIGHT_CASES = {
    "no-secret": ('{"coturn_static_auth_secrets": []}', "coturn_static_auth_secrets"),
    "short-secret": ('{"coturn_static_auth_secrets": ["too-short"]}', "coturn_static_auth_secrets"),
    "secret-with-space": (
        json.dumps({"coturn_static_auth_secrets": [SECRET, "with space " + "x" * 32]}),
        "coturn_static_auth_secrets",
    ),
    "cidr-denied": (
        '{"coturn_extra_denied_peer_ips": ["10.0.0.0/8"]}',
        "coturn_extra_denied_peer_ips",
    ),
    "cidr-allowed": ('{"coturn_allowed_peer_ips": ["192.0.2.0/24"]}', "coturn_allowed_peer_ips"),
    "relay-range-reversed": ("coturn_min_port=49200 coturn_max_port=49100", "coturn_min_port"),
    "relay-range-privileged": ("coturn_min_port=80", "coturn_min_port"),
    "relay-range-too-high": ("coturn_max_port=70000", "coturn_max_port"),
    "listener-in-relay-range": ("coturn_listening_port=49155", "coturn_listening_port"),
    "same-listener-ports": ("coturn_tls_listening_port=3478", "coturn_tls_listening_port"),
    "topology": ("coturn_topology=edge", "coturn_topology"),
    "deny-all-without-allow": ("coturn_deny_all_other_peers=true", "coturn_allowed_peer_ips"),
    "relative-cert-path": ("coturn_tls_cert_path=fullchain.pem", "coturn_tls_cert_path"),
    "short-ttl": ("coturn_credential_ttl=10", "coturn_credential_ttl"),
}


@pytest.mark.parametrize(
    ("extra_var", "named"), PREFLIGHT_CASES.values(), ids=PREFLIGHT_CASES.keys()
)
def test_preflight_rejects_bad_values_before_any_change(turn, extra_var, named):
    before = _snapshot(turn)
    result = run_playbook("coturn.yml", extra_var)
    assert result.returncode != 0, result.output
    assert named in result.output, result.output
    assert recap(result.output)["changed"] == 0, result.output
    assert SECRET not in result.output
    assert _snapshot(turn) == before


# -- idempotence of restarts and secret rotation --------------------------------------------


def test_config_change_restarts_coturn_exactly_once(turn):
    state0 = service_state(turn)
    cursor = journal_cursor(turn)
    try:
        first = run_playbook("coturn.yml", "coturn_verbose=true")
        assert first.returncode == 0, first.output
        assert recap(first.output)["changed"] >= 1
        assert first.output.count("RUNNING HANDLER [coturn : Restart coturn]") == 1
        state1 = service_state(turn)
        assert state1["MainPID"] != state0["MainPID"]
        assert state1["InvocationID"] != state0["InvocationID"]
        assert state1["NRestarts"] == state0["NRestarts"]  # no crash restart
        assert starts_since(turn, cursor) == 1
        assert "verbose" in turn.file("/etc/turnserver.conf").content_string.splitlines()

        cursor = journal_cursor(turn)
        assert converge_coturn("coturn_verbose=true")["changed"] == 0
        assert service_state(turn) == state1
        assert starts_since(turn, cursor) == 0
        assert allocate_ok()["realm"] == REALM
    finally:
        converge_coturn()  # back to the scenario's configuration
    assert service_state(turn)["MainPID"] != "0"


def test_secret_rotation_overlaps_without_restart(turn):
    state0 = service_state(turn)
    conf0 = hashlib.sha256(turn.file("/etc/turnserver.conf").content).hexdigest()
    try:
        # 1. NEW first (handed to BBB), OLD still accepted.
        converge_coturn(json.dumps({"coturn_static_auth_secrets": [NEW_SECRET, SECRET]}))
        for secret in (NEW_SECRET, SECRET):
            assert allocate_ok(secret)["realm"] == REALM
        # 2. OLD dropped: refused, NEW still works.
        converge_coturn(json.dumps({"coturn_static_auth_secrets": [NEW_SECRET]}))
        assert allocate_error(SECRET).code == 401
        assert allocate_ok(NEW_SECRET)["realm"] == REALM
        rows = turn.check_output(
            "sqlite3 -batch /var/lib/turn/turndb 'SELECT value FROM turn_secret'"
        )
        assert rows.splitlines() == [NEW_SECRET]
        # Neither step touched the configuration or restarted coturn.
        assert service_state(turn) == state0
        assert hashlib.sha256(turn.file("/etc/turnserver.conf").content).hexdigest() == conf0
    finally:
        converge_coturn()  # back to the scenario's secret
    assert allocate_ok(SECRET)["realm"] == REALM
    assert allocate_error(NEW_SECRET).code == 401
    assert service_state(turn) == state0


# -- check mode on a host without coturn ---------------------------------------------------


def test_check_mode_on_a_fresh_host_changes_nothing():
    fresh = testinfra.get_host(f"podman://{FRESH}")

    def snapshot():
        return (
            fresh.check_output("dpkg-query -W -f '${Package} ${Version} ${Status}\\n'"),
            fresh.check_output("find /etc /var/lib -xdev | sort | sha256sum"),
            fresh.check_output(
                "find /etc /var/lib -xdev -type f -exec sha256sum {} + | sort | sha256sum"
            ),
            fresh.check_output("ufw status numbered"),
        )

    before = snapshot()
    result = run_playbook("coturn.yml", "molecule_coturn_hosts=fresh", check=True)
    assert result.returncode == 0, result.output
    counts = recap(result.output, FRESH)
    assert counts["failed"] == 0
    assert counts["changed"] >= 1  # it reports what it would do
    assert snapshot() == before
    assert not fresh.package("coturn").is_installed
    assert not fresh.file("/etc/turnserver.conf").exists

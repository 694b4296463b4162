"""coturn on 127.0.0.1, configured by the coturn role's own template.

Starts Debian's ``turnserver`` binary as a subprocess (not the system service)
with turnserver.conf rendered from roles/coturn/templates/turnserver.conf.j2
and the role defaults (so the denied peer ranges are exactly the role's), on
free 127.0.0.1 / ::1 ports, with a temporary self-signed certificate and a
temporary sqlite userdb holding two secrets of the realm.

All traffic goes to the local turnserver only. Forbidden peers appear only as
XOR-PEER-ADDRESS inside CreatePermission requests, which coturn must refuse;
no data is ever sent towards them.
"""

import asyncio
import datetime
import ipaddress
import json
import random
import shutil
import socket
import sqlite3
import subprocess
import time
from pathlib import Path

import pytest
import turn_check
from ansible.module_utils import basic, stun

pytestmark = pytest.mark.integration

REPO = Path(__file__).resolve().parents[2]
ROLE = REPO / "roles" / "coturn"
TURNSERVER = shutil.which("turnserver")
REALM = "turn.test"
SECRET_CURRENT = "current-secret-0123456789"
SECRET_PREVIOUS = "previous-secret-9876543210"

if TURNSERVER is None:
    pytest.skip(
        "coturn's turnserver binary is not installed (apt-get install coturn; "
        "scripts/bootstrap.sh installs it)",
        allow_module_level=True,
    )


def _has_ipv6_loopback():
    try:
        with socket.socket(socket.AF_INET6, socket.SOCK_DGRAM) as s:
            s.bind(("::1", 0))
        return True
    except OSError:
        return False


HAS_IPV6 = _has_ipv6_loopback()


# -- helpers -------------------------------------------------------------------


def free_port(hosts):
    """A port free for TCP and UDP on every host in ``hosts``."""
    for _ in range(100):
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
            probe.bind(("127.0.0.1", 0))
            port = probe.getsockname()[1]
        try:
            for host in hosts:
                family = socket.AF_INET6 if ":" in host else socket.AF_INET
                for kind in (socket.SOCK_STREAM, socket.SOCK_DGRAM):
                    with socket.socket(family, kind) as s:
                        s.bind((host, port))
        except OSError:
            continue
        return port
    raise RuntimeError("no free port")


def make_cert(directory: Path):
    """Self-signed certificate for 'localhost' / 127.0.0.1 (cryptography ships with ansible)."""
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "localhost")])
    now = datetime.datetime.now(datetime.timezone.utc)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(
            x509.SubjectAlternativeName(
                [x509.DNSName("localhost"), x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]
            ),
            critical=False,
        )
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .sign(key, hashes.SHA256())
    )
    cert_path = directory / "cert.pem"
    key_path = directory / "key.pem"
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_path.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.TraditionalOpenSSL,
            serialization.NoEncryption(),
        )
    )
    return cert_path, key_path


def make_userdb(path: Path, secrets):
    """sqlite userdb with coturn 4.6's turn_secret schema (dbd_sqlite.c)."""
    with sqlite3.connect(path) as db:
        db.execute(
            "CREATE TABLE IF NOT EXISTS turn_secret (realm varchar(127) default '', "
            "value varchar(127), primary key (realm,value))"
        )
        db.executemany(
            "INSERT OR IGNORE INTO turn_secret (realm, value) VALUES (?, ?)",
            [(REALM, s) for s in secrets],
        )


def render_role_config(overrides):
    """Render the role's turnserver.conf.j2 with the role defaults + overrides."""
    from ansible.parsing.dataloader import DataLoader
    from ansible.template import Templar, trust_as_template

    def trust(value):
        if isinstance(value, str):
            return trust_as_template(value)
        if isinstance(value, list):
            return [trust(v) for v in value]
        if isinstance(value, dict):
            return {k: trust(v) for k, v in value.items()}
        return value

    loader = DataLoader()
    variables = trust(dict(loader.load_from_file(str(ROLE / "defaults" / "main.yml"))))
    variables.update(inventory_hostname="localhost", ansible_managed="test render")
    variables.update(overrides)
    templar = Templar(loader=loader, variables=variables)
    text = (ROLE / "templates" / "turnserver.conf.j2").read_text()
    return templar.template(trust_as_template(text))


class Coturn:
    def __init__(self, workdir: Path, name: str, extra_config=(), secrets=()):
        self.dir = workdir / name
        self.dir.mkdir()
        self.hosts = ["127.0.0.1", "::1"] if HAS_IPV6 else ["127.0.0.1"]
        self.port = free_port(self.hosts)
        self.tls_port = free_port(self.hosts)
        low = random.randrange(50000, 59000, 100)
        self.cert, self.key = make_cert(self.dir)
        self.userdb = self.dir / "turndb"
        make_userdb(self.userdb, secrets)
        self.log = self.dir / "turnserver.log"
        self.config_text = render_role_config(
            {
                "coturn_realm": REALM,
                "coturn_listening_ips": self.hosts,
                "coturn_relay_ips": self.hosts,
                "coturn_listening_port": self.port,
                "coturn_tls_listening_port": self.tls_port,
                "coturn_tls_enabled": True,
                "coturn_min_port": low,
                "coturn_max_port": low + 99,
                "coturn_tls_cert_path": str(self.cert),
                "coturn_tls_key_path": str(self.key),
                "coturn_userdb_path": str(self.userdb),
                "coturn_log_file": str(self.log),
                "coturn_verbose": True,
                "coturn_extra_config": [f"pidfile={self.dir / 'turnserver.pid'}", *extra_config],
            }
        )
        self.config = self.dir / "turnserver.conf"
        self.config.write_text(self.config_text)
        self.proc = subprocess.Popen(
            [TURNSERVER, "-c", str(self.config)],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            cwd=self.dir,
        )
        self._wait_ready()

    def logs(self):
        return "\n".join(p.read_text(errors="replace") for p in self.dir.glob("turnserver*.log"))

    def _wait_ready(self):
        deadline = time.monotonic() + 15
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"turnserver exited {self.proc.returncode}:\n{self.logs()}")
            try:
                with stun.TurnClient("127.0.0.1", self.port, "udp", timeout=0.5) as c:
                    c.binding()
                with socket.create_connection(("127.0.0.1", self.tls_port), timeout=0.5):
                    return
            except (OSError, stun.StunError):
                time.sleep(0.2)
        self.stop()
        raise RuntimeError(f"turnserver did not answer in time:\n{self.logs()}")

    def stop(self):
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(5)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(5)

    def client(self, transport="udp", host="127.0.0.1"):
        port = self.tls_port if transport == "tls" else self.port
        ctx = stun.make_tls_context(str(self.cert)) if transport == "tls" else None
        return stun.TurnClient(
            host, port, transport, timeout=3, ssl_context=ctx, server_hostname="localhost"
        )


@pytest.fixture(scope="module")
def coturn(tmp_path_factory):
    server = Coturn(
        tmp_path_factory.mktemp("coturn"), "main", secrets=[SECRET_CURRENT, SECRET_PREVIOUS]
    )
    yield server
    server.stop()


def creds(secret=SECRET_CURRENT, ttl=600, user="itest"):
    return stun.rest_credentials(secret, user, ttl)


def expect_refused(client, secret, ttl=600):
    with pytest.raises(stun.StunError) as excinfo:
        client.allocate(*creds(secret, ttl))
    return excinfo.value


# -- rendered configuration ---------------------------------------------------------


def test_rendered_config_has_the_hardening(coturn):
    text = coturn.config_text
    for line in (
        "use-auth-secret",
        f"realm={REALM}",
        "fingerprint",
        "no-cli",
        "no-tlsv1",
        "no-tlsv1_1",
        "no-multicast-peers",
        "denied-peer-ip=10.0.0.0-10.255.255.255",
        "denied-peer-ip=100.64.0.0-100.127.255.255",
        "denied-peer-ip=169.254.0.0-169.254.255.255",
        "denied-peer-ip=fc00::-fdff:ffff:ffff:ffff:ffff:ffff:ffff:ffff",
        "denied-peer-ip=fe80::-febf:ffff:ffff:ffff:ffff:ffff:ffff:ffff",
    ):
        assert line in text.splitlines(), line
    assert "static-auth-secret" not in text
    assert "allow-loopback-peers" not in [ln.strip() for ln in text.splitlines()]
    logs = coturn.logs()
    assert "Wrong address format" not in logs
    assert "CONFIG ERROR" not in logs


# -- allocation on every transport ---------------------------------------------------


@pytest.mark.parametrize("transport", ["udp", "tcp", "tls"])
def test_allocation_succeeds(coturn, transport):
    with coturn.client(transport) as client:
        binding = client.binding()
        assert binding["mapped_address"][0] == "127.0.0.1"
        result = client.allocate(*creds())
        assert result["realm"] == REALM
        relay_ip, relay_port = result["relayed_address"]
        assert relay_ip == "127.0.0.1"
        assert coturn.port != relay_port
        assert result["lifetime"] > 0
        assert result["mapped_address"][0] == "127.0.0.1"
        if transport == "tls":
            assert client.tls_version in ("TLSv1.2", "TLSv1.3")
        client.refresh(0)
        assert not client.allocated


def test_tls_rejects_unknown_certificate(coturn):
    import ssl

    ctx = stun.make_tls_context()  # system store: does not know the self-signed cert
    with pytest.raises(ssl.SSLError):
        stun.TurnClient(
            "127.0.0.1", coturn.tls_port, "tls", timeout=3, ssl_context=ctx,
            server_hostname="localhost",
        )  # fmt: skip


@pytest.mark.filterwarnings("ignore::DeprecationWarning")
def test_tls_1_1_is_refused(coturn):
    import ssl

    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    ctx.check_hostname = False
    ctx.verify_mode = ssl.CERT_NONE
    try:
        ctx.minimum_version = ssl.TLSVersion.TLSv1_1
        ctx.maximum_version = ssl.TLSVersion.TLSv1_1
        ctx.set_ciphers("DEFAULT:@SECLEVEL=0")
    except (ValueError, ssl.SSLError):
        pytest.skip("local OpenSSL cannot offer TLS 1.1")
    # coturn (no-tlsv1_1) never completes the handshake: alert, reset or timeout.
    with pytest.raises((ssl.SSLError, OSError)):
        stun.TurnClient("127.0.0.1", coturn.tls_port, "tls", timeout=3, ssl_context=ctx)


# -- authentication -------------------------------------------------------------


@pytest.mark.parametrize("transport", ["udp", "tcp"])
def test_wrong_secret_is_401(coturn, transport):
    with coturn.client(transport) as client:
        err = expect_refused(client, "not-the-secret")
        assert err.code == 401


def test_expired_username_is_refused(coturn):
    with coturn.client() as client:
        err = expect_refused(client, SECRET_CURRENT, ttl=-120)
        assert err.code == 401


def test_both_userdb_secrets_of_the_realm_are_accepted(coturn):
    for secret in (SECRET_CURRENT, SECRET_PREVIOUS):
        with coturn.client() as client:
            assert client.allocate(*creds(secret))["relayed_address"]


def test_userdb_secrets_are_reread_without_restart(coturn):
    """Rotation: add a secret, use it, remove it - turnserver keeps running."""
    new_secret = "rotated-in-secret-555"
    with coturn.client() as client:
        assert expect_refused(client, new_secret).code == 401
    make_userdb(coturn.userdb, [new_secret])
    with coturn.client() as client:
        assert client.allocate(*creds(new_secret))["relayed_address"]
    with sqlite3.connect(coturn.userdb) as db:
        db.execute("DELETE FROM turn_secret WHERE realm=? AND value=?", (REALM, new_secret))
    with coturn.client() as client:
        assert expect_refused(client, new_secret).code == 401
    assert coturn.proc.poll() is None


def test_secret_of_another_realm_is_refused(coturn):
    with sqlite3.connect(coturn.userdb) as db:
        db.execute(
            "INSERT OR IGNORE INTO turn_secret (realm, value) VALUES ('other.realm', 'x-secret')"
        )
    with coturn.client() as client:
        assert expect_refused(client, "x-secret").code == 401


def test_repeated_static_auth_secret_lines_are_all_accepted(tmp_path):
    server = Coturn(
        tmp_path,
        "static",
        extra_config=["static-auth-secret=static-one", "static-auth-secret=static-two"],
    )
    try:
        for secret in ("static-one", "static-two"):
            with server.client() as client:
                assert client.allocate(*creds(secret))["relayed_address"]
        with server.client() as client:
            assert expect_refused(client, "static-three").code == 401
    finally:
        server.stop()


# -- peer restrictions (CreatePermission only, never data) ------------------------

FORBIDDEN_V4 = [
    "127.0.0.1",
    "127.1.2.3",
    "10.0.0.1",
    "172.16.0.1",
    "192.168.1.1",
    "100.64.0.1",
    "169.254.169.254",
    "0.0.0.1",
    "224.0.0.1",
    "255.255.255.255",
]
FORBIDDEN_V6 = ["::1", "fc00::1", "fd12:3456::1", "fe80::1", "ff02::1", "::ffff:10.0.0.1"]


@pytest.mark.parametrize("peer", FORBIDDEN_V4)
def test_forbidden_ipv4_peer_is_403(coturn, peer):
    with coturn.client() as client:
        client.allocate(*creds())
        with pytest.raises(stun.StunError) as excinfo:
            client.create_permission(peer)
        assert excinfo.value.code == 403


@pytest.mark.skipif(not HAS_IPV6, reason="no IPv6 loopback in this environment")
@pytest.mark.parametrize("peer", FORBIDDEN_V6)
def test_forbidden_ipv6_peer_is_403(coturn, peer):
    with coturn.client(host="::1") as client:
        result = client.allocate(*creds(), family=stun.FAMILY_IPV6)
        assert result["relayed_address"][0] == "::1"
        with pytest.raises(stun.StunError) as excinfo:
            client.create_permission(peer)
        assert excinfo.value.code == 403


def test_public_peer_permission_is_granted(coturn):
    # A documentation address (TEST-NET-3) is not denied: the permission is
    # granted, proving the 403s above come from the deny list. No data is sent.
    with coturn.client() as client:
        client.allocate(*creds())
        assert client.create_permission("203.0.113.5") >= 0


def test_allowed_peer_ip_wins_over_deny(tmp_path):
    server = Coturn(
        tmp_path, "allow", extra_config=["allowed-peer-ip=10.9.9.9"], secrets=[SECRET_CURRENT]
    )
    try:
        with server.client() as client:
            client.allocate(*creds())
            assert client.create_permission("10.9.9.9") >= 0  # permission only, no data
            with pytest.raises(stun.StunError) as excinfo:
                client.create_permission("10.9.9.10")
            assert excinfo.value.code == 403
    finally:
        server.stop()


# -- the Ansible module against the real server ----------------------------------


class _Done(Exception):
    def __init__(self, result):
        super().__init__(result)
        self.result = result


def run_turn_check(monkeypatch, args):
    def _exit(self, **kwargs):
        raise _Done(kwargs)

    def _fail(self, **kwargs):
        kwargs["failed"] = True
        raise _Done(kwargs)

    monkeypatch.setattr(basic.AnsibleModule, "exit_json", _exit)
    monkeypatch.setattr(basic.AnsibleModule, "fail_json", _fail)
    monkeypatch.setattr(basic, "_ANSIBLE_PROFILE", "legacy", raising=False)
    basic._ANSIBLE_ARGS = json.dumps({"ANSIBLE_MODULE_ARGS": args}).encode()
    with pytest.raises(_Done) as excinfo:
        turn_check.main()
    return excinfo.value.result


def test_turn_check_module_reports_healthy(coturn, monkeypatch):
    result = run_turn_check(
        monkeypatch,
        {
            "host": "127.0.0.1",
            "port": coturn.port,
            "tls_port": coturn.tls_port,
            "secret": SECRET_PREVIOUS,
            "realm": REALM,
            "ca_path": str(coturn.cert),
            "server_name": "localhost",
            "timeout": 3,
            "forbidden_peers": ["127.0.0.1", "10.0.0.1", "172.16.0.1", "169.254.169.254"],
        },
    )
    assert not result.get("failed"), result
    assert result["healthy"], result["problems"]
    assert result["changed"] is False
    assert {t: r["ok"] for t, r in result["transports"].items()} == {
        "udp": True,
        "tcp": True,
        "tls": True,
    }
    assert all(s["refused"] and s["code"] == 403 for s in result["security"])


def test_turn_check_module_wrong_secret_fails(coturn, monkeypatch):
    result = run_turn_check(
        monkeypatch,
        {
            "host": "127.0.0.1",
            "port": coturn.port,
            "secret": "wrong",
            "transports": ["udp", "tcp"],
        },
    )
    assert result["failed"]
    assert not result["healthy"]
    assert "401" in result["transports"]["udp"]["error"]


# -- independent implementation: aioice's TURN client -------------------------------


@pytest.mark.parametrize("transport", ["udp", "tcp"])
def test_aioice_allocates_against_same_server(coturn, transport):
    aioice_turn = pytest.importorskip("aioice.turn")
    username, password = creds(SECRET_PREVIOUS)

    async def allocate():
        relay, _ = await aioice_turn.create_turn_endpoint(
            asyncio.DatagramProtocol,
            server_addr=("127.0.0.1", coturn.port),
            username=username,
            password=password,
            lifetime=60,
            transport=transport,
        )
        try:
            return relay.get_extra_info("sockname"), relay.get_extra_info("related_address")
        finally:
            relay.close()
            await asyncio.sleep(0.3)  # let aioice delete the allocation

    relayed, mapped = asyncio.run(asyncio.wait_for(allocate(), 10))
    assert relayed[0] == "127.0.0.1"
    assert mapped[0] == "127.0.0.1"


def test_aioice_is_refused_with_wrong_secret(coturn):
    aioice_turn = pytest.importorskip("aioice.turn")
    username, password = creds("wrong-secret")

    async def allocate():
        return await aioice_turn.create_turn_endpoint(
            asyncio.DatagramProtocol,
            server_addr=("127.0.0.1", coturn.port),
            username=username,
            password=password,
            lifetime=60,
        )

    with pytest.raises(Exception, match="401"):
        asyncio.run(asyncio.wait_for(allocate(), 10))

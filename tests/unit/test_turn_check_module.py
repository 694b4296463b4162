"""Unit tests for library/turn_check.py (no coturn needed).

Most tests replace the TURN client with a fake; one family of tests runs the
real codec against a tiny fake TURN server on 127.0.0.1 (UDP).
"""

import base64
import hashlib
import hmac
import json
import socket
import threading
from typing import ClassVar

import pytest
import turn_check
from ansible.module_utils import basic, stun


class AnsibleExit(Exception):
    def __init__(self, kwargs):
        super().__init__(kwargs)
        self.result = kwargs


class AnsibleFail(Exception):
    def __init__(self, kwargs):
        super().__init__(kwargs)
        self.result = kwargs


def _exit_json(self, **kwargs):
    raise AnsibleExit(kwargs)


def _fail_json(self, **kwargs):
    kwargs["failed"] = True
    raise AnsibleFail(kwargs)


@pytest.fixture(autouse=True)
def _patch_module(monkeypatch):
    monkeypatch.setattr(basic.AnsibleModule, "exit_json", _exit_json)
    monkeypatch.setattr(basic.AnsibleModule, "fail_json", _fail_json)
    monkeypatch.setattr(basic, "_ANSIBLE_PROFILE", "legacy", raising=False)


def run_module(args, check_mode=False):
    args = dict(args)
    if check_mode:
        args["_ansible_check_mode"] = True
    basic._ANSIBLE_ARGS = json.dumps({"ANSIBLE_MODULE_ARGS": args}).encode()
    with pytest.raises((AnsibleExit, AnsibleFail)) as excinfo:
        turn_check.main()
    return excinfo.value


BASE_ARGS = {"host": "127.0.0.1", "secret": "s3cret"}


# -- fake client -------------------------------------------------------------


class FakeClient:
    """Stands in for stun.TurnClient; behaviour set per transport."""

    behaviour: ClassVar[dict] = {}
    instances: ClassVar[list] = []

    def __init__(self, host, port, transport, **kwargs):
        self.transport = transport
        self.port = port
        self.kwargs = kwargs
        self.spec = self.behaviour.get(transport, {})
        if self.spec.get("connect_error"):
            raise self.spec["connect_error"]
        self.tls_version = "TLSv1.3" if transport == "tls" else None
        self.relayed_address = ("127.0.0.1", 50000)
        self.unauthenticated_allocation = self.spec.get("open_relay", False)
        self.permissions = []
        self.refreshed = []
        self.closed = False
        FakeClient.instances.append(self)

    def binding(self):
        return {"mapped_address": ("127.0.0.1", 40000), "rtt": 0.001}

    def allocate(self, username, password):
        self.username, self.password = username, password
        if self.spec.get("allocate_error"):
            raise self.spec["allocate_error"]
        return {
            "relayed_address": self.relayed_address,
            "mapped_address": ("127.0.0.1", 40000),
            "lifetime": 300,
            "rtt": 0.0025,
            "realm": self.spec.get("realm", "turn.test"),
        }

    def create_permission(self, peer):
        self.permissions.append(peer)
        granted = self.spec.get("granted", ())
        if peer in granted:
            return 0.001
        code = self.spec.get("code", 403)
        raise stun.StunError("refused", code, "Forbidden IP" if code == 403 else "Other")

    def refresh(self, lifetime=0):
        self.refreshed.append(lifetime)
        return 0.001

    def close(self):
        self.closed = True


@pytest.fixture
def fake(monkeypatch):
    FakeClient.behaviour = {}
    FakeClient.instances = []
    monkeypatch.setattr(turn_check, "TurnClient", FakeClient)
    return FakeClient


def test_healthy_server(fake):
    res = run_module({**BASE_ARGS, "realm": "turn.test"})
    assert isinstance(res, AnsibleExit)
    out = res.result
    assert out["changed"] is False
    assert out["healthy"] is True
    assert out["problems"] == []
    assert set(out["transports"]) == {"udp", "tcp", "tls"}
    udp = out["transports"]["udp"]
    assert udp["ok"] is True
    assert udp["port"] == 3478
    assert udp["relayed_address"] == "127.0.0.1:50000"
    assert udp["mapped_address"] == "127.0.0.1:40000"
    assert udp["rtt_ms"] == 2.5
    assert out["transports"]["tls"]["port"] == 5349
    assert out["transports"]["tls"]["tls_version"] == "TLSv1.3"
    assert [s["peer"] for s in out["security"]] == ["127.0.0.1", "10.0.0.1", "169.254.169.254"]
    assert all(s["refused"] and s["code"] == 403 for s in out["security"])
    # The probe runs once, on the first working allocation, then every allocation is freed.
    assert fake.instances[0].permissions == ["127.0.0.1", "10.0.0.1", "169.254.169.254"]
    assert all(not c.permissions for c in fake.instances[1:])
    assert all(c.refreshed == [0] and c.closed for c in fake.instances)


def test_secret_is_not_returned_and_credentials_are_rest_style(fake):
    res = run_module({**BASE_ARGS, "username": "probe", "ttl": 60})
    assert "s3cret" not in json.dumps(res.result)
    client = fake.instances[0]
    expiry, user = client.username.split(":")
    assert user == "probe"
    expected = base64.b64encode(
        hmac.new(b"s3cret", client.username.encode(), hashlib.sha1).digest()
    ).decode()
    assert client.password == expected
    assert int(expiry) > 0


def test_granted_forbidden_peer_is_unhealthy_and_fails(fake):
    fake.behaviour = {"udp": {"granted": ("10.0.0.1",)}}
    res = run_module(BASE_ARGS)
    assert isinstance(res, AnsibleFail)
    out = res.result
    assert out["healthy"] is False
    assert any("10.0.0.1" in p and "granted" in p for p in out["problems"])
    entry = next(s for s in out["security"] if s["peer"] == "10.0.0.1")
    assert entry["refused"] is False
    assert entry["code"] is None
    assert "TURN server unhealthy" in out["msg"]


def test_fail_on_unhealthy_false_only_reports(fake):
    fake.behaviour = {"udp": {"granted": ("127.0.0.1",)}}
    res = run_module({**BASE_ARGS, "fail_on_unhealthy": False})
    assert isinstance(res, AnsibleExit)
    assert res.result["healthy"] is False
    assert res.result["changed"] is False


def test_other_error_code_than_403_is_a_problem(fake):
    fake.behaviour = {"udp": {"code": 500}}
    res = run_module({**BASE_ARGS, "fail_on_unhealthy": False})
    assert not res.result["healthy"]
    assert all(not s["refused"] for s in res.result["security"])
    assert any("instead of 403" in p for p in res.result["problems"])


def test_unauthorized_allocation_reports_plain_words(fake):
    err = stun.StunError("Allocate refused: 401 Unauthorized", 401, "Unauthorized")
    fake.behaviour = {t: {"allocate_error": err} for t in ("udp", "tcp", "tls")}
    res = run_module({**BASE_ARGS, "fail_on_unhealthy": False})
    out = res.result
    assert not out["healthy"]
    assert out["transports"]["udp"]["ok"] is False
    assert "wrong secret" in out["transports"]["udp"]["error"]
    assert "security probe not run: no transport could allocate a relay" in out["problems"]
    assert all(s["skipped"] for s in out["security"])


def test_probe_uses_next_transport_when_first_fails(fake):
    fake.behaviour = {"udp": {"connect_error": ConnectionRefusedError("refused")}}
    res = run_module({**BASE_ARGS, "fail_on_unhealthy": False})
    out = res.result
    assert "cannot connect" in out["transports"]["udp"]["error"]
    assert {s["transport"] for s in out["security"]} == {"tcp"}
    assert out["problems"] == [out["problems"][0]]
    assert out["problems"][0].startswith("udp: cannot connect")


def test_tls_handshake_failure_is_reported(fake):
    import ssl

    fake.behaviour = {"tls": {"connect_error": ssl.SSLError(1, "certificate verify failed")}}
    res = run_module({**BASE_ARGS, "fail_on_unhealthy": False})
    assert res.result["transports"]["tls"]["error"].startswith("TLS handshake failed")
    assert res.result["transports"]["udp"]["ok"]


def test_open_relay_and_realm_mismatch(fake):
    fake.behaviour = {"udp": {"open_relay": True, "realm": "other"}}
    res = run_module(
        {**BASE_ARGS, "realm": "turn.test", "transports": ["udp"], "fail_on_unhealthy": False}
    )
    problems = res.result["problems"]
    assert any("without credentials" in p for p in problems)
    assert any("realm 'other'" in p for p in problems)


def test_check_mode_runs_read_only(fake):
    res = run_module(BASE_ARGS, check_mode=True)
    assert isinstance(res, AnsibleExit)
    assert res.result["changed"] is False
    assert res.result["healthy"] is True


def test_ipv6_peer_skipped_on_ipv4_relay(fake):
    res = run_module({**BASE_ARGS, "forbidden_peers": ["::1", "10.0.0.1"], "transports": ["udp"]})
    sec = res.result["security"]
    assert sec[0] == {
        "peer": "::1",
        "transport": "udp",
        "refused": False,
        "code": None,
        "skipped": True,
        "reason": "peer family differs from the relay family",
    }
    assert sec[1]["refused"]
    assert fake.instances[0].permissions == ["10.0.0.1"]


def test_ports_and_options_passed_to_client(fake):
    run_module(
        {
            **BASE_ARGS,
            "port": 3479,
            "tls_port": 443,
            "server_name": "turn.example.org",
            "timeout": 2,
            "validate_certs": False,
        }
    )
    by_transport = {c.transport: c for c in fake.instances}
    assert by_transport["udp"].port == 3479
    assert by_transport["tls"].port == 443
    assert by_transport["tls"].kwargs["server_hostname"] == "turn.example.org"
    assert by_transport["tls"].kwargs["timeout"] == 2
    assert by_transport["tls"].kwargs["ssl_context"].check_hostname is False


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        ({"port": 0}, "port must be between"),
        ({"tls_port": 70000}, "tls_port must be between"),
        ({"ttl": 0}, "ttl must be"),
        ({"timeout": 0}, "timeout must be"),
        ({"transports": []}, "at least one"),
        ({"username": "a:b"}, "must not contain"),
        ({"forbidden_peers": ["not-an-ip"]}, "not an IP address"),
        ({"ca_path": "/nonexistent/ca.pem"}, "cannot be loaded"),
        ({"transports": ["sctp"]}, "transports"),
    ],
)
def test_invalid_arguments(fake, extra, message):
    res = run_module({**BASE_ARGS, **extra})
    assert isinstance(res, AnsibleFail)
    assert message in res.result["msg"]
    assert not fake.instances


def test_missing_secret_fails():
    res = run_module({"host": "127.0.0.1"})
    assert isinstance(res, AnsibleFail)
    assert "secret" in res.result["msg"]


# -- real codec against a tiny fake TURN server on 127.0.0.1 ------------------


class FakeTurnServer(threading.Thread):
    """Answers Binding, Allocate (401 then checks integrity), CreatePermission, Refresh.

    ``allowed`` lists peers it grants; everything else gets 403.
    """

    REALM = "fake.test"
    NONCE = "0123456789abcdef"

    def __init__(self, secret, allowed=()):
        super().__init__(daemon=True)
        self.secret = secret
        self.allowed = set(allowed)
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.sock.bind(("127.0.0.1", 0))
        self.sock.settimeout(0.2)
        self.port = self.sock.getsockname()[1]
        self.running = True
        self.seen = []

    def key_for(self, username):
        password = base64.b64encode(
            hmac.new(self.secret.encode(), username.encode(), hashlib.sha1).digest()
        ).decode()
        return stun.long_term_key(username, self.REALM, password)

    def answer(self, req, addr):
        tid = req.transaction_id
        if req.method == stun.METHOD_BINDING:
            resp = stun.Message(stun.METHOD_BINDING, stun.CLASS_SUCCESS, tid)
            resp.add_address(stun.ATTR_XOR_MAPPED_ADDRESS, *addr)
            return resp.encode(fingerprint=True)
        username = req.get_text(stun.ATTR_USERNAME)
        if username is None:
            resp = stun.Message(req.method, stun.CLASS_ERROR, tid)
            resp.add(stun.ATTR_ERROR_CODE, stun.encode_error_code(401, "Unauthorized"))
            resp.add_text(stun.ATTR_REALM, self.REALM)
            resp.add_text(stun.ATTR_NONCE, self.NONCE)
            return resp.encode(fingerprint=True)
        key = self.key_for(username)
        if not req.check_integrity(key) or not req.check_fingerprint():
            resp = stun.Message(req.method, stun.CLASS_ERROR, tid)
            resp.add(stun.ATTR_ERROR_CODE, stun.encode_error_code(401, "Unauthorized"))
            resp.add_text(stun.ATTR_REALM, self.REALM)
            resp.add_text(stun.ATTR_NONCE, self.NONCE)
            return resp.encode(fingerprint=True)
        if req.method == stun.METHOD_CREATE_PERMISSION:
            peer, _ = req.get_address(stun.ATTR_XOR_PEER_ADDRESS)
            self.seen.append(peer)
            if peer not in self.allowed:
                resp = stun.Message(req.method, stun.CLASS_ERROR, tid)
                resp.add(stun.ATTR_ERROR_CODE, stun.encode_error_code(403, "Forbidden IP"))
                return resp.encode(key, fingerprint=True)
        resp = stun.Message(req.method, stun.CLASS_SUCCESS, tid)
        if req.method == stun.METHOD_ALLOCATE:
            resp.add_address(stun.ATTR_XOR_RELAYED_ADDRESS, "127.0.0.1", 49999)
            resp.add_address(stun.ATTR_XOR_MAPPED_ADDRESS, *addr)
            resp.add(stun.ATTR_LIFETIME, stun.encode_lifetime(300))
        return resp.encode(key, fingerprint=True)

    def run(self):
        while self.running:
            try:
                data, addr = self.sock.recvfrom(2048)
            except TimeoutError:
                continue
            except OSError:
                return
            req = stun.Message.decode(data)
            self.sock.sendto(self.answer(req, addr), addr)

    def stop(self):
        self.running = False
        self.join(2)
        self.sock.close()


@pytest.fixture
def fake_server():
    servers = []

    def make(**kwargs):
        server = FakeTurnServer("s3cret", **kwargs)
        server.start()
        servers.append(server)
        return server

    yield make
    for server in servers:
        server.stop()


def test_real_codec_against_fake_server(fake_server):
    server = fake_server()
    res = run_module(
        {**BASE_ARGS, "port": server.port, "transports": ["udp"], "realm": "fake.test"}
    )
    assert isinstance(res, AnsibleExit), res.result
    out = res.result
    assert out["healthy"], out["problems"]
    assert out["transports"]["udp"]["relayed_address"] == "127.0.0.1:49999"
    assert out["transports"]["udp"]["realm"] == "fake.test"
    assert server.seen == ["127.0.0.1", "10.0.0.1", "169.254.169.254"]


def test_real_codec_wrong_secret_gives_401(fake_server):
    server = fake_server()
    res = run_module(
        {
            **BASE_ARGS,
            "secret": "wrong",
            "port": server.port,
            "transports": ["udp"],
            "fail_on_unhealthy": False,
        }
    )
    udp = res.result["transports"]["udp"]
    assert udp["ok"] is False
    assert "401" in udp["error"]


def test_real_codec_detects_permissive_server(fake_server):
    server = fake_server(allowed={"10.0.0.1"})
    res = run_module({**BASE_ARGS, "port": server.port, "transports": ["udp"]})
    assert isinstance(res, AnsibleFail)
    assert any("10.0.0.1" in p for p in res.result["problems"])

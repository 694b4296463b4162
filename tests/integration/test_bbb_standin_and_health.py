"""Integration: stand-in bbb-web (subprocess on 127.0.0.1) + bbb_api client + bbb-health CLI."""

import json
import os
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest
from ansible.module_utils import bbb_api

pytestmark = pytest.mark.integration

REPO = Path(__file__).resolve().parents[2]
STANDIN = REPO / "tests" / "bbb_api_standin" / "bbb_api_standin.py"
CLI = REPO / "scripts" / "bbb-health"
SECRET = "integration-secret-5f1c2a"


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Standin:
    def __init__(self, tmp_path, salt=SECRET, algorithms=None, extra=()):
        self.props = tmp_path / f"bbb-web-{free_port()}.properties"
        self.write(salt, algorithms)
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}/bigbluebutton/api"
        self.proc = subprocess.Popen(
            [
                sys.executable,
                str(STANDIN),
                "--properties",
                str(self.props),
                "--bind",
                "127.0.0.1",
                "--port",
                str(self.port),
                *extra,
            ],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            try:
                with socket.create_connection(("127.0.0.1", self.port), timeout=0.2):
                    return
            except OSError:
                if self.proc.poll() is not None:
                    raise RuntimeError(self.proc.stderr.read()) from None
                time.sleep(0.05)
        raise RuntimeError("stand-in did not start")

    def write(self, salt, algorithms=None):
        text = "# bbb-web overrides\nsecuritySalt=" + salt + "\n"
        if algorithms is not None:
            text += f"supportedChecksumAlgorithms={algorithms}\n"
        self.props.write_text(text)

    def stop(self):
        self.proc.terminate()
        try:
            self.proc.wait(5)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait(5)
        self.proc.stdout.close()
        self.proc.stderr.close()


@pytest.fixture
def make_standin(tmp_path):
    started = []

    def make(**kwargs):
        s = Standin(tmp_path, **kwargs)
        started.append(s)
        return s

    yield make
    for s in started:
        s.stop()


def cli(*args, secret=SECRET, env_extra=None):
    env = {k: v for k, v in os.environ.items() if k != "BBB_SECRET"}
    if secret is not None:
        env["BBB_SECRET"] = secret
    env.update(env_extra or {})
    return subprocess.run(
        [sys.executable, str(CLI), *args],
        check=False,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )


def client(url, secret=SECRET, **kw):
    return bbb_api.BBBClient(url, secret, timeout=kw.pop("timeout", 5), **kw)


# --------------------------------------------------------------------------- #


def test_healthy_server_full_checks(make_standin):
    s = make_standin()
    res = bbb_api.health_check(client(s.url), min_version="3.0")
    assert res["healthy"], res["problems"]
    assert res["probe"] == {**res["probe"], "created": True, "joined": True, "ended": True}
    assert res["bbbVersion"].startswith("3.0")


def test_bbb_xml_shapes_and_message_keys(make_standin):
    c = client(make_standin().url)
    assert c.get_meetings().message_key == "noMeetings"
    assert c.get_recordings().message_key == "noRecordings"
    with pytest.raises(bbb_api.BBBApiError) as err:
        c.get_meeting_info("does-not-exist")
    assert err.value.message_key == "notFound"
    c.create("m1", "Room", attendeePW="ap", moderatorPW="mp")
    assert c.create("m1", "Room", attendeePW="ap", moderatorPW="mp").message_key == (
        "duplicateWarning"
    )
    joined = c.join("m1", "Alice", password="ap", redirect=False)
    assert joined.message_key == "successfullyJoined"
    assert "sessionToken=" in joined.data["url"]
    redirected = c.join("m1", "Bob", password="ap", redirect=True)
    assert redirected.status == 302
    assert "sessionToken=" in redirected.headers["Location"]
    assert c.is_meeting_running("m1").data["running"] == "true"
    info = c.get_meeting_info("m1").data
    assert info["participantCount"] == "2"
    res = bbb_api.health_check(c, checks=["meetings"])
    assert (res["meetings"], res["participant_count"]) == (1, 2)
    assert c.end("m1", password="mp").message_key == "sentEndMeetingRequest"
    assert c.is_meeting_running("m1").data["running"] == "false"


def test_missing_checksum_is_checksum_error(make_standin):
    s = make_standin()
    with urllib.request.urlopen(s.url + "/getMeetings", timeout=5) as resp:  # noqa: S310
        data = bbb_api.parse_xml(resp.read())
    assert (data["returncode"], data["messageKey"]) == ("FAILED", "checksumError")


def test_wrong_secret(make_standin):
    s = make_standin()
    res = bbb_api.health_check(client(s.url, "not-the-secret"), checks=["index", "meetings"])
    assert res["status"] == "critical"
    assert any("checksum rejected" in p for p in res["problems"])


def test_algorithm_not_allowed_by_server(make_standin):
    s = make_standin(algorithms="sha256")
    res = bbb_api.health_check(client(s.url, algorithm="sha1"), checks=["meetings"])
    assert any("checksumError" in p for p in res["problems"])
    ok = bbb_api.health_check(client(s.url, algorithm="sha256"), checks=["meetings"])
    assert ok["healthy"]


@pytest.mark.parametrize("algorithm", bbb_api.ALGORITHMS)
def test_every_algorithm_accepted_by_default(make_standin, algorithm):
    s = make_standin()
    assert bbb_api.health_check(client(s.url, algorithm=algorithm), checks=["meetings"])["healthy"]


def test_server_down():
    url = f"http://127.0.0.1:{free_port()}/bigbluebutton/api"
    res = bbb_api.health_check(client(url), checks=["index", "meetings"])
    assert res["errors"] == {"index": "unreachable", "meetings": "unreachable"}
    r = cli("--url", url)
    assert r.returncode == 2
    assert "connection refused" in r.stdout


def test_slow_server_over_latency_threshold(make_standin):
    s = make_standin(extra=("--delay-ms", "250"))
    res = bbb_api.health_check(client(s.url), checks=["index"], latency_threshold_ms=100)
    assert res["status"] == "warning"
    assert any("took" in p and "threshold 100 ms" in p for p in res["problems"])
    r = cli("--url", s.url, "--checks", "index", "--latency-warn-ms", "100")
    assert r.returncode == 1, r.stdout
    t = cli("--url", s.url, "--checks", "index", "--timeout", "0.1")
    assert t.returncode == 2
    assert "within the timeout" in t.stdout


def test_malformed_xml(make_standin):
    s = make_standin(extra=("--malformed",))
    res = bbb_api.health_check(client(s.url), checks=["index", "meetings"])
    assert res["errors"]["index"] == "protocol"
    assert any("malformed XML" in p for p in res["problems"])
    assert cli("--url", s.url).returncode == 2


def test_rotated_secret_takes_effect_on_next_request(make_standin):
    s = make_standin()
    assert client(s.url).get_meetings().data["returncode"] == "SUCCESS"
    s.write("rotated-secret-77")
    with pytest.raises(bbb_api.BBBApiError) as err:
        client(s.url).get_meetings()
    assert err.value.message_key == "checksumError"
    assert client(s.url, "rotated-secret-77").get_meetings().data["returncode"] == "SUCCESS"


# --------------------------------------------------------------------------- #
# CLI
# --------------------------------------------------------------------------- #


def test_cli_formats_and_exit_codes(make_standin, tmp_path):
    s = make_standin()
    table = cli("--url", s.url, "--name", "lab1", "--min-version", "3.0")
    assert table.returncode == 0, table.stdout + table.stderr
    assert table.stdout.splitlines()[0].split()[:2] == ["SERVER", "STATUS"]
    assert "lab1" in table.stdout
    assert SECRET not in table.stdout + table.stderr

    js = cli("--url", s.url, "--format", "json", "--checks", "index,meetings,recordings,probe")
    data = json.loads(js.stdout)
    assert data["exit_code"] == 0
    assert data["servers"][0]["probe"]["ended"] is True
    assert SECRET not in js.stdout

    prom = cli("--url", s.url, "--name", "lab1", "--format", "prometheus")
    assert "# TYPE smeeton_bbb_up gauge" in prom.stdout
    assert 'smeeton_bbb_up{server="lab1"} 1' in prom.stdout
    assert 'smeeton_bbb_api_latency_seconds{server="lab1",call="getMeetings"}' in prom.stdout
    for line in prom.stdout.splitlines():
        assert line.startswith(("# HELP smeeton_bbb_", "# TYPE smeeton_bbb_", "smeeton_bbb_"))

    warn = cli("--url", s.url, "--min-version", "9.0")
    assert warn.returncode == 1

    bad = cli("--url", s.url, secret="wrong", env_extra=None)
    assert bad.returncode == 2
    assert "checksum rejected" in bad.stdout


def test_cli_secret_file_and_unknown_exit(make_standin, tmp_path):
    s = make_standin()
    secret_file = tmp_path / "bbb.secret"
    secret_file.write_text(SECRET + "\n")
    assert cli("--url", s.url, "--secret-file", str(secret_file), secret=None).returncode == 0
    missing = cli("--url", s.url, secret=None)
    assert missing.returncode == 3
    assert "BBB_SECRET" in missing.stderr
    assert cli(secret=None).returncode == 3
    assert cli("--url", s.url, "--checks", "bogus").returncode == 3
    assert cli("--config", str(tmp_path / "missing.json")).returncode == 3


def test_cli_config_many_servers_concurrent_and_sequential(make_standin, tmp_path):
    good = [make_standin() for _ in range(3)]
    wrong = make_standin(salt="other-secret")
    servers = [{"name": f"ok{i}", "url": g.url, "secret_env": "GOOD"} for i, g in enumerate(good)]
    servers.append({"name": "wrong", "url": wrong.url, "secret": SECRET})
    cfg = tmp_path / "servers.json"
    cfg.write_text(json.dumps({"defaults": {"algorithm": "sha384"}, "servers": servers}))
    env = {"GOOD": SECRET}
    for mode in (["--workers", "4"], ["--sequential"]):
        r = cli("--config", str(cfg), "--format", "json", *mode, secret=None, env_extra=env)
        data = json.loads(r.stdout)
        status = {x["name"]: x["status"] for x in data["servers"]}
        assert status == {"ok0": "ok", "ok1": "ok", "ok2": "ok", "wrong": "critical"}
        assert r.returncode == 2
        assert all(x["checksum_algorithm"] == "sha384" for x in data["servers"])

    ini = tmp_path / "servers.ini"
    ini.write_text(
        "[DEFAULT]\nalgorithm = sha512\n\n"
        + "".join(f"[ok{i}]\nurl = {g.url}\nsecret_env = GOOD\n\n" for i, g in enumerate(good))
    )
    r = cli("--config", str(ini), secret=None, env_extra=env)
    assert r.returncode == 0, r.stdout + r.stderr


def test_cli_help_documents_exit_codes():
    r = cli("--help")
    assert r.returncode == 0
    for text in ("0 OK", "1 WARNING", "2 CRITICAL", "3 UNKNOWN", "--workers", "prometheus"):
        assert text in r.stdout


# --------------------------------------------------------------------------- #
# Cross-check with an independent published client (PyPI bigbluebutton-api-python)
# --------------------------------------------------------------------------- #


def test_third_party_client_urls_are_accepted_and_match_ours(make_standin):
    third = pytest.importorskip("bigbluebutton_api_python")
    s = make_standin()
    bbb = third.BigBlueButton(s.url + "/", SECRET)
    created = bbb.create_meeting(
        "x-check 1", params={"name": "Zürich & Co", "attendeePW": "ap", "moderatorPW": "mp"}
    )
    assert created.get_field("returncode") == "SUCCESS"
    assert bbb.is_meeting_running("x-check 1").get_field("returncode") == "SUCCESS"
    assert bbb.get_meetings().get_field("returncode") == "SUCCESS"
    # Their join URL (sha1) must pass our stand-in's checksum verification.
    join_url = bbb.get_join_meeting_url(
        "Ünïcode Üser", "x-check 1", "ap", params={"redirect": "false"}
    )
    with urllib.request.urlopen(join_url, timeout=5) as resp:  # noqa: S310
        assert bbb_api.parse_xml(resp.read())["returncode"] == "SUCCESS"
    # Same ordered parameters -> byte-identical URL from both libraries.
    ours = bbb_api.build_url(
        s.url,
        "join",
        [
            ("fullName", "Ünïcode Üser"),
            ("meetingID", "x-check 1"),
            ("password", "ap"),
            ("redirect", "false"),
        ],
        SECRET,
        "sha1",
    )
    theirs = bbb.get_join_meeting_url("Ünïcode Üser", "x-check 1", "ap", params={})
    ours_no_redirect = bbb_api.build_url(
        s.url,
        "join",
        [("fullName", "Ünïcode Üser"), ("meetingID", "x-check 1"), ("password", "ap")],
        SECRET,
        "sha1",
    )
    assert theirs == ours_no_redirect
    with urllib.request.urlopen(ours, timeout=5) as resp:  # noqa: S310
        assert bbb_api.parse_xml(resp.read())["returncode"] == "SUCCESS"


# --------------------------------------------------------------------------- #
# CLI --inventory: targets and secrets from an Ansible inventory with a vault
# --------------------------------------------------------------------------- #


def _inventory(tmp_path, port, vault_secret):
    from ansible.constants import DEFAULT_VAULT_ID_MATCH
    from ansible.parsing.vault import VaultLib, VaultSecret

    inv = tmp_path / "inventory"
    (inv / "group_vars" / "all").mkdir(parents=True)
    name = "bbb9.test.smeeton.invalid"  # never resolves: connect_to must be used
    (inv / "hosts.yml").write_text(
        "all:\n  children:\n    bbb:\n      hosts:\n"
        f"        {name}:\n"
        f"          fleet_health_bbb_api_url: http://{name}:{port}/bigbluebutton/api\n"
        f"          fleet_health_connect_to: 127.0.0.1:{port}\n"
    )
    (inv / "group_vars" / "all" / "vars.yml").write_text(
        'bigbluebutton_secret: "{{ vault_bigbluebutton_secret }}"\n'
    )
    password = tmp_path / "vault-pass"
    password.write_text("inventory-test-password\n")
    vault = VaultLib([(DEFAULT_VAULT_ID_MATCH, VaultSecret(b"inventory-test-password"))])
    plain = f"vault_bigbluebutton_secret: {vault_secret}\n".encode()
    (inv / "group_vars" / "all" / "vault.yml").write_bytes(vault.encrypt(plain))
    return inv, password


def test_cli_inventory_with_vault(make_standin, tmp_path):
    standin = make_standin()
    inv, password = _inventory(tmp_path, standin.port, SECRET)
    ok = cli("--inventory", str(inv), "--vault-password-file", str(password), "--format", "json")
    assert ok.returncode == 0, ok.stdout + ok.stderr
    report = json.loads(ok.stdout)
    assert [r["name"] for r in report["servers"]] == ["bbb9.test.smeeton.invalid"]
    assert SECRET not in ok.stdout + ok.stderr

    locked = cli("--inventory", str(inv), "--format", "json")
    assert locked.returncode == 3
    assert "vault" in locked.stderr


def test_cli_inventory_secret_mismatch_is_critical(make_standin, tmp_path):
    standin = make_standin()
    inv, password = _inventory(tmp_path, standin.port, "not-the-server-secret")
    res = cli("--inventory", str(inv), "--vault-password-file", str(password))
    assert res.returncode == 2, res.stdout + res.stderr
    assert "checksum" in res.stdout

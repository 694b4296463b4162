"""Unit tests for library/bbb_api_health.py against the stand-in on 127.0.0.1."""

import json
import sys
import threading
from pathlib import Path

import bbb_api_health
import pytest
from ansible.module_utils import basic
from ansible.module_utils.common.text.converters import to_bytes

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "bbb_api_standin"))
import bbb_api_standin

SECRET = "unit-test-secret-0123456789"


class ExitJson(Exception):
    pass


class FailJson(Exception):
    pass


def _exit_json(self, **kwargs):
    raise ExitJson(kwargs)


def _fail_json(self, **kwargs):
    raise FailJson(kwargs)


@pytest.fixture(autouse=True)
def patch_module(monkeypatch):
    monkeypatch.setattr(basic.AnsibleModule, "exit_json", _exit_json)
    monkeypatch.setattr(basic.AnsibleModule, "fail_json", _fail_json)


@pytest.fixture
def standin(tmp_path):
    props = tmp_path / "bbb-web.properties"
    props.write_text(f"securitySalt={SECRET}\nsupportedChecksumAlgorithms=sha1,sha256\n")
    srv = bbb_api_standin.make_server(str(props), "127.0.0.1", 0, bbb_version="3.0.7")
    t = threading.Thread(target=srv.serve_forever, daemon=True)
    t.start()
    yield srv
    srv.shutdown()
    srv.server_close()


def run_module(monkeypatch, args, check_mode=False):
    if check_mode:
        args = {**args, "_ansible_check_mode": True}
    monkeypatch.setattr(basic, "_ANSIBLE_ARGS", to_bytes(json.dumps({"ANSIBLE_MODULE_ARGS": args})))
    monkeypatch.setattr(basic, "_ANSIBLE_PROFILE", "legacy", raising=False)
    with pytest.raises((ExitJson, FailJson)) as exc:
        bbb_api_health.main()
    return exc.type, exc.value.args[0]


def base_args(srv, **extra):
    return {
        "base_url": f"http://127.0.0.1:{srv.server_port}/bigbluebutton/api",
        "secret": SECRET,
        **extra,
    }


def test_healthy_server_with_probe(monkeypatch, standin):
    kind, res = run_module(monkeypatch, base_args(standin, min_version="3.0.0"))
    assert kind is ExitJson
    assert res["healthy"] is True
    assert res["changed"] is False
    assert res["bbbVersion"] == "3.0.7"
    assert res["apiVersion"] == "2.0"
    assert res["meetings"] == 0
    assert res["probe"]["created"] and res["probe"]["joined"] and res["probe"]["ended"]
    assert res["probe_skipped"] is False
    assert set(res["latency_ms"]) >= {"index", "getMeetings", "create", "join", "end"}
    # probe meeting was ended: nothing left behind
    assert standin.state.meetings == {}
    assert SECRET not in json.dumps(res)


def test_participant_count_sums_meetings(monkeypatch, standin):
    state = standin.state
    for mid, n in (("a", 2), ("b", 3)):
        m = state.new_meeting({"meetingID": mid})
        m["participantCount"] = n
        state.meetings[mid] = m
    _, res = run_module(monkeypatch, base_args(standin, checks=["meetings"]))
    assert res["meetings"] == 2
    assert res["participant_count"] == 5


def test_check_mode_skips_probe(monkeypatch, standin):
    _, res = run_module(monkeypatch, base_args(standin), check_mode=True)
    assert res["probe_skipped"] is True
    assert "check mode" in res["probe_skipped_reason"]
    assert res["probe"] is None
    assert res["healthy"] is True
    assert "create" not in res["latency_ms"]


def test_wrong_secret_reports_checksum_problem(monkeypatch, standin):
    _, res = run_module(monkeypatch, base_args(standin, secret="wrong", checks=["meetings"]))
    assert res["healthy"] is False
    assert res["status"] == "critical"
    assert any("checksum rejected" in p for p in res["problems"])
    assert res["message_keys"] == {"meetings": "checksumError"}


def test_right_secret_has_no_message_keys(monkeypatch, standin):
    _, res = run_module(monkeypatch, base_args(standin, checks=["meetings"]))
    assert res["healthy"] is True
    assert res["message_keys"] == {}


def test_algorithm_not_allowed(monkeypatch, standin):
    args = base_args(standin, checksum_algorithm="sha512", checks=["meetings"])
    _, res = run_module(monkeypatch, args)
    assert any("checksumError" in p for p in res["problems"])


def test_fail_on_unhealthy(monkeypatch, standin):
    args = base_args(standin, secret="wrong", checks=["index", "meetings"], fail_on_unhealthy=True)
    kind, res = run_module(monkeypatch, args)
    assert kind is FailJson
    assert "checksum rejected" in res["msg"]
    assert res["bbbVersion"] == "3.0.7"  # index has no checksum and still worked


def test_min_version_warning(monkeypatch, standin):
    _, res = run_module(monkeypatch, base_args(standin, checks=["index"], min_version="3.1"))
    assert res["status"] == "warning"
    assert any("below the minimum" in p for p in res["problems"])


def test_unreachable(monkeypatch):
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    args = {"base_url": f"http://127.0.0.1:{port}/bigbluebutton/api", "secret": "x", "timeout": 2}
    _, res = run_module(monkeypatch, args)
    assert res["healthy"] is False
    assert res["errors"]["index"] == "unreachable"
    assert res["probe"]["created"] is False


def test_bad_base_url_fails(monkeypatch):
    kind, res = run_module(monkeypatch, {"base_url": "not a url", "secret": "x"})
    assert kind is FailJson
    assert "bad arguments" in res["msg"]

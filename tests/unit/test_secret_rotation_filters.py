"""Unit tests of filter_plugins/secret_rotation.py (the rotation's bookkeeping)."""

import importlib.util
from pathlib import Path

import pytest
from ansible.errors import AnsibleFilterError

REPO = Path(__file__).resolve().parents[2]
_spec = importlib.util.spec_from_file_location(
    "secret_rotation_filters", REPO / "filter_plugins" / "secret_rotation.py"
)
sr = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(sr)

CATALOG = {"bbb_api": {"vault_var": "vault_bbb"}, "turn": {"vault_var": "vault_turn"}}


@pytest.mark.parametrize(
    ("pending", "previous", "action", "step"),
    [
        ({"h": "N"}, {}, "rotate", "resume"),
        ({"h": "N"}, {}, "finish", "resume"),
        ({}, {"h": "O"}, "rotate", "finish"),
        ({}, {"h": "O"}, "finish", "finish"),
        ({}, {}, "rotate", "start"),
        ({}, {}, "finish", "none"),
        ({"other": "N"}, {"other": "O"}, "finish", "none"),
    ],
)
def test_rotation_step(pending, previous, action, step):
    assert sr.rotation_step("h", {"h": "C"}, pending, previous, action) == step


def test_rotation_step_refuses_a_host_without_current_value():
    with pytest.raises(AnsibleFilterError, match="vault_bbb has no entry for h"):
        sr.rotation_step("h", {"x": "C"}, {}, {}, "rotate", "vault_bbb")


def test_rotation_step_refuses_pending_and_previous_together_without_values():
    with pytest.raises(AnsibleFilterError) as excinfo:
        sr.rotation_step(
            "h", {"h": "SECRETC"}, {"h": "SECRETN"}, {"h": "SECRETO"}, "rotate", "vault_bbb"
        )
    assert "SECRET" not in str(excinfo.value)
    assert "edited by hand" in str(excinfo.value)


def test_rotation_step_refuses_unknown_action():
    with pytest.raises(AnsibleFilterError, match="unknown rotation action"):
        sr.rotation_step("h", {"h": "C"}, {}, {}, "rollback")


def test_rotation_entries_and_absent():
    hostvars = {
        "a": {"new": {"bbb_api": "A1", "turn": "A2"}},
        "b": {"new": {"turn": "B2"}},
        "c": {},
    }
    entries = sr.rotation_entries(["a", "b", "c"], hostvars, "new", CATALOG, "_pending")
    assert entries == {
        "vault_bbb_pending": {"a": "A1"},
        "vault_turn_pending": {"a": "A2", "b": "B2"},
    }
    assert sr.rotation_absent(entries) == {
        "vault_bbb_pending": {"a": None},
        "vault_turn_pending": {"a": None, "b": None},
    }
    with pytest.raises(AnsibleFilterError, match="unknown secret kind"):
        sr.rotation_entries(["a"], {"a": {"new": {"greenlight": "x"}}}, "new", CATALOG)


def test_rotation_audit_names_only():
    hostvars = {"a": {"new": {"turn": "SECRET", "bbb_api": "SECRET2"}}}
    entries = sr.rotation_audit(["a", "b"], hostvars, "new", "started")
    assert entries == [
        {"host": "a", "secret": "bbb_api", "event": "started", "detail": ""},
        {"host": "a", "secret": "turn", "event": "started", "detail": ""},
    ]


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("..CUR..", "current"),
        ("..PREV..", "previous"),
        ("CUR PREV", "both"),
        ("", "none"),
        ("x", "none"),
    ],
)
def test_rotation_hands_out(text, expected):
    assert sr.rotation_hands_out(text, "CUR", "PREV") == expected


def test_hands_out_for_prefers_this_runs_facts_over_the_vault():
    hostvars = {
        "t": {
            "vault_turn": {"t": "OLD"},
            "secret_rotation_current": {"turn": "NEW"},
            "secret_rotation_previous": {"turn": "OLD"},
        },
        "u": {"vault_turn": {"u": "UCUR"}},
    }
    assert sr.rotation_hands_out_for("t", hostvars, "NEW", "turn", "vault_turn") == {
        "hands_out": "current"
    }
    assert sr.rotation_hands_out_for("t", hostvars, "OLD", "turn", "vault_turn") == {
        "hands_out": "previous"
    }
    assert sr.rotation_hands_out_for(
        "u", hostvars, "UCUR UPREV", "turn", "vault_turn", {"u": "UPREV"}
    ) == {"hands_out": "both"}


def _views(hands_out="current", since=1000.0, settled=True):
    return {
        "secret_rotation_views": {
            "bbb_turn_xml": {"t": {"hands_out": hands_out, "since": since, "settled": settled}}
        }
    }


def test_overlap_waits_for_the_credential_lifetime():
    hostvars = {"b1": _views(since=1000.0), "b2": _views(since=1100.0)}
    early = sr.rotation_overlap_status("t", ["b1", "b2"], hostvars, ["bbb_turn_xml"], 60, 5, 1160)
    assert early["ready"] is False
    assert early["retire_at"] == 1165.0  # newest consumer change + ttl + margin
    assert "accepted until" in early["reason"]
    late = sr.rotation_overlap_status("t", ["b1", "b2"], hostvars, ["bbb_turn_xml"], 60, 5, 1165)
    assert late["ready"] is True


@pytest.mark.parametrize(
    ("view", "reason"),
    [
        (_views(hands_out="previous"), "hands out previous"),
        (_views(hands_out="both"), "hands out both"),
        (_views(settled=False), "restart pending"),
        ({}, "not checked in this run"),
    ],
)
def test_overlap_waits_for_every_consumer(view, reason):
    hostvars = {"b1": _views(), "b2": view}
    status = sr.rotation_overlap_status(
        "t", ["b1", "b2"], hostvars, ["bbb_turn_xml"], 60, 5, 10**10
    )
    assert status["ready"] is False
    assert reason in status["reason"]
    assert "b2" in status["reason"]
    emergency = sr.rotation_overlap_status(
        "t", ["b1", "b2"], hostvars, ["bbb_turn_xml"], 60, 5, 0, True
    )
    assert emergency["ready"] is True


def test_report_lists_every_host_and_flags_what_did_not_rotate():
    hostvars = {
        "a": {
            "secret_rotation_plan": {"bbb_api": "start", "turn": "start"},
            "secret_rotation_outcome": {"bbb_api": "completed", "turn": "overlap"},
        },
        "b": {
            "secret_rotation_plan": {"bbb_api": "start"},
            "secret_rotation_outcome": {"bbb_api": "rolled_back"},
            "secret_rotation_outcome_detail": {"bbb_api": "gate failed"},
        },
        "c": {"secret_rotation_plan": {"bbb_api": "resume"}},
        "d": {"secret_rotation_plan": {"bbb_api": "none"}},
        "e": {"secret_rotation_consumer_outcome": {"bbb_turn_xml": "skipped"}},
    }
    report = sr.rotation_report(["a", "b", "c", "d"], hostvars, ["a", "b", "c", "d", "e"])
    assert (
        "a bbb_api: rotated and completed (old value rejected, dropped from the vault)"
        in report["lines"]
    )
    assert "b bbb_api: rolled back to the old value - gate failed" in report["lines"]
    assert any(line.startswith("c bbb_api: FAILED") for line in report["lines"])
    assert "d bbb_api: nothing in progress" in report["lines"]
    assert "e consumer bbb_turn_xml: skipped" in report["lines"]
    assert report["problems"] == [
        "b bbb_api: rolled back to the old value",
        "c bbb_api: host error",
        "e consumer bbb_turn_xml: skipped",
    ]
    check = sr.rotation_report(["a", "c"], hostvars, [], check_mode=True)
    assert check["problems"] == []
    assert "c bbb_api: would resume" in check["lines"]

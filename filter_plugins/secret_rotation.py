"""Jinja2 filters of the secret_rotation role (playbooks/rotate-secrets.yml).

They turn the vault's per-host mappings into rotation steps and back, so the
role's tasks stay short. None of them returns or mentions a secret value in an
error; errors name the variable and the host only.

Vault layout (one mapping per secret kind, keyed by inventory host name):
    <vault_var>            current value, what the host has and hands out
    <vault_var>_pending    new value being rolled out (rotation in progress)
    <vault_var>_previous   old value kept until the rotation completed
"""

from __future__ import annotations

import datetime

from ansible.errors import AnsibleFilterError

STEPS = ("resume", "finish", "start", "none")


def rotation_step(host, current, pending=None, previous=None, action="rotate", var="vault_*"):
    """What to do for one host and secret kind.

    resume  a new value is pending (interrupted or just planned): roll it out
    finish  the old value is still kept (overlap or completion not recorded)
    start   nothing in progress and action == rotate: make a new value
    none    nothing in progress and action == finish
    """
    current = current or {}
    pending = pending or {}
    previous = previous or {}
    if host not in current:
        raise AnsibleFilterError(
            f"{var} has no entry for {host}: the vault must hold the host's current secret "
            "before it can be rotated"
        )
    if host in pending and host in previous:
        raise AnsibleFilterError(
            f"{var}_pending and {var}_previous both have an entry for {host}; the vault was "
            "edited by hand. Keep the value the host uses in "
            f"{var}, remove the other entry, then rerun"
        )
    if action not in ("rotate", "finish"):
        raise AnsibleFilterError(f"unknown rotation action {action!r} (rotate or finish)")
    if host in pending:
        return "resume"
    if host in previous:
        return "finish"
    return "start" if action == "rotate" else "none"


def rotation_entries(hosts, hostvars, fact, catalog, suffix=""):
    """{vault_var + suffix: {host: hostvars[host][fact][kind]}} over hosts and kinds.

    ``fact`` is a per-host mapping {kind: value}; hosts without it are left out.
    """
    out: dict = {}
    for host in hosts:
        values = (hostvars.get(host) or {}).get(fact) or {}
        for kind, value in values.items():
            if kind not in catalog:
                raise AnsibleFilterError(f"unknown secret kind {kind!r} in {fact} of {host}")
            out.setdefault(catalog[kind]["vault_var"] + suffix, {})[host] = value
    return out


def rotation_absent(entries):
    """The same {var: {host: ...}} shape with every value None (rotation_vault `expect`: absent)."""
    return {var: {host: None for host in hosts} for var, hosts in (entries or {}).items()}


def rotation_audit(hosts, hostvars, fact, event, detail=""):
    """Audit entries {host, secret, event} for every kind in hostvars[host][fact]."""
    entries = []
    for host in hosts:
        for kind in sorted((hostvars.get(host) or {}).get(fact) or {}):
            entries.append({"host": host, "secret": kind, "event": event, "detail": detail})
    return entries


def rotation_hands_out(text, current, previous=None):
    """Which of two secrets a consumer's file contains: current, previous, both or none."""
    text = text or ""
    has_current = bool(current) and current in text
    has_previous = bool(previous) and previous in text
    if has_current and has_previous:
        return "both"
    if has_current:
        return "current"
    if has_previous:
        return "previous"
    return "none"


def rotation_hands_out_for(owner, hostvars, text, kind, vault_var, vault_previous=None):
    """{'hands_out': ...} of a consumer file for one owner host.

    The owner's current and previous values are what this run recorded for it
    (facts secret_rotation_current / secret_rotation_previous), else what the
    vault held when the run started.
    """
    owner_vars = hostvars.get(owner) or {}
    current = (owner_vars.get("secret_rotation_current") or {}).get(kind)
    if current is None:
        current = (owner_vars.get(vault_var) or {}).get(owner)
    recorded = owner_vars.get("secret_rotation_previous") or {}
    previous = recorded[kind] if kind in recorded else (vault_previous or {}).get(owner)
    return {"hands_out": rotation_hands_out(text, current, previous)}


def rotation_consumer_views(
    owners, hostvars, text, kind, vault_var, vault_previous=None, since=None, settled=True
):
    """{owner: {hands_out, since, settled}} of one consumer file, for every owner host."""
    views = {}
    for owner in owners:
        view = rotation_hands_out_for(owner, hostvars, text, kind, vault_var, vault_previous)
        view.update(since=since, settled=bool(settled))
        views[owner] = view
    return views


def rotation_overlap_status(
    owner, consumers, hostvars, consumer_names, ttl, margin, now, emergency=False
):
    """May the old value of ``owner``'s secret be retired now?

    Every consumer host must have been looked at in this run, hand out the
    owner's current value only (``settled``: nothing restart-pending), and the
    newest consumer change must be older than ``ttl + margin`` seconds: until
    then credentials minted from the old value may still be in use.
    ``emergency`` retires at once. Returns {ready, waiting, retire_at, reason}.
    """
    waiting, newest = [], None
    for host in sorted(set(consumers)):
        views = (hostvars.get(host) or {}).get("secret_rotation_views") or {}
        seen = [views.get(name, {}).get(owner) for name in consumer_names]
        seen = [view for view in seen if view]
        if not seen:
            waiting.append(f"{host} (not checked in this run)")
            continue
        for view in seen:
            if view.get("hands_out") != "current" or not view.get("settled", False):
                waiting.append(
                    f"{host} (hands out {view.get('hands_out')}"
                    f"{'' if view.get('settled', False) else ', restart pending'})"
                )
            since = view.get("since")
            if since is not None and (newest is None or float(since) > newest):
                newest = float(since)
    retire_at = None if newest is None else newest + int(ttl) + int(margin)
    if emergency:
        return {
            "ready": True,
            "waiting": waiting,
            "retire_at": retire_at,
            "reason": "emergency: retired without waiting for the overlap",
        }
    if waiting:
        return {
            "ready": False,
            "waiting": waiting,
            "retire_at": retire_at,
            "reason": "consumers not on the new value yet: " + ", ".join(waiting),
        }
    if retire_at is not None and float(now) < retire_at:
        until = datetime.datetime.fromtimestamp(retire_at, datetime.timezone.utc)
        return {
            "ready": False,
            "waiting": [],
            "retire_at": retire_at,
            "reason": f"overlap: old value accepted until {until:%Y-%m-%d %H:%M:%S} UTC",
        }
    return {"ready": True, "waiting": [], "retire_at": retire_at, "reason": "overlap over"}


# Outcomes that leave the host on its old value or need the operator.
BAD_OUTCOMES = {
    "rolled_back": "rolled back to the old value",
    "skipped": "skipped (meetings running)",
    "not_attempted": "not attempted (an earlier host failed)",
    "finish_failed": "switched, but completing it failed (previous value kept)",
    "rollback_failed": (
        "switch failed and putting the old value back failed too; the vault keeps both "
        "(current = old, pending = new): fix the host, then rerun with "
        "secret_rotation_action=finish"
    ),
}
GOOD_OUTCOMES = {
    "rotated": "rotated",
    "completed": "rotated and completed (old value rejected, dropped from the vault)",
    "retired": "old value retired (refused now, dropped from the vault)",
    "overlap": "new value in use; old value still accepted (overlap)",
}


def rotation_report(planned, hostvars, all_hosts=(), check_mode=False):
    """{lines, problems}: one line per planned host and secret kind, one per consumer."""
    lines, problems = [], []
    for host in planned:
        hv = hostvars.get(host) or {}
        plan = hv.get("secret_rotation_plan") or {}
        outcome = hv.get("secret_rotation_outcome") or {}
        details = hv.get("secret_rotation_outcome_detail") or {}
        for kind in sorted(plan):
            step = plan[kind]
            if check_mode:
                text = f"would {step}" if step != "none" else "nothing in progress"
            elif step == "none":
                text = "nothing in progress"
            elif kind not in outcome:
                text = (
                    "FAILED: the host stopped with an error (see above); "
                    "rerun with secret_rotation_action=finish"
                )
                problems.append(f"{host} {kind}: host error")
            else:
                event = outcome[kind]
                text = GOOD_OUTCOMES.get(event) or BAD_OUTCOMES.get(event) or event
                if event in BAD_OUTCOMES:
                    problems.append(f"{host} {kind}: {BAD_OUTCOMES[event]}")
            if kind in details and not check_mode:
                text += f" - {details[kind]}"
            lines.append(f"{host} {kind}: {text}")
        if not plan:
            lines.append(f"{host}: owns none of the selected secrets")
    for host in all_hosts:
        consumers = (hostvars.get(host) or {}).get("secret_rotation_consumer_outcome") or {}
        for name in sorted(consumers):
            event = consumers[name]
            lines.append(f"{host} consumer {name}: {event}")
            if event in ("skipped", "failed"):
                problems.append(f"{host} consumer {name}: {event}")
    return {"lines": lines, "problems": problems}


class FilterModule:
    def filters(self):
        return {
            "rotation_report": rotation_report,
            "rotation_step": rotation_step,
            "rotation_entries": rotation_entries,
            "rotation_absent": rotation_absent,
            "rotation_audit": rotation_audit,
            "rotation_hands_out": rotation_hands_out,
            "rotation_hands_out_for": rotation_hands_out_for,
            "rotation_consumer_views": rotation_consumer_views,
            "rotation_overlap_status": rotation_overlap_status,
        }

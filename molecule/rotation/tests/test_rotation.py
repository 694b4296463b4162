"""Verify playbooks/rotate-secrets.yml on two hosts (BBB API stand-in + real coturn).

Both hosts are BBB hosts (the bbb-web API stand-in re-reads securitySalt on
every request) and TURN hosts (coturn 4.6 from Debian, secrets in its sqlite
userdb). The playbook runs exactly as operators run it, against the
scenario's inventory and its encrypted vault (identity "smeeton-test").

What is checked after every run: the vault decrypts; for each host the secret
the host has (bbb-web.properties, coturn's userdb, turn-stun-servers.xml)
equals what the vault says; API calls and TURN allocations behave as the
rotation promises. Network rule: only 127.0.0.1 (published TURN ports) and the
scenario's own containers (podman exec).

The tests run in file order and build on each other (one scenario state).
"""

import contextlib
import importlib.util
import os
import re
import signal
import subprocess
import time
from pathlib import Path

import pytest
import yaml
from ansible.parsing.vault import VaultLib, VaultSecret

HOSTS = ["smeeton-mol-rot-a", "smeeton-mol-rot-b"]
A, B = HOSTS
TURN_PORTS = {A: 18878, B: 18879}
REALMS = {A: "a.rotation.molecule.smeeton.test", B: "b.rotation.molecule.smeeton.test"}
SCENARIO = Path(__file__).resolve().parent.parent
REPO = SCENARIO.parent.parent
VAULT_FILE = SCENARIO / "inventory" / "group_vars" / "all" / "vault.yml"
PASS_FILE = SCENARIO / ".state" / "vault-pass"
BBB_VAR, TURN_VAR = "vault_bigbluebutton_secrets", "vault_coturn_secrets"
OVERLAP_SECONDS = 60 + 5  # coturn_credential_ttl + secret_rotation_overlap_margin (inventory)
testinfra_hosts = [f"podman://{A}"]


def _load(name, path):
    spec = importlib.util.spec_from_file_location(name, path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


stun = _load("smeeton_stun", REPO / "module_utils" / "stun.py")


# -- the vault ------------------------------------------------------------------------


def vault_lib():
    return VaultLib([("smeeton-test", VaultSecret(PASS_FILE.read_bytes().strip()))])


def read_vault():
    raw = VAULT_FILE.read_bytes()
    assert raw.startswith(b"$ANSIBLE_VAULT;1.2;AES256;smeeton-test\n"), "vault identity changed"
    return yaml.safe_load(vault_lib().decrypt(raw)) or {}


def all_values(vault):
    """Every secret value in the vault (for the no-leak checks)."""
    out = set()
    for name, value in vault.items():
        if name.startswith("vault_") and isinstance(value, dict):
            out.update(v for v in value.values() if v)
    return out


# -- the hosts ------------------------------------------------------------------------


def sh(container, command, stdin=None, check=True):
    result = subprocess.run(
        ["podman", "exec", "-i", container, "sh", "-c", command],
        input=stdin,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    if check:
        assert result.returncode == 0, f"{container}: {command}: {result.stderr}"
    return result


def deployed_api_secret(container):
    text = sh(container, "cat /etc/bigbluebutton/bbb-web.properties").stdout
    return re.findall(r"^securitySalt=(.*)$", text, re.MULTILINE)[-1].strip()


def akka_secret(container):
    text = sh(container, "cat /etc/bigbluebutton/bbb-apps-akka.conf").stdout
    return re.findall(r'sharedSecret\s*=\s*"([^"]*)"', text)[-1]


def userdb_secrets(container):
    """The TURN secrets coturn's userdb holds for the host's realm."""
    query = "SELECT realm || ' ' || value FROM turn_secret;"
    out = sh(container, "sqlite3 -batch -noheader /var/lib/turn/turndb", stdin=query).stdout
    rows = [line.split(" ", 1) for line in out.splitlines() if line.strip()]
    return {value for realm, value in rows if realm == REALMS[container]}


def turn_xml(container):
    return sh(container, "cat /etc/bigbluebutton/turn-stun-servers.xml").stdout


def file_owner_mode(container, path):
    return sh(container, f"stat -c '%U:%G %a' {path}").stdout.strip()


API_SCRIPT = r"""
import hashlib, re, sys, urllib.request
secret = sys.stdin.readline().strip()
call, query = sys.argv[1], sys.argv[2]
digest = hashlib.sha256((call + query + secret).encode()).hexdigest()
sep = "&" if query else ""
url = f"http://127.0.0.1:8090/bigbluebutton/api/{call}?{query}{sep}checksum={digest}"
body = urllib.request.urlopen(url, timeout=10).read().decode()
rc = re.search(r"<returncode>(.*?)</returncode>", body)
key = re.search(r"<messageKey>(.*?)</messageKey>", body)
print((rc.group(1) if rc else "?") + " " + (key.group(1) if key else "-"))
"""


def api(container, secret, call="getMeetings", query=""):
    """(returncode, messageKey) of an API call made on the host; the secret goes on stdin."""
    out = subprocess.run(
        ["podman", "exec", "-i", container, "python3", "-c", API_SCRIPT, call, query],
        input=secret + "\n",
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    ).stdout.split()
    return out[0], out[1]


def turn_credentials(secret, ttl=600):
    return stun.rest_credentials(secret, "rotation-test", ttl)


def allocate(container, credentials):
    """Allocate on the host's published TURN port: None if it worked, else the error code."""
    with stun.TurnClient("127.0.0.1", TURN_PORTS[container], "udp", timeout=3) as client:
        try:
            client.allocate(*credentials)
            client.refresh(0)
            return None
        except stun.StunError as exc:
            return exc.code


# -- running the playbook -------------------------------------------------------------


def _env():
    env = dict(os.environ)
    env.update(
        ANSIBLE_CONFIG=str(REPO / "ansible.cfg"),
        ANSIBLE_VAULT_IDENTITY_LIST=f"smeeton-test@{SCENARIO / 'vault-pass.sh'}",
        ANSIBLE_ROLES_PATH=str(REPO / "roles"),
        ANSIBLE_LIBRARY=str(REPO / "library"),
        ANSIBLE_MODULE_UTILS=str(REPO / "module_utils"),
        ANSIBLE_FILTER_PLUGINS=str(REPO / "filter_plugins"),
        ANSIBLE_ACTION_PLUGINS=str(REPO / "action_plugins"),
        CONTAINERS_CONF=str(REPO / "scripts" / "containers.conf"),
        ANSIBLE_NOCOLOR="1",
        PYTHONUNBUFFERED="1",
    )
    env.pop("ANSIBLE_FORCE_COLOR", None)
    env.pop("ANSIBLE_CALLBACKS_ENABLED", None)
    return env


def _inventory():
    inventory = os.environ.get("MOLECULE_INVENTORY_FILE")
    if not inventory:
        pytest.fail("MOLECULE_INVENTORY_FILE is not set: run these tests through `molecule verify`")
    return str(Path(inventory).parent)


def _cmd(playbook, extra, args):
    cmd = ["ansible-playbook", "-i", _inventory(), str(playbook), *args]
    for ev in extra:
        cmd += ["-e", ev]
    return cmd


def rotate(*extra, args=(), playbook=REPO / "playbooks" / "rotate-secrets.yml"):
    result = subprocess.run(
        _cmd(playbook, extra, args),
        capture_output=True,
        text=True,
        timeout=1800,
        check=False,
        env=_env(),
        cwd=REPO,
    )
    result.output = result.stdout + result.stderr
    return result


def converge():
    return rotate(playbook=SCENARIO / "converge.yml")


def rotate_killed_at(marker, *extra, delay=0.0):
    """Run the rotation and SIGKILL it (and its workers) when `marker` is printed."""
    proc = subprocess.Popen(
        _cmd(REPO / "playbooks" / "rotate-secrets.yml", extra, ()),
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        env=_env(),
        cwd=REPO,
        start_new_session=True,
    )
    seen = []
    try:
        for line in proc.stdout:
            seen.append(line)
            if marker in line:
                time.sleep(delay)
                os.killpg(proc.pid, signal.SIGKILL)
                break
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGKILL)
        proc.wait(timeout=60)
    output = "".join(seen)
    assert marker in output, f"the run ended before {marker!r}:\n{output[-3000:]}"
    return output


def report_lines(output):
    return re.findall(r'"(smeeton-mol-rot-[ab][^"]*)"', output)


# -- consistency: what every check after a run relies on ------------------------------


def assert_consistent(vault):
    """Every host has exactly what the vault says, and the API/TURN agree."""
    for host in HOSTS:
        assert host not in vault.get(BBB_VAR + "_pending", {}), f"{host}: bbb_api still pending"
        assert host not in vault.get(TURN_VAR + "_pending", {}), f"{host}: turn still pending"
        current = vault[BBB_VAR][host]
        assert deployed_api_secret(host) == current, (
            f"{host}: bbb-web.properties differs from the vault"
        )
        assert akka_secret(host) == current, f"{host}: bbb-apps-akka.conf differs from the vault"
        assert api(host, current)[0] == "SUCCESS", f"{host}: API refuses the vault's secret"
        turn_current = vault[TURN_VAR][host]
        expected = {turn_current}
        if host in vault.get(TURN_VAR + "_previous", {}):
            expected.add(vault[TURN_VAR + "_previous"][host])
        assert userdb_secrets(host) == expected, f"{host}: coturn's userdb differs from the vault"
        assert allocate(host, turn_credentials(turn_current)) is None
    for consumer in HOSTS:
        xml = turn_xml(consumer)
        for owner in HOSTS:
            assert vault[TURN_VAR][owner] in xml, (
                f"{consumer} does not hand out {owner}'s current TURN secret"
            )


# -- tests ----------------------------------------------------------------------------


def test_starting_state_matches_the_vault():
    vault = read_vault()
    if any(name.endswith(("_pending", "_previous")) for name in vault):
        # A rerun of verify after an interrupted one: finish that rotation first.
        result = rotate("secret_rotation_action=finish", "secret_rotation_emergency=true")
        assert result.returncode == 0, result.output[-3000:]
        vault = read_vault()
    assert set(vault[BBB_VAR]) == set(HOSTS)
    assert_consistent(vault)


def test_check_mode_changes_nothing():
    before = VAULT_FILE.read_bytes()
    files = {h: (deployed_api_secret(h), userdb_secrets(h), turn_xml(h)) for h in HOSTS}
    result = rotate(args=("--check",))
    assert result.returncode == 0, result.output
    assert f"{A} bbb_api: would start" in result.output
    assert f"{B} turn: would start" in result.output
    assert VAULT_FILE.read_bytes() == before
    assert {h: (deployed_api_secret(h), userdb_secrets(h), turn_xml(h)) for h in HOSTS} == files


def test_bad_input_fails_before_any_change():
    before = VAULT_FILE.read_bytes()
    cases = [
        ('{"secret_rotation_secrets": ["greenlight"]}', "Bad rotation settings"),
        (
            "secret_rotation_action=rollback",
            "secret_rotation_action must be one of: rotate, finish",
        ),
        (
            "secret_rotation_vault_file=/nonexistent/vault.yml",
            "/nonexistent/vault.yml does not exist",
        ),
    ]
    for extra, message in cases:
        result = rotate(extra)
        assert result.returncode != 0
        assert message in result.output, result.output[-2000:]
        assert "PLAY [Roll the new secrets out" not in result.output
        assert VAULT_FILE.read_bytes() == before


def test_rotate_both_secrets_on_both_hosts(tmp_path):
    old = read_vault()
    old_turn = {h: turn_credentials(old[TURN_VAR][h]) for h in HOSTS}
    modes = {
        h: {
            p: file_owner_mode(h, p)
            for p in (
                "/etc/bigbluebutton/bbb-web.properties",
                "/etc/bigbluebutton/bbb-apps-akka.conf",
                "/etc/bigbluebutton/turn-stun-servers.xml",
                "/var/lib/turn/turndb",
            )
        }
        for h in HOSTS
    }
    audit = Path(_inventory()) / "rotation-audit.log"
    audit_before = audit.read_text() if audit.exists() else ""

    result = rotate(args=("-vvv",))
    assert result.returncode == 0, result.output[-5000:]
    new = read_vault()

    # No old or new value anywhere in the -vvv output.
    for value in all_values(old) | all_values(new):
        assert value not in result.output, "a secret value appears in the -vvv output"

    for host in HOSTS:
        assert new[BBB_VAR][host] != old[BBB_VAR][host]
        assert new[TURN_VAR][host] != old[TURN_VAR][host]
        assert re.fullmatch(r"[A-Za-z0-9]{48}", new[BBB_VAR][host])
        assert re.fullmatch(r"[A-Za-z0-9]{48}", new[TURN_VAR][host])
        # BBB API: new accepted, old refused with checksumError; previous dropped.
        assert api(host, new[BBB_VAR][host])[0] == "SUCCESS"
        assert api(host, old[BBB_VAR][host]) == ("FAILED", "checksumError")
        assert host not in new.get(BBB_VAR + "_previous", {})
        # TURN: overlap - old credentials (made before) still work, as do new ones.
        assert new[TURN_VAR + "_previous"][host] == old[TURN_VAR][host]
        assert allocate(host, old_turn[host]) is None
        assert allocate(host, turn_credentials(new[TURN_VAR][host])) is None
        # Secret files keep owner and mode.
        for path, mode in modes[host].items():
            assert file_owner_mode(host, path) == mode, f"{host}:{path}"
    assert_consistent(new)
    assert "old value still accepted (overlap)" in result.output

    # Audit: one line per host and secret and event, names only.
    lines = audit.read_text()[len(audit_before) :].splitlines()
    for host in HOSTS:
        for kind, event in (
            ("bbb_api", "started"),
            ("bbb_api", "rotated"),
            ("bbb_api", "completed"),
            ("turn", "started"),
            ("turn", "rotated"),
        ):
            hits = [ln for ln in lines if f"host={host} secret={kind} event={event} " in ln]
            assert len(hits) == 1, (host, kind, event, lines)
            assert re.search(r" by=\S+@\S+", hits[0])
    for value in all_values(old) | all_values(new):
        assert value not in "\n".join(lines)


def test_finish_retires_the_old_turn_secret_after_the_overlap():
    vault = read_vault()
    old_turn = {h: vault[TURN_VAR + "_previous"][h] for h in HOSTS}
    old_credentials = {h: turn_credentials(old_turn[h]) for h in HOSTS}
    # Too early: the old secret stays.
    early = rotate("secret_rotation_action=finish")
    assert early.returncode == 0, early.output[-3000:]
    assert "the old turn secret stays accepted: overlap: old value accepted until" in early.output
    assert all(h in read_vault()[TURN_VAR + "_previous"] for h in HOSTS)
    time.sleep(OVERLAP_SECONDS + 2)
    result = rotate("secret_rotation_action=finish")
    assert result.returncode == 0, result.output[-3000:]
    after = read_vault()
    assert TURN_VAR + "_previous" not in after
    for host in HOSTS:
        assert allocate(host, old_credentials[host]) == 401
        assert allocate(host, turn_credentials(old_turn[host])) == 401
        assert allocate(host, turn_credentials(after[TURN_VAR][host])) is None
    assert_consistent(after)

    # site.yml's view after the rotation: converging again changes nothing.
    again = converge()
    assert again.returncode == 0, again.output[-3000:]
    assert re.findall(r"changed=(\d+)", again.output) == ["0", "0"], again.output[-3000:]


@pytest.fixture
def frozen_bbb_web_on_b():
    """Failure injection on host B: bbb-web keeps its old secret (stand-in reads a frozen copy)."""
    drop_in = (
        "[Service]\n"
        "ExecStart=\n"
        "ExecStart=/usr/bin/python3 /opt/smeeton-test/bbb_api_standin.py"
        " --properties /etc/bigbluebutton/frozen.properties --bind 127.0.0.1 --port 8090\n"
    )
    sh(
        B,
        "cp -p /etc/bigbluebutton/bbb-web.properties /etc/bigbluebutton/frozen.properties"
        " && mkdir -p /etc/systemd/system/bbb-api-standin.service.d"
        " && cat > /etc/systemd/system/bbb-api-standin.service.d/frozen.conf"
        " && systemctl daemon-reload && systemctl restart bbb-api-standin && sleep 1",
        stdin=drop_in,
    )
    yield
    sh(
        B,
        "rm -rf /etc/systemd/system/bbb-api-standin.service.d /etc/bigbluebutton/frozen.properties"
        " && systemctl daemon-reload && systemctl restart bbb-api-standin && sleep 1",
    )


def test_failed_gate_on_the_second_host_rolls_it_back(frozen_bbb_web_on_b):
    old = read_vault()
    result = rotate('{"secret_rotation_secrets": ["bbb_api"]}')
    assert result.returncode != 0, result.output[-3000:]
    new = read_vault()
    assert new[BBB_VAR][A] != old[BBB_VAR][A], "the first host keeps its new secret"
    assert new[BBB_VAR][B] == old[BBB_VAR][B], "the second host is back on its old secret"
    assert deployed_api_secret(B) == old[BBB_VAR][B]
    assert api(B, old[BBB_VAR][B])[0] == "SUCCESS"
    assert api(A, new[BBB_VAR][A])[0] == "SUCCESS"
    assert f"{A} bbb_api: rotated and completed" in result.output
    assert f"{B} bbb_api: rolled back to the old value" in result.output
    assert "Rotation incomplete" in result.output
    assert_consistent(new)


def test_host_with_meetings_is_skipped_unless_forced():
    vault = read_vault()
    secret = vault[BBB_VAR][A]
    assert api(A, secret, "create", "meetingID=busy&name=busy")[0] == "SUCCESS"
    assert (
        api(A, secret, "join", "meetingID=busy&fullName=Ani&role=MODERATOR&redirect=false")[0]
        == "SUCCESS"
    )
    try:
        result = rotate('{"secret_rotation_secrets": ["bbb_api"]}', f"secret_rotation_hosts={A}")
        assert result.returncode != 0
        assert "participant(s) in 1 meeting(s)" in result.output
        assert f"{A} bbb_api: skipped (meetings running)" in result.output
        assert read_vault()[BBB_VAR][A] == secret
        assert deployed_api_secret(A) == secret
        forced = rotate(
            '{"secret_rotation_secrets": ["bbb_api"]}',
            f"secret_rotation_hosts={A}",
            "secret_rotation_force=true",
        )
        assert forced.returncode == 0, forced.output[-3000:]
        assert read_vault()[BBB_VAR][A] != secret
    finally:
        current = read_vault()[BBB_VAR][A]
        api(A, current, "end", "meetingID=busy")
    assert_consistent(read_vault())


KILL_POINTS = [
    # (marker printed when the run is killed, extra vars)
    ("TASK [secret_rotation : Record the new values as pending in the vault", ()),
    (
        "TASK [secret_rotation : Gate - bbb-web accepts the secret]",
        ('{"secret_rotation_secrets": ["bbb_api"]}',),
    ),
    (
        "TASK [secret_rotation : Record the switch in the vault",
        ('{"secret_rotation_secrets": ["bbb_api"]}',),
    ),
    ("TASK [secret_rotation : Gate - coturn allocates", ('{"secret_rotation_secrets": ["turn"]}',)),
    ("PLAY [Hand the owners' current secrets out", ('{"secret_rotation_secrets": ["turn"]}',)),
]


@pytest.mark.parametrize(
    ("marker", "extra"),
    KILL_POINTS,
    ids=["plan", "bbb-gate", "bbb-commit", "turn-gate", "consumers"],
)
def test_killed_run_is_brought_back_by_a_rerun(marker, extra):
    before = read_vault()
    output = rotate_killed_at(marker, *extra, "secret_rotation_emergency=true")
    # Nothing lost: the vault decrypts and still knows what every host has.
    mid = read_vault()
    for host in HOSTS:
        known = {mid[BBB_VAR][host], mid.get(BBB_VAR + "_pending", {}).get(host)}
        assert deployed_api_secret(host) in known, f"{host}: bbb-web secret unknown to the vault"
        turn_known = {
            mid[TURN_VAR][host],
            mid.get(TURN_VAR + "_pending", {}).get(host),
            mid.get(TURN_VAR + "_previous", {}).get(host),
        }
        assert userdb_secrets(host) <= turn_known, f"{host}: coturn secret unknown to the vault"
    assert output
    result = rotate("secret_rotation_action=finish", "secret_rotation_emergency=true")
    assert result.returncode == 0, result.output[-4000:]
    after = read_vault()
    assert_consistent(after)
    assert TURN_VAR + "_previous" not in after  # emergency: retired at once
    assert BBB_VAR + "_previous" not in after
    changed = [
        h
        for h in HOSTS
        if after[BBB_VAR][h] != before[BBB_VAR][h] or after[TURN_VAR][h] != before[TURN_VAR][h]
    ]
    assert set(changed) <= set(HOSTS)


def test_converge_after_a_killed_run_is_consistent_too():
    rotate_killed_at(
        "TASK [secret_rotation : Gate - bbb-web accepts the secret]",
        '{"secret_rotation_secrets": ["bbb_api"]}',
    )
    result = converge()
    assert result.returncode == 0, result.output[-3000:]
    vault = read_vault()
    # site.yml puts every host on the vault's current value; the pending one is
    # still recorded, and a finish run completes it.
    for host in HOSTS:
        assert deployed_api_secret(host) == vault[BBB_VAR][host]
        assert api(host, vault[BBB_VAR][host])[0] == "SUCCESS"
    finish = rotate("secret_rotation_action=finish")
    assert finish.returncode == 0, finish.output[-3000:]
    assert_consistent(read_vault())

"""The rotation_vault action (action_plugins/rotation_vault.py), run by ansible-playbook.

Each test writes a small encrypted vault in a temporary directory, runs a
one-task playbook on localhost with the vault identity given the way an
operator gives it (--vault-id label@file), and reads the file back.
"""

import os
import stat
import subprocess
from pathlib import Path

import pytest
import yaml
from ansible.parsing.vault import VaultLib, VaultSecret

REPO = Path(__file__).resolve().parents[2]
PASSWORD = b"test-only-vault-password-0123456789"
SECRETS = {
    "vault_bbb": {
        "h1": "H1currentSECRETvalue000000000000",
        "h2": "H2currentSECRETvalue000000000000",
    }
}


def _vault(label):
    return VaultLib([(label or "default", VaultSecret(PASSWORD))])


@pytest.fixture
def workdir(tmp_path):
    (tmp_path / "pass").write_bytes(PASSWORD)
    return tmp_path


def write_vault(workdir, data, label="ops", mode=0o600):
    path = workdir / "vault.yml"
    text = "---\n# Keep this comment\n" + yaml.safe_dump(data)
    path.write_bytes(_vault(label).encrypt(text.encode(), vault_id=label))
    path.chmod(mode)
    return path


def read_vault(path, label="ops"):
    return yaml.safe_load(_vault(label).decrypt(path.read_bytes()))


def run(workdir, args, *, label="ops", no_log=True, check=False, verbosity="-v"):
    play = [
        {
            "hosts": "localhost",
            "gather_facts": False,
            "tasks": [
                {
                    "name": "Change the vault",
                    "rotation_vault": args,
                    "no_log": no_log,
                    "register": "out",
                },
                {"name": "Show the result", "ansible.builtin.debug": {"var": "out"}},
            ],
        }
    ]
    playbook = workdir / "play.yml"
    playbook.write_text(yaml.safe_dump(play))
    env = dict(os.environ, ANSIBLE_CONFIG=str(REPO / "ansible.cfg"), ANSIBLE_NOCOLOR="1")
    env.pop("ANSIBLE_CALLBACKS_ENABLED", None)
    vault_id = f"{label}@{workdir / 'pass'}" if label else str(workdir / "pass")
    cmd = [
        "ansible-playbook",
        "-i",
        "localhost,",
        "-c",
        "local",
        "--vault-id",
        vault_id,
        str(playbook),
        verbosity,
    ]
    if check:
        cmd.append("--check")
    result = subprocess.run(
        cmd, capture_output=True, text=True, env=env, cwd=REPO, timeout=120, check=False
    )
    result.output = result.stdout + result.stderr
    return result


def test_sets_and_unsets_with_the_same_identity(workdir):
    path = write_vault(workdir, SECRETS, mode=0o640)
    result = run(
        workdir,
        {
            "path": str(path),
            "expect": {
                "vault_bbb": {"h1": SECRETS["vault_bbb"]["h1"]},
                "vault_bbb_pending": {"h1": None},
            },
            "set": {"vault_bbb_pending": {"h1": "H1newSECRETvalue0000000000000000"}},
            "audit": [{"host": "h1", "secret": "bbb_api", "event": "started"}],
            "audit_file": str(workdir / "audit.log"),
        },
        verbosity="-vvv",
    )
    assert result.returncode == 0, result.output
    assert path.read_bytes().startswith(b"$ANSIBLE_VAULT;1.2;AES256;ops\n")
    data = read_vault(path)
    assert data["vault_bbb_pending"] == {"h1": "H1newSECRETvalue0000000000000000"}
    assert data["vault_bbb"] == SECRETS["vault_bbb"]
    assert "# Keep this comment" in _vault("ops").decrypt(path.read_bytes()).decode()
    assert stat.S_IMODE(path.stat().st_mode) == 0o640
    assert "SECRETvalue" not in result.output  # neither the values set nor expected, even at -vvv
    audit = (workdir / "audit.log").read_text()
    assert "host=h1 secret=bbb_api event=started by=" in audit
    assert "SECRETvalue" not in audit

    result = run(workdir, {"path": str(path), "unset": {"vault_bbb_pending": ["h1"]}})
    assert result.returncode == 0, result.output
    assert "vault_bbb_pending" not in read_vault(path)


def test_version_1_1_files_stay_1_1(workdir):
    path = write_vault(workdir, SECRETS, label=None)
    assert path.read_bytes().startswith(b"$ANSIBLE_VAULT;1.1;AES256\n")
    result = run(workdir, {"path": str(path), "set": {"vault_bbb": {"h3": "x" * 32}}}, label=None)
    assert result.returncode == 0, result.output
    assert path.read_bytes().startswith(b"$ANSIBLE_VAULT;1.1;AES256\n")
    assert read_vault(path, label=None)["vault_bbb"]["h3"] == "x" * 32


def test_group_and_world_bits_are_dropped(workdir):
    path = write_vault(workdir, SECRETS, mode=0o666)
    assert run(workdir, {"path": str(path), "set": {"vault_bbb": {"h3": "y" * 32}}}).returncode == 0
    assert stat.S_IMODE(path.stat().st_mode) == 0o640


def test_compare_and_swap_mismatch_writes_nothing(workdir):
    path = write_vault(workdir, SECRETS)
    before = path.read_bytes()
    result = run(
        workdir,
        {
            "path": str(path),
            "expect": {"vault_bbb": {"h1": "not-what-is-there-0000000000000000"}},
            "set": {"vault_bbb": {"h1": "z" * 32}},
        },
    )
    assert result.returncode != 0
    assert "vault_bbb[h1] is another value" in result.output
    assert "Nothing was written" in result.output
    assert path.read_bytes() == before


def test_check_mode_writes_nothing(workdir):
    path = write_vault(workdir, SECRETS)
    before = path.read_bytes()
    result = run(
        workdir,
        {
            "path": str(path),
            "set": {"vault_bbb": {"h1": "z" * 32}},
            "audit": [{"host": "h1", "secret": "bbb_api", "event": "started"}],
            "audit_file": str(workdir / "audit.log"),
        },
        check=True,
    )
    assert result.returncode == 0, result.output
    assert "changed=1" in result.output
    assert path.read_bytes() == before
    assert not (workdir / "audit.log").exists()


def test_refuses_without_no_log(workdir):
    path = write_vault(workdir, SECRETS)
    before = path.read_bytes()
    result = run(workdir, {"path": str(path), "set": {"vault_bbb": {"h1": "z" * 32}}}, no_log=False)
    assert result.returncode != 0
    assert "set `no_log: true`" in result.output
    assert path.read_bytes() == before


def test_refuses_a_plain_file_and_a_wrong_password(workdir):
    plain = workdir / "plain.yml"
    plain.write_text(yaml.safe_dump(SECRETS))
    result = run(workdir, {"path": str(plain), "unset": {"vault_bbb": ["h1"]}})
    assert result.returncode != 0
    assert "is not encrypted" in result.output
    other = workdir / "other.yml"
    other.write_bytes(
        VaultLib([("ops", VaultSecret(b"another-password"))]).encrypt(b"a: 1\n", vault_id="ops")
    )
    result = run(workdir, {"path": str(other), "unset": {"vault_bbb": ["h1"]}})
    assert result.returncode != 0
    assert "cannot decrypt" in result.output

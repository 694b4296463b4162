"""Action plugin ``rotation_vault``: update entries of an encrypted vault file.

Runs on the control node only. It decrypts the inventory's vault file with the
vault secrets the operator already gave ``ansible-playbook`` (vault password
file, ``--ask-vault-pass`` or ``--vault-id``), changes per-host entries of
dict-shaped ``vault_*`` variables, and writes the file back encrypted with the
same vault identity (label and secret that opened it). Used by
playbooks/rotate-secrets.yml; documentation in library/rotation_vault.py.

Safety rules:

* compare-and-swap: ``expect`` names the values the caller believes are in the
  file; any difference fails the task and nothing is written;
* one writer at a time (``flock`` on a hidden lock file next to the vault);
* atomic replace (temporary file in the same directory, fsync, rename, fsync
  of the directory): a crash leaves either the old or the new file;
* the file mode loses any group-write/other bits; the owner is kept;
* no secret is ever returned; the task itself must have ``no_log: true``.
"""

import datetime
import fcntl
import getpass
import os
import socket
import tempfile

import yaml
from ansible.errors import AnsibleActionFail
from ansible.module_utils.common.text.converters import to_bytes, to_text
from ansible.parsing.vault import parse_vaulttext_envelope
from ansible.plugins.action import ActionBase

_ARGS = frozenset(("path", "expect", "set", "unset", "audit", "audit_file"))


def _plain(value):
    """Ansible's YAML objects (AnsibleUnicode, tagged values) as plain Python."""
    if isinstance(value, dict):
        return {str(k): _plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    if value is None or isinstance(value, (bool, int, float)):
        return value
    return str(value)


def _header_comments(text):
    """Leading comment lines of the plaintext, kept when the file is rewritten."""
    kept = []
    for line in text.splitlines():
        if line.strip() == "---":
            continue
        if not line.startswith("#"):
            break
        kept.append(line)
    return kept


def actor():
    """Who runs the rotation: login user (and sudo's caller) on the control node."""
    user = getpass.getuser()
    sudo_user = os.environ.get("SUDO_USER")
    if sudo_user and sudo_user != user:
        user = f"{sudo_user}(as {user})"
    return f"{user}@{socket.gethostname()}"


def audit_line(entry, when, who):
    """One audit line; only names, never values."""
    fields = [
        when,
        f"host={entry['host']}",
        f"secret={entry['secret']}",
        f"event={entry['event']}",
        f"by={who}",
    ]
    detail = str(entry.get("detail") or "").replace("\n", " ").strip()
    if detail:
        fields.append(f"detail={detail!r}")
    return " ".join(fields)


class ActionModule(ActionBase):
    TRANSFERS_FILES = False
    _requires_connection = False
    _supports_check_mode = True

    def run(self, tmp=None, task_vars=None):
        result = super().run(tmp, task_vars)
        args = self._task.args
        unknown = sorted(set(args) - _ARGS)
        if unknown:
            raise AnsibleActionFail(f"rotation_vault: unsupported option(s) {', '.join(unknown)}")
        if (args.get("set") or args.get("expect")) and not self._task.no_log:
            raise AnsibleActionFail(
                "rotation_vault: this task carries secret values; set `no_log: true` on it"
            )
        path = args.get("path")
        if not path:
            raise AnsibleActionFail("rotation_vault: `path` (the vault file) is required")
        path = os.path.realpath(os.path.expanduser(to_text(path)))
        set_ = _plain(args.get("set") or {})
        unset = _plain(args.get("unset") or {})
        expect = _plain(args.get("expect") or {})
        audit = _plain(args.get("audit") or [])
        self._check_shapes(set_, unset, expect, audit)

        vault = self._loader._vault  # the secrets given to this ansible-playbook run
        lock_path = os.path.join(os.path.dirname(path), f".{os.path.basename(path)}.lock")
        try:
            lock_fd = os.open(lock_path, os.O_RDWR | os.O_CREAT, 0o600)
        except OSError as exc:
            raise AnsibleActionFail(
                f"rotation_vault: cannot open lock file {lock_path}: {exc}"
            ) from exc
        try:
            fcntl.flock(lock_fd, fcntl.LOCK_EX)
            data, header, envelope = self._read(vault, path)
            mismatches = self._mismatches(data, expect)
            if mismatches:
                raise AnsibleActionFail(
                    f"rotation_vault: {path} does not hold what this run expects "
                    f"({'; '.join(mismatches)}): it changed during the run, or it is not "
                    "the vault file the inventory loaded. Nothing was written."
                )
            new = self._apply(data, set_, unset)
            changed = new != data
            result["changed"] = changed
            if changed and not self._task.check_mode:
                self._write(vault, path, new, header, envelope)
            result["audit_lines"] = []
            if audit:
                when = datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")
                who = actor()
                lines = [audit_line(e, when, who) for e in audit]
                if self._task.check_mode:
                    lines = [f"{line} (check mode: not logged)" for line in lines]
                elif args.get("audit_file"):
                    self._append_audit(to_text(args["audit_file"]), lines)
                result["audit_lines"] = lines
        finally:
            os.close(lock_fd)
        result["path"] = path
        result["vault_id"] = envelope[3]
        result["entries"] = {
            name: sorted(value) for name, value in sorted(new.items()) if isinstance(value, dict)
        }
        return result

    # -- helpers -------------------------------------------------------------

    @staticmethod
    def _check_shapes(set_, unset, expect, audit):
        for name, entries in list(set_.items()) + list(expect.items()):
            if not name.startswith("vault_") or not isinstance(entries, dict):
                raise AnsibleActionFail(
                    f"rotation_vault: {name!r} must be a vault_* name mapped to {{host: value}}"
                )
        for name, hosts in unset.items():
            if not name.startswith("vault_") or not isinstance(hosts, list):
                raise AnsibleActionFail(
                    f"rotation_vault: unset {name!r} must be a vault_* name mapped to a host list"
                )
        for entry in audit:
            if not isinstance(entry, dict) or not {"host", "secret", "event"} <= set(entry):
                raise AnsibleActionFail(
                    "rotation_vault: each audit entry needs host, secret, event"
                )

    @staticmethod
    def _read(vault, path):
        try:
            with open(path, "rb") as fh:
                b_text = fh.read()
        except OSError as exc:
            raise AnsibleActionFail(f"rotation_vault: cannot read {path}: {exc}") from exc
        if not vault.is_encrypted(b_text):
            raise AnsibleActionFail(
                f"rotation_vault: {path} is not encrypted with ansible-vault; encrypt it first"
            )
        try:
            b_plain, _vault_id, secret = vault.decrypt_and_get_vault_id(b_text)
        except Exception as exc:  # AnsibleVaultError and friends: say which file
            raise AnsibleActionFail(f"rotation_vault: cannot decrypt {path}: {exc}") from exc
        envelope = parse_vaulttext_envelope(b_text)
        text = to_text(b_plain)
        data = yaml.safe_load(text) or {}
        if not isinstance(data, dict):
            raise AnsibleActionFail(f"rotation_vault: {path} does not hold a YAML mapping")
        return data, _header_comments(text), (secret, *envelope[1:])

    @staticmethod
    def _mismatches(data, expect):
        out = []
        for name, entries in sorted(expect.items()):
            have = data.get(name) or {}
            for host, value in sorted(entries.items()):
                if have.get(host) != value:
                    state = "absent" if host not in have else "another value"
                    want = "absent" if value is None else "the expected value"
                    out.append(f"{name}[{host}] is {state}, expected {want}")
        return out

    @staticmethod
    def _apply(data, set_, unset):
        new = {k: (dict(v) if isinstance(v, dict) else v) for k, v in data.items()}
        for name, entries in set_.items():
            current = new.get(name) or {}
            if not isinstance(current, dict):
                raise AnsibleActionFail(
                    f"rotation_vault: {name} in the vault is not a {{host: value}} mapping"
                )
            current.update(entries)
            new[name] = current
        for name, hosts in unset.items():
            current = new.get(name)
            if isinstance(current, dict):
                for host in hosts:
                    current.pop(host, None)
                if not current:
                    del new[name]
        return new

    @staticmethod
    def _write(vault, path, data, header, envelope):
        secret, b_version, _cipher, vault_id = envelope
        text = "---\n" + "".join(f"{line}\n" for line in header)
        text += yaml.safe_dump(data, default_flow_style=False, sort_keys=True, width=1000)
        label = vault_id if to_text(b_version) == "1.2" else None
        b_out = vault.encrypt(to_bytes(text), secret=secret, vault_id=label)
        st = os.stat(path)
        directory = os.path.dirname(path)
        fd, tmp = tempfile.mkstemp(
            prefix=f".{os.path.basename(path)}.", suffix=".tmp", dir=directory
        )
        try:
            with os.fdopen(fd, "wb") as fh:
                fh.write(b_out)
                fh.flush()
                os.fsync(fh.fileno())
            os.chmod(tmp, st.st_mode & 0o640)
            if os.geteuid() == 0:
                os.chown(tmp, st.st_uid, st.st_gid)
            os.replace(tmp, path)
        except BaseException:
            if os.path.exists(tmp):
                os.unlink(tmp)
            raise
        dir_fd = os.open(directory, os.O_RDONLY)
        try:
            os.fsync(dir_fd)
        finally:
            os.close(dir_fd)

    @staticmethod
    def _append_audit(path, lines):
        path = os.path.expanduser(path)
        fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o640)
        try:
            os.write(fd, "".join(f"{line}\n" for line in lines).encode())
            os.fsync(fd)
        finally:
            os.close(fd)

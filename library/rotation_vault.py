#!/usr/bin/python
"""Documentation of the ``rotation_vault`` action (action_plugins/rotation_vault.py).

The work is done on the control node by the action plugin of the same name;
this file only carries the documentation (``ansible-doc rotation_vault``).
"""

DOCUMENTATION = r"""
---
module: rotation_vault
short_description: Change per-host entries of the inventory's encrypted vault file
description:
  - Runs on the control node. Decrypts an ansible-vault encrypted YAML file with the vault
    secrets given to this C(ansible-playbook) run, sets or removes C(host: value) entries of
    C(vault_*) mapping variables, and writes the file back encrypted with the same vault
    identity (label and secret that opened it).
  - Compare-and-swap. O(expect) lists the entries the caller believes are in the file; when any
    differs the task fails and nothing is written.
  - One writer at a time (C(flock) on C(.<name>.lock) next to the file), atomic replacement
    (temporary file, fsync, rename, directory fsync). The file keeps its owner; its mode loses
    group-write and all other-bits.
  - Comments at the top of the file are kept; other comments and key order are not (keys are
    written sorted).
  - Used by C(playbooks/rotate-secrets.yml).
version_added: "0.1.0"
author: SmeetOn
options:
  path:
    description:
      - The encrypted vault file, for example
        C(inventories/production/group_vars/all/vault.yml).
    type: path
    required: true
  expect:
    description:
      - "C({vault_var: {host: value}}): values the file must hold before the change; C(null) means
        the entry must be absent."
    type: dict
  set:
    description: "C({vault_var: {host: value}}): entries to add or replace."
    type: dict
  unset:
    description: "C({vault_var: [host, ...]}): entries to remove; a mapping left empty is removed."
    type: dict
  audit:
    description:
      - Audit entries, each with C(host), C(secret), C(event) and optional C(detail). One line per
        entry, with time (UTC) and who ran it; never a value.
    type: list
    elements: dict
  audit_file:
    description: File on the control node the audit lines are appended to (created 0640).
    type: path
attributes:
  check_mode:
    support: full
    details: Reads and compares; reports C(changed) without writing the vault or the audit file.
  diff_mode:
    support: none
notes:
  - The task must set C(no_log: true) when it passes secret values (O(set), O(expect)); the action
    refuses to run otherwise.
  - Returns no secret values.
"""

EXAMPLES = r"""
- name: Record a new pending secret for bbb1
  rotation_vault:
    path: "{{ inventory_dir }}/group_vars/all/vault.yml"
    expect:
      vault_bigbluebutton_secrets_pending: {bbb1.example.org: null}
    set:
      vault_bigbluebutton_secrets_pending: {bbb1.example.org: "{{ new_secret }}"}
    audit:
      - {host: bbb1.example.org, secret: bbb_api, event: started}
    audit_file: "{{ inventory_dir }}/rotation-audit.log"
  delegate_to: localhost
  no_log: true
"""

RETURN = r"""
path:
  description: The vault file, symbolic links resolved.
  returned: always
  type: str
vault_id:
  description: Label of the vault identity the file is encrypted with (C(default) for format 1.1).
  returned: always
  type: str
entries:
  description: For every mapping variable in the file, the hosts it has entries for (names only).
  returned: always
  type: dict
  sample: {vault_bigbluebutton_secrets: [bbb1.example.org, bbb2.example.org]}
audit_lines:
  description: The audit lines written (or, in check mode, that would be written).
  returned: always
  type: list
  elements: str
"""

from ansible.module_utils.basic import AnsibleModule


def main():
    module = AnsibleModule(argument_spec={}, supports_check_mode=True)
    module.fail_json(
        msg="rotation_vault runs on the control node as an action plugin; "
        "add action_plugins/ to ANSIBLE_ACTION_PLUGINS"
    )


if __name__ == "__main__":
    main()

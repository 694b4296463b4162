#!/usr/bin/python
# SmeetOn: health of a BigBlueButton 3.0 server through its HTTP API.

DOCUMENTATION = r"""
---
module: bbb_api_health
short_description: Check a BigBlueButton server through its API (read-only, plus an optional probe)
description:
  - Calls the BigBlueButton (bbb-web) API with a checksummed request and reports whether the
    server is healthy, which version it runs, how many meetings and participants it has, and
    how long each call took.
  - Checks C(index) (API root without checksum, giving version, apiVersion, bbbVersion), C(meetings)
    (getMeetings; proves the secret and checksum algorithm are accepted), C(recordings)
    (getRecordings with limit=1) and C(probe).
  - The C(probe) creates a uniquely named meeting, asks for a join URL with redirect=false and
    checks BBB accepts it (returncode SUCCESS with a url), calls isMeetingRunning, then ends the
    meeting. The meeting is ended even when a step in between failed.
  - Problems are returned as plain-words strings. C(changed) is always false.
  - Stdlib HTTP client (module_utils bbb_api); TLS certificates are verified by default.
version_added: "0.1.0"
author: SmeetOn
options:
  base_url:
    description: API base URL, for example C(https://bbb1.example.org/bigbluebutton/api).
    type: str
    required: true
    aliases: [url]
  secret:
    description: The server's shared secret (C(securitySalt) in bbb-web.properties).
    type: str
    required: true
  checksum_algorithm:
    description:
      - Hash used for the checksum. The server must list it in C(supportedChecksumAlgorithms).
    type: str
    default: sha256
    choices: [sha1, sha256, sha384, sha512]
  checks:
    description: Which checks to run.
    type: list
    elements: str
    default: [index, meetings, recordings, probe]
    choices: [index, meetings, recordings, probe]
  timeout:
    description: Timeout in seconds for each HTTP request.
    type: float
    default: 10
  validate_certs:
    description: Verify the server's TLS certificate. Only switch off for throw-away labs.
    type: bool
    default: true
  ca_path:
    description: PEM file of CA certificates to trust instead of the system store (private CAs).
    type: path
  connect_to:
    description:
      - Open the connection to this C(host:port) instead of the URL's host, while the URL's
        host name is still used for the Host header, TLS SNI and certificate validation
        (like C(curl --connect-to)).
      - For checking one node behind a load balancer, or a lab host behind a port published
        on 127.0.0.1.
    type: str
  min_version:
    description: Minimum acceptable C(bbbVersion) (e.g. C(3.0.0)); lower is a warning problem.
    type: str
  latency_threshold_ms:
    description: A call slower than this many milliseconds is a (warning) problem. 0 disables.
    type: int
    default: 2000
  fail_on_unhealthy:
    description: Fail the task when any problem was found (results are still returned).
    type: bool
    default: false
notes:
  - Check mode is supported. It only reads; the probe meeting is skipped and
    C(probe_skipped)/C(probe_skipped_reason) say so.
  - On real BBB C(isMeetingRunning) turns true only after a client has entered the meeting,
    so C(probe.running=false) is reported but is not a problem.
  - Runs on the controller or on any host that can reach the API (no extra Python packages).
seealso:
  - name: BigBlueButton API reference
    description: Checksum rules, XML responses and messageKeys.
    link: https://docs.bigbluebutton.org/development/api
"""

EXAMPLES = r"""
- name: Check the BBB API (probe meeting included)
  bbb_api_health:
    base_url: "https://{{ inventory_hostname }}/bigbluebutton/api"
    secret: "{{ bbb_secret }}"
    min_version: "3.0.0"
    latency_threshold_ms: 1500
    ca_path: /etc/ssl/lab/pebble-ca.pem
  delegate_to: localhost
  register: bbb_health

- name: Read-only check that fails the play when unhealthy
  bbb_api_health:
    url: "https://bbb1.example.org/bigbluebutton/api"
    secret: "{{ vault_bbb_secret }}"
    checks: [index, meetings]
    fail_on_unhealthy: true

- name: Refuse disruptive work while people are in meetings
  ansible.builtin.assert:
    that: bbb_health.participant_count == 0
    fail_msg: "{{ bbb_health.participant_count }} participants are online"
"""

RETURN = r"""
healthy:
  description: True when no problem at all was found.
  type: bool
  returned: always
status:
  description: Worst problem severity, C(ok), C(warning) or C(critical).
  type: str
  returned: always
version:
  description: C(version) from the API root (the API version, e.g. C(2.0)).
  type: str
  returned: always
apiVersion:
  description: C(apiVersion) from the API root.
  type: str
  returned: always
bbbVersion:
  description: C(bbbVersion) from the API root (e.g. C(3.0.12)); null if not reported.
  type: str
  returned: always
meetings:
  description: Number of meetings from getMeetings (null if the check did not run or failed).
  type: int
  returned: always
participant_count:
  description: Sum of participantCount over all meetings (null if unknown).
  type: int
  returned: always
recordings_reachable:
  description: Whether getRecordings answered SUCCESS (null if not checked).
  type: bool
  returned: always
probe:
  description: What the probe meeting did (null if skipped or not requested).
  type: dict
  returned: always
  contains:
    meeting_id: {description: The probe meeting's ID., type: str}
    created: {description: create succeeded., type: bool}
    joined: {description: join (redirect=false) answered SUCCESS with a url., type: bool}
    running: {description: isMeetingRunning's answer., type: bool}
    ended: {description: end succeeded., type: bool}
probe_skipped:
  description: True when the probe was requested but skipped (check mode).
  type: bool
  returned: always
probe_skipped_reason:
  description: Why the probe was skipped.
  type: str
  returned: always
latency_ms:
  description: Milliseconds per API call name (index, getMeetings, create, ...).
  type: dict
  returned: always
  sample: {index: 12.4, getMeetings: 20.1}
errors:
  description: Error kind per failed check (unreachable, timeout, tls, protocol, failed).
  type: dict
  returned: always
message_keys:
  description:
    - BBB's C(messageKey) per check that got a C(FAILED) answer, for example
      C({meetings: checksumError}) when the secret is wrong.
  type: dict
  returned: always
  sample: {meetings: checksumError}
problems:
  description: Plain-words problem descriptions; empty when healthy.
  type: list
  elements: str
  returned: always
problem_details:
  description: The problems with their severity (warning/critical) and check name.
  type: list
  elements: dict
  returned: always
checksum_algorithm:
  description: Algorithm used for checksums.
  type: str
  returned: always
base_url:
  description: The API base URL used.
  type: str
  returned: always
checks:
  description: The checks that were requested.
  type: list
  elements: str
  returned: always
"""

from ansible.module_utils.basic import AnsibleModule
from ansible.module_utils.bbb_api import (
    ALGORITHMS,
    CHECK_NAMES,
    BBBClient,
    BBBUsageError,
    health_check,
)


def main():
    module = AnsibleModule(
        argument_spec={
            "base_url": {"type": "str", "required": True, "aliases": ["url"]},
            "secret": {"type": "str", "required": True, "no_log": True},
            "checksum_algorithm": {"type": "str", "default": "sha256", "choices": list(ALGORITHMS)},
            "checks": {
                "type": "list",
                "elements": "str",
                "default": list(CHECK_NAMES),
                "choices": list(CHECK_NAMES),
            },
            "timeout": {"type": "float", "default": 10},
            "validate_certs": {"type": "bool", "default": True},
            "ca_path": {"type": "path"},
            "connect_to": {"type": "str"},
            "min_version": {"type": "str"},
            "latency_threshold_ms": {"type": "int", "default": 2000},
            "fail_on_unhealthy": {"type": "bool", "default": False},
        },
        supports_check_mode=True,
    )
    p = module.params
    try:
        client = BBBClient(
            p["base_url"],
            p["secret"],
            algorithm=p["checksum_algorithm"],
            timeout=p["timeout"],
            validate_certs=p["validate_certs"],
            ca_path=p["ca_path"],
            connect_to=p["connect_to"],
        )
        result = health_check(
            client,
            checks=p["checks"],
            min_version=p["min_version"],
            latency_threshold_ms=p["latency_threshold_ms"] or None,
            run_probe_meeting=not module.check_mode,
        )
    except BBBUsageError as exc:
        module.fail_json(msg=f"bad arguments: {exc}", changed=False)
    result["changed"] = False
    if p["fail_on_unhealthy"] and not result["healthy"]:
        module.fail_json(msg="BBB API unhealthy: " + "; ".join(result["problems"]), **result)
    module.exit_json(**result)


if __name__ == "__main__":
    main()

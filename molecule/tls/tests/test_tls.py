"""Verify the `tls` role against a real ACME server (pebble) and real nginx.

Network rule: the test machine talks only to 127.0.0.1 (ports published by
this scenario's containers) and to the containers through `podman exec`.
Nothing is mocked: pebble validates http-01 against nginx on the host under
test; certbot renews through certbot.service as the timer would.
"""

import json
import os
import re
import socket
import ssl
import subprocess
import time
from pathlib import Path

import pytest
import testinfra

WEB = "smeeton-mol-tls-web"
PROV = "smeeton-mol-tls-prov"
FRESH = "smeeton-mol-tls-fresh"
PEBBLE = "smeeton-mol-tls-pebble"
NETWORK = "smeeton-mol-tls"
PEBBLE_ALIAS = "pebble.tls.molecule.smeeton.test"
FQDN = {
    WEB: "web.tls.molecule.smeeton.test",
    PROV: "prov.tls.molecule.smeeton.test",
    FRESH: "fresh.tls.molecule.smeeton.test",
}
HTTPS_PORT = {WEB: 18443, PROV: 18444, FRESH: 18445}
HTTP_PORT = {WEB: 18480, FRESH: 18482}

testinfra_hosts = [f"podman://{WEB}", f"podman://{PROV}"]

SCENARIO = Path(__file__).resolve().parent.parent
PROJECT = SCENARIO.parent.parent


def _state_dir():
    eph = os.environ.get("MOLECULE_EPHEMERAL_DIRECTORY")
    if not eph:
        pytest.fail(
            "MOLECULE_EPHEMERAL_DIRECTORY is not set: run these tests through `molecule verify`"
        )
    return Path(eph) / "tls-test"


def pebble_root():
    return str(_state_dir() / "pebble" / "pebble-root.pem")


def provided_ca():
    return str(_state_dir() / "provided" / "ca.pem")


def ca_for(name):
    return provided_ca() if name == PROV else pebble_root()


def host(name):
    return testinfra.get_host(f"podman://{name}")


# --- helpers: TLS and HTTP over 127.0.0.1 ---------------------------------------


def served_certificate(name, cafile):
    """Handshake with SNI = the host's FQDN; return (der, tls version).

    The chain must validate against cafile and name the FQDN.
    """
    ctx = ssl.create_default_context(cafile=cafile)
    with (
        socket.create_connection(("127.0.0.1", HTTPS_PORT[name]), timeout=10) as sock,
        ctx.wrap_socket(sock, server_hostname=FQDN[name]) as tls,
    ):
        return tls.getpeercert(binary_form=True), tls.version()


def serial_of(der):
    pem = ssl.DER_cert_to_PEM_cert(der)
    out = subprocess.run(
        ["openssl", "x509", "-noout", "-serial"],
        input=pem,
        capture_output=True,
        text=True,
        check=True,
    )
    return out.stdout.strip().split("=", 1)[1]


def served_serial(name):
    der, _ = served_certificate(name, ca_for(name))
    return serial_of(der)


def handshake_with_version(name, version):
    """Try a handshake limited to one TLS version; return the negotiated version or the error."""
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    ctx.check_hostname = False
    ctx.verify_mode = ssl.CERT_NONE
    # Let this client offer TLS 1.0/1.1 at all (OpenSSL 3 hides them at level 1+).
    ctx.set_ciphers("DEFAULT:@SECLEVEL=0")
    ctx.minimum_version = version
    ctx.maximum_version = version
    with socket.create_connection(("127.0.0.1", HTTPS_PORT[name]), timeout=10) as sock:
        try:
            with ctx.wrap_socket(sock, server_hostname=FQDN[name]) as tls:
                return tls.version()
        except ssl.SSLError as exc:
            return exc


def http_request(port, path, host_header, *, use_tls=False, cafile=None, sni=None):
    """Minimal HTTP/1.1 GET; returns (status, headers dict lower-case, body)."""
    sock = socket.create_connection(("127.0.0.1", port), timeout=10)
    if use_tls:
        ctx = ssl.create_default_context(cafile=cafile)
        sock = ctx.wrap_socket(sock, server_hostname=sni)
    with sock:
        sock.sendall(
            f"GET {path} HTTP/1.1\r\nHost: {host_header}\r\nConnection: close\r\n\r\n".encode()
        )
        data = b""
        while chunk := sock.recv(65536):
            data += chunk
    head, _, body = data.partition(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")
    status = int(lines[0].split()[1])
    headers = {}
    for line in lines[1:]:
        key, _, value = line.partition(":")
        headers[key.strip().lower()] = value.strip()
    return status, headers, body


def nginx_pids(h):
    main = h.check_output("systemctl show nginx -p MainPID --value")
    workers = h.check_output(f"pgrep -P {main} | sort | tr '\\n' ' '")
    return main, workers


def force_renewal(h):
    """Run certbot.service (what certbot.timer starts) once with --force-renewal.

    A runtime drop-in (under /run, removed afterwards) only adds
    --force-renewal to the unit's command; the unit's environment (our
    REQUESTS_CA_BUNDLE drop-in) and certbot's deploy hooks are the real ones.
    """
    h.check_output(
        "mkdir -p /run/systemd/system/certbot.service.d && printf '%s\\n' '[Service]' 'ExecStart=' "
        "'ExecStart=/usr/bin/certbot -q renew --no-random-sleep-on-renew --force-renewal' "
        ">/run/systemd/system/certbot.service.d/zz-molecule-force.conf && systemctl daemon-reload"
    )
    try:
        return h.run("systemctl start certbot.service")
    finally:
        h.check_output(
            "rm -f /run/systemd/system/certbot.service.d/zz-molecule-force.conf"
            " && systemctl daemon-reload"
        )


def run_playbook(playbook, limit, *extra_args, timeout=900):
    inventory = os.environ.get("MOLECULE_INVENTORY_FILE")
    if not inventory:
        pytest.fail("MOLECULE_INVENTORY_FILE is not set: run these tests through `molecule verify`")
    cmd = ["ansible-playbook", "-i", inventory, str(playbook), "--limit", limit, *extra_args]
    env = dict(os.environ, ANSIBLE_ROLES_PATH=str(PROJECT / "roles"), ANSIBLE_FORCE_COLOR="0")
    return subprocess.run(
        cmd, capture_output=True, text=True, timeout=timeout, check=False, env=env
    )


def converge(limit, *extra_args):
    return run_playbook(SCENARIO / "converge.yml", limit, *extra_args)


# --- the served certificate and nginx's TLS settings ----------------------------


@pytest.mark.parametrize("name", [WEB, PROV])
def test_served_chain_validates_for_the_fqdn(name):
    der, version = served_certificate(name, ca_for(name))
    assert der
    assert version in ("TLSv1.2", "TLSv1.3")


def test_acme_certificate_was_issued_by_pebble():
    # The leaf's issuer is pebble's intermediate: a real issuance, not a test CA.
    der, _ = served_certificate(WEB, pebble_root())
    pem = ssl.DER_cert_to_PEM_cert(der)
    out = subprocess.run(
        ["openssl", "x509", "-noout", "-issuer", "-ext", "subjectAltName"],
        input=pem,
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    assert "Pebble Intermediate CA" in out
    assert f"DNS:{FQDN[WEB]}" in out


def test_chain_does_not_validate_for_another_name():
    ctx = ssl.create_default_context(cafile=pebble_root())
    with (
        socket.create_connection(("127.0.0.1", HTTPS_PORT[WEB]), timeout=10) as sock,
        pytest.raises(ssl.SSLCertVerificationError),
    ):
        ctx.wrap_socket(sock, server_hostname="other.tls.molecule.smeeton.test")


@pytest.mark.parametrize(
    "version", [ssl.TLSVersion.TLSv1, ssl.TLSVersion.TLSv1_1], ids=["tls1.0", "tls1.1"]
)
def test_old_tls_versions_are_refused(version):
    result = handshake_with_version(WEB, version)
    assert isinstance(result, ssl.SSLError), f"handshake succeeded with {result}"
    # The server answered with a protocol_version alert: it refused, not this client.
    assert (
        "TLSV1_ALERT_PROTOCOL_VERSION" in str(result) or "protocol version" in str(result).lower()
    ), result


@pytest.mark.parametrize(
    ("version", "expected"),
    [(ssl.TLSVersion.TLSv1_2, "TLSv1.2"), (ssl.TLSVersion.TLSv1_3, "TLSv1.3")],
    ids=["tls1.2", "tls1.3"],
)
def test_tls12_and_tls13_are_accepted(version, expected):
    assert handshake_with_version(WEB, version) == expected


def test_hsts_header_on_https():
    status, headers, _ = http_request(
        HTTPS_PORT[WEB], "/", FQDN[WEB], use_tls=True, cafile=pebble_root(), sni=FQDN[WEB]
    )
    assert "strict-transport-security" in headers, (status, headers)
    assert headers["strict-transport-security"] == "max-age=63072000"
    assert "server" in headers and "/" not in headers["server"]  # server_tokens off


@pytest.mark.parametrize("host_header", [FQDN[WEB], "127.0.0.1"], ids=["fqdn", "ip"])
def test_plain_http_redirects_to_https(host_header):
    status, headers, _ = http_request(HTTP_PORT[WEB], "/some/page?x=1", host_header)
    assert status == 301
    assert headers["location"] == f"https://{FQDN[WEB]}/some/page?x=1"


def test_acme_challenge_path_is_served_over_http_not_redirected():
    h = host(WEB)
    token = "molecule-probe-token"
    h.check_output(
        f"mkdir -p /var/www/smeeton-acme/.well-known/acme-challenge && "
        f"printf probe-ok >/var/www/smeeton-acme/.well-known/acme-challenge/{token}"
    )
    try:
        status, _, body = http_request(
            HTTP_PORT[WEB], f"/.well-known/acme-challenge/{token}", FQDN[WEB]
        )
        assert (status, body) == (200, b"probe-ok")
    finally:
        h.check_output(f"rm -f /var/www/smeeton-acme/.well-known/acme-challenge/{token}")


# --- files, permissions and the renewal machinery -------------------------------


@pytest.mark.parametrize("name", [WEB, PROV])
def test_private_key_is_not_world_readable(name):
    h = host(name)
    live = f"/etc/ssl/smeeton/{FQDN[name]}"
    key = h.file(f"{live}/privkey.pem")
    assert key.exists and key.user == "root" and key.group == "ssl-cert"
    assert key.mode == 0o640
    assert h.file(live).mode == 0o750
    bundle = h.file("/etc/smeeton-molecule/bundle.pem")
    assert bundle.mode == 0o640
    # The bundle a deploy hook wrote: the full chain, then the key.
    expected = h.file(f"{live}/fullchain.pem").content_string + key.content_string
    assert bundle.content_string == expected


def test_renewal_runs_on_the_host_by_itself():
    h = host(WEB)
    assert h.service("certbot.timer").is_enabled
    assert h.service("certbot.timer").is_running
    env = h.check_output("systemctl show certbot.service -p Environment --value")
    assert "REQUESTS_CA_BUNDLE=/etc/smeeton/tls/acme-ca-bundle.pem" in env
    assert h.file("/etc/letsencrypt/renewal-hooks/deploy/00-smeeton-tls").mode & 0o111


def test_forced_renewal_without_ansible_is_served_without_restart():
    h = host(WEB)
    old_serial = served_serial(WEB)
    main_before, workers_before = nginx_pids(h)
    runs_before = h.file("/etc/smeeton-molecule/hook-runs").content_string.count("\n")
    result = force_renewal(h)
    assert result.rc == 0, result.stderr + h.run("journalctl -u certbot -n 30 --no-pager").stdout
    new_serial = served_serial(WEB)  # validates against pebble's root for the FQDN
    assert new_serial != old_serial
    main_after, workers_after = nginx_pids(h)
    assert main_after == main_before, "nginx was restarted, not reloaded"
    assert workers_after != workers_before, "nginx was not reloaded"
    # The deployed files are certbot's new ones, and the other hook ran too.
    lineage = h.check_output(f"sha256sum < /etc/letsencrypt/live/{FQDN[WEB]}/fullchain.pem")
    live = h.check_output(f"sha256sum < /etc/ssl/smeeton/{FQDN[WEB]}/fullchain.pem")
    assert lineage == live
    assert h.file("/etc/smeeton-molecule/hook-runs").content_string.count("\n") == runs_before + 1


def test_renewal_with_acme_unreachable_keeps_the_old_certificate():
    h = host(WEB)
    old_serial = served_serial(WEB)
    subprocess.run(
        ["podman", "network", "disconnect", NETWORK, PEBBLE], check=True, capture_output=True
    )
    try:
        result = force_renewal(h)
        assert result.rc != 0, "renewal succeeded although pebble was disconnected"
        assert served_serial(WEB) == old_serial
        assert h.service("nginx").is_running
        assert h.run("nginx -t -q").rc == 0
        lineage = h.check_output(f"sha256sum < /etc/letsencrypt/live/{FQDN[WEB]}/fullchain.pem")
        live = h.check_output(f"sha256sum < /etc/ssl/smeeton/{FQDN[WEB]}/fullchain.pem")
        assert lineage == live
    finally:
        subprocess.run(
            ["podman", "network", "connect", "--alias", PEBBLE_ALIAS, NETWORK, PEBBLE],
            check=True,
            capture_output=True,
        )


def test_converge_after_renewals_changes_nothing_and_does_not_reload():
    """Idempotence, with proof that nginx was not reloaded, after the host renewed by itself."""
    pids_before = {name: nginx_pids(host(name)) for name in (WEB, PROV)}
    result = converge(f"{WEB},{PROV}")
    out = result.stdout + result.stderr
    assert result.returncode == 0, out
    for name in (WEB, PROV):
        assert f"{name}" in out
    recap = [line for line in out.splitlines() if re.search(r"\bok=\d+\s+changed=", line)]
    assert len(recap) == 2, out
    changed_tasks, task = [], ""
    for line in out.splitlines():
        if line.startswith(("TASK [", "RUNNING HANDLER [")):
            task = line.split("[", 1)[1].rsplit("]", 1)[0]
        elif line.startswith("changed:"):
            changed_tasks.append((task, line))
    assert all(re.search(r"\bchanged=0\b", line) for line in recap), (recap, changed_tasks)
    for name in (WEB, PROV):
        assert nginx_pids(host(name)) == pids_before[name], f"nginx on {name} was reloaded"


# --- provided mode: a new certificate from Ansible runs the same hooks ----------


def _make_provided_cert(tmp_path, key_path):
    """Issue a new certificate for the provided host from the test CA."""
    prov = _state_dir() / "provided"
    csr = tmp_path / "new.csr"
    crt = tmp_path / "new.pem"
    ext = tmp_path / "ext.cnf"
    ext.write_text(f"subjectAltName=DNS:{FQDN[PROV]}\nextendedKeyUsage=serverAuth\n")
    subprocess.run(
        [
            "openssl",
            "req",
            "-new",
            "-key",
            str(key_path),
            "-subj",
            f"/CN={FQDN[PROV]}",
            "-out",
            str(csr),
        ],
        check=True,
        capture_output=True,
    )
    subprocess.run(
        [
            "openssl", "x509", "-req", "-in", str(csr), "-days", "30",
            "-CA", str(prov / "ca.pem"), "-CAkey", str(prov / "ca-key.pem"),
            "-CAcreateserial", "-CAserial", str(tmp_path / "ca.srl"),
            "-extfile", str(ext), "-out", str(crt),
        ],
        check=True,
        capture_output=True,
    )  # fmt: skip
    return crt.read_text() + (prov / "ca.pem").read_text()


def test_provided_certificate_change_runs_the_deploy_hooks(tmp_path):
    h = host(PROV)
    prov = _state_dir() / "provided"
    old_serial = served_serial(PROV)
    main_before, _ = nginx_pids(h)
    chain = _make_provided_cert(tmp_path, prov / "privkey.pem")
    extra = tmp_path / "vars.json"
    extra.write_text(json.dumps({"tls_provided_certificate": chain}))
    try:
        result = converge(PROV, "-e", f"@{extra}")
        out = result.stdout + result.stderr
        assert result.returncode == 0, out
        assert "RUNNING HANDLER [tls : Run the TLS deploy hooks]" in out
        assert served_serial(PROV) != old_serial
        assert nginx_pids(h)[0] == main_before
        bundle = h.file("/etc/smeeton-molecule/bundle.pem").content_string
        assert bundle.startswith(chain.split("-----END CERTIFICATE-----")[0])
    finally:
        # Back to the scenario's certificate, so reruns start from the same state.
        restore = converge(PROV)
        assert restore.returncode == 0, restore.stdout + restore.stderr


# --- bad input fails before any change, naming the variable ---------------------

WATCHED = " ".join(
    [
        "/etc/nginx",
        "/etc/letsencrypt",
        "/etc/ssl/smeeton",
        "/etc/smeeton",
        "/etc/systemd/system",
        "/etc/smeeton-molecule",
    ]
)


def _snapshot(h):
    files = h.check_output(f"find {WATCHED} -xtype f -exec sha256sum {{}} + 2>/dev/null | sort")
    links = h.check_output(f"find {WATCHED} -type l -printf '%p -> %l\\n' | sort")
    return files + links + repr(nginx_pids(h))


@pytest.mark.parametrize(
    ("limit", "extra", "named"),
    [
        (WEB, {"tls_acme_email": ""}, "tls_acme_email"),
        (WEB, {"tls_acme_email": "ops at example"}, "tls_acme_email"),
        (WEB, {"tls_acme_email": "ops@localhost"}, "tls_acme_email"),
        (WEB, {"tls_fqdn": "web"}, "tls_fqdn"),
        (WEB, {"tls_fqdn": "Web_Host.example"}, "tls_fqdn"),
        (
            WEB,
            {"tls_acme_directory_url": "http://pebble.tls.molecule.smeeton.test/dir"},
            "tls_acme_directory_url",
        ),
        (PROV, "other-key", "tls_provided_private_key"),
        (PROV, {"tls_provided_private_key": ""}, "tls_provided_private_key"),
        (PROV, {"tls_fqdn": "other.tls.molecule.smeeton.test"}, "tls_fqdn"),
        (PROV, {"tls_mode": "letsencrypt"}, "tls_mode"),
    ],
    ids=[
        "email-missing",
        "email-malformed",
        "email-no-domain",
        "fqdn-single-label",
        "fqdn-invalid-chars",
        "directory-not-https",
        "provided-key-mismatch",
        "provided-key-missing",
        "provided-cert-other-name",
        "unknown-mode",
    ],
)
def test_bad_input_fails_before_any_change(tmp_path, limit, extra, named):
    h = host(limit)
    if extra == "other-key":
        extra = {
            "tls_provided_private_key": (_state_dir() / "provided" / "other-key.pem").read_text()
        }
    extra_file = tmp_path / "vars.json"
    extra_file.write_text(json.dumps(extra))
    before = _snapshot(h)
    result = converge(limit, "-e", f"@{extra_file}")
    out = result.stdout + result.stderr
    assert result.returncode != 0, out
    assert named in out, out
    assert "changed=0" in out, out
    assert _snapshot(h) == before
    if "private_key" in json.dumps(extra):
        assert "BEGIN PRIVATE KEY" not in out and "BEGIN EC PRIVATE KEY" not in out


# --- health check -----------------------------------------------------------------


@pytest.mark.parametrize(
    ("warn", "fail", "status", "rc_ok"),
    [(21, 7, "ok", True), (5000, 7, "warning", True), (5000, 4000, "critical", False)],
    ids=["ok", "warning", "critical"],
)
def test_health_certificate_reports_days_left(warn, fail, status, rc_ok):
    # pebble's certificates are valid for about five years (~1826 days).
    result = run_playbook(
        SCENARIO / "health.yml",
        WEB,
        "-e",
        json.dumps(
            {
                "tls_health_connect_host": "127.0.0.1",
                "tls_health_port": HTTPS_PORT[WEB],
                "tls_health_ca_cert": pebble_root(),
                "tls_health_warn_days": warn,
                "tls_health_fail_days": fail,
            }
        ),
    )
    out = result.stdout + result.stderr
    assert (result.returncode == 0) == rc_ok, out
    assert f"{status.upper()}: {FQDN[WEB]} certificate" in out, out
    days = int(out.split(f"{FQDN[WEB]} certificate, ")[1].split(" days left")[0])
    assert 1700 < days < 1900, out


def test_health_certificate_unreachable_is_critical():
    result = run_playbook(
        SCENARIO / "health.yml",
        WEB,
        "-e",
        json.dumps({"tls_health_connect_host": "127.0.0.1", "tls_health_port": 18499}),
    )
    out = result.stdout + result.stderr
    assert result.returncode != 0, out
    assert f"CRITICAL: {FQDN[WEB]} certificate" in out
    assert "cannot read the certificate" in out


# --- first run with the ACME server unreachable, then recovery ------------------


def test_first_run_with_acme_unreachable_fails_clearly_then_recovers():
    h = host(FRESH)
    bad = f"https://{PEBBLE_ALIAS}:14999/dir"  # nothing listens there
    result = converge(
        FRESH, "-e", "tls_molecule_hosts=fresh", "-e", f"tls_acme_directory_url={bad}"
    )
    out = result.stdout + result.stderr
    assert result.returncode != 0, out
    assert f"Could not obtain a certificate for {FQDN[FRESH]}" in out, out
    assert "tls_acme_directory_url" in out and bad in out
    # nginx keeps running with a valid configuration: HTTP serves the redirect.
    assert h.service("nginx").is_running
    assert h.run("nginx -t -q").rc == 0
    status, headers, _ = http_request(HTTP_PORT[FRESH], "/", FQDN[FRESH])
    assert status == 301 and headers["location"] == f"https://{FQDN[FRESH]}/"
    assert not h.file(f"/etc/ssl/smeeton/{FQDN[FRESH]}/fullchain.pem").exists

    # With the ACME server reachable, the next run obtains and serves the certificate.
    result = converge(FRESH, "-e", "tls_molecule_hosts=fresh")
    out = result.stdout + result.stderr
    assert result.returncode == 0, out
    der, _ = served_certificate(FRESH, pebble_root())
    assert der
    # Retry the handshake briefly: the HTTPS server was just added by a reload.
    for _ in range(5):
        try:
            status, headers, _ = http_request(
                HTTPS_PORT[FRESH],
                "/",
                FQDN[FRESH],
                use_tls=True,
                cafile=pebble_root(),
                sni=FQDN[FRESH],
            )
            break
        except OSError:
            time.sleep(1)
    assert "strict-transport-security" in headers

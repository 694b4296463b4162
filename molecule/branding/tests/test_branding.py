"""Verify the smeeton_branding role on its molecule host.

Files and nginx are checked through `podman exec` (testinfra's podman
backend); HTTP over HTTPS from this machine to the published port on
127.0.0.1, trusting only the scenario's test CA; the landing page in a real
headless browser (Debian's chromium driven by selenium through
/usr/bin/chromedriver).
"""

import hashlib
import http.client
import io
import json
import os
import socket
import ssl
import tempfile
from pathlib import Path

import pytest
import yaml
from jproperties import Properties

HOST = "smeeton-mol-branding-bbb"
testinfra_hosts = [f"podman://{HOST}"]

FQDN = "bbb.branding.molecule.smeeton.test"
PORT = 18743
REPO = Path(__file__).resolve().parents[3]
DIST = REPO / "roles" / "smeeton_branding" / "files" / "dist"
ARTIFACTS = REPO / "artifacts" / "branding"
CERT_DIR = Path(os.environ.get("MOLECULE_EPHEMERAL_DIRECTORY", "/nonexistent")) / "branding-test"
CA_FILE = CERT_DIR / "ca.pem"


class _Conn(http.client.HTTPSConnection):
    """HTTPS to 127.0.0.1, validating the certificate for FQDN (SNI too)."""

    def connect(self):
        sock = socket.create_connection((self.host, self.port), self.timeout)
        self.sock = self._context.wrap_socket(sock, server_hostname=FQDN)


def fetch(path):
    ctx = ssl.create_default_context(cafile=str(CA_FILE))
    conn = _Conn("127.0.0.1", PORT, context=ctx, timeout=10)
    try:
        conn.request("GET", path, headers={"Host": FQDN})
        resp = conn.getresponse()
        return resp.status, {k.lower(): v for k, v in resp.getheaders()}, resp.read()
    finally:
        conn.close()


# --- Files and nginx on the host ------------------------------------------------


def test_assets_installed_in_web_root(host):
    for name in ("logo.png", "logo-dark.png", "logo.svg", "favicon.ico", "default.pdf"):
        f = host.file(f"/var/www/smeeton-branding/{name}")
        assert f.is_file and f.user == "root" and f.mode == 0o644, name
    for name in ("logo.png", "logo-dark.png", "favicon.ico", "default.pdf"):
        want = hashlib.sha256((DIST / name).read_bytes()).hexdigest()
        assert host.file(f"/var/www/smeeton-branding/{name}").sha256sum == want, name


def test_snippet_in_bbb_include_dir_and_nginx_config_valid(host):
    snippet = host.file("/etc/bigbluebutton/nginx/smeeton-branding.nginx")
    assert snippet.is_file
    text = snippet.content_string
    assert "location = / {" in text
    assert "location = /favicon.ico {" in text
    assert "location ^~ /smeeton/ {" in text
    assert "add_header" not in text.split("# Assets", 1)[1]
    assert host.run("nginx -t").rc == 0
    dump = host.check_output("nginx -T 2>/dev/null")
    assert "include /etc/bigbluebutton/nginx/*.nginx;" in dump
    # No backup left behind (nginx would include it too if it ended in .nginx).
    assert host.file("/etc/bigbluebutton/nginx").listdir() == ["smeeton-branding.nginx"]


# --- bbb-web.properties and bbb-html5.yml values --------------------------------


def test_web_properties_round_trip_through_a_java_properties_parser(host):
    raw = host.file("/etc/smeeton-molecule/bbb-web-branding.properties").content
    original = json.loads(host.file("/etc/smeeton-molecule/bbb-web-branding.json").content_string)
    raw.decode("ascii")  # pure ASCII: ISO-8859-1 and UTF-8 readers agree
    props = Properties()
    props.load(io.BytesIO(raw), "iso-8859-1")
    parsed = {k: props[k].data for k in props}
    expected = {k: (str(v).lower() if isinstance(v, bool) else str(v)) for k, v in original.items()}
    assert parsed == expected
    # The default welcome message holds a character outside ISO-8859-1 (em dash).
    assert b"\\u2014" in raw
    assert "—" in parsed["defaultWelcomeMessage"]


def test_web_properties_keys_and_values(host):
    values = json.loads(host.file("/etc/smeeton-molecule/bbb-web-branding.json").content_string)
    base = "${bigbluebutton.web.serverURL}/smeeton"
    assert values["useDefaultLogo"] is True
    assert values["defaultLogoURL"] == f"{base}/logo.png"
    assert values["useDefaultDarkLogo"] is True
    assert values["defaultDarkLogoURL"] == f"{base}/logo-dark.png"
    assert values["beans.presentationService.defaultUploadedPresentation"] == f"{base}/default.pdf"
    welcome = values["defaultWelcomeMessage"]
    assert "Selamat datang" in welcome and "%%CONFNAME%%" in welcome
    footer = values["defaultWelcomeMessageFooter"]
    assert "%%DIALNUM%%" in footer and "%%CONFNUM%%" in footer and "telepon" in footer


def test_html5_settings(host):
    text = host.file("/etc/smeeton-molecule/bbb-html5-branding.yml").content_string
    settings = yaml.safe_load(text)
    app = settings["public"]["app"]
    assert app["clientTitle"] == "SmeetOn"
    assert app["appName"] == "SmeetOn"
    assert app["helpLink"] == f"https://{FQDN}/"
    assert app["customStyleUrl"] == f"https://{FQDN}/smeeton/smeeton.css"
    assert app["branding"]["displayBrandingArea"] is True
    assert app["askForFeedbackOnLogout"] is False
    assert app["defaultSettings"]["application"]["overrideLocale"] == "id"
    assert app["defaultSettings"]["application"]["fallbackLocale"] == "en"


# --- HTTPS on 127.0.0.1 --------------------------------------------------------------


@pytest.mark.parametrize(
    ("path", "ctype", "dist_name"),
    [
        ("/smeeton/logo.png", "image/png", "logo.png"),
        ("/smeeton/logo-dark.png", "image/png", "logo-dark.png"),
        ("/smeeton/favicon.ico", "image/x-icon", "favicon.ico"),
        ("/favicon.ico", "image/x-icon", "favicon.ico"),
        ("/smeeton/default.pdf", "application/pdf", "default.pdf"),
        ("/smeeton/logo.svg", "image/svg+xml", None),
        ("/smeeton/smeeton.css", "text/css", None),
    ],
)
def test_assets_served_over_https(path, ctype, dist_name):
    status, headers, body = fetch(path)
    assert status == 200, path
    assert headers["content-type"].split(";")[0] == ctype, headers["content-type"]
    assert "max-age=604800" in headers.get("cache-control", ""), headers
    # The server's HSTS header survives in our locations (no add_header there).
    assert "max-age=" in headers.get("strict-transport-security", ""), headers
    if dist_name:
        assert body == (DIST / dist_name).read_bytes()
    if ctype == "text/css":
        assert "charset=utf-8" in headers["content-type"]
        assert b"--smeeton-primary: #0B5FA5;" in body


def test_landing_page_served_over_https():
    status, headers, body = fetch("/")
    assert status == 200
    assert headers["content-type"] == "text/html; charset=utf-8"
    assert "no-cache" in headers.get("cache-control", "")
    html = body.decode("utf-8")
    assert '<html lang="id">' in html
    assert "<title>SmeetOn — Rapat Daring Pemerintah Provinsi</title>" in html
    assert "Cara bergabung ke rapat" in html
    assert "Tidak perlu memasang aplikasi" in html
    assert 'src="/smeeton/logo.png"' in html


def test_missing_asset_is_404():
    status, _, _ = fetch("/smeeton/nothing-here.png")
    assert status == 404


# --- A real browser --------------------------------------------------------------


def _spki_sha256_b64(cert_pem: Path) -> str:
    """Base64 SHA-256 of the certificate's public key (chromium's SPKI pin)."""
    import base64

    from cryptography import x509
    from cryptography.hazmat.primitives import serialization

    cert = x509.load_pem_x509_certificate(cert_pem.read_bytes())
    spki = cert.public_key().public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    return base64.b64encode(hashlib.sha256(spki).digest()).decode()


def test_landing_page_renders_in_headless_chromium():
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="smeeton-chromium-") as profile:
        options = webdriver.ChromeOptions()
        options.binary_location = "/usr/bin/chromium"
        for flag in (
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--disable-quic",
            "--no-first-run",
            "--disable-background-networking",
            "--disable-component-update",
            "--disable-sync",
            f"--user-data-dir={profile}",
            "--window-size=1280,900",
            f"--host-resolver-rules=MAP {FQDN} 127.0.0.1",
            # Accept only the test host's own key (the test CA is not in
            # chromium's trust store); every other certificate is checked as usual.
            f"--ignore-certificate-errors-spki-list={_spki_sha256_b64(CERT_DIR / 'cert.pem')}",
        ):
            options.add_argument(flag)
        driver = webdriver.Chrome(options=options, service=Service("/usr/bin/chromedriver"))
        try:
            driver.set_page_load_timeout(30)
            driver.get(f"https://{FQDN}:{PORT}/")
            driver.save_screenshot(str(ARTIFACTS / "landing.png"))
            assert driver.title == "SmeetOn — Rapat Daring Pemerintah Provinsi"
            loaded = driver.execute_script(
                "const i = document.getElementById('logo');"
                "return i.complete && i.naturalWidth > 0 ? i.naturalWidth : 0;"
            )
            assert loaded == 960  # the 2x logo PNG
            text = driver.find_element("tag name", "body").text
            assert "Cara bergabung ke rapat" in text
            assert "Buka tautan undangan rapat" in text
            assert "tidak perlu memasang aplikasi" in text.lower()
            favicon = driver.execute_script("return document.querySelector('link[rel=icon]').href")
            assert favicon == f"https://{FQDN}:{PORT}/favicon.ico"
        finally:
            driver.quit()
    assert (ARTIFACTS / "landing.png").stat().st_size > 0

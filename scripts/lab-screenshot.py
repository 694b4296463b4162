#!/usr/bin/env python3
"""Open the lab's BBB landing page in headless chromium and save a screenshot.

The page is fetched as a participant's browser would: https://<bbb host>/
(the name mapped to the port published on 127.0.0.1). The certificate is
first validated against the lab's pebble root for the host's name; chromium
(which does not trust pebble) is then told to accept that one key only.
Prints the page title and whether the SmeetOn logo and Indonesian text are
there; exits 1 if not. Screenshot: artifacts/lab/landing.png.

Usage: .venv/bin/python scripts/lab-screenshot.py [--host bbb1.lab.smeeton.test] [--port 8443]
"""

import argparse
import base64
import hashlib
import socket
import ssl
import sys
import tempfile
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import serialization
from selenium import webdriver
from selenium.webdriver.chrome.service import Service

REPO = Path(__file__).resolve().parent.parent
PEBBLE_ROOT = REPO / "lab-state" / "pebble" / "pebble-root.pem"
OUT = REPO / "artifacts" / "lab" / "landing.png"


def validated_spki_pin(host: str, port: int) -> str:
    """Handshake with CA + name validation; return chromium's SPKI pin of the leaf."""
    ctx = ssl.create_default_context(cafile=str(PEBBLE_ROOT))
    with (
        socket.create_connection(("127.0.0.1", port), timeout=10) as sock,
        ctx.wrap_socket(sock, server_hostname=host) as tls,
    ):
        der = tls.getpeercert(binary_form=True)
    key = x509.load_der_x509_certificate(der).public_key()
    spki = key.public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    return base64.b64encode(hashlib.sha256(spki).digest()).decode()


def main() -> int:
    ap = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument("--host", default="bbb1.lab.smeeton.test")
    ap.add_argument("--port", type=int, default=8443)
    args = ap.parse_args()
    pin = validated_spki_pin(args.host, args.port)
    OUT.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="smeeton-lab-chromium-") as profile:
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
            f"--host-resolver-rules=MAP {args.host} 127.0.0.1",
            f"--ignore-certificate-errors-spki-list={pin}",
        ):
            options.add_argument(flag)
        driver = webdriver.Chrome(options=options, service=Service("/usr/bin/chromedriver"))
        try:
            driver.set_page_load_timeout(30)
            driver.get(f"https://{args.host}:{args.port}/")
            driver.save_screenshot(str(OUT))
            title = driver.title
            logo = driver.execute_script(
                "const i = document.querySelector('img');"
                "return i && i.complete ? i.naturalWidth : 0;"
            )
            body = driver.find_element("tag name", "body").text
        finally:
            driver.quit()
    joining = "Cara bergabung ke rapat" in body
    ok = "SmeetOn" in title and logo > 0 and joining
    print(f"    title: {title}")
    print(f"    logo loaded: {'yes' if logo else 'NO'} ({logo} px wide)")
    print(f"    Indonesian joining instructions: {'yes' if joining else 'NO'}")
    print(f"    screenshot: {OUT.relative_to(REPO)}")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())

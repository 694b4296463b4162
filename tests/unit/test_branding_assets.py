"""The committed SmeetOn branding assets are what their sources build.

scripts/build-branding-assets.py --check rebuilds logo PNGs, favicon and the
default presentation from roles/smeeton_branding/files/src/ in a temporary
directory and compares them with roles/smeeton_branding/files/dist/
(PNGs by pixels, the PDF by bytes, sources and outputs by the manifest's
sha256). Needs rsvg-convert (librsvg2-bin), reportlab and Pillow.
"""

import io
import struct
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
DIST = REPO / "roles" / "smeeton_branding" / "files" / "dist"


def test_assets_are_up_to_date_with_their_sources():
    result = subprocess.run(
        [sys.executable, str(REPO / "scripts" / "build-branding-assets.py"), "--check"],
        capture_output=True,
        text=True,
        check=False,
    )
    assert result.returncode == 0, result.stderr


def test_assets_have_the_expected_formats():
    from PIL import Image

    for name in ("logo.png", "logo-dark.png"):
        with Image.open(DIST / name) as img:
            assert img.format == "PNG"
            assert img.size == (960, 256)
    ico = (DIST / "favicon.ico").read_bytes()
    reserved, kind, count = struct.unpack_from("<HHH", ico, 0)
    assert (reserved, kind, count) == (0, 1, 3)
    with Image.open(io.BytesIO(ico)) as img:
        assert img.format == "ICO"
        assert {s[0] for s in img.info["sizes"]} == {16, 32, 48}
    pdf = (DIST / "default.pdf").read_bytes()
    assert pdf.startswith(b"%PDF-")
    assert pdf.count(b"/Type /Page\n") == 3

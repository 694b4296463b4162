#!/usr/bin/env python3
"""Build the SmeetOn branding assets from their sources.

Sources (original artwork and text of this project), in
roles/smeeton_branding/files/src/:
  logo.svg, logo-dark.svg  logo for light / dark backgrounds
  mark.svg                 the square mark alone (favicon)
  presentation.yml         text and colours of the default presentation

Outputs, in roles/smeeton_branding/files/dist/ (committed, so the role needs
no build tools on the control node or the hosts):
  logo.png, logo-dark.png  960x256 (2x of the 480x128 SVG)
  favicon.ico              16, 32 and 48 px PNG images in one ICO
  default.pdf              16:9 slides with short Indonesian usage tips
  build-manifest.json      sha256 of every source and output

Usage:
  scripts/build-branding-assets.py           rebuild the outputs
  scripts/build-branding-assets.py --check   fail if the outputs are not what
                                             the sources build (run by the tests)

Tools: rsvg-convert (Debian/Ubuntu package librsvg2-bin) renders the SVGs;
reportlab and Pillow (PyPI, pinned in requirements.txt) write the PDF and read
PNGs. The PDF is written with reportlab's invariant mode (fixed dates and IDs)
from the committed logo PNG, so the same sources give the same bytes. PNGs can
differ in a few pixel values between librsvg versions, so --check compares
them by pixels with a small tolerance and the PDF by bytes.
"""

from __future__ import annotations

import argparse
import hashlib
import io
import json
import shutil
import struct
import subprocess
import sys
import tempfile
from pathlib import Path

import yaml

REPO = Path(__file__).resolve().parent.parent
ROLE_FILES = REPO / "roles" / "smeeton_branding" / "files"
SRC = ROLE_FILES / "src"
DIST = ROLE_FILES / "dist"

LOGO_SCALE = 2
FAVICON_SIZES = (16, 32, 48)
# Slide size in points: 16:9.
PAGE = (960.0, 540.0)
# --check: largest allowed mean difference per channel value (0-255) between
# a committed PNG and a fresh render (librsvg versions antialias differently).
PNG_MEAN_TOLERANCE = 1.0

SOURCES = ("logo.svg", "logo-dark.svg", "mark.svg", "presentation.yml")
OUTPUTS = ("logo.png", "logo-dark.png", "favicon.ico", "default.pdf")


def sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def rsvg(svg: Path, out: Path, *, width: int | None = None, zoom: float | None = None) -> None:
    rsvg_convert = shutil.which("rsvg-convert")
    if not rsvg_convert:
        sys.exit("rsvg-convert not found: apt-get install librsvg2-bin")
    args = [rsvg_convert, "--format=png", f"--output={out}"]
    if width is not None:
        args += [f"--width={width}", f"--height={width}"]
    if zoom is not None:
        args.append(f"--zoom={zoom}")
    subprocess.run([*args, str(svg)], check=True)  # noqa: S603


def build_logos(out: Path) -> None:
    for name in ("logo", "logo-dark"):
        rsvg(SRC / f"{name}.svg", out / f"{name}.png", zoom=LOGO_SCALE)


def ico_from_pngs(pngs: list[tuple[int, bytes]]) -> bytes:
    """An ICO file holding PNG images (supported by every current browser)."""
    header = struct.pack("<HHH", 0, 1, len(pngs))
    offset = 6 + 16 * len(pngs)
    entries, blobs = b"", b""
    for size, data in pngs:
        dim = 0 if size >= 256 else size
        entries += struct.pack("<BBBBHHII", dim, dim, 0, 0, 1, 32, len(data), offset)
        blobs += data
        offset += len(data)
    return header + entries + blobs


def build_favicon(out: Path) -> None:
    pngs = []
    with tempfile.TemporaryDirectory() as tmp:
        for size in FAVICON_SIZES:
            png = Path(tmp) / f"{size}.png"
            rsvg(SRC / "mark.svg", png, width=size)
            pngs.append((size, png.read_bytes()))
    (out / "favicon.ico").write_bytes(ico_from_pngs(pngs))


def build_pdf(out: Path, logo_png: Path) -> None:
    from reportlab.lib.colors import HexColor, white  # noqa: PLC0415
    from reportlab.lib.utils import ImageReader, simpleSplit  # noqa: PLC0415
    from reportlab.pdfgen.canvas import Canvas  # noqa: PLC0415

    spec = yaml.safe_load((SRC / "presentation.yml").read_text(encoding="utf-8"))
    colors = {k: HexColor(v) for k, v in spec["colors"].items()}
    width, height = PAGE
    buf = io.BytesIO()
    pdf = Canvas(buf, pagesize=PAGE, invariant=1, pageCompression=1)
    pdf.setTitle(spec["slides"][0]["title"])
    pdf.setAuthor("SmeetOn")
    pdf.setSubject(spec["footer"])
    logo = ImageReader(str(logo_png))
    logo_w, logo_h = logo.getSize()
    slides = spec["slides"]
    for number, slide in enumerate(slides, start=1):
        # Page background and header band with the logo for dark backgrounds.
        pdf.setFillColor(colors["light"])
        pdf.rect(0, 0, width, height, stroke=0, fill=1)
        band = 96
        pdf.setFillColor(colors["dark"])
        pdf.rect(0, height - band, width, band, stroke=0, fill=1)
        pdf.setFillColor(colors["accent"])
        pdf.rect(0, height - band - 6, width, 6, stroke=0, fill=1)
        shown_h = 60
        shown_w = logo_w * shown_h / logo_h
        pdf.drawImage(logo, 40, height - band + 18, shown_w, shown_h, mask="auto")
        # Title, optional subtitle, tips.
        y = height - band - 70
        pdf.setFillColor(colors["dark"])
        pdf.setFont("Helvetica-Bold", 36)
        pdf.drawString(60, y, slide["title"])
        y -= 36
        if slide.get("subtitle"):
            pdf.setFillColor(colors["primary"])
            pdf.setFont("Helvetica", 22)
            pdf.drawString(60, y, slide["subtitle"])
            y -= 40
        else:
            y -= 8
        pdf.setFont("Helvetica", 20)
        for tip in slide["tips"]:
            lines = simpleSplit(tip, "Helvetica", 20, width - 150)
            pdf.setFillColor(colors["accent"])
            pdf.rect(62, y - 2, 12, 12, stroke=0, fill=1)
            pdf.setFillColor(colors["dark"])
            for line in lines:
                pdf.drawString(90, y, line)
                y -= 26
            y -= 10
        # Footer.
        pdf.setFillColor(colors["primary"])
        pdf.rect(0, 0, width, 34, stroke=0, fill=1)
        pdf.setFillColor(white)
        pdf.setFont("Helvetica", 12)
        pdf.drawString(40, 12, spec["footer"])
        pdf.drawRightString(width - 40, 12, f"{number}/{len(slides)}")
        pdf.showPage()
    pdf.save()
    (out / "default.pdf").write_bytes(buf.getvalue())


def manifest(out: Path) -> dict:
    return {
        "generator": "scripts/build-branding-assets.py",
        "script_sha256": sha256(Path(__file__).resolve()),
        "sources": {name: sha256(SRC / name) for name in SOURCES},
        "outputs": {name: sha256(out / name) for name in OUTPUTS},
    }


def build(out: Path, logo_for_pdf: Path | None = None) -> None:
    out.mkdir(parents=True, exist_ok=True)
    build_logos(out)
    build_favicon(out)
    build_pdf(out, logo_for_pdf or out / "logo-dark.png")


def png_mean_difference(a: bytes, b: bytes) -> float:
    from PIL import Image, ImageChops  # noqa: PLC0415

    img_a = Image.open(io.BytesIO(a)).convert("RGBA")
    img_b = Image.open(io.BytesIO(b)).convert("RGBA")
    if img_a.size != img_b.size:
        return float("inf")
    diff = ImageChops.difference(img_a, img_b)
    # histogram(): 256 counts per band (R, G, B, A); index % 256 is the difference.
    total = sum((i % 256) * count for i, count in enumerate(diff.histogram()))
    return total / (img_a.size[0] * img_a.size[1] * 4)


def ico_images(data: bytes) -> list[bytes]:
    _, _, count = struct.unpack_from("<HHH", data, 0)
    images = []
    for i in range(count):
        size, offset = struct.unpack_from("<II", data, 6 + 16 * i + 8)
        images.append(data[offset : offset + size])
    return images


def check() -> list[str]:
    problems = []
    recorded_path = DIST / "build-manifest.json"
    if not recorded_path.exists():
        return [f"{recorded_path} is missing: run scripts/build-branding-assets.py"]
    recorded = json.loads(recorded_path.read_text())
    if recorded["sources"] != {name: sha256(SRC / name) for name in SOURCES}:
        problems.append("a source changed since the last build (build-manifest.json sources)")
    if recorded["script_sha256"] != sha256(Path(__file__).resolve()):
        problems.append("the build script changed since the last build")
    for name in OUTPUTS:
        if not (DIST / name).exists():
            problems.append(f"{name} is missing")
        elif recorded["outputs"].get(name) != sha256(DIST / name):
            problems.append(f"{name} was changed by hand (sha256 differs from build-manifest.json)")
    with tempfile.TemporaryDirectory() as tmp:
        fresh = Path(tmp)
        # The PDF is rebuilt from the committed logo, so it must match byte for byte.
        build(fresh, logo_for_pdf=DIST / "logo-dark.png")
        for name in ("logo.png", "logo-dark.png"):
            if (DIST / name).exists():
                ours, new = (DIST / name).read_bytes(), (fresh / name).read_bytes()
                mean = png_mean_difference(ours, new)
                if mean > PNG_MEAN_TOLERANCE:
                    problems.append(f"{name} differs from a fresh render (mean diff {mean:.2f})")
        if (DIST / "favicon.ico").exists():
            ours = ico_images((DIST / "favicon.ico").read_bytes())
            new = ico_images((fresh / "favicon.ico").read_bytes())
            pairs = zip(ours, new, strict=False)
            if len(ours) != len(new) or any(
                png_mean_difference(a, b) > PNG_MEAN_TOLERANCE for a, b in pairs
            ):
                problems.append("favicon.ico differs from a fresh render")
        if (DIST / "default.pdf").exists() and (DIST / "default.pdf").read_bytes() != (
            fresh / "default.pdf"
        ).read_bytes():
            problems.append("default.pdf differs from a fresh build")
    return problems


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--check", action="store_true", help="verify instead of building")
    args = parser.parse_args()
    if args.check:
        problems = check()
        for problem in problems:
            print(f"out of date: {problem}", file=sys.stderr)
        if problems:
            print("rebuild with: scripts/build-branding-assets.py", file=sys.stderr)
            return 1
        print("branding assets are up to date")
        return 0
    build(DIST)
    (DIST / "build-manifest.json").write_text(json.dumps(manifest(DIST), indent=2) + "\n")
    for name in OUTPUTS:
        print(f"wrote {(DIST / name).relative_to(REPO)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

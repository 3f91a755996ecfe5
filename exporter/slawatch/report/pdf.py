"""Print the HTML report to PDF with headless Chromium (Debian package `chromium`)."""

from __future__ import annotations

import logging
import os
import shutil
import subprocess
import tempfile
from pathlib import Path

from .queries import ReportError

logger = logging.getLogger("slawatch.report")

BROWSERS = ("chromium", "chromium-browser", "google-chrome")
TIMEOUT = 120.0
# Keep Chromium off the network. The report has no external assets, and every
# host name except loopback resolves to "not found", so background services
# (updates, safe browsing, metrics) cannot reach another host by name.
OFFLINE_FLAGS = (
    "--host-resolver-rules=MAP * ~NOTFOUND, EXCLUDE localhost, EXCLUDE 127.0.0.1",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-default-apps",
    "--disable-sync",
    "--no-first-run",
    "--disable-breakpad",
)


def find_browser() -> str | None:
    return next((path for name in BROWSERS if (path := shutil.which(name))), None)


def print_pdf(html: Path, pdf: Path) -> Path:
    """Write `pdf` from the report file `html`; raise ReportError when no browser is installed or it fails."""
    browser = find_browser()
    if browser is None:
        raise ReportError(f"no {' or '.join(BROWSERS)} on PATH to print the PDF: install the Debian package "
                          "chromium, or leave out --pdf")
    with tempfile.TemporaryDirectory(prefix="slawatch-chromium-") as profile:
        command = [browser, "--headless", "--disable-gpu", f"--user-data-dir={profile}", *OFFLINE_FLAGS,
                   "--no-pdf-header-footer", f"--print-to-pdf={pdf}", html.resolve().as_uri()]
        if hasattr(os, "geteuid") and os.geteuid() == 0:
            # Chromium refuses to start its sandbox as root.
            command.insert(1, "--no-sandbox")
        try:
            result = subprocess.run(command, capture_output=True, text=True, timeout=TIMEOUT)
        except subprocess.TimeoutExpired:
            raise ReportError(f"{browser} did not print {pdf} within {TIMEOUT:.0f}s") from None
    if result.returncode != 0 or not pdf.is_file():
        tail = (result.stderr or result.stdout).strip().splitlines()[-3:]
        raise ReportError(f"{browser} failed to print {pdf} (exit code {result.returncode}): {' '.join(tail)}")
    logger.info("Printed report pdf=%s browser=%s", pdf, browser)
    return pdf

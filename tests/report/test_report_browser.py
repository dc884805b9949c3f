"""Open report.html in a real browser (headless Chromium) and check what it shows.

Skipped when Chromium is not installed (Debian: ``apt-get install chromium``).
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
from pathlib import Path

import numpy as np
import pytest
from matplotlib import image as mpimg
from test_report import make_comparison

from pyrovi.report import write_report

FLAGS = (
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--virtual-time-budget=5000",
)


def _chromium() -> str | None:
    if os.access("/usr/bin/chromium", os.X_OK):
        return "/usr/bin/chromium"
    return shutil.which("chromium")


CHROMIUM = _chromium()

pytestmark = pytest.mark.skipif(
    CHROMIUM is None,
    reason="Chromium not found (/usr/bin/chromium or chromium on PATH); "
    "install it with `apt-get install chromium` to run the browser test",
)


def _run(args: list[str], tmp_path: Path, name: str) -> subprocess.CompletedProcess[str]:
    profile = tmp_path / f"profile-{name}"
    command = [str(CHROMIUM), *FLAGS, f"--user-data-dir={profile}", *args]
    env = {**os.environ, "HOME": str(tmp_path)}  # keep the browser out of the real home
    try:
        return subprocess.run(
            command, capture_output=True, text=True, timeout=120, check=False, env=env
        )
    except subprocess.TimeoutExpired:
        pytest.fail(f"chromium did not finish within 120 s: {' '.join(command)}")


@pytest.fixture(scope="module")
def rendered(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_report(make_comparison(), tmp_path_factory.mktemp("browser") / "out")["html"]


def test_every_image_loads_and_the_verdict_shows(rendered: Path, tmp_path: Path) -> None:
    result = _run(["--dump-dom", rendered.as_uri()], tmp_path, "dom")
    dom = result.stdout
    assert result.returncode == 0 and "<body" in dom, result.stderr[-2000:]
    body = re.search(r"<body[^>]*>", dom)
    assert body is not None
    attributes = dict(re.findall(r'([\w-]+)="([^"]*)"', body.group(0)))
    assert "data-images-loaded" in attributes, f"the load script did not run: {body.group(0)}"
    total = int(attributes["data-images-total"])
    assert total >= 4
    assert total == int(attributes["data-images-expected"])
    assert int(attributes["data-images-loaded"]) == total
    assert re.search(r'<div id="verdict" class="caution" data-verdict="caution">', dom)


def test_screenshot_is_not_blank(rendered: Path, tmp_path: Path) -> None:
    shot = tmp_path / "shot.png"
    result = _run(
        [f"--screenshot={shot}", "--window-size=1200,2000", rendered.as_uri()], tmp_path, "shot"
    )
    assert shot.is_file(), result.stderr[-2000:]
    pixels = np.asarray(mpimg.imread(shot))
    assert pixels.shape[:2] == (2000, 1200)
    colours = np.unique(pixels[..., :3].reshape(-1, 3), axis=0)
    assert len(colours) > 50  # text, a coloured verdict box, pictures: not a blank page

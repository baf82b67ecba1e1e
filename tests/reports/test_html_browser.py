"""The HTML report in a real browser (headless Chromium): it loads from one file with no network, its script
runs without console errors, and the key elements render. Skips, saying why, only without Chromium."""

import re
import shutil
import subprocess

import pytest

from evalsuite.config import parse_suite
from evalsuite.reports import render_reports
from evalsuite.runner import run_suite

BROWSERS = ("chromium", "chromium-browser", "google-chrome")
FLAGS = [
    "--headless=new",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--enable-logging=stderr",
    "--v=0",
]


@pytest.fixture(scope="module")
def browser():
    found = next((shutil.which(b) for b in BROWSERS if shutil.which(b)), None)
    if found is None:
        pytest.skip("no Chromium on this machine (Debian: apt-get install chromium; .ci/run installs it)")
    return found


@pytest.fixture(scope="module")
def report(tmp_path_factory):
    out = tmp_path_factory.mktemp("report")
    config = parse_suite(
        {
            "name": "browser",
            "variants": ["W8A8_INT8", "MXFP4"],
            "suites": {"academic": {"tasks": ["tiny_mc", "tiny_arith"], "limit": 40}, "fidelity": {"limit": 6}},
            "run": {
                "batch_size": 16,
                "bootstrap_iters": 100,
                "measure_speed": True,
                "calibration": {"samples": 4, "seq_len": 64},
            },
        }
    )
    outcome = run_suite(config, out / "run")
    _, html = render_reports(outcome.results_path)
    return html, outcome.data


def chromium(browser, tmp_path, *args):
    profile = tmp_path / "profile"
    return subprocess.run(
        [browser, *FLAGS, f"--user-data-dir={profile}", *args], capture_output=True, text=True, timeout=120
    )


def test_report_renders_without_console_errors(browser, report, tmp_path):
    html, data = report
    result = chromium(browser, tmp_path, "--dump-dom", html.as_uri())
    assert result.returncode == 0, result.stderr[-2000:]
    dom = result.stdout
    console = [line for line in result.stderr.splitlines() if "CONSOLE" in line]
    assert console == [], console
    assert 'data-ready="1"' in dom, "the report's script did not run to its end"
    for element in (
        'id="verdicts"',
        'id="recovery"',
        'id="recovery-chart"',
        'id="compression-chart"',
        'id="speed-chart"',
        'id="variants"',
        'id="provenance"',
        'id="fidelity"',
        'id="sensitivity"',
    ):
        assert element in dom, element
    assert dom.count('class="card ') == 2
    assert "<svg" in dom and any(v in dom for v in ("recovers", "small loss", "loses accuracy"))
    flipped = sum(len(f.get("samples", [])) for flips in data["flips"].values() for f in flips)
    assert len(re.findall(r"<tr data-variant=", dom)) == flipped
    assert re.search(r'id="flip-count"[^>]*>\d+ shown<', dom) or flipped == 0


def test_report_screenshot(browser, report, tmp_path):
    html, _ = report
    shot = tmp_path / "report.png"
    result = chromium(browser, tmp_path, f"--screenshot={shot}", "--window-size=1280,2400", html.as_uri())
    assert result.returncode == 0, result.stderr[-2000:]
    assert shot.is_file() and shot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and shot.stat().st_size > 20_000
    shutil.copy(shot, html.parent / "report.png")


def test_report_loads_nothing_from_elsewhere(report):
    html, _ = report
    text = html.read_text()
    assert not re.search(r"""(src|href)=["']?(https?:)?//""", text)
    assert "<script src" not in text and "<link" not in text

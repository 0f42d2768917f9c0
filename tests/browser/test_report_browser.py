"""The compile and evaluation reports in a real headless browser: the system's Chromium, driven by
playwright, offline. Each report loads with no console error, draws its plots, and runs no script
from example text. Skipped, saying why, where Chromium or playwright is missing."""

from __future__ import annotations

import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from lmdsl.cli import main
from tests.reports import devset_file, program_file

CHROMIUM = next((found for name in ("chromium", "chromium-browser") if (found := shutil.which(name))), None)
pytestmark = pytest.mark.skipif(
    CHROMIUM is None,
    reason="Chromium is not installed (Debian: apt-get install chromium): reports not opened in a browser",
)
sync_api = pytest.importorskip("playwright.sync_api", reason="playwright is not installed (pip install playwright)")


@dataclass(frozen=True)
class Shown:
    errors: list[str]
    requests: list[str]
    plots: int
    drawn: int
    marks: int
    pwned: Any


def open_report(path: Path, screenshot: Path) -> Shown:
    """Open `path` offline; what the page showed: errors, plots, points drawn, requests made."""
    errors: list[str] = []
    requests: list[str] = []
    with sync_api.sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, args=["--no-sandbox"])
        try:
            context = browser.new_context(offline=True, viewport={"width": 1280, "height": 1000})
            page = context.new_page()
            page.on("console", lambda message: errors.append(message.text) if message.type == "error" else None)
            page.on("pageerror", lambda error: errors.append(str(error)))
            page.on("request", lambda request: requests.append(request.url))
            page.goto(path.as_uri(), wait_until="load")
            page.wait_for_selector(".js-plotly-plot .main-svg", timeout=20_000)
            page.screenshot(path=str(screenshot), full_page=False)
            return Shown(
                errors,
                requests,
                plots=page.locator(".js-plotly-plot").count(),
                drawn=page.locator(".js-plotly-plot .main-svg").count(),
                marks=page.locator(".js-plotly-plot .point, .js-plotly-plot .bars path").count(),
                pwned=page.evaluate("window.pwned === undefined ? null : window.pwned"),
            )
        finally:
            browser.close()


def test_the_compile_report_loads_cleanly_and_draws_its_plots(tmp_path: Path) -> None:
    report = tmp_path / "compile.html"
    assert main(["compile", f"{program_file(tmp_path)}:classify", "--dry-run", "--report", str(report)]) == 0
    shown = open_report(report, tmp_path / "compile.png")
    assert shown.errors == []
    assert shown.pwned is None  # the hostile example text ran nothing
    assert shown.plots == 2 and shown.drawn >= 2
    assert shown.marks >= 3 + 3  # three scored candidates as points, three bars
    assert all(url.startswith(("file:", "data:")) for url in shown.requests)
    assert (tmp_path / "compile.png").stat().st_size > 10_000


def test_the_eval_report_loads_cleanly_and_draws_its_plots(tmp_path: Path) -> None:
    report = tmp_path / "eval.html"
    args = [
        "eval",
        f"{program_file(tmp_path)}:classify",
        "--devset",
        str(devset_file(tmp_path)),
        "--report",
        str(report),
    ]
    assert main(args) == 0
    shown = open_report(report, tmp_path / "eval.png")
    assert shown.errors == [] and shown.pwned is None
    assert shown.plots == 1  # the score histogram (no errors to chart)

"""The demo as a user meets it, and its reports in a real browser.

A tiny run of every demo model (``python -m demo_models all --samples 3000 --epochs 2``, about 20 s) in a fresh
process: its stdout says what it does and ends with one list of the reports and the TensorBoard command; its
stderr carries no warning of the project's making. Then every report it wrote, and the two comparisons the demo
suggests, are opened in headless Chromium (Debian's ``chromium``; ``scripts/setup.sh`` installs it when apt-get
can), whose own layout engine checks, by a script run in the page once it has loaded: every image decoded
(``naturalWidth > 0``), no element reaching past the page's width, no heading, caption, table cell or finding whose
text is cut (``scrollWidth > clientWidth``), and no figure shrunk below 70% of its own width (its lettering would
shrink with it). ``LRA_BROWSER_REPORTS=DIR`` checks every report under DIR as well (the full demo's ``runs/``).
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]

CHECK = """<script>window.addEventListener('load', () => {
  const view = document.documentElement.clientWidth, out = {view: view, page: document.documentElement.scrollWidth,
    images: document.images.length, broken: [], wide: [], cut: [], shrunk: []};
  const say = el => (el.tagName + ' ' + (el.getAttribute('alt') || el.textContent || '').trim()).slice(0, 90);
  for (const img of document.images) {
    if (!img.complete || img.naturalWidth === 0) out.broken.push(say(img));
    else if (img.clientWidth < 0.7 * img.naturalWidth) out.shrunk.push([say(img), img.naturalWidth, img.clientWidth]);
  }
  for (const el of document.body.querySelectorAll('*')) {
    const box = el.getBoundingClientRect();
    if (box.width > 0 && (box.right > view + 1 || box.left < -1)) out.wide.push([say(el), Math.round(box.right)]);
  }
  for (const el of document.body.querySelectorAll('h1, h2, h3, p, li, th, td, figcaption, summary')) {
    if (el.clientWidth > 0 && el.scrollWidth > el.clientWidth + 1) out.cut.push([say(el), el.scrollWidth, el.clientWidth]);
  }
  const pre = document.createElement('pre');
  pre.id = '__check';
  pre.textContent = JSON.stringify(out);
  document.body.appendChild(pre);
});</script>"""


def chromium() -> str:
    for name in ("chromium", "chromium-browser", "google-chrome"):
        if path := shutil.which(name):
            return path
    pytest.skip("headless Chromium not found: install Debian's chromium and chromium-driver (scripts/setup.sh does "
                "when apt-get is available as root), or run on a machine that has them")


def check_page(browser: str, html: Path, tmp: Path) -> dict:
    """The page's layout as Chromium lays it out in a 1280 x 900 window (the check script's result)."""
    page = tmp / f"{html.parent.parent.name}-{html.parent.name}-{html.name}"
    page.write_text(html.read_text().replace("</body>", CHECK + "</body>"))
    profile = tmp / f"profile-{page.stem}"  # one profile a browser: several run at once
    done = subprocess.run([browser, "--headless", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
                           "--no-first-run", f"--user-data-dir={profile}", "--window-size=1280,900",
                           "--virtual-time-budget=10000", "--dump-dom", page.as_uri()],
                          capture_output=True, text=True, timeout=120, check=False)
    found = re.search(r'<pre id="__check">(.*?)</pre>', done.stdout, re.S)
    assert found, f"Chromium did not run the check on {html} (exit {done.returncode}): {done.stderr[-2000:]}"
    return json.loads(found.group(1).replace("&amp;", "&").replace("&lt;", "<").replace("&gt;", ">"))


def problems(result: dict) -> list[str]:
    lines = [f"image not loaded: {b}" for b in result["broken"]]
    lines += [f"wider than the page ({result['view']} px): {w}" for w in result["wide"]]
    lines += [f"text cut: {c}" for c in result["cut"]]
    lines += [f"figure shrunk below 70% of its width: {s}" for s in result["shrunk"]]
    if result["page"] > result["view"]:
        lines.append(f"the page scrolls sideways: {result['page']} px in a {result['view']} px window")
    return lines


@pytest.fixture(scope="module")
def demo(tmp_path_factory):
    """Every demo model, tiny, in a fresh process as ``scripts/demo.sh`` runs it; then the two comparisons."""
    out = tmp_path_factory.mktemp("runs")
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    env.pop("PYTHONWARNINGS", None)  # the user's environment, not the test suite's warning filters
    done = subprocess.run([sys.executable, "-m", "demo_models", "all", "--samples", "3000", "--epochs", "2",
                           "--out", str(out), "--quiet"], cwd=ROOT, env=env, capture_output=True, text=True,
                          timeout=900, check=False)
    assert done.returncode == 0, done.stderr[-3000:]
    for a, b in (("mmoe", "stem"), ("dcnv2", "dcnv2_per_feature")):
        subprocess.run([sys.executable, "-m", "lightning_recanalysis", "compare", str(out / f"{a}-synthetic/monitors"),
                        str(out / f"{b}-synthetic/monitors"), "--out", str(out / f"compare_{a}_{b}"), "--quiet"],
                       cwd=ROOT, env=env, capture_output=True, text=True, timeout=300, check=True)
    return out, done.stdout, done.stderr


def test_the_check_finds_a_broken_image_a_wide_element_and_a_cut_label(tmp_path):
    browser = chromium()
    bad = tmp_path / "bad.html"
    bad.write_text("<!DOCTYPE html><html><body style='margin:0'><img alt='missing' src='data:image/png;base64,AAAA'>"
                   "<div style='width:3000px'>wide</div><table><tr><th style='max-width:40px;overflow:hidden;"
                   "white-space:nowrap'>a long column title cut short</th></tr></table></body></html>")
    found = problems(check_page(browser, bad, tmp_path))
    assert any(p.startswith("image not loaded: IMG missing") for p in found)
    assert any(p.startswith("wider than the page") and "wide" in p for p in found)
    assert any(p.startswith("text cut: ['TH a long column title") for p in found)
    assert any(p.startswith("the page scrolls sideways") for p in found)


@pytest.mark.slow
def test_the_demo_says_what_it_does_and_warns_of_nothing_of_its_own(demo):
    out, stdout, stderr = demo
    lines = stdout.splitlines()
    assert sum(re.fullmatch(r"\[demo\] \w+: epoch \d+/2, .*", line) is not None for line in lines) >= 16
    assert "Reports:" in lines and lines[-1].startswith("Compare:")
    listed = [line.split()[-1] for line in lines[lines.index("Reports:") + 1:] if line.strip().endswith(".html")]
    assert len(listed) == 8 and all(Path(p).exists() for p in listed)
    assert any(line.startswith("TensorBoard:") and f"tensorboard --logdir {out}" in line for line in lines)
    ours = [line for line in stderr.splitlines()
            if re.search(r"lightning_recanalysis|demo_models|Monitor|AnalysisReport|Tip:", line)]
    assert not ours, "\n".join(ours)


@pytest.mark.slow
def test_every_demo_report_lays_out_in_a_real_browser(demo, tmp_path):
    browser = chromium()
    out, _, _ = demo
    pages = sorted(out.glob("*/monitors/report.html")) + sorted(out.glob("compare_*/compare.html"))
    assert len(pages) == 10
    with ThreadPoolExecutor(4) as pool:  # a browser spends most of its 3 s starting: four at a time
        results = dict(zip(pages, pool.map(lambda html: check_page(browser, html, tmp_path), pages)))
    assert all(result["images"] > 0 for result in results.values())
    found = {str(html.relative_to(out)): problems(result) for html, result in results.items()}
    assert not any(found.values()), json.dumps({k: v for k, v in found.items() if v}, indent=1)


@pytest.mark.skipif(not os.environ.get("LRA_BROWSER_REPORTS"), reason="LRA_BROWSER_REPORTS=DIR names reports to check")
def test_the_reports_under_a_directory_lay_out_in_a_real_browser(tmp_path):
    browser = chromium()
    root = Path(os.environ["LRA_BROWSER_REPORTS"])
    pages = sorted(root.rglob("report.html")) + sorted(root.rglob("compare.html"))
    assert pages, f"no report.html or compare.html under {root}"
    with ThreadPoolExecutor(4) as pool:
        found = dict(zip(map(str, pages), pool.map(lambda html: problems(check_page(browser, html, tmp_path)), pages)))
    assert not any(found.values()), json.dumps({k: v for k, v in found.items() if v}, indent=1)

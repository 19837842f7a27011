"""Check the built site in a real headless browser (``make docs-check``).

Serves the built site (``site/`` by default) on a free local port and opens
the home page and a tutorial page in Chromium through Playwright. A page
passes when it loads (HTTP 200) with its title and article, every image on
it has loaded (``naturalWidth > 0``), and the browser logged no console
error, uncaught exception or failed request. A tutorial page rendered from
an executed notebook must also show at least one figure; one rendered from
its unexecuted source (no ``make tutorials`` yet) is checked all the same,
with a note.

    python docs/check_site.py [--site site] [--tutorial 01_quickstart]
        [--browser /usr/bin/chromium]

Needs ``pip install playwright`` and a Chromium: Debian's
(``apt-get install chromium``, the default ``/usr/bin/chromium``), or one
from ``playwright install chromium`` with ``--browser ''``. Exits 1 naming
each failure, 2 when the site or the browser is missing.
"""

from __future__ import annotations

import argparse
import functools
import http.server
import shutil
import sys
import threading
from pathlib import Path

#: Text the docs hook puts above a tutorial rendered without outputs.
UNEXECUTED_NOTE = "executed notebook has not been built"

_IMAGES = """() => Array.from(document.images).map(img => ({
    src: img.currentSrc.slice(0, 80), complete: img.complete,
    width: img.naturalWidth}))"""


class _QuietHandler(http.server.SimpleHTTPRequestHandler):
    def log_message(self, format, *args):
        pass


def serve(root: Path) -> http.server.ThreadingHTTPServer:
    """Serve ``root`` on a free port of 127.0.0.1, in a daemon thread."""
    handler = functools.partial(_QuietHandler, directory=str(root))
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    return server


def check_page(browser, url: str, min_images: int) -> tuple[list[str], str]:
    """Open ``url``; return (failures, one-line summary)."""
    page = browser.new_page()
    problems: list[str] = []

    def on_console(message) -> None:
        if message.type == "error":
            problems.append(f"console error: {message.text}")

    page.on("console", on_console)
    page.on("pageerror", lambda e: problems.append(f"uncaught exception: {e}"))
    page.on(
        "requestfailed",
        lambda r: problems.append(f"request failed: {r.url} ({r.failure})"),
    )
    try:
        response = page.goto(url, wait_until="load")
        page.wait_for_load_state("networkidle")
        if response is None or response.status != 200:
            status = None if response is None else response.status
            problems.append(f"HTTP status {status}")
        if not page.title().strip():
            problems.append("the page has no title")
        article = page.locator("article")
        if article.count() == 0 or not article.first.inner_text().strip():
            problems.append("the page has no article text")
        images = page.evaluate(_IMAGES)
        broken = [i["src"] for i in images if not i["complete"] or i["width"] == 0]
        problems += [f"image did not load: {src}" for src in broken]
        if len(images) < min_images:
            problems.append(
                f"{len(images)} images, expected at least {min_images} "
                "(the executed notebook's figures)"
            )
        summary = f"{len(images)} images, {len(images) - len(broken)} loaded"
    finally:
        page.close()
    return problems, summary


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--site", default="site", help="the built site folder")
    parser.add_argument(
        "--tutorial",
        default=None,
        help="tutorial page to check, e.g. 01_quickstart (default: the first)",
    )
    parser.add_argument(
        "--browser",
        default="/usr/bin/chromium",
        help="Chromium executable ('' for Playwright's own browser)",
    )
    args = parser.parse_args(argv)

    site = Path(args.site)
    if not (site / "index.html").is_file():
        print(f"check_site: no built site in {site}/; run `make docs` first.")
        return 2
    tutorials = sorted(p.parent.name for p in site.glob("tutorials/*/index.html"))
    if not tutorials:
        print(f"check_site: {site}/tutorials/ has no tutorial pages.")
        return 1
    tutorial = args.tutorial or tutorials[0]
    if tutorial not in tutorials:
        print(f"check_site: no tutorial page {tutorial!r}; there are {tutorials}.")
        return 1
    if args.browser and not shutil.which(args.browser):
        print(
            f"check_site: no browser at {args.browser}; apt-get install chromium, "
            "or pass --browser ''."
        )
        return 2
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:
        print("check_site: needs the playwright package: pip install playwright.")
        return 2

    html = (site / "tutorials" / tutorial / "index.html").read_text(encoding="utf-8")
    executed = UNEXECUTED_NOTE not in html
    pages = [("home", "", 0), (f"tutorial {tutorial}", f"tutorials/{tutorial}/", 1)]
    if not executed:
        pages[1] = (pages[1][0], pages[1][1], 0)

    server = serve(site)
    base = f"http://127.0.0.1:{server.server_address[1]}/"
    failures = 0
    try:
        with sync_playwright() as playwright:
            options = {"headless": True, "args": ["--no-sandbox"]}
            if args.browser:
                options["executable_path"] = args.browser
            browser = playwright.chromium.launch(**options)
            try:
                for name, path, min_images in pages:
                    problems, summary = check_page(browser, base + path, min_images)
                    state = "FAIL" if problems else "ok"
                    print(f"{state:4}  {name} ({base}{path}): {summary}")
                    for problem in problems:
                        print(f"      {problem}")
                    failures += bool(problems)
            finally:
                browser.close()
    finally:
        server.shutdown()
    if not executed:
        print(
            f"note: tutorials/{tutorial} was rendered from its source without "
            "outputs; run `make tutorials` and rebuild to check its figures."
        )
    if failures:
        print(f"check_site: {failures} page(s) failed.")
        return 1
    print("check_site: all pages passed.")
    return 0


if __name__ == "__main__":
    sys.exit(main())

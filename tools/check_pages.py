"""Look at every page of the built book as readers will: desktop and phone widths, light and dark.

    jupyter-book build .                      # the HTML this script reads (_build/html)
    pip install playwright                    # the Python package only; no browser download:
    python tools/check_pages.py --chromium /usr/bin/chromium --out /tmp/pages

For each page, width (1280 and 390 px) and colour scheme (light, dark) it saves a screenshot of the
first screen and reports, as JSON and as a table on stdout:

- ``page_overflow``: the page itself scrolls sideways (document wider than the window);
- ``prose_overflow``: a paragraph, list item or heading wider than its box (text that runs off);
- ``math_clipped``: a display equation wider than its box where the box does not scroll;
- ``table_overflow``: a table wider than the article with no scrolling wrapper;
- ``broken_images``: images that did not load;
- ``dark_illegible``: in dark mode, figures whose background is transparent and whose ink is dark
  (dark lines on the dark page).

It needs a browser and is therefore not part of the test suite (CI has none); run it before a
release and after any change to figures, tables or the theme. Exit status 1 when any page has a
finding, so it can gate a workflow that has Chromium.
"""
from __future__ import annotations

import argparse
import functools
import http.server
import json
import sys
import threading
from pathlib import Path

PROBE = r"""
async () => {
  if (window.MathJax && MathJax.startup && MathJax.startup.promise) { await MathJax.startup.promise; }
  const W = window.innerWidth;
  const out = {page_overflow: document.documentElement.scrollWidth > W + 1 ?
                 document.documentElement.scrollWidth : 0,
               prose_overflow: [], math_clipped: [], table_overflow: [], broken_images: [],
               dark_illegible: []};
  const art = document.querySelector('article') || document.body;
  const artRight = art.getBoundingClientRect().right;
  const label = el => (el.innerText || el.textContent || el.tagName).trim().slice(0, 60);
  for (const el of art.querySelectorAll('p, li, dd, h1, h2, h3, h4')) {
    if (el.closest('.highlight, pre, .output, .cell_output, table, mjx-container, .math')) continue;
    if (el.scrollWidth > el.clientWidth + 2) out.prose_overflow.push(label(el));
  }
  for (const m of art.querySelectorAll('mjx-container[display="true"], .math')) {
    let box = m.parentElement, scrolls = false;
    for (let b = m; b && b !== art; b = b.parentElement) {
      const s = getComputedStyle(b);
      if (['auto', 'scroll'].includes(s.overflowX)) { scrolls = true; break; }
    }
    const r = m.getBoundingClientRect();
    if (!scrolls && r.right > artRight + 2) out.math_clipped.push(label(m));
  }
  for (const t of art.querySelectorAll('table')) {
    let scrolls = false;
    for (let b = t.parentElement; b && b !== art; b = b.parentElement) {
      const s = getComputedStyle(b);
      if (['auto', 'scroll'].includes(s.overflowX)) { scrolls = true; break; }
    }
    if (!scrolls && t.getBoundingClientRect().right > artRight + 2) out.table_overflow.push(label(t));
  }
  const dark = document.documentElement.dataset.theme === 'dark';
  for (const img of art.querySelectorAll('img')) {
    if (!img.complete || img.naturalWidth === 0) { out.broken_images.push(img.getAttribute('src')); continue; }
    if (!dark || img.src.endsWith('.svg')) continue;
    try {
      const c = document.createElement('canvas');
      const w = c.width = Math.min(img.naturalWidth, 400), h = c.height = Math.min(img.naturalHeight, 400);
      const g = c.getContext('2d'); g.drawImage(img, 0, 0, w, h);
      const d = g.getImageData(0, 0, w, h).data;
      let transparent = 0, ink = 0, darkInk = 0;
      for (let i = 0; i < d.length; i += 4) {
        if (d[i + 3] < 16) { transparent++; continue; }
        ink++;
        if (0.299 * d[i] + 0.587 * d[i + 1] + 0.114 * d[i + 2] < 80) darkInk++;
      }
      // What the reader sees behind a transparent pixel is the element's own background, if any.
      const bg = getComputedStyle(img).backgroundColor;
      const hasBg = bg && bg !== 'rgba(0, 0, 0, 0)' && bg !== 'transparent';
      if (!hasBg && transparent > 0.3 * w * h && darkInk > 0.02 * w * h)
        out.dark_illegible.push(img.getAttribute('src'));
    } catch (e) { /* a cross-origin image: not ours */ }
  }
  return out;
}
"""


def _serve(root: Path) -> tuple[http.server.ThreadingHTTPServer, str]:
    class Quiet(http.server.SimpleHTTPRequestHandler):
        def log_message(self, *args):  # one line per request would bury the findings
            pass

    handler = functools.partial(Quiet, directory=str(root))
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    return server, f"http://127.0.0.1:{server.server_address[1]}"


def pages(html: Path) -> list[str]:
    found = []
    for p in sorted(html.rglob("*.html")):
        rel = p.relative_to(html).as_posix()
        if rel.startswith(("_", "genindex", "search")) or rel == "index.html":
            continue
        found.append(rel)
    return found


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--html", type=Path, default=Path("_build/html"))
    ap.add_argument("--chromium", default=None, help="a Chromium executable (default: Playwright's own)")
    ap.add_argument("--out", type=Path, default=Path("_build/page_check"))
    ap.add_argument("--widths", default="1280,390")
    ap.add_argument("--only", default="", help="check only pages whose path contains this")
    args = ap.parse_args(argv)
    from playwright.sync_api import sync_playwright

    if not (args.html / "book").is_dir():
        ap.error(f"{args.html} holds no built book; run `jupyter-book build .` first")
    args.out.mkdir(parents=True, exist_ok=True)
    server, base = _serve(args.html)
    results, bad = [], 0
    with sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=args.chromium)
        for width in [int(w) for w in args.widths.split(",")]:
            for scheme in ("light", "dark"):
                ctx = browser.new_context(viewport={"width": width, "height": 900 if width > 600 else 844},
                                          color_scheme=scheme)
                ctx.add_init_script(f"localStorage.setItem('theme', '{scheme}');"
                                    f"localStorage.setItem('mode', '{scheme}');")
                page = ctx.new_page()
                for rel in pages(args.html):
                    if args.only and args.only not in rel:
                        continue
                    page.goto(f"{base}/{rel}", wait_until="load")
                    found = page.evaluate(PROBE)
                    shot = args.out / f"{rel.replace('/', '__')[:-5]}-{width}-{scheme}.png"
                    page.screenshot(path=str(shot))
                    issues = {k: v for k, v in found.items() if v}
                    bad += bool(issues)
                    results.append({"page": rel, "width": width, "scheme": scheme, "findings": issues,
                                    "screenshot": shot.name})
                    if issues:
                        print(f"{rel} @ {width}px {scheme}: {json.dumps(issues, ensure_ascii=False)}")
                ctx.close()
        browser.close()
    server.shutdown()
    (args.out / "page_check.json").write_text(json.dumps(results, indent=1, ensure_ascii=False))
    print(f"{len(results)} page views, {bad} with findings; screenshots and page_check.json in {args.out}")
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main())

#!/usr/bin/env python3
"""Drives tiercache's dashboard (/ui/) in a real Chromium through Playwright, as an operator
would, and fails at the first step that does not hold. Run by crates/cli/tests/it/dashboard.rs
against a server it started; prints one JSON line of what it saw on success.

Steps: the login form answers 401 and refuses a wrong token; the right token opens the page with
no console error from then on; the hit-ratio chart and its legend show the memory and disk tiers;
the namespace table sorts by a column, both ways; a namespace deleted through its confirmation
dialog leaves the table; at a phone's width nothing overflows the page sideways; a screenshot of
the loaded page is saved.
"""

import argparse
import json
import os
import sys

from playwright.sync_api import sync_playwright


def check(cond, what):
    if not cond:
        print(f"dashboard step failed: {what}", file=sys.stderr)
        sys.exit(1)


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--url", required=True, help="the server's base URL")
    p.add_argument("--token", required=True, help="the admin token")
    p.add_argument("--delete", required=True, help="a namespace to delete through the page")
    p.add_argument("--screenshot", required=True, help="where to save the screenshot (PNG)")
    p.add_argument("--chromium", default="/usr/bin/chromium")
    a = p.parse_args()
    seen = {}
    with sync_playwright() as pw:
        args = ["--disable-gpu", "--disable-dev-shm-usage"]
        if os.geteuid() == 0:
            args.append("--no-sandbox")
        browser = pw.chromium.launch(executable_path=a.chromium, args=args)
        page = browser.new_page(viewport={"width": 1280, "height": 1000})

        # 1. No session: the login form, answered 401; a wrong token is refused.
        resp = page.goto(a.url + "/ui/")
        check(resp.status == 401, f"/ui/ without a session answered {resp.status}, not 401")
        check(page.locator("input[name=token]").count() == 1, "no token field on the login form")
        page.fill("#token", "not-the-token-0123456789")
        page.click("button[type=submit]")
        check("does not open" in (page.text_content(".note") or ""), "a wrong token was not refused")

        # 2. The right token; no console error from here on.
        errors = []
        page.on("console", lambda m: errors.append(m.text) if m.type == "error" else None)
        page.on("pageerror", lambda e: errors.append(str(e)))
        page.fill("#token", a.token)
        page.click("button[type=submit]")
        page.wait_for_url(a.url + "/ui/")
        page.wait_for_selector("#ns-table tbody tr[data-ns]", timeout=20000)

        # 3. The hit-ratio chart draws the memory and disk tiers, and its legend gives their shares.
        page.wait_for_function(
            """() => ['memory', 'disk'].every((t) => {
                 const path = document.querySelector(`#chart-hits path[data-series=${t}]`);
                 const value = document.querySelector(`#legend-hits li[data-series=${t}] .value`);
                 return path && Number(path.dataset.points) > 0 && value && parseFloat(value.textContent) > 0;
               })""",
            timeout=30000,
        )
        seen["legend"] = page.eval_on_selector_all(
            "#legend-hits li", "lis => lis.map(li => li.textContent.trim())"
        )

        # 4. The namespace table sorts by entries, ascending then descending.
        def column(key):
            return page.eval_on_selector_all(
                "#ns-table tbody tr[data-ns]",
                "(rows, key) => rows.map(r => ({ ns: r.dataset.ns, n: Number(r.children[3].textContent) }))",
                key,
            )

        page.click("#ns-table th[data-key=n_entries] button")
        up = column("n_entries")
        check([r["n"] for r in up] == sorted(r["n"] for r in up), f"not ascending by entries: {up}")
        check(page.get_attribute("#ns-table th[data-key=n_entries]", "aria-sort") == "ascending", "aria-sort")
        page.click("#ns-table th[data-key=n_entries] button")
        down = column("n_entries")
        check([r["n"] for r in down] == sorted((r["n"] for r in down), reverse=True), f"not descending: {down}")
        check(len({r["n"] for r in up}) > 1, f"the sort test needs namespaces of different sizes: {up}")
        seen["sorted"] = [r["ns"] for r in down]

        # 5. Delete a namespace through its confirmation dialog.
        row = f"#ns-table tr[data-ns='{a.delete}']"
        check(page.locator(row).count() == 1, f"namespace {a.delete} is not in the table")
        page.click(f"{row} button[data-action=delete]")
        check(page.is_disabled("#confirm-ok"), "delete was possible before the name was typed")
        page.fill("#confirm-input", a.delete)
        page.click("#confirm-ok")
        page.wait_for_selector(row, state="detached", timeout=20000)
        seen["notice"] = page.text_content("#notice")

        # 6. At a phone's width, nothing overflows the page sideways.
        page.set_viewport_size({"width": 390, "height": 844})
        page.wait_for_timeout(300)
        overflow = page.evaluate("document.documentElement.scrollWidth - window.innerWidth")
        check(overflow <= 0, f"the page is {overflow}px wider than a phone's screen")

        # 7. The screenshot, at 1280 px, after a fresh poll.
        page.set_viewport_size({"width": 1280, "height": 1000})
        page.wait_for_timeout(2500)
        page.screenshot(path=a.screenshot, full_page=True)
        check(not errors, f"console errors: {errors}")
        browser.close()
    print(json.dumps(seen))


if __name__ == "__main__":
    main()

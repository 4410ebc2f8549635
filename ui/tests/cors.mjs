// A page on another origin using aisle from the browser, for conformance/python/test_cors.py:
//   node cors.mjs PAGE_URL SPEC_JSON
// PAGE_URL is a page served from an origin of the test's own; SPEC_JSON lists fetches to run in
// it: [{"name", "url", "method", "headers", "body"}]. Prints one JSON line per fetch:
// {"name", "ok": true, "status", "body", "etag"} or {"name", "ok": false, "error"} (the browser
// refused to show the answer: a CORS failure is a TypeError in the page).
import { chromium } from "playwright-core";

const [pageUrl, spec] = process.argv.slice(2);
const browser = await chromium.launch({
  executablePath: process.env.CHROMIUM || "/usr/bin/chromium",
  args: ["--no-sandbox", "--disable-gpu"],
});
try {
  const page = await browser.newPage();
  await page.goto(pageUrl);
  for (const f of JSON.parse(spec)) {
    const result = await page.evaluate(async (f) => {
      try {
        const r = await fetch(f.url, { method: f.method || "GET", headers: f.headers || {}, body: f.body });
        return { ok: true, status: r.status, body: await r.text(), etag: r.headers.get("etag") };
      } catch (e) {
        return { ok: false, error: String(e) };
      }
    }, f);
    console.log(JSON.stringify({ name: f.name, ...result }));
  }
} finally {
  await browser.close();
}

// Drives the dashboard in headless Chromium (Debian's, through playwright-core), for
// conformance/python/test_dashboard.py:  node browser.mjs ENDPOINT ACCESS_KEY SECRET_KEY BUCKET OUTDIR
// Prints LOGIN_SHOWN, READY (signed in, 3 targets seen: the test then creates BUCKET and runs a
// job), then BUCKET_SEEN, JOB_SEEN, LOGGED_OUT; exits non-zero on any failure.
import { chromium } from "playwright-core";

const [endpoint, ak, sk, bucket, outDir] = process.argv.slice(2);
const browser = await chromium.launch({
  executablePath: process.env.CHROMIUM || "/usr/bin/chromium",
  args: ["--no-sandbox", "--disable-gpu"],
});
const say = (m) => console.log(m);
try {
  const page = await browser.newPage({ viewport: { width: 1280, height: 1100 } });
  await page.goto(`${endpoint}/_aisle/ui/`);
  await page.waitForSelector("#login");
  // Without a session the admin API gives nothing, even to the dashboard's own page.
  const status = await page.evaluate(async () =>
    (await fetch("/_aisle/v1/cluster", { headers: { "x-aisle-ui": "1" } })).status);
  if (status !== 403) throw new Error(`admin API without a session answered ${status}`);
  await page.fill("input[name=access_key]", ak);
  await page.fill("input[name=secret_key]", "not-the-secret");
  await page.click("button[type=submit]");
  await page.waitForSelector("#login-error:has-text('not the cluster')");
  await page.screenshot({ path: `${outDir}/ui-login.png` });
  say("LOGIN_SHOWN");

  await page.fill("input[name=access_key]", ak);
  await page.fill("input[name=secret_key]", sk);
  await page.click("button[type=submit]");
  await page.waitForSelector("tr[data-target='t3']", { timeout: 15000 });
  const targets = await page.locator("tr[data-target]").count();
  if (targets !== 3) throw new Error(`saw ${targets} targets`);
  say("READY");

  await page.waitForSelector(`tr[data-bucket='${bucket}']`, { timeout: 30000 });
  say("BUCKET_SEEN");
  await page.waitForSelector("tr[data-job-row]", { timeout: 30000 });
  await page.waitForFunction(
    () => [...document.querySelectorAll("tr[data-job-row]")].some((r) => /\d+\/\d+/.test(r.textContent || "")),
    null, { timeout: 30000 });
  // Let the throughput charts gather a few points.
  await page.waitForTimeout(4500);
  await page.screenshot({ path: `${outDir}/ui-dashboard.png`, fullPage: true });
  say("JOB_SEEN");

  await page.click("#logout");
  await page.waitForSelector("#login");
  const after = await page.evaluate(async () =>
    (await fetch("/_aisle/v1/cluster", { headers: { "x-aisle-ui": "1" } })).status);
  if (after !== 403) throw new Error(`after logout the admin API answered ${after}`);
  say("LOGGED_OUT");
} finally {
  await browser.close();
}

// Drives berth's portal in headless Chromium as a person would.
// usage: node portal.mjs BASE_URL ADMIN_PASSWORD OCI_LAYOUT EXPECTED_SIZE OUT_DIR
// On failure it leaves OUT_DIR/failure.png and exits non-zero.
import { execFileSync } from "node:child_process";
import { chromium } from "playwright-core";

const [base, password, layout, expectedSize, outDir] = process.argv.slice(2);
const host = new URL(base).host;

function check(cond, what) {
  if (!cond) throw new Error(`check failed: ${what}`);
}

const browser = await chromium.launch({
  executablePath: "/usr/bin/chromium",
  args: ["--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run", "--disable-background-networking",
    "--disable-component-update", "--disable-sync"],
});
const context = await browser.newContext();
await context.grantPermissions(["clipboard-read", "clipboard-write"], { origin: base });
const page = await context.newPage();
let step = "start";
try {
  step = "anonymous visitors are sent to sign in";
  await page.goto(base + "/");
  check(new URL(page.url()).pathname === "/login", `at ${page.url()}`);

  step = "a wrong password is refused, and the name it was given is shown escaped";
  await page.fill("input[name=username]", "<i id=injected>x</i>");
  await page.fill("input[name=password]", "wrong");
  await page.click("button[type=submit]");
  check((await page.textContent(".error")).includes("invalid username or password"), "error shown");

  step = "sign in as admin";
  await page.fill("input[name=username]", "admin");
  await page.fill("input[name=password]", password);
  await page.click("button[type=submit]");
  await page.waitForSelector("h1:has-text('Dashboard')");
  const cookies = await context.cookies();
  const sid = cookies.find((c) => c.name === "sid");
  check(sid && sid.httpOnly && sid.sameSite === "Lax", `session cookie ${JSON.stringify(sid)}`);

  step = "create a project";
  await page.click("header nav >> text=Projects");
  await page.fill("#new-project input[name=name]", "webproj");
  await page.click("#new-project button[type=submit]");
  await page.waitForSelector(".flash:has-text('Project webproj created.')");

  step = "push an image with skopeo";
  execFileSync("skopeo", ["--insecure-policy", "copy", "--dest-tls-verify=false", "--dest-creds", `admin:${password}`,
    `oci:${layout}:v1`, `docker://${host}/webproj/app:v1`], { stdio: "inherit" });

  step = "find it in the portal with its tag and size";
  await page.goto(base + "/projects?q=webpr");
  const row = page.locator("#projects tr", { hasText: "webproj" });
  check(await row.count() === 1, "the project is listed by the search");
  check((await row.textContent()).includes("private"), "the project is private");
  await page.click("#projects a:has-text('webproj')");
  await page.click("#repositories a:has-text('webproj/app')");
  const artifact = page.locator("#artifacts tr.artifact");
  check(await artifact.count() === 1, "one artifact");
  check((await artifact.locator(".tag").textContent()).includes("v1"), "tag v1 shown");
  const size = (await artifact.locator("td.size").textContent()).trim();
  check(size === expectedSize, `size ${size}, expected ${expectedSize}`);

  step = "a pull shows in the Pulled column";
  check((await artifact.locator("td.pulled").textContent()).trim() === "never", "not pulled yet");
  execFileSync("skopeo", ["inspect", "--raw", "--tls-verify=false", "--creds", `admin:${password}`,
    `docker://${host}/webproj/app:v1`], { stdio: "ignore" });
  let pulled = "never";
  for (let i = 0; i < 20 && pulled === "never"; i++) {
    await page.waitForTimeout(100);
    await page.reload();
    pulled = (await page.locator("#artifacts tr.artifact td.pulled").textContent()).trim();
  }
  check(/^\d{4}-\d\d-\d\d \d\d:\d\d/.test(pulled), `pulled: ${pulled}`);

  step = "copy its pull command";
  await artifact.locator("button[aria-label='Copy pull command']").click();
  await page.waitForSelector("button[aria-label='Copy pull command']:has-text('copied')");
  const copied = await page.evaluate(() => navigator.clipboard.readText());
  check(copied === `docker pull ${host}/webproj/app:v1`, `clipboard: ${copied}`);

  step = "a form posted without its CSRF token is refused";
  const refused = await page.evaluate(async () => {
    const r = await fetch("/projects", { method: "POST", body: new URLSearchParams({ name: "forged" }) });
    return r.status;
  });
  check(refused === 403, `forged form answered ${refused}`);
  const forged = await page.evaluate(async () => {
    const r = await fetch("/projects", { method: "POST", body: new URLSearchParams({ name: "forged", csrf: "guess" }) });
    return r.status;
  });
  check(forged === 403, `wrong token answered ${forged}`);

  step = "text from users is shown escaped";
  await page.goto(base + "/projects?q=" + encodeURIComponent("<i id=injected>x</i>"));
  check(await page.locator("#injected").count() === 0, "markup in the search was interpreted");
  check((await page.textContent("#projects")).includes("<i id=injected>x</i>"), "the search is shown as text");
  await page.goto(base + "/projects/webproj/robots");
  await page.fill("input[name=name]", "ci");
  await page.fill("input[name=description]", "<img id=injected src=x>");
  await page.click("form.row button[type=submit]");
  await page.waitForSelector("#robot-secret");
  check((await page.textContent("#robot-secret")).trim().length >= 20, "the robot's secret is shown once");
  check(await page.locator("#injected").count() === 0, "markup in a description was interpreted");
  check((await page.textContent("#robots")).includes("<img id=injected src=x>"), "the description is shown as text");
  await page.goto(base + "/admin/audit?operation=login");
  check(await page.locator("#injected").count() === 0, "markup in the audit log was interpreted");
  check((await page.textContent("#audit")).includes("<i id=injected>x</i>"), "the failed login is in the audit log, as text");

  step = "delete the artifact, confirming";
  await page.goto(base + "/projects/webproj/repos/app");
  page.once("dialog", (d) => d.accept());
  await page.click("#artifacts button.danger");
  await page.waitForSelector(".flash:has-text('deleted')");
  check(await page.locator("#artifacts tr.artifact").count() === 0, "the artifact is gone");

  step = "sign out";
  await page.click("#sign-out");
  await page.waitForURL(/\/login$/);
  await page.goto(base + "/projects");
  check(new URL(page.url()).pathname === "/login", "signed out");
  console.log("portal: every step passed");
} catch (e) {
  await page.screenshot({ path: `${outDir}/failure.png`, fullPage: true }).catch(() => {});
  console.error(`portal: failed at "${step}": ${e.message}\nscreenshot: ${outDir}/failure.png\npage: ${page.url()}`);
  process.exitCode = 1;
} finally {
  await browser.close();
}

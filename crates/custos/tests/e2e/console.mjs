// The console end to end in headless Chromium (issue 5's scenario), driven by playwright-core.
// Usage: node console.mjs <base url> <output folder>
// Environment: ADMIN_PASSWORD, USER_UPN, USER_PASSWORD, AUDITOR_UPN, AUDITOR_PASSWORD.
// Prints one JSON line: the account ids the user saw, the ids the auditor found, the path of
// the exported workbook, and the screenshots taken. Throws (exit 1) when a step fails.
import { chromium } from "playwright-core";
import { mkdirSync, readFileSync } from "node:fs";
import { createServer } from "node:http";
import { createRequire } from "node:module";
import { join } from "node:path";

const [base, out] = process.argv.slice(2);
const env = process.env;
mkdirSync(out, { recursive: true });
const shots = [];

const browser = await chromium.launch({
  executablePath: "/usr/bin/chromium",
  args: [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--no-first-run",
    "--disable-sync",
  ],
});
const timeout = setTimeout(() => {
  console.error("the browser run took over 3 minutes");
  process.exit(2);
}, 180_000);

function check(condition, message) {
  if (!condition) throw new Error(message);
}

/// A link of the main navigation.
function nav(page, name) {
  return page.getByRole("navigation", { name: "Main" }).getByRole("link", { name, exact: true });
}

// axe-core's rules, run in every page screenshotted (evaluated over the DevTools protocol,
// which the console's content security policy does not govern).
const axeSource = readFileSync(createRequire(import.meta.url).resolve("axe-core/axe.min.js"), "utf8");
const accessibility = [];

async function shot(page, name) {
  const path = join(out, `${name}.png`);
  await page.screenshot({ path, fullPage: true });
  shots.push(path);
  await page.evaluate(axeSource);
  const { violations } = await page.evaluate(() => window.axe.run(document, { resultTypes: ["violations"] }));
  for (const v of violations.filter((v) => v.impact === "serious" || v.impact === "critical")) {
    accessibility.push(`${name}: ${v.id} (${v.impact}) ${v.nodes.map((n) => n.target.join(" ")).join(", ")}`);
  }
}

async function signIn(upn, password, viewport = { width: 1366, height: 850 }) {
  const context = await browser.newContext({ acceptDownloads: true, viewport });
  const page = await context.newPage();
  await page.goto(`${base}/ui/home`);
  check(page.url().includes("/ui/login"), `not sent to sign in: ${page.url()}`);
  await page.getByLabel("User name").fill(upn);
  await page.getByLabel("Password").fill(password);
  await page.getByRole("button", { name: "Sign in" }).click();
  await page.waitForURL(/\/ui\/home/);
  return { context, page };
}

async function signOut(session) {
  await session.page.getByRole("button", { name: "Sign out" }).click();
  await session.page.waitForURL(/\/ui\/login/);
  await session.context.close();
}

try {
  // The admin turns on auditing, then read auditing (offered only once auditing is on).
  const admin = await signIn("admin", env.ADMIN_PASSWORD);
  let page = admin.page;
  await shot(page, "home");
  await nav(page, "Auditing settings").click();
  const start = page.getByLabel("Start Auditing");
  const read = page.getByLabel("Start Read Auditing");
  if (!(await start.isChecked())) {
    check(await read.isDisabled(), "read auditing is offered while auditing is off");
    await start.check();
    await page.getByRole("button", { name: "Save" }).click();
    await page.waitForURL(/saved=1/);
  }
  check(!(await read.isDisabled()), "read auditing is not offered while auditing is on");
  await read.check();
  await page.getByLabel("Audit user access (sign-in and sign-out)").check();
  await page.getByRole("button", { name: "Save" }).click();
  await page.waitForURL(/saved=1/);
  check(await page.getByLabel("Start Read Auditing").isChecked(), "read auditing did not stay on");
  await shot(page, "auditing-settings");

  // Retrieve multiple auditing for account, saved as a draft, then published.
  await nav(page, "Customizations").click();
  await page.getByRole("link", { name: "account", exact: true }).click();
  await page.getByLabel("Retrieve multiple auditing").check();
  await page.getByRole("button", { name: "Save" }).click();
  await page.waitForURL(/saved=1/);
  check((await page.getByRole("status").allTextContents()).join(" ").includes("unpublished"), "the draft is not marked unpublished");
  await shot(page, "customize-entity");
  await page.getByRole("button", { name: "Publish all customizations" }).click();
  await page.waitForURL(/published=1/);
  const row = page.getByRole("row", { name: /^account / });
  check((await row.textContent()).includes("On"), "retrieve multiple auditing is not published");
  await shot(page, "customizations");

  // The records app imports a CSV file and exports what it shows to Excel.
  await nav(page, "Records").click();
  await page.getByRole("link", { name: "contact", exact: true }).click();
  await page.getByRole("link", { name: "Import from CSV" }).click();
  await page.getByLabel("CSV file").setInputFiles({
    name: "people.csv",
    mimeType: "text/csv",
    buffer: Buffer.from("firstname,lastname\nAda,Lovelace\nAlan,Turing\n"),
  });
  await page.getByRole("button", { name: "Import" }).click();
  await page.waitForURL(/imported=2/);
  check((await page.getByRole("status").allTextContents()).join(" ").includes("Imported 2 records."), "the import is not confirmed");
  const [contactsDownload] = await Promise.all([
    page.waitForEvent("download"),
    page.getByRole("button", { name: "Export to Excel" }).click(),
  ]);
  const contacts = join(out, "contacts.xlsx");
  await contactsDownload.saveAs(contacts);
  await shot(page, "records-import");

  // The admin center backs the instance up.
  await nav(page, "Admin center").click();
  await page.getByRole("link", { name: "main", exact: true }).click();
  await page.getByLabel("Label").fill("before the day's work");
  await page.getByRole("button", { name: "Back up now" }).click();
  await page.waitForURL(/backup=/);
  check((await page.getByRole("row", { name: /before the day's work/ }).count()) === 1, "the backup is not listed");
  await shot(page, "admin-center");
  // Restoring asks first, naming what it replaces; Cancel leaves everything as it was.
  await page.getByRole("button", { name: /^Restore backup of / }).first().click();
  await page.getByRole("heading", { name: "Restore this backup?" }).waitFor();
  check((await page.getByRole("alert").textContent()).includes("is replaced by what the backup holds"), "the restore does not say what it replaces");
  await shot(page, "confirm-restore");
  await page.getByRole("link", { name: "Cancel" }).click();
  await page.waitForURL(/\/ui\/admin\/instances\/main$/);

  // SIEM feeds: the activity feed's subscription starts, and a stream sends the log to a file.
  await nav(page, "SIEM feeds").click();
  await page.getByRole("button", { name: "Start" }).click();
  await page.waitForURL(/\/ui\/audit\/feeds$/);
  check((await page.getByText("Subscription to Audit.General: enabled").count()) === 1, "the subscription did not start");
  await page.getByLabel("Name").fill("data lake");
  await page.getByLabel("Format").selectOption("json");
  await page.getByLabel(/^Target/).fill(`file://${env.STREAM_FILE}`);
  await page.getByLabel("Start from").selectOption("start");
  await page.getByRole("button", { name: "Add stream" }).click();
  await page.waitForURL(/\/ui\/audit\/feeds$/);
  check((await page.getByRole("row", { name: /data lake/ }).count()) === 1, "the stream is not listed");
  await page.waitForTimeout(600);
  await page.reload();
  await shot(page, "siem-feeds");

  // Every console response carries the content security policy and its companions.
  const home = await page.goto(`${base}/ui/home`);
  const headers = home.headers();
  check((headers["content-security-policy"] || "").includes("frame-ancestors 'none'"), `CSP: ${headers["content-security-policy"]}`);
  check((headers["content-security-policy"] || "").includes("default-src 'self'"), "CSP default-src");
  check(headers["x-content-type-options"] === "nosniff", "nosniff");
  check(headers["referrer-policy"] === "same-origin", `referrer policy: ${headers["referrer-policy"]}`);

  // A page on another port of the same host (same site: the SameSite=Strict cookie goes
  // along) posts the admin center's form: the console refuses it and creates nothing.
  const attacker = createServer((_, response) => {
    response.writeHead(200, { "content-type": "text/html" });
    response.end(`<!doctype html><form id="f" method="post" action="${base}/ui/admin/instances">
      <input name="csrf" value="guessed"><input name="name" value="evil"><input name="state" value="trial">
      <button type="submit">Win a prize</button></form>`);
  });
  await new Promise((resolve) => attacker.listen(0, "127.0.0.1", resolve));
  await page.goto(`http://127.0.0.1:${attacker.address().port}/`);
  const [posted] = await Promise.all([
    page.waitForResponse((r) => r.url().endsWith("/ui/admin/instances")),
    page.getByRole("button", { name: "Win a prize" }).click(),
  ]);
  check(posted.status() === 403, `the cross-site form was answered ${posted.status()}`);
  attacker.close();
  await page.goto(`${base}/ui/admin`);
  check((await page.getByRole("link", { name: "evil", exact: true }).count()) === 0, "the cross-site form created an instance");

  // The instance's audit summary, and from one of its changes the record's audit history.
  await nav(page, "Auditing settings").click();
  await page.getByRole("link", { name: "Audit summary" }).click();
  await page.getByLabel("Entity").selectOption("account");
  await page.getByRole("button", { name: "Show" }).click();
  check((await page.locator("tbody tr").count()) > 0, "the audit summary shows no change of accounts");
  await shot(page, "audit-summary");
  await page.locator("tbody tr a").first().click();
  await page.waitForURL(/\/history$/);
  check((await page.locator("tbody tr").count()) > 0, "the record's audit history is empty");
  check((await page.getByRole("cell", { name: "Create", exact: true }).count()) > 0, "the history does not show the record's creation");
  await shot(page, "record-history");
  await signOut(admin);

  // A second user opens the accounts view over two pages.
  const user = await signIn(env.USER_UPN, env.USER_PASSWORD);
  page = user.page;
  await nav(page, "Records").click();
  await page.getByRole("link", { name: "account", exact: true }).click();
  await page.getByLabel("Rows per page").selectOption("10");
  await page.getByRole("button", { name: "Show" }).click();
  const seen = [];
  const collect = async () => {
    const ids = await page.locator("tbody tr[data-id]").evaluateAll((rows) => rows.map((r) => r.dataset.id));
    seen.push(...ids);
    return ids.length;
  };
  check((await collect()) === 10, "the first page does not hold 10 accounts");
  await shot(page, "records-grid");
  await page.getByRole("link", { name: "Next page" }).click();
  await page.waitForURL(/skiptoken=/);
  const second = await collect();
  check(second > 0, "the second page is empty");
  check((await page.getByText("Page 2").count()) === 1, "the second page is not numbered");
  check((await page.getByRole("link", { name: "Previous page" }).count()) === 1, "no way back to the first page");
  await signOut(user);

  // An auditor finds every account the user saw, sees the report's chart, exports to xlsx.
  const auditor = await signIn(env.AUDITOR_UPN, env.AUDITOR_PASSWORD);
  page = auditor.page;
  await nav(page, "Audit search").click();
  await page.getByLabel("User (principal name or id)").fill(env.USER_UPN);
  // Activities are picked from the catalogue's groups.
  await page.locator("summary", { hasText: "Views, exports and imports" }).click();
  await page.getByLabel("RetrieveMultiple", { exact: true }).check();
  await page.getByRole("button", { name: "Search" }).click();
  await page.waitForURL(/user=/);
  // Each event opens in place: the page is not loaded again, nothing is searched again.
  const found = new Set();
  const opened = page.locator("tr.detail-row summary");
  const events = await opened.count();
  check(events >= 2, `expected a RetrieveMultiple event per page, found ${events}`);
  const before = page.url();
  for (let i = 0; i < events; i++) {
    await opened.nth(i).click();
    const ids = await page.locator("tr.detail-row details").nth(i).locator("ul.mono li a.id").allTextContents();
    ids.forEach((id) => found.add(id.trim()));
    if (i === 0) await shot(page, "audit-search");
  }
  check(page.url() === before, "opening an event left the page");
  const missing = seen.filter((id) => !found.has(id));
  check(missing.length === 0, `accounts seen but not in the audit log: ${missing.join(", ")}`);

  // Sorted from a header; in the viewer's time zone, UTC beside the range.
  await page.getByRole("link", { name: "Activity" }).click();
  await page.waitForURL(/orderby=Operation/);
  check((await page.locator("th[aria-sort=ascending]", { hasText: "Activity" }).count()) === 1, "the Activity header does not say it sorts");
  await page.getByLabel("Time zone").fill("Asia/Tokyo");
  await page.getByLabel("From (date or date-time)").fill("2020-01-01");
  await page.getByRole("button", { name: "Search" }).click();
  await page.waitForURL(/tz=Asia/);
  check((await page.getByText("Time (Asia/Tokyo)").count()) === 1, "the results' times are not in the chosen zone");
  check((await page.getByText("= 2019-12-31 15:00:00 UTC").count()) === 1, "the range's UTC is not shown beside it");
  await page.goBack();
  await page.goBack();

  // The export runs as a job: its page shows progress, then the file to download.
  await page.getByRole("button", { name: "Export to Excel (xlsx)" }).click();
  await page.waitForURL(/\/ui\/audit\/exports\//);
  const fileLink = page.getByRole("link", { name: "Download the xlsx file" });
  await fileLink.waitFor({ timeout: 30_000 });
  await shot(page, "export");
  const downloadStarted = page.waitForEvent("download");
  await fileLink.click();
  const download = await downloadStarted;
  const workbook = join(out, "audit-search.xlsx");
  await download.saveAs(workbook);

  await nav(page, "Reports").click();
  await page.getByRole("link", { name: "Accessed out-of-box entity" }).click();
  await page.waitForSelector("svg.chart");
  const bars = await page.locator("svg.chart rect.bar").count();
  check(bars > 0, "the report has no bars");
  const total = Number((await page.locator("p.total").textContent()).split(" ")[0]);
  check(total > 0, "the report counts no events");
  const chartTitle = await page.locator("svg.chart title").first().textContent();
  check(chartTitle.includes("Accessed out-of-box entity"), `chart title: ${chartTitle}`);
  await shot(page, "report");
  await nav(page, "Integrity").click();
  await page.waitForSelector("pre");
  await shot(page, "integrity");
  await signOut(auditor);

  // On a phone (390 px) no page scrolls sideways: wide tables scroll in their own box.
  const phone = await signIn("admin", env.ADMIN_PASSWORD, { width: 390, height: 844 });
  const wide = [];
  for (const path of [
    "/ui/home", "/ui/main/records", "/ui/main/records/accounts", "/ui/main/records/accounts/new", "/ui/main/users",
    "/ui/main/records/contacts/import", "/ui/main/settings/auditing", "/ui/main/settings/audit-summary", "/ui/main/customizations",
    "/ui/main/customizations/account", "/ui/admin", "/ui/admin/instances/main", "/ui/audit/search?run=1",
    "/ui/audit/reports", "/ui/audit/reports/accessed-out-of-box-entity", "/ui/audit/alerts",
    "/ui/audit/retention", "/ui/audit/feeds", "/ui/audit/integrity", "/ui/audit/queries", "/ui/account/password",
  ]) {
    await phone.page.goto(`${base}${path}`);
    const width = await phone.page.evaluate(() => document.documentElement.scrollWidth);
    if (width > 390) wide.push(`${path} (${width} px)`);
  }
  // A custom role made from the Users page: its grid of privileges fits (scrolls in its box).
  await phone.page.goto(`${base}/ui/main/users`);
  await phone.page.getByLabel("New custom role").fill("Phone readers");
  await phone.page.getByRole("button", { name: "Create role" }).click();
  await phone.page.waitForURL(/\/ui\/main\/users\/roles\//);
  const roleWidth = await phone.page.evaluate(() => document.documentElement.scrollWidth);
  if (roleWidth > 390) wide.push(`a role's privileges (${roleWidth} px)`);
  await shot(phone.page, "phone-role-privileges");
  check(wide.length === 0, `pages wider than a phone: ${wide.join(", ")}`);
  await phone.page.goto(`${base}/ui/audit/search?run=1`);
  await shot(phone.page, "phone-audit-search");
  // A report's chart on a phone: its axis text is at least 10 px on screen.
  await phone.page.goto(`${base}/ui/audit/reports/accessed-out-of-box-entity`);
  const smallest = await phone.page.evaluate(() => Math.min(...[...document.querySelectorAll("svg.chart text")]
    .filter((t) => getComputedStyle(t).display !== "none")
    .map((t) => t.getBoundingClientRect().height)));
  check(smallest >= 10, `a chart's text is ${smallest} px high on a phone`);
  await shot(phone.page, "phone-report");
  await signOut(phone);

  check(accessibility.length === 0, `serious or critical accessibility violations (axe-core):\n${accessibility.join("\n")}`);
  console.log(JSON.stringify({ seen, found: [...found], workbook, contacts, bars, total, shots }));
} finally {
  clearTimeout(timeout);
  await browser.close();
}

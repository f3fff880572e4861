// The dashboard in headless Chromium: sign in as the first admin, the overview's
// figures against its CSV export and against the sum of the per-channel sales
// (computed here from the sales CSV), hover values against the table under the
// chart, filters kept in the URL across pages, the partners' attainment and
// projection, the seeded campaign's results against its CSV, the win-back panel
// (its figures against its CSV, or its empty state), a tablet viewport, sign out.
// Screenshots go to DATA_DIR.
"use strict";
const { chromium } = require("playwright-core");
const fs = require("fs");
const path = require("path");

const base = process.env.DASHBOARD_URL.replace(/\/$/, "");
const dataDir = process.env.DATA_DIR;
const password = fs.readFileSync(path.join(dataDir, "admin-password"), "utf8").trim();

function check(ok, message) {
  if (!ok) throw new Error("check failed: " + message);
  console.log("ok - " + message);
}

function parseCsv(text) {
  // The dashboard's CSV: quoted fields only where needed.
  const rows = [];
  for (const line of text.split(/\r?\n/)) {
    if (!line) continue;
    const cells = [];
    let cur = "", quoted = false;
    for (let i = 0; i < line.length; i++) {
      const c = line[i];
      if (quoted) {
        if (c === '"' && line[i + 1] === '"') { cur += '"'; i++; }
        else if (c === '"') quoted = false;
        else cur += c;
      } else if (c === '"') quoted = true;
      else if (c === ",") { cells.push(cur); cur = ""; }
      else cur += c;
    }
    cells.push(cur);
    rows.push(cells);
  }
  return rows;
}

const cents = (s) => Math.round(parseFloat(s) * 100);

(async () => {
  const browser = await chromium.launch({
    executablePath: process.env.CHROMIUM || "/usr/bin/chromium",
    args: ["--no-sandbox", "--disable-dev-shm-usage"],
  });
  try {
    const context = await browser.newContext({ viewport: { width: 1280, height: 900 } });
    const page = await context.newPage();
    const external = [];
    page.on("request", (r) => { if (!r.url().startsWith(base)) external.push(r.url()); });

    // Sign in.
    await page.goto(base + "/");
    check(page.url().endsWith("/login"), "an anonymous visit lands on the login page");
    await page.fill("input[name=username]", "admin");
    await page.fill("input[name=password]", "wrong-password");
    await page.click("button[type=submit]");
    check((await page.textContent("p.error")).includes("Wrong user name or password"), "a wrong password is refused");
    await page.fill("input[name=username]", "admin");
    await page.fill("input[name=password]", password);
    await Promise.all([page.waitForNavigation(), page.click("button[type=submit]")]);
    check(new URL(page.url()).pathname === "/", "signed in, on the overview");
    const cookies = await context.cookies();
    const access = cookies.find((c) => c.name === "rs_access");
    check(access && access.httpOnly && access.sameSite === "Strict", "the access token is an HttpOnly SameSite=Strict cookie");
    check(await page.evaluate(() => !document.cookie.includes("rs_access")), "scripts cannot read the session cookie");

    // The overview's figures against its CSV, and revenue against the channels' sum.
    const query = "?period=quarter";
    await page.goto(base + "/" + query);
    const shown = {};
    for (const id of ["revenue", "orders", "aov", "active_members", "nps"]) {
      shown[id] = (await page.textContent(`[data-kpi=${id}]`)).trim();
    }
    check(parseInt(shown.orders, 10) > 0, `the seeded quarter has orders (${shown.orders})`);
    const csvResponse = await page.request.get(base + "/" + query + "&format=csv");
    check(csvResponse.headers()["content-type"].startsWith("text/csv"), "the overview exports CSV");
    const overview = Object.fromEntries(parseCsv(await csvResponse.text()).slice(1).map((r) => [r[0], r.slice(1)]));
    for (const id of Object.keys(shown)) {
      check(overview[id][0] === shown[id], `overview ${id} ${shown[id]} equals the CSV's ${overview[id][0]}`);
    }
    check(
      Math.abs(cents(overview.aov[0]) - Math.round(cents(overview.revenue[0]) / parseInt(overview.orders[0], 10))) <= 1,
      "AOV = revenue / orders"
    );
    const sales = parseCsv(await (await page.request.get(base + "/sales" + query + "&format=csv")).text());
    check(sales[0].join(",") === "bucket,series,revenue,orders,units", "the sales table's CSV header");
    const summed = sales.slice(1).reduce((a, r) => a + cents(r[2]), 0);
    const orders = sales.slice(1).reduce((a, r) => a + parseInt(r[3], 10), 0);
    check(summed === cents(shown.revenue), `revenue ${shown.revenue} = sum over channels and weeks ${(summed / 100).toFixed(2)}`);
    check(orders === parseInt(shown.orders, 10), `orders ${shown.orders} = sum over channels and weeks ${orders}`);
    await page.screenshot({ path: path.join(dataDir, "dashboard-overview.png"), fullPage: true });

    // Hover values: each point's <title> carries the figure of the table's row. The
    // last mark is drawn on top: an earlier one may lie under another series' mark.
    await page.goto(base + "/sales" + query);
    const point = page.locator("svg.lines circle.mark").last();
    await point.hover();
    const hover = await point.locator("title").textContent();
    const [, series, bucket, value] = hover.match(/^(\S+) (\S+): ([0-9.]+) revenue$/) || [];
    check(series !== undefined, `a point's hover text: "${hover}"`);
    const row = sales.find((r) => r[0] === bucket && r[1] === series);
    check(row && cents(row[2]) === cents(value), `hover ${value} equals the table's ${row && row[2]}`);
    const titles = await page.locator("svg title").count();
    check(titles >= sales.length - 1, `every point has a hover value (${titles})`);

    // CSV link under a table.
    const csvHref = await page.locator("#table-sales caption a.csv").getAttribute("href");
    check(csvHref.includes("format=csv") && csvHref.includes("period=quarter"), "the CSV link keeps the period");

    // Filters live in the URL and survive navigation.
    await page.goto(base + "/");
    const channel = await page.locator("select[name=channel] option").nth(1).getAttribute("value");
    check(!!channel, `a channel to filter by (${channel})`);
    await page.selectOption("select[name=period]", "month");
    await page.selectOption("select[name=channel]", channel);
    await Promise.all([page.waitForNavigation(), page.click("form.picker button[type=submit]")]);
    check(page.url().includes("channel=" + channel) && page.url().includes("period=month"), `the filter is in the URL: ${page.url()}`);
    await Promise.all([page.waitForNavigation(), page.click("nav a:has-text('Sales')")]);
    check(new URL(page.url()).pathname === "/sales" && page.url().includes("channel=" + channel), "the nav link keeps the filter");
    check((await page.inputValue("select[name=channel]")) === channel, "the picker shows the kept filter");
    const filtered = Object.fromEntries(
      parseCsv(await (await page.request.get(base + "/?period=month&channel=" + channel + "&format=csv")).text()).slice(1).map((r) => [r[0], r.slice(1)])
    );
    const channelSales = parseCsv(await (await page.request.get(base + "/sales?period=month&channel=" + channel + "&format=csv")).text());
    check(
      channelSales.slice(1).reduce((a, r) => a + cents(r[2]), 0) === cents(filtered.revenue[0]),
      `the ${channel} revenue agrees between overview and sales`
    );

    // Every page renders; drill into a segment's members.
    for (const p of ["/pyramid", "/rfm", "/lifecycle", "/cohorts", "/stores", "/staff", "/products", "/partners", "/campaigns"]) {
      const r = await page.goto(base + p + query);
      check(r.status() === 200 && (await page.locator("h1").count()) === 1, `${p} renders`);
    }
    await page.goto(base + "/rfm" + query);
    await Promise.all([page.waitForNavigation(), page.locator("#table-rfm tbody a").first().click()]);
    check(new URL(page.url()).pathname.startsWith("/rfm/"), "a segment drills into its members");
    check((await page.locator("#table-members th").first().textContent()) === "member_id", "members are listed by id only");

    // Partners: attainment and projection per target, both series drawn with
    // the table's figures on hover, the CSV of the ranking, the filter in the URL.
    await page.goto(base + "/partners" + query);
    const targetRows = parseCsv(await (await page.request.get(base + "/partners" + query + "&format=csv&table=targets")).text());
    check(targetRows[0].join(",") === "rank,peers,partner,level,period,from,target,actual,attainment,projected,projected_attainment", "the partner targets' CSV header");
    check(targetRows.length > 1, `the seeded partners have running targets (${targetRows.length - 1})`);
    const paired = page.locator("svg.paired").first();
    for (const series of ["attainment", "projected"]) {
      const marks = paired.locator(`g.mark[data-series=${series}]`);
      check((await marks.count()) === targetRows.length - 1, `one ${series} bar per target`);
      const text = await marks.first().locator("title").textContent();
      const [, who, shownPct] = text.match(/^(\S+): \S+ ([0-9.-]+%)/) || [];
      const target = targetRows.find((r) => r[2] === who);
      const column = series === "attainment" ? 8 : 10;
      check(target && target[column] === shownPct, `${series} hover "${text}" matches the table's ${target && target[column]}`);
    }
    check(targetRows.some((r) => cents(r[7]) > 0 && r[3] !== ""), "some partner has sold against its target, with its level shown");
    const first = targetRows[1];
    check(first[0] === "1", "the ranking starts at 1");
    const repRows = parseCsv(await (await page.request.get(base + "/partners" + query + "&format=csv&table=reps")).text());
    check(repRows.length > 1, `the seeded reps have running targets (${repRows.length - 1})`);
    const leadRows = parseCsv(await (await page.request.get(base + "/partners" + query + "&format=csv&table=leads")).text());
    check(leadRows.some((r) => r[0] === "all" && parseInt(r[1], 10) > 0), "leads were offered in the quarter");
    const stageRows = parseCsv(await (await page.request.get(base + "/partners" + query + "&format=csv&table=pipeline")).text());
    check(stageRows.length === 8 && parseInt(stageRows[1][1], 10) > 0, "the pipeline lists its stages with opportunities");
    const partnerFilter = await page.locator("select[name=partner] option").nth(1).getAttribute("value");
    await page.selectOption("select[name=partner]", partnerFilter);
    await Promise.all([page.waitForNavigation(), page.click("form.picker button[type=submit]")]);
    check(page.url().includes("partner=" + encodeURIComponent(partnerFilter)), `the partner filter is in the URL: ${page.url()}`);
    const onlyRows = parseCsv(await (await page.request.get(page.url() + "&format=csv&table=targets")).text());
    check(onlyRows.slice(1).every((r) => r[2] === partnerFilter), "the filter narrows the ranking to the partner");
    await page.screenshot({ path: path.join(dataDir, "dashboard-partners.png"), fullPage: true });

    // Campaigns: the seeded campaign has run; its row carries the report's figures,
    // the same on the page, in its CSV and on hover over its bars.
    await Promise.all([page.waitForNavigation(), page.click("nav a:has-text('Campaigns')")]);
    check(new URL(page.url()).pathname === "/campaigns", "the nav links the campaigns page");
    const campaignRows = parseCsv(await (await page.request.get(base + "/campaigns?format=csv")).text());
    check(
      campaignRows[0].join(",") ===
        "campaign,state,window,audience,control_share,reached,responded,response_rate,control,control_responded,control_response_rate,revenue,control_revenue,incremental_revenue,cost,roi",
      "the campaigns' CSV header"
    );
    const seededCampaign = campaignRows.find((r) => r[0].startsWith("Spring reactivation"));
    check(!!seededCampaign, `the seeded campaign is listed (${campaignRows.length - 1} campaigns)`);
    const [campaignName, , , , , reachedCount, respondedCount, responseRate, controlCount] = seededCampaign;
    check(parseInt(reachedCount, 10) > 0 && parseInt(controlCount, 10) > 0, `it reached ${reachedCount} and held back ${controlCount}`);
    check(parseInt(respondedCount, 10) > 0 && cents(seededCampaign[11]) > 0, `reached members bought: ${respondedCount}, revenue ${seededCampaign[11]}`);
    check(cents(seededCampaign[14]) === parseInt(reachedCount, 10) * 15, `cost ${seededCampaign[14]} = reached x 0.15`);
    const shownRow = await page.locator("#table-campaigns tbody tr").filter({ hasText: campaignName }).first().locator("td").allTextContents();
    check(shownRow[5] === reachedCount && shownRow[7] === responseRate, `the table shows the CSV's figures (${shownRow.slice(5, 8).join(", ")})`);
    const targetedBar = page.locator("svg.paired g.mark[data-series=targeted]").filter({ hasText: campaignName.slice(0, 10) }).first();
    const barText = await targetedBar.locator("title").textContent();
    check(barText.startsWith(campaignName + ": targeted " + responseRate), `the bar's hover: "${barText}"`);
    await page.screenshot({ path: path.join(dataDir, "dashboard-campaigns.png"), fullPage: true });

    // The win-back panel for the page's period (kept in the URL): the wake-up and
    // reactivation rates on hover equal its CSV, each rate = bought again / members;
    // without decisions for sleeping or lost members, its empty state.
    await page.goto(base + "/campaigns?period=quarter");
    check((await page.inputValue("select[name=period]")) === "quarter", "the campaigns page keeps the period");
    const winBack = page.locator("section.panel").filter({ hasText: "Wake-up and reactivation" });
    check((await winBack.count()) === 1, "the win-back panel renders");
    const winRows = parseCsv(await (await page.request.get(base + "/campaigns?period=quarter&format=csv&table=win_back")).text());
    check(
      winRows[0].join(",") === "rate,targeted,targeted_bought_again,targeted_members,control,control_bought_again,control_members",
      "the win-back CSV header"
    );
    check(winRows.length === 3 && winRows[1][0] === "wake-up" && winRows[2][0] === "reactivation", "a wake-up and a reactivation row");
    const decided = winRows.slice(1).reduce((a, r) => a + parseInt(r[3], 10) + parseInt(r[6], 10), 0);
    if (decided === 0) {
      check((await winBack.locator("p.empty").textContent()).includes("No campaign targeted sleeping or lost members"), "the win-back panel's empty state");
    } else {
      const share = (n, m) => (m === 0 ? 0 : (100 * n) / m).toFixed(1) + "%";
      for (const r of winRows.slice(1)) {
        check(r[1] === share(+r[2], +r[3]) && r[4] === share(+r[5], +r[6]), `${r[0]}: ${r[1]} of ${r[3]} and ${r[4]} of ${r[6]} are bought-again shares`);
        const hover = await winBack.locator("svg.paired g.mark[data-series=targeted] title").filter({ hasText: r[0] + ":" }).first().textContent();
        check(hover.startsWith(`${r[0]}: targeted ${r[1]} (${r[2]} of ${r[3]} `), `the win-back bar's hover: "${hover}"`);
      }
    }

    // Live refresh keeps the page without a navigation.
    await page.goto(base + "/" + query);
    const refreshed = page.waitForResponse((r) => r.url().startsWith(base + "/?period=quarter") && r.request().resourceType() === "fetch", { timeout: 20000 });
    check((await refreshed).status() === 200, "the page refreshes its figures in place");

    // A tablet.
    const tablet = await browser.newContext({ viewport: { width: 768, height: 1024 }, isMobile: true, hasTouch: true });
    await tablet.addCookies(await context.cookies());
    const t = await tablet.newPage();
    await t.goto(base + "/" + query);
    const overflow = await t.evaluate(() => document.documentElement.scrollWidth - window.innerWidth);
    check(overflow <= 0, `no horizontal scrolling on a tablet (overflow ${overflow}px)`);
    const cardWidth = await t.locator(".card").first().evaluate((e) => e.getBoundingClientRect().width);
    check(cardWidth < 768 / 2, `cards in two columns on a tablet (${Math.round(cardWidth)}px)`);
    await t.screenshot({ path: path.join(dataDir, "dashboard-tablet.png"), fullPage: true });
    await tablet.close();

    // The seeded store manager of BER: only BER is offered, another store is 403.
    const [managerName, managerPassword] = fs.readFileSync(path.join(dataDir, "store-manager"), "utf8").trim().split("\n");
    const managerContext = await browser.newContext({ viewport: { width: 1280, height: 900 } });
    const manager = await managerContext.newPage();
    await manager.goto(base + "/login");
    await manager.fill("input[name=username]", managerName);
    await manager.fill("input[name=password]", managerPassword);
    await Promise.all([manager.waitForNavigation(), manager.click("button[type=submit]")]);
    await manager.goto(base + "/stores" + query);
    const offered = await manager.locator("select[name=store] option").evaluateAll((os) => os.map((o) => o.value).filter((v) => v));
    check(offered.join(",") === "BER", `the store manager is offered his store only (${offered.join(",")})`);
    check((await manager.textContent("h1")).includes("BER"), "his store's funnel is shown");
    const other = await manager.goto(base + "/stores" + query + "&store=HAM");
    check(other.status() === 403, "another store in the URL is refused");
    const campaignsForManager = await manager.goto(base + "/campaigns");
    check(campaignsForManager.status() === 403, "campaign results are brand-wide: not a store manager's");
    await managerContext.close();

    // Sign out.
    await Promise.all([page.waitForNavigation(), page.click("form.logout button")]);
    check(page.url().endsWith("/login"), "signed out");
    await page.goto(base + "/");
    check(page.url().endsWith("/login"), "the session is gone");
    check(external.length === 0, `no request left the dashboard (${external.join(", ")})`);
  } finally {
    await browser.close();
  }
})().catch((err) => {
  console.error(err);
  process.exit(1);
});

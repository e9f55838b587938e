// Drives the review page (`keyless audit serve`) in headless Chromium with playwright-core:
// loads it, filters by an identity, opens the first matching certificate and reads back what the
// page shows. Prints JSON; screenshots go where --screenshot-dir says.
//
//   node review-page.mjs --url URL --identity GLOB --screenshot-dir DIR [--token T]
import { chromium } from 'playwright-core';

function args() {
  const out = {};
  for (let i = 2; i < process.argv.length; i += 2) out[process.argv[i].replace(/^--/, '')] = process.argv[i + 1];
  return out;
}

async function main() {
  const a = args();
  const browser = await chromium.launch({
    executablePath: process.env.CHROMIUM || '/usr/bin/chromium',
    // No sandbox (tests may run as root) and no background traffic (the network is closed).
    args: ['--headless', '--no-sandbox', '--disable-gpu', '--disable-quic', '--no-first-run',
      '--disable-background-networking', '--disable-component-update', '--disable-sync'],
  });
  try {
    const context = await browser.newContext(a.token ? { extraHTTPHeaders: { Authorization: `Bearer ${a.token}` } } : {});
    const page = await context.newPage();
    const external = [];
    page.on('request', (r) => { if (!r.url().startsWith(a.url)) external.push(r.url()); });
    await page.goto(a.url);
    const before = await page.locator('#certs tbody tr').count();
    // Typing narrows the table at once (script); submitting filters on the server.
    await page.fill('#identity', a.identity);
    const visibleWhileTyping = await page.locator('#certs tbody tr:visible').count();
    await Promise.all([page.waitForURL(/identity=/), page.click('#apply')]);
    const identities = await page.locator('#certs tbody tr td:nth-child(2)').allInnerTexts();
    const charts = {
      issuance: await page.locator('#issuance-chart rect').count(),
      rejections: await page.locator('#rejection-chart rect').count(),
    };
    const checks = await page.locator('section ul').innerText();
    await page.screenshot({ path: `${a['screenshot-dir']}/review-index.png`, fullPage: true });
    await page.locator('#certs tbody tr a').first().click();
    await page.waitForSelector('#extensions');
    const extensions = {};
    for (const row of await page.locator('#extensions tbody tr').all()) {
      const oid = await row.getAttribute('data-oid');
      const cells = await row.locator('td').allInnerTexts();
      extensions[oid] = { name: cells[1], value: cells[2], critical: cells[3] === 'yes' };
    }
    const detail = {
      serial: await page.innerText('#serial'),
      san: await page.innerText('#san'),
      issuer: await page.innerText('#issuer'),
      sct: await page.innerText('#sct'),
      inclusion: await page.innerText('#inclusion'),
      extensions,
    };
    await page.screenshot({ path: `${a['screenshot-dir']}/review-certificate.png`, fullPage: true });
    console.log(JSON.stringify({ before, visibleWhileTyping, identities, charts, checks, detail, external }));
  } finally {
    await browser.close();
  }
}

main().catch((err) => {
  console.error(err.stack || String(err));
  process.exit(1);
});

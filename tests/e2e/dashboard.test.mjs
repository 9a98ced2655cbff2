// End-to-end test of the dashboard in Debian's headless Chromium (driven by playwright-core),
// against a real `gridmeter api` with loadgen data (tests/e2e/run.sh sets it up): the numbers on
// the page equal the API's answers for the same key, grouping and range switches, CSV downloads
// equal the table, invoices download, finance and operator views, phone-sized screen and
// keyboard use, and a customer key that cannot see another tenant through the dashboard.
// Screenshots and downloads go to $GM_E2E_ARTIFACTS. Exit status 0 only when every check holds.
import assert from 'node:assert/strict';
import { createRequire } from 'node:module';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import http from 'node:http';

// playwright-core from the build tree's npm ci (run.sh), else from tests/e2e/node_modules.
const require = createRequire(import.meta.url);
const { chromium } = require(require.resolve('playwright-core', { paths: [process.env.GM_E2E_NODE_DIR || '.', path.dirname(new URL(import.meta.url).pathname)] }));
const env = (k) => { const v = process.env[k]; if (!v) throw new Error(`${k} is not set (run tests/e2e/run.sh)`); return v; };
const BASE = env('GM_E2E_BASE'), ART = env('GM_E2E_ARTIFACTS'), CHROMIUM = env('GM_CHROMIUM');
const CUSTOMER = env('GM_E2E_CUSTOMER_KEY'), OTHER = env('GM_E2E_OTHER_KEY');
const FINANCE = env('GM_E2E_FINANCE_KEY'), ADMIN = env('GM_E2E_ADMIN_KEY');
const TENANT = env('GM_E2E_TENANT'), OTHER_TENANT = env('GM_E2E_OTHER_TENANT');
const EMPTY = env('GM_E2E_EMPTY_KEY'), EMPTY_TENANT = env('GM_E2E_EMPTY_TENANT');
const OLD_PERIOD = env('GM_E2E_OLD_PERIOD');

let checks = 0;
const steps = [];
function ok(name) { checks++; console.log(`  ok ${checks} - ${name}`); }
async function step(name, fn) {
  console.log(`# ${name}`);
  steps.push(name);
  await fn();
}

async function apiGet(key, p, accept = 'application/json') {
  const res = await fetch(BASE + p, { headers: { Authorization: `Bearer ${key}`, Accept: accept } });
  const text = await res.text();
  return { status: res.status, body: accept === 'application/json' && text ? JSON.parse(text) : text, headers: res.headers };
}
// A raw request whose path is sent exactly as given (no URL normalisation).
function rawGet(p, headers = {}) {
  return new Promise((resolve, reject) => {
    const u = new URL(BASE);
    const req = http.request({ host: u.hostname, port: u.port, path: p, method: 'GET', headers }, (res) => {
      let body = '';
      res.on('data', (c) => { body += c; });
      res.on('end', () => resolve({ status: res.statusCode, headers: res.headers, body }));
    });
    req.on('error', reject);
    req.end();
  });
}
function parseCsv(text) {
  const rows = [];
  let row = [], cell = '', q = false;
  for (let i = 0; i < text.length; i++) {
    const c = text[i];
    if (q) {
      if (c === '"' && text[i + 1] === '"') { cell += '"'; i++; } else if (c === '"') q = false; else cell += c;
    } else if (c === '"') q = true;
    else if (c === ',') { row.push(cell); cell = ''; } else if (c === '\r' && text[i + 1] === '\n') { row.push(cell); rows.push(row); row = []; cell = ''; i++; } else cell += c;
  }
  if (cell !== '' || row.length) { row.push(cell); rows.push(row); }
  return rows;
}
const bsum = (xs) => xs.reduce((a, x) => a + BigInt(x), 0n);
const usToS = (us) => { const s = BigInt(us).toString().padStart(7, '0'); return s.slice(0, -6) + '.' + s.slice(-6); };
const grouped = (s) => s.replace(/\B(?=(\d{3})+(?!\d))/g, ','); // integer strings only

async function tableCells(page, sel, part = 'tbody') {
  return page.$$eval(`${sel} ${part} tr`, (trs) => trs.map((tr) => [...tr.children].map((td) => td.textContent)));
}
async function headerCells(page, sel) {
  return page.$$eval(`${sel} thead th`, (ths) => ths.map((th) => th.textContent));
}
async function shot(page, name) {
  const f = path.join(ART, `${name}.png`);
  await page.screenshot({ path: f, fullPage: true });
  console.log(`  screenshot ${f}`);
}

// Waits for the page's next response to a /v1 path matching re, after running action.
async function pageResponse(page, re, action) {
  const [resp] = await Promise.all([
    page.waitForResponse((r) => re.test(new URL(r.url()).pathname + new URL(r.url()).search), { timeout: 15000 }),
    action(),
  ]);
  return resp;
}

async function checkSeriesTable(page, key, resp) {
  const u = new URL(resp.url());
  assert.equal(resp.status(), 200, `usage request ${u.search} answered ${resp.status()}`);
  const pageBody = await resp.json();
  // The same request made by the test with the same key: the API's answer.
  const api = await apiGet(key, u.pathname + u.search);
  assert.equal(api.status, 200);
  assert.deepEqual(api.body.series, pageBody.series, 'the page received what the API answers');
  await page.waitForFunction(() => !document.querySelector('#series-table').hasAttribute('aria-busy'));
  await page.waitForFunction(() => !document.querySelector('#series-msg').classList.contains('loading'));
  const group = u.searchParams.get('group_by');
  const cur = api.body.currency;
  // Each row shows its exact amount beside the rounded one (issue 18: hourly rows read 0.00).
  const expectHeader = group === 'dimension'
    ? ['bucket_start', 'dimension', 'quantity', 'unit', `amount (${cur})`, `amount_exact (${cur})`]
    : ['bucket_start', group, 'input_tokens', 'cached_tokens', 'cache_write_tokens', 'output_tokens', 'reasoning_tokens', 'gpu_seconds', 'requests', `amount (${cur})`, `amount_exact (${cur})`];
  const expectRows = api.body.series.map((r) => (group === 'dimension'
    ? [r.bucket_start, r.dimension, r.quantity, r.unit, r.amount, r.amount_exact]
    : [r.bucket_start, r[group], r.input_tokens, r.cached_tokens, r.cache_write_tokens, r.output_tokens, r.reasoning_tokens, usToS(r.gpu_us), r.requests, r.amount, r.amount_exact]));
  for (const row of expectRows) assert.match(row[row.length - 1], /^-?[0-9]+\.[0-9]{18}$/, 'exact amount: 18 decimals');
  assert.deepEqual(await headerCells(page, '#series-table'), expectHeader);
  assert.deepEqual(await tableCells(page, '#series-table'), expectRows, 'table rows equal the API rows');
  assert.ok(expectRows.length > 0, `usage rows for ${u.search}`);
  // Bars: one <rect> per non-zero (bucket, group) value at most; at least one.
  const rects = await page.$$eval('#chart svg rect', (r) => r.length);
  assert.ok(rects > 0, 'the chart has bars');
  return { from: u.searchParams.get('from'), to: u.searchParams.get('to'), bucket: u.searchParams.get('bucket'), group, rows: expectRows, header: expectHeader };
}

async function main() {
  fs.mkdirSync(ART, { recursive: true });
  const profile = fs.mkdtempSync(path.join(os.tmpdir(), 'gm-e2e-chromium-'));
  const ctx = await chromium.launchPersistentContext(profile, {
    executablePath: CHROMIUM,
    headless: true,
    args: ['--headless', '--no-sandbox', '--disable-gpu', '--disable-quic', '--no-first-run',
      '--disable-background-networking', '--disable-component-update', '--disable-sync'],
    acceptDownloads: true,
    downloadsPath: ART,
    viewport: { width: 1280, height: 900 },
  });
  const problems = [];
  const offOrigin = [];
  const watch = (page) => {
    page.on('pageerror', (e) => problems.push(`page error: ${e.message}`));
    page.on('console', (m) => {
      // Chromium logs each 4xx fetch as "Failed to load resource"; those are expected here
      // (tampering checks). Anything else (CSP violations, exceptions) fails the test.
      if (m.type() === 'error' && !/Failed to load resource/.test(m.text())) problems.push(`console: ${m.text()}`);
    });
    page.on('request', (r) => { if (!r.url().startsWith(BASE) && !/^(blob|data):/.test(r.url())) offOrigin.push(r.url()); });
  };
  try {
    await step('static files: types, headers, no traversal', async () => {
      for (const [p, type] of [['/dashboard/', 'text/html; charset=utf-8'], ['/dashboard/app.js', 'text/javascript; charset=utf-8'],
        ['/dashboard/style.css', 'text/css; charset=utf-8'], ['/dashboard/favicon.svg', 'image/svg+xml']]) {
        const r = await rawGet(p);
        assert.equal(r.status, 200, p);
        assert.equal(r.headers['content-type'], type, p);
        assert.match(r.headers['content-security-policy'], /default-src 'none'; script-src 'self'/);
        assert.equal(r.headers['x-content-type-options'], 'nosniff');
        assert.equal(r.headers['cache-control'], 'no-cache');
        const again = await rawGet(p, { 'If-None-Match': r.headers.etag });
        assert.equal(again.status, 304, `${p} revalidates with its ETag`);
      }
      assert.equal((await rawGet('/dashboard')).status, 308);
      const head = await new Promise((resolve, reject) => {
        const u = new URL(BASE);
        http.request({ host: u.hostname, port: u.port, path: '/dashboard/app.js', method: 'HEAD' }, (res) => { res.resume(); res.on('end', () => resolve(res)); }).on('error', reject).end();
      });
      assert.equal(head.statusCode, 200);
      assert.equal(head.headers['content-type'], 'text/javascript; charset=utf-8');
      const post = await fetch(`${BASE}/dashboard/`, { method: 'POST', body: 'x' });
      assert.equal(post.status, 405);
      assert.equal(post.headers.get('allow'), 'GET, HEAD');
      // dot segments and a decoded NUL are refused by the target decoder (400), other names
      // are not in the embedded table (404); both as problem+json, neither leaks a file
      for (const [p, want] of [['/dashboard/../v1/openapi.json', 400], ['/dashboard/%2e%2e/CMakeLists.txt', 400],
        ['/dashboard/../../etc/passwd', 400], ['/dashboard//etc/passwd', 404], ['/dashboard/index.html/', 404],
        ['/dashboard/.', 400], ['/dashboard/embed.cmake', 404], ['/dashboard/app.js%00.png', 400]]) {
        const r = await rawGet(p);
        assert.equal(r.status, want, `${p} must be ${want}, got ${r.status}`);
        assert.equal(r.headers['content-type'], 'application/problem+json', `${p}: problem+json`);
        assert.ok(!/root:|cmake_minimum|"openapi"/i.test(r.body), `${p} leaks nothing`);
      }
      ok('content types, CSP, ETag/304, traversal attempts 404');
    });

    let finalized;
    await step(`finance finalizes ${TENANT}'s invoice of ${OLD_PERIOD} through the API`, async () => {
      const l = await apiGet(FINANCE, `/v1/invoices?period=${OLD_PERIOD}&tenant=${TENANT}`);
      assert.equal(l.status, 200);
      assert.equal(l.body.items.length, 1);
      const res = await fetch(`${BASE}/v1/invoices/${l.body.items[0].invoice_id}/finalize`, {
        method: 'POST', headers: { Authorization: `Bearer ${FINANCE}`, 'Idempotency-Key': `e2e-${Date.now()}` },
      });
      finalized = await res.json();
      assert.equal(res.status, 200, JSON.stringify(finalized));
      assert.equal(finalized.status, 'finalized');
      ok(`invoice ${finalized.number} (${OLD_PERIOD}, total ${finalized.total} ${finalized.currency})`);
    });

    await step('an admin sets the tenant\'s budget (the Budget card shows it)', async () => {
      const res = await fetch(`${BASE}/v1/tenants/${TENANT}/budget`, {
        method: 'POST', headers: { Authorization: `Bearer ${ADMIN}`, 'Idempotency-Key': `e2e-b-${Date.now()}`, 'Content-Type': 'application/json' },
        body: JSON.stringify({ currency: 'USD', monthly_limit: '1000000.00', thresholds_percent: [50, 100] }),
      });
      const b = await res.json();
      assert.equal(res.status, 200, JSON.stringify(b));
      assert.equal(b.monthly_limit, '1000000.000000000000000000');
      ok('budget 1,000,000.00 USD, thresholds 50 % and 100 %');
    });

    const page = await ctx.newPage();
    watch(page);
    let firstSeries, firstSpend;

    await step('sign-in: empty, wrong key, then the customer key by keyboard', async () => {
      await page.goto(`${BASE}/dashboard/`);
      await page.waitForSelector('#signin:not([hidden])');
      assert.equal(await page.evaluate(() => document.activeElement.id), 'key', 'the key field has focus');
      await shot(page, '01-signin');
      await page.keyboard.type('not-a-key');
      await page.keyboard.press('Enter');
      await page.waitForFunction(() => /starts with gmk_/.test(document.querySelector('#signin-msg').textContent));
      await page.fill('#key', 'gmk_k0000000000000000_' + '0'.repeat(64));
      await page.keyboard.press('Enter');
      await page.waitForFunction(() => /not accepted/.test(document.querySelector('#signin-msg').textContent));
      await shot(page, '02-signin-error');
      ok('wrong keys get a message that says what to do');
      await page.fill('#key', '');
      await page.focus('#key');
      await page.keyboard.type(CUSTOMER);
      const spendResp = page.waitForResponse((r) => r.url().endsWith(`/v1/tenants/${TENANT}/spend`));
      const resp = await pageResponse(page, /\/v1\/tenants\/[^/]+\/usage\?.*group_by=model/, () => page.keyboard.press('Enter'));
      firstSpend = await (await spendResp).json();
      firstSeries = resp;
      await page.waitForSelector('#view-usage:not([hidden])');
      assert.equal(await page.textContent('#who'), `Customer: ${TENANT}`);
      assert.ok(!page.url().includes(CUSTOMER) && !page.url().includes('gmk_'), 'the key is not in the URL');
      const stored = await page.evaluate(() => ({ ls: localStorage.length, ck: document.cookie, ss: sessionStorage.getItem('gridmeter.key') }));
      assert.equal(stored.ls, 0, 'nothing in localStorage');
      assert.equal(stored.ck, '', 'no cookie');
      assert.equal(stored.ss, CUSTOMER, 'the key is kept in sessionStorage for this tab');
      ok('signed in by keyboard; key only in sessionStorage');
    });

    await step('cards equal the API: month to date, projection, draft, tokens, GPU-seconds', async () => {
      await page.waitForFunction(() => document.querySelector('#gpu-s').dataset.value !== undefined &&
        document.querySelector('#commitment').textContent !== '');
      const spend = (await apiGet(CUSTOMER, `/v1/tenants/${TENANT}/spend`)).body;
      const v = (id) => page.$eval(id, (e) => e.dataset.value);
      assert.equal(await v('#mtd'), spend.month_to_date.list_amount);
      assert.equal(await page.textContent('#mtd'), `${spend.month_to_date.list_amount} ${spend.currency}`);
      assert.equal(await v('#draft-total'), spend.month_to_date.draft_invoice_total);
      // The projection moves with the clock: the page shows what its own request returned.
      assert.equal(await v('#projection'), firstSpend.projection.list_amount);
      assert.equal(firstSpend.month_to_date.list_amount, spend.month_to_date.list_amount);
      // "Now" is the server's clock when the page loaded (GRIDMETER_NOW may move it), not this
      // machine's: the page took its month from the same clock.
      const now = new Date(firstSpend.as_of);
      const ms = new Date(Date.UTC(now.getUTCFullYear(), now.getUTCMonth(), 1)).toISOString().replace('.000Z', 'Z');
      const end = new Date(Math.floor(now.getTime() / 86400e3) * 86400e3 + 86400e3).toISOString().replace('.000Z', 'Z');
      const month = (await apiGet(CUSTOMER, `/v1/tenants/${TENANT}/usage?bucket=day&from=${ms}&to=${end}`)).body.series;
      for (const [id, k] of [['#tok-input', 'input_tokens'], ['#tok-cached', 'cached_tokens'], ['#tok-cache-write', 'cache_write_tokens'], ['#tok-output', 'output_tokens'], ['#tok-reasoning', 'reasoning_tokens']]) {
        const want = bsum(month.map((r) => r[k])).toString();
        assert.equal(await v(id), want, id);
        assert.equal(await page.textContent(id), grouped(want), id);
        if (!['cache_write_tokens', 'reasoning_tokens'].includes(k)) assert.ok(BigInt(want) > 0n, `${k} > 0`);
      }
      assert.equal(await v('#gpu-s'), usToS(bsum(month.map((r) => r.gpu_us))));
      // Budget card: what /entitlement answers.
      const ent = (await apiGet(CUSTOMER, `/v1/tenants/${TENANT}/entitlement`)).body;
      await page.waitForFunction(() => document.querySelector('#budget-status').textContent !== '…');
      assert.equal(await v('#budget-limit'), ent.limit);
      assert.equal(await v('#budget-spend'), ent.spend);
      assert.equal(await page.textContent('#budget-thresholds'), ent.thresholds_percent.map((p) => p + ' %' + (ent.thresholds_crossed.includes(p) ? ' (reached)' : '')).join(', '));
      assert.equal(await page.textContent('#budget-status'), ent.allowed ? 'allowed' : 'refused: monthly limit reached');
      assert.ok(ent.allowed, 'far below a limit of 1,000,000');
      const draft = (await apiGet(CUSTOMER, `/v1/tenants/${TENANT}/invoices?status=draft`)).body.items.find((i) => i.period === spend.period);
      const lines = (await apiGet(CUSTOMER, `/v1/invoices/${draft.invoice_id}`)).body.lines;
      const commit = lines.filter((l) => l.kind === 'commitment');
      await page.waitForFunction(() => document.querySelector('#commitment').textContent.length > 0);
      const ctext = await page.textContent('#commitment');
      if (commit.length === 1) assert.ok(ctext.includes(`minimum commitment top-up ${commit[0].amount}`), ctext);
      else assert.ok(!ctext.includes('commitment top-up'), ctext);
      // Commitment and credit card: the contract's terms from /spend, exactly.
      assert.ok(spend.commitment && spend.credit, `${TENANT}'s contract has a minimum and credit`);
      for (const [id, val, cur] of [['#commit-min', spend.commitment.monthly_minimum, spend.commitment.currency],
        ['#commit-short', spend.commitment.shortfall_so_far, spend.commitment.currency],
        ['#credit-granted', spend.credit.granted, spend.credit.currency],
        ['#credit-start', spend.credit.balance_at_month_start, spend.credit.currency],
        ['#credit-used', spend.credit.used_this_month, spend.credit.currency],
        ['#credit-left', spend.credit.remaining, spend.credit.currency]]) {
        assert.equal(await v(id), val, id);
        assert.equal(await page.textContent(id), `${grouped(val)} ${cur}`, id);
      }
      const credit = lines.filter((l) => l.kind === 'credit');
      const cents = (s) => BigInt(s.replace('.', ''));
      assert.equal(cents(spend.credit.used_this_month), -bsum(credit.map((l) => cents(l.amount))), 'credit used = the draft credit line');
      assert.equal(cents(spend.credit.remaining), cents(spend.credit.balance_at_month_start) - cents(spend.credit.used_this_month));
      ok(`month to date ${spend.month_to_date.list_amount} ${spend.currency}, draft ${spend.month_to_date.draft_invoice_total}; ${ctext}; minimum ${spend.commitment.monthly_minimum}, credit left ${spend.credit.remaining}`);
    });

    await step('usage table equals the API; switch grouping and range; CSV equals the table', async () => {
      const first = await checkSeriesTable(page, CUSTOMER, firstSeries);
      assert.equal(first.bucket, 'hour');
      assert.equal(Date.parse(first.to) - Date.parse(first.from), 24 * 3600e3, 'last 24 hours');
      ok(`24 h by model: ${first.rows.length} rows equal the API`);
      await shot(page, '03-usage-24h-model');
      const bySite = await checkSeriesTable(page, CUSTOMER, await pageResponse(page, /group_by=site/, () => page.selectOption('#group', 'site')));
      ok(`24 h by site: ${bySite.rows.length} rows`);
      await page.selectOption('#range', '7d');
      const dayResp = await pageResponse(page, /bucket=day/, () => page.selectOption('#bucket', 'day'));
      const byDay = await checkSeriesTable(page, CUSTOMER, dayResp);
      assert.equal(Date.parse(byDay.to) - Date.parse(byDay.from), 7 * 86400e3, '7 days of day buckets');
      assert.ok(new Set(byDay.rows.map((r) => r[0])).size >= 3, 'data on at least three days');
      ok(`7 days by day and site: ${byDay.rows.length} rows`);
      // Keyboard: the "Stack by" select changes with the arrow keys.
      await page.focus('#group');
      const dimResp = await pageResponse(page, /group_by=dimension/, () => page.keyboard.press('ArrowDown'));
      const byDim = await checkSeriesTable(page, CUSTOMER, dimResp);
      ok(`keyboard switched to dimension: ${byDim.rows.length} rows`);
      await page.selectOption('#metric', 'tokens');
      await shot(page, '04-usage-7d-day-dimension-tokens');
      assert.match(page.url(), /range=7d/);
      assert.match(page.url(), /group=dimension/);
      const [dl] = await Promise.all([page.waitForEvent('download'), page.click('#csv-btn')]);
      const file = path.join(ART, dl.suggestedFilename());
      await dl.saveAs(file);
      const csv = parseCsv(fs.readFileSync(file, 'utf8'));
      assert.deepEqual(csv[0], await headerCells(page, '#series-table'));
      assert.deepEqual(csv.slice(1), await tableCells(page, '#series-table'), 'CSV rows equal the table rows');
      ok(`CSV ${file}: ${csv.length - 1} rows equal the table`);
      // Reload: the view comes back from the fragment and the key from sessionStorage.
      const again = await pageResponse(page, /group_by=dimension/, () => page.reload());
      await checkSeriesTable(page, CUSTOMER, again);
      ok('reload keeps the session and the view');
    });

    await step('custom range and the empty state', async () => {
      await page.selectOption('#range', 'custom');
      await page.fill('#from', '2020-01-01');
      const r = await pageResponse(page, /from=2020-01-01/, () => page.fill('#to', '2020-01-03').then(() => page.dispatchEvent('#to', 'change')));
      assert.equal(r.status(), 200);
      await page.waitForFunction(() => document.querySelector('#series-msg').dataset.state === 'empty');
      assert.match(await page.textContent('#series-msg'), /No usage in this range\. Choose a longer range/);
      assert.equal((await tableCells(page, '#series-table')).length, 0);
      await shot(page, '05-usage-empty-range');
      ok('an empty range says what to do');
      await page.selectOption('#range', '30d');
    });

    await step('loading and error states; the skip link comes first', async () => {
      let release;
      const gate = new Promise((r) => { release = r; });
      const slow = /\/v1\/tenants\/[^/]+\/usage\?.*group_by=site/;
      await page.route(slow, async (route) => { await gate; await route.continue(); });
      await page.selectOption('#group', 'site');
      await page.waitForFunction(() => document.querySelector('#series-msg').dataset.state === 'loading');
      assert.match(await page.textContent('#series-msg'), /Loading usage/);
      await shot(page, '05b-usage-loading');
      release();
      await page.waitForFunction(() => document.querySelector('#series-msg').dataset.state === 'ok');
      await page.unroute(slow);
      const failing = /\/v1\/tenants\/[^/]+\/usage\?.*group_by=model/;
      await page.route(failing, (route) => route.fulfill({
        status: 503, contentType: 'application/problem+json',
        body: JSON.stringify({ type: 'https://gridmeter.dev/problems/unavailable', title: 'Service Unavailable', status: 503, detail: 'no PostgreSQL connection free within 2000 ms' }),
      }));
      await page.selectOption('#group', 'model');
      await page.waitForFunction(() => document.querySelector('#series-msg').dataset.state === 'error');
      assert.match(await page.textContent('#series-msg'), /server failed .*HTTP 503.*Try again/);
      assert.equal((await tableCells(page, '#series-table')).length, 0, 'no stale rows under an error');
      await shot(page, '05c-usage-server-error');
      await page.unroute(failing);
      ok('loading and 503 states say what is happening and what to do');
      await pageResponse(page, /\/usage\?.*group_by=model/, () => page.reload());
      await page.keyboard.press('Tab');
      assert.equal(await page.evaluate(() => document.activeElement.className), 'skip');
      ok('Tab reaches the skip link first');
    });

    await step('invoices: the list equals the API; JSON and CSV downloads equal the API', async () => {
      const resp = await pageResponse(page, /\/v1\/tenants\/[^/]+\/invoices/, () => page.click('#tab-invoices'));
      assert.equal(resp.status(), 200);
      await page.waitForFunction(() => !document.querySelector('#inv-msg').classList.contains('loading'));
      const list = (await apiGet(CUSTOMER, `/v1/tenants/${TENANT}/invoices?limit=24`)).body.items;
      assert.ok(list.length > 0);
      const rows = await tableCells(page, '#inv-table');
      assert.deepEqual(rows.map((r) => [r[0], r[2], r[3], r[4]]),
        list.map((i) => [i.period, i.number || '—', i.total === null ? '—' : i.total.replace(/^(-?\d+)/, (m) => grouped(m)), i.currency || '']));
      const inv = list.find((i) => i.number === finalized.number);
      assert.ok(inv, `the finalized invoice ${finalized.number} is listed`);
      const row = `#inv-table tbody tr[data-invoice-id="${inv.invoice_id}"]`;
      const [dj] = await Promise.all([page.waitForEvent('download'), page.click(`${row} button:has-text("JSON")`)]);
      const fj = path.join(ART, dj.suggestedFilename());
      await dj.saveAs(fj);
      const apiJson = (await apiGet(CUSTOMER, `/v1/invoices/${inv.invoice_id}`)).body;
      const got = JSON.parse(fs.readFileSync(fj, 'utf8'));
      assert.deepEqual(got, apiJson, 'the JSON download is the API document');
      assert.ok(got.lines.length > 0);
      const [dc] = await Promise.all([page.waitForEvent('download'), page.click(`${row} button:has-text("CSV")`)]);
      const fc = path.join(ART, dc.suggestedFilename());
      await dc.saveAs(fc);
      assert.equal(fs.readFileSync(fc, 'utf8'), (await apiGet(CUSTOMER, `/v1/invoices/${inv.invoice_id}`, 'text/csv')).body);
      await shot(page, '06-invoices');
      ok(`${list.length} invoices; downloads ${path.basename(fj)} and ${path.basename(fc)} equal the API`);
    });

    await step('phone-sized screen', async () => {
      await page.setViewportSize({ width: 390, height: 844 });
      await pageResponse(page, /\/usage\?/, () => page.click('#tab-usage'));
      await page.waitForFunction(() => !document.querySelector('#series-msg').classList.contains('loading'));
      const w = await page.evaluate(() => document.documentElement.scrollWidth);
      assert.ok(w <= 391, `no sideways scrolling of the page on 390 px (scrollWidth ${w})`);
      await shot(page, '07-usage-phone');
      await page.setViewportSize({ width: 1280, height: 900 });
      ok('fits 390 px');
    });

    await step('a customer key cannot see another tenant through the dashboard', async () => {
      const otherInv = (await apiGet(FINANCE, `/v1/tenants/${OTHER_TENANT}/invoices`)).body.items;
      assert.ok(otherInv.length > 0, `${OTHER_TENANT} has invoices (finance sees them)`);
      const seen = [];
      const onResp = (r) => { if (r.url().includes(`/tenants/${OTHER_TENANT}/`)) seen.push(r.status()); };
      page.on('response', onResp);
      await page.evaluate((t) => { location.hash = `view=usage&tenant=${t}`; }, OTHER_TENANT);
      await page.waitForFunction(() => document.querySelector('#usage-msg').dataset.state === 'error');
      assert.match(await page.textContent('#usage-msg'), /cannot see/);
      assert.ok(await page.$eval('#usage-body', (e) => e.hidden), 'no numbers are shown');
      await page.evaluate((t) => { location.hash = `view=invoices&tenant=${t}`; }, OTHER_TENANT);
      await page.waitForFunction(() => document.querySelector('#inv-msg').dataset.state === 'error');
      assert.equal((await tableCells(page, '#inv-table')).length, 0);
      await shot(page, '08-tampered-tenant');
      page.off('response', onResp);
      assert.ok(seen.length >= 2 && seen.every((s) => s === 404), `another tenant's calls were all 404: ${seen}`);
      // The page's own key against other ids, from inside the page.
      const statuses = await page.evaluate(async ([t, id]) => {
        const key = sessionStorage.getItem('gridmeter.key');
        const get = (p) => fetch(p, { headers: { Authorization: 'Bearer ' + key } }).then((r) => r.status);
        const now = new Date(); const to = new Date(Math.floor(now / 3600e3) * 3600e3).toISOString();
        return [await get(`/v1/tenants/${t}/spend`), await get(`/v1/tenants/${t}/usage?bucket=hour&from=${new Date(Date.parse(to) - 3600e3).toISOString()}&to=${to}`),
          await get(`/v1/tenants/${t}/invoices`), await get(`/v1/invoices/${id}`), await get(`/v1/invoices?tenant=${t}`),
          await get('/v1/revenue?period=2026-01')];
      }, [OTHER_TENANT, otherInv[0].invoice_id]);
      assert.deepEqual(statuses, [404, 404, 404, 404, 404, 403]);
      // And nothing of that tenant anywhere on the page.
      assert.ok(!(await page.content()).includes(otherInv[0].invoice_id));
      ok(`tampered fragment and direct calls: ${statuses.join(', ')}`);
      await page.evaluate(() => { location.hash = 'view=usage'; });
    });

    await step('sign out forgets the key', async () => {
      await page.click('#signout');
      await page.waitForSelector('#signin:not([hidden])');
      assert.equal(await page.evaluate(() => sessionStorage.length), 0);
      await page.reload();
      await page.waitForSelector('#signin:not([hidden])');
      ok('signed out; a reload asks for the key again');
    });

    await step('finance view: revenue by site, tenant and model equals the API; CSV; operator', async () => {
      const fp = await ctx.newPage();
      watch(fp);
      await fp.goto(`${BASE}/dashboard/`);
      await fp.fill('#key', FINANCE);
      const r1 = await pageResponse(fp, /\/v1\/revenue\?.*group_by=site$/, () => fp.click('#signin-btn'));
      assert.equal(r1.status(), 200);
      await fp.waitForSelector('#view-finance:not([hidden])');
      const period = new URL(r1.url()).searchParams.get('period');
      for (const g of ['site', 'tenant', 'model']) {
        if (g !== 'site') await pageResponse(fp, new RegExp(`group_by=${g}$`), () => fp.selectOption('#fin-group', g));
        await fp.waitForFunction(() => !document.querySelector('#fin-msg').classList.contains('loading'));
        const api = (await apiGet(FINANCE, `/v1/revenue?period=${period}&group_by=${g}`)).body;
        assert.ok(api.rows.length > 0, `revenue rows by ${g}`);
        const want = api.rows.map((r) => [r[g], r.currency, r.amount, r.amount_exact, r.dimension_events]);
        assert.deepEqual(await tableCells(fp, '#fin-table'), want, `revenue by ${g}`);
        // Totals per currency: exact decimal sums of the rows.
        const foot = await tableCells(fp, '#fin-table', 'tfoot');
        const cents = api.rows.reduce((a, r) => a + BigInt(r.amount.replace('.', '')), 0n).toString().padStart(3, '0');
        assert.equal(foot[0][2], cents.slice(0, -2) + '.' + cents.slice(-2));
        await shot(fp, `09-finance-by-${g}`);
        if (g === 'tenant') {
          await fp.setViewportSize({ width: 390, height: 844 });
          // The chart is redrawn at the new width (150 ms after the last resize event).
          await fp.waitForFunction(() => document.querySelector('#fin-chart svg').viewBox.baseVal.width < 400);
          const w = await fp.evaluate(() => document.documentElement.scrollWidth);
          assert.ok(w <= 391, `finance view fits 390 px (scrollWidth ${w})`);
          await shot(fp, '09b-finance-phone');
          await fp.setViewportSize({ width: 1280, height: 900 });
        }
        ok(`revenue ${period} by ${g}: ${want.length} rows equal the API`);
      }
      // Revenue over time: the month day by day, then 12 months, equal to the API; the days add
      // up exactly to the month's revenue.
      {
        const monthApi = (await apiGet(FINANCE, `/v1/revenue?period=${period}&group_by=site`)).body;
        const exactSum = (list) => {
          let tot = 0n;
          for (const x of list) { const [i, f = ''] = x.replace('-', '').split('.'); tot += (x.startsWith('-') ? -1n : 1n) * BigInt(i + f.padEnd(18, '0')); }
          return tot;
        };
        await fp.waitForFunction(() => !document.querySelector('#fin-series-msg').classList.contains('loading'));
        const [yy, mm] = period.split('-').map(Number);
        const nextM = mm === 12 ? `${yy + 1}-01` : `${yy}-${String(mm + 1).padStart(2, '0')}`;
        const days = (await apiGet(FINANCE, `/v1/revenue?from=${period}&to=${nextM}&bucket=day`)).body;
        assert.ok(days.series.length > 0, 'revenue by day');
        assert.deepEqual(await tableCells(fp, '#fin-series-table'),
          days.series.map((r) => [r.bucket_start.slice(0, 10), r.currency, r.amount, r.amount_exact, r.dimension_events]), 'revenue by day equals the API');
        assert.equal(exactSum(days.series.map((r) => r.amount_exact)), exactSum(monthApi.rows.map((r) => r.amount_exact)), 'the days add up to the month');
        await shot(fp, '09c-finance-by-day');
        const mr = await pageResponse(fp, /\/v1\/revenue\?from=.*bucket=month$/, () => fp.selectOption('#fin-bucket', 'month'));
        assert.equal(mr.status(), 200);
        await fp.waitForFunction(() => !document.querySelector('#fin-series-msg').classList.contains('loading'));
        const months = (await apiGet(FINANCE, new URL(mr.url()).pathname + new URL(mr.url()).search)).body;
        assert.deepEqual(await tableCells(fp, '#fin-series-table'),
          months.series.map((r) => [r.bucket_start.slice(0, 7), r.currency, r.amount, r.amount_exact, r.dimension_events]), 'revenue by month equals the API');
        const thisMonth = months.series.filter((r) => r.bucket_start.startsWith(period)).map((r) => r.amount_exact);
        assert.equal(exactSum(thisMonth), exactSum(monthApi.rows.map((r) => r.amount_exact)), 'the month row is the month\'s revenue');
        await shot(fp, '09d-finance-by-month');
        ok(`revenue over time: ${days.series.length} days and ${months.series.length} months equal the API`);
      }
      // Unit economics: the table equals /v1/economics (losing rows first), per basis.
      for (const basis of ['requests', 'windows']) {
        if (basis !== 'requests') await pageResponse(fp, /\/v1\/economics\?.*basis=windows/, () => fp.selectOption('#fin-econ-basis', basis));
        await fp.waitForFunction(() => !document.querySelector('#fin-econ-msg').classList.contains('loading'));
        const econ = (await apiGet(FINANCE, `/v1/economics?period=${period}&basis=${basis}&group_by=site`)).body;
        assert.ok(econ.rows.length > 0, `economics rows (${basis})`);
        const vals = ['revenue_currency', 'revenue', 'cost_currency', 'gpu_cost', 'margin', 'output_tokens', 'gpu_us',
          'cost_per_1m_output_tokens', 'reference_per_1m_output_tokens', 'revenue_per_1m_output_tokens', 'hours_without_cost_card'];
        assert.deepEqual(await tableCells(fp, '#fin-econ-table'), econ.rows.map((r) => [r.site, ...vals.map((v) => (r[v] === null ? '' : r[v]))]),
          `economics by site (${basis}) equals the API`);
        if (basis === 'requests') {
          assert.ok(econ.rows.every((r) => r.hours_without_cost_card === '0' && r.reference_per_1m_output_tokens === '0.600000000000'), 'the fleet card prices every hour');
          const m = econ.rows.map((r) => r.margin);
          const key = (x) => { const [i, f = ''] = x.replace('-', '').split('.'); return (x.startsWith('-') ? -1n : 1n) * BigInt(i + f.padEnd(18, '0')); };
          for (let i = 1; i < m.length; i++) assert.ok(key(m[i - 1]) <= key(m[i]), 'losing rows first');
        }
        await shot(fp, `09e-finance-economics-${basis}`);
        ok(`unit economics ${period} (${basis}): ${econ.rows.length} sites equal the API`);
      }
      const [dl] = await Promise.all([fp.waitForEvent('download'), fp.click('#fin-csv')]);
      const f = path.join(ART, dl.suggestedFilename());
      await dl.saveAs(f);
      const csv = parseCsv(fs.readFileSync(f, 'utf8'));
      assert.deepEqual(csv[0], await headerCells(fp, '#fin-table'));
      assert.deepEqual(csv.slice(1), await tableCells(fp, '#fin-table'));
      ok(`finance CSV ${path.basename(f)} equals the table`);
      // Finance may open a tenant's usage view.
      await fp.selectOption('#fin-tenant', TENANT);
      const ur = await pageResponse(fp, new RegExp(`/tenants/${TENANT}/usage\\?.*group_by=`), () => fp.click('#fin-open'));
      await checkSeriesTable(fp, FINANCE, ur);
      ok(`finance opens ${TENANT}'s usage`);
      const ing = await pageResponse(fp, /^\/v1\/ops\/ingest$/, () => fp.click('#tab-operator'));
      assert.equal(ing.status(), 200);
      const d = await ing.json();
      await fp.waitForFunction(() => document.querySelector('#op-msg').dataset.state === 'empty');
      assert.match(await fp.textContent('#op-msg'), /admin keys only/);
      await fp.waitForFunction(() => document.querySelectorAll('#ing-table tbody tr').length > 0);
      const wantIng = Object.entries(d.messages).map(([k, v]) => ['messages ' + k, v]);
      wantIng.push(['batches committed', d.batches], ['commit time, seconds (sum)', d.commit_seconds.sum],
        ['commits timed (count)', d.commit_seconds.count]);
      assert.deepEqual(await tableCells(fp, '#ing-table'), wantIng, 'ingest counters as the endpoint returned them');
      assert.deepEqual(Object.keys(d.messages).sort(), ['accepted', 'conflict', 'duplicate', 'rejected']);
      assert.deepEqual(await tableCells(fp, '#lag-table'), d.consumer_lag.map((l) => [l.topic, String(l.partition), l.lag]),
        'lag per partition as the endpoint returned it');
      // The rate from the page's second sample: delta over the two fetched_at instants.
      await fp.waitForFunction(() => document.querySelector('#ing-rate').dataset.value !== undefined, null, { timeout: 15000 });
      const rate = await fp.$eval('#ing-rate', (e) => ({ ...e.dataset, text: e.textContent }));
      assert.ok(BigInt(rate.delta) >= 0n && Number(rate.ms) > 0, JSON.stringify(rate));
      assert.equal(rate.value, (Number(rate.delta) * 1000 / Number(rate.ms)).toFixed(1));
      assert.match(rate.text, new RegExp(`^Ingest rate: ${rate.value.replace('.', '\\.')} messages/s`));
      await shot(fp, '10-operator-finance-key');
      ok(`operator view with a finance key: rater ingest (accepted ${d.messages.accepted}, ${d.consumer_lag.length} partitions, ${rate.value} messages/s)`);
      await fp.close();
    });

    await step('operator view with an admin key', async () => {
      const ap = await ctx.newPage();
      watch(ap);
      await ap.goto(`${BASE}/dashboard/`);
      await ap.fill('#key', ADMIN);
      await pageResponse(ap, /^\/metrics/, () => ap.click('#signin-btn'));
      await ap.waitForSelector('#view-operator:not([hidden])');
      await ap.waitForFunction(() => document.querySelectorAll('#op-table tbody tr').length > 0);
      const metrics = (await apiGet(ADMIN, '/metrics', 'text/plain')).body;
      const usageLine = metrics.split('\n').find((l) => l.startsWith('gridmeter_api_requests_total{route="GET /v1/tenants/{tenant}/usage",code="2xx"}'));
      assert.ok(usageLine, 'the API counted the usage requests');
      const opRows = await tableCells(ap, '#op-table');
      assert.ok(opRows.some((r) => r[1] === '{route="GET /v1/tenants/{tenant}/usage",code="2xx"}' && BigInt(r[2]) > 0n), 'route labels with braces are shown whole');
      assert.ok(await ap.$eval('#tab-usage', (e) => e.hidden));
      await shot(ap, '11-operator-admin-key');
      ok('admin key: the API\'s request counters');
      await ap.close();
    });

    await step('a second customer sees only its own numbers', async () => {
      const op = await ctx.newPage();
      watch(op);
      await op.goto(`${BASE}/dashboard/`);
      await op.fill('#key', OTHER);
      const r = await pageResponse(op, /\/usage\?.*group_by=model/, () => op.click('#signin-btn'));
      assert.equal(new URL(r.url()).pathname, `/v1/tenants/${OTHER_TENANT}/usage`);
      await checkSeriesTable(op, OTHER, r);
      assert.equal(await op.textContent('#who'), `Customer: ${OTHER_TENANT}`);
      ok(`${OTHER_TENANT}'s key sees ${OTHER_TENANT}`);
      // Revoked while signed in: the next request sends the page back to the sign-in form.
      const keyId = OTHER.split('_')[1];
      const del = await fetch(`${BASE}/v1/api-keys/${keyId}`, { method: 'DELETE', headers: { Authorization: `Bearer ${ADMIN}` } });
      assert.ok(del.status >= 200 && del.status < 300, `revoke answered ${del.status}`);
      await op.selectOption('#group', 'site');
      await op.waitForSelector('#signin:not([hidden])');
      assert.match(await op.textContent('#signin-msg'), /no longer accepted/);
      assert.equal(await op.evaluate(() => sessionStorage.length), 0);
      ok('a revoked key ends the session with a message');
      await op.close();
    });

    await step('a customer with no usage yet: its tenant from /v1/me, then empty states', async () => {
      const np = await ctx.newPage();
      watch(np);
      await np.goto(`${BASE}/dashboard/`);
      await np.fill('#key', EMPTY);
      const me = await pageResponse(np, /\/v1\/me$/, () => np.click('#signin-btn'));
      const meBody = await me.json();
      assert.equal(meBody.role, 'customer');
      assert.equal(meBody.tenant, EMPTY_TENANT);
      assert.equal(meBody.key_id, EMPTY.split('_')[1]);
      await np.waitForSelector('#view-usage:not([hidden])');
      await np.waitForFunction(() => document.querySelector('#usage-msg').dataset.state === 'empty' &&
        document.querySelector('#series-msg').dataset.state === 'empty');
      assert.match(await np.textContent('#usage-msg'), /No usage recorded this month yet/);
      assert.equal(await np.$eval('#tok-input', (e) => e.dataset.value), '0');
      assert.ok(await np.$eval('.chart', (e) => e.hidden), 'no empty chart box');
      await shot(np, '12-customer-without-usage');
      await np.click('#tab-invoices');
      await np.waitForFunction(() => document.querySelector('#inv-msg').dataset.state === 'empty');
      assert.match(await np.textContent('#inv-msg'), /No invoices yet/);
      assert.equal(await np.textContent('#who'), `Customer: ${EMPTY_TENANT}`);
      ok('a customer without usage signs in (tenant from /v1/me) and sees what to expect');
      await np.close();
    });

    assert.deepEqual(problems, [], 'no page errors, console errors or CSP violations');
    assert.deepEqual(offOrigin, [], 'no request leaves the API origin');
    ok('no page errors, no CSP violations, no requests elsewhere');
  } finally {
    await ctx.close();
    fs.rmSync(profile, { recursive: true, force: true });
  }
  console.log(`e2e: PASS (${checks} checks; artifacts in ${ART})`);
}

main().catch((e) => {
  console.error(`e2e: FAIL in step "${steps[steps.length - 1]}": ${e.stack || e}`);
  process.exit(1);
});

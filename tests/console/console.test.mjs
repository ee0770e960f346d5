// The web console end to end, in headless Chromium driven by Playwright:
// a real `cairn serve` on a temporary directory, a store made over the API,
// the page opened, a store and a stream browsed, an event appended from
// outside and seen arriving in the live tail, a doc edited, an event
// appended from the page; on a laptop screen and on a phone. Screenshots
// go to docs/images/.
//
//   CAIRN_BIN=target/debug/cairn CAIRN_TOOLS=target/test-servers node tests/console/console.test.mjs
//
// scripts/console-test installs Chromium and playwright-core and runs it.

import { spawn } from 'node:child_process';
import { createRequire } from 'node:module';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { createHash } from 'node:crypto';
import { tmpdir } from 'node:os';
import { join, resolve } from 'node:path';
import assert from 'node:assert/strict';
import { createInterface } from 'node:readline';

const tools = resolve(process.env.CAIRN_TOOLS || 'target/test-servers');
const { chromium } = createRequire(join(tools, 'node_modules', 'x.js'))('playwright-core');
const bin = resolve(process.env.CAIRN_BIN || 'target/debug/cairn');
const images = resolve(process.env.CAIRN_SCREENSHOTS || 'docs/images');
const chromiumPath = process.env.CHROMIUM || '/usr/bin/chromium';

const dir = mkdtempSync(join(tmpdir(), 'cairn-console-'));
const nodes = [];
async function serve(args) {
  const node = spawn(bin, ['serve', '--listen', '127.0.0.1:0', ...args], { stdio: ['ignore', 'pipe', 'inherit'], env: { ...process.env, CAIRN_LOG: 'error' } });
  nodes.push(node);
  return new Promise((ok, fail) => {
    node.on('exit', (code) => fail(new Error(`cairn serve exited with ${code}`)));
    createInterface({ input: node.stdout }).once('line', (line) => ok(`http://${line.replace('listening on ', '').trim()}`));
  });
}
const base = await serve(['--storage', join(dir, 'open')]);

async function call(method, path, body, headers = {}) {
  const r = await fetch(`${base}/v1${path}`, { method, headers: { 'Content-Type': 'application/json', ...headers }, body: body === undefined ? undefined : JSON.stringify(body) });
  assert.ok(r.ok, `${method} ${path}: ${r.status} ${await r.clone().text()}`);
  return r.status === 204 ? null : r.json();
}

let browser;
let page;
let step = 'start';
try {
  await call('PUT', '/stores/shop');
  await call('PUT', '/stores/audit');
  await call('POST', '/stores/shop/streams/order-1/events', [
    { type: 'OrderPlaced', data: { order: 1, total: '42.99', items: [{ sku: 'tea', qty: 2 }] }, tags: { region: 'eu' } },
    { type: 'OrderPaid', data: { order: 1, method: 'card' } },
    { type: 'OrderShipped', data: { order: 1, carrier: 'post' } },
  ]);
  await call('POST', '/stores/shop/streams/order-2/events', [{ type: 'OrderPlaced', data: { order: 2, total: '5.00' } }]);
  await call('POST', '/stores/shop/streams/blob-1/events', [{ type: 'Thumbnail', data_b64: Buffer.concat([Buffer.from([0x89, 0x50, 0x4e, 0x47, 0x0d, 0x0a, 0x1a, 0x0a]), Buffer.from(' binary!')]).toString('base64') }]);

  browser = await chromium.launch({
    executablePath: chromiumPath,
    args: ['--headless', '--no-sandbox', '--disable-gpu', '--disable-quic', '--no-first-run', '--disable-background-networking', '--disable-component-update', '--disable-sync'],
  });
  const context = await browser.newContext({ viewport: { width: 1280, height: 800 }, colorScheme: 'light' });
  page = await context.newPage();
  const errors = [];
  page.on('pageerror', (e) => errors.push(e.message));
  page.on('console', (m) => { if (m.type() === 'error') errors.push(m.text()); });

  step = 'stores';
  await page.goto(base + '/');
  const shop = page.getByTestId('store-shop');
  await shop.waitFor();
  assert.equal((await shop.getByTestId('events').textContent()).trim(), '5');
  await page.getByTestId('store-audit').waitFor();
  await page.screenshot({ path: join(images, 'console-stores.png') });

  step = 'store';
  await shop.click();
  await page.getByTestId('store-name').filter({ hasText: 'shop' }).waitFor();
  await page.getByTestId('event-4').waitFor(); // newest first
  const rows = await page.getByTestId('events').locator('tr').count();
  assert.equal(rows, 5);
  await page.getByTestId('event-0').click();
  const data = page.getByTestId('event-data');
  await data.waitFor();
  assert.match(await data.textContent(), /"total": "42\.99"/);
  assert.match(await page.getByTestId('detail').textContent(), /region:eu/);
  await page.screenshot({ path: join(images, 'console-store.png') });

  step = 'binary';
  await page.getByTestId('event-4').click();
  assert.match(await page.getByTestId('event-data').textContent(), /^00000000  89 50 4e 47/);

  step = 'stream';
  await page.getByTestId('tab-stream').click();
  await page.getByTestId('stream-name').fill('order-1');
  await page.getByTestId('stream-open').click();
  await page.getByTestId('stream-head').filter({ hasText: '2' }).waitFor();
  const revs = await page.getByTestId('events').locator('tr td:nth-child(3)').allTextContents();
  assert.deepEqual(revs.map((r) => r.trim()), ['2', '1', '0'], 'newest first');
  await page.getByTestId('stream-name').fill('no-such-stream');
  await page.getByTestId('stream-open').click();
  await page.getByTestId('stream-empty').waitFor();

  step = 'live';
  await page.getByTestId('tab-live').click();
  await page.getByTestId('live-status').filter({ hasText: 'live' }).waitFor();
  // Appended elsewhere: over the API, not through the page.
  const before = Date.now();
  await call('POST', '/stores/shop/streams/order-3/events', [{ type: 'OrderPlaced', data: { order: 3, total: '17.50' } }]);
  await page.getByTestId('event-5').waitFor({ timeout: 5000 });
  const lag = Date.now() - before;
  await call('POST', '/stores/shop/streams/order-3/events', [{ type: 'OrderPaid', data: { order: 3 } }]);
  await page.getByTestId('event-6').waitFor({ timeout: 5000 });
  const live = await page.getByTestId('events').locator('tr td:first-child').allTextContents();
  assert.deepEqual(live.map((s) => s.trim()), ['6', '5'], 'new events on top');
  assert.equal((await page.getByTestId('store-events').textContent()).trim(), '7', 'the count follows');
  await page.getByTestId('event-5').click();
  await page.screenshot({ path: join(images, 'console-live.png') });

  step = 'docs';
  await page.getByTestId('tab-docs').click();
  await page.getByTestId('doc-key').fill('checkpoint');
  await page.getByTestId('doc-open').click();
  await page.getByTestId('doc-body').fill('{"seq": 6}');
  await page.getByTestId('doc-save').click();
  await page.getByTestId('doc-status').filter({ hasText: 'Saved' }).waitFor();
  const doc = await (await fetch(`${base}/v1/stores/shop/docs/checkpoint`)).json();
  assert.deepEqual(doc, { seq: 6 });
  // A stale edit is refused, not lost silently.
  await fetch(`${base}/v1/stores/shop/docs/checkpoint`, { method: 'PUT', body: '{"seq": 7}' });
  await page.getByTestId('doc-body').fill('{"seq": 8}');
  await page.getByTestId('doc-save').click();
  await page.getByTestId('doc-status').filter({ hasText: 'Someone changed this doc' }).waitFor();

  step = 'append';
  await page.getByTestId('tab-append').click();
  await page.getByTestId('append-stream').fill('from-the-console');
  await page.getByTestId('append-data').fill('{"clicked": true}');
  await page.getByTestId('append-submit').click();
  await page.getByTestId('append-status').filter({ hasText: 'Appended at seq 7' }).waitFor();
  const head = await call('GET', '/stores/shop/streams/from-the-console');
  assert.equal(head.revision, 0);
  await page.getByTestId('append-data').fill('{oops');
  await page.getByTestId('append-submit').click();
  await page.getByTestId('append-status').filter({ hasText: 'not JSON' }).waitFor();

  step = 'phone';
  const phone = await browser.newContext({ viewport: { width: 390, height: 844 }, deviceScaleFactor: 2, isMobile: true, hasTouch: true });
  const p2 = await phone.newPage();
  page = p2;
  await p2.goto(`${base}/#/s/shop`);
  await p2.getByTestId('event-7').waitFor();
  await p2.getByTestId('event-0').click();
  const overflow = await p2.evaluate(() => document.documentElement.scrollWidth - window.innerWidth);
  assert.ok(overflow <= 0, `no sideways scrolling on a phone (${overflow}px too wide)`);
  await p2.screenshot({ path: join(images, 'console-phone.png') });

  step = 'errors';
  await page.goto(`${base}/#/s/no-such-store`);
  await page.getByTestId('error').filter({ hasText: 'store_not_found' }).waitFor();
  // The 412 of the stale doc edit and the 404 of the missing store are expected.
  assert.deepEqual(errors.filter((e) => !/status of (404|412)/.test(e)), [], 'no script errors');

  step = 'token';
  // A node with tokens: the console asks for one, then works with it.
  const sha = createHash('sha256').update('console-secret').digest('hex');
  writeFileSync(join(dir, 'tokens.json'), JSON.stringify({ tokens: [{ name: 'ops', sha256: sha, stores: ['*'], rights: ['read', 'write', 'admin'] }] }));
  const guarded = await serve(['--storage', join(dir, 'guarded'), '--tokens', join(dir, 'tokens.json')]);
  await fetch(`${guarded}/v1/stores/secret-store`, { method: 'PUT', headers: { Authorization: 'Bearer console-secret' } });
  const p3 = await (await browser.newContext({ viewport: { width: 1280, height: 800 } })).newPage();
  page = p3;
  await p3.goto(guarded + '/');
  await p3.getByTestId('token-input').fill('wrong');
  await p3.getByTestId('token-save').click();
  await p3.locator('#token-why').filter({ hasText: 'refused' }).waitFor();
  await p3.getByTestId('token-input').fill('console-secret');
  await p3.getByTestId('token-save').click();
  await p3.getByTestId('store-secret-store').waitFor();
  await p3.getByTestId('store-secret-store').click();
  await p3.getByTestId('tab-live').click();
  await p3.getByTestId('live-status').filter({ hasText: 'live' }).waitFor();
  await fetch(`${guarded}/v1/stores/secret-store/streams/s/events`, { method: 'POST', headers: { Authorization: 'Bearer console-secret', 'Content-Type': 'application/json' }, body: '[{"type":"T","data":1}]' });
  await p3.getByTestId('event-0').waitFor({ timeout: 5000 });

  console.log(`console: ok (live event shown ${lag} ms after its append was sent)`);
} catch (e) {
  console.error(`console test failed at step "${step}": ${e.stack || e}`);
  if (page) await page.screenshot({ path: resolve('target/console-failure.png') }).catch(() => {});
  process.exitCode = 1;
} finally {
  if (browser) await browser.close();
  for (const n of nodes) n.kill('SIGKILL');
  rmSync(dir, { recursive: true, force: true });
}

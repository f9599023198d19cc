// Drives the console in headless Chromium (puppeteer-core, no downloaded browser), as
// tests/console_browser.rs asks: sign in (a wrong token first), agents, a key created and
// revoked, a grant and the chart, a chat on every front in the playground.
//
// Env: CONSOLE_URL (http://ADMIN/console/), ADMIN_TOKEN, CHROMIUM (executable),
// SCREENSHOTS (directory or empty). Prints one JSON line: {ok, failures, console_errors,
// first_paint_ms, first_contentful_paint_ms, steps}.

import { mkdtempSync, rmSync, mkdirSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import puppeteer from 'puppeteer-core';

const url = process.env.CONSOLE_URL;
const token = process.env.ADMIN_TOKEN;
const shots = process.env.SCREENSHOTS || '';
const TIMEOUT = 20000;

const result = { ok: false, failures: [], console_errors: [], steps: [] };
const profile = mkdtempSync(join(tmpdir(), 'agentgate-chromium-'));
let browser;
// Errors Chromium logs for answers the test asks for on purpose (the wrong token's 401).
let expectingRefusal = false;

function step(name) {
  result.steps.push(name);
}

function check(condition, what) {
  if (!condition) throw new Error(`check failed: ${what}`);
}

async function shot(page, name) {
  if (!shots) return;
  mkdirSync(shots, { recursive: true });
  await page.screenshot({ path: join(shots, `${name}.png`), fullPage: true });
}

async function text(page, selector) {
  return page.$eval(selector, (e) => e.textContent);
}

async function goto(page, hash) {
  await page.click(`nav a[data-page="${hash}"]`);
  await page.waitForSelector(`#page-${hash}:not([hidden])`, { timeout: TIMEOUT });
}

try {
  browser = await puppeteer.launch({
    executablePath: process.env.CHROMIUM || '/usr/bin/chromium',
    headless: true,
    args: [
      '--headless', '--no-sandbox', '--disable-gpu', '--disable-quic', '--no-first-run',
      '--disable-background-networking', '--disable-component-update', '--disable-sync',
      `--user-data-dir=${profile}`,
    ],
  });
  const page = await browser.newPage();
  page.setDefaultTimeout(TIMEOUT);
  page.on('console', (msg) => {
    if (msg.type() !== 'error') return;
    const t = msg.text();
    if (expectingRefusal && t.includes('401')) return;
    result.console_errors.push(`${t} (${msg.location()?.url ?? 'no url'})`);
  });
  page.on('pageerror', (e) => result.console_errors.push(`page error: ${e.message}`));
  page.on('dialog', (d) => d.accept());
  await page.setViewport({ width: 1440, height: 900 });

  // ---- first paint, sign-in -------------------------------------------------------------
  await page.goto(url, { waitUntil: 'load' });
  // Paint entries may be recorded a moment after `load` on a busy machine.
  await page.waitForFunction(() => performance.getEntriesByType('paint').length >= 2, { timeout: 5000 })
    .catch(() => {});
  const paints = await page.evaluate(() => Object.fromEntries(
    performance.getEntriesByType('paint').map((p) => [p.name, p.startTime])));
  result.first_paint_ms = paints['first-paint'] ?? null;
  result.first_contentful_paint_ms = paints['first-contentful-paint'] ?? null;
  check(await page.evaluate(() => document.activeElement?.id === 'token'), 'the token field has the focus');
  await shot(page, 'sign-in');
  step('loaded');

  expectingRefusal = true;
  await page.keyboard.type('not-the-admin-token-0000');
  await page.keyboard.press('Enter');
  await page.waitForFunction(() => document.querySelector('#sign-in-error').textContent.includes('Wrong admin token'));
  expectingRefusal = false;
  check(await page.$eval('#nav', (e) => e.hidden), 'still signed out after a wrong token');
  step('wrong token refused with a visible message');

  await page.$eval('#token', (e) => { e.value = ''; });
  await page.type('#token', token);
  await page.keyboard.press('Enter');
  await page.waitForSelector('#page-agents:not([hidden])');
  check(await page.evaluate(() => sessionStorage.getItem('agentgate.adminToken') !== null), 'token kept in sessionStorage');

  // ---- agents -----------------------------------------------------------------------------
  await page.waitForFunction(() => document.querySelectorAll('#agents-table tbody tr').length >= 4);
  const agents = await page.$$eval('#agents-table tbody tr', (rows) => rows.map((r) => [...r.cells].map((c) => c.textContent)));
  check(agents.some((r) => r[0] === 'Echo (guayaba backend)' && r[2] === 'guayaba' && r[4] === 'up'), `demo agents listed: ${JSON.stringify(agents)}`);
  await shot(page, 'agents');
  step('agents listed');

  // ---- keys: create (shown once, copy), revoke ------------------------------------------------
  await goto(page, 'keys');
  await page.type('#new-key-account', 'console-test');
  await page.click('#key-create button[type=submit]');
  await page.waitForSelector('#new-key:not([hidden])');
  const secret = await page.$eval('#new-key-value', (e) => e.value);
  check(/^agk_[A-Za-z0-9]+_/.test(secret), `a key is shown: ${secret}`);
  const publicId = secret.split('_')[1];
  await page.waitForSelector(`#keys-table tr[data-key="${publicId}"]`);
  await page.click('#new-key-copy');
  await page.waitForFunction(() => document.querySelector('#new-key-copied').textContent !== '');
  await shot(page, 'keys');
  await page.click(`#keys-table tr[data-key="${publicId}"] button`);
  await page.waitForFunction((id) => {
    const row = document.querySelector(`#keys-table tr[data-key="${id}"]`);
    return row && row.cells[6].textContent === 'revoked';
  }, {}, publicId);
  step('key created and revoked');

  // ---- playground: a chat on every front --------------------------------------------------------
  await goto(page, 'playground');
  await page.waitForFunction(() => document.querySelectorAll("#pg-front option").length >= 6);
  await page.$eval('#pg-key-account', (e) => { e.value = 'demo'; });
  await page.click('#pg-key-form button[type=submit]');
  await page.waitForFunction(() => document.querySelector('#pg-key').value.startsWith('agk_'));
  const fronts = await page.$$eval('#pg-front option', (os) => os.map((o) => [o.value, o.textContent]));
  for (const api of ['pharen', 'chatbase', 'agents', 'guayaba', 'ag-ui', 'openai']) {
    check(fronts.some(([, label]) => label.startsWith(`${api} (`)), `the playground offers the ${api} front`);
  }
  result.chats = [];
  for (const [value, label] of fronts) {
    await page.click('#pg-new');
    await page.select('#pg-front', value);
    await page.select('#pg-agent', '00000000-0000-4000-8000-000000000004');
    const conversations = [];
    for (const message of [`Hello from the console on ${label}`, 'And a second message']) {
      await page.$eval('#pg-status', (e) => { delete e.dataset.done; });
      await page.type('#pg-message', message);
      await page.click('#pg-send-button');
      await page.waitForFunction(() => document.querySelector('#pg-status').dataset.done === 'true'
        || document.querySelector('#page-playground [data-error]').textContent !== '');
      const error = await text(page, '#page-playground [data-error]');
      check(error === '', `chat on ${label}: ${error}`);
      const answer = await page.$$eval('#pg-transcript li.assistant .answer-text', (e) => e.at(-1).textContent);
      const raw = await text(page, '#pg-raw');
      const status = await text(page, '#pg-status');
      check(answer.length > 0, `an answer on ${label}`);
      check(raw.includes('data:'), `raw events on ${label}`);
      check(/charged [\d.]+ credits · balance of demo: [\d,.]+/.test(status), `charge and balance on ${label}: ${status}`);
      result.chats.push({ front: label, answer, status });
      conversations.push(await page.$eval('#pg-transcript', (e) => e.dataset.conversation));
    }
    check(conversations[0] && conversations[0] === conversations[1],
      `the second message continues the conversation on ${label}: ${conversations}`);
    const turns = await page.$$eval('#pg-transcript li', (e) => e.length);
    check(turns === 4, `the conversation continues on ${label} (${turns} turns)`);
    if (label.startsWith('chatbase')) await shot(page, 'playground');
  }
  step('chatted on every front');

  // ---- accounts: grant, chart ---------------------------------------------------------------------
  await goto(page, 'accounts');
  await page.waitForSelector('#accounts-table tr[data-account="demo"]');
  const before = await page.$eval('#accounts-table tr[data-account="demo"] [data-balance]', (e) => e.textContent);
  await page.type('#grant-account', 'demo');
  await page.type('#grant-credits', '250');
  await page.type('#grant-memo', 'console test');
  await page.click('#grant button[type=submit]');
  await page.waitForFunction(() => document.querySelector('#grant-result').textContent.startsWith('Granted 250 credits to demo'));
  await page.waitForFunction((b) => {
    const cell = document.querySelector('#accounts-table tr[data-account="demo"] [data-balance]');
    return cell && cell.textContent !== b;
  }, {}, before);
  await page.waitForSelector('svg[data-chart="credits"] rect');
  const bars = await page.$$eval('svg[data-chart="requests"] rect', (r) => r.length);
  check(bars >= 1, 'the chart has bars');
  await shot(page, 'accounts');
  await page.select('#chart-window', '168');
  await page.click('#chart-form button[type=submit]');
  await page.waitForFunction(() => document.querySelector('#chart-caption').textContent.includes('7 days'));
  step('credits granted, chart drawn');

  // ---- narrow screen --------------------------------------------------------------------------
  await page.setViewport({ width: 360, height: 780 });
  await goto(page, 'agents');
  await page.waitForFunction(() => document.querySelectorAll('#agents-table tbody tr').length >= 4);
  const width = await page.evaluate(() => document.documentElement.scrollWidth);
  check(width <= 360, `no horizontal page scroll at 360 px (${width})`);
  await shot(page, 'agents-360');
  await goto(page, 'playground');
  await shot(page, 'playground-360');
  step('readable at 360 px');

  check(result.console_errors.length === 0, 'no console error');
  result.ok = true;
} catch (e) {
  result.failures.push(String(e && e.stack || e));
} finally {
  if (browser) await browser.close().catch(() => {});
  rmSync(profile, { recursive: true, force: true });
}
console.log(JSON.stringify(result));

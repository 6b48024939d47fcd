#!/usr/bin/env node
/**
 * End-to-end checks of the dashboard in headless Chromium, against a running
 * Medbay (NATS, the services and a gateway serving the built dashboard).
 *
 * Environment:
 *   MEDBAY_GATEWAY_URL      the gateway, e.g. http://127.0.0.1:8470/ (required)
 *   MEDBAY_OPERATOR_TOKEN   an operator's token (required)
 *   MEDBAY_VIEWER_TOKEN     a viewer's token (optional: viewers are checked too)
 *   MEDBAY_E2E_ACTION       the action of the plan made to be approved; one that needs
 *                           approval (default kill_process: high risk)
 *   MEDBAY_E2E_TARGET       its target, and the quick action's (default demo-web)
 *   MEDBAY_E2E_OTLP_URL     the collector's OTLP/HTTP trace receiver
 *                           (http://127.0.0.1:4318/v1/traces): spans of a small shop
 *                           (frontend -> checkout -> payments) are sent there every
 *                           second, for the Monitoring page; without it that page is
 *                           checked to say it has no spans yet
 *   MEDBAY_SCREENSHOTS_DIR  where to save a PNG of every page, dark and light (default: none)
 *   MEDBAY_E2E_MAX_LOAD_MS  the longest acceptable load, to the first metric shown (default:
 *                           none; the load time is printed as a measurement, since on a busy
 *                           machine it says more about the machine than the dashboard)
 *   MEDBAY_E2E_MAX_JS_KB    the largest acceptable initial JavaScript, gzipped (default 400)
 *   CHROMIUM                the browser (default /usr/bin/chromium)
 *
 * Prints one JSON line per check ({"check", "ok", ...}: what was measured and
 * clicked, the plan id approved, what the executor did with it and how its incident
 * reads, the lab results shown, the services and calls the Monitoring page
 * draws, the trace found by its id), then "N passed, N failed". Exits 0 only if
 * every check passed.
 *
 * Trace links: with no `jaeger_url` in the gateway's config there must be none on
 * any page; one configured (faked in the browser: the gateway's /api/tracing
 * answered with one) must make them appear where they belong.
 */

import { randomBytes } from 'node:crypto';
import { readFileSync, mkdirSync } from 'node:fs';
import { createRequire } from 'node:module';
import { join } from 'node:path';
import { gzipSync } from 'node:zlib';
import { chromium } from 'playwright-core';

const require = createRequire(import.meta.url);

const env = process.env;
const GATEWAY = new URL(required('MEDBAY_GATEWAY_URL')).toString();
const OPERATOR_TOKEN = required('MEDBAY_OPERATOR_TOKEN');
const VIEWER_TOKEN = env.MEDBAY_VIEWER_TOKEN || null;
const ACTION = env.MEDBAY_E2E_ACTION || 'kill_process';
const TARGET = env.MEDBAY_E2E_TARGET || 'demo-web';
const SCREENSHOTS = env.MEDBAY_SCREENSHOTS_DIR || null;
const MAX_LOAD_MS = env.MEDBAY_E2E_MAX_LOAD_MS ? Number(env.MEDBAY_E2E_MAX_LOAD_MS) : null;
const MAX_JS_KB = Number(env.MEDBAY_E2E_MAX_JS_KB || 400);
const OTLP_URL = env.MEDBAY_E2E_OTLP_URL || null;
const BROWSER_ARGS = [
  '--headless',
  '--no-sandbox',
  '--disable-gpu',
  '--disable-quic',
  '--no-first-run',
  '--disable-background-networking',
  '--disable-component-update',
  '--disable-sync',
];
const VIEWPORT = { width: 1280, height: 800 };
const PAGES = ['dashboard', 'monitoring', 'incidents', 'approvals', 'automation', 'events'];
/** The services whose spans are sent (MEDBAY_E2E_OTLP_URL), and the calls between them. */
const SHOP = ['frontend', 'checkout', 'payments'];
const SHOP_CALLS = ['frontend->checkout', 'checkout->payments'];
/** A Jaeger UI that does not exist: the links' addresses are checked, never followed. */
const FAKE_JAEGER = 'http://jaeger.e2e.invalid:16686';
/** Any link to a trace, in Jaeger or anywhere. */
const TRACE_LINK = 'a[href*="/trace/"]';
/** The first live figure on screen: every host card shows memory from its first reading. */
const FIRST_METRIC = '[data-host] [data-testid="memory-value"]';

function required(name) {
  const value = env[name];
  if (!value) {
    console.error(`e2e: set ${name} (see the top of e2e/run.mjs)`);
    process.exit(2);
  }
  return value;
}

// --- reporting -----------------------------------------------------------------------

const outcomes = [];

function report(check, ok, details = {}) {
  outcomes.push(ok);
  console.log(JSON.stringify({ check, ok, ...details }));
}

/** Runs one check; a throw fails it (with the message) and the run goes on. */
async function check(name, body) {
  try {
    const details = await body();
    report(name, true, details);
    return details;
  } catch (error) {
    report(name, false, { error: String(error?.message ?? error).split('\n')[0] });
    return null;
  }
}

// --- the gateway's API ----------------------------------------------------------------

async function api(path, { method = 'GET', body, token = OPERATOR_TOKEN } = {}) {
  const response = await fetch(new URL(path, GATEWAY), {
    method,
    headers: { Authorization: `Bearer ${token}`, 'Content-Type': 'application/json' },
    body: body === undefined ? undefined : JSON.stringify(body),
  });
  const text = await response.text();
  if (!response.ok) throw new Error(`${method} ${path}: HTTP ${response.status} ${text}`);
  return JSON.parse(text);
}

async function until(what, probe, timeoutMs, everyMs = 500) {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    const value = await probe();
    if (value) return value;
    if (Date.now() > deadline) throw new Error(`timed out after ${timeoutMs / 1000} s waiting for ${what}`);
    await new Promise((resolve) => setTimeout(resolve, everyMs));
  }
}

// --- spans, as an application sends them -----------------------------------------------

const hex = (bytes) => randomBytes(bytes).toString('hex');
const attribute = (key, value) => ({ key, value: { stringValue: value } });

/** One request through the shop: frontend calls checkout, which calls payments; one
 * checkout in ten fails (few enough to raise no incident that would upset other checks). */
function shopTrace(index, nowNs) {
  const traceId = hex(16);
  const ids = Array.from({ length: 5 }, () => hex(8));
  const span = (id, parent, name, kind, ms, error = false, more = []) => ({
    traceId,
    spanId: id,
    ...(parent ? { parentSpanId: parent } : {}),
    name,
    kind,
    startTimeUnixNano: String(nowNs - BigInt(Math.round(ms * 1e6))),
    endTimeUnixNano: String(nowNs),
    attributes: more,
    status: { code: error ? 2 : 1 },
  });
  const jitter = (ms) => ms * (0.8 + Math.random() * 0.4);
  const failed = index % 10 === 0;
  return {
    frontend: [
      span(ids[0], null, 'GET /cart', 2, jitter(140), failed),
      span(ids[1], ids[0], 'POST /pay', 3, jitter(110), failed, [attribute('peer.service', 'checkout')]),
    ],
    checkout: [
      span(ids[2], ids[1], 'POST /pay', 2, jitter(100), failed),
      span(ids[3], ids[2], 'charge', 3, jitter(40), false, [attribute('peer.service', 'payments')]),
    ],
    payments: [span(ids[4], ids[3], 'charge', 2, jitter(35))],
  };
}

/** An OTLP/HTTP JSON export of `count` requests through the shop. */
function shopSpans(count) {
  const nowNs = BigInt(Date.now()) * 1_000_000n;
  const byService = Object.fromEntries(SHOP.map((name) => [name, []]));
  for (let i = 0; i < count; i += 1) {
    for (const [service, spans] of Object.entries(shopTrace(i, nowNs))) byService[service].push(...spans);
  }
  return {
    resourceSpans: SHOP.map((service) => ({
      resource: { attributes: [attribute('service.name', service)] },
      scopeSpans: [{ scope: { name: 'medbay-e2e' }, spans: byService[service] }],
    })),
  };
}

/** Sends the shop's spans to the collector every second until stopped. */
function sendSpansEverySecond() {
  let sent = 0;
  let failure = null;
  const send = async () => {
    try {
      const response = await fetch(OTLP_URL, {
        method: 'POST',
        headers: { 'Content-Type': 'application/json' },
        body: JSON.stringify(shopSpans(20)),
      });
      if (response.ok) sent += 1;
      else failure = `HTTP ${response.status} ${await response.text()}`;
    } catch (error) {
      failure = String(error?.message ?? error);
    }
  };
  void send();
  const timer = setInterval(send, 1000);
  return {
    stop: () => clearInterval(timer),
    describe: () => ({ exports_sent: sent, last_failure: failure }),
  };
}

// --- the browser -----------------------------------------------------------------------

/** A fresh browser context, signed in with `token` before the first page loads (or not). */
async function openContext(browser, token) {
  const context = await browser.newContext({ viewport: VIEWPORT });
  if (token !== null) {
    const me = await api('api/me', { token });
    const session = JSON.stringify({ state: { token, me }, version: 0 });
    await context.addInitScript((value) => sessionStorage.setItem('medbay.session', value), session);
  }
  return context;
}

function pageUrl(page) {
  return new URL(`#/${page}`, GATEWAY).toString();
}

/** Until the page's data is on screen: a heading, and no loading bar left. */
async function settled(page) {
  await page.locator('h1').first().waitFor();
  await page.waitForFunction(() => !document.querySelector('[aria-label^="Loading"]'), null, {
    timeout: 15_000,
  });
}

/** Opens a page with as much on it as there is: an incident's timeline, an event's JSON. */
async function show(page, name) {
  await page.goto(pageUrl(name));
  await settled(page);
  if (name === 'incidents') {
    // one an issue opened, rather than a quick action (kind "other"), else one whose plan
    // ended: the fullest timeline
    const incidents = page.locator('[data-fingerprint]');
    const detected = page.locator('[data-fingerprint]:not([data-kind="other"])');
    const ended = page.locator('[data-fingerprint]:not(:has([data-incident-status="pending_approval"]))');
    const choices = [detected, ended, incidents];
    const counts = await Promise.all(choices.map((choice) => choice.count()));
    const first = (choices[counts.findIndex((count) => count > 0)] ?? incidents).first();
    if ((await first.count()) > 0) {
      await first.getByRole('button').first().click();
      await page.getByRole('list', { name: 'Timeline' }).waitFor();
      await settled(page);
    }
  }
  if (name === 'monitoring' && OTLP_URL !== null) {
    // each service's two charts drawn
    await page
      .locator('article[data-service] [data-chart] canvas')
      .nth(2 * SHOP.length - 1)
      .waitFor();
  }
  if (name === 'events') {
    await page.getByRole('combobox', { name: 'Type' }).click();
    await page.getByRole('option', { name: 'All', exact: true }).click();
    await page.locator('li[data-type]').nth(1).waitFor({ timeout: 30_000 }); // metric batches come every few seconds
    await page.locator('li[data-type] summary').first().click();
  }
}

const AXE = readFileSync(require.resolve('axe-core/axe.min.js'), 'utf8');

/** axe-core's WCAG 2.1 A/AA violations on the page, serious and critical ones apart. */
async function accessibility(page) {
  await page.addScriptTag({ content: AXE });
  const violations = await page.evaluate(async () => {
    const results = await window.axe.run(document, {
      runOnly: { type: 'tag', values: ['wcag2a', 'wcag2aa', 'wcag21a', 'wcag21aa'] },
      resultTypes: ['violations'],
    });
    return results.violations.map((v) => ({
      id: v.id,
      impact: v.impact,
      help: v.help,
      nodes: v.nodes.slice(0, 3).map((n) => n.target.join(' ')),
    }));
  });
  const grave = violations.filter((v) => v.impact === 'serious' || v.impact === 'critical');
  return { grave, minor: violations.filter((v) => !grave.includes(v)) };
}

async function screenshot(page, name) {
  if (SCREENSHOTS === null) return null;
  mkdirSync(SCREENSHOTS, { recursive: true });
  const path = join(SCREENSHOTS, `${name}.png`);
  await page.screenshot({ path });
  return path;
}

// --- the checks ------------------------------------------------------------------------

/** A signed-in user's cold load: to the first live metric, and the JavaScript it took. */
async function measureLoad(browser) {
  await until('a host to report metrics', async () => (await api('api/metrics')).length > 0, 60_000);
  const context = await openContext(browser, OPERATOR_TOKEN);
  const page = await context.newPage();
  const scripts = [];
  page.on('response', (response) => {
    if (response.request().resourceType() === 'script')
      scripts.push(response.body().catch(() => Buffer.alloc(0)));
  });
  await page.goto(pageUrl('dashboard'));
  const shownAtMs = await page.waitForFunction(
    (selector) => document.querySelector(selector) && performance.now(),
    FIRST_METRIC,
    { polling: 'raf', timeout: 30_000 },
  );
  const loadMs = Math.round(await shownAtMs.jsonValue());
  const bodies = await Promise.all(scripts);
  const gzipKb = bodies.reduce((sum, body) => sum + gzipSync(body).length, 0) / 1024;
  await context.close();
  if (MAX_LOAD_MS !== null && loadMs > MAX_LOAD_MS)
    throw new Error(`first metric after ${loadMs} ms (limit ${MAX_LOAD_MS} ms)`);
  if (gzipKb > MAX_JS_KB)
    throw new Error(`initial JavaScript ${gzipKb.toFixed(1)} KB gzipped (limit ${MAX_JS_KB} KB)`);
  return { first_metric_ms: loadMs, initial_js_gzip_kb: Number(gzipKb.toFixed(1)), scripts: bodies.length };
}

/** A host card's figures change without a reload, from the live connection. */
async function liveUpdate(page) {
  await page.goto(pageUrl('dashboard'));
  await page.locator('[data-status="live"]').waitFor({ timeout: 15_000 });
  const card = page.locator('[data-host]').first();
  await card.waitFor();
  const host = await card.getAttribute('data-host');
  const before = await card.getAttribute('data-collected-at');
  await page.waitForFunction(
    ([selector, previous]) =>
      document.querySelector(selector)?.getAttribute('data-collected-at') !== previous,
    [`[data-host="${host}"]`, before],
    { timeout: 60_000 },
  );
  return { host, from: before, to: await card.getAttribute('data-collected-at') };
}

/** The executor's mode, from its /healthz through the gateway, and the banner that says it. */
async function executorMode(page) {
  const services = await api('api/services');
  const executor = services.find((s) => s.service === 'executor');
  const mode = executor?.info?.mode ?? null;
  // a gateway that cannot reach the executor's /healthz (its health config) knows no mode
  if (executor?.status === 'ok' && mode !== 'dry-run' && mode !== 'live')
    throw new Error(`the executor states no mode: ${mode}`);
  await page.goto(pageUrl('dashboard'));
  await settled(page);
  const banner = page.getByText('Dry-run: the executor reports what it would do and changes nothing.');
  if (mode === 'dry-run') await banner.waitFor({ timeout: 30_000 });
  else if ((await banner.count()) > 0) throw new Error(`a dry-run banner while the mode is ${mode}`);
  return { executor: executor?.status ?? null, mode, banner: mode === 'dry-run' };
}

/** A plan waiting for approval: asked for by hand with an action that needs one. */
async function pendingPlan() {
  const hosts = await api('api/metrics');
  if (hosts.length === 0) throw new Error('no host reports metrics');
  const host = hosts[0].host;
  const accepted = await api('api/actions', {
    method: 'POST',
    body: { host, action: ACTION, target: TARGET, params: {}, reason: 'end-to-end test: to be approved' },
  });
  const requestId = accepted.request.event_id;
  const pending = await until(
    'the planner to hold the plan for approval',
    async () => (await api('api/approvals')).find((p) => p.plan.issue_event_id === requestId),
    30_000,
  );
  return { plan_id: pending.plan.plan_id, host, action: ACTION, target: TARGET };
}

async function approve(page, planId) {
  await page.goto(pageUrl('approvals'));
  const card = page.locator(`article[data-plan-id="${planId}"]`);
  await card.waitFor({ timeout: 15_000 });
  await card.getByRole('textbox', { name: /Reason/ }).fill('approved by the end-to-end test');
  const button = card.getByRole('button', { name: /^Approve plan/ });
  const clicked = await button.getAttribute('aria-label');
  await button.click();
  await page.getByRole('alert').filter({ hasText: 'approved' }).waitFor({ timeout: 15_000 });
  await card.waitFor({ state: 'detached', timeout: 15_000 });
  return { plan_id: planId, clicked };
}

/** The executor ran the approved plan: a finished step result for it. */
async function executorActed(planId) {
  const plan = await until(
    `the executor's result for plan ${planId}`,
    async () => {
      const progress = await api(`api/plans/${planId}`);
      return progress.results.some((r) => r.status === 'finished') ? progress : null;
    },
    60_000,
  );
  const last = plan.results.filter((r) => r.status === 'finished').at(-1);
  return {
    plan_id: planId,
    status: plan.status,
    decided_by: plan.decision?.decided_by,
    channel: plan.decision?.channel,
    step: `${last.action} ${last.target}`,
    outcome: last.outcome,
    dry_run: last.dry_run,
  };
}

/** How the approved plan ended, in the executor's word, is what its incident shows. */
async function honestOutcome(page, planId) {
  const progress = await until(
    `the executor to say how plan ${planId} ended`,
    async () => {
      const plan = await api(`api/plans/${planId}`);
      return plan.outcome !== null ? plan : null;
    },
    60_000,
  );
  const fingerprint = progress.plan?.issue_fingerprint;
  await page.goto(pageUrl('incidents'));
  await settled(page);
  const chip = page.locator(
    `[data-fingerprint="${fingerprint}"] [data-incident-status="${progress.outcome}"]`,
  );
  await chip.first().waitFor({ timeout: 30_000 });
  return {
    plan_id: planId,
    outcome: progress.outcome,
    escalated: progress.finished?.escalated ?? null,
    shown: await chip.first().textContent(),
  };
}

/** The Automation page shows the lab's latest report as the gateway reads it, or why there is none. */
async function labResults(page) {
  const lab = await api('api/lab');
  await show(page, 'automation');
  if (lab.state !== 'ok') {
    const says = {
      missing: 'No lab run yet',
      unconfigured: 'No lab report configured',
      invalid: 'The lab report cannot be shown',
    }[lab.state];
    await page.getByText(says, { exact: false }).waitFor();
    return { state: lab.state, shown: says };
  }
  const table = page.getByRole('table', { name: 'Lab results per fault' });
  await table.waitFor();
  const faults = Object.keys(lab.report.faults).length;
  const rows = await table.getByRole('row').count(); // the header, each fault, the totals
  if (rows !== faults + 2) throw new Error(`${rows} table rows for ${faults} faults`);
  await page.getByText(`commit ${lab.report.commit || 'unknown'}`, { exact: false }).waitFor();
  const { model, rule_table: rules } = lab.report;
  if (!rules || !model?.version) return { state: lab.state, faults, rows, compared: null };
  // medbay lab --train: the trained model beside the rule table, and how a planner adopts it
  const comparison = page.getByRole('table', { name: 'Lab: trained model vs rule table' });
  await comparison.waitFor();
  await comparison.getByRole('columnheader', { name: `Trained model ${model.version}` }).waitFor();
  await page.getByText(`initial_model: ${model.file}`).waitFor();
  const compared = (await comparison.getByRole('row').count()) - 1; // the header
  return { state: lab.state, faults, rows, compared };
}

async function quickAction(page) {
  await page.goto(pageUrl('dashboard'));
  await page.getByRole('button', { name: 'Restart' }).click();
  const dialog = page.getByRole('dialog');
  await dialog.getByRole('combobox', { name: /Target/ }).fill(TARGET);
  await dialog.getByRole('button', { name: 'Request restart' }).click();
  await page.getByRole('alert').filter({ hasText: 'requested' }).waitFor({ timeout: 15_000 });
  return { clicked: 'Restart', target: TARGET };
}

/** With the WebSocket refused, the dashboard says so and keeps its figures fresh by polling. */
async function pollingFallback(browser) {
  const context = await openContext(browser, OPERATOR_TOKEN);
  const page = await context.newPage();
  await page.routeWebSocket(/\/ws(\?|$)/, (socket) => socket.close({ code: 1011, reason: 'test: refused' }));
  let polls = 0;
  page.on('request', (request) => {
    if (new URL(request.url()).pathname.endsWith('/api/metrics')) polls += 1;
  });
  await page.goto(pageUrl('dashboard'));
  await page.getByText('Live updates are interrupted').waitFor({ timeout: 15_000 });
  await page.locator('[data-status="polling"]').waitFor();
  await page.locator(FIRST_METRIC).first().waitFor();
  const before = polls;
  await page.waitForTimeout(6000);
  await context.close();
  if (polls <= before) throw new Error('no metrics polled while the WebSocket was down');
  return { polls_in_6_s: polls - before };
}

/** Viewers see everything but no button that changes anything. */
async function viewerReadsOnly(browser) {
  const context = await openContext(browser, VIEWER_TOKEN);
  const page = await context.newPage();
  const seen = {};
  for (const [name, forbidden] of [
    ['dashboard', /^(Restart|Scale up|Clean up disk)$/],
    ['approvals', /^(Approve|Reject) plan/],
    ['automation', /^Reset the breaker/],
    ['events', /^Replay$/],
  ]) {
    await show(page, name);
    const count = await page.getByRole('button', { name: forbidden }).count();
    if (count > 0) throw new Error(`a viewer sees ${count} buttons on ${name} matching ${forbidden}`);
    seen[name] = 'no mutation buttons';
  }
  await context.close();
  return seen;
}

/** Every page, dark and light: axe-core finds nothing serious; a screenshot of each. */
async function everyPage(browser, theme) {
  const context = await openContext(browser, OPERATOR_TOKEN);
  await context.addInitScript((mode) => {
    localStorage.setItem('medbay.theme', JSON.stringify({ state: { mode }, version: 0 }));
  }, theme);
  const page = await context.newPage();
  const results = {};
  const grave = [];
  for (const name of PAGES) {
    await show(page, name);
    const { grave: found, minor } = await accessibility(page);
    grave.push(...found.map((v) => ({ page: name, ...v })));
    results[name] = { serious_or_critical: found.length, minor: minor.map((v) => v.id) };
    if (name === 'events') await page.locator('li[data-type] summary').first().click(); // the list, not the JSON
    await screenshot(page, `${name}-${theme}`);
  }
  await context.close();
  const signedOut = await openContext(browser, null);
  const login = await signedOut.newPage();
  await login.addInitScript((mode) => {
    localStorage.setItem('medbay.theme', JSON.stringify({ state: { mode }, version: 0 }));
  }, theme);
  await login.goto(GATEWAY);
  await login.getByRole('button', { name: 'Sign in' }).waitFor();
  const { grave: found } = await accessibility(login);
  grave.push(...found.map((v) => ({ page: 'login', ...v })));
  results.login = { serious_or_critical: found.length };
  await screenshot(login, `login-${theme}`);
  await signedOut.close();
  if (grave.length > 0) throw new Error(`accessibility violations: ${JSON.stringify(grave)}`);
  return { pages: results, screenshots: SCREENSHOTS };
}

/** The Monitoring page draws what the collector made of the shop's spans: each
 * service's figures and charts, and the map of who calls whom. */
async function monitoring(page) {
  if (OTLP_URL === null) {
    await show(page, 'monitoring');
    await page.getByText('No spans yet').waitFor();
    return { spans: 'none sent', shown: 'No spans yet' };
  }
  const figures = await until(
    "the gateway to hold the collector's figures of the shop's spans",
    async () => {
      const body = await api('api/monitoring');
      const current = body.services.filter((s) => SHOP.includes(s.service) && s.current);
      const calls = body.edges.map((e) => `${e.client}->${e.server}`);
      return current.length === SHOP.length && SHOP_CALLS.every((c) => calls.includes(c)) ? body : null;
    },
    60_000,
  );
  await show(page, 'monitoring');
  const shown = {};
  for (const service of SHOP) {
    const card = page.locator(`article[data-service="${service}"]`).first();
    for (const kind of ['rates', 'latency']) {
      const box = await card.locator(`[data-chart="${kind}"] canvas`).boundingBox();
      if (!box || box.width < 100 || box.height < 100) throw new Error(`${service}: no ${kind} chart drawn`);
    }
    shown[service] = {
      requests: await card.getByTestId('requests').textContent(),
      p95: await card.getByTestId('p95').textContent(),
    };
  }
  const map = page.getByRole('img', { name: /^Dependency map: / });
  for (const service of SHOP) await map.locator(`[data-node="${service}"]`).waitFor();
  for (const call of SHOP_CALLS) await map.locator(`[data-edge="${call}"]`).waitFor();
  const calls = await page
    .getByRole('list', { name: 'Calls between services' })
    .getByRole('listitem')
    .allTextContents();
  await page.getByRole('heading', { name: 'Incidents from traces' }).waitFor();
  const checkout = figures.services.find((s) => s.service === 'checkout');
  return {
    services: shown,
    calls,
    checkout_history_points: checkout.history.length,
    incidents_from_traces: figures.incidents.length,
  };
}

/** A trace Medbay holds something of: one a plan was published in, if any. */
async function knownTraceId() {
  for (const incident of await api('api/incidents?limit=50')) {
    const detail = await api(`api/incidents/${encodeURIComponent(incident.fingerprint)}`);
    const entry = detail.timeline.find((e) => e.trace_id && e.event.type === 'plan.created');
    if (entry) return entry.trace_id;
  }
  return null;
}

/** Finds a trace by its id on the Monitoring page: what Medbay holds of it. */
async function findTrace(page, traceId) {
  await show(page, 'monitoring');
  const search = page.getByRole('search', { name: 'Find a trace' });
  await search.getByRole('textbox', { name: 'Trace id' }).fill(traceId);
  await search.getByRole('button', { name: 'Find trace' }).click();
  const card = page.locator(`[data-trace-id="${traceId}"]`);
  await card.getByRole('heading', { name: `Trace ${traceId}` }).waitFor({ timeout: 15_000 });
  return card;
}

/** With no Jaeger UI configured, the trace search says what Medbay holds, and no page
 * has a link to a trace. */
async function traceSearch(page) {
  const { jaeger_url: jaegerUrl } = await api('api/tracing');
  const known = await knownTraceId();
  const traceId = known ?? hex(16);
  const card = await findTrace(page, traceId);
  const events = await card.locator('[data-type]').count();
  if (known !== null && events === 0) throw new Error(`nothing shown of trace ${traceId}, a plan's`);
  if (known === null) await card.getByText('Medbay holds nothing of this trace').waitFor();
  if (jaegerUrl !== null) {
    const href = await card.getByRole('link', { name: /in Jaeger/ }).getAttribute('href');
    return { trace_id: traceId, events, jaeger_url: jaegerUrl, link: href };
  }
  await card.getByText('No Jaeger UI is configured').waitFor();
  const links = { monitoring: await page.locator(TRACE_LINK).count() };
  await show(page, 'incidents'); // an incident opened, its timeline shown
  if ((await page.locator('[data-fingerprint]').count()) > 0)
    await page.getByRole('list', { name: 'Timeline' }).first().waitFor();
  links.incidents = await page.locator(TRACE_LINK).count();
  if (links.monitoring + links.incidents > 0)
    throw new Error(`trace links without Jaeger: ${JSON.stringify(links)}`);
  return { trace_id: traceId, known: known !== null, events, jaeger_url: null, trace_links: links };
}

/** With a Jaeger UI configured (the gateway's answer faked in the browser), the links
 * appear: the trace search's, and a plan's in its incident's timeline. */
async function traceLinksWithJaeger(browser) {
  const context = await openContext(browser, OPERATOR_TOKEN);
  await context.route('**/api/tracing', (route) =>
    route.fulfill({ contentType: 'application/json', body: JSON.stringify({ jaeger_url: FAKE_JAEGER }) }),
  );
  const page = await context.newPage();
  const planTrace = await knownTraceId();
  const traceId = planTrace ?? hex(16);
  await show(page, 'monitoring');
  const search = page.getByRole('search', { name: 'Find a trace' });
  await search.getByRole('textbox', { name: 'Trace id' }).fill(traceId);
  const open = await search.getByRole('link', { name: /Open in Jaeger/ }).getAttribute('href');
  if (open !== `${FAKE_JAEGER}/trace/${traceId}`) throw new Error(`Open in Jaeger goes to ${open}`);
  const shown = { search: open };
  if (planTrace !== null) {
    await show(page, 'incidents');
    const link = page.locator(`a[href="${FAKE_JAEGER}/trace/${planTrace}"]`);
    // the incident opened first may not be the one with the plan: open the others until found
    const items = page.locator('[data-fingerprint]');
    for (let i = 0; i < (await items.count()) && (await link.count()) === 0; i += 1) {
      const button = items.nth(i).getByRole('button').first();
      if ((await button.getAttribute('aria-expanded')) === 'true') continue;
      await button.click();
      await settled(page);
    }
    await link.first().waitFor({ timeout: 15_000 });
    shown.timeline = await link.first().textContent();
  }
  await context.close();
  return shown;
}

// --- main ------------------------------------------------------------------------------

const browser = await chromium.launch({
  executablePath: env.CHROMIUM || '/usr/bin/chromium',
  args: BROWSER_ARGS,
});
const spans = OTLP_URL === null ? null : sendSpansEverySecond();
try {
  await check('load', () => measureLoad(browser));
  const context = await openContext(browser, OPERATOR_TOKEN);
  const page = await context.newPage();
  await check('live-update', () => liveUpdate(page));
  await check('executor-mode', () => executorMode(page));
  const pending = await check('pending-plan', pendingPlan);
  if (pending !== null) {
    const approved = await check('approve', () => approve(page, pending.plan_id));
    if (approved !== null) {
      await check('executor-acted', () => executorActed(pending.plan_id));
      await check('honest-outcome', () => honestOutcome(page, pending.plan_id));
    }
  }
  await check('lab', () => labResults(page));
  await check('monitoring', async () => ({ ...(await monitoring(page)), ...spans?.describe() }));
  await check('trace-search', () => traceSearch(page));
  await check('trace-links-with-jaeger', () => traceLinksWithJaeger(browser));
  // another plan left waiting, so that every page has something on it
  await check('pending-plan-left', pendingPlan);
  for (const theme of ['dark', 'light']) await check(`pages-${theme}`, () => everyPage(browser, theme));
  await check('quick-action', () => quickAction(page));
  await context.close();
  await check('polling-fallback', () => pollingFallback(browser));
  if (VIEWER_TOKEN !== null) await check('viewer-read-only', () => viewerReadsOnly(browser));
} finally {
  spans?.stop();
  await browser.close();
}

const failed = outcomes.filter((ok) => !ok).length;
console.log(`${outcomes.length - failed} passed, ${failed} failed`);
process.exit(failed === 0 ? 0 : 1);

// Headless Chromium (Debian's /usr/bin/chromium, or $CHROMIUM_PATH) driven by playwright-core,
// and helpers that read the demo page's test hook (window.realtimeDemo, see demo.js).

import {existsSync, mkdirSync} from 'node:fs';
import {dirname, join, resolve} from 'node:path';
import {fileURLToPath} from 'node:url';
import {chromium} from 'playwright-core';

export const CHROMIUM = process.env.CHROMIUM_PATH || '/usr/bin/chromium';
export const ARTIFACTS = resolve(dirname(fileURLToPath(import.meta.url)), '../artifacts');

const ARGS = [
    '--headless', '--no-sandbox', '--disable-gpu', '--disable-background-networking',
    '--disable-component-update', '--no-first-run', '--disable-quic', '--disable-sync',
];

/** Desktop and phone viewports. */
export const DESKTOP = Object.freeze({width: 1200, height: 900});
export const PHONE = Object.freeze({width: 390, height: 844});

/**
 * A fresh browser (its own temporary profile: Playwright's launch makes a new --user-data-dir)
 * with one page, recording console errors and page errors.
 * @returns {Promise<{browser: import('playwright-core').Browser, page: import('playwright-core').Page,
 *                    errors: string[], close: () => Promise<void>}>}
 */
export async function launch({viewport = DESKTOP} = {}) {
    if (!existsSync(CHROMIUM)) {
        throw new Error(`no Chromium at ${CHROMIUM}: apt-get install -y chromium (or set CHROMIUM_PATH)`);
    }
    const browser = await chromium.launch({executablePath: CHROMIUM, headless: true, args: ARGS});
    const context = await browser.newContext({viewport});
    const page = await context.newPage();
    const errors = [];
    page.on('pageerror', (err) => errors.push(`pageerror: ${err.message}`));
    page.on('console', (msg) => {
        if (msg.type() === 'error') {
            errors.push(`console: ${msg.text()} (${msg.location().url})`);
        }
    });
    return {browser, page, errors, close: () => browser.close()};
}

/** The page config that /demo embeds right now (fetched by the test, not the browser). */
export async function fetchPageConfig(url) {
    const html = await (await fetch(`${url}/demo`)).text();
    const marker = 'id="realtime-page-config">';
    const start = html.indexOf(marker) + marker.length;
    return JSON.parse(html.slice(start, html.indexOf('</script>', start)).replaceAll('<\\/', '</'));
}

/**
 * Tamper with the page config embedded in /demo before the page's script reads it: `patch`'s
 * fields replace the config's. The page itself still comes from the server (a response faked with
 * page.route would not be on loopback, and Chromium's local network access checks would then
 * block its WebSocket to 127.0.0.1). Parsing ends with readyState "interactive" before deferred
 * and module scripts run, so the edit lands between the two.
 */
export async function patchPageConfig(page, patch) {
    await page.addInitScript((fields) => {
        document.addEventListener('readystatechange', () => {
            const el = document.getElementById('realtime-page-config');
            if (document.readyState === 'interactive' && el && !el.hasAttribute('data-patched')) {
                el.textContent = JSON.stringify({...JSON.parse(el.textContent), ...fields});
                el.setAttribute('data-patched', 'true');
            }
        });
    }, patch);
}

/** Open `${url}/demo` and wait until the page's script has started the client. */
export async function openDemo(page, url) {
    await page.goto(`${url}/demo`);
    await page.waitForSelector('#demo[data-ready="true"]', {timeout: 10000});
}

/** A plain-JSON copy of the page's state (window.realtimeDemo.state). */
export function demoState(page) {
    return page.evaluate(() => JSON.parse(JSON.stringify(window.realtimeDemo.state)));
}

/**
 * Wait until `predicate(state)` is true; `predicate` runs in the page with the page's state.
 * On timeout the error shows the state, so a failure says what the page saw.
 */
export async function waitForState(page, predicate, arg, {timeout = 20000, what = 'the page'} = {}) {
    try {
        await page.waitForFunction(
            ([source, a]) => {
                const s = window.realtimeDemo?.state;
                // eslint-disable-next-line no-new-func
                return s !== undefined && new Function('s', 'arg', `return (${source})(s, arg);`)(s, a);
            },
            [predicate.toString(), arg],
            {timeout, polling: 50},
        );
    } catch (err) {
        const state = await demoState(page).catch(() => null);
        throw new Error(`waiting for ${what}: ${err.message.split('\n')[0]}\nstate: ${JSON.stringify(summarise(state), null, 1)}`);
    }
}

/** The state without the long arrays, for error messages. */
export function summarise(state) {
    if (!state) {
        return state;
    }
    const runs = Object.fromEntries(Object.entries(state.runs).map(([id, r]) => [id,
        {...r, latencies: r.latencies.length, ids: r.ids.length > 30 ? `${r.ids.length} ids` : r.ids}]));
    return {...state, runs, push: {...state.push, roundtrips: state.push.roundtrips.length}};
}

/** Click the page's transport control (websocket, sse, poll, or auto) and wait until the client uses it. */
export async function forceTransport(page, name) {
    await page.click(`label[for="force-${name}"]`);
    if (name !== 'auto') {
        await waitForState(page, (s, n) => s.transport === n && s.forced === n, name, {what: `transport ${name}`});
    } else {
        await waitForState(page, (s) => s.forced === null, undefined, {what: 'automatic transport'});
    }
}

/** Save a full-page PNG under e2e/artifacts/ and return its path. */
export async function screenshot(page, name) {
    mkdirSync(ARTIFACTS, {recursive: true});
    const path = join(ARTIFACTS, `${name}.png`);
    await page.screenshot({path, fullPage: true});
    return path;
}

/** Records the page's requests to the transports' endpoints: what actually went over the network. */
export function watchNetwork(page) {
    const seen = {websocket: 0, websocketReady: 0, sse: 0, poll: 0, send: 0, websocketUrls: []};
    page.on('websocket', (ws) => {
        seen.websocket += 1;
        seen.websocketUrls.push(ws.url());
        ws.on('framereceived', ({payload}) => {
            // The server's answer to `subscribe`: from now on the socket carries events and sends.
            let type;
            try {
                type = JSON.parse(String(payload)).type;
            } catch {
                type = undefined;
            }
            if (type === 'recovered' || type === 'not_recovered') {
                seen.websocketReady += 1;
            }
        });
    });
    page.on('request', (req) => {
        const path = new URL(req.url()).pathname;
        // The demo is a node of its own, mounted under /demo.
        if (path === '/demo/sse') seen.sse += 1;
        if (path === '/demo/poll') seen.poll += 1;
        if (path === '/demo/send') seen.send += 1;
    });
    return seen;
}

/** Wait (in Node) until `condition()` is true, polling every 20 ms. */
export async function until(condition, {timeout = 10000, what = 'a condition'} = {}) {
    const deadline = Date.now() + timeout;
    while (!(await condition())) {
        if (Date.now() > deadline) {
            throw new Error(`timed out after ${timeout} ms waiting for ${what}`);
        }
        await new Promise((r) => { setTimeout(r, 20); });
    }
}

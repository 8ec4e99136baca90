// A long outage (90 s; E2E_OUTAGE_SECS shortens it locally) under a page that stays open, once per
// transport forced with the page's own control: the badge and the banner show the outage while the
// server is down, and the page resumes without a reload, on the same transport, with every event
// acknowledged before, during and after the outage, once, in order.
//
// The three tests run concurrently (describe's `concurrency`): Node's test runner runs the files
// of e2e/ one at a time on a 2-core machine (--test-concurrency defaults to the cores minus one),
// and three outages in a row would add 4.5 minutes. Each test has its own server and browser.

import assert from 'node:assert/strict';
import {setTimeout as sleep} from 'node:timers/promises';
import {describe, test} from 'node:test';
import {runPayload, scenario} from './support/scenario.mjs';
import {demoState, forceTransport, openDemo, screenshot, waitForState} from './support/browser.mjs';

/** How long the server stays down, in seconds (at least until the badge has shown the outage). */
const OUTAGE_SECS = outageSecs(process.env.E2E_OUTAGE_SECS);
/** Events notified in each phase: before the outage (received, then notified just before the stop), during, after. */
const PHASE = 5;
const COUNT = 4 * PHASE;

function outageSecs(value) {
    if (value === undefined || value === '') {
        return 90;
    }
    const secs = Number(value);
    if (!Number.isFinite(secs) || secs < 0) {
        throw new Error(`E2E_OUTAGE_SECS must be a number of seconds, not ${JSON.stringify(value)}`);
    }
    return secs;
}

/** The console error of each refused connection while the server is down (all the outage may cause). */
const REFUSED = /ERR_CONNECTION_REFUSED/;

describe(`an outage of ${OUTAGE_SECS} s under an open page`, {concurrency: true}, () => {
    for (const transport of ['websocket', 'sse', 'poll']) {
        test(`over ${transport}: the badge shows it; the page resumes without a reload, on ${transport}, `
            + 'with every acknowledged event once, in order, and no CONNECTION_LOST',
        (t) => scenario(t, `outage-${transport}`, {}, async ({server, page, errors}) => {
            let loads = 0;
            page.on('load', () => { loads += 1; });
            await openDemo(page, server.url);
            // A marker a reload would lose (the load count alone would miss a reload that fails).
            const marker = `outage-${transport}-${Date.now()}`;
            await page.evaluate((m) => { window.e2eMarker = m; }, marker);
            await forceTransport(page, transport);

            // Acknowledged = POST /demo/api/notify answered with an id. One run of COUNT events.
            const runid = `outage-${transport}-${Date.now()}`;
            const acknowledged = [];
            const notify = async (n) => {
                for (let i = 0; i < n; i += 1) {
                    acknowledged.push(await server.notify(runPayload(runid, acknowledged.length + 1, COUNT)));
                }
            };
            // Before: received live over the forced transport; then more just before the stop,
            // which the page may or may not have when the server goes.
            await notify(PHASE);
            await waitForState(page, (s, [id, n]) => s.runs[id]?.received === n, [runid, PHASE],
                {what: `the first ${PHASE} events over ${transport}`});
            await notify(PHASE);
            const receivedAtStop = (await demoState(page)).runs[runid].received;
            assert.equal(await server.stop(), 0, 'the server stopped cleanly on SIGTERM');
            const stopped = Date.now();

            // During the outage: past the client's lostAfterMs (10 s) the badge says disconnected,
            // retrying, and the "reconnecting" banner is up; not a final loss.
            await waitForState(page, (s) => s.outages.length === 1 && s.connection === 'disconnected', undefined,
                {timeout: 30000, what: 'the outage on the badge'});
            const badgeAfter = Date.now() - stopped;
            await assertOutageShown(page, transport);
            await screenshot(page, `outage-${transport}-down`);
            await sleep(Math.max(0, stopped + OUTAGE_SECS * 1000 - Date.now()));
            // Still shown, still trying, still on the forced transport at the end of the outage.
            await assertOutageShown(page, transport);
            const down = await demoState(page);
            assert.equal(down.forced, transport, 'still forced');
            assert.equal(down.transport, transport, 'no fallback while forced');

            await server.start();
            const restarted = Date.now();
            // During: notified at once on the restarted node (same port and data dir), before the
            // page is back; whether it was still away is read from the page after each answer.
            const duringAway = [];
            for (let i = 0; i < PHASE; i += 1) {
                await notify(1);
                duringAway.push((await demoState(page)).connection !== 'connected');
            }
            await waitForState(page, (s, n) => s.restored === 1 && s.connection === 'connected' && s.transport === n,
                transport, {timeout: 60000, what: `connected again over ${transport}`});
            const back = Date.now() - restarted;
            // After: the page is connected again.
            await notify(PHASE);
            await waitForState(page, (s, [id, n]) => s.runs[id]?.received === n, [runid, COUNT],
                {timeout: 30000, what: `all ${COUNT} events`});
            // Whatever came late (a duplicate) would come with the last events: take the state now.
            const state = await demoState(page);
            const run = state.runs[runid];
            t.diagnostic(`${transport}: ${receivedAtStop} of ${2 * PHASE} received at the stop; badge ${badgeAfter} ms after; `
                + `down ${restarted - stopped} ms; ${duringAway.filter(Boolean).length} of ${PHASE} "during" events `
                + `acknowledged while the page was away; connected ${back} ms after the restart; `
                + `states ${state.stateLog.map((e) => `${e.state} ${e.at - stopped}`).join(' → ')} (ms from the stop); `
                + `transports ${state.transportLog.map((c) => `${c.transport} (${c.reason})`).join(' → ')}`);

            assert.ok(acknowledged.every((id, i) => i === 0 || id > acknowledged[i - 1]), `ids increase: ${acknowledged}`);
            assert.deepEqual(run.ids, acknowledged, 'each acknowledged event once, in id order');
            assert.deepEqual(run.seqs, Array.from({length: COUNT}, (_, i) => i + 1));
            assert.equal(run.duplicates, 0);
            assert.equal(run.outOfOrder, 0);
            assert.equal(run.status, 'complete', JSON.stringify({...run, latencies: undefined}));
            assert.deepEqual(run.transports, {[transport]: COUNT}, `every event over ${transport}`);
            assert.equal(state.eventsTotal, COUNT, 'no other event');
            assert.equal(state.connectionLost.length, 0, 'no final CONNECTION_LOST');
            assert.equal(state.outages.length, 1, 'CONNECTION_LOST (retrying) once for the outage');
            assert.equal(state.restored, 1, 'CONNECTION_RESTORED once');
            assert.equal(state.recoveryFailed, 0, 'nothing missed');
            assert.equal(state.forced, transport, 'still forced');
            assert.equal(state.transport, transport, 'back on the forced transport');
            assert.equal(await page.getAttribute('#transport', 'data-transport'), transport);
            assert.equal(await page.getAttribute('#transport-mode', 'data-mode'), 'forced');
            assert.equal(await page.getAttribute('#connection-state', 'data-state'), 'connected');
            assert.equal(await page.isVisible('#outage-banner'), false);
            assert.equal(await page.isVisible('#lost-banner'), false);
            assert.equal(await page.textContent('#delivery-received'), `${COUNT} / ${COUNT}`);
            assert.equal(await page.textContent('#delivery-status'), 'Complete');
            // Without a reload.
            assert.equal(loads, 1, 'the page loaded once');
            assert.equal(await page.evaluate(() => window.e2eMarker), marker, 'the same document');
            t.diagnostic(`${transport}: ${errors.filter((e) => REFUSED.test(e)).length} refused connections in the console`);
            assert.deepEqual(errors.filter((e) => !REFUSED.test(e)), [], 'no other console error');
        }));
    }
});

/** The badge and the banner while the server is down: disconnected, retrying, not a final loss. */
async function assertOutageShown(page, transport) {
    const state = await demoState(page);
    assert.equal(state.connection, 'disconnected', `the page is not connected during the outage (${transport})`);
    assert.equal(state.connectionLost.length, 0, 'no final CONNECTION_LOST during the outage');
    assert.equal(state.outages.length, 1, 'CONNECTION_LOST (retrying) once');
    assert.equal(await page.getAttribute('#connection-state', 'data-state'), 'disconnected');
    assert.equal(await page.getAttribute('#connection-state', 'data-retrying'), 'true');
    assert.equal(await page.textContent('#connection-state'), 'Disconnected — reconnecting');
    assert.equal(await page.isVisible('#outage-banner'), true, 'the outage banner is shown');
    assert.equal(await page.isVisible('#lost-banner'), false, 'not a final loss');
}

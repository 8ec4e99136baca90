// The demo page in a real browser, over each transport forced with the page's own control:
// a single event, a burst of 20, and five sends to the server; and the page at phone width.
// One server for the file; a fresh browser (own profile) per test.

import assert from 'node:assert/strict';
import {after, before, describe, test} from 'node:test';
import {Server} from './support/server.mjs';
import {
    PHONE, demoState, forceTransport, launch, openDemo, screenshot, until, waitForState, watchNetwork,
} from './support/browser.mjs';

const BURST = 20;
const BURST_DELAY_MS = 25;
const SENDS = 5;

let server;
before(async () => { server = await new Server().start(); });
after(async () => { await server?.cleanup(); });

/** Launch a browser, open /demo, run `body`, save a screenshot, and fail on any script error. */
async function withDemo(name, body, options = {}) {
    const {page, errors, close} = await launch(options);
    try {
        const network = watchNetwork(page);
        await options.beforeOpen?.(page);
        await openDemo(page, server.url);
        await body(page, network);
        await screenshot(page, name);
        assert.deepEqual(errors, [], 'no script errors on the page');
    } catch (err) {
        await screenshot(page, `${name}-failed`).catch(() => {});
        throw err;
    } finally {
        await close();
    }
}

/** Click "Receive multiple events" with count and delay; resolves with the run's id. */
async function receiveMultiple(page, count, delayMs) {
    await page.fill('#delivery-count', String(count));
    await page.fill('#delivery-delay', String(delayMs));
    const before = Object.keys((await demoState(page)).runs);
    await page.click('#delivery-multiple');
    return newRunId(page, before);
}

async function newRunId(page, before) {
    await waitForState(page, (s, b) => Object.keys(s.runs).some((id) => !b.includes(id)), before,
        {what: 'a new run'});
    return Object.keys((await demoState(page)).runs).find((id) => !before.includes(id));
}

/** Wait until the run is over (any final status), then return it. */
async function finished(page, runid, timeout = 20000) {
    await waitForState(page, (s, id) => !['sending', 'receiving'].includes(s.runs[id]?.status), runid,
        {timeout, what: `run ${runid} to finish`});
    return (await demoState(page)).runs[runid];
}

for (const transport of ['websocket', 'sse', 'poll']) {
    describe(`over ${transport}`, () => {
        test(`a single event arrives over ${transport}`, () => withDemo(`single-${transport}`, async (page, network) => {
            await forceTransport(page, transport);
            const before = Object.keys((await demoState(page)).runs);
            await page.click('#delivery-single');
            const runid = await newRunId(page, before);
            const run = await finished(page, runid);
            assert.equal(run.status, 'complete');
            assert.equal(run.received, 1);
            assert.deepEqual(run.seqs, [1]);
            assert.deepEqual(run.transports, {[transport]: 1}, 'received over the forced transport');
            assert.equal(run.latencies.length, 1);
            assert.ok(run.latencies[0] >= -50 && run.latencies[0] < 10000, `plausible latency ${run.latencies[0]}`);
            assert.equal(await page.textContent('#delivery-status'), 'Complete');
            assert.equal(await page.textContent('#delivery-received'), '1 / 1');
            assert.equal(await page.getAttribute('#transport', 'data-transport'), transport);
            assert.equal(await page.getAttribute('#transport-mode', 'data-mode'), 'forced');
            assert.ok(network[transport === 'websocket' ? 'websocket' : transport] > 0,
                `the browser opened ${transport}: ${JSON.stringify(network)}`);
        }));

        test(`a burst of ${BURST} arrives complete, in order, once each over ${transport}`,
            () => withDemo(`burst-${transport}`, async (page) => {
                await forceTransport(page, transport);
                const runid = await receiveMultiple(page, BURST, BURST_DELAY_MS);
                const run = await finished(page, runid);
                assert.equal(run.status, 'complete', JSON.stringify({...run, latencies: undefined}));
                assert.equal(run.received, BURST);
                assert.deepEqual(run.seqs, Array.from({length: BURST}, (_, i) => i + 1), 'every seq once, in order');
                assert.equal(run.duplicates, 0);
                assert.equal(run.outOfOrder, 0);
                assert.ok(run.ids.every((id, i) => i === 0 || id > run.ids[i - 1]), 'event ids ascend');
                assert.deepEqual(run.transports, {[transport]: BURST});
                assert.equal(run.latencies.length, BURST);
                assert.equal(await page.textContent('#delivery-received'), `${BURST} / ${BURST}`);
                assert.equal(await page.textContent('#delivery-duplicates'), '0');
                assert.equal(await page.textContent('#delivery-outoforder'), '0');
                assert.match(await page.textContent('#delivery-latency'), /^min [\d.-]+ \/ avg [\d.-]+ \/ max [\d.-]+ ms$/);
                assert.equal((await demoState(page)).connectionLost.length, 0);
            }));

        test(`send to server round-trips ${SENDS} times, echoes checked, over ${transport}`,
            () => withDemo(`send-${transport}`, async (page, network) => {
                await forceTransport(page, transport);
                if (transport === 'websocket') {
                    // Sends go over the socket once its subscribe is answered; wait for that so all go there.
                    await until(() => network.websocketReady > 0, {what: 'the WebSocket to be subscribed'});
                }
                await page.fill('#push-count', String(SENDS));
                await page.fill('#push-delay', '0');
                const sendsBefore = network.send;
                await page.click('#push-send');
                await waitForState(page, (s, n) => s.push.answered === n && s.push.status !== 'sending', SENDS,
                    {what: 'the sends to be answered'});
                const {push} = await demoState(page);
                assert.equal(push.status, 'complete', JSON.stringify(push));
                assert.equal(push.ok, SENDS, 'every answer had receivedtime > 0 and the echo of what was sent');
                assert.equal(push.bad, 0);
                assert.deepEqual(push.errors, []);
                assert.equal(push.roundtrips.length, SENDS);
                assert.ok(push.roundtrips.every((ms) => ms >= 0 && ms < 10000), JSON.stringify(push.roundtrips));
                const over = Object.keys(push.via);
                if (transport === 'websocket') {
                    assert.deepEqual(push.via, {websocket: SENDS}, 'with an open WebSocket, sends use it');
                    assert.equal(network.send - sendsBefore, 0, 'and no POST /send');
                } else {
                    assert.deepEqual(over, ['http'], 'without a WebSocket, sends use POST /send');
                    assert.equal(network.send - sendsBefore, SENDS, 'the browser made one POST /send per send');
                }
                assert.equal(await page.textContent('#push-status'), 'Complete');
                assert.equal(await page.getAttribute('#push-answered', 'data-ok'), String(SENDS));
            }));
    });
}

test('the page fits a phone-sized screen (390 px) and works there', () => withDemo('phone', async (page) => {
    const width = await page.evaluate(() => document.documentElement.scrollWidth);
    assert.ok(width <= PHONE.width, `no horizontal scrolling: the page is ${width} px wide`);
    const before = Object.keys((await demoState(page)).runs);
    await page.click('#delivery-single');
    const runid = await newRunId(page, before);
    assert.equal((await finished(page, runid)).status, 'complete');
    await page.click('#push-send');
    await waitForState(page, (s) => s.push.status === 'complete', undefined, {what: 'one send'});
    // Calibration runs 1 s after load: wait for it, so the screenshot shows the offset.
    await waitForState(page, (s) => s.clock.calibrated, undefined, {what: 'clock calibration'});
    const {clock} = await demoState(page);
    assert.ok(Math.abs(clock.offset) < 1000, `same machine: a small clock offset, got ${clock.offset}`);
    assert.equal(await page.getAttribute('#clock-offset', 'data-calibrated'), 'true');
    const narrow = await page.evaluate(() => document.documentElement.scrollWidth);
    assert.ok(narrow <= PHONE.width, `still no horizontal scrolling after the runs: ${narrow} px`);
}, {viewport: PHONE}));

test('clock calibration finds a browser clock 60 s ahead and adjusts the latencies', () => withDemo('clock-skew', async (page) => {
    await waitForState(page, (s) => s.clock.calibrated, undefined, {what: 'clock calibration, 1 s after load'});
    const {clock} = await demoState(page);
    assert.ok(Math.abs(clock.offset + 60000) < 1000, `offset ≈ −60000 ms (server − browser), got ${clock.offset}`);
    assert.equal(clock.adjusted, true);
    assert.match(await page.textContent('#clock-offset'), /latencies adjusted/);

    const before = Object.keys((await demoState(page)).runs);
    await page.click('#delivery-single');
    const runid = await newRunId(page, before);
    const run = await finished(page, runid);
    assert.equal(run.status, 'complete');
    assert.ok(run.latencies[0] > 59000, `the raw latency carries the skew: ${run.latencies[0]}`);
    assert.equal(await page.isVisible('#delivery-adjusted'), true, '"(adjusted)" is shown');
    const shown = Number((await page.textContent('#delivery-latency')).match(/^min ([\d.-]+)/)[1]);
    assert.ok(shown > -100 && shown < 5000, `the adjusted latency is small: ${shown} ms`);

    // Recalibrate: the link measures again.
    assert.equal((await demoState(page)).clock.calibrations, 1);
    await page.click('#clock-recalibrate');
    await waitForState(page, (s) => s.clock.calibrations === 2, undefined, {what: 'recalibration'});
    assert.ok(Math.abs((await demoState(page)).clock.offset + 60000) < 1000);
}, {
    // Playwright's fake clock: the page's Date.now() runs 60 s ahead of the server's clock.
    beforeOpen: (page) => page.clock.install({time: Date.now() + 60000}),
}));

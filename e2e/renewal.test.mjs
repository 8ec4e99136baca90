// Pages that stay open all day (issue 10): the demo page with tokens of 60 s stays connected
// through several renewals (its `renew` function fetches GET /demo/config), on each transport, and
// a channel added to the live page gets its backlog and then its new events. A file of its own,
// so that node's runner runs it beside the other files (the renewal test takes 5 minutes).
import assert from 'node:assert/strict';
import {test} from 'node:test';
import {API_KEY, Server} from './support/server.mjs';
import {demoState, fetchPageConfig, forceTransport, launch, openDemo, screenshot, waitForState} from './support/browser.mjs';

const TRANSPORTS = ['websocket', 'sse', 'poll'];
/** How long the pages stay open (the issue asks for 5 minutes; E2E_RENEWAL_SECS shortens it locally). */
const SECONDS = Number(process.env.E2E_RENEWAL_SECS ?? 300);
const EVERY_MS = 3000;

/** POST a path of the demo node's API with the server's API key; the answer's JSON. */
async function demoApi(server, path, body) {
    const res = await fetch(`${server.url}/demo/api${path}`, {
        method: 'POST',
        headers: {'Authorization': `Bearer ${API_KEY}`, 'Content-Type': 'application/json'},
        body: JSON.stringify(body),
    });
    const answer = await res.json();
    assert.equal(res.status, 200, `${path}: ${JSON.stringify(answer)}`);
    return answer;
}

test(`tokens of 60 s: a page on each transport stays connected ${SECONDS} s through renewals, every event once`,
    {timeout: (SECONDS + 120) * 1000}, async (t) => {
        const server = await new Server({env: {REALTIME_AUTH_TOKEN_TTL_SECS: '60'}}).start();
        const pages = [];
        try {
            for (const transport of TRANSPORTS) {
                const opened = await launch();
                pages.push({transport, ...opened});
                await openDemo(opened.page, server.url);
                await forceTransport(opened.page, transport);
                await waitForState(opened.page, (s) => s.connection === 'connected', undefined,
                    {what: `connected over ${transport}`});
            }
            const config = await fetchPageConfig(server.url);
            assert.ok(config.expires - Date.now() / 1000 <= 61, `tokens of 60 s, expires ${config.expires}`);
            const marks = await Promise.all(pages.map(({page}) => page.evaluate(() => {
                window.loadMarker = window.loadMarker ?? Math.random();
                return {marker: window.loadMarker, states: window.realtimeDemo.state.stateLog.length};
            })));

            const count = Math.floor((SECONDS * 1000) / EVERY_MS);
            const runid = `renewal-${Date.now()}`;
            const acknowledged = [];
            const started = Date.now();
            for (let seq = 1; seq <= count; seq += 1) {
                acknowledged.push(await server.notify({runid, seq, count, senttime: Date.now()}));
                const next = started + seq * EVERY_MS;
                await new Promise((r) => setTimeout(r, Math.max(0, next - Date.now())));
            }
            for (const [i, {transport, page}] of pages.entries()) {
                await waitForState(page, (s, id) => s.runs[id]?.status !== 'receiving', runid,
                    {timeout: 30000, what: `the run to finish over ${transport}`});
                const state = await demoState(page);
                const run = state.runs[runid];
                const after = state.stateLog.slice(marks[i].states);
                t.diagnostic(`${transport}: ${state.renewals.length} renewals (${state.renewals.map((r) => r.reason).join(', ')}); `
                    + `states after forcing: ${after.map((e) => e.state).join(' → ') || 'none'}; `
                    + `transports ${state.transportLog.map((c) => `${c.transport} (${c.reason})`).join(' → ')}`);
                assert.equal(run.status, 'complete', `${transport}: ${JSON.stringify({...run, latencies: undefined})}`);
                assert.deepEqual(run.ids, acknowledged, `${transport}: each acknowledged event once, in id order`);
                assert.equal(run.duplicates, 0);
                assert.equal(run.outOfOrder, 0);
                assert.ok(state.renewals.length >= Math.floor(SECONDS / 60), `${transport}: renewed ${state.renewals.length}×`);
                assert.ok(state.renewals.every((r) => r.reason === 'expiring'), `${transport}: renewed before expiry, never after`);
                assert.deepEqual(state.connectionLost, [], `${transport}: no final CONNECTION_LOST`);
                assert.deepEqual(state.outages, [], `${transport}: no outage`);
                assert.ok(after.every((e) => e.state !== 'disconnected'), `${transport}: never disconnected`);
                if (transport !== 'sse') {
                    // WebSocket renews over the socket, polling with the next request: no reconnect.
                    // (An SSE stream is reopened with the fresh tokens: a moment of `connecting`.)
                    assert.deepEqual(after, [], `${transport}: the connection was never reopened`);
                }
                assert.equal(state.transport, transport);
                assert.equal(await page.evaluate(() => window.loadMarker), marks[i].marker, 'no reload');
                assert.equal(await page.getAttribute('#credentials', 'data-renewals'), String(state.renewals.length));
                await screenshot(page, `renewal-${transport}`);
            }
        } catch (err) {
            throw new Error(`${err.message}\n--- server log ---\n${server.log.slice(-4000)}`, {cause: err});
        } finally {
            for (const {close} of pages) {
                await close();
            }
            await server.cleanup();
        }
    });

test('a channel added to the live page gets its backlog from its own cursor, then its new events, on each transport',
    async (t) => {
        const server = await new Server().start();
        const {page, close} = await launch();
        try {
            await openDemo(page, server.url);
            const user = (await fetchPageConfig(server.url)).user;
            for (const transport of TRANSPORTS) {
                await forceTransport(page, transport);
                await waitForState(page, (s) => s.connection === 'connected', undefined, {what: `connected over ${transport}`});
                const extra = {contextid: 1, component: 'tool_realtime', area: `extra-${transport}`, itemid: 0};
                await demoApi(server, '/notify', {channel: extra, payload: 'before the mint'});
                const sub = await demoApi(server, '/subscribe', {channel: extra, user});
                const backlog = [];
                for (const n of [1, 2]) {
                    backlog.push((await demoApi(server, '/notify', {channel: extra, payload: `backlog ${n}`})).id);
                }
                // The page adds the channel (as a fragment loaded later would), and records its events.
                const added = await page.evaluate(async ([subscription, area]) => {
                    const {Realtime, client} = window.realtimeDemo;
                    window.extraEvents = window.extraEvents ?? {};
                    window.extraEvents[area] = [];
                    Realtime.subscribe(Realtime.EVENT, (e) => {
                        if (e.area === area) {
                            window.extraEvents[area].push({id: e.id, payload: e.payload});
                        }
                    });
                    await client.subscribe(subscription);
                    return client.subscriptions.map((s) => s.area);
                }, [sub, extra.area]);
                assert.ok(added.includes(extra.area), JSON.stringify(added));
                const live = (await demoApi(server, '/notify', {channel: extra, payload: 'live'})).id;
                await page.waitForFunction((area) => window.extraEvents[area].length >= 3, extra.area, {timeout: 20000});
                await new Promise((r) => setTimeout(r, 300));
                const seen = await page.evaluate((area) => window.extraEvents[area], extra.area);
                t.diagnostic(`${transport}: ${JSON.stringify(seen)}`);
                assert.deepEqual(seen.map((e) => e.id), [...backlog, live], `${transport}: backlog then live, once each`);
                assert.deepEqual(seen.map((e) => e.payload), ['backlog 1', 'backlog 2', 'live']);
                // The demo channel still works, and nothing of it came twice.
                const id = await server.notify({runid: `after-${transport}`, seq: 1, count: 1, senttime: Date.now()});
                await waitForState(page, (s, r) => s.runs[r]?.status === 'complete', `after-${transport}`,
                    {what: `the demo channel over ${transport}`});
                const state = await demoState(page);
                assert.deepEqual(state.runs[`after-${transport}`].ids, [id]);
                assert.equal(state.recoveryFailed, 0);
                // Dropped again: its events stop.
                await page.evaluate((area) => {
                    const {client} = window.realtimeDemo;
                    return client.unsubscribe(client.subscriptions.find((s) => s.area === area));
                }, extra.area);
                await demoApi(server, '/notify', {channel: extra, payload: 'after the drop'});
                const id2 = await server.notify({runid: `dropped-${transport}`, seq: 1, count: 1, senttime: Date.now()});
                await waitForState(page, (s, r) => s.runs[r]?.status === 'complete', `dropped-${transport}`,
                    {what: `the demo channel after the drop over ${transport}`});
                assert.deepEqual((await demoState(page)).runs[`dropped-${transport}`].ids, [id2]);
                assert.equal((await page.evaluate((area) => window.extraEvents[area], extra.area)).length, 3);
            }
            await screenshot(page, 'channel-added');
        } catch (err) {
            await screenshot(page, 'channel-added-failed').catch(() => {});
            throw new Error(`${err.message}\n--- server log ---\n${server.log.slice(-4000)}`, {cause: err});
        } finally {
            await close();
            await server.cleanup();
        }
    });

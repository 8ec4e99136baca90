// The demo page when things go wrong: the server restarts in the middle of a burst, WebSocket is
// unavailable, the page's token is forged or expired, the server's secret changes under the page.
// Each test has its own server and its own browser.

import assert from 'node:assert/strict';
import {createHmac} from 'node:crypto';
import {rmSync} from 'node:fs';
import {test} from 'node:test';
import {tempDataDir} from './support/server.mjs';
import {runPayload, scenario} from './support/scenario.mjs';
import {
    demoState, fetchPageConfig, forceTransport, patchPageConfig, openDemo, screenshot, until, waitForState,
} from './support/browser.mjs';

const SECRET = 'e2e-secret-0123456789abcdef0123456789abcdef';

/** The demo node's secret: derived from the server's (docs/deploy.md, "The demo page"). */
const DEMO_SECRET = createHmac('sha256', SECRET).update('realtime-demo-v1').digest('hex');

/** A token as the demo node signs it (docs/protocol.md, "Tokens"), for a secret the test knows. */
function signToken(kind, hash, user, expires) {
    const mac = createHmac('sha256', DEMO_SECRET)
        .update(`realtime-token-v1\n${kind}\n${hash}\n${user}\n${expires}`)
        .digest('base64url');
    return `v1.${user}.${expires}.${mac}`;
}

/**
 * After CONNECTION_LOST: the banner is shown once, a new run says "Connection lost", and a send
 * (POST /send, with the same refused token) fails; CONNECTION_LOST has still fired exactly once.
 */
async function assertLostOnce(page, {reason, code, transport}) {
    await waitForState(page, (s) => s.connectionLost.length > 0, undefined, {what: 'CONNECTION_LOST'});
    const lost = (await demoState(page)).connectionLost[0];
    assert.equal(lost.reason, reason, JSON.stringify(lost));
    if (code) {
        assert.equal(lost.code, code, JSON.stringify(lost));
    }
    if (transport) {
        // Refused at once, on the first transport: a refused credential is not worth a fallback.
        assert.equal(lost.transport, transport, JSON.stringify(lost));
    }
    assert.equal(await page.isVisible('#lost-banner'), true, 'the banner is shown');
    assert.equal(await page.getAttribute('#lost-banner', 'data-reason'), reason);
    assert.match(await page.textContent('#lost-reason'), /refused this page’s credentials/);
    assert.equal(await page.getAttribute('#transport-mode', 'data-mode'), 'lost');

    await page.click('#delivery-single');
    await waitForState(page, (s) => s.runs[s.current]?.status === 'connection_lost', undefined,
        {what: 'a new run to say Connection lost'});
    assert.equal(await page.textContent('#delivery-status'), 'Connection lost');
    await page.click('#push-send');
    await waitForState(page, (s) => s.push.status === 'error', undefined, {what: 'the send to fail'});
    const state = await demoState(page);
    assert.ok(['token_invalid', 'token_expired'].includes(state.push.errors[0]), JSON.stringify(state.push));
    assert.equal(state.connectionLost.length, 1, 'CONNECTION_LOST fired once');
    assert.equal(await page.locator('#lost-banner').count(), 1);
    assert.equal(state.eventsTotal, 0);
}

test('the server restarts in the middle of a burst: the page resumes, every acknowledged event once, no CONNECTION_LOST',
    (t) => scenario(t, 'restart', {}, async ({server, page, errors}) => {
        // "Every event" = every event whose POST /demo/api/notify was answered with an id: 20 events
        // with seq 1..20 of one run, seq 1..10 before the stop and 11..20 after the restart, while
        // the page stays open. (The demo's background job would die with the server, so the test
        // notifies itself.) The page must show each exactly once, in id order, and 20 / 20.
        const count = 20;
        const runid = `restart-${Date.now()}`;
        await openDemo(page, server.url);
        const acknowledged = [];
        for (let seq = 1; seq <= count / 2; seq += 1) {
            acknowledged.push(await server.notify(runPayload(runid, seq, count)));
        }
        // The page is in the middle of the run: it has some of the first half.
        await waitForState(page, (s, id) => s.runs[id]?.received > 0, runid, {what: 'the first events'});
        const before = (await demoState(page)).runs[runid];
        assert.equal(before.status, 'receiving');

        const stopping = Date.now();
        const code = await server.stop();
        assert.equal(code, 0, 'the server stopped cleanly on SIGTERM');
        const stopped = Date.now();
        await server.start();
        const restarted = Date.now();
        for (let seq = count / 2 + 1; seq <= count; seq += 1) {
            acknowledged.push(await server.notify(runPayload(runid, seq, count)));
        }

        await waitForState(page, (s, id) => s.runs[id]?.status !== 'receiving', runid,
            {timeout: 30000, what: 'the run to finish after the restart'});
        const state = await demoState(page);
        const run = state.runs[runid];
        t.diagnostic(`stop ${stopped - stopping} ms, start ${restarted - stopped} ms, complete ${Date.now() - restarted} ms `
            + `after the restart; transports: ${state.transportLog.map((c) => `${c.transport} (${c.reason})`).join(' → ')}`);
        assert.equal(run.status, 'complete', JSON.stringify({...run, latencies: undefined}));
        assert.equal(run.source, 'external');
        assert.deepEqual(run.ids, acknowledged, 'each acknowledged event once, in id order');
        assert.deepEqual(run.seqs, Array.from({length: count}, (_, i) => i + 1));
        assert.equal(run.duplicates, 0);
        assert.equal(run.outOfOrder, 0);
        assert.equal(state.connectionLost.length, 0, 'no CONNECTION_LOST');
        assert.equal(state.recoveryFailed, 0, 'nothing missed');
        assert.equal(await page.isVisible('#lost-banner'), false);
        assert.equal(await page.textContent('#delivery-received'), `${count} / ${count}`);
        assert.equal(await page.textContent('#delivery-status'), 'Complete');
        await screenshot(page, 'restart-complete');
        // The page still works after the restart, on whatever transport it reconnected with.
        const n = Object.keys(state.runs).length;
        await page.click('#delivery-single');
        await waitForState(page, (s, k) => Object.keys(s.runs).length > k && s.runs[s.current].status === 'complete',
            n, {what: 'a single event after the restart'});
        // While the server was down the browser's console reported the refused connections.
        assert.deepEqual(errors.filter((e) => !/ERR_CONNECTION_REFUSED/.test(e)), []);
    }));

test('an outage longer than the client\'s threshold: the badge shows it, the page keeps trying and comes back on WebSocket',
    (t) => scenario(t, 'outage-badge', {}, async ({server, page}) => {
        await openDemo(page, server.url);
        await waitForState(page, (s) => s.connection === 'connected' && s.transport === 'websocket', undefined,
            {what: 'connected over WebSocket'});
        assert.equal(await page.getAttribute('#connection-state', 'data-state'), 'connected');
        assert.equal(await server.stop(), 0, 'the server stopped cleanly on SIGTERM');
        const stopped = Date.now();
        // Past the client's lostAfterMs (10 s): disconnected, still retrying, a "reconnecting" banner.
        await waitForState(page, (s) => s.outages.length === 1 && s.connection === 'disconnected', undefined,
            {timeout: 30000, what: 'the outage on the badge'});
        assert.equal(await page.getAttribute('#connection-state', 'data-state'), 'disconnected');
        assert.equal(await page.getAttribute('#connection-state', 'data-retrying'), 'true');
        assert.equal(await page.isVisible('#outage-banner'), true);
        assert.equal(await page.isVisible('#lost-banner'), false, 'not a final loss');
        await screenshot(page, 'outage-badge-down');
        await server.start();
        const restarted = Date.now();
        await waitForState(page, (s) => s.restored === 1 && s.connection === 'connected' && s.transport === 'websocket',
            undefined, {timeout: 60000, what: 'connected again over WebSocket'});
        const state = await demoState(page);
        t.diagnostic(`down ${restarted - stopped} ms; connected over WebSocket ${Date.now() - restarted} ms after the restart; `
            + `states ${state.stateLog.map((e) => `${e.state} ${e.at - restarted}`).join(' → ')}; `
            + `transports ${state.transportLog.map((c) => `${c.transport} (${c.reason}) ${c.at - restarted}`).join(' → ')}`);
        assert.equal(state.outages.length, 1, 'CONNECTION_LOST once for the outage');
        assert.equal(state.connectionLost.length, 0, 'no final CONNECTION_LOST');
        assert.equal(await page.isVisible('#outage-banner'), false);
        assert.equal(await page.getAttribute('#connection-state', 'data-state'), 'connected');
        // The page works after the outage.
        const n = Object.keys(state.runs).length;
        await page.click('#delivery-single');
        await waitForState(page, (s, k) => Object.keys(s.runs).length > k && s.runs[s.current].status === 'complete',
            n, {what: 'a single event after the outage'});
    }));

test('WebSocket unavailable: the page falls back and still receives everything',
    (t) => scenario(t, 'fallback', {env: {REALTIME_TRANSPORTS_ENABLED: 'sse,poll'}}, async ({server, page, errors, network}) => {
        // The server does not serve WebSocket (GET /demo/ws is 404). The page config is edited to offer
        // it first anyway, as a page behind a proxy that blocks WebSocket would have it: the
        // handshake fails, and the client moves to SSE at once.
        const ws = await fetch(`${server.url}/demo/ws`);
        assert.equal(ws.status, 404, 'GET /demo/ws is not served');
        const served = (await fetchPageConfig(server.url)).transports;
        assert.deepEqual(served, ['sse', 'poll'], 'the server offers only what it serves');
        await patchPageConfig(page, {transports: ['websocket', ...served]});
        await openDemo(page, server.url);
        assert.deepEqual((await demoState(page)).transports, ['websocket', 'sse', 'poll']);
        await waitForState(page, (s) => s.transport === 'sse', undefined, {what: 'the fallback to SSE'});
        const {transportLog} = await demoState(page);
        assert.deepEqual(transportLog.map(({transport, reason}) => [transport, reason]),
            [['websocket', 'start'], ['sse', 'fallback']]);
        assert.ok(network.websocket >= 1, 'the browser tried the WebSocket');

        await page.fill('#delivery-count', '20');
        await page.fill('#delivery-delay', '25');
        await page.click('#delivery-multiple');
        await waitForState(page, (s) => s.current && s.runs[s.current].status !== 'sending'
            && s.runs[s.current].status !== 'receiving', undefined, {what: 'the burst'});
        const state = await demoState(page);
        const run = state.runs[state.current];
        assert.equal(run.status, 'complete');
        assert.deepEqual(run.seqs, Array.from({length: 20}, (_, i) => i + 1));
        assert.deepEqual(run.transports, {sse: 20});
        assert.equal(state.connectionLost.length, 0);

        await page.fill('#push-count', '3');
        await page.click('#push-send');
        await waitForState(page, (s) => s.push.status === 'complete', undefined, {what: 'sends over POST /send'});
        assert.deepEqual((await demoState(page)).push.via, {http: 3});
        // The Chromium console reports the handshake refused by the server (not blocked by the
        // browser); nothing else may go wrong.
        assert.ok(errors.some((e) => /\/ws' failed: .*Unexpected response code: 404/.test(e)), errors.join('\n'));
        assert.deepEqual(errors.filter((e) => !/\/ws' failed: .*Unexpected response code: 404/.test(e)), []);
        // The control still switches transports on this server.
        await forceTransport(page, 'poll');
        await page.click('#delivery-single');
        await waitForState(page, (s) => s.runs[s.current]?.status === 'complete' && s.runs[s.current].transports.poll === 1,
            undefined, {what: 'a single event over poll'});
    }));

test('without WebSocket in the config, the page starts on SSE and cannot force WebSocket',
    (t) => scenario(t, 'no-websocket', {env: {REALTIME_TRANSPORTS_ENABLED: 'sse,poll'}}, async ({server, page, errors}) => {
        await openDemo(page, server.url);
        const state = await demoState(page);
        assert.deepEqual(state.transports, ['sse', 'poll']);
        assert.equal(state.transport, 'sse');
        assert.equal(await page.isDisabled('#force-websocket'), true);
        assert.equal(await page.textContent('#transports-offered'), 'sse, poll');
        await page.click('#delivery-single');
        await waitForState(page, (s) => s.runs[s.current]?.status === 'complete', undefined, {what: 'a single event'});
        assert.deepEqual(errors, []);
    }));

test('a forged token: the page shows connection lost, once', (t) => scenario(t, 'forged-token', {}, async ({server, page}) => {
    // Change one character inside the MAC of the user token: the server must refuse it
    // (403 token_invalid). (Not the last one, whose low bits base64 leaves unused.)
    const t = (await fetchPageConfig(server.url)).usertoken;
    const i = t.length - 5;
    await patchPageConfig(page, {usertoken: t.slice(0, i) + (t[i] === 'A' ? 'B' : 'A') + t.slice(i + 1)});
    await openDemo(page, server.url);
    await assertLostOnce(page, {reason: 'credential_refused', code: 'token_invalid', transport: 'websocket'});
}));

test('an expired token (a page open past its tokens, e.g. after a laptop slept): renewed from /demo/config, no CONNECTION_LOST',
    (t) => scenario(t, 'expired-token', {env: {REALTIME_SECRET: SECRET}}, async ({server, page}) => {
        const config = await fetchPageConfig(server.url);
        assert.equal(signToken('user', '', config.user, config.expires), config.usertoken,
            'the test signs tokens as the server does');
        // Tokens signed as the server would, but an hour in the past (401 token_expired).
        const expires = Math.floor(Date.now() / 1000) - 3600;
        await patchPageConfig(page, {
            expires,
            usertoken: signToken('user', '', config.user, expires),
            subscriptions: config.subscriptions.map((s) => ({...s, token: signToken('sub', s.channel, config.user, expires)})),
        });
        await openDemo(page, server.url);
        // The server refuses the expired tokens (close 4001 after an `error` token_expired); the
        // page's renew function (GET /demo/config, as an application's endpoint) gives fresh ones
        // and the client connects with them — where before issue 10 the page was lost for good.
        await waitForState(page, (s) => s.connection === 'connected' && s.renewals.length > 0, undefined,
            {what: 'connected with renewed tokens'});
        const state = await demoState(page);
        assert.equal(state.renewals[0].reason, 'expired');
        assert.ok(state.renewals[0].expires > Date.now() / 1000, 'fresh tokens');
        assert.deepEqual(state.connectionLost, []);
        assert.equal(state.transport, 'websocket');
        const id = await server.notify(runPayload(`after-renewal-${Date.now()}`, 1, 1));
        await waitForState(page, (s, i) => Object.values(s.runs).some((r) => r.ids.includes(i)), id,
            {what: 'an event after the renewal'});
        assert.equal(await page.isVisible('#lost-banner'), false);
        assert.equal(await page.getAttribute('#credentials', 'data-renewals'), '1');
    }));

test('the server restarts with another secret: the page shows connection lost, once',
    (t) => scenario(t, 'secret-changed', {env: {REALTIME_SECRET: SECRET}}, async ({server, page, network}) => {
        await openDemo(page, server.url);
        await until(() => network.websocketReady > 0, {what: 'the WebSocket to be subscribed'});
        await server.stop();
        await server.start({REALTIME_SECRET: `${SECRET}-rotated`});
        // The client reconnects (and may fall back on the way); every transport refuses its tokens.
        await assertLostOnce(page, {reason: 'credential_refused'});
        const {connectionLost, transportLog} = await demoState(page);
        t.diagnostic(`lost over ${connectionLost[0].transport} (${connectionLost[0].code}); transports: `
            + transportLog.map((c) => `${c.transport} (${c.reason})`).join(' → '));
    }));

test('the server restarts on an empty store: the page shows that events were missed, and goes on',
    (t) => scenario(t, 'recovery-failed', {env: {REALTIME_SECRET: SECRET}}, async ({server, page, network}) => {
        // Same secret (the page's tokens stay valid), but a new data dir: a store of another
        // epoch, which cannot replay what came after the page's cursor (recovered: false).
        await openDemo(page, server.url);
        await until(() => network.websocketReady > 0, {what: 'the WebSocket to be subscribed'});
        await server.notify(runPayload('before', 1, 1));
        await waitForState(page, (s) => s.runs.before?.status === 'complete', undefined, {what: 'the first event'});
        await server.stop();
        const old = server.dataDir;
        server.dataDir = tempDataDir();
        try {
            await server.start();
            await waitForState(page, (s) => s.recoveryFailed > 0, undefined, {what: 'RECOVERY_FAILED'});
            assert.equal(await page.isVisible('#recovery-notice'), true, 'the notice is shown');
            assert.match(await page.textContent('#recovery-notice'), /Some events were missed/);
            // The page goes on from the new store's position.
            const n = Object.keys((await demoState(page)).runs).length;
            await page.click('#delivery-single');
            await waitForState(page, (s, k) => Object.keys(s.runs).length > k && s.runs[s.current].status === 'complete',
                n, {what: 'a single event from the new store'});
            const state = await demoState(page);
            assert.equal(state.recoveryFailed, 1);
            assert.equal(state.connectionLost.length, 0, 'no CONNECTION_LOST');
            assert.equal(await page.isVisible('#lost-banner'), false);
        } finally {
            rmSync(old, {recursive: true, force: true});
        }
    }));

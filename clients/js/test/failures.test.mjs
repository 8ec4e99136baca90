// The client gives up correctly: refused credentials, server gone for good.
import {test, before, after} from 'node:test';
import assert from 'node:assert/strict';

import {startServer, channel} from '../test-support/server.mjs';
import {recordClient, countingFetch, instrumented} from '../test-support/record.mjs';
import {waitFor, sleep} from '../test-support/wait.mjs';

let server;
before(async () => { server = await startServer(); });
after(async () => { await server?.cleanup(); });

/** `token` with one character in its middle changed. */
function tamper(token) {
    const i = Math.floor(token.length / 2);
    return token.slice(0, i) + (token[i] === 'A' ? 'B' : 'A') + token.slice(i + 1);
}

const tamperings = {
    'a tampered usertoken': (config) => ({...config, usertoken: tamper(config.usertoken)}),
    'a tampered subscription token': (config) => ({
        ...config,
        subscriptions: config.subscriptions.map((s, i) => (i === 1 ? {...s, token: tamper(s.token)} : s)),
    }),
    'subscription tokens swapped between channels': (config) => ({
        ...config,
        subscriptions: config.subscriptions.map((s, i, all) => ({...s, token: all[1 - i].token})),
    }),
};

/** Each transport first, with the ones it could fall back to after it. */
const ORDERS = {websocket: ['websocket', 'sse', 'poll'], sse: ['sse', 'poll'], poll: ['poll']};

for (const [first, order] of Object.entries(ORDERS)) {
    for (const [name, change] of Object.entries(tamperings)) {
        test(`${first}: ${name}: CONNECTION_LOST credential_refused exactly once, no fallback`, async (t) => {
            const config = change(await server.page([channel('tamper-a'), channel('tamper-b')]));
            const {stats, options} = instrumented();
            const rec = recordClient(t, config, {...options, transports: order, backoffBaseMs: 1});
            await waitFor(() => rec.lost.length === 1, {message: 'CONNECTION_LOST'});
            const [lost] = rec.lost;
            t.diagnostic(`CONNECTION_LOST ${JSON.stringify(lost)}`);
            assert.equal(lost.reason, 'credential_refused');
            assert.equal(lost.transport, first);
            assert.equal(lost.code, 'token_invalid');
            assert.equal(typeof lost.message, 'string');
            if (first === 'websocket') {
                assert.equal(lost.status, undefined, 'a WebSocket refusal has no HTTP status');
            } else {
                assert.ok(lost.status === 401 || lost.status === 403, `status ${lost.status}`);
            }
            await sleep(100);
            const attempts = {websocket: 0, sse: 0, poll: 0, probe: 0, send: 0, [first]: 1};
            if (first === 'sse') {
                attempts.probe = 1; // the one GET that learns the status EventSource hides
            }
            assert.deepEqual(stats, attempts, 'one attempt, no other transport tried');
            assert.equal(rec.lost.length, 1);
            assert.equal(rec.client.state, 'lost');
            assert.deepEqual(rec.events, []);
            assert.deepEqual(rec.used(), [first]);
        });
    }
}

test('poll only, server gone for good: retries with backoff, then CONNECTION_LOST retries_exhausted once', async (t) => {
    const own = await startServer();
    t.after(() => own.cleanup());
    const chan = channel('gone');
    const counting = countingFetch();
    const rec = recordClient(t, await own.page([chan]),
        {fetch: counting.fetch, transports: ['poll'], backoffBaseMs: 10, backoffMaxMs: 40, maxRetries: 4});
    await own.notify(chan, 'still here');
    await waitFor(() => rec.events.length === 1);
    await own.stop();
    await waitFor(() => rec.lost.length === 1, {message: 'CONNECTION_LOST'});
    const [lost] = rec.lost;
    t.diagnostic(`CONNECTION_LOST ${JSON.stringify(lost)}`);
    assert.equal(lost.reason, 'retries_exhausted');
    assert.equal(typeof lost.message, 'string');
    assert.ok(counting.stats.failures >= 4, `failures ${counting.stats.failures}`);
    const calls = counting.stats.calls;
    await sleep(150);
    assert.equal(counting.stats.calls, calls, 'no poll after giving up');
    assert.equal(rec.lost.length, 1);
    assert.equal(rec.client.state, 'lost');
});

test('server gone for good: WebSocket retried, then SSE, then poll, each retry from the top; CONNECTION_LOST once, on poll', async (t) => {
    const own = await startServer();
    t.after(() => own.cleanup());
    const chan = channel('gone-all');
    const {stats, options} = instrumented();
    const rec = recordClient(t, await own.page([chan]),
        {...options, backoffBaseMs: 10, backoffMaxMs: 40, maxRetries: 4, fallbackAfter: 2});
    await own.notify(chan, 'still here');
    await waitFor(() => rec.events.length === 1);
    assert.equal(rec.client.transport, 'websocket');
    await own.stop();
    await waitFor(() => rec.lost.length === 1, {message: 'CONNECTION_LOST'});
    const [lost] = rec.lost;
    t.diagnostic(`CONNECTION_LOST ${JSON.stringify(lost)}; attempts ${JSON.stringify(stats)}`);
    assert.equal(lost.reason, 'retries_exhausted');
    assert.equal(lost.transport, 'poll');
    // In an outage every retry starts again from the WebSocket (none of them opened: the server is
    // away, nothing is taken as blocked) and falls down at once to poll, whose failures count.
    const reasons = rec.changes.map((c) => c.reason);
    assert.deepEqual(reasons, ['start', 'fallback', 'fallback', ...Array(3).fill(['climb', 'fallback', 'fallback']).flat()]);
    // 1 connection, 1 soon after 1012 (draining), 2 with backoff, then one per retry; SSE and poll once per retry.
    assert.equal(stats.websocket, 4 + 3);
    assert.equal(stats.sse, 4);
    assert.equal(stats.poll, 4);
    const before = {...stats};
    await sleep(150);
    assert.deepEqual(stats, before, 'nothing after giving up');
    assert.equal(rec.lost.length, 1);
});

// Server restarted on the same port and data dir: the client reconnects and loses nothing.
import {test} from 'node:test';
import assert from 'node:assert/strict';
import {rm} from 'node:fs/promises';

import {startServer, channel, freePort, tempDir} from '../test-support/server.mjs';
import {recordClient, countingFetch, instrumented} from '../test-support/record.mjs';
import {waitFor, sleep} from '../test-support/wait.mjs';

test('poll only: server stopped mid-stream and restarted: every event once, in order, no CONNECTION_LOST', async (t) => {
    const port = await freePort();
    const dataDir = await tempDir();
    t.after(() => rm(dataDir, {recursive: true, force: true}));
    let server = await startServer({port, dataDir});
    t.after(() => server.stop());
    const chan = channel('restart');
    const counting = countingFetch();
    const rec = recordClient(t, await server.page([chan]),
        {fetch: counting.fetch, transports: ['poll'], backoffBaseMs: 20, backoffMaxMs: 200, maxRetries: 1000});

    const ids = [];
    for (let i = 1; i <= 3; i++) {
        ids.push(await server.notify(chan, i));
    }
    await waitFor(() => rec.events.length === 3);

    await server.stop();
    await waitFor(() => counting.stats.failures >= 3, {message: 'the client to retry'});

    server = await startServer({port, dataDir});
    ids.push(...await server.notifyBatch([4, 5, 6].map((n) => ({channel: chan, payload: n}))));
    ids.push(await server.notify(chan, 7));
    await waitFor(() => rec.events.length >= 7, {message: () => `7 events, have ${rec.ids()}`});
    await sleep(100);

    t.diagnostic(`failed polls while down: ${counting.stats.failures}`);
    assert.deepEqual(rec.ids(), ids);
    assert.deepEqual(rec.events.map((e) => e.payload), [1, 2, 3, 4, 5, 6, 7]);
    assert.deepEqual(rec.lost, []);
    assert.deepEqual(rec.recoveries, []);
    assert.equal(rec.client.state, 'running');
});

test('all transports: server stopped mid-stream and restarted: falls back, resumes, climbs back; every event once', async (t) => {
    const port = await freePort();
    const dataDir = await tempDir();
    t.after(() => rm(dataDir, {recursive: true, force: true}));
    let server = await startServer({port, dataDir});
    t.after(() => server.stop());
    const chan = channel('restart-all');
    const {stats, options} = instrumented();
    const rec = recordClient(t, await server.page([chan]),
        {...options, backoffBaseMs: 20, backoffMaxMs: 100, maxRetries: 1000, climbAfterMs: 300});
    const batch = (from) => Array.from({length: 20}, (_, i) => ({channel: chan, payload: from + i}));

    const ids = [];
    for (let b = 0; b < 5; b++) {
        ids.push(...await server.notifyBatch(batch(b * 20)));
    }
    await waitFor(() => rec.events.length >= 10, {message: 'the stream to start'});
    const before = rec.events.length;
    await server.stop(); // whatever the client has not read yet, it must get after the restart
    t.diagnostic(`events received when the server was stopped: ${before} of 100`);
    await waitFor(() => rec.client.transport === 'poll', {message: () => `fallback to poll, used ${rec.used()}`});

    server = await startServer({port, dataDir});
    for (let b = 5; b < 10; b++) {
        ids.push(...await server.notifyBatch(batch(b * 20)));
    }
    await waitFor(() => rec.events.length >= 200, {message: () => `200 events, have ${rec.events.length}`});
    await waitFor(() => rec.client.transport === 'websocket', {message: 'climbing back to the WebSocket'});
    ids.push(...await server.notifyBatch(batch(200)));
    await waitFor(() => rec.events.length >= 220);
    await sleep(100);

    t.diagnostic(`transports used: ${rec.used()}; attempts ${JSON.stringify(stats)}`);
    assert.deepEqual(rec.ids(), ids);
    assert.deepEqual(rec.events.map((e) => e.payload), Array.from({length: 220}, (_, i) => i));
    // Down through SSE to poll while the server is away, back on the WebSocket once it returns. How
    // many rounds of climb-and-fall the outage takes depends on how long the restart takes on this
    // machine (the backoff here is 20–100 ms), so only the shape is asserted.
    const used = rec.used();
    assert.deepEqual(used.slice(0, 3), ['websocket', 'sse', 'poll'], `${used}`);
    assert.equal(used.at(-1), 'websocket', `${used}`);
    const reasons = rec.changes.map((c) => c.reason);
    assert.equal(reasons[0], 'start');
    assert.ok(reasons.slice(1).every((r) => r === 'fallback' || r === 'climb'), `${reasons}`);
    assert.deepEqual(rec.lost, []);
    assert.deepEqual(rec.recoveries, []);
    assert.equal(rec.client.state, 'running');
});

// Each transport against the real server (WebSocket: the runtime's; SSE: the polyfill in
// test-support), and the fallback from one that cannot open to the next.
import {test, before, after} from 'node:test';
import assert from 'node:assert/strict';

import {startServer, channel} from '../test-support/server.mjs';
import {recordClient, instrumented, ascending} from '../test-support/record.mjs';
import {refusingWebSocket} from '../test-support/fake-transports.mjs';
import {eventSourceWith} from '../test-support/eventsource.mjs';
import {waitFor, sleep} from '../test-support/wait.mjs';

let server;
let foreignCursor;
before(async () => {
    server = await startServer();
    const other = await startServer();
    foreignCursor = (await other.page([channel('x')])).cursor;
    await other.cleanup();
});
after(async () => { await server?.cleanup(); });

/** Notify `n` events on `chan` (in batches of up to 10); returns their ids. */
async function notifyMany(chan, n, tag) {
    const ids = [];
    for (let i = 0; i < n; i += 10) {
        const size = Math.min(10, n - i);
        ids.push(...await server.notifyBatch(Array.from({length: size}, (_, k) => ({channel: chan, payload: {tag, n: i + k}}))));
    }
    return ids;
}

for (const transport of ['websocket', 'sse', 'poll']) {
    test(`${transport}: backlog, then live events, each once, in order`, async (t) => {
        const chan = channel(`deliver-${transport}`);
        const other = channel(`deliver-${transport}-other`);
        const config = await server.page([chan]);
        const ids = await notifyMany(chan, 15, 'backlog');
        await server.notify(other, 'not subscribed');
        const {stats, options} = instrumented();
        const rec = recordClient(t, config, {...options, transports: [transport]});
        await waitFor(() => rec.events.length >= 15, {message: () => `backlog, have ${rec.events.length}`});
        ids.push(await server.notify(chan, {single: true}));
        ids.push(...await notifyMany(chan, 30, 'live'));
        await waitFor(() => rec.events.length >= ids.length, {message: () => `${ids.length} events, have ${rec.events.length}`});
        await sleep(100);
        assert.deepEqual(rec.ids(), ids);
        assert.ok(ascending(rec.ids()));
        assert.deepEqual(rec.events[0].payload, {tag: 'backlog', n: 0});
        assert.deepEqual(rec.events[15].payload, {single: true});
        assert.equal(rec.events[0].area, `deliver-${transport}`);
        assert.equal(rec.client.transport, transport);
        assert.deepEqual(rec.used(), [transport]);
        assert.deepEqual(rec.lost, []);
        assert.deepEqual(rec.recoveries, []);
        if (transport !== 'poll') {
            assert.equal(stats[transport], 1, 'one connection did it all');
        }
        assert.equal(rec.client.cursor.split(':')[1], String(ids.at(-1)), 'the cursor is at the last event');
    });

    test(`${transport}: a cursor the server cannot resume from gives RECOVERY_FAILED, then live events`, async (t) => {
        const chan = channel(`recover-${transport}`);
        const config = await server.page([chan]);
        const {options} = instrumented();
        const rec = recordClient(t, {...config, cursor: foreignCursor},
            {...options, transports: [transport], shortPollDelayMs: 50});
        await waitFor(() => rec.recoveries.length === 1, {message: 'RECOVERY_FAILED'});
        assert.notEqual(rec.recoveries[0].cursor, foreignCursor);
        const id = await server.notify(chan, 'live');
        await waitFor(() => rec.events.length === 1);
        assert.equal(rec.events[0].id, id);
        assert.equal(rec.recoveries.length, 1);
        assert.deepEqual(rec.lost, []);
    });
}

test('WebSocket cannot open: the client falls back to SSE and receives everything', async (t) => {
    const chan = channel('fallback-sse');
    const config = await server.page([chan]);
    assert.deepEqual(config.transports, ['websocket', 'sse', 'poll']);
    const ids = await notifyMany(chan, 5, 'before');
    const {stats, options} = instrumented();
    const Refusing = refusingWebSocket();
    const rec = recordClient(t, config, {...options, WebSocket: Refusing, backoffBaseMs: 60000});
    await waitFor(() => rec.events.length >= 5);
    ids.push(...await notifyMany(chan, 20, 'after'));
    await waitFor(() => rec.events.length >= ids.length);
    await sleep(100);
    assert.deepEqual(rec.ids(), ids);
    assert.deepEqual(rec.used(), ['websocket', 'sse']);
    assert.equal(rec.client.transport, 'sse');
    assert.equal(Refusing.instances.length, 1);
    assert.deepEqual({sse: stats.sse, poll: stats.poll}, {sse: 1, poll: 0});
    assert.deepEqual(rec.lost, []);
});

test('WebSocket and SSE cannot open: the client falls back to poll and receives everything', async (t) => {
    const chan = channel('fallback-poll');
    const config = await server.page([chan]);
    const ids = await notifyMany(chan, 5, 'before');
    const {stats, options} = instrumented();
    const Refusing = refusingWebSocket();
    let streams = 0;
    // An EventSource whose streams never get through (a buffering proxy, say); a plain GET does.
    const Blocked = eventSourceWith({fetch: () => { streams += 1; return Promise.reject(new TypeError('fetch failed')); }});
    const rec = recordClient(t, config, {...options, WebSocket: Refusing, EventSource: Blocked, backoffBaseMs: 60000});
    await waitFor(() => rec.events.length >= 5);
    ids.push(...await notifyMany(chan, 20, 'after'));
    await waitFor(() => rec.events.length >= ids.length);
    await sleep(100);
    assert.deepEqual(rec.ids(), ids);
    assert.deepEqual(rec.used(), ['websocket', 'sse', 'poll']);
    assert.equal(Refusing.instances.length, 1);
    assert.equal(streams, 1, 'the EventSource was closed after its first error, not left to retry');
    assert.equal(stats.probe, 1, 'one GET to learn why SSE failed (it answered 200: not a refusal)');
    assert.ok(stats.poll >= 2);
    assert.deepEqual(rec.lost, []);
});

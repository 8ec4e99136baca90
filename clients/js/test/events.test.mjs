// Events from the real server reach the client: shape, cursor, order, dedup (over the default
// transport: WebSocket where the runtime has one; transports.test.mjs covers each one).
import {test, before, after} from 'node:test';
import assert from 'node:assert/strict';

import {startServer, channel} from '../test-support/server.mjs';
import {recordClient, ascending} from '../test-support/record.mjs';
import {waitFor, sleep} from '../test-support/wait.mjs';

let server;
before(async () => { server = await startServer(); });
after(async () => { await server?.cleanup(); });

const EVENT_KEYS = ['area', 'channeldetails', 'component', 'contextid', 'id', 'itemid', 'payload', 'timecreated'];

test('a notified event arrives with the exact shape and payload', async (t) => {
    const chan = channel('shape', 7, 'some details');
    const config = await server.page([chan]);
    assert.equal(config.url, server.url);
    assert.equal(config.user, 42);
    assert.equal(typeof config.usertoken, 'string');
    assert.equal(typeof config.cursor, 'string');
    assert.equal(config.subscriptions.length, 1);
    assert.ok(config.transports.includes('poll'));

    const rec = recordClient(t, config);
    const payload = {text: 'héllo ✓ "quoted"', n: 3.5, list: [1, null, true, {deep: []}], empty: {}};
    const before = Math.floor(Date.now() / 1000);
    const id = await server.notify(chan, payload);
    await waitFor(() => rec.events.length === 1, {message: 'the event'});
    const [event] = rec.events;
    assert.deepEqual(Object.keys(event).sort(), EVENT_KEYS);
    assert.deepEqual({...event, timecreated: 0}, {
        id, contextid: 1, component: 'mod_x', area: 'shape', itemid: 7, channeldetails: 'some details',
        payload, timecreated: 0,
    });
    assert.ok(Math.abs(event.timecreated - before) <= 5, `timecreated ${event.timecreated} ~ ${before}`);
    assert.deepEqual(rec.lost, []);
    assert.deepEqual(rec.recoveries, []);
});

test('only subscribed channels are delivered', async (t) => {
    const mine = channel('mine');
    const other = channel('other');
    const rec = recordClient(t, await server.page([mine]));
    await server.notify(other, 'not for me');
    await server.notify({...mine, itemid: 1}, 'other item');
    const id = await server.notify(mine, 'for me');
    await waitFor(() => rec.events.length >= 1);
    await sleep(100);
    assert.deepEqual(rec.ids(), [id]);
});

test('an event notified after the page was built but before the client starts is delivered', async (t) => {
    const chan = channel('prestart');
    const earlier = await server.notify(chan, 'before the page');
    const config = await server.page([chan]);
    const id = await server.notify(chan, 'between page and first poll');
    const rec = recordClient(t, config);
    await waitFor(() => rec.events.length >= 1);
    const later = await server.notify(chan, 'after start');
    await waitFor(() => rec.events.length >= 2);
    await sleep(100);
    assert.deepEqual(rec.ids(), [id, later], `the event notified before the page (${earlier}) is not replayed`);
    assert.equal(rec.events[0].payload, 'between page and first poll');
});

test('two channels interleaved arrive in id order; a batch of 50 arrives complete, once, in order', async (t) => {
    const a = channel('inter-a');
    const b = channel('inter-b', 3);
    const rec = recordClient(t, await server.page([a, b]));
    const ids = [];
    for (let i = 0; i < 6; i++) {
        ids.push(await server.notify(i % 2 ? b : a, {i}));
    }
    await waitFor(() => rec.events.length >= 6, {message: () => `6 events, have ${rec.ids()}`});
    const batch = Array.from({length: 50}, (_, i) => ({channel: i % 3 ? a : b, payload: {batch: i}}));
    const batchIds = await server.notifyBatch(batch);
    assert.equal(batchIds.length, 50);
    assert.ok(ascending(batchIds), 'batch ids ascend');
    ids.push(...batchIds);
    await waitFor(() => rec.events.length >= 56, {message: () => `56 events, have ${rec.events.length}`});
    await sleep(100);
    assert.deepEqual(rec.ids(), ids);
    rec.events.slice(6).forEach((event, i) => {
        assert.deepEqual(event.payload, {batch: i});
        assert.equal(event.area, i % 3 ? 'inter-a' : 'inter-b');
    });
});

test('answers replayed or duplicated on the wire are published once', async (t) => {
    const chan = channel('dedup');
    const config = await server.page([chan]);
    const replays = [];
    let saved = null;
    let replayed = false;
    // Passes polls to the server, but doubles the events of the first non-empty
    // answer, then answers the next poll with that answer again.
    const fetchFn = async (url, init) => {
        if (!url.endsWith('/poll')) {
            return fetch(url, init);
        }
        if (saved && !replayed) {
            replayed = true;
            replays.push('replay');
            return Response.json(saved);
        }
        const response = await fetch(url, init);
        const body = await response.json();
        if (response.ok && body.events.length > 0 && !saved) {
            saved = body;
            body.events = [...body.events, ...body.events.slice().reverse()];
        }
        return Response.json(body, {status: response.status});
    };
    const rec = recordClient(t, config, {fetch: fetchFn, transports: ['poll']});
    const first = await server.notifyBatch([1, 2, 3].map((n) => ({channel: chan, payload: n})));
    await waitFor(() => replayed);
    const next = await server.notify(chan, 4);
    await waitFor(() => rec.events.length >= 4);
    await sleep(100);
    assert.equal(replays.length, 1);
    assert.deepEqual(rec.ids(), [...first, next]);
    assert.deepEqual(rec.events.map((e) => e.payload), [1, 2, 3, 4]);
});

test('a cursor the server cannot resume from: RECOVERY_FAILED once, then live events flow', async (t) => {
    const chan = channel('recovery');
    const config = await server.page([chan]);
    // A valid cursor of another store (another server's data dir) cannot be resumed here.
    const other = await startServer();
    t.after(() => other.cleanup());
    const foreign = (await other.page([chan])).cursor;
    await other.cleanup();
    assert.notEqual(foreign, config.cursor);

    const rec = recordClient(t, {...config, cursor: foreign});
    await waitFor(() => rec.recoveries.length === 1, {message: 'RECOVERY_FAILED'});
    assert.equal(typeof rec.recoveries[0].cursor, 'string');
    assert.notEqual(rec.recoveries[0].cursor, foreign);
    const id = await server.notify(chan, 'live');
    await waitFor(() => rec.events.length === 1);
    assert.equal(rec.events[0].id, id);
    assert.equal(rec.recoveries.length, 1);
    assert.deepEqual(rec.lost, []);
});

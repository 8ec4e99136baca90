// Unit tests of the reconnect policy of issue 10 (pages that stay open all day): the backoff
// schedule and its jitter, the classification of every close code and HTTP status (final vs
// transient), the connection state and its topics (CONNECTION_LOST once per outage,
// CONNECTION_RESTORED), climbing back at once after an outage, and the spread of reconnects
// after a node drains. Scripted fakes only: no server, no binary.
import {test} from 'node:test';
import assert from 'node:assert/strict';

import {
    createClient, backoffDelay, classifyClose, classifyStatus,
    EVENT, CONNECTION_LOST, CONNECTION_RESTORED, STATE_CHANGED, TRANSPORT_CHANGED,
} from '../realtime.js';
import {FakeFetch, answer, ev, failure, networkDown} from '../test-support/fake-fetch.mjs';
import {fakeWebSocket, fakeEventSource} from '../test-support/fake-transports.mjs';
import {waitFor, sleep} from '../test-support/wait.mjs';

const CONFIG = Object.freeze({
    url: 'http://realtime.invalid',
    usertoken: 'UT',
    cursor: 'c0',
    subscriptions: [{channel: 'h1', token: 't1'}],
    transports: ['websocket', 'sse', 'poll'],
});
const DEFAULT_BACKOFF = Object.freeze({backoffBaseMs: 500, backoffMaxMs: 20000, backoffJitter: 0.5});

/** A client on fake transports; records every topic. */
function setup(t, options = {}, fetchFn = undefined) {
    const WS = fakeWebSocket();
    const ES = fakeEventSource();
    const fake = new FakeFetch();
    const client = createClient(CONFIG, {
        WebSocket: WS, EventSource: ES, fetch: fetchFn ?? fake.fetch, ...options,
    });
    const rec = {WS, ES, fake, client, events: [], lost: [], restored: [], states: [], changes: []};
    rec.ids = () => rec.events.map((e) => e.id);
    rec.used = () => rec.changes.map((c) => `${c.transport}:${c.reason}`);
    client.subscribe(EVENT, (e) => rec.events.push(e));
    client.subscribe(CONNECTION_LOST, (e) => rec.lost.push(e));
    client.subscribe(CONNECTION_RESTORED, (e) => rec.restored.push(e));
    client.subscribe(STATE_CHANGED, (e) => rec.states.push(e.state));
    client.subscribe(TRANSPORT_CHANGED, (e) => rec.changes.push(e));
    t.after(() => client.stop());
    return rec;
}

async function nth(Class, n, what) {
    await waitFor(() => Class.instances.length > n, {timeout: 3000, message: `${what} #${n}`});
    return Class.instances[n];
}

/**
 * A fetch for poll-only clients whose server can be taken away and brought back: while down,
 * every request (and every long-poll waiting) fails as a network error; while up, a request takes
 * the next queued answer or waits like a long-poll.
 */
function switchableServer() {
    const ctl = {down: false, queue: [], waiting: new Set(), calls: 0};
    ctl.fetch = (url, init = {}) => {
        ctl.calls += 1;
        if (ctl.down) {
            return Promise.reject(new TypeError('fetch failed'));
        }
        const next = ctl.queue.shift();
        if (next) {
            return Promise.resolve(new Response(JSON.stringify(next), {status: 200}));
        }
        return new Promise((resolve, reject) => {
            const entry = {reject};
            ctl.waiting.add(entry);
            init.signal?.addEventListener('abort', () => {
                ctl.waiting.delete(entry);
                reject(new DOMException('This operation was aborted', 'AbortError'));
            });
        });
    };
    ctl.goDown = () => {
        ctl.down = true;
        for (const {reject} of ctl.waiting) {
            reject(new TypeError('fetch failed'));
        }
        ctl.waiting.clear();
    };
    ctl.goUp = (...answers) => {
        ctl.queue.push(...answers);
        ctl.down = false;
    };
    return ctl;
}

test('backoff: nominal 0.5 s doubling to a 20 s cap, each delay within ±50 % of it', () => {
    for (let attempt = 1; attempt <= 15; attempt++) {
        const nominal = Math.min(20000, 500 * 2 ** (attempt - 1));
        const low = backoffDelay(attempt, DEFAULT_BACKOFF, () => 0);
        const high = backoffDelay(attempt, DEFAULT_BACKOFF, () => 0.999999);
        assert.equal(low, Math.floor(nominal * 0.5), `attempt ${attempt}: lowest`);
        assert.ok(high < nominal * 1.5 && high >= Math.floor(nominal * 1.5) - 1, `attempt ${attempt}: highest ${high}`);
    }
    assert.equal(backoffDelay(1000, DEFAULT_BACKOFF, () => 0.5), 20000, 'no overflow for a long outage');
    assert.equal(backoffDelay(0, DEFAULT_BACKOFF, () => 0.5), 500, 'attempt < 1 counts as the first');
});

test('backoff jitter: Math.random spreads the delays over the whole ±50 % range', () => {
    for (const attempt of [1, 4, 10]) {
        const nominal = Math.min(20000, 500 * 2 ** (attempt - 1));
        const delays = Array.from({length: 2000}, () => backoffDelay(attempt, DEFAULT_BACKOFF, Math.random));
        const min = Math.min(...delays);
        const max = Math.max(...delays);
        assert.ok(min >= nominal * 0.5 && max < nominal * 1.5, `attempt ${attempt}: [${min}, ${max}] within ±50 %`);
        assert.ok(min < nominal * 0.6 && max > nominal * 1.4, `attempt ${attempt}: [${min}, ${max}] uses the range`);
        const below = delays.filter((d) => d < nominal).length;
        assert.ok(below > 800 && below < 1200, `attempt ${attempt}: ${below} of 2000 below nominal: centred`);
    }
    assert.equal(backoffDelay(3, {...DEFAULT_BACKOFF, backoffJitter: 0}, Math.random), 2000, 'jitter 0: nominal');
});

test('backoff honours Retry-After (spread upwards by the jitter) and takes at most 5 min of it', () => {
    assert.equal(backoffDelay(1, DEFAULT_BACKOFF, () => 0, 5000), 5000);
    assert.equal(backoffDelay(1, DEFAULT_BACKOFF, () => 0.999999, 5000), Math.floor(5000 * 1.4999995));
    assert.equal(backoffDelay(10, DEFAULT_BACKOFF, () => 0, 1000), 10000, 'a longer backoff wins over Retry-After');
    assert.equal(backoffDelay(1, DEFAULT_BACKOFF, () => 0, 3600 * 1000), 300000, 'Retry-After capped at 5 min');
    assert.equal(backoffDelay(1, DEFAULT_BACKOFF, () => 0, 0), 250, 'Retry-After: 0 is no constraint');
});

test('every WebSocket close code: only 4001 and 4002 are final; 1012 and 4008 reopen soon; 1006 is the network', () => {
    const expect = {
        4001: {retryable: false, reason: 'credential_refused', immediate: false, answered: true},
        4002: {retryable: false, reason: 'rejected', immediate: false, answered: true},
        1012: {retryable: true, reason: 'server_error', immediate: true, answered: true},
        4008: {retryable: true, reason: 'server_error', immediate: true, answered: true},
        1013: {retryable: true, reason: 'server_error', immediate: false, answered: true},
        4009: {retryable: true, reason: 'network_error', immediate: false, answered: true},
        1009: {retryable: true, reason: 'network_error', immediate: false, answered: true},
        1005: {retryable: true, reason: 'network_error', immediate: false, answered: false},
        1006: {retryable: true, reason: 'network_error', immediate: false, answered: false},
        1015: {retryable: true, reason: 'network_error', immediate: false, answered: false},
    };
    for (const code of [1000, 1001, 1002, 1003, 1007, 1008, 1010, 1011, 1014, 4000, 4003, 4999]) {
        expect[code] = {retryable: true, reason: 'server_error', immediate: false, answered: true};
    }
    for (const [code, want] of Object.entries(expect)) {
        const got = classifyClose(Number(code));
        assert.deepEqual({retryable: got.retryable, reason: got.reason, immediate: got.immediate, answered: got.answered},
            want, `close ${code}`);
        assert.equal(typeof got.code, 'string');
    }
    // A transient cause named by the server's error frame makes even 4002 transient (an older
    // server closed 4002 when the engine was unavailable during subscribe).
    for (const cause of ['engine_unavailable', 'shutting_down', 'too_many_connections', 'rate_limited', 'internal']) {
        const got = classifyClose(4002, {code: cause});
        assert.equal(got.retryable, true, `4002 after ${cause}`);
        assert.equal(got.code, cause);
    }
    assert.equal(classifyClose(4002, {code: 'invalid_request'}).retryable, false);
    assert.equal(classifyClose(4001, {code: 'engine_unavailable'}).retryable, false, '4001 stays a refused credential');
    assert.equal(classifyClose(1013, {code: 'engine_unavailable'}).retryable, true);
});

test('every HTTP status: only 400, 401, 403, 413, 414 and 431 are final', () => {
    const final = {400: 'rejected', 401: 'credential_refused', 403: 'credential_refused', 413: 'rejected',
        414: 'rejected', 431: 'rejected'};
    for (let status = 300; status < 600; status++) {
        const got = classifyStatus(status);
        if (status in final) {
            assert.deepEqual(got, {retryable: false, reason: final[status]}, `status ${status}`);
        } else {
            assert.deepEqual(got, {retryable: true, reason: 'server_error'}, `status ${status}`);
        }
    }
});

test('by default the client never gives up: CONNECTION_LOST once per outage, CONNECTION_RESTORED when back', async (t) => {
    const server = switchableServer();
    const rec = setup(t, {transports: ['poll'], backoffBaseMs: 2, backoffMaxMs: 10, lostAfterMs: 150}, server.fetch);
    const {client, lost, restored, states, ids} = rec;
    assert.equal(client.connectionState, 'disconnected', 'not started');
    server.goUp({events: [ev(1)], cursor: 'c1'});
    client.start();
    await waitFor(() => ids().length === 1);
    assert.equal(client.connectionState, 'connected');
    assert.deepEqual(states, ['connecting', 'connected']);

    for (const outage of [1, 2]) {
        server.goDown();
        await waitFor(() => client.connectionState === 'connecting');
        await waitFor(() => lost.length === outage, {message: `CONNECTION_LOST of outage ${outage}`});
        assert.equal(client.connectionState, 'disconnected');
        assert.equal(lost[outage - 1].reason, 'unreachable');
        assert.equal(lost[outage - 1].retrying, true);
        assert.equal(lost[outage - 1].code, 'network_error');
        assert.equal(lost[outage - 1].transport, 'poll');
        const calls = server.calls;
        await sleep(200); // longer than lostAfterMs again: still once for this outage
        assert.equal(lost.length, outage, 'once per outage');
        assert.ok(server.calls > calls + 3, 'still trying');
        assert.equal(client.state, 'running');
        assert.equal(restored.length, outage - 1);
        server.goUp({events: [ev(1 + outage)], cursor: `c${1 + outage}`});
        await waitFor(() => restored.length === outage, {message: `CONNECTION_RESTORED of outage ${outage}`});
        assert.equal(client.connectionState, 'connected');
        assert.equal(restored[outage - 1].transport, 'poll');
        assert.ok(restored[outage - 1].downMs >= 150, `down ${restored[outage - 1].downMs} ms`);
        assert.ok(restored[outage - 1].attempts > 3);
    }
    assert.deepEqual(ids(), [1, 2, 3]);
    assert.deepEqual(states, ['connecting', 'connected', 'connecting', 'disconnected', 'connected',
        'connecting', 'disconnected', 'connected']);

    // A blip shorter than lostAfterMs: connecting then connected, no topic for the page.
    server.goDown();
    server.goUp({events: [ev(4)], cursor: 'c4'});
    await waitFor(() => ids().length === 4);
    assert.equal(lost.length, 2);
    assert.equal(restored.length, 2);
    assert.deepEqual(states.slice(-2), ['connecting', 'connected']);
    client.stop();
    assert.equal(client.connectionState, 'disconnected');
});

test('an app limit (maxRetries) still ends in a final CONNECTION_LOST, after the outage one', async (t) => {
    const server = switchableServer();
    const {client, lost, states} = setup(t,
        {transports: ['poll'], backoffBaseMs: 40, backoffMaxMs: 40, backoffJitter: 0, lostAfterMs: 0, maxRetries: 3},
        server.fetch);
    server.goDown();
    client.start();
    await waitFor(() => lost.length === 2);
    assert.deepEqual(lost.map((l) => [l.reason, l.retrying]), [['unreachable', true], ['retries_exhausted', false]]);
    assert.equal(client.state, 'lost');
    assert.equal(states.at(-1), 'disconnected');
    assert.equal(server.calls, 3);
});

test('a refused credential during an outage is final at once, with retrying: false', async (t) => {
    const {fake, client, lost} = setup(t, {transports: ['poll'], backoffBaseMs: 1, lostAfterMs: 0});
    fake.push(networkDown(), networkDown(), failure(401, 'token_expired', 'expired'));
    client.start();
    await waitFor(() => lost.length === 2);
    assert.deepEqual(lost.map((l) => [l.reason, l.retrying]), [['unreachable', true], ['credential_refused', false]]);
    await sleep(20);
    assert.equal(fake.calls.length, 3);
});

test('in an outage every retry starts again from the WebSocket: back on it as soon as the server returns', async (t) => {
    const rec = setup(t, {backoffBaseMs: 5, fallbackAfter: 1, climbAfterMs: 300000, random: () => 0.5});
    const {WS, ES, fake, client, ids, used} = rec;
    fake.push(networkDown(), networkDown(), networkDown(), networkDown());
    client.start();
    const ws0 = await nth(WS, 0, 'WebSocket');
    ws0.acceptRecovered();
    ws0.receive({type: 'event', cursor: 'e:1', event: ev(1)});
    ws0.refuse(); // the server goes away
    (await nth(WS, 1, 'WebSocket')).refuse(); // still away: past fallbackAfter, the next transport
    (await nth(ES, 0, 'EventSource')).error(); // SSE cannot open either (the probe finds no server), nor poll
    (await nth(WS, 2, 'WebSocket')).refuse(); // the retry starts from the WebSocket again
    (await nth(ES, 1, 'EventSource')).error();
    const ws3 = await nth(WS, 3, 'WebSocket'); // and again: the server is back
    ws3.acceptRecovered();
    assert.equal(ws3.frames('subscribe')[0].cursor, 'e:1', 'resumes from the last delivered event');
    ws3.receive({type: 'event', cursor: 'e:2', event: ev(2)});
    assert.deepEqual(ids(), [1, 2]);
    assert.deepEqual(used(), ['websocket:start', 'sse:fallback', 'poll:fallback',
        'websocket:climb', 'sse:fallback', 'poll:fallback', 'websocket:climb']);
    assert.equal(fake.callsTo('/poll').length, 2);
    assert.equal(client.transport, 'websocket');
    assert.equal(client.connectionState, 'connected');
});

test('a page load while the server is away: the retry tries the WebSocket first', async (t) => {
    const {WS, ES, fake, client, used} = setup(t, {backoffBaseMs: 5, climbAfterMs: 300000, random: () => 0.5});
    fake.push(networkDown(), networkDown());
    client.start();
    (await nth(WS, 0, 'WebSocket')).refuse();
    (await nth(ES, 0, 'EventSource')).error();
    const ws1 = await nth(WS, 1, 'WebSocket'); // after poll's backoff: nothing opened, nothing is blocked
    ws1.acceptRecovered();
    assert.equal(ws1.frames('subscribe')[0].cursor, 'c0');
    assert.deepEqual(used(), ['websocket:start', 'sse:fallback', 'poll:fallback', 'websocket:climb']);
});

test('a WebSocket blocked here (never opened, SSE opened at once) is climbed to only after climbAfterMs', async (t) => {
    const {WS, ES, client, used} = setup(t, {climbAfterMs: 300000, backoffBaseMs: 5, random: () => 0.5});
    client.start();
    (await nth(WS, 0, 'WebSocket')).refuse();
    const es0 = await nth(ES, 0, 'EventSource');
    es0.open();
    await sleep(100);
    assert.equal(WS.instances.length, 1, 'no climb at once');
    es0.error(); // SSE drops: retried on SSE, not from the blocked WebSocket
    (await nth(ES, 1, 'EventSource')).open();
    await sleep(50);
    assert.equal(WS.instances.length, 1);
    assert.equal(client.transport, 'sse');
    assert.deepEqual(used(), ['websocket:start', 'sse:fallback']);
});

test('a WebSocket that worked, then breaks while SSE opens at its first try: tried once more soon, then taken as blocked', async (t) => {
    const {WS, ES, client, used} = setup(t, {backoffBaseMs: 5, fallbackAfter: 1, climbAfterMs: 300000, random: () => 0.5});
    client.start();
    const ws0 = await nth(WS, 0, 'WebSocket');
    ws0.acceptRecovered();
    ws0.refuse(); // a proxy starts blocking WebSocket (or the server went away)
    (await nth(WS, 1, 'WebSocket')).refuse();
    (await nth(ES, 0, 'EventSource')).open(); // the server is there
    // The WebSocket has worked on this page: the server may just have been away while the client
    // stepped down. Tried again once, soon:
    (await nth(WS, 2, 'WebSocket')).refuse(); // still refused: now it is blocked here
    const es1 = await nth(ES, 1, 'EventSource');
    es1.open();
    es1.error(); // a drop of SSE: retried on SSE, not from the blocked WebSocket
    (await nth(ES, 2, 'EventSource')).open();
    await sleep(100);
    assert.equal(WS.instances.length, 3, 'no more climbs before climbAfterMs');
    assert.equal(client.transport, 'sse');
    assert.deepEqual(used(), ['websocket:start', 'sse:fallback', 'websocket:climb', 'sse:fallback']);
});

test('the server returns while the client steps down to polling: back on the WebSocket soon, not after climbAfterMs', async (t) => {
    const {WS, ES, fake, client, used} = setup(t, {backoffBaseMs: 5, fallbackAfter: 0, climbAfterMs: 300000, random: () => 0.5});
    fake.push(networkDown(), answer([], 'c1'));
    client.start();
    const ws0 = await nth(WS, 0, 'WebSocket');
    ws0.acceptRecovered();
    ws0.refuse(); // the server goes away (fallbackAfter 0: the next transport at once)
    (await nth(ES, 0, 'EventSource')).error(); // SSE never opened on this page: its probe finds no server…
    // …and the server is back just as the client reaches polling, which answers at its first try.
    const ws1 = await nth(WS, 1, 'WebSocket'); // the WebSocket worked here: tried again at once
    ws1.acceptRecovered();
    assert.equal(client.transport, 'websocket');
    assert.deepEqual(used(), ['websocket:start', 'sse:fallback', 'poll:fallback', 'websocket:climb']);
});

test('a timed climb that finds the WebSocket open again clears the mark', async (t) => {
    const {WS, ES, client, used} = setup(t, {climbAfterMs: 40, backoffBaseMs: 5, random: () => 0.5});
    client.start();
    (await nth(WS, 0, 'WebSocket')).refuse();
    (await nth(ES, 0, 'EventSource')).open();
    const ws1 = await nth(WS, 1, 'WebSocket'); // after climbAfterMs
    ws1.acceptRecovered();
    ws1.refuse(); // a drop: the WebSocket is retried (it is not blocked any more)
    (await nth(WS, 2, 'WebSocket')).acceptRecovered();
    assert.equal(ES.instances.length, 1);
    assert.deepEqual(used(), ['websocket:start', 'sse:fallback', 'websocket:climb']);
});

test('1013 and a transient 4002 before the subscribe completed: retried on the WebSocket, not left', async (t) => {
    const {WS, ES, client, lost} = setup(t, {backoffBaseMs: 5, random: () => 0.5});
    client.start();
    const ws0 = await nth(WS, 0, 'WebSocket');
    ws0.accept();
    ws0.receive({type: 'error', error: {code: 'too_many_connections', message: 'too many'}});
    ws0.serverClose(1013, 'try again later');
    const ws1 = await nth(WS, 1, 'WebSocket');
    ws1.accept();
    ws1.receive({type: 'error', error: {code: 'engine_unavailable', message: 'the event store is unavailable'}});
    ws1.serverClose(4002, 'subscribe failed');
    const ws2 = await nth(WS, 2, 'WebSocket');
    ws2.acceptRecovered();
    assert.equal(ES.instances.length, 0, 'the server answered over WebSocket: it is not blocked');
    assert.deepEqual(lost, []);
    assert.equal(client.connectionState, 'connected');
});

test('429 with Retry-After on poll: the next poll waits at least that long', async (t) => {
    const {fake, client, ids} = setup(t, {transports: ['poll'], backoffBaseMs: 1, random: () => 0});
    fake.push(failure(429, 'too_many_connections', 'busy', {'Retry-After': '1'}), answer([ev(1)], 'c1'));
    client.start();
    await waitFor(() => ids().length === 1, {timeout: 5000});
    const gap = fake.calls[1].time - fake.calls[0].time;
    assert.ok(gap >= 995, `waited ${gap} ms for Retry-After: 1`);
});

test('1012 (node draining): 200 clients reconnect spread over reconnectSpreadMs, not in one burst', async (t) => {
    const Fake = fakeWebSocket();
    const WS = class extends Fake {
        constructor(url) {
            super(url);
            this.createdAt = Date.now();
        }
    };
    const clients = Array.from({length: 200}, () => createClient(CONFIG, {WebSocket: WS, transports: ['websocket']}).start());
    t.after(() => clients.forEach((c) => c.stop()));
    await waitFor(() => WS.instances.length === 200);
    for (const ws of [...WS.instances]) {
        ws.acceptRecovered();
    }
    const drained = Date.now();
    const times = [];
    for (const ws of WS.instances.slice(0, 200)) {
        ws.serverClose(1012, 'server draining');
    }
    await waitFor(() => WS.instances.length === 400, {timeout: 5000, message: 'every client reconnects'});
    for (const ws of WS.instances.slice(200)) {
        times.push(ws.createdAt - drained);
    }
    const first100 = times.filter((ms) => ms < 100).length;
    t.diagnostic(`reconnects in the first 100 ms: ${first100} of 200; last after ${Math.max(...times)} ms`);
    assert.ok(first100 < 100, `${first100} of 200 clients reconnected in the first 100 ms`);
    assert.ok(times.filter((ms) => ms >= 500).length > 40, 'the second half of the window is used too');
});

// Unit tests of the client against a scripted fetch (no server needed).
import {test, mock} from 'node:test';
import assert from 'node:assert/strict';

import {createClient, EVENT, CONNECTION_LOST, RECOVERY_FAILED, RealtimeError} from '../realtime.js';
import {FakeFetch, answer, ev, failure, networkDown} from '../test-support/fake-fetch.mjs';
import {waitFor, sleep} from '../test-support/wait.mjs';

const CONFIG = Object.freeze({
    url: 'http://realtime.invalid',
    user: 42,
    usertoken: 'UT',
    cursor: 'c0',
    expires: 4102444800,
    subscriptions: [
        {channel: 'h1', token: 't1', contextid: 1, component: 'mod_x', area: 'a', itemid: 0, channeldetails: ''},
        {channel: 'h2', token: 't2', contextid: 1, component: 'mod_x', area: 'b', itemid: 0, channeldetails: ''},
    ],
    transports: ['poll'],
});

/** A client on a fake fetch, recording what it publishes; stopped after the test. */
function setup(t, steps, options = {}) {
    const fake = new FakeFetch(steps);
    const client = createClient(CONFIG, {fetch: fake.fetch, ...options});
    const events = [];
    const lost = [];
    const recoveries = [];
    const order = [];
    client.subscribe(EVENT, (e) => { events.push(e); order.push(`event:${e.id}`); });
    client.subscribe(CONNECTION_LOST, (e) => { lost.push(e); order.push('lost'); });
    client.subscribe(RECOVERY_FAILED, (e) => { recoveries.push(e); order.push('recovery'); });
    t.after(() => client.stop());
    return {fake, client, events, lost, recoveries, order, ids: () => events.map((e) => e.id)};
}

test('first poll sends the page cursor, token and subscriptions; next poll sends the answer cursor', async (t) => {
    const {fake, client, events} = setup(t, [answer([ev(1)], 'c1')]);
    assert.equal(client.state, 'idle');
    assert.equal(fake.calls.length, 0, 'nothing happens before start()');
    client.start();
    await waitFor(() => fake.calls.length === 2);
    const [first, second] = fake.calls;
    assert.equal(first.url, 'http://realtime.invalid/poll');
    assert.equal(first.headers.Authorization, 'Bearer UT');
    assert.equal(first.headers['Content-Type'], 'application/json');
    // The first poll of a run asks for an answer at once (wait: false); the next ones wait.
    assert.deepEqual(first.body, {subscriptions: [{channel: 'h1', token: 't1'}, {channel: 'h2', token: 't2'}], cursor: 'c0',
        wait: false});
    assert.equal(second.body.cursor, 'c1');
    assert.equal(second.body.wait, undefined);
    assert.deepEqual(events, [ev(1)]);
    assert.equal(client.cursor, 'c1');
    assert.equal(fake.maxInFlight, 1);
});

test('events are published in id order, each id once, across batches', async (t) => {
    const {fake, client, ids} = setup(t, [
        answer([ev(3), ev(1), ev(2), ev(1)], 'c1'),
        answer([ev(2), ev(3), ev(4)], 'c2'),
        answer([ev(4)], 'c3'),
        answer([ev(6), ev(5)], 'c4'),
    ]);
    client.start();
    await waitFor(() => fake.calls.length === 5);
    assert.deepEqual(ids(), [1, 2, 3, 4, 5, 6]);
    assert.equal(fake.maxInFlight, 1, 'one poll in flight at a time');
});

test('recovered:false fires RECOVERY_FAILED first, adopts the cursor and resets the high-water mark', async (t) => {
    const {fake, client, ids, recoveries, order} = setup(t, [
        answer([ev(5)], 'c1'),
        answer([ev(1), ev(2)], 'fresh', false),
        answer([ev(2), ev(3)], 'c3'),
    ]);
    client.start();
    await waitFor(() => fake.calls.length === 4);
    assert.deepEqual(ids(), [5, 1, 2, 3]);
    assert.deepEqual(order, ['event:5', 'recovery', 'event:1', 'event:2', 'event:3']);
    assert.equal(recoveries.length, 1);
    assert.equal(recoveries[0].cursor, 'fresh');
    assert.equal(fake.calls[2].body.cursor, 'fresh');
});

for (const [status, code] of [[401, 'token_expired'], [403, 'token_invalid']]) {
    test(`${status} on poll: CONNECTION_LOST credential_refused at once, polling stops`, async (t) => {
        const {fake, client, lost} = setup(t, [answer([ev(1)], 'c1'), failure(status, code, 'no way')],
            {backoffBaseMs: 1});
        client.start();
        await waitFor(() => lost.length === 1);
        assert.deepEqual(lost[0], {reason: 'credential_refused', status, code, message: 'no way', retrying: false, transport: 'poll'});
        await sleep(50);
        assert.equal(fake.calls.length, 2);
        assert.equal(client.state, 'lost');
        client.start();
        await sleep(20);
        assert.equal(fake.calls.length, 2, 'start() after lost does nothing');
        assert.equal(lost.length, 1);
    });
}

test('400 on poll is terminal: reason rejected', async (t) => {
    const {fake, client, lost} = setup(t, [failure(400, 'bad_request', 'cursor is malformed')]);
    client.start();
    await waitFor(() => lost.length === 1);
    assert.deepEqual(lost[0], {reason: 'rejected', status: 400, code: 'bad_request', message: 'cursor is malformed', retrying: false, transport: 'poll'});
    await sleep(30);
    assert.equal(fake.calls.length, 1);
});

test('network errors, 5xx, 429 and garbage answers are retried; success resets the failure count', async (t) => {
    const {fake, client, ids, lost} = setup(t, [
        networkDown(),
        failure(503, 'engine_down'),
        answer([ev(1)], 'c1'),
        failure(429, 'rate_limited', 'slow down', {'Retry-After': '0'}),
        {status: 502, text: '<html>bad gateway</html>'},
        {status: 200, text: 'not json'},
        answer([ev(2)], 'c2'),
    ], {backoffBaseMs: 1, backoffMaxMs: 2, maxRetries: 4});
    client.start();
    await waitFor(() => fake.calls.length === 8);
    assert.deepEqual(ids(), [1, 2]);
    assert.deepEqual(lost, []);
    // A failed poll is retried with the same cursor.
    assert.deepEqual(fake.calls.map((c) => c.body.cursor), ['c0', 'c0', 'c0', 'c1', 'c1', 'c1', 'c1', 'c2']);
});

test('after maxRetries consecutive failures: CONNECTION_LOST retries_exhausted once, then silence', async (t) => {
    const {fake, client, lost} = setup(t, [networkDown(), networkDown(), failure(503, 'engine_down', 'down'), networkDown()],
        {backoffBaseMs: 1, backoffMaxMs: 4, maxRetries: 3});
    client.start();
    await waitFor(() => lost.length === 1);
    assert.equal(lost[0].reason, 'retries_exhausted');
    assert.equal(lost[0].status, 503);
    assert.equal(lost[0].code, 'engine_down');
    assert.match(lost[0].message, /3 consecutive failures/);
    await sleep(50);
    assert.equal(fake.calls.length, 3);
    assert.equal(lost.length, 1);
});

test('backoff is exponential with ±50 % jitter, capped at backoffMaxMs', async (t) => {
    const randoms = [];
    const {fake, client, lost} = setup(t, Array.from({length: 5}, networkDown), {
        backoffBaseMs: 20, backoffMaxMs: 50, maxRetries: 5,
        random: () => { randoms.push(1); return 0.999; },
    });
    client.start();
    await waitFor(() => lost.length === 1);
    const gaps = fake.calls.slice(1).map((c, i) => c.time - fake.calls[i].time);
    // nominal 20, 40, 50, 50; random ~1 → ×1.5; timers may fire a little late, never early.
    const delays = [30, 60, 75, 75];
    gaps.forEach((gap, i) => assert.ok(gap >= delays[i] - 2 && gap < delays[i] + 300, `gap ${i} = ${gap}, want ${delays[i]}`));
    assert.equal(randoms.length, 4);
});

test('backoffJitter 1 with random() = 0 retries at once', async (t) => {
    const {fake, client, ids} = setup(t, [networkDown(), networkDown(), answer([ev(9)], 'c9')],
        {backoffBaseMs: 10000, backoffMaxMs: 10000, backoffJitter: 1, random: () => 0});
    client.start();
    await waitFor(() => ids().length === 1, {timeout: 1000});
    assert.equal(fake.callsTo('/poll').length >= 3, true);
});

test('a poll that hangs past pollTimeoutMs is aborted and retried', async (t) => {
    const {fake, client, ids} = setup(t, [], {pollTimeoutMs: 40, backoffBaseMs: 1});
    client.start();
    await waitFor(() => fake.calls.length === 2, {timeout: 2000});
    assert.equal(fake.aborted, 1);
    assert.equal(fake.calls[1].body.cursor, 'c0');
    fake.push(answer([ev(1)], 'c1'));
    await waitFor(() => ids().length === 1);
});

test('a throwing listener does not stop other listeners nor the poll loop', async (t) => {
    const errors = mock.method(console, 'error', () => {});
    t.after(() => errors.mock.restore());
    const {fake, client, ids} = setup(t, [answer([ev(1), ev(2)], 'c1'), answer([ev(3)], 'c2')]);
    const seen = [];
    client.subscribe(EVENT, () => { throw new Error('listener bug'); });
    client.subscribe(EVENT, (e) => seen.push(e.id));
    client.start();
    await waitFor(() => fake.calls.length === 3);
    assert.deepEqual(ids(), [1, 2, 3]);
    assert.deepEqual(seen, [1, 2, 3]);
    assert.equal(errors.mock.callCount(), 3);
});

test('unsubscribe stops delivery to that listener only', async (t) => {
    const {fake, client, ids} = setup(t, [answer([ev(1)], 'c1')]);
    const seen = [];
    const off = client.subscribe(EVENT, (e) => { seen.push(e.id); off(); });
    client.start();
    await waitFor(() => fake.calls.length === 2);
    fake.push(answer([ev(2)], 'c2'));
    await waitFor(() => fake.calls.length === 3);
    assert.deepEqual(seen, [1]);
    assert.deepEqual(ids(), [1, 2]);
});

test('stop() aborts the poll in flight; start() resumes from the cursor', async (t) => {
    const {fake, client, ids} = setup(t, [answer([ev(1)], 'c1')]);
    client.start();
    await waitFor(() => fake.calls.length === 2);
    client.stop();
    assert.equal(client.state, 'stopped');
    await waitFor(() => fake.aborted === 1);
    fake.push(answer([ev(2)], 'late'));
    await sleep(20);
    assert.deepEqual(ids(), [1], 'nothing published after stop');
    client.start();
    await waitFor(() => ids().length === 2);
    assert.equal(fake.calls[2].body.cursor, 'c1');
    assert.equal(fake.maxInFlight, 1);
});

test('stop() from a listener mid-batch: rest unpublished, cursor kept, replay deduplicated on restart', async (t) => {
    const {fake, client, ids} = setup(t, [answer([ev(1), ev(2), ev(3)], 'c3')]);
    const off = client.subscribe(EVENT, (e) => { if (e.id === 2) { client.stop(); off(); } });
    client.start();
    await waitFor(() => ids().length === 2);
    await sleep(20);
    assert.deepEqual(ids(), [1, 2]);
    assert.equal(client.cursor, 'c0');
    fake.push(answer([ev(1), ev(2), ev(3)], 'c3'));
    client.start();
    await waitFor(() => ids().length === 3);
    assert.deepEqual(ids(), [1, 2, 3]);
});

test('stop() during a backoff wait cancels the retry', async (t) => {
    const {fake, client} = setup(t, [networkDown()], {backoffBaseMs: 30, random: () => 1});
    client.start();
    await waitFor(() => fake.calls.length === 1);
    await sleep(5);
    client.stop();
    await sleep(60);
    assert.equal(fake.calls.length, 1);
});

test('sendToServer: answer, server error, network error, bad argument', async (t) => {
    const fake = new FakeFetch([
        {status: 200, json: {response: {ok: 1}}},
        failure(502, 'webhook_failed', 'the application failed'),
        networkDown(),
        {status: 404, text: 'not here'},
    ]);
    const client = createClient(CONFIG, {fetch: fake.fetch});
    assert.deepEqual(await client.sendToServer('mod_echo', {a: [1, 2]}), {ok: 1});
    assert.equal(fake.calls[0].url, 'http://realtime.invalid/send');
    assert.equal(fake.calls[0].headers.Authorization, 'Bearer UT');
    assert.deepEqual(fake.calls[0].body, {component: 'mod_echo', payload: {a: [1, 2]}});
    await assert.rejects(client.sendToServer('mod_echo', 1),
        (err) => err instanceof RealtimeError && err instanceof Error && err.code === 'webhook_failed'
            && err.status === 502 && err.message === 'the application failed');
    await assert.rejects(client.sendToServer('mod_echo', 1),
        (err) => err.code === 'network_error' && err.status === 0);
    await assert.rejects(client.sendToServer('mod_echo'),
        (err) => err.code === 'http_404' && err.status === 404 && err.message === 'not here');
    assert.equal(fake.calls[3].body.payload, null);
    await assert.rejects(client.sendToServer('', 1), (err) => err.code === 'invalid_argument');
    await assert.rejects(client.sendToServer('mod_echo', 1, {noFallback: true}),
        (err) => err instanceof RealtimeError && err.code === 'no_bidirectional_transport');
    assert.equal(fake.calls.length, 4, 'noFallback without an open WebSocket sends nothing');
    assert.equal(fake.callsTo('/poll').length, 0, 'sending does not start polling');
});

test('config validation and transport choice', () => {
    const none = {WebSocket: null, EventSource: null};
    assert.throws(() => createClient({}), TypeError);
    assert.throws(() => createClient({...CONFIG, subscriptions: undefined}), TypeError);
    assert.throws(() => createClient({...CONFIG, transports: ['websocket']}, none), (err) => err.code === 'no_transport');
    assert.throws(() => createClient({...CONFIG, transports: ['carrier_pigeon']}), (err) => err.code === 'no_transport');
    assert.equal(createClient({...CONFIG, transports: ['websocket', 'poll']}, none).transport, 'poll');
    const fallback = createClient({...CONFIG, transports: undefined}, none);
    assert.equal(fallback.transport, 'poll');
    assert.deepEqual(fallback.transports, ['poll']);
    const all = createClient({...CONFIG, transports: undefined}, {WebSocket: class {}, EventSource: class {}});
    assert.deepEqual(all.transports, ['websocket', 'sse', 'poll'], 'the default order');
    assert.equal(all.transport, 'websocket');
    const chosen = createClient(CONFIG, {transports: ['sse', 'poll', 'sse'], WebSocket: class {}, EventSource: class {}});
    assert.deepEqual(chosen.transports, ['sse', 'poll'], 'the option overrides the page config; duplicates go');
});

test('a trailing slash in url is ignored', async (t) => {
    const fake = new FakeFetch([{status: 200, json: {response: null}}]);
    const client = createClient({...CONFIG, url: 'http://realtime.invalid/'}, {fetch: fake.fetch});
    await client.sendToServer('mod_x', {});
    assert.equal(fake.calls[0].url, 'http://realtime.invalid/send');
});

test('fast answers without events space polls by shortPollDelayMs; answers with events do not', async (t) => {
    const {fake, client, ids} = setup(t, [
        answer([ev(1)], 'c1'),
        answer([], 'c1'),
        answer([], 'c1'),
        answer([ev(2)], 'c2'),
    ], {shortPollDelayMs: 60});
    client.start();
    await waitFor(() => fake.calls.length === 5);
    const gaps = fake.calls.slice(1).map((c, i) => c.time - fake.calls[i].time);
    assert.ok(gaps[0] < 40, `after events: ${gaps[0]} ms`);
    assert.ok(gaps[1] >= 55 && gaps[2] >= 55, `after empty answers: ${gaps[1]}, ${gaps[2]} ms`);
    assert.ok(gaps[3] < 40, `after events: ${gaps[3]} ms`);
    assert.deepEqual(ids(), [1, 2]);
});

test('stop() during the short-poll pause: no further poll', async (t) => {
    // The first answer (wait: false) is followed at once by a waiting poll; the pause comes after that.
    const {fake, client} = setup(t, [answer([], 'c1'), answer([], 'c2')], {shortPollDelayMs: 80});
    client.start();
    await waitFor(() => fake.calls.length === 2);
    await sleep(10);
    client.stop();
    await sleep(120);
    assert.equal(fake.calls.length, 2);
    client.start();
    await waitFor(() => fake.calls.length === 3);
    assert.equal(fake.calls[2].body.cursor, 'c2');
});

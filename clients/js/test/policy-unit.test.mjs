// Unit tests of the transport policy (fallback, backoff, climbing back, forcing) and of the
// WebSocket and SSE transports, against scripted fakes: no server, no real timing beyond a
// few tens of milliseconds.
import {test} from 'node:test';
import assert from 'node:assert/strict';

import {createClient, EVENT, CONNECTION_LOST, RECOVERY_FAILED, TRANSPORT_CHANGED} from '../realtime.js';
import {FakeFetch, answer, ev, failure, networkDown} from '../test-support/fake-fetch.mjs';
import {fakeWebSocket, fakeEventSource} from '../test-support/fake-transports.mjs';
import {waitFor, sleep} from '../test-support/wait.mjs';

const CONFIG = Object.freeze({
    url: 'http://realtime.invalid',
    usertoken: 'UT',
    cursor: 'c0',
    subscriptions: [{channel: 'h1', token: 't1', area: 'a'}, {channel: 'h2', token: 't2', area: 'b'}],
    transports: ['websocket', 'sse', 'poll'],
});
const REFS = [{channel: 'h1', token: 't1'}, {channel: 'h2', token: 't2'}];

/** A client on fake WebSocket, EventSource and fetch; records what it publishes. */
function setup(t, options = {}, steps = []) {
    const WS = fakeWebSocket();
    const ES = fakeEventSource();
    const fake = new FakeFetch(steps);
    const client = createClient(CONFIG, {
        WebSocket: WS, EventSource: ES, fetch: fake.fetch,
        backoffBaseMs: 60000, random: () => 0.999, climbAfterMs: 0, ...options,
    });
    const rec = {WS, ES, fake, client, events: [], lost: [], recoveries: [], changes: []};
    rec.ids = () => rec.events.map((e) => e.id);
    rec.used = () => rec.changes.map((c) => `${c.transport}:${c.reason}`);
    client.subscribe(EVENT, (e) => rec.events.push(e));
    client.subscribe(CONNECTION_LOST, (e) => rec.lost.push(e));
    client.subscribe(RECOVERY_FAILED, (e) => rec.recoveries.push(e));
    client.subscribe(TRANSPORT_CHANGED, (e) => rec.changes.push(e));
    t.after(() => client.stop());
    return rec;
}

/** The n-th socket, once the client made it. */
async function socket(WS, n) {
    await waitFor(() => WS.instances.length > n, {timeout: 2000, message: `WebSocket #${n}`});
    return WS.instances[n];
}

/** The n-th event source, once the client made it. */
async function source(ES, n) {
    await waitFor(() => ES.instances.length > n, {timeout: 2000, message: `EventSource #${n}`});
    return ES.instances[n];
}

const wsEvent = (id, epoch = 'e') => ({type: 'event', cursor: `${epoch}:${id}`, event: ev(id)});

test('WebSocket: subscribe frame with token, subscriptions and cursor; events once, in order', async (t) => {
    const {WS, client, ids, changes} = setup(t);
    assert.equal(client.transport, 'websocket');
    client.start();
    const ws = await socket(WS, 0);
    assert.equal(ws.url, 'ws://realtime.invalid/ws');
    ws.accept();
    assert.deepEqual(ws.sent, [{type: 'subscribe', usertoken: 'UT', subscriptions: REFS, cursor: 'c0'}]);
    ws.receive({type: 'recovered', cursor: 'c0'});
    ws.receive(wsEvent(1));
    ws.receive(wsEvent(2));
    ws.receive(wsEvent(2));
    ws.receive({type: 'pong'});
    ws.receive({type: 'error', error: {code: 'invalid_request', message: 'a bad frame; the connection stays'}});
    ws.receive(wsEvent(3));
    assert.deepEqual(ids(), [1, 2, 3]);
    assert.equal(client.cursor, 'e:3');
    assert.deepEqual(changes, [{transport: 'websocket', previous: null, reason: 'start'}]);
    assert.equal(WS.instances.length, 1);
    const secure = createClient({...CONFIG, url: 'https://rt.example/base/'}, {WebSocket: WS}).start();
    secure.stop();
    assert.equal(WS.instances[1].url, 'wss://rt.example/base/ws');
});

test('a transport that fails to open is left for the next at once; each resumes from the cursor', async (t) => {
    const {WS, ES, fake, client, ids, used} = setup(t, {}, [networkDown(), answer([ev(1)], 'c1')]);
    const started = Date.now();
    client.start();
    (await socket(WS, 0)).refuse();
    const es = await source(ES, 0);
    assert.equal(es.url, 'http://realtime.invalid/sse?usertoken=UT&channel=h1&token=t1&channel=h2&token=t2&cursor=c0');
    es.error(); // before it opened: the client asks why with a plain GET (here: the network is down)
    await waitFor(() => ids().length === 1);
    assert.ok(Date.now() - started < 1000, 'no backoff on the way (backoffBaseMs is 60 s)');
    assert.equal(fake.calls[0].url, es.url, 'the status probe GETs the same URL');
    assert.deepEqual(fake.calls[1].body, {subscriptions: REFS, cursor: 'c0', wait: false});
    assert.ok(es.closed, 'the EventSource was closed, not left to retry by itself');
    assert.deepEqual(used(), ['websocket:start', 'sse:fallback', 'poll:fallback']);
    assert.equal(client.transport, 'poll');
    assert.equal(WS.instances.length, 1);
    assert.equal(ES.instances.length, 1);
});

test('a WebSocket constructor that throws (CSP, bad URL) counts as failing to open', async (t) => {
    const ES = fakeEventSource();
    const client = createClient(CONFIG, {
        WebSocket: class { constructor() { throw new SyntaxError('blocked'); } }, EventSource: ES,
    });
    t.after(() => client.stop());
    client.start();
    await source(ES, 0);
    assert.equal(client.transport, 'sse');
});

test('a handshake slower than openTimeoutMs counts as failing to open', async (t) => {
    const {WS, ES, client, used} = setup(t, {openTimeoutMs: 40});
    client.start();
    const ws = await socket(WS, 0);
    ws.accept(); // but never `recovered`
    const es = await source(ES, 0);
    assert.deepEqual(ws.closedByClient, {code: 1000});
    assert.deepEqual(used(), ['websocket:start', 'sse:fallback']);
    await sleep(80);
    assert.equal(client.transport, 'poll', 'an EventSource that never opens is given up too');
    assert.ok(es.closed);
});

test('a transport that worked and drops is retried with backoff, then the client falls back', async (t) => {
    const {WS, ES, client, ids, used} = setup(t, {backoffBaseMs: 30, fallbackAfter: 2});
    client.start();
    const ws0 = await socket(WS, 0);
    ws0.acceptRecovered();
    ws0.receive(wsEvent(1));
    let dropped = Date.now();
    ws0.refuse(); // the network drops
    const ws1 = await socket(WS, 1);
    assert.ok(Date.now() - dropped >= 25, `first retry after ~30 ms, was ${Date.now() - dropped}`);
    ws1.accept();
    assert.equal(ws1.frames('subscribe')[0].cursor, 'e:1', 'resumes from the last delivered event');
    dropped = Date.now();
    ws1.refuse(); // reconnect failed: failure 2
    const ws2 = await socket(WS, 2);
    assert.ok(Date.now() - dropped >= 55, `second retry after ~60 ms, was ${Date.now() - dropped}`);
    ws2.refuse(); // failure 3 > fallbackAfter: next transport, at once
    const es = await source(ES, 0);
    assert.equal(es.query.get('cursor'), 'e:1');
    es.open();
    es.message(ev(2), 'e:2');
    assert.deepEqual(ids(), [1, 2]);
    assert.deepEqual(used(), ['websocket:start', 'sse:fallback']);
    assert.equal(WS.instances.length, 3);
});

test('close 4001 and 4002: CONNECTION_LOST at once with the reason of the error frame, nothing else tried', async (t) => {
    for (const [code, reason, error] of [
        [4001, 'credential_refused', {code: 'token_expired', message: 'the token has expired'}],
        [4002, 'rejected', {code: 'invalid_request', message: 'bad subscribe frame'}],
    ]) {
        const {WS, ES, fake, client, lost} = setup(t);
        client.start();
        const ws = await socket(WS, 0);
        ws.accept();
        ws.receive({type: 'error', error});
        ws.serverClose(code, 'refused');
        assert.deepEqual(lost, [{reason, code: error.code, message: error.message, retrying: false, transport: 'websocket'}]);
        await sleep(30);
        assert.equal(client.state, 'lost');
        assert.equal(WS.instances.length + ES.instances.length + fake.calls.length, 1);
    }
});

test('close 1012 (draining) and 4008 (slow consumer) reconnect at once; 4009 after a backoff', async (t) => {
    const {WS, client, ids} = setup(t, {backoffBaseMs: 40});
    client.start();
    const ws0 = await socket(WS, 0);
    ws0.acceptRecovered();
    ws0.receive(wsEvent(1));
    ws0.serverClose(1012, 'server draining');
    const ws1 = await socket(WS, 1);
    ws1.acceptRecovered();
    assert.equal(ws1.frames('subscribe')[0].cursor, 'e:1');
    ws1.receive(wsEvent(2));
    ws1.serverClose(4008, 'slow consumer');
    const ws2 = await socket(WS, 2);
    ws2.acceptRecovered();
    assert.equal(ws2.frames('subscribe')[0].cursor, 'e:2');
    const closed = Date.now();
    ws2.serverClose(4009, 'no heartbeat');
    const ws3 = await socket(WS, 3);
    assert.ok(Date.now() - closed >= 35, `4009 backs off, reconnected after ${Date.now() - closed} ms`);
    ws3.acceptRecovered();
    ws3.receive(wsEvent(3));
    assert.deepEqual(ids(), [1, 2, 3]);
    assert.equal(client.transport, 'websocket');
});

test('WebSocket heartbeat: pings every pingIntervalMs; silence for deadAfterMs ends the connection', async (t) => {
    const {WS, client} = setup(t, {pingIntervalMs: 15, deadAfterMs: 80, backoffBaseMs: 1, random: () => 0});
    client.start();
    const ws0 = await socket(WS, 0);
    ws0.acceptRecovered();
    let answered = 0;
    const ponger = setInterval(() => {
        for (; answered < ws0.frames('ping').length; answered++) {
            ws0.receive({type: 'pong'});
        }
    }, 5);
    await sleep(200);
    clearInterval(ponger);
    assert.ok(answered >= 5, `${answered} pings answered`);
    assert.equal(WS.instances.length, 1, 'a connection that answers pings stays');
    const quiet = Date.now();
    const ws1 = await socket(WS, 1);
    assert.ok(Date.now() - quiet >= 40, 'given up only after the silence');
    assert.deepEqual(ws0.closedByClient, {code: 1000});
    assert.equal(client.transport, 'websocket', 'it had worked: reconnected, not abandoned');
    ws1.acceptRecovered();
});

test('SSE: events by lastEventId, not_recovered, and a drop resumes from the client cursor', async (t) => {
    const {ES, client, ids, recoveries} = setup(t, {transports: ['sse', 'poll'], backoffBaseMs: 10});
    client.start();
    const es0 = await source(ES, 0);
    es0.open();
    es0.message(ev(1), 'e:1');
    es0.message(ev(2), 'e:2');
    es0.message({cursor: 'f:5'}, 'f:5', 'not_recovered');
    es0.message(ev(6), 'f:6');
    es0.message(ev(6), 'f:6');
    assert.deepEqual(ids(), [1, 2, 6]);
    assert.equal(recoveries.length, 1);
    assert.equal(recoveries[0].cursor, 'f:5');
    assert.equal(client.cursor, 'f:6');
    es0.error(); // after it opened: a drop
    assert.ok(es0.closed, 'closed at once: the client, not the EventSource, reconnects');
    const es1 = await source(ES, 1);
    assert.equal(es1.query.get('cursor'), 'f:6');
    assert.deepEqual(es1.query.getAll('channel'), ['h1', 'h2']);
    assert.equal(client.transport, 'sse');
});

test('SSE that fails before opening: the status of a GET decides', async (t) => {
    const cases = [
        [failure(401, 'token_expired', 'expired'), {reason: 'credential_refused', status: 401, code: 'token_expired'}],
        [failure(403, 'token_invalid', 'forged'), {reason: 'credential_refused', status: 403, code: 'token_invalid'}],
        [failure(400, 'invalid_cursor', 'bad cursor'), {reason: 'rejected', status: 400, code: 'invalid_cursor'}],
        [{status: 200, text: 'retry: 1000\n\n', headers: {'Content-Type': 'text/event-stream'}}, 'poll'],
        [failure(503, 'shutting_down'), 'sse'],
        [failure(429, 'too_many_connections', 'busy', {'Retry-After': '0'}), 'sse'],
        [failure(404, 'not_found'), 'sse'],
    ];
    for (const [step, expected] of cases) {
        const {ES, client, lost, fake} = setup(t, {transports: ['sse', 'poll'], backoffBaseMs: 1}, [step]);
        client.start();
        (await source(ES, 0)).error();
        if (expected === 'poll') {
            await waitFor(() => fake.callsTo('/poll').length === 1);
            assert.deepEqual(lost, []);
        } else if (expected === 'sse') {
            // The server answered (a transient refusal): SSE works here; retried on SSE after a backoff.
            await source(ES, 1);
            assert.equal(client.transport, 'sse');
            assert.deepEqual(lost, []);
            assert.equal(fake.callsTo('/poll').length, 0);
        } else {
            await waitFor(() => lost.length === 1);
            assert.deepEqual({...lost[0], message: undefined}, {...expected, message: undefined, retrying: false, transport: 'sse'});
            await sleep(20);
            assert.equal(fake.calls.length, 1, 'no poll after a refusal');
        }
        client.stop();
    }
});

test('climbing back: after climbAfterMs on a worse transport, the best is tried again from the cursor', async (t) => {
    const {WS, ES, client, ids, used} = setup(t, {climbAfterMs: 60});
    client.start();
    (await socket(WS, 0)).refuse();
    const es0 = await source(ES, 0);
    es0.open();
    es0.message(ev(1), 'e:1');
    const ws1 = await socket(WS, 1);
    assert.ok(es0.closed);
    ws1.accept();
    assert.equal(ws1.frames('subscribe')[0].cursor, 'e:1');
    ws1.refuse(); // still blocked: down again at once
    const es1 = await source(ES, 1);
    assert.equal(es1.query.get('cursor'), 'e:1');
    es1.open();
    const ws2 = await socket(WS, 2); // and up again after climbAfterMs
    ws2.acceptRecovered();
    ws2.receive(wsEvent(2));
    assert.deepEqual(ids(), [1, 2]);
    assert.deepEqual(used(), ['websocket:start', 'sse:fallback', 'websocket:climb', 'sse:fallback', 'websocket:climb']);
    await sleep(100);
    assert.equal(WS.instances.length, 3, 'on the best transport: no more climbing');
});

test('force(): only that transport, from the cursor, no fallback nor climbing; force(null) returns to the best', async (t) => {
    const {WS, ES, fake, client, ids, used} = setup(t, {climbAfterMs: 30, backoffBaseMs: 5},
        [answer([ev(2)], 'p2'), networkDown(), networkDown(), answer([ev(3)], 'p3')]);
    client.start();
    const ws0 = await socket(WS, 0);
    ws0.acceptRecovered();
    ws0.receive(wsEvent(1));
    assert.equal(client.force('poll'), client);
    assert.equal(client.forced, 'poll');
    assert.deepEqual(ws0.closedByClient, {code: 1000});
    await waitFor(() => ids().length === 3);
    assert.equal(fake.calls[0].body.cursor, 'e:1');
    assert.equal(fake.calls[3].body.cursor, 'p2', 'failed polls retried on poll, no fallback');
    await sleep(60);
    assert.equal(client.transport, 'poll', 'no climbing while forced');
    assert.throws(() => client.force('pigeon'), (err) => err.code === 'no_transport');
    client.force('sse');
    const es0 = await source(ES, 0);
    assert.equal(es0.query.get('cursor'), 'p3');
    client.force(null);
    assert.equal(client.forced, null);
    const ws1 = await socket(WS, 1);
    assert.ok(es0.closed);
    ws1.acceptRecovered();
    assert.equal(ws1.frames('subscribe')[0].cursor, 'p3');
    assert.deepEqual(used(), ['websocket:start', 'poll:forced', 'sse:forced', 'websocket:forced']);
    assert.deepEqual(ids(), [1, 2, 3]);
});

test('a forced transport that never opens is retried, then CONNECTION_LOST (it is the only one)', async (t) => {
    const {ES, fake, client, lost} = setup(t, {backoffBaseMs: 2, maxRetries: 3, openTimeoutMs: 10000},
        [networkDown(), networkDown(), networkDown()]);
    client.force('sse').start();
    for (let i = 0; i < 3; i++) {
        (await source(ES, i)).error();
    }
    await waitFor(() => lost.length === 1);
    assert.equal(lost[0].reason, 'retries_exhausted');
    assert.equal(lost[0].transport, 'sse');
    assert.equal(fake.callsTo('/poll').length, 0);
});

test('force() before start() picks the transport start() opens; after stop(), the one it reopens', async (t) => {
    const {WS, ES, client, used} = setup(t);
    client.force('sse');
    assert.equal(client.transport, 'sse');
    assert.equal(ES.instances.length, 0, 'nothing opens before start()');
    client.start();
    const es0 = await source(ES, 0);
    es0.open();
    es0.message(ev(1), 'e:1');
    client.stop();
    client.force('websocket');
    await sleep(10);
    assert.equal(WS.instances.length, 0, 'nothing opens while stopped');
    client.start();
    const ws0 = await socket(WS, 0);
    ws0.accept();
    assert.equal(ws0.frames('subscribe')[0].cursor, 'e:1');
    assert.deepEqual(used(), ['sse:forced', 'websocket:forced']);
});

test('sendToServer over the WebSocket: replies matched by id in any order; errors; abort', async (t) => {
    const {WS, fake, client} = setup(t, {}, [{status: 200, json: {response: 'over http'}}]);
    client.start();
    const ws = await socket(WS, 0);
    // Not open yet: HTTP, or a clear refusal with noFallback.
    await assert.rejects(client.sendToServer('mod_x', 1, {noFallback: true}),
        (err) => err.code === 'no_bidirectional_transport');
    assert.equal(await client.sendToServer('mod_x', 1), 'over http');
    assert.equal(fake.callsTo('/send').length, 1);
    ws.acceptRecovered();
    const a = client.sendToServer('mod_x', {n: 'a'}, {noFallback: true});
    const b = client.sendToServer('mod_x', {n: 'b'});
    const c = client.sendToServer('mod_x', undefined);
    const aborter = new AbortController();
    const d = client.sendToServer('mod_x', {n: 'd'}, {signal: aborter.signal});
    const sends = ws.frames('send');
    assert.deepEqual(sends.map((f) => f.payload), [{n: 'a'}, {n: 'b'}, null, {n: 'd'}]);
    assert.equal(new Set(sends.map((f) => f.id)).size, 4, 'ids are distinct');
    assert.deepEqual(sends.map((f) => f.component), ['mod_x', 'mod_x', 'mod_x', 'mod_x']);
    aborter.abort();
    ws.receive({type: 'reply', id: sends[2].id, error: {code: 'webhook_failed', message: 'the application failed'}});
    ws.receive({type: 'reply', id: sends[1].id, response: 'B'});
    ws.receive({type: 'reply', id: sends[3].id, response: 'too late'});
    ws.receive({type: 'reply', id: sends[0].id, response: {answer: 'A'}});
    assert.deepEqual(await a, {answer: 'A'});
    assert.equal(await b, 'B');
    await assert.rejects(c, (err) => err.code === 'webhook_failed' && err.message === 'the application failed');
    await assert.rejects(d, (err) => err.code === 'aborted');
    assert.equal(fake.callsTo('/send').length, 1, 'nothing more over HTTP');
});

test('a send waiting when the socket drops is rejected with connection_lost and not resent', async (t) => {
    const {WS, client} = setup(t, {backoffBaseMs: 1});
    client.start();
    const ws0 = await socket(WS, 0);
    ws0.acceptRecovered();
    const pending = client.sendToServer('mod_x', 'once only', {noFallback: true});
    ws0.refuse();
    await assert.rejects(pending, (err) => err.code === 'connection_lost');
    const ws1 = await socket(WS, 1);
    ws1.acceptRecovered();
    assert.deepEqual(ws1.frames('send'), []);
    const later = client.sendToServer('mod_x', 'next');
    ws1.receive({type: 'reply', id: ws1.frames('send')[0].id, response: 'ok'});
    assert.equal(await later, 'ok');
    client.stop();
    await assert.rejects(client.sendToServer('mod_x', 1, {noFallback: true}),
        (err) => err.code === 'no_bidirectional_transport', 'stopped: no socket');
});

test('stop() closes the socket and cancels the retry; start() resumes on the same transport', async (t) => {
    const {WS, client, ids} = setup(t, {backoffBaseMs: 40});
    client.start();
    const ws0 = await socket(WS, 0);
    ws0.acceptRecovered();
    ws0.receive(wsEvent(1));
    ws0.refuse();
    client.stop();
    await sleep(80);
    assert.equal(WS.instances.length, 1, 'no retry after stop()');
    client.start();
    const ws1 = await socket(WS, 1);
    ws1.acceptRecovered();
    assert.equal(ws1.frames('subscribe')[0].cursor, 'e:1');
    client.stop();
    assert.deepEqual(ws1.closedByClient, {code: 1000});
    ws1.receive(wsEvent(2));
    assert.deepEqual(ids(), [1], 'nothing after stop()');
});

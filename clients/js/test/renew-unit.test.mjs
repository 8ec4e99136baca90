// Unit tests of credential renewal and of channels added and dropped (issue 10, items 4 and 5):
// the classification of close 4010, when a renewal is asked for, what the client sends over the
// socket, and the de-duplication that merges an added channel's backlog. Scripted fakes only.
import {test} from 'node:test';
import assert from 'node:assert/strict';

import {createClient, classifyClose, EVENT, CONNECTION_LOST} from '../realtime.js';
import {fakeWebSocket} from '../test-support/fake-transports.mjs';
import {waitFor} from '../test-support/wait.mjs';

/** A token that expires `seconds` from now (the client reads only its expiry). */
function token(seconds, user = 42) {
    return `v1.${user}.${Math.floor(Date.now() / 1000) + seconds}.mac`;
}

function config(seconds) {
    return {
        url: 'http://realtime.invalid',
        usertoken: token(seconds),
        cursor: 'E:10',
        subscriptions: [{channel: 'h1', token: token(seconds), contextid: 1, component: 'mod_x', area: 'a', itemid: 0,
            channeldetails: ''}],
        transports: ['websocket'],
    };
}

/** A WebSocket client on a fake socket, connected (recovered at E:10). */
function connected(t, conf, options = {}) {
    const WS = fakeWebSocket();
    const client = createClient(conf, {WebSocket: WS, EventSource: null, ...options});
    const rec = {WS, client, events: [], lost: []};
    client.subscribe(EVENT, (e) => rec.events.push(e));
    client.subscribe(CONNECTION_LOST, (e) => rec.lost.push(e));
    t.after(() => client.stop());
    client.start();
    WS.instances[0].acceptRecovered();
    return rec;
}

const event = (id, area = 'a') => ({id, contextid: 1, component: 'mod_x', area, itemid: 0, channeldetails: '', payload: id});

test('close 4010 is token_expired: final without a renew function', () => {
    assert.deepEqual(classifyClose(4010), {code: 'token_expired', reason: 'credential_refused', retryable: false,
        immediate: false, answered: true});
});

test('expires: the earliest expiry of the tokens in use', (t) => {
    const conf = config(3600);
    conf.subscriptions.push({channel: 'h2', token: token(60)});
    const client = createClient(conf, {WebSocket: fakeWebSocket(), EventSource: null});
    t.after(() => client.stop());
    const expected = (Math.floor(Date.now() / 1000) + 60) * 1000;
    assert.ok(Math.abs(client.expires - expected) <= 1000, `${client.expires} vs ${expected}`);
    assert.throws(() => createClient(conf, {renew: 'not a function'}), TypeError);
});

test('renewal before expiry: asked a fifth of the life ahead, the fresh tokens sent over the socket', async (t) => {
    const calls = [];
    const fresh = config(3600);
    fresh.usertoken = token(3600, 42);
    fresh.subscriptions[0].token = token(3600, 42);
    const rec = connected(t, config(3), {
        renew: async (info) => { calls.push({...info, at: Date.now()}); return fresh; },
    });
    const socket = rec.WS.instances[0];
    const started = Date.now();
    await waitFor(() => socket.frames('subscribe').length === 2, {timeout: 5000, message: 'the renewal frame'});
    // 3 s of life: renewed after about 2.4 s (0.6 s ahead), not at once.
    assert.ok(Date.now() - started >= 1500, `renewed after ${Date.now() - started} ms`);
    assert.equal(calls.length, 1);
    assert.equal(calls[0].reason, 'expiring');
    assert.deepEqual(calls[0].subscriptions.map((s) => s.channel), ['h1']);
    const frame = socket.frames('subscribe')[1];
    assert.equal(frame.usertoken, fresh.usertoken);
    assert.deepEqual(frame.subscriptions, [{channel: 'h1', token: fresh.subscriptions[0].token}]);
    assert.equal(frame.cursor, undefined, 'a renewal moves no cursor');
    assert.equal(typeof frame.id, 'number');
    socket.receive({type: 'subscribed', id: frame.id, channels: ['h1']});
    assert.equal(rec.WS.instances.length, 1, 'no reconnect');
    assert.ok(rec.client.expires > Date.now() + 3000000);
});

test('4010 with a renew function: renew, then reconnect from the cursor with the fresh tokens', async (t) => {
    const fresh = config(3600);
    let calls = 0;
    const rec = connected(t, config(3600), {renew: async () => { calls += 1; return fresh; }, reconnectSpreadMs: 10});
    const first = rec.WS.instances[0];
    first.receive({type: 'event', cursor: 'E:11', event: event(11)});
    first.receive({type: 'error', error: {code: 'token_expired', message: 'expired'}});
    first.serverClose(4010, 'token expired');
    await waitFor(() => rec.WS.instances.length === 2, {timeout: 3000, message: 'the reconnect'});
    const second = rec.WS.instances[1];
    second.accept();
    const subscribe = second.frames('subscribe')[0];
    assert.equal(calls, 1);
    assert.equal(subscribe.usertoken, fresh.usertoken);
    assert.equal(subscribe.cursor, 'E:11');
    assert.deepEqual(rec.lost, []);
});

test('an added channel: its backlog merged once, the other channel\'s repeats skipped, its pre-mint events too', async (t) => {
    const rec = connected(t, config(3600));
    const socket = rec.WS.instances[0];
    socket.receive({type: 'event', cursor: 'E:12', event: event(12)});
    socket.receive({type: 'event', cursor: 'E:15', event: event(15)});
    const adding = rec.client.subscribe({channel: 'h2', token: 't2', cursor: 'E:11', contextid: 1,
        component: 'mod_x', area: 'b', itemid: 0, channeldetails: ''});
    const frame = socket.frames('subscribe')[1];
    assert.equal(frame.cursor, 'E:11', 'moved back to the added channel\'s cursor');
    assert.deepEqual(frame.subscriptions, [{channel: 'h2', token: 't2'}]);
    // An event of the old stream before the server took it: the cursor stays at E:11.
    socket.receive({type: 'event', cursor: 'E:16', event: event(16)});
    assert.equal(rec.client.cursor, 'E:11');
    socket.receive({type: 'subscribed', id: frame.id, channels: ['h1', 'h2']});
    await adding;
    // The replay from E:11: b's 11 is its mint (skipped), a's 12/15/16 are repeats.
    for (const [id, area] of [[11, 'b'], [12, 'a'], [13, 'b'], [15, 'a'], [16, 'a'], [17, 'b']]) {
        socket.receive({type: 'event', cursor: `E:${id}`, event: event(id, area)});
    }
    assert.deepEqual(rec.events.map((e) => `${e.area}${e.id}`), ['a12', 'a15', 'a16', 'b13', 'b17']);
    assert.equal(rec.client.cursor, 'E:17');

    await rec.client.unsubscribe('h1');
    assert.deepEqual(socket.frames('unsubscribe').map((f) => f.channels), [['h1']]);
    socket.receive({type: 'event', cursor: 'E:18', event: event(18, 'a')});
    assert.deepEqual(rec.events.map((e) => e.id), [12, 15, 16, 13, 17], 'a dropped channel\'s event is not delivered');
});

test('an added channel the server refuses: rejected with its code, removed, the connection kept', async (t) => {
    const rec = connected(t, config(3600));
    const socket = rec.WS.instances[0];
    const adding = rec.client.subscribe({channel: 'h3', token: 'bad'});
    const frame = socket.frames('subscribe')[1];
    socket.receive({type: 'error', id: frame.id, error: {code: 'token_invalid', message: 'no'}});
    await assert.rejects(adding, {code: 'token_invalid'});
    assert.deepEqual(rec.client.subscriptions.map((s) => s.channel), ['h1']);
    assert.equal(rec.WS.instances.length, 1);
    assert.deepEqual(rec.lost, []);
    await assert.rejects(rec.client.subscribe({channel: 'h4'}), {code: 'invalid_argument'});
});

test('recovered: false (a restored store) resets the de-duplication: the reused ids are delivered', (t) => {
    const rec = connected(t, config(3600));
    const socket = rec.WS.instances[0];
    socket.receive({type: 'event', cursor: 'E:12', event: event(12)});
    // The store was restored to head 3: the server says so, and ids 4, 5 are new events.
    socket.receive({type: 'not_recovered', cursor: 'E:3'});
    socket.receive({type: 'event', cursor: 'E:4', event: event(4)});
    socket.receive({type: 'event', cursor: 'E:5', event: event(5)});
    assert.deepEqual(rec.events.map((e) => e.id), [12, 4, 5]);
    assert.equal(rec.client.cursor, 'E:5');
});

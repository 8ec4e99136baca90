// Unit tests of the module-level API (one default client), against a scripted fetch.
// Kept in its own file: the default client is module state.
import {test} from 'node:test';
import assert from 'node:assert/strict';

import * as Realtime from '../realtime.js';
import {FakeFetch, answer, ev} from '../test-support/fake-fetch.mjs';
import {waitFor} from '../test-support/wait.mjs';

const CONFIG = {url: 'http://realtime.invalid', usertoken: 'UT', cursor: 'c0',
    subscriptions: [{channel: 'h', token: 't'}], transports: ['poll']};

test('topic names are those of tool_realtime', () => {
    assert.equal(Realtime.EVENT, 'tool-realtime-event');
    assert.equal(Realtime.CONNECTION_LOST, 'tool-realtime-connection-lost');
    assert.equal(Realtime.RECOVERY_FAILED, 'tool-realtime-recovery-failed');
});

test('sendToServer and stop before init', async () => {
    Realtime.stop();
    await assert.rejects(Realtime.sendToServer('mod_x', {}), (err) => err.code === 'not_initialised');
});

test('listeners subscribed before init are kept; a second init replaces the client', async (t) => {
    t.after(() => Realtime.stop());
    const seen = [];
    const off = Realtime.subscribe(Realtime.EVENT, (e) => seen.push(e.id));
    const first = new FakeFetch([answer([ev(1)], 'c1')]);
    const client = Realtime.init(CONFIG, {fetch: first.fetch});
    assert.equal(client.state, 'running');
    await waitFor(() => seen.length === 1);

    const second = new FakeFetch([answer([ev(7)], 'c7')]);
    const sends = [];
    const fetchWithSend = (url, init) => {
        if (url.endsWith('/send')) {
            sends.push(JSON.parse(init.body));
            return Promise.resolve(Response.json({response: 'pong'}));
        }
        return second.fetch(url, init);
    };
    Realtime.init(CONFIG, {fetch: fetchWithSend});
    assert.equal(client.state, 'stopped', 'the first client was stopped');
    await waitFor(() => seen.length === 2);
    assert.deepEqual(seen, [1, 7]);
    assert.equal(await Realtime.sendToServer('mod_x', 'ping'), 'pong');
    assert.deepEqual(sends, [{component: 'mod_x', payload: 'ping'}]);

    off();
    second.push(answer([ev(8)], 'c8'));
    await waitFor(() => second.callsTo('/poll').length === 3);
    assert.deepEqual(seen, [1, 7]);
    Realtime.stop();
    assert.equal(client.state, 'stopped');
});

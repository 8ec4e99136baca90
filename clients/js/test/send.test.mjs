// sendToServer through the real server to a node:http webhook: over POST /send when no
// WebSocket is open, else as `send` frames answered by `reply` frames.
import {test, before, after} from 'node:test';
import assert from 'node:assert/strict';
import http from 'node:http';

import {createClient, RealtimeError} from '../realtime.js';
import {startServer, channel} from '../test-support/server.mjs';
import {recordClient, instrumented} from '../test-support/record.mjs';
import {waitFor} from '../test-support/wait.mjs';

let server;
let webhook;
const received = [];

/** The application's webhook: echoes, fails, or is too slow depending on the payload. */
function startWebhook() {
    const hook = http.createServer((req, res) => {
        let body = '';
        req.setEncoding('utf8');
        req.on('data', (chunk) => { body += chunk; });
        req.on('end', () => {
            const data = JSON.parse(body);
            received.push({method: req.method, url: req.url, headers: req.headers, body: data});
            const reply = (status, value) => {
                res.writeHead(status, {'Content-Type': 'application/json'});
                res.end(JSON.stringify(value));
            };
            if (data.payload?.mode === 'fail') {
                reply(500, {oops: true});
            } else if (data.payload?.mode === 'delay') {
                setTimeout(() => reply(200, {echo: data.payload, receivedtime: Date.now()}), data.payload.delay);
            } else if (data.payload?.mode === 'slow') {
                setTimeout(() => { if (!res.destroyed) reply(200, {late: true}); }, 1500);
            } else {
                reply(200, {echo: data.payload, user: data.user, component: data.component});
            }
        });
    });
    return new Promise((resolve) => hook.listen(0, '127.0.0.1', () => resolve(hook)));
}

before(async () => {
    webhook = await startWebhook();
    const {port} = webhook.address();
    server = await startServer({config: [
        '[webhooks]',
        'timeout_ms = 500',
        '[webhooks.components]',
        `mod_echo = "http://127.0.0.1:${port}/hook"`,
        '',
    ].join('\n')});
});

after(async () => {
    await server?.cleanup();
    webhook?.closeAllConnections();
    await new Promise((resolve) => (webhook ? webhook.close(resolve) : resolve()));
});

async function client() {
    return createClient(await server.page([channel('send')]));
}

test('the webhook answer is relayed as the response', async () => {
    const c = await client();
    const payload = {text: 'héllo', list: [1, 2, {x: null}]};
    const answer = await c.sendToServer('mod_echo', payload);
    assert.deepEqual(answer, {echo: payload, user: 42, component: 'mod_echo'});
    const last = received.at(-1);
    assert.equal(last.method, 'POST');
    assert.equal(last.url, '/hook');
    assert.deepEqual(last.body, {component: 'mod_echo', user: 42, payload});
    assert.equal(c.state, 'idle', 'sending does not start polling');
});

test('scalar and null payloads go through unchanged', async () => {
    const c = await client();
    assert.deepEqual(await c.sendToServer('mod_echo', 'just text'), {echo: 'just text', user: 42, component: 'mod_echo'});
    assert.deepEqual(await c.sendToServer('mod_echo', null), {echo: null, user: 42, component: 'mod_echo'});
});

test('an unknown component is rejected with an Error carrying code and status', async (t) => {
    const c = await client();
    const count = received.length;
    const err = await c.sendToServer('mod_unknown', {}).then(() => null, (e) => e);
    assert.ok(err instanceof Error && err instanceof RealtimeError, 'rejects with a RealtimeError');
    t.diagnostic(`unknown component → ${err.status} ${err.code}: ${err.message}`);
    assert.ok(err.status >= 400 && err.status < 500, `status ${err.status}`);
    assert.match(err.code, /^[a-z_]+$/);
    assert.ok(err.message.length > 0);
    assert.equal(received.length, count, 'the webhook was not called');
});

test('a failing webhook gives 502, a slow one 504', async (t) => {
    const c = await client();
    const failed = await c.sendToServer('mod_echo', {mode: 'fail'}).then(() => null, (e) => e);
    t.diagnostic(`failing webhook → ${failed.status} ${failed.code}: ${failed.message}`);
    assert.equal(failed.status, 502);
    assert.equal(typeof failed.code, 'string');
    const slow = await c.sendToServer('mod_echo', {mode: 'slow'}).then(() => null, (e) => e);
    t.diagnostic(`slow webhook → ${slow.status} ${slow.code}: ${slow.message}`);
    assert.equal(slow.status, 504);
    assert.equal(typeof slow.code, 'string');
});

test('a refused usertoken rejects with 401/403', async () => {
    const config = await server.page([channel('send')]);
    const c = createClient({...config, usertoken: `${config.usertoken}x`});
    const err = await c.sendToServer('mod_echo', 1).then(() => null, (e) => e);
    assert.ok(err.status === 401 || err.status === 403, `status ${err.status}`);
    assert.equal(typeof err.code, 'string');
});

test('no server at all: network_error', async () => {
    const config = await server.page([channel('send')]);
    const c = createClient({...config, url: 'http://127.0.0.1:9'});
    const err = await c.sendToServer('mod_echo', 1).then(() => null, (e) => e);
    assert.equal(err.code, 'network_error');
    assert.equal(err.status, 0);
});

/** A started client whose WebSocket is open (an event came through it). */
async function openSocketClient(t, area) {
    const chan = channel(area);
    const {stats, options} = instrumented();
    const rec = recordClient(t, await server.page([chan]), options);
    await server.notify(chan, 'hello');
    await waitFor(() => rec.events.length === 1);
    assert.equal(rec.client.transport, 'websocket');
    return {rec, stats};
}

test('over the WebSocket: concurrent sends are matched to their replies by id, whatever their order', async (t) => {
    const {rec, stats} = await openSocketClient(t, 'send-ws');
    const count = received.length;
    const settled = [];
    const sends = Array.from({length: 10}, (_, i) => {
        const payload = {mode: 'delay', delay: (10 - i) * 30, i};
        return rec.client.sendToServer('mod_echo', payload, {noFallback: true}).then((answer) => {
            settled.push(i);
            return answer;
        });
    });
    const answers = await Promise.all(sends);
    answers.forEach((answer, i) => {
        assert.deepEqual(answer.echo, {mode: 'delay', delay: (10 - i) * 30, i});
        assert.equal(typeof answer.receivedtime, 'number');
    });
    t.diagnostic(`replies settled in the order ${settled}`);
    assert.notDeepEqual(settled, [...settled].sort((a, b) => a - b), 'the replies came out of order');
    assert.equal(received.length - count, 10, 'each send reached the webhook once');
    assert.equal(stats.send, 0, 'nothing went over POST /send');
    assert.equal(stats.websocket, 1);
});

test('over the WebSocket: a refused send rejects with the code of its reply', async (t) => {
    const {rec, stats} = await openSocketClient(t, 'send-ws-refused');
    const err = await rec.client.sendToServer('mod_unknown', {}).then(() => null, (e) => e);
    assert.ok(err instanceof RealtimeError);
    assert.equal(err.code, 'not_found');
    assert.equal(err.status, 0, 'no HTTP status over WebSocket');
    const failed = await rec.client.sendToServer('mod_echo', {mode: 'fail'}).then(() => null, (e) => e);
    assert.equal(failed.code, 'webhook_failed');
    assert.equal(stats.send, 0);
});

test('noFallback without an open WebSocket rejects with no_bidirectional_transport; without it, POST /send', async (t) => {
    const {stats, options} = instrumented();
    const rec = recordClient(t, await server.page([channel('send-poll')]), {...options, transports: ['poll']});
    const err = await rec.client.sendToServer('mod_echo', 1, {noFallback: true}).then(() => null, (e) => e);
    assert.ok(err instanceof RealtimeError);
    assert.equal(err.code, 'no_bidirectional_transport');
    assert.equal(stats.send, 0);
    assert.deepEqual(await rec.client.sendToServer('mod_echo', 2), {echo: 2, user: 42, component: 'mod_echo'});
    assert.equal(stats.send, 1);
});

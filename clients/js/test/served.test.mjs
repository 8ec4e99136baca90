// The server serves this very client at /realtime.js, and the served module works as a page uses it.
import {test, before, after} from 'node:test';
import assert from 'node:assert/strict';
import {readFile} from 'node:fs/promises';

import {startServer, channel} from '../test-support/server.mjs';
import {waitFor} from '../test-support/wait.mjs';

let server;
before(async () => { server = await startServer(); });
after(async () => { await server?.cleanup(); });

test('GET /realtime.js serves clients/js/realtime.js', async () => {
    const response = await fetch(`${server.url}/realtime.js`);
    assert.equal(response.status, 200);
    assert.match(response.headers.get('content-type'), /javascript/);
    const served = await response.text();
    const local = await readFile(new URL('../realtime.js', import.meta.url), 'utf8');
    assert.ok(served === local, 'the served client differs from clients/js/realtime.js: rebuild the binary');
});

test('a page using the served module: init, EVENT, sendToServer, CORS', async (t) => {
    const source = await (await fetch(`${server.url}/realtime.js`)).text();
    const Realtime = await import(`data:text/javascript;base64,${Buffer.from(source).toString('base64')}`);
    t.after(() => Realtime.stop());
    const chan = channel('served');
    const seen = [];
    Realtime.subscribe(Realtime.EVENT, (e) => seen.push(e));
    const client = Realtime.init(await server.page([chan]));
    const id = await server.notify(chan, {hello: 'page'});
    await waitFor(() => seen.length === 1);
    assert.equal(seen[0].id, id);
    assert.deepEqual(seen[0].payload, {hello: 'page'});
    // No webhook is configured: the refusal still carries its code (and its status over HTTP).
    const err = await Realtime.sendToServer('mod_x', {}).then(() => null, (e) => e);
    assert.equal(err.code, 'not_found');
    assert.equal(err.status, client.transport === 'websocket' ? 0 : 404, `over ${client.transport}`);

    // A page on another origin may poll (bearer tokens, no cookies).
    const preflight = await fetch(`${server.url}/poll`, {
        method: 'OPTIONS',
        headers: {
            'Origin': 'https://school.example',
            'Access-Control-Request-Method': 'POST',
            'Access-Control-Request-Headers': 'authorization,content-type',
        },
    });
    assert.ok(preflight.status < 300, `preflight status ${preflight.status}`);
    assert.ok(preflight.headers.get('access-control-allow-origin'), 'preflight allows the origin');
    assert.match(preflight.headers.get('access-control-allow-headers') ?? '', /authorization/i);
});

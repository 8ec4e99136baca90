// Server restarted on the same port and data dir: the client reconnects and loses nothing.
import {test} from 'node:test';
import assert from 'node:assert/strict';
import {rm} from 'node:fs/promises';

import {startServer, channel, freePort, tempDir} from '../test-support/server.mjs';
import {recordClient, countingFetch} from '../test-support/record.mjs';
import {waitFor, sleep} from '../test-support/wait.mjs';

test('server stopped mid-stream and restarted: every event once, in order, no CONNECTION_LOST', async (t) => {
    const port = await freePort();
    const dataDir = await tempDir();
    t.after(() => rm(dataDir, {recursive: true, force: true}));
    let server = await startServer({port, dataDir});
    t.after(() => server.stop());
    const chan = channel('restart');
    const counting = countingFetch();
    const rec = recordClient(t, await server.page([chan]),
        {fetch: counting.fetch, backoffBaseMs: 20, backoffMaxMs: 200, maxRetries: 1000});

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

// Reconnect storm, small: 200 clients (the default policy) on one node, the node restarted on the
// same port and data dir. Every client comes back and gets every acknowledged event exactly once,
// in order. The figures of the full storm (1,000 clients, jitter vs no-jitter) are measured by
// bench/storm/storm.mjs and written in docs/performance.md; nothing here is timed.
import {test} from 'node:test';
import assert from 'node:assert/strict';

import {runStorm} from '../../../bench/storm/storm.mjs';
import {BIN} from '../test-support/server.mjs';

for (const restart of ['term', 'kill']) {
    const how = restart === 'term' ? 'SIGTERM (WebSockets closed 1012)' : 'kill -9';
    test(`reconnect storm: 200 clients, node restarted with ${how}: all back, every event once, in order`, async (t) => {
        const r = await runStorm({bin: BIN, clients: 200, channels: 4, restart, policy: 'jitter', eventsPerStep: 3});
        t.diagnostic(`down ${r.downMs} ms; back p50 ${r.backMs.p50} / max ${r.backMs.max} ms after up; `
            + `attempts ${JSON.stringify(r.outcomes)}; resumed on ${JSON.stringify(r.resumedOn)}`);
        assert.equal(r.back, 200, 'every client reconnected');
        assert.equal(r.eventsPerClient, 12);
        assert.deepEqual(r.examples, [], 'no client lost, repeated or reordered an event');
        assert.equal(r.lost, 0);
        assert.equal(r.dup, 0);
        assert.equal(r.disorder, 0);
        assert.equal(r.badClients, 0);
        assert.equal(r.recoveryFailed, 0, 'every client resumed from its cursor');
        assert.equal(r.finalConnectionLost, 0, 'no client gave up');
        if (restart === 'term') {
            assert.equal(r.exit, 0, 'the node drained and exited 0');
        }
    });
}

// The client gives up correctly: refused credentials, server gone for good.
import {test, before, after} from 'node:test';
import assert from 'node:assert/strict';

import {startServer, channel} from '../test-support/server.mjs';
import {recordClient, countingFetch} from '../test-support/record.mjs';
import {waitFor, sleep} from '../test-support/wait.mjs';

let server;
before(async () => { server = await startServer(); });
after(async () => { await server?.cleanup(); });

/** `token` with one character in its middle changed. */
function tamper(token) {
    const i = Math.floor(token.length / 2);
    return token.slice(0, i) + (token[i] === 'A' ? 'B' : 'A') + token.slice(i + 1);
}

const tamperings = {
    'a tampered usertoken': (config) => ({...config, usertoken: tamper(config.usertoken)}),
    'a tampered subscription token': (config) => ({
        ...config,
        subscriptions: config.subscriptions.map((s, i) => (i === 1 ? {...s, token: tamper(s.token)} : s)),
    }),
    'subscription tokens swapped between channels': (config) => ({
        ...config,
        subscriptions: config.subscriptions.map((s, i, all) => ({...s, token: all[1 - i].token})),
    }),
};

for (const [name, change] of Object.entries(tamperings)) {
    test(`${name}: CONNECTION_LOST credential_refused exactly once, polling stops`, async (t) => {
        const config = change(await server.page([channel('tamper-a'), channel('tamper-b')]));
        const counting = countingFetch();
        const rec = recordClient(t, config, {fetch: counting.fetch, backoffBaseMs: 1});
        await waitFor(() => rec.lost.length === 1, {message: 'CONNECTION_LOST'});
        const [lost] = rec.lost;
        t.diagnostic(`CONNECTION_LOST ${JSON.stringify(lost)}`);
        assert.equal(lost.reason, 'credential_refused');
        assert.ok(lost.status === 401 || lost.status === 403, `status ${lost.status}`);
        assert.equal(typeof lost.code, 'string');
        assert.equal(typeof lost.message, 'string');
        await sleep(150);
        assert.equal(counting.stats.calls, 1, 'no poll after the refusal');
        assert.equal(rec.lost.length, 1);
        assert.equal(rec.client.state, 'lost');
        assert.deepEqual(rec.events, []);
    });
}

test('server gone for good: retries with backoff, then CONNECTION_LOST retries_exhausted once', async (t) => {
    const own = await startServer();
    t.after(() => own.cleanup());
    const chan = channel('gone');
    const counting = countingFetch();
    const rec = recordClient(t, await own.page([chan]),
        {fetch: counting.fetch, backoffBaseMs: 10, backoffMaxMs: 40, maxRetries: 4});
    await own.notify(chan, 'still here');
    await waitFor(() => rec.events.length === 1);
    await own.stop();
    await waitFor(() => rec.lost.length === 1, {message: 'CONNECTION_LOST'});
    const [lost] = rec.lost;
    t.diagnostic(`CONNECTION_LOST ${JSON.stringify(lost)}`);
    assert.equal(lost.reason, 'retries_exhausted');
    assert.equal(typeof lost.message, 'string');
    assert.ok(counting.stats.failures >= 4, `failures ${counting.stats.failures}`);
    const calls = counting.stats.calls;
    await sleep(150);
    assert.equal(counting.stats.calls, calls, 'no poll after giving up');
    assert.equal(rec.lost.length, 1);
    assert.equal(rec.client.state, 'lost');
});

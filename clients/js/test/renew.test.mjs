// Pages that stay open all day (issue 10): credentials renewed without a reload, and channels
// added and dropped on a live client — on every transport, against the real server. Tokens with
// a life of seconds are signed here with the server's secret (docs/protocol.md, "Tokens"), as an
// application holding the secret may.
import {describe, test} from 'node:test';
import assert from 'node:assert/strict';
import {createHmac} from 'node:crypto';
import {readFile} from 'node:fs/promises';
import {join} from 'node:path';

import {startServer, channel} from '../test-support/server.mjs';
import {recordClient, ascending} from '../test-support/record.mjs';
import {EventSource} from '../test-support/eventsource.mjs';
import {waitFor, sleep} from '../test-support/wait.mjs';

const TRANSPORTS = ['websocket', 'sse', 'poll'];

/** The transport options for a client that uses only `transport`. */
function only(transport) {
    return {transports: [transport], EventSource, backoffBaseMs: 50, backoffMaxMs: 500};
}

/** A token as the server signs it. */
function sign(secret, kind, hash, user, expires) {
    const mac = createHmac('sha256', secret)
        .update(`realtime-token-v1\n${kind}\n${hash}\n${user}\n${expires}`)
        .digest('base64url');
    return `v1.${user}.${expires}.${mac}`;
}

/** `page` with every token re-signed to expire `seconds` from now. */
function expiringIn(secret, page, seconds) {
    const expires = Math.floor(Date.now() / 1000) + seconds;
    return {
        ...page,
        expires,
        usertoken: sign(secret, 'user', '', page.user, expires),
        subscriptions: page.subscriptions.map((s) => ({...s, token: sign(secret, 'sub', s.channel, page.user, expires)})),
    };
}

async function serverWithSecret() {
    const server = await startServer();
    const secret = await readFile(join(server.dataDir, 'secret'), 'utf8');
    return {server, secret};
}

describe('credentials renewed before they expire', {concurrency: true}, () => {
    for (const transport of TRANSPORTS) {
        test(`${transport}: tokens of 6 s renewed again and again over 16 s: connected throughout, every event once`,
            async (t) => {
                const {server, secret} = await serverWithSecret();
                t.after(() => server.cleanup());
                const chan = channel(`renew-${transport}`);
                const page = await server.page([chan]);
                const renewals = [];
                const rec = recordClient(t, expiringIn(secret, page, 6), {
                    ...only(transport),
                    // The application's endpoint: a fresh page config for the channels the client has.
                    renew: async ({reason, subscriptions}) => {
                        renewals.push({reason, channels: subscriptions.map((s) => s.channel)});
                        return expiringIn(secret, page, 6);
                    },
                });
                const states = [];
                rec.client.subscribe('tool-realtime-state-changed', (s) => states.push(s.state));
                const ids = [];
                const started = Date.now();
                while (Date.now() - started < 16000) {
                    ids.push(await server.notify(chan, ids.length + 1));
                    await sleep(400);
                }
                await waitFor(() => rec.events.length >= ids.length, {timeout: 10000,
                    message: () => `${ids.length} events, have ${rec.events.length}`});
                t.diagnostic(`${renewals.length} renewals (${renewals.map((r) => r.reason).join(', ')}); states ${states.join(' → ')}`);
                assert.deepEqual(rec.ids(), ids, 'every event once, in order');
                assert.ok(renewals.length >= 2, `renewed at least twice, got ${renewals.length}`);
                assert.ok(renewals.every((r) => r.reason === 'expiring'), JSON.stringify(renewals));
                assert.deepEqual(renewals[0].channels, [page.subscriptions[0].channel]);
                assert.deepEqual(rec.lost, []);
                assert.equal(rec.client.connectionState, 'connected');
                if (transport === 'websocket') {
                    // Renewed over the socket: never closed by the server, so no reconnect.
                    // (STATE_CHANGED is listened to after start(): its `connecting` came before.)
                    assert.deepEqual([...states], ['connected'], 'one connection throughout');
                }
                assert.ok(rec.client.expires > Date.now(), 'the tokens in use are fresh');
            });
    }
});

describe('the server ends a stream whose token expired', {concurrency: true}, () => {
    for (const transport of TRANSPORTS) {
        test(`${transport}: without a renew function: CONNECTION_LOST token_expired, final`, async (t) => {
            const {server, secret} = await serverWithSecret();
            t.after(() => server.cleanup());
            const chan = channel(`expire-${transport}`);
            const rec = recordClient(t, expiringIn(secret, await server.page([chan]), 2), only(transport));
            const id = await server.notify(chan, 'before');
            await waitFor(() => rec.events.length === 1);
            assert.deepEqual(rec.ids(), [id]);
            await waitFor(() => rec.lost.length > 0, {timeout: 30000, message: 'CONNECTION_LOST'});
            assert.equal(rec.lost[0].retrying, false, JSON.stringify(rec.lost[0]));
            assert.equal(rec.lost[0].code, 'token_expired', JSON.stringify(rec.lost[0]));
            assert.equal(rec.lost[0].reason, 'credential_refused');
            assert.equal(rec.client.state, 'lost');
        });

        test(`${transport}: with a renew function that only works once the token expired: resumes, nothing lost`,
            async (t) => {
                const {server, secret} = await serverWithSecret();
                t.after(() => server.cleanup());
                const chan = channel(`late-renew-${transport}`);
                const page = await server.page([chan]);
                const calls = [];
                const rec = recordClient(t, expiringIn(secret, page, 2), {
                    ...only(transport),
                    renew: async ({reason}) => {
                        calls.push(reason);
                        if (reason === 'expiring') {
                            throw new Error('the application is busy');
                        }
                        return page; // 4 h tokens from POST /api/page
                    },
                });
                const ids = [await server.notify(chan, 1)];
                await waitFor(() => rec.events.length === 1);
                // Past the expiry: the server ends the stream, the client renews and reconnects.
                await sleep(3000);
                ids.push(await server.notify(chan, 2));
                await waitFor(() => calls.includes('expired'), {timeout: 20000, message: () => `renew calls ${calls}`});
                ids.push(await server.notify(chan, 3));
                await waitFor(() => rec.events.length >= 3, {timeout: 20000,
                    message: () => `3 events, have ${rec.ids()}; calls ${calls}`});
                await sleep(200);
                t.diagnostic(`renew calls: ${calls.join(', ')}`);
                assert.deepEqual(rec.ids(), ids);
                assert.deepEqual(rec.lost, []);
                assert.equal(rec.client.state, 'running');
            });
    }

    test('renew gives nothing (the user logged out): CONNECTION_LOST renew_refused, final', async (t) => {
        const {server, secret} = await serverWithSecret();
        t.after(() => server.cleanup());
        const chan = channel('logged-out');
        const rec = recordClient(t, expiringIn(secret, await server.page([chan]), 2),
            {...only('websocket'), renew: async () => null});
        await waitFor(() => rec.lost.length > 0, {timeout: 30000, message: 'CONNECTION_LOST'});
        assert.equal(rec.lost[0].code, 'renew_refused', JSON.stringify(rec.lost[0]));
        assert.equal(rec.lost[0].retrying, false);
        assert.equal(rec.lost.length, 1);
    });
});

describe('channels added and dropped on a live client', {concurrency: true}, () => {
    for (const transport of TRANSPORTS) {
        test(`${transport}: an added channel gets its events from its own cursor, merged; a dropped one stops`,
            async (t) => {
                const server = await startServer();
                t.after(() => server.cleanup());
                const a = channel(`first-${transport}`);
                const b = channel(`added-${transport}`);
                const rec = recordClient(t, await server.page([a]), only(transport));
                const a1 = await server.notify(a, 'a1');
                await waitFor(() => rec.events.length === 1);

                // The application renders a fragment for b; meanwhile b and a get events.
                const before = await server.notify(b, 'b before the mint');
                const sub = await server.expectOk('/api/subscribe', {channel: b, user: 42});
                const b1 = await server.notify(b, 'b1');
                const a2 = await server.notify(a, 'a2');
                await waitFor(() => rec.events.length === 2, {message: () => `a2, have ${rec.ids()}`});
                await rec.client.subscribe(sub);
                const b2 = await server.notify(b, 'b2');
                await waitFor(() => rec.events.length >= 4, {message: () => `4 events, have ${rec.ids()}`});
                await sleep(300);
                const payloads = rec.events.map((e) => e.payload);
                assert.deepEqual(payloads, ['a1', 'a2', 'b1', 'b2'], 'b from its cursor, a not again');
                assert.deepEqual(rec.ids(), [a1, a2, b1, b2]);
                assert.ok(!rec.ids().includes(before));
                assert.equal(rec.client.subscriptions.length, 2);

                // Dropped: a's events stop, b's go on.
                await rec.client.unsubscribe(rec.client.subscriptions.find((s) => s.area === a.area));
                await server.notify(a, 'a3 after the drop');
                const b3 = await server.notify(b, 'b3');
                await waitFor(() => rec.events.length >= 5, {message: () => `b3, have ${rec.ids()}`});
                await sleep(300);
                assert.deepEqual(rec.ids(), [a1, a2, b1, b2, b3]);
                assert.ok(ascending(rec.ids().slice(2)));
                await assert.rejects(rec.client.unsubscribe(sub), {code: 'invalid_argument'}, 'not the last one');
                assert.deepEqual(rec.lost, []);
                assert.deepEqual(rec.recoveries, []);
            });

        test(`${transport}: an added channel the server refuses is rejected; the others go on`, async (t) => {
            const server = await startServer();
            t.after(() => server.cleanup());
            const a = channel(`kept-${transport}`);
            const rec = recordClient(t, await server.page([a]), only(transport));
            await waitFor(() => rec.client.connectionState === 'connected');
            // Another user's subscription.
            const theirs = await server.expectOk('/api/subscribe', {channel: channel('theirs'), user: 7});
            await assert.rejects(rec.client.subscribe(theirs), (err) => err.code === 'token_invalid'
                || err.reason === 'credential_refused');
            assert.equal(rec.client.subscriptions.length, 1);
            const id = await server.notify(a, 'still here');
            await waitFor(() => rec.events.length === 1, {message: () => `the event, have ${rec.ids()}`});
            assert.deepEqual(rec.ids(), [id]);
            assert.deepEqual(rec.lost, []);
        });
    }
});

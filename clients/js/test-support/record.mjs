// A client that records everything it publishes, stopped when the test ends.
import {createClient, EVENT, CONNECTION_LOST, RECOVERY_FAILED, TRANSPORT_CHANGED} from '../realtime.js';
import {EventSource} from './eventsource.mjs';

/**
 * @param {import('node:test').TestContext} t
 * @param {object} config page config
 * @param {object} [options] client options
 * @param {{start?: boolean}} [how]
 */
export function recordClient(t, config, options = {}, {start = true} = {}) {
    const client = createClient(config, options);
    const rec = {
        client,
        events: [],
        lost: [],
        recoveries: [],
        /** TRANSPORT_CHANGED payloads. */
        changes: [],
        ids: () => rec.events.map((e) => e.id),
        /** The transports used, in order. */
        used: () => rec.changes.map((c) => c.transport),
    };
    client.subscribe(EVENT, (e) => rec.events.push(e));
    client.subscribe(CONNECTION_LOST, (e) => rec.lost.push(e));
    client.subscribe(RECOVERY_FAILED, (e) => rec.recoveries.push(e));
    client.subscribe(TRANSPORT_CHANGED, (e) => rec.changes.push(e));
    t.after(() => client.stop());
    if (start) {
        client.start();
    }
    return rec;
}

/** A fetch that counts calls and failures (for the retry tests). */
export function countingFetch() {
    const stats = {calls: 0, failures: 0, statuses: []};
    const fetchFn = async (url, init) => {
        stats.calls += 1;
        try {
            const response = await globalThis.fetch(url, init);
            stats.statuses.push(response.status);
            if (!response.ok) {
                stats.failures += 1;
            }
            return response;
        } catch (err) {
            if (!init?.signal?.aborted) {
                stats.failures += 1;
                stats.statuses.push(0);
            }
            throw err;
        }
    };
    return {stats, fetch: fetchFn};
}

/** Is `ids` strictly ascending? */
export function ascending(ids) {
    return ids.every((id, i) => i === 0 || ids[i - 1] < id);
}

/** The global WebSocket, or an error that says how to get one. */
export function realWebSocket() {
    if (typeof globalThis.WebSocket !== 'function') {
        throw new Error('no global WebSocket: on Node 20 run the tests with `node --experimental-websocket --test test/`');
    }
    return globalThis.WebSocket;
}

/**
 * Client options with the real WebSocket, the EventSource polyfill and fetch, each counted:
 * `stats.websocket` / `stats.sse` connections attempted, `stats.poll` polls, `stats.probe`
 * status probes of /sse, `stats.send` POST /send.
 */
export function instrumented() {
    const Real = realWebSocket();
    const stats = {websocket: 0, sse: 0, poll: 0, probe: 0, send: 0};
    const fetchFn = (url, init) => {
        const path = new URL(url).pathname;
        const key = {'/poll': 'poll', '/sse': 'probe', '/send': 'send'}[path];
        if (key) {
            stats[key] += 1;
        }
        return globalThis.fetch(url, init);
    };
    function CountingWebSocket(url, protocols) {
        stats.websocket += 1;
        return new Real(url, protocols);
    }
    class CountingEventSource extends EventSource {
        constructor(url, init) {
            super(url, init);
            stats.sse += 1;
        }
    }
    return {stats, options: {fetch: fetchFn, WebSocket: CountingWebSocket, EventSource: CountingEventSource}};
}

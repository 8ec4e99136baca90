// A client that records everything it publishes, stopped when the test ends.
import {createClient, EVENT, CONNECTION_LOST, RECOVERY_FAILED} from '../realtime.js';

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
        ids: () => rec.events.map((e) => e.id),
    };
    client.subscribe(EVENT, (e) => rec.events.push(e));
    client.subscribe(CONNECTION_LOST, (e) => rec.lost.push(e));
    client.subscribe(RECOVERY_FAILED, (e) => rec.recoveries.push(e));
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

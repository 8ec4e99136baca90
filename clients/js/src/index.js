/**
 * realtime.js — client for the realtime server (a re-implementation of
 * Moodle's tool_realtime). Zero dependencies; runs in browsers and Node 20+
 * (needs global `fetch`, `setTimeout` and `AbortController`; `WebSocket` and
 * `EventSource` when those transports are to be used).
 *
 * Usage in a page (the page config comes from the application, which got it
 * from `POST /api/page`):
 *
 *     import * as Realtime from '/realtime.js';
 *     Realtime.subscribe(Realtime.EVENT, (event) => { ... });
 *     Realtime.subscribe(Realtime.CONNECTION_LOST, (err) => { ... });   // err.retrying: still trying?
 *     Realtime.subscribe(Realtime.CONNECTION_RESTORED, ({downMs}) => { ... });
 *     Realtime.subscribe(Realtime.STATE_CHANGED, ({state}) => { ... });  // connecting/connected/disconnected
 *     Realtime.subscribe(Realtime.RECOVERY_FAILED, (info) => { ... });
 *     Realtime.subscribe(Realtime.TRANSPORT_CHANGED, ({transport}) => { ... });
 *     const client = Realtime.init(pageConfig, {renew: () => fetch('/my/config').then((r) => r.json())});
 *     const answer = await Realtime.sendToServer('mod_x', {any: 'json'});
 *     client.force('poll');        // use only that transport; force(null): choose again
 *     await Realtime.subscribe(subscription);   // one more channel (POST /api/subscribe's answer)
 *     await Realtime.unsubscribe(subscription.channel);
 *
 * Several independent clients: `createClient(config, options).start()`.
 *
 * Structure: a `RealtimeClient` owns the listeners, the cursor, the
 * de-duplication of events by id and the policy (backoff, fallback from one
 * transport to the next, climbing back). A transport (`WebSocketTransport`,
 * `SseTransport`, `PollTransport`) only moves data: it is opened with a
 * cursor, hands `{events, cursor, recovered?}` to `sink.batch` (the first
 * batch shows that it works; SSE, whose handshake brings no data, tells
 * `sink.opened()`), and on its first failure
 * reports once to `sink.failure` and goes idle until opened again. After
 * `close()` it calls the sink no more.
 *
 * Sources: the ES modules of clients/js/src/, bundled into this one file by
 * clients/js/build.mjs: index.js (this API), client.js (`RealtimeClient`, the
 * policy), transports/ (one file per transport, and the contract), errors.js
 * (`RealtimeError`, what a status or close code means, `backoffDelay`),
 * http.js, hub.js (the topics and their listeners), options.js (the defaults).
 *
 * Policy, transports tried in the order of `options.transports`, else the page
 * config's `transports`, else websocket, sse, poll (skipping those the
 * environment lacks). The client never gives up on a transient failure unless
 * the app sets `maxRetries`:
 * - a transport that fails before it ever opened, with no answer from the
 *   server (network error, close 1006, handshake timeout), is left for the next
 *   at once (a proxy that blocks WebSocket should not cost the page a minute);
 * - one that worked and then fails, or one the server answered with a transient
 *   refusal (HTTP 408/429/5xx or another status that is not final, WebSocket
 *   close 1012/1013/4008/4009/…), is reopened after a capped, jittered
 *   exponential backoff (`backoffBaseMs` doubling to `backoffMaxMs`, each delay
 *   ±`backoffJitter`), never sooner than the server's `Retry-After`; after
 *   `fallbackAfter` consecutive failures the client falls back to the next
 *   transport. A working connection closed with 1012 (node draining) or 4008
 *   (slow consumer) reopens after a random delay below `reconnectSpreadMs`, so
 *   a node's clients do not come back in one burst;
 * - only a refused credential (401/403, close 4001) or a malformed request
 *   (400/413/414/431, close 4002) is final: CONNECTION_LOST with `retrying: false`;
 *   so is `maxRetries` consecutive failures of the last (or forced) transport,
 *   when the app sets that limit (default: none);
 * - an outage (no open transport since `lostAfterMs`) fires CONNECTION_LOST
 *   `unreachable` with `retrying: true`, once per outage, and
 *   CONNECTION_RESTORED when a transport opens again; STATE_CHANGED follows
 *   `connectionState` (`connecting` / `connected` / `disconnected`);
 * - climbing back: a transport that fails to open with no answer while a worse
 *   one then opens at its first try is taken as blocked here (the server was
 *   there). In an outage, every retry starts again from the best transport not
 *   blocked here (falling down at once through those that do not open), so the
 *   client is back on the best one as soon as the server returns. A worse
 *   transport that works tries the best one again after `climbAfterMs`
 *   (closing the current one; if the better one fails to open, the client moves
 *   down again at once).
 * - credentials: with `options.renew`, fresh ones are asked for `renewAheadMs`
 *   before the first token expires and when the server says one has (close
 *   4010, SSE `token_expired`, HTTP 401 `token_expired`); without it an
 *   expired token is final.
 * Every (re)open sends the cursor of the last delivered event, so switching
 * loses nothing; events are published once each, in ascending id order per
 * channel (high-water mark of delivered ids per channel, reset on
 * `recovered: false`); a channel added with `subscribe(subscription)` gets its
 * backlog from its own cursor by moving the cursor back, the repeats of the
 * others being dropped by that mark.
 *
 * @module realtime
 */

export {CONNECTION_LOST, CONNECTION_RESTORED, EVENT, RECOVERY_FAILED, STATE_CHANGED, TRANSPORT_CHANGED} from './hub.js';
export {RealtimeError, backoffDelay, classifyClose, classifyStatus} from './errors.js';

import {RealtimeClient} from './client.js';
import {RealtimeError} from './errors.js';
import {Hub} from './hub.js';
import {isObject} from './util.js';

/**
 * Create an independent client (own listeners, cursor and connection).
 * It does not connect until `start()` is called.
 * @param {PageConfig} config @param {ClientOptions} [options]
 * @returns {RealtimeClient}
 */
export function createClient(config, options) {
    return new RealtimeClient(config, options);
}

// Module-level API: one default client sharing listeners registered before init.
const defaultHub = new Hub();
let defaultClient = null;

/**
 * Start the default client with the page config (stops a previous one).
 * Listeners subscribed before are kept.
 * @param {PageConfig} config @param {ClientOptions} [options]
 * @returns {RealtimeClient}
 */
export function init(config, options) {
    defaultClient?.stop();
    defaultClient = new RealtimeClient(config, options, defaultHub);
    return defaultClient.start();
}

/**
 * Listen to a topic of the default client (works before `init`), or — given a subscription from
 * `POST /api/subscribe` — add a channel to it (see `RealtimeClient#subscribe`).
 * @param {string|Subscription} topic @param {(data: any) => void} [listener]
 * @returns {(() => void) | Promise<void>}
 */
export function subscribe(topic, listener) {
    if (isObject(topic)) {
        if (!defaultClient) {
            return Promise.reject(new RealtimeError('realtime: init() has not been called', {code: 'not_initialised'}));
        }
        return defaultClient.subscribe(topic);
    }
    return defaultHub.subscribe(topic, listener);
}

/**
 * Drop a channel (its hash or subscription) from the default client.
 * @param {string|Subscription} channel
 * @returns {Promise<void>}
 */
export function unsubscribe(channel) {
    if (!defaultClient) {
        return Promise.reject(new RealtimeError('realtime: init() has not been called', {code: 'not_initialised'}));
    }
    return defaultClient.unsubscribe(channel);
}

/**
 * Send to the server through the default client.
 * @param {string} component @param {unknown} payload
 * @param {{noFallback?: boolean, signal?: AbortSignal}} [options]
 * @returns {Promise<any>}
 */
export function sendToServer(component, payload, options) {
    if (!defaultClient) {
        return Promise.reject(new RealtimeError('realtime: init() has not been called', {code: 'not_initialised'}));
    }
    return defaultClient.sendToServer(component, payload, options);
}

/** Stop the default client (page teardown, tests). */
export function stop() {
    defaultClient?.stop();
}

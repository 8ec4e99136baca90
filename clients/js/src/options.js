// What a client is made from: the page config (the answer of `POST /api/page`) and the client
// options, with their defaults. realtime.d.ts declares both (`PageConfig`, `ClientOptions`);
// test/types.test.mjs checks that its `ClientOptions` has exactly these keys.

export const DEFAULTS = Object.freeze({
    backoffBaseMs: 500,
    backoffMaxMs: 20000,
    backoffJitter: 0.5,
    maxRetries: Infinity,
    lostAfterMs: 10000,
    reconnectSpreadMs: 1000,
    fallbackAfter: 3,
    climbAfterMs: 300000,
    openTimeoutMs: 10000,
    pingIntervalMs: 20000,
    deadAfterMs: 45000,
    pollTimeoutMs: 65000,
    shortPollDelayMs: 1000,
    renew: null,
    renewAheadMs: 60000,
});

/**
 * @typedef {object} PageConfig
 * @property {string} url server base, e.g. `http://127.0.0.1:8787`
 * @property {number} [user]
 * @property {string} usertoken
 * @property {string} [cursor] opaque; where the first (re)open starts
 * @property {number} [expires]
 * @property {{channel: string, token: string}[]} subscriptions
 * @property {string[]} [transports] preferred first; default websocket, sse, poll
 */
/**
 * @typedef {object} ClientOptions
 * @property {typeof fetch} [fetch]
 * @property {typeof WebSocket | null} [WebSocket] default the global one; null: none
 * @property {typeof EventSource | null} [EventSource] default the global one; null: none
 * @property {string[]} [transports] overrides the page config's list
 * @property {number} [backoffBaseMs] nominal delay before the first retry of an outage (500 ms), doubling
 * @property {number} [backoffMaxMs] largest nominal delay (20000 ms)
 * @property {number} [backoffJitter] each delay is the nominal one × [1 − j, 1 + j) (0.5)
 * @property {number} [maxRetries] consecutive failures of the last transport before a final
 *   CONNECTION_LOST `retries_exhausted` (default Infinity: never give up)
 * @property {number} [lostAfterMs] no open transport for this long fires CONNECTION_LOST `unreachable` (10000)
 * @property {number} [reconnectSpreadMs] 1012/4008 reopen after a delay uniform in [0, this) (1000)
 * @property {number} [fallbackAfter] consecutive failures of a transport that worked before the next is tried
 * @property {number} [climbAfterMs] time on a worse transport that works before the best is tried
 *   again (0: never); in an outage each retry starts from the best transport not blocked here
 * @property {number} [openTimeoutMs] a WebSocket or SSE handshake slower than this failed
 * @property {number} [pingIntervalMs] WebSocket ping interval
 * @property {number} [deadAfterMs] WebSocket silence after which the connection is given up
 * @property {number} [pollTimeoutMs] client-side cap on one poll request
 * @property {number} [shortPollDelayMs] least interval between polls answered without events
 * @property {() => number} [random]
 */

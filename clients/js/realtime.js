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

/** Topic of a server event; the listener gets the event object as sent by the server. */
export const EVENT = 'tool-realtime-event';
/** Topic fired once per outage past `lostAfterMs` (`reason: 'unreachable'`, `retrying: true`) and once on giving up (`retrying: false`): `{reason, retrying, code?, status?, message, transport}`. */
export const CONNECTION_LOST = 'tool-realtime-connection-lost';
/** Topic fired when the server could not replay missed events: reload state from the application. */
export const RECOVERY_FAILED = 'tool-realtime-recovery-failed';
/** Topic fired when the client starts using another transport: `{transport, previous, reason}`. */
export const TRANSPORT_CHANGED = 'tool-realtime-transport-changed';
/** Topic fired when a transport opens again after CONNECTION_LOST `unreachable`: `{transport, downMs, attempts}`. */
export const CONNECTION_RESTORED = 'tool-realtime-connection-restored';
/** Topic fired when `connectionState` changes: `{state, previous, transport, retrying}`. */
export const STATE_CHANGED = 'tool-realtime-state-changed';

const DEFAULTS = Object.freeze({
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

/** Renewals are at least this far apart (a client clock far ahead must not renew in a loop). */
const MIN_RENEW_INTERVAL_MS = 5000;

const DEFAULT_TRANSPORTS = Object.freeze(['websocket', 'sse', 'poll']);

/** A `Retry-After` longer than this (5 min) is taken as this. */
const RETRY_AFTER_MAX_MS = 300000;

/** HTTP statuses that are final: a refused credential, or a request that will be refused again as it is. */
const FINAL_STATUSES = Object.freeze({
    400: 'rejected', 401: 'credential_refused', 403: 'credential_refused',
    413: 'rejected', 414: 'rejected', 431: 'rejected',
});

/**
 * What an HTTP status means for the retry policy: `final` (with the reason for
 * CONNECTION_LOST: `credential_refused` or `rejected`) or transient (`server_error`).
 * Only 400, 401, 403, 413, 414 and 431 are final; any other status (408, 429,
 * 5xx, but also a 404 from a proxy in the middle of a deploy) is transient.
 * @param {number} status
 * @returns {{retryable: boolean, reason: string}}
 */
export function classifyStatus(status) {
    const reason = FINAL_STATUSES[status];
    return reason === undefined ? {retryable: true, reason: 'server_error'} : {retryable: false, reason};
}

/**
 * The delay before reconnect attempt `attempt` (1 for the first retry of an
 * outage): `min(backoffMaxMs, backoffBaseMs · 2^(attempt−1))`, times a factor
 * uniform in [1 − backoffJitter, 1 + backoffJitter); never less than the
 * server's `Retry-After` (taken up to 5 min), itself spread by up to
 * `backoffJitter` upwards so that clients told the same do not return together.
 * @param {number} attempt ≥ 1
 * @param {{backoffBaseMs: number, backoffMaxMs: number, backoffJitter: number}} options
 * @param {() => number} random uniform in [0, 1)
 * @param {number} [retryAfterMs]
 * @returns {number} ms
 */
export function backoffDelay(attempt, options, random, retryAfterMs) {
    const {backoffBaseMs, backoffMaxMs} = options;
    const jitter = Math.min(1, Math.max(0, Number(options.backoffJitter) || 0));
    const nominal = Math.min(backoffMaxMs, backoffBaseMs * 2 ** Math.min(Math.max(attempt, 1) - 1, 40));
    let delay = nominal * (1 - jitter + 2 * jitter * random());
    if (Number.isFinite(retryAfterMs) && retryAfterMs > 0) {
        delay = Math.max(delay, Math.min(retryAfterMs, RETRY_AFTER_MAX_MS) * (1 + jitter * random()));
    }
    return Math.max(0, Math.floor(delay));
}

/** `Retry-After` (seconds or an HTTP date) in ms, or undefined. @param {string|null|undefined} value */
function retryAfterMs(value) {
    if (value == null || value.trim() === '') {
        return undefined;
    }
    const seconds = Number(value);
    if (Number.isFinite(seconds)) {
        return seconds >= 0 ? seconds * 1000 : undefined;
    }
    const date = Date.parse(value);
    return Number.isFinite(date) ? Math.max(0, date - Date.now()) : undefined;
}

/**
 * Error raised by `sendToServer` and reported by transports.
 * `code` is the server's machine word (or `network_error`, `bad_response`,
 * `aborted`, `not_initialised`, `invalid_argument`, `http_<status>`,
 * `connection_lost`, `no_bidirectional_transport`, …);
 * `status` is the HTTP status (0 when there was no HTTP answer, e.g. over WebSocket).
 */
export class RealtimeError extends Error {
    /**
     * @param {string} message
     * @param {{code?: string, status?: number, reason?: string, retryable?: boolean, immediate?: boolean,
     *          answered?: boolean, retryAfterMs?: number, closeCode?: number, cause?: unknown}} [details]
     */
    constructor(message, details = {}) {
        super(message, details.cause === undefined ? undefined : {cause: details.cause});
        this.name = 'RealtimeError';
        this.code = details.code ?? 'error';
        this.status = details.status ?? 0;
        /** Why a transport failure happened: `network_error`, `server_error`, `credential_refused`, `rejected`. */
        this.reason = details.reason ?? 'rejected';
        /** Whether retrying later may succeed. */
        this.retryable = details.retryable ?? false;
        /** Whether to reopen at once rather than after a backoff (server draining, slow consumer). */
        this.immediate = details.immediate ?? false;
        /** Whether the server itself answered (an HTTP status, a close code it sent): the transport reaches it. */
        this.answered = details.answered ?? false;
        /** Server's Retry-After in ms, if it sent one. */
        this.retryAfterMs = details.retryAfterMs;
        /** The WebSocket close code, for failures of that transport. */
        this.closeCode = details.closeCode;
    }
}

/** @param {string} message @param {unknown} [cause] */
function networkError(message, cause) {
    return new RealtimeError(message, {code: 'network_error', reason: 'network_error', retryable: true, cause});
}

/** @param {string} message @param {number} [status] */
function badResponse(message, status = 0) {
    return new RealtimeError(message, {code: 'bad_response', status, reason: 'server_error', retryable: true});
}

/**
 * The error for an HTTP answer outside 2xx, classified for the retry policy.
 * @param {number} status @param {string} text the body @param {Headers} [headers]
 */
function httpError(status, text, headers) {
    let data;
    try {
        data = text === '' ? undefined : JSON.parse(text);
    } catch {
        data = undefined;
    }
    const info = isObject(data) && isObject(data.error) ? data.error : {};
    return new RealtimeError(
        typeof info.message === 'string' ? info.message : (text.slice(0, 200) || `HTTP ${status}`),
        {
            code: typeof info.code === 'string' ? info.code : `http_${status}`,
            status,
            ...classifyStatus(status),
            answered: true,
            retryAfterMs: retryAfterMs(headers?.get?.('retry-after')),
        },
    );
}

/**
 * POST `body` as JSON with a bearer token and return the parsed JSON answer.
 * Every failure becomes a RealtimeError classified for the retry policy.
 *
 * @param {typeof fetch} fetchFn
 * @param {string} url
 * @param {string} token
 * @param {unknown} body
 * @param {AbortSignal} [signal]
 * @returns {Promise<any>}
 */
async function postJson(fetchFn, url, token, body, signal) {
    let response;
    let text;
    try {
        response = await fetchFn(url, {
            method: 'POST',
            headers: {'Authorization': `Bearer ${token}`, 'Content-Type': 'application/json'},
            body: JSON.stringify(body),
            signal,
        });
        text = await response.text();
    } catch (err) {
        if (signal?.aborted) {
            throw abortedError(err);
        }
        throw networkError(`network error: ${err?.message ?? err}`, err);
    }
    const status = response.status;
    if (status < 200 || status > 299) {
        throw httpError(status, text, response.headers);
    }
    let data;
    try {
        data = JSON.parse(text);
    } catch {
        data = undefined;
    }
    if (!isObject(data)) {
        throw badResponse('answer is not a JSON object', status);
    }
    return data;
}

/** @param {unknown} [cause] */
function abortedError(cause) {
    return new RealtimeError('request aborted', {code: 'aborted', reason: 'aborted', cause});
}

/** @param {unknown} value @returns {value is Record<string, any>} */
function isObject(value) {
    return typeof value === 'object' && value !== null && !Array.isArray(value);
}

/** The `{channel, token}` pairs of the page config, as the server wants them. @param {PageConfig} config */
function subscriptionRefs(config) {
    return config.subscriptions.map((s) => ({channel: s.channel, token: s.token}));
}

/**
 * Long-polling transport: exactly one `POST {url}/poll` in flight; the next
 * starts as soon as an answer has been handed to the sink. Only an answer
 * without events that came back sooner than `shortPollDelayMs` (a server in
 * short-poll mode, or shutting down) delays the next poll to that interval.
 * It has no handshake: its first answer shows that it works.
 */
class PollTransport {
    static handshake = false;

    static available() {
        return true;
    }

    /**
     * @param {TransportContext} context
     * @param {TransportSink} sink
     */
    constructor(context, sink) {
        this.context = context;
        this.sink = sink;
        this.generation = 0;
        this.abort = null;
        this.pause = null;
    }

    /** Start polling from `cursor` (closes any previous run). @param {string|null} cursor */
    open(cursor) {
        this.close();
        this.loop(this.generation, cursor);
    }

    /** Stop polling and abort the request in flight; no sink call happens after this. */
    close() {
        this.generation += 1;
        this.abort?.abort();
        this.abort = null;
        if (this.pause) {
            clearTimeout(this.pause.timer);
            this.pause.resolve();
            this.pause = null;
        }
    }

    /** @param {number} generation @param {string|null} cursor */
    async loop(generation, cursor) {
        const {config, fetch: fetchFn, options: {pollTimeoutMs, shortPollDelayMs}} = this.context;
        // The first poll of a run asks for an answer at once (`wait: false`): the client learns
        // that polling works now, not at the first event or after the server's wait (30 s).
        let first = true;
        while (generation === this.generation) {
            const started = Date.now();
            const abort = new AbortController();
            this.abort = abort;
            let timedOut = false;
            const timer = setTimeout(() => { timedOut = true; abort.abort(); }, pollTimeoutMs);
            let answer;
            try {
                // The client's current credentials and channels, read at each poll: a renewal or
                // an added channel takes effect with the next request.
                answer = await postJson(fetchFn, `${config.url}/poll`, config.usertoken,
                    {subscriptions: subscriptionRefs(config), cursor, ...(first ? {wait: false} : {})}, abort.signal);
                if (!Array.isArray(answer.events) || typeof answer.cursor !== 'string') {
                    throw badResponse('poll answer lacks events or cursor', 200);
                }
            } catch (err) {
                clearTimeout(timer);
                if (generation !== this.generation) {
                    return; // closed meanwhile
                }
                this.close();
                this.sink.failure(timedOut ? networkError('poll timed out')
                    : err instanceof RealtimeError ? err
                        : new RealtimeError(`poll failed: ${err?.message ?? err}`, {code: 'client_error', cause: err}));
                return;
            }
            clearTimeout(timer);
            if (generation !== this.generation) {
                return;
            }
            cursor = answer.cursor;
            try {
                this.sink.batch(answer);
            } catch (err) {
                console.error('realtime: delivering a batch failed', err);
            }
            const rest = shortPollDelayMs - (Date.now() - started);
            const quick = first;
            first = false;
            if (!quick && answer.events.length === 0 && rest > 0 && generation === this.generation) {
                await new Promise((resolve) => { this.pause = {timer: setTimeout(resolve, rest), resolve}; });
                if (generation === this.generation) {
                    this.pause = null;
                }
            }
        }
    }
}

/** What WebSocket close codes mean for the policy (docs/protocol.md, "Close codes"). */
const CLOSE_CODES = Object.freeze({
    4001: {code: 'credential_refused', reason: 'credential_refused', retryable: false},
    4010: {code: 'token_expired', reason: 'credential_refused', retryable: false},
    4002: {code: 'bad_subscribe', reason: 'rejected', retryable: false},
    1012: {code: 'server_draining', reason: 'server_error', retryable: true, immediate: true},
    1013: {code: 'try_again_later', reason: 'server_error', retryable: true},
    4008: {code: 'slow_consumer', reason: 'server_error', retryable: true, immediate: true},
    4009: {code: 'no_heartbeat', reason: 'network_error', retryable: true},
    1009: {code: 'frame_too_large', reason: 'network_error', retryable: true},
});

/** Close codes no server sends: the browser reports them when the connection failed or dropped. */
const NETWORK_CLOSE_CODES = Object.freeze(new Set([1005, 1006, 1015]));

/**
 * Error codes a server may send in an `error` frame before a close it meant as
 * transient; an older server closed 4002 after `engine_unavailable`, so such a
 * close is treated as transient whatever its code.
 */
const TRANSIENT_ERROR_CODES = Object.freeze(new Set([
    'engine_unavailable', 'shutting_down', 'too_many_connections', 'rate_limited', 'internal',
]));

/**
 * What a WebSocket close means for the retry policy. Only 4001 (credential
 * refused) and 4002 (bad subscribe) are final, and 4002 not when the server's
 * `error` frame named a transient cause (e.g. `engine_unavailable`). 1012 and
 * 4008 are `immediate` (reopen after a small random delay); every other code
 * is transient. `answered` is false for 1005/1006/1015 (no close frame: the
 * network, not the server).
 * @param {number} closeCode
 * @param {{code?: string}|null} [errorFrame] the `error` of the frame that came before the close
 * @returns {{code: string, reason: string, retryable: boolean, immediate: boolean, answered: boolean}}
 */
export function classifyClose(closeCode, errorFrame) {
    const answered = !NETWORK_CLOSE_CODES.has(closeCode);
    const known = CLOSE_CODES[closeCode];
    const transientCause = typeof errorFrame?.code === 'string' && TRANSIENT_ERROR_CODES.has(errorFrame.code);
    if (closeCode === 4002 && transientCause) {
        return {code: errorFrame.code, reason: 'server_error', retryable: true, immediate: false, answered};
    }
    if (known) {
        return {immediate: false, ...known, answered};
    }
    return answered
        ? {code: `close_${closeCode}`, reason: 'server_error', retryable: true, immediate: false, answered}
        : {code: 'network_error', reason: 'network_error', retryable: true, immediate: false, answered};
}

/**
 * WebSocket transport, `GET {url}/ws` with JSON frames: sends `subscribe`
 * (user token, subscriptions, cursor) on open; `recovered`/`not_recovered`
 * complete the handshake; each `event` frame is a batch of one with its own
 * cursor. Sends `{"type":"ping"}` every `pingIntervalMs` and gives the
 * connection up when nothing at all arrived for `deadAfterMs`.
 *
 * The only bidirectional transport: `send()` writes a `send` frame with an id
 * of its own and resolves with the `reply` of that id (replies may come in any
 * order). Sends still waiting when the connection goes are rejected with
 * `connection_lost`, never resent: the handler may or may not have run.
 */
class WebSocketTransport {
    static handshake = true;

    /** @param {TransportContext} context */
    static available(context) {
        return typeof context.WebSocket === 'function';
    }

    /**
     * @param {TransportContext} context
     * @param {TransportSink} sink
     */
    constructor(context, sink) {
        this.context = context;
        this.sink = sink;
        this.generation = 0;
        this.socket = null;
        this.ready = false;
        this.lastError = null;
        this.heard = 0;
        this.pinger = null;
        this.watchdog = null;
        this.nextId = 0;
        /** @type {Map<number, {resolve: (value: any) => void, reject: (error: Error) => void}>} */
        this.pending = new Map();
    }

    /** Whether `send()` may be used: the subscribe handshake is done and the socket is open. */
    get canSend() {
        return this.ready;
    }

    /** Connect and subscribe from `cursor` (closes any previous connection). @param {string|null} cursor */
    open(cursor) {
        this.close();
        const generation = this.generation;
        const live = () => generation === this.generation;
        let socket;
        try {
            socket = new this.context.WebSocket(socketUrl(this.context.config.url));
        } catch (err) {
            queueMicrotask(() => live() && this.fail(networkError(`cannot open a WebSocket: ${err?.message ?? err}`, err)));
            return;
        }
        this.socket = socket;
        this.lastError = null;
        socket.onopen = () => {
            if (!live()) {
                return;
            }
            const {config} = this.context;
            this.write({type: 'subscribe', usertoken: config.usertoken, subscriptions: subscriptionRefs(config),
                ...(cursor === null ? {} : {cursor})});
            this.watch();
        };
        socket.onmessage = (message) => { if (live()) this.receive(message.data); };
        // Browsers follow `error` with `close` (1006); some implementations (Node 20) do not.
        socket.onerror = () => { if (live()) this.fail(networkError('the WebSocket failed')); };
        socket.onclose = (event) => { if (live()) this.fail(this.closeError(event)); };
    }

    /** Close the connection; rejects the sends still waiting. No sink call happens after this. */
    close() {
        this.generation += 1;
        this.ready = false;
        clearInterval(this.pinger);
        clearTimeout(this.watchdog);
        this.pinger = null;
        this.watchdog = null;
        const socket = this.socket;
        this.socket = null;
        if (socket) {
            socket.onopen = socket.onmessage = socket.onerror = socket.onclose = null;
            try {
                socket.close(1000);
            } catch {
                // already closing
            }
        }
        const waiting = [...this.pending.values()];
        this.pending.clear();
        for (const {reject} of waiting) {
            reject(new RealtimeError('the connection was lost before the reply came; the send may or may not '
                + 'have been handled, so it is not resent', {code: 'connection_lost', reason: 'network_error'}));
        }
    }

    /**
     * Send to a component's handler over this connection.
     * @param {string} component @param {unknown} payload @param {AbortSignal} [signal]
     * @returns {Promise<any>} the `response` of the reply
     */
    send(component, payload, signal) {
        return this.request({type: 'send', component, payload}, signal);
    }

    /**
     * Add channels to this connection, or renew their tokens (and, with `usertoken`, the user's):
     * a later `subscribe` frame, answered by `subscribed` or an `error` of the same id. With
     * `cursor`, the server moves the connection back to it (an added channel's backlog).
     * @param {{channel: string, token: string}[]} subscriptions
     * @param {{usertoken?: string, cursor?: string}} [extra]
     * @returns {Promise<any>} the `subscribed` frame
     */
    subscribe(subscriptions, extra = {}) {
        return this.request({type: 'subscribe', subscriptions, ...withoutUndefined(extra)});
    }

    /** Drop channels from this connection. @param {string[]} channels @returns {Promise<any>} */
    unsubscribe(channels) {
        return this.request({type: 'unsubscribe', channels});
    }

    /**
     * Write `frame` with a new `id` and resolve with the answer of that id (`reply`: its
     * `response`; `subscribed`/`unsubscribed`: the frame), or reject with its `error`.
     * @param {object} frame @param {AbortSignal} [signal]
     */
    request(frame, signal) {
        const id = ++this.nextId;
        return new Promise((resolve, reject) => {
            if (signal?.aborted) {
                reject(abortedError());
                return;
            }
            const onAbort = () => { if (this.pending.delete(id)) reject(abortedError()); };
            const settle = (fn) => (value) => { signal?.removeEventListener('abort', onAbort); fn(value); };
            signal?.addEventListener('abort', onAbort, {once: true});
            this.pending.set(id, {resolve: settle(resolve), reject: settle(reject)});
            this.write({...frame, id});
        });
    }

    /** @param {object} frame */
    write(frame) {
        this.socket?.send(JSON.stringify(frame));
    }

    /** Ping every `pingIntervalMs`; fail when nothing was heard for `deadAfterMs`. */
    watch() {
        const {pingIntervalMs, deadAfterMs} = this.context.options;
        this.heard = Date.now();
        this.pinger = setInterval(() => this.write({type: 'ping'}), pingIntervalMs);
        const check = () => {
            const quiet = Date.now() - this.heard;
            if (quiet >= deadAfterMs) {
                this.fail(new RealtimeError(`nothing heard on the WebSocket for ${quiet} ms`,
                    {code: 'dead_connection', reason: 'network_error', retryable: true}));
            } else {
                this.watchdog = setTimeout(check, deadAfterMs - quiet);
            }
        };
        this.watchdog = setTimeout(check, deadAfterMs);
    }

    /** @param {unknown} data a text frame */
    receive(data) {
        this.heard = Date.now();
        let frame;
        try {
            frame = JSON.parse(String(data));
        } catch {
            frame = undefined;
        }
        if (!isObject(frame)) {
            this.fail(badResponse('a WebSocket frame is not a JSON object'));
            return;
        }
        switch (frame.type) {
        case 'recovered':
        case 'not_recovered':
            if (typeof frame.cursor !== 'string') {
                this.fail(badResponse(`a ${frame.type} frame without cursor`));
                return;
            }
            this.ready = true;
            this.sink.batch({events: [], cursor: frame.cursor, recovered: frame.type === 'recovered'});
            return;
        case 'event':
            if (typeof frame.cursor !== 'string' || !isObject(frame.event)) {
                this.fail(badResponse('an event frame without cursor or event'));
                return;
            }
            this.sink.batch({events: [frame.event], cursor: frame.cursor});
            return;
        case 'reply':
        case 'subscribed':
        case 'unsubscribed': {
            const waiting = this.pending.get(frame.id);
            if (!waiting) {
                return; // aborted by the page meanwhile
            }
            this.pending.delete(frame.id);
            if (isObject(frame.error)) {
                waiting.reject(new RealtimeError(String(frame.error.message ?? 'the send was refused'),
                    {code: String(frame.error.code ?? 'error')}));
            } else {
                waiting.resolve(frame.type === 'reply' ? frame.response : frame);
            }
            return;
        }
        case 'error': {
            // The refusal of a frame of ours with an id (the connection stays); else a bad frame
            // of ours, or the reason of the close that follows.
            const waiting = frame.id === undefined ? undefined : this.pending.get(frame.id);
            if (waiting) {
                this.pending.delete(frame.id);
                const info = isObject(frame.error) ? frame.error : {};
                waiting.reject(new RealtimeError(String(info.message ?? 'refused'),
                    {code: String(info.code ?? 'error'), ...(info.code === 'token_expired' ? {status: 401} : {})}));
                return;
            }
            this.lastError = isObject(frame.error) ? frame.error : null;
            return;
        }
        default:
            // `pong`, and frame types a newer server may add.
        }
    }

    /** @param {{code: number, reason?: string}} event */
    closeError(event) {
        const meaning = classifyClose(event.code, this.lastError);
        const said = this.lastError;
        return new RealtimeError(
            String(said?.message ?? (event.reason || `the WebSocket closed with code ${event.code}`)),
            {...meaning, code: String(said?.code ?? meaning.code), closeCode: event.code},
        );
    }

    /** @param {RealtimeError} error */
    fail(error) {
        this.close();
        this.sink.failure(error);
    }
}

/** `ws(s)://…/ws` from the server's http(s) base URL. @param {string} base */
function socketUrl(base) {
    const url = new URL(`${base}/ws`, globalThis.location?.href);
    url.protocol = url.protocol === 'https:' ? 'wss:' : 'ws:';
    return url.href;
}

/**
 * Server-Sent Events transport, `GET {url}/sse?usertoken=…&channel=…&token=…&cursor=…`.
 * Each default message is an event whose `lastEventId` is its cursor;
 * `not_recovered` is a named event. On any error it closes the EventSource
 * itself (so the client resumes from its own cursor, on its own schedule,
 * rather than the browser from Last-Event-ID); when the stream failed before
 * it ever opened it `fetch`es the same URL once to learn the status, which
 * EventSource hides (401/403: credential refused; other 4xx: rejected).
 */
class SseTransport {
    static handshake = true;

    /** @param {TransportContext} context */
    static available(context) {
        return typeof context.EventSource === 'function';
    }

    /**
     * @param {TransportContext} context
     * @param {TransportSink} sink
     */
    constructor(context, sink) {
        this.context = context;
        this.sink = sink;
        this.generation = 0;
        this.source = null;
        this.probe = null;
    }

    /** Open the stream from `cursor` (closes any previous one). @param {string|null} cursor */
    open(cursor) {
        this.close();
        const generation = this.generation;
        const live = () => generation === this.generation;
        const url = streamUrl(this.context.config, cursor);
        let source;
        try {
            source = new this.context.EventSource(url);
        } catch (err) {
            queueMicrotask(() => live() && this.fail(networkError(`cannot open an EventSource: ${err?.message ?? err}`, err)));
            return;
        }
        this.source = source;
        let opened = false;
        source.onopen = () => {
            if (live()) {
                opened = true;
                this.sink.opened();
            }
        };
        source.onmessage = (message) => { if (live()) this.deliver(message, true); };
        source.addEventListener('not_recovered', (message) => { if (live()) this.deliver(message, false); });
        // The first of the stream's tokens expired: renew, then reconnect (the stream ends).
        source.addEventListener('token_expired', (message) => {
            if (!live()) {
                return;
            }
            let said;
            try {
                said = JSON.parse(message.data)?.error;
            } catch {
                said = undefined;
            }
            this.fail(new RealtimeError(String(said?.message ?? 'the token has expired'),
                {code: 'token_expired', status: 401, reason: 'credential_refused', answered: true}));
        });
        source.onerror = () => {
            if (!live()) {
                return;
            }
            this.closeSource();
            if (opened) {
                this.fail(networkError('the event stream was interrupted'));
            } else {
                this.learnWhy(url, generation);
            }
        };
    }

    /** Close the stream and any status probe; no sink call happens after this. */
    close() {
        this.generation += 1;
        this.closeSource();
        this.probe?.abort();
        this.probe = null;
    }

    closeSource() {
        const source = this.source;
        this.source = null;
        if (source) {
            source.onopen = source.onmessage = source.onerror = null;
            source.close();
        }
    }

    /** @param {MessageEvent} message @param {boolean} recovered */
    deliver(message, recovered) {
        let data;
        try {
            data = JSON.parse(message.data);
        } catch {
            data = undefined;
        }
        const cursor = recovered ? message.lastEventId : data?.cursor ?? message.lastEventId;
        if (!isObject(data) || typeof cursor !== 'string' || cursor === '') {
            this.fail(badResponse('an SSE message without JSON data or id'));
        } else if (recovered) {
            this.sink.batch({events: [data], cursor});
        } else {
            this.sink.batch({events: [], cursor, recovered: false});
        }
    }

    /** The stream failed before it opened: one plain GET tells why. @param {string} url @param {number} generation */
    async learnWhy(url, generation) {
        const probe = new AbortController();
        this.probe = probe;
        let error;
        try {
            const response = await this.context.fetch(url, {headers: {Accept: 'text/event-stream'}, signal: probe.signal});
            if (response.ok) {
                probe.abort(); // the stream opens for fetch: what failed was on the way (a proxy, a blip)
                error = networkError('the event stream failed to open');
            } else {
                error = httpError(response.status, await response.text(), response.headers);
            }
        } catch (err) {
            error = networkError(`the event stream failed to open: ${err?.message ?? err}`, err);
        }
        if (generation === this.generation) {
            this.fail(error);
        }
    }

    /** @param {RealtimeError} error */
    fail(error) {
        this.close();
        this.sink.failure(error);
    }
}

/** @param {PageConfig} config @param {string|null} cursor */
function streamUrl(config, cursor) {
    const query = new URLSearchParams({usertoken: config.usertoken});
    for (const {channel, token} of config.subscriptions) {
        query.append('channel', channel);
        query.append('token', token);
    }
    if (cursor !== null) {
        query.append('cursor', cursor);
    }
    return `${config.url}/sse?${query}`;
}

/** Available transports by the names used in the page config's `transports`. */
const TRANSPORTS = Object.freeze({websocket: WebSocketTransport, sse: SseTransport, poll: PollTransport});

/** Topic → listeners, with listener errors contained. */
class Hub {
    constructor() {
        /** @type {Map<string, Set<Function>>} */
        this.topics = new Map();
    }

    /** @param {string} topic @param {Function} listener @returns {() => void} */
    subscribe(topic, listener) {
        if (typeof listener !== 'function') {
            throw new TypeError('listener must be a function');
        }
        // Wrap so the same function may be subscribed twice and removed independently.
        const entry = (data) => listener(data);
        if (!this.topics.has(topic)) {
            this.topics.set(topic, new Set());
        }
        this.topics.get(topic).add(entry);
        return () => { this.topics.get(topic)?.delete(entry); };
    }

    /** @param {string} topic @param {unknown} data */
    publish(topic, data) {
        for (const entry of [...(this.topics.get(topic) ?? [])]) {
            try {
                entry(data);
            } catch (err) {
                console.error(`realtime: a listener of ${topic} threw`, err);
            }
        }
    }
}

/**
 * One connection of a page to the server. Create with `createClient`; it does
 * nothing until `start()`.
 */
class RealtimeClient {
    #config;
    /** @type {Required<ClientOptions>} */
    #options;
    /** @type {TransportContext} */
    #context;
    #hub;
    /** Usable transport names, best first. @type {string[]} */
    #names;
    #index = 0;
    #forced = null;
    #transport = null;
    /** The current attempt has opened. */
    #opened = false;
    /** The current transport has opened at least once since the client chose it. */
    #worked = false;
    /** Consecutive failures of the current transport since the client chose it (for `fallbackAfter`). */
    #failures = 0;
    /** Consecutive failures of the last (or forced) transport since one opened (for `maxRetries`). */
    #lastFailures = 0;
    /** Backoff attempts of the current outage, across transports (reset when one opens). */
    #attempts = 0;
    /**
     * Transports taken as blocked here, until they open again: they failed to open with no answer
     * while a worse one then opened at its first try (so the server was there).
     * @type {Set<string>}
     */
    #blocked = new Set();
    /** Transports that failed to open with no answer since the client last went down from the best candidate. @type {Set<string>} */
    #passFailed = new Set();
    /** Transports that have opened on this page at least once: they are not blocked here. @type {Set<string>} */
    #everOpened = new Set();
    /** Transports that worked here, tried again once after an outage ended on a worse one. @type {Set<string>} */
    #recheck = new Set();
    #cursor;
    /** Highest event id delivered per channel (by the event's channel fields): de-duplication. @type {Map<string, number>} */
    #seen = new Map();
    /** Channels dropped by `unsubscribe()`: their events still on the way are not delivered. @type {Set<string>} */
    #dropped = new Set();
    /** Added channels whose backlog the WebSocket is asked for: the cursor stays put until the server has it. */
    #rewinds = 0;
    /** Counts opens, so that an answer to a frame of an earlier connection changes nothing. */
    #opens = 0;
    /** Added channels waiting for the (re)opened transport to take them. @type {{channel: string, resolve: Function, reject: Function}[]} */
    #pendingAdds = [];
    #renewTimer = null;
    /** The renewal in flight. @type {Promise<void>|null} */
    #renewing = null;
    /** The server said a token expired: renew before the next open. */
    #needRenew = false;
    #lastRenewAt = -Infinity;
    /** Counts renewals applied, and the count the current transport attempt was opened with. */
    #credentials = 0;
    #openedWith = 0;
    #renewFailures = 0;
    #state = 'idle';
    /** `connecting`, `connected` or `disconnected`. */
    #connection = 'disconnected';
    /** When the current outage began (ms), or null while connected. */
    #outageSince = null;
    /** CONNECTION_LOST `unreachable` fired for the current outage. */
    #outageReported = false;
    /** The last failure of the current outage. @type {RealtimeError|null} */
    #lastError = null;
    #retryTimer = null;
    #openTimer = null;
    #climbTimer = null;
    #lostTimer = null;
    #lost = false;

    /**
     * @param {PageConfig} config
     * @param {ClientOptions} [options]
     * @param {Hub} [hub] listeners to use (the module-level API shares one)
     */
    constructor(config, options = {}, hub = new Hub()) {
        if (!isObject(config) || typeof config.url !== 'string' || typeof config.usertoken !== 'string'
            || !Array.isArray(config.subscriptions)) {
            throw new TypeError('realtime: page config needs url, usertoken and subscriptions');
        }
        if (options.renew != null && typeof options.renew !== 'function') {
            throw new TypeError('realtime: options.renew must be a function returning a page config');
        }
        // A copy the client owns: renewals and subscribe()/unsubscribe() change it, and the
        // transports read it at each (re)open and poll.
        this.#config = {
            ...config,
            url: config.url.replace(/\/+$/, ''),
            subscriptions: config.subscriptions.filter(isObject).map((sub) => ({...sub})),
        };
        this.#options = {
            ...DEFAULTS,
            random: Math.random,
            fetch: (input, init) => globalThis.fetch(input, init),
            ...withoutUndefined(options),
        };
        this.#context = {
            config: this.#config,
            options: this.#options,
            fetch: this.#options.fetch,
            WebSocket: 'WebSocket' in this.#options ? this.#options.WebSocket : globalThis.WebSocket,
            EventSource: 'EventSource' in this.#options ? this.#options.EventSource : globalThis.EventSource,
        };
        this.#hub = hub;
        this.#cursor = typeof config.cursor === 'string' ? config.cursor : null;
        const wanted = [this.#options.transports, config.transports, DEFAULT_TRANSPORTS].find(Array.isArray);
        this.#names = wanted.filter((name, i) => wanted.indexOf(name) === i && Object.hasOwn(TRANSPORTS, name)
            && TRANSPORTS[name].available(this.#context));
        if (this.#names.length === 0) {
            throw new RealtimeError(`realtime: no usable transport in ${JSON.stringify(wanted)}`, {code: 'no_transport'});
        }
    }

    /** `idle` (never started), `running`, `stopped` (by `stop()`) or `lost` (gave up; final). */
    get state() {
        return this.#state;
    }

    /**
     * For a status badge: `connected` (a transport is open), `connecting` (opening
     * one, or waiting to retry, for less than `lostAfterMs`), `disconnected` (an
     * outage past `lostAfterMs`, still retrying; or not started, stopped, or given up).
     * STATE_CHANGED fires on each change.
     */
    get connectionState() {
        return this.#connection;
    }

    /** The cursor the next (re)open sends. */
    get cursor() {
        return this.#cursor;
    }

    /** The channels the client receives now (copies of their subscriptions, with their current tokens). */
    get subscriptions() {
        return this.#config.subscriptions.map((sub) => ({...sub}));
    }

    /** When the first of the client's tokens expires (Unix ms, by the tokens), or null when unknown. */
    get expires() {
        const times = [this.#config.usertoken, ...this.#config.subscriptions.map((sub) => sub.token)]
            .map(tokenExpiry).filter(Number.isFinite);
        if (times.length === 0 && Number.isFinite(this.#config.expires)) {
            times.push(this.#config.expires);
        }
        return times.length === 0 ? null : Math.min(...times) * 1000;
    }

    /** The transport in use (or being opened, or to be used by `start()`): `websocket`, `sse` or `poll`. */
    get transport() {
        return this.#names[this.#index];
    }

    /** The transports this client may use, best first. */
    get transports() {
        return [...this.#names];
    }

    /** The transport forced by `force()`, or null. */
    get forced() {
        return this.#forced;
    }

    /**
     * Two uses, as in tool_realtime:
     * - `subscribe(topic, listener)`: listen to a topic (EVENT, CONNECTION_LOST, CONNECTION_RESTORED,
     *   STATE_CHANGED, RECOVERY_FAILED, TRANSPORT_CHANGED); returns the function that stops listening.
     * - `subscribe(subscription)`: receive one more channel, with the subscription the application
     *   got from `POST /api/subscribe` (`channel`, `token`, `cursor` and the channel's fields). Its
     *   events after its own `cursor` are delivered once, merged with the others; nothing is
     *   replayed for the channels already there. A subscription for a channel the client has
     *   renews its token. Returns a promise settled when the server has taken it (rejected, and
     *   the channel not added, when it refuses the token); the events flow meanwhile.
     * @param {string|Subscription} topic @param {(data: any) => void} [listener]
     * @returns {(() => void) | Promise<void>}
     */
    subscribe(topic, listener) {
        if (isObject(topic)) {
            return this.#add(topic);
        }
        return this.#hub.subscribe(topic, listener);
    }

    /**
     * Stop receiving a channel (its hash, or its subscription). Its events still on the way are
     * not delivered. The last channel cannot be dropped (use `stop()`).
     * @param {string|Subscription} channel
     * @returns {Promise<void>}
     */
    unsubscribe(channel) {
        const hash = isObject(channel) ? channel.channel : channel;
        const held = this.#config.subscriptions;
        const at = held.findIndex((sub) => sub.channel === hash);
        if (at < 0) {
            return Promise.resolve();
        }
        if (held.length === 1) {
            return Promise.reject(new RealtimeError('the last channel cannot be dropped; stop() the client instead',
                {code: 'invalid_argument'}));
        }
        const [sub] = held.splice(at, 1);
        const key = subscriptionKey(sub);
        if (key !== null) {
            this.#dropped.add(key);
            this.#seen.delete(key);
        }
        this.#settleAdds((add) => add.channel === hash, new RealtimeError('unsubscribed before the server took it',
            {code: 'aborted', reason: 'aborted'}));
        if (this.#state !== 'running') {
            return Promise.resolve();
        }
        if (this.#transport?.canSend) {
            return this.#transport.unsubscribe([hash]).then(() => undefined, (err) => {
                // The channel is gone on our side anyway; the connection keeps it until it reopens.
                console.warn('realtime: the server did not take an unsubscribe', err);
            });
        }
        this.#reopenForChange();
        return Promise.resolve();
    }

    /** Start (or resume after `stop()`) receiving events. No effect once lost. @returns {this} */
    start() {
        if (this.#state === 'idle' || this.#state === 'stopped') {
            this.#state = 'running';
            this.#scheduleRenew();
            this.#beginOutage();
            if (this.#transport === null) {
                this.#use(this.#index, 'start');
            } else {
                this.#open();
            }
        }
        return this;
    }

    /** Stop receiving events: closes the transport and cancels any pending retry. */
    stop() {
        if (this.#state === 'running' || this.#state === 'idle') {
            this.#state = 'stopped';
        }
        this.#clearTimers();
        clearTimeout(this.#lostTimer);
        this.#lostTimer = null;
        clearTimeout(this.#renewTimer);
        this.#renewTimer = null;
        this.#transport?.close();
        this.#setConnection('disconnected');
    }

    /**
     * Use only transport `name` from now on (no fallback, no climbing back; its
     * failures count towards `maxRetries`), resuming from the cursor; `null`
     * returns to the automatic choice, starting again from the best transport.
     * @param {string|null} name one of `transports`
     * @returns {this}
     */
    force(name) {
        const index = name === null || name === undefined ? 0 : this.#names.indexOf(name);
        if (index < 0) {
            throw new RealtimeError(`realtime: transport ${JSON.stringify(name)} is not one of ${JSON.stringify(this.#names)}`,
                {code: 'no_transport'});
        }
        this.#forced = name ?? null;
        if (index !== this.#index || this.#transport === null) {
            if (this.#state !== 'lost') {
                this.#use(index, 'forced'); // opens it only if running; start() does otherwise
            }
        } else {
            clearTimeout(this.#climbTimer); // forced: stay
            this.#climbTimer = null;
        }
        return this;
    }

    /**
     * Send `payload` to the application's handler of `component`: over the
     * WebSocket when one is open (a `send` frame, answered by the `reply` of
     * the same id), else `POST /send`. With `noFallback`, no open WebSocket
     * rejects with `no_bidirectional_transport` instead. A send waiting for its
     * reply when the socket goes is rejected with `connection_lost`, not
     * resent: the handler may have run.
     * @param {string} component @param {unknown} payload
     * @param {{noFallback?: boolean, signal?: AbortSignal}} [options]
     * @returns {Promise<any>} the handler's `response`
     */
    async sendToServer(component, payload, options = {}) {
        if (typeof component !== 'string' || component === '') {
            throw new RealtimeError('component must be a non-empty string', {code: 'invalid_argument'});
        }
        const body = payload === undefined ? null : payload;
        if (this.#state === 'running' && this.#transport?.canSend) {
            return this.#transport.send(component, body, options.signal);
        }
        if (options.noFallback) {
            throw new RealtimeError('no open WebSocket to send over, and noFallback was asked',
                {code: 'no_bidirectional_transport'});
        }
        const post = () => postJson(this.#options.fetch, `${this.#config.url}/send`, this.#config.usertoken,
            {component, payload: body}, options.signal);
        try {
            return (await post()).response;
        } catch (err) {
            if (err?.code !== 'token_expired' || typeof this.#options.renew !== 'function' || this.#state === 'lost') {
                throw err;
            }
            await this.#renew('expired');
            return (await post()).response;
        }
    }

    /** Add (or renew the token of) one channel: see `subscribe(subscription)`. @param {Subscription} subscription */
    #add(subscription) {
        if (typeof subscription.channel !== 'string' || typeof subscription.token !== 'string') {
            return Promise.reject(new RealtimeError('a subscription needs `channel` and `token`, as POST /api/subscribe '
                + 'answers', {code: 'invalid_argument'}));
        }
        if (this.#state === 'lost') {
            return Promise.reject(new RealtimeError('the client has given up', {code: 'connection_lost'}));
        }
        const sub = {...subscription};
        const held = this.#config.subscriptions;
        const at = held.findIndex((s) => s.channel === sub.channel);
        if (at >= 0) {
            // A channel the client has: a new token for it, nothing replayed.
            held[at] = {...held[at], token: sub.token, ...(sub.expires === undefined ? {} : {expires: sub.expires})};
            this.#scheduleRenew();
            if (this.#state === 'running' && this.#transport?.canSend) {
                return this.#transport.subscribe([{channel: sub.channel, token: sub.token}]).then(() => undefined);
            }
            if (this.#state === 'running' && this.transport === 'sse') {
                this.#reopenForChange();
            }
            return Promise.resolve();
        }
        // Its events after its own cursor: those up to it were before the application minted it
        // (skipped by the de-duplication), and those between it and the client's cursor are
        // replayed by moving the cursor back; the other channels' repeats are skipped by id.
        const key = subscriptionKey(sub);
        const from = parseCursor(sub.cursor);
        const now = parseCursor(this.#cursor);
        const sameEpoch = from !== null && now !== null && from.epoch === now.epoch;
        if (key !== null) {
            this.#dropped.delete(key);
            this.#seen.delete(key);
            if (sameEpoch) {
                this.#seen.set(key, from.id);
            }
        }
        const rewind = sameEpoch && from.id < now.id ? sub.cursor : null;
        held.push(sub);
        if (rewind !== null) {
            this.#cursor = rewind;
        }
        if (this.#state !== 'running') {
            return Promise.resolve(); // start() opens with it
        }
        const ref = {channel: sub.channel, token: sub.token};
        if (this.#transport?.canSend) {
            const transport = this.#transport;
            const opens = this.#opens;
            if (rewind !== null) {
                this.#rewinds += 1;
            }
            const settled = () => {
                if (rewind !== null && this.#opens === opens && this.#rewinds > 0) {
                    this.#rewinds -= 1;
                }
            };
            return transport.subscribe([ref], rewind === null ? {} : {cursor: rewind}).then(() => { settled(); }, (err) => {
                settled();
                if (err?.code === 'connection_lost') {
                    return undefined; // the reconnect carries it, from the cursor moved back
                }
                this.#forget(sub);
                throw err;
            });
        }
        return new Promise((resolve, reject) => {
            this.#pendingAdds.push({channel: sub.channel, resolve, reject});
            this.#reopenForChange();
        });
    }

    /** Remove an added channel the server refused. @param {Subscription} sub */
    #forget(sub) {
        const held = this.#config.subscriptions;
        const at = held.indexOf(sub);
        if (at >= 0 && held.length > 1) {
            held.splice(at, 1);
        }
        const key = subscriptionKey(sub);
        if (key !== null) {
            this.#seen.delete(key);
        }
    }

    /** Settle the pending adds that `which` selects: resolved, or rejected with `error`. */
    #settleAdds(which, error) {
        const settle = this.#pendingAdds.filter(which);
        this.#pendingAdds = this.#pendingAdds.filter((add) => !which(add));
        for (const add of settle) {
            if (error) {
                add.reject(error);
            } else {
                add.resolve();
            }
        }
    }

    /**
     * The channels or credentials changed while no WebSocket can take a frame: reopen the transport
     * from the cursor with them, unless a retry is already waiting (it will use them).
     */
    #reopenForChange() {
        // Waiting for a retry, or for fresh credentials before an open: that open takes them.
        if (this.#state === 'running' && this.#retryTimer === null && !this.#needRenew) {
            this.#open();
        }
    }

    /** Renew the credentials `renewAheadMs` (at most a fifth of their remaining life) before they expire. */
    #scheduleRenew() {
        clearTimeout(this.#renewTimer);
        this.#renewTimer = null;
        const expires = this.expires;
        if (typeof this.#options.renew !== 'function' || this.#state !== 'running' || expires === null) {
            return;
        }
        const left = expires - Date.now();
        const lead = Math.min(this.#options.renewAheadMs, Math.max(0, left) / 5);
        const delay = Math.max(0, left - lead, this.#lastRenewAt + MIN_RENEW_INTERVAL_MS - Date.now());
        this.#renewTimer = setTimeout(() => {
            this.#renewTimer = null;
            // Already past the expiry (a page opened from a cache, a laptop that slept): `expired`.
            this.#renew(Date.now() >= expires ? 'expired' : 'expiring').catch((err) => {
                if (this.#state !== 'running') {
                    return; // given up (the renew function gave nothing), or stopped
                }
                // Try again with backoff; if the tokens expire meanwhile the server says so and
                // the client renews before reconnecting.
                this.#renewFailures += 1;
                console.warn('realtime: renewing the credentials failed; trying again', err);
                if (this.#state === 'running' && this.#renewTimer === null && this.#renewing === null) {
                    this.#renewTimer = setTimeout(() => { this.#renewTimer = null; this.#scheduleRenew(); },
                        backoffDelay(this.#renewFailures, this.#options, this.#options.random));
                }
            });
        }, Math.min(delay, 2147483647));
    }

    /**
     * Ask the application for fresh credentials (`options.renew`), once at a time, and use them.
     * Resolves when they are in use; rejects when the function failed (the caller retries).
     * @param {'expiring'|'expired'} reason
     * @returns {Promise<void>}
     */
    #renew(reason) {
        if (this.#renewing === null) {
            this.#renewing = (async () => {
                try {
                    const fresh = await this.#options.renew({reason, subscriptions: this.subscriptions});
                    if (this.#state === 'lost') {
                        return;
                    }
                    if (fresh === null || fresh === undefined) {
                        this.#lose({reason: 'credential_refused', code: 'renew_refused',
                            message: 'the renew function gave no credentials (the user may have logged out)'});
                        throw new RealtimeError('no credentials from the renew function', {code: 'renew_refused'});
                    }
                    this.#applyRenewal(fresh);
                } finally {
                    this.#renewing = null;
                    this.#lastRenewAt = Date.now();
                }
            })();
        }
        return this.#renewing;
    }

    /** Use the credentials of a renewed page config. @param {any} fresh */
    #applyRenewal(fresh) {
        if (!isObject(fresh) || typeof fresh.usertoken !== 'string' || !Array.isArray(fresh.subscriptions)) {
            throw new RealtimeError('the renew function must return a page config (usertoken, subscriptions)',
                {code: 'bad_renewal'});
        }
        const tokens = new Map(fresh.subscriptions
            .filter((sub) => isObject(sub) && typeof sub.channel === 'string' && typeof sub.token === 'string')
            .map((sub) => [sub.channel, sub.token]));
        const held = this.#config.subscriptions;
        const kept = held.filter((sub) => tokens.has(sub.channel));
        if (kept.length === 0) {
            throw new RealtimeError('the renewed page config has no token for any channel of the client',
                {code: 'bad_renewal'});
        }
        const gone = held.filter((sub) => !tokens.has(sub.channel));
        for (const sub of gone) {
            console.warn(`realtime: the renewed config has no token for channel ${sub.channel}; it is dropped`);
            const key = subscriptionKey(sub);
            if (key !== null) {
                this.#dropped.add(key);
                this.#seen.delete(key);
            }
        }
        this.#config.subscriptions = kept.map((sub) => ({...sub, token: tokens.get(sub.channel)}));
        this.#config.usertoken = fresh.usertoken;
        if (Number.isFinite(fresh.expires)) {
            this.#config.expires = fresh.expires;
        }
        this.#needRenew = false;
        this.#renewFailures = 0;
        this.#lastRenewAt = Date.now();
        this.#credentials += 1;
        this.#scheduleRenew();
        // The live connection: a WebSocket takes the tokens in a frame; an SSE stream is reopened
        // from the cursor; a poll sends them with its next request.
        if (this.#state !== 'running' || !this.#opened) {
            return;
        }
        if (this.#transport?.canSend) {
            const transport = this.#transport;
            transport.subscribe(subscriptionRefs(this.#config), {usertoken: fresh.usertoken})
                .then(() => (gone.length > 0 ? transport.unsubscribe(gone.map((sub) => sub.channel)) : undefined))
                .catch((err) => console.warn('realtime: the server did not take the renewed tokens', err));
        } else if (this.transport === 'sse') {
            this.#open();
        }
    }

    /** Switch to transport `index` (closing the current one) and, if running, open it from the cursor. */
    #use(index, reason) {
        const previous = this.#transport === null ? null : this.transport;
        this.#transport?.close();
        this.#clearTimers();
        this.#index = index;
        const Transport = TRANSPORTS[this.transport];
        const transport = new Transport(this.#context, {
            opened: () => { if (this.#transport === transport) this.#onOpened(); },
            batch: (answer) => { if (this.#transport === transport) this.#onBatch(answer); },
            failure: (error) => { if (this.#transport === transport) this.#onFailure(error); },
        });
        this.#transport = transport;
        this.#worked = false;
        this.#failures = 0;
        if (reason !== 'fallback') {
            this.#passFailed.clear();
        }
        if (reason === 'forced' || reason === 'start') {
            this.#lastFailures = 0;
        }
        if (this.#state === 'running') {
            this.#beginOutage(); // a switch closes what was open: connecting until the new one opens
        }
        this.#hub.publish(TRANSPORT_CHANGED, {transport: this.transport, previous, reason});
        if (this.#state === 'running' && this.#transport === transport) {
            this.#open();
        }
    }

    /** (Re)open the current transport from the cursor; a handshake must succeed within `openTimeoutMs`. */
    #open() {
        this.#opened = false;
        if (this.#needRenew && typeof this.#options.renew === 'function') {
            // The server said a token expired: fresh credentials first.
            const transport = this.#transport;
            clearTimeout(this.#openTimer);
            this.#openTimer = null;
            transport.close();
            this.#renew('expired').then(() => {
                if (this.#transport === transport && this.#state === 'running' && !this.#needRenew) {
                    this.#open();
                }
            }, (err) => {
                if (this.#transport === transport && this.#state === 'running') {
                    this.#onFailure(new RealtimeError(`renewing the credentials failed: ${err?.message ?? err}`, {
                        code: err?.code === 'bad_renewal' ? 'bad_renewal' : 'renew_failed', reason: 'server_error',
                        retryable: true, answered: true, cause: err,
                    }));
                }
            });
            return;
        }
        // The transport is opened from `#cursor`, and what it answers comes after: an added
        // channel's cursor moved back is in it.
        this.#rewinds = 0;
        this.#opens += 1;
        this.#openedWith = this.#credentials;
        clearTimeout(this.#openTimer);
        this.#openTimer = null;
        const transport = this.#transport;
        if (TRANSPORTS[this.transport].handshake) {
            const ms = this.#options.openTimeoutMs;
            this.#openTimer = setTimeout(() => {
                this.#openTimer = null;
                transport.close();
                this.#onFailure(networkError(`${this.transport} did not open within ${ms} ms`));
            }, ms);
        }
        transport.open(this.#cursor);
    }

    #onOpened() {
        if (this.#opened || this.#state !== 'running') {
            return;
        }
        if (this.#failures === 0) {
            // Opened at its first try while the better ones just failed to open with no answer:
            // the server is there, so those are blocked here (until a timed climb finds them open)
            // — unless one has worked on this page: then the server was away while the client
            // stepped down, and it is tried again below; only a second failure marks it.
            for (const name of this.#passFailed) {
                if (!this.#everOpened.has(name) || this.#recheck.has(name)) {
                    this.#recheck.delete(name);
                    this.#blocked.add(name);
                }
            }
        }
        this.#passFailed.clear();
        this.#opened = true;
        this.#worked = true;
        this.#settleAdds(() => true);
        this.#failures = 0;
        this.#lastFailures = 0;
        clearTimeout(this.#openTimer);
        this.#openTimer = null;
        this.#blocked.delete(this.transport);
        this.#everOpened.add(this.transport);
        this.#recheck.delete(this.transport);
        this.#endOutage();
        const {climbAfterMs, random} = this.#options;
        // Back on a worse transport while a better one has worked here (the server came back while
        // the client was stepping down): that one again soon, once, not after climbAfterMs.
        const again = this.#forced !== null ? -1 : this.#names.findIndex((name, i) => i < this.#index
            && this.#everOpened.has(name) && !this.#blocked.has(name) && !this.#recheck.has(name));
        if (again >= 0) {
            this.#recheck.add(this.#names[again]);
            clearTimeout(this.#climbTimer);
            this.#climbTimer = setTimeout(() => this.#climb(again), backoffDelay(1, this.#options, random));
        } else if (this.#index > 0 && this.#forced === null && climbAfterMs > 0 && Number.isFinite(climbAfterMs)) {
            clearTimeout(this.#climbTimer);
            this.#climbTimer = setTimeout(() => this.#climb(0), climbAfterMs);
        }
    }

    /** The best transport not blocked here and better than the current one, or -1 (also when forced). */
    #betterCandidate() {
        return this.#forced !== null ? -1
            : this.#names.findIndex((name, i) => i < this.#index && !this.#blocked.has(name));
    }

    /** Try transport `index` (better than the current one) from the cursor. @param {number} index */
    #climb(index) {
        this.#climbTimer = null;
        this.#retryTimer = null;
        if (this.#state === 'running' && this.#forced === null) {
            this.#use(index, 'climb');
        }
    }

    /** Set `connectionState`, publishing STATE_CHANGED when it changes. @param {string} state */
    #setConnection(state) {
        const previous = this.#connection;
        if (previous !== state) {
            this.#connection = state;
            this.#hub.publish(STATE_CHANGED, {state, previous, transport: this.transport, retrying: this.#state === 'running'});
        }
    }

    /** Not connected (any more): `connecting`, and CONNECTION_LOST if that lasts `lostAfterMs`. */
    #beginOutage() {
        if (this.#outageSince === null || this.#connection === 'connected') {
            this.#outageSince = Date.now();
            this.#attempts = 0;
        }
        if (this.#outageReported) {
            this.#setConnection('disconnected');
        } else {
            this.#setConnection('connecting');
        }
        const {lostAfterMs} = this.#options;
        if (this.#lostTimer === null && !this.#outageReported && Number.isFinite(lostAfterMs) && lostAfterMs >= 0) {
            this.#lostTimer = setTimeout(() => {
                this.#lostTimer = null;
                if (this.#state !== 'running' || this.#connection === 'connected') {
                    return;
                }
                this.#outageReported = true;
                this.#setConnection('disconnected');
                const error = this.#lastError;
                this.#hub.publish(CONNECTION_LOST, withoutUndefined({
                    reason: 'unreachable', retrying: true, code: error?.code ?? 'network_error',
                    status: error?.status || undefined,
                    message: `no connection for ${Date.now() - this.#outageSince} ms; still trying`
                        + (error ? `; last: ${error.message}` : ''),
                    transport: this.transport, attempts: this.#attempts,
                }));
            }, lostAfterMs);
        }
    }

    /** A transport opened: `connected`, and CONNECTION_RESTORED if the outage was reported. */
    #endOutage() {
        clearTimeout(this.#lostTimer);
        this.#lostTimer = null;
        const since = this.#outageSince;
        const attempts = this.#attempts;
        this.#outageSince = null;
        this.#attempts = 0;
        this.#lastError = null;
        this.#setConnection('connected');
        if (this.#outageReported) {
            this.#outageReported = false;
            this.#hub.publish(CONNECTION_RESTORED, {
                transport: this.transport, downMs: since === null ? 0 : Date.now() - since, attempts,
            });
        }
    }

    /** @param {PollAnswer} answer */
    #onBatch(answer) {
        if (this.#state !== 'running') {
            return;
        }
        this.#onOpened();
        if (answer.recovered === false) {
            this.#seen.clear();
            this.#rewinds = 0;
            this.#cursor = answer.cursor;
            this.#hub.publish(RECOVERY_FAILED,
                {cursor: answer.cursor, message: 'events were missed; reload the state of the page'});
        }
        const events = answer.events.filter(isObject)
            .map((event, index) => ({event, index}))
            .sort((a, b) => (idOf(a.event) - idOf(b.event)) || (a.index - b.index));
        for (const {event} of events) {
            if (this.#state !== 'running') {
                return; // stopped by a listener: keep the old cursor, dedup covers the replay
            }
            const key = channelKey(event);
            if (this.#dropped.has(key)) {
                continue;
            }
            const id = event.id;
            if (Number.isFinite(id)) {
                const seen = this.#seen.get(key);
                if (seen !== undefined && id <= seen) {
                    continue;
                }
                this.#seen.set(key, id);
            }
            this.#hub.publish(EVENT, event);
        }
        if (this.#state === 'running' && this.#rewinds === 0) {
            this.#cursor = answer.cursor;
        }
    }

    /** @param {RealtimeError} error */
    #onFailure(error) {
        if (this.#state !== 'running') {
            return;
        }
        this.#clearTimers();
        if (error.code === 'token_expired' && typeof this.#options.renew === 'function') {
            // Renewable: fresh credentials, then reopen from the cursor. A stream the server ended
            // at expiry is a planned end, like a drain: reopened soon, spread. When credentials were
            // renewed since this attempt opened, the reopen uses them: no second renewal.
            if (this.#openedWith === this.#credentials) {
                this.#needRenew = true;
            }
            error = new RealtimeError(error.message, {
                code: 'token_expired', status: error.status, reason: 'credential_refused', retryable: true,
                immediate: true, answered: true, closeCode: error.closeCode, cause: error,
            });
        }
        if (!error.retryable && this.#pendingAdds.length > 0
            && (error.reason === 'credential_refused' || error.reason === 'rejected')) {
            // The reopen with added channels was refused: those channels go, the others go on.
            const refused = new Set(this.#pendingAdds.map((add) => add.channel));
            for (const sub of this.#config.subscriptions.filter((s) => refused.has(s.channel))) {
                this.#forget(sub);
            }
            this.#settleAdds(() => true, error);
            this.#open();
            return;
        }
        if (!error.retryable) {
            this.#lose({reason: error.reason, status: error.status || undefined, code: error.code, message: error.message});
            return;
        }
        const wasOpen = this.#opened;
        this.#opened = false;
        this.#lastError = error;
        this.#beginOutage();
        if (!wasOpen && !error.answered) {
            this.#passFailed.add(this.transport); // this attempt did not open, and nothing answered
        }
        const last = this.#forced !== null || this.#index === this.#names.length - 1;
        if (!last && !this.#worked && !error.answered) {
            this.#use(this.#index + 1, 'fallback'); // never opened, no answer: most likely blocked, the next at once
            return;
        }
        const {fallbackAfter, maxRetries, random, reconnectSpreadMs} = this.#options;
        if (error.immediate && wasOpen) {
            // A working connection the server closed on purpose (draining, slow consumer): not a
            // failure of the transport. Reopen soon, but spread, so that a node's clients do not all
            // come back in the same instant.
            this.#retryTimer = setTimeout(() => this.#retry(), Math.floor(random() * Math.max(0, reconnectSpreadMs)));
            return;
        }
        this.#failures += 1;
        if (!last && this.#failures > fallbackAfter) {
            this.#use(this.#index + 1, 'fallback');
            return;
        }
        if (last) {
            this.#lastFailures += 1;
            if (this.#lastFailures >= maxRetries) {
                this.#lose({
                    reason: 'retries_exhausted', status: error.status || undefined, code: error.code,
                    message: `gave up after ${this.#lastFailures} consecutive failures; last: ${error.message}`,
                });
                return;
            }
        }
        this.#attempts += 1;
        const delay = backoffDelay(this.#attempts, this.#options, random, error.retryAfterMs);
        // In an outage every retry starts again from the best transport not blocked here, so the
        // client is back on it as soon as the server returns (not after climbAfterMs on a worse one).
        const better = this.#betterCandidate();
        this.#retryTimer = setTimeout(() => (better >= 0 ? this.#climb(better) : this.#retry()), delay);
    }

    #retry() {
        this.#retryTimer = null;
        if (this.#state === 'running') {
            this.#open();
        }
    }

    #clearTimers() {
        clearTimeout(this.#retryTimer);
        clearTimeout(this.#openTimer);
        clearTimeout(this.#climbTimer);
        this.#retryTimer = this.#openTimer = this.#climbTimer = null;
    }

    /** Give up for good; this final CONNECTION_LOST (`retrying: false`) fires at most once per client. */
    #lose(info) {
        this.stop();
        this.#state = 'lost';
        this.#settleAdds(() => true, new RealtimeError(info.message ?? 'the client has given up', {code: 'connection_lost'}));
        if (!this.#lost) {
            this.#lost = true;
            this.#hub.publish(CONNECTION_LOST, withoutUndefined({...info, retrying: false, transport: this.transport}));
        }
    }
}

/**
 * The key of a channel by its fields, the same for an event and for the subscription of its
 * channel. @param {any} x
 */
function channelKey(x) {
    return JSON.stringify([x.contextid, x.component, x.area, x.itemid ?? 0, x.channeldetails ?? x.details ?? '']);
}

/** The key of a subscription's channel, or null when it lacks the channel's fields. @param {any} sub */
function subscriptionKey(sub) {
    return sub.contextid !== undefined && typeof sub.component === 'string' && typeof sub.area === 'string'
        ? channelKey(sub) : null;
}

/** `EPOCH:ID` (docs/protocol.md), or null. @param {unknown} cursor */
function parseCursor(cursor) {
    if (typeof cursor !== 'string') {
        return null;
    }
    const at = cursor.lastIndexOf(':');
    const id = Number(cursor.slice(at + 1));
    return at > 0 && Number.isSafeInteger(id) ? {epoch: cursor.slice(0, at), id} : null;
}

/** When a token `v1.<user>.<expires>.<mac>` expires (Unix seconds), or undefined. @param {unknown} token */
function tokenExpiry(token) {
    const parts = typeof token === 'string' ? token.split('.') : [];
    const expires = parts.length === 4 && parts[0] === 'v1' ? Number(parts[2]) : NaN;
    return Number.isSafeInteger(expires) ? expires : undefined;
}

/** @param {any} event */
function idOf(event) {
    return Number.isFinite(event.id) ? event.id : Number.MAX_SAFE_INTEGER;
}

/** @param {Record<string, any> | undefined} object @returns {Record<string, any>} */
function withoutUndefined(object) {
    return Object.fromEntries(Object.entries(object ?? {}).filter(([, v]) => v !== undefined));
}

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
/**
 * @typedef {{events: object[], cursor: string, recovered?: boolean}} PollAnswer
 * @typedef {{config: PageConfig, options: Required<ClientOptions>, fetch: typeof fetch,
 *            WebSocket?: typeof WebSocket | null, EventSource?: typeof EventSource | null}} TransportContext
 * @typedef {{opened: () => void, batch: (answer: PollAnswer) => void,
 *            failure: (error: RealtimeError) => void}} TransportSink
 */

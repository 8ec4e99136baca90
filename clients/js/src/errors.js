// Failures, classified once: the error type (`RealtimeError`), what an HTTP status or a WebSocket
// close code means for the retry policy (final or transient, answered by the server or not), and
// how long to wait before the next try (`backoffDelay`). The transports build their errors here;
// the client (client.js) acts on the class alone.

import {isObject} from './util.js';

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
export function networkError(message, cause) {
    return new RealtimeError(message, {code: 'network_error', reason: 'network_error', retryable: true, cause});
}

/** @param {string} message @param {number} [status] */
export function badResponse(message, status = 0) {
    return new RealtimeError(message, {code: 'bad_response', status, reason: 'server_error', retryable: true});
}

/**
 * The error for an HTTP answer outside 2xx, classified for the retry policy.
 * @param {number} status @param {string} text the body @param {Headers} [headers]
 */
export function httpError(status, text, headers) {
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

/** @param {unknown} [cause] */
export function abortedError(cause) {
    return new RealtimeError('request aborted', {code: 'aborted', reason: 'aborted', cause});
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

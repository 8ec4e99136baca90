/**
 * Types for realtime.js, the browser/Node client of the realtime server. Written by hand, and
 * held to the code by test/types.test.mjs: the exports, the `RealtimeClient` getters and
 * methods, the `ClientOptions` keys and their defaults, the `RealtimeError` fields.
 */

/** Topic of a server event; listeners get a {@link RealtimeEvent}. */
export const EVENT: 'tool-realtime-event';
/**
 * Topic fired once per outage when no transport has been open for `lostAfterMs` (`reason:
 * 'unreachable'`, `retrying: true`: the client keeps trying), and once when the client gives up
 * for good (`retrying: false`); listeners get a {@link ConnectionLost}.
 */
export const CONNECTION_LOST: 'tool-realtime-connection-lost';
/** Topic fired when a transport opens again after a CONNECTION_LOST `unreachable`; listeners get a {@link ConnectionRestored}. */
export const CONNECTION_RESTORED: 'tool-realtime-connection-restored';
/** Topic fired when `connectionState` changes; listeners get a {@link StateChanged}. */
export const STATE_CHANGED: 'tool-realtime-state-changed';
/** Topic fired when events were missed (the page should reload its state); listeners get a {@link RecoveryFailed}. */
export const RECOVERY_FAILED: 'tool-realtime-recovery-failed';
/** Topic fired when the client starts using another transport; listeners get a {@link TransportChanged}. */
export const TRANSPORT_CHANGED: 'tool-realtime-transport-changed';

export type Topic = typeof EVENT | typeof CONNECTION_LOST | typeof CONNECTION_RESTORED | typeof STATE_CHANGED
    | typeof RECOVERY_FAILED | typeof TRANSPORT_CHANGED;

/** For a status badge: see {@link RealtimeClient.connectionState}. */
export type ConnectionState = 'connecting' | 'connected' | 'disconnected';

export type TransportName = 'websocket' | 'sse' | 'poll';

/** One subscription of a page, as in the page config. */
export interface Subscription {
    channel: string;
    token: string;
    contextid?: number;
    component?: string;
    area?: string;
    itemid?: number;
    channeldetails?: string;
    /**
     * `POST /api/subscribe` only: the store's head when the application minted it. A channel added
     * with `subscribe(subscription)` gets its events after this cursor.
     */
    cursor?: string;
    /** `POST /api/subscribe` only: when the token expires (Unix seconds). */
    expires?: number;
}

/** What a renew function is asked with. */
export interface RenewRequest {
    /** `expiring` (before expiry, ahead by `renewAheadMs`) or `expired` (the server said so). */
    reason: 'expiring' | 'expired';
    /** The channels the client has now: the renewed config must carry a token for each. */
    subscriptions: Subscription[];
}

/** The answer of `POST /api/page`, embedded by the application in its page. */
export interface PageConfig {
    /** Server base URL without trailing slash, e.g. `http://127.0.0.1:8787`. */
    url: string;
    user?: number;
    usertoken: string;
    /** Opaque; the first connection starts there, so events notified after the page was built are not missed. */
    cursor?: string;
    /** Unix seconds when the user token expires. */
    expires?: number;
    subscriptions: Subscription[];
    /**
     * Transports the server offers, preferred first. Default `['websocket', 'sse', 'poll']`.
     * Unknown names and transports the environment lacks are skipped.
     */
    transports?: string[];
}

/** An event pushed by the server. */
export interface RealtimeEvent<P = unknown> {
    id: number;
    contextid: number;
    component: string;
    area: string;
    itemid: number;
    channeldetails: string;
    payload: P;
    timecreated: number;
}

export interface ConnectionLost {
    /**
     * `unreachable` (no transport open for `lostAfterMs`; the client keeps trying),
     * `credential_refused` (401/403, WebSocket close 4001), `rejected` (400/413/414/431, close 4002),
     * `retries_exhausted` (the last transport, or the forced one, failed `maxRetries` times in a
     * row; only when the app set `maxRetries`).
     */
    reason: 'unreachable' | 'credential_refused' | 'rejected' | 'retries_exhausted' | string;
    /** true for `unreachable`: the client is still trying, CONNECTION_RESTORED follows when it is back. false: final. */
    retrying: boolean;
    /** Backoff attempts of the outage so far (`unreachable` only). */
    attempts?: number;
    /** Server error code, e.g. `token_invalid`, or `network_error`. */
    code?: string;
    /** HTTP status of the (last) failed request; absent when there was none (network, WebSocket). */
    status?: number;
    message: string;
    /** The transport in use when the client gave up. */
    transport: TransportName;
}

export interface ConnectionRestored {
    /** The transport that opened. */
    transport: TransportName;
    /** How long there was no open transport, in ms. */
    downMs: number;
    /** Backoff attempts the outage took. */
    attempts: number;
}

export interface StateChanged {
    state: ConnectionState;
    previous: ConnectionState;
    /** The transport in use or being opened. */
    transport: TransportName;
    /** Whether the client is trying to connect (false once stopped or given up). */
    retrying: boolean;
}

export interface TransportChanged {
    transport: TransportName;
    /** null at start. */
    previous: TransportName | null;
    /**
     * `start`; `fallback` (the previous one failed to open, or dropped `fallbackAfter` + 1 times
     * in a row); `climb` (back to a better one: each retry of an outage starts from the best
     * transport not blocked here; else after `climbAfterMs`); `forced` (by `force()`).
     */
    reason: 'start' | 'fallback' | 'climb' | 'forced';
}

export interface RecoveryFailed {
    /** The cursor the client continues from. */
    cursor: string;
    message: string;
}

export interface ClientOptions {
    /** Replacement for the global fetch (tests). */
    fetch?: typeof fetch;
    /** WebSocket constructor; default the global one; `null`: no WebSocket transport. */
    WebSocket?: { new(url: string): WebSocket } | null;
    /** EventSource constructor; default the global one; `null`: no SSE transport. */
    EventSource?: { new(url: string): EventSource } | null;
    /** Transports to use, preferred first; overrides the page config's `transports`. */
    transports?: TransportName[];
    /** Nominal delay before the first retry of an outage, in ms (default 500); doubles per attempt. */
    backoffBaseMs?: number;
    /** Largest nominal delay in ms (default 20000). */
    backoffMaxMs?: number;
    /** Each delay is the nominal one times a factor uniform in [1 − j, 1 + j) (default 0.5: ±50 %). */
    backoffJitter?: number;
    /**
     * Consecutive retryable failures of the last transport (or of a forced one) after which the
     * client gives up with CONNECTION_LOST `retries_exhausted` (default Infinity: never).
     */
    maxRetries?: number;
    /**
     * No open transport for this long (ms, default 10000) fires CONNECTION_LOST `unreachable`
     * (`retrying: true`) and sets `connectionState` to `disconnected`; Infinity: never.
     */
    lostAfterMs?: number;
    /**
     * A working WebSocket closed with 1012 (node draining) or 4008 (slow consumer) reopens after a
     * delay uniform in [0, this) ms (default 1000), so a node's clients do not return in one burst.
     */
    reconnectSpreadMs?: number;
    /**
     * A transport that worked and then fails is reopened with backoff this many times (default 3)
     * before the client falls back to the next one. One that never opened is left at once.
     */
    fallbackAfter?: number;
    /**
     * After this long (ms, default 300000) on a worse transport that works, the client tries the
     * best one again, resuming from its cursor (and comes down again at once if it still fails to
     * open). 0 disables this timed climbing. In an outage (nothing opens) every retry starts
     * from the best transport not blocked here, so no timer is needed to climb back after one.
     */
    climbAfterMs?: number;
    /** A WebSocket or SSE handshake slower than this (ms, default 10000) counts as failing to open. */
    openTimeoutMs?: number;
    /** The WebSocket sends `{"type":"ping"}` this often (ms, default 20000). */
    pingIntervalMs?: number;
    /** A WebSocket on which nothing arrived for this long (ms, default 45000) is given up as dead. */
    deadAfterMs?: number;
    /** Client-side limit for one poll request in ms (default 65000). */
    pollTimeoutMs?: number;
    /**
     * An answer without events that came back sooner than this (ms, default 1000) delays the next
     * poll to this interval, so a short-polling or shutting-down server is not hammered.
     * Answers with events are always followed by the next poll at once.
     */
    shortPollDelayMs?: number;
    /** Random source in [0, 1) for the jitter (default Math.random). */
    random?: () => number;
    /**
     * Fresh credentials from the application's own endpoint: a page config (as `POST /api/page`
     * answers) with `usertoken` and a token for each of `subscriptions`. Called `renewAheadMs`
     * before the first token expires and when the server says one has (WebSocket close 4010, SSE
     * `token_expired`, HTTP 401 `token_expired`); the client goes on from its cursor. A rejection is
     * retried with backoff; `null` ends the client (CONNECTION_LOST `renew_refused`). Without it, an
     * expired token is final (CONNECTION_LOST `credential_refused`, code `token_expired`).
     */
    renew?: ((request: RenewRequest) => Promise<PageConfig | null> | PageConfig | null) | null;
    /** How long before expiry to renew (default 60000; at most a fifth of the tokens' remaining life). */
    renewAheadMs?: number;
}

export interface SendOptions {
    /**
     * Send only over an open WebSocket: without one, reject with code `no_bidirectional_transport`
     * instead of using `POST /send`.
     */
    noFallback?: boolean;
    /** Aborting rejects with code `aborted` (over WebSocket the handler may still run). */
    signal?: AbortSignal;
}

/** Error of `sendToServer` (and of transport failures). */
export class RealtimeError extends Error {
    constructor(message: string, details?: {
        code?: string; status?: number; reason?: string; retryable?: boolean; immediate?: boolean;
        answered?: boolean; retryAfterMs?: number; closeCode?: number; cause?: unknown;
    });
    /**
     * Server error code, or `network_error`, `bad_response`, `aborted`, `not_initialised`,
     * `invalid_argument`, `http_<status>`, `no_transport`, `no_bidirectional_transport`,
     * `connection_lost` (a WebSocket send whose reply never came: it may or may not have run).
     */
    code: string;
    /** HTTP status; 0 when there was no HTTP answer (network error, or a reply over WebSocket). */
    status: number;
    reason: string;
    retryable: boolean;
    /** Reopen soon (within `reconnectSpreadMs`) rather than after a backoff (WebSocket close 1012, 4008). */
    immediate: boolean;
    /** The server itself answered (an HTTP status, a close code it sent): the transport reaches it. */
    answered: boolean;
    retryAfterMs?: number;
    /** WebSocket close code, for failures of that transport. */
    closeCode?: number;
}

export type Unsubscribe = () => void;

export interface RealtimeClient {
    /** `idle` (not started), `running`, `stopped` (by stop()), `lost` (gave up; final). */
    readonly state: 'idle' | 'running' | 'stopped' | 'lost';
    /**
     * For a status badge: `connected` (a transport is open); `connecting` (opening one or waiting
     * to retry, for less than `lostAfterMs`); `disconnected` (an outage past `lostAfterMs`, still
     * retrying; or not started, stopped, given up). STATE_CHANGED fires on each change.
     */
    readonly connectionState: ConnectionState;
    /** The cursor the next (re)open sends. */
    readonly cursor: string | null;
    /** The transport in use (or being opened; before start(), the one start() will use). */
    readonly transport: TransportName;
    /** The transports this client may use, best first. */
    readonly transports: TransportName[];
    /** The transport set by force(), or null. */
    readonly forced: TransportName | null;
    /** The channels received now (copies of their subscriptions, with the tokens in use). */
    readonly subscriptions: Subscription[];
    /** When the first token in use expires (Unix ms), or null when unknown. */
    readonly expires: number | null;
    /**
     * Receive one more channel (a subscription from `POST /api/subscribe`): its events after its
     * own `cursor`, once, merged with the others; nothing replayed for the channels already there.
     * For a channel the client has, renews its token. Resolves when the server has taken it;
     * rejects (and the channel is not added) when it refuses the token.
     */
    subscribe(subscription: Subscription): Promise<void>;
    /** Stop receiving a channel (hash or subscription). Rejects `invalid_argument` for the last one. */
    unsubscribe(channel: string | Subscription): Promise<void>;
    subscribe<P = unknown>(topic: typeof EVENT, listener: (event: RealtimeEvent<P>) => void): Unsubscribe;
    subscribe(topic: typeof CONNECTION_LOST, listener: (error: ConnectionLost) => void): Unsubscribe;
    subscribe(topic: typeof CONNECTION_RESTORED, listener: (info: ConnectionRestored) => void): Unsubscribe;
    subscribe(topic: typeof STATE_CHANGED, listener: (change: StateChanged) => void): Unsubscribe;
    subscribe(topic: typeof RECOVERY_FAILED, listener: (info: RecoveryFailed) => void): Unsubscribe;
    subscribe(topic: typeof TRANSPORT_CHANGED, listener: (change: TransportChanged) => void): Unsubscribe;
    subscribe(topic: string, listener: (data: any) => void): Unsubscribe;
    /** Connect (or resume after stop()). No effect once lost. */
    start(): this;
    /** Stop: close the transport and cancel any pending retry. */
    stop(): void;
    /**
     * Use only `name` from now on (no fallback, no climbing), resuming from the cursor; `null`
     * returns to the automatic choice from the best transport. Throws a {@link RealtimeError}
     * `no_transport` for a name not in `transports`.
     */
    force(name: TransportName | null): this;
    /**
     * Over the open WebSocket (matched to its reply by id), else `POST /send` (unless
     * `noFallback`). Resolves with the application's `response`; rejects with a {@link RealtimeError}.
     * A WebSocket send whose reply has not come when the socket goes rejects with
     * `connection_lost` and is not resent: sends are not idempotent.
     */
    sendToServer<R = any>(component: string, payload: unknown, options?: SendOptions): Promise<R>;
}

/** A new independent client; it connects on `start()`. Throws on an invalid config. */
export function createClient(config: PageConfig, options?: ClientOptions): RealtimeClient;

/** Create and start the default client (stopping a previous one). Listeners subscribed before are kept. */
export function init(config: PageConfig, options?: ClientOptions): RealtimeClient;

export function subscribe<P = unknown>(topic: typeof EVENT, listener: (event: RealtimeEvent<P>) => void): Unsubscribe;
export function subscribe(topic: typeof CONNECTION_LOST, listener: (error: ConnectionLost) => void): Unsubscribe;
export function subscribe(topic: typeof CONNECTION_RESTORED, listener: (info: ConnectionRestored) => void): Unsubscribe;
export function subscribe(topic: typeof STATE_CHANGED, listener: (change: StateChanged) => void): Unsubscribe;
export function subscribe(topic: typeof RECOVERY_FAILED, listener: (info: RecoveryFailed) => void): Unsubscribe;
export function subscribe(topic: typeof TRANSPORT_CHANGED, listener: (change: TransportChanged) => void): Unsubscribe;
export function subscribe(topic: string, listener: (data: any) => void): Unsubscribe;
/** Add a channel to the default client (see {@link RealtimeClient.subscribe}); rejects `not_initialised` before init(). */
export function subscribe(subscription: Subscription): Promise<void>;
/** Drop a channel from the default client. */
export function unsubscribe(channel: string | Subscription): Promise<void>;

/** Through the default client; rejects with code `not_initialised` before init(). */
export function sendToServer<R = any>(component: string, payload: unknown, options?: SendOptions): Promise<R>;

/** Stop the default client. */
export function stop(): void;

/**
 * The delay before reconnect attempt `attempt` (≥ 1) of an outage:
 * `min(backoffMaxMs, backoffBaseMs · 2^(attempt−1))` times a factor uniform in
 * [1 − backoffJitter, 1 + backoffJitter); at least `retryAfterMs` (up to 5 min, spread upwards by the jitter).
 */
export function backoffDelay(attempt: number,
    options: {backoffBaseMs: number; backoffMaxMs: number; backoffJitter: number},
    random: () => number, retryAfterMs?: number): number;

/**
 * What a WebSocket close code (and the `error` frame before it) means: only 4001, 4002 and 4010
 * are final, and 4010 (token expired) not when the client has a renew function.
 */
export function classifyClose(closeCode: number, errorFrame?: {code?: string} | null):
    {code: string; reason: string; retryable: boolean; immediate: boolean; answered: boolean};

/** What an HTTP status means: only 400, 401, 403, 413, 414 and 431 are final. */
export function classifyStatus(status: number): {retryable: boolean; reason: string};

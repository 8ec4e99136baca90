/**
 * Types for realtime.js, the browser/Node client of the realtime server.
 */

/** Topic of a server event; listeners get a {@link RealtimeEvent}. */
export const EVENT: 'tool-realtime-event';
/** Topic fired at most once per client when it gives up; listeners get a {@link ConnectionLost}. */
export const CONNECTION_LOST: 'tool-realtime-connection-lost';
/** Topic fired when events were missed (the page should reload its state); listeners get a {@link RecoveryFailed}. */
export const RECOVERY_FAILED: 'tool-realtime-recovery-failed';

export type Topic = typeof EVENT | typeof CONNECTION_LOST | typeof RECOVERY_FAILED;

/** One subscription of a page, as in the page config. */
export interface Subscription {
    channel: string;
    token: string;
    contextid?: number;
    component?: string;
    area?: string;
    itemid?: number;
    channeldetails?: string;
}

/** The answer of `POST /api/page`, embedded by the application in its page. */
export interface PageConfig {
    /** Server base URL without trailing slash, e.g. `http://127.0.0.1:8787`. */
    url: string;
    user?: number;
    usertoken: string;
    /** Opaque; the first poll starts there, so events notified after the page was built are not missed. */
    cursor?: string;
    /** Unix seconds when the user token expires. */
    expires?: number;
    subscriptions: Subscription[];
    /** Transports the server offers, preferred first. Only `poll` is implemented. Default `['poll']`. */
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
    /** `credential_refused` (401/403), `rejected` (other 4xx), `retries_exhausted`. */
    reason: 'credential_refused' | 'rejected' | 'retries_exhausted' | string;
    /** Server error code, e.g. `token_invalid`, or `network_error`. */
    code?: string;
    /** HTTP status of the (last) failed request, absent when there was no answer. */
    status?: number;
    message: string;
}

export interface RecoveryFailed {
    /** The cursor the client continues from. */
    cursor: string;
    message: string;
}

export interface ClientOptions {
    /** Replacement for the global fetch (tests). */
    fetch?: typeof fetch;
    /** First backoff cap in ms (default 500); doubles per consecutive failure. */
    backoffBaseMs?: number;
    /** Largest backoff cap in ms (default 20000). */
    backoffMaxMs?: number;
    /** Consecutive retryable failures after which CONNECTION_LOST fires (default 10). */
    maxRetries?: number;
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
}

export interface SendOptions {
    /** Once a socket transport exists: fail rather than fall back to HTTP. No effect today. */
    noFallback?: boolean;
    signal?: AbortSignal;
}

/** Error of `sendToServer` (and of transport failures). */
export class RealtimeError extends Error {
    constructor(message: string, details?: {
        code?: string; status?: number; reason?: string; retryable?: boolean; retryAfterMs?: number; cause?: unknown;
    });
    /** Server error code, or `network_error`, `bad_response`, `aborted`, `not_initialised`, `invalid_argument`, `http_<status>`. */
    code: string;
    /** HTTP status; 0 when no answer was received. */
    status: number;
    reason: string;
    retryable: boolean;
    retryAfterMs?: number;
}

export type Unsubscribe = () => void;

export interface RealtimeClient {
    /** `idle` (not started), `running`, `stopped` (by stop()), `lost` (gave up; final). */
    readonly state: 'idle' | 'running' | 'stopped' | 'lost';
    /** The cursor the next poll sends. */
    readonly cursor: string | null;
    /** Name of the transport in use (`poll`). */
    readonly transportName: string;
    subscribe<P = unknown>(topic: typeof EVENT, listener: (event: RealtimeEvent<P>) => void): Unsubscribe;
    subscribe(topic: typeof CONNECTION_LOST, listener: (error: ConnectionLost) => void): Unsubscribe;
    subscribe(topic: typeof RECOVERY_FAILED, listener: (info: RecoveryFailed) => void): Unsubscribe;
    subscribe(topic: string, listener: (data: any) => void): Unsubscribe;
    /** Connect (or resume after stop()). No effect once lost. */
    start(): this;
    /** Stop: abort the request in flight and any pending retry. */
    stop(): void;
    /** Resolves with the application's `response`; rejects with a {@link RealtimeError}. */
    sendToServer<R = any>(component: string, payload: unknown, options?: SendOptions): Promise<R>;
}

/** A new independent client; it connects on `start()`. Throws on an invalid config. */
export function createClient(config: PageConfig, options?: ClientOptions): RealtimeClient;

/** Create and start the default client (stopping a previous one). Listeners subscribed before are kept. */
export function init(config: PageConfig, options?: ClientOptions): RealtimeClient;

export function subscribe<P = unknown>(topic: typeof EVENT, listener: (event: RealtimeEvent<P>) => void): Unsubscribe;
export function subscribe(topic: typeof CONNECTION_LOST, listener: (error: ConnectionLost) => void): Unsubscribe;
export function subscribe(topic: typeof RECOVERY_FAILED, listener: (info: RecoveryFailed) => void): Unsubscribe;
export function subscribe(topic: string, listener: (data: any) => void): Unsubscribe;

/** Through the default client; rejects with code `not_initialised` before init(). */
export function sendToServer<R = any>(component: string, payload: unknown, options?: SendOptions): Promise<R>;

/** Stop the default client. */
export function stop(): void;

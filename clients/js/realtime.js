/**
 * realtime.js — client for the realtime server (a re-implementation of
 * Moodle's tool_realtime). Zero dependencies; runs in browsers and Node 20+
 * (needs global `fetch`, `setTimeout` and `AbortController`).
 *
 * Usage in a page (the page config comes from the application, which got it
 * from `POST /api/page`):
 *
 *     import * as Realtime from '/realtime.js';
 *     Realtime.subscribe(Realtime.EVENT, (event) => { ... });
 *     Realtime.subscribe(Realtime.CONNECTION_LOST, (err) => { ... });
 *     Realtime.subscribe(Realtime.RECOVERY_FAILED, (info) => { ... });
 *     Realtime.init(pageConfig);
 *     const answer = await Realtime.sendToServer('mod_x', {any: 'json'});
 *
 * Several independent clients: `createClient(config, options).start()`.
 *
 * Structure: a `RealtimeClient` owns the listeners, the cursor, the
 * de-duplication of events by id and the retry policy (backoff). A transport
 * (only `poll` for now; WebSocket and SSE can be added to `TRANSPORTS` later)
 * only moves batches: it is opened with a cursor, hands each answer
 * `{events, cursor, recovered}` to `sink.batch`, and on its first failure
 * reports once to `sink.failure` and goes idle until opened again.
 *
 * Failures of a poll: network errors, client-side timeouts, 5xx, 429 and
 * malformed answers are retried with exponential backoff and full jitter;
 * `maxRetries` consecutive ones end in CONNECTION_LOST `retries_exhausted`.
 * 401/403 end it at once (`credential_refused`), any other 4xx too
 * (`rejected`: a client bug). Events are published once each, in ascending
 * id order (high-water mark of delivered ids, reset on `recovered: false`).
 *
 * @module realtime
 */

/** Topic of a server event; the listener gets the event object as sent by the server. */
export const EVENT = 'tool-realtime-event';
/** Topic fired at most once per client when it gives up: `{reason, code?, status?, message}`. */
export const CONNECTION_LOST = 'tool-realtime-connection-lost';
/** Topic fired when the server could not replay missed events: reload state from the application. */
export const RECOVERY_FAILED = 'tool-realtime-recovery-failed';

const DEFAULTS = Object.freeze({
    backoffBaseMs: 500,
    backoffMaxMs: 20000,
    maxRetries: 10,
    pollTimeoutMs: 65000,
    shortPollDelayMs: 1000,
});

/**
 * Error raised by `sendToServer` and reported by transports.
 * `code` is the server's machine word (or `network_error`, `bad_response`,
 * `aborted`, `not_initialised`, `invalid_argument`, `http_<status>`);
 * `status` is the HTTP status (0 when no answer was received).
 */
export class RealtimeError extends Error {
    /**
     * @param {string} message
     * @param {{code?: string, status?: number, reason?: string, retryable?: boolean,
     *          retryAfterMs?: number, cause?: unknown}} [details]
     */
    constructor(message, details = {}) {
        super(message, details.cause === undefined ? undefined : {cause: details.cause});
        this.name = 'RealtimeError';
        this.code = details.code ?? 'error';
        this.status = details.status ?? 0;
        /** Why a transport failure happened: `network_error`, `server_error`, `credential_refused`, `rejected`. */
        this.reason = details.reason ?? 'rejected';
        /** Whether retrying the same request later may succeed. */
        this.retryable = details.retryable ?? false;
        /** Server's Retry-After in ms, if it sent one. */
        this.retryAfterMs = details.retryAfterMs;
    }
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
            throw new RealtimeError('request aborted', {code: 'aborted', reason: 'aborted', cause: err});
        }
        const message = `network error: ${err?.message ?? err}`;
        throw new RealtimeError(message, {code: 'network_error', reason: 'network_error', retryable: true, cause: err});
    }
    let data;
    try {
        data = text === '' ? undefined : JSON.parse(text);
    } catch {
        data = undefined;
    }
    const status = response.status;
    if (status < 200 || status > 299) {
        const info = isObject(data) && isObject(data.error) ? data.error : {};
        const retryable = status >= 500 || status === 429 || status === 408;
        const seconds = Number(response.headers?.get?.('retry-after'));
        throw new RealtimeError(
            typeof info.message === 'string' ? info.message : (text.slice(0, 200) || `HTTP ${status}`),
            {
                code: typeof info.code === 'string' ? info.code : `http_${status}`,
                status,
                retryable,
                reason: status === 401 || status === 403 ? 'credential_refused'
                    : retryable ? 'server_error' : 'rejected',
                retryAfterMs: Number.isFinite(seconds) && seconds >= 0 ? seconds * 1000 : undefined,
            },
        );
    }
    if (!isObject(data)) {
        throw new RealtimeError('answer is not a JSON object',
            {code: 'bad_response', status, reason: 'server_error', retryable: true});
    }
    return data;
}

/** @param {unknown} value @returns {value is Record<string, any>} */
function isObject(value) {
    return typeof value === 'object' && value !== null && !Array.isArray(value);
}

/**
 * Long-polling transport: exactly one `POST {url}/poll` in flight; the next
 * starts as soon as an answer has been handed to the sink. Only an answer
 * without events that came back sooner than `shortPollDelayMs` (a server in
 * short-poll mode, or shutting down) delays the next poll to that interval.
 */
class PollTransport {
    /**
     * @param {{config: PageConfig, fetch: typeof fetch, pollTimeoutMs: number, shortPollDelayMs: number}} context
     * @param {{batch: (answer: PollAnswer) => void, failure: (error: RealtimeError) => void}} sink
     */
    constructor(context, sink) {
        this.context = context;
        this.sink = sink;
        this.generation = 0;
        this.abort = null;
        this.pause = null;
        this.subscriptions = context.config.subscriptions.map((s) => ({channel: s.channel, token: s.token}));
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
        const {config, fetch: fetchFn, pollTimeoutMs, shortPollDelayMs} = this.context;
        while (generation === this.generation) {
            const started = Date.now();
            const abort = new AbortController();
            this.abort = abort;
            let timedOut = false;
            const timer = setTimeout(() => { timedOut = true; abort.abort(); }, pollTimeoutMs);
            let answer;
            try {
                answer = await postJson(fetchFn, `${config.url}/poll`, config.usertoken,
                    {subscriptions: this.subscriptions, cursor}, abort.signal);
                if (!Array.isArray(answer.events) || typeof answer.cursor !== 'string') {
                    throw new RealtimeError('poll answer lacks events or cursor',
                        {code: 'bad_response', status: 200, reason: 'server_error', retryable: true});
                }
            } catch (err) {
                clearTimeout(timer);
                if (generation !== this.generation) {
                    return; // closed meanwhile
                }
                this.close();
                this.sink.failure(timedOut
                    ? new RealtimeError('poll timed out', {code: 'network_error', reason: 'network_error', retryable: true})
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
            if (answer.events.length === 0 && rest > 0 && generation === this.generation) {
                await new Promise((resolve) => { this.pause = {timer: setTimeout(resolve, rest), resolve}; });
                if (generation === this.generation) {
                    this.pause = null;
                }
            }
        }
    }
}

/** Available transports by the names used in the page config's `transports`. */
const TRANSPORTS = {poll: PollTransport};

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
    #hub;
    #transport;
    #cursor;
    #lastId = null;
    #failures = 0;
    #state = 'idle';
    #timer = null;
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
        this.#config = {...config, url: config.url.replace(/\/+$/, '')};
        this.#options = {
            ...DEFAULTS,
            random: Math.random,
            fetch: (input, init) => globalThis.fetch(input, init),
            ...withoutUndefined(options),
        };
        this.#hub = hub;
        this.#cursor = typeof config.cursor === 'string' ? config.cursor : null;
        const names = Array.isArray(config.transports) ? config.transports : ['poll'];
        const name = names.find((n) => Object.hasOwn(TRANSPORTS, n));
        if (!name) {
            throw new RealtimeError(`realtime: no supported transport in ${JSON.stringify(names)}`,
                {code: 'no_transport'});
        }
        this.transportName = name;
        this.#transport = new TRANSPORTS[name](
            {
                config: this.#config,
                fetch: this.#options.fetch,
                pollTimeoutMs: this.#options.pollTimeoutMs,
                shortPollDelayMs: this.#options.shortPollDelayMs,
            },
            {batch: (answer) => this.#onBatch(answer), failure: (error) => this.#onFailure(error)},
        );
    }

    /** `idle` (never started), `running`, `stopped` (by `stop()`) or `lost` (gave up; final). */
    get state() {
        return this.#state;
    }

    /** The cursor the next poll will send. */
    get cursor() {
        return this.#cursor;
    }

    /**
     * Listen to a topic (EVENT, CONNECTION_LOST, RECOVERY_FAILED).
     * @param {string} topic @param {(data: any) => void} listener
     * @returns {() => void} unsubscribe
     */
    subscribe(topic, listener) {
        return this.#hub.subscribe(topic, listener);
    }

    /** Start (or resume after `stop()`) receiving events. No effect once lost. @returns {this} */
    start() {
        if (this.#state === 'idle' || this.#state === 'stopped') {
            this.#state = 'running';
            this.#transport.open(this.#cursor);
        }
        return this;
    }

    /** Stop receiving events: aborts the request in flight and any pending retry. */
    stop() {
        if (this.#state === 'running' || this.#state === 'idle') {
            this.#state = 'stopped';
        }
        clearTimeout(this.#timer);
        this.#timer = null;
        this.#transport.close();
    }

    /**
     * Send `payload` to the application's handler of `component`.
     * `noFallback`: once a socket transport exists, fail rather than fall back
     * to HTTP; today HTTP is the only path, so it changes nothing.
     * @param {string} component @param {unknown} payload
     * @param {{noFallback?: boolean, signal?: AbortSignal}} [options]
     * @returns {Promise<any>} the handler's `response`
     */
    async sendToServer(component, payload, options = {}) {
        if (typeof component !== 'string' || component === '') {
            throw new RealtimeError('component must be a non-empty string', {code: 'invalid_argument'});
        }
        const answer = await postJson(this.#options.fetch, `${this.#config.url}/send`, this.#config.usertoken,
            {component, payload: payload === undefined ? null : payload}, options.signal);
        return answer.response;
    }

    /** @param {PollAnswer} answer */
    #onBatch(answer) {
        if (this.#state !== 'running') {
            return;
        }
        this.#failures = 0;
        if (answer.recovered === false) {
            this.#lastId = null;
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
            const id = event.id;
            if (Number.isFinite(id)) {
                if (this.#lastId !== null && id <= this.#lastId) {
                    continue;
                }
                this.#lastId = id;
            }
            this.#hub.publish(EVENT, event);
        }
        if (this.#state === 'running') {
            this.#cursor = answer.cursor;
        }
    }

    /** @param {RealtimeError} error */
    #onFailure(error) {
        if (this.#state !== 'running') {
            return;
        }
        if (!error.retryable) {
            this.#lose({reason: error.reason, status: error.status || undefined, code: error.code, message: error.message});
            return;
        }
        this.#failures += 1;
        const {backoffBaseMs, backoffMaxMs, maxRetries, random} = this.#options;
        if (this.#failures >= maxRetries) {
            this.#lose({
                reason: 'retries_exhausted', status: error.status || undefined, code: error.code,
                message: `gave up after ${this.#failures} consecutive failures; last: ${error.message}`,
            });
            return;
        }
        // Full jitter: uniform in [0, min(max, base * 2^(n-1))), at least the server's Retry-After.
        const cap = Math.min(backoffMaxMs, backoffBaseMs * 2 ** (this.#failures - 1));
        const delay = Math.max(Math.floor(random() * cap), Math.min(error.retryAfterMs ?? 0, backoffMaxMs));
        this.#timer = setTimeout(() => {
            this.#timer = null;
            if (this.#state === 'running') {
                this.#transport.open(this.#cursor);
            }
        }, delay);
    }

    /** Give up for good; CONNECTION_LOST fires at most once per client. */
    #lose(info) {
        this.stop();
        this.#state = 'lost';
        if (!this.#lost) {
            this.#lost = true;
            this.#hub.publish(CONNECTION_LOST, withoutUndefined(info));
        }
    }
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
 * Listen to a topic of the default client; works before `init`.
 * @param {string} topic @param {(data: any) => void} listener
 * @returns {() => void} unsubscribe
 */
export function subscribe(topic, listener) {
    return defaultHub.subscribe(topic, listener);
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
 * @property {string} [cursor] opaque; where the first poll starts
 * @property {number} [expires]
 * @property {{channel: string, token: string}[]} subscriptions
 * @property {string[]} [transports]
 */
/**
 * @typedef {object} ClientOptions
 * @property {typeof fetch} [fetch]
 * @property {number} [backoffBaseMs]
 * @property {number} [backoffMaxMs]
 * @property {number} [maxRetries] consecutive failures after which CONNECTION_LOST fires
 * @property {number} [pollTimeoutMs] client-side cap on one poll request
 * @property {number} [shortPollDelayMs] least interval between polls answered without events
 * @property {() => number} [random]
 */
/**
 * @typedef {{events: object[], cursor: string, recovered?: boolean}} PollAnswer
 */

// The client: one connection of a page to the server, and the whole policy (which transport,
// when to retry, fall back and climb back, outages and CONNECTION_LOST, per-channel
// de-duplication, the cursor, channels added and dropped, credential renewal). The transports
// (transports/) only move data; what a failure means comes classified from errors.js.

import {RealtimeError, backoffDelay, networkError} from './errors.js';
import {postJson} from './http.js';
import {CONNECTION_LOST, CONNECTION_RESTORED, EVENT, Hub, RECOVERY_FAILED, STATE_CHANGED, TRANSPORT_CHANGED} from './hub.js';
import {DEFAULTS} from './options.js';
import {TRANSPORTS} from './transports/index.js';
import {isObject, subscriptionRefs, withoutUndefined} from './util.js';

/** Renewals are at least this far apart (a client clock far ahead must not renew in a loop). */
const MIN_RENEW_INTERVAL_MS = 5000;

const DEFAULT_TRANSPORTS = Object.freeze(['websocket', 'sse', 'poll']);

/**
 * One connection of a page to the server. Create with `createClient`; it does
 * nothing until `start()`.
 */
export class RealtimeClient {
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

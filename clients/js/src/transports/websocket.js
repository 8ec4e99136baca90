// The WebSocket transport (`GET /ws`): the only bidirectional one (sendToServer, subscribe and
// unsubscribe frames on a live connection).

import {RealtimeError, abortedError, badResponse, classifyClose, networkError} from '../errors.js';
import {isObject, subscriptionRefs, withoutUndefined} from '../util.js';

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
export class WebSocketTransport {
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

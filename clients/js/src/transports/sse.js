// The Server-Sent Events transport (`GET /sse`), over the environment's `EventSource`.

import {RealtimeError, badResponse, httpError, networkError} from '../errors.js';
import {isObject} from '../util.js';

/**
 * Server-Sent Events transport, `GET {url}/sse?usertoken=…&channel=…&token=…&cursor=…`.
 * Each default message is an event whose `lastEventId` is its cursor;
 * `not_recovered` is a named event. On any error it closes the EventSource
 * itself (so the client resumes from its own cursor, on its own schedule,
 * rather than the browser from Last-Event-ID); when the stream failed before
 * it ever opened it `fetch`es the same URL once to learn the status, which
 * EventSource hides (401/403: credential refused; other 4xx: rejected).
 */
export class SseTransport {
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

// A small EventSource for Node (which has none before v22, and then only behind a flag),
// over fetch streaming, close enough to the WHATWG one for the client's tests:
// `readyState`, `url`, `onopen`/`onmessage`/`onerror` and addEventListener, named events,
// `lastEventId` (sent back as Last-Event-ID when it reconnects by itself), `retry:`, `close()`.
// A non-200 answer or another content type fails the connection (CLOSED + error, no retry);
// a network error or the end of the stream reconnects after the retry delay (CONNECTING +
// error), as browsers do.
//
// `eventSourceWith({fetch})` makes a class that uses another fetch (a failing one, a counting
// one). `simulateNetworkError()` cuts the current stream as a dropped connection would.

const CONNECTING = 0;
const OPEN = 1;
const CLOSED = 2;

export class EventSource extends EventTarget {
    static CONNECTING = CONNECTING;
    static OPEN = OPEN;
    static CLOSED = CLOSED;
    /** The fetch to use; subclasses from `eventSourceWith` set it. */
    static fetch = undefined;

    CONNECTING = CONNECTING;
    OPEN = OPEN;
    CLOSED = CLOSED;

    #fetch;
    #abort = null;
    #timer = null;
    #retryMs = 1000;
    #lastEventId = '';
    #idBuffer = '';
    #buffer = '';
    #data = '';
    #type = '';

    /** @param {string | URL} url @param {{withCredentials?: boolean}} [init] */
    constructor(url, init = {}) {
        super();
        this.url = new URL(url).href;
        this.withCredentials = Boolean(init.withCredentials);
        this.readyState = CONNECTING;
        this.onopen = null;
        this.onmessage = null;
        this.onerror = null;
        for (const type of ['open', 'message', 'error']) {
            this.addEventListener(type, (event) => this[`on${type}`]?.call(this, event));
        }
        const fetchFn = this.constructor.fetch ?? globalThis.fetch;
        this.#fetch = (input, options) => fetchFn(input, options);
        queueMicrotask(() => this.#connect());
    }

    close() {
        this.readyState = CLOSED;
        clearTimeout(this.#timer);
        this.#abort?.abort();
    }

    /** Test hook: the connection drops (the stream errors; the source reconnects by itself). */
    simulateNetworkError() {
        this.#abort?.abort();
    }

    async #connect() {
        if (this.readyState === CLOSED) {
            return;
        }
        const abort = new AbortController();
        this.#abort = abort;
        this.#buffer = '';
        this.#data = '';
        this.#type = '';
        const headers = {'Accept': 'text/event-stream', 'Cache-Control': 'no-store'};
        if (this.#lastEventId !== '') {
            headers['Last-Event-ID'] = this.#lastEventId;
        }
        let response;
        try {
            response = await this.#fetch(this.url, {headers, signal: abort.signal});
        } catch {
            this.#reconnect();
            return;
        }
        if (this.readyState === CLOSED) {
            abort.abort();
            return;
        }
        if (response.status !== 200 || !/^text\/event-stream\b/i.test(response.headers.get('content-type') ?? '')) {
            abort.abort();
            this.readyState = CLOSED;
            this.dispatchEvent(new Event('error'));
            return;
        }
        this.readyState = OPEN;
        this.dispatchEvent(new Event('open'));
        const decoder = new TextDecoder();
        try {
            for await (const chunk of response.body) {
                if (this.readyState === CLOSED || abort.signal.aborted) {
                    break;
                }
                this.#feed(decoder.decode(chunk, {stream: true}));
            }
        } catch {
            // aborted, or the network failed: same as the end of the stream
        }
        this.#reconnect();
    }

    #reconnect() {
        if (this.readyState === CLOSED) {
            return;
        }
        this.readyState = CONNECTING;
        this.dispatchEvent(new Event('error'));
        if (this.readyState === CONNECTING) {
            this.#timer = setTimeout(() => this.#connect(), this.#retryMs);
        }
    }

    /** @param {string} text */
    #feed(text) {
        this.#buffer += text;
        const lines = /\r\n|\n|\r/g;
        let start = 0;
        let match;
        while ((match = lines.exec(this.#buffer)) !== null) {
            if (match[0] === '\r' && match.index === this.#buffer.length - 1) {
                break; // perhaps the first half of CRLF
            }
            this.#line(this.#buffer.slice(start, match.index));
            start = lines.lastIndex;
            if (this.readyState === CLOSED) {
                return;
            }
        }
        this.#buffer = this.#buffer.slice(start);
    }

    /** @param {string} line */
    #line(line) {
        if (line === '') {
            this.#dispatch();
            return;
        }
        if (line.startsWith(':')) {
            return;
        }
        const colon = line.indexOf(':');
        const field = colon < 0 ? line : line.slice(0, colon);
        let value = colon < 0 ? '' : line.slice(colon + 1);
        if (value.startsWith(' ')) {
            value = value.slice(1);
        }
        if (field === 'event') {
            this.#type = value;
        } else if (field === 'data') {
            this.#data += `${value}\n`;
        } else if (field === 'id' && !value.includes('\0')) {
            this.#idBuffer = value;
        } else if (field === 'retry' && /^\d+$/.test(value)) {
            this.#retryMs = Number(value);
        }
    }

    #dispatch() {
        this.#lastEventId = this.#idBuffer;
        const data = this.#data;
        const type = this.#type || 'message';
        this.#data = '';
        this.#type = '';
        if (data === '') {
            return;
        }
        this.dispatchEvent(new MessageEvent(type, {
            data: data.slice(0, -1),
            lastEventId: this.#lastEventId,
            origin: new URL(this.url).origin,
        }));
    }
}

/** An EventSource class that fetches with `fetch`. @param {{fetch: typeof fetch}} options */
export function eventSourceWith({fetch}) {
    return class extends EventSource {
        static fetch = fetch;
    };
}

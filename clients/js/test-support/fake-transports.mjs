// Stand-ins for WebSocket and EventSource, injected into the client with the options
// `{WebSocket, EventSource}`.
//
// - `fakeWebSocket()` / `fakeEventSource()`: classes whose instances the unit tests drive by
//   hand, playing the server (`accept`, `receive`, `serverClose`, `refuse`; `open`, `message`,
//   `error`). Each class keeps its own `instances`.
// - `refusingWebSocket()`: a WebSocket that never opens (what a proxy that blocks WebSocket
//   looks like to a page): `error`, then `close` 1006.
// - `breakableWebSocket()` / `breakableEventSource()`: the real thing until `ctl.break()`, which
//   cuts every open connection and makes new ones fail as above.
import {EventSource as PolyfillEventSource, eventSourceWith} from './eventsource.mjs';

/** A WebSocket class driven by the test. */
export function fakeWebSocket() {
    return class FakeWebSocket {
        static CONNECTING = 0;
        static OPEN = 1;
        static CLOSING = 2;
        static CLOSED = 3;
        /** @type {FakeWebSocket[]} */
        static instances = [];

        constructor(url) {
            this.url = url;
            this.readyState = 0;
            /** Frames the client sent, parsed. */
            this.sent = [];
            /** `{code}` when the client closed it. */
            this.closedByClient = null;
            this.onopen = this.onmessage = this.onerror = this.onclose = null;
            FakeWebSocket.instances.push(this);
        }

        send(text) {
            if (this.readyState !== 1) {
                throw new DOMException('the socket is not open', 'InvalidStateError');
            }
            this.sent.push(JSON.parse(text));
        }

        close(code = 1000) {
            if (this.readyState < 2) {
                this.readyState = 3;
                this.closedByClient = {code};
            }
        }

        /** Frames of type `type` the client sent. */
        frames(type) {
            return this.sent.filter((f) => f.type === type);
        }

        // --- the server's side ---
        accept() {
            this.readyState = 1;
            this.onopen?.({type: 'open'});
        }

        /** Accept and answer the subscribe frame with `recovered` at `cursor` (default: the client's). */
        acceptRecovered(cursor) {
            this.accept();
            this.receive({type: 'recovered', cursor: cursor ?? this.frames('subscribe')[0]?.cursor ?? 'head'});
        }

        receive(frame) {
            this.onmessage?.({type: 'message', data: typeof frame === 'string' ? frame : JSON.stringify(frame)});
        }

        serverClose(code, reason = '') {
            this.readyState = 3;
            this.onclose?.({type: 'close', code, reason, wasClean: true});
        }

        refuse() {
            this.readyState = 3;
            this.onerror?.({type: 'error'});
            this.onclose?.({type: 'close', code: 1006, reason: '', wasClean: false});
        }
    };
}

/** A WebSocket class whose every connection fails to open; `instances` counts the attempts. */
export function refusingWebSocket() {
    const Fake = fakeWebSocket();
    return class RefusingWebSocket extends Fake {
        constructor(url) {
            super(url);
            setTimeout(() => this.refuse(), 1);
        }
    };
}

/** An EventSource class driven by the test. */
export function fakeEventSource() {
    return class FakeEventSource extends EventTarget {
        static CONNECTING = 0;
        static OPEN = 1;
        static CLOSED = 2;
        /** @type {FakeEventSource[]} */
        static instances = [];

        constructor(url) {
            super();
            this.url = url;
            this.readyState = 0;
            this.closed = false;
            this.onopen = this.onmessage = this.onerror = null;
            FakeEventSource.instances.push(this);
        }

        /** The query string, as URLSearchParams. */
        get query() {
            return new URL(this.url).searchParams;
        }

        close() {
            this.readyState = 2;
            this.closed = true;
        }

        // --- the server's side ---
        open() {
            this.readyState = 1;
            this.onopen?.({type: 'open'});
        }

        /** A record: `type` 'message' (default) or a named event. */
        message(data, lastEventId, type = 'message') {
            const event = new MessageEvent(type, {data: typeof data === 'string' ? data : JSON.stringify(data), lastEventId});
            if (type === 'message') {
                this.onmessage?.(event);
            }
            this.dispatchEvent(event);
        }

        /** The stream failed (before opening: how a refusal looks; after: a drop). */
        error() {
            this.readyState = this.readyState === 1 ? 0 : 2;
            this.onerror?.({type: 'error'});
        }
    };
}

/** The real WebSocket, until `ctl.break()`; `ctl.opened` counts the real connections made. */
export function breakableWebSocket(Real = globalThis.WebSocket) {
    const Refusing = refusingWebSocket();
    const ctl = {broken: false, opened: 0, refused: 0, sockets: new Set()};
    ctl.break = () => {
        ctl.broken = true;
        for (const socket of ctl.sockets) {
            socket.close(); // not asked by the client: to it, the connection dropped
        }
        ctl.sockets.clear();
    };
    function BreakableWebSocket(url, protocols) {
        if (ctl.broken) {
            ctl.refused += 1;
            return new Refusing(url);
        }
        ctl.opened += 1;
        const socket = new Real(url, protocols);
        ctl.sockets.add(socket);
        return socket;
    }
    return {WebSocket: BreakableWebSocket, ctl};
}

/** The polyfill EventSource, until `ctl.break()`; then streams drop and new ones cannot fetch. */
export function breakableEventSource() {
    const ctl = {broken: false, opened: 0, sources: new Set()};
    const fetchFn = (url, init) => (ctl.broken
        ? Promise.reject(new TypeError('fetch failed'))
        : globalThis.fetch(url, init));
    const Base = eventSourceWith({fetch: fetchFn});
    ctl.break = () => {
        ctl.broken = true;
        for (const source of ctl.sources) {
            source.simulateNetworkError();
        }
        ctl.sources.clear();
    };
    class BreakableEventSource extends Base {
        constructor(url, init) {
            super(url, init);
            ctl.opened += 1;
            ctl.sources.add(this);
        }
    }
    return {EventSource: BreakableEventSource, ctl};
}

export {PolyfillEventSource as EventSource};

// The topics a page listens to (the names of tool_realtime), and the hub that calls their listeners.

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

/** Topic → listeners, with listener errors contained. */
export class Hub {
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

// The transports by name, and the contract between them and the client (the typedefs below).
// A transport only moves data: `open(cursor)` (closing any previous run) and `close()`; it hands
// `{events, cursor, recovered?}` to `sink.batch` (the first batch shows that it works; SSE, whose
// handshake brings no data, tells `sink.opened()`), and on its first failure reports once to
// `sink.failure` (a RealtimeError classified by errors.js) and goes idle until opened again. After
// `close()` it calls the sink no more. `static handshake`: opening must succeed within
// `openTimeoutMs`; `static available(context)`: the environment has what it needs. The policy
// (when to retry, which transport next) is the client's (client.js).

import {PollTransport} from './poll.js';
import {SseTransport} from './sse.js';
import {WebSocketTransport} from './websocket.js';

/** Available transports by the names used in the page config's `transports`. */
export const TRANSPORTS = Object.freeze({websocket: WebSocketTransport, sse: SseTransport, poll: PollTransport});

/**
 * @typedef {{events: object[], cursor: string, recovered?: boolean}} PollAnswer
 * @typedef {{config: PageConfig, options: Required<ClientOptions>, fetch: typeof fetch,
 *            WebSocket?: typeof WebSocket | null, EventSource?: typeof EventSource | null}} TransportContext
 * @typedef {{opened: () => void, batch: (answer: PollAnswer) => void,
 *            failure: (error: RealtimeError) => void}} TransportSink
 */

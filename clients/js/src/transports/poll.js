// The long-polling transport (`POST /poll`): works wherever plain HTTP does.

import {RealtimeError, badResponse, networkError} from '../errors.js';
import {postJson} from '../http.js';
import {subscriptionRefs} from '../util.js';

/**
 * Long-polling transport: exactly one `POST {url}/poll` in flight; the next
 * starts as soon as an answer has been handed to the sink. Only an answer
 * without events that came back sooner than `shortPollDelayMs` (a server in
 * short-poll mode, or shutting down) delays the next poll to that interval.
 * It has no handshake: its first answer shows that it works.
 */
export class PollTransport {
    static handshake = false;

    static available() {
        return true;
    }

    /**
     * @param {TransportContext} context
     * @param {TransportSink} sink
     */
    constructor(context, sink) {
        this.context = context;
        this.sink = sink;
        this.generation = 0;
        this.abort = null;
        this.pause = null;
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
        const {config, fetch: fetchFn, options: {pollTimeoutMs, shortPollDelayMs}} = this.context;
        // The first poll of a run asks for an answer at once (`wait: false`): the client learns
        // that polling works now, not at the first event or after the server's wait (30 s).
        let first = true;
        while (generation === this.generation) {
            const started = Date.now();
            const abort = new AbortController();
            this.abort = abort;
            let timedOut = false;
            const timer = setTimeout(() => { timedOut = true; abort.abort(); }, pollTimeoutMs);
            let answer;
            try {
                // The client's current credentials and channels, read at each poll: a renewal or
                // an added channel takes effect with the next request.
                answer = await postJson(fetchFn, `${config.url}/poll`, config.usertoken,
                    {subscriptions: subscriptionRefs(config), cursor, ...(first ? {wait: false} : {})}, abort.signal);
                if (!Array.isArray(answer.events) || typeof answer.cursor !== 'string') {
                    throw badResponse('poll answer lacks events or cursor', 200);
                }
            } catch (err) {
                clearTimeout(timer);
                if (generation !== this.generation) {
                    return; // closed meanwhile
                }
                this.close();
                this.sink.failure(timedOut ? networkError('poll timed out')
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
            const quick = first;
            first = false;
            if (!quick && answer.events.length === 0 && rest > 0 && generation === this.generation) {
                await new Promise((resolve) => { this.pause = {timer: setTimeout(resolve, rest), resolve}; });
                if (generation === this.generation) {
                    this.pause = null;
                }
            }
        }
    }
}

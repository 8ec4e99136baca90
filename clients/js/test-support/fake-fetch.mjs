// A scripted stand-in for fetch, for the unit tests that need no server.
//
// Each request takes the next step of the script; when the script is empty the
// request hangs (like a long-poll) until it is aborted or a step is pushed.
// A step is `{status, json, text, headers}`, `{error}` (fetch rejects with it),
// or a function `(request) => step` (may be async).

export class FakeFetch {
    constructor(steps = []) {
        this.steps = [...steps];
        /** @type {{url: string, body: any, headers: Record<string,string>, time: number}[]} */
        this.calls = [];
        this.inFlight = 0;
        this.maxInFlight = 0;
        this.waiting = [];
        this.aborted = 0;
        this.fetch = (url, init) => this.#handle(url, init);
    }

    /** Add steps; a hanging request takes the first one at once. */
    push(...steps) {
        this.steps.push(...steps);
        while (this.waiting.length > 0 && this.steps.length > 0) {
            this.waiting.shift()(this.steps.shift());
        }
    }

    /** Requests to a path ending, e.g. '/poll'. */
    callsTo(path) {
        return this.calls.filter((c) => c.url.endsWith(path));
    }

    async #handle(url, init = {}) {
        const request = {
            url,
            body: init.body === undefined ? undefined : JSON.parse(init.body),
            headers: {...init.headers},
            time: Date.now(),
        };
        this.calls.push(request);
        this.inFlight += 1;
        this.maxInFlight = Math.max(this.maxInFlight, this.inFlight);
        try {
            let step = this.steps.shift();
            if (step === undefined) {
                step = await new Promise((resolve, reject) => {
                    const waiter = (s) => resolve(s);
                    this.waiting.push(waiter);
                    init.signal?.addEventListener('abort', () => {
                        this.waiting = this.waiting.filter((w) => w !== waiter);
                        this.aborted += 1;
                        reject(new DOMException('This operation was aborted', 'AbortError'));
                    });
                });
            }
            if (typeof step === 'function') {
                step = await step(request);
            }
            if (init.signal?.aborted) {
                this.aborted += 1;
                throw new DOMException('This operation was aborted', 'AbortError');
            }
            if (step.error) {
                throw step.error;
            }
            const text = step.text ?? (step.json === undefined ? '' : JSON.stringify(step.json));
            return new Response(text, {status: step.status ?? 200, headers: step.headers ?? {}});
        } finally {
            this.inFlight -= 1;
        }
    }
}

/** A poll answer step. */
export function answer(events, cursor, recovered = true) {
    return {status: 200, json: {events, cursor, recovered}};
}

/** A minimal event with id `id`. */
export function ev(id, payload = {n: id}) {
    return {id, contextid: 1, component: 'mod_x', area: 'a', itemid: 0, channeldetails: '', payload, timecreated: 1};
}

/** A server error step. */
export function failure(status, code, message = code, headers = {}) {
    return {status, json: {error: {code, message}}, headers};
}

/** A network failure step (what fetch does when the server is unreachable). */
export function networkDown() {
    return {error: new TypeError('fetch failed')};
}

// Reconnect storm: N clients (the real clients/js/realtime.js, default policy) on one node, the
// node restarted (SIGTERM, or kill -9) on the same port and data dir. Checks that every client
// comes back and gets every acknowledged event exactly once, in order, and measures how the
// reconnects spread over time: connection attempts and resumes per 100 ms, and the time until
// every client is back, for the jittered client and for the no-jitter one (`backoffJitter: 0,
// reconnectSpreadMs: 0`: all at once, as the old client did).
//
//     node --experimental-websocket bench/storm/storm.mjs --help
//
// `runStorm(options)` is also what clients/js/test/storm.test.mjs runs (small N, no timing).
import {spawn, execFileSync} from 'node:child_process';
import {existsSync} from 'node:fs';
import {mkdtemp, rm, writeFile} from 'node:fs/promises';
import net from 'node:net';
import os from 'node:os';
import {join} from 'node:path';
import {monitorEventLoopDelay, performance} from 'node:perf_hooks';
import {createInterface} from 'node:readline';
import {fileURLToPath} from 'node:url';

import {createClient, EVENT, CONNECTION_LOST, RECOVERY_FAILED, STATE_CHANGED, TRANSPORT_CHANGED} from '../../clients/js/realtime.js';
import {EventSource} from '../../clients/js/test-support/eventsource.mjs';

const API_KEY = 'storm-bench-api-key';
const REPO = fileURLToPath(new URL('../../', import.meta.url));

/** The client options of each policy; `jitter` is the default policy, untouched. */
export const POLICIES = Object.freeze({
    jitter: {},
    nojitter: {backoffJitter: 0, reconnectSpreadMs: 0},
});

/** Width of the histogram bins (ms). */
export const BIN_MS = 100;

/**
 * One storm: start a fresh node, connect `clients` clients, restart the node, check and measure.
 *
 * @param {object} o
 * @param {string} o.bin the `realtime` binary
 * @param {number} [o.clients] 1000
 * @param {number} [o.channels] the clients are spread over this many channels (client i on i mod channels)
 * @param {'term'|'kill'} [o.restart] SIGTERM (drain: WebSockets close 1012) or SIGKILL
 * @param {'jitter'|'nojitter'} [o.policy]
 * @param {number} [o.eventsPerStep] events per channel notified at each of the four steps
 * @param {number} [o.downMs] how long the node stays down after it exited (0: started again at once)
 * @param {string|null} [o.serverCpus] taskset the server to these CPUs (e.g. "0")
 * @param {number} [o.timeoutMs] how long each wait may take before the run fails
 * @param {(line: string) => void} [o.log]
 * @returns {Promise<object>} the result (see `summarise`)
 */
export async function runStorm(o) {
    const opts = {
        clients: 1000, channels: 10, restart: 'term', policy: 'jitter', eventsPerStep: 5, downMs: 0,
        serverCpus: null, timeoutMs: 60000, log: () => {},
        ...Object.fromEntries(Object.entries(o).filter(([, v]) => v !== undefined)),
    };
    const {clients: n, channels: nChannels, restart, policy, eventsPerStep, log, timeoutMs} = opts;
    if (!POLICIES[policy]) {
        throw new Error(`unknown policy ${policy}`);
    }
    if (restart !== 'term' && restart !== 'kill') {
        throw new Error(`unknown restart ${restart}`);
    }
    const dataDir = await mkdtemp(join(os.tmpdir(), 'realtime-storm-'));
    const port = await freePort();
    const clients = [];
    let server = null;
    const dueTimers = trackTimerDue();
    try {
        server = await startServer(opts, port, dataDir);
        const chans = Array.from({length: nChannels}, (_, c) => ({
            contextid: 1, component: 'mod_storm', area: 'storm', itemid: c, details: '',
        }));
        // One user per client, so the per-user connection cap (50) is not what is measured.
        const pages = await mapLimit(n, 32, (i) => api(server.url, '/api/page', {user: i + 1, channels: [chans[i % nChannels]]}));

        // Every connection attempt: when this process issued it (t), when the client's policy
        // wanted it (due: the end of the timer it was made from, see dueTimers), and how it went.
        const attempts = [];
        const Real = globalThis.WebSocket;
        if (typeof Real !== 'function') {
            throw new Error('no global WebSocket: run node with --experimental-websocket');
        }
        const attempt = (rec, transport) => {
            const a = {t: performance.now(), due: dueTimers.due(), transport, client: rec.index, outcome: 'pending'};
            attempts.push(a);
            return a;
        };
        for (let i = 0; i < n; i++) {
            const rec = {index: i, channel: i % nChannels, ids: [], states: [], changes: [], lost: [], finalLost: [], recoveries: 0};
            function CountingWebSocket(url, protocols) {
                const a = attempt(rec, 'websocket');
                const socket = new Real(url, protocols);
                socket.addEventListener('open', () => { a.outcome = 'open'; a.openedAt = performance.now(); });
                socket.addEventListener('close', (e) => {
                    a.closeCode = e.code;
                    if (a.outcome === 'pending') {
                        a.outcome = `close ${e.code}`;
                    }
                });
                socket.addEventListener('error', () => { if (a.outcome === 'pending') a.outcome = 'error'; });
                return socket;
            }
            class CountingEventSource extends EventSource {
                constructor(url, init) {
                    super(url, init);
                    const a = attempt(rec, 'sse');
                    this.addEventListener('open', () => { a.outcome = 'open'; });
                    this.addEventListener('error', () => { if (a.outcome === 'pending') a.outcome = 'error'; });
                }
            }
            // A poll is a (re)connect only when the client is not connected: the polls of a
            // working long-poll loop are its normal traffic.
            const countingFetch = (url, init) => {
                const answer = globalThis.fetch(url, init);
                if (new URL(url).pathname === '/poll' && rec.client?.connectionState !== 'connected') {
                    const a = attempt(rec, 'poll');
                    answer.then((r) => { a.outcome = `status ${r.status}`; }, () => { a.outcome = 'error'; });
                }
                return answer;
            };
            const client = createClient(pages[i], {
                ...POLICIES[policy], WebSocket: CountingWebSocket, EventSource: CountingEventSource, fetch: countingFetch,
            });
            rec.client = client;
            client.subscribe(EVENT, (e) => rec.ids.push(e.id));
            client.subscribe(STATE_CHANGED, ({state, transport}) => rec.states.push({t: performance.now(), state, transport}));
            client.subscribe(TRANSPORT_CHANGED, ({transport, reason}) => rec.changes.push({t: performance.now(), transport, reason}));
            client.subscribe(CONNECTION_LOST, (e) => (e.retrying ? rec.lost : rec.finalLost).push(e));
            client.subscribe(RECOVERY_FAILED, () => { rec.recoveries += 1; });
            clients.push(rec);
        }
        const startedAt = performance.now();
        for (const rec of clients) {
            rec.client.start();
        }
        await waitFor(() => clients.every((r) => r.client.connectionState === 'connected'), timeoutMs,
            () => `all ${n} clients to connect (${clients.filter((r) => r.client.connectionState === 'connected').length} are)`);
        const connectMs = performance.now() - startedAt;
        log(`${n} clients connected in ${Math.round(connectMs)} ms`);

        const expected = chans.map(() => []);
        const notifyStep = async (step) => {
            const events = [];
            for (let c = 0; c < nChannels; c++) {
                for (let k = 0; k < eventsPerStep; k++) {
                    events.push({channel: chans[c], payload: {step, k}});
                }
            }
            const {ids} = await api(server.url, '/api/notify', {events});
            ids.forEach((id, j) => expected[Math.floor(j / eventsPerStep)].push(id));
        };
        const allHave = () => clients.every((r) => r.ids.length >= expected[r.channel].length);
        const haveMessage = () => `every client to have its events (${clients.filter((r) => r.ids.length >= expected[r.channel].length).length} of ${n} do)`;

        // 1. Before the restart, delivered. 2. Acknowledged just before the signal, maybe not delivered.
        await notifyStep('before');
        if (!await waitFor(allHave, timeoutMs, haveMessage, {soft: true})) {
            log(`gave up waiting for ${haveMessage()}`); // reported below as lost
        }
        await notifyStep('at-signal');
        const attemptsBefore = attempts.length;
        // How late this process's timers and callbacks ran during the storm: one process plays
        // every client, so its own backlog spreads the reconnects too.
        const lag = monitorEventLoopDelay({resolution: 10});
        lag.enable();
        const signalAt = performance.now();
        const exit = await server.signal(restart === 'term' ? 'SIGTERM' : 'SIGKILL');
        const exitedAt = performance.now();
        log(`server ${restart === 'term' ? 'SIGTERM' : 'SIGKILL'}: exited (${exit.code ?? exit.signal}) after ${Math.round(exitedAt - signalAt)} ms`);
        if (opts.downMs > 0) {
            await sleep(opts.downMs); // a slower restart: the clients back off meanwhile
        }
        server = await startServer(opts, port, dataDir);
        const upAt = server.upAt;
        // 3. Right after the restart, while the clients come back.
        await notifyStep('after-restart');
        const reconnects = (r) => r.states.filter((s) => s.t > signalAt && s.state === 'connected');
        await waitFor(() => clients.every((r) => reconnects(r).length > 0 && r.client.connectionState === 'connected'),
            timeoutMs, () => `all ${n} clients to reconnect (${clients.filter((r) => reconnects(r).length > 0).length} did)`);
        const allBackAt = performance.now();
        lag.disable();
        // Back = the last time it became connected before all were (a client that reached the
        // draining node and was sent away again counts once, when it came back for good).
        const backOf = (r) => reconnects(r).filter((s) => s.t <= allBackAt).pop();
        log(`all back ${Math.round(allBackAt - upAt)} ms after the node listened again`);
        // 4. After all are back.
        await notifyStep('after-back');
        // A client short of events at the deadline is reported below (lost), not thrown.
        const complete = await waitFor(allHave, timeoutMs, haveMessage, {soft: true});
        if (!complete) {
            log(`gave up waiting for ${haveMessage()}`);
        }
        await sleep(300); // room for a duplicate to show

        return summarise({
            opts, clients, expected, attempts: attempts.slice(attemptsBefore), signalAt, exitedAt, upAt, connectMs,
            backOf, reconnects, exit, lag,
        });
    } finally {
        for (const rec of clients) {
            rec.client.stop();
        }
        dueTimers.restore();
        if (server) {
            await server.signal('SIGKILL');
        }
        await rm(dataDir, {recursive: true, force: true});
    }
}

/**
 * Wraps the global `setTimeout` so that code run by a timer can ask when that timer was due
 * (`due()`, performance.now() scale; null outside timers). The client schedules each reconnect
 * with `setTimeout` and opens the connection synchronously in the callback, so the due time of
 * an attempt is when its policy wanted it: what N independent browsers would do. When one
 * process plays every client, a burst of attempts due in the same millisecond is issued over
 * the time this process takes to open them all (`t`).
 */
function trackTimerDue() {
    const real = globalThis.setTimeout;
    let current = null;
    function setTimeoutTracked(fn, ms, ...args) {
        if (typeof fn !== 'function') {
            return real(fn, ms, ...args);
        }
        const due = performance.now() + Math.max(1, Number(ms) || 0); // Node waits at least 1 ms
        return real(function tracked(...a) {
            const outer = current;
            current = due;
            try {
                return fn.apply(this, a);
            } finally {
                current = outer;
            }
        }, ms, ...args);
    }
    const custom = Symbol.for('nodejs.util.promisify.custom');
    if (real[custom]) {
        setTimeoutTracked[custom] = real[custom];
    }
    globalThis.setTimeout = setTimeoutTracked;
    return {
        due: () => current,
        restore: () => { globalThis.setTimeout = real; },
    };
}

/** Per-client checks and the spread figures of one run. */
function summarise({opts, clients, expected, attempts, signalAt, exitedAt, upAt, connectMs, backOf, reconnects, exit, lag}) {
    let lost = 0;
    let dup = 0;
    let disorder = 0;
    let badClients = 0;
    const examples = [];
    for (const [i, r] of clients.entries()) {
        const want = expected[r.channel];
        const got = new Set(r.ids);
        const missing = want.filter((id) => !got.has(id));
        const dups = r.ids.length - got.size;
        const extra = [...got].filter((id) => !want.includes(id)).length;
        const unordered = r.ids.filter((id, j) => j > 0 && r.ids[j - 1] >= id).length;
        lost += missing.length;
        dup += dups;
        disorder += unordered;
        if (missing.length || dups || unordered || extra) {
            badClients += 1;
            if (examples.length < 5) {
                examples.push({client: i, missing, received: r.ids, expected: want});
            }
        }
    }
    const back = clients.map((r) => backOf(r));
    // When each client saw its connection go (the first state change after the signal).
    const drops = clients.map((r) => r.states.find((s) => s.t > signalAt)?.t - signalAt).filter(Number.isFinite);
    const backSinceUp = back.map((s) => s.t - upAt).sort((a, b) => a - b);
    const resumes = back.map((s) => s.t - signalAt);
    const upRel = upAt - signalAt;
    const attemptTimes = attempts.map((a) => a.t - signalAt);
    const dueTimes = attempts.map((a) => (a.due ?? a.t) - signalAt);
    const hist = (times) => histogram(times, BIN_MS);
    const byTransport = {};
    for (const a of attempts) {
        byTransport[a.transport] = (byTransport[a.transport] ?? 0) + 1;
    }
    const resumedOn = {};
    for (const s of back) {
        resumedOn[s.transport] = (resumedOn[s.transport] ?? 0) + 1;
    }
    const count = (items, key) => {
        const out = {};
        for (const item of items) {
            out[key(item)] = (out[key(item)] ?? 0) + 1;
        }
        return out;
    };
    // The best transport is the first of the page config's list (websocket).
    const best = clients[0].client.transports[0];
    return {
        clients: clients.length, channels: opts.channels, restart: opts.restart, policy: opts.policy, heldDownMs: opts.downMs,
        eventsPerClient: expected[0].length,
        connectMs: Math.round(connectMs),
        exit: exit.code ?? exit.signal,
        downMs: Math.round(upRel), // signal → the new node's "listening on"
        exitMs: Math.round(exitedAt - signalAt),
        lost, dup, disorder, badClients, examples,
        recoveryFailed: sum(clients.map((r) => r.recoveries)),
        finalConnectionLost: sum(clients.map((r) => r.finalLost.length)),
        unreachableNotices: sum(clients.map((r) => r.lost.length)),
        back: back.filter(Boolean).length,
        // Clients that became connected more than once after the signal (e.g. to the draining node).
        reconnectedTwice: clients.filter((r) => reconnects(r).length > 1).length,
        resumedOn,
        attempts: attempts.length,
        attemptsPerClient: round(attempts.length / clients.length, 2),
        attemptsByTransport: byTransport,
        // How each attempt went, before and after the new node had bound its port.
        outcomes: {
            beforeUp: count(attempts.filter((a) => a.t < upAt), (a) => `${a.transport} ${a.outcome}`),
            afterUp: count(attempts.filter((a) => a.t >= upAt), (a) => `${a.transport} ${a.outcome}`),
        },
        // WebSockets that opened on the old node after the signal (it was draining): the new
        // node is started only once the old one has exited. By the close code they got.
        openedOnDrainingNode: count(attempts.filter((a) => a.openedAt < exitedAt), (a) => `close ${a.closeCode ?? 'none'}`),
        // Transport changes after the signal, by reason (fallback, climb).
        transportChanges: count(clients.flatMap((r) => r.changes.filter((c) => c.t > signalAt)), (c) => `${c.reason} to ${c.transport}`),
        // Clients not on the best transport once all were back (they climb back after climbAfterMs).
        notOnBest: clients.filter((r) => r.client.transport !== best).length,
        // A few of them: their attempts and transport changes after the signal (ms from the up).
        notOnBestExamples: clients.filter((r) => r.client.transport !== best).slice(0, 3).map((r) => ({
            client: r.index,
            attempts: attempts.filter((a) => a.client === r.index)
                .map((a) => `${Math.round(a.t - upAt)} ${a.transport} ${a.outcome}`),
            changes: r.changes.filter((c) => c.t > signalAt).map((c) => `${Math.round(c.t - upAt)} ${c.reason} to ${c.transport}`),
        })),
        // The storm the policy makes: attempts per 100 ms (from the signal) by when they were due.
        duePeak: peak(hist(dueTimes)),
        // The storm this process issued: attempts per 100 ms by when they were made.
        attemptPeak: peak(hist(attemptTimes)),
        // What reached the new node: attempts after it listened again.
        attemptPeakUp: peak(hist(attemptTimes.filter((t) => t >= upRel))),
        // What the node served: clients resumed (subscribed, `recovered` received) per 100 ms.
        resumePeak: peak(hist(resumes)),
        backMs: {
            p50: Math.round(quantile(backSinceUp, 0.5)),
            p99: Math.round(quantile(backSinceUp, 0.99)),
            max: Math.round(backSinceUp[backSinceUp.length - 1]),
        },
        // Signal → each client seeing its connection go (the spread the node and this process add).
        dropMs: {
            min: Math.round(Math.min(...drops)),
            p50: Math.round(quantile([...drops].sort((a, b) => a - b), 0.5)),
            max: Math.round(Math.max(...drops)),
        },
        // This process's event-loop delay from the signal until all were back (ms).
        loopDelayMs: {p50: round(lag.percentile(50) / 1e6, 1), p99: round(lag.percentile(99) / 1e6, 1), max: round(lag.max / 1e6, 1)},
        histograms: {
            binMs: BIN_MS,
            drops: hist(drops),
            due: hist(dueTimes),
            attempts: hist(attemptTimes),
            resumes: hist(resumes),
        },
    };
}

/** Counts per `width`-ms bin from 0 (times before 0 go into bin 0). */
function histogram(times, width) {
    const bins = [];
    for (const t of times) {
        const b = Math.max(0, Math.floor(t / width));
        while (bins.length <= b) {
            bins.push(0);
        }
        bins[b] += 1;
    }
    return bins;
}

/** {count, atMs}: the fullest bin and where it starts. */
function peak(bins) {
    let best = 0;
    for (let i = 1; i < bins.length; i++) {
        if (bins[i] > bins[best]) {
            best = i;
        }
    }
    return {count: bins[best] ?? 0, atMs: best * BIN_MS};
}

function quantile(sorted, q) {
    if (sorted.length === 0) {
        return NaN;
    }
    return sorted[Math.min(sorted.length - 1, Math.ceil(q * sorted.length) - 1)];
}

function sum(values) {
    return values.reduce((a, b) => a + b, 0);
}

function round(x, digits) {
    return Number(x.toFixed(digits));
}

/**
 * Start `realtime serve` on `port` with `dataDir` and wait for its "listening on" line.
 * Connections per IP are not capped (every client is on 127.0.0.1); each client is its own user.
 */
async function startServer(opts, port, dataDir) {
    if (!existsSync(opts.bin)) {
        throw new Error(`realtime binary not found at ${opts.bin}: build it or pass --bin`);
    }
    const args = ['serve', '--listen', `127.0.0.1:${port}`, '--data-dir', dataDir];
    const [cmd, argv] = opts.serverCpus ? ['taskset', ['-c', opts.serverCpus, opts.bin, ...args]] : [opts.bin, args];
    const child = spawn(cmd, argv, {
        env: {
            ...process.env,
            REALTIME_API_KEY: API_KEY,
            REALTIME_SERVER_DEMO: 'off',
            REALTIME_LIMITS_CONNECTIONS_PER_IP: '0',
            RUST_LOG: 'warn,realtime::serve=info', // "realtime started" (with its time) and "shutting down"
        },
        stdio: ['ignore', 'pipe', 'pipe'],
    });
    let stderr = '';
    // When the node had bound its port, by its own clock: the log line "realtime started"
    // (this process may read the "listening on" line late, busy with the clients' retries).
    let boundAt = null;
    let bound;
    const boundLine = new Promise((resolve) => { bound = resolve; });
    child.stderr.setEncoding('utf8');
    createInterface({input: child.stderr}).on('line', (raw) => {
        stderr = `${stderr}${raw}\n`.slice(-20000);
        const text = raw.replace(/\x1b\[[0-9;]*m/g, '');
        const started = /^(\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(?:\.\d+)?Z)\s+INFO\s+\S+ realtime started/.exec(text);
        if (started && boundAt === null) {
            boundAt = Date.parse(started[1]) - performance.timeOrigin;
            bound();
        }
    });
    const exited = new Promise((resolve) => child.once('exit', (code, signal) => resolve({code, signal})));
    const url = await new Promise((resolve, reject) => {
        const timer = setTimeout(() => fail('no "listening on" line within 30 s'), 30000);
        const lines = createInterface({input: child.stdout});
        function fail(why) {
            clearTimeout(timer);
            child.kill('SIGKILL');
            reject(new Error(`${cmd} ${argv.join(' ')}: ${why}\n--- stderr ---\n${stderr}`));
        }
        lines.on('line', (line) => {
            const match = /listening on (https?:\/\/\S+)/.exec(line);
            if (match) {
                clearTimeout(timer);
                resolve(match[1].replace(/\/+$/, ''));
            }
        });
        child.once('error', (err) => fail(`spawn failed: ${err.message}`));
        exited.then(({code, signal}) => fail(`exited early (code ${code}, signal ${signal})`));
    });
    child.stdout.resume();
    const lineReadAt = performance.now();
    await Promise.race([boundLine, sleep(2000)]);
    return {
        url,
        /** When the node listened (performance.now() scale): its log's time, else when the line was read. */
        upAt: boundAt ?? lineReadAt,
        stderr: () => stderr,
        /** Send `sig` and wait for the exit (SIGKILL after 15 s). */
        async signal(sig) {
            if (child.exitCode === null && child.signalCode === null) {
                child.kill(sig);
                const timer = setTimeout(() => child.kill('SIGKILL'), 15000);
                const status = await exited;
                clearTimeout(timer);
                return status;
            }
            return exited;
        },
    };
}

async function api(base, path, body) {
    const response = await fetch(`${base}${path}`, {
        method: 'POST',
        headers: {'Authorization': `Bearer ${API_KEY}`, 'Content-Type': 'application/json'},
        body: JSON.stringify(body),
    });
    const text = await response.text();
    if (response.status !== 200) {
        throw new Error(`POST ${path} → ${response.status} ${text.slice(0, 500)}`);
    }
    return JSON.parse(text);
}

/** `fn(i)` for i in 0..n, at most `limit` at once; the results in order. */
async function mapLimit(n, limit, fn) {
    const out = new Array(n);
    let next = 0;
    const worker = async () => {
        while (next < n) {
            const i = next++;
            out[i] = await fn(i);
        }
    };
    await Promise.all(Array.from({length: Math.min(limit, n)}, worker));
    return out;
}

function freePort() {
    return new Promise((resolve, reject) => {
        const srv = net.createServer();
        srv.unref();
        srv.on('error', reject);
        srv.listen(0, '127.0.0.1', () => {
            const {port} = srv.address();
            srv.close(() => resolve(port));
        });
    });
}

/** Resolves true once `condition()` holds; after `timeoutMs` throws, or resolves false if `soft`. */
async function waitFor(condition, timeoutMs, message, {soft = false} = {}) {
    const deadline = performance.now() + timeoutMs;
    while (!condition()) {
        if (performance.now() > deadline) {
            if (soft) {
                return false;
            }
            throw new Error(`timed out after ${timeoutMs} ms waiting for ${message()}`);
        }
        await sleep(10);
    }
    return true;
}

function sleep(ms) {
    return new Promise((resolve) => setTimeout(resolve, ms));
}

// ---- command line ----

const USAGE = `usage: node --experimental-websocket bench/storm/storm.mjs [options]
  --bin PATH          the realtime binary (default target/release/realtime, else target/debug/realtime)
  --clients N         clients on the node (1000)
  --channels N        spread over this many channels (10)
  --restart LIST      term, kill or both (both)
  --policy LIST       jitter, nojitter or both (both)
  --repeat N          runs of each restart × policy (1)
  --events N          events per channel at each of the 4 notify steps (5)
  --down MS           keep the node down this long after it exited (0: restart at once)
  --server-cpus CPUS  run the server under taskset -c CPUS (pin this process yourself: taskset -c 1 node …)
  --json FILE         write every run's result (with the histograms) to FILE`;

function parseArgs(argv) {
    const args = {restart: 'both', policy: 'both', repeat: 1, clients: 1000, channels: 10, events: 5};
    for (let i = 0; i < argv.length; i++) {
        const key = argv[i];
        const value = () => {
            if (i + 1 >= argv.length) {
                throw new Error(`${key} needs a value\n${USAGE}`);
            }
            return argv[++i];
        };
        switch (key) {
        case '--bin': args.bin = value(); break;
        case '--clients': args.clients = Number(value()); break;
        case '--channels': args.channels = Number(value()); break;
        case '--restart': args.restart = value(); break;
        case '--policy': args.policy = value(); break;
        case '--repeat': args.repeat = Number(value()); break;
        case '--events': args.events = Number(value()); break;
        case '--down': args.down = Number(value()); break;
        case '--server-cpus': args.serverCpus = value(); break;
        case '--timeout': args.timeout = Number(value()); break;
        case '--json': args.json = value(); break;
        case '-h': case '--help': console.log(USAGE); process.exit(0); break;
        default: throw new Error(`unknown argument ${key}\n${USAGE}`);
        }
    }
    if (!args.bin) {
        const release = join(REPO, 'target/release/realtime');
        args.bin = existsSync(release) ? release : join(REPO, 'target/debug/realtime');
    }
    return args;
}

function load() {
    return os.loadavg().map((x) => x.toFixed(2)).join(', ');
}

function sh(cmd, args) {
    try {
        return execFileSync(cmd, args, {encoding: 'utf8'}).trim();
    } catch {
        return '';
    }
}

async function main() {
    const args = parseArgs(process.argv.slice(2));
    const list = (v, all) => (v === 'both' ? all : v.split(','));
    const restarts = list(args.restart, ['term', 'kill']);
    const policies = list(args.policy, ['jitter', 'nojitter']);
    const meta = {
        command: `node ${process.execArgv.join(' ')} ${process.argv.slice(1).map((a) => a.replace(REPO, '')).join(' ')}`,
        bin: args.bin,
        commit: sh('git', ['-C', REPO, 'rev-parse', '--short', 'HEAD']),
        cores: os.cpus().length,
        clientCpus: sh('taskset', ['-cp', String(process.pid)]).replace(/^.*: /, ''),
        serverCpus: args.serverCpus ?? 'all',
        node: process.version,
        loadAtStart: load(),
        uptimeAtStart: sh('uptime', []),
        topAtStart: sh('sh', ['-c', 'top -bn1 | head -15']).split('\n'),
        started: new Date().toISOString(),
    };
    console.log(`# ${meta.command}`);
    console.log(`# ${meta.bin} (${meta.commit}); ${meta.cores} cores; server on CPUs ${meta.serverCpus}, clients on ${meta.clientCpus}`);
    console.log(`# load average at start: ${meta.loadAtStart}`);
    const runs = [];
    for (let rep = 0; rep < args.repeat; rep++) {
        for (const restart of restarts) {
            // Alternate the order of the policies from one repetition to the next.
            for (const policy of rep % 2 === 0 ? policies : [...policies].reverse()) {
                const loadBefore = load();
                const result = await runStorm({
                    bin: args.bin, clients: args.clients, channels: args.channels, restart, policy,
                    eventsPerStep: args.events, downMs: args.down, serverCpus: args.serverCpus ?? null, timeoutMs: args.timeout,
                    log: (line) => console.log(`  [${restart} ${policy}] ${line}`),
                });
                result.loadBefore = loadBefore;
                result.loadAfter = load();
                runs.push(result);
                console.log(line(result));
                if (result.lost || result.dup || result.disorder || result.badClients) {
                    console.log(`  PROBLEM: ${JSON.stringify(result.examples).slice(0, 2000)}`);
                }
            }
        }
    }
    meta.loadAtEnd = load();
    meta.uptimeAtEnd = sh('uptime', []);
    meta.topAtEnd = sh('sh', ['-c', 'top -bn1 | head -15']).split('\n');
    console.log(`# load average at end: ${meta.loadAtEnd}`);
    console.log(table(runs));
    console.log(summaryTable(runs));
    if (args.json) {
        await writeFile(args.json, `${JSON.stringify({meta, runs}, null, 1)}\n`);
        console.log(`# wrote ${args.json}`);
    }
    const bad = runs.filter((r) => r.lost || r.dup || r.disorder || r.badClients || r.back !== r.clients
        || r.finalConnectionLost || r.recoveryFailed);
    process.exitCode = bad.length ? 1 : 0;
}

function line(r) {
    return `${r.restart} ${r.policy}: down ${r.downMs} ms; back ${r.back}/${r.clients} `
        + `(p50 ${r.backMs.p50}, p99 ${r.backMs.p99}, max ${r.backMs.max} ms after up); per 100 ms peaks: `
        + `attempts due ${r.duePeak.count} @${r.duePeak.atMs}, issued ${r.attemptPeak.count} @${r.attemptPeak.atMs} `
        + `(after up ${r.attemptPeakUp.count}), resumes ${r.resumePeak.count} @${r.resumePeak.atMs}; attempts ${r.attempts} `
        + `${JSON.stringify(r.attemptsByTransport)}; resumed on ${JSON.stringify(r.resumedOn)}; `
        + `lost ${r.lost} dup ${r.dup} disorder ${r.disorder}; recovery failed ${r.recoveryFailed}; `
        + `connected twice ${r.reconnectedTwice} (opened on the draining node: ${JSON.stringify(r.openedOnDrainingNode)}); `
        + `not on the best transport ${r.notOnBest}; `
        + `loop delay max ${r.loopDelayMs.max} ms; `
        + `load ${r.loadBefore}`;
}

const RESTART_NAMES = {term: 'SIGTERM', kill: 'kill -9'};

function table(runs) {
    const head = '| restart | client | down (ms) | back p50 / p99 / max (ms after up) | peak attempts / 100 ms: due / issued | peak resumes / 100 ms | attempts / client | lost | dup | load (1 min) |\n'
        + '|---|---|---|---|---|---|---|---|---|---|';
    const rows = runs.map((r) => `| ${RESTART_NAMES[r.restart]} | ${r.policy} | ${r.downMs} `
        + `| ${r.backMs.p50} / ${r.backMs.p99} / ${r.backMs.max} | ${r.duePeak.count} / ${r.attemptPeak.count} | ${r.resumePeak.count} `
        + `| ${r.attemptsPerClient} | ${r.lost} | ${r.dup} | ${r.loadBefore.split(',')[0]} |`);
    return [head, ...rows].join('\n');
}

function median(values) {
    const sorted = [...values].sort((a, b) => a - b);
    const mid = (sorted.length - 1) / 2;
    return (sorted[Math.floor(mid)] + sorted[Math.ceil(mid)]) / 2;
}

/** Median (min–max) of `values`, as text. */
function spread(values) {
    const m = Number(median(values).toFixed(2));
    return values.length === 1 ? `${m}` : `${m} (${Math.min(...values)}–${Math.max(...values)})`;
}

/** Per restart: the jittered client against the no-jitter one, median (min–max) over the repeats. */
function summaryTable(runs) {
    const out = ['| restart | client | runs | peak attempts / 100 ms, due | issued | peak resumes / 100 ms | back p50 (ms after up) | back max (ms after up) | attempts / client | not back on the WebSocket | lost | dup |',
        '|---|---|---|---|---|---|---|---|---|---|---|---|'];
    const ratios = [];
    const figures = {
        'attempts due': (r) => r.duePeak.count, 'attempts issued': (r) => r.attemptPeak.count, resumes: (r) => r.resumePeak.count,
    };
    for (const restart of ['term', 'kill']) {
        const of = (policy) => runs.filter((r) => r.restart === restart && r.policy === policy);
        for (const policy of ['jitter', 'nojitter']) {
            const rs = of(policy);
            if (rs.length) {
                out.push(`| ${RESTART_NAMES[restart]} | ${policy} | ${rs.length} `
                    + `| ${spread(rs.map((r) => r.duePeak.count))} | ${spread(rs.map((r) => r.attemptPeak.count))} `
                    + `| ${spread(rs.map((r) => r.resumePeak.count))} `
                    + `| ${spread(rs.map((r) => r.backMs.p50))} | ${spread(rs.map((r) => r.backMs.max))} `
                    + `| ${spread(rs.map((r) => r.attemptsPerClient))} | ${spread(rs.map((r) => r.notOnBest))} `
                    + `| ${sum(rs.map((r) => r.lost))} | ${sum(rs.map((r) => r.dup))} |`);
            }
        }
        const [j, nj] = [of('jitter'), of('nojitter')];
        if (j.length && nj.length) {
            const ratio = (f) => (median(nj.map(f)) / median(j.map(f))).toFixed(2);
            ratios.push(`# ${RESTART_NAMES[restart]}: spread ratio, peak per 100 ms no-jitter / jitter (medians): `
                + Object.entries(figures).map(([name, f]) => `${name} ${ratio(f)}×`).join(', '));
        }
    }
    return [...out, ...ratios].join('\n');
}

if (process.argv[1] && fileURLToPath(import.meta.url) === process.argv[1]) {
    main().catch((err) => {
        console.error(err);
        process.exitCode = 2;
    });
}

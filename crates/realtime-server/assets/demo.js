// demo.js — the demo page (/demo): the original tool_realtime test page, re-created.
// An ES module with no dependencies but the demo node's client, /demo/realtime.js; no build step.
//
// What it does:
// - reads the page config that the server embedded in #realtime-page-config and init()s the client;
// - shows the transport in use (TRANSPORT_CHANGED, client.transport) and forces one on request;
// - "Event delivery": POST /demo/events asks the server's background job for N events D ms apart,
//   each with payload {runid, seq, count, senttime}; the page counts them per run (n / N,
//   duplicates, out of order) and measures latency = receive time + clock offset − senttime.
//   Events with such a payload whose runid the page did not start (e.g. sent with
//   POST /demo/api/notify and the server's API key) are shown as a run too ("external");
// - clock calibration 1 s after load: 5 × GET /demo/time, offset = (avg browser→server − avg
//   server→browser) / 2; latencies are adjusted (and say so) when |offset| > 5 ms;
// - "Event push": sendToServer('tool_realtime', {senttime, seq}) one after the other; the built-in
//   handler answers {receivedtime, echo}; each answer is checked;
// - the connection badge follows client.connectionState (STATE_CHANGED): connected, connecting…,
//   disconnected (reconnecting); an outage past the client's lostAfterMs (CONNECTION_LOST with
//   retrying: true) shows a "reconnecting" banner until CONNECTION_RESTORED;
// - credentials are renewed before they expire (the client's `renew` option: GET /demo/config, the
//   endpoint an application gives its pages), shown in #credentials;
// - a final CONNECTION_LOST (retrying: false) is shown once, prominently, with its reason;
//   RECOVERY_FAILED as a notice.
//
// A run's status (data-status on #delivery-status / #push-status → text):
//   idle → "—", sending → "Sending…", receiving → "Receiving…", complete → "Complete",
//   complete_with_errors → "Complete (with errors)", connection_lost → "Connection lost",
//   timeout → "Timeout (x of y received)" (90 s without progress), error → "Error: <code>".
//
// Test hook (stable, used by the browser tests in e2e/):
//   window.realtimeDemo = {Realtime, client, state, ready, calibrate(), startRun(count, delayMs),
//                          push(count, delayMs, noFallback)}
//   state.transport, state.forced           the transport in use; the forced one or null
//   state.transportLog[]                    {transport, previous, reason, at} per TRANSPORT_CHANGED
//   state.connectionLost[]                  each final CONNECTION_LOST (retrying: false) ({reason, code, status, …})
//   state.connection                        client.connectionState: connecting | connected | disconnected
//   state.stateLog[]                        {state, previous, transport, retrying, at} per STATE_CHANGED
//   state.outages[]                         each CONNECTION_LOST with retrying: true ({reason, attempts, …, at,
//                                            restoredAfterMs once CONNECTION_RESTORED came})
//   state.restored                          how many CONNECTION_RESTORED
//   state.recoveryFailed                    how many RECOVERY_FAILED
//   state.renewals[]                        {reason, at, expires} per renewal of the credentials (GET /demo/config)
//   state.eventsTotal, state.otherEvents    events received; those that were not part of a run
//   state.runs[runid]                       {runid, source: 'page'|'external', count, delayMs, status,
//                                            received (distinct seqs), seqs[], ids[], duplicates,
//                                            outOfOrder, invalid, latencies[] (raw: receive − senttime,
//                                            ms), transports {name: events}, error}
//   state.current                           runid shown in the delivery card (null after Reset)
//   state.push                              {status, count, delayMs, answered, ok, bad, errors[],
//                                            roundtrips[] (ms), via {websocket|http: n}}
//   state.clock                             {calibrated, calibrating, offset (ms, server − browser),
//                                            adjusted, toServer, fromServer (avg ms), error, calibrations}
// Element ids (stable): #demo[data-ready], #transport[data-transport], #transport-mode[data-mode],
//   #force-auto, #force-websocket, #force-sse, #force-poll (radio buttons), #transports-offered,
//   #clock-offset[data-offset][data-calibrated], #clock-recalibrate,
//   #delivery-single, #delivery-count, #delivery-delay, #delivery-multiple (submit of #delivery-form),
//   #delivery-status[data-status], #delivery-received[data-received][data-count], #delivery-latency,
//   #delivery-adjusted, #delivery-duplicates, #delivery-outoforder, #delivery-transports,
//   #delivery-runid, #delivery-reset, #event-log, #events-total,
//   #push-count, #push-delay, #push-nofallback, #push-send (submit of #push-form),
//   #push-status[data-status], #push-answered[data-ok][data-count], #push-roundtrip, #push-errors,
//   #push-via, #push-reset, #lost-banner[data-reason], #lost-reason, #lost-message,
//   #connection-state[data-state][data-retrying], #connection-since, #outage-banner, #outage-message,
//   #recovery-notice, #recovery-count, #page-error, #transport-log, #credentials[data-renewals].

import * as Realtime from '/demo/realtime.js';

/** A run that made no progress for this long ends in "Timeout (x of y received)". */
const RUN_TIMEOUT_MS = 90000;
/** Offsets within this many ms are noise: latencies are shown unadjusted. */
const OFFSET_THRESHOLD_MS = 5;
const CALIBRATION_SAMPLES = 5;
const LOG_LINES = 10;
const TRANSPORT_NAMES = ['websocket', 'sse', 'poll'];

const $ = (id) => document.getElementById(id);

const state = {
    renewals: [],
    transport: null,
    forced: null,
    transports: [],
    transportLog: [],
    connectionLost: [],
    connection: 'disconnected',
    stateLog: [],
    outages: [],
    restored: 0,
    recoveryFailed: 0,
    eventsTotal: 0,
    otherEvents: 0,
    runs: {},
    current: null,
    push: idlePush(),
    clock: {
        calibrated: false, calibrating: false, offset: 0, adjusted: false, toServer: null, fromServer: null, error: null,
        calibrations: 0,
    },
};
/** Per run: the seqs seen (a Set, kept out of `state` so that it stays plain JSON). */
const seen = new Map();
/** Per run: its timeout timer. */
const timers = new Map();
/** How many POST /send the client made: tells whether a send went over the WebSocket. */
let httpSends = 0;
let pushGeneration = 0;
let config = null;
let client = null;

function idlePush() {
    return {status: 'idle', count: 0, delayMs: 0, answered: 0, ok: 0, bad: 0, errors: [], roundtrips: [], via: {}};
}

// ---------------------------------------------------------------- start

function showPageError(message) {
    const el = $('page-error');
    el.textContent = message;
    el.hidden = false;
}

function readConfig() {
    const text = $('realtime-page-config')?.textContent ?? '';
    return JSON.parse(text);
}

function start() {
    try {
        config = readConfig();
    } catch (err) {
        showPageError(`The page config could not be read: ${err.message}`);
        return;
    }
    $('config-user').textContent = String(config.user ?? '?');
    const sub = config.subscriptions?.[0];
    if (sub) {
        $('config-channel').textContent = `(${sub.contextid}, ${sub.component}, ${sub.area}, ${sub.itemid})`;
    }

    Realtime.subscribe(Realtime.TRANSPORT_CHANGED, onTransportChanged);
    Realtime.subscribe(Realtime.EVENT, onEvent);
    Realtime.subscribe(Realtime.CONNECTION_LOST, onConnectionLost);
    Realtime.subscribe(Realtime.CONNECTION_RESTORED, onConnectionRestored);
    Realtime.subscribe(Realtime.STATE_CHANGED, onStateChanged);
    Realtime.subscribe(Realtime.RECOVERY_FAILED, onRecoveryFailed);

    const countingFetch = (input, init) => {
        if (String(input).endsWith('/send')) {
            httpSends += 1;
        }
        return fetch(input, init);
    };
    // Fresh credentials from the demo's own endpoint, as an application's page would get them.
    const renew = async ({reason}) => {
        const response = await fetch(`${config.url}/config`, {cache: 'no-store'});
        if (!response.ok) {
            throw new Error(`GET ${config.url}/config: HTTP ${response.status}`);
        }
        const fresh = await response.json();
        state.renewals.push({reason, at: Date.now(), expires: fresh.expires});
        setTimeout(renderCredentials, 0);
        return fresh;
    };
    try {
        client = Realtime.init(config, {fetch: countingFetch, renew});
    } catch (err) {
        showPageError(`The client could not start: ${err.message}`);
        return;
    }
    renderCredentials();
    state.transports = client.transports;
    state.transport = client.transport;
    state.connection = client.connectionState;

    for (const name of ['auto', ...TRANSPORT_NAMES]) {
        $(`force-${name}`).addEventListener('change', (ev) => {
            if (ev.target.checked) {
                force(name === 'auto' ? null : name);
            }
        });
    }
    $('delivery-single').addEventListener('click', () => startRun(1, 0));
    $('delivery-form').addEventListener('submit', (ev) => {
        ev.preventDefault();
        startRun(intValue('delivery-count', 1, 1000, 20), intValue('delivery-delay', 0, 10000, 500));
    });
    $('delivery-reset').addEventListener('click', (ev) => {
        ev.preventDefault();
        state.current = null;
        $('event-log').replaceChildren();
        renderDelivery();
    });
    $('push-form').addEventListener('submit', (ev) => {
        ev.preventDefault();
        push(intValue('push-count', 1, 1000, 1), intValue('push-delay', 0, 10000, 0), $('push-nofallback').checked);
    });
    $('push-reset').addEventListener('click', (ev) => {
        ev.preventDefault();
        pushGeneration += 1;
        state.push = idlePush();
        renderPush();
    });
    $('clock-recalibrate').addEventListener('click', (ev) => {
        ev.preventDefault();
        calibrate();
    });
    $('lost-reload').addEventListener('click', (ev) => {
        ev.preventDefault();
        location.reload();
    });

    window.realtimeDemo = {Realtime, client, state, ready: true, calibrate, startRun, push};
    render();
    $('demo').dataset.ready = 'true';
    setTimeout(calibrate, 1000);
}

function intValue(id, min, max, fallback) {
    const n = Number.parseInt($(id).value, 10);
    const value = Number.isFinite(n) ? Math.min(max, Math.max(min, n)) : fallback;
    $(id).value = String(value);
    return value;
}

function force(name) {
    try {
        client.force(name);
    } catch (err) {
        showPageError(`Cannot use ${name}: ${err.message}`);
    }
    state.forced = client.forced;
    renderConnection();
}

// ---------------------------------------------------------------- client topics

function onTransportChanged({transport, previous, reason}) {
    state.transport = transport;
    state.forced = client ? client.forced : state.forced;
    state.transportLog.push({transport, previous, reason, at: Date.now()});
    const li = document.createElement('li');
    li.textContent = `${clockTime(Date.now())} ${transport} (${reason}${previous ? `, was ${previous}` : ''})`;
    $('transport-log').prepend(li);
    trim($('transport-log'));
    renderConnection();
}

/** The credentials line: when they expire, how often they were renewed. */
function renderCredentials() {
    const el = $('credentials');
    const expires = client?.expires;
    el.dataset.renewals = String(state.renewals.length);
    el.textContent = (expires ? `valid until ${new Date(expires).toLocaleTimeString()}` : 'no expiry known')
        + (state.renewals.length > 0 ? ` · renewed ${state.renewals.length}×` : '');
}

function onStateChanged({state: now, previous, transport, retrying}) {
    state.connection = now;
    state.stateLog.push({state: now, previous, transport, retrying, at: Date.now()});
    renderBadge(retrying);
}

function onConnectionRestored({downMs}) {
    state.restored += 1;
    const outage = state.outages.at(-1);
    if (outage && outage.restoredAfterMs === undefined) {
        outage.restoredAfterMs = downMs;
    }
    $('outage-banner').hidden = true;
}

function onConnectionLost(info) {
    if (info.retrying) {
        // An outage past the client's threshold: it keeps trying; runs go on (they time out on their own).
        state.outages.push({...info, at: Date.now()});
        $('outage-message').textContent = info.message ? `(${info.message})` : '';
        $('outage-banner').hidden = state.connectionLost.length > 0;
        return;
    }
    $('outage-banner').hidden = true;
    state.connectionLost.push({...info});
    if (state.connectionLost.length === 1) {
        const banner = $('lost-banner');
        banner.dataset.reason = String(info.reason ?? '');
        $('lost-reason').textContent = lostText(info);
        $('lost-message').textContent = info.message ? `(${info.message})` : '';
        banner.hidden = false;
    }
    for (const run of Object.values(state.runs)) {
        if (run.status === 'sending' || run.status === 'receiving') {
            run.status = 'connection_lost';
            clearTimeout(timers.get(run.runid));
        }
    }
    render();
}

function lostText(info) {
    const what = {
        credential_refused: 'The server refused this page’s credentials',
        rejected: 'The server rejected the connection',
        retries_exhausted: 'The server could not be reached, the page stopped trying',
    }[info.reason] ?? `The connection ended (${info.reason})`;
    const details = [info.code, info.status ? `HTTP ${info.status}` : null, info.transport ? `over ${info.transport}` : null]
        .filter(Boolean).join(', ');
    return `${what}${details ? ` — ${details}` : ''}. Reload the page to connect again.`;
}

function onRecoveryFailed() {
    state.recoveryFailed += 1;
    $('recovery-count').textContent = String(state.recoveryFailed);
    $('recovery-notice').hidden = false;
}

function isRunPayload(p) {
    return p !== null && typeof p === 'object' && typeof p.runid === 'string'
        && Number.isInteger(p.seq) && Number.isInteger(p.count) && p.count > 0;
}

function onEvent(event) {
    const received = Date.now();
    const transport = client ? client.transport : state.transport;
    state.eventsTotal += 1;
    const p = event.payload;
    let run = null;
    if (isRunPayload(p)) {
        run = state.runs[p.runid] ?? newRun(p.runid, p.count, null, 'external', 'receiving');
        record(run, event, received, transport);
    } else {
        state.otherEvents += 1;
    }
    logEvent(event, received, transport, run);
    renderDelivery();
}

function record(run, event, received, transport) {
    const {seq, senttime} = event.payload;
    const seqs = seen.get(run.runid);
    run.ids.push(event.id);
    run.seqs.push(seq);
    run.transports[transport] = (run.transports[transport] ?? 0) + 1;
    if (typeof senttime === 'number') {
        run.latencies.push(received - senttime);
    }
    if (seq < 1 || seq > run.count || event.payload.count !== run.count) {
        run.invalid += 1;
    } else if (seqs.has(seq)) {
        run.duplicates += 1;
    } else {
        seqs.add(seq);
        run.received = seqs.size;
        if (seq < run.maxSeq) {
            run.outOfOrder += 1;
        }
        run.maxSeq = Math.max(run.maxSeq, seq);
    }
    if (run.received >= run.count && run.status !== 'connection_lost' && run.status !== 'error') {
        run.status = run.duplicates || run.outOfOrder || run.invalid ? 'complete_with_errors' : 'complete';
        clearTimeout(timers.get(run.runid));
    } else if (run.status === 'sending' || run.status === 'receiving' || run.status === 'timeout') {
        if (run.status === 'timeout') {
            run.status = 'receiving';
        }
        armTimeout(run);
    }
}

function logEvent(event, received, transport, run) {
    const li = document.createElement('li');
    const p = event.payload;
    const what = run ? `seq ${p.seq}/${p.count}` : JSON.stringify(p).slice(0, 60);
    const latency = run && typeof p.senttime === 'number' ? ` ${formatMs(received + appliedOffset() - p.senttime)} ms` : '';
    li.textContent = `#${event.id} ${what}${latency} via ${transport}`;
    $('event-log').prepend(li);
    trim($('event-log'));
}

function trim(list) {
    while (list.children.length > LOG_LINES) {
        list.lastElementChild.remove();
    }
}

// ---------------------------------------------------------------- delivery runs

function newRunId() {
    const random = Math.floor(Math.random() * 36 ** 6).toString(36).padStart(6, '0');
    return `${Date.now().toString(36)}-${random}`;
}

function newRun(runid, count, delayMs, source, status) {
    const run = {
        runid, source, count, delayMs, status, startedAt: Date.now(), received: 0, maxSeq: 0, seqs: [], ids: [],
        duplicates: 0, outOfOrder: 0, invalid: 0, latencies: [], transports: {}, error: null,
    };
    state.runs[runid] = run;
    seen.set(runid, new Set());
    state.current = runid;
    if (status === 'sending' || status === 'receiving') {
        armTimeout(run);
    }
    return run;
}

function armTimeout(run) {
    clearTimeout(timers.get(run.runid));
    timers.set(run.runid, setTimeout(() => {
        if (run.status === 'sending' || run.status === 'receiving') {
            run.status = 'timeout';
            renderDelivery();
        }
    }, RUN_TIMEOUT_MS));
}

/** Ask the server's background job for `count` events `delayMs` apart. Returns the runid. */
function startRun(count, delayMs) {
    const runid = newRunId();
    const run = newRun(runid, count, delayMs, 'page', state.connectionLost.length ? 'connection_lost' : 'sending');
    renderDelivery();
    if (run.status === 'connection_lost') {
        return runid;
    }
    (async () => {
        try {
            const res = await fetch('/demo/events', {
                method: 'POST',
                headers: {'Authorization': `Bearer ${config.usertoken}`, 'Content-Type': 'application/json'},
                body: JSON.stringify({count, delay_ms: delayMs, runid}),
            });
            if (res.status !== 202) {
                let code = `http_${res.status}`;
                try {
                    code = (await res.json()).error.code ?? code;
                } catch {
                    // not our error body
                }
                failRun(run, code);
            } else if (run.status === 'sending') {
                run.status = 'receiving';
            }
        } catch (err) {
            failRun(run, 'network_error');
        }
        renderDelivery();
    })();
    return runid;
}

function failRun(run, code) {
    run.error = code;
    if (run.status === 'sending' || run.status === 'receiving') {
        run.status = 'error';
        clearTimeout(timers.get(run.runid));
    }
}

// ---------------------------------------------------------------- push (browser to server)

function sameJson(a, b) {
    if (a === b) {
        return true;
    }
    if (typeof a !== 'object' || typeof b !== 'object' || a === null || b === null || Array.isArray(a) !== Array.isArray(b)) {
        return false;
    }
    const ka = Object.keys(a);
    const kb = Object.keys(b);
    return ka.length === kb.length && ka.every((k) => Object.hasOwn(b, k) && sameJson(a[k], b[k]));
}

const sleep = (ms) => new Promise((resolve) => { setTimeout(resolve, ms); });

/** Send `count` payloads one after the other, `delayMs` apart, and check each answer. */
async function push(count, delayMs, noFallback = false) {
    const generation = ++pushGeneration;
    const run = {...idlePush(), status: 'sending', count, delayMs};
    state.push = run;
    renderPush();
    for (let seq = 1; seq <= count; seq += 1) {
        const payload = {senttime: Date.now(), seq};
        const before = httpSends;
        const t0 = performance.now();
        try {
            const answer = await Realtime.sendToServer('tool_realtime', payload, {noFallback});
            const roundtrip = performance.now() - t0;
            if (generation !== pushGeneration) {
                return;
            }
            run.roundtrips.push(roundtrip);
            const good = answer !== null && typeof answer === 'object' && typeof answer.receivedtime === 'number'
                && answer.receivedtime > 0 && sameJson(answer.echo, payload);
            run[good ? 'ok' : 'bad'] += 1;
            const via = httpSends > before ? 'http' : 'websocket';
            run.via[via] = (run.via[via] ?? 0) + 1;
        } catch (err) {
            if (generation !== pushGeneration) {
                return;
            }
            run.errors.push(String(err?.code ?? 'error'));
        }
        run.answered += 1;
        renderPush();
        if (delayMs > 0 && seq < count) {
            await sleep(delayMs);
            if (generation !== pushGeneration) {
                return;
            }
        }
    }
    run.status = run.ok === count ? 'complete' : run.ok === 0 && run.errors.length === count ? 'error' : 'complete_with_errors';
    renderPush();
}

// ---------------------------------------------------------------- clock

/** 5 × GET /demo/time: offset = (avg browser→server − avg server→browser) / 2 = server clock − browser clock. */
async function calibrate() {
    if (state.clock.calibrating) {
        return;
    }
    state.clock.calibrating = true;
    renderClock();
    const toServer = [];
    const fromServer = [];
    try {
        for (let i = 0; i < CALIBRATION_SAMPLES; i += 1) {
            const sent = Date.now();
            const res = await fetch('/demo/time', {cache: 'no-store'});
            const {time} = await res.json();
            const back = Date.now();
            if (typeof time !== 'number') {
                throw new Error('GET /demo/time answered no time');
            }
            toServer.push(time - sent);
            fromServer.push(back - time);
        }
        const avg = (xs) => xs.reduce((s, x) => s + x, 0) / xs.length;
        const offset = (avg(toServer) - avg(fromServer)) / 2;
        Object.assign(state.clock, {
            calibrated: true, offset, adjusted: Math.abs(offset) > OFFSET_THRESHOLD_MS,
            toServer: avg(toServer), fromServer: avg(fromServer), error: null,
            calibrations: state.clock.calibrations + 1,
        });
    } catch (err) {
        state.clock.error = err.message;
    }
    state.clock.calibrating = false;
    render();
}

function appliedOffset() {
    return state.clock.adjusted ? state.clock.offset : 0;
}

// ---------------------------------------------------------------- rendering

const STATUS_TEXT = {
    idle: '—',
    sending: 'Sending…',
    receiving: 'Receiving…',
    complete: 'Complete',
    complete_with_errors: 'Complete (with errors)',
    connection_lost: 'Connection lost',
};

function statusText(status, run, received) {
    if (status === 'timeout') {
        return `Timeout (${received} of ${run.count} received)`;
    }
    if (status === 'error') {
        return `Error: ${run.error ?? run.errors?.[0] ?? 'unknown'}`;
    }
    if (status === 'sending' && run.answered !== undefined && run.count > 1) {
        return `Sending… (${run.answered} / ${run.count})`;
    }
    return STATUS_TEXT[status] ?? status;
}

function formatMs(ms) {
    return Math.abs(ms) >= 100 ? String(Math.round(ms)) : ms.toFixed(1);
}

function minAvgMax(values, shift = 0) {
    if (values.length === 0) {
        return 'min — / avg — / max — ms';
    }
    let min = Infinity;
    let max = -Infinity;
    let sum = 0;
    for (const v of values) {
        min = Math.min(min, v);
        max = Math.max(max, v);
        sum += v;
    }
    return `min ${formatMs(min + shift)} / avg ${formatMs(sum / values.length + shift)} / max ${formatMs(max + shift)} ms`;
}

function clockTime(ms) {
    return new Date(ms).toLocaleTimeString([], {hour12: false});
}

function setStatus(el, status, text) {
    el.dataset.status = status;
    el.textContent = text;
}

function render() {
    renderConnection();
    renderClock();
    renderDelivery();
    renderPush();
}

/** The connection badge, from client.connectionState. @param {boolean} [retrying] */
function renderBadge(retrying = state.connectionLost.length === 0) {
    const badge = $('connection-state');
    const now = state.connection;
    badge.dataset.state = now;
    badge.dataset.retrying = String(Boolean(retrying));
    badge.textContent = now === 'connected' ? 'Connected'
        : now === 'connecting' ? 'Connecting…'
            : retrying && state.connectionLost.length === 0 ? 'Disconnected — reconnecting' : 'Disconnected';
    $('connection-since').textContent = `since ${clockTime(Date.now())}`;
}

function renderConnection() {
    const transport = client ? client.transport : state.transport;
    state.transport = transport;
    state.forced = client ? client.forced : null;
    const pill = $('transport');
    pill.dataset.transport = transport ?? '';
    pill.textContent = transport ?? '…';
    pill.classList.toggle('lost', state.connectionLost.length > 0);
    const mode = state.connectionLost.length ? 'lost' : state.forced ? 'forced' : 'automatic';
    $('transport-mode').dataset.mode = mode;
    $('transport-mode').textContent = mode === 'lost' ? 'stopped: connection lost' : mode;
    $('transports-offered').textContent = state.transports.length ? state.transports.join(', ') : '—';
    for (const name of TRANSPORT_NAMES) {
        const input = $(`force-${name}`);
        const offered = state.transports.includes(name);
        input.disabled = !offered || state.connectionLost.length > 0;
        input.title = offered ? '' : 'not offered by this server';
        input.checked = state.forced === name;
    }
    $('force-auto').checked = state.forced === null;
    $('force-auto').disabled = state.connectionLost.length > 0;
}

function renderClock() {
    const el = $('clock-offset');
    const {calibrated, calibrating, offset, adjusted, toServer, fromServer, error} = state.clock;
    el.dataset.calibrated = String(calibrated);
    el.dataset.offset = calibrated ? String(offset) : '';
    if (calibrating) {
        el.textContent = 'calibrating…';
    } else if (error) {
        el.textContent = `calibration failed: ${error}`;
    } else if (calibrated) {
        el.textContent = `${formatMs(offset)} ms${adjusted ? ' (latencies adjusted)' : ' (ignored: within ±5 ms)'}`;
        el.title = `browser→server ${formatMs(toServer)} ms, server→browser ${formatMs(fromServer)} ms on average`;
    } else {
        el.textContent = 'not calibrated yet';
    }
}

function renderDelivery() {
    $('events-total').textContent = String(state.eventsTotal);
    const run = state.current ? state.runs[state.current] : null;
    const received = $('delivery-received');
    if (!run) {
        setStatus($('delivery-status'), 'idle', STATUS_TEXT.idle);
        received.dataset.received = '0';
        received.dataset.count = '0';
        received.textContent = '0 / 0';
        $('delivery-latency').textContent = minAvgMax([]);
        $('delivery-adjusted').hidden = true;
        $('delivery-duplicates').textContent = '0';
        $('delivery-outoforder').textContent = '0';
        $('delivery-transports').textContent = '—';
        $('delivery-runid').textContent = '—';
        return;
    }
    setStatus($('delivery-status'), run.status, statusText(run.status, run, run.received));
    received.dataset.received = String(run.received);
    received.dataset.count = String(run.count);
    received.textContent = `${run.received} / ${run.count}`;
    $('delivery-latency').textContent = minAvgMax(run.latencies, appliedOffset());
    $('delivery-adjusted').hidden = !state.clock.adjusted;
    $('delivery-duplicates').textContent = String(run.duplicates);
    $('delivery-duplicates').classList.toggle('bad', run.duplicates > 0);
    $('delivery-outoforder').textContent = String(run.outOfOrder);
    $('delivery-outoforder').classList.toggle('bad', run.outOfOrder > 0);
    const over = Object.entries(run.transports).map(([name, n]) => `${name} ${n}`).join(', ');
    $('delivery-transports').textContent = over || '—';
    $('delivery-runid').textContent = `${run.runid}${run.source === 'external' ? ' (external)' : ''}`;
}

function renderPush() {
    const run = state.push;
    setStatus($('push-status'), run.status, statusText(run.status, run, run.ok));
    const answered = $('push-answered');
    answered.dataset.ok = String(run.ok);
    answered.dataset.count = String(run.count);
    answered.textContent = `${run.ok} / ${run.count}${run.bad ? ` (${run.bad} wrong)` : ''}`;
    $('push-roundtrip').textContent = minAvgMax(run.roundtrips);
    const errors = run.errors.length + run.bad;
    $('push-errors').textContent = run.errors.length ? `${errors} (${[...new Set(run.errors)].join(', ')})` : String(errors);
    $('push-errors').classList.toggle('bad', errors > 0);
    const via = Object.entries(run.via).map(([name, n]) => `${name === 'http' ? 'POST /send' : name} ${n}`).join(', ');
    $('push-via').textContent = via || '—';
}

start();

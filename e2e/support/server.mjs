// Starts and stops the real `realtime` binary for the browser tests.
// The binary is $REALTIME_BIN, else target/debug/realtime at the repository root (`cargo build` first).

import {spawn} from 'node:child_process';
import {mkdtempSync, rmSync, existsSync} from 'node:fs';
import {tmpdir} from 'node:os';
import {join, resolve, dirname} from 'node:path';
import {fileURLToPath} from 'node:url';

const ROOT = resolve(dirname(fileURLToPath(import.meta.url)), '../..');
export const BIN = process.env.REALTIME_BIN || join(ROOT, 'target/debug/realtime');
/** The API key every test server uses (POST /demo/api/notify from the tests). */
export const API_KEY = 'e2e-api-key-0123456789';
/** The demo channel: the page at /demo is subscribed to it. */
export const DEMO_CHANNEL = Object.freeze({contextid: 1, component: 'tool_realtime', area: 'test', itemid: 0});

/** A fresh data dir, removed by `cleanup()`. */
export function tempDataDir() {
    return mkdtempSync(join(tmpdir(), 'realtime-e2e-'));
}

/**
 * A running `realtime serve`. `start()` picks a free port the first time (port 0) and keeps it,
 * so `stop()` then `start()` is a restart on the same port and data dir.
 */
export class Server {
    /** @param {{dataDir?: string, env?: Record<string, string>}} [options] */
    constructor({dataDir, env = {}} = {}) {
        if (!existsSync(BIN)) {
            throw new Error(`no realtime binary at ${BIN}: run \`cargo build -p realtime-server\` or set REALTIME_BIN`);
        }
        this.ownDir = !dataDir;
        this.dataDir = dataDir ?? tempDataDir();
        this.env = env;
        this.port = 0;
        this.url = null;
        this.child = null;
        this.log = '';
    }

    /** Start (again), optionally with other environment variables. Resolves once it listens. */
    async start(env = this.env) {
        this.env = env;
        // Only the settings of this test: none of the REALTIME_* of the shell running the tests.
        const base = Object.fromEntries(Object.entries(process.env).filter(([k]) => !k.startsWith('REALTIME_')));
        // A restart may race the previous listener's socket for a moment: retry the bind.
        for (let attempt = 1; ; attempt += 1) {
            try {
                await this.#spawn({...base, RUST_LOG: 'warn', REALTIME_API_KEY: API_KEY, ...env});
                return this;
            } catch (err) {
                if (attempt >= 5 || !/address|in use/i.test(String(err.message))) {
                    throw err;
                }
                await new Promise((r) => { setTimeout(r, 100 * attempt); });
            }
        }
    }

    #spawn(env) {
        const args = ['serve', '--listen', `127.0.0.1:${this.port}`, '--data-dir', this.dataDir];
        const child = spawn(BIN, args, {env, stdio: ['ignore', 'pipe', 'pipe']});
        this.child = child;
        child.stderr.setEncoding('utf8');
        child.stderr.on('data', (chunk) => { this.log += chunk; });
        child.stdout.setEncoding('utf8');
        return new Promise((resolvePromise, reject) => {
            let out = '';
            let listening = false;
            const timer = setTimeout(() => fail(new Error('the server did not start within 20 s')), 20000);
            const fail = (err) => {
                clearTimeout(timer);
                child.kill('SIGKILL');
                reject(new Error(`${err.message}\n--- server log ---\n${this.log}`));
            };
            child.stdout.on('data', (chunk) => {
                out += chunk;
                const m = out.match(/listening on (http:\/\/127\.0\.0\.1:(\d+))/);
                if (m && !listening) {
                    listening = true;
                    clearTimeout(timer);
                    this.url = m[1];
                    this.port = Number(m[2]);
                    resolvePromise();
                }
            });
            child.once('exit', (code, signal) => {
                if (!listening) {
                    fail(new Error(`the server exited (${code ?? signal}) before it listened`));
                }
            });
            child.once('error', fail);
        });
    }

    /** SIGTERM and wait for the process to end (SIGKILL after 10 s). Resolves with its exit code. */
    async stop() {
        const child = this.child;
        if (!child || child.exitCode !== null || child.signalCode !== null) {
            this.child = null;
            return child?.exitCode ?? null;
        }
        this.child = null;
        const exited = new Promise((r) => { child.once('exit', (code) => r(code)); });
        child.kill('SIGTERM');
        const timer = setTimeout(() => child.kill('SIGKILL'), 10000);
        const code = await exited;
        clearTimeout(timer);
        return code;
    }

    /** Stop, and remove the data dir if this server made it. */
    async cleanup() {
        await this.stop();
        if (this.ownDir) {
            rmSync(this.dataDir, {recursive: true, force: true});
        }
    }

    /**
     * POST /demo/api/notify one event on the demo channel (the demo is a node of its own, with its
     * own store, that takes the server's API key); resolves with its id once it is durable.
     */
    async notify(payload) {
        const res = await fetch(`${this.url}/demo/api/notify`, {
            method: 'POST',
            headers: {'Authorization': `Bearer ${API_KEY}`, 'Content-Type': 'application/json'},
            body: JSON.stringify({channel: DEMO_CHANNEL, payload}),
        });
        const body = await res.json();
        if (res.status !== 200 || !Number.isInteger(body.id)) {
            throw new Error(`notify answered ${res.status} ${JSON.stringify(body)}`);
        }
        return body.id;
    }
}

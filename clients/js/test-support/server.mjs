// Runs the real realtime server binary for the integration tests.
//
// The binary is $REALTIME_BIN, else <repo>/target/debug/realtime (built by
// `cargo build`). Each server gets a fresh data dir unless one is given, and
// the test's `t.after` / `after` hook must call `stop()` (and `cleanup()`).
import {spawn} from 'node:child_process';
import {existsSync} from 'node:fs';
import {mkdtemp, rm, writeFile} from 'node:fs/promises';
import net from 'node:net';
import {tmpdir} from 'node:os';
import {join} from 'node:path';
import {fileURLToPath} from 'node:url';
import {createInterface} from 'node:readline';

export const BIN = process.env.REALTIME_BIN
    || fileURLToPath(new URL('../../../target/debug/realtime', import.meta.url));

export const API_KEY = 'js-client-test-api-key';

/** A fresh temporary directory. */
export function tempDir(prefix = 'realtime-js-') {
    return mkdtemp(join(tmpdir(), prefix));
}

/** A TCP port that was free a moment ago (bind to port 0, read it, close). */
export function freePort() {
    return new Promise((resolve, reject) => {
        const server = net.createServer();
        server.unref();
        server.on('error', reject);
        server.listen(0, '127.0.0.1', () => {
            const {port} = server.address();
            server.close(() => resolve(port));
        });
    });
}

/** A channel of component mod_x in context 1. */
export function channel(area, itemid = 0, details = '') {
    return {contextid: 1, component: 'mod_x', area, itemid, details};
}

/**
 * Start `realtime serve` and wait for its "listening on URL" line.
 * @param {{port?: number, dataDir?: string, config?: string, env?: Record<string,string>,
 *          pollTimeoutSecs?: number}} [options] config: TOML text for --config
 */
export async function startServer(options = {}) {
    if (!existsSync(BIN)) {
        throw new Error(`realtime binary not found at ${BIN}: run \`cargo build\` or set REALTIME_BIN`);
    }
    const ownDir = options.dataDir === undefined;
    const dataDir = options.dataDir ?? await tempDir();
    const args = ['serve', '--listen', `127.0.0.1:${options.port ?? 0}`, '--data-dir', dataDir];
    let configDir;
    if (options.config !== undefined) {
        configDir = await tempDir('realtime-js-config-');
        const file = join(configDir, 'realtime.toml');
        await writeFile(file, options.config);
        args.push('--config', file);
    }
    const child = spawn(BIN, args, {
        env: {
            ...process.env,
            REALTIME_API_KEY: API_KEY,
            REALTIME_POLL_REQUEST_TIMEOUT_SECS: String(options.pollTimeoutSecs ?? 2),
            ...options.env,
        },
        stdio: ['ignore', 'pipe', 'pipe'],
    });
    let stderr = '';
    child.stderr.setEncoding('utf8');
    child.stderr.on('data', (chunk) => { stderr = (stderr + chunk).slice(-20000); });
    const exited = new Promise((resolve) => child.once('exit', (code, signal) => resolve({code, signal})));

    const url = await new Promise((resolve, reject) => {
        const timer = setTimeout(() => fail('no "listening on" line within 20 s'), 20000);
        const lines = createInterface({input: child.stdout});
        function fail(why) {
            clearTimeout(timer);
            child.kill('SIGKILL');
            reject(new Error(`realtime serve ${args.join(' ')}: ${why}\n--- stderr ---\n${stderr}`));
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

    const server = {
        url,
        port: Number(new URL(url).port),
        dataDir,
        child,
        stderr: () => stderr,
        stopped: false,

        /** SIGTERM and wait for the exit (SIGKILL after 10 s). */
        async stop() {
            if (server.stopped) {
                return;
            }
            server.stopped = true;
            if (child.exitCode === null && child.signalCode === null) {
                child.kill('SIGTERM');
                const timer = setTimeout(() => child.kill('SIGKILL'), 10000);
                await exited;
                clearTimeout(timer);
            }
        },

        /** Stop and remove the temp dirs this call created. */
        async cleanup() {
            await server.stop();
            if (ownDir) {
                await rm(dataDir, {recursive: true, force: true});
            }
            if (configDir) {
                await rm(configDir, {recursive: true, force: true});
            }
        },

        /** Call the application API; returns {status, body}. */
        async api(path, body) {
            const response = await fetch(`${url}${path}`, {
                method: 'POST',
                headers: {'Authorization': `Bearer ${API_KEY}`, 'Content-Type': 'application/json'},
                body: JSON.stringify(body),
            });
            const text = await response.text();
            let json;
            try {
                json = JSON.parse(text);
            } catch {
                json = text;
            }
            return {status: response.status, body: json};
        },

        async expectOk(path, body) {
            const {status, body: answer} = await server.api(path, body);
            if (status !== 200) {
                throw new Error(`POST ${path} ${JSON.stringify(body)} → ${status} ${JSON.stringify(answer)}`);
            }
            return answer;
        },

        /** Page config for `user` subscribed to `channels`. */
        page(channels, user = 42) {
            return server.expectOk('/api/page', {user, channels});
        },

        /** Notify one event; returns its id. */
        async notify(chan, payload) {
            return (await server.expectOk('/api/notify', {channel: chan, payload})).id;
        },

        /** Notify a batch [{channel, payload}]; returns the ids. */
        async notifyBatch(events) {
            return (await server.expectOk('/api/notify', {events})).ids;
        },
    };
    return server;
}

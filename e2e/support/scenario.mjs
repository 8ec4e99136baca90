// One test's world: its own server (real binary, temp data dir, free port) and its own browser.

import assert from 'node:assert/strict';
import {Server} from './server.mjs';
import {launch, screenshot, watchNetwork} from './browser.mjs';

/**
 * Start a server, open a browser, run `body({server, page, errors, network, t})`, save
 * `artifacts/<name>.png` (`<name>-failed.png` on failure, with the server log's tail in the
 * error), fail on an uncaught error in the page, and clean up.
 */
export async function scenario(t, name, {env = {}} = {}, body) {
    const server = await new Server({env}).start();
    const {page, errors, close} = await launch();
    try {
        const network = watchNetwork(page);
        await body({server, page, errors, network, t});
        await screenshot(page, name);
        assert.deepEqual(errors.filter((e) => e.startsWith('pageerror')), [], 'no uncaught errors in the page');
    } catch (err) {
        await screenshot(page, `${name}-failed`).catch(() => {});
        throw new Error(`${err.message}\n--- server log ---\n${server.log.slice(-4000)}`, {cause: err});
    } finally {
        await close();
        await server.cleanup();
    }
}

/** A run's payload as the demo's background job makes it (the page counts these per runid). */
export const runPayload = (runid, seq, count) => ({runid, seq, count, senttime: Date.now()});

// Waiting helpers shared by the tests: wait for a condition, never for a fixed long time.

/**
 * Resolve when `condition()` is truthy (it may be async); reject after `timeout` ms.
 * @template T
 * @param {() => T | Promise<T>} condition
 * @param {{timeout?: number, interval?: number, message?: string | (() => string)}} [options]
 * @returns {Promise<T>}
 */
export async function waitFor(condition, {timeout = 10000, interval = 10, message = 'condition'} = {}) {
    const deadline = Date.now() + timeout;
    for (;;) {
        const value = await condition();
        if (value) {
            return value;
        }
        if (Date.now() > deadline) {
            const text = typeof message === 'function' ? message() : message;
            throw new Error(`timed out after ${timeout} ms waiting for ${text}`);
        }
        await sleep(interval);
    }
}

/** @param {number} ms */
export function sleep(ms) {
    return new Promise((resolve) => setTimeout(resolve, ms));
}

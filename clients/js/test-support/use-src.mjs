// Runs the tests against the sources (clients/js/src/) instead of the bundle: every import of
// clients/js/realtime.js resolves to clients/js/src/index.js. `npm run test:src`, i.e.
//     node --experimental-websocket --import ./test-support/use-src.mjs --test test/
// (the test runner starts each file with the same flags). test/bundle.test.mjs already proves the
// bundle is the sources' build; this proves the sources run as they are, imports included.
import {register} from 'node:module';
import {isMainThread} from 'node:worker_threads';

const BUNDLE = new URL('../realtime.js', import.meta.url).href;
const ENTRY = new URL('../src/index.js', import.meta.url).href;

if (isMainThread) {
    register(import.meta.url); // this file's `resolve`, in the loader's own thread
}

/** Node's module resolve hook. */
export async function resolve(specifier, context, next) {
    const resolved = await next(specifier, context);
    return resolved.url === BUNDLE ? {...resolved, url: ENTRY} : resolved;
}

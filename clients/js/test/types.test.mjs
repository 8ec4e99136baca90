// realtime.d.ts is written by hand: these tests hold it to the code. Every export of the bundle is
// declared and every value the d.ts declares exists; the RealtimeClient interface has exactly the
// getters and methods of the class; ClientOptions has exactly the options the client has defaults
// for or reads, with the defaults its comments state; RealtimeError has the fields the class sets.
// The d.ts is read with a small parser of its own (regexes and brace counting): no TypeScript.
import {test} from 'node:test';
import assert from 'node:assert/strict';
import {readFileSync} from 'node:fs';

import * as Realtime from '../realtime.js';
import {DEFAULTS} from '../src/options.js';

const DTS = readFileSync(new URL('../realtime.d.ts', import.meta.url), 'utf8');
const CLIENT_SOURCE = readFileSync(new URL('../src/client.js', import.meta.url), 'utf8');

/** `text` without its comments. @param {string} text */
function withoutComments(text) {
    return text.replace(/\/\*[\s\S]*?\*\//g, '').replace(/\/\/.*$/gm, '');
}

/** The names the d.ts exports, by kind: `const`, `function`, `class`, `interface`, `type`. */
function dtsExports() {
    const kinds = new Map();
    for (const [, kind, name] of withoutComments(DTS).matchAll(
        /^export\s+(?:declare\s+)?(const|function|class|interface|type)\s+([A-Za-z_$][\w$]*)/gm)) {
        const known = kinds.get(name);
        assert.ok(known === undefined || known === kind, `${name} is declared as both ${known} and ${kind}`);
        kinds.set(name, kind);
    }
    return kinds;
}

/**
 * The body of `export interface NAME {…}` or `export class NAME … {…}` (comments kept), by brace counting.
 * @param {string} name
 */
function dtsBody(name) {
    const head = new RegExp(`^export\\s+(?:declare\\s+)?(?:interface|class)\\s+${name}\\b[^{]*\\{`, 'm').exec(DTS);
    assert.ok(head, `realtime.d.ts declares no interface or class ${name}`);
    const start = head.index + head[0].length;
    let depth = 1;
    for (let i = start; i < DTS.length; i += 1) {
        if (DTS[i] === '{') {
            depth += 1;
        } else if (DTS[i] === '}' && (depth -= 1) === 0) {
            return DTS.slice(start, i);
        }
    }
    throw new Error(`the body of ${name} in realtime.d.ts does not end`);
}

/**
 * The members of an interface or class body: name → `property` or `method` (and `readonly`,
 * `optional`). Nested (), {} and [] are collapsed, so parameters and object types do not count.
 * @param {string} body
 */
function members(body) {
    let flat = '';
    let depth = 0;
    for (const c of withoutComments(body)) {
        if ('({['.includes(c)) {
            if (depth === 0) {
                flat += c;
            }
            depth += 1;
        } else if (')}]'.includes(c)) {
            depth -= 1;
            if (depth === 0) {
                flat += c;
            }
        } else if (depth === 0) {
            flat += c;
        }
    }
    const out = new Map();
    for (const declaration of flat.split(/[;\n]/).map((s) => s.trim()).filter((s) => s !== '')) {
        const m = /^(readonly\s+)?([A-Za-z_$][\w$]*)(\?)?\s*(<[^>]*>)?\s*(\()?/.exec(declaration);
        assert.ok(m, `cannot read the member \`${declaration}\``);
        const [, readonly, name, optional, , call] = m;
        const kind = call ? 'method' : 'property';
        const known = out.get(name);
        assert.ok(known === undefined || known.kind === kind, `${name} is both a method and a property`);
        out.set(name, {kind, readonly: Boolean(readonly), optional: Boolean(optional)});
    }
    return out;
}

/** The doc comment of each member of an interface body. @param {string} body */
function memberDocs(body) {
    const docs = new Map();
    for (const [, doc, name] of body.matchAll(/\/\*\*((?:(?!\*\/)[\s\S])*)\*\/\s*\n\s*(?:readonly\s+)?([A-Za-z_$][\w$]*)/g)) {
        docs.set(name, doc.replace(/\s*\n\s*\*\s*/g, ' ').trim());
    }
    return docs;
}

const sorted = (iterable) => [...iterable].sort();

test('every export of realtime.js is declared in realtime.d.ts, and every value it declares exists', () => {
    const kinds = dtsExports();
    const values = [...kinds].filter(([, kind]) => ['const', 'function', 'class'].includes(kind)).map(([name]) => name);
    assert.deepEqual(sorted(values), sorted(Object.keys(Realtime)));
    for (const name of values) {
        const expected = {const: 'string', function: 'function', class: 'function'}[kinds.get(name)];
        assert.equal(typeof Realtime[name], expected, `${name} is declared as a ${kinds.get(name)}`);
    }
    // The constants (the topics) are declared with their very strings.
    for (const [name, kind] of kinds) {
        if (kind === 'const') {
            const literal = new RegExp(`^export\\s+const\\s+${name}\\s*:\\s*(['"])(.*?)\\1\\s*;`, 'm').exec(DTS);
            assert.equal(literal?.[2], Realtime[name], `${name} in realtime.d.ts: its string literal type`);
        }
    }
});

test('the RealtimeClient interface has exactly the getters (readonly) and the methods of the class', () => {
    const client = Realtime.createClient({url: 'http://realtime.invalid', usertoken: 'UT', subscriptions: [{channel: 'h', token: 't'}]});
    const prototype = Object.getPrototypeOf(client);
    assert.deepEqual(Object.keys(client), [], 'a client has no public fields of its own, only accessors and methods');
    const getters = [];
    const methods = [];
    for (const [name, descriptor] of Object.entries(Object.getOwnPropertyDescriptors(prototype))) {
        if (name === 'constructor') {
            continue;
        }
        if (descriptor.get) {
            assert.equal(descriptor.set, undefined, `${name} has a setter: the interface says readonly`);
            getters.push(name);
        } else {
            assert.equal(typeof descriptor.value, 'function', name);
            methods.push(name);
        }
    }
    const declared = members(dtsBody('RealtimeClient'));
    const properties = [...declared].filter(([, m]) => m.kind === 'property');
    assert.deepEqual(sorted(properties.map(([name]) => name)), sorted(getters), 'the readonly properties are the getters');
    for (const [name, member] of properties) {
        assert.ok(member.readonly, `${name} is a getter: readonly in realtime.d.ts`);
    }
    assert.deepEqual(sorted([...declared].filter(([, m]) => m.kind === 'method').map(([name]) => name)), sorted(methods),
        'the methods');
    // What the brief of the API promises, in case both sides lose a member together.
    for (const name of ['state', 'connectionState', 'cursor', 'transport', 'transports', 'forced', 'subscriptions',
        'expires', 'subscribe', 'unsubscribe', 'start', 'stop', 'force', 'sendToServer']) {
        assert.ok(declared.has(name), name);
    }
});

test('ClientOptions declares exactly the options the client has defaults for or reads, with those defaults', () => {
    // The options the client reads besides its DEFAULTS: `this.#options.x`, `'x' in this.#options`,
    // `const {x, y} = this.#options`.
    const code = withoutComments(CLIENT_SOURCE);
    const read = new Set([
        ...[...code.matchAll(/this\.#options\.([A-Za-z_$][\w$]*)/g)].map((m) => m[1]),
        ...[...code.matchAll(/'([A-Za-z_$][\w$]*)' in this\.#options/g)].map((m) => m[1]),
        ...[...code.matchAll(/const\s*\{([^}]*)\}\s*=\s*this\.#options/g)]
            .flatMap((m) => m[1].split(',').map((s) => s.trim().split(/\s*:/)[0])),
    ]);
    for (const name of ['fetch', 'WebSocket', 'EventSource', 'transports', 'random']) {
        assert.ok(read.has(name), `the client reads options.${name} (or this test no longer finds how)`);
    }
    const declared = members(dtsBody('ClientOptions'));
    assert.deepEqual(sorted(declared.keys()), sorted(new Set([...Object.keys(DEFAULTS), ...read])));
    for (const [name, member] of declared) {
        assert.ok(member.optional && member.kind === 'property', `ClientOptions.${name} is an optional property`);
    }
    // Each numeric default is the one the d.ts states (`default 500`, `default Infinity`, …).
    const docs = memberDocs(dtsBody('ClientOptions'));
    for (const [name, value] of Object.entries(DEFAULTS)) {
        if (typeof value === 'number') {
            assert.match(docs.get(name) ?? '', new RegExp(`default ${String(value).replace('.', '\\.')}\\b`),
                `ClientOptions.${name}: realtime.d.ts should say "default ${value}"`);
        }
    }
});

test('RealtimeError declares the fields the class sets', () => {
    const error = new Realtime.RealtimeError('m');
    const fields = Object.keys(error).filter((name) => name !== 'name'); // `name` is Error's
    const declared = members(dtsBody('RealtimeError'));
    declared.delete('constructor');
    assert.deepEqual(sorted(declared.keys()), sorted(fields));
    for (const [name, member] of declared) {
        assert.equal(member.kind, 'property', name);
    }
});

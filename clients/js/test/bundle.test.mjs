// realtime.js is generated from src/ by build.mjs and checked in (the Rust crate embeds it and
// builds without Node): it must be exactly what the sources give, and export what src/index.js does.
import {test} from 'node:test';
import assert from 'node:assert/strict';
import {mkdtemp, mkdir, readFile, rm, writeFile} from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';

import {BuildError, build, OUT} from '../build.mjs';

test('the checked-in realtime.js is the build of src/', async () => {
    const {text} = build();
    const current = await readFile(OUT, 'utf8');
    assert.ok(current === text, 'clients/js/realtime.js differs from what clients/js/src/ gives: '
        + 'run node clients/js/build.mjs (and rebuild the server, which embeds it)');
});

test('the bundle and src/index.js export the same names, and the same constants', async () => {
    const bundle = await import('../realtime.js');
    const source = await import('../src/index.js');
    assert.deepEqual(Object.keys(bundle), Object.keys(source));
    assert.deepEqual(Object.keys(bundle), build().exports);
    for (const name of Object.keys(source)) {
        assert.equal(typeof bundle[name], typeof source[name], name);
        if (typeof source[name] !== 'function') {
            assert.equal(bundle[name], source[name], name);
        }
    }
});

test('the bundle is one module: no import, and it loads from a data: URL as a page loads it', async () => {
    const {text} = build();
    assert.doesNotMatch(text, /^import\b/m);
    assert.doesNotMatch(text, /^export\s*\{/m);
    const loaded = await import(`data:text/javascript;base64,${Buffer.from(text).toString('base64')}`);
    assert.deepEqual(Object.keys(loaded), build().exports);
    assert.equal(loaded.classifyStatus(401).reason, 'credential_refused');
});

test('the build refuses sources it cannot bundle, naming the file and the cause', async (t) => {
    const dir = await mkdtemp(path.join(os.tmpdir(), 'realtime-build-'));
    t.after(() => rm(dir, {recursive: true, force: true}));
    const attempt = async (files) => {
        await rm(dir, {recursive: true, force: true});
        for (const [name, text] of Object.entries(files)) {
            await mkdir(path.dirname(path.join(dir, name)), {recursive: true});
            await writeFile(path.join(dir, name), text);
        }
        return build({src: dir});
    };
    const entry = (body) => `/** The entry. */\n${body}\n`;

    const ok = await attempt({
        'index.js': entry("import {helper} from './a.js';\nexport function api() {\n    return helper();\n}"),
        'a.js': "// a\n\nexport function helper() {\n    return 1;\n}\n\nexport function internal() {\n    return 2;\n}\n",
    });
    assert.deepEqual(ok.modules, ['a.js', 'index.js']);
    assert.deepEqual(ok.exports, ['api']);
    assert.match(ok.text, /^function helper\(\)/m, 'an internal export loses its `export`');
    assert.match(ok.text, /^export function api\(\)/m);

    const helper = {'a.js': 'export function helper() {}\n\nexport function other() {}\n\nfunction hidden() {}\n'};
    const refused = [
        [{'index.js': entry("import {other} from './a.js';\nexport function api() {\n    return helper(other);\n}"), ...helper},
            /src\/index\.js uses `helper` \(of src\/a\.js\) without importing it/],
        [{'index.js': entry("import {helper} from './a.js';\nexport const x = 1;"), ...helper},
            /src\/index\.js imports `helper` but does not use it/],
        [{'index.js': entry("import {hidden} from './a.js';\nexport const x = hidden();"), ...helper},
            /`hidden` is not exported by src\/a\.js/],
        [{'index.js': entry("import {helper as h} from './a.js';\nexport const x = h();"), ...helper},
            /only plain names/],
        [{'index.js': entry("import {helper} from './a.js';\nfunction hidden() {}\nexport const x = helper(hidden);"), ...helper},
            /`hidden` is declared in both src\/a\.js and src\/index\.js/],
        [{'index.js': entry("import {thing} from 'some-package';\nexport const x = thing;")},
            /only the package's own modules may be imported/],
        [{'index.js': entry("import {helper} from './a.js';\nexport default helper;"), ...helper},
            /module syntax the build does not take/],
        [{'index.js': entry("import {a} from './a.js';\nexport const x = a;"),
            'a.js': "import {x} from './index.js';\nexport const a = 1;\nconsole.log(x);\n"}, /import cycle/],
    ];
    for (const [files, expected] of refused) {
        await assert.rejects(attempt(files), (err) => err instanceof BuildError && expected.test(err.message),
            `expected ${expected} for ${JSON.stringify(files)}`);
    }
});

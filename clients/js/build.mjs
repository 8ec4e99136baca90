// Builds clients/js/realtime.js, the one file the server embeds and serves at /realtime.js, from
// the ES modules in clients/js/src/. No dependency, no transformation beyond this: the modules are
// concatenated in dependency order (as the ES module loader would evaluate them, from src/index.js),
// their `import` statements and src/index.js's `export {…} from` lines are removed, and `export` is
// kept only on the public names (those src/index.js exports). The result is checked in: the Rust
// crate include_str!s it and builds without Node; test/bundle.test.mjs fails when it is stale.
//
//     node clients/js/build.mjs           write clients/js/realtime.js
//     node clients/js/build.mjs --check   exit 1 when clients/js/realtime.js differs from the build
//
// The sources may use only this subset of module syntax, which the build checks: at the start of a
// line, `import {a, b} from './x.js';` (relative, no renaming), `export` before a `const`, `let`,
// `function`, `async function` or `class` declaration, and in src/index.js `export {a, b} from
// './x.js';`. Top-level names must be unique across the modules (they share one scope in the
// bundle), and a module must import every top-level name of another module that it uses.

import {readFileSync, writeFileSync} from 'node:fs';
import path from 'node:path';
import {fileURLToPath, pathToFileURL} from 'node:url';

const HERE = path.dirname(fileURLToPath(import.meta.url));
/** The sources. */
export const SRC = path.join(HERE, 'src');
/** The entry module, relative to SRC: its exports are the bundle's. */
export const ENTRY = 'index.js';
/** The bundle. */
export const OUT = path.join(HERE, 'realtime.js');

const IMPORT = /^import\s*\{([^}]*)\}\s*from\s*'([^']+)';[ \t]*\n/gm;
const REEXPORT = /^export\s*\{([^}]*)\}\s*from\s*'([^']+)';[ \t]*\n/gm;
const METHOD = /^[ \t]+(?:(?:static|async|get|set)\s+)*(?!(?:if|for|while|switch|catch)\b)([A-Za-z_$][\w$]*)\s*\(.*\)\s*\{[ \t]*$/gm;
const DECLARATION = /^(export\s+)?(?:const|let|var|class|function|async\s+function)\s*\*?\s*([A-Za-z_$][\w$]*)/gm;

/** The error of a source the build cannot take. */
export class BuildError extends Error {}

/** `a, b,\n c` → ['a', 'b', 'c']; no renaming. @param {string} list @param {string} where */
function names(list, where) {
    const out = list.split(',').map((s) => s.trim()).filter((s) => s !== '');
    for (const name of out) {
        if (!/^[A-Za-z_$][\w$]*$/.test(name)) {
            throw new BuildError(`${where}: \`${name}\`: only plain names may be imported or exported (no \`as\`)`);
        }
    }
    return out;
}

/**
 * The code of `text` without comments and without the contents of '…' and "…" strings (template
 * literals are kept whole: they may hold code), to find the names a module uses. A heuristic (no
 * regular expression literals), good enough for the sources' own style.
 * @param {string} text
 */
function codeOnly(text) {
    let out = '';
    let i = 0;
    while (i < text.length) {
        const c = text[i];
        const next = text[i + 1];
        if (c === '/' && next === '/') {
            while (i < text.length && text[i] !== '\n') {
                i += 1;
            }
        } else if (c === '/' && next === '*') {
            const end = text.indexOf('*/', i + 2);
            i = end < 0 ? text.length : end + 2;
            out += ' ';
        } else if (c === '\'' || c === '"') {
            i += 1;
            while (i < text.length && text[i] !== c && text[i] !== '\n') {
                i += text[i] === '\\' ? 2 : 1;
            }
            i += 1;
            out += '""';
        } else {
            out += c;
            i += 1;
        }
    }
    return out;
}

/**
 * Read one module: its imports, its top-level declarations, its body without the module syntax.
 * @param {string} src the sources' directory @param {string} rel path relative to it, with `/`
 */
function readModule(src, rel) {
    const file = path.join(src, rel);
    const text = readFileSync(file, 'utf8');
    const where = `src/${rel}`;
    const imports = [];
    const reexports = [];
    const resolve = (specifier) => {
        if (!specifier.startsWith('./') && !specifier.startsWith('../')) {
            throw new BuildError(`${where}: imports '${specifier}': only the package's own modules may be imported`);
        }
        return path.posix.normalize(path.posix.join(path.posix.dirname(rel), specifier));
    };
    let body = text.replace(IMPORT, (_, list, specifier) => {
        imports.push({names: names(list, where), from: resolve(specifier)});
        return '';
    });
    body = body.replace(REEXPORT, (_, list, specifier) => {
        if (rel !== ENTRY) {
            throw new BuildError(`${where}: \`export {…} from\` is for src/${ENTRY} only`);
        }
        reexports.push({names: names(list, where), from: resolve(specifier)});
        return '';
    });
    const stray = body.match(/^(import|export)\b(?!\s+(const|let|var|class|function|async\s+function)\b).*$/m);
    if (stray) {
        throw new BuildError(`${where}: \`${stray[0]}\`: module syntax the build does not take (see build.mjs)`);
    }
    const declarations = new Map();
    for (const [, exported, name] of body.matchAll(DECLARATION)) {
        if (declarations.has(name)) {
            throw new BuildError(`${where}: \`${name}\` is declared twice`);
        }
        declarations.set(name, {exported: exported !== undefined});
    }
    return {rel, where, text, body, imports, reexports, declarations};
}

/**
 * The modules reachable from the entry, each after those it imports (the order in which the ES
 * module loader evaluates them). @param {string} src the sources' directory
 */
function loadModules(src) {
    const modules = new Map();
    const order = [];
    const visiting = new Set();
    const visit = (rel, from) => {
        if (modules.has(rel)) {
            return modules.get(rel);
        }
        if (visiting.has(rel)) {
            throw new BuildError(`src/${rel}: an import cycle (through ${from}): the bundle needs an order`);
        }
        visiting.add(rel);
        let module;
        try {
            module = readModule(src, rel);
        } catch (err) {
            if (err.code === 'ENOENT') {
                throw new BuildError(`${from}: imports src/${rel}, which does not exist`);
            }
            throw err;
        }
        for (const edge of [...module.imports, ...module.reexports]) {
            visit(edge.from, module.where);
        }
        visiting.delete(rel);
        modules.set(rel, module);
        order.push(module);
        return module;
    };
    visit(ENTRY, 'build.mjs');
    return order;
}

/** Check that the modules can share one scope and that each imports what it uses. @param {any[]} modules */
function check(modules) {
    const owner = new Map();
    for (const module of modules) {
        for (const name of module.declarations.keys()) {
            if (owner.has(name)) {
                throw new BuildError(`\`${name}\` is declared in both ${owner.get(name).where} and ${module.where}: `
                    + 'top-level names must be unique across the modules (one scope in the bundle)');
            }
            owner.set(name, module);
        }
    }
    for (const module of modules) {
        // Method names (`subscribe(topic, listener) {` in a class) are not uses of a top-level name.
        const code = codeOnly(module.body).replace(METHOD, (head, name) => head.replace(name, ''));
        const imported = new Set();
        for (const edge of [...module.imports, ...module.reexports]) {
            for (const name of edge.names) {
                const declared = owner.get(name);
                if (declared?.rel !== edge.from || !declared.declarations.get(name).exported) {
                    throw new BuildError(`${module.where}: \`${name}\` is not exported by src/${edge.from}`);
                }
                if (module.imports.includes(edge)) {
                    imported.add(name);
                }
            }
        }
        // The names another module exports (the entry cannot be imported: nobody imports it).
        // A local variable of the same name would be taken for a use: name locals otherwise.
        for (const [name, declared] of owner) {
            if (declared === module || declared.rel === ENTRY || !declared.declarations.get(name).exported) {
                continue;
            }
            const used = new RegExp(`(?<![\\w$#])(?<![^.]\\.)${name.replace(/\$/g, '\\$')}(?![\\w$])`).test(code);
            if (used && !imported.has(name)) {
                throw new BuildError(`${module.where} uses \`${name}\` (of ${declared.where}) without importing it`);
            }
            if (!used && imported.has(name)) {
                throw new BuildError(`${module.where} imports \`${name}\` but does not use it`);
            }
        }
    }
}

/** `text` as `//` comment lines of at most 100 characters. @param {string} text */
function wrap(text) {
    const lines = [];
    let line = '//';
    for (const word of text.split(' ')) {
        if (line.length + 1 + word.length > 100) {
            lines.push(line);
            line = '//';
        }
        line += ` ${word}`;
    }
    return `${[...lines, line].join('\n')}\n`;
}

/**
 * The bundle, as a string: what realtime.js must contain. Throws a BuildError (with the file and
 * the reason) when a source uses what the build does not take.
 * @param {{src?: string}} [options] the sources' directory (tests of the build use another)
 * @returns {{text: string, modules: string[], exports: string[]}}
 */
export function build({src = SRC} = {}) {
    const modules = loadModules(src);
    check(modules);
    const entry = modules[modules.length - 1];
    const exports = new Set([
        ...[...entry.declarations].filter(([, d]) => d.exported).map(([name]) => name),
        ...entry.reexports.flatMap((edge) => edge.names),
    ]);
    // The entry's opening comment describes the whole client: it opens the bundle.
    const opening = entry.body.match(/^\/\*\*[\s\S]*?\*\/\n/);
    if (!opening) {
        throw new BuildError(`${entry.where} must open with a /** … */ comment: the bundle's own`);
    }
    const list = modules.map((m) => m.rel);
    const header = wrap('GENERATED by clients/js/build.mjs from the ES modules of clients/js/src/: do not edit '
        + 'this file; edit those and run `node clients/js/build.mjs` (test/bundle.test.mjs fails when this '
        + `file is stale). The modules, in this order: ${list.join(', ')}.`);
    const parts = [header, opening[0]];
    for (const module of modules) {
        let body = module === entry ? module.body.slice(opening[0].length) : module.body;
        body = body.replace(DECLARATION, (declaration, exported, name) =>
            (exported !== undefined && !exports.has(name) ? declaration.slice(exported.length) : declaration));
        body = body.replace(/\n{3,}/g, '\n\n').trim();
        parts.push(`// ---- src/${module.rel} ----\n\n${body}\n`);
    }
    return {text: parts.join('\n'), modules: list, exports: [...exports].sort()};
}

if (process.argv[1] && import.meta.url === pathToFileURL(path.resolve(process.argv[1])).href) {
    try {
        const {text, modules} = build();
        if (process.argv.includes('--check')) {
            const current = readFileSync(OUT, 'utf8');
            if (current !== text) {
                console.error(`${path.relative(process.cwd(), OUT)} is not what the sources give: run node clients/js/build.mjs`);
                process.exit(1);
            }
            console.log(`${path.relative(process.cwd(), OUT)} is up to date (${modules.length} modules)`);
        } else {
            writeFileSync(OUT, text);
            console.log(`wrote ${path.relative(process.cwd(), OUT)} from ${modules.length} modules: ${modules.join(', ')}`);
        }
    } catch (err) {
        if (err instanceof BuildError) {
            console.error(`build.mjs: ${err.message}`);
            process.exit(1);
        }
        throw err;
    }
}

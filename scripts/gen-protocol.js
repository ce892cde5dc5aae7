#!/usr/bin/env node
// Generates native/src/protocol.h, the C twin of the NBD wire table src/nbd/constants.ts and of
// the numeric bounds in src/limits.ts, so that the C code (request.c, the data path's dp-*.c,
// budget.c) declares no magic, command, flag, errno, length or limit of its own. Works on a
// fresh checkout: it transpiles the two TypeScript modules with `typescript`'s transpileModule
// and evaluates them, no `tsc` run needed.
//
// Names (fixed; C code is written against them):
//   export const NBD_X = { KEY: v }   -> #define XVD_NBD_X_KEY v
//   export const NBD_FOO = v          -> #define XVD_NBD_FOO v
//   export const FOO = v (other names) -> #define XVD_NBD_FOO v  (REQUEST_LENGTH, NBDMAGIC_HIGH)
//   LIMITS.fooBarBaz = v              -> #define XVD_LIMIT_FOO_BAR_BAZ v
// C types: a wire value is a plain int literal, or hex with `u` when it is a magic or has an
// error bit set (NBD_REPLY_TYPE.ERROR* at 2^15, NBD_REP.ERR_* at 2^31); a limit is an int
// literal below 2^31 and ((uint64_t)Null) from there. Strings become string literals; anything
// else (fractions, negatives, objects) stops the script.
//
// Usage: gen-protocol.js          (writes native/src/protocol.h)
//        gen-protocol.js --check  (exits 1, saying what to run, when the file differs)
// test/unit/protocol-header.test.ts calls renderProtocolHeader() and compares.
'use strict';
const fs = require('node:fs');
const path = require('node:path');

const ROOT = path.join(__dirname, '..');
const HEADER_PATH = path.join(ROOT, 'native', 'src', 'protocol.h');
const CONSTANTS_PATH = path.join(ROOT, 'src', 'nbd', 'constants.ts');
const LIMITS_PATH = path.join(ROOT, 'src', 'limits.ts');
const INT_MAX = 2 ** 31 - 1;
const U32_MAX = 2 ** 32 - 1;
/** Wire values from here on (NBD_REPLY_TYPE.ERROR*, NBD_REP.ERR_*: the error bit) are hex. */
const ERROR_BIT_MIN = 0x8000;

/** Transpiles one dependency-free TypeScript module to CommonJS and returns its exports. */
function loadTypeScript(file) {
  const ts = require('typescript');
  const source = fs.readFileSync(file, 'utf8');
  const { outputText } = ts.transpileModule(source, {
    compilerOptions: { module: ts.ModuleKind.CommonJS, target: ts.ScriptTarget.ES2022 },
    fileName: file,
  });
  const module = { exports: {} };
  const noRequire = (name) => {
    throw new Error(`gen-protocol: ${path.relative(ROOT, file)} imports ${name}; the wire ` +
      'table and the limits must stay free of imports');
  };
  new Function('exports', 'require', 'module', outputText)(module.exports, noRequire, module);
  return module.exports;
}

/** Magics (NBDMAGIC, IHAVEOPT and the *_MAGIC values) read better in hex. */
function isMagic(name) {
  return name.includes('MAGIC') || name.includes('IHAVEOPT');
}

/** A C literal for a wire constant named `name` (u32 at most). */
function wireLiteral(name, value) {
  if (typeof value === 'string') return JSON.stringify(value);
  if (!Number.isInteger(value) || value < 0 || value > U32_MAX) {
    throw new Error(`gen-protocol: ${name} = ${value} is not a u32`);
  }
  if (isMagic(name) || value >= ERROR_BIT_MIN) {
    return `0x${value.toString(16).padStart(value > 0xffff ? 8 : 4, '0')}u`;
  }
  return String(value);
}

/** A C literal for a limit: int below 2^31, uint64_t from there. */
function limitLiteral(name, value) {
  if (!Number.isSafeInteger(value) || value < 0) {
    throw new Error(`gen-protocol: LIMITS.${name} = ${value} is not a non-negative integer`);
  }
  return value > INT_MAX ? `((uint64_t)${value}ull)` : String(value);
}

function upperSnakeOf(camel) {
  return camel.replace(/([a-z0-9])([A-Z])/g, '$1_$2').replace(/([A-Z])([A-Z][a-z])/g, '$1_$2')
    .toUpperCase();
}

function cNameOf(exportName) {
  return exportName.startsWith('NBD_') ? `XVD_${exportName}` : `XVD_NBD_${exportName}`;
}

function defineLine(name, literal) {
  return `#define ${name} ${literal}`;
}

function wireLines(constants) {
  const scalars = [];
  const tables = [];
  for (const [exportName, value] of Object.entries(constants)) {
    if (typeof value === 'function') continue; // nameOf()
    if (value !== null && typeof value === 'object') {
      tables.push('', `/* ${exportName} */`);
      for (const [key, entry] of Object.entries(value)) {
        const name = `${cNameOf(exportName)}_${key}`;
        tables.push(defineLine(name, wireLiteral(name, entry)));
      }
    } else {
      const name = cNameOf(exportName);
      scalars.push(defineLine(name, wireLiteral(name, value)));
    }
  }
  return ['/* scalars: magics, ids, frame lengths */', ...scalars, ...tables];
}

function limitLines(limits) {
  const lines = ['/* LIMITS */'];
  for (const [key, value] of Object.entries(limits)) {
    if (typeof value !== 'number') continue;
    lines.push(defineLine(`XVD_LIMIT_${upperSnakeOf(key)}`, limitLiteral(key, value)));
  }
  return lines;
}

/** The text protocol.h must hold. */
function renderProtocolHeader() {
  const constants = loadTypeScript(CONSTANTS_PATH);
  const { LIMITS } = loadTypeScript(LIMITS_PATH);
  return [
    '/* protocol.h: GENERATED by scripts/gen-protocol.js from src/nbd/constants.ts and',
    ' * src/limits.ts. DO NOT EDIT: change those files and run `node scripts/gen-protocol.js`',
    ' * (test/unit/protocol-header.test.ts fails while this file differs from what it writes).',
    ' * The NBD wire constants (magics, flags, commands, options, replies, errno values, frame',
    ' * lengths) as XVD_NBD_*, and every numeric LIMITS entry as XVD_LIMIT_*. */',
    '#ifndef XVD_PROTOCOL_H',
    '#define XVD_PROTOCOL_H',
    '',
    '#include <stdint.h>',
    '',
    ...wireLines(constants),
    '',
    ...limitLines(LIMITS),
    '',
    '#endif',
    '',
  ].join('\n');
}

function main(argv) {
  const isCheck = argv.includes('--check');
  const unknown = argv.filter((arg) => arg !== '--check');
  if (unknown.length > 0) {
    process.stderr.write(`usage: gen-protocol.js [--check] (unknown: ${unknown.join(' ')})\n`);
    return 2;
  }
  const text = renderProtocolHeader();
  const current = fs.existsSync(HEADER_PATH) ? fs.readFileSync(HEADER_PATH, 'utf8') : '';
  if (isCheck) {
    if (current === text) return 0;
    process.stderr.write('native/src/protocol.h is stale: run `node scripts/gen-protocol.js`\n');
    return 1;
  }
  if (current !== text) fs.writeFileSync(HEADER_PATH, text);
  return 0;
}

module.exports = { renderProtocolHeader, loadTypeScript, HEADER_PATH };

if (require.main === module) process.exitCode = main(process.argv.slice(2));

#!/usr/bin/env node
// Reads a node-tap TAP log and prints the subtests that did not run (SKIP and TODO lines, each
// with its test file and reason), then "N passed, N failed, N skipped" (tap's own assertion
// totals; skipped = tap's skip + todo). Exits 1 when anything failed, when no totals line was
// found, or when a test file skipped or left a TODO that the allow-list does not name.
//
// Usage: ci-summary.js <tap log> [allow-list]   (allow-list default: scripts/ci-skips.txt)
// The allow-list holds one test file per line, then its reason ("test/x.test.ts  no /dev/kvm");
// blank lines and lines starting with # are ignored. A listed file may skip any of its subtests.
'use strict';
const fs = require('node:fs');
const path = require('node:path');

const INDENT = 4; // tap nests each subtest 4 spaces deeper
const POINT = /^( *)(?:not )?ok \d+ - (.*?)(?: # (SKIP|TODO)\b ?(.*))?$/;
const SUBTEST = /^( *)# Subtest: (.*)$/;

/** The test file and name of every SKIP or TODO line, with its reason. */
function notRun(text) {
  const open = []; // open[level] = name of the subtest open at that depth
  const found = [];
  let isYaml = false;
  for (const line of text.split('\n')) {
    if (isYaml) {
      if (/^ *\.\.\.$/.test(line)) isYaml = false;
      continue;
    }
    if (/^ *---$/.test(line)) {
      isYaml = true;
      continue;
    }
    const subtest = SUBTEST.exec(line);
    if (subtest !== null) {
      const level = subtest[1].length / INDENT;
      open.length = level;
      open[level] = subtest[2];
      continue;
    }
    const point = POINT.exec(line);
    if (point === null || point[3] === undefined) continue;
    const level = point[1].length / INDENT;
    if (!Number.isInteger(level)) continue;
    const names = [...open.slice(0, level), point[2]];
    found.push({ file: names[0], name: names.slice(1).join(' > ') || '(whole file)',
      kind: point[3], reason: point[4] || '' });
  }
  return found;
}

/** file → reason, from the allow-list. */
function readAllowList(file) {
  const allowed = new Map();
  if (!fs.existsSync(file)) return allowed;
  for (const raw of fs.readFileSync(file, 'utf8').split('\n')) {
    const line = raw.trim();
    if (line === '' || line.startsWith('#')) continue;
    const [name, ...reason] = line.split(/\s+/);
    allowed.set(name, reason.join(' '));
  }
  return allowed;
}

function main() {
  const text = fs.readFileSync(process.argv[2], 'utf8');
  const allowFile = process.argv[3] ?? path.join(__dirname, 'ci-skips.txt');
  const allowed = readAllowList(allowFile);
  const totalsLines = text.split('\n').filter((line) => /^# \{ total: \d+/.test(line));
  const last = totalsLines[totalsLines.length - 1];
  if (last === undefined) {
    console.log('no tap totals line in the log');
    console.log('0 passed, 1 failed');
    return 1;
  }
  const field = (name) => Number((last.match(new RegExp(`${name}: (\\d+)`)) ?? [0, 0])[1]);
  const pass = field('pass');
  const fail = field('fail');
  const skip = field('skip') + field('todo');
  const skipped = notRun(text);
  const unlisted = skipped.filter((entry) => !allowed.has(entry.file));
  for (const entry of skipped) {
    const mark = allowed.has(entry.file) ? 'allowed' : 'NOT ALLOWED';
    console.log(`${entry.kind} (${mark}) ${entry.file}: ${entry.name}` +
      (entry.reason === '' ? '' : ` # ${entry.reason}`));
  }
  console.log(`${skipped.length} subtests did not run (${unlisted.length} not in ` +
    `${path.relative(process.cwd(), allowFile)})`);
  console.log(`${pass} passed, ${fail} failed` + (skip > 0 ? `, ${skip} skipped` : ''));
  return fail > 0 || unlisted.length > 0 ? 1 : 0;
}

process.exit(main());

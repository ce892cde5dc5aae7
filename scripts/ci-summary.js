#!/usr/bin/env node
// Reads a node-tap TAP log and prints "N passed, N failed" (tests = tap's own assertion totals).
'use strict';
const fs = require('node:fs');
const text = fs.readFileSync(process.argv[2], 'utf8');
const lines = text.split('\n').filter((line) => /^# \{ total: \d+/.test(line));
const last = lines[lines.length - 1];
if (last === undefined) {
  console.log('0 passed, 1 failed');
  process.exit(1);
}
const field = (name) => Number((last.match(new RegExp(`${name}: (\\d+)`)) ?? [0, 0])[1]);
const pass = field('pass');
const fail = field('fail');
const skip = field('skip') + field('todo');
console.log(`${pass} passed, ${fail} failed` + (skip > 0 ? `, ${skip} skipped` : ''));
process.exit(fail > 0 ? 1 : 0);

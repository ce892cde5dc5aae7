#!/usr/bin/env node
// Long wire-fuzzing campaign against xvd's JS server: the coverage-guided, structure-aware
// fuzzer of test/helpers/wire-fuzz*.ts (TCP and Unix sockets, arena and stream receive, TLS,
// and `xvd serve --stdio`). Every crash or hang is minimized and written to fixtures/fuzz/wire/
// (<name>.bin + <name>.json), where test/fuzz/wire-replay.test.ts replays it from then on.
// Prints progress on stderr and a JSON summary (streams per target, coverage of src/nbd,
// findings) on stdout; exits 1 when anything was found.
//
// Usage: fuzz.js [--minutes N] [--seed S] [--stdio-share F]
//   --minutes      campaign length (default 10)
//   --seed         PRNG seed (default: from the clock, printed first, so a run can be repeated)
//   --stdio-share  share of the time spent on `xvd serve --stdio` (default 0.1)
// npm test runs a short fixed-seed budget of the same fuzzer (test/fuzz/wire-*.test.ts).
// The TypeScript helpers load through tap's loader (the one tap runs the tests with).
'use strict';
const { spawnSync } = require('node:child_process');
const path = require('node:path');

const ROOT = path.join(__dirname, '..');

function parseArgs(argv) {
  const options = { minutes: 10, seed: Date.now() % 0x100000000, stdioShare: 0.1 };
  for (let index = 0; index < argv.length; index++) {
    const name = argv[index];
    const value = Number(argv[index + 1]);
    const key = { '--minutes': 'minutes', '--seed': 'seed', '--stdio-share': 'stdioShare' }[name];
    if (key === undefined || !Number.isFinite(value) || value < 0) {
      process.stderr.write(`fuzz.js: bad argument ${name} ${argv[index + 1] ?? ''}\n`);
      process.exit(2);
    }
    options[key] = value;
    index += 1;
  }
  if (options.stdioShare > 1) options.stdioShare = 1;
  return options;
}

const options = parseArgs(process.argv.slice(2));
const entry = path.join(ROOT, 'test', 'helpers', 'wire-fuzz-campaign.ts');
const program = `require(${JSON.stringify(entry)}).runLongCampaign(${JSON.stringify(options)})` +
  '.then((found) => process.exit(found > 0 ? 1 : 0), (error) => { ' +
  'process.stderr.write(String(error && error.stack || error) + "\\n"); process.exit(2); });';
const result = spawnSync(process.execPath, ['--import=@tapjs/typescript/import', '-e', program], {
  cwd: ROOT, stdio: 'inherit', env: { ...process.env, TS_NODE_TRANSPILE_ONLY: '1' },
});
process.exit(result.status ?? 2);

import fs from 'node:fs';
import path from 'node:path';
import t from 'tap';
import { version } from '../../src/version';
import { ROOT, runXvd } from '../helpers/cli';

const packageVersion = (JSON.parse(fs.readFileSync(path.join(ROOT, 'package.json'), 'utf8')) as
  { version: string }).version;

t.test('version() is the version package.json states', async (t) => {
  t.match(packageVersion, /^\d+\.\d+\.\d+/);
  t.equal(version(), packageVersion);
});

t.test('xvd --version and -V print "xvd VERSION" on stdout and exit 0', async (t) => {
  for (const flag of ['--version', '-V']) {
    const result = await runXvd([flag]);
    t.equal(result.code, 0, flag);
    t.equal(result.stdout, `xvd ${packageVersion}\n`, flag);
    t.equal(result.stderr, '', flag);
  }
});

t.test('--help lists --version', async (t) => {
  const result = await runXvd(['--help']);
  t.equal(result.code, 0);
  t.match(result.stdout, /-V, --version/);
});

t.test('a misspelt --versions is still a usage error (exit 2, one line)', async (t) => {
  const result = await runXvd(['--versions']);
  t.equal(result.code, 2);
  t.match(result.stderr, /^xvd: usage: .*--versions/);
  t.equal(result.stderr.split('\n').length, 2);
});

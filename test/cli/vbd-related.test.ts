/**
 * vbd add over storage related to a pool member or another VBD's target (a loop device and its
 * backing file, either way; root and losetup only): judged by the relation alone, one expert
 * level per writer (a pool member is a writer), refused with one line and the catalog unchanged.
 * Loop devices are always detached. Disk and partition are covered in test/cli/probe.test.ts.
 */
import { execFileSync } from 'node:child_process';
import path from 'node:path';
import t, { type Test } from 'tap';
import { makeImage, runXvd, snapshotCatalog, type CliResult } from '../helpers/cli';
import { loopUnavailable } from '../helpers/process';

const MIB = 1024 * 1024;

function attachLoop(t: Test, image: string): string {
  const loop = execFileSync('losetup', ['-f', '--show', image], { encoding: 'utf8' }).trim();
  t.teardown(() => execFileSync('losetup', ['-d', loop]));
  return loop;
}

function vbdAdd(catalog: string, source: string, device: string, mode: 'r' | 'w',
  expert?: number): Promise<CliResult> {
  const args = ['vbd', 'add', source, device, '--domain', '1', '--mode', mode];
  return runXvd(expert === undefined ? args : [...args, '--expert', String(expert)], { catalog });
}

function assertRefused(t: Test, result: CliResult, catalog: string, before: string,
  pattern: RegExp): void {
  t.equal(result.code, 1, 'refused');
  t.match(result.stderr, /^xvd: vbd add: [^\n]*\n$/, 'one line');
  t.match(result.stderr, pattern);
  t.equal(snapshotCatalog(catalog), before, 'catalog unchanged');
}

async function format(t: Test, catalog: string, member: string): Promise<void> {
  const result = await runXvd(['format', member, '--extent-size', '1M'], { catalog });
  t.equal(result.code, 0, result.stderr);
}

const reason = loopUnavailable();
if (reason !== null) {
  t.skip(`vbd add over related storage: ${reason}`, () => undefined);
} else {
  t.test('a loop device over a pool member image: writable needs --expert 2, read-only 1',
    async (t) => {
      const dir = t.testdir();
      const catalog = path.join(dir, 'c.sqlite');
      const image = makeImage(path.join(dir, 'a.img'), 8 * MIB);
      await format(t, catalog, image);
      const loop = attachLoop(t, image);
      const before = snapshotCatalog(catalog);
      const member = new RegExp(`storage of pool member .*a\\.img under another name`);
      assertRefused(t, await vbdAdd(catalog, `phy:${loop}`, 'xvda', 'w'), catalog, before,
        new RegExp(`${member.source}.*needs --expert 2, have 0`));
      assertRefused(t, await vbdAdd(catalog, `phy:${loop}`, 'xvda', 'w', 1), catalog, before,
        /needs --expert 2, have 1/);
      assertRefused(t, await vbdAdd(catalog, `extents:${loop}:1M+1M`, 'xvda', 'w'), catalog,
        before, member);
      assertRefused(t, await vbdAdd(catalog, `phy:${loop}`, 'xvda', 'r'), catalog, before,
        /needs --expert 1, have 0/);
      const reader = await vbdAdd(catalog, `phy:${loop}`, 'xvdr', 'r', 1);
      t.equal(reader.code, 0, reader.stderr);
      const writer = await vbdAdd(catalog, `phy:${loop}`, 'xvdw', 'w', 2);
      t.equal(writer.code, 0, writer.stderr);
    });

  t.test('an image whose loop device is the pool member: writable needs --expert 2',
    async (t) => {
      const dir = t.testdir();
      const catalog = path.join(dir, 'c.sqlite');
      const image = makeImage(path.join(dir, 'a.img'), 8 * MIB);
      const loop = attachLoop(t, image);
      await format(t, catalog, loop);
      const before = snapshotCatalog(catalog);
      assertRefused(t, await vbdAdd(catalog, `phy:${image}`, 'xvda', 'w'), catalog, before,
        new RegExp(`a\\.img is the storage of pool member ${loop} .*needs --expert 2, have 0`));
      const forced = await vbdAdd(catalog, `phy:${image}`, 'xvda', 'w', 2);
      t.equal(forced.code, 0, forced.stderr);
    });

  t.test('a loop device over another VBD\'s image: one level per writer', async (t) => {
    const dir = t.testdir();
    const catalog = path.join(dir, 'c.sqlite');
    const image = makeImage(path.join(dir, 'raw.img'), 4 * MIB);
    const loop = attachLoop(t, image);
    const first = await vbdAdd(catalog, `phy:${image}`, 'xvda', 'r');
    t.equal(first.code, 0, first.stderr);
    const reader = await vbdAdd(catalog, `phy:${loop}`, 'xvdb', 'r');
    t.equal(reader.code, 0, `two readers need no level: ${reader.stderr}`);
    const before = snapshotCatalog(catalog);
    assertRefused(t, await vbdAdd(catalog, `phy:${loop}`, 'xvdc', 'w'), catalog, before,
      /storage of VBD 1\/xvda \(r\) on .*raw\.img under another name.*needs --expert 1, have 0/);
    const writer = await vbdAdd(catalog, `phy:${loop}`, 'xvdc', 'w', 1);
    t.equal(writer.code, 0, writer.stderr);
    const after = snapshotCatalog(catalog);
    assertRefused(t, await vbdAdd(catalog, `phy:${image}`, 'xvdd', 'w', 1), catalog, after,
      /storage of VBD 1\/xvdc \(w\) on \/dev\/loop\d+ under another name.*needs --expert 2/);
  });
}

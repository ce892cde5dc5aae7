/**
 * Real loop devices as pool members (root only): their size comes from BLKGETSIZE64, a VD spans
 * both, the backing file of a member loop device is refused as overlapping, and data written
 * through `xvd import` reads back through `xvd export`. Loop devices are always detached.
 */
import { execFileSync } from 'node:child_process';
import crypto from 'node:crypto';
import fs from 'node:fs';
import path from 'node:path';
import t from 'tap';
import { makeImage, runXvd, snapshotCatalog } from '../helpers/cli';
import { loopUnavailable } from '../helpers/process';

const MIB = 1024 * 1024;

const reason = loopUnavailable();
if (reason !== null) {
  t.skip(`loop-device members: ${reason}`, () => undefined);
} else {
  t.test('loop devices work as pool members and overlap with their backing files', async (t) => {
    const dir = t.testdir();
    const catalog = path.join(dir, 'c.sqlite');
    const images = ['a.img', 'b.img'].map((name) => makeImage(path.join(dir, name), 8 * MIB));
    const loops: string[] = [];
    t.teardown(() => {
      for (const loop of loops) execFileSync('losetup', ['-d', loop]);
    });
    for (const image of images) {
      loops.push(execFileSync('losetup', ['-f', '--show', image], { encoding: 'utf8' }).trim());
    }
    for (const loop of loops) {
      const result = await runXvd(['format', loop, '--extent-size', '1M', '--json'], { catalog });
      t.equal(result.code, 0, result.stderr);
      const member = JSON.parse(result.stdout) as { kind: string; size: number };
      t.same([member.kind, member.size], ['block', 8 * MIB], `${loop} size from BLKGETSIZE64`);
    }
    const before = snapshotCatalog(catalog);
    const refused = await runXvd(['format', images[0] ?? ''], { catalog });
    t.equal(refused.code, 1);
    t.match(refused.stderr, /^xvd: format: .*shares bytes with pool member \/dev\/loop\d+\n$/);
    t.equal(snapshotCatalog(catalog), before, 'catalog unchanged by the refusal');

    const source = path.join(dir, 'source.raw');
    fs.writeFileSync(source, crypto.randomBytes(12 * MIB));
    const imported = await runXvd(['import', source], { catalog });
    t.equal(imported.code, 0, imported.stderr);
    const id = imported.stdout.trim();
    const shown = JSON.parse((await runXvd(['show', id, '--json'], { catalog })).stdout) as
      { extents: { path: string }[] };
    t.same([...new Set(shown.extents.map((e) => e.path))].sort(), [...loops].sort(),
      'the VD spans both loop devices');
    const target = path.join(dir, 'out.raw');
    const exported = await runXvd(['export', id, target], { catalog });
    t.equal(exported.code, 0, exported.stderr);
    t.ok(fs.readFileSync(target).equals(fs.readFileSync(source)), 'bytes read back equal');
  });
}

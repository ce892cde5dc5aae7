/**
 * import copies a sparse file into a new VD and export writes it back as a sparse file with the
 * same bytes (sha256), across extents scattered over two pool members.
 */
import crypto from 'node:crypto';
import fs from 'node:fs';
import path from 'node:path';
import t from 'tap';
import { makeImage, runXvd } from '../helpers/cli';

const MIB = 1024 * 1024;

function sha256(file: string): string {
  return crypto.createHash('sha256').update(fs.readFileSync(file)).digest('hex');
}

/** A sparse file of `sizeBytes` with a few random blocks of data. */
function sparseSource(file: string, sizeBytes: number): void {
  makeImage(file, sizeBytes);
  const fd = fs.openSync(file, 'r+');
  for (const offset of [0, 3 * MIB + 4096, 7 * MIB - 100, sizeBytes - 777]) {
    fs.writeSync(fd, crypto.randomBytes(Math.min(65536, sizeBytes - offset)), 0, undefined, offset);
  }
  fs.closeSync(fd);
}

t.test('import then export round-trips the bytes and keeps the output sparse', async (t) => {
  const dir = t.testdir();
  const catalog = path.join(dir, 'c.sqlite');
  for (const name of ['a.img', 'b.img']) {
    const image = makeImage(path.join(dir, name), 6 * MIB);
    fs.writeFileSync(image, Buffer.alloc(6 * MIB, 0xaa)); // old data that must not show through
    t.equal((await runXvd(['format', image, '--extent-size', '1M'], { catalog })).code, 0);
  }
  const source = path.join(dir, 'source.raw');
  const sizeBytes = 10 * MIB + 1234;
  sparseSource(source, sizeBytes);
  const imported = await runXvd(['import', source, '--name', 'copy'], { catalog });
  t.equal(imported.code, 0, imported.stderr);
  t.match(imported.stdout, /^\d+\n$/);
  const id = imported.stdout.trim();
  const shown = JSON.parse((await runXvd(['show', id, '--json'], { catalog })).stdout) as
    { size: number; extents: { path: string }[] };
  t.equal(shown.size, sizeBytes, 'the VD has the file\'s exact size');
  t.equal(new Set(shown.extents.map((e) => e.path)).size, 2, 'the VD spans both members');
  const target = path.join(dir, 'out.raw');
  const exported = await runXvd(['export', id, target], { catalog });
  t.equal(exported.code, 0, exported.stderr);
  t.equal(exported.stderr, '', 'no progress bar when stderr is not a terminal');
  t.equal(fs.statSync(target).size, sizeBytes);
  t.equal(sha256(target), sha256(source), 'same bytes');
  const blocks = fs.statSync(target).blocks;
  t.ok(blocks * 512 < 2 * MIB, `output is sparse (${blocks} blocks)`);
});

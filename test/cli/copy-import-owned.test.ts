/**
 * An import's copy asks before each chunk whether the import is still this process's; once it
 * is not (another process freed it, judging this one gone), not one more byte is written to its
 * former extents and the copy fails with ERR_VD_IMPORT_LOST.
 */
import crypto from 'node:crypto';
import fs from 'node:fs';
import path from 'node:path';
import t from 'tap';
import { importInto } from '../../src/cli/copy';
import { LIMITS } from '../../src/limits';

const CHUNK = LIMITS.copyChunkBytes;

t.test('the copy stops at the first chunk after the import stopped being ours', async (t) => {
  const dir = t.testdir();
  const source = path.join(dir, 'src.raw');
  const data = crypto.randomBytes(8 * CHUNK);
  fs.writeFileSync(source, data);
  const member = path.join(dir, 'member.img');
  fs.writeFileSync(member, Buffer.alloc(8 * CHUNK));
  let asked = 0;
  const isOwned = () => ++asked <= 3;
  await t.rejects(importInto(source, [{ path: member, offset: 0, length: 8 * CHUNK }],
    8 * CHUNK, isOwned), { code: 'ERR_VD_IMPORT_LOST' });
  const written = fs.readFileSync(member);
  t.ok(written.subarray(0, 3 * CHUNK).equals(data.subarray(0, 3 * CHUNK)), '3 chunks copied');
  t.ok(written.subarray(3 * CHUNK).equals(Buffer.alloc(5 * CHUNK)), 'nothing after them');
  t.equal(asked, 4);
});

t.test('an owned import copies everything', async (t) => {
  const dir = t.testdir();
  const source = path.join(dir, 'src.raw');
  const data = crypto.randomBytes(3 * CHUNK + 100);
  fs.writeFileSync(source, data);
  const member = path.join(dir, 'member.img');
  fs.writeFileSync(member, Buffer.alloc(4 * CHUNK));
  await importInto(source, [{ path: member, offset: 0, length: 4 * CHUNK }], data.length,
    () => true);
  t.ok(fs.readFileSync(member).subarray(0, data.length).equals(data));
});

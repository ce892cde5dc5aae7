import fs from 'node:fs';
import path from 'node:path';
import t from 'tap';
import {
  identitiesEqual, identitiesOverlap, identitiesRelated, probeMember, type MemberIdentity,
} from '../../src/cli/probe';
import { UsageError } from '../../src/errors';

function disk(majMin: string, startSector: number, endSector: number): MemberIdentity {
  return { files: [], disk: { majMin, startSector, endSector } };
}

t.test('a disk overlaps its own partition; disjoint partitions do not overlap', async (t) => {
  const whole = disk('8:0', 0, 1000);
  const first = disk('8:0', 0, 400);
  const second = disk('8:0', 400, 1000);
  const inner = disk('8:0', 100, 200);
  t.ok(identitiesOverlap(whole, second));
  t.ok(identitiesOverlap(whole, inner), 'containment counts (the seed missed it)');
  t.ok(identitiesOverlap(inner, whole));
  t.notOk(identitiesOverlap(first, second), 'half-open ranges that touch do not overlap');
  t.notOk(identitiesOverlap(whole, disk('8:16', 0, 1000)), 'another disk');
});

t.test('the same file by another path (hard link, symlink) has the same identity', async (t) => {
  const dir = t.testdir({ 'a.img': 'data' });
  const file = path.join(dir, 'a.img');
  fs.linkSync(file, path.join(dir, 'hard.img'));
  fs.symlinkSync(file, path.join(dir, 'soft.img'));
  const probe = probeMember(file);
  t.equal(probe.kind, 'file');
  t.equal(probe.sizeBytes, 4);
  t.ok(identitiesOverlap(probe.identity, probeMember(path.join(dir, 'hard.img')).identity));
  const soft = probeMember(path.join(dir, 'soft.img'));
  t.equal(soft.pathReal, fs.realpathSync(file), 'symlinks resolve to the real path');
  t.ok(identitiesOverlap(probe.identity, soft.identity));
  fs.writeFileSync(path.join(dir, 'b.img'), 'other');
  t.notOk(identitiesOverlap(probe.identity, probeMember(path.join(dir, 'b.img')).identity));
});

t.test('identities are equal only for the same bytes at the same offsets', async (t) => {
  t.ok(identitiesEqual(disk('8:0', 400, 1000), disk('8:0', 400, 1000)), 'one partition, two nodes');
  t.notOk(identitiesEqual(disk('8:0', 0, 1000), disk('8:0', 400, 1000)), 'a disk and its partition');
  t.notOk(identitiesEqual(disk('8:0', 0, 1000), disk('8:16', 0, 1000)), 'another disk');
  const file = { files: [{ dev: 1, ino: 2 }], disk: null };
  t.ok(identitiesEqual(file, { files: [{ dev: 1, ino: 2 }], disk: null }), 'one file, two names');
  t.notOk(identitiesEqual(file, { files: [{ dev: 1, ino: 3 }], disk: null }));
  const loop = { files: [{ dev: 1, ino: 2 }], disk: { majMin: '7:0', startSector: 0,
    endSector: 8 } };
  t.ok(identitiesOverlap(file, loop));
  t.notOk(identitiesEqual(file, loop), 'a loop device is not its backing file');
});

t.test('related: the same storage under another name, either way round', async (t) => {
  const whole = disk('259:0', 0, 1000);
  const partition = disk('259:0', 100, 900);
  t.ok(identitiesRelated(whole, partition), 'a disk and its partition');
  t.ok(identitiesRelated(partition, whole), 'a partition and its disk');
  t.notOk(identitiesRelated(partition, disk('259:0', 100, 900)), 'the same partition: equal');
  t.notOk(identitiesRelated(disk('259:0', 0, 100), disk('259:0', 100, 200)), 'disjoint');
  t.notOk(identitiesRelated(whole, disk('259:8', 0, 1000)), 'another disk');
  const file = { files: [{ dev: 1, ino: 2 }], disk: null };
  const loop = { files: [{ dev: 1, ino: 2 }], disk: { majMin: '7:0', startSector: 0,
    endSector: 8 } };
  const loopPartition = { files: [{ dev: 1, ino: 2 }], disk: { majMin: '7:0', startSector: 2,
    endSector: 8 } };
  const otherLoop = { files: [{ dev: 1, ino: 2 }], disk: { majMin: '7:1', startSector: 0,
    endSector: 8 } };
  t.ok(identitiesRelated(file, loop), 'a backing file and its loop device');
  t.ok(identitiesRelated(loop, file), 'a loop device and its backing file');
  t.ok(identitiesRelated(file, loopPartition), 'a backing file and a partition on its loop');
  t.ok(identitiesRelated(loop, otherLoop), 'two loop devices over one file');
  t.notOk(identitiesRelated(file, { files: [{ dev: 1, ino: 2 }], disk: null }), 'one file');
  t.notOk(identitiesRelated(file, { files: [{ dev: 1, ino: 3 }], disk: null }), 'two files');
});

t.test('a missing path and a directory are refused with their own codes', async (t) => {
  const dir = t.testdir({ sub: {} });
  const codeOf = (target: string): string => {
    try {
      probeMember(target);
      return 'none';
    } catch (error) {
      return error instanceof UsageError ? error.code : 'other';
    }
  };
  t.equal(codeOf(path.join(dir, 'missing')), 'ERR_CLI_MEMBER_MISSING');
  t.equal(codeOf(path.join(dir, 'sub')), 'ERR_CLI_MEMBER_KIND');
  t.equal(codeOf('/dev/null'), 'ERR_CLI_MEMBER_KIND', 'a character device is refused');
});

import t from 'tap';
import {
  describeConflict, findSharingConflict, isOwnMapping, levelNeeded, rangesOverlap,
  type Holder, type PathRange,
} from '../../src/allocator/sharing';

const range = (path: string, offset: number, length: number): PathRange =>
  ({ path, offset, length });

function vbd(label: string, mode: 'r' | 'w', ranges: PathRange[], vdId: number | null = null):
  Holder {
  return { label, kind: 'vbd', mode, vdId, ranges };
}

function vd(vdId: number, ranges: PathRange[]): Holder {
  return { label: `pool VD ${vdId}`, kind: 'vd', mode: 'w', vdId, ranges };
}

t.test('ranges on the same path share bytes only when they overlap (half-open)', async (t) => {
  t.equal(rangesOverlap(range('/a', 0, 10), range('/a', 9, 1)), true, 'last byte shared');
  t.equal(rangesOverlap(range('/a', 0, 10), range('/a', 10, 5)), false, 'touching: nothing');
  t.equal(rangesOverlap(range('/a', 10, 5), range('/a', 0, 10)), false, 'either order');
  t.equal(rangesOverlap(range('/a', 2, 3), range('/a', 0, 10)), true, 'one inside the other');
});

t.test('ranges on different paths never share bytes', async (t) => {
  t.equal(rangesOverlap(range('/a', 0, 10), range('/b', 0, 10)), false);
  const mine = vbd('mine', 'w', [range('/a', 0, 10)]);
  t.equal(findSharingConflict(mine, [vbd('other', 'w', [range('/b', 0, 10)])], 0), null);
});

t.test('the level a shared range needs is the number of writers in the pair', async (t) => {
  t.equal(levelNeeded('r', 'r'), 0);
  t.equal(levelNeeded('r', 'w'), 1);
  t.equal(levelNeeded('w', 'r'), 1);
  t.equal(levelNeeded('w', 'w'), 2);
});

t.test('two readers may always share', async (t) => {
  const mine = vbd('mine', 'r', [range('/a', 0, 10)]);
  t.equal(findSharingConflict(mine, [vbd('other', 'r', [range('/a', 0, 10)])], 0), null);
});

t.test('a reader beside a writer needs expert level 1', async (t) => {
  const mine = vbd('mine', 'r', [range('/a', 0, 10)]);
  const others = [vbd('other', 'w', [range('/a', 5, 10)])];
  const conflict = findSharingConflict(mine, others, 0);
  t.equal(conflict?.levelNeeded, 1);
  t.same(conflict?.mine, range('/a', 0, 10));
  t.same(conflict?.theirs, range('/a', 5, 10));
  t.equal(findSharingConflict(mine, others, 1), null, 'level 1 allows it');
});

t.test('two writers need expert level 2', async (t) => {
  const mine = vbd('mine', 'w', [range('/a', 0, 10)]);
  const others = [vbd('other', 'w', [range('/a', 0, 1)])];
  t.equal(findSharingConflict(mine, others, 0)?.levelNeeded, 2);
  t.equal(findSharingConflict(mine, others, 1)?.levelNeeded, 2, 'level 1 is not enough');
  t.equal(findSharingConflict(mine, others, 2), null, 'level 2 allows it');
});

t.test('a VD and a VBD mapping it are never judged against each other', async (t) => {
  const disk = vd(3, [range('/pool', 0, 10)]);
  const ownVbd = vbd('VBD 1/xvda (w)', 'w', [range('/pool', 0, 10)], 3);
  t.equal(isOwnMapping(ownVbd, disk), true);
  t.equal(isOwnMapping(disk, ownVbd), true, 'either way round');
  t.equal(findSharingConflict(ownVbd, [disk], 0), null, 'a new VBD of the VD');
  t.equal(findSharingConflict(disk, [ownVbd], 0), null, 'an undeleted VD and its VBDs');
});

t.test('two VBDs of the same VD are judged like any pair', async (t) => {
  const first = vbd('VBD 1/xvda (w)', 'w', [range('/pool', 0, 10)], 3);
  const second = vbd('VBD 2/xvda (w)', 'w', [range('/pool', 0, 10)], 3);
  t.equal(isOwnMapping(first, second), false);
  t.equal(findSharingConflict(second, [first], 1)?.other, first);
});

t.test('another VD is judged: a phy: VBD over a member shares with each VD on it',
  async (t) => {
    const phy = vbd('VBD 1/xvdb (r)', 'r', [range('/pool', 0, 100)]);
    const other = vd(4, [range('/pool', 40, 10)]);
    t.equal(isOwnMapping(phy, other), false, 'a phy: VBD maps no VD');
    t.equal(isOwnMapping(vbd('VBD of 3', 'w', [], 3), other), false, 'a VBD of another VD');
    t.equal(findSharingConflict(phy, [other], 0)?.other, other);
  });

t.test('the first pair over the level is reported, others in order', async (t) => {
  const mine = vbd('mine', 'w', [range('/a', 0, 10), range('/b', 0, 10)]);
  const reader = vbd('reader', 'r', [range('/b', 5, 1)]);
  const writer = vbd('writer', 'w', [range('/a', 5, 1)]);
  t.equal(findSharingConflict(mine, [reader, writer], 0)?.other, reader);
  t.equal(findSharingConflict(mine, [reader, writer], 1)?.other, writer, 'reader allowed at 1');
  t.same(findSharingConflict(mine, [reader, writer], 0)?.mine, range('/b', 0, 10));
});

t.test('a conflict is described with both ranges and both levels', async (t) => {
  const mine = vbd('VBD 1/xvda (w)', 'w', [range('/a', 0, 10)]);
  const conflict = findSharingConflict(mine, [vd(2, [range('/a', 4, 4)])], 1);
  t.ok(conflict !== null);
  if (conflict === null) return;
  t.equal(describeConflict('vbd add', mine, conflict, 1), 'vbd add: VBD 1/xvda (w) would share '
    + '/a [0, 10) with pool VD 2 at /a [4, 8): needs expert level 2, have 1');
});

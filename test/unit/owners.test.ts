/**
 * src/allocator/owners.ts against a per-extent model: owner counts kept as runs (addOwners,
 * clearOwners) equal the counts kept extent by extent, and splitByOwners cuts a VD's runs
 * exactly where the count changes, in virtual order.
 */
import fc from 'fast-check';
import t from 'tap';
import type { Run } from '../../src/allocator/allocator';
import {
  addOwners, clearOwners, intersectRuns, splitByOwners, type OwnerRun,
} from '../../src/allocator/owners';

const SPAN = 24;

/** Count per extent of member 1 ("1" where mapped without a row). */
function perExtent(rows: readonly OwnerRun[]): number[] {
  const counts = Array.from({ length: SPAN }, () => 1);
  for (const r of rows) {
    for (let e = r.firstExtent; e < r.firstExtent + r.extentCount; e++) counts[e] = r.owners;
  }
  return counts;
}

const runArb: fc.Arbitrary<Run> = fc.tuple(fc.nat(SPAN - 1), fc.integer({ min: 1, max: 6 }))
  .map(([first, count]) => ({ memberId: 1, firstExtent: first,
    extentCount: Math.min(count, SPAN - first) }));

t.test('counts as runs equal counts per extent', async (t) => {
  fc.assert(fc.property(fc.array(fc.tuple(runArb, fc.boolean()), { maxLength: 12 }),
    (steps) => {
      let rows: OwnerRun[] = [];
      const model = Array.from({ length: SPAN }, () => 1);
      for (const [run, isClear] of steps) {
        const extents = Array.from({ length: run.extentCount }, (_, i) => run.firstExtent + i);
        if (isClear) {
          rows = clearOwners(rows, [run]);
          for (const e of extents) model[e] = 1;
        } else {
          rows = addOwners(rows, [run], 1);
          for (const e of extents) model[e]! += 1;
        }
        if (perExtent(rows).join() !== model.join()) return false;
        if (rows.some((r) => r.owners < 2)) return false;
      }
      for (let e = 0; e < SPAN; e++) {
        if (model[e]! > 1) {
          rows = addOwners(rows, [{ memberId: 1, firstExtent: e, extentCount: 1 }], -1);
          model[e]! -= 1;
        }
      }
      return perExtent(rows).join() === model.join();
    }), { numRuns: 300, seed: 18 });
  t.pass('300 sequences agree');
});

t.test('splitByOwners cuts at every change of count, in virtual order', async (t) => {
  const rows: OwnerRun[] = [
    { memberId: 1, firstExtent: 2, extentCount: 3, owners: 2 },
    { memberId: 1, firstExtent: 5, extentCount: 1, owners: 3 },
  ];
  const runs: Run[] = [
    { memberId: 1, firstExtent: 4, extentCount: 4 },
    { memberId: 2, firstExtent: 0, extentCount: 2 },
    { memberId: 1, firstExtent: 0, extentCount: 3 },
  ];
  t.same(splitByOwners(runs, rows).map((p) => [p.memberId, p.firstExtent, p.extentCount,
    p.owners]), [
    [1, 4, 1, 2], [1, 5, 1, 3], [1, 6, 2, 1], [2, 0, 2, 1], [1, 0, 2, 1], [1, 2, 1, 2],
  ]);
  t.same(intersectRuns(runs, rows), [{ memberId: 1, firstExtent: 4, extentCount: 2 },
    { memberId: 1, firstExtent: 2, extentCount: 1 }]);
  t.throws(() => addOwners([], [{ memberId: 1, firstExtent: 0, extentCount: 1 }], -1),
    /no owner/, 'a count cannot drop below one');
});

import t from 'tap';
import {
  allocate, availableBytes, freeAfter, mergeAdjacent, sliceRuns, subtractRuns, virtualOffsetOf,
  type AllocationRequest, type Run,
} from '../../src/allocator/allocator';

const MiB = 1024 * 1024;
const run = (memberId: number, firstExtent: number, extentCount: number): Run =>
  ({ memberId, firstExtent, extentCount });

function request(over: Partial<AllocationRequest>): AllocationRequest {
  return {
    sizeBytes: 4 * MiB,
    extentSizes: new Map([[1, MiB], [2, MiB], [3, 4 * MiB]]),
    freeRuns: [],
    deadVds: [],
    blocked: [],
    onMemberId: null,
    ...over,
  };
}

t.test('best fit picks the smallest free run that holds the whole request', async (t) => {
  const plan = allocate(request({ sizeBytes: 3 * MiB,
    freeRuns: [run(1, 0, 10), run(1, 20, 3), run(2, 0, 5)] }));
  t.same(plan?.runs, [run(1, 20, 3)]);
});

t.test('without a fitting run, the largest runs are taken whole first', async (t) => {
  const plan = allocate(request({ sizeBytes: 9 * MiB,
    freeRuns: [run(1, 0, 2), run(1, 10, 6), run(2, 0, 4)] }));
  t.ok(plan);
  // 6 whole, then best fit for 3 is the 4-run (3 extents of it).
  t.same(plan!.runs, [run(1, 10, 6), run(2, 0, 3)]);
});

t.test('a partial last extent still takes a whole extent', async (t) => {
  const plan = allocate(request({ sizeBytes: MiB + 1, freeRuns: [run(1, 0, 10)] }));
  t.same(plan?.runs, [run(1, 0, 2)]);
});

t.test('never-used space is preferred over dead VDs', async (t) => {
  const plan = allocate(request({ sizeBytes: 2 * MiB, freeRuns: [run(1, 50, 2)],
    deadVds: [{ vdId: 7, expiresAt: 1, runs: [run(1, 0, 10)] }] }));
  t.same(plan?.runs, [run(1, 50, 2)]);
  t.same(plan?.fromDead, []);
});

t.test('the VD that expired longest ago is eaten first, from its tail', async (t) => {
  const plan = allocate(request({ sizeBytes: 3 * MiB, deadVds: [
    { vdId: 8, expiresAt: 200, runs: [run(1, 0, 10)] },
    { vdId: 9, expiresAt: 100, runs: [run(2, 0, 2), run(2, 10, 2)] },
  ] }));
  t.ok(plan);
  // VD 9 loses its last run (2 extents) and the tail extent of its first run; order ascending.
  t.same(plan!.runs, [run(2, 1, 1), run(2, 10, 2)]);
  t.same(plan!.fromDead, [{ vdId: 9, taken: [run(2, 1, 1), run(2, 10, 2)], remaining: [run(2, 0, 1)] }]);
});

t.test('space spills from one dead VD into the next', async (t) => {
  const plan = allocate(request({ sizeBytes: 5 * MiB, deadVds: [
    { vdId: 1, expiresAt: 1, runs: [run(1, 0, 3)] },
    { vdId: 2, expiresAt: 2, runs: [run(1, 3, 5)] },
  ] }));
  t.same(plan?.fromDead.map((d) => d.vdId), [1, 2]);
  t.same(plan?.fromDead[1]?.remaining, [run(1, 3, 3)]);
  t.same(plan?.runs, [run(1, 0, 3), run(1, 6, 2)], 'the second VD gives its tail');
});

t.test('all or nothing: too little space gives null', async (t) => {
  t.equal(allocate(request({ sizeBytes: 11 * MiB, freeRuns: [run(1, 0, 10)] })), null);
});

t.test('onMemberId restricts every source to one member', async (t) => {
  const req = request({ sizeBytes: 2 * MiB, onMemberId: 2, freeRuns: [run(1, 0, 10), run(2, 5, 1)],
    deadVds: [{ vdId: 3, expiresAt: 1, runs: [run(1, 20, 5), run(2, 0, 1)] }] });
  const plan = allocate(req);
  t.same(plan?.runs, [run(2, 5, 1), run(2, 0, 1)], 'never-used first, then the dead VD');
  t.same(availableBytes(req), { neverUsed: MiB, reclaimable: MiB });
});

t.test('blocked extents are never handed out, free or dead', async (t) => {
  const plan = allocate(request({ sizeBytes: 4 * MiB, freeRuns: [run(1, 0, 4)],
    deadVds: [{ vdId: 5, expiresAt: 1, runs: [run(1, 10, 4)] }],
    blocked: [run(1, 1, 2), run(1, 12, 1)] }));
  t.ok(plan);
  for (const r of plan!.runs) {
    for (let e = r.firstExtent; e < r.firstExtent + r.extentCount; e++) {
      t.notOk([1, 2, 12].includes(e), `extent ${e} is not blocked`);
    }
  }
});

t.test('mixed extent sizes count bytes, not extents', async (t) => {
  const plan = allocate(request({ sizeBytes: 9 * MiB, freeRuns: [run(3, 0, 2), run(1, 0, 1)] }));
  t.same(plan?.runs, [run(1, 0, 1), run(3, 0, 2)]);
});

t.test('subtractRuns cuts containment, partial overlap and keeps order', async (t) => {
  t.same(subtractRuns([run(1, 0, 10)], [run(1, 2, 3)]), [run(1, 0, 2), run(1, 5, 5)]);
  t.same(subtractRuns([run(1, 5, 5)], [run(1, 0, 20)]), []);
  t.same(subtractRuns([run(1, 5, 5), run(2, 0, 3)], [run(1, 8, 10)]), [run(1, 5, 3), run(2, 0, 3)]);
  t.same(subtractRuns([run(1, 0, 4)], [run(2, 0, 4)]), [run(1, 0, 4)]);
});

t.test('adjacent pieces in virtual order merge into one run', async (t) => {
  const plan = allocate(request({ sizeBytes: 5 * MiB, deadVds: [
    { vdId: 1, expiresAt: 1, runs: [run(1, 0, 3)] },
    { vdId: 2, expiresAt: 2, runs: [run(1, 3, 2)] },
  ] }));
  t.same(plan?.runs, [run(1, 0, 5)]);
});

t.test('freeAfter and mergeAdjacent keep a sorted, merged free list', async (t) => {
  t.same(freeAfter([run(1, 0, 10)], [run(1, 0, 3)]), [run(1, 3, 7)]);
  t.same(mergeAdjacent([run(1, 0, 2), run(1, 2, 2), run(2, 4, 1)]), [run(1, 0, 4), run(2, 4, 1)]);
});

t.test('sliceRuns maps a virtual byte range onto member bytes across runs', async (t) => {
  const sizes = request({}).extentSizes;
  const runs = [run(1, 10, 2), run(3, 1, 1), run(2, 0, 3)]; // virtual [0, 2), [2, 6), [6, 9) MiB
  t.same(sliceRuns(runs, sizes, MiB + 5, 2 * MiB), [{ memberId: 1, offset: 11 * MiB + 5,
    length: MiB - 5 }], 'slack inside the first run');
  t.same(sliceRuns(runs, sizes, MiB, 7 * MiB), [
    { memberId: 1, offset: 11 * MiB, length: MiB },
    { memberId: 3, offset: 4 * MiB, length: 4 * MiB },
    { memberId: 2, offset: 0, length: MiB },
  ], 'a range spanning three runs');
  t.same(sliceRuns(runs, sizes, 9 * MiB, 9 * MiB), [], 'an empty range at the end');
  t.throws(() => sliceRuns(runs, sizes, 8 * MiB, 9 * MiB + 1), 'past the runs is a bug');
});

t.test('virtualOffsetOf maps a member byte back to its virtual offset, the inverse of sliceRuns',
  async (t) => {
    const sizes = request({}).extentSizes;
    const runs = [run(1, 10, 2), run(3, 1, 1), run(2, 0, 3)];
    t.equal(virtualOffsetOf(runs, sizes, 1, 11 * MiB + 5), MiB + 5);
    t.equal(virtualOffsetOf(runs, sizes, 3, 4 * MiB), 2 * MiB);
    t.equal(virtualOffsetOf(runs, sizes, 2, 3 * MiB - 1), 9 * MiB - 1);
    for (const piece of sliceRuns(runs, sizes, MiB + 7, 8 * MiB)) {
      t.ok(virtualOffsetOf(runs, sizes, piece.memberId, piece.offset)! >= MiB + 7);
    }
    t.equal(virtualOffsetOf(runs, sizes, 1, 12 * MiB), null, 'past a run');
    t.equal(virtualOffsetOf(runs, sizes, 2, 3 * MiB), null, 'past the last run');
    t.equal(virtualOffsetOf(runs, sizes, 4, 0), null, 'a member the VD is not on');
  });

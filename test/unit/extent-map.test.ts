import t from 'tap';
import { ExtentMap } from '../../src/engine/extent-map';

const sample = ExtentMap.fromList([
  { path: 'a', offset: 0, length: 100 },
  { path: 'b', offset: 1000, length: 50 },
  { path: 'a', offset: 500, length: 7 },
]);

t.test('indexOf finds the extent at every boundary of half-open ranges', async (t) => {
  t.equal(sample.count, 3);
  t.equal(sample.sizeVirtual, 157);
  t.equal(sample.indexOf(0), 0);
  t.equal(sample.indexOf(99), 0);
  t.equal(sample.indexOf(100), 1);
  t.equal(sample.indexOf(149), 1);
  t.equal(sample.indexOf(150), 2);
  t.equal(sample.indexOf(156), 2);
  t.throws(() => sample.indexOf(157));
  t.throws(() => sample.indexOf(-1));
});

t.test('translate splits a range at extent boundaries with backing offsets', async (t) => {
  t.same(sample.translate(95, 60), [
    { backingIndex: 0, offsetBacking: 95, length: 5, offsetRequest: 0 },
    { backingIndex: 1, offsetBacking: 1000, length: 50, offsetRequest: 5 },
    { backingIndex: 0, offsetBacking: 500, length: 5, offsetRequest: 55 },
  ]);
  t.same(sample.translate(100, 1), [
    { backingIndex: 1, offsetBacking: 1000, length: 1, offsetRequest: 0 },
  ]);
  t.same(sample.translate(99, 1), [
    { backingIndex: 0, offsetBacking: 99, length: 1, offsetRequest: 0 },
  ]);
  t.same(sample.paths, ['a', 'b']);
  t.throws(() => sample.translate(150, 8), 'past the end');
  t.throws(() => sample.translate(0, 0), 'empty');
});

t.test('contiguous extents on one backing merge into one piece', async (t) => {
  const map = ExtentMap.fromList([
    { path: 'a', offset: 0, length: 10 },
    { path: 'a', offset: 10, length: 10 },
    { path: 'b', offset: 20, length: 10 },
    { path: 'a', offset: 30, length: 10 },
  ]);
  t.equal(map.count, 3);
  t.same(map.translate(0, 20), [{ backingIndex: 0, offsetBacking: 0, length: 20,
    offsetRequest: 0 }]);
});

t.test('offsets beyond 2^32 translate exactly', async (t) => {
  const big = 2 ** 40;
  const map = ExtentMap.fromList([
    { path: 'a', offset: big, length: 2 ** 33 },
    { path: 'b', offset: 2 ** 45 + 3, length: 2 ** 33 + 1 },
  ]);
  t.equal(map.sizeVirtual, 2 ** 34 + 1);
  t.equal(map.indexOf(2 ** 33 - 1), 0);
  t.equal(map.indexOf(2 ** 33), 1);
  t.same(map.translate(2 ** 33 - 2, 4), [
    { backingIndex: 0, offsetBacking: big + 2 ** 33 - 2, length: 2, offsetRequest: 0 },
    { backingIndex: 1, offsetBacking: 2 ** 45 + 3, length: 2, offsetRequest: 2 },
  ]);
  t.same(map.translate(2 ** 34, 1), [
    { backingIndex: 1, offsetBacking: 2 ** 45 + 3 + 2 ** 33, length: 1, offsetRequest: 0 },
  ]);
});

t.test('lookup agrees with a linear scan on a large random map', async (t) => {
  const extents = [];
  let seed = 12345;
  const next = (): number => (seed = (seed * 1103515245 + 12345) % 2 ** 31);
  for (let i = 0; i < 5000; i++) {
    extents.push({ path: `p${i % 3}`, offset: next() * 7, length: 1 + (next() % 9000) });
  }
  const map = ExtentMap.fromList(extents);
  const starts: number[] = [];
  for (let i = 0; i < map.count; i++) starts.push(map.at(i).startVirtual);
  let mismatches = 0;
  for (let probe = 0; probe < 20000; probe++) {
    const offset = next() % map.sizeVirtual;
    let linear = 0;
    while (linear + 1 < starts.length && (starts[linear + 1] as number) <= offset) linear++;
    if (map.indexOf(offset) !== linear) mismatches++;
  }
  t.equal(mismatches, 0);
});

t.test('invalid extents are refused', async (t) => {
  t.throws(() => ExtentMap.fromList([{ path: 'a', offset: 0, length: 0 }]));
  t.throws(() => ExtentMap.fromList([{ path: 'a', offset: -1, length: 5 }]));
  t.throws(() => ExtentMap.fromList([{ path: '', offset: 0, length: 5 }]));
  t.equal(ExtentMap.fromList([]).sizeVirtual, 0);
});

t.test('lookup is exact at every extent edge of a skewed map (one huge, many tiny)', async (t) => {
  const extents = [{ path: 'big', offset: 0, length: 2 ** 42 }];
  for (let i = 0; i < 3000; i++) extents.push({ path: `t${i % 2}`, offset: i * 10,
    length: 1 + (i % 3) });
  const map = ExtentMap.fromList(extents);
  let wrong = 0;
  for (let i = 0; i < map.count; i++) {
    const { startVirtual, endVirtual } = map.at(i);
    if (map.indexOf(startVirtual) !== i || map.indexOf(endVirtual - 1) !== i) wrong++;
  }
  t.equal(wrong, 0);
});

t.test('shared extents: never merged with own ones, found by touchesShared, kept by toList',
  async (t) => {
    const map = ExtentMap.fromList([
      { path: '/a', offset: 0, length: 100 },
      { path: '/a', offset: 100, length: 100, shared: true },
      { path: '/a', offset: 200, length: 100, shared: true },
      { path: '/a', offset: 300, length: 100 },
    ]);
    t.equal(map.count, 3, 'own, shared (merged), own');
    t.equal(map.sharedCount, 1);
    t.equal(map.touchesShared(0, 100), false);
    t.equal(map.touchesShared(99, 2), true);
    t.equal(map.touchesShared(300, 100), false);
    t.equal(map.touchesShared(250, 100), true);
    t.same(map.toList().map((spec) => spec.shared), [false, true, false]);
    t.equal(ExtentMap.fromList([{ path: '/a', offset: 0, length: 10 }]).touchesShared(0, 10),
      false, 'a map without shared extents never looks');
  });

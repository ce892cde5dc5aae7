/**
 * serve/cow-verdict mergeResolved: a fresh resolution laid over the map a VD is served with under
 * copy-on-write. Own commits change nothing, marks follow the catalog, uncommitted remaps win
 * over the catalog's old extent, an enlarge extends, anything else is a reason to fence.
 */
import t from 'tap';
import type { ExtentSpec } from '../../src/engine/extent-map';
import { mergeResolved } from '../../src/serve/cow-verdict';

const E = 1024;
const served: ExtentSpec[] = [
  { path: '/a', offset: 0, length: 2 * E, shared: true },
  { path: '/r', offset: 5 * E, length: E, shared: false }, // a remap of this server
  { path: '/a', offset: 3 * E, length: E, shared: true },
];

t.test('the catalog showing this server\'s own commit changes nothing', async (t) => {
  const now: ExtentSpec[] = [
    { path: '/a', offset: 0, length: 2 * E, shared: true },
    { path: '/r', offset: 5 * E, length: E },
    { path: '/a', offset: 3 * E, length: E, shared: true },
  ];
  const merged = mergeResolved(served, [], now);
  t.not(typeof merged, 'string');
  if (typeof merged === 'string') return;
  t.equal(merged.isChanged, false, 'keep');
});

t.test('an uncommitted remap wins over the old extent the catalog still shows', async (t) => {
  const now: ExtentSpec[] = [{ path: '/a', offset: 0, length: 4 * E, shared: true }];
  t.equal(mergeResolved(served, [], now), 'VD extents changed', 'without it: fence');
  const merged = mergeResolved(served, [{ start: 2 * E, length: E }], now);
  if (typeof merged === 'string') {
    t.fail(merged);
    return;
  }
  t.equal(merged.isChanged, false);
  t.same(merged.extents.map((spec) => spec.path), ['/a', '/r', '/a']);
});

t.test('marks follow the catalog: a clone shares, a sharer gone unshares', async (t) => {
  const own: ExtentSpec[] = [{ path: '/a', offset: 0, length: 4 * E }];
  const cloned = mergeResolved(own, [], [{ path: '/a', offset: 0, length: 4 * E, shared: true }]);
  if (typeof cloned === 'string') {
    t.fail(cloned);
    return;
  }
  t.equal(cloned.isChanged, true);
  t.equal(cloned.extents[0]?.shared, true, 'own → shared');
  const alone = mergeResolved(served, [], [
    { path: '/a', offset: 0, length: E, shared: true },
    { path: '/a', offset: E, length: E },
    { path: '/r', offset: 5 * E, length: E },
    { path: '/a', offset: 3 * E, length: E, shared: true },
  ]);
  if (typeof alone === 'string') {
    t.fail(alone);
    return;
  }
  t.equal(alone.isChanged, true);
  t.same(alone.extents.map((spec) => [spec.offset, spec.length, spec.shared]),
    [[0, E, true], [E, E, false], [5 * E, E, false], [3 * E, E, true]], 'split where it changed');
});

t.test('an enlarge extends; a shrink or a moved extent is a reason to fence', async (t) => {
  const grown = mergeResolved(served, [], [...served, { path: '/b', offset: 0, length: E }]);
  if (typeof grown === 'string') {
    t.fail(grown);
    return;
  }
  t.equal(grown.isChanged, true);
  t.equal(grown.extents.reduce((sum, spec) => sum + spec.length, 0), 5 * E);
  t.equal(mergeResolved(served, [], served.slice(0, 2)), 'VD shrank');
  t.equal(mergeResolved(served, [], [{ path: '/b', offset: 0, length: 4 * E }]),
    'VD extents changed');
});

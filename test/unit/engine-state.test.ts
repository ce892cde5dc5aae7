/**
 * engine/extent-state: "known all data" is a capability of the backing (hasKnownData), never its
 * class; isAllData over a map asks each backing for its own piece; the state's descriptor lists
 * are null as soon as one backing has no descriptor.
 */
import t from 'tap';
import type { Backing } from '../../src/backing/backing';
import { MemoryBacking } from '../../src/backing/memory-backing';
import { PooledBacking } from '../../src/backing/pool';
import { ExtentMap } from '../../src/engine/extent-map';
import {
  hasKnownData, isAllData, isBackingAllData, makeExtentState,
} from '../../src/engine/extent-state';

/** A memory backing that knows its data runs: everything below `dataEnd` is data. */
class KnownMemoryBacking extends MemoryBacking {
  constructor(path: string, sizeBytes: number, readonly dataEnd: number) {
    super(path, sizeBytes);
  }

  isAllData(offset: number, length: number): boolean {
    return offset + length <= this.dataEnd;
  }
}

/** A memory backing that says it is a device (devices are all data). */
function deviceLike(path: string, sizeBytes: number): Backing {
  const backing = new MemoryBacking(path, sizeBytes);
  return Object.assign(Object.create(backing) as Backing, { kind: 'device' });
}

t.test('hasKnownData is structural: a method named isAllData, whatever the class', async (t) => {
  const plain = new MemoryBacking('m', 4096);
  const known = new KnownMemoryBacking('k', 4096, 1024);
  t.equal(hasKnownData(plain), false);
  t.equal(hasKnownData(known), true);
  t.equal(isBackingAllData(plain, 0, 10), false, 'a memory backing does not know');
  t.equal(isBackingAllData(known, 0, 1024), true);
  t.equal(isBackingAllData(known, 1, 1024), false, 'past its data runs');
  t.equal(isBackingAllData(deviceLike('d', 4096), 0, 4096), true, 'devices are data');
  t.equal(isBackingAllData(undefined, 0, 1), false);
});

t.test('isAllData over a map asks each backing for its own piece', async (t) => {
  const known = new KnownMemoryBacking('k', 8192, 4096);
  const plain = new MemoryBacking('m', 8192);
  const held = new Map([
    ['k', new PooledBacking(known, 'k')],
    ['m', new PooledBacking(plain, 'm')],
  ]);
  const map = ExtentMap.fromList([
    { path: 'k', offset: 0, length: 4096 },
    { path: 'k', offset: 4096, length: 4096 },
    { path: 'm', offset: 0, length: 4096 },
  ]);
  const state = makeExtentState(map, held, map.sizeVirtual);
  t.equal(isAllData(state, 0, 4096), true, 'the first extent lies inside the known data');
  t.equal(isAllData(state, 0, 4097), false, 'the second extent is past it');
  t.equal(isAllData(state, 8192, 10), false, 'the memory backing cannot say');
  t.equal(isAllData(state, 0, 0), false, 'an empty range is not asked');
  t.equal(isAllData(state, 12288, 1), false, 'past the size');
  t.equal(state.batchFds, null, 'memory backings have no batch descriptor');
  t.equal(state.sendFds, null, 'nor a send descriptor');
});

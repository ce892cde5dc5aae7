/**
 * Property: random sequences of format/create/enlarge/delete/undelete/refresh/expire (advancing an
 * injected clock), clone and write (a server's copy-on-write: lease, reserve, commit the remap)
 * keep every catalog invariant, and agree with a simple model: a create succeeds
 * exactly when enough extents are not held by live VDs (an extent a live VD maps counts once), undelete succeeds exactly when the VD
 * still holds the extents it had, a dead VD only ever loses extents, sizes are what was asked.
 * An import is a create that nobody sees until it completes; one abandoned by its owner, or
 * orphaned (its process gone) and cleaned up, gives back exactly the free space it took.
 * Clones: each VD's shared bytes are its extents another VD maps, free space is the pool less
 * what live VDs map and reserve, each extent once, and no VD ever sees another's data: the model
 * gives each virtual extent a content token (fresh on create and on every write, copied by a
 * clone), and two VDs map one extent only where their tokens agree. A remap of an extent that
 * is not one whole extent is refused (ERR_COW_NOT_SHARED). Two VDs may copy one shared extent
 * at once: both commits apply, and the old extent, left by both, is free again.
 */
import path from 'node:path';
import Database from 'better-sqlite3';
import fc from 'fast-check';
import t from 'tap';
import { openCatalog, type Catalog, type CowExtents } from '../../src/catalog';

const EXTENT = 4096;

type Op =
  | { op: 'format'; extents: number }
  | { op: 'create'; bytes: number; expiryS: number; member: number | null }
  | { op: 'enlarge'; vd: number; addBytes: number }
  | { op: 'delete'; vd: number }
  | { op: 'undelete'; vd: number; expiryS: number }
  | { op: 'refresh'; vd: number; expiryS: number }
  | { op: 'advance'; ms: number }
  | { op: 'import'; bytes: number; expiryS: number; end: 'complete' | 'abandon' | 'orphan' }
  | { op: 'clone'; vd: number; expiryS: number }
  | { op: 'write'; vd: number; extent: number; reserve: number };

const opArb: fc.Arbitrary<Op> = fc.oneof(
  fc.record({ op: fc.constant('format' as const), extents: fc.integer({ min: 1, max: 12 }) }),
  fc.record({ op: fc.constant('create' as const), bytes: fc.integer({ min: 1, max: 8 * EXTENT }),
    expiryS: fc.constantFrom(0, 0, 5, 30), member: fc.option(fc.integer({ min: 0, max: 3 })) }),
  fc.record({ op: fc.constant('enlarge' as const), vd: fc.nat(20),
    addBytes: fc.integer({ min: 0, max: 4 * EXTENT }) }),
  fc.record({ op: fc.constant('delete' as const), vd: fc.nat(20) }),
  fc.record({ op: fc.constant('undelete' as const), vd: fc.nat(20),
    expiryS: fc.constantFrom(0, 10) }),
  fc.record({ op: fc.constant('refresh' as const), vd: fc.nat(20), expiryS: fc.constantFrom(0, 3) }),
  fc.record({ op: fc.constant('advance' as const), ms: fc.integer({ min: 1, max: 20_000 }) }),
  fc.record({ op: fc.constant('import' as const), bytes: fc.integer({ min: 1, max: 8 * EXTENT }),
    expiryS: fc.constantFrom(0, 0, 5), end: fc.constantFrom('complete' as const,
      'abandon' as const, 'orphan' as const) }),
  ...[1, 2, 3].map(() => fc.record({ op: fc.constant('clone' as const), vd: fc.nat(20),
    expiryS: fc.constantFrom(0, 0, 5) })),
  ...[1, 2, 3, 4, 5].map(() => fc.record({ op: fc.constant('write' as const), vd: fc.nat(20),
    extent: fc.nat(12), reserve: fc.constantFrom(1, 1, 2, 4) })),
);

interface ModelVd {
  id: number;
  size: number;
  /** Extent keys ("member:index") it held while last live. */
  held: Set<string>;
  /** The content of each virtual extent: equal tokens, equal bytes. */
  tokens: number[];
}

let tokenNext = 1;
function freshTokens(n: number): number[] {
  return Array.from({ length: n }, () => tokenNext++);
}

/** The VD's extent keys in virtual order. */
function extentList(catalog: Catalog, id: number): string[] {
  const keys: string[] = [];
  for (const e of catalog.getVd(id).extents) {
    for (let o = e.offset; o < e.offset + e.length; o += EXTENT) keys.push(`${e.memberId}:${o / EXTENT}`);
  }
  return keys;
}

function extentKeys(catalog: Catalog, id: number): Set<string> {
  const keys = new Set<string>();
  for (const e of catalog.getVd(id).extents) {
    for (let o = e.offset; o < e.offset + e.length; o += EXTENT) keys.add(`${e.memberId}:${o / EXTENT}`);
  }
  return keys;
}

function codeOf(run: () => unknown): string | null {
  try {
    run();
    return null;
  } catch (error) {
    const code = (error as { code?: string }).code;
    if (code === undefined) throw error;
    return code;
  }
}

/** Ends an import as `end` says; false when the VD is gone (abandoned or orphaned). */
function endImport(catalog: Catalog, file: string, id: number, end: ImportEnd): boolean {
  if (end === 'complete') {
    importEnds.complete += 1;
    assert(catalog.completeImport(id).state === 'live', 'a completed import is live');
    return true;
  }
  if (end === 'abandon') {
    catalog.abandonImport(id);
  } else {
    assert(catalog.cleanAbandonedImports().length === 0, 'a running import is left alone');
    const db = new Database(file);
    db.prepare("UPDATE vd_imports SET pid_start_time = 'gone' WHERE vd_id = ?").run(id);
    db.close();
    assert(catalog.check().length === 0, 'an orphaned import is no fault');
    assert(catalog.cleanAbandonedImports().join() === String(id), 'the orphan is cleaned');
  }
  importEnds[end] += 1;
  const code = codeOf(() => catalog.getVd(id));
  if (code === null) importEnds.kept += 1;
  assert(code === 'ERR_VD_UNKNOWN' || catalog.getVd(id).allocatedBytes === 0, 'nothing is left');
  assert(code !== null || codeOf(() => catalog.undeleteVd(id)) === 'ERR_VD_REUSED');
  return false;
}

type ImportEnd = Extract<Op, { op: 'import' }>['end'];

/** How the imports of all sequences ended ('kept' = a freed VD kept as deleted). */
const importEnds = { complete: 0, abandon: 0, orphan: 0, kept: 0 };

/** What the clones and writes of all sequences did. */
const cows = { clones: 0, remaps: 0, inPlace: 0, noRoom: 0, races: 0 };

type WriteOp = Extract<Op, { op: 'write' }>;

/**
 * The VD an op names: any by index, but a clone mostly picks a live VD and a write mostly a
 * live VD that shares extents, so that sequences reach copy-on-write often.
 */
function pickVd(catalog: Catalog, op: Extract<Op, { vd: number }>, vds: ModelVd[]):
  ModelVd | undefined {
  const isLive = (m: ModelVd) => catalog.getVd(m.id).state === 'live';
  let pool = vds;
  if (op.op === 'clone' && op.vd % 4 !== 0) pool = vds.filter(isLive);
  if (op.op === 'write' && op.vd % 4 !== 0) {
    pool = vds.filter((m) => isLive(m) && catalog.getVd(m.id).sharedBytes > 0);
  }
  if (pool.length === 0) pool = vds;
  return pool[op.vd % Math.max(pool.length, 1)];
}

/**
 * A write to virtual extent `op.extent` of a live VD, as a server does it: an extent another VD
 * maps is copied into a reserved extent and remapped (lease, reserve, commit); any other is
 * written in place, and a remap of it is refused. `room`: extents the pool can still give.
 */
function writeOne(catalog: Catalog, serverId: number, vd: ModelVd, op: WriteOp,
  vds: readonly ModelVd[], room: number): void {
  const list = extentList(catalog, vd.id);
  const i = op.extent % list.length;
  const key = list[i]!;
  const isShared = vds.some((o) => o.id !== vd.id && extentKeys(catalog, o.id).has(key));
  const [memberId, firstExtent] = key.split(':').map(Number) as [number, number];
  const remap = { virtualOffset: i * EXTENT, length: EXTENT, memberId, firstExtent };
  catalog.acquireLease(serverId, vd.id);
  try {
    if (!isShared) {
      const half = { ...remap, length: EXTENT / 2 };
      const code = codeOf(() => catalog.commitCowRemaps(serverId, vd.id, [half]));
      assert(code === 'ERR_COW_NOT_SHARED', `a remap of half an extent: ${code}`);
      cows.inPlace += 1;
      vd.tokens[i] = tokenNext++;
      return;
    }
    let got: CowExtents[] = [];
    const code = codeOf(() => {
      got = catalog.reserveCowExtents(serverId, vd.id, EXTENT, op.reserve);
    });
    assert(code === (op.reserve <= room ? null : 'ERR_VD_NO_SPACE'), `reserve ${code} ${room}`);
    if (code !== null) {
      cows.noRoom += 1;
      return;
    }
    const first = got[0]!;
    const other = op.reserve === 1 ? null : coOwner(catalog, vds, vd, key);
    const race = other === null ? null : raceBegin(catalog, serverId, other, key);
    catalog.commitCowRemaps(serverId, vd.id, [{ ...remap, memberId: first.memberId,
      firstExtent: first.firstExtent }]);
    cows.remaps += 1;
    vd.tokens[i] = tokenNext++;
    vd.held = extentKeys(catalog, vd.id);
    if (race !== null) race();
  } finally {
    catalog.releaseLease(serverId, vd.id);
  }
}

/** A live VD other than `vd` that maps extent `key`, or null. */
function coOwner(catalog: Catalog, vds: readonly ModelVd[], vd: ModelVd, key: string):
  ModelVd | null {
  return vds.find((o) => o.id !== vd.id && catalog.getVd(o.id).state === 'live'
    && extentList(catalog, o.id).includes(key)) ?? null;
}

/**
 * Another VD copies the same extent at the same time (its server reserved before the first
 * commit); returns its commit, to run after the first: it must apply though it may find
 * itself the only owner left, and then the old extent goes back to the pool.
 */
function raceBegin(catalog: Catalog, serverId: number, other: ModelVd, key: string):
  (() => void) | null {
  const j = extentList(catalog, other.id).indexOf(key);
  catalog.acquireLease(serverId, other.id);
  let got: CowExtents[] = [];
  if (codeOf(() => { got = catalog.reserveCowExtents(serverId, other.id, EXTENT, 1); })) {
    catalog.releaseLease(serverId, other.id);
    return null;
  }
  return () => {
    catalog.commitCowRemaps(serverId, other.id, [{ virtualOffset: j * EXTENT, length: EXTENT,
      memberId: got[0]!.memberId, firstExtent: got[0]!.firstExtent }]);
    catalog.releaseLease(serverId, other.id);
    other.tokens[j] = tokenNext++;
    other.held = extentKeys(catalog, other.id);
    cows.races += 1;
  };
}

/**
 * Shared bytes are the extents another VD maps; two VDs that map one extent (each with all its
 * extents: live, or dead and intact) see the same content there.
 */
function checkSharing(catalog: Catalog, vds: readonly ModelVd[]): void {
  const lists = new Map(vds.map((m) => [m.id, extentList(catalog, m.id)]));
  const mappers = new Map<string, number>();
  for (const list of lists.values()) {
    for (const k of new Set(list)) mappers.set(k, (mappers.get(k) ?? 0) + 1);
  }
  const tokenOf = new Map<string, number>();
  for (const m of vds) {
    const list = lists.get(m.id)!;
    const shared = list.filter((k) => mappers.get(k)! > 1).length;
    assert(catalog.getVd(m.id).sharedBytes === shared * EXTENT, `VD ${m.id}: shared bytes`);
    if (list.length !== m.tokens.length) continue; // lost extents: never served again
    list.forEach((k, i) => {
      const seen = tokenOf.get(k);
      assert(seen === undefined || seen === m.tokens[i], `VD ${m.id} sees another VD's data`);
      tokenOf.set(k, m.tokens[i]!);
    });
  }
}

function runSequence(dir: string, ops: Op[], seq: number): void {
  const clock = { ms: 1_000_000 };
  const file = path.join(dir, `c${seq}.sqlite`);
  const catalog = openCatalog(file, { now: () => clock.ms });
  const raw = new Database(file, { readonly: true });
  const serverId = catalog.registerServer();
  const vds: ModelVd[] = [];
  const memberIds: number[] = [];
  const isLive = (id: number) => ['live', 'zeroing'].includes(catalog.getVd(id).state);
  /** Extents live VDs map (each once) or hold in reserve. */
  const liveExtentsOn = (memberId: number | null) => {
    const keys = new Set<string>();
    for (const vd of vds) {
      if (isLive(vd.id)) for (const k of extentKeys(catalog, vd.id)) keys.add(k);
    }
    let n = [...keys].filter((k) => memberId === null || k.startsWith(`${memberId}:`)).length;
    const reserves = raw.prepare('SELECT * FROM cow_reserve').all() as
      { vd_id: number; member_id: number; extent_count: number }[];
    for (const r of reserves) {
      if ((memberId === null || r.member_id === memberId) && isLive(r.vd_id)) n += r.extent_count;
    }
    return n;
  };
  const capacity = (memberId: number | null) => catalog.listMembers()
    .filter((m) => memberId === null || m.id === memberId)
    .reduce((s, m) => s + m.extentCount, 0);
  try {
    for (const op of ops) {
      const vd = 'vd' in op ? pickVd(catalog, op, vds) : undefined;
      if (op.op === 'format') {
        const m = catalog.formatMember({ path: `/pool/m${memberIds.length}`, kind: 'file',
          sizeBytes: op.extents * EXTENT + 100, extentSize: EXTENT, identity: `m${memberIds.length}` });
        memberIds.push(m.id);
      } else if (op.op === 'create') {
        const member = op.member === null || memberIds.length === 0 ? null
          : memberIds[op.member % memberIds.length]!;
        const need = Math.ceil(op.bytes / EXTENT);
        const fits = need <= capacity(member) - liveExtentsOn(member);
        const code = codeOf(() => {
          const created = catalog.createVd({ size: op.bytes, expiresInS: op.expiryS,
            onMember: member, zero: false });
          vds.push({ id: created.id, size: op.bytes, held: extentKeys(catalog, created.id),
            tokens: freshTokens(need) });
          assert(created.allocatedBytes === need * EXTENT);
        });
        assert(fits ? code === null : code === 'ERR_VD_NO_SPACE', `create fits=${fits} ${code}`);
      } else if (op.op === 'import') {
        const fits = Math.ceil(op.bytes / EXTENT) <= capacity(null) - liveExtentsOn(null);
        const freeBefore = catalog.freeSpace().totalBytes;
        let id = 0;
        const code = codeOf(() => {
          id = catalog.beginImport({ size: op.bytes, expiresInS: op.expiryS, zero: false }).id;
        });
        assert(fits ? code === null : code === 'ERR_VD_NO_SPACE', `import fits=${fits} ${code}`);
        if (code !== null) continue;
        assert(catalog.getVd(id).state === 'importing' && catalog.check().length === 0);
        assert(!catalog.listVds().some((v) => v.id === id), 'an importing VD is not listed');
        if (endImport(catalog, file, id, op.end)) {
          vds.push({ id, size: op.bytes, held: extentKeys(catalog, id),
            tokens: freshTokens(Math.ceil(op.bytes / EXTENT)) });
        } else {
          assert(catalog.freeSpace().totalBytes === freeBefore, 'its space is free again');
        }
      } else if (op.op === 'advance') {
        clock.ms += op.ms;
      } else if (vd === undefined) {
        continue;
      } else if (op.op === 'clone') {
        const live = isLive(vd.id);
        let id = 0;
        const code = codeOf(() => {
          id = catalog.cloneVd(vd.id, { expiresInS: op.expiryS }).id;
        });
        assert(code === (live ? null : 'ERR_VD_DELETED'), `clone ${code} live=${live}`);
        if (code !== null) continue;
        cows.clones += 1;
        assert(extentList(catalog, id).join() === extentList(catalog, vd.id).join(), 'same map');
        vds.push({ id, size: vd.size, held: extentKeys(catalog, id), tokens: [...vd.tokens] });
      } else if (op.op === 'write') {
        if (!isLive(vd.id)) continue;
        writeOne(catalog, serverId, vd, op, vds, capacity(null) - liveExtentsOn(null));
      } else if (op.op === 'enlarge') {
        const live = isLive(vd.id);
        const have = catalog.getVd(vd.id).allocatedBytes / EXTENT;
        const need = Math.ceil((vd.size + op.addBytes) / EXTENT) - have;
        const fits = need <= capacity(null) - liveExtentsOn(null);
        const code = codeOf(() => catalog.enlargeVd(vd.id, vd.size + op.addBytes, { zero: false }));
        const expected = !live ? 'ERR_VD_DELETED' : fits ? null : 'ERR_VD_NO_SPACE';
        assert(code === expected, `enlarge ${code} expected ${expected}`);
        if (code === null) {
          vd.size += op.addBytes;
          const keys = extentKeys(catalog, vd.id);
          for (const k of vd.held) assert(keys.has(k), 'enlarge keeps the old extents');
          vd.held = keys;
          vd.tokens.push(...freshTokens(keys.size - vd.tokens.length));
        }
      } else if (op.op === 'delete' || op.op === 'refresh') {
        const live = isLive(vd.id);
        const code = codeOf(() => (op.op === 'delete' ? catalog.deleteVd(vd.id)
          : catalog.refreshVd(vd.id, op.expiryS)));
        assert(code === (live ? null : 'ERR_VD_DELETED'), `${op.op} ${code}`);
      } else {
        const intact = extentKeys(catalog, vd.id).size === vd.held.size;
        const code = codeOf(() => catalog.undeleteVd(vd.id, op.expiryS));
        assert(code === (intact ? null : 'ERR_VD_REUSED'), `undelete ${code} intact=${intact}`);
      }
      const faults = catalog.check();
      assert(faults.length === 0, faults.join('\n'));
      for (const m of vds) {
        const now = catalog.getVd(m.id);
        assert(now.size === m.size, 'size is exact');
        const keys = extentKeys(catalog, m.id);
        for (const k of keys) assert(m.held.has(k), `VD ${m.id} only ever loses extents`);
        if (isLive(m.id)) assert(keys.size === m.held.size && now.allocatedBytes >= now.size);
      }
      checkSharing(catalog, vds);
      const free = (capacity(null) - liveExtentsOn(null)) * EXTENT;
      assert(catalog.freeSpace().totalBytes === free, 'free space counts each extent once');
    }
  } finally {
    raw.close();
    catalog.close();
  }
}

function assert(condition: boolean, message = 'model mismatch'): asserts condition {
  if (!condition) throw new Error(message);
}

t.test('random operation sequences keep every invariant and agree with the model', async (t) => {
  const dir = t.testdir();
  let seq = 0;
  fc.assert(fc.property(
    fc.array(opArb, { minLength: 1, maxLength: 40, size: 'medium' })
      .map((ops) => [{ op: 'format', extents: 8 } satisfies Op, ...ops]),
    (ops) => {
      runSequence(dir, ops, seq++);
    },
  ), { numRuns: 60, seed: 4242 });
  t.pass('60 sequences checked');
  t.ok(importEnds.complete > 0 && importEnds.abandon > 0 && importEnds.orphan > 0,
    `imports: ${JSON.stringify(importEnds)}`);
  t.ok(cows.clones > 0 && cows.remaps > 0 && cows.inPlace > 0 && cows.noRoom > 0
    && cows.races > 0,
    `clones and writes: ${JSON.stringify(cows)}`);
});

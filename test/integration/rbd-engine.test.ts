/**
 * The engine's model test over RBD backings, on a real cluster: random read/write/trim/zero/flush
 * sequences over random extent maps on three RBD images (unaligned extents, shuffled virtual
 * order) against a flat in-memory reference, with FUA at random. The images start filled with
 * 0xee, so a stray write outside the map shows in the final check of the bytes no extent covers.
 * Trim is a discard, advisory on RBD (librbd skips parts of objects): the bytes it covered are
 * unknown until written again, and the model compares only known bytes; zero is write-zeroes and
 * must read zeros. Block status answers only runs inside the range, data wherever the model
 * has non-zero bytes.
 */
import t from 'tap';
import fc from 'fast-check';
import { BackingPool } from '../../src/backing/pool';
import { openRbdBacking } from '../../src/backing/rbd-backing';
import { configureCeph, connectCeph, shutdownCeph } from '../../src/ceph/client';
import { openExport } from '../../src/engine/extent-export';
import type { ExtentSpec } from '../../src/engine/extent-map';
import * as sys from '../../src/sys/index';
import { startCeph } from '../helpers/ceph';

const FILL = 0xee;
const IMAGES = 3;

interface Layout {
  extents: { image: number; offset: number; length: number }[];
  imageSizes: number[];
}

function layoutArb(): fc.Arbitrary<Layout> {
  const extentArb = fc.record({
    image: fc.integer({ min: 0, max: IMAGES - 1 }),
    length: fc.oneof(fc.integer({ min: 1, max: 700 }), fc.integer({ min: 512, max: 70_000 })),
    gap: fc.integer({ min: 0, max: 5000 }),
  });
  const countArb = fc.oneof(fc.integer({ min: 1, max: 8 }), fc.integer({ min: 9, max: 120 }));
  return countArb.chain((count) => fc.tuple(
    fc.array(extentArb, { minLength: count, maxLength: count }),
    fc.infiniteStream(fc.nat()),
  )).map(([specs, stream]) => {
    const cursors = new Array<number>(IMAGES).fill(0);
    const extents = specs.map((spec) => {
      const length = Math.min(spec.length, Math.max(1, Math.floor(4 * 1024 * 1024 / specs.length)));
      const offset = (cursors[spec.image] as number) + spec.gap;
      cursors[spec.image] = offset + length;
      return { image: spec.image, offset, length };
    });
    const it = stream[Symbol.iterator]();
    for (let i = extents.length - 1; i > 0; i--) {
      const j = (it.next().value as number) % (i + 1);
      [extents[i], extents[j]] = [extents[j]!, extents[i]!];
    }
    return { extents, imageSizes: cursors.map((c) => c + 4096) };
  });
}

type Op =
  | { kind: 'read' | 'trim' | 'zero' | 'write' | 'status'; at: number; span: number;
    fua: boolean; seed: number }
  | { kind: 'flush' };

const opArb: fc.Arbitrary<Op> = fc.oneof(
  fc.record({
    kind: fc.constantFrom<'read' | 'trim' | 'zero' | 'write' | 'status'>('read', 'write', 'write',
      'trim', 'zero', 'status'),
    at: fc.double({ min: 0, max: 1, noNaN: true, maxExcluded: true }),
    span: fc.oneof(fc.integer({ min: 1, max: 600 }), fc.integer({ min: 1, max: 300_000 })),
    fua: fc.boolean(),
    seed: fc.nat(),
  }),
  fc.constant({ kind: 'flush' as const }),
);

function pattern(length: number, seed: number): Buffer {
  const data = Buffer.allocUnsafe(length);
  let x = seed | 1;
  for (let i = 0; i < length; i++) {
    x ^= x << 13; x ^= x >>> 17; x ^= x << 5;
    data[i] = (x & 0xff) | 1; // never zero: block status must call it data
  }
  return data;
}

/** The model: bytes, and which of them are known (a discard leaves them unknown). */
interface Model {
  bytes: Buffer;
  isKnown: Uint8Array;
}

function checkKnown(model: Model, offset: number, got: Buffer, what: string): void {
  for (let i = 0; i < got.length; i++) {
    if (model.isKnown[offset + i] === 1 && got[i] !== model.bytes[offset + i]) {
      throw new Error(`${what}: byte ${offset + i} is ${got[i]}, not ${model.bytes[offset + i]}`);
    }
  }
}

async function fillImage(path: string, size: number): Promise<Buffer> {
  const backing = await openRbdBacking(path, 'w');
  const data = Buffer.alloc(size, FILL);
  await new Promise<void>((resolve, reject) => backing.write(data, 0, size, 0,
    (error) => (error === null ? resolve() : reject(error))));
  await backing.close();
  return data;
}

async function readImage(path: string, size: number): Promise<Buffer> {
  const backing = await openRbdBacking(path, 'r');
  const data = Buffer.alloc(size);
  await new Promise<void>((resolve, reject) => backing.read(data, 0, size, 0,
    (error) => (error === null ? resolve() : reject(error))));
  await backing.close();
  return data;
}

t.test('the engine over RBD matches a flat reference under random operations', async (t) => {
  const cluster = await startCeph(t);
  configureCeph({ conf: cluster.conf });
  await connectCeph();
  t.teardown(() => shutdownCeph().catch(() => undefined));
  let run = 0;
  await fc.assert(fc.asyncProperty(layoutArb(), fc.array(opArb, { minLength: 1, maxLength: 30 }),
    async (layout, ops) => {
      const paths = layout.imageSizes.map((_, i) => `rbd:${cluster.pool}/model-${run}-${i}`);
      run++;
      for (const [i, size] of layout.imageSizes.entries()) {
        await sys.rbdCreate(cluster.pool, paths[i]!.split('/')[1]!, size, 1);
        await fillImage(paths[i]!, size);
      }
      const extents: ExtentSpec[] = layout.extents.map((e) =>
        ({ path: paths[e.image]!, offset: e.offset, length: e.length }));
      const size = extents.reduce((sum, e) => sum + e.length, 0);
      const model: Model = { bytes: Buffer.alloc(size, FILL), isKnown: new Uint8Array(size).fill(1) };
      const pool = new BackingPool();
      const exp = await openExport({ name: 'd/m', description: '', mode: 'w', size, extents, pool });
      try {
        for (const op of ops) await apply(exp, model, op, size);
        const whole = Buffer.alloc(size);
        await exp.read(0, size, whole, 0);
        checkKnown(model, 0, whole, 'final contents');
      } finally {
        await exp.close();
        await pool.close();
      }
      for (const [i, size] of layout.imageSizes.entries()) {
        const bytes = await readImage(paths[i]!, size);
        const covered = new Uint8Array(size);
        for (const e of layout.extents) {
          if (e.image === i) covered.fill(1, e.offset, e.offset + e.length);
        }
        for (let b = 0; b < size; b++) {
          if (covered[b] === 0 && bytes[b] !== FILL) throw new Error(`stray byte: image ${i} @${b}`);
        }
      }
    }), { numRuns: 20, seed: 20261207, endOnFailure: true });
  t.pass('20 runs matched the reference');
});

type ExportUnderTest = Awaited<ReturnType<typeof openExport>>;

async function apply(exp: ExportUnderTest, model: Model, op: Op, size: number): Promise<void> {
  if (op.kind === 'flush') return exp.flush();
  const offset = Math.floor(op.at * size);
  const length = Math.min(op.span, size - offset);
  if (op.kind === 'read') {
    const target = Buffer.alloc(length + 7, 0x55);
    await exp.read(offset, length, target, 3);
    checkKnown(model, offset, target.subarray(3, 3 + length), `read ${offset}+${length}`);
    if (target[2] !== 0x55 || target[3 + length] !== 0x55) throw new Error('read overran');
  } else if (op.kind === 'write') {
    const data = pattern(length, op.seed);
    await exp.write(offset, data, { fua: op.fua });
    data.copy(model.bytes, offset);
    model.isKnown.fill(1, offset, offset + length);
  } else if (op.kind === 'trim') {
    await exp.trim(offset, length, { fua: op.fua });
    model.isKnown.fill(0, offset, offset + length);
  } else if (op.kind === 'zero') {
    await exp.zero(offset, length, { fua: op.fua, mayTrim: true, fastOnly: false });
    model.bytes.fill(0, offset, offset + length);
    model.isKnown.fill(1, offset, offset + length);
  } else {
    await checkStatus(exp, model, offset, length);
  }
}

/** Block status: runs inside the range, in order; a hole never where known bytes are non-zero. */
async function checkStatus(exp: ExportUnderTest, model: Model, offset: number, length: number,
): Promise<void> {
  const runs = await exp.blockStatus(offset, length, 64);
  let at = offset;
  for (const run of runs) {
    if (run.length <= 0 || at + run.length > offset + length) throw new Error('bad status run');
    if (run.isHole) {
      for (let b = at; b < at + run.length; b++) {
        if (model.isKnown[b] === 1 && model.bytes[b] !== 0) {
          throw new Error(`status: hole at ${b} over data`);
        }
      }
    }
    at += run.length;
  }
}

/**
 * Model test: random read/write/trim/zero/flush sequences over random extent maps (1 to
 * thousands of extents on three sparse files, unaligned last extent) against a flat in-memory
 * reference. The backing files start filled with 0xee, so a stray write outside the map shows up in
 * the final check of the bytes no extent covers. Trim punches holes on files, so it reads zeros.
 */
import t from 'tap';
import fc from 'fast-check';
import fs from 'node:fs';
import path from 'node:path';
import { BackingPool } from '../../src/backing/pool';
import { openExport } from '../../src/engine/extent-export';
import type { ExtentSpec } from '../../src/engine/extent-map';

const FILL = 0xee;
const BACKINGS = 3;

interface Layout {
  extents: ExtentSpec[];
  fileSizes: number[];
}

function layoutArb(): fc.Arbitrary<Layout> {
  const extentArb = fc.record({
    backing: fc.integer({ min: 0, max: BACKINGS - 1 }),
    length: fc.oneof(fc.integer({ min: 1, max: 700 }), fc.integer({ min: 512, max: 70_000 })),
    gap: fc.integer({ min: 0, max: 5000 }),
  });
  const countArb = fc.oneof(
    fc.integer({ min: 1, max: 8 }),
    fc.integer({ min: 9, max: 200 }),
    fc.integer({ min: 1000, max: 3000 }),
  );
  return countArb.chain((count) =>
    fc.tuple(fc.array(extentArb, { minLength: count, maxLength: count }),
      fc.infiniteStream(fc.nat())),
  ).map(([specs, stream]) => {
    const cursors = new Array<number>(BACKINGS).fill(0);
    const extents: ExtentSpec[] = [];
    const budget = 4 * 1024 * 1024;
    let total = 0;
    for (const spec of specs) {
      const length = Math.min(spec.length, Math.max(1, Math.floor(budget / specs.length)));
      const offset = (cursors[spec.backing] as number) + spec.gap;
      cursors[spec.backing] = offset + length;
      extents.push({ path: String(spec.backing), offset, length });
      total += length;
    }
    // shuffle virtual order so it differs from backing order
    const it = stream[Symbol.iterator]();
    for (let i = extents.length - 1; i > 0; i--) {
      const j = (it.next().value as number) % (i + 1);
      [extents[i], extents[j]] = [extents[j] as ExtentSpec, extents[i] as ExtentSpec];
    }
    void total;
    return { extents, fileSizes: cursors.map((c) => c + 4096) };
  });
}

type Op =
  | {
    kind: 'read' | 'trim' | 'zero' | 'write';
    at: number;
    span: number;
    mayTrim: boolean;
    fua: boolean;
    seed: number;
  }
  | { kind: 'flush' };

const opArb: fc.Arbitrary<Op> = fc.oneof(
  fc.record({
    kind: fc.constantFrom<'read' | 'trim' | 'zero' | 'write'>('read', 'read', 'write', 'write',
      'trim', 'zero'),
    at: fc.double({ min: 0, max: 1, noNaN: true, maxExcluded: true }),
    span: fc.oneof(fc.integer({ min: 1, max: 600 }), fc.integer({ min: 1, max: 300_000 })),
    mayTrim: fc.boolean(),
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
    data[i] = x & 0xff;
  }
  return data;
}

t.test('the engine matches a flat reference device under random operations', async (t) => {
  const root = t.testdir();
  let run = 0;
  await fc.assert(
    fc.asyncProperty(layoutArb(), fc.array(opArb, { minLength: 1, maxLength: 30 }), async (layout,
      ops) => {
      const dir = path.join(root, String(run++));
      fs.mkdirSync(dir);
      const extents = layout.extents.map((e) => ({ ...e, path: path.join(dir, e.path) }));
      layout.fileSizes.forEach((size, i) => fs.writeFileSync(path.join(dir, String(i)),
        Buffer.alloc(size, FILL)));
      const size = extents.reduce((sum, e) => sum + e.length, 0);
      const reference = Buffer.alloc(size, FILL);
      const pool = new BackingPool();
      const exp = await openExport({ name: 'd/m', description: '', mode: 'w', size, extents,
        pool });
      try {
        for (const op of ops) {
          if (op.kind === 'flush') {
            await exp.flush();
            continue;
          }
          const offset = Math.floor(op.at * size);
          const length = Math.min(op.span, size - offset);
          if (op.kind === 'read') {
            const target = Buffer.alloc(length + 7, 0x55);
            await exp.read(offset, length, target, 3);
            if (!target.subarray(3, 3 + length).equals(reference.subarray(offset,
              offset + length))) {
              throw new Error(`read mismatch at ${offset}+${length}`);
            }
            if (target[2] !== 0x55 || target[3 + length] !== 0x55) throw new Error('read overran');
          } else if (op.kind === 'write') {
            const data = pattern(length, op.seed);
            await exp.write(offset, data, { fua: op.fua });
            data.copy(reference, offset);
          } else if (op.kind === 'trim') {
            await exp.trim(offset, length, { fua: op.fua });
            reference.fill(0, offset, offset + length);
          } else {
            await exp.zero(offset, length, { fua: op.fua, mayTrim: op.mayTrim, fastOnly: false });
            reference.fill(0, offset, offset + length);
          }
        }
        const whole = Buffer.alloc(size);
        await exp.read(0, size, whole, 0);
        if (!whole.equals(reference)) throw new Error('final contents differ');
      } finally {
        await exp.close();
        await pool.close();
      }
      // bytes no extent covers are untouched
      const covered = layout.fileSizes.map((s) => new Uint8Array(s));
      for (const e of layout.extents) (covered[Number(e.path)] as Uint8Array).fill(1, e.offset,
        e.offset + e.length);
      layout.fileSizes.forEach((_, i) => {
        const bytes = fs.readFileSync(path.join(dir, String(i)));
        const mask = covered[i] as Uint8Array;
        for (let b = 0; b < bytes.length; b++) {
          if (mask[b] === 0 && bytes[b] !== FILL) {
            throw new Error(`stray byte in backing ${i} at ${b}`);
          }
        }
      });
      fs.rmSync(dir, { recursive: true });
    }),
    { numRuns: 50, seed: 20261125, endOnFailure: true },
  );
  t.pass('50 runs matched the reference');
});

t.test('concurrent non-overlapping requests give the same result as the reference', async (t) => {
  const root = t.testdir();
  let run = 0;
  const batchArb = fc.array(
    fc.record({
      kind: fc.constantFrom<'write' | 'zero' | 'trim'>('write', 'write', 'zero', 'trim'),
      span: fc.integer({ min: 1, max: 200_000 }),
      fua: fc.boolean(),
      seed: fc.nat(),
    }),
    { minLength: 2, maxLength: 24 },
  );
  await fc.assert(
    fc.asyncProperty(layoutArb(), fc.array(batchArb, { minLength: 1, maxLength: 4 }),
      async (layout, batches) => {
        const dir = path.join(root, String(run++));
        fs.mkdirSync(dir);
        const extents = layout.extents.map((e) => ({ ...e, path: path.join(dir, e.path) }));
        layout.fileSizes.forEach((size, i) =>
          fs.writeFileSync(path.join(dir, String(i)), Buffer.alloc(size, FILL)));
        const size = extents.reduce((sum, e) => sum + e.length, 0);
        const reference = Buffer.alloc(size, FILL);
        const pool = new BackingPool();
        const exp = await openExport({ name: 'd/c', description: '', mode: 'w', size, extents,
          pool });
        try {
          for (const batch of batches) {
            // lay the requests end to end (wrapping), so none overlaps another in the batch
            const requests: Promise<void>[] = [];
            let cursor = batch[0] === undefined ? 0 : batch[0].seed % size;
            let used = 0;
            for (const op of batch) {
              const length = Math.min(op.span, size - cursor, size - used);
              if (length <= 0) break;
              const offset = cursor;
              if (op.kind === 'write') {
                const data = pattern(length, op.seed);
                data.copy(reference, offset);
                requests.push(exp.write(offset, data, { fua: op.fua }));
              } else if (op.kind === 'zero') {
                reference.fill(0, offset, offset + length);
                requests.push(exp.zero(offset, length, { fua: op.fua, mayTrim: true,
                  fastOnly: false }));
              } else {
                reference.fill(0, offset, offset + length);
                requests.push(exp.trim(offset, length, { fua: op.fua }));
              }
              used += length;
              cursor = (offset + length) % size;
            }
            requests.push(exp.flush());
            await Promise.all(requests);
            const chunks: Promise<void>[] = [];
            const whole = Buffer.alloc(size);
            for (let at = 0; at < size; at += 100_003) {
              chunks.push(exp.read(at, Math.min(100_003, size - at), whole, at));
            }
            await Promise.all(chunks);
            if (!whole.equals(reference)) {
              throw new Error('contents differ after a concurrent batch');
            }
          }
        } finally {
          await exp.close();
          await pool.close();
        }
        fs.rmSync(dir, { recursive: true });
      }),
    { numRuns: 20, seed: 4242, endOnFailure: true },
  );
  t.pass('20 runs of concurrent batches matched the reference');
});

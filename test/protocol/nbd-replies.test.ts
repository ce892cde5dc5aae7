/**
 * Reply encoder properties (reliability-anchors 6.3 #37): for any tiling of a READ into data and
 * zero pieces, the chunks stay inside the request, cover it exactly once in order, and only
 * the last carries DONE; block-status runs from the Export are clipped to the request.
 */
import fc from 'fast-check';
import t from 'tap';
import {
  READ_DATA_OFFSET_STRUCTURED, clipStatusRuns, sparseReadChunks,
} from '../../src/nbd/replies';

const pieceLists = fc.array(fc.record({ length: fc.integer({ min: 1, max: 20_000 }),
  isZero: fc.boolean() }), { minLength: 1, maxLength: 12 });

t.test('sparse READ chunks tile the request exactly, in order, DONE only on the last', (t) => {
  fc.assert(fc.property(pieceLists, fc.integer({ min: 0, max: 2 ** 40 }), (raw, offset) => {
    let cursor = 0;
    const pieces = raw.map((piece) => {
      const placed = { offset: cursor, length: piece.length, isZero: piece.isZero };
      cursor += piece.length;
      return placed;
    });
    const length = cursor;
    const frame = Buffer.alloc(READ_DATA_OFFSET_STRUCTURED + length);
    const chunks = sparseReadChunks(frame, pieces, 0, 1, offset, length);
    if (chunks === null) return false;
    let expected = offset;
    let index = 0;
    let chunkCount = 0;
    let doneCount = 0;
    while (index < chunks.length) {
      const header = chunks[index]!;
      const flags = header.readUInt16BE(4);
      const type = header.readUInt16BE(6);
      const chunkOffset = Number(header.readBigUInt64BE(20));
      if (chunkOffset !== expected) return false;
      if ((flags & 1) !== 0) doneCount++;
      chunkCount++;
      if (type === 2) {
        expected += header.readUInt32BE(28);
        index += 1;
      } else {
        const data = chunks[index + 1]!;
        if (header.readUInt32BE(16) !== 8 + data.length) return false;
        expected += data.length;
        index += 2;
      }
      if ((flags & 1) !== 0 && index !== chunks.length) return false;
    }
    return expected === offset + length && doneCount === 1 && chunkCount >= 1;
  }), { numRuns: 500 });
  t.end();
});

t.test('pieces that do not tile the request are rejected', (t) => {
  const frame = Buffer.alloc(READ_DATA_OFFSET_STRUCTURED + 100);
  t.equal(sparseReadChunks(frame, [{ offset: 0, length: 50, isZero: false }], 0, 1, 0, 100),
    null);
  t.equal(sparseReadChunks(frame, [{ offset: 10, length: 90, isZero: false }], 0, 1, 0, 100),
    null);
  t.end();
});

t.test('block status runs larger than the request are clipped to it', (t) => {
  fc.assert(fc.property(fc.array(fc.integer({ min: -5, max: 2 ** 33 }), { maxLength: 8 }),
    fc.integer({ min: 1, max: 2 ** 32 - 1 }), (lengths, requested) => {
      const runs = clipStatusRuns(lengths.map((length) => ({ length, isHole: false,
        isZero: false })), requested);
      const total = runs.reduce((sum, run) => sum + run.length, 0);
      return total <= requested && runs.every((run) => run.length > 0 && run.length < 2 ** 32);
    }), { numRuns: 500 });
  t.end();
});

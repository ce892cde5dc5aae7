// The data-path thread's request checks (native/src/request.c, through sys.requestStep) against
// the JS side's (src/nbd/validate.ts's decodeRequest and validateRequest): the same
// seeded random headers, biased to the boundaries (export end, alignment, payload limit, 2^53,
// unknown commands and flags), and every header of the real sessions under
// fixtures/fuzz/native/seeds/, must get the same NBD errno from both; the thread must frame the
// stream as the JS side does (28 bytes, plus a WRITE's payload), hand the stream to JS where the
// JS side disconnects or closes (bad magic, DISC) and where it alone can frame (a WRITE above
// LIMITS.nbdPayloadMax), and serve only valid plain READs and WRITEs. The fixed corpus of
// fixtures/requests/ is test/unit/protocol-corpus.test.ts.
import t from 'tap';
import fc from 'fast-check';
import fs from 'node:fs';
import path from 'node:path';
import { LIMITS } from '../../src/limits';
import { NBD_CMD, REQUEST_LENGTH } from '../../src/nbd/constants';
import {
  type Request, type ValidateContext, decodeRequest, validateRequest,
} from '../../src/nbd/validate';
import * as sys from '../../src/sys/index';
import { REQUEST_MAGIC } from '../helpers/wire';

const SEEDS = path.join(__dirname, '..', '..', 'fixtures', 'fuzz', 'native', 'seeds');
const SAFE_MAX = BigInt(Number.MAX_SAFE_INTEGER);
const U64_MAX = (1n << 64n) - 1n;
const RUNS = 20_000;

interface Params {
  size: number;
  eflags: number;
  isStructured: boolean;
  hasBaseAllocation: boolean;
  blockSizeMin: number;
}

interface Header {
  magic: number;
  flags: number;
  type: number;
  offset: bigint;
  length: number;
}

function encode(header: Header): Buffer {
  const bytes = Buffer.alloc(REQUEST_LENGTH);
  bytes.writeUInt32BE(header.magic, 0);
  bytes.writeUInt16BE(header.flags, 4);
  bytes.writeUInt16BE(header.type, 6);
  bytes.writeBigUInt64BE(0x0102030405060708n, 8);
  bytes.writeBigUInt64BE(header.offset, 16);
  bytes.writeUInt32BE(header.length, 24);
  return bytes;
}

/** What the JS side does with a request header: the errno, or why it stops framing. */
type JsVerdict = { kind: 'errno'; errno: number; frameLength: number } |
  { kind: 'bad-magic' } | { kind: 'disc' } | { kind: 'oversize-write' };

function jsVerdict(bytes: Buffer, params: Params): JsVerdict {
  let request: Request;
  try {
    request = decodeRequest(bytes);
  } catch (error) {
    if ((error as { code?: string }).code === 'ERR_NBD_BAD_MAGIC') return { kind: 'bad-magic' };
    throw error;
  }
  if (request.type === NBD_CMD.DISC) return { kind: 'disc' };
  // above nbdPayloadMax only the JS side frames (discarding, or disconnecting above
  // nbdWriteDiscardMax): the thread hands the stream over
  if (request.type === NBD_CMD.WRITE && request.length > LIMITS.nbdPayloadMax) {
    return { kind: 'oversize-write' };
  }
  const context: ValidateContext = { ...params };
  const errno = validateRequest(request, context);
  const frameLength = REQUEST_LENGTH + (request.type === NBD_CMD.WRITE ? request.length : 0);
  return { kind: 'errno', errno, frameLength };
}

function nativeStep(bytes: Buffer, params: Params): sys.RequestStep {
  const options = (params.isStructured ? sys.REQUEST_STEP_OPTION.structured : 0) |
    (params.hasBaseAllocation ? sys.REQUEST_STEP_OPTION.baseAllocation : 0);
  return sys.requestStep(bytes, params.size, params.eflags, options, params.blockSizeMin);
}

/** '' when both sides agree on the header at the start of `bytes`, else what differs. */
function difference(bytes: Buffer, params: Params): string {
  const js = jsVerdict(bytes, params);
  const c = nativeStep(bytes, params);
  const S = sys.REQUEST_STEP;
  if (js.kind !== 'errno') {
    return c.kind === S.raw ? '' : `JS ${js.kind}, C step ${c.kind}`;
  }
  if (c.kind === S.raw) return `C raw, JS errno ${js.errno}`;
  if (c.errno !== js.errno) return `errno: C ${c.errno}, JS ${js.errno}`;
  if (c.frameLength !== js.frameLength) return `frame: C ${c.frameLength}, JS ${js.frameLength}`;
  const request = decodeRequest(bytes);
  const isPlain = request.flags === 0 &&
    (request.type === NBD_CMD.READ || request.type === NBD_CMD.WRITE);
  const expected = bytes.length < js.frameLength ? S.shortPayload
    : js.errno === 0 && isPlain ? S.serve : S.forward;
  return c.kind === expected ? '' : `step: C ${c.kind}, expected ${expected}`;
}

const paramsArb: fc.Arbitrary<Params> = fc.record({
  size: fc.oneof(fc.integer({ min: 0, max: 1 << 24 }),
    fc.constantFrom(0, 1, 4096, 1 << 30, Number.MAX_SAFE_INTEGER, 2 ** 52),
    fc.integer({ min: 0, max: Number.MAX_SAFE_INTEGER })),
  eflags: fc.oneof(fc.integer({ min: 0, max: 0xffff }), fc.constantFrom(0x0d6d, 0x0507, 0x0001)),
  isStructured: fc.boolean(),
  hasBaseAllocation: fc.boolean(),
  blockSizeMin: fc.integer({ min: 0, max: 16 }).map((log2) => 2 ** log2),
});

function headerArb(size: number, blockSizeMin: number): fc.Arbitrary<Header> {
  const block = BigInt(blockSizeMin);
  const end = BigInt(size);
  const offset = fc.oneof(
    fc.constantFrom(0n, end, end - block, end - 1n, end + 1n, SAFE_MAX, SAFE_MAX + 1n,
      SAFE_MAX - block + 1n, 1n << 53n, (1n << 53n) + block, U64_MAX, U64_MAX - block + 1n)
      .map((value) => (value < 0n ? 0n : value)),
    fc.bigInt({ min: 0n, max: end / block }).map((index) => index * block),
    fc.bigInt({ min: 0n, max: end + 8192n }),
    fc.bigInt({ min: 0n, max: U64_MAX }),
  );
  const length = fc.oneof(
    fc.constantFrom(0, 1, blockSizeMin, 2 * blockSizeMin, LIMITS.nbdPayloadMax,
      LIMITS.nbdPayloadMax + 1, LIMITS.nbdPayloadMax + blockSizeMin, 0xffffffff,
      LIMITS.nbdWriteDiscardMax, LIMITS.nbdWriteDiscardMax + 1),
    fc.integer({ min: 0, max: 64 }).map((count) => count * blockSizeMin),
    fc.integer({ min: 0, max: 0xffffffff }),
  );
  return fc.record({
    magic: fc.oneof({ weight: 20, arbitrary: fc.constant(REQUEST_MAGIC) },
      { weight: 1, arbitrary: fc.integer({ min: 0, max: 0xffffffff }) }),
    flags: fc.oneof(fc.integer({ min: 0, max: 31 }), fc.constant(0),
      fc.integer({ min: 0, max: 0xffff })),
    type: fc.oneof({ weight: 10, arbitrary: fc.integer({ min: 0, max: 7 }) },
      { weight: 1, arbitrary: fc.integer({ min: 8, max: 0xffff }) }),
    offset,
    length,
  });
}

const caseArb = paramsArb.chain((params) => fc.tuple(fc.constant(params),
  headerArb(params.size, params.blockSizeMin), fc.integer({ min: 0, max: 64 })));

// the addon is built in CI: without it these fail (requestStep throws), never skip
t.test('the native addon is loaded', (t) => {
  t.ok(sys.isNative, 'native addon not loaded: run `npm run build:native`');
  t.end();
});

t.test('C and JS give every seeded random request the same errno and framing', (t) => {
  let compared = 0;
  fc.assert(fc.property(caseArb, ([params, header, extra]) => {
    const frame = encode(header);
    // and with payload bytes after it (some, or all of a small WRITE's)
    const withPayload = Buffer.concat([frame, Buffer.alloc(extra, 0xa5)]);
    compared += 1;
    const found = difference(frame, params) || difference(withPayload, params);
    if (found !== '') {
      const shown = JSON.stringify({ ...header, offset: String(header.offset) });
      throw new Error(`${found} for ${shown} with ${JSON.stringify(params)}`);
    }
  }), { seed: 15, numRuns: RUNS });
  t.equal(compared, RUNS, `${RUNS} requests compared`);
  t.end();
});

t.test('C and JS agree on every request header of the recorded client sessions', (t) => {
  const files = fs.readdirSync(SEEDS).filter((name) => name.endsWith('.bin'));
  t.ok(files.length > 0, 'recorded sessions');
  let headers = 0;
  const differences: string[] = [];
  for (const name of files) {
    const seed = fs.readFileSync(path.join(SEEDS, name));
    // the preamble of native/fuzz/fuzz-request.c: options, eflags, log2(block), size, seed
    const params: Params = {
      isStructured: (seed[0]! & 1) !== 0,
      hasBaseAllocation: (seed[0]! & 2) !== 0,
      eflags: seed.readUInt16BE(1),
      blockSizeMin: 2 ** (seed[3]! % 17),
      size: Number(seed.readBigUInt64BE(4)),
    };
    let at = 13;
    while (seed.length - at >= REQUEST_LENGTH) {
      const bytes = seed.subarray(at);
      const found = difference(bytes, params);
      if (found !== '') differences.push(`${name}@${at}: ${found}`);
      headers += 1;
      const step = nativeStep(bytes, params);
      if (step.kind === sys.REQUEST_STEP.raw || step.kind === sys.REQUEST_STEP.shortPayload) break;
      at += step.frameLength;
    }
  }
  t.same(differences, [], `${headers} headers from ${files.length} sessions`);
  t.ok(headers >= files.length, 'at least one header per session');
  t.end();
});

t.test('requestStep: a stream shorter than a header, and bad arguments', (t) => {
  const frame = encode({ magic: REQUEST_MAGIC, flags: 0, type: 0, offset: 0n, length: 512 });
  for (let cut = 0; cut < REQUEST_LENGTH; cut++) {
    const step = sys.requestStep(frame.subarray(0, cut), 4096, 1, 0, 1);
    if (step.kind !== sys.REQUEST_STEP.shortHeader) t.fail(`cut at ${cut}: step ${step.kind}`);
  }
  t.same(sys.requestStep(frame, 4096, 1, 0, 1),
    { kind: sys.REQUEST_STEP.serve, frameLength: 28, errno: 0 }, 'whole: served');
  t.throws(() => sys.requestStep(frame, 4096, 1, 0, 0), 'a block size of 0 is refused');
  t.end();
});

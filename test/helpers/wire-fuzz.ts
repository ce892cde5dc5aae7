/**
 * wire-fuzz: the structure-aware generator and mutator of client byte streams for the wire
 * fuzzer (test/fuzz/wire-*.test.ts, scripts/fuzz.js), and the reproducer files it keeps.
 *
 * A stream is a list of steps a client performs on one connection: `send` (one write() call,
 * so a frame split over several sends arrives in pieces and a burst of frames in one), `settle`
 * (wait until the server stops answering, bounded), `stop-reading` / `resume-reading` (the
 * client stops taking replies), and `end` (half-close), `reset` (RST) or `destroy`.
 *
 * generateStream() builds a mutated valid session: client flags, options (every NBD_OPT and
 * unknown codes, with structured payloads that are then truncated, overlong or corrupted, and
 * claimed lengths drawn from 0..2^32-1 with weight on boundaries), usually a GO or EXPORT_NAME,
 * then requests (every NBD_CMD and unknown ones, flags, offsets and lengths on boundaries,
 * WRITE payloads short or long), delivered in bursts or split at random bytes, with pauses and
 * an abrupt end now and then. mutateStream() changes a corpus entry: bytes, 32-bit fields set
 * to boundaries, splits and merges of sends, steps dropped, duplicated or inserted, fresh frames
 * spliced in, and tails of other entries. Everything is drawn from a seeded PRNG (FuzzRandom),
 * so a seed replays the same streams.
 *
 * A reproducer is two files in fixtures/fuzz/wire/: `<name>.bin`, the bytes of every send in
 * order, and `<name>.json`, the steps (each send by its length), the target it ran against and
 * what went wrong.
 */
import fs from 'node:fs';
import path from 'node:path';

export type Step =
  | { op: 'send'; data: Buffer }
  | { op: 'settle' }
  | { op: 'stop-reading' }
  | { op: 'resume-reading' }
  | { op: 'end' }
  | { op: 'reset' }
  | { op: 'destroy' };

export interface FuzzStream {
  steps: Step[];
}

/** xoshiro128** over a 32-bit seed (splitmix32 expands it): fast, seedable, reproducible. */
export class FuzzRandom {
  private s0: number;
  private s1: number;
  private s2: number;
  private s3: number;

  constructor(seed: number) {
    let x = seed >>> 0;
    const next = (): number => {
      x = (x + 0x9e3779b9) >>> 0;
      let z = x;
      z = Math.imul(z ^ (z >>> 16), 0x85ebca6b) >>> 0;
      z = Math.imul(z ^ (z >>> 13), 0xc2b2ae35) >>> 0;
      return (z ^ (z >>> 16)) >>> 0;
    };
    this.s0 = next();
    this.s1 = next();
    this.s2 = next();
    this.s3 = next() | 1;
  }

  /** A uniform 32-bit unsigned integer. */
  u32(): number {
    const result = Math.imul(rotl(Math.imul(this.s1, 5), 7), 9) >>> 0;
    const t = (this.s1 << 9) >>> 0;
    this.s2 ^= this.s0;
    this.s3 ^= this.s1;
    this.s1 ^= this.s2;
    this.s0 ^= this.s3;
    this.s2 ^= t;
    this.s3 = rotl(this.s3, 11);
    return result;
  }

  /** An integer in [0, bound). */
  below(bound: number): number {
    return bound <= 1 ? 0 : Math.floor((this.u32() / 2 ** 32) * bound);
  }

  chance(probability: number): boolean {
    return this.u32() / 2 ** 32 < probability;
  }

  pick<T>(items: readonly T[]): T {
    return items[this.below(items.length)]!;
  }

  bytes(length: number): Buffer {
    const out = Buffer.allocUnsafe(length);
    for (let at = 0; at < length; at++) out[at] = this.u32() & 0xff;
    return out;
  }
}

function rotl(x: number, k: number): number {
  return ((x << k) | (x >>> (32 - k))) >>> 0;
}

/** What the generator knows of the server it aims at. */
export interface FuzzProfile {
  /** export names that exist (the first is writable and served by every target) */
  names: readonly string[];
  /** sizes of those exports, for offsets near their ends */
  sizes: readonly number[];
}

const KiB = 1024;
const MiB = 1024 * KiB;

/** 32-bit values where parsers break: around powers of two, limits and signedness. */
const BOUNDARY_U32 = [
  0, 1, 2, 3, 4, 7, 8, 9, 15, 16, 17, 255, 256, 511, 512, 513, 4095, 4096, 4097, 65_535,
  65_536, 65_537, 0x7fff, 0x8000, 0xffff, 0x10000, 256 * KiB, MiB - 1, MiB, MiB + 1,
  32 * MiB - 1, 32 * MiB, 32 * MiB + 1, 64 * MiB, 64 * MiB + 1, 0x7fffffff, 0x80000000,
  0x80000001, 0xfffffffe, 0xffffffff,
] as const;

/** A claimed length in 0..2^32-1, weighted towards boundaries and small values. */
export function claimedLength(random: FuzzRandom): number {
  const roll = random.below(10);
  if (roll < 4) return random.pick(BOUNDARY_U32);
  if (roll < 8) return random.below(4097);
  return random.u32();
}

const OPT = {
  EXPORT_NAME: 1, ABORT: 2, LIST: 3, STARTTLS: 5, INFO: 6, GO: 7, STRUCTURED_REPLY: 8,
  LIST_META_CONTEXT: 9, SET_META_CONTEXT: 10, EXTENDED_HEADERS: 11,
} as const;
const OPTION_CODES = Object.values(OPT);
const REQUEST_MAGIC = 0x25609513;
const CMD_COUNT = 8;
const CMD_DISC = 2;
const CMD_WRITE = 1;
/** the flags proto.md defines (FUA, NO_HOLE, DF, REQ_ONE, FAST_ZERO, PAYLOAD_LEN) */
const CMD_FLAGS = [1, 2, 4, 8, 16, 32] as const;
const META_QUERIES = ['base:allocation', 'base:', 'base:allocation:x', '', 'qemu:dirty-bitmap:a',
  'qemu:', 'x'] as const;

function u16(value: number): Buffer {
  const out = Buffer.alloc(2);
  out.writeUInt16BE(value & 0xffff);
  return out;
}

function u32(value: number): Buffer {
  const out = Buffer.alloc(4);
  out.writeUInt32BE(value >>> 0);
  return out;
}

function exportName(random: FuzzRandom, profile: FuzzProfile): Buffer {
  const roll = random.below(12);
  if (roll < 8) return Buffer.from(random.pick(profile.names));
  if (roll === 8) return Buffer.alloc(0);
  if (roll === 9) return Buffer.from('no-such-export');
  if (roll === 10) return Buffer.alloc(4097 + random.below(3), 0x61);
  return random.bytes(random.below(40)); // not UTF-8, NULs, anything
}

/** name length, name, then `tail` (INFO/GO: info requests; META: queries). */
function namedPayload(random: FuzzRandom, profile: FuzzProfile, tail: Buffer): Buffer {
  const name = exportName(random, profile);
  const nameLength = random.chance(0.9) ? name.length : claimedLength(random);
  return Buffer.concat([u32(nameLength), name, tail]);
}

function infoRequests(random: FuzzRandom): Buffer {
  const count = random.chance(0.8) ? random.below(5) : claimedLength(random) & 0xffff;
  const listed = Math.min(count, 8);
  const infos = Array.from({ length: listed }, () => u16(random.chance(0.8)
    ? random.below(4) : random.u32()));
  return Buffer.concat([u16(count), ...infos]);
}

function metaQueries(random: FuzzRandom): Buffer {
  const count = random.chance(0.85) ? random.below(4) : claimedLength(random);
  const parts = [u32(count)];
  for (let index = 0; index < Math.min(count, 6); index++) {
    const query = Buffer.from(random.pick(META_QUERIES));
    parts.push(u32(random.chance(0.9) ? query.length : claimedLength(random)), query);
  }
  return Buffer.concat(parts);
}

function optionPayload(random: FuzzRandom, profile: FuzzProfile, option: number,
  isBig: boolean): Buffer {
  if (isBig && random.chance(0.8)) return Buffer.alloc(random.pick(BIG_OPTION_LENGTHS));
  switch (option) {
    case OPT.EXPORT_NAME:
      return exportName(random, profile);
    case OPT.INFO:
    case OPT.GO:
      return namedPayload(random, profile, infoRequests(random));
    case OPT.LIST_META_CONTEXT:
    case OPT.SET_META_CONTEXT:
      return namedPayload(random, profile, metaQueries(random));
    default:
      if (random.chance(0.8)) return Buffer.alloc(0);
      return random.chance(0.5) ? Buffer.alloc(random.pick([16, 4096, 65_536, 65_537]))
        : random.bytes(random.below(64));
  }
}

/** Option payload lengths that make the receive arena grow (up to LIMITS.nbdOptionLengthMax). */
const BIG_OPTION_LENGTHS = [4096, 32 * KiB, 64 * KiB - 1, 64 * KiB, 64 * KiB, 64 * KiB] as const;

/** One option frame: a valid one most of the time, then lengths and bytes go wrong. */
export function optionFrame(random: FuzzRandom, profile: FuzzProfile, code?: number,
  isBig = false): Buffer {
  const option = code ?? (random.chance(0.85) ? random.pick(OPTION_CODES)
    : random.chance(0.5) ? random.below(64) : random.u32());
  let payload = optionPayload(random, profile, option, isBig);
  let claimed = payload.length;
  const roll = random.below(20);
  if (roll === 0) claimed = claimedLength(random); // a lie about the length
  else if (roll === 1) payload = payload.subarray(0, random.below(payload.length + 1));
  else if (roll === 2) payload = Buffer.concat([payload, random.bytes(1 + random.below(32))]);
  else if (roll === 3 && payload.length > 0) {
    payload = Buffer.from(payload);
    payload[random.below(payload.length)] = random.u32() & 0xff;
  }
  const magic = random.chance(0.97) ? Buffer.from('IHAVEOPT') : random.chance(0.5)
    ? Buffer.from('IHAVEOPU') : random.bytes(8);
  return Buffer.concat([magic, u32(option), u32(claimed), payload]);
}

function requestOffset(random: FuzzRandom, size: number, length: number): bigint {
  const roll = random.below(12);
  if (roll < 6) return BigInt(random.below(Math.max(1, size - Math.min(length, size))));
  if (roll < 8) return BigInt(Math.max(0, size - random.below(4097)));
  if (roll === 8) return BigInt(size + random.below(4097));
  if (roll === 9) return BigInt(random.below(size)) & ~511n;
  if (roll === 10) return random.pick([2n ** 53n, 2n ** 63n - 1n, 2n ** 63n, 2n ** 64n - 1n]);
  return (BigInt(random.u32()) << 32n) | BigInt(random.u32());
}

function requestLength(random: FuzzRandom, size: number): number {
  const roll = random.below(10);
  if (roll < 5) return 1 + random.below(Math.min(size, 64 * KiB));
  if (roll < 7) return random.pick([512, 4096, 65_536, 131_072]);
  return claimedLength(random);
}

export interface RequestSpec {
  type: number;
  flags: number;
  cookie: bigint;
  offset: bigint;
  length: number;
}

export function encodeRequest(spec: RequestSpec, magic = REQUEST_MAGIC): Buffer {
  const header = Buffer.alloc(28);
  header.writeUInt32BE(magic >>> 0, 0);
  header.writeUInt16BE(spec.flags & 0xffff, 4);
  header.writeUInt16BE(spec.type & 0xffff, 6);
  header.writeBigUInt64BE(BigInt.asUintN(64, spec.cookie), 8);
  header.writeBigUInt64BE(BigInt.asUintN(64, spec.offset), 16);
  header.writeUInt32BE(spec.length >>> 0, 24);
  return header;
}

/** WRITE payloads sent in full up to this; a longer claimed length sends a prefix only. */
const WRITE_SENT_MAX = 256 * KiB;

/** One request frame (a WRITE with its payload, whole, short or long). */
export function requestFrame(random: FuzzRandom, profile: FuzzProfile, cookie: bigint,
  size: number): Buffer {
  const type = random.chance(0.92) ? random.below(CMD_COUNT) : random.chance(0.5)
    ? CMD_COUNT + random.below(8) : random.u32() & 0xffff;
  const flagRoll = random.below(10);
  const flags = flagRoll < 5 ? 0 : flagRoll < 9 ? random.pick(CMD_FLAGS)
    : random.u32() & 0xffff;
  const length = requestLength(random, size);
  const offset = requestOffset(random, size, length);
  const spec = { type, flags, cookie, offset, length };
  const magic = random.chance(0.98) ? REQUEST_MAGIC : random.u32();
  const header = encodeRequest(spec, magic);
  if (type !== CMD_WRITE) return header;
  let sent = Math.min(length, WRITE_SENT_MAX);
  if (random.chance(0.05)) sent = random.below(sent + 1); // truncated
  const payload = random.chance(0.5) ? Buffer.alloc(sent, random.u32() & 0xff)
    : random.bytes(Math.min(sent, 4 * KiB));
  const body = payload.length === sent ? payload
    : Buffer.concat([payload, Buffer.alloc(sent - payload.length)]);
  return Buffer.concat([header, body]);
}

function clientFlags(random: FuzzRandom): Buffer {
  const roll = random.below(20);
  if (roll < 16) return u32(3);
  if (roll < 18) return u32(random.below(4));
  return u32(random.chance(0.5) ? 1 << random.below(32) : random.u32());
}

/**
 * A frame the server must close the connection for: a bad option or request magic, an option
 * over LIMITS.nbdOptionLengthMax, a WRITE over nbdWriteDiscardMax, unknown client flags.
 */
function violation(random: FuzzRandom): Buffer {
  switch (random.below(5)) {
    case 0:
      return Buffer.concat([Buffer.from('IHAVEOPU'), u32(random.u32()), u32(0)]);
    case 1:
      return Buffer.concat([Buffer.from('IHAVEOPT'), u32(random.below(16)),
        u32(64 * KiB + 1 + random.below(64 * KiB))]);
    case 2:
      return encodeRequest({ type: random.below(8), flags: 0, cookie: 1n, offset: 0n,
        length: 4096 }, random.u32());
    case 3:
      return encodeRequest({ type: CMD_WRITE, flags: 0, cookie: 1n, offset: 0n,
        length: 64 * MiB + 1 + random.below(MiB) });
    default:
      return u32(0x80000000 | random.u32());
  }
}

/** The frames of a session and where a settle must precede one (by frame index). */
interface Session {
  frames: Buffer[];
  settleBefore: Set<number>;
}

/**
 * The frames of a session: handshake, usually transmission, in order. A quarter of sessions
 * send big options (the receive arena grows); a third break the protocol somewhere, often right
 * after the options and after their replies came, with a flood of bytes right behind the
 * violation (the server goes on reading into a connection it has closed).
 */
function sessionFrames(random: FuzzRandom, profile: FuzzProfile): Session {
  const isBig = random.chance(0.25);
  const { frames, optionsEnd } = sessionFramesValid(random, profile, isBig);
  const settleBefore = new Set<number>();
  if (random.chance(0.35)) {
    const at = random.chance(0.5) ? optionsEnd : 1 + random.below(frames.length);
    frames.splice(at, frames.length - at, violation(random), flood(random));
    if (random.chance(0.6)) settleBefore.add(at);
  }
  return { frames, settleBefore };
}

function sessionFramesValid(random: FuzzRandom, profile: FuzzProfile, isBig: boolean,
): { frames: Buffer[]; optionsEnd: number } {
  const frames: Buffer[] = [clientFlags(random)];
  const optionCount = random.chance(0.03) ? 60 + random.below(10)
    : isBig ? 1 + random.below(4) : random.below(5);
  for (let index = 0; index < optionCount; index++) {
    frames.push(optionFrame(random, profile, undefined, isBig));
  }
  const optionsEnd = frames.length;
  if (random.chance(0.25)) return { frames, optionsEnd }; // the handshake never finishes
  const which = random.below(profile.names.length);
  const name = Buffer.from(profile.names[which]!);
  const size = profile.sizes[which]!;
  if (random.chance(0.2)) {
    frames.push(Buffer.concat([Buffer.from('IHAVEOPT'), u32(OPT.EXPORT_NAME), u32(name.length),
      name]));
  } else {
    const go = Buffer.concat([u32(name.length), name, infoRequests(random)]);
    frames.push(Buffer.concat([Buffer.from('IHAVEOPT'), u32(OPT.GO), u32(go.length), go]));
  }
  const requestCount = random.chance(0.1) ? 80 + random.below(80) : random.below(24);
  let cookie = BigInt(random.u32());
  for (let index = 0; index < requestCount; index++) {
    cookie = random.chance(0.95) ? cookie + 1n : cookie;
    frames.push(requestFrame(random, profile, cookie, size));
  }
  if (random.chance(0.3)) frames.push(encodeRequest({ type: CMD_DISC, flags: 0, cookie,
    offset: 0n, length: 0 }));
  return { frames, optionsEnd };
}

/** Many bytes at once, mostly more than a receive read (LIMITS.nbdRecvReadMin) takes. */
function flood(random: FuzzRandom): Buffer {
  const length = random.chance(0.7) ? 128 * KiB + random.below(256 * KiB)
    : random.below(128 * KiB);
  return random.chance(0.7) ? Buffer.alloc(length) : random.bytes(length);
}

/** Bytes with no structure: zeros or noise, up to a few hundred KiB. */
function garbage(random: FuzzRandom): Buffer {
  const length = random.pick([8, 16, 28, 4096, 65_536, 200 * KiB, 300 * KiB]) +
    random.below(64);
  return random.chance(0.7) ? Buffer.alloc(length) : random.bytes(length);
}

/** How frames go on the wire: bursts, splits at random bytes, pauses, an abrupt end. */
function deliver(random: FuzzRandom, session: Session): Step[] {
  const { frames, settleBefore } = session;
  const steps: Step[] = [];
  let burst: Buffer[] = [];
  const flush = (): void => {
    if (burst.length > 0) steps.push({ op: 'send', data: Buffer.concat(burst) });
    burst = [];
  };
  const settleAfter = random.chance(0.6) ? 0.5 : 0.05;
  for (const [index, frame] of frames.entries()) {
    if (settleBefore.has(index)) {
      flush();
      steps.push({ op: 'settle' });
    }
    if (random.chance(0.1) && frame.length > 1) {
      flush();
      const cut = 1 + random.below(frame.length - 1);
      steps.push({ op: 'send', data: frame.subarray(0, cut) });
      if (random.chance(0.3)) steps.push({ op: 'settle' });
      burst.push(frame.subarray(cut));
    } else {
      burst.push(frame);
    }
    if (random.chance(0.02)) burst.push(garbage(random));
    if (!random.chance(0.4)) flush();
    // mostly between options: requests are pipelined
    if (random.chance(index < 8 ? settleAfter : settleAfter / 8)) {
      flush();
      steps.push({ op: 'settle' });
    }
    if (random.chance(0.02)) steps.push({ op: 'stop-reading' });
  }
  flush();
  if (random.chance(0.05)) steps.push({ op: 'send', data: garbage(random) });
  const roll = random.below(10);
  if (roll < 3) steps.push({ op: 'end' });
  else if (roll === 3) steps.push({ op: 'reset' });
  else if (roll === 4) steps.push({ op: 'destroy' });
  return steps;
}

export function generateStream(random: FuzzRandom, profile: FuzzProfile): FuzzStream {
  return { steps: deliver(random, sessionFrames(random, profile)) };
}

const CONTROL_STEPS: readonly Step[] = [{ op: 'settle' }, { op: 'stop-reading' },
  { op: 'resume-reading' }, { op: 'end' }, { op: 'reset' }, { op: 'destroy' }];

/** The indices of steps that send bytes. */
function sendIndices(steps: readonly Step[]): number[] {
  return steps.flatMap((step, index) => (step.op === 'send' ? [index] : []));
}

function mutateBytes(random: FuzzRandom, steps: Step[]): void {
  const sends = sendIndices(steps);
  if (sends.length === 0) return;
  const index = random.pick(sends);
  const step = steps[index] as { op: 'send'; data: Buffer };
  const data = Buffer.from(step.data);
  if (data.length === 0) return;
  const at = random.below(data.length);
  const roll = random.below(4);
  if (roll === 0) data[at] = random.u32() & 0xff;
  else if (roll === 1) data[at] = (data[at]! ^ (1 << random.below(8))) & 0xff;
  else if (roll === 2 && at + 4 <= data.length) data.writeUInt32BE(claimedLength(random), at);
  else if (roll === 3) {
    steps[index] = { op: 'send', data: Buffer.concat([data.subarray(0, at),
      random.chance(0.5) ? Buffer.alloc(0) : random.bytes(1 + random.below(16)),
      data.subarray(Math.min(data.length, at + random.below(16)))]) };
    return;
  }
  steps[index] = { op: 'send', data };
}

function mutateSteps(random: FuzzRandom, steps: Step[], profile: FuzzProfile): void {
  const at = random.below(steps.length + 1);
  switch (random.below(8)) {
    case 0: { // split a send
      const sends = sendIndices(steps);
      if (sends.length === 0) return;
      const index = random.pick(sends);
      const data = (steps[index] as { data: Buffer }).data;
      if (data.length < 2) return;
      const cut = 1 + random.below(data.length - 1);
      steps.splice(index, 1, { op: 'send', data: data.subarray(0, cut) },
        { op: 'send', data: data.subarray(cut) });
      return;
    }
    case 1: { // merge two sends
      const sends = sendIndices(steps);
      const index = random.pick(sends);
      const next = sends.find((candidate) => candidate > index);
      if (index === undefined || next === undefined) return;
      const merged = Buffer.concat([(steps[index] as { data: Buffer }).data,
        (steps[next] as { data: Buffer }).data]);
      steps.splice(next, 1);
      steps[index] = { op: 'send', data: merged };
      return;
    }
    case 2:
      if (steps.length > 1) steps.splice(random.below(steps.length), 1);
      return;
    case 3:
      if (steps.length > 0) steps.splice(at, 0, steps[random.below(steps.length)]!);
      return;
    case 4:
      steps.splice(at, 0, random.pick(CONTROL_STEPS));
      return;
    case 5: {
      const size = profile.sizes[0]!;
      const frame = random.chance(0.5) ? optionFrame(random, profile)
        : requestFrame(random, profile, BigInt(random.u32()), size);
      steps.splice(at, 0, { op: 'send', data: frame });
      return;
    }
    case 6: // the stream breaks here, after the replies so far came, and floods
      steps.splice(at, steps.length - at, { op: 'settle' },
        { op: 'send', data: Buffer.concat([violation(random), flood(random)]) });
      return;
    default:
      steps.splice(at, 0, { op: 'send', data: garbage(random) });
  }
}

/** Steps a stream may hold at most (a mutated stream is cut there). */
const STEPS_MAX = 400;

/** A mutant of `parent`; `donor` (another corpus entry) may give it its tail. */
export function mutateStream(random: FuzzRandom, parent: FuzzStream, profile: FuzzProfile,
  donor: FuzzStream | null): FuzzStream {
  const steps = [...parent.steps];
  const count = 1 + random.below(4);
  for (let round = 0; round < count; round++) {
    if (donor !== null && random.chance(0.1)) {
      const cut = random.below(steps.length + 1);
      steps.splice(cut, steps.length - cut, ...donor.steps.slice(random.below(
        donor.steps.length + 1)));
    } else if (random.chance(0.5)) {
      mutateBytes(random, steps);
    } else {
      mutateSteps(random, steps, profile);
    }
  }
  return { steps: steps.slice(0, STEPS_MAX) };
}

export function streamBytes(stream: FuzzStream): number {
  return stream.steps.reduce((sum, step) => sum + (step.op === 'send' ? step.data.length : 0), 0);
}

// --- reproducer files ---

export type StepRecord = { op: 'send'; length: number } | { op: Exclude<Step['op'], 'send'> };

export interface ReproducerMeta {
  /** the target it failed on (driver's target names) */
  target: string;
  /** what went wrong the first time */
  verdict: string;
  detail: string;
  seed?: number;
  steps: StepRecord[];
}

export function saveReproducer(dir: string, name: string, stream: FuzzStream,
  meta: Omit<ReproducerMeta, 'steps'>): string {
  fs.mkdirSync(dir, { recursive: true });
  const steps: StepRecord[] = stream.steps.map((step) => step.op === 'send'
    ? { op: 'send', length: step.data.length } : { op: step.op });
  const bytes = Buffer.concat(stream.steps.flatMap((step) =>
    step.op === 'send' ? [step.data] : []));
  fs.writeFileSync(path.join(dir, `${name}.bin`), bytes);
  fs.writeFileSync(path.join(dir, `${name}.json`),
    `${JSON.stringify({ ...meta, steps }, null, 1)}\n`);
  return path.join(dir, `${name}.json`);
}

export function loadReproducer(jsonPath: string): { meta: ReproducerMeta; stream: FuzzStream } {
  const meta = JSON.parse(fs.readFileSync(jsonPath, 'utf8')) as ReproducerMeta;
  const bytes = fs.readFileSync(jsonPath.replace(/\.json$/, '.bin'));
  let at = 0;
  const steps: Step[] = meta.steps.map((record) => {
    if (record.op !== 'send') return { op: record.op };
    const data = bytes.subarray(at, at + record.length);
    at += record.length;
    return { op: 'send', data };
  });
  if (at !== bytes.length) throw new Error(`${jsonPath}: steps cover ${at} of ${bytes.length}`);
  return { meta, stream: { steps } };
}

/** The reproducers in `dir` (their .json paths), sorted. */
export function listReproducers(dir: string): string[] {
  if (!fs.existsSync(dir)) return [];
  return fs.readdirSync(dir).filter((name) => name.endsWith('.json')).sort()
    .map((name) => path.join(dir, name));
}

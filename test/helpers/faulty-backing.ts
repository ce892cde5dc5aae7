/**
 * faulty-backing: a Backing wrapper that injects failures per operation, for engine fault tests.
 *
 * Faults are scripted (`failNext(op, fault, count)`, `failAlways(op, fault)`) or random with a
 * seeded PRNG (`rates`: probability per call of each op), so every run is reproducible. A fault is
 * an errno name ('EIO', 'ENOSPC', ...), delivered the way the real call would deliver it (callback
 * error for read/write, IoError rejection for the rest), or 'short': read/write transfer only part
 * of the request (at least one byte) and report the short count.
 */
import { IoError } from '../../src/errors';
import type { Backing, BackingRun, ByteCountCallback } from '../../src/backing/backing';

export type FaultOp = 'read' | 'write' | 'sync' | 'zero' | 'trim' | 'blockStatus';
export type Fault = string; // an errno name, or 'short'

export interface FaultyBackingOptions {
  seed?: number;
  /** probability in [0, 1] that a call of the op fails with `randomFault` */
  rates?: Partial<Record<FaultOp, number>>;
  /** what a random failure is (default 'EIO') */
  randomFault?: Fault;
}

export class FaultyBacking implements Backing {
  readonly injected: Record<FaultOp, number> = {
    read: 0, write: 0, sync: 0, zero: 0, trim: 0, blockStatus: 0,
  };
  private readonly scripted = new Map<FaultOp, { fault: Fault; count: number }>();
  private state: number;

  constructor(readonly inner: Backing, private readonly options: FaultyBackingOptions = {}) {
    this.state = (options.seed ?? 1) >>> 0 || 1;
  }

  get path(): string { return this.inner.path; }
  get kind(): Backing['kind'] { return this.inner.kind; }
  get isWritable(): boolean { return this.inner.isWritable; }
  get sizeBytes(): number { return this.inner.sizeBytes; }
  get sectorSize(): number { return this.inner.sectorSize; }
  get canTrim(): boolean { return this.inner.canTrim; }
  /** -1: every write goes through write(), where faults are injected */
  readonly batchFd = -1;
  readonly sendFd = -1;

  /** The next `count` calls of `op` fail with `fault`. */
  failNext(op: FaultOp, fault: Fault, count = 1): void {
    this.scripted.set(op, { fault, count });
  }

  /** Every later call of `op` fails with `fault` until clear(). */
  failAlways(op: FaultOp, fault: Fault): void {
    this.scripted.set(op, { fault, count: Number.POSITIVE_INFINITY });
  }

  clear(): void {
    this.scripted.clear();
  }

  read(buffer: Buffer, bufferOffset: number, length: number, position: number,
    callback: ByteCountCallback): void {
    const fault = this.take('read');
    if (fault === null) return this.inner.read(buffer, bufferOffset, length, position, callback);
    if (fault === 'short') {
      return this.inner.read(buffer, bufferOffset, this.shortLength(length), position, callback);
    }
    process.nextTick(callback, errnoError(fault, 'read'), 0);
  }

  write(buffer: Buffer, bufferOffset: number, length: number, position: number,
    callback: ByteCountCallback): void {
    const fault = this.take('write');
    if (fault === null) return this.inner.write(buffer, bufferOffset, length, position, callback);
    if (fault === 'short') {
      return this.inner.write(buffer, bufferOffset, this.shortLength(length), position, callback);
    }
    process.nextTick(callback, errnoError(fault, 'write'), 0);
  }

  async sync(): Promise<void> {
    this.check('sync');
    return this.inner.sync();
  }

  async zero(offset: number, length: number, mayTrim: boolean, fastOnly: boolean): Promise<void> {
    this.check('zero');
    return this.inner.zero(offset, length, mayTrim, fastOnly);
  }

  async trim(offset: number, length: number): Promise<void> {
    this.check('trim');
    return this.inner.trim(offset, length);
  }

  async blockStatus(offset: number, length: number, runsMax: number): Promise<BackingRun[]> {
    this.check('blockStatus');
    return this.inner.blockStatus(offset, length, runsMax);
  }

  close(): Promise<void> {
    return this.inner.close();
  }

  private check(op: FaultOp): void {
    const fault = this.take(op);
    if (fault !== null) throw IoError.fromSystem(errnoError(fault === 'short' ? 'EIO' : fault, op),
      op);
  }

  private take(op: FaultOp): Fault | null {
    const script = this.scripted.get(op);
    if (script !== undefined) {
      script.count--;
      if (script.count <= 0) this.scripted.delete(op);
      this.injected[op]++;
      return script.fault;
    }
    const rate = this.options.rates?.[op] ?? 0;
    if (rate > 0 && this.random() < rate) {
      this.injected[op]++;
      return this.options.randomFault ?? 'EIO';
    }
    return null;
  }

  private shortLength(length: number): number {
    return length <= 1 ? length : 1 + Math.floor(this.random() * (length - 1));
  }

  /** xorshift32 in [0, 1) */
  private random(): number {
    let x = this.state;
    x ^= x << 13; x >>>= 0;
    x ^= x >>> 17;
    x ^= x << 5; x >>>= 0;
    this.state = x;
    return x / 2 ** 32;
  }
}

function errnoError(code: string, syscall: string): NodeJS.ErrnoException {
  return Object.assign(new Error(`${syscall}: ${code}: injected fault`), { code, syscall });
}

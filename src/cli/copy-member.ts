/**
 * copy-member: how `xvd import` and `xvd export` (copy.ts) reach a pool member's bytes: a file or
 * block device through one descriptor and synchronous positioned I/O, as before; an RBD image
 * (`rbd:POOL/IMAGE`) through an RbdBacking, whose calls are asynchronous (librbd aio). Both
 * answer the same four calls; MemberCache keeps one per path and closes them all.
 *   read(buffer, position)     fills buffer (zeros past the end of a file)
 *   write(buffer, position)    writes all of buffer
 *   dataRuns(start, end)       the runs of [start, end) that may hold data (all of it when
 *                              unknown): SEEK_DATA/SEEK_HOLE, or what RBD knows
 *   sync()                     fdatasync, or a librbd flush
 */
import fs from 'node:fs';
import { openRbdBacking, isRbdPath, type RbdBacking } from '../backing/rbd-backing';
import { IoError } from '../errors';
import { dataRuns } from '../sys';

export interface MemberIo {
  read(buffer: Buffer, position: number): Promise<void>;
  write(buffer: Buffer, position: number): Promise<void>;
  dataRuns(start: number, end: number): Promise<[number, number][]>;
  sync(): Promise<void>;
  close(): Promise<void>;
}

/** Half-open data runs of `fd` within [start, end); the whole range when holes are unknown. */
export async function fdDataRuns(fd: number, start: number, end: number,
): Promise<[number, number][]> {
  try {
    const found = await dataRuns(fd, start, end, Number.MAX_SAFE_INTEGER);
    return found.map((run): [number, number] => [run.start, Math.min(end, run.end)]);
  } catch {
    return [[start, end]];
  }
}

export function readFully(fd: number, buffer: Buffer, position: number): void {
  let done = 0;
  while (done < buffer.length) {
    const count = fs.readSync(fd, buffer, done, buffer.length - done, position + done);
    if (count === 0) buffer.fill(0, done); // past EOF of a file reads as zeros
    if (count === 0) return;
    done += count;
  }
}

export function writeFully(fd: number, buffer: Buffer, position: number): void {
  let done = 0;
  while (done < buffer.length) {
    done += fs.writeSync(fd, buffer, done, buffer.length - done, position + done);
  }
}

function fdMember(path: string, flags: number): MemberIo {
  const fd = fs.openSync(path, flags);
  return {
    read: async (buffer, position) => readFully(fd, buffer, position),
    write: async (buffer, position) => writeFully(fd, buffer, position),
    dataRuns: (start, end) => fdDataRuns(fd, start, end),
    sync: async () => fs.fdatasyncSync(fd),
    close: async () => fs.closeSync(fd),
  };
}

function rbdCall(backing: RbdBacking, op: 'read' | 'write', buffer: Buffer, position: number,
): Promise<void> {
  return new Promise((resolve, reject) => {
    backing[op](buffer, 0, buffer.length, position, (error, bytes) => {
      if (error !== null) reject(IoError.fromSystem(error, op));
      else if (bytes !== buffer.length) {
        reject(new IoError('EIO', op, `${op}: EIO: ${backing.path}: ${bytes} of ${buffer.length}`));
      } else resolve();
    });
  });
}

async function rbdMember(path: string, isWritable: boolean): Promise<MemberIo> {
  const backing = await openRbdBacking(path, isWritable ? 'w' : 'r');
  return {
    read: (buffer, position) => rbdCall(backing, 'read', buffer, position),
    write: (buffer, position) => rbdCall(backing, 'write', buffer, position),
    dataRuns: async (start, end) => {
      const runs = await backing.blockStatus(start, end - start, 1 << 16);
      const found: [number, number][] = [];
      let at = start;
      for (const run of runs) {
        if (!run.isHole) found.push([at, at + run.length]);
        at += run.length;
      }
      if (at < end) found.push([at, end]); // the answer stopped short: the rest is unknown
      return found;
    },
    sync: () => backing.sync(),
    close: () => backing.close(),
  };
}

/** One MemberIo per path, opened on first use; closeAll syncs them first when asked. */
export class MemberCache {
  private readonly members = new Map<string, Promise<MemberIo>>();
  constructor(private readonly isWritable: boolean) {}

  get(path: string): Promise<MemberIo> {
    let member = this.members.get(path);
    if (member === undefined) {
      const flags = this.isWritable ? fs.constants.O_WRONLY : fs.constants.O_RDONLY;
      member = isRbdPath(path) ? rbdMember(path, this.isWritable)
        : Promise.resolve().then(() => fdMember(path, flags));
      this.members.set(path, member);
    }
    return member;
  }

  async closeAll(isSync: boolean): Promise<void> {
    const opened = [...this.members.values()];
    this.members.clear();
    let failure: unknown = null;
    for (const settled of await Promise.allSettled(opened)) {
      if (settled.status !== 'fulfilled') continue;
      try {
        if (isSync) await settled.value.sync();
      } catch (error) {
        failure ??= error;
      } finally {
        await settled.value.close();
      }
    }
    if (failure !== null) throw failure as Error;
  }
}

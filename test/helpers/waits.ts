/**
 * test/helpers/waits: bounded waiting for tests of threads and sockets: a promise raced against
 * a deadline, a condition polled until a deadline, a reading polled until it stops changing, and
 * the count of sockets this process holds twice (a native sender or data-path thread keeps a dup
 * of its connection's socket).
 */
import fs from 'node:fs';

/** `promise`, or a rejection naming `what` once timeoutMs passed. */
export function bounded<T>(promise: Promise<T>, timeoutMs: number, what: string): Promise<T> {
  let timer: NodeJS.Timeout | undefined;
  const timeout = new Promise<never>((_resolve, reject) => {
    timer = setTimeout(() => reject(new Error(`${what}: not done in ${timeoutMs} ms`)),
      timeoutMs);
  });
  return Promise.race([promise, timeout]).finally(() => clearTimeout(timer));
}

/** Polls `condition` every 20 ms for at most timeoutMs; its last answer. */
export async function eventually(condition: () => boolean, timeoutMs = 5000): Promise<boolean> {
  const deadline = Date.now() + timeoutMs;
  while (!condition() && Date.now() < deadline) {
    await new Promise((resolve) => setTimeout(resolve, 20));
  }
  return condition();
}

export interface StableOptions {
  /** the same reading this many polls in a row counts as stable */
  polls?: number;
  intervalMs?: number;
  timeoutMs?: number;
}

/**
 * Polls `read` (numbers a server reports) until it gave the same values `polls` times in a row,
 * for at most timeoutMs; the last reading and whether it was stable. A test that judges what a
 * server holds asserts on a stable reading, not on one taken after a fixed sleep.
 */
export async function untilStable(read: () => readonly number[], options: StableOptions = {},
): Promise<{ values: readonly number[]; isStable: boolean }> {
  const polls = options.polls ?? 10;
  const intervalMs = options.intervalMs ?? 50;
  const deadline = Date.now() + (options.timeoutMs ?? 20_000);
  let values = read();
  let same = 1;
  while (same < polls && Date.now() < deadline) {
    await new Promise((resolve) => setTimeout(resolve, intervalMs));
    const next = read();
    same = next.every((value, index) => value === values[index]) ? same + 1 : 1;
    values = next;
  }
  return { values, isStable: same >= polls };
}

/** Socket inodes of this process held by two descriptors or more: one per live thread. */
export function duplicatedSockets(): number {
  const counts = new Map<string, number>();
  for (const name of fs.readdirSync('/proc/self/fd')) {
    let target: string;
    try {
      target = fs.readlinkSync(`/proc/self/fd/${name}`);
    } catch {
      continue; // the directory's own descriptor, already closed
    }
    if (target.startsWith('socket:')) counts.set(target, (counts.get(target) ?? 0) + 1);
  }
  return [...counts.values()].filter((count) => count > 1).length;
}

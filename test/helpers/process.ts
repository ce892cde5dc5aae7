/**
 * Small helpers for tests that run servers as child processes: a free loopback port, a short
 * temporary directory for Unix sockets (sun_path holds 108 bytes and t.testdir() paths are
 * longer), stopping a child with SIGTERM, and whether loop devices can be used here.
 */
import { execFileSync, type ChildProcess } from 'node:child_process';
import fs from 'node:fs';
import net from 'node:net';
import os from 'node:os';
import path from 'node:path';

interface Teardown {
  teardown(fn: () => void | Promise<void>): void;
}

/** A TCP port on 127.0.0.1 that was free a moment ago. */
export function freePort(): Promise<number> {
  return new Promise((resolve, reject) => {
    const server = net.createServer();
    server.once('error', reject);
    server.listen(0, '127.0.0.1', () => {
      const address = server.address();
      server.close(() => {
        if (address !== null && typeof address !== 'string') resolve(address.port);
        else reject(new Error('no port'));
      });
    });
  });
}

/** A new directory under the system tmpdir, removed in teardown: room for a Unix socket. */
export function shortTempDir(t: Teardown, prefix = 'xvd-'): string {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), prefix));
  t.teardown(() => fs.rmSync(dir, { recursive: true, force: true }));
  return dir;
}

/** Sends SIGTERM and resolves when the child has exited (at once if it already has). */
export function stopChild(child: ChildProcess): Promise<void> {
  if (child.exitCode !== null || child.signalCode !== null) return Promise.resolve();
  return new Promise((resolve) => {
    child.once('exit', () => resolve());
    child.kill('SIGTERM');
  });
}

/** Why loop devices cannot be used here (not root, no losetup), or null when they can. */
export function loopUnavailable(): string | null {
  if (process.getuid?.() !== 0) return 'needs root for losetup';
  try {
    execFileSync('losetup', ['--version'], { stdio: 'ignore' });
    return null;
  } catch {
    return 'losetup not installed';
  }
}

/**
 * wire-fuzz-stdio: the wire fuzzer's `xvd serve --stdio` target. Each stream is one spawned
 * process of the built CLI on a catalog made with the catalog API (serve-catalog.ts: VDs
 * attached as 1/xvda, 1/xvdb); the stream's bytes go to its stdin, replies come from its
 * stdout. `end` closes stdin, `reset` and `destroy` destroy it, `stop-reading` pauses stdout.
 *
 * Oracle: once stdin is closed (and stdout read) the process exits within STDIO_EXIT_MS, with
 * code 0 and no signal; stderr holds only pino JSON lines (an uncaught exception prints plain
 * text), none at error or fatal level; the replies are valid NBD (wire-fuzz-replies.ts).
 */
import { spawn } from 'node:child_process';
import { ensureBuilt, MAIN } from './cli';
import { DISK_BYTES, makeServedCatalog } from './serve-catalog';
import type { FuzzProfile, FuzzStream } from './wire-fuzz';
import { conversationContext, settle, watchPeer, type Outcome } from './wire-fuzz-driver';
import { checkConversation } from './wire-fuzz-replies';

export const STDIO_PROFILE: FuzzProfile = {
  names: ['1/xvda', '1/xvdb', '2/xvda'],
  sizes: [DISK_BYTES, DISK_BYTES, DISK_BYTES],
};

/** A process must exit this long after its stdin closed (Node and SQLite start included). */
export const STDIO_EXIT_MS = 20_000;
const PINO_ERROR_LEVEL = 50;

/** Builds dist/ if stale and makes a catalog with two served VDs in `dir`. */
export async function prepareStdio(dir: string): Promise<string> {
  ensureBuilt();
  return makeServedCatalog(dir, 2);
}

/** Why stderr shows a fault (a non-JSON line or one at error level), or null. */
function stderrFault(stderr: string): string | null {
  for (const line of stderr.split('\n')) {
    if (line.trim() === '') continue;
    let level: unknown;
    try {
      level = (JSON.parse(line) as { level?: unknown }).level;
    } catch {
      return `stderr: ${line.slice(0, 300)}`;
    }
    if (typeof level === 'number' && level >= PINO_ERROR_LEVEL) {
      return `logged at level ${level}: ${line.slice(0, 600)}`;
    }
  }
  return null;
}

export async function runStdioStream(catalog: string, stream: FuzzStream): Promise<Outcome> {
  const child = spawn(process.execPath, [MAIN, '--catalog', catalog, 'serve', '--stdio'], {
    env: { ...process.env, XVD_LOG_LEVEL: 'warn' }, stdio: ['pipe', 'pipe', 'pipe'],
  });
  const peer = watchPeer(child.stdout);
  let stderr = '';
  child.stderr.setEncoding('utf8').on('data', (chunk: string) => (stderr += chunk));
  child.stdin.on('error', () => undefined);
  const exited = new Promise<{ code: number | null; signal: NodeJS.Signals | null }>(
    (resolve) => child.on('exit', (code, signal) => resolve({ code, signal })));
  const sent: Buffer[] = [];
  for (const step of stream.steps) {
    if (child.stdin.destroyed || child.exitCode !== null) break;
    if (step.op === 'send') {
      if (!child.stdin.writable) continue;
      child.stdin.write(step.data);
      sent.push(step.data);
      await new Promise((resolve) => setImmediate(resolve));
    } else if (step.op === 'settle') {
      await settle(peer);
    } else if (step.op === 'stop-reading') {
      child.stdout.pause();
    } else if (step.op === 'resume-reading') {
      child.stdout.resume();
    } else if (step.op === 'end') {
      child.stdin.end();
    } else {
      child.stdin.destroy();
    }
  }
  child.stdout.resume();
  if (!child.stdin.destroyed) child.stdin.end();
  let timer: NodeJS.Timeout | undefined;
  const result = await Promise.race([exited, new Promise<null>((resolve) => {
    timer = setTimeout(() => resolve(null), STDIO_EXIT_MS);
  })]);
  clearTimeout(timer);
  const outcome = (verdict: Outcome['verdict'], detail: string): Outcome =>
    ({ verdict, detail, replyBytes: peer.receivedBytes });
  if (result === null) {
    child.kill('SIGKILL');
    await exited;
    return outcome('hang', `xvd serve --stdio still running ${STDIO_EXIT_MS} ms after stdin ` +
      'closed');
  }
  if (!peer.isClosed) await new Promise((resolve) => child.stdout.once('close', resolve));
  const fault = stderrFault(stderr);
  if (result.code !== 0 || result.signal !== null || fault !== null) {
    return outcome('crash', `exit ${result.code} signal ${result.signal}; ${fault ?? ''} ` +
      stderr.slice(-1000));
  }
  const why = checkConversation(Buffer.concat(sent), Buffer.concat(peer.received),
    conversationContext(STDIO_PROFILE.sizes));
  return why === null ? outcome('ok', '') : outcome('bad-reply', why);
}

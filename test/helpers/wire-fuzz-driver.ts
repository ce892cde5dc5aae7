/**
 * wire-fuzz-driver: runs fuzz streams (wire-fuzz.ts) against real servers over real sockets and
 * judges each one; collects block coverage of src/nbd/** with node:inspector; the AFL-like loop
 * (campaign) that keeps streams which reached new blocks and mutates from them.
 *
 * Targets: an in-process NbdServer reading into arenas (TCP on 127.0.0.1 and a Unix socket),
 * one with receive 'stream' (TCP), and one with TLS PSK (mode 'on', so STARTTLS is acknowledged
 * and the client's plaintext then meets the TLS handshake). Each exports `disk` (memory, writable),
 * `file` (an extent export over two files: the data-path thread serves it on the arena server)
 * and `ro` (memory, read-only). `xvd serve --stdio` is a target of its own (wire-fuzz-stdio.ts).
 *
 * Oracle per stream: no uncaught exception or unhandled rejection (the caller installs
 * process hooks that call noteFault()); server.stats.connectionFaults, when the server has
 * that counter, stays 0; once the client ended (after reading every reply) the server closes
 * the connection within closeDeadlineMs, and connectionsOpen is back to 0 (else: a hang);
 * every reply frame is valid NBD (wire-fuzz-replies.ts); a well-behaved client is still served.
 */
import crypto from 'node:crypto';
import fs from 'node:fs';
import { Session } from 'node:inspector/promises';
import net from 'node:net';
import os from 'node:os';
import path from 'node:path';
import { BackingPool } from '../../src/backing/pool';
import { openExport, type ExtentExport } from '../../src/engine/extent-export';
import { LIMITS } from '../../src/limits';
import { createServer, type NbdServer, type NbdServerOptions } from '../../src/nbd/index';
import { checkHealthy, createFixedProvider, memoryDisk, quietLog } from './nbd-client';
import { bounded } from './waits';
import {
  FuzzRandom, generateStream, mutateStream, saveReproducer, streamBytes, type FuzzProfile,
  type FuzzStream,
} from './wire-fuzz';
import { checkConversation, type ConversationContext } from './wire-fuzz-replies';

const KiB = 1024;
const MiB = 1024 * KiB;
export const DISK_BYTES = MiB;
export const RO_BYTES = 256 * KiB;
const FILE_EXTENT_BYTES = 320 * KiB;
export const FILE_EXPORT_BYTES = 4 * FILE_EXTENT_BYTES;
export const PROFILE: FuzzProfile = {
  names: ['disk', 'file', 'ro'],
  sizes: [DISK_BYTES, FILE_EXPORT_BYTES, RO_BYTES],
};

/** A settle step waits until replies pause this long... */
const SETTLE_QUIET_MS = 8;
/** ...or at most this long. */
const SETTLE_MAX_MS = 300;
/** After the client ended (and reads everything), the server must close within this. */
export const CLOSE_DEADLINE_MS = 5000;
/** A stream's steps take at most this long (settles are bounded; this catches the rest). */
const STEPS_DEADLINE_MS = 20_000;
const HEALTH_DEADLINE_MS = 10_000;
const CONNECT_DEADLINE_MS = 10_000;

export type Verdict = 'ok' | 'crash' | 'fault' | 'hang' | 'leak' | 'bad-reply' | 'unhealthy';

export interface Outcome {
  verdict: Verdict;
  detail: string;
  replyBytes: number;
}

export function conversationContext(sizes: readonly number[]): ConversationContext {
  return { sizes: new Set(sizes.map(BigInt)), optionLengthMax: LIMITS.nbdOptionLengthMax,
    optionCountMax: LIMITS.nbdOptionCountMax, writeDiscardMax: LIMITS.nbdWriteDiscardMax };
}

// --- faults seen by the process hooks ---

const faults: string[] = [];

/** For process 'uncaughtException' / 'unhandledRejection' hooks: blames the current stream. */
export function noteFault(kind: string, error: unknown): void {
  const text = error instanceof Error ? error.stack ?? error.message : String(error);
  faults.push(`${kind}: ${text}`);
}

/** Notes the process's uncaught exceptions and unhandled rejections (noteFault) until `t` ends. */
export function watchProcessFaults(t: { teardown(fn: () => void): void }): void {
  const onException = (error: unknown): void => noteFault('uncaughtException', error);
  const onRejection = (error: unknown): void => noteFault('unhandledRejection', error);
  process.on('uncaughtException', onException);
  process.on('unhandledRejection', onRejection);
  t.teardown(() => {
    process.off('uncaughtException', onException);
    process.off('unhandledRejection', onRejection);
  });
}

// --- the in-process servers ---

interface Harness {
  server: NbdServer;
  port: number;
  socketPath: string;
  close(): Promise<void>;
}

export type ServerKind = 'arena' | 'stream' | 'tls';

async function fileExport(dir: string): Promise<{ exp: ExtentExport; pool: BackingPool }> {
  const files = ['a.img', 'b.img'].map((name) => path.join(dir, name));
  for (const file of files) fs.writeFileSync(file, crypto.randomBytes(3 * FILE_EXTENT_BYTES));
  const extents = [0, 1, 2, 3].map((index) => ({ path: files[index % 2]!,
    offset: 4096 * (index + 1) + FILE_EXTENT_BYTES * Math.floor(index / 2) + 17 * index,
    length: FILE_EXTENT_BYTES }));
  const pool = new BackingPool();
  const exp = await openExport({ name: 'file', description: 'files', mode: 'w',
    size: FILE_EXPORT_BYTES, extents, pool });
  return { exp, pool };
}

const TLS_PSK = new Map([['domain-1', Buffer.alloc(32, 7)]]);

async function startHarness(kind: ServerKind): Promise<Harness> {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'xvd-fuzz-'));
  const { exp, pool } = await fileExport(dir);
  const options: NbdServerOptions = {
    provider: createFixedProvider([memoryDisk('disk', DISK_BYTES), exp,
      memoryDisk('ro', RO_BYTES, true)]),
    log: quietLog,
    receive: kind === 'arena' ? 'arena' : 'stream',
    ...(kind === 'tls' ? { tls: { mode: 'on', psk: TLS_PSK } } : {}),
  };
  const server = createServer(options);
  const address = await server.listen({ host: '127.0.0.1', port: 0 });
  const socketPath = path.join(dir, 'nbd.sock');
  await server.listen({ path: socketPath });
  return {
    server, socketPath, port: typeof address === 'string' ? 0 : address.port,
    close: async () => {
      await server.close({ graceMs: 1000 });
      await exp.close();
      await pool.close();
      fs.rmSync(dir, { recursive: true, force: true });
    },
  };
}

export interface Target {
  readonly name: string;
  readonly kind: ServerKind;
  readonly transport: 'tcp' | 'unix';
}

const TCP_ARENA: Target = { name: 'tcp-arena', kind: 'arena', transport: 'tcp' };
const UNIX_ARENA: Target = { name: 'unix-arena', kind: 'arena', transport: 'unix' };

/** The rotation of targets: arenas (the default, with the data-path thread) twice as often. */
export const TARGETS: readonly Target[] = [
  TCP_ARENA, UNIX_ARENA, { name: 'tcp-stream', kind: 'stream', transport: 'tcp' },
  TCP_ARENA, UNIX_ARENA, { name: 'tcp-tls', kind: 'tls', transport: 'tcp' },
];

/** The servers behind the targets, started on first use and restarted after a failure. */
export class Servers {
  private readonly harnesses = new Map<ServerKind, Harness>();

  async of(kind: ServerKind): Promise<Harness> {
    const existing = this.harnesses.get(kind);
    if (existing !== undefined) return existing;
    const harness = await startHarness(kind);
    this.harnesses.set(kind, harness);
    return harness;
  }

  /** Drops a server whose state a failure may have broken (its close is bounded). */
  async restart(kind: ServerKind): Promise<void> {
    const harness = this.harnesses.get(kind);
    this.harnesses.delete(kind);
    if (harness !== undefined) {
      await bounded(harness.close(), 10_000, 'fuzz server close').catch(() => undefined);
    }
  }

  async closeAll(): Promise<void> {
    for (const kind of [...this.harnesses.keys()]) await this.restart(kind);
  }
}

// --- one stream ---

function connectTo(harness: Harness, transport: 'tcp' | 'unix'): Promise<net.Socket> {
  return new Promise((resolve, reject) => {
    const socket = transport === 'tcp'
      ? net.connect({ port: harness.port, host: '127.0.0.1', noDelay: true, allowHalfOpen: true })
      : net.connect({ path: harness.socketPath, allowHalfOpen: true });
    socket.once('connect', () => {
      socket.off('error', reject);
      socket.on('error', () => undefined);
      resolve(socket);
    });
    socket.once('error', reject);
  });
}

function sleep(ms: number): Promise<void> {
  return new Promise((resolve) => setTimeout(resolve, ms));
}

/** Polls `condition` every 5 ms until it holds or deadlineMs passed; its last answer. */
async function pollUntil(condition: () => boolean, deadlineMs: number): Promise<boolean> {
  const deadline = Date.now() + deadlineMs;
  while (!condition() && Date.now() < deadline) await sleep(5);
  return condition();
}

/** How long until `condition` held (polled), or null when it did not within deadlineMs. */
async function timeUntil(condition: () => boolean, deadlineMs: number): Promise<number | null> {
  const start = Date.now();
  return (await pollUntil(condition, deadlineMs)) ? Date.now() - start : null;
}

/** A client side of one connection: what it received and whether the server closed. */
export interface Peer {
  received: Buffer[];
  receivedBytes: number;
  isClosed: boolean;
  /** the server ended its side (FIN) or the socket closed */
  isEnded: boolean;
}

export function watchPeer(socket: net.Socket | NodeJS.ReadableStream): Peer {
  const peer: Peer = { received: [], receivedBytes: 0, isClosed: false, isEnded: false };
  socket.on('data', (chunk: Buffer) => {
    peer.received.push(chunk);
    peer.receivedBytes += chunk.length;
  });
  socket.on('end', () => (peer.isEnded = true));
  socket.on('close', () => {
    peer.isEnded = true;
    peer.isClosed = true;
  });
  return peer;
}

/** Waits until no reply bytes arrived for SETTLE_QUIET_MS (at most SETTLE_MAX_MS). */
export async function settle(peer: Peer): Promise<void> {
  const deadline = Date.now() + SETTLE_MAX_MS;
  let seen = -1;
  while (Date.now() < deadline && !peer.isEnded && seen !== peer.receivedBytes) {
    seen = peer.receivedBytes;
    await sleep(SETTLE_QUIET_MS);
  }
}

/** Plays the steps on `socket`; returns the bytes it wrote (all of them, in order). */
async function playSteps(socket: net.Socket, peer: Peer, stream: FuzzStream,
  transport: 'tcp' | 'unix'): Promise<Buffer[]> {
  const sent: Buffer[] = [];
  const deadline = Date.now() + STEPS_DEADLINE_MS;
  for (const step of stream.steps) {
    if (socket.destroyed || Date.now() > deadline) break;
    switch (step.op) {
      case 'send':
        if (!socket.writable) break;
        socket.write(step.data);
        sent.push(step.data);
        await new Promise((resolve) => setImmediate(resolve));
        break;
      case 'settle':
        await settle(peer);
        break;
      case 'stop-reading':
        socket.pause();
        break;
      case 'resume-reading':
        socket.resume();
        break;
      case 'end':
        socket.end();
        break;
      case 'reset':
        if (transport === 'tcp') socket.resetAndDestroy();
        else socket.destroy();
        break;
      case 'destroy':
        socket.destroy();
        break;
    }
  }
  return sent;
}

function statsFaults(server: NbdServer): number {
  const stats = server.stats as unknown as Record<string, unknown>;
  // the counter of contained internal exceptions, once the server has it
  return 'connectionFaults' in stats ? Number(stats['connectionFaults']) : 0;
}

/** Runs one stream against `target` and judges it (see the header). */
export async function runStream(servers: Servers, target: Target, stream: FuzzStream,
  options: { checkHealth?: boolean } = {}): Promise<Outcome> {
  const harness = await servers.of(target.kind);
  const faultsBefore = statsFaults(harness.server);
  faults.length = 0;
  let socket: net.Socket;
  try {
    socket = await bounded(connectTo(harness, target.transport), CONNECT_DEADLINE_MS, 'connect');
  } catch (error) {
    return { verdict: 'unhealthy', detail: `no connection: ${String(error)}`, replyBytes: 0 };
  }
  const peer = watchPeer(socket);
  const sent = await playSteps(socket, peer, stream, target.transport);
  socket.resume();
  if (!socket.destroyed && !socket.writableEnded) socket.end();
  const replies = (): Buffer => Buffer.concat(peer.received);
  const isDestroyedByClient = stream.steps.some((step) =>
    step.op === 'reset' || step.op === 'destroy');
  const isClosed = await pollUntil(() => (peer.isEnded || socket.destroyed) &&
    harness.server.stats.connectionsOpen === 0, CLOSE_DEADLINE_MS);
  socket.destroy();
  const outcome = (verdict: Verdict, detail: string): Outcome =>
    ({ verdict, detail, replyBytes: peer.receivedBytes });
  await sleep(0);
  if (faults.length > 0) return outcome('crash', faults.join('\n'));
  if (statsFaults(harness.server) > faultsBefore) {
    return outcome('fault', `connectionFaults ${statsFaults(harness.server)}`);
  }
  if (!isClosed) {
    // a leak never closes; a hang may close at a later deadline (the handshake's)
    const closedAfterMs = await timeUntil(() => harness.server.stats.connectionsOpen === 0,
      LIMITS.nbdHandshakeTimeoutMs + 2000);
    return outcome(closedAfterMs === null ? 'leak' : 'hang', `connection still open ` +
      `${CLOSE_DEADLINE_MS} ms after the client ${isDestroyedByClient ? 'left' : 'ended'}; ` +
      (closedAfterMs === null ? 'never closed' : `closed ${closedAfterMs} ms later`));
  }
  const why = checkConversation(Buffer.concat(sent), replies(),
    conversationContext(PROFILE.sizes));
  if (why !== null) return outcome('bad-reply', why);
  if (options.checkHealth === true) {
    const isHealthy = await bounded(checkHealthy(harness.port), HEALTH_DEADLINE_MS, 'health')
      .catch(() => false);
    if (!isHealthy) return outcome('unhealthy', 'a well-behaved client was not served');
  }
  return outcome('ok', '');
}

// --- coverage ---

export interface CoverageSummary {
  blocksCovered: number;
  blocksSeen: number;
  functionsCovered: number;
  functionsSeen: number;
  /** per file of src/nbd: "blocks covered/seen" */
  byFile: Record<string, string>;
}

interface V8Range {
  startOffset: number;
  endOffset: number;
  count: number;
}

/** AFL's hit-count buckets: 1, 2, 3, 4-7, 8-15, 16-31, 32-127, 128+. */
function bucketOf(count: number): number {
  if (count <= 3) return 1 << (count - 1);
  if (count < 8) return 8;
  if (count < 16) return 16;
  if (count < 32) return 32;
  return count < 128 ? 64 : 128;
}

/** Block coverage of src/nbd/** in this process (node:inspector precise coverage). */
export class Coverage {
  private readonly session = new Session();
  /** block key → buckets of hit counts seen (0: seen, never covered) */
  private readonly blocks = new Map<string, number>();
  private readonly functions = new Map<string, boolean>();

  async start(): Promise<void> {
    this.session.connect();
    await this.session.post('Profiler.enable');
    await this.session.post('Profiler.startPreciseCoverage', { callCount: true, detailed: true });
  }

  /** Takes (and resets) the counts; returns how many blocks or buckets were new. */
  async take(): Promise<number> {
    const { result } = await this.session.post('Profiler.takePreciseCoverage');
    let novel = 0;
    for (const script of result) {
      if (!script.url.includes('/src/nbd/')) continue;
      const file = script.url.slice(script.url.indexOf('/src/nbd/') + 1);
      for (const fn of script.functions) {
        const whole = fn.ranges[0] as V8Range | undefined;
        if (whole === undefined) continue;
        const fnKey = `${file}:${whole.startOffset}`;
        if (whole.count > 0) this.functions.set(fnKey, true);
        else if (!this.functions.has(fnKey)) this.functions.set(fnKey, false);
        for (const range of fn.ranges as V8Range[]) {
          const key = `${file}:${range.startOffset}:${range.endOffset}`;
          const known = this.blocks.get(key);
          const bucket = range.count > 0 ? bucketOf(range.count) : 0;
          if (known === undefined || (known | bucket) !== known) {
            if (bucket !== 0) novel += 1;
            this.blocks.set(key, (known ?? 0) | bucket);
          }
        }
      }
    }
    return novel;
  }

  summary(): CoverageSummary {
    const covered = [...this.blocks.values()].filter((buckets) => buckets !== 0).length;
    const functionsCovered = [...this.functions.values()].filter(Boolean).length;
    const files = new Map<string, [number, number]>();
    for (const [key, buckets] of this.blocks) {
      const file = key.slice(0, key.indexOf(':'));
      const counts = files.get(file) ?? [0, 0];
      files.set(file, [counts[0] + (buckets !== 0 ? 1 : 0), counts[1] + 1]);
    }
    const byFile = Object.fromEntries([...files].sort()
      .map(([file, [hit, seen]]) => [file, `${hit}/${seen}`]));
    return { blocksCovered: covered, blocksSeen: this.blocks.size, functionsCovered,
      functionsSeen: this.functions.size, byFile };
  }

  async stop(): Promise<void> {
    await this.session.post('Profiler.stopPreciseCoverage');
    this.session.disconnect();
  }
}

// --- minimizing a failing stream ---

/** Trials a minimization may run, and its time. */
const MINIMIZE_TRIALS_MAX = 300;
const MINIMIZE_MS = 60_000;

/**
 * Greedy delta debugging: drops steps (from the end) and shortens sends while the stream still
 * fails the same way on `target`; the smallest stream found.
 */
export async function minimizeStream(servers: Servers, target: Target, stream: FuzzStream,
  verdict: Verdict): Promise<FuzzStream> {
  let best = stream;
  let trials = 0;
  const deadline = Date.now() + MINIMIZE_MS;
  const fails = async (candidate: FuzzStream): Promise<boolean> => {
    trials += 1;
    const outcome = await runStream(servers, target, candidate);
    if (outcome.verdict !== 'ok') await servers.restart(target.kind);
    return outcome.verdict === verdict;
  };
  const isSpent = (): boolean => trials >= MINIMIZE_TRIALS_MAX || Date.now() > deadline;
  for (let index = best.steps.length - 1; index >= 0 && !isSpent(); index--) {
    const candidate = { steps: best.steps.filter((_, at) => at !== index) };
    if (await fails(candidate)) best = candidate;
  }
  for (let index = 0; index < best.steps.length && !isSpent(); index++) {
    const step = best.steps[index]!;
    if (step.op !== 'send') continue;
    for (let length = step.data.length >> 1; length > 0 && !isSpent(); length >>= 1) {
      const steps = [...best.steps];
      steps[index] = { op: 'send', data: step.data.subarray(0, length) };
      if (!(await fails({ steps }))) break;
      best = { steps };
    }
  }
  return best;
}

// --- the campaign ---

export interface CampaignOptions {
  seed: number;
  /** stop after this many streams... */
  streamsMax: number;
  /** ...or this long */
  durationMs: number;
  targets?: readonly Target[];
  /** where reproducers go (fixtures/fuzz/wire in a long campaign) */
  reproducerDir: string;
  /** a well-behaved client is checked after every n-th stream (and after a failure) */
  healthEvery?: number;
  /** failing streams are minimized before they are saved (up to a minute each) */
  minimize?: boolean;
  /** called after each stream (progress output) */
  onStream?: (index: number, target: Target, outcome: Outcome) => void;
}

export interface Finding {
  target: string;
  verdict: Verdict;
  detail: string;
  file: string;
}

export interface CampaignResult {
  streams: Record<string, number>;
  bytesSent: number;
  corpus: number;
  coverage: CoverageSummary;
  findings: Finding[];
}

const CORPUS_MAX = 2000;

/**
 * The AFL-like loop: a fresh stream half of the time (always while the corpus is empty),
 * otherwise a mutant of a corpus entry; streams that reached new blocks join the corpus.
 * Failures become reproducer files; the server that failed is restarted.
 */
export async function runCampaign(options: CampaignOptions): Promise<CampaignResult> {
  const random = new FuzzRandom(options.seed);
  const targets = options.targets ?? TARGETS;
  const servers = new Servers();
  const coverage = new Coverage();
  const corpus: FuzzStream[] = [];
  const streams: Record<string, number> = Object.fromEntries(targets.map((t) => [t.name, 0]));
  const findings: Finding[] = [];
  let bytesSent = 0;
  await coverage.start();
  const deadline = Date.now() + options.durationMs;
  try {
    for (let index = 0; index < options.streamsMax && Date.now() < deadline; index++) {
      const target = targets[index % targets.length]!;
      const parent = corpus.length === 0 || random.chance(0.5) ? null : random.pick(corpus);
      const stream = parent === null ? generateStream(random, PROFILE)
        : mutateStream(random, parent, PROFILE, corpus.length > 1 ? random.pick(corpus) : null);
      const isHealthTurn = (index + 1) % (options.healthEvery ?? 8) === 0;
      const outcome = await runStream(servers, target, stream, { checkHealth: isHealthTurn });
      streams[target.name] = (streams[target.name] ?? 0) + 1;
      bytesSent += streamBytes(stream);
      if ((await coverage.take()) > 0 && corpus.length < CORPUS_MAX) corpus.push(stream);
      options.onStream?.(index, target, outcome);
      if (outcome.verdict === 'ok') continue;
      await servers.restart(target.kind);
      const saved = options.minimize === true
        ? await minimizeStream(servers, target, stream, outcome.verdict) : stream;
      const name = `${outcome.verdict}-${target.name}-s${options.seed}-${index}`;
      const file = saveReproducer(options.reproducerDir, name, saved, { target: target.name,
        verdict: outcome.verdict, detail: outcome.detail.slice(0, 2000), seed: options.seed });
      findings.push({ target: target.name, verdict: outcome.verdict, detail: outcome.detail,
        file });
    }
  } finally {
    await coverage.stop();
    await servers.closeAll();
  }
  return { streams, bytesSent, corpus: corpus.length, coverage: coverage.summary(), findings };
}

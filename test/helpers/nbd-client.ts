/**
 * nbd-client: a small scripted NBD client for protocol and error tests (raw frames, every read
 * bounded by a timeout), a fixed-map ExportProvider over in-memory exports, and helpers that
 * start a server on 127.0.0.1:<ephemeral>, a Unix socket, or an in-memory stream pair.
 */
import { execFile } from 'node:child_process';
import fs from 'node:fs';
import net from 'node:net';
import os from 'node:os';
import path from 'node:path';
import { PassThrough, type Readable, type Writable } from 'node:stream';
import pino from 'pino';
import type { Export } from '../../src/engine/export';
import { createServer, type NbdServer, type NbdServerOptions } from '../../src/nbd/index';
import type { Domain, ExportHandle, ExportProvider } from '../../src/nbd/provider';
import { createMemoryExport, type MemoryExport } from './memory-export';
import {
  INFO, OPT, OPTION_REPLY_MAGIC, REP, SIMPLE_REPLY_MAGIC, STRUCTURED_REPLY_MAGIC,
  clientFlags, goPayload, metaPayload, optionFrame, requestFrame, type RequestSpec,
} from './wire';

export const READ_TIMEOUT_MS = 20_000;
export const quietLog = pino({ level: process.env['XVD_TEST_LOG'] || 'silent' });

export interface OptionReply {
  option: number;
  type: number;
  payload: Buffer;
}

export interface SimpleReply {
  errno: number;
  cookie: bigint;
}

export interface Chunk {
  flags: number;
  type: number;
  cookie: bigint;
  payload: Buffer;
}

export class ScriptedClient {
  private buffered: Buffer[] = [];
  private length = 0;
  private waiter: (() => void) | null = null;
  isEnded = false;

  constructor(private readonly input: Readable, private readonly output: Writable) {
    input.on('data', (chunk: Buffer) => {
      this.buffered.push(chunk);
      this.length += chunk.length;
      this.wake();
    });
    const end = (): void => {
      this.isEnded = true;
      this.wake();
    };
    input.on('end', end);
    input.on('close', end);
    input.on('error', end);
    output.on('error', () => undefined);
  }

  private wake(): void {
    const waiter = this.waiter;
    this.waiter = null;
    waiter?.();
  }

  write(frame: Buffer): void {
    if (!this.output.destroyed && !this.output.writableEnded) this.output.write(frame);
  }

  end(): void {
    this.output.end();
  }

  /** Stops reading the socket: the server's replies pile up in the kernel and then in it. */
  pause(): void {
    this.input.pause();
  }

  resume(): void {
    this.input.resume();
  }

  /** Reads exactly n bytes; rejects on EOF or timeout. */
  async read(n: number, timeoutMs = READ_TIMEOUT_MS): Promise<Buffer> {
    const deadline = Date.now() + timeoutMs;
    while (this.length < n) {
      if (this.isEnded) throw new Error(`EOF after ${this.length} of ${n} bytes`);
      const remaining = deadline - Date.now();
      if (remaining <= 0) throw new Error(`timeout waiting for ${n} bytes`);
      await new Promise<void>((resolve) => {
        const timer = setTimeout(resolve, remaining);
        this.waiter = () => {
          clearTimeout(timer);
          resolve();
        };
      });
    }
    if (n === 0) return Buffer.alloc(0);
    // take from the chunk list: re-joining everything buffered per read is quadratic for
    // replies of many MiB
    const first = this.buffered[0]!;
    let out: Buffer;
    if (first.length >= n) {
      out = first.subarray(0, n);
      if (first.length === n) this.buffered.shift();
      else this.buffered[0] = first.subarray(n);
    } else {
      out = Buffer.allocUnsafe(n);
      for (let at = 0; at < n;) {
        const chunk = this.buffered[0]!;
        const take = Math.min(chunk.length, n - at);
        chunk.copy(out, at, 0, take);
        at += take;
        if (take === chunk.length) this.buffered.shift();
        else this.buffered[0] = chunk.subarray(take);
      }
    }
    this.length -= n;
    return out;
  }

  /** Resolves true when the server closes the stream within the timeout (remaining data read). */
  async waitClosed(timeoutMs = READ_TIMEOUT_MS): Promise<boolean> {
    const deadline = Date.now() + timeoutMs;
    while (!this.isEnded && Date.now() < deadline) {
      await new Promise<void>((resolve) => {
        const timer = setTimeout(resolve, Math.max(1, deadline - Date.now()));
        this.waiter = () => {
          clearTimeout(timer);
          resolve();
        };
      });
    }
    return this.isEnded;
  }

  get bufferedLength(): number {
    return this.length;
  }

  async readGreeting(): Promise<{ flags: number; magic: Buffer }> {
    const frame = await this.read(18);
    return { magic: frame.subarray(0, 16), flags: frame.readUInt16BE(16) };
  }

  async start(flags = 3): Promise<void> {
    await this.readGreeting();
    this.write(clientFlags(flags));
  }

  sendOption(option: number, payload: Buffer = Buffer.alloc(0)): void {
    this.write(optionFrame(option, payload));
  }

  async readOptionReply(): Promise<OptionReply> {
    const header = await this.read(20);
    if (!header.subarray(0, 8).equals(OPTION_REPLY_MAGIC)) throw new Error('bad option magic');
    const length = header.readUInt32BE(16);
    return { option: header.readUInt32BE(8), type: header.readUInt32BE(12),
      payload: await this.read(length) };
  }

  /** Reads replies up to and including the final one (ACK or an error). */
  async readOptionReplies(): Promise<OptionReply[]> {
    const replies: OptionReply[] = [];
    for (let count = 0; count < 100_000; count++) {
      const reply = await this.readOptionReply();
      replies.push(reply);
      if (reply.type === REP.ACK || reply.type >= 0x80000000) return replies;
    }
    throw new Error('too many option replies');
  }

  async option(option: number, payload?: Buffer): Promise<OptionReply[]> {
    this.sendOption(option, payload);
    return this.readOptionReplies();
  }

  /** Full handshake into transmission; returns size and transmission flags from INFO_EXPORT. */
  async handshake(options: { name?: string; structured?: boolean; meta?: boolean;
    infos?: number[] } = {}): Promise<{ size: bigint; eflags: number }> {
    await this.start();
    const name = options.name ?? 'disk';
    if (options.structured === true) await this.option(OPT.STRUCTURED_REPLY);
    if (options.meta === true) {
      await this.option(OPT.SET_META_CONTEXT, metaPayload(name, ['base:allocation']));
    }
    const replies = await this.option(OPT.GO, goPayload(name, options.infos ?? []));
    const last = replies[replies.length - 1];
    if (last?.type !== REP.ACK) throw new Error(`GO failed: 0x${last?.type.toString(16)}`);
    const info = replies.find((reply) => reply.type === REP.INFO &&
      reply.payload.readUInt16BE(0) === INFO.EXPORT);
    if (info === undefined) throw new Error('no NBD_INFO_EXPORT');
    return { size: info.payload.readBigUInt64BE(2), eflags: info.payload.readUInt16BE(10) };
  }

  request(spec: RequestSpec): void {
    this.write(requestFrame(spec));
  }

  async readSimpleReply(): Promise<SimpleReply> {
    const header = await this.read(16);
    if (header.readUInt32BE(0) !== SIMPLE_REPLY_MAGIC) {
      throw new Error(`bad simple reply magic 0x${header.readUInt32BE(0).toString(16)}`);
    }
    return { errno: header.readUInt32BE(4), cookie: header.readBigUInt64BE(8) };
  }

  /** Reads a simple or structured reply header and returns which it was. */
  async readAnyReply(): Promise<{ simple?: SimpleReply; chunk?: Chunk }> {
    const magic = (await this.read(4)).readUInt32BE(0);
    if (magic === SIMPLE_REPLY_MAGIC) {
      const rest = await this.read(12);
      return { simple: { errno: rest.readUInt32BE(0), cookie: rest.readBigUInt64BE(4) } };
    }
    if (magic !== STRUCTURED_REPLY_MAGIC) {
      throw new Error(`bad reply magic 0x${magic.toString(16)}`);
    }
    const rest = await this.read(16);
    return { chunk: { flags: rest.readUInt16BE(0), type: rest.readUInt16BE(2),
      cookie: rest.readBigUInt64BE(4), payload: await this.read(rest.readUInt32BE(12)) } };
  }

  async readChunk(): Promise<Chunk> {
    const reply = await this.readAnyReply();
    if (reply.chunk === undefined) throw new Error('expected a structured chunk');
    return reply.chunk;
  }

  /** READ with simple replies: data on success. */
  async readData(offset: number, length: number, cookie = 1n): Promise<Buffer> {
    this.request({ type: 0, offset, length, cookie });
    const reply = await this.readSimpleReply();
    if (reply.errno !== 0) throw new Error(`READ failed: ${reply.errno}`);
    return this.read(length);
  }
}

/** A fixed map of exports; `domains` limits which domain sees which export (absent: all). */
export interface FixedProvider extends ExportProvider {
  opens: number;
  releases: number;
}

export function createFixedProvider(exportList: Export[],
  domains: Record<string, Domain[]> = {}): FixedProvider {
  const byName = new Map(exportList.map((exp) => [exp.name, exp]));
  const visible = (name: string, domain: Domain): boolean =>
    domains[name] === undefined || domains[name]?.includes(domain) === true;
  const provider: FixedProvider = {
    opens: 0,
    releases: 0,
    list: (domain) => exportList.filter((exp) => visible(exp.name, domain))
      .map((exp) => ({ name: exp.name, description: exp.description })),
    defaultName: (domain) => {
      const first = exportList.find((exp) => visible(exp.name, domain));
      return first === undefined ? null : first.name;
    },
    open: async (name, domain): Promise<ExportHandle | null> => {
      const exp = byName.get(name);
      if (exp === undefined || !visible(name, domain)) return null;
      provider.opens += 1;
      return { export: exp, release: () => { provider.releases += 1; } };
    },
  };
  return provider;
}

export function memoryDisk(name = 'disk', size = 64 * 1024 * 1024, readOnly = false,
): MemoryExport {
  return createMemoryExport({ name, size, readOnly, description: `test disk ${name}` });
}

export interface TestServer {
  server: NbdServer;
  port: number;
  socketPath: string;
  uri(name?: string): string;
  unixUri(name?: string): string;
  connect(): Promise<ScriptedClient>;
}

interface Teardown {
  teardown(fn: () => unknown): void;
  testdir(): string;
}

/** Starts a server on 127.0.0.1:<ephemeral> and on a Unix socket in the test dir. */
// (a parameter named `exports` would shadow CommonJS module exports such as quietLog)
export async function startServer(t: Teardown, exportList: Export[],
  options: Partial<NbdServerOptions> = {}): Promise<TestServer> {
  const server = createServer({ provider: createFixedProvider(exportList), ...options,
    log: options.log ?? quietLog });
  const address = await server.listen({ host: '127.0.0.1', port: 0 });
  // a short path: sun_path holds 108 bytes and t.testdir() paths are longer
  const socketDir = fs.mkdtempSync(path.join(os.tmpdir(), 'xvd-nbd-'));
  const socketPath = path.join(socketDir, 'nbd.sock');
  await server.listen({ path: socketPath });
  t.teardown(async () => {
    await server.close({ graceMs: 2000 });
    fs.rmSync(socketDir, { recursive: true, force: true });
  });
  const port = typeof address === 'string' ? 0 : address.port;
  return {
    server, port, socketPath,
    uri: (name = 'disk') => `nbd://127.0.0.1:${port}/${name}`,
    unixUri: (name = 'disk') => `nbd+unix:///${name}?socket=${socketPath}`,
    connect: () => connectClient(port),
  };
}

export function connectClient(port: number): Promise<ScriptedClient> {
  return new Promise((resolve, reject) => {
    const socket = net.connect(port, '127.0.0.1', () => {
      socket.off('error', reject);
      resolve(new ScriptedClient(socket, socket));
    });
    socket.once('error', reject);
  });
}

/** A client connected to a Unix socket (no handshake yet). */
export function connectUnix(socketPath: string): Promise<ScriptedClient> {
  return new Promise((resolve, reject) => {
    const socket = net.connect(socketPath, () => resolve(new ScriptedClient(socket, socket)));
    socket.once('error', reject);
  });
}

/** A server connection over an in-memory stream pair (serveStream). */
export function streamClient(server: NbdServer): { client: ScriptedClient; done: Promise<void> } {
  const toServer = new PassThrough();
  const toClient = new PassThrough();
  const done = server.serveStream(toServer, toClient);
  toServer.on('error', () => undefined);
  return { client: new ScriptedClient(toClient, toServer), done };
}

/** Asserts a well-behaved client still gets correct service (used by every error test). */
export async function checkHealthy(port: number, name = 'disk'): Promise<boolean> {
  const client = await connectClient(port);
  try {
    await client.handshake({ name });
    const pattern = Buffer.alloc(4096, 0x5a);
    client.request({ type: 1, offset: 8192, cookie: 77n, payload: pattern });
    const written = await client.readSimpleReply();
    const data = await client.readData(8192, 4096, 78n);
    client.request({ type: 2 });
    return written.errno === 0 && written.cookie === 77n && data.equals(pattern);
  } finally {
    client.end();
  }
}

export interface ToolResult {
  code: number | null;
  stdout: string;
  stderr: string;
}

/** Runs an external tool with a timeout; never rejects (the result carries the exit code). */
export function runTool(command: string, args: string[],
  options: { timeoutMs?: number; env?: NodeJS.ProcessEnv; input?: string } = {},
): Promise<ToolResult> {
  return new Promise((resolve) => {
    const child = execFile(command, args, {
      timeout: options.timeoutMs ?? 60_000, maxBuffer: 64 * 1024 * 1024,
      env: { ...process.env, ...options.env }, encoding: 'utf8',
    }, (error, stdout, stderr) => {
      const code = error === null ? 0 : typeof error.code === 'number' ? error.code : null;
      resolve({ code, stdout, stderr });
    });
    if (options.input !== undefined) child.stdin?.end(options.input);
  });
}

export function hasTool(command: string): boolean {
  return ['/usr/bin', '/usr/sbin', '/bin', '/sbin', '/usr/local/bin']
    .some((dir) => fs.existsSync(path.join(dir, command)));
}

/** Python with the libnbd module (Debian's, not a pyenv shim). */
export const PYTHON_LIBNBD = '/usr/bin/python3';

/** Sends one request and returns the errno of its (simple or structured) reply. */
export async function requestErrno(client: ScriptedClient, spec: RequestSpec): Promise<number> {
  client.request(spec);
  const reply = await client.readAnyReply();
  if (reply.simple !== undefined) return reply.simple.errno;
  const chunk = reply.chunk;
  if (chunk === undefined) throw new Error('no reply');
  return chunk.type === 0x8001 ? chunk.payload.readUInt32BE(0) : 0;
}

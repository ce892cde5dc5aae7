/**
 * test/helpers/file-export: a server whose export `disk` is an ExtentExport over one file of
 * random bytes, so that its connections are served by the data-path thread (native/src/dp-*.c)
 * as `xvd serve` serves them (src/dataplane/routes.ts: arena receive, no TLS, a data plane). The
 * errors tests in test/errors/errors-client-datapath-*.test.ts use it to send their violation
 * to that thread, not to the JS path that the memory export has.
 *
 * That the thread holds a connection is read from the server: a plain READ it serves raises
 * server.stats.threadRequests (threadServes). The file is read back to show what changed.
 */
import crypto from 'node:crypto';
import fs from 'node:fs';
import type net from 'node:net';
import path from 'node:path';
import type { Test } from 'tap';
import { BackingPool } from '../../src/backing/pool';
import { openExport } from '../../src/engine/extent-export';
import { createServer, type NbdServer, type NbdServerLimits } from '../../src/nbd/index';
import { ScriptedClient, createFixedProvider, quietLog } from './nbd-client';
import { type Transport, connectRaw, listenTcpAndUnix } from './sockets';
import { eventually } from './waits';
import { CMD } from './wire';

const MiB = 1024 * 1024;

export interface FileExportOptions {
  /** bytes (default 8 MiB) */
  size?: number;
  mode?: 'r' | 'w';
  /** the minimum block size told to a client that asks (NBD_INFO_BLOCK_SIZE); default 1 */
  blockSizeMin?: number;
  /** server limits (the memory budget, say) */
  limits?: Partial<NbdServerLimits>;
}

export interface FileExportServer {
  server: NbdServer;
  port: number;
  socketPath: string;
  size: number;
  /** what the file held at the start */
  image: Buffer;
  /** the file's bytes now */
  fileBytes(): Buffer;
  /** a raw client (no handshake yet); destroyed at teardown */
  connect(transport?: Transport): Promise<ScriptedClient>;
  /** the same with its socket, for clients that reset or pause it */
  connectWithSocket(transport?: Transport): Promise<{ client: ScriptedClient;
    socket: net.Socket }>;
}

export async function startFileExport(t: Test, options: FileExportOptions = {}):
  Promise<FileExportServer> {
  const size = options.size ?? 8 * MiB;
  const file = path.join(t.testdir(), 'disk.img');
  const image = crypto.randomBytes(size);
  fs.writeFileSync(file, image);
  const pool = new BackingPool();
  const exp = await openExport({ name: 'disk', description: 'one file', size, pool,
    mode: options.mode ?? 'w', extents: [{ path: file, offset: 0, length: size }] });
  // an own property of the export object, which stays what the data path is made from
  Object.defineProperty(exp, 'blockSizeMin', { value: options.blockSizeMin ?? 1 });
  const server = createServer({ provider: createFixedProvider([exp]), log: quietLog,
    ...(options.limits === undefined ? {} : { limits: options.limits }) });
  const target = await listenTcpAndUnix(t, server, 'xvd-errors-', async () => {
    await exp.close();
    await pool.close();
  });
  const connectWithSocket = async (transport: Transport = 'tcp'):
    Promise<{ client: ScriptedClient; socket: net.Socket }> => {
    const socket = await connectRaw(t, target, transport);
    socket.on('error', () => undefined);
    return { client: new ScriptedClient(socket, socket), socket };
  };
  return {
    server, size, image, ...target, connectWithSocket,
    fileBytes: () => fs.readFileSync(file),
    connect: async (transport = 'tcp') => (await connectWithSocket(transport)).client,
  };
}

/** A plain 4 KiB READ at `offset` on `client` (simple replies) returns the file's bytes. */
export async function readsRight(fixture: FileExportServer, client: ScriptedClient,
  offset = 0, cookie = 0xdd0n): Promise<boolean> {
  client.request({ type: CMD.READ, offset, length: 4096, cookie });
  const reply = await client.readSimpleReply();
  const data = reply.errno === 0 ? await client.read(4096) : Buffer.alloc(0);
  return reply.cookie === cookie && data.equals(fixture.fileBytes().subarray(offset,
    offset + 4096));
}

/**
 * readsRight, and the data-path thread served that READ (server.stats.threadRequests grew):
 * the thread holds this connection. (After a bad magic, an oversized WRITE or DISC the thread
 * forwards every later byte to the JS side by design: then only readsRight holds.)
 */
export async function threadServes(fixture: FileExportServer, client: ScriptedClient,
  offset = 0): Promise<boolean> {
  const before = fixture.server.stats.threadRequests;
  return await readsRight(fixture, client, offset) &&
    await eventually(() => fixture.server.stats.threadRequests > before);
}

/** A new client gets a thread-served READ right: the server still serves. */
export async function isHealthy(fixture: FileExportServer): Promise<boolean> {
  const client = await fixture.connect();
  try {
    await client.handshake();
    return await threadServes(fixture, client, 4096);
  } finally {
    client.request({ type: CMD.DISC });
    client.end();
  }
}

/**
 * Enlarging a served VD, across processes: a client writes and reads back a marker in a loop on
 * a VD served by a real `xvd serve` process while the VD is enlarged (by `xvd enlarge`, and by
 * this process holding the enlarge's pending zeroing open, as a slow zeroing of a large device
 * would). The client must never see an error (no fence: its old size stays valid), a connection
 * opened while zeroing is pending gets the old size, and one opened after gets the new size with
 * the new range reading as zeros although the pool held garbage there.
 *
 * Nothing waits a fixed time. That the server has taken an enlarge in is seen from outside:
 * new connections are opened until one is given the new size. That it has looked at the catalog
 * while the zeroing is pending is shown by a witness: a connection to a second VBD that the test
 * removes right after the grow. Once that connection's READs get ESHUTDOWN, the server has
 * reconciled with both changes, so the old size given to a new connection then is its verdict.
 */
import t, { type Test } from 'tap';
import fs from 'node:fs';
import path from 'node:path';
import type { ChildProcess } from 'node:child_process';
import { openCatalog, zeroPending } from '../../src/catalog';
import { runXvd, startServeOnSocket } from '../helpers/cli';
import { type ScriptedClient, connectUnix, requestErrno } from '../helpers/nbd-client';
import { ERRNO } from '../helpers/wire';
import { shortTempDir, stopChild } from '../helpers/process';

const MiB = 1024 * 1024;
const OLD = 8 * MiB;
const NEW = 16 * MiB;
const WRITE = 64 * 1024;
const MARKER = 0xa5;
const GARBAGE = 0x5a;
const LOOP_MAX = 200_000;
/** How long the server may take to act on a catalog change (LIMITS.servePollMs is 100 ms) */
const SEEN_MS_MAX = 15_000;
const POLL_MS = 50;

async function connect(socket: string, name: string): Promise<{ client: ScriptedClient;
  size: number }> {
  const client = await connectUnix(socket);
  const { size } = await client.handshake({ name });
  return { client, size: Number(size) };
}

interface Signal {
  stop: boolean;
  /** set by the loop as soon as a request fails */
  failure: string | null;
}

interface LoopResult {
  rounds: number;
  failure: string | null;
}

/** Writes the marker round-robin over the old size and reads each write back, until stopped. */
async function writeReadLoop(client: ScriptedClient, signal: Signal,
  onRound: (rounds: number) => void): Promise<LoopResult> {
  const payload = Buffer.alloc(WRITE, MARKER);
  let rounds = 0;
  for (let index = 0; index < LOOP_MAX && !signal.stop; index++) {
    const offset = (index * WRITE) % OLD;
    try {
      client.request({ type: 1, offset, cookie: BigInt(2 * index + 1), payload });
      const written = await client.readSimpleReply();
      if (written.errno !== 0) signal.failure = `WRITE errno ${written.errno}`;
      const data = signal.failure === null
        ? await client.readData(offset, WRITE, BigInt(2 * index + 2)) : payload;
      if (!data.equals(payload)) signal.failure = `READ at ${offset}: not the marker`;
    } catch (error) {
      signal.failure = `connection: ${String(error)}`;
    }
    if (signal.failure !== null) return { rounds, failure: signal.failure };
    rounds += 1;
    onRound(rounds);
  }
  return { rounds, failure: null };
}

/** Starts the loop and resolves once it has done `warmup` rounds. */
async function startLoop(client: ScriptedClient, warmup: number):
  Promise<{ signal: Signal; done: Promise<LoopResult> }> {
  const signal: Signal = { stop: false, failure: null };
  let warmed: () => void = () => undefined;
  const isWarm = new Promise<void>((resolve) => (warmed = resolve));
  const done = writeReadLoop(client, signal, (rounds) => {
    if (rounds === warmup) warmed();
  });
  await Promise.race([isWarm, done]);
  return { signal, done };
}

async function setup(t: Test): Promise<{ catalog: string; socket: string }> {
  const dir = t.testdir();
  const catalog = path.join(dir, 'catalog.sqlite');
  const image = path.join(dir, 'pool.img');
  // what a reused disk would hold; VD 1 grows to NEW, the witness VD 2 takes one more MiB
  fs.writeFileSync(image, Buffer.alloc(NEW + 2 * MiB, GARBAGE));
  const ok = async (args: string[]): Promise<string> => {
    const result = await runXvd(args, { catalog });
    t.equal(result.code, 0, `xvd ${args.join(' ')}: ${result.stderr}`);
    return result.stdout.trim();
  };
  await ok(['format', image, '--extent-size', '1M']);
  const id = await ok(['create', String(OLD / MiB)]);
  t.equal(id, '1');
  await ok(['vbd', 'add', 'vd:1', 'xvda', '--domain', '1', '--mode', 'w']);
  t.equal(await ok(['create', '1']), '2');
  await ok(['vbd', 'add', 'vd:2', 'xvdb', '--domain', '1', '--mode', 'w']);
  return { catalog, socket: path.join(shortTempDir(t), 'nbd.sock') };
}

/** Opens connections to 1/xvda until one is given `size` (at most SEEN_MS_MAX); the last size. */
async function sizeOfNewConnections(socket: string, size: number): Promise<number> {
  const deadline = Date.now() + SEEN_MS_MAX;
  for (;;) {
    const opened = await connect(socket, '1/xvda');
    opened.client.end();
    if (opened.size === size || Date.now() >= deadline) return opened.size;
    await new Promise((resolve) => setTimeout(resolve, POLL_MS));
  }
}

/** READs on `witness` until the server answers ESHUTDOWN (its export was fenced); the last
 * errno, or -1 when the connection ended. */
async function fencedErrno(witness: ScriptedClient): Promise<number> {
  const deadline = Date.now() + SEEN_MS_MAX;
  for (let cookie = 100n; ; cookie++) {
    let errno: number;
    try {
      errno = await requestErrno(witness, { type: 0, offset: 0, length: 512, cookie });
      if (errno === 0) await witness.read(512);
    } catch {
      return -1;
    }
    if (errno !== 0 || Date.now() >= deadline) return errno;
    await new Promise((resolve) => setTimeout(resolve, POLL_MS));
  }
}

/** A new connection sees the new size, the new range as zeros and the old range as written. */
async function assertEnlarged(t: Test, socket: string): Promise<void> {
  const { client, size } = await connect(socket, '1/xvda');
  t.equal(size, NEW, 'a new connection gets the new size');
  const tail = await client.readData(OLD, NEW - OLD);
  t.equal(tail.indexOf(GARBAGE), -1, 'no garbage byte in the new range');
  t.ok(tail.equals(Buffer.alloc(NEW - OLD)), 'the new range reads as zeros');
  const head = await client.readData(0, WRITE, 2n);
  t.ok(head.equals(Buffer.alloc(WRITE, MARKER)), 'the old range keeps what was written');
  client.end();
}

/** Stops the old connection's loop (which must have seen no error), checks the enlarged VD
 * through a new connection, stops the server and checks the catalog. */
async function endEnlarged(t: Test, run: { loop: Awaited<ReturnType<typeof startLoop>>;
  client: ScriptedClient; socket: string; server: ChildProcess; catalog: string }): Promise<void> {
  run.loop.signal.stop = true;
  const result = await run.loop.done;
  t.equal(result.failure, null, `the old connection saw no error (${result.rounds} rounds)`);
  run.client.end();
  await assertEnlarged(t, run.socket);
  await stopChild(run.server);
  t.equal(run.server.exitCode, 0, 'serve exits 0 on SIGTERM');
  const check = await runXvd(['check'], { catalog: run.catalog });
  t.equal(check.code, 0, check.stdout + check.stderr);
}

t.test('xvd enlarge of a served VD does not interrupt a client writing and reading it',
  async (t) => {
    const { catalog, socket } = await setup(t);
    const server = await startServeOnSocket(t, catalog, socket);
    const { client, size } = await connect(socket, '1/xvda');
    t.equal(size, OLD);
    const loop = await startLoop(client, 20);
    const enlarged = await runXvd(['enlarge', '1', String((NEW - OLD) / MiB)], { catalog });
    t.equal(enlarged.code, 0, enlarged.stderr);
    t.equal(await sizeOfNewConnections(socket, NEW), NEW, 'the server took the enlarge in');
    await endEnlarged(t, { loop, client, socket, server, catalog });
  });

t.test('while an enlarge is zeroing, old connections keep working and new ones get the old size',
  async (t) => {
    const { catalog, socket } = await setup(t);
    const server = await startServeOnSocket(t, catalog, socket);
    const { client } = await connect(socket, '1/xvda');
    const loop = await startLoop(client, 20);
    const witness = await connect(socket, '1/xvdb');
    // phase one of `xvd enlarge`, then a pause as long as zeroing a large device might take
    const direct = openCatalog(catalog);
    t.teardown(() => direct.close());
    direct.growVd(1, NEW - OLD);
    t.equal(direct.getVd(1).state, 'zeroing');
    direct.removeVbd(1, 'xvdb');
    t.equal(await fencedErrno(witness.client), ERRNO.ESHUTDOWN,
      'the server reconciled after the grow (the witness VBD is fenced)');
    witness.client.end();
    t.equal(loop.signal.failure, null, 'the old connection works while zeroing is pending');
    const during = await connect(socket, '1/xvda');
    t.equal(during.size, OLD, 'a connection opened while zeroing is pending gets the old size');
    const head = await during.client.readData(0, WRITE, 3n);
    t.equal(head.indexOf(GARBAGE), -1, 'and reads no garbage');
    during.client.end();
    // phase two: zero the new range and clear the pending rows
    t.same(await zeroPending(direct), [1]);
    t.equal(await sizeOfNewConnections(socket, NEW), NEW, 'the server took the zeroing in');
    await endEnlarged(t, { loop, client, socket, server, catalog });
  });

/**
 * Failover across hosts on a real Ceph cluster (serve/host-lease.ts): two `xvd serve` processes,
 * hosts alpha and beta, on one catalog in RADOS (`ceph:POOL/NAME`), serving VDs of an RBD
 * member. For each way alpha goes away (frozen with SIGSTOP, SIGKILLed, frozen mid-burst):
 *   1. a client writes a pattern through alpha and flushes;
 *   2. its open on beta is refused (NBD_REP_ERR_POLICY) with a message naming alpha;
 *   3. alpha goes away; once its lease TTL has passed, beta serves every flushed byte (the time
 *      from freeze to that first byte is measured), and a second pattern is written through
 *      beta and flushed;
 *   4. alpha resumes (SIGCONT): its old connection's next writes fail, alpha exits 75 (it lost
 *      its leases), and not one byte of the second pattern changed.
 * Beta logs the takeover of alpha with alpha's RADOS addresses, which the monitors list as
 * blocklisted; `xvd check` on the shared catalog has no fault at the end.
 */
import type { ChildProcess } from 'node:child_process';
import t, { type Test } from 'tap';
import { runXvd, spawnXvd } from '../helpers/cli';
import { startCeph, type CephCluster } from '../helpers/ceph';
import { connectClient, type ScriptedClient } from '../helpers/nbd-client';
import { freePort } from '../helpers/process';
import { eventually } from '../helpers/waits';
import { OPT, REP, goPayload } from '../helpers/wire';

const TTL_S = 3;
const TAKEOVER_WAIT_MS = 90_000; // the TTL, or up to 30 s more when alpha died holding the lock
const BLOCK = 65536;
const BURST = 32;
const MiB = 1024 * 1024;

interface LogLine { event?: string; deadHost?: string; addrs?: string[] }

interface Host {
  child: ChildProcess;
  port: number;
  log: () => LogLine[];
  exited: Promise<{ code: number | null; signal: string | null }>;
}

async function startHost(t: Test, env: Record<string, string>, host: string): Promise<Host> {
  const port = await freePort();
  const child = spawnXvd(['serve', '--host', host, '--lease-ttl', String(TTL_S), '--listen',
    `127.0.0.1:${port}`], { env: { ...env, XVD_LOG_LEVEL: 'info', XVD_LOG_PRETTY: '0' } });
  let text = '';
  child.stderr?.setEncoding('utf8').on('data', (chunk: string) => (text += chunk));
  child.stdout?.resume();
  const exited = new Promise<{ code: number | null; signal: string | null }>((resolve) =>
    child.once('exit', (code, signal) => resolve({ code, signal })));
  t.teardown(() => {
    if (child.exitCode === null && child.signalCode === null) {
      child.kill('SIGCONT');
      child.kill('SIGKILL');
    }
  });
  const log = (): LogLine[] => text.split('\n').filter((line) => line.startsWith('{'))
    .map((line) => JSON.parse(line) as LogLine);
  if (!await eventually(() => text.includes('listening'), 60_000)) {
    throw new Error(`${host} did not start: ${text}`);
  }
  return { child, port, log, exited };
}

async function open(port: number, name: string): Promise<{ client: ScriptedClient;
  type: number; message: string }> {
  const client = await connectClient(port);
  await client.start();
  const replies = await client.option(OPT.GO, goPayload(name));
  const last = replies[replies.length - 1];
  return { client, type: last?.type ?? -1, message: last?.payload.toString('utf8') ?? '' };
}

async function write(client: ScriptedClient, offset: number, byte: number): Promise<number> {
  const payload = Buffer.alloc(BLOCK, byte);
  client.request({ type: 1, offset, length: BLOCK, cookie: 7n, payload });
  return (await client.readSimpleReply()).errno;
}

async function flush(client: ScriptedClient): Promise<number> {
  client.request({ type: 3, cookie: 8n });
  return (await client.readSimpleReply()).errno;
}

/** Opens `name` on beta until it is served (bounded); the client and how long it took. */
async function openWhenTakenOver(t: Test, beta: Host, name: string, sinceMs: number):
  Promise<{ client: ScriptedClient; tookMs: number }> {
  while (Date.now() - sinceMs < TAKEOVER_WAIT_MS) {
    const attempt = await open(beta.port, name);
    if (attempt.type === REP.ACK) return { client: attempt.client, tookMs: Date.now() - sinceMs };
    t.match(attempt.message, /host alpha/, 'until then beta refuses, naming alpha');
    attempt.client.end();
    await new Promise((resolve) => setTimeout(resolve, 50));
  }
  throw new Error(`beta did not take ${name} over within ${TAKEOVER_WAIT_MS} ms`);
}

type Way = 'SIGSTOP' | 'SIGKILL' | 'burst';

/** Steps 1 to 4 of the header for one device; returns freeze to first byte on beta (ms). */
async function failover(t: Test, cluster: CephCluster, env: Record<string, string>,
  device: string, way: Way): Promise<number> {
  const name = `1/${device}`;
  const alpha = await startHost(t, env, 'alpha');
  const beta = await startHost(t, env, 'beta');
  const onAlpha = await open(alpha.port, name);
  t.equal(onAlpha.type, REP.ACK, 'alpha serves the VD');
  t.equal(await write(onAlpha.client, 0, 0xa1), 0, 'a write through alpha succeeds');
  t.equal(await flush(onAlpha.client), 0, 'and its flush');

  const refused = await open(beta.port, name);
  t.equal(refused.type, REP.ERR_POLICY, 'beta refuses the open (NBD_REP_ERR_POLICY)');
  t.match(refused.message, /served by host alpha .*lease is live/, 'naming alpha');
  refused.client.end();

  if (way === 'burst') { // pipelined writes, some still in flight when alpha freezes
    for (let index = 0; index < BURST; index++) {
      onAlpha.client.request({ type: 1, offset: MiB + index * BLOCK, length: BLOCK,
        cookie: BigInt(100 + index), payload: Buffer.alloc(BLOCK, 0xa2) });
    }
    await onAlpha.client.readSimpleReply();
  }
  const frozenAt = Date.now();
  alpha.child.kill(way === 'SIGKILL' ? 'SIGKILL' : 'SIGSTOP');
  const { client: onBeta, tookMs } = await openWhenTakenOver(t, beta, name, frozenAt);
  const first = await onBeta.readData(0, BLOCK);
  const firstByteMs = Date.now() - frozenAt;
  t.ok(first.equals(Buffer.alloc(BLOCK, 0xa1)), 'beta serves every flushed byte');
  // alpha's last heartbeat came up to one heartbeat period (TTL / 5) before the freeze
  t.ok(tookMs >= TTL_S * 800 - 100, `not before alpha's TTL (${tookMs} ms)`);
  for (let index = 0; index < BURST; index++) {
    t.equal(await write(onBeta, MiB + index * BLOCK, 0xb2), 0, 'second pattern through beta');
  }
  t.equal(await flush(onBeta), 0, 'flushed through beta');
  const takeover = beta.log().find((line) => line.event === 'takeover' &&
    line.deadHost === 'alpha');
  t.ok(takeover !== undefined, 'beta logs the takeover of alpha');
  const blocklist = cluster.ceph(['osd', 'blocklist', 'ls']);
  for (const addr of takeover?.addrs ?? []) t.match(blocklist, addr, `${addr} is blocklisted`);
  t.equal(takeover?.addrs?.length, 2, 'both of alpha\'s clients: libcephsqlite\'s and RBD\'s');

  if (way !== 'SIGKILL') await resumeAlpha(t, alpha, onAlpha.client, way);
  else t.equal((await alpha.exited).signal, 'SIGKILL', 'alpha was killed');
  for (let index = 0; index < BURST; index++) {
    const bytes = await onBeta.readData(MiB + index * BLOCK, BLOCK);
    t.ok(bytes.equals(Buffer.alloc(BLOCK, 0xb2)), `block ${index} of the second pattern intact`);
  }
  onBeta.end();
  beta.child.kill('SIGTERM');
  t.equal((await beta.exited).code, 0, 'beta stops cleanly');
  return firstByteMs;
}

/** Step 4: alpha runs again; its old connection's writes fail; it exits 75. */
async function resumeAlpha(t: Test, alpha: Host, client: ScriptedClient, way: Way): Promise<void> {
  alpha.child.kill('SIGCONT');
  const errnos: number[] = [];
  try {
    if (way === 'burst') { // the rest of the burst's replies: none may land after beta's writes
      for (let index = 1; index < BURST; index++) {
        errnos.push((await client.readSimpleReply()).errno);
      }
    }
    for (let index = 0; index < 4; index++) errnos.push(await write(client, MiB, 0xa3));
  } catch {
    errnos.push(-1); // the connection was closed: nothing more goes through it
  }
  t.not(errnos[errnos.length - 1], 0,
    `alpha's old connection fails its next writes (${errnos.join(' ')})`);
  t.equal((await alpha.exited).code, 75, 'alpha exits 75: it lost its leases and let go');
  t.ok(alpha.log().some((line) => line.event === 'lease-lost'), 'alpha logs lease-lost');
}

t.test('failover from a frozen, a killed and a mid-burst host, on one shared catalog in RADOS',
  async (t) => {
    const cluster = await startCeph(t);
    const env = { ...cluster.env, XVD_CATALOG: `ceph:${cluster.pool}/xvd-failover` };
    const setup = async (args: string[]): Promise<void> => {
      const result = await runXvd(args, { env });
      t.equal(result.code, 0, `xvd ${args.join(' ')}: ${result.stderr}`);
    };
    await setup(['format', `rbd:${cluster.pool}/failover`, '--size', '64M']);
    const devices = ['xvda', 'xvdb', 'xvdc'];
    for (let index = 0; index < devices.length; index++) await setup(['create', '16M']);
    for (const [index, device] of devices.entries()) {
      await setup(['vbd', 'add', `vd:${index + 1}`, device, '--domain', '1', '--mode', 'w']);
    }
    const timings: Record<string, number> = {};
    timings['SIGSTOP'] = await failover(t, cluster, env, 'xvda', 'SIGSTOP');
    timings['SIGKILL'] = await failover(t, cluster, env, 'xvdb', 'SIGKILL');
    timings['burst'] = await failover(t, cluster, env, 'xvdc', 'burst');
    t.comment(`freeze to first byte on beta (TTL ${TTL_S} s): ${JSON.stringify(timings)} ms`);
    const check = await runXvd(['check'], { env });
    t.equal(check.code, 0, `xvd check on the shared catalog: ${check.stdout}${check.stderr}`);
  });

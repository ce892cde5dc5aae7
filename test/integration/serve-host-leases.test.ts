/**
 * Leases across hosts without Ceph (serve/host-lease.ts): two real `xvd serve` processes with
 * different --host names on one local catalog. A writes and flushes through A; an open of the
 * same VD on B is refused with NBD_REP_ERR_POLICY and a message naming host alpha, and B logs
 * `export-refused` with that reason; A is frozen (SIGSTOP); once A's lease TTL has passed, B
 * fences A (on one machine, with no RADOS client: SIGKILL), logs `takeover` naming alpha, and
 * serves every flushed byte; `xvd check` is clean and the catalog holds B's row only.
 */
import type { ChildProcess } from 'node:child_process';
import path from 'node:path';
import t, { type Test } from 'tap';
import { runXvd, spawnXvd } from '../helpers/cli';
import { connectUnix, type ScriptedClient } from '../helpers/nbd-client';
import { shortTempDir } from '../helpers/process';
import { makeServedCatalog, serversAndLeases } from '../helpers/serve-catalog';
import { eventually } from '../helpers/waits';
import { OPT, REP, goPayload } from '../helpers/wire';

const TTL_S = 2;
const TAKEOVER_WAIT_MS = 20_000;
const PATTERN = Buffer.alloc(65536, 0xa5);

interface Host {
  child: ChildProcess;
  socket: string;
  log: () => { event?: string; reason?: string; deadHost?: string }[];
}

async function startHost(t: Test, catalog: string, dir: string, host: string): Promise<Host> {
  const socket = path.join(dir, `${host}.sock`);
  const child = spawnXvd(['serve', '--host', host, '--lease-ttl', String(TTL_S), '--socket',
    socket], { catalog, env: { XVD_LOG_LEVEL: 'info', XVD_LOG_PRETTY: '0' } });
  let text = '';
  child.stderr?.setEncoding('utf8').on('data', (chunk: string) => (text += chunk));
  child.stdout?.resume();
  t.teardown(() => {
    if (child.exitCode === null && child.signalCode === null) child.kill('SIGKILL');
  });
  const log = (): { event?: string; reason?: string; deadHost?: string }[] => text.split('\n')
    .filter((line) => line.startsWith('{'))
    .map((line) => JSON.parse(line) as { event?: string; reason?: string; deadHost?: string });
  t.ok(await eventually(() => log().some((line) => 'serverId' in line), 30_000),
    `${host} registered`);
  return { child, socket, log };
}

/** GO for 1/xvda: the final option reply (ACK, or an error with its message). */
async function tryOpen(socket: string): Promise<{ client: ScriptedClient; type: number;
  message: string }> {
  const client = await connectUnix(socket);
  await client.start();
  const replies = await client.option(OPT.GO, goPayload('1/xvda'));
  const last = replies[replies.length - 1];
  return { client, type: last?.type ?? -1, message: last?.payload.toString('utf8') ?? '' };
}

async function writeFlush(client: ScriptedClient): Promise<void> {
  client.request({ type: 1, offset: 0, length: PATTERN.length, cookie: 1n, payload: PATTERN });
  t.equal((await client.readSimpleReply()).errno, 0, 'the write through A succeeds');
  client.request({ type: 3, cookie: 2n });
  t.equal((await client.readSimpleReply()).errno, 0, 'the flush through A succeeds');
}

t.test('a VD served by host alpha is refused on beta, and taken over after alpha froze',
  async (t) => {
    const dir = shortTempDir(t);
    const catalog = await makeServedCatalog(t.testdir(), 1);
    const alpha = await startHost(t, catalog, dir, 'alpha');
    const beta = await startHost(t, catalog, dir, 'beta');
    const onAlpha = await tryOpen(alpha.socket);
    t.equal(onAlpha.type, REP.ACK, 'alpha serves 1/xvda');
    await writeFlush(onAlpha.client);

    const refused = await tryOpen(beta.socket);
    t.equal(refused.type, REP.ERR_POLICY, 'beta refuses with NBD_REP_ERR_POLICY');
    t.match(refused.message, /served by host alpha .*lease is live/, 'naming host alpha');
    refused.client.end();
    t.ok(await eventually(() => beta.log().some((line) => line.event === 'export-refused' &&
      /host alpha/.test(line.reason ?? ''))), 'beta logs export-refused naming alpha');

    alpha.child.kill('SIGSTOP');
    const frozenAt = Date.now();
    let opened: Awaited<ReturnType<typeof tryOpen>> | null = null;
    while (Date.now() - frozenAt < TAKEOVER_WAIT_MS) {
      const attempt = await tryOpen(beta.socket);
      if (attempt.type === REP.ACK) {
        opened = attempt;
        break;
      }
      attempt.client.end();
      await new Promise((resolve) => setTimeout(resolve, 100));
    }
    if (opened === null) throw new Error('beta never took over');
    const tookMs = Date.now() - frozenAt;
    t.ok(tookMs >= TTL_S * 1000 - 200, `not before the TTL (${tookMs} ms)`);
    t.ok((await opened.client.readData(0, PATTERN.length)).equals(PATTERN),
      'beta serves every flushed byte');
    t.ok(beta.log().some((line) => line.event === 'takeover' && line.deadHost === 'alpha'),
      'beta logs the takeover of alpha');
    t.ok(await eventually(() => alpha.child.signalCode === 'SIGKILL', 5000),
      'alpha was fenced (SIGKILL: same machine, no RADOS client)');
    opened.client.end();
    onAlpha.client.end();
    const rows = serversAndLeases(catalog);
    t.same(rows.servers.length, 1, 'only beta is registered');
    const check = await runXvd(['check'], { catalog });
    t.equal(check.code, 0, `xvd check is clean: ${check.stdout}${check.stderr}`);
    beta.child.kill('SIGTERM');
    t.ok(await eventually(() => beta.child.exitCode !== null, 20_000), 'beta stops');
    t.equal(beta.child.exitCode, 0, 'beta exits 0');
  });

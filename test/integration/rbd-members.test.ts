/**
 * Pool members on RBD images, on a real single-node cluster, through the real CLI and a real
 * `xvd serve` with real NBD clients (nbdcopy, nbdinfo, python3-libnbd): `xvd format rbd:POOL/IMAGE
 * --size` creates a thin image with the layering feature only and adopts an existing one
 * without it; create, import, export, enlarge, delete and undelete work on it unchanged; a
 * client's bytes round-trip; block status shows what RBD holds; a reused extent reads as zeros
 * and RBD freed its objects (write-zeroes); a VD deleted under a writing client fences it
 * (ESHUTDOWN) before its extents go to a new VD, which reads as zeros.
 */
import t, { type Test } from 'tap';
import crypto from 'node:crypto';
import fs from 'node:fs';
import path from 'node:path';
import { runXvd, spawnXvd, type CliResult } from '../helpers/cli';
import { startCeph, type CephCluster } from '../helpers/ceph';
import { connectUnix, PYTHON_LIBNBD, runTool } from '../helpers/nbd-client';
import { shortTempDir } from '../helpers/process';

const MiB = 1024 * 1024;
const ESHUTDOWN = 108;

let cluster: CephCluster;
let catalog: string;

function xvd(args: readonly string[]): Promise<CliResult> {
  return runXvd(args, { catalog, env: { CEPH_CONF: cluster.conf } });
}

async function ok(t: Test, args: readonly string[]): Promise<string> {
  const result = await xvd(args);
  t.equal(result.code, 0, `xvd ${args.join(' ')}: ${result.stderr.trim()}`);
  return result.stdout.trim();
}

/** Objects of an image that RBD says exist (rbd diff, whole objects). */
function objectsOf(image: string): number {
  const diff = JSON.parse(cluster.rbd(['diff', '--whole-object', '--format', 'json',
    `${cluster.pool}/${image}`])) as { exists: string }[];
  return diff.filter((entry) => entry.exists === 'true').length;
}

/** `xvd serve --socket` on this cluster; stopped in teardown. */
async function serve(t: Test): Promise<string> {
  const socket = path.join(shortTempDir(t), 'nbd.sock');
  const child = spawnXvd(['serve', '--socket', socket], { catalog,
    env: { CEPH_CONF: cluster.conf } });
  t.teardown(() => {
    if (child.exitCode === null) child.kill('SIGKILL');
  });
  for (let waited = 0; !fs.existsSync(socket); waited += 50) {
    if (waited > 30_000 || child.exitCode !== null) throw new Error('serve did not start');
    await new Promise((resolve) => setTimeout(resolve, 50));
  }
  return socket;
}

async function attach(t: Test, id: string, device: string): Promise<void> {
  await ok(t, ['vbd', 'add', `vd:${id}`, device, '--domain', '1', '--mode', 'w']);
}

t.before(async () => {
  cluster = await startCeph(t);
  catalog = path.join(t.testdir(), 'catalog.sqlite');
});

t.test('format creates a thin image or adopts an existing one', async (t) => {
  const made = await ok(t, ['format', `rbd:${cluster.pool}/m1`, '--size', '64M']);
  t.match(made, /^rbd:rbd\/m1: 16 extents of 4\.00 MiB/, made);
  const info = JSON.parse(cluster.rbd(['info', '--format', 'json', `${cluster.pool}/m1`])) as {
    size: number; features: string[];
  };
  t.equal(info.size, 64 * MiB, 'the image has --size');
  t.same(info.features, ['layering'], 'layering only: no exclusive lock moving between hosts');
  t.equal(objectsOf('m1'), 0, 'thin: no object written');

  cluster.rbd(['create', '--size', '32M', `${cluster.pool}/adopted`]);
  const adopted = JSON.parse(await ok(t, ['format', `rbd:${cluster.pool}/adopted`, '--json',
    '--extent-size', '1M'])) as { size: number; extents: number };
  t.same([adopted.size, adopted.extents], [32 * MiB, 32], 'an existing image keeps its size');

  const missing = await xvd(['format', `rbd:${cluster.pool}/absent`]);
  t.equal(missing.code, 1);
  t.match(missing.stderr, /^xvd: format: rbd:rbd\/absent: no such image or pool \(pass --size/);
  const twice = await xvd(['format', `rbd:${cluster.pool}/m1`, '--size', '64M']);
  t.equal(twice.code, 1);
  t.match(twice.stderr, /already in the pool/);
  const free = JSON.parse(await ok(t, ['free', '--json'])) as unknown;
  t.match(JSON.stringify(free), /"kind":"rbd"/, 'free lists the members as rbd');
});

t.test('import, export, enlarge, delete and undelete on RBD', async (t) => {
  const dir = t.testdir();
  const input = path.join(dir, 'input');
  const data = crypto.randomBytes(12 * MiB);
  data.fill(0, 4 * MiB, 8 * MiB); // a zero run: stays a hole
  fs.writeFileSync(input, data);
  const id = await ok(t, ['import', input, '--name', 'imported']);
  const output = path.join(dir, 'output');
  await ok(t, ['export', id, output]);
  t.ok(fs.readFileSync(output).equals(data), 'export reads back what import wrote');

  await ok(t, ['enlarge', id, '8M']);
  await ok(t, ['export', id, `${output}.grown`]);
  const grown = fs.readFileSync(`${output}.grown`);
  t.equal(grown.length, 20 * MiB);
  t.ok(grown.subarray(12 * MiB).equals(Buffer.alloc(8 * MiB)), 'the enlarged part reads zeros');

  await ok(t, ['delete', id]);
  await ok(t, ['undelete', id]);
  await ok(t, ['export', id, `${output}.back`]);
  t.ok(fs.readFileSync(`${output}.back`).subarray(0, 12 * MiB).equals(data), 'undelete brings it back');
});

t.test('a real NBD client reads, writes and sees block status through xvd serve', async (t) => {
  const dir = t.testdir();
  const id = await ok(t, ['create', '16M', '--on', `rbd:${cluster.pool}/m1`]);
  await attach(t, id, 'xvdn');
  const socket = await serve(t);
  const uri = `nbd+unix:///1/xvdn?socket=${socket}`;

  const pattern = crypto.randomBytes(4 * MiB);
  fs.writeFileSync(path.join(dir, 'pattern'), pattern);
  const script = 'import nbd, sys\nh = nbd.NBD()\nh.connect_uri(sys.argv[1])\n' +
    `h.pwrite(open(sys.argv[2], 'rb').read(), ${4 * MiB}, nbd.CMD_FLAG_FUA)\nh.flush()\n`;
  const wrote = await runTool(PYTHON_LIBNBD, ['-c', script, uri, path.join(dir, 'pattern')]);
  t.equal(wrote.code, 0, `libnbd wrote with FUA and flushed: ${wrote.stderr}`);

  const copy = path.join(dir, 'copy');
  const copied = await runTool('nbdcopy', [uri, copy]);
  t.equal(copied.code, 0, `nbdcopy read the export: ${copied.stderr}`);
  const whole = fs.readFileSync(copy);
  t.ok(whole.subarray(4 * MiB, 8 * MiB).equals(pattern), 'the written bytes read back');
  t.ok(whole.subarray(0, 4 * MiB).equals(Buffer.alloc(4 * MiB)), 'the rest reads zeros');

  const map = await runTool('nbdinfo', ['--map', '--json', uri]);
  t.equal(map.code, 0, map.stderr);
  const runs = JSON.parse(map.stdout) as { offset: number; length: number; type: number }[];
  const dataRuns = runs.filter((run) => (run.type & 1) === 0);
  t.same(dataRuns.map((run) => [run.offset, run.length]), [[4 * MiB, 4 * MiB]],
    'block status: the written extent is data, the others holes');
});

t.test('phy: and extents: VBDs on an RBD member are judged for sharing', async (t) => {
  const vd = await ok(t, ['create', '4M', '--on', `rbd:${cluster.pool}/adopted`]);
  const shown = JSON.parse(await ok(t, ['show', vd, '--json'])) as
    { extents: { path: string; offset: number }[] };
  const at = shown.extents[0]!.offset;
  const over = `extents:rbd:${cluster.pool}/adopted:${at}B+1M`;
  const refused = await xvd(['vbd', 'add', over, 'xvdx', '--domain', '2', '--mode', 'w']);
  t.equal(refused.code, 1, 'a writable extent list over a VD is refused at level 0');
  t.match(refused.stderr, /^xvd: .*(share|overlap|expert)/i, refused.stderr.trim());
  await ok(t, ['vbd', 'add', over, 'xvdx', '--domain', '2', '--mode', 'r', '--expert', '1']);
  const phy = await xvd(['vbd', 'add', `phy:rbd:${cluster.pool}/adopted`, 'xvdy', '--domain', '2',
    '--mode', 'w']);
  t.equal(phy.code, 1, 'a writable phy: over the member is refused');
  const outside = await xvd(['vbd', 'add', `phy:rbd:${cluster.pool}/absent`, 'xvdz', '--domain',
    '2', '--mode', 'r']);
  t.match(outside.stderr, /only as a pool member/, 'an image outside the pool is refused');
  const list = await ok(t, ['vbd', 'list', '--json']);
  t.match(list, new RegExp(`rbd:${cluster.pool}/adopted`), 'the VBD names the member');
  await ok(t, ['vbd', 'remove', 'xvdx', '--domain', '2']);
});

/** Writes a marker in a loop until the server refuses; how it ended. */
async function writeUntilFenced(socket: string, onWrites: () => void): Promise<string> {
  const client = await connectUnix(socket);
  await client.handshake({ name: '1/xvdf' });
  const payload = Buffer.alloc(64 * 1024, 0xa5);
  for (let index = 0; index < 100_000; index++) {
    try {
      client.request({ type: 1, offset: (index * payload.length) % (8 * MiB),
        cookie: BigInt(index + 1), payload });
      const reply = await client.readSimpleReply();
      if (reply.errno === ESHUTDOWN) return 'eshutdown';
      if (reply.errno !== 0) return `errno ${reply.errno}`;
    } catch {
      return 'closed';
    }
    if (index === 20) onWrites();
  }
  return 'never fenced';
}

t.test('zero on reuse and fencing on a small RBD member', async (t) => {
  const dir = t.testdir();
  await ok(t, ['format', `rbd:${cluster.pool}/small`, '--size', '8M']);
  const first = await ok(t, ['create', '8M', '--on', `rbd:${cluster.pool}/small`]);
  await attach(t, first, 'xvdf');
  const socket = await serve(t);
  let deleted: Promise<CliResult> | null = null;
  const ended = await writeUntilFenced(socket, () => {
    deleted = xvd(['delete', first]);
  });
  t.equal(ended, 'eshutdown', 'the writing client is told ESHUTDOWN');
  t.equal((await deleted!)?.code, 0, 'delete succeeded');
  t.ok(objectsOf('small') > 0, 'the old VD left objects on the image');

  const second = await ok(t, ['create', '8M', '--on', `rbd:${cluster.pool}/small`]);
  const output = path.join(dir, 'second');
  await ok(t, ['export', second, output]);
  const bytes = fs.readFileSync(output);
  t.equal(bytes.indexOf(0xa5), -1, 'no marker byte in the new VD');
  t.ok(bytes.equals(Buffer.alloc(8 * MiB)), 'the new VD reads zeros');
  t.equal(objectsOf('small'), 0, 'zeroing freed the objects (write-zeroes, not written zeros)');
});

/**
 * Virtual machines boot from clones of a VD: the golden root filesystem
 * (scripts/testhost/golden.sh) is imported once and cloned four times (`xvd clone`); each clone
 * is domain N's `xvda`, served by one `xvd serve`; four qemu guests (TCG) boot from them at the
 * same time through qemu's own NBD client (two over TCP, `nbd://`, two over the Unix socket,
 * `nbd+unix://`). Each guest writes its name and a file of its own, syncs and powers off. Then,
 * from the VDs read back with `xvd export`: each clone holds its own name and file and no other
 * guest's, its ext4 is clean, the golden VD is unchanged byte for byte, and the clones own no
 * more than the extents their guests changed (`xvd show --json`), which is all the pool lost
 * (`xvd free`). The timings of each step are printed as comments.
 */
import t, { type Test } from 'tap';
import { spawnSync, type ChildProcess } from 'node:child_process';
import crypto from 'node:crypto';
import fs from 'node:fs';
import net from 'node:net';
import path from 'node:path';
import { makeImage, runXvd, spawnXvd } from '../helpers/cli';
import { freePort, shortTempDir, stopChild } from '../helpers/process';
import { requireTools, testhostBroken, testhostSkipReason } from '../helpers/testhost';
import { bootVm, differingExtents, prepareGolden, sha256File, type VmResult } from
  '../helpers/vm';

const MIB = 1024 * 1024;
const EXTENT_BYTES = MIB;
const POOL_BYTES = 512 * MIB;
const GUESTS = 4;
/** Each guest's boot to power-off; four share two CPUs under TCG. */
const BOOT_TIMEOUT_MS = 90_000;
const READY_TIMEOUT_MS = 30_000;
const READY_POLL_MS = 50;
/** A clone's own extents beyond those whose bytes differ from the golden image: ext4 may
 * rewrite a block with the bytes it had, and the extent is copied all the same. */
const REWRITTEN_EXTENTS_MAX = 2;

interface Guest {
  domain: number;
  name: string;
  id: string;
  drive: string;
}

async function xvd(catalog: string, args: string[]): Promise<string> {
  const result = await runXvd(args, { catalog });
  if (result.code !== 0) throw new Error(`xvd ${args.join(' ')}: ${result.stderr.trim()}`);
  return result.stdout.trim();
}

async function freeBytes(catalog: string): Promise<number> {
  return (JSON.parse(await xvd(catalog, ['free', '--json'])) as { free: number }).free;
}

async function timed<T>(timings: Map<string, number>, step: string, body: () => Promise<T>):
  Promise<T> {
  const startMs = Date.now();
  const result = await body();
  timings.set(step, Date.now() - startMs);
  return result;
}

function canConnect(options: net.NetConnectOpts): Promise<boolean> {
  return new Promise((resolve) => {
    const socket = net.connect(options, () => {
      socket.destroy();
      resolve(true);
    });
    socket.once('error', () => resolve(false));
  });
}

/** One `xvd serve` on a TCP port and a Unix socket; resolves once both accept connections. */
async function startServe(t: Test, catalog: string, port: number, socket: string):
  Promise<ChildProcess> {
  const child = spawnXvd(['serve', '--listen', `127.0.0.1:${port}`, '--socket', socket],
    { catalog });
  let stderr = '';
  child.stderr?.setEncoding('utf8').on('data', (chunk: string) => (stderr += chunk));
  t.teardown(() => {
    if (child.exitCode === null) child.kill('SIGKILL');
  });
  for (let waitedMs = 0; waitedMs < READY_TIMEOUT_MS; waitedMs += READY_POLL_MS) {
    if (child.exitCode !== null) throw new Error(`xvd serve exited ${child.exitCode}: ${stderr}`);
    if (await canConnect({ host: '127.0.0.1', port }) && await canConnect({ path: socket })) {
      return child;
    }
    await new Promise((resolve) => setTimeout(resolve, READY_POLL_MS));
  }
  throw new Error(`xvd serve did not start listening: ${stderr}`);
}

/** Four clones of the golden VD, each domain N's writable `xvda` (made in parallel). */
function makeGuests(catalog: string, goldenId: string, port: number, socket: string):
  Promise<Guest[]> {
  return Promise.all(Array.from({ length: GUESTS }, async (_, index) => {
    const domain = index + 1;
    const name = `guest${domain}`;
    const id = await xvd(catalog, ['clone', goldenId, '--name', name]);
    await xvd(catalog, ['vbd', 'add', `vd:${id}`, 'xvda', '--domain', String(domain),
      '--mode', 'w']);
    const exportName = `${domain}/xvda`;
    const drive = domain <= GUESTS / 2 ? `nbd://127.0.0.1:${port}/${exportName}`
      : `nbd+unix:///${exportName}?socket=${socket}`;
    return { domain, name, id, drive };
  }));
}

function debugfsCat(image: string, file: string): Buffer {
  const cat = spawnSync('debugfs', ['-R', `cat ${file}`, image], { maxBuffer: 64 * MIB });
  return cat.stdout;
}

function debugfsList(image: string, dir: string): string[] {
  const ls = spawnSync('debugfs', ['-R', `ls -p ${dir}`, image], { encoding: 'utf8' });
  return ls.stdout.split('\n').map((line) => line.split('/')[5] ?? '')
    .filter((name) => name !== '' && name !== '.' && name !== '..').sort();
}

function reportGuest(t: Test, result: VmResult): void {
  t.comment(`${result.name}: boot to power-off ${result.elapsedMs} ms, exit ${result.exitCode}`);
  if (!result.isDone) t.comment(result.console.split('\n').slice(-60).join('\n'));
}

/** The guest powered off after writing; its VD holds its name, its file and no other's. */
function checkGuest(t: Test, guest: Guest, result: VmResult, image: string,
  goldenRelease: Buffer): void {
  t.equal(result.failure, '', `${guest.name} reported no failure`);
  t.ok(result.isDone, `${guest.name} printed XVD-GUEST-DONE`);
  t.equal(result.exitCode, 0, `${guest.name}: qemu exited 0 (the guest powered off)`);
  t.equal(result.values.get('name'), guest.name, `${guest.name} read its name back`);
  const fsck = spawnSync('e2fsck', ['-fn', image], { encoding: 'utf8' });
  t.equal(fsck.status, 0, `${guest.name}'s ext4 is clean${fsck.status === 0 ? ''
    : `: ${fsck.stdout}`}`);
  t.equal(debugfsCat(image, '/etc/hostname').toString(), `${guest.name}\n`,
    `${guest.name}'s VD holds its name`);
  const data = debugfsCat(image, `/home/${guest.name}/data`);
  t.equal(crypto.createHash('sha256').update(data).digest('hex'),
    result.values.get('data_sha256'), `${guest.name}'s VD holds the file it wrote`);
  t.same(debugfsList(image, '/home'), [guest.name], `${guest.name}'s VD has no other's file`);
  t.same(debugfsCat(image, '/etc/golden-release'), goldenRelease,
    `${guest.name}'s VD still reads the golden image's files`);
}

t.test('four clones of a golden VD boot as four domains at once, each writes only its own',
  async (t) => {
    const skip = testhostSkipReason();
    if (skip !== null) return t.skip(`virtual machines: ${skip}`, () => undefined);
    if (!requireTools(t, ['mke2fs', 'e2fsck', 'debugfs', 'busybox'])) return;
    const broken = await testhostBroken();
    if (broken !== null) return t.fail(broken);
    const timings = new Map<string, number>();
    const golden = await prepareGolden();
    const goldenSha = sha256File(golden);
    const goldenRelease = debugfsCat(golden, '/etc/golden-release');
    t.match(goldenRelease.toString(), /golden/, 'the golden image has its release file');

    const dir = t.testdir();
    const catalog = path.join(dir, 'catalog.sqlite');
    await xvd(catalog, ['format', path.join(dir, 'pool.img'), '--size', `${POOL_BYTES}B`,
      '--extent-size', `${EXTENT_BYTES}B`]);
    const goldenId = await timed(timings, 'import', () =>
      xvd(catalog, ['import', golden, '--name', 'golden']));
    const goldenBytes = fs.statSync(golden).size;
    const goldenOut = path.join(dir, 'golden-before.img');
    await xvd(catalog, ['export', goldenId, goldenOut]);
    t.equal(sha256File(goldenOut), goldenSha, 'the golden VD reads as the image');

    const port = await freePort();
    const socket = path.join(shortTempDir(t, 'xvd-vm-'), 'nbd.sock');
    const free1 = await freeBytes(catalog);
    const guests = await timed(timings, 'clone', () => makeGuests(catalog, goldenId, port,
      socket));
    await checkFreshClones(t, catalog, goldenId, guests, free1);

    const serve = await startServe(t, catalog, port, socket);
    const results = await timed(timings, 'boot', () => Promise.all(guests.map((guest) =>
      bootVm({ drive: guest.drive, name: guest.name, timeoutMs: BOOT_TIMEOUT_MS }))));
    await stopChild(serve);
    t.equal(serve.exitCode, 0, 'xvd serve exits 0 on SIGTERM');
    for (const result of results) reportGuest(t, result);

    await timed(timings, 'verify', async () => {
      const usage = await verifyClones(t, catalog, dir, guests, results, goldenRelease,
        goldenOut);
      const goldenAfter = path.join(dir, 'golden-after.img');
      await xvd(catalog, ['export', goldenId, goldenAfter]);
      t.equal(sha256File(goldenAfter), goldenSha, 'the golden VD is unchanged byte for byte');
      t.equal(free1 - await freeBytes(catalog), usage.ownBytes + usage.reserveBytes,
        'the pool lost the clones\' own and reserved extents, each counted once');
      t.ok(usage.ownBytes <= (usage.changedExtents + GUESTS * REWRITTEN_EXTENTS_MAX) *
        EXTENT_BYTES, `the clones own ${usage.ownBytes / MIB} MiB together, little more ` +
        `than the ${usage.changedExtents} extent(s) their guests changed`);
      t.equal(usage.reserveBytes, 0, 'the stopped server gave its copy-on-write reserves back');
      t.ok(usage.ownBytes < goldenBytes, `the clones own less than one copy of the golden VD`);
      t.equal((await runXvd(['check'], { catalog })).code, 0, 'xvd check is clean');
    });
    await timed(timings, 'delete', () => Promise.all(guests.map(async (guest) => {
      await xvd(catalog, ['vbd', 'remove', 'xvda', '--domain', String(guest.domain)]);
      await xvd(catalog, ['delete', guest.id]);
    })));
    t.equal(await freeBytes(catalog), free1, 'deleting the clones gives back their extents');
    t.comment(`timings (ms): ${[...timings].map(([step, ms]) => `${step} ${ms}`).join(', ')}`);
  });

interface Shown {
  size: number;
  own_bytes: number;
  shared_bytes: number;
  reserve_bytes: number;
  origin: number | null;
}

async function showVd(catalog: string, id: string): Promise<Shown> {
  return JSON.parse(await xvd(catalog, ['show', id, '--json'])) as Shown;
}

/** A fresh clone takes no space and shares all of the golden VD. */
async function checkFreshClones(t: Test, catalog: string, goldenId: string, guests: Guest[],
  freeBefore: number): Promise<void> {
  t.equal(await freeBytes(catalog), freeBefore, 'four clones take no space until written');
  const shown = await showVd(catalog, guests[0]?.id ?? '');
  t.same({ own: shown.own_bytes, shared: shown.shared_bytes, origin: shown.origin },
    { own: 0, shared: shown.size, origin: Number(goldenId) },
    'a fresh clone shares every byte with the golden VD');
}

interface Usage {
  changedExtents: number;
  ownBytes: number;
  reserveBytes: number;
}

/** Checks each guest's clone; returns what they changed, own and hold in reserve together. */
async function verifyClones(t: Test, catalog: string, dir: string, guests: Guest[],
  results: VmResult[], goldenRelease: Buffer, goldenImage: string): Promise<Usage> {
  const readBack = await Promise.all(guests.map(async (guest) => {
    const image = path.join(dir, `${guest.name}.img`);
    await xvd(catalog, ['export', guest.id, image]);
    return { image, shown: await showVd(catalog, guest.id) };
  }));
  const usage: Usage = { changedExtents: 0, ownBytes: 0, reserveBytes: 0 };
  for (const [index, guest] of guests.entries()) {
    const result = results[index];
    const read = readBack[index];
    if (result === undefined || read === undefined) throw new Error(`no ${guest.name}`);
    checkGuest(t, guest, result, read.image, goldenRelease);
    const changed = differingExtents(read.image, goldenImage, EXTENT_BYTES);
    const own = read.shown.own_bytes;
    t.ok(changed > 0, `${guest.name} changed ${changed} extent(s)`);
    t.ok(own >= changed * EXTENT_BYTES && own <= (changed + REWRITTEN_EXTENTS_MAX) *
      EXTENT_BYTES, `${guest.name} owns ${own / MIB} MiB: the extents it changed ` +
      `(and at most ${REWRITTEN_EXTENTS_MAX} rewritten)`);
    t.equal(read.shown.shared_bytes + own, read.shown.size,
      `${guest.name} shares every other byte with the golden VD`);
    usage.changedExtents += changed;
    usage.ownBytes += own;
    usage.reserveBytes += read.shown.reserve_bytes;
  }
  return usage;
}

t.test('a guest whose disk holds no filesystem says why, and boot.sh exits 1', async (t) => {
  const skip = testhostSkipReason();
  if (skip !== null) return t.skip(`virtual machines: ${skip}`, () => undefined);
  const broken = await testhostBroken();
  if (broken !== null) return t.fail(broken);
  const disk = makeImage(path.join(t.testdir(), 'blank.img'), 16 * MIB);
  const result = await bootVm({ drive: disk, name: 'blank', timeoutMs: BOOT_TIMEOUT_MS });
  t.comment(`blank disk: boot to power-off ${result.elapsedMs} ms`);
  t.equal(result.exitCode, 1, 'boot.sh exits 1: the guest reported a failure');
  t.match(result.failure, /cannot mount \/dev\/vda/, 'the initramfs says the root did not mount');
  t.notOk(result.isDone, 'no guest ran');
});

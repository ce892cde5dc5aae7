/**
 * Issue 15, defect 4: `xvd import` is all or nothing across SIGKILL. A real import of a 192 MiB
 * file is killed while its copy runs, decided by state: the pool file has gained at least
 * COPY_STARTED_BYTES of written blocks (the zeroing before the copy only punches holes). Then no
 * VD appeared (not in `list`, not in `list --all`), `xvd check` passes and explains the abandoned
 * import, the next command frees its extents (`free` as before), and a second import reuses them
 * and reads back byte-identical, holes included (the half-copied data was zeroed on reuse).
 */
import crypto from 'node:crypto';
import fs from 'node:fs';
import path from 'node:path';
import t from 'tap';
import { makeImage, runXvd, spawnXvd } from '../helpers/cli';

const MIB = 1024 * 1024;
const SOURCE_BYTES = 192 * MIB;
/** Written blocks in the pool that prove the copy (not the zeroing) is under way. */
const COPY_STARTED_BYTES = 16 * MIB;
const POLL_DEADLINE_MS = 60_000;

function sha256(file: string): string {
  return crypto.createHash('sha256').update(fs.readFileSync(file)).digest('hex');
}

/** Every MiB holds data (a seeded pattern), so the copy writes the whole file. */
function denseSource(file: string): void {
  const fd = fs.openSync(file, 'w');
  const block = crypto.createHash('sha512').update('seed').digest();
  const chunk = Buffer.alloc(MIB);
  for (let at = 0; at < MIB; at += block.length) block.copy(chunk, at);
  for (let i = 0; i < SOURCE_BYTES / MIB; i++) {
    chunk.writeUInt32BE(i, 0);
    fs.writeSync(fd, chunk, 0, MIB, i * MIB);
  }
  fs.closeSync(fd);
}

/** Mostly holes: where the killed import wrote, the reused extents must read as zero. */
function sparseSource(file: string): void {
  makeImage(file, SOURCE_BYTES);
  const fd = fs.openSync(file, 'r+');
  for (const offset of [0, 5 * MIB + 512, 100 * MIB, SOURCE_BYTES - 4096]) {
    fs.writeSync(fd, crypto.randomBytes(4096), 0, 4096, offset);
  }
  fs.closeSync(fd);
}

async function ok(args: string[], catalog: string): Promise<string> {
  const result = await runXvd(args, { catalog });
  if (result.code !== 0) throw new Error(`xvd ${args.join(' ')}: ${result.code}: ${result.stderr}`);
  return result.stdout;
}

/** Starts an import and SIGKILLs it once the pool has COPY_STARTED_BYTES more written. */
async function killDuringCopy(catalog: string, pool: string, source: string):
  Promise<{ signal: NodeJS.Signals | null; stdout: string; writtenBytes: number }> {
  const baseBytes = fs.statSync(pool).blocks * 512;
  const child = spawnXvd(['import', source], { catalog });
  let stdout = '';
  child.stdout?.setEncoding('utf8').on('data', (chunk: string) => (stdout += chunk));
  const closed = new Promise<NodeJS.Signals | null>((resolve) =>
    child.on('close', (_code, signal) => resolve(signal)));
  const deadline = Date.now() + POLL_DEADLINE_MS;
  let writtenBytes = 0;
  while (child.exitCode === null && child.signalCode === null && Date.now() < deadline) {
    writtenBytes = fs.statSync(pool).blocks * 512 - baseBytes;
    if (writtenBytes >= COPY_STARTED_BYTES) {
      child.kill('SIGKILL');
      break;
    }
    await new Promise((resolve) => setTimeout(resolve, 1));
  }
  if (child.exitCode === null && child.signalCode === null) child.kill('SIGKILL');
  return { signal: await closed, stdout, writtenBytes };
}

t.test('SIGKILL during the copy of an import leaves no VD and frees its extents', async (t) => {
  const dir = t.testdir();
  const catalog = path.join(dir, 'c.sqlite');
  const pool = makeImage(path.join(dir, 'pool.img'), 256 * MIB);
  await ok(['format', pool, '--extent-size', '4M'], catalog);
  const dense = path.join(dir, 'dense.raw');
  denseSource(dense);
  const listBefore = await ok(['list', '--all', '--json'], catalog);
  const freeBefore = await ok(['free', '--json'], catalog);

  const killed = await killDuringCopy(catalog, pool, dense);
  t.equal(killed.signal, 'SIGKILL', 'the import was killed, not finished');
  t.ok(killed.writtenBytes >= COPY_STARTED_BYTES && killed.writtenBytes < SOURCE_BYTES,
    `killed while copying (${killed.writtenBytes / MIB} MiB written)`);
  t.equal(killed.stdout, '', 'no id was printed');

  const check = await runXvd(['check'], { catalog });
  t.equal(check.code, 0, `check passes: ${check.stdout}${check.stderr}`);
  t.match(check.stdout, /note: VD \d+: import abandoned/, 'check explains the abandoned import');
  t.equal(await ok(['list', '--json'], catalog), '[]\n', 'list does not show it');
  t.equal(await ok(['list', '--all', '--json'], catalog), listBefore, 'nor list --all');
  t.equal(await ok(['free', '--json'], catalog), freeBefore, 'its extents are free again');
  const clean = await runXvd(['check'], { catalog });
  t.equal(clean.code, 0);
  t.notMatch(clean.stdout, /abandoned/, 'nothing left to explain after the cleanup');

  const sparse = path.join(dir, 'sparse.raw');
  sparseSource(sparse);
  const id = (await ok(['import', sparse], catalog)).trim();
  t.match(id, /^\d+$/);
  const out = path.join(dir, 'out.raw');
  await ok(['export', id, out], catalog);
  t.equal(sha256(out), sha256(sparse), 'the next import reads back byte-identical');
  t.equal((await runXvd(['check'], { catalog })).code, 0);
});

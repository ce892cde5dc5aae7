/**
 * CatalogWriterThread, the worker thread that writes heartbeats and leases for `xvd serve`:
 * errors come back as the class, code and message the catalog threw; requests commit and answer
 * in the order they were sent; a catalog it cannot open fails its start; once its worker is
 * terminated every pending and later request rejects with ERR_SERVE_CATALOG_WRITER and the death
 * is logged; and the thread never keeps a process alive, closed or not (run from dist/, as the
 * CLI runs it).
 */
import { spawn } from 'node:child_process';
import fs from 'node:fs';
import path from 'node:path';
import pino from 'pino';
import t, { type Test } from 'tap';
import { identityOfFile, openCatalog, type Catalog } from '../../src/catalog';
import { XvdError, IoError, ProtocolError, UsageError } from '../../src/errors';
import { errorOfWire, wireErrorOf } from '../../src/serve/catalog-writer';
import { CatalogWriterThread } from '../../src/serve/catalog-writer-thread';
import { ensureBuilt, ROOT } from '../helpers/cli';
import { captureLog } from '../helpers/serve-catalog';

const MiB = 1024 * 1024;
const EXIT_WAIT_MS = 20_000;

async function setup(t: Test): Promise<{ catalog: Catalog; serverId: number; vdId: number }> {
  const dir = t.testdir();
  const image = path.join(dir, 'pool.img');
  fs.writeFileSync(image, Buffer.alloc(4 * MiB));
  const catalog = openCatalog(path.join(dir, 'catalog.sqlite'));
  t.teardown(() => catalog.close());
  const st = fs.statSync(image);
  catalog.formatMember({ path: image, kind: 'file', sizeBytes: 4 * MiB, extentSize: MiB,
    identity: identityOfFile(st.dev, st.ino) });
  const vd = catalog.createVd({ size: 2 * MiB, zero: false });
  return { catalog, serverId: catalog.registerServer(), vdId: vd.id };
}

async function startThread(t: Test, catalog: Catalog, log = pino({ level: 'silent' })):
  Promise<CatalogWriterThread> {
  const thread = await CatalogWriterThread.start(catalog.path, log);
  t.teardown(() => thread.close());
  return thread;
}

async function rejection(promise: Promise<unknown>): Promise<unknown> {
  try {
    await promise;
  } catch (error) {
    return error;
  }
  throw new Error('expected a rejection');
}

t.test('errors come back as the class, code and message the catalog threw', async (t) => {
  const { catalog, serverId, vdId } = await setup(t);
  const thread = await startThread(t, catalog);
  const unknown = await rejection(thread.acquireLease(serverId + 100, vdId));
  t.ok(unknown instanceof XvdError, 'an XvdError');
  t.notOk(unknown instanceof UsageError, 'not a UsageError');
  t.equal((unknown as XvdError).code, 'ERR_CATALOG_SERVER_UNKNOWN');
  catalog.deleteVd(vdId);
  const deleted = await rejection(thread.acquireLease(serverId, vdId));
  let local: unknown = null;
  try {
    catalog.acquireLease(serverId, vdId);
  } catch (error) {
    local = error;
  }
  t.ok(deleted instanceof UsageError, 'a UsageError');
  t.equal((deleted as UsageError).code, 'ERR_VD_DELETED');
  t.equal((deleted as UsageError).message, (local as UsageError).message, 'the same message');
});

t.test('errors of every class survive the trip as data', async (t) => {
  const sqlite = Object.assign(new Error('database is locked'), { code: 'SQLITE_BUSY' });
  sqlite.name = 'SqliteError';
  const cases: Error[] = [
    new XvdError('ERR_VD_UNKNOWN', 'lease: no VD 9'),
    new UsageError('ERR_VD_DELETED', 'lease: VD 9 is deleted'),
    new ProtocolError('ERR_NBD_BAD_MAGIC', 'x: bad magic'),
    new IoError('ENOSPC', 'pwrite', 'pwrite: ENOSPC: full'),
    sqlite,
  ];
  for (const original of cases) {
    const back = errorOfWire(structuredClone(wireErrorOf(original)));
    t.equal(back.constructor, original.constructor, `${original.name}: same class`);
    t.equal(back.message, original.message, `${original.name}: same message`);
    t.equal((back as { code?: string }).code, (original as { code?: string }).code,
      `${original.name}: same code`);
  }
  const io = errorOfWire(wireErrorOf(new IoError('ENOSPC', 'pwrite', 'm'))) as IoError;
  t.same([io.errno, io.syscall], ['ENOSPC', 'pwrite'], 'IoError keeps errno and syscall');
});

t.test('requests commit and answer in the order they were sent', async (t) => {
  const { catalog, serverId, vdId } = await setup(t);
  const thread = await startThread(t, catalog);
  const answered: string[] = [];
  const sent = ['acquire', 'release', 'acquire', 'release', 'acquire', 'heartbeat', 'release',
    'acquire'];
  await Promise.all(sent.map((op, index) => {
    const request = op === 'acquire' ? thread.acquireLease(serverId, vdId)
      : op === 'release' ? thread.releaseLease(serverId, vdId) : thread.heartbeat(serverId);
    return request.then(() => answered.push(`${index} ${op}`));
  }));
  t.same(answered, sent.map((op, index) => `${index} ${op}`), 'answered in order');
  t.same(catalog.liveLeases().map((lease) => lease.vdId), [vdId], 'the last acquire holds');
  await Promise.all([thread.releaseLease(serverId, vdId), thread.acquireLease(serverId, vdId),
    thread.releaseLease(serverId, vdId)]);
  t.same(catalog.liveLeases(), [], 'and the last release releases');
});

t.test('a catalog the worker cannot open fails the start', async (t) => {
  const missing = path.join(t.testdir(), 'missing.sqlite');
  const error = await rejection(CatalogWriterThread.start(missing, pino({ level: 'silent' })));
  t.ok(error instanceof XvdError);
  t.equal((error as XvdError).code, 'ERR_CATALOG_OPEN');
  t.notOk(fs.existsSync(missing), 'and the worker did not create it');
});

t.test('a terminated worker: pending and later requests reject, and it is logged once',
  async (t) => {
    const { catalog, serverId, vdId } = await setup(t);
    const { log, lines } = captureLog();
    const thread = await startThread(t, catalog, log);
    const pending = Array.from({ length: 20 }, () => thread.acquireLease(serverId, vdId)
      .then(() => 'ok', (error: unknown) => error));
    await thread.worker.terminate();
    for (const outcome of await Promise.all(pending)) {
      if (outcome === 'ok') continue; // answered before the end
      t.equal((outcome as XvdError).code, 'ERR_SERVE_CATALOG_WRITER', 'pending: rejected');
    }
    const later = await rejection(thread.heartbeat(serverId));
    t.ok(later instanceof XvdError);
    t.equal((later as XvdError).code, 'ERR_SERVE_CATALOG_WRITER', 'later: rejected');
    t.match((later as XvdError).message, /worker thread exited/);
    const died = lines.filter((line) => line.msg.startsWith('catalog writer thread died'));
    t.equal(died.length, 1, 'the death is logged once');
    t.equal(died[0]?.level, 50, 'as an error');
    await thread.close();
  });

/** Plain JS run from dist/: starts the thread, one request, then closes it or not. */
const CHILD = `
const pino = require('pino');
const { CatalogWriterThread } = require('./dist/serve/catalog-writer-thread');
const [file, mode] = process.argv.slice(1);
CatalogWriterThread.start(file, pino({ level: 'silent' })).then(async (thread) => {
  await thread.heartbeat(999).catch((error) => process.stdout.write(error.code + '\\n'));
  if (mode === 'close') await thread.close();
  process.stdout.write('done\\n');
});
`;

function runChild(file: string, mode: string): Promise<{ code: number | null; out: string }> {
  const child = spawn(process.execPath, ['-e', CHILD, file, mode], { cwd: ROOT,
    stdio: ['ignore', 'pipe', 'inherit'] });
  let out = '';
  child.stdout.setEncoding('utf8').on('data', (chunk: string) => (out += chunk));
  const timer = setTimeout(() => child.kill('SIGKILL'), EXIT_WAIT_MS);
  return new Promise((resolve) => child.on('close', (code) => {
    clearTimeout(timer);
    resolve({ code, out });
  }));
}

t.test('the thread never keeps the process alive, closed or not (from dist/)', async (t) => {
  ensureBuilt();
  const { catalog } = await setup(t);
  for (const mode of ['close', 'leave']) {
    const { code, out } = await runChild(catalog.path, mode);
    t.equal(code, 0, `${mode}: the process exits by itself`);
    t.equal(out, 'ERR_CATALOG_SERVER_UNKNOWN\ndone\n', `${mode}: the worker answered`);
  }
});

/**
 * CatalogProvider's catalog writes through a CatalogWriter whose calls a test can hold: an open
 * is answered only once its lease is committed; a release waits for fence and drain, and a
 * reopen's acquire is sent only after the release before it committed; a heartbeat still running
 * at the next tick is skipped, not queued; stop waits for every release before it unregisters;
 * a writer that is gone makes opens of VD exports fail (null) while open exports keep serving.
 */
import fs from 'node:fs';
import path from 'node:path';
import t, { type Test } from 'tap';
import { identityOfFile, openCatalog, zeroPending, type Catalog } from '../../src/catalog';
import { XvdError } from '../../src/errors';
import { CatalogProvider } from '../../src/serve/catalog-provider';
import { catalogWriterOf, type CatalogWriter } from '../../src/serve/catalog-writer';
import { quietLog } from '../helpers/nbd-client';
import { eventually } from '../helpers/waits';

const MiB = 1024 * 1024;
const WAIT_MS_MAX = 5_000;

type Op = 'heartbeat' | 'acquireLease' | 'releaseLease';

/** The in-process writer, with a log of calls and a gate per op that tests can close. */
class GatedWriter implements CatalogWriter {
  readonly calls: string[] = [];
  private readonly inner: CatalogWriter;
  private readonly gates = new Map<Op, Promise<void>>();
  failure: Error | null = null;

  constructor(catalog: Catalog) {
    this.inner = catalogWriterOf(catalog);
  }

  /** Calls of `op` from now on wait until the returned function is called. */
  hold(op: Op): () => void {
    let open: () => void = () => undefined;
    this.gates.set(op, new Promise((resolve) => (open = resolve)));
    return () => {
      this.gates.delete(op);
      open();
    };
  }

  private async pass(op: Op, detail: string): Promise<void> {
    this.calls.push(`${op} ${detail}`);
    await this.gates.get(op);
    if (this.failure !== null) throw this.failure;
    this.calls.push(`${op} ${detail} committed`);
  }

  async heartbeat(serverId: number): Promise<void> {
    await this.pass('heartbeat', String(serverId));
    await this.inner.heartbeat(serverId);
  }

  async acquireLease(serverId: number, vdId: number): ReturnType<CatalogWriter['acquireLease']> {
    await this.pass('acquireLease', String(vdId));
    return this.inner.acquireLease(serverId, vdId);
  }

  async releaseLease(serverId: number, vdId: number): Promise<void> {
    await this.pass('releaseLease', String(vdId));
    await this.inner.releaseLease(serverId, vdId);
  }

  takeOverServer(serverId: number, heartbeatAtMs: number): Promise<boolean> {
    return this.inner.takeOverServer(serverId, heartbeatAtMs);
  }

  reserveCowExtents(...args: Parameters<CatalogWriter['reserveCowExtents']>):
  ReturnType<CatalogWriter['reserveCowExtents']> {
    return this.inner.reserveCowExtents(...args);
  }

  commitCowRemaps(...args: Parameters<CatalogWriter['commitCowRemaps']>):
  ReturnType<CatalogWriter['commitCowRemaps']> {
    return this.inner.commitCowRemaps(...args);
  }
}

interface Setup {
  catalog: Catalog;
  provider: CatalogProvider;
  writer: GatedWriter;
  /** resolve fences by hand: the fencer waits for this */
  fenceGate: { open(): void; promise: Promise<void> };
  events: string[];
}

async function setup(t: Test, heartbeatMs = 60_000): Promise<Setup> {
  const dir = t.testdir();
  const image = path.join(dir, 'pool.img');
  fs.writeFileSync(image, Buffer.alloc(8 * MiB));
  const catalog = openCatalog(path.join(dir, 'catalog.sqlite'));
  const st = fs.statSync(image);
  catalog.formatMember({ path: image, kind: 'file', sizeBytes: 8 * MiB, extentSize: MiB,
    identity: identityOfFile(st.dev, st.ino) });
  for (const device of ['xvda', 'xvdb']) {
    const vd = catalog.createVd({ size: 4 * MiB });
    catalog.addVbd({ domain: 1, device, mode: 'w', source: { kind: 'vd', vdId: vd.id } });
  }
  await zeroPending(catalog);
  const events: string[] = [];
  // the provider unregisters through the catalog itself: record when it does
  const watched = new Proxy(catalog, {
    get(target, key, receiver) {
      if (key !== 'unregisterServer') return Reflect.get(target, key, receiver) as unknown;
      return (serverId: number) => {
        events.push('unregister');
        target.unregisterServer(serverId);
      };
    },
  });
  const writer = new GatedWriter(catalog);
  let open: () => void = () => undefined;
  const fenceGate = { open: () => open(), promise: new Promise<void>((r) => (open = r)) };
  const provider = new CatalogProvider({ catalog: watched, writer, log: quietLog,
    pollMs: 60_000, heartbeatMs });
  provider.start({ fenceExport: async (name) => {
    events.push(`fence ${name}`);
    await fenceGate.promise;
    events.push(`drained ${name}`);
  } });
  t.teardown(async () => {
    fenceGate.open();
    await provider.stop();
    catalog.close();
  });
  return { catalog, provider, writer, fenceGate, events };
}

function sleep(ms: number): Promise<void> {
  return new Promise((resolve) => setTimeout(resolve, ms));
}

/** Resolves true when `promise` settles within ms, false when it is still pending then. */
async function settlesWithin(promise: Promise<unknown>, ms: number): Promise<boolean> {
  let isSettled = false;
  void promise.then(() => (isSettled = true), () => (isSettled = true));
  await sleep(ms);
  return isSettled;
}

function leasedVds(catalog: Catalog): number[] {
  return catalog.liveLeases().map((lease) => lease.vdId).sort();
}

t.test('an open is answered only once its lease is committed', async (t) => {
  const { catalog, provider, writer } = await setup(t);
  const release = writer.hold('acquireLease');
  const opening = provider.open('1/xvda', null);
  t.notOk(await settlesWithin(opening, 200), 'the open waits for the lease');
  t.same(leasedVds(catalog), [], 'no lease yet');
  release();
  const handle = await opening;
  t.equal(handle?.export.size, 4 * MiB, 'then it opens');
  t.same(leasedVds(catalog), [1], 'with the lease committed');
  handle?.release();
});

t.test('a release waits for fence and drain; a reopen acquires only after it committed',
  async (t) => {
    const { catalog, provider, writer, fenceGate, events } = await setup(t);
    const handle = await provider.open('1/xvda', null);
    t.ok(handle !== null);
    catalog.deleteVd(1);
    const reconciling = provider.reconcile();
    await sleep(50);
    t.same(events, ['fence 1/xvda'], 'the export is being fenced');
    t.notOk(writer.calls.includes('releaseLease 1'), 'no release before the drain');
    t.same(leasedVds(catalog), [1], 'the lease holds meanwhile');
    fenceGate.open();
    await reconciling;
    t.same(events, ['fence 1/xvda', 'drained 1/xvda']);
    t.same(leasedVds(catalog), [], 'released after the drain');
    handle?.release();

    // close and reopen the other export at once: release, then acquire, in that order
    const first = await provider.open('1/xvdb', null);
    const releaseHeld = writer.hold('releaseLease');
    first?.release();
    await sleep(20);
    const reopening = provider.open('1/xvdb', null);
    t.notOk(await settlesWithin(reopening, 200), 'the reopen waits for the release');
    t.equal(writer.calls.filter((call) => call === 'acquireLease 2').length, 1,
      'and sends no acquire before it');
    releaseHeld();
    const second = await reopening;
    t.equal(second?.export.size, 4 * MiB, 'the reopen succeeds');
    const order = writer.calls.filter((call) => call.endsWith(' 2 committed'));
    t.same(order, ['acquireLease 2 committed', 'releaseLease 2 committed',
      'acquireLease 2 committed'], 'acquire, release, acquire committed in that order');
    t.same(leasedVds(catalog), [2], 'the reopened VD is leased');
    second?.release();
  });

t.test('a heartbeat still running at the next tick is skipped, not queued', async (t) => {
  const { provider, writer } = await setup(t, 20);
  const count = (isCommit: boolean): number => writer.calls.filter((call) =>
    call.startsWith('heartbeat') && call.endsWith(' committed') === isCommit).length;
  const release = writer.hold('heartbeat');
  t.ok(await eventually(() => provider.heartbeatCounts.skipped >= 5, WAIT_MS_MAX),
    'ticks come while the first heartbeat is held');
  t.equal(count(false), 1, 'one heartbeat runs; no other was started');
  release();
  t.ok(await eventually(() => count(true) >= 3, WAIT_MS_MAX), 'heartbeats go on once it finished');
  const { ticks, skipped } = provider.heartbeatCounts;
  t.equal(count(false), ticks - skipped,
    `each of ${ticks} ticks started one heartbeat or was skipped (${skipped}): none was queued`);
});

t.test('stop waits for every release to commit before it unregisters', async (t) => {
  const { catalog, provider, writer, fenceGate, events } = await setup(t);
  fenceGate.open();
  const a = await provider.open('1/xvda', null);
  const b = await provider.open('1/xvdb', null);
  const releaseHeld = writer.hold('releaseLease');
  a?.release();
  const stopping = provider.stop();
  t.notOk(await settlesWithin(stopping, 200), 'stop waits for the releases');
  t.notOk(events.includes('unregister'), 'and has not unregistered');
  t.same(leasedVds(catalog), [1, 2], 'both leases still held');
  releaseHeld();
  await stopping;
  b?.release();
  t.same(writer.calls.filter((call) => call.startsWith('releaseLease') &&
    call.endsWith('committed')).sort(), ['releaseLease 1 committed', 'releaseLease 2 committed']);
  t.equal(events[events.length - 1], 'unregister', 'unregistered last');
  t.same(leasedVds(catalog), [], 'no lease left');
});

t.test('a writer that is gone: opens of VD exports fail, open exports keep serving',
  async (t) => {
    const { catalog, provider, writer } = await setup(t);
    const a = await provider.open('1/xvda', null);
    writer.failure = new XvdError('ERR_SERVE_CATALOG_WRITER', 'catalog writer: test: gone');
    t.equal(await provider.open('1/xvdb', null), null, 'a new VD export does not open');
    const shared = await provider.open('1/xvda', null);
    t.ok(shared !== null, 'an export already open is shared without a new lease');
    const data = Buffer.alloc(4096, 1);
    await shared!.export.read(0, data.length, data, 0);
    t.ok(data.equals(Buffer.alloc(4096)), 'and reads');
    a?.release();
    shared?.release();
    await provider.stop();
    t.same(leasedVds(catalog), [], 'unregistering at stop drops the lease the writer kept');
  });

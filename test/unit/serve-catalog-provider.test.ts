/**
 * CatalogProvider in one process over a real catalog and image file, with a fencer that records
 * what it was asked to fence: an enlarge replaces the export for new opens without a fence (the
 * old size until the new range is zeroed), a delete fences, and an open that races a change of
 * the VD's generation re-resolves instead of failing.
 */
import fs from 'node:fs';
import path from 'node:path';
import t, { type Test } from 'tap';
import { identityOfFile, openCatalog, zeroPending, type Catalog } from '../../src/catalog';
import { CatalogProvider } from '../../src/serve/catalog-provider';
import { quietLog } from '../helpers/nbd-client';

const MiB = 1024 * 1024;

async function setup(t: Test, wrap: (catalog: Catalog) => Catalog = (c) => c):
  Promise<{ catalog: Catalog; provider: CatalogProvider; fenced: string[] }> {
  const dir = t.testdir();
  const image = path.join(dir, 'pool.img');
  fs.writeFileSync(image, Buffer.alloc(16 * MiB, 0x5a));
  const catalog = openCatalog(path.join(dir, 'catalog.sqlite'));
  const st = fs.statSync(image);
  catalog.formatMember({ path: image, kind: 'file', sizeBytes: 16 * MiB, extentSize: MiB,
    identity: identityOfFile(st.dev, st.ino) });
  const vd = catalog.createVd({ size: 4 * MiB });
  await zeroPending(catalog);
  catalog.addVbd({ domain: 1, device: 'xvda', mode: 'w', source: { kind: 'vd', vdId: vd.id } });
  const fenced: string[] = [];
  const provider = new CatalogProvider({ catalog: wrap(catalog), log: quietLog, pollMs: 60_000 });
  provider.start({ fenceExport: async (name) => void fenced.push(name) });
  t.teardown(async () => {
    await provider.stop();
    catalog.close();
  });
  return { catalog, provider, fenced };
}

t.test('an enlarged VD is not fenced: old opens keep the old size, new ones get the new size '
  + 'once zeroed', async (t) => {
  const { catalog, provider, fenced } = await setup(t);
  const old = await provider.open('1/xvda', null);
  t.equal(old?.export.size, 4 * MiB);
  catalog.growVd(1, 4 * MiB);
  await provider.reconcile();
  t.same(fenced, [], 'no fence while the new range is pending zeroing');
  const during = await provider.open('1/xvda', null);
  t.equal(during?.export.size, 4 * MiB, 'a new open gets the old size meanwhile');
  await zeroPending(catalog);
  await provider.reconcile();
  t.same(fenced, [], 'no fence after zeroing either');
  const after = await provider.open('1/xvda', null);
  t.equal(after?.export.size, 8 * MiB, 'a new open gets the new size');
  const tail = Buffer.alloc(4 * MiB, 1);
  await after!.export.read(4 * MiB, tail.length, tail, 0);
  t.ok(tail.equals(Buffer.alloc(4 * MiB)), 'the new range reads as zeros');
  t.equal(old?.export.size, 4 * MiB, 'the first open keeps its size');
  const head = Buffer.alloc(MiB);
  await old!.export.read(0, head.length, head, 0);
  t.pass('and still reads');
  catalog.deleteVd(1);
  await provider.reconcile();
  t.same(fenced, ['1/xvda'], 'a delete fences');
  for (const handle of [old, during, after]) handle?.release();
});

t.test('an open racing a change of the VD\'s generation re-resolves instead of failing',
  async (t) => {
    let isRaced = false;
    const { provider } = await setup(t, (catalog) => new Proxy(catalog, {
      get(target, key, receiver) {
        if (key !== 'acquireLease') return Reflect.get(target, key, receiver) as unknown;
        return (serverId: number, vdId: number) => {
          if (!isRaced) {
            isRaced = true;
            target.growVd(vdId, 0); // another process commits between resolve and lease
          }
          return target.acquireLease(serverId, vdId);
        };
      },
    }));
    const handle = await provider.open('1/xvda', null);
    t.ok(isRaced, 'the race happened');
    t.equal(handle?.export.size, 4 * MiB, 'the open succeeded');
    handle?.release();
  });

/**
 * serve/catalog-writer-worker: the body of the catalog writer thread (started by
 * catalog-writer-thread.ts). It opens its own connection to the catalog file (never creating
 * it: the main thread opened and migrated it first), answers WRITER_OPEN_ID once that is done,
 * then runs each request as the Catalog call of the same name and answers it. Messages are
 * handled one at a time in arrival order, so requests commit in the order they were sent.
 * A thrown error is answered as data (catalog-writer.ts WireError); the thread itself does not
 * log (logging stays on the main thread). After `close` it closes its port and ends.
 */
import assert from 'node:assert';
import { parentPort, workerData, type MessagePort } from 'node:worker_threads';
import { openCatalog, type Catalog, type CowExtents, type Lease } from '../catalog/index';
import {
  WRITER_OPEN_ID, wireErrorOf, type WriterData, type WriterReply, type WriterRequest,
} from './catalog-writer';

type Result = Lease | boolean | CowExtents[] | null;

function run(catalog: Catalog, request: WriterRequest): Result {
  switch (request.op) {
    case 'heartbeat':
      catalog.heartbeat(request.serverId);
      return null;
    case 'acquireLease':
      return catalog.acquireLease(request.serverId, request.vdId, request.generation);
    case 'releaseLease':
      catalog.releaseLease(request.serverId, request.vdId);
      return null;
    case 'takeOverServer':
      return catalog.takeOverServer(request.serverId, request.heartbeatAtMs);
    case 'reserveCowExtents':
      return catalog.reserveCowExtents(request.serverId, request.vdId, request.extentSize,
        request.count);
    case 'commitCowRemaps':
      catalog.commitCowRemaps(request.serverId, request.vdId, request.remaps);
      return null;
    case 'close':
      catalog.close();
      return null;
  }
}

function answer(port: MessagePort, id: number, work: () => Result): void {
  let reply: WriterReply;
  try {
    const result = work();
    reply = typeof result === 'boolean' ? { id, isOk: true, lease: null, isTaken: result }
      : Array.isArray(result) ? { id, isOk: true, lease: null, runs: result }
        : { id, isOk: true, lease: result };
  } catch (error) {
    reply = { id, isOk: false, error: wireErrorOf(error) };
  }
  port.postMessage(reply);
}

function main(): void {
  const port = parentPort;
  assert(port !== null, 'catalog-writer-worker: not started as a worker thread');
  const data = workerData as WriterData;
  assert(typeof data.catalogPath === 'string');
  let catalog: Catalog;
  try {
    catalog = openCatalog(data.catalogPath, { create: false });
  } catch (error) {
    port.postMessage({ id: WRITER_OPEN_ID, isOk: false, error: wireErrorOf(error) } satisfies
      WriterReply);
    port.close();
    return;
  }
  port.postMessage({ id: WRITER_OPEN_ID, isOk: true, lease: null } satisfies WriterReply);
  port.on('message', (request: WriterRequest) => {
    assert(request.id > WRITER_OPEN_ID);
    answer(port, request.id, () => run(catalog, request));
    if (request.op === 'close') port.close();
  });
}

main();

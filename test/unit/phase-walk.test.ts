// Real connections walked through the phase table (src/nbd/phase.ts): every move a session
// makes is one the table lists (nextPhase asserts it), and sessions between them visit every
// phase but tls-handshake (test/integration/nbd-tls*.test.ts): a client that writes, reads, has
// a WRITE refused and disconnects; one that aborts during haggling; one that leaves while its
// option handler is still running (option-orphaned: the handle it binds is released after).
import t from 'tap';
import { PassThrough } from 'node:stream';
import { Connection } from '../../src/nbd/connection';
import { createServer } from '../../src/nbd/index';
import { PHASE, PHASE_TRANSITIONS, type Phase } from '../../src/nbd/phase';
import type { ExportProvider } from '../../src/nbd/provider';
import { createFixedProvider, memoryDisk, quietLog, streamClient } from '../helpers/nbd-client';
import { CMD, ERRNO, OPT, goPayload, optionFrame } from '../helpers/wire';

const moves = new Set<string>();
const visited = new Set<Phase>([PHASE.CLIENT_FLAGS]);
const original = Connection.prototype.setPhase;
Connection.prototype.setPhase = function record(this: Connection, next: Phase): void {
  moves.add(`${this.phase} -> ${next}`);
  visited.add(next);
  original.call(this, next);
};
t.teardown(() => {
  Connection.prototype.setPhase = original;
});

const waitFor = async (check: () => boolean): Promise<void> => {
  for (let tries = 0; !check(); tries++) {
    if (tries > 500) throw new Error('timed out');
    await new Promise((resolve) => setTimeout(resolve, 10));
  }
};

t.test('a session that writes, reads, has a WRITE refused and disconnects', async (t) => {
  const disk = memoryDisk('disk', 1024 * 1024);
  const server = createServer({ provider: createFixedProvider([disk]), log: quietLog });
  const { client, done } = streamClient(server);
  await client.handshake();
  client.request({ type: CMD.WRITE, offset: 0, cookie: 1n, payload: Buffer.alloc(4096, 7) });
  t.equal((await client.readSimpleReply()).errno, 0);
  client.request({ type: CMD.WRITE, offset: 1024 * 1024, cookie: 2n,
    payload: Buffer.alloc(512) });
  t.equal((await client.readSimpleReply()).errno, ERRNO.ENOSPC, 'past the end: refused');
  t.ok((await client.readData(0, 4096)).equals(Buffer.alloc(4096, 7)));
  client.request({ type: CMD.DISC });
  await done;
  t.equal(server.connectionCount, 0, 'finalized: the server forgot it');
});

t.test('a client that aborts during haggling', async (t) => {
  const server = createServer({ provider: createFixedProvider([memoryDisk()]), log: quietLog });
  const { client, done } = streamClient(server);
  await client.readGreeting();
  client.write(Buffer.from([0, 0, 0, 3]));
  await client.option(OPT.ABORT);
  await done;
  t.equal(server.connectionCount, 0);
});

t.test('a client that leaves while its option handler runs', async (t) => {
  const disk = memoryDisk();
  let release = (): void => undefined;
  const opened = new Promise<void>((resolve) => {
    release = resolve;
  });
  let isReleased = false;
  let isOpening = false;
  const provider: ExportProvider = {
    list: () => [],
    defaultName: () => 'disk',
    open: async () => {
      isOpening = true;
      await opened;
      return { export: disk, release: () => { isReleased = true; } };
    },
  };
  const server = createServer({ provider, log: quietLog });
  const toServer = new PassThrough();
  const toClient = new PassThrough();
  toClient.resume();
  const done = server.serveStream(toServer, toClient);
  toServer.write(Buffer.from([0, 0, 0, 3]));
  toServer.write(optionFrame(OPT.GO, goPayload('disk', [])));
  await waitFor(() => isOpening);
  toServer.destroy(); // the client is gone: a hard close
  await waitFor(() => visited.has(PHASE.OPTION_ORPHANED));
  t.equal(server.connectionCount, 1, 'kept while the handler runs');
  release();
  await done;
  t.ok(isReleased, 'the handle it bound was released');
  t.equal(server.connectionCount, 0);
});

t.test('every move was in the table, and the sessions visited every phase but TLS', (t) => {
  for (const move of moves) {
    const [from, to] = move.split(' -> ') as [Phase, Phase];
    t.ok(PHASE_TRANSITIONS[from].includes(to), move);
  }
  const phases = Object.values(PHASE).filter((phase) => phase !== PHASE.TLS_HANDSHAKE);
  t.same(phases.filter((phase) => !visited.has(phase)), []);
  t.end();
});

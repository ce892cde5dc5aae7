// routesOf (src/dataplane/routes.ts) over the full matrix of its inputs: for every combination
// the routes are those the connection chose before routing lived in one place (the conditions
// of connection.ts startDatapath/makeSender, datapath.ts isDatapathWanted, reply-sender.ts
// senderModeOf, written out again here as the oracle); every answer is consistent (one executor
// replies for the one that serves READs) and gives a reason; and a table of named rows says in
// words what each setting does.
import t from 'tap';
import {
  type DatapathSetting, type RouteInputs, type Routes, type SenderSetting, receiveOf, routesOf,
} from '../../src/dataplane/routes';

const BOOLEAN_KEYS = ['isNative', 'hasSocketFd', 'isTcp', 'isTls', 'isArenaReceive',
  'isFenced', 'hasDataPlane', 'isWriteMaxFull', 'isSendfile'] as const;
const DATAPATH: DatapathSetting[] = ['auto', 'off', 'thread', 'reader', 'reader-always'];
const SENDER: SenderSetting[] = ['auto', 'off', 'sendfile', 'copy', 'on'];

function* allInputs(): Generator<RouteInputs> {
  for (let bits = 0; bits < 1 << BOOLEAN_KEYS.length; bits++) {
    for (const datapath of DATAPATH) {
      for (const sender of SENDER) {
        const flags = Object.fromEntries(BOOLEAN_KEYS.map((key, index) =>
          [key, (bits & (1 << index)) !== 0])) as Record<(typeof BOOLEAN_KEYS)[number], boolean>;
        yield { ...flags, datapath, sender };
      }
    }
  }
}

/** The old reply-sender.ts senderModeOf, behind makeSender's checks. */
function oldSenderMode(inputs: RouteInputs): string | null {
  if (!inputs.hasSocketFd || inputs.isTls || !inputs.isNative) return null;
  switch (inputs.sender) {
    case 'off': return null;
    case 'sendfile': return 'sendfile';
    case 'copy': return 'copy';
    case 'on': return inputs.isTcp ? 'copy' : 'sendfile';
    default: return inputs.isSendfile && !inputs.isTcp ? 'sendfile' : null;
  }
}

/** The old startDatapath conditions, isDatapathWanted among them. */
function oldDatapath(inputs: RouteInputs): boolean {
  const isWanted = inputs.isNative && inputs.datapath !== 'off' && inputs.hasSocketFd &&
    oldSenderMode(inputs) === null;
  return inputs.isArenaReceive && inputs.hasSocketFd && !inputs.isTls && !inputs.isFenced &&
    isWanted && inputs.isWriteMaxFull && inputs.hasDataPlane;
}

/** The reader thread beside a data-path thread: always with XVD_DATAPATH=reader-always, none
 * with =thread or on TCP, else while a CPU is free (it came later than the scattered
 * conditions). */
function oldReader(inputs: RouteInputs): Routes['reader'] {
  if (inputs.datapath === 'reader-always') return 'always';
  return inputs.datapath === 'thread' || inputs.isTcp ? null : 'auto';
}

t.test('every combination of inputs routes as the scattered conditions did', (t) => {
  let count = 0;
  let wrong = 0;
  for (const inputs of allInputs()) {
    count += 1;
    const routes = routesOf(inputs);
    const mode = oldSenderMode(inputs);
    const isThread = oldDatapath(inputs);
    const expected: Omit<Routes, 'reason'> = mode !== null
      ? { receive: inputs.isArenaReceive ? 'arena' : 'stream', read: 'sender', write: 'js',
        other: 'js', replies: 'sender', senderMode: mode as Routes['senderMode'], reader: null }
      : isThread
        ? { receive: 'datapath', read: 'datapath', write: 'datapath', other: 'js',
          replies: 'datapath', senderMode: null, reader: oldReader(inputs) }
        : { receive: inputs.isArenaReceive ? 'arena' : 'stream', read: 'js', write: 'js',
          other: 'js', replies: 'stream', senderMode: null, reader: null };
    const { reason, ...rest } = routes;
    if (JSON.stringify(rest) !== JSON.stringify(expected) || reason === '') {
      wrong += 1;
      if (wrong <= 5) t.same(rest, expected, JSON.stringify(inputs));
    }
  }
  t.equal(count, (1 << BOOLEAN_KEYS.length) * DATAPATH.length * SENDER.length);
  t.equal(wrong, 0, `${count} combinations`);
  t.end();
});

t.test('every answer is consistent', (t) => {
  let bad = 0;
  for (const inputs of allInputs()) {
    const routes = routesOf(inputs);
    const isConsistent =
      (routes.read === 'datapath') === (routes.write === 'datapath') &&
      (routes.read === 'datapath') === (routes.receive === 'datapath') &&
      (routes.read === 'datapath') === (routes.replies === 'datapath') &&
      (routes.read === 'sender') === (routes.replies === 'sender') &&
      (routes.read === 'sender') === (routes.senderMode !== null) &&
      (routes.reader === null || routes.read === 'datapath') &&
      !(inputs.datapath === 'thread' && routes.reader !== null) &&
      !(inputs.isTcp && routes.reader === 'auto') &&
      !(inputs.datapath === 'reader-always' && routes.read === 'datapath' &&
        routes.reader !== 'always') &&
      routes.other === 'js' &&
      !(inputs.isTls && routes.read !== 'js') &&
      !(!inputs.isNative && routes.read !== 'js') &&
      !(inputs.datapath === 'off' && routes.read === 'datapath') &&
      !(inputs.sender === 'off' && routes.read === 'sender');
    if (!isConsistent) bad += 1;
  }
  t.equal(bad, 0);
  t.end();
});

const SERVED: RouteInputs = {
  isNative: true, hasSocketFd: true, isTcp: false, isTls: false, isArenaReceive: true,
  isFenced: false, hasDataPlane: true, isWriteMaxFull: true, datapath: 'auto', sender: 'auto',
  isSendfile: false,
};

const ROWS: [string, Partial<RouteInputs>, Routes['read'], string][] = [
  ['a plain socket read into arenas: the data-path thread', {}, 'datapath', 'data-path thread'],
  ['XVD_DATAPATH=off: JS', { datapath: 'off' }, 'js', 'XVD_DATAPATH=off'],
  ['no addon: JS', { isNative: false }, 'js', 'no native addon'],
  ['TLS: JS', { isTls: true, isArenaReceive: false }, 'js', 'TLS'],
  ['a stream pair (--stdio): JS', { hasSocketFd: false, isArenaReceive: false }, 'js',
    'not a socket of its own'],
  ['stream receive: JS', { isArenaReceive: false }, 'js', 'stream receive'],
  ['fenced while negotiating: JS', { isFenced: true }, 'js', 'fenced'],
  ['the memory export: JS', { hasDataPlane: false }, 'js', 'export without a data plane'],
  ['a small WRITE limit: JS', { isWriteMaxFull: false }, 'js',
    'WRITE limit below the data path\'s'],
  ['serve --sendfile on unix: the sender', { isSendfile: true }, 'sender',
    'serve --sendfile on a unix socket'],
  ['serve --sendfile on TCP: the thread', { isSendfile: true, isTcp: true }, 'datapath',
    'data-path thread'],
  ['XVD_SENDER=on over TCP: the sender, copying', { sender: 'on', isTcp: true }, 'sender',
    'XVD_SENDER=on'],
  ['XVD_SENDER=off with --sendfile: the thread', { sender: 'off', isSendfile: true },
    'datapath', 'data-path thread'],
  ['XVD_SENDER=copy on a stream pair: JS', { sender: 'copy', hasSocketFd: false }, 'js',
    'not a socket of its own'],
];

t.test('named rows', (t) => {
  for (const [name, change, read, reason] of ROWS) {
    const routes = routesOf({ ...SERVED, ...change });
    t.equal(routes.read, read, name);
    t.equal(routes.reason, reason, `${name}: reason`);
  }
  t.equal(routesOf({ ...SERVED, sender: 'on', isTcp: true }).senderMode, 'copy');
  t.equal(routesOf({ ...SERVED, sender: 'on' }).senderMode, 'sendfile');
  t.equal(routesOf(SERVED).reader, 'auto', 'by default a reader thread while a CPU is free');
  t.equal(routesOf({ ...SERVED, datapath: 'reader' }).reader, 'auto',
    'XVD_DATAPATH=reader: the same');
  t.equal(routesOf({ ...SERVED, datapath: 'thread' }).reader, null,
    'XVD_DATAPATH=thread: no reader');
  t.equal(routesOf({ ...SERVED, datapath: 'thread' }).read, 'datapath');
  t.equal(routesOf({ ...SERVED, isTcp: true }).reader, null,
    'TCP: no reader (its large replies go out corked, cheaper inline)');
  t.equal(routesOf({ ...SERVED, isTcp: true, datapath: 'reader-always' }).reader, 'always',
    'XVD_DATAPATH=reader-always: the reader on TCP too');
  t.equal(routesOf({ ...SERVED, datapath: 'reader-always' }).reader, 'always',
    'XVD_DATAPATH=reader-always');
  t.equal(routesOf({ ...SERVED, datapath: 'reader' }).read, 'datapath');
  t.equal(routesOf({ ...SERVED, datapath: 'reader', isTls: true }).reader, null,
    'no thread, no reader');
  t.end();
});

t.test('sockets are read into arenas unless XVD_NBD_RECEIVE=stream or the server offers TLS',
  (t) => {
    t.equal(receiveOf('arena', false), 'arena');
    t.equal(receiveOf('arena', true), 'stream', 'STARTTLS swaps the stream');
    t.equal(receiveOf('stream', false), 'stream');
    t.equal(receiveOf('stream', true), 'stream');
    t.end();
  });

/**
 * A client that half-closes (FIN) once NBD_OPT_STARTTLS is acknowledged, or together with the
 * option, can never complete a TLS handshake: the server drops it at once, not at the handshake
 * deadline (set to a minute here, so "at once" cannot be confused with the deadline).
 */
import t from 'tap';
import { createServer } from '../../src/nbd/index';
import { quietLog } from '../helpers/nbd-client';
import { connectPlain } from '../helpers/tls-client';
import { domainProvider } from '../helpers/tls-probe';
import { eventually } from '../helpers/waits';
import { OPT, REP, optionFrame } from '../helpers/wire';

const HANDSHAKE_TIMEOUT_MS = 60_000;
const DROPPED_WITHIN_MS = 5000;

t.test('a FIN after STARTTLS ends the connection at once', async (t) => {
  const key = Buffer.alloc(32, 7);
  const server = createServer({ provider: await domainProvider(), log: quietLog,
    tls: { mode: 'require', psk: new Map([['domain-1', key]]) },
    limits: { handshakeTimeoutMs: HANDSHAKE_TIMEOUT_MS } });
  const address = await server.listen({ host: '127.0.0.1', port: 0 });
  t.teardown(() => server.close({ graceMs: 1000 }));
  const port = typeof address === 'string' ? 0 : address.port;

  const afterAck = await connectPlain(port);
  afterAck.client.write(optionFrame(OPT.STARTTLS));
  t.equal((await afterAck.client.readOptionReply()).type, REP.ACK, 'STARTTLS acknowledged');
  t.equal(server.connectionCount, 1);
  afterAck.socket.end();
  t.ok(await eventually(() => server.connectionCount === 0, DROPPED_WITHIN_MS),
    'FIN after the ACK: the server let the connection go');
  t.ok(await afterAck.client.waitClosed(DROPPED_WITHIN_MS), 'and closed its side');

  const withOption = await connectPlain(port);
  withOption.socket.end(optionFrame(OPT.STARTTLS));
  t.equal((await withOption.client.readOptionReply()).type, REP.ACK, 'STARTTLS acknowledged');
  t.ok(await eventually(() => server.connectionCount === 0, DROPPED_WITHIN_MS),
    'FIN with the option: the server let the connection go');
  t.ok(await withOption.client.waitClosed(DROPPED_WITHIN_MS), 'and closed its side');
});

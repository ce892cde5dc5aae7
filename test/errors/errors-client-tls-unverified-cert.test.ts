/**
 * x509 with verifyClient (--tls-verify-peer): a client presenting a certificate the server's CA
 * did not sign (self-signed, or from another CA) with CN domain-2 must not reach domain 2. Node's
 * own tls client sends such certificates (libnbd's gnutls holds them back), so it attacks here.
 */
import t from 'tap';
import { createServer } from '../../src/nbd/index';
import { hasTool, quietLog } from '../helpers/nbd-client';
import { makePki, readClientCredentials } from '../helpers/tls-certs';
import { connectTls } from '../helpers/tls-client';
import { domainProvider, probeSession } from '../helpers/tls-probe';
import { eventually } from '../helpers/waits';
import { readX509Dir } from '../../src/nbd/index';

t.test('a certificate the CA did not sign is refused, whatever its CN', async (t) => {
  if (!hasTool('certtool')) return t.skip('certtool missing', () => undefined);
  const pki = await makePki(t.testdir());
  const server = createServer({ provider: await domainProvider(), log: quietLog,
    tls: { mode: 'require', ...readX509Dir(pki.serverDir), verifyClient: true } });
  const address = await server.listen({ host: '127.0.0.1', port: 0 });
  t.teardown(() => server.close({ graceMs: 1000 }));
  const port = typeof address === 'string' ? 0 : address.port;
  const seenBy = async (name: 'self-signed' | 'other-ca' | 'domain-2'): Promise<string> => {
    const outcome = await connectTls(port, readClientCredentials(pki.clientDir[name]));
    return outcome.isSecure ? probeSession(outcome.client) : 'handshake failed';
  };
  t.equal(await seenBy('domain-2'), 'LIST=[2/xvda] INFO(1/xvda)=ERR_UNKNOWN ' +
    'INFO(2/xvda)=ACK GO(2/xvda)=ACK READ=data(2/xvda)', 'the CA-signed domain-2 client');
  for (const name of ['self-signed', 'other-ca'] as const) {
    t.match(await seenBy(name), /^(?:handshake failed|LIST=closed)$/, `${name}: refused`);
  }
  t.ok(await eventually(() => server.connectionCount === 0), 'no connection stays open');
});

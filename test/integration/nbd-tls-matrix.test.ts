/**
 * The TLS matrix, as qemu's iotest 233 draws it: every server TLS configuration against every
 * kind of client, each case asserting the whole of what the client sees (tls-probe.ts): LIST
 * contents, INFO and GO results for domain 1's and domain 2's export, and the data a READ
 * returns. The clients here are Node's own `tls` module, which presents any certificate it is
 * given; nbd-tls-clients.test.ts runs libnbd and qemu (gnutls) where they behave differently.
 *
 * Servers: x509 (no client certificate asked), x509+verify (--tls-verify-peer: the CN names the
 * domain), psk (the identity names the domain), x509+verify+psk; each in mode `on` and `require`.
 * Expected outcomes are nbdkit's and qemu-nbd's: a certificate or key the server refuses ends
 * the connection before any NBD reply inside TLS (REFUSED; with TLS 1.3 the client's side of
 * the handshake completes first, so this is "handshake failed" or "closed at the first option");
 * without verify-peer a certificate is not asked for and the client is unauthenticated (domain
 * null: sees every export, as catalog-provider.ts decides); plaintext under `require` gets
 * NBD_REP_ERR_TLS_REQD for everything; plaintext under `on` is unauthenticated too.
 *
 *   client (cert CN / PSK identity)   x509     x509+verify  psk      x509+verify+psk
 *   cert domain-1, our CA             NULL     D1           REFUSED  D1
 *   cert domain-2, our CA             NULL     D2           REFUSED  D2
 *   cert domain-2, other CA           NULL     REFUSED      REFUSED  REFUSED
 *   cert domain-2, self-signed        NULL     REFUSED      REFUSED  REFUSED
 *   cert domain-1, expired            NULL     REFUSED      REFUSED  REFUSED
 *   cert domain-1, not yet valid      NULL     REFUSED      REFUSED  REFUSED
 *   cert domain-1, EKU serverAuth     NULL     REFUSED      REFUSED  REFUSED
 *   cert domain-1, no digitalSig.     NULL     REFUSED      REFUSED  REFUSED
 *   cert CN nobody (no domain)        NULL     REFUSED      REFUSED  REFUSED
 *   no certificate                    NULL     REFUSED      REFUSED  REFUSED
 *   PSK domain-1, right key           REFUSED  REFUSED      D1       D1
 *   PSK domain-1, wrong key           REFUSED  REFUSED      REFUSED  REFUSED
 *   PSK domain-9 (not in the file)    REFUSED  REFUSED      REFUSED  REFUSED
 *   PSK nobody (in file, no domain)   REFUSED  REFUSED      REFUSED  REFUSED
 *   plaintext                         on: NULL, require: TLS_REQD (every server)
 *   plaintext injected with STARTTLS  no reply to it, then as the same client without it
 *   EXPORT_NAME 2/xvda                D1: closed; NULL: opened and read; TLS_REQD: closed
 *
 * D1 = domain 1: LIST shows only 1/xvda, INFO/GO of 2/xvda is ERR_UNKNOWN, a READ of 1/xvda;
 * D2 likewise for domain 2; NULL = both listed, 2/xvda opened and read.
 */
import tls from 'node:tls';
import t, { type Test } from 'tap';
import { createServer, readX509Dir, type NbdServer } from '../../src/nbd/index';
import type { TlsOptions } from '../../src/nbd/tls';
import { hasTool, quietLog } from '../helpers/nbd-client';
import { makePki, readClientCredentials, type ClientCertName, type Pki,
} from '../helpers/tls-certs';
import { connectPlain, connectTls, upgradeClient, type TlsOutcome } from '../helpers/tls-client';
import { domainProvider, probeExportName, probeSession } from '../helpers/tls-probe';
import { eventually } from '../helpers/waits';
import { OPT, REP, optionFrame } from '../helpers/wire';

const D1 = 'LIST=[1/xvda] INFO(1/xvda)=ACK INFO(2/xvda)=ERR_UNKNOWN GO(2/xvda)=ERR_UNKNOWN ' +
  'GO(1/xvda)=ACK READ=data(1/xvda)';
const NULL = 'LIST=[1/xvda,2/xvda] INFO(1/xvda)=ACK INFO(2/xvda)=ACK GO(2/xvda)=ACK ' +
  'READ=data(2/xvda)';
const TLS_REQD = 'LIST=ERR_TLS_REQD INFO(1/xvda)=ERR_TLS_REQD INFO(2/xvda)=ERR_TLS_REQD ' +
  'GO(2/xvda)=ERR_TLS_REQD GO(1/xvda)=ERR_TLS_REQD';
const D2 = 'LIST=[2/xvda] INFO(1/xvda)=ERR_UNKNOWN INFO(2/xvda)=ACK GO(2/xvda)=ACK ' +
  'READ=data(2/xvda)';
const REFUSED = 'REFUSED';
const EXPORT_NAME_OPENED = 'EXPORT_NAME(2/xvda)=size 2097152 READ=data(2/xvda)';
const EXPORT_NAME_CLOSED = 'EXPORT_NAME(2/xvda)=closed';

const SERVERS = ['x509', 'x509+verify', 'psk', 'x509+verify+psk'] as const;
type ServerName = typeof SERVERS[number];
type Row = Record<ServerName, string>;

const PSK_KEY = Buffer.alloc(32, 0x5a);
const PSK_FILE = new Map([['domain-1', PSK_KEY], ['domain-2', Buffer.alloc(32, 0x6b)],
  ['nobody', Buffer.alloc(32, 0x7c)]]);

const CERT_ONLY: Row = { 'x509': NULL, 'x509+verify': REFUSED, 'psk': REFUSED,
  'x509+verify+psk': REFUSED };
const PSK_REFUSED: Row = { 'x509': REFUSED, 'x509+verify': REFUSED, 'psk': REFUSED,
  'x509+verify+psk': REFUSED };

const CERT_ROWS: Record<ClientCertName | 'none', Row> = {
  'domain-1': { 'x509': NULL, 'x509+verify': D1, 'psk': REFUSED, 'x509+verify+psk': D1 },
  'domain-2': { 'x509': NULL, 'x509+verify': D2, 'psk': REFUSED, 'x509+verify+psk': D2 },
  'other-ca': CERT_ONLY,
  'self-signed': CERT_ONLY,
  'expired': CERT_ONLY,
  'not-yet-valid': CERT_ONLY,
  'server-eku': CERT_ONLY,
  'no-signing': CERT_ONLY,
  'nobody': CERT_ONLY,
  'none': CERT_ONLY,
};

const PSK_ROWS: Record<string, { identity: string; key: Buffer; row: Row }> = {
  'domain-1': { identity: 'domain-1', key: PSK_KEY,
    row: { 'x509': REFUSED, 'x509+verify': REFUSED, 'psk': D1, 'x509+verify+psk': D1 } },
  'wrong key': { identity: 'domain-1', key: Buffer.alloc(32, 0x99), row: PSK_REFUSED },
  'unknown identity': { identity: 'domain-9', key: PSK_KEY, row: PSK_REFUSED },
  'identity naming no domain': { identity: 'nobody', key: Buffer.alloc(32, 0x7c),
    row: PSK_REFUSED },
};

function tlsOptionsOf(name: ServerName, mode: 'on' | 'require', pki: Pki): TlsOptions {
  const x509 = { ...readX509Dir(pki.serverDir), verifyClient: name !== 'x509' };
  if (name === 'psk') return { mode, psk: PSK_FILE };
  if (name === 'x509+verify+psk') return { mode, ...x509, psk: PSK_FILE };
  return { mode, ...x509 };
}

function certOptions(pki: Pki, name: ClientCertName | 'none'): tls.ConnectionOptions {
  const credentials = readClientCredentials(pki.clientDir[name === 'none' ? 'domain-1' : name]);
  return name === 'none' ? { ca: credentials.ca } : credentials;
}

function pskOptions(identity: string, key: Buffer): tls.ConnectionOptions {
  return { ciphers: 'PSK', maxVersion: 'TLSv1.2', pskCallback: () => ({ psk: key, identity }) };
}

/** What a TLS client saw: REFUSED when the server ended it before any reply inside TLS. */
async function seenThroughTls(outcome: TlsOutcome): Promise<string> {
  if (!outcome.isSecure) return REFUSED;
  const seen = await probeSession(outcome.client);
  return seen === 'LIST=closed' ? REFUSED : seen;
}

/** The client each server authenticates as domain 1, for the injection and EXPORT_NAME cases. */
function domainOneOptions(name: ServerName, pki: Pki): tls.ConnectionOptions {
  return name === 'psk' ? pskOptions('domain-1', PSK_KEY) : certOptions(pki, 'domain-1');
}

/**
 * STARTTLS and LIST sent in one write: the LIST is plaintext the server must drop (it reached
 * the server before TLS began), so no reply may come for it, inside TLS or out.
 */
async function seenWithInjection(port: number, options: tls.ConnectionOptions,
): Promise<string> {
  const { socket, client } = await connectPlain(port);
  client.write(Buffer.concat([optionFrame(OPT.STARTTLS), optionFrame(OPT.LIST)]));
  const reply = await client.readOptionReply();
  if (reply.type !== REP.ACK) return `STARTTLS=0x${reply.type.toString(16)}`;
  const plaintextAfter = client.bufferedLength;
  const outcome = await upgradeClient(socket, options);
  if (!outcome.isSecure) return REFUSED;
  const leaked = plaintextAfter + outcome.client.bufferedLength;
  return `${leaked === 0 ? 'no reply to it' : `${leaked} bytes answered it`}; ` +
    await seenThroughTls(outcome);
}

async function listen(tlsOptions: TlsOptions): Promise<{ server: NbdServer; port: number }> {
  const server = createServer({ provider: await domainProvider(), log: quietLog,
    tls: tlsOptions });
  const address = await server.listen({ host: '127.0.0.1', port: 0 });
  return { server, port: typeof address === 'string' ? 0 : address.port };
}

t.test('the TLS matrix with Node tls clients', async (t) => {
  if (!hasTool('certtool')) return t.skip('certtool missing', () => undefined);
  const pki = await makePki(t.testdir());
  for (const name of SERVERS) {
    for (const mode of ['on', 'require'] as const) {
      await t.test(`${name}, mode ${mode}`, async (t) => {
        const { server, port } = await listen(tlsOptionsOf(name, mode, pki));
        t.teardown(() => server.close({ graceMs: 1000 }));
        for (const [client, row] of Object.entries(CERT_ROWS)) {
          const options = certOptions(pki, client as ClientCertName | 'none');
          t.equal(await seenThroughTls(await connectTls(port, options)), row[name],
            `certificate ${client}`);
        }
        for (const [client, { identity, key, row }] of Object.entries(PSK_ROWS)) {
          t.equal(await seenThroughTls(await connectTls(port, pskOptions(identity, key))),
            row[name], `PSK ${client}`);
        }
        const plain = await connectPlain(port);
        t.equal(await probeSession(plain.client), mode === 'on' ? NULL : TLS_REQD, 'plaintext');
        const authenticated = name === 'x509' ? NULL : D1;
        t.equal(await seenWithInjection(port, domainOneOptions(name, pki)),
          `no reply to it; ${authenticated}`, 'plaintext injected with STARTTLS');
        await exportNameCases(t, name, mode, pki, port);
        t.ok(await eventually(() => server.connectionCount === 0), 'every connection ended');
      });
    }
  }
});

async function exportNameCases(t: Test, name: ServerName, mode: 'on' | 'require', pki: Pki,
  port: number): Promise<void> {
  const plain = await connectPlain(port);
  t.equal(await probeExportName(plain.client),
    mode === 'on' ? EXPORT_NAME_OPENED : EXPORT_NAME_CLOSED, 'plaintext EXPORT_NAME');
  const outcome = await connectTls(port, domainOneOptions(name, pki));
  t.equal(outcome.isSecure ? await probeExportName(outcome.client) : REFUSED,
    name === 'x509' ? EXPORT_NAME_OPENED : EXPORT_NAME_CLOSED, 'domain-1 EXPORT_NAME of 2/xvda');
}

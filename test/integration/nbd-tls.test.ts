/**
 * The TLS matrix's real clients: libnbd (nbdinfo, its python module) and qemu (qemu-img,
 * qemu-io), both on gnutls, against x509 with --tls-verify-peer and PSK configured together
 * (mode require), and against x509 without verify-peer. nbd-tls-matrix.test.ts has the same
 * cases with Node's tls client, which presents any certificate; gnutls presents a certificate
 * only when its issuer is in the server's CA list, so a self-signed or foreign certificate
 * arrives as no certificate. Either way the server must refuse it: each case asserts the exit
 * status and what the tool printed (the listed names, the size, or the data read).
 *
 *   client                                   verify-peer + PSK, require      x509, require
 *   nbdinfo --list, cert domain-1            1/xvda only                      -
 *   nbdinfo 2/xvda, cert domain-1            fails                           size 2097152
 *   libnbd read 1/xvda, cert domain-1        0x11...                          -
 *   nbdinfo, cert other CA / self-signed /   fails                            -
 *     expired / not yet valid / EKU server /
 *     no digitalSignature / CN nobody
 *   nbdinfo --list, no certificate           fails                           1/xvda, 2/xvda
 *   nbdinfo, PSK domain-1 (1/xvda; 2/xvda)   size 1048576; fails              -
 *   nbdinfo, PSK wrong key / domain-9 /      fails                            -
 *     nobody
 *   nbdinfo plaintext                        fails                            -
 *   qemu-img info, cert domain-1 (1; 2)      virtual-size 1048576; fails      -
 *   qemu-io read -P 0x11, cert domain-1      read 4096/4096                   -
 *   qemu-img info, self-signed / expired     fails                            -
 *   qemu-img info, PSK domain-1; wrong key   virtual-size 1048576; fails      -
 */
import fs from 'node:fs';
import path from 'node:path';
import t, { type Test } from 'tap';
import { createServer, readX509Dir, type NbdServer } from '../../src/nbd/index';
import type { TlsOptions } from '../../src/nbd/tls';
import { PYTHON_LIBNBD, hasTool, quietLog, runTool, type ToolResult,
} from '../helpers/nbd-client';
import { makePki, type ClientCertName } from '../helpers/tls-certs';
import { domainProvider } from '../helpers/tls-probe';
import { eventually } from '../helpers/waits';

const PSK_KEY = Buffer.alloc(32, 0x5a);

async function listen(tls: TlsOptions): Promise<{ server: NbdServer; port: number }> {
  const server = createServer({ provider: await domainProvider(), log: quietLog, tls });
  const address = await server.listen({ host: '127.0.0.1', port: 0 });
  return { server, port: typeof address === 'string' ? 0 : address.port };
}

function listed(result: ToolResult): string {
  if (result.code !== 0) return `exit ${result.code}`;
  return (JSON.parse(result.stdout) as { exports: { 'export-name': string }[] }).exports
    .map((entry) => entry['export-name']).join(',');
}

function sizeOf(result: ToolResult): string {
  if (result.code !== 0) return `exit ${result.code}`;
  const parsed = JSON.parse(result.stdout) as { exports?: { 'export-size': number }[];
    'virtual-size'?: number };
  return `size ${parsed.exports?.[0]?.['export-size'] ?? parsed['virtual-size']}`;
}

/** A psktool-format file with one identity. */
function pskFile(dir: string, name: string, identity: string, key: Buffer): string {
  fs.mkdirSync(path.join(dir, name));
  const file = path.join(dir, name, 'keys.psk'); // qemu's tls-creds-psk reads DIR/keys.psk
  fs.writeFileSync(file, `${identity}:${key.toString('hex')}\n`);
  return file;
}

t.test('libnbd and qemu against x509 verify-peer + PSK, and x509 alone', async (t) => {
  const tools = ['certtool', 'nbdinfo', 'qemu-img', 'qemu-io'];
  const missing = tools.filter((tool) => !hasTool(tool));
  if (missing.length > 0) return t.skip(`missing: ${missing.join(' ')}`, () => undefined);
  const dir = t.testdir();
  const pki = await makePki(dir);
  const psk = new Map([['domain-1', PSK_KEY], ['nobody', Buffer.alloc(32, 0x7c)]]);
  const verified = await listen({ mode: 'require', ...readX509Dir(pki.serverDir),
    verifyClient: true, psk });
  const plain = await listen({ mode: 'require', ...readX509Dir(pki.serverDir) });
  t.teardown(() => Promise.all([verified.server.close({ graceMs: 1000 }),
    plain.server.close({ graceMs: 1000 })]));
  const host = `127.0.0.1:${verified.port}`;
  const certUri = (name: ClientCertName, exportName = '', port = verified.port): string =>
    `nbds://127.0.0.1:${port}/${exportName}?tls-certificates=${pki.clientDir[name]}`;
  const nbdinfo = (...args: string[]): Promise<ToolResult> => runTool('nbdinfo', args);

  t.equal(listed(await nbdinfo('--list', '--json', certUri('domain-1'))), '1/xvda',
    'nbdinfo --list, cert domain-1: its own export only');
  t.equal(sizeOf(await nbdinfo('--json', certUri('domain-1', '2/xvda'))), 'exit 1',
    'nbdinfo, cert domain-1, 2/xvda: refused');
  const script = ['import nbd, sys', 'h = nbd.NBD()', 'h.set_uri_allow_local_file(True)',
    `h.connect_uri(${JSON.stringify(certUri('domain-1', '1/xvda'))})`,
    'sys.stdout.write(bytes(h.pread(4096, 0)).hex()[:8])', 'h.shutdown()'].join('\n');
  const read = await runTool(PYTHON_LIBNBD, ['-c', script]);
  t.equal(read.stdout, '11111111', `libnbd (python) reads 1/xvda: ${read.stderr}`);
  const refusedCerts: (ClientCertName)[] = ['other-ca', 'self-signed', 'expired',
    'not-yet-valid', 'server-eku', 'no-signing', 'nobody'];
  for (const name of refusedCerts) {
    t.equal(listed(await nbdinfo('--list', '--json', certUri(name))), 'exit 1',
      `nbdinfo, cert ${name}: refused`);
  }
  const caOnly = path.join(dir, 'ca-only');
  fs.mkdirSync(caOnly);
  fs.copyFileSync(path.join(pki.serverDir, 'ca-cert.pem'), path.join(caOnly, 'ca-cert.pem'));
  t.equal(listed(await nbdinfo('--list', '--json',
    `nbds://${host}/?tls-certificates=${caOnly}`)), 'exit 1', 'nbdinfo, no cert: refused');
  t.equal(listed(await nbdinfo('--list', '--json',
    `nbds://127.0.0.1:${plain.port}/?tls-certificates=${caOnly}`)), '1/xvda,2/xvda',
  'x509 without verify-peer: unauthenticated, both exports');
  t.equal(sizeOf(await nbdinfo('--json', certUri('domain-1', '2/xvda', plain.port))),
    'size 2097152', 'x509 without verify-peer: the client certificate is not asked for');

  const good = pskFile(dir, 'psk-good', 'domain-1', PSK_KEY);
  const pskUri = (identity: string, file: string, exportName: string): string =>
    `nbds://${identity}@${host}/${exportName}?tls-psk-file=${file}`;
  t.equal(sizeOf(await nbdinfo('--json', pskUri('domain-1', good, '1/xvda'))), 'size 1048576',
    'nbdinfo, PSK domain-1');
  t.equal(sizeOf(await nbdinfo('--json', pskUri('domain-1', good, '2/xvda'))), 'exit 1',
    'nbdinfo, PSK domain-1, 2/xvda: refused');
  const wrong = pskFile(dir, 'psk-wrong', 'domain-1', Buffer.alloc(32, 0x99));
  const unknown = pskFile(dir, 'psk-unknown', 'domain-9', PSK_KEY);
  const nobody = pskFile(dir, 'psk-nobody', 'nobody', Buffer.alloc(32, 0x7c));
  for (const [what, identity, file] of [['wrong key', 'domain-1', wrong],
    ['unknown identity', 'domain-9', unknown], ['identity naming no domain', 'nobody', nobody],
  ] as const) {
    t.equal(sizeOf(await nbdinfo('--json', pskUri(identity, file, '1/xvda'))), 'exit 1',
      `nbdinfo, PSK ${what}: refused`);
  }
  t.equal(sizeOf(await nbdinfo('--json', `nbd://${host}/1/xvda`)), 'exit 1',
    'nbdinfo plaintext against require: refused');
  await qemuCases(t, verified.port, pki.clientDir, { good, wrong });
  t.ok(await eventually(() =>
    verified.server.connectionCount + plain.server.connectionCount === 0),
  'no connection left open');
});

async function qemuCases(t: Test, port: number, clientDir: Record<ClientCertName, string>,
  psk: { good: string; wrong: string }): Promise<void> {
  const x509 = (name: ClientCertName): string =>
    `tls-creds-x509,id=tls0,endpoint=client,dir=${clientDir[name]}`;
  const pskCreds = (file: string): string =>
    `tls-creds-psk,id=tls0,endpoint=client,dir=${path.dirname(file)},username=domain-1`;
  const image = (exportName: string): string =>
    `driver=nbd,host=127.0.0.1,port=${port},export=${exportName},tls-creds=tls0`;
  const info = (creds: string, exportName: string): Promise<ToolResult> => runTool('qemu-img',
    ['info', '--output=json', '--object', creds, '--image-opts', image(exportName)]);
  t.equal(sizeOf(await info(x509('domain-1'), '1/xvda')), 'size 1048576',
    'qemu-img info, cert domain-1');
  t.equal(sizeOf(await info(x509('domain-1'), '2/xvda')), 'exit 1',
    'qemu-img info, cert domain-1, 2/xvda: refused');
  const io = await runTool('qemu-io', ['--object', x509('domain-1'), '--image-opts',
    '-c', 'read -P 0x11 0 4096', image('1/xvda')]);
  t.match(io.stdout, /^read 4096\/4096 bytes/m, `qemu-io read -P 0x11: ${io.stderr}`);
  for (const name of ['self-signed', 'expired'] as const) {
    t.equal(sizeOf(await info(x509(name), '1/xvda')), 'exit 1', `qemu-img, cert ${name}`);
  }
  t.equal(sizeOf(await info(pskCreds(psk.good), '1/xvda')), 'size 1048576',
    'qemu-img info, PSK domain-1');
  t.equal(sizeOf(await info(pskCreds(psk.wrong), '1/xvda')), 'exit 1',
    'qemu-img info, PSK wrong key: refused');
}

/**
 * test/helpers/tls-certs: a small PKI made at test time with certtool (gnutls-bin), laid out as
 * nbdkit, qemu and libnbd read it: a server directory (ca-cert.pem, server-cert.pem,
 * server-key.pem) and one directory per client certificate (ca-cert.pem, client-cert.pem,
 * client-key.pem). Every client directory trusts the real CA, so each client can verify the
 * server; what differs is the certificate it presents. ECDSA P-256 keys (generated in
 * milliseconds), except an RSA key for no-signing: for an ECDSA key certtool puts digitalSignature
 * into keyUsage whatever the template says. Dates are explicit (activation_date/expiration_date).
 */
import fs from 'node:fs';
import path from 'node:path';
import { runTool } from './nbd-client';

/** The client certificates the TLS matrix presents. */
export const CLIENT_CERTS = {
  /** CN domain-1, signed by the server's CA */
  'domain-1': 'valid',
  /** CN domain-2, signed by the server's CA */
  'domain-2': 'valid',
  /** CN "nobody" (names no domain), signed by the server's CA */
  nobody: 'valid',
  /** CN domain-2, signed by a CA the server does not know */
  'other-ca': 'other-ca',
  /** CN domain-2, signed by its own key */
  'self-signed': 'self-signed',
  /** CN domain-1, the server's CA, validity ended in 2020 */
  expired: 'valid',
  /** CN domain-1, the server's CA, valid only from 2120 */
  'not-yet-valid': 'valid',
  /** CN domain-1, the server's CA, extendedKeyUsage serverAuth only */
  'server-eku': 'valid',
  /** CN domain-1, the server's CA, keyUsage keyEncipherment only (no digitalSignature) */
  'no-signing': 'valid',
} as const;
export type ClientCertName = keyof typeof CLIENT_CERTS;

export interface Pki {
  /** ca-cert.pem, server-cert.pem, server-key.pem (readX509Dir, --tls-certificates) */
  serverDir: string;
  /** one directory per client certificate (nbdinfo tls-certificates=, qemu tls-creds-x509) */
  clientDir: Record<ClientCertName, string>;
}

export interface ClientCredentials {
  ca: Buffer;
  cert: Buffer;
  key: Buffer;
}

const NOW_VALID = 'expiration_days = 2\n';
const CLIENT_USAGE = 'tls_www_client\nsigning_key\n';

const TEMPLATES: Record<ClientCertName, string> = {
  'domain-1': `cn = domain-1\n${CLIENT_USAGE}${NOW_VALID}`,
  'domain-2': `cn = domain-2\n${CLIENT_USAGE}${NOW_VALID}`,
  nobody: `cn = nobody\n${CLIENT_USAGE}${NOW_VALID}`,
  'other-ca': `cn = domain-2\n${CLIENT_USAGE}${NOW_VALID}`,
  'self-signed': `cn = domain-2\n${CLIENT_USAGE}${NOW_VALID}`,
  expired: `cn = domain-1\n${CLIENT_USAGE}` +
    'activation_date = "2019-01-01 00:00:00 UTC"\nexpiration_date = "2020-01-01 00:00:00 UTC"\n',
  'not-yet-valid': `cn = domain-1\n${CLIENT_USAGE}` +
    'activation_date = "2120-01-01 00:00:00 UTC"\nexpiration_date = "2121-01-01 00:00:00 UTC"\n',
  'server-eku': `cn = domain-1\ntls_www_server\nsigning_key\n${NOW_VALID}`,
  'no-signing': `cn = domain-1\ntls_www_client\nencryption_key\n${NOW_VALID}`,
};

async function certtool(dir: string, args: string[], template?: string): Promise<void> {
  const extra: string[] = [];
  if (template !== undefined) {
    const file = path.join(dir, `template-${fs.readdirSync(dir).length}.info`);
    fs.writeFileSync(file, template);
    extra.push('--template', file);
  }
  const result = await runTool('certtool', [...args, ...extra]);
  if (result.code !== 0) throw new Error(`certtool ${args.join(' ')}: ${result.stderr}`);
}

/** ECDSA by default; RSA where certtool would otherwise add digitalSignature (no-signing). */
async function privateKey(dir: string, file: string, type: 'ecdsa' | 'rsa' = 'ecdsa',
): Promise<string> {
  const bits = type === 'rsa' ? ['--bits', '2048'] : [];
  await certtool(dir, ['--generate-privkey', '--key-type', type, ...bits, '--outfile', file]);
  return file;
}

async function selfSigned(dir: string, key: string, out: string, template: string,
): Promise<void> {
  await certtool(dir, ['--generate-self-signed', '--load-privkey', key, '--outfile', out],
    template);
}

async function signed(dir: string, key: string, out: string, template: string,
  issuer: { key: string; cert: string }): Promise<void> {
  await certtool(dir, ['--generate-certificate', '--load-privkey', key,
    '--load-ca-certificate', issuer.cert, '--load-ca-privkey', issuer.key, '--outfile', out],
  template);
}

/** Makes the CA, the other CA, the server certificate (127.0.0.1, localhost) and every client. */
export async function makePki(dir: string): Promise<Pki> {
  const caTemplate = (name: string): string => `cn = ${name}\nca\ncert_signing_key\n${NOW_VALID}`;
  const ca = { key: await privateKey(dir, path.join(dir, 'ca-key.pem')),
    cert: path.join(dir, 'ca-cert.pem') };
  await selfSigned(dir, ca.key, ca.cert, caTemplate('test CA'));
  const otherCa = { key: await privateKey(dir, path.join(dir, 'other-ca-key.pem')),
    cert: path.join(dir, 'other-ca-cert.pem') };
  await selfSigned(dir, otherCa.key, otherCa.cert, caTemplate('other CA'));
  const serverDir = path.join(dir, 'server');
  fs.mkdirSync(serverDir);
  fs.copyFileSync(ca.cert, path.join(serverDir, 'ca-cert.pem'));
  await signed(dir, await privateKey(dir, path.join(serverDir, 'server-key.pem')),
    path.join(serverDir, 'server-cert.pem'), 'cn = 127.0.0.1\nip_address = 127.0.0.1\n' +
    `dns_name = localhost\ntls_www_server\nsigning_key\n${NOW_VALID}`, ca);
  const clientDir = {} as Record<ClientCertName, string>;
  for (const name of Object.keys(CLIENT_CERTS) as ClientCertName[]) {
    const out = path.join(dir, `client-${name}`);
    fs.mkdirSync(out);
    fs.copyFileSync(ca.cert, path.join(out, 'ca-cert.pem'));
    const key = await privateKey(dir, path.join(out, 'client-key.pem'),
      name === 'no-signing' ? 'rsa' : 'ecdsa');
    const cert = path.join(out, 'client-cert.pem');
    const issuer = CLIENT_CERTS[name];
    if (issuer === 'self-signed') await selfSigned(dir, key, cert, TEMPLATES[name]);
    else await signed(dir, key, cert, TEMPLATES[name], issuer === 'valid' ? ca : otherCa);
    clientDir[name] = out;
  }
  return { serverDir, clientDir };
}

/** The CA to trust and the certificate and key to present, as Node's tls.connect takes them. */
export function readClientCredentials(clientDir: string): ClientCredentials {
  const read = (name: string): Buffer => fs.readFileSync(path.join(clientDir, name));
  return { ca: read('ca-cert.pem'), cert: read('client-cert.pem'), key: read('client-key.pem') };
}

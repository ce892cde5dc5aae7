/**
 * TLS: x509 with client certificates (CN names the domain) and PSK (identity names the domain),
 * require mode, nbdinfo as the client; plus the STARTTLS injection case (plaintext pipelined
 * after STARTTLS must not survive into the TLS session).
 */
import fs from 'node:fs';
import path from 'node:path';
import tls from 'node:tls';
import t from 'tap';
import { readPskFile, readX509Dir } from '../../src/nbd/index';
import {
  ScriptedClient, connectClient, createFixedProvider, hasTool, memoryDisk, quietLog, runTool,
} from '../helpers/nbd-client';
import { createServer } from '../../src/nbd/index';
import { EFLAG, OPT, REP, clientFlags, goPayload, optionFrame } from '../helpers/wire';

async function certtool(dir: string, args: string[], template?: string): Promise<void> {
  const extra: string[] = [];
  if (template !== undefined) {
    const file = path.join(dir, `${Math.random().toString(36).slice(2)}.info`);
    fs.writeFileSync(file, template);
    extra.push('--template', file);
  }
  const result = await runTool('certtool', [...args, ...extra]);
  if (result.code !== 0) throw new Error(`certtool ${args.join(' ')}: ${result.stderr}`);
}

/** A CA, a server certificate for 127.0.0.1, and a client certificate with CN "domain-1". */
async function makeCertificates(dir: string): Promise<{ server: string; client: string }> {
  const server = path.join(dir, 'server');
  const client = path.join(dir, 'client');
  fs.mkdirSync(server);
  fs.mkdirSync(client);
  const ca = path.join(dir, 'ca-key.pem');
  const caCert = path.join(dir, 'ca-cert.pem');
  await certtool(dir, ['--generate-privkey', '--outfile', ca]);
  await certtool(dir, ['--generate-self-signed', '--load-privkey', ca, '--outfile', caCert],
    'cn = test CA\nca\ncert_signing_key\nexpiration_days = 2\n');
  const issue = async (out: string, name: string, template: string): Promise<void> => {
    await certtool(dir, ['--generate-privkey', '--outfile', path.join(out, `${name}-key.pem`)]);
    await certtool(dir, ['--generate-certificate', '--load-privkey',
      path.join(out, `${name}-key.pem`), '--load-ca-certificate', caCert,
      '--load-ca-privkey', ca, '--outfile', path.join(out, `${name}-cert.pem`)], template);
    fs.copyFileSync(caCert, path.join(out, 'ca-cert.pem'));
  };
  await issue(server, 'server', 'cn = 127.0.0.1\nip_address = 127.0.0.1\ndns_name = localhost\n' +
    'tls_www_server\nencryption_key\nsigning_key\nexpiration_days = 2\n');
  await issue(client, 'client', 'cn = domain-1\ntls_www_client\nencryption_key\nsigning_key\n' +
    'expiration_days = 2\n');
  return { server, client };
}

const DOMAINS = { one: [1], two: [2] };

t.test('x509 require mode: the client certificate CN picks the domain; plaintext is refused',
  async (t) => {
    if (!hasTool('certtool') || !hasTool('nbdinfo')) return t.skip('certtool or nbdinfo missing');
    const dir = t.testdir();
    const certs = await makeCertificates(dir);
    const server = createServer({
      provider: createFixedProvider([memoryDisk('one', 1 << 20), memoryDisk('two', 2 << 20)],
        DOMAINS),
      tls: { mode: 'require', ...readX509Dir(certs.server), verifyClient: true },
      log: quietLog,
    });
    const address = await server.listen({ host: '127.0.0.1', port: 0 });
    t.teardown(() => server.close({ graceMs: 1000 }));
    const port = typeof address === 'string' ? 0 : address.port;
    const listed = await runTool('nbdinfo', ['--list', '--json',
      `nbds://127.0.0.1:${port}?tls-certificates=${certs.client}`]);
    t.equal(listed.code, 0, listed.stderr);
    const names = (JSON.parse(listed.stdout) as { exports: { 'export-name': string }[] })
      .exports.map((entry) => entry['export-name']);
    t.same(names, ['one'], 'domain 1 sees only its export');
    const other = await runTool('nbdinfo',
      [`nbds://127.0.0.1:${port}/two?tls-certificates=${certs.client}`]);
    t.not(other.code, 0, 'domain 1 cannot open domain 2\'s export');
    const plain = await runTool('nbdinfo', [`nbd://127.0.0.1:${port}/one`]);
    t.not(plain.code, 0, 'plaintext is refused in require mode');
    const client = await connectClient(port);
    await client.start();
    t.equal((await client.option(OPT.GO, goPayload('one')))[0]?.type, REP.ERR_TLS_REQD);
    t.equal((await client.option(OPT.LIST))[0]?.type, REP.ERR_TLS_REQD);
    client.end();
  });

t.test('PSK: the identity names the domain; a wrong key fails', async (t) => {
  if (!hasTool('psktool') || !hasTool('nbdinfo')) return t.skip('psktool or nbdinfo missing');
  const dir = t.testdir();
  const keys = path.join(dir, 'keys.psk');
  const made = await runTool('psktool', ['-u', 'domain-2', '-p', keys]);
  t.equal(made.code, 0, made.stderr);
  const server = createServer({
    provider: createFixedProvider([memoryDisk('one', 1 << 20), memoryDisk('two', 2 << 20)],
      DOMAINS),
    tls: { mode: 'require', psk: readPskFile(keys) },
    log: quietLog,
  });
  const address = await server.listen({ host: '127.0.0.1', port: 0 });
  t.teardown(() => server.close({ graceMs: 1000 }));
  const port = typeof address === 'string' ? 0 : address.port;
  const info = await runTool('nbdinfo', ['--json',
    `nbds://domain-2@127.0.0.1:${port}/two?tls-psk-file=${keys}`]);
  t.equal(info.code, 0, info.stderr);
  t.equal((JSON.parse(info.stdout) as { exports: { 'export-size': number }[] })
    .exports[0]?.['export-size'], 2 << 20);
  const wrong = path.join(dir, 'wrong.psk');
  fs.writeFileSync(wrong, `domain-2:${'00'.repeat(32)}\n`);
  const refused = await runTool('nbdinfo',
    [`nbds://domain-2@127.0.0.1:${port}/two?tls-psk-file=${wrong}`]);
  t.not(refused.code, 0, 'a wrong key fails the handshake');
});

t.test('plaintext pipelined after STARTTLS is discarded (no structured replies inside TLS)',
  async (t) => {
    const key = Buffer.alloc(32, 7);
    const server = createServer({
      provider: createFixedProvider([memoryDisk('one', 1 << 20)]),
      tls: { mode: 'on', psk: new Map([['domain-1', key]]) },
      log: quietLog,
    });
    const address = await server.listen({ host: '127.0.0.1', port: 0 });
    t.teardown(() => server.close({ graceMs: 1000 }));
    const port = typeof address === 'string' ? 0 : address.port;
    const raw = await connectClient(port);
    await raw.readGreeting();
    raw.write(Buffer.concat([clientFlags(3), optionFrame(OPT.STRUCTURED_REPLY),
      optionFrame(OPT.STARTTLS), optionFrame(OPT.STRUCTURED_REPLY)]));
    t.equal((await raw.readOptionReply()).type, REP.ACK, 'plaintext SR acknowledged');
    t.equal((await raw.readOptionReply()).type, REP.ACK, 'STARTTLS acknowledged');
    const socket = (raw as unknown as { input: import('node:net').Socket }).input;
    socket.removeAllListeners('data');
    const secure = tls.connect({ socket, ciphers: 'PSK', maxVersion: 'TLSv1.2',
      checkServerIdentity: () => undefined,
      pskCallback: () => ({ psk: key, identity: 'domain-1' }) });
    await new Promise<void>((resolve, reject) => {
      secure.once('secureConnect', resolve);
      secure.once('error', reject);
    });
    const client = new ScriptedClient(secure, secure);
    const go = await client.option(OPT.GO, goPayload('one'));
    t.equal(go[go.length - 1]?.type, REP.ACK, 'GO inside TLS works');
    const eflags = go[0]?.payload.readUInt16BE(10) ?? 0;
    t.equal(eflags & EFLAG.SEND_DF, 0, 'structured replies from before TLS did not survive');
    t.equal(client.bufferedLength, 0, 'the injected option got no reply');
    secure.end();
  });

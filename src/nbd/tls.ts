/**
 * nbd/tls: the STARTTLS upgrade (proto.md "TLS support"): x509 certificates and pre-shared
 * keys, and how a TLS identity names a domain.
 *
 * Domains: with x509 and `verifyClient`, the client certificate's subject CN names the domain:
 * "domain-7" or "7" → domain 7; a verified certificate whose CN names no domain is refused (the
 * connection closes) rather than treated as unauthenticated. With PSK the identity names the
 * domain the same way ("domain-7" or "7"); an unknown identity fails the handshake. Without
 * client authentication the domain stays null ("not authenticated"), and the provider decides
 * what null may see. Node supports PSK only up to TLS 1.2, so a server with PSK keys (alone or
 * beside a certificate) caps the version there; x509 alone allows TLS 1.2 and 1.3 (proto.md:
 * TLS 1.2 MUST be supported).
 */
import fs from 'node:fs';
import path from 'node:path';
import type { Socket } from 'node:net';
import tls from 'node:tls';
import { ProtocolError, UsageError } from '../errors';
import type { TlsUpgrader } from './connection-options';
import type { Domain } from './provider';

export interface TlsOptions {
  /** on: STARTTLS optional; require: every option but STARTTLS/ABORT needs TLS first */
  mode: 'off' | 'on' | 'require';
  /** x509 server certificate and key (PEM) */
  cert?: string | Buffer;
  key?: string | Buffer;
  /** CA that signs client certificates (PEM); needed for verifyClient */
  ca?: string | Buffer;
  /** demand and verify a client certificate; its CN names the domain */
  verifyClient?: boolean;
  /** PSK: identity → key */
  psk?: ReadonlyMap<string, Buffer>;
  /** upper bound for the handshake itself is the connection's handshake deadline */
}

const DOMAIN_NAME = /^(?:domain-)?(\d{1,9})$/;

/** "domain-7" or "7" → 7; anything else → null. */
export function domainOfIdentity(identity: string): number | null {
  const match = DOMAIN_NAME.exec(identity);
  return match === null || match[1] === undefined ? null : Number(match[1]);
}

/** Reads nbdkit/qemu-style x509 files from a directory: ca-cert.pem, server-cert.pem/-key.pem. */
export function readX509Dir(dir: string): Pick<TlsOptions, 'cert' | 'key' | 'ca'> {
  const read = (name: string): Buffer | undefined => {
    const file = path.join(dir, name);
    return fs.existsSync(file) ? fs.readFileSync(file) : undefined;
  };
  const cert = read('server-cert.pem');
  const key = read('server-key.pem');
  const ca = read('ca-cert.pem');
  if (cert === undefined || key === undefined) {
    throw new UsageError('ERR_NBD_TLS_CONFIG',
      `tls: ${dir}: server-cert.pem/server-key.pem missing`);
  }
  return ca === undefined ? { cert, key } : { cert, key, ca };
}

/** Parses a psktool file: lines `identity:hexkey`. */
export function readPskFile(file: string): Map<string, Buffer> {
  const keys = new Map<string, Buffer>();
  for (const line of fs.readFileSync(file, 'utf8').split('\n')) {
    const trimmed = line.trim();
    if (trimmed === '' || trimmed.startsWith('#')) continue;
    const colon = trimmed.lastIndexOf(':');
    const hex = trimmed.slice(colon + 1);
    if (colon <= 0 || !/^[0-9a-fA-F]+$/.test(hex) || hex.length % 2 !== 0) {
      throw new UsageError('ERR_NBD_TLS_CONFIG', `tls: ${file}: bad PSK line`);
    }
    keys.set(trimmed.slice(0, colon), Buffer.from(hex, 'hex'));
  }
  return keys;
}

/**
 * Node's default cipher list ends in "!PSK": with a certificate and PSK keys both configured,
 * the PSK suites are let back in after the certificate ones, or no PSK client could connect.
 * Such a server also stops at TLS 1.2: Node's PSK callback does not take part in a TLS 1.3
 * handshake, so a gnutls client (libnbd, qemu) offering its key in TLS 1.3 is answered with a
 * certificate and fails ("Insufficient credentials").
 */
function ciphersWithPsk(): string {
  return `${tls.DEFAULT_CIPHERS.split(':').filter((name) => name !== '!PSK').join(':')}:PSK`;
}

function secureContextOf(options: TlsOptions): tls.SecureContext {
  const isPskOnly = options.psk !== undefined && options.cert === undefined;
  const isBoth = options.psk !== undefined && options.cert !== undefined;
  return tls.createSecureContext({
    ...(options.cert === undefined ? {} : { cert: options.cert }),
    ...(options.key === undefined ? {} : { key: options.key }),
    ...(options.ca === undefined ? {} : { ca: options.ca }),
    minVersion: 'TLSv1.2',
    ...(isPskOnly ? { maxVersion: 'TLSv1.2' as const, ciphers: 'PSK' } : {}),
    ...(isBoth ? { maxVersion: 'TLSv1.2' as const, ciphers: ciphersWithPsk() } : {}),
  });
}

/**
 * The verification result of the client certificate chain, or null when it verified. Node's
 * tls.Server judges it in its own 'secure' hook (onServerSocketSecure): OpenSSL's verify
 * callback accepts every chain and the hook destroys the socket afterwards. A server-side
 * TLSSocket made by hand, as STARTTLS needs, gets no such hook, and `rejectUnauthorized` alone
 * lets a self-signed or foreign certificate through. So the check is made here, closed by
 * default: without a result to read, the certificate counts as unverified.
 */
function verifyErrorOf(secure: tls.TLSSocket): string | null {
  const handle = (secure as unknown as { _handle?: { verifyError?: () => unknown } })._handle;
  if (typeof handle?.verifyError !== 'function') return 'no verification result';
  const error = handle.verifyError();
  if (error === null || error === undefined) return null;
  const code = (error as { code?: unknown }).code;
  if (typeof code === 'string') return code;
  return error instanceof Error ? error.toString() : 'unknown verification error';
}

function domainOfPeer(secure: tls.TLSSocket, options: TlsOptions, pskIdentity: string | null,
): Domain {
  if (pskIdentity !== null) return domainOfIdentity(pskIdentity);
  if (options.verifyClient !== true) return null;
  const verifyError = verifyErrorOf(secure);
  if (verifyError !== null) {
    throw new ProtocolError('ERR_NBD_TLS',
      `tls: client certificate refused: ${verifyError}`);
  }
  const subject = secure.getPeerCertificate().subject as { CN?: string | string[] } | undefined;
  const cn = Array.isArray(subject?.CN) ? subject?.CN[0] : subject?.CN;
  const domain = cn === undefined ? null : domainOfIdentity(cn);
  if (domain === null) {
    throw new ProtocolError('ERR_NBD_TLS', `tls: client certificate CN names no domain: ${cn}`);
  }
  return domain;
}

export function createTlsUpgrader(options: TlsOptions): TlsUpgrader | null {
  if (options.mode === 'off') return null;
  if (options.cert === undefined && options.psk === undefined) {
    throw new UsageError('ERR_NBD_TLS_CONFIG', 'tls: neither a certificate nor PSK keys given');
  }
  const secureContext = secureContextOf(options);
  const psk = options.psk;
  return {
    mode: options.mode,
    upgrade: (socket: Socket) => new Promise((resolve, reject) => {
      let pskIdentity: string | null = null;
      const secure = new tls.TLSSocket(socket, {
        isServer: true,
        secureContext,
        requestCert: options.verifyClient === true,
        rejectUnauthorized: options.verifyClient === true,
        ...(psk === undefined ? {} : {
          pskCallback: (_socket: tls.TLSSocket, identity: string): Buffer | null => {
            const key = psk.get(identity);
            if (key === undefined || domainOfIdentity(identity) === null) return null;
            pskIdentity = identity;
            return key;
          },
        }),
      });
      const fail = (error: Error): void => {
        secure.destroy();
        reject(new ProtocolError('ERR_NBD_TLS', `tls: handshake: ${error.message}`,
          { cause: error }));
      };
      const failOnEnd = (): void => fail(new Error('peer half-closed before finishing it'));
      secure.once('error', fail);
      secure.once('close', () => fail(new Error('closed during handshake')));
      // no handshake can finish once the peer has sent its FIN (the socket is half-open)
      secure.once('end', failOnEnd);
      secure.once('secure', () => {
        secure.off('error', fail);
        secure.off('end', failOnEnd);
        secure.removeAllListeners('close');
        try {
          resolve({ secure, domain: domainOfPeer(secure, options, pskIdentity) });
        } catch (error) {
          secure.destroy();
          reject(error);
        }
      });
    }),
  };
}

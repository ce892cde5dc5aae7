/**
 * test/helpers/tls-client: a scripted NBD client that upgrades with Node's own `tls` module, so
 * it presents whatever certificate or PSK identity a test gives it (libnbd and qemu, built on
 * gnutls, hold back a certificate the server's CA list does not name). It speaks plaintext NBD
 * up to the STARTTLS ACK, then runs tls.connect over the same socket.
 */
import net from 'node:net';
import tls from 'node:tls';
import { ScriptedClient } from './nbd-client';
import { OPT, REP, clientFlags, optionFrame } from './wire';

/** How a TLS client ended up: a session to script, or the handshake's error. */
export type TlsOutcome =
  | { isSecure: true; client: ScriptedClient; secure: tls.TLSSocket }
  | { isSecure: false; error: Error };

const HANDSHAKE_TIMEOUT_MS = 10_000;

/** A plaintext client on 127.0.0.1:port with the greeting read and fixed-newstyle flags sent. */
export async function connectPlain(port: number): Promise<{ socket: net.Socket;
  client: ScriptedClient; }> {
  const socket = await new Promise<net.Socket>((resolve, reject) => {
    const connected = net.connect(port, '127.0.0.1', () => resolve(connected));
    connected.once('error', reject);
  });
  const client = new ScriptedClient(socket, socket);
  await client.readGreeting();
  client.write(clientFlags(3));
  return { socket, client };
}

/** Runs tls.connect over an already-acknowledged STARTTLS socket; never rejects. */
export function upgradeClient(socket: net.Socket, options: tls.ConnectionOptions,
): Promise<TlsOutcome> {
  socket.removeAllListeners('data'); // the plaintext client must not eat TLS records
  return new Promise((resolve) => {
    const secure = tls.connect({ socket, checkServerIdentity: () => undefined, ...options });
    const timer = setTimeout(() => fail(new Error('TLS handshake timed out')),
      HANDSHAKE_TIMEOUT_MS);
    const fail = (error: Error): void => {
      clearTimeout(timer);
      secure.destroy();
      resolve({ isSecure: false, error });
    };
    secure.once('error', fail);
    secure.once('close', () => fail(new Error('closed during the TLS handshake')));
    secure.once('secureConnect', () => {
      clearTimeout(timer);
      secure.removeAllListeners('close');
      secure.off('error', fail);
      resolve({ isSecure: true, client: new ScriptedClient(secure, secure), secure });
    });
  });
}

/**
 * Greeting, flags, NBD_OPT_STARTTLS (its ACK is asserted), then the TLS handshake. With TLS 1.3
 * the client's handshake completes before the server has judged its certificate: a refusal
 * shows only as the connection closing afterwards, so callers probe the session.
 */
export async function connectTls(port: number, options: tls.ConnectionOptions,
): Promise<TlsOutcome> {
  const { socket, client } = await connectPlain(port);
  client.write(optionFrame(OPT.STARTTLS));
  const reply = await client.readOptionReply();
  if (reply.type !== REP.ACK) {
    socket.destroy();
    return { isSecure: false, error: new Error(`STARTTLS: reply 0x${reply.type.toString(16)}`) };
  }
  return upgradeClient(socket, options);
}

/**
 * test/helpers/tls-probe: two domains' exports and a probe that writes down what one NBD session
 * sees of them, as a line a test compares whole: LIST contents, INFO and GO results per export,
 * the data a READ returns, or the point where the server closed the connection.
 *
 * Exports mirror src/serve/catalog-provider.ts: `1/xvda` belongs to domain 1 and `2/xvda` to
 * domain 2; an authenticated domain sees only its own, an unauthenticated client (domain null)
 * sees both. Their first 4 KiB hold 0x11 and 0x22, so a READ says which one it reached.
 */
import type { Domain } from '../../src/nbd/provider';
import { createFixedProvider, memoryDisk, type FixedProvider, type ScriptedClient,
} from './nbd-client';
import { OPT, REP, goPayload, optionFrame } from './wire';

export const EXPORT_1 = '1/xvda';
export const EXPORT_2 = '2/xvda';
const FILL: Record<string, number> = { [EXPORT_1]: 0x11, [EXPORT_2]: 0x22 };
const PROBE_LENGTH = 4096;

/** Domain 1's and domain 2's exports (4 KiB of 0x11 / 0x22 each), catalog-style visibility. */
export async function domainProvider(): Promise<FixedProvider> {
  const disks = [memoryDisk(EXPORT_1, 1 << 20), memoryDisk(EXPORT_2, 2 << 20)];
  for (const disk of disks) {
    await disk.write(0, Buffer.alloc(PROBE_LENGTH, FILL[disk.name]), { fua: false });
  }
  const visibility: Record<string, Domain[]> = { [EXPORT_1]: [1, null], [EXPORT_2]: [2, null] };
  return createFixedProvider(disks, visibility);
}

export function replyName(type: number): string {
  for (const [name, value] of Object.entries(REP)) if (value === type) return name;
  return `0x${type.toString(16)}`;
}

function dataName(data: Buffer): string {
  for (const [name, fill] of Object.entries(FILL)) {
    if (data.equals(Buffer.alloc(PROBE_LENGTH, fill))) return `data(${name})`;
  }
  return 'data(other)';
}

/** Appends `label=<what step answered>` to `seen`, or `label=closed` and false on EOF. */
async function record(seen: string[], label: string, step: () => Promise<string>,
): Promise<boolean> {
  try {
    seen.push(`${label}=${await step()}`);
    return true;
  } catch {
    seen.push(`${label}=closed`);
    return false;
  }
}

async function lastReply(client: ScriptedClient, option: number, payload: Buffer,
): Promise<string> {
  const replies = await client.option(option, payload);
  return replyName(replies[replies.length - 1]?.type ?? 0);
}

async function readFirstBlock(client: ScriptedClient): Promise<string> {
  client.request({ type: 0, offset: 0, length: PROBE_LENGTH, cookie: 1n });
  const reply = await client.readSimpleReply();
  return reply.errno === 0 ? dataName(await client.read(PROBE_LENGTH)) : `errno ${reply.errno}`;
}

/**
 * In the option phase: LIST, INFO of both exports, then GO on domain 2's export and, while GO
 * fails, on domain 1's; after a GO that succeeds, one READ. Ends the client.
 * Example: "LIST=[1/xvda] INFO(1/xvda)=ACK INFO(2/xvda)=ERR_UNKNOWN GO(2/xvda)=ERR_UNKNOWN
 * GO(1/xvda)=ACK READ=data(1/xvda)".
 */
export async function probeSession(client: ScriptedClient): Promise<string> {
  const seen: string[] = [];
  const isOpen = await record(seen, 'LIST', async () => {
    const replies = await client.option(OPT.LIST);
    const last = replies[replies.length - 1];
    if (last?.type !== REP.ACK) return replyName(last?.type ?? 0);
    const names = replies.filter((reply) => reply.type === REP.SERVER)
      .map((reply) => reply.payload.subarray(4, 4 + reply.payload.readUInt32BE(0)).toString());
    return `[${names.join(',')}]`;
  }) &&
    await record(seen, `INFO(${EXPORT_1})`, () => lastReply(client, OPT.INFO,
      goPayload(EXPORT_1))) &&
    await record(seen, `INFO(${EXPORT_2})`, () => lastReply(client, OPT.INFO,
      goPayload(EXPORT_2)));
  for (const name of isOpen ? [EXPORT_2, EXPORT_1] : []) {
    if (!await record(seen, `GO(${name})`, () => lastReply(client, OPT.GO, goPayload(name)))) {
      break;
    }
    if (seen[seen.length - 1]?.endsWith('=ACK') === true) {
      await record(seen, 'READ', () => readFirstBlock(client));
      break;
    }
  }
  client.end();
  return seen.join(' ');
}

/**
 * In the option phase: NBD_OPT_EXPORT_NAME for domain 2's export (no GO fallback: the old style
 * has no error reply), then one READ. "EXPORT_NAME(2/xvda)=closed" when the server refused.
 */
export async function probeExportName(client: ScriptedClient, name = EXPORT_2,
): Promise<string> {
  const seen: string[] = [];
  const isEntered = await record(seen, `EXPORT_NAME(${name})`, async () => {
    client.write(optionFrame(OPT.EXPORT_NAME, Buffer.from(name)));
    const info = await client.read(10); // size (8) and transmission flags (2): NO_ZEROES is set
    return `size ${info.readBigUInt64BE(0)}`;
  });
  if (isEntered) await record(seen, 'READ', () => readFirstBlock(client));
  client.end();
  return seen.join(' ');
}

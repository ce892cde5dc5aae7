/**
 * replies: the replies to pipelined requests, read in any order and checked one by one (the
 * data-path and sender-thread integration tests).
 */
import type { Test } from 'tap';
import type { ScriptedClient } from './nbd-client';
import { CMD, REPLY_TYPE, type RequestSpec } from './wire';

const FLAG_DONE = 1;

/** A request with the fields the checks name it by. */
export interface PipelinedRequest extends RequestSpec {
  cookie: bigint;
  offset: number;
  length: number;
}

export interface Outcome {
  errno: number;
  /** READ: the data assembled from the reply (holes as zeros); null otherwise */
  data: Buffer | null;
  /** BLOCK_STATUS: (length, flags) descriptors */
  status: [number, number][];
  /** structured: chunks received (1 for a READ sent as one OFFSET_DATA chunk) */
  chunkCount: number;
  /** structured READ: every chunk was OFFSET_DATA */
  isAllOffsetData: boolean;
}

/** Reads replies until every request has its final one; replies may come in any order. */
export async function collectReplies(client: ScriptedClient,
  requests: readonly PipelinedRequest[]): Promise<Map<bigint, Outcome>> {
  const byCookie = new Map(requests.map((request) => [request.cookie, request]));
  const outcomes = new Map<bigint, Outcome>();
  const open = new Map<bigint, Outcome>();
  const start = (request: PipelinedRequest): Outcome => ({ errno: 0, status: [], chunkCount: 0,
    isAllOffsetData: true, data: request.type === CMD.READ ? Buffer.alloc(request.length) : null });
  for (let count = 0; outcomes.size < requests.length && count < 64 * requests.length; count++) {
    const reply = await client.readAnyReply();
    if (reply.simple !== undefined) {
      const request = byCookie.get(reply.simple.cookie);
      if (request === undefined) throw new Error(`unknown cookie ${reply.simple.cookie}`);
      const outcome = open.get(request.cookie) ?? start(request);
      outcome.errno = reply.simple.errno;
      if (request.type === CMD.READ && outcome.errno === 0) {
        outcome.data = await client.read(request.length);
      }
      open.delete(request.cookie);
      outcomes.set(request.cookie, outcome);
      continue;
    }
    const chunk = reply.chunk!;
    const request = byCookie.get(chunk.cookie);
    if (request === undefined) throw new Error(`unknown cookie ${chunk.cookie}`);
    const outcome = open.get(chunk.cookie) ?? start(request);
    open.set(chunk.cookie, outcome);
    outcome.chunkCount += 1;
    if (chunk.type !== REPLY_TYPE.OFFSET_DATA) outcome.isAllOffsetData = false;
    if (chunk.type === REPLY_TYPE.OFFSET_DATA && outcome.data !== null) {
      const at = Number(chunk.payload.readBigUInt64BE(0)) - request.offset;
      chunk.payload.copy(outcome.data, at, 8);
    } else if (chunk.type === REPLY_TYPE.OFFSET_HOLE && outcome.data !== null) {
      const at = Number(chunk.payload.readBigUInt64BE(0)) - request.offset;
      outcome.data.fill(0, at, at + chunk.payload.readUInt32BE(8));
    } else if (chunk.type === REPLY_TYPE.BLOCK_STATUS) {
      for (let at = 4; at + 8 <= chunk.payload.length; at += 8) {
        outcome.status.push([chunk.payload.readUInt32BE(at), chunk.payload.readUInt32BE(at + 4)]);
      }
    } else if (chunk.type === REPLY_TYPE.ERROR) {
      outcome.errno = chunk.payload.readUInt32BE(0);
    }
    if ((chunk.flags & FLAG_DONE) !== 0) {
      open.delete(chunk.cookie);
      outcomes.set(chunk.cookie, outcome);
    }
  }
  return outcomes;
}

/** How a failure message names a request. */
export function describeRequest(request: PipelinedRequest): string {
  return `cookie ${request.cookie} type ${request.type} [${request.offset}, +${request.length})`;
}

/**
 * The outcome of a request that succeeded; otherwise null, after failing `t` with why (no reply,
 * or the errno).
 */
export function succeeded(t: Test, request: PipelinedRequest,
  outcome: Outcome | undefined): Outcome | null {
  if (outcome !== undefined && outcome.errno === 0) return outcome;
  t.fail(`${describeRequest(request)}: ` +
    `${outcome === undefined ? 'no reply' : `errno ${outcome.errno}`}`);
  return null;
}

/** Index of the first byte where `a` and `b` differ (the shorter length when one is a prefix of
 * the other); -1 when they are equal. */
export function firstDifference(a: Buffer, b: Buffer): number {
  if (a.equals(b)) return -1;
  const length = Math.min(a.length, b.length);
  for (let i = 0; i < length; i++) if (a[i] !== b[i]) return i;
  return length;
}

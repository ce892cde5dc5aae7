/**
 * nbd/reply-channel: the output phase (proto.md "Transmission": replies). One ReplyChannel
 * interface, one implementation per executor that owns the socket's writes:
 * - StreamChannel (reply-stream.ts): Node's stream; replies written in one event-loop turn
 *   are corked and sent together on setImmediate; a full write buffer waits for 'drain'.
 * - SenderChannel (reply-sender-channel.ts): the stream, plus a sender thread that sends large
 *   READ replies straight from descriptors; while it has jobs queued every reply goes through
 *   it (one writer at a time: see dataplane/reply-sender.ts).
 * - DatapathChannel (reply-datapath.ts): the data-path thread (dataplane/datapath.ts) owns
 *   the socket; every reply from JS is submitted to it whole.
 * Each channel counts the reply bytes it holds (`replyBytes`: a pooled READ buffer until its
 * write callback, frames queued on a thread until sent) and tells its host when they go down,
 * so the connection can keep the memory budget (budget.ts) and resume reading. After close()
 * a channel drops what it is given (onWritten still runs: nothing holds the buffer).
 */

import type { DataPlaneSource } from '../engine/export';

/** What a channel reports to its connection. */
export interface ReplyHost {
  /** replyBytes went up: the budget hears of it (connection.ts) */
  syncBudget(): void;
  /** replyBytes went down (the client took bytes); `isUnblocked`: from its cap to below it */
  onReplyReleased(isUnblocked: boolean): void;
  /** the stream's write buffer drained: it can take more */
  onWritable(): void;
  /** a job on the sender thread settled (sent, failed or cancelled) */
  onThreadSettled(): void;
  /** the stream a thread owns broke (errno name `code`): the connection ends */
  onStreamBroken(code: string, error?: Error): void;
  /** a thread refused a reply: the connection ends */
  closeHard(error: unknown, reason: string): void;
  /** a bug in one of the channel's callbacks: it ends the connection (connection.ts) */
  fault(error: unknown, where: string): void;
}

/** The counters a channel adds to (the connection's stats). */
export interface ReplyCounts {
  bytesWritten: number;
}

export interface ReplyChannel {
  /** bytes held for replies not yet written out (see the header) */
  readonly replyBytes: number;
  /** true while the output wants no more replies queued (drain, the sender's queue cap) */
  readonly isBlocked: boolean;
  /** jobs queued on a sender thread, not yet settled (0 for the others) */
  readonly pendingOnThread: number;
  /**
   * Queues a frame; onWritten runs once the output no longer needs it (or it was dropped).
   * `heldBytes` (default: the frame's length) is what stays allocated until then.
   */
  send(frame: Buffer, onWritten?: () => void, heldBytes?: number): void;
  sendv(frames: readonly Buffer[], onWritten?: () => void, heldBytes?: number): void;
  /** true when sendPlanned() may take a READ reply (a sender thread) */
  readonly canSendPlanned: boolean;
  /**
   * A READ reply: `header`, then [offset, offset+length) as `source` plans it (sender thread
   * only; with `requireData` a range that may hold holes has no plan); null: nothing was sent,
   * send the reply from a buffer.
   */
  sendPlanned(source: DataPlaneSource, offset: number, length: number, requireData: boolean,
    header: Buffer): Promise<void> | null;
  /** Hands what is corked to the kernel now. */
  uncork(): void;
  /**
   * Stops writing: later frames are dropped. A sender thread stops after its queue, or at once
   * when jobs are still queued (a hard close: they complete with ECANCELED).
   */
  close(): void;
  /** Removes the channel's stream listeners (STARTTLS, close). */
  detach(): void;
}

/**
 * Wraps an event handler so that a bug in it ends the connection (host.fault) and never
 * reaches the event loop, where it would end the process.
 */
export function guarded<A extends unknown[]>(host: Pick<ReplyHost, 'fault'>, where: string,
  handler: (...args: A) => void): (...args: A) => void {
  return (...args: A): void => {
    try {
      handler(...args);
    } catch (error) {
      host.fault(error, where);
    }
  };
}

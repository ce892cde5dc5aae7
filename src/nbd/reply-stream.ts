/**
 * nbd/reply-stream: the ReplyChannel (reply-channel.ts) that writes to a Node stream: the
 * handshake's replies, and every reply of a connection served from JS. Replies written in one
 * event-loop turn are corked and sent together on setImmediate (header and payload in one
 * segment); when write() says the buffer is full the channel is blocked until 'drain'. A frame
 * with onWritten counts `heldBytes` in replyBytes until its write callback runs (a pooled READ
 * buffer stays allocated until then).
 */
import type { Writable } from 'node:stream';
import { type ReplyChannel, type ReplyCounts, type ReplyHost, guarded } from './reply-channel';

export class StreamChannel implements ReplyChannel {
  replyBytes = 0;
  private isCorked = false;
  private isWaitingDrain = false;
  private isClosed = false;
  private readonly onDrain: () => void;
  private readonly onUncork: () => void;

  constructor(readonly output: Writable, private readonly host: ReplyHost,
    private readonly counts: ReplyCounts, private readonly replyBytesMax: number) {
    this.onDrain = guarded(host, 'onDrain', (): void => {
      this.isWaitingDrain = false;
      host.onWritable();
    });
    this.onUncork = guarded(host, 'uncork', (): void => {
      // a close() or an explicit uncork() may have come first
      if (!this.isCorked) return;
      this.isCorked = false;
      this.output.uncork();
    });
  }

  get isBlocked(): boolean {
    return this.isWaitingDrain;
  }

  get canSendPlanned(): boolean {
    return false;
  }

  get pendingOnThread(): number {
    return 0;
  }

  /** Bytes queued on the stream, not yet handed to the kernel. */
  get queuedBytes(): number {
    return this.output.writableLength;
  }

  send(frame: Buffer, onWritten?: () => void, heldBytes?: number): void {
    if (this.isClosed) {
      if (onWritten !== undefined) onWritten(); // dropped: nothing holds the buffer
      return;
    }
    this.counts.bytesWritten += frame.length;
    if (!this.isCorked) {
      this.isCorked = true;
      this.output.cork();
      setImmediate(this.onUncork);
    }
    let done = onWritten;
    if (onWritten !== undefined) {
      const held = heldBytes ?? frame.length;
      this.replyBytes += held;
      this.host.syncBudget();
      done = (): void => {
        this.release(held);
        onWritten();
      };
    }
    if (!this.output.write(frame, done) && !this.isWaitingDrain) {
      this.isWaitingDrain = true;
      this.output.once('drain', this.onDrain);
    }
  }

  sendv(frames: readonly Buffer[], onWritten?: () => void, heldBytes?: number): void {
    const last = frames.length - 1;
    for (let index = 0; index < last; index++) this.send(frames[index]!);
    if (last >= 0) this.send(frames[last]!, onWritten, heldBytes);
  }

  sendPlanned(): Promise<void> | null {
    return null;
  }

  uncork(): void {
    if (!this.isCorked) return;
    this.isCorked = false;
    this.output.uncork();
  }

  close(): void {
    this.isClosed = true;
    this.uncork();
  }

  detach(): void {
    this.output.off('drain', this.onDrain);
  }

  /** Bytes a sender thread holds for a frame until it is sent (SenderChannel). */
  hold(bytes: number): void {
    this.replyBytes += bytes;
    this.host.syncBudget();
  }

  /** Held bytes went down: the host may resume reading (connection.ts isReadBlocked). */
  release(bytes: number): void {
    const wasFull = this.replyBytes >= this.replyBytesMax;
    this.replyBytes -= bytes;
    this.host.onReplyReleased(wasFull && this.replyBytes < this.replyBytesMax);
  }
}

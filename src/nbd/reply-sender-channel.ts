/**
 * nbd/reply-sender-channel: the ReplyChannel (reply-channel.ts) of a connection whose large READ
 * replies go out on a sender thread (dataplane/reply-sender.ts; routesOf chose it): the JS
 * stream (a StreamChannel) and the thread write the same socket, so one owns it at a time. The
 * thread takes a READ plan only while nothing is queued on the stream, and while it has jobs
 * queued every reply, small ones too, goes through it. Frames queued on the thread count in
 * replyBytes until sent; reading stops (isBlocked) at `pendingMax` jobs queued.
 *
 * The thread starts with the first planned READ; when it cannot start, replies stay on the
 * stream. A job cut short breaks the stream (host.onStreamBroken); a plan whose pieces could not
 * be read before any byte went out rejects (`isIntact`) so that an error reply follows.
 */
import { ReplySender, type SendDone } from '../dataplane/reply-sender';
import type { DataPlaneSource } from '../engine/export';
import { IoError } from '../errors';
import type * as sys from '../sys/index';
import { type ReplyChannel, type ReplyCounts, type ReplyHost, guarded } from './reply-channel';
import type { StreamChannel } from './reply-stream';

export class SenderChannel implements ReplyChannel {
  private readonly sender: ReplySender;
  private isClosed = false;

  constructor(private readonly stream: StreamChannel, socketFd: number, mode: sys.SenderMode,
    private readonly host: ReplyHost, private readonly counts: ReplyCounts,
    private readonly pendingMax: number) {
    this.sender = new ReplySender(socketFd, mode,
      guarded(host, 'onSenderSettled', (): void => host.onThreadSettled()));
  }

  get replyBytes(): number {
    return this.stream.replyBytes;
  }

  get isBlocked(): boolean {
    return this.stream.isBlocked || this.sender.pending >= this.pendingMax;
  }

  get canSendPlanned(): boolean {
    return true;
  }

  get pendingOnThread(): number {
    return this.sender.pending;
  }

  send(frame: Buffer, onWritten?: () => void, heldBytes?: number): void {
    if (this.isClosed) {
      if (onWritten !== undefined) onWritten(); // dropped: nothing holds the buffer
      return;
    }
    if (this.sender.pending === 0) {
      this.stream.send(frame, onWritten, heldBytes); // it counts the bytes
      return;
    }
    this.counts.bytesWritten += frame.length;
    // the sender owns the stream until its queue is empty; it holds even an unpooled frame
    // until it is sent, so its bytes count in replyBytes until then
    const held = onWritten === undefined ? frame.length : heldBytes ?? frame.length;
    this.stream.hold(held);
    const isQueued = this.sender.submit(frame, null, (error) => {
      this.stream.release(held);
      if (onWritten !== undefined) onWritten();
      if (error !== null) this.host.onStreamBroken(error.code ?? '', error);
    });
    if (!isQueued) {
      this.stream.release(held);
      if (onWritten !== undefined) onWritten();
      this.host.closeHard(new Error('send: the sender refused a reply'), 'sender refused a reply');
    }
  }

  sendv(frames: readonly Buffer[], onWritten?: () => void, heldBytes?: number): void {
    const last = frames.length - 1;
    for (let index = 0; index < last; index++) this.send(frames[index]!);
    if (last >= 0) this.send(frames[last]!, onWritten, heldBytes);
  }

  sendPlanned(source: DataPlaneSource, offset: number, length: number, requireData: boolean,
    header: Buffer): Promise<void> | null {
    if (this.isClosed) return null;
    const sender = this.sender;
    const wasIdle = sender.pending === 0;
    let resolveSent: () => void = noop;
    let rejectSent: (error: Error) => void = noop;
    const settle: SendDone = (error, isIntact): void => {
      if (error === null) {
        resolveSent();
        return;
      }
      if (isIntact) {
        rejectSent(error); // nothing of this reply was sent: an error reply follows
        return;
      }
      this.host.onStreamBroken(error.code ?? '', error);
      // the connection is gone: no reply can follow (logged once, by onStreamBroken)
      rejectSent(new IoError('ESHUTDOWN', 'send', `send: ESHUTDOWN: ${error.message}`,
        { cause: error }));
    };
    // the thread settles a job later, never within submitRead
    const outcome = sender.submitRead(source, offset, length, requireData, header,
      !wasIdle || this.stream.queuedBytes === 0, settle);
    if (outcome === 'refused') {
      if (wasIdle) return null; // the stream is the JS side's: the caller sends the reply
      this.host.closeHard(new Error('send: the sender refused a reply'), 'sender refused a reply');
      return Promise.reject(new Error('send: the sender refused a reply'));
    }
    if (outcome !== 'queued') return null;
    this.counts.bytesWritten += header.length + length; // the pieces tile the range
    return new Promise<void>((resolve, reject) => {
      resolveSent = resolve;
      rejectSent = reject;
    });
  }

  uncork(): void {
    this.stream.uncork();
  }

  /** Graceful (nothing queued) or, with jobs queued, at once: they complete with ECANCELED. */
  close(): void {
    this.isClosed = true;
    this.stream.close();
    this.sender.close(this.sender.pending > 0);
  }

  detach(): void {
    this.stream.detach();
  }
}

function noop(): void { /* replaced once the job is queued */ }

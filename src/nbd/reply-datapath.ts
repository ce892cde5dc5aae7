/**
 * nbd/reply-datapath: the ReplyChannel (reply-channel.ts) of a connection whose socket a
 * data-path thread owns (dataplane/datapath.ts): the thread is the only writer, so every reply
 * from JS is submitted to it whole, between the replies it sends itself. A frame counts in
 * replyBytes until the thread sent it; the thread counts the bytes it sends (stats), and a frame
 * it could not send is reported by the thread itself as a broken stream
 * (DatapathHandlers.onError).
 */
import type { Datapath } from '../dataplane/datapath';
import type { ReplyChannel, ReplyHost } from './reply-channel';

export class DatapathChannel implements ReplyChannel {
  replyBytes = 0;
  private isClosed = false;

  constructor(private readonly datapath: Datapath, private readonly host: ReplyHost,
    private readonly replyBytesMax: number) {}

  get isBlocked(): boolean {
    return false;
  }

  get canSendPlanned(): boolean {
    return false;
  }

  get pendingOnThread(): number {
    return 0; // the thread's own queue drains when it stops (Datapath.stop)
  }

  send(frame: Buffer, onWritten?: () => void, heldBytes?: number): void {
    if (this.isClosed) {
      if (onWritten !== undefined) onWritten(); // dropped: nothing holds the buffer
      return;
    }
    const held = onWritten === undefined ? frame.length : heldBytes ?? frame.length;
    this.replyBytes += held;
    this.host.syncBudget();
    try {
      this.datapath.submit(frame, () => {
        this.release(held);
        if (onWritten !== undefined) onWritten();
      });
    } catch {
      this.release(held);
      if (onWritten !== undefined) onWritten();
      this.host.closeHard(new Error('send: the data path refused a reply'),
        'data path refused a reply');
    }
  }

  sendv(frames: readonly Buffer[], onWritten?: () => void, heldBytes?: number): void {
    if (frames.length > 1) {
      // one piece: the thread sends its own replies between two submitted frames, and a
      // chunk's header and its data may be two of them
      const whole = Buffer.concat(frames);
      if (onWritten !== undefined) onWritten(); // nothing refers to the frames any more
      this.send(whole);
      return;
    }
    if (frames.length === 1) this.send(frames[0]!, onWritten, heldBytes);
  }

  sendPlanned(): Promise<void> | null {
    return null;
  }

  uncork(): void { /* the thread gathers its own sends */ }

  close(): void {
    this.isClosed = true;
  }

  detach(): void { /* no stream listeners */ }

  private release(bytes: number): void {
    const wasFull = this.replyBytes >= this.replyBytesMax;
    this.replyBytes -= bytes;
    this.host.onReplyReleased(wasFull && this.replyBytes < this.replyBytesMax);
  }
}

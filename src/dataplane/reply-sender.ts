/**
 * dataplane/reply-sender: a connection's sender thread (native/src/sender.c) for large READ
 * replies, sent from the backing descriptors instead of through a reply buffer on the JS thread.
 *
 * Why: from JS a READ reply costs two copies on the one JS thread (file to reply buffer, buffer
 * to socket), and that thread is what limits nbdcopy and 1 MiB reads. On a unix socket the
 * sender can send the pieces with sendfile(2), which hands page-cache pages to the peer: one
 * copy less in all and none on a server thread (1 MiB reads 6.5 against 2.9-3.7 GB/s).
 *
 * Off by default (serve --sendfile turns it on): the kernel queues the pages, not their bytes,
 * so a client that has not read a reply yet receives what the pages hold when it reads. That
 * can be bytes written after the reply was sent, even after the connection was fenced and the
 * extents passed to another VD (unless zeroing on reuse punched them out of the page cache).
 * Copying instead (mode "copy": pread into the thread's buffer, at most 4 MiB, then send) is
 * safe but measured no better than replying from JS on this machine (the hand-offs to the
 * thread and back cost what the copies saved: nbdcopy to null: over a unix socket 1361-1532
 * against 1603-1772 MiB/s), and loopback TCP takes sendfile slower than pread+send; so without
 * --sendfile every reply stays on the JS thread.
 *
 * READ plans: submitRead() asks the export's data plane (engine/export.ts DataPlaneSource) for
 * the (fd, position, length) pieces of a READ and hands them to the thread; the plan is
 * released once the thread is done with them. The connection never sees the descriptors.
 *
 * One byte stream, two writers: the JS socket and the sender thread write the same socket, so
 * a reply must never interleave with another. The rule (Connection keeps it): the sender takes
 * a job only while the JS side has nothing queued on the socket (writableLength 0, nothing
 * corked), and while the sender has jobs pending every reply, small ones too, goes through it.
 * So at any moment one side owns the stream, and order within each side is submission order.
 *
 * Failures: the sender sends every job whole or breaks the stream (a job cut short: the peer
 * cannot resync). The callback says which: `isIntact` only when the pieces could not be read
 * before any byte was sent (copy mode), where the caller answers with an error reply; otherwise
 * the connection must end. Which mode a connection's sender has, if any, routesOf decides
 * (dataplane/routes.ts: serve --sendfile, or XVD_SENDER for experiments).
 */
import type { DataPlaneSource } from '../engine/export';
import * as sys from '../sys/index';

export type SendDone = (error: NodeJS.ErrnoException | null, isIntact: boolean) => void;

/**
 * What submitRead did: 'queued' (`done` will run), or nothing was queued and the caller replies
 * from a buffer ('no-plan': the range cannot be sent from descriptors; 'busy': no thread, or
 * the stream is not free), or the thread refused the job ('refused').
 */
export type ReadSubmit = 'queued' | 'no-plan' | 'busy' | 'refused';

export class ReplySender {
  /** jobs submitted and not yet completed */
  pending = 0;
  private native: sys.NativeSender | null = null;
  private isStartable = true;

  constructor(private readonly socketFd: number, private readonly mode: sys.SenderMode,
    private readonly onSettled: () => void) {}

  /** False when no sender thread can run (it could not start, or closed): send from JS. */
  get isUsable(): boolean {
    return this.native !== null || this.start();
  }

  /**
   * Queues `bytes` then `pieces` ((fd, position, length) triples); false when nothing was
   * queued (no thread, or the submit failed, e.g. ENOMEM): `done` will not run.
   */
  submit(bytes: Buffer, pieces: Float64Array | null, done: SendDone): boolean {
    if (!this.isUsable || this.native === null) return false;
    try {
      sys.senderSubmit(this.native, bytes, pieces, (error, isIntact) => {
        this.pending--;
        try {
          done(error, isIntact);
        } finally {
          this.onSettled();
        }
      });
    } catch {
      return false;
    }
    this.pending++;
    return true;
  }

  /**
   * Queues `header` then the pieces of [offset, offset+length) planned by `source` (with
   * `requireData`: null when the range may hold holes). `isStreamFree`: the JS side has nothing
   * queued on the socket, so the thread may take it (or it holds it already). See ReadSubmit.
   */
  submitRead(source: DataPlaneSource, offset: number, length: number, requireData: boolean,
    header: Buffer, isStreamFree: boolean, done: SendDone): ReadSubmit {
    const plan = source.planRead(offset, length, requireData);
    if (plan === null) return 'no-plan';
    if (!this.isUsable || !isStreamFree) {
      plan.done();
      return 'busy';
    }
    const isQueued = this.submit(header, plan.pieces, (error, isIntact) => {
      plan.done();
      done(error, isIntact);
    });
    if (isQueued) return 'queued';
    plan.done();
    return 'refused';
  }

  /**
   * Stops the thread and joins it: after the queue when `abort` is false (call it with nothing
   * pending), else at once, the queued jobs completing with ECANCELED. Later submits fail.
   */
  close(abort: boolean): void {
    this.isStartable = false;
    const native = this.native;
    this.native = null;
    if (native !== null) sys.closeSender(native, abort);
  }

  private start(): boolean {
    if (!this.isStartable) return false;
    try {
      this.native = sys.createSender(this.socketFd, this.mode);
      return true;
    } catch {
      this.isStartable = false; // e.g. EAGAIN from pthread_create: replies stay on the JS thread
      return false;
    }
  }
}

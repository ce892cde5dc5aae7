/* datapath.c: a thread per NBD connection that reads the client's requests itself and serves
 * plain READs and WRITEs straight from and to the backing descriptors; every other request goes
 * to the JS connection as the bytes it came in.
 *
 * Why: from JS every request costs hand-offs (the socket's wake-up, a thread-pool job or a
 * writer thread for the I/O, its completion, the reply's write) and the one JS thread does all
 * the copies. nbdcopy and 1 MiB writes were limited by it. Here one thread per connection does
 * what nbdkit's file plugin does: recv, pread or pwrite, send, with no hand-off in between, and
 * several replies go out in one sendmsg.
 *
 * createDatapath(socketFd, extents, size, options, blockSizeMin, spinMicros, dirty, initial,
 *                onEvent):
 *   extents    Float64Array of (startVirtual, length, fd, offsetBacking, backingIndex, kind):
 *              kind 0 a file, 1 a device, 2 a file known to hold no hole under the extent (JS's
 *              mapped data runs): its READs skip the SEEK_HOLE check
 *   size       the export's size in bytes
 *   options    DP_STRUCTURED (READ replies as one OFFSET_DATA chunk), DP_WRITABLE, DP_TCP
 *   spinMicros busy-poll budget (0: none): after its replies went out, a connection whose last
 *              request came within this long after the replies before it tries recv for up
 *              to this long before it sleeps in poll() (see spin())
 *   dirty      an Array of Int32Array (one per backing index): set to 1 before a WRITE's reply
 *              goes out, the pool entry's dirty flag (pool.ts), so a FLUSH on any connection
 *              syncs what this thread wrote; a second word, when there is one, is the entry's
 *              hole epoch, which JS bumps after a TRIM or WRITE_ZEROES (see is_data())
 *   initial    bytes the JS side had already received (or null)
 *   onEvent(kind, bytes, value) on the JS thread: DP_EV_FORWARD (bytes: stream bytes the JS
 *              side must handle, in stream order), DP_EV_EOF, DP_EV_ERROR (value: errno),
 *              DP_EV_FENCED, DP_EV_STOPPED (last; the thread is joined)
 * datapathSubmit(dp, bytes, callback|null): a reply frame from JS, sent whole; callback(error)
 * datapathControl(dp, op, value): DP_PAUSE (value 1/0: stop/resume reading), DP_FENCE (returns
 *   1 when no I/O is under way, else DP_EV_FENCED follows once it ended; from then on every byte
 *   is forwarded), DP_STOP (value 1: abort; 0: after the frames queued; DP_EV_STOPPED follows)
 * datapathStats(dp) -> Float64Array [requests served here, bytes received, bytes sent here,
 *   busy-polls that found a request, busy-polls that found none, receive buffer capacity, reply
 *   buffer capacity (both 0 once the thread freed them)]; the last counts once the thread is gone
 *
 * What is served here (request.c decides, a pure function of the stream's bytes): a READ or
 * WRITE with no flags, 0 < length <= DP_PAYLOAD_MAX, inside the export, aligned to blockSizeMin,
 * a WRITE only on a writable export. A READ is read with
 * RWF_NOWAIT: a page not in the page cache, a short read or any error forwards the request (JS
 * reads it on its thread pool, so a disk read never stalls the connection, and reports errors
 * as it always did). A structured READ of DP_SPARSE_MIN bytes or more is forwarded when
 * SEEK_HOLE finds a hole under it (JS then answers with hole chunks); a device has none. A WRITE
 * whose pwrite fails is forwarded whole: JS writes it again and reports the error. Anything
 * else (other commands, flags, bad ranges) is forwarded; a bad magic, an oversized WRITE, DISC
 * and a fence switch to forwarding every later byte as it comes ("raw"), since the JS side then
 * owns the stream's framing.
 *
 * One writer: all bytes to the socket go out from this thread, JS frames included, each whole.
 * The socket is non-blocking (one open file description with Node's, which stays paused): the
 * thread waits in poll() with an eventfd that submit, resume, fence and stop signal. Forwarded
 * bytes not yet delivered to JS are bounded by DP_FORWARD_MAX (reading stops above it).
 * Memory: buffers grown above their first sizes and forwarded bytes JS has not taken count in
 * the server's one memory budget (budget.c, src/nbd/budget.ts). A reply buffer the budget cannot
 * grow sends the request to JS instead; a receive buffer it cannot grow makes the thread read
 * nothing ("starved") and ask again every DP_BUDGET_RETRY_MS, so a payload that never completes
 * holds what it had, never more, until the stall deadline (JS) ends its connection.
 * A send failure breaks the stream: DP_EV_ERROR, later frames complete with ECANCELED.
 * The thread joins when DP_EV_STOPPED is delivered, so stopping never blocks the JS thread;
 * the environment's cleanup hook and the handle's finalizer abort and join synchronously.
 * Caveat: an I/O call under way (a pwrite on a failing disk) delays stopping until it returns. */
#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <pthread.h>
#include <stdlib.h>
#include <string.h>
#include <sys/eventfd.h>
#include <sys/socket.h>
#include <sys/uio.h>
#include <time.h>
#include <unistd.h>
#include "ops.h"
#include "request.h"

#define REQUEST_LENGTH XVD_REQUEST_LENGTH
#define SIMPLE_REPLY_MAGIC 0x67446698u
#define STRUCTURED_REPLY_MAGIC 0x668e33efu
#define SIMPLE_REPLY_LENGTH 16
#define CHUNK_READ_HEADER_LENGTH 28 /* chunk header (20) and the data's offset (8) */
#define CMD_READ XVD_CMD_READ
#define REPLY_FLAG_DONE 1
#define REPLY_TYPE_OFFSET_DATA 1

#define DP_PAYLOAD_MAX ((size_t)XVD_PAYLOAD_MAX) /* LIMITS.nbdPayloadMax */
#define DP_SPARSE_MIN ((uint64_t)64 << 10)     /* LIMITS.nbdSparseReadMin */
#define DP_RECV_MIN ((size_t)256 << 10)        /* receive buffer to start with */
#define DP_SEND_BATCH ((size_t)1 << 20)        /* replies gathered before a send */
#define DP_FORWARD_MAX ((int64_t)64 << 20)     /* forwarded bytes not yet taken by JS */
#define DP_FRAMES_IOV 64
#define DP_SHRINK_AFTER_MS 1000 /* idle this long: grown buffers shrink (a connection keeps
                                   at most DP_RECV_MIN + DP_SEND_BATCH while idle) */
#define DP_LOWAT_MIN ((size_t)256 << 10) /* LIMITS.nbdRecvLowWaterMin */
#define DP_LOWAT_MAX ((size_t)1 << 20)   /* LIMITS.nbdRecvLowWaterMax */
#define DP_SPIN_MAX_US 10000             /* LIMITS.nbdDatapathSpinMaxUs */
#define DP_SPIN_LENGTH_MAX ((size_t)64 << 10) /* LIMITS.nbdDatapathSpinLengthMax */
#define DP_HOT_IDLE_MS 1 /* a hot connection without a request this long is not hot */
#define DP_BUDGET_RETRY_MS 10 /* a starved thread asks the budget again this often */

enum { DP_STRUCTURED = 1, DP_WRITABLE = 2, DP_TCP = 4 };
enum { DP_EV_FORWARD = 1, DP_EV_EOF = 2, DP_EV_ERROR = 3, DP_EV_FENCED = 4, DP_EV_STOPPED = 5,
       DP_EV_FRAMES = 6 };
enum { DP_PAUSE = 1, DP_FENCE = 2, DP_STOP = 3 };

struct dp_extent {
  int64_t start, length, offset;
  int fd, backing;
  int is_data; /* no hole under the extent (a device; JS knew it; or a SEEK_HOLE showed it) */
  int is_device; /* a device: never a hole, whatever happens */
  int32_t epoch; /* the backing's hole epoch when is_data was learned (hole_epoch()) */
};

struct dp_frame {
  struct dp_frame *next;
  napi_ref bytes_ref, callback_ref;
  const uint8_t *bytes;
  size_t length;
  int err;
};

struct dp_event {
  int kind;
  int value;
  uint8_t *bytes;
  size_t length;
  struct dp_frame *frames; /* DP_EV_FRAMES: completed frames */
};

struct datapath {
  pthread_t thread;
  pthread_mutex_t mutex;
  struct dp_frame *head, *tail; /* guarded by mutex */
  int stop_mode;                /* guarded: 0 running, 1 after the queue, 2 abort */
  int is_aborted;               /* atomic */
  int is_paused;                /* atomic */
  int is_fenced;                /* atomic */
  int is_op_active;             /* atomic: an I/O on a backing is under way */
  int is_signalled;             /* atomic: wake() was called since the main loop's last look */
  int64_t unacked;              /* atomic: forwarded bytes not yet delivered */
  uint64_t stat_requests, stat_received, stat_sent, stat_spin_hits, stat_spin_misses; /* atomic */
  uint64_t stat_rcap, stat_scap; /* atomic: rcap and scap as the thread last set them */
  int sock, wake_fd;
  int options;
  int64_t size, block_min;
  struct xvd_request_params params; /* what request.c checks requests against */
  struct dp_extent *extents;
  size_t extent_count;
  int32_t **dirty;
  size_t dirty_count;
  int64_t *data_from, *data_to; /* per backing: a range SEEK_HOLE found to hold no hole */
  int32_t *data_epoch;          /* per backing: the hole epoch that range was found at */
  int32_t **holes;              /* per backing: the hole epoch word JS bumps, or NULL */
  /* thread only */
  uint8_t *rbuf;
  size_t rcap, rstart, rend, fstart; /* [fstart, rstart) is to be forwarded */
  uint8_t *sbuf;
  size_t scap, sused;
  int is_raw, is_receiving, is_broken, is_fence_told;
  int is_woken; /* wait_writable took a wake-up the main loop has not acted on */
  int lowat;    /* SO_RCVLOWAT set on a TCP socket; 0: unknown */
  int64_t spin_ns;     /* busy-poll budget; 0: never */
  int is_hot; /* may spin: the last wait for a request was shorter than spin_ns, after a small
                * request (note_wait()); counted in `hot` */
  int is_drained;      /* the last recv emptied the socket: poll (or spin) without another */
  int is_starved;      /* a receive buffer must grow and the budget (budget.c) said no: the
                        * thread reads nothing and asks again every DP_BUDGET_RETRY_MS */
  int64_t budget_own;  /* what this thread's buffers hold in the budget (above first sizes) */
  size_t last_length;  /* the last request's length field */
  int failure;  /* errno that made the thread stop on its own (fail()) */
  int is_closed; /* guarded by mutex: the last frames were taken; submit refuses */
  /* JS thread only */
  napi_threadsafe_function tsfn;
  napi_ref *dirty_refs;
  napi_ref on_event;
  int is_joined;
  struct dp_box *box;
};

#define DP_STATS 7

/* What the JS handle owns (handle.c): base.object is the datapath until its memory is freed
 * (datapath_finalize), after the thread was joined. */
struct dp_box {
  struct xvd_thread_box base;
  double last_stats[DP_STATS]; /* datapathStats once the datapath is gone */
};

static const napi_type_tag DATAPATH_TAG = {0x7876644461746170ULL, 0x6174685468726403ULL};

static void put_u16(uint8_t *at, uint16_t value) {
  at[0] = (uint8_t)(value >> 8);
  at[1] = (uint8_t)value;
}
static void put_u32(uint8_t *at, uint32_t value) {
  put_u16(at, (uint16_t)(value >> 16));
  put_u16(at + 2, (uint16_t)value);
}
static void put_u64(uint8_t *at, uint64_t value) {
  put_u32(at, (uint32_t)(value >> 32));
  put_u32(at + 4, (uint32_t)value);
}

static int load(int *at) { return __atomic_load_n(at, __ATOMIC_SEQ_CST); }
static void store(int *at, int value) { __atomic_store_n(at, value, __ATOMIC_SEQ_CST); }

/* The thread cannot go on (out of memory): it stops, and JS hears DP_EV_ERROR at the end. */
static void fail(struct datapath *dp, int err) {
  if (dp->failure == 0) dp->failure = err;
  store(&dp->is_aborted, 1);
}

static void wake(struct datapath *dp) {
  store(&dp->is_signalled, 1); /* ends a spin (the state it looks at changed first) */
  uint64_t one = 1;
  ssize_t rc = write(dp->wake_fd, &one, sizeof one);
  (void)rc; /* the counter cannot overflow from these writes */
}

static void post(struct datapath *dp, int kind, int value, uint8_t *bytes, size_t length,
                 struct dp_frame *frames) {
  struct dp_event *event = calloc(1, sizeof *event);
  if (event == NULL) { /* nothing can be told: the connection cannot go on */
    free(bytes);
    fail(dp, ENOMEM);
    return;
  }
  event->kind = kind;
  event->value = value;
  event->bytes = bytes;
  event->length = length;
  event->frames = frames;
  napi_call_threadsafe_function(dp->tsfn, event, napi_tsfn_blocking);
}

/* Waits until the socket takes more bytes; ECANCELED once aborted. */
static int wait_writable(struct datapath *dp) {
  struct pollfd fds[2] = {{.fd = dp->sock, .events = POLLOUT},
                          {.fd = dp->wake_fd, .events = POLLIN}};
  for (;;) {
    if (load(&dp->is_aborted)) return ECANCELED;
    int n = poll(fds, 2, -1);
    if (n < 0 && errno == EINTR) continue;
    if (n < 0) return errno;
    if (fds[1].revents != 0) {
      /* taken here, so noted: the main loop then looks at the queue and flags before polling */
      uint64_t count;
      ssize_t rc = read(dp->wake_fd, &count, sizeof count);
      (void)rc;
      dp->is_woken = 1;
      if (load(&dp->is_aborted)) return ECANCELED;
    }
    /* an abort shuts the socket down: that wakes this poll too, and is no socket error */
    if (load(&dp->is_aborted)) return ECANCELED;
    if (fds[0].revents != 0) return 0; /* writable, or an error the next send reports */
  }
}

/* Sends every byte of iov[0..count), advancing it. */
static int send_all(struct datapath *dp, struct iovec *iov, int count) {
  while (count > 0) {
    struct msghdr msg = {.msg_iov = iov, .msg_iovlen = (size_t)count};
    ssize_t n = sendmsg(dp->sock, &msg, MSG_NOSIGNAL);
    if (n < 0) {
      if (errno == EINTR) continue;
      if (load(&dp->is_aborted)) return ECANCELED; /* EPIPE from our own shutdown */
      if (errno != EAGAIN && errno != EWOULDBLOCK) return errno;
      int err = wait_writable(dp);
      if (err != 0) return err;
      continue;
    }
    __atomic_add_fetch(&dp->stat_sent, (uint64_t)n, __ATOMIC_RELAXED);
    count = xvd_iov_advance(&iov, count, (size_t)n);
  }
  return 0;
}

static void break_stream(struct datapath *dp, int err) {
  if (dp->is_broken) return;
  dp->is_broken = 1;
  dp->is_receiving = 0;
  post(dp, DP_EV_ERROR, err, NULL, 0, NULL);
}

/* Sends the gathered fast replies. */
static void flush_replies(struct datapath *dp) {
  if (dp->sused == 0) return;
  size_t used = dp->sused;
  dp->sused = 0;
  if (dp->is_broken) return;
  struct iovec iov = {.iov_base = dp->sbuf, .iov_len = used};
  int err = send_all(dp, &iov, 1);
  if (err != 0) break_stream(dp, err);
}

/* Sends the frames JS queued, in order, and hands them back completed. */
static void send_frames(struct datapath *dp) {
  pthread_mutex_lock(&dp->mutex);
  struct dp_frame *frames = dp->head;
  dp->head = dp->tail = NULL;
  pthread_mutex_unlock(&dp->mutex);
  if (frames == NULL) return;
  flush_replies(dp);
  struct dp_frame *frame = frames;
  while (frame != NULL) {
    struct iovec iov[DP_FRAMES_IOV];
    struct dp_frame *first = frame;
    int count = 0;
    for (; frame != NULL && count < DP_FRAMES_IOV; frame = frame->next) {
      iov[count].iov_base = (void *)frame->bytes;
      iov[count].iov_len = frame->length;
      count++;
    }
    int err = dp->is_broken || load(&dp->is_aborted) ? ECANCELED : send_all(dp, iov, count);
    if (err != 0) {
      for (struct dp_frame *f = first; f != frame; f = f->next) f->err = err;
      if (err != ECANCELED) break_stream(dp, err);
    }
  }
  post(dp, DP_EV_FRAMES, 0, NULL, 0, frames);
}

/* Hands [fstart, rstart) of the receive buffer to JS. */
static void flush_forward(struct datapath *dp) {
  size_t length = dp->rstart - dp->fstart;
  if (length == 0) return;
  uint8_t *bytes = malloc(length);
  if (bytes == NULL) {
    fail(dp, ENOMEM);
    return;
  }
  memcpy(bytes, dp->rbuf + dp->fstart, length);
  dp->fstart = dp->rstart;
  xvd_budget_charge((int64_t)length); /* until JS took it (datapath_deliver) */
  __atomic_add_fetch(&dp->unacked, (int64_t)length, __ATOMIC_SEQ_CST);
  post(dp, DP_EV_FORWARD, 0, bytes, length, NULL);
}

/* Index of the extent holding `offset` (inside the export). */
static size_t extent_of(const struct datapath *dp, int64_t offset) {
  size_t low = 0, high = dp->extent_count;
  while (high - low > 1) {
    size_t middle = low + (high - low) / 2;
    if (dp->extents[middle].start <= offset) low = middle;
    else high = middle;
  }
  return low;
}

/* The hole epoch of backing b: JS bumps it (dirty[b][1], pool.ts markHoled) after every TRIM or
 * WRITE_ZEROES on that backing, before its reply; what was learned at another epoch is stale. */
static int32_t hole_epoch(const struct datapath *dp, int b) {
  return dp->holes[b] == NULL ? 0 : __atomic_load_n(dp->holes[b], __ATOMIC_SEQ_CST);
}

/* False when a hole may lie under [position, position+length) of the extent's file. Remembers
 * an extent found all data, and the run SEEK_HOLE found, until the backing's hole epoch moves
 * (a TRIM or WRITE_ZEROES through JS, on any connection): then it looks again, so a structured
 * READ over a hole punched since is forwarded and answered with hole chunks, as on the JS path. */
static int is_data(struct datapath *dp, struct dp_extent *e, int64_t position, int64_t length) {
  if (e->is_device) return 1;
  int b = e->backing;
  int32_t epoch = hole_epoch(dp, b);
  if (e->is_data && e->epoch == epoch) return 1;
  if (dp->data_epoch[b] == epoch && position >= dp->data_from[b] &&
      position + length <= dp->data_to[b]) {
    return 1;
  }
  off_t hole = lseek(e->fd, (off_t)position, SEEK_HOLE);
  if (hole < 0) return errno == EINVAL; /* no SEEK_HOLE here: all data (as file-backing.ts) */
  if (hole < position + length) return 0;
  dp->data_from[b] = position;
  dp->data_to[b] = (int64_t)hole;
  dp->data_epoch[b] = epoch;
  if ((int64_t)hole >= e->offset + e->length) {
    /* data from position to the extent's end: and before position? */
    off_t head = position == e->offset ? hole : lseek(e->fd, (off_t)e->offset, SEEK_HOLE);
    e->is_data = head >= (off_t)(e->offset + e->length);
    e->epoch = epoch;
  }
  return 1;
}

/* One piece of a request on one extent: `length` bytes at `position` of e's file and `at`. */
typedef int (*piece_io)(struct datapath *dp, struct dp_extent *e, int64_t position,
                        uint8_t *at, size_t length, int check_holes);

/* Runs `io` on every piece of [offset, offset+length) with buffer's matching bytes: 0, or -1
 * (forward the request) as soon as one piece returns -1. */
static int each_piece(struct datapath *dp, int64_t offset, size_t length, uint8_t *buffer,
                      piece_io io, int check_holes) {
  size_t index = extent_of(dp, offset);
  for (size_t done = 0; done < length; index++) {
    if (index >= dp->extent_count) return -1;
    struct dp_extent *e = &dp->extents[index];
    int64_t within = offset + (int64_t)done - e->start;
    size_t take = length - done;
    if ((int64_t)take > e->length - within) take = (size_t)(e->length - within);
    if (io(dp, e, e->offset + within, buffer + done, take, check_holes) != 0) return -1;
    done += take;
  }
  return 0;
}

/* From the page cache only: not cached (EAGAIN), an error, EOF or a hole forwards it. */
static int read_piece(struct datapath *dp, struct dp_extent *e, int64_t position,
                      uint8_t *at, size_t length, int check_holes) {
  if (check_holes && !is_data(dp, e, position, (int64_t)length)) return -1;
  for (size_t got = 0; got < length;) {
    struct iovec iov = {.iov_base = at + got, .iov_len = length - got};
    ssize_t n = preadv2(e->fd, &iov, 1, (off_t)(position + (int64_t)got), RWF_NOWAIT);
    if (n < 0 && errno == EINTR) continue;
    if (n <= 0) return -1;
    got += (size_t)n;
  }
  return 0;
}

/* Marks the backing dirty, even on failure: part may have reached the page cache (as
 * extent-export.ts does); a failure forwards the request, and JS writes it again. */
static int write_piece(struct datapath *dp, struct dp_extent *e, int64_t position,
                       uint8_t *at, size_t length, int check_holes) {
  (void)check_holes;
  for (size_t put = 0; put < length;) {
    ssize_t n = pwrite(e->fd, at + put, length - put, (off_t)(position + (int64_t)put));
    if (n < 0 && errno == EINTR) continue;
    if ((size_t)e->backing < dp->dirty_count) {
      __atomic_store_n(dp->dirty[e->backing], 1, __ATOMIC_SEQ_CST);
    }
    if (n <= 0) return -1;
    put += (size_t)n;
  }
  return 0;
}

/* Sets a buffer's capacity (its bytes up to the new capacity kept); false on ENOMEM, the
 * buffer unchanged. */
static int resize(uint8_t **buffer, size_t *capacity, size_t size) {
  uint8_t *moved = realloc(*buffer, size);
  if (moved == NULL) return 0;
  *buffer = moved;
  *capacity = size;
  return 1;
}

/* Sets a buffer's capacity as resize() does, counting what it holds above `base` in the
 * memory budget (budget.c): 1 done, 0 ENOMEM, -1 the budget has no room for the growth now
 * (the buffer unchanged either way). */
static int resize_counted(struct datapath *dp, uint8_t **buffer, size_t *capacity, size_t base,
                          size_t size) {
  int64_t before = *capacity > base ? (int64_t)(*capacity - base) : 0;
  int64_t after = size > base ? (int64_t)(size - base) : 0;
  if (after > before && !xvd_budget_take(after - before)) return -1;
  if (!resize(buffer, capacity, size)) {
    if (after > before) xvd_budget_give(after - before);
    return 0;
  }
  if (after < before) xvd_budget_give(before - after);
  dp->budget_own += after - before;
  return 1;
}

/* Publishes the buffers' capacities for datapathStats. */
static void note_capacity(struct datapath *dp) {
  __atomic_store_n(&dp->stat_rcap, (uint64_t)dp->rcap, __ATOMIC_RELAXED);
  __atomic_store_n(&dp->stat_scap, (uint64_t)dp->scap, __ATOMIC_RELAXED);
}

/* Room for `bytes` more in the reply batch; false on ENOMEM. */
static int reserve_reply(struct datapath *dp, size_t bytes) {
  if (dp->scap - dp->sused >= bytes) return 1;
  flush_replies(dp);
  if (dp->scap >= bytes) return 1;
  /* no room in the budget (or memory): JS serves it, under the same budget */
  int is_resized = resize_counted(dp, &dp->sbuf, &dp->scap, DP_SEND_BATCH, bytes) == 1;
  note_capacity(dp);
  return is_resized;
}

static void tell_fenced(struct datapath *dp) {
  if (dp->is_fence_told) return;
  dp->is_fence_told = 1;
  post(dp, DP_EV_FENCED, 0, NULL, 0, NULL);
}

/* Starts I/O on a backing unless fenced (then every later byte is forwarded). */
static int begin_op(struct datapath *dp) {
  store(&dp->is_op_active, 1);
  if (!load(&dp->is_fenced)) return 1;
  store(&dp->is_op_active, 0);
  tell_fenced(dp);
  return 0;
}

static void end_op(struct datapath *dp) {
  store(&dp->is_op_active, 0);
  if (load(&dp->is_fenced)) tell_fenced(dp);
}

/* Serves one request here; 0 when it must be forwarded instead. */
static int serve(struct datapath *dp, const uint8_t *header, int type, uint64_t offset,
                 size_t length) {
  int is_structured = (dp->options & DP_STRUCTURED) != 0;
  size_t head = is_structured ? CHUNK_READ_HEADER_LENGTH : SIMPLE_REPLY_LENGTH;
  /* room first: a send that waits for the client is no I/O on a backing (a fence need not wait) */
  if (!reserve_reply(dp, type == CMD_READ ? head + length : SIMPLE_REPLY_LENGTH)) return 0;
  if (!begin_op(dp)) {
    dp->is_raw = 1;
    return 0;
  }
  uint8_t *at = dp->sbuf + dp->sused;
  int is_served;
  if (type == CMD_READ) {
    int check_holes = is_structured && length >= DP_SPARSE_MIN;
    is_served = each_piece(dp, (int64_t)offset, length, at + head, read_piece, check_holes) == 0;
  } else {
    is_served = each_piece(dp, (int64_t)offset, length, (uint8_t *)header + REQUEST_LENGTH,
                           write_piece, 0) == 0;
  }
  end_op(dp);
  if (is_served && type == CMD_READ && is_structured) {
    put_u32(at, STRUCTURED_REPLY_MAGIC);
    put_u16(at + 4, REPLY_FLAG_DONE);
    put_u16(at + 6, REPLY_TYPE_OFFSET_DATA);
    memcpy(at + 8, header + 8, 8); /* the cookie */
    put_u32(at + 16, (uint32_t)(8 + length));
    put_u64(at + 20, offset);
    dp->sused += head + length;
  } else if (is_served) {
    put_u32(at, SIMPLE_REPLY_MAGIC);
    put_u32(at + 4, 0);
    memcpy(at + 8, header + 8, 8);
    dp->sused += SIMPLE_REPLY_LENGTH + (type == CMD_READ ? length : 0);
  }
  if (is_served) __atomic_add_fetch(&dp->stat_requests, 1, __ATOMIC_RELAXED);
  return is_served;
}

/* Makes room for a request of `need` bytes starting at rstart (forwarding what precedes it):
 * 1 done, 0 ENOMEM, -1 the budget has no room now (resize_counted). */
static int make_room(struct datapath *dp, size_t need) {
  flush_forward(dp);
  if (dp->rstart > 0) {
    memmove(dp->rbuf, dp->rbuf + dp->rstart, dp->rend - dp->rstart);
    dp->rend -= dp->rstart;
    dp->fstart = dp->rstart = 0;
  }
  if (dp->rcap >= need) return 1;
  int is_resized = resize_counted(dp, &dp->rbuf, &dp->rcap, DP_RECV_MIN, need);
  note_capacity(dp);
  return is_resized;
}

/* TCP: poll() reports the socket readable only once `remaining` bytes of a large frame are
 * queued (fewer, larger reads; the JS path does the same, user-buffer-socket.ts); 1 between
 * frames, since a 28-byte header must wake the thread. Never more than the frame still needs, so
 * it cannot stall. A non-blocking recv still returns what is there. */
static void set_lowat(struct datapath *dp, size_t remaining) {
  if ((dp->options & DP_TCP) == 0) return;
  int want = remaining >= DP_LOWAT_MIN ? (int)(remaining < DP_LOWAT_MAX ? remaining : DP_LOWAT_MAX)
                                       : 1;
  if (want == dp->lowat) return;
  if (setsockopt(dp->sock, SOL_SOCKET, SO_RCVLOWAT, &want, sizeof want) == 0) dp->lowat = want;
  else dp->options &= ~DP_TCP; /* keeps what it had */
}

/* Serves or marks for forwarding every whole request in the receive buffer. */
static void process(struct datapath *dp) {
  while (!dp->is_raw && !dp->is_broken && !load(&dp->is_aborted)) {
    size_t available = dp->rend - dp->rstart;
    const uint8_t *header = dp->rbuf + dp->rstart;
    struct xvd_step step;
    xvd_request_step(header, available, &dp->params, &step); /* request.c */
    if (step.kind == XVD_STEP_SHORT_HEADER) break;
    if (step.kind == XVD_STEP_RAW || load(&dp->is_fenced)) {
      dp->is_raw = 1; /* JS frames every later byte */
      break;
    }
    size_t need = step.need;
    dp->last_length = step.request.length;
    if (step.kind == XVD_STEP_SHORT_PAYLOAD) {
      int room = dp->rcap - dp->rstart >= need ? 1 : make_room(dp, need);
      if (room == 0) fail(dp, ENOMEM);
      if (room < 0) dp->is_starved = 1; /* reads nothing until the budget has room */
      set_lowat(dp, need - available);
      break;
    }
    if (step.kind == XVD_STEP_SERVE) {
      flush_forward(dp); /* what came before goes to JS first */
      if (serve(dp, header, step.request.type, step.request.offset, step.request.length)) {
        dp->rstart += need;
        dp->fstart = dp->rstart;
        continue;
      }
      if (dp->is_raw) break;
    }
    dp->rstart += need; /* forwarded with its neighbours */
  }
  if (dp->is_raw || dp->rend - dp->rstart < REQUEST_LENGTH) set_lowat(dp, 0);
  if (dp->is_raw) dp->rstart = dp->rend;
  flush_forward(dp);
  if (dp->rstart == dp->rend) dp->rstart = dp->rend = dp->fstart = 0;
}

/* One recv into the receive buffer, then process(): 1 when more may be queued, 2 when the
 * recv took less than it had room for (the queue was drained: the next recv would most likely
 * say EAGAIN, a syscall poll() makes unneeded), 0 when there was nothing. */
static int receive(struct datapath *dp) {
  if (dp->rcap - dp->rend < DP_RECV_MIN / 4 && dp->rstart > 0 && !make_room(dp, 0)) {
    fail(dp, ENOMEM);
    return 0;
  }
  if (dp->rend == dp->rcap) {
    int room = make_room(dp, 2 * dp->rcap);
    if (room < 0) dp->is_starved = 1;
    if (room == 0) fail(dp, ENOMEM);
    if (room <= 0) return 0;
  }
  size_t room = dp->rcap - dp->rend;
  ssize_t n = recv(dp->sock, dp->rbuf + dp->rend, room, 0);
  if (n > 0) {
    __atomic_add_fetch(&dp->stat_received, (uint64_t)n, __ATOMIC_RELAXED);
    dp->rend += (size_t)n;
    process(dp);
    return (size_t)n < room ? 2 : 1;
  }
  if (n < 0 && errno == EINTR) return 1;
  if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK)) return 0;
  int err = n == 0 ? 0 : errno;
  if (load(&dp->is_aborted)) return 0; /* our own shutdown: nothing to tell */
  /* what came before goes to JS; a request cut short is dropped: it can never be served, and
   * its bytes (up to a whole payload) would only be copied to JS to be thrown away there */
  if (dp->is_raw) dp->rstart = dp->rend;
  flush_forward(dp);
  dp->is_receiving = 0;
  post(dp, err == 0 ? DP_EV_EOF : DP_EV_ERROR, err, NULL, 0, NULL);
  return 0;
}

/* Idle for DP_SHRINK_AFTER_MS: buffers grown for large requests go back to their first size. */
static void shrink(struct datapath *dp) {
  if (dp->sused == 0 && dp->scap > DP_SEND_BATCH) {
    resize_counted(dp, &dp->sbuf, &dp->scap, DP_SEND_BATCH, DP_SEND_BATCH);
  }
  if (dp->rstart == dp->rend && dp->rcap > DP_RECV_MIN &&
      resize_counted(dp, &dp->rbuf, &dp->rcap, DP_RECV_MIN, DP_RECV_MIN) == 1) {
    dp->rstart = dp->rend = dp->fstart = 0;
  }
  note_capacity(dp);
}

static int64_t now_ns(void) {
  struct timespec now;
  clock_gettime(CLOCK_MONOTONIC, &now);
  return (int64_t)now.tv_sec * 1000000000 + now.tv_nsec;
}

/* Connections whose requests come back within the busy-poll budget ("hot"), in the whole
 * process, and how many may spin: half the CPUs, at least one. With more hot connections than
 * that none spins, since the CPUs are then busy and a spinning thread takes time from the
 * clients and the other connections: four connections of small requests on the 2-CPU
 * development machine served 17% fewer requests with all of them spinning, and 8% fewer with
 * one of them at a time. */
static int hot;

static int spinners_max(void) {
  static int max;
  int value = __atomic_load_n(&max, __ATOMIC_RELAXED);
  if (value == 0) {
    long cpus = sysconf(_SC_NPROCESSORS_ONLN);
    value = cpus >= 4 ? (int)(cpus / 2) : 1;
    __atomic_store_n(&max, value, __ATOMIC_RELAXED);
  }
  return value;
}

/* A wait for a request ended after gap_ns (INT64_MAX: none came): hot or not from now on. */
static void note_wait(struct datapath *dp, int64_t gap_ns) {
  int is_hot = dp->spin_ns > 0 && gap_ns < dp->spin_ns && dp->last_length <= DP_SPIN_LENGTH_MAX;
  if (is_hot == dp->is_hot) return;
  dp->is_hot = is_hot;
  __atomic_add_fetch(&hot, is_hot ? 1 : -1, __ATOMIC_RELAXED);
}

/* Busy-poll. On this kind of machine most of a small request's round trip is the sleep in
 * poll() and the wake-up that ends it (scheduler, interrupts; a paravirtual guest pays most), so
 * a connection whose requests come back quickly tries recv for up to spin_ns instead: the
 * result of receive(), 0 when nothing came. Only on a hot connection: its last wait was shorter
 * than the budget (a spin that found nothing, or DP_HOT_IDLE_MS without a request, ends that
 * until a wait is short again), so an idle or slow client costs no CPU; and its last request
 * was small: with large ones the round trip is the copying, and a spinning thread takes CPU
 * time the client needs for it (1 MiB READs over a unix socket measured a third slower). And
 * only while no more connections are hot than may spin (`hot`). */
static int spin(struct datapath *dp) {
  if (!dp->is_hot || dp->last_length > DP_SPIN_LENGTH_MAX ||
      __atomic_load_n(&hot, __ATOMIC_RELAXED) > spinners_max()) { /* see `hot` */
    return 0;
  }
  int64_t start = now_ns(), now = start;
  int got = 0, is_interrupted = 0;
  while (got == 0 && now - start < dp->spin_ns) {
    if (!dp->is_receiving || dp->is_broken || dp->is_woken || load(&dp->is_signalled) ||
        __atomic_load_n(&dp->unacked, __ATOMIC_SEQ_CST) >= DP_FORWARD_MAX) {
      is_interrupted = 1; /* something else to do first: neither a hit nor a miss */
      break;
    }
    got = receive(dp);
    now = now_ns();
  }
  if (is_interrupted) return 0;
  note_wait(dp, got != 0 ? now - start : INT64_MAX);
  __atomic_add_fetch(got != 0 ? &dp->stat_spin_hits : &dp->stat_spin_misses, 1,
                     __ATOMIC_RELAXED);
  return got;
}

static void *datapath_main(void *data) {
  struct datapath *dp = data;
  process(dp); /* what the JS side had received */
  for (;;) {
    if (load(&dp->is_aborted)) break;
    dp->is_woken = 0; /* everything below is looked at afresh */
    store(&dp->is_signalled, 0);
    send_frames(dp);
    pthread_mutex_lock(&dp->mutex);
    int stop_mode = dp->stop_mode;
    int has_frames = dp->head != NULL;
    pthread_mutex_unlock(&dp->mutex);
    if (stop_mode == 2 || (stop_mode == 1 && !has_frames)) break;
    if (has_frames) continue;
    if (dp->is_starved && stop_mode == 0) { /* the budget may have room now: try again */
      dp->is_starved = 0;
      process(dp);
    }
    int want_in = stop_mode == 0 && dp->is_receiving && !dp->is_broken && !dp->is_starved &&
                  !load(&dp->is_paused) &&
                  __atomic_load_n(&dp->unacked, __ATOMIC_SEQ_CST) < DP_FORWARD_MAX;
    if (want_in && !dp->is_drained && receive(dp) == 1) continue;
    dp->is_drained = 0;
    flush_replies(dp); /* nothing more to read now: the gathered replies go out */
    if (dp->is_woken) { /* a wake-up was taken while sending: look again first */
      dp->is_woken = 0;
      continue;
    }
    want_in = want_in && dp->is_receiving && !dp->is_broken;
    if (want_in) {
      int got = spin(dp);
      if (got != 0) {
        dp->is_drained = got == 2;
        continue;
      }
    }
    struct pollfd fds[2] = {{.fd = want_in ? dp->sock : -1, .events = POLLIN},
                            {.fd = dp->wake_fd, .events = POLLIN}};
    int is_grown = dp->scap > DP_SEND_BATCH || dp->rcap > DP_RECV_MIN;
    int is_timed = want_in && dp->spin_ns > 0; /* the wait decides whether it is hot */
    int64_t start = is_timed ? now_ns() : 0;
    int n = 0;
    if (want_in && dp->is_hot) { /* idle for DP_HOT_IDLE_MS: the connection is not hot */
      n = poll(fds, 2, DP_HOT_IDLE_MS);
      if (n == 0) note_wait(dp, INT64_MAX);
    }
    if (n == 0) {
      n = poll(fds, 2, dp->is_starved ? DP_BUDGET_RETRY_MS : is_grown ? DP_SHRINK_AFTER_MS : -1);
    }
    if (is_timed && n > 0 && fds[0].revents != 0) note_wait(dp, now_ns() - start);
    if (n < 0 && errno != EINTR) {
      break_stream(dp, errno);
      break;
    }
    if (n == 0 && !dp->is_starved) shrink(dp);
    if (n > 0 && fds[1].revents != 0) {
      uint64_t count;
      ssize_t rc = read(dp->wake_fd, &count, sizeof count);
      (void)rc; /* EAGAIN: another loop took it */
    }
  }
  note_wait(dp, INT64_MAX); /* not hot any more */
  if (!load(&dp->is_aborted)) flush_replies(dp);
  else dp->sused = 0;
  /* frames still queued (an abort) complete with ECANCELED; later submits are refused */
  store(&dp->is_aborted, 1);
  pthread_mutex_lock(&dp->mutex);
  dp->is_closed = 1;
  pthread_mutex_unlock(&dp->mutex);
  send_frames(dp);
  if (dp->failure != 0) break_stream(dp, dp->failure);
  close(dp->sock);
  dp->sock = -1;
  free(dp->rbuf);
  dp->rbuf = NULL;
  free(dp->sbuf);
  dp->sbuf = NULL;
  dp->rcap = dp->scap = 0;
  xvd_budget_give(dp->budget_own);
  dp->budget_own = 0;
  note_capacity(dp);
  post(dp, DP_EV_STOPPED, 0, NULL, 0, NULL);
  napi_release_threadsafe_function(dp->tsfn, napi_tsfn_release);
  return NULL;
}

static void frame_free(napi_env env, struct dp_frame *frame) {
  if (env != NULL) {
    if (frame->bytes_ref != NULL) napi_delete_reference(env, frame->bytes_ref);
    if (frame->callback_ref != NULL) napi_delete_reference(env, frame->callback_ref);
  }
  free(frame);
}

static void free_bytes(napi_env env, void *data, void *hint) {
  (void)env;
  (void)hint;
  free(data);
}

static void join(struct datapath *dp) {
  if (dp->is_joined) return;
  dp->is_joined = 1;
  pthread_join(dp->thread, NULL);
}

static void call(napi_env env, napi_value callback, size_t argc, napi_value *argv) {
  napi_value global, ignored;
  napi_get_global(env, &global);
  napi_call_function(env, global, callback, argc, argv, &ignored);
}

/* On the JS thread: one event. env is NULL while the environment is torn down. */
static void datapath_deliver(napi_env env, napi_value on_event, void *context, void *data) {
  struct datapath *dp = context;
  struct dp_event *event = data;
  struct dp_frame *frame = event->frames;
  if (env == NULL) {
    while (frame != NULL) {
      struct dp_frame *next = frame->next;
      frame_free(NULL, frame);
      frame = next;
    }
    if (event->bytes != NULL) xvd_budget_give((int64_t)event->length);
    free(event->bytes);
    free(event);
    return;
  }
  napi_value argv[3];
  if (event->kind == DP_EV_FRAMES) {
    while (frame != NULL) {
      struct dp_frame *next = frame->next;
      napi_value callback = NULL;
      if (frame->callback_ref != NULL) napi_get_reference_value(env, frame->callback_ref, &callback);
      if (frame->err == 0) napi_get_null(env, &argv[0]);
      else argv[0] = xvd_make_errno_error(env, frame->err, "send");
      frame_free(env, frame);
      if (callback != NULL) call(env, callback, 1, argv);
      frame = next;
    }
    free(event);
    return;
  }
  if (event->kind == DP_EV_STOPPED) join(dp);
  napi_create_int32(env, event->kind, &argv[0]);
  if (event->bytes != NULL) {
    if (napi_create_external_buffer(env, event->length, event->bytes, free_bytes, NULL,
                                    &argv[1]) != napi_ok) {
      napi_create_buffer_copy(env, event->length, event->bytes, NULL, &argv[1]);
      free(event->bytes);
    }
    xvd_budget_give((int64_t)event->length); /* JS holds them now, in its own count */
    int64_t before = __atomic_fetch_sub(&dp->unacked, (int64_t)event->length, __ATOMIC_SEQ_CST);
    if (before >= DP_FORWARD_MAX && before - (int64_t)event->length < DP_FORWARD_MAX &&
        !dp->is_joined) {
      wake(dp);
    }
  } else {
    napi_get_null(env, &argv[1]);
  }
  napi_create_int32(env, event->value, &argv[2]);
  free(event);
  call(env, on_event, 3, argv);
}

static void read_stats(struct datapath *dp, double *values) {
  uint64_t *counters[DP_STATS] = {&dp->stat_requests, &dp->stat_received, &dp->stat_sent,
                                  &dp->stat_spin_hits, &dp->stat_spin_misses, &dp->stat_rcap,
                                  &dp->stat_scap};
  for (int i = 0; i < DP_STATS; i++) {
    values[i] = (double)__atomic_load_n(counters[i], __ATOMIC_RELAXED);
  }
}

static void datapath_finalize(napi_env env, void *data, void *hint) {
  (void)hint;
  struct datapath *dp = data;
  if (dp->box != NULL) {
    read_stats(dp, dp->box->last_stats);
    dp->box->base.object = NULL;
  }
  for (size_t i = 0; env != NULL && i < dp->dirty_count; i++) {
    if (dp->dirty_refs[i] != NULL) napi_delete_reference(env, dp->dirty_refs[i]);
  }
  if (dp->wake_fd >= 0) close(dp->wake_fd);
  pthread_mutex_destroy(&dp->mutex);
  free(dp->extents);
  free(dp->dirty);
  free(dp->dirty_refs);
  free(dp->data_from);
  free(dp->data_to);
  free(dp->data_epoch);
  free(dp->holes);
  free(dp->rbuf);
  free(dp->sbuf);
  free(dp);
}

/* Asks the thread to stop: after the queued frames, or at once (abort). */
static void request_stop(struct datapath *dp, int abort) {
  pthread_mutex_lock(&dp->mutex);
  if (dp->stop_mode < (abort ? 2 : 1)) dp->stop_mode = abort ? 2 : 1;
  pthread_mutex_unlock(&dp->mutex);
  if (abort) {
    store(&dp->is_aborted, 1);
    /* the peer sees the end now, not when a pwrite under way returns; the thread closes it */
    pthread_mutex_lock(&dp->mutex);
    if (!dp->is_closed) shutdown(dp->sock, SHUT_RDWR);
    pthread_mutex_unlock(&dp->mutex);
  }
  wake(dp);
}

/* The box's stop (handle.c), synchronous: abort and join (environment teardown, a collected
 * handle; a JS stop is datapathControl's DP_STOP). */
static void box_stop(struct xvd_thread_box *base, int abort) {
  (void)abort;
  struct datapath *dp = base->object;
  if (dp == NULL) return;
  request_stop(dp, 1);
  join(dp);
}

/* The box is freed next: the datapath, if still there, must not point at it. */
static void box_release(struct xvd_thread_box *base) {
  struct datapath *dp = base->object;
  if (dp != NULL) dp->box = NULL;
}

static int is_whole(double value, double max) {
  return value >= 0 && value <= max && value == (double)(int64_t)value;
}

/* Reads the extent list and dirty flags into dp; a message when they are not usable. */
static const char *read_map(napi_env env, struct datapath *dp, napi_value extents_value,
                            napi_value dirty_value) {
  bool is_typed = false, is_array = false;
  napi_typedarray_type type;
  size_t length = 0;
  void *data = NULL;
  napi_is_typedarray(env, extents_value, &is_typed);
  if (!is_typed || napi_get_typedarray_info(env, extents_value, &type, &length, &data, NULL,
                                            NULL) != napi_ok ||
      type != napi_float64_array || length == 0 || length % 6 != 0) {
    return "extents must be a Float64Array of 6-tuples";
  }
  uint32_t dirty_count = 0;
  napi_is_array(env, dirty_value, &is_array);
  if (!is_array || napi_get_array_length(env, dirty_value, &dirty_count) != napi_ok ||
      dirty_count == 0) {
    return "dirty must be an Array of Int32Array";
  }
  dp->extent_count = length / 6;
  dp->extents = calloc(dp->extent_count, sizeof *dp->extents);
  dp->dirty_count = dirty_count;
  dp->dirty = calloc(dirty_count, sizeof *dp->dirty);
  dp->dirty_refs = calloc(dirty_count, sizeof *dp->dirty_refs);
  dp->data_from = calloc(dirty_count, sizeof *dp->data_from);
  dp->data_to = calloc(dirty_count, sizeof *dp->data_to);
  dp->data_epoch = calloc(dirty_count, sizeof *dp->data_epoch);
  dp->holes = calloc(dirty_count, sizeof *dp->holes);
  if (dp->extents == NULL || dp->dirty == NULL || dp->dirty_refs == NULL ||
      dp->data_from == NULL || dp->data_to == NULL || dp->data_epoch == NULL ||
      dp->holes == NULL) {
    return "out of memory";
  }
  const double *tuples = data;
  int64_t next = 0;
  for (size_t i = 0; i < dp->extent_count; i++) {
    const double *t = tuples + 6 * i;
    if (!is_whole(t[0], 9007199254740991.0) || !(t[1] > 0) || !is_whole(t[1], 9007199254740991.0) ||
        !is_whole(t[2], 2147483647.0) || !is_whole(t[3], 9007199254740991.0) ||
        !is_whole(t[4], (double)dirty_count - 1) || !(t[5] == 0 || t[5] == 1 || t[5] == 2) ||
        (int64_t)t[0] != next) {
      return "an extent is not (start, length, fd, offset, backing, kind) in order";
    }
    struct dp_extent *e = &dp->extents[i];
    e->start = (int64_t)t[0];
    e->length = (int64_t)t[1];
    e->fd = (int)t[2];
    e->offset = (int64_t)t[3];
    e->backing = (int)t[4];
    e->is_data = t[5] != 0; /* a device has no hole; JS knew a file extent all data */
    e->is_device = t[5] == 1;
    next = e->start + e->length;
  }
  if (dp->size > next) return "size is past the extents";
  for (uint32_t i = 0; i < dirty_count; i++) {
    napi_value word;
    napi_get_element(env, dirty_value, i, &word);
    is_typed = false;
    napi_is_typedarray(env, word, &is_typed);
    if (!is_typed || napi_get_typedarray_info(env, word, &type, &length, &data, NULL, NULL) !=
                         napi_ok ||
        type != napi_int32_array || length < 1 ||
        napi_create_reference(env, word, 1, &dp->dirty_refs[i]) != napi_ok) {
      return "dirty must be an Array of Int32Array";
    }
    dp->dirty[i] = data;
    /* a second word is the backing's hole epoch (pool.ts); what JS knew is of the epoch now */
    dp->holes[i] = length >= 2 ? (int32_t *)data + 1 : NULL;
  }
  for (size_t i = 0; i < dp->extent_count; i++) {
    dp->extents[i].epoch = hole_epoch(dp, dp->extents[i].backing);
  }
  for (uint32_t i = 0; i < dirty_count; i++) dp->data_epoch[i] = hole_epoch(dp, (int)i);
  return NULL;
}

napi_value xvd_create_datapath(napi_env env, napi_callback_info info) {
  size_t argc = 9;
  napi_value argv[9], name;
  int32_t fd = -1, options = 0;
  double size = -1, block_min = 0, spin_micros = -1;
  napi_valuetype callback_type = napi_undefined, initial_type = napi_undefined;
  bool is_buffer = false;
  if (napi_get_cb_info(env, info, &argc, argv, NULL, NULL) != napi_ok || argc < 9 ||
      napi_get_value_int32(env, argv[0], &fd) != napi_ok ||
      napi_get_value_double(env, argv[2], &size) != napi_ok ||
      napi_get_value_int32(env, argv[3], &options) != napi_ok ||
      napi_get_value_double(env, argv[4], &block_min) != napi_ok ||
      napi_get_value_double(env, argv[5], &spin_micros) != napi_ok || fd < 0 ||
      !is_whole(size, 9007199254740991.0) || !is_whole(block_min, 1 << 30) || block_min < 1 ||
      !is_whole(spin_micros, DP_SPIN_MAX_US) ||
      (options & ~(DP_STRUCTURED | DP_WRITABLE | DP_TCP)) != 0 ||
      napi_typeof(env, argv[7], &initial_type) != napi_ok ||
      napi_typeof(env, argv[8], &callback_type) != napi_ok || callback_type != napi_function ||
      (initial_type != napi_null && (napi_is_buffer(env, argv[7], &is_buffer) != napi_ok ||
                                     !is_buffer))) {
    napi_throw_type_error(env, NULL, "createDatapath(socketFd, extents, size, options, "
                                     "blockSizeMin, spinMicros, dirty, initial, onEvent)");
    return NULL;
  }
  struct datapath *dp = calloc(1, sizeof *dp);
  struct dp_box *box = calloc(1, sizeof *box);
  if (dp == NULL || box == NULL) {
    free(dp);
    free(box);
    xvd_throw_errno(env, ENOMEM, "createDatapath");
    return NULL;
  }
  pthread_mutex_init(&dp->mutex, NULL);
  dp->sock = -1;
  dp->wake_fd = -1;
  dp->size = (int64_t)size;
  dp->block_min = (int64_t)block_min;
  dp->options = options;
  dp->params = (struct xvd_request_params){
      .size = (uint64_t)size,
      .block_min = (uint64_t)block_min,
      /* the thread serves only plain READs and WRITEs: read-only is all it needs to know */
      .eflags = (options & DP_WRITABLE) != 0 ? 0 : XVD_FLAG_READ_ONLY,
      .is_structured = (options & DP_STRUCTURED) != 0,
  };
  dp->spin_ns = (int64_t)spin_micros * 1000;
  dp->is_receiving = 1;
  const char *problem = read_map(env, dp, argv[1], argv[6]);
  size_t initial_length = 0;
  void *initial = NULL;
  if (initial_type != napi_null) napi_get_buffer_info(env, argv[7], &initial, &initial_length);
  dp->rcap = initial_length > DP_RECV_MIN ? initial_length : DP_RECV_MIN;
  dp->scap = DP_SEND_BATCH;
  if (problem == NULL) {
    dp->rbuf = malloc(dp->rcap);
    dp->sbuf = malloc(dp->scap);
    if (dp->rbuf == NULL || dp->sbuf == NULL) problem = "out of memory";
  }
  if (problem != NULL) {
    datapath_finalize(env, dp, NULL);
    free(box);
    napi_throw_range_error(env, NULL, problem);
    return NULL;
  }
  /* bytes JS had received beyond the first size: counted as the thread's from here on */
  dp->budget_own = (int64_t)(dp->rcap - DP_RECV_MIN);
  xvd_budget_charge(dp->budget_own);
  note_capacity(dp);
  if (initial_length > 0) memcpy(dp->rbuf, initial, initial_length);
  dp->rend = initial_length;
  dp->sock = fcntl(fd, F_DUPFD_CLOEXEC, 0);
  dp->wake_fd = dp->sock < 0 ? -1 : eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK);
  if (dp->sock < 0 || dp->wake_fd < 0) {
    int err = errno;
    const char *syscall = dp->sock < 0 ? "dup" : "eventfd";
    if (dp->sock >= 0) close(dp->sock);
    datapath_finalize(env, dp, NULL);
    free(box);
    xvd_throw_errno(env, err, syscall);
    return NULL;
  }
  napi_create_string_utf8(env, "xvd datapath", NAPI_AUTO_LENGTH, &name);
  if (napi_create_threadsafe_function(env, argv[8], NULL, name, 0, 1, dp, datapath_finalize, dp,
                                      datapath_deliver, &dp->tsfn) != napi_ok) {
    close(dp->sock);
    datapath_finalize(env, dp, NULL);
    free(box);
    napi_throw_error(env, NULL, "createDatapath: no thread-safe function");
    return NULL;
  }
  /* ref'd until the thread released it: the JS socket is paused, so this keeps the loop alive */
  int err = pthread_create(&dp->thread, NULL, datapath_main, dp);
  if (err != 0) {
    close(dp->sock);
    napi_release_threadsafe_function(dp->tsfn, napi_tsfn_release); /* finalizes: frees dp */
    free(box);
    xvd_throw_errno(env, err, "pthread_create");
    return NULL;
  }
  box->base.object = dp;
  box->base.stop = box_stop;
  box->base.release = box_release;
  dp->box = box;
  return xvd_thread_handle_new(env, &box->base, &DATAPATH_TAG, "createDatapath");
}

/* The running datapath of argv[0]; NULL after throwing. */
static struct datapath *get_running(napi_env env, napi_value value) {
  struct dp_box *box = xvd_handle_get(env, value, &DATAPATH_TAG);
  struct datapath *dp = box == NULL ? NULL : box->base.object;
  if (dp == NULL || dp->is_joined) {
    napi_throw_error(env, NULL, box == NULL ? "not a datapath" : "the datapath has stopped");
    return NULL;
  }
  return dp;
}

napi_value xvd_datapath_submit(napi_env env, napi_callback_info info) {
  size_t argc = 3;
  napi_value argv[3], undefined;
  napi_get_undefined(env, &undefined);
  if (napi_get_cb_info(env, info, &argc, argv, NULL, NULL) != napi_ok || argc < 3) {
    napi_throw_type_error(env, NULL, "datapathSubmit(datapath, bytes, callback)");
    return NULL;
  }
  struct datapath *dp = get_running(env, argv[0]);
  if (dp == NULL) return NULL;
  bool is_buffer = false;
  napi_valuetype callback_type;
  napi_is_buffer(env, argv[1], &is_buffer);
  napi_typeof(env, argv[2], &callback_type);
  if (!is_buffer || (callback_type != napi_function && callback_type != napi_null)) {
    napi_throw_type_error(env, NULL, "datapathSubmit: bytes must be a Buffer, callback a "
                                     "function or null");
    return NULL;
  }
  struct dp_frame *frame = calloc(1, sizeof *frame);
  if (frame == NULL) {
    xvd_throw_errno(env, ENOMEM, "datapathSubmit");
    return NULL;
  }
  void *bytes = NULL;
  napi_get_buffer_info(env, argv[1], &bytes, &frame->length);
  frame->bytes = bytes;
  if (napi_create_reference(env, argv[1], 1, &frame->bytes_ref) != napi_ok ||
      (callback_type == napi_function &&
       napi_create_reference(env, argv[2], 1, &frame->callback_ref) != napi_ok)) {
    frame_free(env, frame);
    napi_throw_error(env, NULL, "datapathSubmit: no reference");
    return NULL;
  }
  pthread_mutex_lock(&dp->mutex);
  int is_closed = dp->is_closed;
  int was_empty = dp->tail == NULL;
  if (is_closed) {
  } else if (was_empty) {
    dp->head = dp->tail = frame;
  } else {
    dp->tail->next = frame;
    dp->tail = frame;
  }
  pthread_mutex_unlock(&dp->mutex);
  if (is_closed) {
    frame_free(env, frame);
    napi_throw_error(env, NULL, "datapathSubmit: the datapath has stopped");
    return NULL;
  }
  if (was_empty) wake(dp);
  return undefined;
}

napi_value xvd_datapath_control(napi_env env, napi_callback_info info) {
  size_t argc = 3;
  napi_value argv[3], result;
  int32_t op = 0, value = 0;
  if (napi_get_cb_info(env, info, &argc, argv, NULL, NULL) != napi_ok || argc < 3 ||
      napi_get_value_int32(env, argv[1], &op) != napi_ok ||
      napi_get_value_int32(env, argv[2], &value) != napi_ok || op < DP_PAUSE || op > DP_STOP) {
    napi_throw_type_error(env, NULL, "datapathControl(datapath, op 1|2|3, value)");
    return NULL;
  }
  struct datapath *dp = get_running(env, argv[0]);
  if (dp == NULL) return NULL;
  int out = 0;
  switch (op) {
    case DP_PAUSE:
      store(&dp->is_paused, value != 0);
      if (value == 0) wake(dp);
      break;
    case DP_FENCE:
      store(&dp->is_fenced, 1);
      out = !load(&dp->is_op_active);
      wake(dp);
      break;
    default:
      request_stop(dp, value != 0);
      break;
  }
  napi_create_int32(env, out, &result);
  return result;
}

napi_value xvd_datapath_stats(napi_env env, napi_callback_info info) {
  size_t argc = 1;
  napi_value argv[1], buffer, array;
  if (napi_get_cb_info(env, info, &argc, argv, NULL, NULL) != napi_ok || argc < 1) {
    napi_throw_type_error(env, NULL, "datapathStats(datapath)");
    return NULL;
  }
  struct dp_box *box = xvd_handle_get(env, argv[0], &DATAPATH_TAG);
  if (box == NULL) {
    napi_throw_error(env, NULL, "not a datapath");
    return NULL;
  }
  double *values = NULL;
  if (napi_create_arraybuffer(env, DP_STATS * sizeof(double), (void **)&values, &buffer) !=
          napi_ok ||
      napi_create_typedarray(env, napi_float64_array, DP_STATS, buffer, 0, &array) != napi_ok) {
    napi_throw_error(env, NULL, "datapathStats: no array");
    return NULL;
  }
  if (box->base.object != NULL) read_stats(box->base.object, values);
  else memcpy(values, box->last_stats, sizeof box->last_stats);
  return array;
}

/* The bounds above, for the test that keeps them equal to src/limits.ts. */
void xvd_datapath_constants(napi_env env, napi_value constants) {
  const struct {
    const char *name;
    double value;
  } all[] = {
      {"DATAPATH_PAYLOAD_MAX", (double)DP_PAYLOAD_MAX},
      {"DATAPATH_SPARSE_MIN", (double)DP_SPARSE_MIN},
      {"DATAPATH_RECV_MIN", (double)DP_RECV_MIN},
      {"DATAPATH_LOWAT_MIN", (double)DP_LOWAT_MIN},
      {"DATAPATH_LOWAT_MAX", (double)DP_LOWAT_MAX},
      {"DATAPATH_FORWARD_MAX", (double)DP_FORWARD_MAX},
      {"DATAPATH_SEND_BATCH", (double)DP_SEND_BATCH},
      {"DATAPATH_SPIN_MAX_US", (double)DP_SPIN_MAX_US},
      {"DATAPATH_SPIN_LENGTH_MAX", (double)DP_SPIN_LENGTH_MAX},
      {"DATAPATH_SPINNERS_MAX", (double)spinners_max()},
  };
  for (size_t i = 0; i < sizeof all / sizeof all[0]; i++) {
    napi_value value;
    napi_create_double(env, all[i].value, &value);
    napi_set_named_property(env, constants, all[i].name, value);
  }
}

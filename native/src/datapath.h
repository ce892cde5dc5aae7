/* datapath.h: the data-path thread's shared state and the contract between its parts.
 *
 * A thread per NBD connection reads the client's requests itself and serves plain READs and
 * WRITEs straight from and to the backing descriptors; every other request goes to the JS
 * connection (src/nbd/datapath.ts) as the bytes it came in. Why: from JS every request costs
 * hand-offs (the socket's wake-up, a thread-pool job or a writer thread for the I/O, its
 * completion, the reply's write) and the one JS thread does all the copies; nbdcopy and 1 MiB
 * writes were limited by it. Here one thread does what nbdkit's file plugin does: recv, pread or
 * pwrite, send, with no hand-off in between, and several replies go out in one sendmsg.
 *
 * The parts, one concern each:
 *   request.c          request framing and validation, pure (helper of dp-loop.c)
 *   dp-wire.c          reply encoding, pure
 *   dp-map.c           the map as JS hands it over, extent lookup, hole knowledge
 *   dp-io.c            serving one request: buffers under the memory budget, the fence, pieces
 *   dp-reader.c        the reader thread: large READs read while the reply before is sent
 *   dp-send.c          everything that leaves the thread: replies, JS frames, forwarded bytes,
 *                      events
 *   dp-loop.c          the thread: receive, process, SO_RCVLOWAT, busy-poll, the main loop
 *   datapath-binding.c N-API: createDatapath, datapathSubmit/Control/Stats, event delivery,
 *                      finalize, the constants the limits test compares
 * The JS-visible contract (arguments, events, controls) is in datapath-binding.c's header.
 *
 * Who touches what (the struct below groups its fields so):
 *   "guarded"   under `mutex`, by both threads
 *   "atomic"    __atomic builtins (dp_load/dp_store), by both threads
 *   "thread"    the data-path thread only (and create/finalize, when no thread runs)
 *   "JS"        the JS thread only
 *
 * States. The flags are grouped into sub-states, each with its allowed transitions; those a
 * bug could break are asserted where they happen (dp_set_raw, dp_set_starved below; tell_fenced,
 * begin_op, end_op in dp-io.c; finish in dp-loop.c; join and request_stop in datapath-binding.c).
 *
 *   lifecycle (stop_mode, guarded; is_aborted, is_closed; is_joined, JS):
 *     DP_STOP_NONE -> DP_STOP_DRAIN -> DP_STOP_ABORT   (never backwards; NONE -> ABORT allowed)
 *     is_aborted 0 -> 1  (an abort, a failure, or the thread's end: nothing more is sent)
 *     is_closed 0 -> 1   (the thread took the last frames; submit refuses from then on)
 *     is_joined 0 -> 1   (only once is_closed, or the thread never ran)
 *   input framing (framing, thread):
 *     DP_FRAMING (this thread frames requests) -> DP_RAW (JS frames every later byte)
 *   reading (is_receiving, thread): 1 -> 0 on EOF, a recv error or a broken stream (again
 *     0 -> 0 when a send fails after an EOF)
 *   output (is_broken, thread): 0 -> 1 on a send failure; broken implies not reading
 *   fence (is_fenced, atomic, set by JS; is_fence_told, atomic): 0 -> 1 each, told only once
 *     fenced and no I/O is under way; no backing I/O begins once fenced (ops_active counts
 *     those under way, the thread's and its reader's)
 *   starved (is_starved, thread): 0 -> 1 when a receive buffer must grow and the budget
 *     refuses (1 -> 1 when a spin asks again), 1 -> 0 only to ask the budget again
 *   paused (is_paused, atomic, JS): 0 <-> 1 freely
 *   map (map_pending, atomic; map_next, guarded): JS puts a new map (datapathRemap, dp-map.c)
 *     in map_next and sets map_pending 0 -> 1; the thread, between requests and with its
 *     reader drained, takes it (1 -> 0), installs it and posts DP_EV_REMAPPED
 *   wake-up bookkeeping, not states: is_signalled, is_woken, is_drained, is_hot
 */
#ifndef XVD_DATAPATH_H
#define XVD_DATAPATH_H

#include <pthread.h>
#include <stddef.h>
#include <stdint.h>
#include "ops.h"
#include "protocol.h"
#include "request.h"
#include "xvd-assert.h"

/* Bounds from src/limits.ts, through the generated protocol.h (also published by
 * xvd_datapath_constants, which test/unit/sys.test.ts compares with LIMITS) */
#define DP_PAYLOAD_MAX ((size_t)XVD_LIMIT_NBD_PAYLOAD_MAX)
#define DP_SPARSE_MIN ((uint64_t)XVD_LIMIT_NBD_SPARSE_READ_MIN)
#define DP_SEND_BATCH ((size_t)XVD_LIMIT_NBD_DATAPATH_SEND_BATCH) /* replies gathered per send */
#define DP_FORWARD_MAX ((int64_t)XVD_LIMIT_NBD_DATAPATH_FORWARD_MAX) /* forwarded, not taken */
#define DP_LOWAT_MIN ((size_t)XVD_LIMIT_NBD_RECV_LOW_WATER_MIN)
#define DP_LOWAT_MAX ((size_t)XVD_LIMIT_NBD_RECV_LOW_WATER_MAX)
#define DP_SPIN_MAX_US XVD_LIMIT_NBD_DATAPATH_SPIN_MAX_US
#define DP_SPIN_LENGTH_MAX ((size_t)XVD_LIMIT_NBD_DATAPATH_SPIN_LENGTH_MAX)
#define DP_BUDGET_RETRY_MS XVD_LIMIT_NBD_BUDGET_RETRY_MS /* a starved thread asks this often */
#define DP_RECV_MIN ((size_t)XVD_LIMIT_NBD_DATAPATH_RECV_MIN) /* receive buffer to start with */
#define DP_READER_MIN ((size_t)XVD_LIMIT_NBD_DATAPATH_READER_MIN) /* READs for the reader thread */
#define DP_CORK_MIN ((size_t)XVD_LIMIT_NBD_DATAPATH_CORK_MIN) /* TCP: payloads sent on their own */
#define DP_READER_SLOTS XVD_LIMIT_NBD_DATAPATH_READER_SLOTS      /* ...at most this many at once */
/* C-only tuning, no JS twin */
#define DP_FRAMES_IOV 64                /* JS frames per sendmsg */
#define DP_SHRINK_AFTER_MS 1000 /* idle this long: grown buffers shrink (a connection keeps
                                   at most DP_RECV_MIN + DP_SEND_BATCH while idle) */
#define DP_HOT_IDLE_MS 1 /* a hot connection without a request this long is not hot */
#define DP_STATS_COUNTS 12 /* datapathStats' counters, then the latency buckets */
#define DP_LAT_BUCKETS 24  /* log2 microseconds: [0, 2), then [2^i, 2^(i+1)), the last open */
#define DP_STATS (DP_STATS_COUNTS + DP_LAT_BUCKETS) /* datapathStats' values */

/* createDatapath's options, events and controls (src/sys/index.ts DATAPATH_*) */
enum { DP_STRUCTURED = 1, DP_WRITABLE = 2, DP_TCP = 4, DP_READER = 8, DP_READER_ALWAYS = 16 };
enum { DP_EV_FORWARD = 1, DP_EV_EOF = 2, DP_EV_ERROR = 3, DP_EV_FENCED = 4, DP_EV_STOPPED = 5,
       DP_EV_FRAMES = 6, DP_EV_REMAPPED = 7 };
enum { DP_PAUSE = 1, DP_FENCE = 2, DP_STOP = 3 };

enum dp_stop_mode { DP_STOP_NONE = 0, DP_STOP_DRAIN = 1, DP_STOP_ABORT = 2 };
enum dp_framing { DP_FRAMING = 0, DP_RAW = 1 };

/* One extent of the map (dp-map.c), in virtual order, contiguous from 0. */
struct dp_extent {
  int64_t start, length, offset;
  int fd, backing;
  int is_data;   /* no hole under the extent (a device; JS knew it; or a SEEK_HOLE showed it) */
  int is_device; /* a device: never a hole, whatever happens */
  int is_shared; /* another VD shares it: never written here (dp-io.c forwards such WRITEs) */
  int32_t epoch; /* the backing's hole epoch when is_data was learned (dp_hole_epoch()) */
};

/* The per-map part of the thread's state (dp-map.c): a map JS handed over, not yet taken. */
struct dp_map {
  struct dp_extent *extents;
  size_t extent_count;
  int32_t **dirty, **holes;
  size_t dirty_count;
  int64_t *data_from, *data_to;
  int32_t *data_epoch;
  int32_t sequence; /* datapathRemap's, told back with DP_EV_REMAPPED */
};

/* A reply frame JS submitted, sent whole, in order; handed back with its result. */
struct dp_frame {
  struct dp_frame *next;
  napi_ref bytes_ref, callback_ref;
  const uint8_t *bytes;
  size_t length;
  int err;
};

/* A large READ handed to the reader thread (dp-reader.c; its header has the states). */
enum dp_slot_state {
  DP_SLOT_FREE = 0, DP_SLOT_QUEUED, DP_SLOT_DONE, DP_SLOT_FAILED, DP_SLOT_FORWARDED
};
struct dp_slot {
  uint8_t request[XVD_NBD_REQUEST_LENGTH]; /* the READ's frame: its reply's cookie, or forwarded */
  uint64_t offset;
  size_t length, head; /* the data goes at buffer + head, after the reply's header */
  uint8_t *buffer;
  size_t capacity; /* counted in the budget (dp->budget_own), all of it */
  int64_t start_ns;
  enum dp_slot_state state; /* under reader.mutex */
};

/* The reader thread's side of a connection (dp-reader.c). */
struct dp_reader {
  pthread_t thread;
  pthread_mutex_t mutex; /* guards the slots' state, next, fill and is_stopping */
  pthread_cond_t work, done;
  struct dp_slot slots[DP_READER_SLOTS];
  size_t fill, collect; /* data-path thread (fill also read by the reader, under the mutex) */
  size_t next;          /* the reader's next slot (under the mutex) */
  int is_stopping;      /* under the mutex */
  int is_running, is_broken; /* data-path thread: started (not joined); could not start */
};

/* What the thread posts to the JS thread (dp_post, datapath_deliver). */
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
  /* guarded */
  struct dp_frame *head, *tail;
  struct dp_map *map_next; /* a map JS handed over, not yet taken (dp-map.c) */
  enum dp_stop_mode stop_mode;
  int is_closed; /* the last frames were taken; submit refuses */
  /* atomic */
  int is_aborted;
  int is_paused;
  int is_fenced;
  int map_pending; /* map_next is set: the thread takes it between requests */
  int ops_active;   /* I/O on a backing under way: by this thread and its reader, 0..2 */
  int is_signalled; /* dp_wake() was called since the main loop's last look */
  int64_t unacked;  /* forwarded bytes not yet delivered, >= 0 */
  uint64_t stat_requests, stat_received, stat_sent, stat_spin_hits, stat_spin_misses;
  uint64_t stat_rcap, stat_scap; /* rcap and scap as the thread last set them */
  uint64_t stat_reads, stat_read_bytes, stat_writes, stat_write_bytes; /* served here */
  uint64_t stat_reader_reads; /* of stat_reads, those the reader thread read */
  uint64_t stat_latency[DP_LAT_BUCKETS]; /* service times (framed to reply ready), log2 us */
  /* set at create, read-only after */
  int sock, wake_fd;
  int options; /* set once, at start */
  int64_t size, block_min;
  struct xvd_request_params params; /* what request.c checks requests against */
  struct dp_extent *extents;        /* dp-map.c; is_data and epoch: thread */
  size_t extent_count;
  int32_t **dirty;
  size_t dirty_count;
  int32_t **holes; /* per backing: the hole epoch word JS bumps, or NULL */
  /* thread (its reader's fields: dp-reader.c) */
  struct dp_reader reader;
  int64_t *data_from, *data_to; /* per backing: a range SEEK_HOLE found to hold no hole */
  int32_t *data_epoch;          /* per backing: the hole epoch that range was found at */
  uint8_t *rbuf;
  size_t rcap, rstart, rend, fstart; /* fstart <= rstart <= rend <= rcap; [fstart, rstart)
                                        is to be forwarded */
  uint8_t *sbuf;
  size_t scap, sused; /* sused <= scap */
  size_t scork; /* 0, or where in sbuf the first payload of DP_CORK_MIN or more starts (TCP):
                   the bytes before it go out with MSG_MORE (dp-send.c) */
  enum dp_framing framing;
  int is_receiving, is_broken;
  int is_fence_told; /* atomic: the thread and its reader */
  int is_woken; /* wait_writable took a wake-up the main loop has not acted on */
  int lowat;    /* SO_RCVLOWAT set on a TCP socket; 0: unknown; -1: setting it failed */
  int64_t spin_ns; /* busy-poll budget; 0: never */
  int is_hot; /* may spin: the last wait for a request was shorter than spin_ns, after a small
               * request (dp-loop.c note_wait()) */
  int is_drained; /* the last recv emptied the socket: poll (or spin) without another */
  int is_starved; /* a receive buffer must grow and the budget said no: read nothing, ask again
                   * every DP_BUDGET_RETRY_MS */
  int64_t budget_own; /* what this thread's buffers hold in the budget (above first sizes) */
  size_t last_length; /* the last request's length field */
  int failure;        /* errno that made the thread stop on its own (dp_fail()) */
  /* JS */
  napi_threadsafe_function tsfn;
  napi_ref *dirty_refs; /* every dirty array handed over so far, by backing index */
  void **dirty_data;    /* ... and their memory, to check a new map's first ones are the same */
  size_t ref_count;
  int is_joined;
  struct dp_box *box;
};

/* What the JS handle owns (handle.c): base.object is the datapath until its memory is freed
 * (datapath_finalize), after the thread was joined. */
struct dp_box {
  struct xvd_thread_box base;
  double last_stats[DP_STATS]; /* datapathStats once the datapath is gone */
};

static inline int dp_load(int *at) { return __atomic_load_n(at, __ATOMIC_SEQ_CST); }
static inline void dp_store(int *at, int value) { __atomic_store_n(at, value, __ATOMIC_SEQ_CST); }
/* Adds to a counter only the data-path thread writes: a plain load and store (no locked add),
 * atomic so the JS thread's reads (datapathStats) see whole values. */
static inline void dp_bump(uint64_t *counter, uint64_t by) {
  __atomic_store_n(counter, __atomic_load_n(counter, __ATOMIC_RELAXED) + by, __ATOMIC_RELAXED);
}

void dp_reader_drain(struct datapath *dp);

/* Transitions (the table in the header). The reader is drained first: a READ it could not
 * serve is forwarded as its frame, which only a framed stream can take. */
static inline void dp_set_raw(struct datapath *dp) {
  XVD_ASSERT(dp->framing == DP_FRAMING, "the stream turns raw once, from framing");
  dp_reader_drain(dp);
  dp->framing = DP_RAW;
}
/* may repeat: an EOF, then a send failure */
static inline void dp_end_reading(struct datapath *dp) { dp->is_receiving = 0; }
static inline void dp_set_starved(struct datapath *dp, int is_starved) {
  XVD_ASSERT(is_starved != dp->is_starved || is_starved, "starved is cleared only when set");
  dp->is_starved = is_starved;
}

/* The buffers' bookkeeping, checked wherever it moves. */
static inline void dp_assert_buffers(const struct datapath *dp) {
  XVD_ASSERT(dp->fstart <= dp->rstart, "forwarded bytes precede the unread ones");
  XVD_ASSERT(dp->rstart <= dp->rend, "the read cursor is inside the received bytes");
  XVD_ASSERT(dp->rend <= dp->rcap, "received bytes fit the receive buffer");
  XVD_ASSERT(dp->sused <= dp->scap, "gathered replies fit the reply buffer");
  XVD_ASSERT(dp->budget_own >= 0, "a thread never holds a negative share of the budget");
}

/* dp-wire.c */
#define DP_SIMPLE_REPLY_LENGTH XVD_NBD_SIMPLE_REPLY_LENGTH
#define DP_CHUNK_READ_HEADER_LENGTH XVD_NBD_OFFSET_DATA_HEADER_LENGTH /* chunk header, offset */
size_t dp_wire_read_head_length(int is_structured);
void dp_wire_read_reply(uint8_t *at, const uint8_t *request, uint64_t offset, size_t length,
                        int is_structured);
void dp_wire_simple_reply(uint8_t *at, const uint8_t *request);

/* dp-map.c */
const char *dp_map_read(napi_env env, struct datapath *dp, napi_value extents_value,
                        napi_value dirty_value);
void dp_map_free(struct datapath *dp);
void dp_map_take(struct datapath *dp);
void dp_map_next_free(struct dp_map *map);
struct datapath *xvd_datapath_running(napi_env env, napi_value value);
size_t dp_extent_of(const struct datapath *dp, int64_t offset);
int32_t dp_hole_epoch(const struct datapath *dp, int backing);
int dp_is_data(struct datapath *dp, struct dp_extent *e, int64_t position, int64_t length);
static inline int dp_is_whole(double value, double max) {
  return value >= 0 && value <= max && value == (double)(int64_t)value;
}

/* dp-io.c */
int dp_serve(struct datapath *dp, const uint8_t *header, int type, uint64_t offset,
             size_t length);
int dp_make_room(struct datapath *dp, size_t need);
int dp_resize_counted(struct datapath *dp, uint8_t **buffer, size_t *capacity, size_t base,
                      size_t size);
int dp_begin_op(struct datapath *dp);
void dp_end_op(struct datapath *dp);
int dp_read_pieces(struct datapath *dp, int64_t offset, size_t length, uint8_t *at);
int64_t dp_now_ns(void);
void dp_count_served(struct datapath *dp, int type, size_t length, int64_t start_ns);
void dp_shrink(struct datapath *dp);
void dp_note_capacity(struct datapath *dp);

/* dp-send.c */
void dp_fail(struct datapath *dp, int err);
void dp_wake(struct datapath *dp);
void dp_post(struct datapath *dp, int kind, int value, uint8_t *bytes, size_t length,
             struct dp_frame *frames);
void dp_break_stream(struct datapath *dp, int err);
void dp_flush_replies(struct datapath *dp);
void dp_send_frames(struct datapath *dp);
void dp_flush_forward(struct datapath *dp);
int dp_is_corked(const struct datapath *dp, size_t length);
void dp_send_after_replies(struct datapath *dp, const uint8_t *bytes, size_t head, size_t length);
void dp_forward_frame(struct datapath *dp, const uint8_t *frame, size_t length);

/* dp-reader.c */
int dp_reader_submit(struct datapath *dp, const uint8_t *request, uint64_t offset, size_t length,
                     size_t head);
void dp_reader_collect(struct datapath *dp, int wait);
void dp_reader_shrink(struct datapath *dp);
void dp_reader_end(struct datapath *dp);

/* dp-loop.c */
void *dp_main(void *data);
void dp_process(struct datapath *dp);
int dp_spinners_max(void);

#endif

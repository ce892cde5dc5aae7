/* dp-reader.c: a connection's reader thread, which reads large READs while the data-path
 * thread sends the reply before, so a stream of them costs max(read, send) per request rather
 * than read + send.
 *
 * Why: a 1 MiB READ on the data-path thread is a pread from the page cache (a copy) and a send
 * (another copy, into the socket); done one after the other by one thread, over TCP on a quiet
 * machine the thread was the limit while nbdkit, whose workers overlap the two, went faster.
 *
 * The contract (thread roles as in datapath.h):
 *   - The data-path thread hands over a READ of DP_READER_MIN bytes or more when the export asked
 *     for it (DP_READER), after it checked for holes itself (dp-map.c's knowledge is its own):
 *     dp_reader_submit() copies the request's frame into a free slot, whose reply buffer it sized
 *     under the memory budget, and answers 1; 0 leaves the READ to the inline path (the reader
 *     could not start, or the budget refused the buffer).
 *   - The reader reads each slot in submission order, from the page cache only (RWF_NOWAIT, as
 *     dp-io.c), under the fence (dp_begin_op/dp_end_op: no read begins once fenced), and marks
 *     it done or failed, then wakes the data-path thread (dp_wake).
 *   - The data-path thread collects slots in order (dp_reader_collect): a done one's reply goes
 *     out (after the gathered replies); a failed one (not cached, an error, fenced) is forwarded
 *     to JS as its frame, which then serves it as every forwarded READ. Forwarding needs the
 *     stream to be framed by this side, so before it turns raw (and before an EOF is told) the
 *     data-path thread drains the reader (dp_reader_drain): it waits for the reads under way
 *     (page-cache copies) and forwards the failed ones while forwarding still means something;
 *     the replies read wait to be sent like any other, so a client that reads nothing holds
 *     up neither the raw turn nor its EOF.
 *   - Idle (dp_shrink) the reader ends and its buffers go back to the budget; it starts again
 *     with the next large READ. At the end (dp-loop.c finish) it is stopped and joined: slots
 *     not read by then are dropped with the connection.
 *
 * On by default on unix sockets while a CPU is free (src/dataplane/routes.ts: XVD_DATAPATH=thread
 * leaves it out, =reader-always takes it on TCP too and ignores the gate). On TCP, once large
 * replies went out corked (dp-send.c, limits.ts nbdDatapathCorkMin), 1 MiB READs at qd8
 * measured 1.3x faster read inline than through the reader. It was
 * opt-in for a while: 3 of 4 full test runs with it on
 * ended with the wire fuzzer's process spinning in Node's exit-time handle cleanup, a hang that
 * later came with it off too (test/fuzz/wire-servers.test.ts), so not the reader's.
 *
 * States of a slot (`state`, under reader.mutex): FREE -> QUEUED (data-path thread) -> DONE |
 * FAILED (reader) -> FREE (data-path thread, when collected); FAILED -> FORWARDED (data-path
 * thread, dp_reader_drain) -> FREE. Slots are a ring: `fill` and
 * `collect` (data-path thread) and `next` (reader) only move forwards, collect <= next <= fill. */
#include <errno.h>
#include <stdio.h>
#include <unistd.h>
#include <stdlib.h>
#include <string.h>
#include "datapath.h"

/* The CPU gate. Handing a READ over pays off only when a CPU is free to run the reader while
 * this thread sends: on a busy machine the reader waits for a CPU, and the thread for it (1 MiB
 * READs over TCP measured 0.82x of reading inline with the load average at 4-6 on 2 CPUs). So
 * the machine's idle CPU time (/proc/stat, sampled at most every DP_IDLE_SAMPLE_MS by whichever
 * connection asks first) turns the reader on at DP_IDLE_ON_MILLI thousandths of a CPU idle,
 * and off below DP_IDLE_OFF_MILLI (the reader's own use lowers what is idle while it runs). */
#define DP_IDLE_SAMPLE_MS 50
#define DP_IDLE_ON_MILLI 500
#define DP_IDLE_OFF_MILLI 150

static int64_t sampled_ns, last_idle, last_total; /* under the sampling flag */
static int is_sampling, is_wanted;

/* Idle and total jiffies of all CPUs; 0 when /proc/stat cannot be read. */
static int read_cpu_times(int64_t *idle, int64_t *total) {
  FILE *file = fopen("/proc/stat", "re");
  if (file == NULL) return 0;
  long long v[8] = {0};
  int n = fscanf(file, "cpu %lld %lld %lld %lld %lld %lld %lld %lld", &v[0], &v[1], &v[2],
                 &v[3], &v[4], &v[5], &v[6], &v[7]);
  fclose(file);
  if (n < 4) return 0;
  *idle = v[3] + v[4]; /* idle, iowait */
  *total = 0;
  for (int i = 0; i < 8; i++) *total += v[i];
  return 1;
}

static void sample(int64_t now) {
  int64_t idle = 0, total = 0;
  if (!read_cpu_times(&idle, &total)) return; /* no /proc: the reader stays off */
  if (last_total > 0 && total > last_total) {
    int64_t milli = (idle - last_idle) * 1000 * (int64_t)sysconf(_SC_NPROCESSORS_ONLN) /
                    (total - last_total);
    int was = __atomic_load_n(&is_wanted, __ATOMIC_RELAXED);
    int wanted = was ? milli >= DP_IDLE_OFF_MILLI : milli >= DP_IDLE_ON_MILLI;
    __atomic_store_n(&is_wanted, wanted, __ATOMIC_RELAXED);
  }
  last_idle = idle;
  last_total = total;
}

/* Whether a READ should go to the reader now (see the gate above). Any data-path thread. */
static int is_cpu_free(void) {
  int64_t now = dp_now_ns();
  if (now - __atomic_load_n(&sampled_ns, __ATOMIC_ACQUIRE) >= DP_IDLE_SAMPLE_MS * 1000000LL &&
      !__atomic_exchange_n(&is_sampling, 1, __ATOMIC_ACQUIRE)) {
    sample(now);
    __atomic_store_n(&sampled_ns, now, __ATOMIC_RELEASE);
    __atomic_store_n(&is_sampling, 0, __ATOMIC_RELEASE);
  }
  return __atomic_load_n(&is_wanted, __ATOMIC_RELAXED);
}

static struct dp_slot *slot_at(struct dp_reader *r, size_t position) {
  return &r->slots[position % DP_READER_SLOTS];
}

/* One slot, on the reader thread: DP_SLOT_DONE or DP_SLOT_FAILED. */
static enum dp_slot_state read_slot(struct datapath *dp, struct dp_slot *slot) {
  if (!dp_begin_op(dp)) return DP_SLOT_FAILED;
  int got = dp_read_pieces(dp, (int64_t)slot->offset, slot->length, slot->buffer + slot->head);
  dp_end_op(dp);
  return got == 0 ? DP_SLOT_DONE : DP_SLOT_FAILED;
}

static void *reader_main(void *data) {
  struct datapath *dp = data;
  struct dp_reader *r = &dp->reader;
  pthread_setname_np(pthread_self(), "xvd-reader"); /* top, /proc/PID/task/TID/comm */
  pthread_mutex_lock(&r->mutex);
  for (;;) {
    while (!r->is_stopping && r->next == r->fill) pthread_cond_wait(&r->work, &r->mutex);
    if (r->is_stopping) break;
    struct dp_slot *slot = slot_at(r, r->next);
    XVD_ASSERT(slot->state == DP_SLOT_QUEUED, "the reader reads queued slots, in order");
    pthread_mutex_unlock(&r->mutex);
    enum dp_slot_state state = read_slot(dp, slot);
    pthread_mutex_lock(&r->mutex);
    slot->state = state;
    r->next++;
    pthread_cond_signal(&r->done);
    dp_wake(dp);
  }
  pthread_mutex_unlock(&r->mutex);
  return NULL;
}

static int start(struct datapath *dp) {
  struct dp_reader *r = &dp->reader;
  if (r->is_running) return 1;
  if (r->is_broken) return 0;
  r->is_stopping = 0;
  r->next = r->fill = r->collect;
  if (pthread_create(&r->thread, NULL, reader_main, dp) != 0) {
    r->is_broken = 1; /* read inline from now on */
    return 0;
  }
  r->is_running = 1;
  return 1;
}

/* Stops and joins the reader; what it had not read stays queued (collect drops it). */
static void stop(struct datapath *dp) {
  struct dp_reader *r = &dp->reader;
  if (!r->is_running) return;
  pthread_mutex_lock(&r->mutex);
  r->is_stopping = 1;
  pthread_cond_signal(&r->work);
  pthread_mutex_unlock(&r->mutex);
  pthread_join(r->thread, NULL);
  r->is_running = 0;
}

/* Hands the READ in `request` over to the reader (see the header): 1 taken, 0 serve it inline. */
int dp_reader_submit(struct datapath *dp, const uint8_t *request, uint64_t offset, size_t length,
                     size_t head) {
  struct dp_reader *r = &dp->reader;
  XVD_ASSERT(length >= DP_READER_MIN && length <= DP_PAYLOAD_MAX, "a reader READ is large");
  if ((dp->options & DP_READER_ALWAYS) == 0 && !is_cpu_free()) return 0;
  if (r->fill - r->collect == DP_READER_SLOTS) dp_reader_collect(dp, 1); /* the oldest */
  if (r->fill - r->collect == DP_READER_SLOTS || !start(dp)) return 0;
  struct dp_slot *slot = slot_at(r, r->fill);
  XVD_ASSERT(slot->state == DP_SLOT_FREE, "the slot at fill is free");
  if (slot->capacity < head + length &&
      dp_resize_counted(dp, &slot->buffer, &slot->capacity, 0, head + length) != 1) {
    return 0;
  }
  memcpy(slot->request, request, XVD_NBD_REQUEST_LENGTH);
  slot->offset = offset;
  slot->length = length;
  slot->head = head;
  slot->start_ns = dp_now_ns();
  pthread_mutex_lock(&r->mutex);
  slot->state = DP_SLOT_QUEUED;
  r->fill++;
  pthread_cond_signal(&r->work);
  pthread_mutex_unlock(&r->mutex);
  return 1;
}

/* A collected slot: its reply goes out, or its frame to JS. */
static void finish_slot(struct datapath *dp, struct dp_slot *slot, enum dp_slot_state state) {
  int is_structured = (dp->options & DP_STRUCTURED) != 0;
  if (state == DP_SLOT_FORWARDED) return; /* dp_reader_drain did */
  if (state == DP_SLOT_DONE) {
    dp_wire_read_reply(slot->buffer, slot->request, slot->offset, slot->length, is_structured);
    dp_count_served(dp, XVD_NBD_CMD_READ, slot->length, slot->start_ns); /* reply ready */
    dp_bump(&dp->stat_reader_reads, 1);
    dp_send_after_replies(dp, slot->buffer, slot->head, slot->length);
    return;
  }
  XVD_ASSERT(dp->framing == DP_FRAMING, "a failed READ is forwarded before the stream is raw");
  dp_forward_frame(dp, slot->request, XVD_NBD_REQUEST_LENGTH);
}

/* Collects the slots the reader finished, in order; with `wait`, first waits until the oldest
 * queued one is finished. */
void dp_reader_collect(struct datapath *dp, int wait) {
  struct dp_reader *r = &dp->reader;
  while (r->collect != r->fill) {
    struct dp_slot *slot = slot_at(r, r->collect);
    pthread_mutex_lock(&r->mutex);
    while (wait && r->is_running && slot->state == DP_SLOT_QUEUED) {
      pthread_cond_wait(&r->done, &r->mutex);
    }
    enum dp_slot_state state = slot->state;
    pthread_mutex_unlock(&r->mutex);
    if (state == DP_SLOT_QUEUED) return; /* not read yet (or the reader stopped first) */
    finish_slot(dp, slot, state);
    slot->state = DP_SLOT_FREE; /* the reader looks only at queued slots */
    r->collect++;
    wait = 0;
  }
}

/* Before the stream turns raw or its end is told (see the header): waits until the reader
 * finished every slot handed over, and forwards, in order, those it could not serve. The read
 * ones stay for dp_reader_collect to send: a client that reads nothing cannot hold this up. */
void dp_reader_drain(struct datapath *dp) {
  struct dp_reader *r = &dp->reader;
  if (!r->is_running) return;
  pthread_mutex_lock(&r->mutex);
  while (r->next != r->fill) pthread_cond_wait(&r->done, &r->mutex);
  pthread_mutex_unlock(&r->mutex);
  for (size_t position = r->collect; position != r->fill; position++) {
    struct dp_slot *slot = slot_at(r, position);
    if (slot->state != DP_SLOT_FAILED) continue;
    XVD_ASSERT(dp->framing == DP_FRAMING, "a failed READ is forwarded into a framed stream");
    dp_forward_frame(dp, slot->request, XVD_NBD_REQUEST_LENGTH);
    slot->state = DP_SLOT_FORWARDED; /* the reader is past it: no lock needed */
  }
}

/* Idle: the reader ends and its buffers go back to the budget (nothing is in flight). */
void dp_reader_shrink(struct datapath *dp) {
  struct dp_reader *r = &dp->reader;
  if (r->collect != r->fill) return;
  stop(dp);
  for (int i = 0; i < DP_READER_SLOTS; i++) {
    struct dp_slot *slot = &r->slots[i];
    if (slot->capacity > 0) dp_resize_counted(dp, &slot->buffer, &slot->capacity, 0, 0);
  }
}

/* The end (dp-loop.c finish): the reader stops; what it read goes out unless aborted, what it
 * had not read is dropped with the connection; the buffers are freed. */
void dp_reader_end(struct datapath *dp) {
  struct dp_reader *r = &dp->reader;
  stop(dp);
  while (r->collect != r->fill) {
    struct dp_slot *slot = slot_at(r, r->collect);
    if (slot->state == DP_SLOT_DONE && !dp_load(&dp->is_aborted)) {
      finish_slot(dp, slot, DP_SLOT_DONE);
    }
    slot->state = DP_SLOT_FREE;
    r->collect++;
  }
  for (int i = 0; i < DP_READER_SLOTS; i++) {
    free(r->slots[i].buffer);
    r->slots[i].buffer = NULL;
    r->slots[i].capacity = 0;
  }
}

/* dp-io.c: serving one request on the data-path thread, and the buffers it is served from.
 *
 * What is served here (request.c decides, a pure function of the stream's bytes): a READ or
 * WRITE with no flags, 0 < length <= DP_PAYLOAD_MAX, inside the export, aligned to
 * blockSizeMin, a WRITE only on a writable export. dp_serve() answers 1 (served: the reply is
 * in the reply batch) or 0 (forward the request to JS, which then serves it and reports any
 * error as it always did):
 *   - a READ is read with RWF_NOWAIT: a page not in the page cache, a short read or any error
 *     forwards it (JS reads it on its thread pool, so a disk read never stalls the connection);
 *   - a structured READ of DP_SPARSE_MIN bytes or more is forwarded when a hole may lie under
 *     it (dp-map.c dp_is_data(); JS then answers with hole chunks); a device has none;
 *   - a WRITE touching a shared extent (copy-on-write: dp-map.c KIND_SHARED) is forwarded
 *     before anything is written: JS copies the extent, swaps the map, then writes;
 *   - a WRITE whose pwrite fails is forwarded whole: JS writes it again and reports the error.
 *     The backing's dirty flag is set before the reply, even on failure (part may have reached
 *     the page cache), as extent-export.ts does;
 *   - a READ of DP_READER_MIN bytes or more, when the export asked for it (DP_READER), goes to
 *     the connection's reader thread once the hole check passed (dp-reader.c);
 *   - once fenced no backing I/O begins (ops_active counts those under way, this thread's and
 *     the reader's; DP_EV_FENCED is told once none is) and the stream turns raw.
 *
 * Buffers (thread only): the receive buffer starts at DP_RECV_MIN, the reply batch at
 * DP_SEND_BATCH; what either holds above that first size counts in the server's one memory
 * budget (budget.c, src/nbd/budget.ts), in dp->budget_own. A reply the budget cannot make room
 * for is forwarded (JS serves it, under the same budget); a receive buffer it cannot grow
 * starves the thread (dp-loop.c). After DP_SHRINK_AFTER_MS idle, both go back to first size. */
#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <sys/uio.h>
#include <unistd.h>
#include "datapath.h"

/* Sets a buffer's capacity (its bytes up to the new capacity kept); false on ENOMEM, the
 * buffer unchanged. */
static int resize(uint8_t **buffer, size_t *capacity, size_t size) {
  if (size == 0) {
    free(*buffer);
    *buffer = NULL;
    *capacity = 0;
    return 1;
  }
  uint8_t *moved = realloc(*buffer, size);
  if (moved == NULL) return 0;
  *buffer = moved;
  *capacity = size;
  return 1;
}

/* Sets a buffer's capacity as resize() does, counting what it holds above `base` in the
 * memory budget: 1 done, 0 ENOMEM, -1 the budget has no room for the growth now (the buffer
 * unchanged either way). Size 0 frees it. */
int dp_resize_counted(struct datapath *dp, uint8_t **buffer, size_t *capacity, size_t base,
                      size_t size) {
  int64_t before = *capacity > base ? (int64_t)(*capacity - base) : 0;
  int64_t after = size > base ? (int64_t)(size - base) : 0;
  XVD_ASSERT(dp->budget_own >= before, "a buffer's share is part of the thread's share");
  if (after > before && !xvd_budget_take(after - before)) return -1;
  if (!resize(buffer, capacity, size)) {
    if (after > before) xvd_budget_give(after - before);
    return 0;
  }
  if (after < before) xvd_budget_give(before - after);
  dp->budget_own += after - before;
  XVD_ASSERT(dp->budget_own >= 0, "a thread never holds a negative share of the budget");
  return 1;
}

/* Publishes the buffers' capacities for datapathStats. */
void dp_note_capacity(struct datapath *dp) {
  __atomic_store_n(&dp->stat_rcap, (uint64_t)dp->rcap, __ATOMIC_RELAXED);
  __atomic_store_n(&dp->stat_scap, (uint64_t)dp->scap, __ATOMIC_RELAXED);
}

/* Room for `bytes` more in the reply batch; false when the budget (or memory) has none. */
static int reserve_reply(struct datapath *dp, size_t bytes) {
  if (dp->scap - dp->sused >= bytes) return 1;
  dp_flush_replies(dp);
  XVD_ASSERT(dp->sused == 0, "a flush empties the reply batch");
  if (dp->scap >= bytes) return 1;
  int is_resized = dp_resize_counted(dp, &dp->sbuf, &dp->scap, DP_SEND_BATCH, bytes) == 1;
  dp_note_capacity(dp);
  return is_resized;
}

/* Makes room for a request of `need` bytes starting at rstart (forwarding what precedes it):
 * 1 done, 0 ENOMEM, -1 the budget has no room now (resize_counted). */
int dp_make_room(struct datapath *dp, size_t need) {
  dp_flush_forward(dp); /* (on ENOMEM the thread is aborting: what it drops does not matter) */
  if (dp->rstart > 0) {
    memmove(dp->rbuf, dp->rbuf + dp->rstart, dp->rend - dp->rstart);
    dp->rend -= dp->rstart;
    dp->fstart = dp->rstart = 0;
  }
  if (dp->rcap >= need) return 1;
  int is_resized = dp_resize_counted(dp, &dp->rbuf, &dp->rcap, DP_RECV_MIN, need);
  dp_note_capacity(dp);
  dp_assert_buffers(dp);
  return is_resized;
}

/* Idle for DP_SHRINK_AFTER_MS: buffers grown for large requests go back to their first size,
 * and the reader thread ends. */
void dp_shrink(struct datapath *dp) {
  dp_reader_shrink(dp);
  if (dp->sused == 0 && dp->scap > DP_SEND_BATCH) {
    dp_resize_counted(dp, &dp->sbuf, &dp->scap, DP_SEND_BATCH, DP_SEND_BATCH);
  }
  if (dp->rstart == dp->rend && dp->rcap > DP_RECV_MIN &&
      dp_resize_counted(dp, &dp->rbuf, &dp->rcap, DP_RECV_MIN, DP_RECV_MIN) == 1) {
    dp->rstart = dp->rend = dp->fstart = 0;
  }
  dp_note_capacity(dp);
  dp_assert_buffers(dp);
}

/* Told once (either thread may be the one), when fenced and no I/O is under way. */
static void tell_fenced(struct datapath *dp) {
  XVD_ASSERT(dp_load(&dp->is_fenced), "DP_EV_FENCED is told only once fenced");
  if (__atomic_exchange_n(&dp->is_fence_told, 1, __ATOMIC_SEQ_CST)) return;
  dp_post(dp, DP_EV_FENCED, 0, NULL, 0, NULL);
}

/* Starts I/O on a backing unless fenced (then every later byte is forwarded). The count, then
 * the fence: with datapathControl's fence, then count, one of the two sees the other. */
int dp_begin_op(struct datapath *dp) {
  int active = __atomic_add_fetch(&dp->ops_active, 1, __ATOMIC_SEQ_CST);
  XVD_ASSERT(active >= 1 && active <= 2, "one backing I/O per thread at a time");
  if (!dp_load(&dp->is_fenced)) return 1;
  dp_end_op(dp);
  return 0;
}

void dp_end_op(struct datapath *dp) {
  int active = __atomic_sub_fetch(&dp->ops_active, 1, __ATOMIC_SEQ_CST);
  XVD_ASSERT(active >= 0, "an I/O ends after it began");
  if (active == 0 && dp_load(&dp->is_fenced)) tell_fenced(dp);
}

/* One piece of a request on one extent: `length` bytes at `position` of e's file and `at`. */
typedef int (*piece_io)(struct datapath *dp, struct dp_extent *e, int64_t position,
                        uint8_t *at, size_t length, int check_holes);

/* Runs `io` on every piece of [offset, offset+length) with buffer's matching bytes: 0, or -1
 * (forward the request) as soon as one piece returns -1. */
static int each_piece(struct datapath *dp, int64_t offset, size_t length, uint8_t *buffer,
                      piece_io io, int check_holes) {
  XVD_ASSERT(offset + (int64_t)length <= dp->size, "a request served here is inside the export");
  size_t index = dp_extent_of(dp, offset);
  for (size_t done = 0; done < length; index++) {
    XVD_ASSERT(index < dp->extent_count, "the extents cover the export");
    struct dp_extent *e = &dp->extents[index];
    int64_t within = offset + (int64_t)done - e->start;
    XVD_ASSERT(within >= 0 && within < e->length, "each piece starts inside its extent");
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
  if (check_holes && !dp_is_data(dp, e, position, (int64_t)length)) return -1;
  for (size_t got = 0; got < length;) {
    struct iovec iov = {.iov_base = at + got, .iov_len = length - got};
    ssize_t n = preadv2(e->fd, &iov, 1, (off_t)(position + (int64_t)got), RWF_NOWAIT);
    if (n < 0 && errno == EINTR) continue;
    if (n <= 0) return -1;
    got += (size_t)n;
  }
  return 0;
}

/* No hole under the piece (dp-map.c): the data-path thread's check before it hands a READ
 * to the reader thread. */
static int check_piece(struct datapath *dp, struct dp_extent *e, int64_t position, uint8_t *at,
                       size_t length, int check_holes) {
  (void)at;
  (void)check_holes;
  return dp_is_data(dp, e, position, (int64_t)length) ? 0 : -1;
}

/* Reads [offset, offset+length) to `at` from the page cache, without the hole check (which
 * only the data-path thread may make): 0, or -1 when it must be forwarded. Either thread. */
int dp_read_pieces(struct datapath *dp, int64_t offset, size_t length, uint8_t *at) {
  return each_piece(dp, offset, length, at, read_piece, 0);
}

/* -1 (forward) when the piece's extent is shared: it is never written here. */
static int check_unshared(struct datapath *dp, struct dp_extent *e, int64_t position,
                          uint8_t *at, size_t length, int check_holes) {
  (void)dp;
  (void)position;
  (void)at;
  (void)length;
  (void)check_holes;
  return e->is_shared ? -1 : 0;
}

/* Marks the backing dirty, even on failure (see the header). */
static int write_piece(struct datapath *dp, struct dp_extent *e, int64_t position,
                       uint8_t *at, size_t length, int check_holes) {
  (void)check_holes;
  XVD_ASSERT((size_t)e->backing < dp->dirty_count, "every backing has a dirty flag");
  for (size_t put = 0; put < length;) {
    ssize_t n = pwrite(e->fd, at + put, length - put, (off_t)(position + (int64_t)put));
    if (n < 0 && errno == EINTR) continue;
    __atomic_store_n(dp->dirty[e->backing], 1, __ATOMIC_SEQ_CST);
    if (n <= 0) return -1;
    put += (size_t)n;
  }
  return 0;
}

/* Counts a request served here: by command, bytes, and its service time since start_ns. */
void dp_count_served(struct datapath *dp, int type, size_t length, int64_t start_ns) {
  int is_read = type == XVD_NBD_CMD_READ;
  dp_bump(&dp->stat_requests, 1);
  dp_bump(is_read ? &dp->stat_reads : &dp->stat_writes, 1);
  dp_bump(is_read ? &dp->stat_read_bytes : &dp->stat_write_bytes, (uint64_t)length);
  int64_t elapsed = dp_now_ns() - start_ns;
  uint64_t micros = elapsed > 0 ? (uint64_t)elapsed / 1000 : 0;
  int bucket = micros < 2 ? 0 : 63 - __builtin_clzll(micros);
  if (bucket >= DP_LAT_BUCKETS) bucket = DP_LAT_BUCKETS - 1;
  dp_bump(&dp->stat_latency[bucket], 1);
}

/* Serves one request here; 0 when it must be forwarded instead. `header` is the request's
 * frame (a WRITE's payload follows it). */
int dp_serve(struct datapath *dp, const uint8_t *header, int type, uint64_t offset,
             size_t length) {
  XVD_ASSERT(type == XVD_NBD_CMD_READ || type == XVD_NBD_CMD_WRITE,
             "only READ and WRITE are served");
  XVD_ASSERT(length > 0 && length <= DP_PAYLOAD_MAX, "a served length is a valid payload");
  XVD_ASSERT(type == XVD_NBD_CMD_READ || (dp->options & DP_WRITABLE) != 0,
             "a WRITE is served only on a writable export");
  int64_t start_ns = dp_now_ns();
  int is_structured = (dp->options & DP_STRUCTURED) != 0;
  size_t head = dp_wire_read_head_length(is_structured);
  int check_holes = is_structured && length >= DP_SPARSE_MIN;
  if (type == XVD_NBD_CMD_READ && (dp->options & DP_READER) != 0 && length >= DP_READER_MIN) {
    uint8_t *unused = (uint8_t *)header; /* check_piece writes nothing */
    if (check_holes && each_piece(dp, (int64_t)offset, length, unused, check_piece, 1) != 0) {
      return 0;
    }
    if (dp_reader_submit(dp, header, offset, length, head)) return 1; /* dp-reader.c */
    check_holes = 0; /* known: none */
  }
  if (type == XVD_NBD_CMD_WRITE &&
      each_piece(dp, (int64_t)offset, length, (uint8_t *)header, check_unshared, 0) != 0) {
    return 0; /* copy-on-write is JS's (see the header) */
  }
  size_t reply_length = type == XVD_NBD_CMD_READ ? head + length : DP_SIMPLE_REPLY_LENGTH;
  /* room first: a send that waits for the client is no I/O on a backing (a fence need not wait) */
  if (!reserve_reply(dp, reply_length)) return 0;
  XVD_ASSERT(dp->sused + reply_length <= dp->scap, "a reply fits the room reserved for it");
  if (!dp_begin_op(dp)) {
    dp_set_raw(dp);
    return 0;
  }
  uint8_t *at = dp->sbuf + dp->sused;
  int is_served;
  if (type == XVD_NBD_CMD_READ) {
    is_served = each_piece(dp, (int64_t)offset, length, at + head, read_piece, check_holes) == 0;
  } else {
    is_served = each_piece(dp, (int64_t)offset, length, (uint8_t *)header + XVD_NBD_REQUEST_LENGTH,
                           write_piece, 0) == 0;
  }
  dp_end_op(dp);
  if (!is_served) return 0;
  if (type == XVD_NBD_CMD_READ) {
    dp_wire_read_reply(at, header, offset, length, is_structured);
    if (dp->scork == 0 && dp_is_corked(dp, length)) dp->scork = dp->sused + head;
  } else {
    dp_wire_simple_reply(at, header);
  }
  dp->sused += reply_length;
  dp_count_served(dp, type, length, start_ns);
  return 1;
}

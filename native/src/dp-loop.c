/* dp-loop.c: the data-path thread itself: receive, frame and serve-or-forward (process), the
 * SO_RCVLOWAT policy, busy-polling, and the main loop that waits in poll().
 *
 * Contract with the other parts (datapath.h): the loop owns the receive cursors and every
 * "thread" field; it serves through dp-io.c and sends through dp-send.c. Requests are framed by
 * request.c: a whole valid plain READ/WRITE is served (dp_serve), anything else is forwarded
 * with its neighbours in stream order; a bad magic, an oversized WRITE, DISC and a fence turn
 * the stream raw (JS frames every later byte, forwarded as it comes).
 *
 * Reading stops while paused, stopping, broken, starved (the budget refused a receive buffer's
 * growth: nothing is read, and the budget is asked again every DP_BUDGET_RETRY_MS, so a payload
 * that never completes holds what it had, never more, until JS's stall deadline ends the
 * connection) or while JS has DP_FORWARD_MAX bytes it has not taken. Replies gathered while
 * more requests were queued go out in one sendmsg when there is nothing more to read.
 *
 * The end: on a stop (after the queued frames, or at once on an abort) or a poll failure the
 * thread sends what it may, completes the frames left with ECANCELED, closes its socket, gives
 * its buffers back to the budget, posts DP_EV_STOPPED last and releases the thread-safe
 * function; datapath-binding.c joins it when that event is delivered. Caveat: an I/O call under
 * way (a pwrite on a failing disk) delays stopping until it returns. */
#include <errno.h>
#include <poll.h>
#include <stdlib.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>
#include "datapath.h"

/* TCP: poll() reports the socket readable only once `remaining` bytes of a large frame are
 * queued (fewer, larger reads; the JS path does the same, user-buffer-socket.ts); 1 between
 * frames, since a 28-byte header must wake the thread. Never more than the frame still needs, so
 * it cannot stall. A non-blocking recv still returns what is there. */
static void set_lowat(struct datapath *dp, size_t remaining) {
  if ((dp->options & DP_TCP) == 0 || dp->lowat < 0) return;
  int want = remaining >= DP_LOWAT_MIN ? (int)(remaining < DP_LOWAT_MAX ? remaining : DP_LOWAT_MAX)
                                       : 1;
  if (want == dp->lowat) return;
  if (setsockopt(dp->sock, SOL_SOCKET, SO_RCVLOWAT, &want, sizeof want) == 0) dp->lowat = want;
  else dp->lowat = -1; /* keeps what it had, and tries no more */
}

/* Serves or marks for forwarding every whole request in the receive buffer. */
void dp_process(struct datapath *dp) {
  while (dp->framing == DP_FRAMING && !dp->is_broken && !dp_load(&dp->is_aborted)) {
    dp_map_take(dp); /* a new map JS handed over: from this request on (dp-map.c) */
    dp_assert_buffers(dp);
    size_t available = dp->rend - dp->rstart;
    const uint8_t *header = dp->rbuf + dp->rstart;
    struct xvd_step step;
    xvd_request_step(header, available, &dp->params, &step); /* request.c */
    if (step.kind == XVD_STEP_SHORT_HEADER) break;
    if (step.kind == XVD_STEP_RAW || dp_load(&dp->is_fenced)) {
      dp_set_raw(dp); /* JS frames every later byte */
      break;
    }
    size_t need = step.need;
    XVD_ASSERT(need >= XVD_NBD_REQUEST_LENGTH, "a decoded frame holds its header");
    dp->last_length = step.request.length;
    if (step.kind == XVD_STEP_SHORT_PAYLOAD) {
      XVD_ASSERT(need > available, "a short payload needs more than what is here");
      int room = dp->rcap - dp->rstart >= need ? 1 : dp_make_room(dp, need);
      if (room == 0) dp_fail(dp, ENOMEM);
      if (room < 0) dp_set_starved(dp, 1); /* reads nothing until the budget has room */
      if (room > 0) {
        XVD_ASSERT(dp->rcap - dp->rstart >= need, "the frame fits the receive buffer");
      }
      set_lowat(dp, need - available);
      break;
    }
    XVD_ASSERT(need <= available, "a whole frame is inside the received bytes");
    if (step.kind == XVD_STEP_SERVE) {
      dp_flush_forward(dp); /* what came before goes to JS first */
      if (dp_serve(dp, header, step.request.type, step.request.offset, step.request.length)) {
        dp->rstart += need;
        dp->fstart = dp->rstart;
        continue;
      }
      if (dp->framing == DP_RAW) break;
    }
    dp->rstart += need; /* forwarded with its neighbours */
  }
  int is_raw = dp->framing == DP_RAW;
  if (is_raw || dp->rend - dp->rstart < XVD_NBD_REQUEST_LENGTH) set_lowat(dp, 0);
  if (is_raw) dp->rstart = dp->rend;
  dp_flush_forward(dp);
  if (dp->rstart == dp->rend) dp->rstart = dp->rend = dp->fstart = 0;
  dp_assert_buffers(dp);
}

/* One recv into the receive buffer, then dp_process(): 1 when more may be queued, 2 when the
 * recv took less than it had room for (the queue was drained: the next recv would most likely
 * say EAGAIN, a syscall poll() makes unneeded), 0 when there was nothing. */
static int receive(struct datapath *dp) {
  if (dp->rcap - dp->rend < DP_RECV_MIN / 4 && dp->rstart > 0 && !dp_make_room(dp, 0)) {
    dp_fail(dp, ENOMEM);
    return 0;
  }
  if (dp->rend == dp->rcap) {
    int room = dp_make_room(dp, 2 * dp->rcap);
    if (room < 0) dp_set_starved(dp, 1);
    if (room == 0) dp_fail(dp, ENOMEM);
    if (room <= 0) return 0;
  }
  XVD_ASSERT(dp->rend < dp->rcap, "a recv has room");
  size_t room = dp->rcap - dp->rend;
  ssize_t n = recv(dp->sock, dp->rbuf + dp->rend, room, 0);
  if (n > 0) {
    XVD_ASSERT((size_t)n <= room, "recv takes at most the room it was given");
    __atomic_add_fetch(&dp->stat_received, (uint64_t)n, __ATOMIC_RELAXED);
    dp->rend += (size_t)n;
    dp_process(dp);
    return (size_t)n < room ? 2 : 1;
  }
  if (n < 0 && errno == EINTR) return 1;
  if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK)) return 0;
  int err = n == 0 ? 0 : errno;
  if (dp_load(&dp->is_aborted)) return 0; /* our own shutdown: nothing to tell */
  if (dp->framing == DP_FRAMING) dp_reader_drain(dp); /* its forwards come before the end */
  /* what came before goes to JS; a request cut short is dropped: it can never be served, and
   * its bytes (up to a whole payload) would only be copied to JS to be thrown away there */
  if (dp->framing == DP_RAW) dp->rstart = dp->rend;
  dp_flush_forward(dp);
  dp_end_reading(dp);
  dp_post(dp, err == 0 ? DP_EV_EOF : DP_EV_ERROR, err, NULL, 0, NULL);
  return 0;
}

int64_t dp_now_ns(void) {
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

int dp_spinners_max(void) {
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
  int after = __atomic_add_fetch(&hot, is_hot ? 1 : -1, __ATOMIC_RELAXED);
  XVD_ASSERT(after >= 0, "hot connections are counted once each");
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
      __atomic_load_n(&hot, __ATOMIC_RELAXED) > dp_spinners_max()) { /* see `hot` */
    return 0;
  }
  int64_t start = dp_now_ns(), now = start;
  int got = 0, is_interrupted = 0;
  while (got == 0 && now - start < dp->spin_ns) {
    if (!dp->is_receiving || dp->is_broken || dp->is_woken || dp_load(&dp->is_signalled) ||
        __atomic_load_n(&dp->unacked, __ATOMIC_SEQ_CST) >= DP_FORWARD_MAX) {
      is_interrupted = 1; /* something else to do first: neither a hit nor a miss */
      break;
    }
    got = receive(dp);
    now = dp_now_ns();
  }
  if (is_interrupted) return 0;
  note_wait(dp, got != 0 ? now - start : INT64_MAX);
  __atomic_add_fetch(got != 0 ? &dp->stat_spin_hits : &dp->stat_spin_misses, 1,
                     __ATOMIC_RELAXED);
  return got;
}

/* Waits in poll() for the socket (when `want_in`) or a wake-up: false when the thread must end
 * (a poll failure broke the stream). */
static int wait_events(struct datapath *dp, int want_in) {
  struct pollfd fds[2] = {{.fd = want_in ? dp->sock : -1, .events = POLLIN},
                          {.fd = dp->wake_fd, .events = POLLIN}};
  int is_grown = dp->scap > DP_SEND_BATCH || dp->rcap > DP_RECV_MIN || dp->reader.is_running;
  int is_timed = want_in && dp->spin_ns > 0; /* the wait decides whether it is hot */
  int64_t start = is_timed ? dp_now_ns() : 0;
  int n = 0;
  if (want_in && dp->is_hot) { /* idle for DP_HOT_IDLE_MS: the connection is not hot */
    n = poll(fds, 2, DP_HOT_IDLE_MS);
    if (n == 0) note_wait(dp, INT64_MAX);
  }
  if (n == 0) {
    n = poll(fds, 2, dp->is_starved ? DP_BUDGET_RETRY_MS : is_grown ? DP_SHRINK_AFTER_MS : -1);
  }
  if (is_timed && n > 0 && fds[0].revents != 0) note_wait(dp, dp_now_ns() - start);
  if (n < 0 && errno != EINTR) {
    dp_break_stream(dp, errno);
    return 0;
  }
  if (n == 0 && !dp->is_starved) dp_shrink(dp);
  if (n > 0 && fds[1].revents != 0) {
    uint64_t count;
    ssize_t rc = read(dp->wake_fd, &count, sizeof count);
    (void)rc; /* EAGAIN: another loop took it */
  }
  return 1;
}

/* The end (see the header); the thread's last acts. */
static void finish(struct datapath *dp) {
  note_wait(dp, INT64_MAX); /* not hot any more */
  dp_reader_end(dp); /* its replies go out first, unless aborted */
  if (!dp_load(&dp->is_aborted)) dp_flush_replies(dp);
  else dp->sused = dp->scork = 0;
  /* frames still queued (an abort) complete with ECANCELED; later submits are refused */
  dp_store(&dp->is_aborted, 1);
  pthread_mutex_lock(&dp->mutex);
  XVD_ASSERT(!dp->is_closed, "the thread closes its queue once");
  dp->is_closed = 1;
  pthread_mutex_unlock(&dp->mutex);
  dp_send_frames(dp);
  if (dp->failure != 0) dp_break_stream(dp, dp->failure);
  close(dp->sock);
  dp->sock = -1;
  free(dp->rbuf);
  dp->rbuf = NULL;
  free(dp->sbuf);
  dp->sbuf = NULL;
  dp->rcap = dp->scap = 0;
  dp->rstart = dp->rend = dp->fstart = dp->sused = dp->scork = 0;
  XVD_ASSERT(dp->budget_own >= 0, "a thread never holds a negative share of the budget");
  xvd_budget_give(dp->budget_own);
  dp->budget_own = 0;
  dp_note_capacity(dp);
  dp_post(dp, DP_EV_STOPPED, 0, NULL, 0, NULL);
  napi_release_threadsafe_function(dp->tsfn, napi_tsfn_release);
}

void *dp_main(void *data) {
  struct datapath *dp = data;
  dp_process(dp); /* what the JS side had received */
  for (;;) {
    if (dp_load(&dp->is_aborted)) break;
    dp->is_woken = 0; /* everything below is looked at afresh */
    dp_store(&dp->is_signalled, 0);
    dp_map_take(dp);
    dp_reader_collect(dp, 0); /* what the reader finished goes out */
    dp_send_frames(dp);
    pthread_mutex_lock(&dp->mutex);
    enum dp_stop_mode stop_mode = dp->stop_mode;
    int has_frames = dp->head != NULL;
    pthread_mutex_unlock(&dp->mutex);
    if (stop_mode == DP_STOP_ABORT || (stop_mode == DP_STOP_DRAIN && !has_frames)) break;
    if (has_frames) continue;
    if (dp->is_starved && stop_mode == DP_STOP_NONE) { /* the budget may have room now */
      dp_set_starved(dp, 0);
      dp_process(dp);
    }
    XVD_ASSERT(!dp->is_broken || !dp->is_receiving, "a broken stream reads nothing");
    int want_in = stop_mode == DP_STOP_NONE && dp->is_receiving && !dp->is_broken &&
                  !dp->is_starved && !dp_load(&dp->is_paused) &&
                  __atomic_load_n(&dp->unacked, __ATOMIC_SEQ_CST) < DP_FORWARD_MAX;
    if (want_in && !dp->is_drained && receive(dp) == 1) continue;
    dp->is_drained = 0;
    dp_flush_replies(dp); /* nothing more to read now: the gathered replies go out */
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
    if (!wait_events(dp, want_in)) break;
  }
  finish(dp);
  return NULL;
}

/* dp-send.c: everything that leaves the data-path thread: gathered replies and JS's frames to
 * the socket, forwarded bytes and events to the JS thread.
 *
 * One writer: all bytes to the socket go out from this thread, JS frames included, each whole
 * and in submission order; the replies gathered in the batch go out before any frame queued
 * after them. The socket is non-blocking (one open file description with Node's, which stays
 * paused): a full socket waits in poll() with the eventfd that submit, resume, fence and stop
 * signal (dp_wake). A send failure breaks the stream: DP_EV_ERROR once, nothing more is sent,
 * later frames complete with ECANCELED. On TCP a READ payload of DP_CORK_MIN or more goes in a
 * sendmsg of its own, the bytes before it in one with MSG_MORE (send_replies).
 *
 * Events go to the JS thread through the thread-safe function (datapath-binding.c delivers
 * them). Forwarded bytes are copied out of the receive buffer, counted in the budget and in
 * `unacked` until JS took them; reading stops while unacked >= DP_FORWARD_MAX.
 * Thread only, except dp_wake (any thread). */
#include <errno.h>
#include <poll.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/uio.h>
#include <unistd.h>
#include "datapath.h"

/* The thread cannot go on (out of memory): it stops, and JS hears DP_EV_ERROR at the end. */
void dp_fail(struct datapath *dp, int err) {
  XVD_ASSERT(err != 0, "a failure has an errno");
  if (dp->failure == 0) dp->failure = err;
  dp_store(&dp->is_aborted, 1);
}

void dp_wake(struct datapath *dp) {
  dp_store(&dp->is_signalled, 1); /* ends a spin (the state it looks at changed first) */
  uint64_t one = 1;
  ssize_t rc = write(dp->wake_fd, &one, sizeof one);
  (void)rc; /* the counter cannot overflow from these writes */
}

void dp_post(struct datapath *dp, int kind, int value, uint8_t *bytes, size_t length,
             struct dp_frame *frames) {
  XVD_ASSERT(kind >= DP_EV_FORWARD && kind <= DP_EV_REMAPPED, "an event has a known kind");
  XVD_ASSERT((bytes != NULL) == (kind == DP_EV_FORWARD), "only DP_EV_FORWARD carries bytes");
  struct dp_event *event = calloc(1, sizeof *event);
  if (event == NULL) { /* nothing can be told: the connection cannot go on */
    free(bytes);
    dp_fail(dp, ENOMEM);
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
    if (dp_load(&dp->is_aborted)) return ECANCELED;
    int n = poll(fds, 2, -1);
    if (n < 0 && errno == EINTR) continue;
    if (n < 0) return errno;
    if (fds[1].revents != 0) {
      /* taken here, so noted: the main loop then looks at the queue and flags before polling */
      uint64_t count;
      ssize_t rc = read(dp->wake_fd, &count, sizeof count);
      (void)rc;
      dp->is_woken = 1;
      if (dp_load(&dp->is_aborted)) return ECANCELED;
    }
    /* an abort shuts the socket down: that wakes this poll too, and is no socket error */
    if (dp_load(&dp->is_aborted)) return ECANCELED;
    if (fds[0].revents != 0) return 0; /* writable, or an error the next send reports */
  }
}

/* Sends every byte of iov[0..count), advancing it; `flags` beside MSG_NOSIGNAL (MSG_MORE). */
static int send_all(struct datapath *dp, struct iovec *iov, int count, int flags) {
  while (count > 0) {
    struct msghdr msg = {.msg_iov = iov, .msg_iovlen = (size_t)count};
    ssize_t n = sendmsg(dp->sock, &msg, MSG_NOSIGNAL | flags);
    if (n < 0) {
      if (errno == EINTR) continue;
      if (dp_load(&dp->is_aborted)) return ECANCELED; /* EPIPE from our own shutdown */
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

void dp_break_stream(struct datapath *dp, int err) {
  if (dp->is_broken) return;
  dp->is_broken = 1;
  dp_end_reading(dp);
  dp_post(dp, DP_EV_ERROR, err, NULL, 0, NULL);
}

/* Whether a READ payload of `length` bytes goes in a sendmsg of its own (see send_replies). */
int dp_is_corked(const struct datapath *dp, size_t length) {
  return (dp->options & DP_TCP) != 0 && length >= DP_CORK_MIN;
}

/* Sends iov[0..count) whole; on TCP, a READ payload of DP_CORK_MIN or more, which starts
 * `corked` bytes in (0: none), goes in a sendmsg of its own after the bytes before it, which go
 * with MSG_MORE (limits.ts nbdDatapathCorkMin has the figures). */
static int send_replies(struct datapath *dp, struct iovec *iov, int count, size_t corked) {
  if (corked == 0) return send_all(dp, iov, count, 0);
  struct iovec before[3];
  int parts = 0;
  size_t left = corked;
  for (int i = 0; i < count && left > 0; i++) {
    before[parts] = iov[i];
    if (before[parts].iov_len > left) before[parts].iov_len = left;
    left -= before[parts++].iov_len;
  }
  XVD_ASSERT(left == 0 && parts <= 3, "the corked bytes lie in the replies");
  int err = send_all(dp, before, parts, MSG_MORE);
  if (err != 0) return err;
  int rest = xvd_iov_advance(&iov, count, corked);
  return send_all(dp, iov, rest, 0);
}

/* Sends the gathered fast replies. */
void dp_flush_replies(struct datapath *dp) {
  XVD_ASSERT(dp->sused <= dp->scap, "gathered replies fit the reply buffer");
  XVD_ASSERT(dp->scork < dp->sused || dp->scork == 0, "a corked payload is in the batch");
  if (dp->sused == 0) return;
  size_t used = dp->sused, corked = dp->scork;
  dp->sused = dp->scork = 0;
  if (dp->is_broken) return;
  struct iovec iov = {.iov_base = dp->sbuf, .iov_len = used};
  int err = send_replies(dp, &iov, 1, corked);
  if (err != 0) dp_break_stream(dp, err);
}

/* Sends the gathered replies, then a reply of the reader thread (its `head`, then `length`
 * bytes of payload, in `bytes`), in one sendmsg, or on TCP in two as send_replies says. */
void dp_send_after_replies(struct datapath *dp, const uint8_t *bytes, size_t head, size_t length) {
  XVD_ASSERT(dp->sused <= dp->scap, "gathered replies fit the reply buffer");
  struct iovec iov[2] = {{.iov_base = dp->sbuf, .iov_len = dp->sused},
                         {.iov_base = (void *)bytes, .iov_len = head + length}};
  int has_replies = dp->sused > 0;
  size_t corked = dp->scork != 0 ? dp->scork : dp_is_corked(dp, length) ? dp->sused + head : 0;
  dp->sused = dp->scork = 0;
  if (dp->is_broken) return;
  int err = has_replies ? send_replies(dp, iov, 2, corked)
                        : send_replies(dp, iov + 1, 1, corked);
  if (err != 0) dp_break_stream(dp, err);
}

/* Sends the frames JS queued, in order, and hands them back completed. */
void dp_send_frames(struct datapath *dp) {
  pthread_mutex_lock(&dp->mutex);
  struct dp_frame *frames = dp->head;
  dp->head = dp->tail = NULL;
  pthread_mutex_unlock(&dp->mutex);
  if (frames == NULL) return;
  dp_flush_replies(dp);
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
    int err =
        dp->is_broken || dp_load(&dp->is_aborted) ? ECANCELED : send_all(dp, iov, count, 0);
    if (err != 0) {
      for (struct dp_frame *f = first; f != frame; f = f->next) f->err = err;
      if (err != ECANCELED) dp_break_stream(dp, err);
    }
  }
  dp_post(dp, DP_EV_FRAMES, 0, NULL, 0, frames);
}

/* Hands a copy of `length` bytes to JS: 0, or -1 when out of memory (the thread stops). */
static int forward(struct datapath *dp, const uint8_t *from, size_t length) {
  uint8_t *bytes = malloc(length);
  if (bytes == NULL) {
    dp_fail(dp, ENOMEM);
    return -1;
  }
  memcpy(bytes, from, length);
  xvd_budget_charge((int64_t)length); /* until JS took it (datapath_deliver) */
  __atomic_add_fetch(&dp->unacked, (int64_t)length, __ATOMIC_SEQ_CST);
  dp_post(dp, DP_EV_FORWARD, 0, bytes, length, NULL);
  return 0;
}

/* Hands [fstart, rstart) of the receive buffer to JS. */
void dp_flush_forward(struct datapath *dp) {
  dp_assert_buffers(dp);
  size_t length = dp->rstart - dp->fstart;
  if (length == 0) return;
  if (forward(dp, dp->rbuf + dp->fstart, length) == 0) dp->fstart = dp->rstart;
}

/* Hands JS one whole request frame taken out of the stream earlier (a READ the reader thread
 * could not serve), after what is still to be forwarded: JS frames it as the next request. */
void dp_forward_frame(struct datapath *dp, const uint8_t *frame, size_t length) {
  XVD_ASSERT(dp->framing == DP_FRAMING, "a frame is forwarded only into a framed stream");
  dp_flush_forward(dp);
  forward(dp, frame, length);
}

/* sender.c: a sender thread per NBD connection, for READ replies served from backing files.
 * createSender(socketFd, mode) -> handle; senderSubmit(handle, bytes, pieces, callback) queues
 * `bytes` (a Buffer: a reply header, or a whole frame) followed by the file pieces (a
 * Float64Array of (fd, position, length) triples, or null); closeSender(handle, abort) stops the
 * thread and joins it.
 *
 * Why: a READ reply sent from JS costs two copies on the one JS thread, the file into a reply
 * buffer (preadv2) and that buffer into the socket. Mode "sendfile" sends the pieces with
 * sendfile(2): on a unix socket the kernel hands the page-cache pages to the peer, which is one
 * copy less in all and none on any server thread. Mode "copy" preads the pieces into the
 * thread's own buffer (up to SCRATCH_MAX at a time) and sends that (on this kernel, loopback TCP
 * takes sendfile slower than pread+send): the same copies as from JS, but on a second core.
 *
 * The thread owns a dup of the socket, valid whatever JS does with its own; the socket is
 * non-blocking, so the thread waits in poll() for room and for closeSender(abort)'s eventfd.
 *
 * A read error should not come after a reply's header went out (the reply could not report it):
 * sendfile takes a job only when file-read.c's xvd_is_cached() finds all its pages in the page
 * cache (see its caveats); other jobs are sent as in copy mode, which reads a job's first
 * SCRATCH_MAX bytes before it sends any (an error past them, in a READ of more than 4 MiB, or
 * after a page was evicted since the check, still ends the connection). sendfile queues
 * page-cache pages, not copies: a peer that has not read a reply yet receives what the pages
 * hold when it reads, maybe bytes written after the job completed; so the server uses it only
 * when asked (serve --sendfile). sendfile has no MSG_NOSIGNAL: like every socket write in Node,
 * it relies on Node ignoring SIGPIPE.
 *
 * Ordering and failure: jobs are sent in submission order, whole. A job whose bytes were partly
 * sent and then failed leaves the stream broken: the sender sends nothing more and every later
 * job completes with ECANCELED (the caller ends the connection). In copy mode a pread failure in
 * the job's first SCRATCH_MAX bytes is found before anything of the job is sent: the job
 * completes with the error and isIntact = true (the stream is whole: the caller can send an
 * error reply). A piece that ends early (EOF) is padded with zeros (file-read.c).
 * closeSender(abort) joins the thread, so it waits for a pread or sendfile already under way (at
 * most SCRATCH_MAX bytes). A connection keeps its scratch buffer until it closes.
 *
 * Completions: callback(error or null, isIntact) on the JS thread, through a thread-safe
 * function ref'd only while jobs are pending (as writer.c). */
#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <pthread.h>
#include <stdlib.h>
#include <string.h>
#include <sys/eventfd.h>
#include <sys/sendfile.h>
#include <sys/socket.h>
#include <sys/syscall.h>
#include <sys/uio.h>
#include <unistd.h>
#include "ops.h"
#include "xvd-assert.h"

enum { SENDER_MODE_SENDFILE = 0, SENDER_MODE_COPY = 1 };

struct send_piece {
  int fd;
  int64_t position;
  int64_t length;
};

struct send_job {
  struct send_job *next;
  napi_ref bytes_ref;
  napi_ref callback_ref;
  const uint8_t *bytes;
  size_t bytes_length;
  int err;          /* errno, 0 on success */
  int is_intact;    /* failed reading the pieces, before any byte of this job was sent */
  size_t count;
  struct send_piece pieces[];
};

struct sender {
  pthread_t thread;
  pthread_mutex_t mutex;
  pthread_cond_t wake;
  struct send_job *head, *tail; /* guarded by mutex */
  int is_stopping;              /* guarded by mutex */
  int is_aborted;               /* written under mutex; read by the thread with __atomic */
  int sock;                     /* the thread's own dup of the socket */
  int abort_fd;                 /* eventfd: readable once aborted */
  int mode;
  int is_broken;                /* thread only: a job was sent in part */
  uint8_t *scratch;             /* thread only (copy mode) */
  size_t scratch_size;
  napi_threadsafe_function done;
  size_t pending; /* JS thread only */
};

/* the kind of this file's handles (handle.c) */
static const napi_type_tag SENDER_TAG = {0x78766453656e6465ULL, 0x7254687265616402ULL};

static int is_aborted(struct sender *s) {
  return __atomic_load_n(&s->is_aborted, __ATOMIC_ACQUIRE);
}

/* Waits until the socket takes more bytes; ECANCELED once aborted. */
static int wait_writable(struct sender *s) {
  struct pollfd fds[2] = {{.fd = s->sock, .events = POLLOUT},
                          {.fd = s->abort_fd, .events = POLLIN}};
  for (;;) {
    if (is_aborted(s)) return ECANCELED;
    int n = poll(fds, 2, -1);
    if (n < 0 && errno == EINTR) continue;
    if (n < 0) return errno;
    if (fds[1].revents != 0) return ECANCELED;
    return 0; /* writable, or an error the next send reports */
  }
}

/* Sends every byte of iov[0..count), advancing it. */
static int send_iov(struct sender *s, struct iovec *iov, int count, int more) {
  while (count > 0) {
    struct msghdr msg = {.msg_iov = iov, .msg_iovlen = (size_t)count};
    ssize_t n = sendmsg(s->sock, &msg, MSG_NOSIGNAL | (more ? MSG_MORE : 0));
    if (n < 0) {
      if (errno == EINTR) continue;
      if (errno != EAGAIN && errno != EWOULDBLOCK) return errno;
      int err = wait_writable(s);
      if (err != 0) return err;
      continue;
    }
    count = xvd_iov_advance(&iov, count, (size_t)n);
  }
  return 0;
}

static const uint8_t zeros[65536];

static int send_zeros(struct sender *s, int64_t length, int more) {
  while (length > 0) {
    size_t take = length < (int64_t)sizeof zeros ? (size_t)length : sizeof zeros;
    struct iovec iov = {.iov_base = (void *)zeros, .iov_len = take};
    int err = send_iov(s, &iov, 1, more || length > (int64_t)take);
    if (err != 0) return err;
    length -= (int64_t)take;
  }
  return 0;
}

static int send_file_piece(struct sender *s, const struct send_piece *piece, int more) {
  off_t position = (off_t)piece->position;
  int64_t left = piece->length;
  while (left > 0) {
    size_t take = left > (1 << 30) ? (size_t)1 << 30 : (size_t)left;
    ssize_t n = sendfile(s->sock, piece->fd, &position, take);
    if (n > 0) {
      XVD_ASSERT(n <= left, "sendfile sends at most what it was asked");
      left -= n;
      continue;
    }
    if (n == 0) return send_zeros(s, left, more); /* EOF: reads past it are zeros */
    if (errno == EINTR) continue;
    if (errno != EAGAIN && errno != EWOULDBLOCK) return errno;
    int err = wait_writable(s);
    if (err != 0) return err;
  }
  return 0;
}

/* Copy mode reads at most this much ahead of the socket: the scratch buffer a connection keeps
 * (a reply up to it is read whole before its first byte is sent; see the header). */
#define SCRATCH_MAX ((size_t)4 << 20)

/* Copy mode: the bytes, then the pieces read into the scratch buffer a window at a time. A
 * failure reading the first window leaves nothing sent (is_intact); a later one breaks the
 * stream. */
static int send_copied(struct sender *s, struct send_job *job) {
  size_t total = 0;
  for (size_t i = 0; i < job->count; i++) total += (size_t)job->pieces[i].length;
  size_t want = total < SCRATCH_MAX ? total : SCRATCH_MAX;
  if (s->scratch_size < want) {
    free(s->scratch);
    s->scratch = malloc(want);
    s->scratch_size = s->scratch == NULL ? 0 : want;
    if (s->scratch == NULL) {
      job->is_intact = 1;
      return ENOMEM;
    }
  }
  size_t piece = 0;
  int64_t within = 0;
  int is_first = 1;
  while (piece < job->count) {
    size_t filled = 0;
    while (piece < job->count && filled < s->scratch_size) {
      const struct send_piece *p = &job->pieces[piece];
      XVD_ASSERT(within < p->length, "a window resumes inside its piece");
      size_t room = s->scratch_size - filled;
      size_t take = p->length - within < (int64_t)room ? (size_t)(p->length - within) : room;
      XVD_ASSERT(take > 0, "each read advances the window");
      int err = xvd_pread_full(p->fd, s->scratch + filled, take, p->position + within);
      if (err != 0) {
        job->is_intact = is_first;
        return err;
      }
      filled += take;
      within += (int64_t)take;
      if (within == p->length) {
        piece++;
        within = 0;
      }
    }
    XVD_ASSERT(filled <= s->scratch_size, "a window fits the scratch buffer");
    struct iovec iov[2] = {{.iov_base = (void *)job->bytes, .iov_len = job->bytes_length},
                           {.iov_base = s->scratch, .iov_len = filled}};
    int err = is_first ? send_iov(s, iov, 2, piece < job->count)
                       : send_iov(s, iov + 1, 1, piece < job->count);
    if (err != 0) return err;
    is_first = 0;
  }
  return 0;
}

/* True when every page under the job's pieces is in the page cache, so sendfile cannot meet a
 * read error (or EOF) after the reply's header went out; false when unsure (file-read.c). */
static int is_cached(const struct send_job *job) {
  for (size_t i = 0; i < job->count; i++) {
    const struct send_piece *p = &job->pieces[i];
    if (!xvd_is_cached(p->fd, p->position, p->length)) return 0;
  }
  return 1;
}

static void execute(struct sender *s, struct send_job *job) {
  XVD_ASSERT(job->err == 0 && !job->is_intact, "a job is executed once");
  if (s->is_broken || is_aborted(s)) {
    job->err = ECANCELED;
    return;
  }
  int err;
  if (job->count > 0 && (s->mode == SENDER_MODE_COPY || !is_cached(job))) {
    err = send_copied(s, job);
  } else {
    struct iovec iov = {.iov_base = (void *)job->bytes, .iov_len = job->bytes_length};
    err = send_iov(s, &iov, 1, job->count > 0);
    for (size_t i = 0; err == 0 && i < job->count; i++) {
      err = send_file_piece(s, &job->pieces[i], i + 1 < job->count);
    }
  }
  job->err = err;
  /* a reply may be cut short: nothing more is sendable */
  if (err != 0 && !job->is_intact) s->is_broken = 1;
}

static void *sender_main(void *data) {
  struct sender *s = data;
  for (;;) {
    pthread_mutex_lock(&s->mutex);
    while (s->head == NULL && !s->is_stopping) pthread_cond_wait(&s->wake, &s->mutex);
    struct send_job *job = s->head;
    s->head = s->tail = NULL;
    pthread_mutex_unlock(&s->mutex);
    if (job == NULL) break; /* stopping, queue empty */
    while (job != NULL) {
      struct send_job *next = job->next;
      execute(s, job);
      napi_call_threadsafe_function(s->done, job, napi_tsfn_blocking);
      job = next;
    }
  }
  close(s->sock);
  s->sock = -1;
  free(s->scratch);
  s->scratch = NULL;
  napi_release_threadsafe_function(s->done, napi_tsfn_release);
  return NULL;
}

static void job_free(napi_env env, struct send_job *job) {
  if (env != NULL) {
    if (job->bytes_ref != NULL) napi_delete_reference(env, job->bytes_ref);
    if (job->callback_ref != NULL) napi_delete_reference(env, job->callback_ref);
  }
  free(job);
}

/* On the JS thread: one finished job. env is NULL while the environment is torn down. */
static void sender_complete(napi_env env, napi_value js_callback, void *context, void *data) {
  (void)js_callback;
  struct sender *s = context;
  struct send_job *job = data;
  if (env == NULL) {
    job_free(NULL, job);
    return;
  }
  XVD_ASSERT(s->pending > 0, "a job completes after it was counted pending");
  if (--s->pending == 0) napi_unref_threadsafe_function(env, s->done);
  napi_value callback, global, argv[2];
  napi_get_reference_value(env, job->callback_ref, &callback);
  napi_get_global(env, &global);
  if (job->err == 0) napi_get_null(env, &argv[0]);
  else argv[0] = xvd_make_errno_error(env, job->err, "send");
  napi_get_boolean(env, job->is_intact != 0, &argv[1]);
  job_free(env, job);
  napi_value ignored;
  napi_call_function(env, global, callback, 2, argv, &ignored);
}

static void sender_finalize(napi_env env, void *data, void *hint) {
  (void)env;
  (void)hint;
  struct sender *s = data;
  if (s->abort_fd >= 0) close(s->abort_fd);
  pthread_mutex_destroy(&s->mutex);
  pthread_cond_destroy(&s->wake);
  free(s);
}

/* The box's stop (handle.c): the thread ends after its queue, or at once when aborting, and is
 * joined. `object` is NULL once closed. */
static void sender_stop(struct xvd_thread_box *box, int abort) {
  struct sender *s = box->object;
  if (s == NULL) return;
  box->object = NULL;
  pthread_mutex_lock(&s->mutex);
  XVD_ASSERT(!s->is_stopping, "a sender is stopped once (object is NULL after)");
  s->is_stopping = 1;
  if (abort) __atomic_store_n(&s->is_aborted, 1, __ATOMIC_RELEASE);
  pthread_cond_signal(&s->wake);
  pthread_mutex_unlock(&s->mutex);
  if (abort) {
    uint64_t one = 1;
    ssize_t rc = write(s->abort_fd, &one, sizeof one);
    (void)rc; /* an eventfd counter cannot overflow from one write */
  }
  pthread_join(s->thread, NULL);
}

napi_value xvd_create_sender(napi_env env, napi_callback_info info) {
  size_t argc = 2;
  napi_value argv[2], name;
  int32_t fd = -1, mode = -1;
  if (napi_get_cb_info(env, info, &argc, argv, NULL, NULL) != napi_ok || argc < 2 ||
      napi_get_value_int32(env, argv[0], &fd) != napi_ok ||
      napi_get_value_int32(env, argv[1], &mode) != napi_ok || fd < 0 ||
      (mode != SENDER_MODE_SENDFILE && mode != SENDER_MODE_COPY)) {
    napi_throw_type_error(env, NULL, "createSender(socketFd, mode 0|1)");
    return NULL;
  }
  struct sender *s = calloc(1, sizeof *s);
  struct xvd_thread_box *box = calloc(1, sizeof *box);
  if (s == NULL || box == NULL) {
    free(s);
    free(box);
    xvd_throw_errno(env, ENOMEM, "createSender");
    return NULL;
  }
  s->mode = mode;
  s->sock = fcntl(fd, F_DUPFD_CLOEXEC, 0);
  s->abort_fd = s->sock < 0 ? -1 : eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK);
  if (s->sock < 0 || s->abort_fd < 0) {
    int err = errno;
    const char *syscall = s->sock < 0 ? "dup" : "eventfd";
    if (s->sock >= 0) close(s->sock);
    free(s);
    free(box);
    xvd_throw_errno(env, err, syscall);
    return NULL;
  }
  pthread_mutex_init(&s->mutex, NULL);
  pthread_cond_init(&s->wake, NULL);
  napi_create_string_utf8(env, "xvd sender", NAPI_AUTO_LENGTH, &name);
  if (napi_create_threadsafe_function(env, NULL, NULL, name, 0, 1, s, sender_finalize, s,
                                      sender_complete, &s->done) != napi_ok) {
    close(s->sock);
    sender_finalize(env, s, NULL);
    free(box);
    napi_throw_error(env, NULL, "createSender: no thread-safe function");
    return NULL;
  }
  napi_unref_threadsafe_function(env, s->done);
  int err = pthread_create(&s->thread, NULL, sender_main, s);
  if (err != 0) {
    close(s->sock);
    napi_release_threadsafe_function(s->done, napi_tsfn_release); /* finalizes: frees s */
    free(box);
    xvd_throw_errno(env, err, "pthread_create");
    return NULL;
  }
  box->object = s;
  box->stop = sender_stop;
  return xvd_thread_handle_new(env, box, &SENDER_TAG, "createSender");
}

/* Reads and checks (fd, position, length) triples; NULL after throwing. */
static struct send_job *job_new(napi_env env, napi_value pieces_value) {
  size_t count = 0;
  double *triples = NULL;
  napi_valuetype type;
  napi_typeof(env, pieces_value, &type);
  if (type != napi_null && type != napi_undefined) {
    bool is_typed = false;
    napi_typedarray_type array_type;
    size_t length = 0;
    void *data = NULL;
    napi_is_typedarray(env, pieces_value, &is_typed);
    if (!is_typed || napi_get_typedarray_info(env, pieces_value, &array_type, &length, &data,
                                              NULL, NULL) != napi_ok ||
        array_type != napi_float64_array || length % 3 != 0) {
      napi_throw_type_error(env, NULL, "senderSubmit: pieces must be a Float64Array of triples");
      return NULL;
    }
    count = length / 3;
    triples = data;
  }
  struct send_job *job = calloc(1, sizeof *job + count * sizeof job->pieces[0]);
  if (job == NULL) {
    xvd_throw_errno(env, ENOMEM, "senderSubmit");
    return NULL;
  }
  job->count = count;
  double total = 0;
  for (size_t i = 0; i < count; i++) {
    double fd = triples[3 * i], position = triples[3 * i + 1], length = triples[3 * i + 2];
    if (!(fd >= 0 && fd <= 2147483647.0 && fd == (double)(int)fd) ||
        !(position >= 0 && position <= 9007199254740991.0 &&
          position == (double)(int64_t)position) ||
        !(length > 0 && length <= 9007199254740991.0 && length == (double)(int64_t)length)) {
      free(job);
      napi_throw_range_error(env, NULL, "senderSubmit: a piece is not (fd, position, length)");
      return NULL;
    }
    total += length;
    if (total > 2147483647.0) { /* 2 GiB: far past any NBD request; keeps size_t sums exact */
      free(job);
      napi_throw_range_error(env, NULL, "senderSubmit: the pieces add up to more than 2 GiB");
      return NULL;
    }
    job->pieces[i].fd = (int)fd;
    job->pieces[i].position = (int64_t)position;
    job->pieces[i].length = (int64_t)length;
  }
  return job;
}

napi_value xvd_sender_submit(napi_env env, napi_callback_info info) {
  size_t argc = 4;
  napi_value argv[4];
  if (napi_get_cb_info(env, info, &argc, argv, NULL, NULL) != napi_ok || argc < 4) {
    napi_throw_type_error(env, NULL, "senderSubmit(sender, bytes, pieces, callback)");
    return NULL;
  }
  struct xvd_thread_box *box = xvd_handle_get(env, argv[0], &SENDER_TAG);
  if (box == NULL || box->object == NULL) {
    napi_throw_error(env, NULL, box == NULL ? "senderSubmit: not a sender"
                                            : "senderSubmit: the sender is closed");
    return NULL;
  }
  bool is_buffer = false;
  napi_valuetype callback_type;
  napi_is_buffer(env, argv[1], &is_buffer);
  napi_typeof(env, argv[3], &callback_type);
  if (!is_buffer || callback_type != napi_function) {
    napi_throw_type_error(env, NULL, "senderSubmit: bytes must be a Buffer, callback a function");
    return NULL;
  }
  struct send_job *job = job_new(env, argv[2]);
  if (job == NULL) return NULL;
  void *bytes = NULL;
  napi_get_buffer_info(env, argv[1], &bytes, &job->bytes_length);
  job->bytes = bytes;
  if (napi_create_reference(env, argv[1], 1, &job->bytes_ref) != napi_ok ||
      napi_create_reference(env, argv[3], 1, &job->callback_ref) != napi_ok) {
    job_free(env, job);
    napi_throw_error(env, NULL, "senderSubmit: no reference");
    return NULL;
  }
  struct sender *s = box->object;
  if (s->pending++ == 0) napi_ref_threadsafe_function(env, s->done);
  pthread_mutex_lock(&s->mutex);
  if (s->tail == NULL) {
    s->head = s->tail = job;
    pthread_cond_signal(&s->wake);
  } else {
    s->tail->next = job;
    s->tail = job;
  }
  pthread_mutex_unlock(&s->mutex);
  napi_value undefined;
  napi_get_undefined(env, &undefined);
  return undefined;
}

napi_value xvd_close_sender(napi_env env, napi_callback_info info) {
  size_t argc = 2;
  napi_value argv[2], undefined;
  bool abort = true;
  napi_get_cb_info(env, info, &argc, argv, NULL, NULL);
  struct xvd_thread_box *box = argc < 1 ? NULL : xvd_handle_get(env, argv[0], &SENDER_TAG);
  if (box == NULL || (argc >= 2 && napi_get_value_bool(env, argv[1], &abort) != napi_ok)) {
    napi_throw_type_error(env, NULL, "closeSender(sender, abort)");
    return NULL;
  }
  xvd_thread_box_close(box, abort);
  napi_get_undefined(env, &undefined);
  return undefined;
}

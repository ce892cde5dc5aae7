/* fuzz-request.c: libFuzzer harness for the data-path thread's reading of client bytes
 * (native/src/request.c), built with clang -fsanitize=fuzzer,address,undefined by
 * scripts/fuzz-native.js. ASan catches any read past the bytes a step is given; this file aborts
 * on any broken invariant:
 *   - a step's kind is one of request.h's, its errno one validate.ts can return;
 *   - a step reads only `available` bytes (the stream is copied to a buffer of its size, and the
 *     REDZONE_LENGTH bytes after each step's window are poisoned while it runs), and
 *     SHORT_HEADER is exactly "fewer than 28 bytes";
 *   - a frame's length is 28 plus a WRITE's payload, at most 28 + XVD_LIMIT_NBD_PAYLOAD_MAX, and
 *     SHORT_PAYLOAD is exactly "fewer bytes than the frame";
 *   - RAW is exactly a bad magic, DISC, or a WRITE above XVD_LIMIT_NBD_PAYLOAD_MAX;
 *   - a request the thread serves is a plain READ or WRITE, valid, inside the export, aligned,
 *     and a WRITE only when the export is writable (checked here with 128-bit arithmetic);
 *   - the stream cut in pieces (as the socket delivers it) frames into the same requests with
 *     the same verdicts as the stream whole.
 *
 * Input: a 13-byte preamble, then the client's transmission-phase bytes. Preamble: options (bit
 * 0 structured, bit 1 base:allocation), eflags (u16), log2 of the minimum block size (mod 17),
 * export size (u64, reduced to at most 2^53 - 1), and a seed for the cuts. */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sanitizer/asan_interface.h>
#include "../src/request.h"

#define PREAMBLE_LENGTH 13
#define FRAMES_MAX 4096 /* frames followed per input (a 28-byte header each: inputs stay small) */
#define REDZONE_LENGTH 64 /* poisoned after a window: more than a step could read past it */

#define CHECK(condition)                                                      \
  do {                                                                        \
    if (!(condition)) {                                                       \
      fprintf(stderr, "invariant broken: %s (line %d)\n", #condition, __LINE__); \
      abort();                                                                \
    }                                                                         \
  } while (0)

struct frame {
  enum xvd_step_kind kind;
  size_t need;
  int nbd_errno;
};

static uint64_t get_be(const uint8_t *at, int count) {
  uint64_t value = 0;
  for (int i = 0; i < count; i++) value = value << 8 | at[i];
  return value;
}

/* The step on the `available` bytes at `bytes`, which lie inside a heap buffer that ends at
 * `end`: the bytes after them are poisoned meanwhile, so ASan sees a read past them. */
static void step_exact(uint8_t *bytes, size_t available, const uint8_t *end,
                       const struct xvd_request_params *params, struct xvd_step *out) {
  uint8_t *after = bytes + available;
  size_t zone = (size_t)(end - after) < REDZONE_LENGTH ? (size_t)(end - after) : REDZONE_LENGTH;
  ASAN_POISON_MEMORY_REGION(after, zone);
  xvd_request_step(bytes, available, params, out);
  ASAN_UNPOISON_MEMORY_REGION(after, zone);
}

static void check_served(const struct xvd_step *step, const struct xvd_request_params *p) {
  const struct xvd_request *r = &step->request;
  CHECK(step->nbd_errno == XVD_NBD_E_OK);
  CHECK(r->flags == 0);
  CHECK(r->type == XVD_NBD_CMD_READ || r->type == XVD_NBD_CMD_WRITE);
  CHECK(r->length > 0 && r->length <= XVD_LIMIT_NBD_PAYLOAD_MAX);
  CHECK((unsigned __int128)r->offset + r->length <= (unsigned __int128)p->size);
  CHECK(r->offset % p->block_min == 0 && r->length % p->block_min == 0);
  CHECK(r->type != XVD_NBD_CMD_WRITE || (p->eflags & XVD_NBD_FLAG_T_READ_ONLY) == 0);
}

/* Every invariant of one step over `available` bytes at `bytes`. */
static void check_step(const uint8_t *bytes, size_t available, const struct xvd_step *step,
                       const struct xvd_request_params *p) {
  CHECK(step->kind >= XVD_STEP_SHORT_HEADER && step->kind <= XVD_STEP_FORWARD);
  CHECK((step->kind == XVD_STEP_SHORT_HEADER) == (available < XVD_NBD_REQUEST_LENGTH));
  if (step->kind == XVD_STEP_SHORT_HEADER) return;
  const struct xvd_request *r = &step->request;
  CHECK(r->magic == get_be(bytes, 4));
  CHECK(r->flags == get_be(bytes + 4, 2) && r->type == get_be(bytes + 6, 2));
  CHECK(r->offset == get_be(bytes + 16, 8) && r->length == get_be(bytes + 24, 4));
  int is_raw = r->magic != XVD_NBD_REQUEST_MAGIC || r->type == XVD_NBD_CMD_DISC ||
               (r->type == XVD_NBD_CMD_WRITE && r->length > XVD_LIMIT_NBD_PAYLOAD_MAX);
  CHECK((step->kind == XVD_STEP_RAW) == is_raw);
  if (is_raw) return;
  int e = step->nbd_errno;
  CHECK(e == XVD_NBD_E_OK || e == XVD_NBD_E_EPERM || e == XVD_NBD_E_EINVAL ||
        e == XVD_NBD_E_ENOSPC);
  CHECK(step->need == XVD_NBD_REQUEST_LENGTH + (r->type == XVD_NBD_CMD_WRITE ? r->length : 0));
  CHECK(step->need <= XVD_NBD_REQUEST_LENGTH + (size_t)XVD_LIMIT_NBD_PAYLOAD_MAX);
  CHECK((step->kind == XVD_STEP_SHORT_PAYLOAD) == (available < step->need));
  if (step->kind == XVD_STEP_SERVE) check_served(step, p);
  if (step->kind == XVD_STEP_FORWARD) CHECK(!xvd_request_is_served(r, e));
  if (r->type == XVD_NBD_CMD_FLUSH && e == XVD_NBD_E_OK) CHECK(r->offset == 0 && r->length == 0);
}

/* Frames the whole stream: the steps of its complete frames, then the step that stopped it. */
static size_t frame_whole(uint8_t *bytes, size_t length,
                          const struct xvd_request_params *p, struct frame *frames,
                          struct xvd_step *last) {
  size_t count = 0, at = 0;
  for (;;) {
    step_exact(bytes + at, length - at, bytes + length, p, last);
    check_step(bytes + at, length - at, last, p);
    if (last->kind != XVD_STEP_SERVE && last->kind != XVD_STEP_FORWARD) return count;
    if (count == FRAMES_MAX) return count;
    frames[count++] = (struct frame){last->kind, last->need, last->nbd_errno};
    at += last->need;
  }
}

/* xorshift: the cuts */
static uint32_t next_random(uint32_t *state) {
  uint32_t x = *state;
  x ^= x << 13;
  x ^= x >> 17;
  x ^= x << 5;
  return *state = x;
}

/* The same stream arriving in pieces: the thread steps over what it has after each arrival. */
static void frame_cut(uint8_t *bytes, size_t length, const struct xvd_request_params *p,
                      uint32_t seed, const struct frame *frames, size_t count,
                      const struct xvd_step *last) {
  uint32_t state = seed | 1;
  size_t at = 0, arrived = 0, index = 0;
  struct xvd_step step;
  do { /* at least once: an empty stream is a SHORT_HEADER */
    uint32_t r = next_random(&state);
    size_t piece = r % 4 == 0 ? 1 : 1 + r % 97; /* single bytes, and cuts inside headers */
    arrived = arrived + piece < length ? arrived + piece : length;
    for (;;) {
      step_exact(bytes + at, arrived - at, bytes + length, p, &step);
      check_step(bytes + at, arrived - at, &step, p);
      if (step.kind != XVD_STEP_SERVE && step.kind != XVD_STEP_FORWARD) break;
      if (index == count) return; /* past FRAMES_MAX */
      CHECK(step.kind == frames[index].kind && step.need == frames[index].need);
      CHECK(step.nbd_errno == frames[index].nbd_errno);
      index++;
      at += step.need;
    }
    if (step.kind == XVD_STEP_RAW) break;
  } while (arrived < length);
  CHECK(index == count);
  CHECK(step.kind == last->kind && step.need == last->need);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
  if (size < PREAMBLE_LENGTH) return 0;
  struct xvd_request_params params = {
      .is_structured = (data[0] & 1) != 0,
      .has_base_allocation = (data[0] & 2) != 0,
      .eflags = (uint32_t)get_be(data + 1, 2),
      .block_min = (uint64_t)1 << (data[3] % 17),
      .size = get_be(data + 4, 8) % (XVD_OFFSET_SAFE_MAX + 1),
  };
  uint32_t seed = data[12];
  size_t length = size - PREAMBLE_LENGTH;
  uint8_t *stream = malloc(length == 0 ? 1 : length); /* its end is the allocation's */
  CHECK(stream != NULL);
  memcpy(stream, data + PREAMBLE_LENGTH, length);
  static struct frame frames[FRAMES_MAX];
  struct xvd_step last;
  size_t count = frame_whole(stream, length, &params, frames, &last);
  frame_cut(stream, length, &params, seed, frames, count, &last);
  free(stream);
  return 0;
}

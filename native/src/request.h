/* request.h: the data-path thread's reading of client bytes, as pure functions over a byte
 * buffer (request.c). No I/O, no allocation, no global state: the libFuzzer harness
 * (native/fuzz/fuzz-request.c) and the addon's requestCheck binding call exactly what
 * dp-loop.c calls. */
#ifndef XVD_REQUEST_H
#define XVD_REQUEST_H

#include <stddef.h>
#include <stdint.h>

#include "protocol.h" /* XVD_NBD_* wire constants and XVD_LIMIT_*, generated */

#define XVD_OFFSET_SAFE_MAX ((uint64_t)9007199254740991) /* Number.MAX_SAFE_INTEGER */

/* One decoded request header; the cookie stays in the frame (bytes 8..16), echoed unread. */
struct xvd_request {
  uint32_t magic;
  uint16_t flags, type;
  uint64_t offset;
  uint32_t length;
};

/* What was negotiated, as the validator needs it (validate.ts's ValidateContext). */
struct xvd_request_params {
  uint64_t size;       /* the export's size, <= XVD_OFFSET_SAFE_MAX */
  uint64_t block_min;  /* the advertised minimum block size, >= 1 */
  uint32_t eflags;     /* transmission flags advertised */
  int is_structured;   /* structured replies negotiated */
  int has_base_allocation; /* base:allocation selected */
};

/* What the data-path thread does with the bytes at the head of its stream. */
enum xvd_step_kind {
  XVD_STEP_SHORT_HEADER = 1,  /* fewer than XVD_NBD_REQUEST_LENGTH bytes: wait for more */
  XVD_STEP_RAW = 2,           /* JS must frame the stream from here on (bad magic, DISC, WRITE
                                 payload above XVD_LIMIT_NBD_PAYLOAD_MAX) */
  XVD_STEP_SHORT_PAYLOAD = 3, /* a WRITE whose payload is not all here: `need` bytes in all */
  XVD_STEP_SERVE = 4,         /* a whole frame of `need` bytes the thread serves itself */
  XVD_STEP_FORWARD = 5        /* a whole frame of `need` bytes for JS */
};

struct xvd_step {
  enum xvd_step_kind kind;
  size_t need; /* the frame's length (header and payload); 0 for SHORT_HEADER and RAW */
  int nbd_errno; /* xvd_request_errno of the request (0 when no header was decoded) */
  struct xvd_request request; /* decoded unless SHORT_HEADER */
};

/* Reads the 28 bytes at `bytes` (the caller has them). */
void xvd_request_decode(const uint8_t *bytes, struct xvd_request *out);

/* 0 when the request may execute, else the NBD errno to answer with: validate.ts's
 * validateRequest, check for check and in its order (a test feeds both the same requests). */
int xvd_request_errno(const struct xvd_request *request, const struct xvd_request_params *params);

/* Whether the thread serves the request itself: a READ or WRITE with no flags that is valid
 * (so 0 < length <= XVD_LIMIT_NBD_PAYLOAD_MAX, aligned, inside the export; a WRITE not
 * read-only). */
int xvd_request_is_served(const struct xvd_request *request, int nbd_errno);

/* The next step for the stream whose first `available` bytes are `bytes`. Total: any bytes,
 * any length. */
void xvd_request_step(const uint8_t *bytes, size_t available,
                      const struct xvd_request_params *params, struct xvd_step *out);

#endif

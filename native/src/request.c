/* request.c: decodes and validates NBD requests (proto.md "Request message", "Request types",
 * "Error values", "Size constraints") and frames the client's stream for the data-path thread.
 * Pure: bytes and negotiated parameters in, a verdict out. See request.h.
 *
 * xvd_request_errno is src/nbd/validate.ts in C, same checks in the same order: unknown command
 * or flags not defined for it or not advertised -> EINVAL; a write-type command on a read-only
 * export -> EPERM; a command not advertised -> EINVAL; FLUSH with offset or length -> EINVAL;
 * zero length -> EINVAL; READ/WRITE above XVD_LIMIT_NBD_PAYLOAD_MAX -> EINVAL; unaligned to
 * block_min -> EINVAL; past the end -> ENOSPC for WRITE and WRITE_ZEROES, else EINVAL. An offset
 * above XVD_OFFSET_SAFE_MAX is past the end of any export and skips the alignment check, as
 * validate.ts (which sees such an offset as -1) does. test/unit/native-request.test.ts feeds both
 * sides the same random requests, test/unit/protocol-corpus.test.ts every case of
 * fixtures/requests/. Every wire value and limit comes from protocol.h (generated). */
#include "request.h"

static uint16_t get_u16(const uint8_t *at) { return (uint16_t)(at[0] << 8 | at[1]); }
static uint32_t get_u32(const uint8_t *at) {
  return (uint32_t)get_u16(at) << 16 | get_u16(at + 2);
}
static uint64_t get_u64(const uint8_t *at) { return (uint64_t)get_u32(at) << 32 | get_u32(at + 4); }

void xvd_request_decode(const uint8_t *bytes, struct xvd_request *out) {
  out->magic = get_u32(bytes);
  out->flags = get_u16(bytes + 4);
  out->type = get_u16(bytes + 6);
  out->offset = get_u64(bytes + 16);
  out->length = get_u32(bytes + 24);
}

/* The flags each command may carry (NBD_CMD_FLAGS_ALLOWED); -1 for an unknown command. */
static int32_t allowed_flags(uint16_t type) {
  switch (type) {
    case XVD_NBD_CMD_READ: return XVD_NBD_CMD_FLAGS_ALLOWED_READ;
    case XVD_NBD_CMD_WRITE: return XVD_NBD_CMD_FLAGS_ALLOWED_WRITE;
    case XVD_NBD_CMD_DISC: return XVD_NBD_CMD_FLAGS_ALLOWED_DISC;
    case XVD_NBD_CMD_FLUSH: return XVD_NBD_CMD_FLAGS_ALLOWED_FLUSH;
    case XVD_NBD_CMD_TRIM: return XVD_NBD_CMD_FLAGS_ALLOWED_TRIM;
    case XVD_NBD_CMD_CACHE: return XVD_NBD_CMD_FLAGS_ALLOWED_CACHE;
    case XVD_NBD_CMD_WRITE_ZEROES: return XVD_NBD_CMD_FLAGS_ALLOWED_WRITE_ZEROES;
    case XVD_NBD_CMD_BLOCK_STATUS: return XVD_NBD_CMD_FLAGS_ALLOWED_BLOCK_STATUS;
    default: return -1;
  }
}

static int errno_of_flags(const struct xvd_request *r, const struct xvd_request_params *p) {
  int32_t allowed = allowed_flags(r->type);
  if (allowed < 0 || (r->flags & ~(uint32_t)allowed) != 0) return XVD_NBD_E_EINVAL;
  if (r->type == XVD_NBD_CMD_DISC) return XVD_NBD_E_OK;
  if ((r->flags & XVD_NBD_CMD_FLAG_FUA) && !(p->eflags & XVD_NBD_FLAG_T_SEND_FUA)) {
    return XVD_NBD_E_EINVAL;
  }
  if ((r->flags & XVD_NBD_CMD_FLAG_DF) && !p->is_structured) return XVD_NBD_E_EINVAL;
  if ((r->flags & XVD_NBD_CMD_FLAG_FAST_ZERO) && !(p->eflags & XVD_NBD_FLAG_T_SEND_FAST_ZERO)) {
    return XVD_NBD_E_EINVAL;
  }
  return XVD_NBD_E_OK;
}

static int is_write_type(uint16_t type) {
  return type == XVD_NBD_CMD_WRITE || type == XVD_NBD_CMD_TRIM ||
         type == XVD_NBD_CMD_WRITE_ZEROES;
}

static int errno_of_advertised(const struct xvd_request *r, const struct xvd_request_params *p) {
  if (is_write_type(r->type) && (p->eflags & XVD_NBD_FLAG_T_READ_ONLY)) return XVD_NBD_E_EPERM;
  switch (r->type) {
    case XVD_NBD_CMD_FLUSH:
      return p->eflags & XVD_NBD_FLAG_T_SEND_FLUSH ? XVD_NBD_E_OK : XVD_NBD_E_EINVAL;
    case XVD_NBD_CMD_TRIM:
      return p->eflags & XVD_NBD_FLAG_T_SEND_TRIM ? XVD_NBD_E_OK : XVD_NBD_E_EINVAL;
    case XVD_NBD_CMD_WRITE_ZEROES:
      return p->eflags & XVD_NBD_FLAG_T_SEND_WRITE_ZEROES ? XVD_NBD_E_OK : XVD_NBD_E_EINVAL;
    case XVD_NBD_CMD_BLOCK_STATUS:
      return p->is_structured && p->has_base_allocation ? XVD_NBD_E_OK : XVD_NBD_E_EINVAL;
    default: return XVD_NBD_E_OK; /* READ, WRITE; CACHE is accepted unadvertised */
  }
}

static int errno_of_range(const struct xvd_request *r, const struct xvd_request_params *p) {
  if (r->type == XVD_NBD_CMD_FLUSH) {
    return r->offset == 0 && r->length == 0 ? XVD_NBD_E_OK : XVD_NBD_E_EINVAL;
  }
  if (r->length == 0) return XVD_NBD_E_EINVAL;
  int has_payload_limit = r->type == XVD_NBD_CMD_READ || r->type == XVD_NBD_CMD_WRITE;
  if (has_payload_limit && r->length > XVD_LIMIT_NBD_PAYLOAD_MAX) return XVD_NBD_E_EINVAL;
  int is_safe = r->offset <= XVD_OFFSET_SAFE_MAX;
  if (is_safe && (r->offset % p->block_min != 0 || r->length % p->block_min != 0)) {
    return XVD_NBD_E_EINVAL;
  }
  /* no overflow: offset <= 2^53 - 1 and length < 2^32 */
  if (!is_safe || r->offset + r->length > p->size) {
    int is_write = r->type == XVD_NBD_CMD_WRITE || r->type == XVD_NBD_CMD_WRITE_ZEROES;
    return is_write ? XVD_NBD_E_ENOSPC : XVD_NBD_E_EINVAL;
  }
  return XVD_NBD_E_OK;
}

int xvd_request_errno(const struct xvd_request *request, const struct xvd_request_params *params) {
  int err = errno_of_flags(request, params);
  if (err != XVD_NBD_E_OK || request->type == XVD_NBD_CMD_DISC) return err;
  err = errno_of_advertised(request, params);
  if (err != XVD_NBD_E_OK) return err;
  return errno_of_range(request, params);
}

int xvd_request_is_served(const struct xvd_request *request, int nbd_errno) {
  return nbd_errno == XVD_NBD_E_OK && request->flags == 0 &&
         (request->type == XVD_NBD_CMD_READ || request->type == XVD_NBD_CMD_WRITE);
}

void xvd_request_step(const uint8_t *bytes, size_t available,
                      const struct xvd_request_params *params, struct xvd_step *out) {
  *out = (struct xvd_step){.kind = XVD_STEP_SHORT_HEADER};
  if (available < XVD_NBD_REQUEST_LENGTH) return;
  struct xvd_request *r = &out->request;
  xvd_request_decode(bytes, r);
  if (r->magic != XVD_NBD_REQUEST_MAGIC || r->type == XVD_NBD_CMD_DISC ||
      (r->type == XVD_NBD_CMD_WRITE && r->length > XVD_LIMIT_NBD_PAYLOAD_MAX)) {
    out->kind = XVD_STEP_RAW; /* JS frames every later byte */
    return;
  }
  out->nbd_errno = xvd_request_errno(r, params);
  out->need = XVD_NBD_REQUEST_LENGTH + (r->type == XVD_NBD_CMD_WRITE ? (size_t)r->length : 0);
  if (available < out->need) out->kind = XVD_STEP_SHORT_PAYLOAD;
  else if (xvd_request_is_served(r, out->nbd_errno)) out->kind = XVD_STEP_SERVE;
  else out->kind = XVD_STEP_FORWARD;
}

/* dp-wire.c: the data-path thread's reply encoding (proto.md "Simple reply message",
 * "Structured reply chunk message", NBD_REPLY_TYPE_OFFSET_DATA). Pure: bytes in, bytes out,
 * no I/O and no state. Requests are read by request.c. Every wire value comes from protocol.h,
 * generated from src/nbd/constants.ts.
 *
 * Contract: the caller reserved the room (dp_wire_read_head_length() before a READ's data, or
 * DP_SIMPLE_REPLY_LENGTH) and passes the request's 28 bytes, whose cookie (bytes 8..16) is
 * echoed unread. A READ reply is a simple reply followed by the data, or, with structured
 * replies negotiated, one OFFSET_DATA chunk flagged DONE whose data follows its header. Only
 * successful replies are encoded here: a request that fails on this thread is forwarded, and JS
 * answers it with its own error reply. */
#include <string.h>
#include "datapath.h"

#define COOKIE_AT 8 /* in a request and in both replies */

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

size_t dp_wire_read_head_length(int is_structured) {
  return is_structured ? DP_CHUNK_READ_HEADER_LENGTH : DP_SIMPLE_REPLY_LENGTH;
}

void dp_wire_simple_reply(uint8_t *at, const uint8_t *request) {
  put_u32(at, XVD_NBD_SIMPLE_REPLY_MAGIC);
  put_u32(at + 4, 0); /* error: none */
  memcpy(at + COOKIE_AT, request + COOKIE_AT, 8);
}

/* The head of a READ reply of `length` bytes at `offset`; the data follows it. */
void dp_wire_read_reply(uint8_t *at, const uint8_t *request, uint64_t offset, size_t length,
                        int is_structured) {
  XVD_ASSERT(length > 0, "a READ served here has data");
  XVD_ASSERT(length <= DP_PAYLOAD_MAX, "a READ served here is at most the payload maximum");
  if (!is_structured) {
    dp_wire_simple_reply(at, request);
    return;
  }
  put_u32(at, XVD_NBD_STRUCTURED_REPLY_MAGIC);
  put_u16(at + 4, XVD_NBD_REPLY_FLAG_DONE);
  put_u16(at + 6, XVD_NBD_REPLY_TYPE_OFFSET_DATA);
  memcpy(at + COOKIE_AT, request + COOKIE_AT, 8);
  put_u32(at + 16, (uint32_t)(8 + length)); /* the chunk's length: the offset and the data */
  put_u64(at + 20, offset);
}

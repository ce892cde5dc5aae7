/* budget.c: the server's one memory budget as the data-path threads see it (the design is in
 * src/nbd/budget.ts). One process-wide count of the bytes the threads hold on their clients'
 * behalf (receive and reply buffers above their first sizes, forwarded bytes JS has not taken
 * yet) beside what the JS side last reported it holds, against one limit:
 *
 *   xvd_budget_take(bytes)   a thread wants to grow: granted while threads + JS + bytes fit
 *                            under the limit; refused (0) otherwise, and the thread waits (a
 *                            receive buffer) or hands the request to JS (a reply)
 *   xvd_budget_charge(bytes) bytes that exist already (a forwarded copy): counted, never refused
 *   xvd_budget_give(bytes)   given back (a buffer shrank or was freed, JS took forwarded bytes)
 *
 * budgetSync(jsHeldBytes, maxBytes) -> bytes the threads hold: JS reports what it holds and
 * sets the limit (LIMITS.nbdBudgetBytesMax, or serve --memory-max), and learns what the threads
 * hold, so both sides decide against the same total. */
#include <stdint.h>
#include "ops.h"
#include "protocol.h"
#include "xvd-assert.h"

#define BUDGET_MAX_DEFAULT ((int64_t)XVD_LIMIT_NBD_BUDGET_BYTES_MAX) /* until budgetSync sets it */

static int64_t held_threads; /* atomic */
static int64_t held_js;      /* atomic: as JS last reported it */
static int64_t max_bytes = BUDGET_MAX_DEFAULT; /* atomic */

int xvd_budget_take(int64_t bytes) {
  XVD_ASSERT(bytes >= 0, "a thread takes a count of bytes");
  int64_t held = __atomic_load_n(&held_threads, __ATOMIC_RELAXED);
  for (;;) {
    int64_t total = held + __atomic_load_n(&held_js, __ATOMIC_RELAXED) + bytes;
    if (total > __atomic_load_n(&max_bytes, __ATOMIC_RELAXED)) return 0;
    if (__atomic_compare_exchange_n(&held_threads, &held, held + bytes, 0, __ATOMIC_SEQ_CST,
                                    __ATOMIC_RELAXED)) {
      return 1;
    }
  }
}

void xvd_budget_charge(int64_t bytes) {
  XVD_ASSERT(bytes >= 0, "a thread charges a count of bytes");
  __atomic_add_fetch(&held_threads, bytes, __ATOMIC_SEQ_CST);
}

void xvd_budget_give(int64_t bytes) {
  XVD_ASSERT(bytes >= 0, "a thread gives back a count of bytes");
  int64_t after = __atomic_sub_fetch(&held_threads, bytes, __ATOMIC_SEQ_CST);
  XVD_ASSERT(after >= 0, "the threads never give back more than they hold");
}

napi_value xvd_budget_sync(napi_env env, napi_callback_info info) {
  size_t argc = 2;
  napi_value argv[2], result;
  double js = 0, max = 0;
  if (napi_get_cb_info(env, info, &argc, argv, NULL, NULL) != napi_ok || argc < 2 ||
      napi_get_value_double(env, argv[0], &js) != napi_ok ||
      napi_get_value_double(env, argv[1], &max) != napi_ok || !(js >= 0) || !(max > 0)) {
    napi_throw_type_error(env, NULL, "budgetSync(jsHeldBytes >= 0, maxBytes > 0)");
    return NULL;
  }
  __atomic_store_n(&held_js, (int64_t)js, __ATOMIC_RELAXED);
  __atomic_store_n(&max_bytes, (int64_t)max, __ATOMIC_RELAXED);
  napi_create_double(env, (double)__atomic_load_n(&held_threads, __ATOMIC_RELAXED), &result);
  return result;
}

/* request-binding.c: requestStep(bytes, size, eflags, options, blockSizeMin), synchronous: the
 * data-path thread's verdict (request.c) on the stream whose first bytes are `bytes`, as a
 * Float64Array [step kind, frame length, NBD errno]. options: 1 structured replies, 2
 * base:allocation selected. For tests that hold the C side against src/nbd/validate.ts. */
#include "ops.h"
#include "request.h"

static int is_whole(double value, double min, double max) {
  return value >= min && value <= max && value == (double)(int64_t)value;
}

napi_value xvd_request_step_js(napi_env env, napi_callback_info info) {
  size_t argc = 5;
  napi_value argv[5], buffer, array;
  double size = -1, eflags = -1, options = -1, block_min = 0;
  bool is_buffer = false;
  if (napi_get_cb_info(env, info, &argc, argv, NULL, NULL) != napi_ok || argc < 5 ||
      napi_is_buffer(env, argv[0], &is_buffer) != napi_ok || !is_buffer ||
      napi_get_value_double(env, argv[1], &size) != napi_ok ||
      napi_get_value_double(env, argv[2], &eflags) != napi_ok ||
      napi_get_value_double(env, argv[3], &options) != napi_ok ||
      napi_get_value_double(env, argv[4], &block_min) != napi_ok ||
      !is_whole(size, 0, (double)XVD_OFFSET_SAFE_MAX) || !is_whole(eflags, 0, 0xffff) ||
      !is_whole(options, 0, 3) || !is_whole(block_min, 1, 4294967295.0)) {
    napi_throw_type_error(env, NULL, "requestStep(bytes, size, eflags, options 0-3, "
                                     "blockSizeMin >= 1)");
    return NULL;
  }
  void *bytes = NULL;
  size_t length = 0;
  napi_get_buffer_info(env, argv[0], &bytes, &length);
  struct xvd_request_params params = {
      .size = (uint64_t)size,
      .block_min = (uint64_t)block_min,
      .eflags = (uint32_t)eflags,
      .is_structured = ((int)options & 1) != 0,
      .has_base_allocation = ((int)options & 2) != 0,
  };
  struct xvd_step step;
  xvd_request_step(bytes, length, &params, &step);
  double *values = NULL;
  if (napi_create_arraybuffer(env, 3 * sizeof(double), (void **)&values, &buffer) != napi_ok ||
      napi_create_typedarray(env, napi_float64_array, 3, buffer, 0, &array) != napi_ok) {
    napi_throw_error(env, NULL, "requestStep: no array");
    return NULL;
  }
  values[0] = step.kind;
  values[1] = (double)step.need;
  values[2] = step.nbd_errno;
  return array;
}

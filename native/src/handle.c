/* handle.c: the opaque handles JS holds for native objects (writer threads, sender threads):
 * externals tagged with their kind, so a handle of one kind passed where another is expected is
 * refused instead of being read as the wrong struct. */
#include "ops.h"

/* Owns `data` from the call: on failure `finalize` has run, or runs when the untagged external
 * is collected; the caller must not free it either way. */
napi_status xvd_handle_new(napi_env env, void *data, napi_finalize finalize,
                           const napi_type_tag *tag, napi_value *result) {
  napi_status status = napi_create_external(env, data, finalize, NULL, result);
  if (status != napi_ok) {
    finalize(env, data, NULL);
    return status;
  }
  return napi_type_tag_object(env, *result, tag);
}

void *xvd_handle_get(napi_env env, napi_value value, const napi_type_tag *tag) {
  void *data = NULL;
  bool is_tagged = false;
  napi_valuetype type;
  if (napi_typeof(env, value, &type) != napi_ok || type != napi_external ||
      napi_check_object_type_tag(env, value, tag, &is_tagged) != napi_ok || !is_tagged ||
      napi_get_value_external(env, value, &data) != napi_ok) {
    return NULL;
  }
  return data;
}

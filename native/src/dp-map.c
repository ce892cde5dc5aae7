/* dp-map.c: the data-path thread's view of the export's map, in the one form JS hands it over,
 * its lookup, and what the thread knows of holes.
 *
 * The form (createDatapath's `extents` and `dirty`; src/sys/index.ts DatapathMap, built by the
 * engine's datapathMapOf, src/engine/extent-datapath.ts, from its ExtentMap and its backings):
 *   extents  Float64Array of 6-tuples (startVirtual, length, fd, offsetBacking, backingIndex,
 *            kind), in virtual order and contiguous from 0, covering at least the export's size;
 *            kind 0 a file, 1 a device (never a hole), 2 a file extent the backing knew to be
 *            all data when the map was made (extent-state.ts isBackingAllData, FileBacking's
 *            learned data runs)
 *   dirty    Array of Int32Array, one per backing index: word 0 the pool entry's dirty flag,
 *            set to 1 here before a WRITE's reply (so a FLUSH on any connection syncs it); word
 *            1, when there is one, the backing's hole epoch, which JS bumps after every TRIM or
 *            WRITE_ZEROES on that backing, before its reply (src/backing/pool.ts)
 * The thread keeps no map of its own: a new map means a new thread (JS fences and restarts
 * it). dp_extent_of() is a binary search over the tuples exactly as they came; the engine's
 * ExtentMap is the definition.
 *
 * Holes. The one primitive is seek.c's xvd_hole_from(), which JS's dataRuns uses too. What the
 * thread may remember beyond the map's `kind`, and why that is safe:
 *   - an extent found all data (e->is_data), and per backing the last run SEEK_HOLE found to be
 *     data (data_from/data_to), each stamped with the backing's hole epoch when learned;
 *   - only "no hole here" is remembered, and only while the epoch is unchanged. Holes appear
 *     only through a TRIM or WRITE_ZEROES, which JS runs and which bump the epoch before their
 *     reply, so a remembered answer is never used after a hole may have been made under it: a
 *     structured READ over a hole punched since is forwarded and answered with hole chunks, as
 *     on the JS path. (A hole punched by another process is not seen, on either side; data
 *     where a hole now is still reads as zeros, so the reply stays correct.)
 * This duplicates FileBacking's learned runs in kind, not in content: it is a cache of the same
 * kernel answers, narrowed by the same epoch, and it never says "hole" from memory. */
#include <errno.h>
#include <stdlib.h>
#include "datapath.h"

#define SAFE_MAX 9007199254740991.0 /* Number.MAX_SAFE_INTEGER */
#define FIELDS 6                    /* src/sys/index.ts DATAPATH_EXTENT_FIELDS */
enum { KIND_FILE = 0, KIND_DEVICE = 1, KIND_FILE_ALL_DATA = 2 };

static int is_tuple(const double *t, int64_t next, uint32_t backing_count) {
  return dp_is_whole(t[0], SAFE_MAX) && t[1] > 0 && dp_is_whole(t[1], SAFE_MAX) &&
         dp_is_whole(t[2], 2147483647.0) && dp_is_whole(t[3], SAFE_MAX) &&
         dp_is_whole(t[4], (double)backing_count - 1) &&
         (t[5] == KIND_FILE || t[5] == KIND_DEVICE || t[5] == KIND_FILE_ALL_DATA) &&
         (int64_t)t[0] == next;
}

static const char *read_extents(struct datapath *dp, const double *tuples, size_t length,
                                uint32_t backing_count) {
  dp->extent_count = length / FIELDS;
  int64_t next = 0;
  for (size_t i = 0; i < dp->extent_count; i++) {
    const double *t = tuples + FIELDS * i;
    if (!is_tuple(t, next, backing_count)) {
      return "an extent is not (start, length, fd, offset, backing, kind) in order";
    }
    struct dp_extent *e = &dp->extents[i];
    e->start = (int64_t)t[0];
    e->length = (int64_t)t[1];
    e->fd = (int)t[2];
    e->offset = (int64_t)t[3];
    e->backing = (int)t[4];
    e->is_data = t[5] != KIND_FILE; /* a device has no hole; JS knew a file extent all data */
    e->is_device = t[5] == KIND_DEVICE;
    next = e->start + e->length;
  }
  if (dp->size > next) return "size is past the extents";
  return NULL;
}

static const char *read_dirty(napi_env env, struct datapath *dp, napi_value dirty_value) {
  for (uint32_t i = 0; i < dp->dirty_count; i++) {
    napi_value word;
    bool is_typed = false;
    napi_typedarray_type type;
    size_t length = 0;
    void *data = NULL;
    napi_get_element(env, dirty_value, i, &word);
    napi_is_typedarray(env, word, &is_typed);
    if (!is_typed || napi_get_typedarray_info(env, word, &type, &length, &data, NULL, NULL) !=
                         napi_ok ||
        type != napi_int32_array || length < 1 ||
        napi_create_reference(env, word, 1, &dp->dirty_refs[i]) != napi_ok) {
      return "dirty must be an Array of Int32Array";
    }
    dp->dirty[i] = data;
    dp->holes[i] = length >= 2 ? (int32_t *)data + 1 : NULL;
  }
  return NULL;
}

/* Reads the extent list and dirty flags into dp; a message when they are not usable (what was
 * allocated is freed by dp_map_free, from datapath_finalize, either way). */
const char *dp_map_read(napi_env env, struct datapath *dp, napi_value extents_value,
                        napi_value dirty_value) {
  bool is_typed = false, is_array = false;
  napi_typedarray_type type;
  size_t length = 0;
  void *data = NULL;
  napi_is_typedarray(env, extents_value, &is_typed);
  if (!is_typed || napi_get_typedarray_info(env, extents_value, &type, &length, &data, NULL,
                                            NULL) != napi_ok ||
      type != napi_float64_array || length == 0 || length % FIELDS != 0) {
    return "extents must be a Float64Array of 6-tuples";
  }
  uint32_t dirty_count = 0;
  napi_is_array(env, dirty_value, &is_array);
  if (!is_array || napi_get_array_length(env, dirty_value, &dirty_count) != napi_ok ||
      dirty_count == 0) {
    return "dirty must be an Array of Int32Array";
  }
  dp->extents = calloc(length / FIELDS, sizeof *dp->extents);
  dp->dirty_count = dirty_count;
  dp->dirty = calloc(dirty_count, sizeof *dp->dirty);
  dp->dirty_refs = calloc(dirty_count, sizeof *dp->dirty_refs);
  dp->data_from = calloc(dirty_count, sizeof *dp->data_from);
  dp->data_to = calloc(dirty_count, sizeof *dp->data_to);
  dp->data_epoch = calloc(dirty_count, sizeof *dp->data_epoch);
  dp->holes = calloc(dirty_count, sizeof *dp->holes);
  if (dp->extents == NULL || dp->dirty == NULL || dp->dirty_refs == NULL ||
      dp->data_from == NULL || dp->data_to == NULL || dp->data_epoch == NULL ||
      dp->holes == NULL) {
    return "out of memory";
  }
  const char *problem = read_extents(dp, data, length, dirty_count);
  if (problem == NULL) problem = read_dirty(env, dp, dirty_value);
  if (problem != NULL) return problem;
  /* what JS knew is of the epoch now */
  for (size_t i = 0; i < dp->extent_count; i++) {
    dp->extents[i].epoch = dp_hole_epoch(dp, dp->extents[i].backing);
  }
  for (uint32_t i = 0; i < dirty_count; i++) dp->data_epoch[i] = dp_hole_epoch(dp, (int)i);
  return NULL;
}

void dp_map_free(struct datapath *dp) {
  free(dp->extents);
  free(dp->dirty);
  free(dp->dirty_refs);
  free(dp->data_from);
  free(dp->data_to);
  free(dp->data_epoch);
  free(dp->holes);
}

/* Index of the extent holding `offset`, which is inside the export. */
size_t dp_extent_of(const struct datapath *dp, int64_t offset) {
  XVD_ASSERT(offset >= 0, "a lookup is inside the export");
  XVD_ASSERT(offset < dp->size, "a lookup is inside the export");
  size_t low = 0, high = dp->extent_count;
  while (high - low > 1) {
    size_t middle = low + (high - low) / 2;
    if (dp->extents[middle].start <= offset) low = middle;
    else high = middle;
  }
  const struct dp_extent *e = &dp->extents[low];
  XVD_ASSERT(e->start <= offset, "the extent found starts at or before the offset");
  XVD_ASSERT(offset < e->start + e->length, "the extent found holds the offset");
  return low;
}

/* The hole epoch of backing b (see the header); what was learned at another epoch is stale. */
int32_t dp_hole_epoch(const struct datapath *dp, int b) {
  XVD_ASSERT(b >= 0 && (size_t)b < dp->dirty_count, "a backing index is in the map");
  return dp->holes[b] == NULL ? 0 : __atomic_load_n(dp->holes[b], __ATOMIC_SEQ_CST);
}

/* False when a hole may lie under [position, position+length) of the extent's file (see the
 * header for what is remembered and until when). */
int dp_is_data(struct datapath *dp, struct dp_extent *e, int64_t position, int64_t length) {
  XVD_ASSERT(position >= e->offset, "a probe is inside its extent");
  XVD_ASSERT(position + length <= e->offset + e->length, "a probe is inside its extent");
  if (e->is_device) return 1;
  int b = e->backing;
  int32_t epoch = dp_hole_epoch(dp, b);
  if (e->is_data && e->epoch == epoch) return 1;
  if (dp->data_epoch[b] == epoch && position >= dp->data_from[b] &&
      position + length <= dp->data_to[b]) {
    return 1;
  }
  int64_t hole = 0;
  int err = xvd_hole_from(e->fd, position, &hole);
  if (err != 0) return err == EINVAL; /* no SEEK_HOLE here: all data (seek.c) */
  if (hole < position + length) return 0;
  dp->data_from[b] = position;
  dp->data_to[b] = hole;
  dp->data_epoch[b] = epoch;
  if (hole >= e->offset + e->length) {
    /* data from position to the extent's end: and before position? */
    int64_t head = hole;
    if (position != e->offset && xvd_hole_from(e->fd, e->offset, &head) != 0) head = -1;
    e->is_data = head >= e->offset + e->length;
    e->epoch = epoch;
  }
  return 1;
}

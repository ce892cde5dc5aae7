/* dp-map.c: the data-path thread's view of the export's map, in the one form JS hands it over,
 * its lookup, and what the thread knows of holes.
 *
 * The form (createDatapath's `extents` and `dirty`; src/sys/index.ts DatapathMap, built by the
 * engine's datapathMapOf, src/engine/extent-datapath.ts, from its ExtentMap and its backings):
 *   extents  Float64Array of 6-tuples (startVirtual, length, fd, offsetBacking, backingIndex,
 *            kind), in virtual order and contiguous from 0, covering at least the export's size;
 *            kind 0 a file, 1 a device (never a hole), 2 a file extent the backing knew to be
 *            all data when the map was made (extent-state.ts isBackingAllData, FileBacking's
 *            learned data runs); plus KIND_SHARED (4) when another VD shares the extent
 *            (copy-on-write, src/engine/cow.ts): the thread never writes it, and forwards
 *            every WRITE touching it to JS, which copies the extent first (dp-io.c)
 *   dirty    Array of Int32Array, one per backing index: word 0 the pool entry's dirty flag,
 *            set to 1 here before a WRITE's reply (so a FLUSH on any connection syncs it); word
 *            1, when there is one, the backing's hole epoch, which JS bumps after every TRIM or
 *            WRITE_ZEROES on that backing, before its reply (src/backing/pool.ts)
 * A new map (copy-on-write swapped an extent: src/engine/cow.ts) comes through datapathRemap:
 * parsed and checked on the JS thread, handed over in map_next, taken by the thread between
 * requests with its reader drained (dp_map_take), and told back (DP_EV_REMAPPED), so JS knows
 * when no I/O of this thread uses the old map any more. Backing indices are stable across maps
 * (the export's order of acquisition), so the dirty arrays of the old map are the first ones of
 * the new. dp_extent_of() is a binary search over the tuples exactly as they came; the engine's
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
#include <pthread.h>
#include <stdlib.h>
#include "datapath.h"

#define SAFE_MAX 9007199254740991.0 /* Number.MAX_SAFE_INTEGER */
#define FIELDS 6                    /* src/sys/index.ts DATAPATH_EXTENT_FIELDS */
enum { KIND_FILE = 0, KIND_DEVICE = 1, KIND_FILE_ALL_DATA = 2, KIND_SHARED = 4 };

static int is_tuple(const double *t, int64_t next, uint32_t backing_count) {
  double kind = t[5] >= KIND_SHARED ? t[5] - KIND_SHARED : t[5];
  return dp_is_whole(t[0], SAFE_MAX) && t[1] > 0 && dp_is_whole(t[1], SAFE_MAX) &&
         dp_is_whole(t[2], 2147483647.0) && dp_is_whole(t[3], SAFE_MAX) &&
         dp_is_whole(t[4], (double)backing_count - 1) &&
         (kind == KIND_FILE || kind == KIND_DEVICE || kind == KIND_FILE_ALL_DATA) &&
         (int64_t)t[0] == next;
}

static const char *read_extents(struct dp_map *map, int64_t size, const double *tuples,
                                size_t length) {
  map->extent_count = length / FIELDS;
  int64_t next = 0;
  for (size_t i = 0; i < map->extent_count; i++) {
    const double *t = tuples + FIELDS * i;
    if (!is_tuple(t, next, (uint32_t)map->dirty_count)) {
      return "an extent is not (start, length, fd, offset, backing, kind) in order";
    }
    struct dp_extent *e = &map->extents[i];
    double kind = t[5] >= KIND_SHARED ? t[5] - KIND_SHARED : t[5];
    e->start = (int64_t)t[0];
    e->length = (int64_t)t[1];
    e->fd = (int)t[2];
    e->offset = (int64_t)t[3];
    e->backing = (int)t[4];
    e->is_shared = t[5] >= KIND_SHARED;
    e->is_data = kind != KIND_FILE; /* a device has no hole; JS knew a file extent all data */
    e->is_device = kind == KIND_DEVICE;
    next = e->start + e->length;
  }
  if (size > next) return "size is past the extents";
  return NULL;
}

/* The i-th dirty array's memory, or NULL when it is not an Int32Array; *words its length. */
static int32_t *dirty_word(napi_env env, napi_value dirty_value, uint32_t i, napi_value *word,
                           size_t *words) {
  bool is_typed = false;
  napi_typedarray_type type;
  size_t length = 0;
  void *data = NULL;
  napi_get_element(env, dirty_value, i, word);
  napi_is_typedarray(env, *word, &is_typed);
  if (!is_typed || napi_get_typedarray_info(env, *word, &type, &length, &data, NULL, NULL) !=
                       napi_ok ||
      type != napi_int32_array || length < 1) {
    return NULL;
  }
  *words = length;
  return data;
}

/* The dirty words of every backing (JS thread): the first dp->ref_count must be the arrays
 * handed over before (backing indices are stable), the others are referenced from now on. */
static const char *read_dirty(napi_env env, struct datapath *dp, struct dp_map *map,
                              napi_value dirty_value) {
  napi_value word;
  for (uint32_t i = 0; i < map->dirty_count; i++) {
    size_t words = 0;
    int32_t *data = dirty_word(env, dirty_value, i, &word, &words);
    if (data == NULL) return "dirty must be an Array of Int32Array";
    if (i < dp->ref_count && dp->dirty_data[i] != data) {
      return "a new map changes the dirty array of a backing index";
    }
    map->dirty[i] = data;
    map->holes[i] = words >= 2 ? data + 1 : NULL;
  }
  napi_ref *refs = realloc(dp->dirty_refs, map->dirty_count * sizeof *refs);
  if (refs != NULL) dp->dirty_refs = refs;
  void **datas = realloc(dp->dirty_data, map->dirty_count * sizeof *datas);
  if (datas != NULL) dp->dirty_data = datas;
  if (refs == NULL || datas == NULL) return "out of memory";
  for (uint32_t i = (uint32_t)dp->ref_count; i < map->dirty_count; i++) {
    napi_get_element(env, dirty_value, i, &word);
    if (napi_create_reference(env, word, 1, &dp->dirty_refs[i]) != napi_ok) {
      return "dirty must be an Array of Int32Array";
    }
    dp->dirty_data[i] = map->dirty[i];
    dp->ref_count = i + 1;
  }
  return NULL;
}

void dp_map_next_free(struct dp_map *map) {
  if (map == NULL) return;
  free(map->extents);
  free(map->dirty);
  free(map->holes);
  free(map->data_from);
  free(map->data_to);
  free(map->data_epoch);
  free(map);
}

/* A map from JS's two arrays (JS thread); NULL with *problem set when they are not usable. */
static struct dp_map *parse_map(napi_env env, struct datapath *dp, napi_value extents_value,
                                napi_value dirty_value, const char **problem) {
  bool is_typed = false, is_array = false;
  napi_typedarray_type type;
  size_t length = 0;
  void *data = NULL;
  uint32_t dirty_count = 0;
  napi_is_typedarray(env, extents_value, &is_typed);
  napi_is_array(env, dirty_value, &is_array);
  if (!is_typed || napi_get_typedarray_info(env, extents_value, &type, &length, &data, NULL,
                                            NULL) != napi_ok ||
      type != napi_float64_array || length == 0 || length % FIELDS != 0) {
    *problem = "extents must be a Float64Array of 6-tuples";
    return NULL;
  }
  if (!is_array || napi_get_array_length(env, dirty_value, &dirty_count) != napi_ok ||
      dirty_count == 0 || dirty_count < dp->ref_count) {
    *problem = "dirty must be an Array of Int32Array, at least as long as before";
    return NULL;
  }
  struct dp_map *map = calloc(1, sizeof *map);
  if (map != NULL) {
    map->dirty_count = dirty_count;
    map->extents = calloc(length / FIELDS, sizeof *map->extents);
    map->dirty = calloc(dirty_count, sizeof *map->dirty);
    map->holes = calloc(dirty_count, sizeof *map->holes);
    map->data_from = calloc(dirty_count, sizeof *map->data_from);
    map->data_to = calloc(dirty_count, sizeof *map->data_to);
    map->data_epoch = calloc(dirty_count, sizeof *map->data_epoch);
  }
  *problem = map == NULL || map->extents == NULL || map->dirty == NULL || map->holes == NULL ||
                     map->data_from == NULL || map->data_to == NULL || map->data_epoch == NULL
                 ? "out of memory"
                 : read_extents(map, dp->size, data, length);
  if (*problem == NULL) *problem = read_dirty(env, dp, map, dirty_value);
  if (*problem == NULL) return map;
  dp_map_next_free(map);
  return NULL;
}

/* Makes `map` the thread's (at create, or on the thread between requests) and frees it. */
static void install(struct datapath *dp, struct dp_map *map) {
  dp_map_free(dp);
  dp->extents = map->extents;
  dp->extent_count = map->extent_count;
  dp->dirty = map->dirty;
  dp->holes = map->holes;
  dp->dirty_count = map->dirty_count;
  dp->data_from = map->data_from;
  dp->data_to = map->data_to;
  dp->data_epoch = map->data_epoch;
  free(map);
  /* what JS knew is of the epoch now */
  for (size_t i = 0; i < dp->extent_count; i++) {
    dp->extents[i].epoch = dp_hole_epoch(dp, dp->extents[i].backing);
  }
  for (size_t i = 0; i < dp->dirty_count; i++) dp->data_epoch[i] = dp_hole_epoch(dp, (int)i);
}

/* Reads the first map into dp (createDatapath); a message when it is not usable (what was
 * allocated is freed by datapath_finalize either way). */
const char *dp_map_read(napi_env env, struct datapath *dp, napi_value extents_value,
                        napi_value dirty_value) {
  const char *problem = NULL;
  struct dp_map *map = parse_map(env, dp, extents_value, dirty_value, &problem);
  if (map != NULL) install(dp, map);
  return problem;
}

/* The thread's current map arrays (not the references: JS deletes those). */
void dp_map_free(struct datapath *dp) {
  free(dp->extents);
  free(dp->dirty);
  free(dp->holes);
  free(dp->data_from);
  free(dp->data_to);
  free(dp->data_epoch);
  dp->extents = NULL;
  dp->dirty = dp->holes = NULL;
  dp->data_from = dp->data_to = NULL;
  dp->data_epoch = NULL;
  dp->extent_count = dp->dirty_count = 0;
}

/* On the thread, between requests: takes the map JS handed over, if any (datapath.h "map").
 * The reader is drained first: no READ of it runs on the old map once this returns. */
void dp_map_take(struct datapath *dp) {
  if (!dp_load(&dp->map_pending)) return;
  dp_reader_drain(dp);
  pthread_mutex_lock(&dp->mutex);
  struct dp_map *map = dp->map_next;
  dp->map_next = NULL;
  dp_store(&dp->map_pending, 0);
  pthread_mutex_unlock(&dp->mutex);
  if (map == NULL) return;
  int32_t sequence = map->sequence;
  install(dp, map);
  dp_post(dp, DP_EV_REMAPPED, sequence, NULL, 0, NULL);
}

/* datapathRemap(dp, extents, dirty, sequence) on the JS thread: checks the new map and hands
 * it to the thread (replacing one it has not taken yet); DP_EV_REMAPPED with `sequence` follows
 * once the thread uses it. Backing indices are stable: `dirty` starts with the arrays given
 * before. Throws a RangeError when the map is not usable (the thread keeps the old one). */
napi_value xvd_datapath_remap(napi_env env, napi_callback_info info) {
  size_t argc = 4;
  napi_value argv[4], undefined;
  int32_t sequence = 0;
  napi_get_undefined(env, &undefined);
  if (napi_get_cb_info(env, info, &argc, argv, NULL, NULL) != napi_ok || argc < 4 ||
      napi_get_value_int32(env, argv[3], &sequence) != napi_ok) {
    napi_throw_type_error(env, NULL, "datapathRemap(datapath, extents, dirty, sequence)");
    return NULL;
  }
  struct datapath *dp = xvd_datapath_running(env, argv[0]);
  if (dp == NULL) return NULL;
  const char *problem = NULL;
  struct dp_map *map = parse_map(env, dp, argv[1], argv[2], &problem);
  if (map == NULL) {
    napi_throw_range_error(env, NULL, problem);
    return NULL;
  }
  map->sequence = sequence;
  pthread_mutex_lock(&dp->mutex);
  struct dp_map *unused = dp->map_next;
  dp->map_next = map;
  dp_store(&dp->map_pending, 1);
  pthread_mutex_unlock(&dp->mutex);
  dp_map_next_free(unused);
  dp_wake(dp);
  return undefined;
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

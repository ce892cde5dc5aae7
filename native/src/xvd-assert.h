/* xvd-assert.h: XVD_ASSERT(condition, "invariant"), the native addon's assertion, active in
 * every build (Release included; NDEBUG changes nothing). Named so as not to shadow <assert.h>.
 *
 * Contract: an invariant that does not hold means the code is wrong, not the peer or the disk.
 * A thread that writes disks and replies to clients must not go on from a state its author
 * ruled out (TigerBeetle's rule), so a broken invariant prints "xvd: assertion failed at
 * file:line: invariant (condition)" to stderr and aborts the process. Never assert on what a
 * peer, a user or the system can make false: those are errors, handled where they arise.
 * One condition per assertion, and its message names the invariant it guards. */
#ifndef XVD_ASSERT_H
#define XVD_ASSERT_H

#include <stdio.h>
#include <stdlib.h>

#define XVD_ASSERT(condition, invariant)                                                     \
  do {                                                                                       \
    if (__builtin_expect(!(condition), 0)) {                                                 \
      xvd_assert_fail(__FILE__, __LINE__, (invariant), #condition);                          \
    }                                                                                        \
  } while (0)

__attribute__((noreturn, cold)) static inline void xvd_assert_fail(const char *file, int line,
                                                                    const char *invariant,
                                                                    const char *condition) {
  fprintf(stderr, "xvd: assertion failed at %s:%d: %s (%s)\n", file, line, invariant,
          condition);
  fflush(stderr);
  abort();
}

#endif

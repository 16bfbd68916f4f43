/* Small helpers shared by the C tests: checks that fail loudly with the library's own
 * error message, and waits with a deadline. */
#ifndef STARLING_TEST_CHECK_H
#define STARLING_TEST_CHECK_H

#define _POSIX_C_SOURCE 200809L
#include <starling.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

static inline const char *last_error(void) {
    static char buf[1024];
    if (starling_last_error_message(buf, sizeof buf, NULL) != STARLING_RESULT_OK) {
        snprintf(buf, sizeof buf, "(message longer than %zu bytes)", sizeof buf);
    }
    return buf;
}

/* A call that must succeed. */
#define OK(call)                                                                      \
    do {                                                                              \
        starling_result r_ = (call);                                                  \
        if (r_ != STARLING_RESULT_OK) {                                               \
            fprintf(stderr, "%s:%d: %s failed: %s: %s\n", __FILE__, __LINE__, #call,  \
                    starling_result_name(r_), last_error());                          \
            exit(1);                                                                  \
        }                                                                             \
    } while (0)

/* A call that must fail with exactly `code`. */
#define EXPECT(code, call)                                                            \
    do {                                                                              \
        starling_result r_ = (call);                                                  \
        if (r_ != (code)) {                                                           \
            fprintf(stderr, "%s:%d: %s returned %s, expected %s (%s)\n", __FILE__,    \
                    __LINE__, #call, starling_result_name(r_), starling_result_name(code), \
                    last_error());                                                    \
            exit(1);                                                                  \
        }                                                                             \
    } while (0)

#define ASSERT(cond, ...)                                                             \
    do {                                                                              \
        if (!(cond)) {                                                                \
            fprintf(stderr, "%s:%d: assertion failed: %s: ", __FILE__, __LINE__, #cond); \
            fprintf(stderr, __VA_ARGS__);                                             \
            fprintf(stderr, "\n");                                                    \
            exit(1);                                                                  \
        }                                                                             \
    } while (0)

static inline double now_s(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

/* Seconds a test may wait for something that should happen (raised under valgrind via
 * STARLING_TEST_DEADLINE_S, where everything runs ~30x slower). */
static inline double deadline_s(void) {
    const char *s = getenv("STARLING_TEST_DEADLINE_S");
    double d = s ? atof(s) : 0.0;
    return d > 0.0 ? d : 20.0;
}

static inline void sleep_ms(long ms) {
    struct timespec ts = {ms / 1000, (ms % 1000) * 1000000L};
    nanosleep(&ts, NULL);
}

#endif

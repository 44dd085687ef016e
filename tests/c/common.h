/*
 * Shared helpers of the C test programs: checks that exit non-zero with the failing line, the
 * environment the Rust harness (tests/c_abi.rs) passes in, and the request channel to it.
 *
 * Harness protocol: a program writes one line "@@ <verb> <args...>" to stdout and reads one reply
 * line from stdin. Verbs: "desired <device> <json>" (service patches desired properties),
 * "invoke <device> <module|-> <method> <json>" (service invokes a direct method; reply is
 * "<status> <payload-json>"), "c2d <device> <payload>" (service sends a C2D message with
 * property "k"="v"), "events <device>" (reply: number of telemetry messages the hub received),
 * "distinct_events <device>" (reply: how many distinct bodies among them),
 * "device <id>" (registers a device; reply: its connection string), "disconnect <device>" (the hub
 * drops the device's connection).
 */
#ifndef IRONHUB_TEST_COMMON_H
#define IRONHUB_TEST_COMMON_H

#define _POSIX_C_SOURCE 200809L
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "ironhub.h"

#define CHECK(cond)                                                                         \
    do {                                                                                    \
        if (!(cond)) {                                                                      \
            char detail_[512];                                                              \
            ironhub_last_error_message(detail_, sizeof detail_);                            \
            fprintf(stderr, "%s:%d: CHECK(%s) failed (last error: %s)\n", __FILE__, __LINE__, \
                    #cond, detail_);                                                        \
            exit(1);                                                                        \
        }                                                                                   \
    } while (0)

/* Checks a call's result code, naming both codes on failure. */
#define CHECK_RESULT(call, expected)                                                          \
    do {                                                                                      \
        ironhub_result got_ = (call);                                                         \
        if (got_ != (expected)) {                                                             \
            char detail_[512];                                                                \
            ironhub_last_error_message(detail_, sizeof detail_);                              \
            fprintf(stderr, "%s:%d: %s returned %s, expected %s (last error: %s)\n", __FILE__, \
                    __LINE__, #call, ironhub_result_str(got_), ironhub_result_str(expected),  \
                    detail_);                                                                 \
            exit(1);                                                                          \
        }                                                                                     \
    } while (0)

#define CHECK_OK(call) CHECK_RESULT(call, IRONHUB_OK)

static inline const char *test_env(const char *name) {
    const char *v = getenv(name);
    if (v == NULL || v[0] == '\0') {
        fprintf(stderr, "missing environment variable %s (run through tests/c_abi.rs)\n", name);
        exit(2);
    }
    return v;
}

/* Options pointing at the emulator: its CA and its ephemeral ports. Caller frees. */
static inline ironhub_options *emulator_options(void) {
    ironhub_options *o = ironhub_options_new();
    CHECK(o != NULL);
    CHECK_OK(ironhub_options_set_server_verification_cert(o, test_env("IRONHUB_TEST_CA_PEM")));
    CHECK_OK(ironhub_options_set_mqtt_port(o, (uint16_t)atoi(test_env("IRONHUB_TEST_MQTT_PORT"))));
    CHECK_OK(ironhub_options_set_https_port(o, (uint16_t)atoi(test_env("IRONHUB_TEST_HTTPS_PORT"))));
    CHECK_OK(ironhub_options_set_operation_timeout(o, 20));
    return o;
}

/* Sends a request to the harness and copies its one-line reply (without newline) into reply. */
static inline void harness_request(char *reply, size_t reply_len, const char *fmt, ...) {
    va_list ap;
    va_start(ap, fmt);
    fputs("@@ ", stdout);
    vfprintf(stdout, fmt, ap);
    fputc('\n', stdout);
    fflush(stdout);
    va_end(ap);
    char line[4096];
    if (fgets(line, sizeof line, stdin) == NULL) {
        fprintf(stderr, "harness closed the request channel\n");
        exit(2);
    }
    line[strcspn(line, "\r\n")] = '\0';
    if (strncmp(line, "ERR", 3) == 0) {
        fprintf(stderr, "harness request failed: %s\n", line);
        exit(1);
    }
    if (reply != NULL && reply_len > 0) {
        snprintf(reply, reply_len, "%s", line);
    }
}

static inline void sleep_ms(long ms) {
    struct timespec ts = {ms / 1000, (ms % 1000) * 1000000L};
    nanosleep(&ts, NULL);
}

/* Polls `cond_expr` every 10 ms for up to `ms`, then CHECKs it. */
#define WAIT_FOR(cond_expr, ms)                        \
    do {                                               \
        long waited_ = 0;                              \
        while (!(cond_expr) && waited_ < (ms)) {       \
            sleep_ms(10);                              \
            waited_ += 10;                             \
        }                                              \
        CHECK(cond_expr);                              \
    } while (0)

#endif

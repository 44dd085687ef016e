/*
 * What the C benchmark programs share (benches/c/ironhub_send.c, benches/c/csdk_send.c): the
 * command line, the clock, percentiles, the process's CPU/RSS/thread counters and the one output
 * format benches/run reads: one JSON object per measurement on stdout,
 *   {"name": "...", "value": 123.4, "unit": "..."}
 * so both programs measure exactly the same things the same way and only the client differs.
 *
 * Command line (both programs):
 *   connect                      create + connect until CONNACK, ms
 *   sync N SIZE                  N sends of SIZE bytes, each waiting for its PUBACK
 *   burst N SIZE                 N sends queued at once, then wait for every outcome
 *   window N W SIZE              N sends, at most W in flight
 *   twin N                       N twin GETs one after another
 *   clients FILE                 connect every connection string of FILE (one a line) in this process
 * Environment: BENCH_CS (device connection string), BENCH_CA (PEM file of the hub's root),
 * BENCH_MQTT_PORT (ironhub only; the C SDK always uses 8883).
 */
#ifndef BENCH_COMMON_H
#define BENCH_COMMON_H

#define _GNU_SOURCE
#include <dirent.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <time.h>

static inline double now_us(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec * 1e6 + (double)ts.tv_nsec / 1e3;
}

static inline void emit(const char *name, double value, const char *unit) {
    printf("{\"name\": \"%s\", \"value\": %.3f, \"unit\": \"%s\"}\n", name, value, unit);
    fflush(stdout);
}

static int cmp_double(const void *a, const void *b) {
    double x = *(const double *)a, y = *(const double *)b;
    return (x > y) - (x < y);
}

/* Emits <prefix>_p50/_p90/_p99 (µs) of `n` samples (sorted in place). */
static inline void emit_percentiles(const char *prefix, double *samples, size_t n) {
    if (n == 0) return;
    qsort(samples, n, sizeof *samples, cmp_double);
    static const int pct[] = {50, 90, 99};
    for (size_t i = 0; i < sizeof pct / sizeof *pct; i++) {
        char name[128];
        size_t at = (size_t)((double)(n - 1) * pct[i] / 100.0);
        snprintf(name, sizeof name, "%s_p%d", prefix, pct[i]);
        emit(name, samples[at], "us");
    }
}

/* CPU time (user + system, µs) and context switches (voluntary + involuntary) of this process. */
typedef struct {
    double cpu_us;
    long ctxsw;
} usage_t;

static inline usage_t usage_now(void) {
    struct rusage ru;
    getrusage(RUSAGE_SELF, &ru);
    usage_t u;
    u.cpu_us = (double)(ru.ru_utime.tv_sec + ru.ru_stime.tv_sec) * 1e6 + (double)(ru.ru_utime.tv_usec + ru.ru_stime.tv_usec);
    u.ctxsw = ru.ru_nvcsw + ru.ru_nivcsw;
    return u;
}

/* Emits the rate, CPU per message and context switches per message of `n` messages. */
static inline void emit_rate(const char *prefix, size_t n, double t0_us, usage_t u0) {
    double secs = (now_us() - t0_us) / 1e6;
    usage_t u1 = usage_now();
    char name[128];
    emit(prefix, (double)n / secs, "msg/s");
    snprintf(name, sizeof name, "%s_cpu", prefix);
    emit(name, (u1.cpu_us - u0.cpu_us) / (double)n, "us/msg");
    snprintf(name, sizeof name, "%s_ctxsw", prefix);
    emit(name, (double)(u1.ctxsw - u0.ctxsw) / (double)n, "switches/msg");
}

/* The end of a pipelined run: its rate and how many of its sends failed. */
static inline void emit_pipelined(const char *prefix, size_t n, double t0_us, usage_t u0, size_t failed) {
    char name[128];
    emit_rate(prefix, n, t0_us, u0);
    snprintf(name, sizeof name, "%s_failed", prefix);
    emit(name, (double)failed, "sends");
}

static inline long rss_kib(void);
static inline long thread_count(void);

/* The end of a many-clients run: time to connect them all, RSS and threads added per client. */
static inline void emit_clients(size_t n, double secs, long rss0_kib, long threads0) {
    char name[64];
    snprintf(name, sizeof name, "clients_%zu_connect", n);
    emit(name, secs, "s");
    snprintf(name, sizeof name, "clients_%zu_rss", n);
    emit(name, (double)(rss_kib() - rss0_kib) / (double)n, "KiB/client");
    snprintf(name, sizeof name, "clients_%zu_threads", n);
    emit(name, (double)(thread_count() - threads0), "threads");
}

static inline long rss_kib(void) {
    FILE *f = fopen("/proc/self/status", "r");
    char line[256];
    long kib = 0;
    while (f && fgets(line, sizeof line, f)) {
        if (strncmp(line, "VmRSS:", 6) == 0) kib = atol(line + 6);
    }
    if (f) fclose(f);
    return kib;
}

static inline long thread_count(void) {
    DIR *d = opendir("/proc/self/task");
    long n = 0;
    struct dirent *e;
    while (d && (e = readdir(d)) != NULL) {
        if (e->d_name[0] != '.') n++;
    }
    if (d) closedir(d);
    return n;
}

/* Whole file as a NUL-terminated string (the CA PEM, the connection string list); exits on error. */
static inline char *read_file(const char *path) {
    FILE *f = fopen(path, "rb");
    if (!f) {
        fprintf(stderr, "cannot open %s\n", path);
        exit(2);
    }
    fseek(f, 0, SEEK_END);
    long len = ftell(f);
    fseek(f, 0, SEEK_SET);
    char *buf = malloc((size_t)len + 1);
    if (!buf || fread(buf, 1, (size_t)len, f) != (size_t)len) {
        fprintf(stderr, "cannot read %s\n", path);
        exit(2);
    }
    buf[len] = '\0';
    fclose(f);
    return buf;
}

static inline const char *require_env(const char *name) {
    const char *v = getenv(name);
    if (!v || !*v) {
        fprintf(stderr, "set %s\n", name);
        exit(2);
    }
    return v;
}

/* Splits a file of connection strings into lines (in place); returns the count. */
static inline size_t split_lines(char *text, char ***out) {
    size_t cap = 1024, n = 0;
    char **lines = malloc(cap * sizeof *lines);
    for (char *save = NULL, *l = strtok_r(text, "\n", &save); l; l = strtok_r(NULL, "\n", &save)) {
        if (!*l) continue;
        if (n == cap) lines = realloc(lines, (cap *= 2) * sizeof *lines);
        lines[n++] = l;
    }
    *out = lines;
    return n;
}

/* Raises RLIMIT_NOFILE to its hard limit (or `want`, if we may): one socket per client. */
static inline void raise_nofile(rlim_t want) {
    struct rlimit r;
    getrlimit(RLIMIT_NOFILE, &r);
    if (r.rlim_max < want) r.rlim_max = want; /* allowed as root (CAP_SYS_RESOURCE) */
    r.rlim_cur = r.rlim_max;
    if (setrlimit(RLIMIT_NOFILE, &r) != 0) {
        getrlimit(RLIMIT_NOFILE, &r);
        r.rlim_cur = r.rlim_max;
        setrlimit(RLIMIT_NOFILE, &r);
    }
}

static inline void *payload_of(size_t size) {
    unsigned char *p = malloc(size ? size : 1);
    for (size_t i = 0; i < size; i++) p[i] = (unsigned char)('a' + i % 26);
    return p;
}

/* The mode (argv[1]) and the hub's root PEM ($BENCH_CA); exits with the usage on a missing mode. */
static inline char *bench_start(int argc, char **argv, const char **mode) {
    if (argc < 2) {
        fprintf(stderr, "usage: see benches/c/bench_common.h\n");
        exit(2);
    }
    *mode = argv[1];
    return read_file(require_env("BENCH_CA"));
}

/* `n` calls of `call` one after another: <prefix>_p50/_p90/_p99 latencies and, with `with_rate`, the
 * rate, CPU and context switches per call. Returns the first failing call's result (0: all worked). */
typedef int (*timed_call)(void *ctx);

static inline int timed_calls(const char *prefix, size_t n, int with_rate, timed_call call, void *ctx) {
    double *lat = malloc(n * sizeof *lat);
    usage_t u0 = usage_now();
    double start = now_us();
    for (size_t i = 0; i < n; i++) {
        double s = now_us();
        int r = call(ctx);
        if (r != 0) {
            free(lat);
            return r;
        }
        lat[i] = now_us() - s;
    }
    if (with_rate) emit_rate(prefix, n, start, u0);
    emit_percentiles(prefix, lat, n);
    free(lat);
    return 0;
}

/* `burst N SIZE` (window = N) or `window N W SIZE`: the run's name, count, window and size. */
static inline int pipelined_mode(const char *mode, int argc, char **argv, char *name, size_t name_len, size_t *n,
                                 size_t *window, size_t *size) {
    int burst = strcmp(mode, "burst") == 0 && argc == 4, win = strcmp(mode, "window") == 0 && argc == 5;
    if (!burst && !win) return 0;
    *n = strtoul(argv[2], NULL, 10);
    *window = burst ? *n : strtoul(argv[3], NULL, 10);
    *size = strtoul(argv[argc - 1], NULL, 10);
    snprintf(name, name_len, burst ? "burst_%zu" : "window_%zu", *window);
    return 1;
}

#endif

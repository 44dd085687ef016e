/*
 * The ironhub C ABI side of benches/run: the same measurements as csdk_send.c (see bench_common.h
 * for the command line and the output), through include/ironhub.h.
 * Build: cc -O2 -Iinclude benches/c/ironhub_send.c -L<target>/bench -lironhub -lpthread -o ironhub_send
 */
#include <pthread.h>
#include <stdbool.h>

#include "bench_common.h"
#include "ironhub.h"

static void die(const char *what, ironhub_result r) {
    char detail[512];
    ironhub_last_error_message(detail, sizeof detail);
    fprintf(stderr, "%s: %s (%s)\n", what, ironhub_result_str(r), detail);
    exit(1);
}

/* `max_queued` > 0 raises the queue bounds to that many messages of `size` bytes: ironhub refuses
 * a send past them (default 1000 messages) where azure-iot-sdk-c queues without bound, so the
 * pipelined measurements raise them to the burst for a like-for-like comparison. */
static ironhub_client *create_client(const char *cs, const char *ca_pem, size_t max_queued, size_t size) {
    ironhub_options *o = ironhub_options_new();
    ironhub_options_set_server_verification_cert(o, ca_pem);
    if (getenv("BENCH_MQTT_PORT")) ironhub_options_set_mqtt_port(o, (uint16_t)atoi(getenv("BENCH_MQTT_PORT")));
    if (max_queued > 0) {
        ironhub_result b = ironhub_options_set_max_queued_messages(o, (uint32_t)max_queued);
        if (b == IRONHUB_OK) b = ironhub_options_set_max_queued_bytes(o, (uint64_t)max_queued * (size + 256));
        if (b != IRONHUB_OK) die("queue bounds", b);
    }
    ironhub_client *c = NULL;
    ironhub_result r = ironhub_client_create_from_connection_string(cs, o, &c);
    ironhub_options_free(o);
    if (r != IRONHUB_OK) die("create", r);
    return c;
}

static ironhub_message *message_of(size_t size) {
    void *p = payload_of(size);
    ironhub_message *m = ironhub_message_new(p, size);
    free(p);
    return m;
}

/* Outcomes of async sends: counted under a lock, the waiter woken when in-flight drops. */
static pthread_mutex_t mu = PTHREAD_MUTEX_INITIALIZER;
static pthread_cond_t cv = PTHREAD_COND_INITIALIZER;
static size_t done_ok, done_failed, in_flight;

static void on_sent(void *user_data, ironhub_result r) {
    (void)user_data;
    pthread_mutex_lock(&mu);
    if (r == IRONHUB_OK) done_ok++;
    else done_failed++;
    in_flight--;
    pthread_cond_signal(&cv);
    pthread_mutex_unlock(&mu);
}

/* N async sends with at most `window` in flight (window = N: all queued at once). A send the
 * library refuses at once counts as failed too. */
static void pipelined(ironhub_client *c, const char *name, size_t n, size_t window, size_t size) {
    ironhub_message *m = message_of(size);
    done_ok = done_failed = in_flight = 0;
    usage_t u0 = usage_now();
    double t0 = now_us();
    for (size_t i = 0; i < n; i++) {
        pthread_mutex_lock(&mu);
        while (in_flight >= window) pthread_cond_wait(&cv, &mu);
        in_flight++;
        pthread_mutex_unlock(&mu);
        ironhub_result r = ironhub_client_send_message_async(c, m, NULL, on_sent, NULL);
        if (r != IRONHUB_OK) on_sent(NULL, r);
    }
    pthread_mutex_lock(&mu);
    while (in_flight > 0) pthread_cond_wait(&cv, &mu);
    pthread_mutex_unlock(&mu);
    emit_pipelined(name, n, t0, u0, done_failed);
    ironhub_message_free(m);
}

typedef struct {
    ironhub_client *c;
    ironhub_message *m;
} sync_ctx;

static int sync_send(void *ctx) {
    sync_ctx *s = ctx;
    return (int)ironhub_client_send_message(s->c, s->m);
}

static int get_twin(void *ctx) {
    char *twin = NULL;
    ironhub_result r = ironhub_client_get_twin(ctx, &twin);
    ironhub_string_free(twin);
    return (int)r;
}

int main(int argc, char **argv) {
    char pname[64];
    size_t pn, pw, psize;
    const char *mode;
    char *ca = bench_start(argc, argv, &mode);

    if (strcmp(mode, "clients") == 0 && argc == 3) {
        char **css;
        size_t n = split_lines(read_file(argv[2]), &css);
        raise_nofile(n * 2 + 1024);
        ironhub_client **cs = calloc(n, sizeof *cs);
        /* Load the library's runtime first so its fixed cost is not charged to the clients. */
        ironhub_client *warm = create_client(css[0], ca, 0, 0);
        ironhub_result wr = ironhub_client_connect(warm);
        if (wr != IRONHUB_OK) die("connect", wr);
        ironhub_client_free(warm);
        long rss0 = rss_kib(), threads0 = thread_count();
        double t0 = now_us();
        for (size_t i = 0; i < n; i++) {
            cs[i] = create_client(css[i], ca, 0, 0);
            ironhub_result r = ironhub_client_connect(cs[i]);
            if (r != IRONHUB_OK) die("connect", r);
        }
        double secs = (now_us() - t0) / 1e6;
        struct timespec settle = {1, 0};
        nanosleep(&settle, NULL);
        emit_clients(n, secs, rss0, threads0);
        for (size_t i = 0; i < n; i++) ironhub_client_free(cs[i]);
        return 0;
    }

    const char *cs_text = require_env("BENCH_CS");
    int is_pipelined = pipelined_mode(mode, argc, argv, pname, sizeof pname, &pn, &pw, &psize);
    double t0 = now_us();
    ironhub_client *c = create_client(cs_text, ca, is_pipelined ? pn : 0, is_pipelined ? psize : 0);
    ironhub_result r = ironhub_client_connect(c);
    if (r != IRONHUB_OK) die("connect", r);
    double connect_ms = (now_us() - t0) / 1e3;

    if (strcmp(mode, "connect") == 0) {
        emit("connect", connect_ms, "ms");
    } else if (strcmp(mode, "sync") == 0 && argc == 4) {
        size_t n = strtoul(argv[2], NULL, 10), size = strtoul(argv[3], NULL, 10);
        sync_ctx ctx = {c, message_of(size)};
        char name[64];
        snprintf(name, sizeof name, "sync_send_%zuB", size);
        r = (ironhub_result)timed_calls(name, n, 1, sync_send, &ctx);
        if (r != IRONHUB_OK) die("send", r);
        ironhub_message_free(ctx.m);
    } else if (is_pipelined) {
        pipelined(c, pname, pn, pw, psize);
    } else if (strcmp(mode, "twin") == 0 && argc == 3) {
        r = (ironhub_result)timed_calls("twin_get", strtoul(argv[2], NULL, 10), 0, get_twin, c);
        if (r != IRONHUB_OK) die("get_twin", r);
    } else {
        fprintf(stderr, "unknown mode or arguments: %s\n", mode);
        return 2;
    }
    ironhub_client_free(c);
    free(ca);
    return 0;
}

/*
 * The ways a client handle ends, run plain, under ASan and under valgrind memcheck by
 * tests/c_abi.rs (leaks and use-after-free show there):
 *   - `ironhub_client_free` from inside the client's own callbacks (message, send completion) is
 *     refused with IRONHUB_ERROR_IN_CALLBACK and the client goes on working;
 *   - free with send completions still queued runs each completion exactly once, before it returns;
 *   - free while a message callback is running returns after it, and no callback runs afterwards;
 *   - with connection_retry off, the sends pending when the hub drops the connection complete with
 *     IRONHUB_ERROR_OPERATION_CANCELLED (as azure-iot-device's OperationCancelled), never with
 *     IRONHUB_ERROR_CONNECTION_DROPPED.
 */
#include "common.h"

#include <stdatomic.h>

#define QUEUED_SENDS 50
#define DROPPED_SENDS 300

typedef struct {
    ironhub_client *c;
    atomic_int messages, completions, refused_frees, ok, cancelled, other, in_callback, after_free;
    atomic_int freed;
    long sleep_in_callback_ms;
} ctx;

static void on_completion(void *user_data, ironhub_result r) {
    ctx *x = user_data;
    if (atomic_load(&x->freed)) atomic_fetch_add(&x->after_free, 1);
    if (r == IRONHUB_OK) {
        atomic_fetch_add(&x->ok, 1);
    } else if (r == IRONHUB_ERROR_OPERATION_CANCELLED) {
        atomic_fetch_add(&x->cancelled, 1);
    } else {
        fprintf(stderr, "send completed with %s\n", ironhub_result_str(r));
        atomic_fetch_add(&x->other, 1);
    }
    atomic_fetch_add(&x->completions, 1);
}

static void free_in_completion(void *user_data, ironhub_result r) {
    ctx *x = user_data;
    (void)r;
    if (ironhub_client_free(x->c) == IRONHUB_ERROR_IN_CALLBACK) atomic_fetch_add(&x->refused_frees, 1);
    atomic_fetch_add(&x->completions, 1);
}

static void on_message(void *user_data, const ironhub_message *m) {
    ctx *x = user_data;
    (void)m;
    if (atomic_load(&x->freed)) atomic_fetch_add(&x->after_free, 1);
    atomic_fetch_add(&x->in_callback, 1);
    if (ironhub_client_free(x->c) == IRONHUB_ERROR_IN_CALLBACK) atomic_fetch_add(&x->refused_frees, 1);
    if (x->sleep_in_callback_ms > 0) sleep_ms(x->sleep_in_callback_ms);
    atomic_fetch_add(&x->messages, 1);
    atomic_fetch_sub(&x->in_callback, 1);
}

/* A fresh context whose client is a new device `<base>-<suffix>` (its id left in `id`). */
static void start(ctx *x, char *id, size_t id_len, const char *base, const char *suffix, bool retry) {
    char cs[1024];
    memset(x, 0, sizeof *x);
    snprintf(id, id_len, "%s-%s", base, suffix);
    harness_request(cs, sizeof cs, "device %s", id);
    ironhub_options *o = emulator_options();
    CHECK_OK(ironhub_options_set_connection_retry(o, retry));
    CHECK_OK(ironhub_client_create_from_connection_string(cs, o, &x->c));
    ironhub_options_free(o);
}

/* Free refused from the client's own callbacks; the client still sends afterwards. */
static void free_from_callbacks(const char *base) {
    char id[160];
    ctx x;
    start(&x, id, sizeof id, base, "fcb", true);
    CHECK_OK(ironhub_client_on_message_received(x.c, on_message, &x));
    harness_request(NULL, 0, "c2d %s %s", id, "free me");
    WAIT_FOR(atomic_load(&x.messages) == 1, 60000);
    ironhub_message *m = ironhub_message_new((const uint8_t *)"f", 1);
    CHECK_OK(ironhub_client_send_message_async(x.c, m, NULL, free_in_completion, &x));
    WAIT_FOR(atomic_load(&x.completions) == 1, 60000);
    CHECK(atomic_load(&x.refused_frees) == 2);
    CHECK_OK(ironhub_client_send_message(x.c, m)); /* still alive */
    ironhub_message_free(m);
    CHECK_OK(ironhub_client_free(x.c));
}

/* Free with completions queued: each runs exactly once, before free returns. */
static void free_with_queued_completions(const char *base) {
    char id[160];
    ctx x;
    start(&x, id, sizeof id, base, "fq", true);
    CHECK_OK(ironhub_client_connect(x.c));
    ironhub_message *m = ironhub_message_new((const uint8_t *)"q", 1);
    for (int i = 0; i < QUEUED_SENDS; i++) CHECK_OK(ironhub_client_send_message_async(x.c, m, NULL, on_completion, &x));
    ironhub_message_free(m);
    CHECK_OK(ironhub_client_free(x.c));
    atomic_store(&x.freed, 1);
    CHECK(atomic_load(&x.completions) == QUEUED_SENDS);
    CHECK(atomic_load(&x.other) == 0);
    sleep_ms(200);
    CHECK(atomic_load(&x.completions) == QUEUED_SENDS && atomic_load(&x.after_free) == 0);
}

/* Free while a message callback runs: returns after it; nothing runs afterwards. */
static void free_during_a_callback(const char *base) {
    char id[160];
    ctx x;
    start(&x, id, sizeof id, base, "fdc", true);
    x.sleep_in_callback_ms = 300;
    CHECK_OK(ironhub_client_on_message_received(x.c, on_message, &x));
    harness_request(NULL, 0, "c2d %s %s", id, "one");
    harness_request(NULL, 0, "c2d %s %s", id, "two");
    WAIT_FOR(atomic_load(&x.in_callback) == 1, 60000);
    CHECK_OK(ironhub_client_free(x.c));
    atomic_store(&x.freed, 1);
    CHECK(atomic_load(&x.in_callback) == 0);
    int seen = atomic_load(&x.messages);
    sleep_ms(500);
    CHECK(atomic_load(&x.messages) == seen && atomic_load(&x.after_free) == 0);
}

/* connection_retry off: sends pending at the drop are cancelled, not "connection dropped". */
static void drop_without_retry(const char *base) {
    char id[160];
    for (int attempt = 0; attempt < 5; attempt++) {
        ctx x;
        char suffix[16];
        snprintf(suffix, sizeof suffix, "drop%d", attempt);
        start(&x, id, sizeof id, base, suffix, false);
        CHECK_OK(ironhub_client_connect(x.c));
        ironhub_message *m = ironhub_message_new((const uint8_t *)"x", 1);
        for (int i = 0; i < DROPPED_SENDS; i++) CHECK_OK(ironhub_client_send_message_async(x.c, m, NULL, on_completion, &x));
        harness_request(NULL, 0, "disconnect %s", id);
        /* A blocking send after the drop: cancelled or refused, never CONNECTION_DROPPED. */
        ironhub_result late = ironhub_client_send_message(x.c, m);
        CHECK(late != IRONHUB_ERROR_CONNECTION_DROPPED);
        ironhub_message_free(m);
        WAIT_FOR(atomic_load(&x.completions) == DROPPED_SENDS, 60000);
        CHECK_OK(ironhub_client_free(x.c));
        printf("drop attempt %d: ok=%d cancelled=%d other=%d\n", attempt, atomic_load(&x.ok), atomic_load(&x.cancelled),
               atomic_load(&x.other));
        CHECK(atomic_load(&x.other) == 0);
        if (atomic_load(&x.cancelled) > 0) return;
    }
    fprintf(stderr, "no send was pending when the connection dropped, in 5 attempts\n");
    exit(1);
}

int main(void) {
    alarm(280);
    const char *base = test_env("IRONHUB_TEST_DEVICE_ID");
    free_from_callbacks(base);
    free_with_queued_completions(base);
    free_during_a_callback(base);
    drop_without_retry(base);
    printf("free paths ok\n");
    return 0;
}

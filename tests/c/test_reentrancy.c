/*
 * Re-entrancy (issue 8, invariant 2) through the C ABI: every client operation called from inside
 * every kind of callback (message, method, desired patch, connection state, send completion), on
 * several clients at once: set and clear handlers, blocking and async sends, twin get and patch,
 * method response, free (refused with IRONHUB_ERROR_IN_CALLBACK), disconnect and shutdown. Every
 * call must return; meanwhile another client keeps sending and its sends are counted, so a pinned
 * dispatcher or network thread shows up as a stalled canary. Also: free with send callbacks still
 * queued runs each exactly once before it returns. A hang fails through alarm() and the harness
 * timeout. Run plain and under ASan by tests/c_abi.rs.
 */
#include "common.h"

#include <pthread.h>
#include <stdatomic.h>

#define CLIENTS 4
#define QUEUED_SENDS 50

typedef struct {
    ironhub_client *c;
    char device_id[128];
    atomic_int reentered;     /* callbacks that ran the whole operation set */
    atomic_int failures;      /* operations inside callbacks that returned an unexpected code */
    atomic_int messages, methods, patches, states, completions;
    atomic_int disconnect_requests, disconnected_in_cb, shut_down_in_cb;
} ctx;

static ctx g_ctx[CLIENTS];
static pthread_mutex_t g_harness = PTHREAD_MUTEX_INITIALIZER; /* one request on the channel at a time */
static atomic_int g_canary_sent, g_canary_failed, g_stop;
static long g_canary_longest_gap_ms; /* written by the canary thread only, read after it joined */

static long now_ms(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return ts.tv_sec * 1000L + ts.tv_nsec / 1000000L;
}

static void on_message(void *user_data, const ironhub_message *m);
static void on_state(void *user_data, bool connected, ironhub_connection_reason reason);

static void expect(ctx *x, ironhub_result got, ironhub_result want, const char *what) {
    if (got != want) {
        char detail[256];
        ironhub_last_error_message(detail, sizeof detail);
        fprintf(stderr, "[%s] %s returned %s, expected %s (%s)\n", x->device_id, what, ironhub_result_str(got),
                ironhub_result_str(want), detail);
        atomic_fetch_add(&x->failures, 1);
    }
}

static void on_completion(void *user_data, ironhub_result r) {
    ctx *x = user_data;
    (void)r; /* OK, or cancelled when the client went down first: both are outcomes */
    atomic_fetch_add(&x->completions, 1);
}

static void on_other_message(void *user_data, const ironhub_message *m) {
    (void)user_data;
    (void)m;
}

/* The operation set, from inside a callback of x's client. */
static void reenter(ctx *x) {
    ironhub_client *c = x->c;
    /* Handler setters from inside a handler: replace, clear, restore (issue 8's first hang). */
    expect(x, ironhub_client_on_message_received(c, on_other_message, x), IRONHUB_OK, "on_message_received(other)");
    expect(x, ironhub_client_on_message_received(c, on_message, x), IRONHUB_OK, "on_message_received(back)");
    expect(x, ironhub_client_on_connection_state_change(c, NULL, NULL), IRONHUB_OK, "on_connection_state_change(NULL)");
    expect(x, ironhub_client_on_connection_state_change(c, on_state, x), IRONHUB_OK, "on_connection_state_change");
    /* Sends, blocking and async. */
    ironhub_message *m = ironhub_message_new((const uint8_t *)"from-callback", 13);
    CHECK(m != NULL);
    expect(x, ironhub_client_send_message(c, m), IRONHUB_OK, "send_message");
    expect(x, ironhub_client_send_message_async(c, m, NULL, on_completion, x), IRONHUB_OK, "send_message_async");
    ironhub_message_free(m);
    /* Twin. */
    char *twin = NULL;
    expect(x, ironhub_client_get_twin(c, &twin), IRONHUB_OK, "get_twin");
    ironhub_string_free(twin);
    expect(x, ironhub_client_patch_twin_reported_properties(c, "{\"reentered\":true}"), IRONHUB_OK, "patch_twin");
    /* Free from a callback is refused, and the client still works afterwards. */
    expect(x, ironhub_client_free(c), IRONHUB_ERROR_IN_CALLBACK, "free from a callback");
    CHECK(ironhub_last_error_message(NULL, 0) > 0);
    atomic_fetch_add(&x->reentered, 1);
}

static void on_message(void *user_data, const ironhub_message *m) {
    ctx *x = user_data;
    size_t len = 0;
    const uint8_t *data = ironhub_message_data(m, &len);
    if (len == 10 && memcmp(data, "disconnect", 10) == 0) {
        /* C2D is at-least-once: this message is acknowledged when the callback returns, after the
         * disconnect it asks for, so the hub delivers it again on the next connection. Act once. */
        if (atomic_fetch_add(&x->disconnect_requests, 1) == 0) {
            expect(x, ironhub_client_disconnect(x->c), IRONHUB_OK, "disconnect from a callback");
            atomic_fetch_add(&x->disconnected_in_cb, 1);
        }
    } else if (len == 8 && memcmp(data, "shutdown", 8) == 0) {
        expect(x, ironhub_client_shutdown(x->c), IRONHUB_OK, "shutdown from a callback");
        atomic_fetch_add(&x->shut_down_in_cb, 1);
    } else {
        reenter(x);
    }
    atomic_fetch_add(&x->messages, 1);
}

static void on_method(void *user_data, const char *request_id, const char *method_name, const char *payload_json) {
    ctx *x = user_data;
    (void)method_name;
    (void)payload_json;
    reenter(x);
    expect(x, ironhub_client_send_method_response(x->c, request_id, 200, "{\"ok\":true}"), IRONHUB_OK,
           "send_method_response");
    atomic_fetch_add(&x->methods, 1);
}

static void on_patch(void *user_data, const char *patch_json) {
    ctx *x = user_data;
    (void)patch_json;
    reenter(x);
    atomic_fetch_add(&x->patches, 1);
}

static void on_state(void *user_data, bool connected, ironhub_connection_reason reason) {
    ctx *x = user_data;
    (void)reason;
    /* Only once per client, on the first connect: the set itself reconnects nothing. */
    if (connected && atomic_fetch_add(&x->states, 1) == 0) {
        reenter(x);
    }
}

static void *canary(void *arg) {
    ironhub_client *c = arg;
    ironhub_message *m = ironhub_message_new((const uint8_t *)"canary", 6);
    long last = now_ms();
    while (!atomic_load(&g_stop)) {
        if (ironhub_client_send_message(c, m) == IRONHUB_OK) {
            atomic_fetch_add(&g_canary_sent, 1);
            long t = now_ms();
            if (t - last > g_canary_longest_gap_ms) g_canary_longest_gap_ms = t - last;
            last = t;
        } else {
            atomic_fetch_add(&g_canary_failed, 1);
        }
        sleep_ms(20);
    }
    ironhub_message_free(m);
    return NULL;
}

static void request(char *reply, size_t len, const char *fmt, const char *a, const char *b) {
    pthread_mutex_lock(&g_harness);
    harness_request(reply, len, fmt, a, b);
    pthread_mutex_unlock(&g_harness);
}

/* Drives one client through every callback kind (one thread per client, so they overlap). */
static void *drive(void *arg) {
    ctx *x = arg;
    char reply[512];
    request(NULL, 0, "c2d %s %s", x->device_id, "hello");
    request(NULL, 0, "desired %s %s", x->device_id, "{\"round\":1}");
    request(reply, sizeof reply, "invoke %s - reenter %s", x->device_id, "{}");
    CHECK(strncmp(reply, "200 ", 4) == 0);
    WAIT_FOR(atomic_load(&x->messages) >= 1 && atomic_load(&x->patches) >= 1, 60000);
    request(NULL, 0, "c2d %s %s", x->device_id, "disconnect");
    WAIT_FOR(atomic_load(&x->disconnected_in_cb) == 1, 60000);
    /* The client reconnects on the next operation (auto_connect) and gets the queued C2D. */
    CHECK_OK(ironhub_client_connect(x->c));
    request(NULL, 0, "c2d %s %s", x->device_id, "shutdown");
    WAIT_FOR(atomic_load(&x->shut_down_in_cb) == 1, 60000);
    return NULL;
}

static void free_with_queued_completions(const char *cs) {
    ctx q;
    memset(&q, 0, sizeof q);
    snprintf(q.device_id, sizeof q.device_id, "queued");
    ironhub_options *o = emulator_options();
    CHECK_OK(ironhub_client_create_from_connection_string(cs, o, &q.c));
    ironhub_options_free(o);
    CHECK_OK(ironhub_client_connect(q.c));
    ironhub_message *m = ironhub_message_new((const uint8_t *)"q", 1);
    for (int i = 0; i < QUEUED_SENDS; i++) {
        CHECK_OK(ironhub_client_send_message_async(q.c, m, NULL, on_completion, &q));
    }
    ironhub_message_free(m);
    CHECK_OK(ironhub_client_free(q.c)); /* returns after every completion ran, exactly once */
    CHECK(atomic_load(&q.completions) == QUEUED_SENDS);
}

int main(void) {
    alarm(240);
    const char *base = test_env("IRONHUB_TEST_DEVICE_ID");
    char cs[1024];

    /* The canary: another client sending all along. */
    ironhub_options *o = emulator_options();
    ironhub_client *canary_client = NULL;
    CHECK_OK(ironhub_client_create_from_connection_string(test_env("IRONHUB_TEST_DEVICE_CS"), o, &canary_client));
    CHECK_OK(ironhub_client_connect(canary_client));

    for (int i = 0; i < CLIENTS; i++) {
        ctx *x = &g_ctx[i];
        snprintf(x->device_id, sizeof x->device_id, "%s-re%d", base, i);
        harness_request(cs, sizeof cs, "device %s", x->device_id);
        CHECK_OK(ironhub_client_create_from_connection_string(cs, o, &x->c));
        CHECK_OK(ironhub_client_on_connection_state_change(x->c, on_state, x));
        CHECK_OK(ironhub_client_on_message_received(x->c, on_message, x));
        CHECK_OK(ironhub_client_on_method_request_received(x->c, on_method, x));
        CHECK_OK(ironhub_client_on_twin_desired_properties_patch_received(x->c, on_patch, x));
    }
    ironhub_options_free(o);

    pthread_t canary_thread, drivers[CLIENTS];
    CHECK(pthread_create(&canary_thread, NULL, canary, canary_client) == 0);
    for (int i = 0; i < CLIENTS; i++) CHECK(pthread_create(&drivers[i], NULL, drive, &g_ctx[i]) == 0);
    for (int i = 0; i < CLIENTS; i++) CHECK(pthread_join(drivers[i], NULL) == 0);
    int canary_during = atomic_load(&g_canary_sent);
    atomic_store(&g_stop, 1);
    CHECK(pthread_join(canary_thread, NULL) == 0);

    int total_failures = 0;
    for (int i = 0; i < CLIENTS; i++) {
        ctx *x = &g_ctx[i];
        printf("%s: reentered=%d messages=%d methods=%d patches=%d states=%d completions=%d failures=%d\n",
               x->device_id, atomic_load(&x->reentered), atomic_load(&x->messages), atomic_load(&x->methods),
               atomic_load(&x->patches), atomic_load(&x->states), atomic_load(&x->completions),
               atomic_load(&x->failures));
        /* message + method + patch + first connect */
        CHECK(atomic_load(&x->reentered) >= 4);
        total_failures += atomic_load(&x->failures);
        CHECK_OK(ironhub_client_free(x->c));
        CHECK(atomic_load(&x->completions) == atomic_load(&x->reentered));
    }
    printf("canary sent %d (failed %d, longest gap %ld ms) while callbacks re-entered\n", canary_during,
           atomic_load(&g_canary_failed), g_canary_longest_gap_ms);
    CHECK(total_failures == 0);
    /* Each canary send is one round trip; a pinned worker would stall it for operation_timeout. */
    CHECK(canary_during >= 1 && g_canary_longest_gap_ms < 2000 && atomic_load(&g_canary_failed) == 0);

    snprintf(g_ctx[0].device_id, sizeof g_ctx[0].device_id, "%s-queued", base);
    harness_request(cs, sizeof cs, "device %s", g_ctx[0].device_id);
    free_with_queued_completions(cs);
    CHECK_OK(ironhub_client_free(canary_client));
    CHECK_OK(ironhub_client_free(NULL));
    printf("reentrancy ok\n");
    return 0;
}

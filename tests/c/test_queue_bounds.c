/*
 * The telemetry queue bounds from C (ironhub_options_set_max_queued_messages / _bytes, issue 9):
 * with the bound raised above a pipelined burst of async sends, every send completes OK and the
 * hub records each message exactly once; with the link held (the harness's fault proxy stalls it,
 * so no PUBACK comes and nothing drains) exactly the bound is accepted and the next send completes
 * at once with IRONHUB_ERROR_CLIENT (the code of the core's QueueFull); released, every accepted
 * message reaches the hub once and the refused one never; 0 is refused by the setter itself.
 */
#include "common.h"

#include <stdatomic.h>

#define BURST 3000
#define BOUND 100

/* One slot per send: when it was queued and how its completion went. */
struct slot {
    struct timespec sent;
    atomic_int result; /* -1 until the completion ran */
    atomic_long latency_us;
};

static struct slot g_slots[BURST];
static atomic_int g_done;

static long elapsed_us(const struct timespec *from) {
    struct timespec now;
    clock_gettime(CLOCK_MONOTONIC, &now);
    return (now.tv_sec - from->tv_sec) * 1000000L + (now.tv_nsec - from->tv_nsec) / 1000L;
}

static void on_sent(void *user_data, ironhub_result result) {
    struct slot *s = user_data;
    atomic_store(&s->latency_us, elapsed_us(&s->sent));
    atomic_store(&s->result, (int)result);
    atomic_fetch_add(&g_done, 1);
}

/* A connected client with the given message bound, through the MQTT port named by `port_env`. */
static ironhub_client *connected(uint32_t max_messages, const char *port_env) {
    ironhub_options *o = emulator_options();
    CHECK_OK(ironhub_options_set_mqtt_port(o, (uint16_t)atoi(test_env(port_env))));
    CHECK_OK(ironhub_options_set_ensure_desired_properties(o, false));
    CHECK_OK(ironhub_options_set_max_queued_messages(o, max_messages));
    CHECK_OK(ironhub_options_set_max_queued_bytes(o, 64u * 1024u * 1024u));
    ironhub_client *c = NULL;
    CHECK_OK(ironhub_client_create_from_connection_string(test_env("IRONHUB_TEST_DEVICE_CS"), o, &c));
    ironhub_options_free(o);
    CHECK_OK(ironhub_client_connect(c));
    return c;
}

/* Queues async sends tagged `tag` into slots [0, n). */
static void queue_sends(ironhub_client *c, int n, const char *tag) {
    atomic_store(&g_done, 0);
    for (int i = 0; i < n; i++) {
        atomic_store(&g_slots[i].result, -1);
        atomic_store(&g_slots[i].latency_us, 0);
    }
    for (int i = 0; i < n; i++) {
        char body[32];
        int len = snprintf(body, sizeof body, "%s-%d", tag, i);
        ironhub_message *m = ironhub_message_new((const uint8_t *)body, (size_t)len);
        CHECK(m != NULL);
        clock_gettime(CLOCK_MONOTONIC, &g_slots[i].sent);
        CHECK_OK(ironhub_client_send_message_async(c, m, NULL, on_sent, &g_slots[i]));
        ironhub_message_free(m);
    }
}

static int hub_count(const char *verb, const char *device_id) {
    char reply[64];
    harness_request(reply, sizeof reply, "%s %s", verb, device_id);
    return atoi(reply);
}

int main(void) {
    alarm(240);
    const char *device_id = test_env("IRONHUB_TEST_DEVICE_ID");

    /* 0 is refused by the setter, naming the option; NULL options are a NULL parameter. */
    ironhub_options *o = ironhub_options_new();
    CHECK(o != NULL);
    char detail[256];
    CHECK_RESULT(ironhub_options_set_max_queued_messages(o, 0), IRONHUB_ERROR_INVALID_ARGUMENT);
    ironhub_last_error_message(detail, sizeof detail);
    CHECK(strstr(detail, "max_queued_messages") != NULL);
    CHECK_RESULT(ironhub_options_set_max_queued_bytes(o, 0), IRONHUB_ERROR_INVALID_ARGUMENT);
    ironhub_last_error_message(detail, sizeof detail);
    CHECK(strstr(detail, "max_queued_bytes") != NULL);
    CHECK_RESULT(ironhub_options_set_max_queued_messages(NULL, 10), IRONHUB_ERROR_NULL_PARAMETER);
    CHECK_RESULT(ironhub_options_set_max_queued_bytes(NULL, 10), IRONHUB_ERROR_NULL_PARAMETER);
    CHECK_OK(ironhub_options_set_max_queued_messages(o, UINT32_MAX));
    CHECK_OK(ironhub_options_set_max_queued_bytes(o, UINT64_MAX));
    ironhub_options_free(o);

    /* Bound raised above the burst (the default 1000 is below it): every send succeeds, once. */
    ironhub_client *c = connected(5000, "IRONHUB_TEST_MQTT_PORT");
    queue_sends(c, BURST, "raised");
    WAIT_FOR(atomic_load(&g_done) == BURST, 60000);
    for (int i = 0; i < BURST; i++) CHECK(atomic_load(&g_slots[i].result) == IRONHUB_OK);
    ironhub_client_free(c);
    CHECK(hub_count("events", device_id) == BURST);
    CHECK(hub_count("distinct_events", device_id) == BURST);

    /* The link held: exactly BOUND sends are accepted and none completes; send BOUND + 1 completes
     * at once with IRONHUB_ERROR_CLIENT (no waiting for room: operation_timeout is 20 s). */
    c = connected(BOUND, "IRONHUB_TEST_HELD_MQTT_PORT");
    harness_request(NULL, 0, "stall %s", device_id);
    queue_sends(c, BOUND + 1, "held");
    WAIT_FOR(atomic_load(&g_slots[BOUND].result) != -1, 5000);
    CHECK_RESULT((ironhub_result)atomic_load(&g_slots[BOUND].result), IRONHUB_ERROR_CLIENT);
    long refusal_us = atomic_load(&g_slots[BOUND].latency_us);
    CHECK(refusal_us < 2000000L);
    CHECK(atomic_load(&g_done) == 1);
    for (int i = 0; i < BOUND; i++) CHECK(atomic_load(&g_slots[i].result) == -1);

    /* Released: every accepted send completes OK and reaches the hub once; the refused one never. */
    harness_request(NULL, 0, "heal %s", device_id);
    WAIT_FOR(atomic_load(&g_done) == BOUND + 1, 60000);
    for (int i = 0; i < BOUND; i++) CHECK(atomic_load(&g_slots[i].result) == IRONHUB_OK);
    ironhub_client_free(c);
    CHECK(hub_count("events", device_id) == BURST + BOUND);
    CHECK(hub_count("distinct_events", device_id) == BURST + BOUND);

    printf("test_queue_bounds: ok (held at the bound of %d: the next send refused in %ld us)\n", BOUND, refusal_us);
    return 0;
}

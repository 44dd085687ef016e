/*
 * A device client against the emulator, through every device-side function of the C ABI:
 * the connection-string, SAS-token, symmetric-key and X.509 factories, connect/disconnect/shutdown,
 * blocking and async telemetry, twin get/patch, desired-patch, method and C2D handlers (and
 * their clearing), method responses from the callback and later from another thread,
 * update_sastoken after on_new_sastoken_required, and freeing a client with async sends in
 * flight (every completion callback runs exactly once).
 */
#include "common.h"

#include <pthread.h>
#include <stdatomic.h>

/* ---- connection state ---- */
static atomic_int g_connects, g_disconnects;
static _Atomic ironhub_connection_reason g_last_reason;
static void on_state(void *user_data, bool connected, ironhub_connection_reason reason) {
    CHECK(user_data == &g_connects);
    atomic_fetch_add(connected ? &g_connects : &g_disconnects, 1);
    atomic_store(&g_last_reason, reason);
}

/* ---- async sends: each slot counts its own completions ---- */
#define ASYNC_SENDS 16
typedef struct {
    atomic_int calls;
    _Atomic ironhub_result result;
} send_slot;
static void on_sent(void *user_data, ironhub_result result) {
    send_slot *slot = user_data;
    atomic_store(&slot->result, result);
    atomic_fetch_add(&slot->calls, 1);
}

/* ---- desired patches ---- */
static atomic_int g_patches;
static char g_patch[1024];
static void on_patch(void *user_data, const char *patch_json) {
    (void)user_data;
    snprintf(g_patch, sizeof g_patch, "%s", patch_json); /* borrowed: copy during the call */
    atomic_fetch_add(&g_patches, 1);
}

/* ---- methods ---- */
typedef struct {
    ironhub_client *client;
    char request_id[128];
} deferred_response;
static atomic_int g_methods, g_answered;
static char g_method_name[64], g_method_payload[256];
static void *respond_later(void *arg) {
    deferred_response *d = arg;
    sleep_ms(200); /* well after the callback returned */
    CHECK_OK(ironhub_client_send_method_response(d->client, d->request_id, 201, "{\"later\":true}"));
    atomic_fetch_add(&g_answered, 1);
    free(d);
    return NULL;
}
static void on_method(void *user_data, const char *request_id, const char *method_name, const char *payload_json) {
    ironhub_client *client = user_data;
    snprintf(g_method_name, sizeof g_method_name, "%s", method_name);
    snprintf(g_method_payload, sizeof g_method_payload, "%s", payload_json);
    atomic_fetch_add(&g_methods, 1);
    if (strcmp(method_name, "now") == 0) {
        CHECK_OK(ironhub_client_send_method_response(client, request_id, 200, "{\"ok\":true}"));
        atomic_fetch_add(&g_answered, 1);
    } else {
        deferred_response *d = malloc(sizeof *d);
        CHECK(d != NULL);
        d->client = client;
        snprintf(d->request_id, sizeof d->request_id, "%s", request_id);
        pthread_t t;
        CHECK(pthread_create(&t, NULL, respond_later, d) == 0);
        CHECK(pthread_detach(t) == 0);
    }
}

/* ---- C2D ---- */
static atomic_int g_c2d;
static char g_c2d_data[64], g_c2d_prop[64];
static void on_message(void *user_data, const ironhub_message *m) {
    (void)user_data;
    size_t len = 0;
    const uint8_t *data = ironhub_message_data(m, &len);
    CHECK(data != NULL && len < sizeof g_c2d_data);
    memcpy(g_c2d_data, data, len);
    g_c2d_data[len] = '\0';
    const char *v = ironhub_message_property(m, "k");
    snprintf(g_c2d_prop, sizeof g_c2d_prop, "%s", v ? v : "(none)");
    CHECK(ironhub_message_input_name(m) == NULL); /* C2D, not a module input */
    atomic_fetch_add(&g_c2d, 1);
}

static atomic_int g_sastoken_needed;
static void on_sastoken(void *user_data) {
    (void)user_data;
    atomic_fetch_add(&g_sastoken_needed, 1);
}

static int hub_event_count(const char *device_id) {
    char reply[64];
    harness_request(reply, sizeof reply, "events %s", device_id);
    return atoi(reply);
}

static void test_connection_string_client(void) {
    const char *device_id = test_env("IRONHUB_TEST_DEVICE_ID");
    ironhub_options *o = emulator_options();
    ironhub_client *c = NULL;
    CHECK_OK(ironhub_client_create_from_connection_string(test_env("IRONHUB_TEST_DEVICE_CS"), o, &c));
    ironhub_options_free(o);

    CHECK_OK(ironhub_client_on_connection_state_change(c, on_state, &g_connects));
    CHECK_OK(ironhub_client_connect(c));
    CHECK(ironhub_client_connected(c));
    WAIT_FOR(atomic_load(&g_connects) == 1, 30000);
    CHECK(atomic_load(&g_last_reason) == IRONHUB_REASON_OK);

    /* blocking send, with every property */
    int before = hub_event_count(device_id);
    ironhub_message *m = ironhub_message_new((const uint8_t *)"{\"t\":1}", 7);
    CHECK_OK(ironhub_message_set_message_id(m, "m-1"));
    CHECK_OK(ironhub_message_set_content_type(m, "application/json"));
    CHECK_OK(ironhub_message_set_content_encoding(m, "utf-8"));
    CHECK_OK(ironhub_message_set_property(m, "sensor", "a b&c"));
    CHECK_OK(ironhub_client_send_message(c, m));
    ironhub_message_free(m); /* send copied it */
    CHECK(hub_event_count(device_id) == before + 1);

    /* too large */
    static uint8_t big[262145];
    ironhub_message *huge = ironhub_message_new(big, sizeof big);
    CHECK_RESULT(ironhub_client_send_message(c, huge), IRONHUB_ERROR_MESSAGE_TOO_LARGE);

    /* async sends: the message may be freed at once; each callback runs exactly once */
    static send_slot slots[ASYNC_SENDS];
    for (int i = 0; i < ASYNC_SENDS; i++) {
        ironhub_message *am = ironhub_message_new((const uint8_t *)"async", 5);
        CHECK_OK(ironhub_client_send_message_async(c, am, NULL, on_sent, &slots[i]));
        ironhub_message_free(am);
    }
    /* an async send that can never succeed still completes through its callback */
    static send_slot huge_slot;
    CHECK_OK(ironhub_client_send_message_async(c, huge, NULL, on_sent, &huge_slot));
    ironhub_message_free(huge);
    WAIT_FOR(atomic_load(&huge_slot.calls) == 1, 30000);
    CHECK(atomic_load(&huge_slot.result) == IRONHUB_ERROR_MESSAGE_TOO_LARGE);
    for (int i = 0; i < ASYNC_SENDS; i++) {
        WAIT_FOR(atomic_load(&slots[i].calls) == 1, 30000);
        CHECK(atomic_load(&slots[i].result) == IRONHUB_OK);
    }
    sleep_ms(100);
    for (int i = 0; i < ASYNC_SENDS; i++) CHECK(atomic_load(&slots[i].calls) == 1);
    CHECK(hub_event_count(device_id) == before + 1 + ASYNC_SENDS);

    /* twin */
    char *twin = NULL;
    CHECK_OK(ironhub_client_patch_twin_reported_properties(c, "{\"firmware\":\"1.2.3\",\"n\":7}"));
    CHECK_OK(ironhub_client_get_twin(c, &twin));
    CHECK(twin != NULL && strstr(twin, "\"desired\"") && strstr(twin, "\"reported\""));
    CHECK(strstr(twin, "\"firmware\":\"1.2.3\"") != NULL);
    ironhub_string_free(twin);

    /* desired patch handler */
    CHECK_OK(ironhub_client_on_twin_desired_properties_patch_received(c, on_patch, NULL));
    harness_request(NULL, 0, "desired %s {\"interval\":42}", device_id);
    WAIT_FOR(atomic_load(&g_patches) >= 1, 30000);
    CHECK(strstr(g_patch, "\"interval\":42") != NULL && strstr(g_patch, "$version") != NULL);

    /* methods: answered in the callback, then later from another thread */
    char reply[512];
    CHECK_OK(ironhub_client_on_method_request_received(c, on_method, c));
    harness_request(reply, sizeof reply, "invoke %s - now {\"x\":1}", device_id);
    CHECK(strncmp(reply, "200 ", 4) == 0 && strstr(reply, "\"ok\":true") != NULL);
    CHECK(strcmp(g_method_name, "now") == 0 && strstr(g_method_payload, "\"x\":1") != NULL);
    harness_request(reply, sizeof reply, "invoke %s - later null", device_id);
    CHECK(strncmp(reply, "201 ", 4) == 0 && strstr(reply, "\"later\":true") != NULL);
    CHECK(atomic_load(&g_methods) == 2);
    /* The invoker has its answer before the responder sees its PUBACK: wait for both sends to
     * complete, so the disconnect below cannot cancel one of them. */
    WAIT_FOR(atomic_load(&g_answered) == 2, 30000);

    /* C2D */
    CHECK_OK(ironhub_client_on_message_received(c, on_message, NULL));
    harness_request(NULL, 0, "c2d %s hello", device_id);
    WAIT_FOR(atomic_load(&g_c2d) == 1, 30000);
    CHECK(strcmp(g_c2d_data, "hello") == 0 && strcmp(g_c2d_prop, "v") == 0);

    /* cleared handlers never run again */
    CHECK_OK(ironhub_client_on_twin_desired_properties_patch_received(c, NULL, NULL));
    CHECK_OK(ironhub_client_on_message_received(c, NULL, NULL));
    int patches = atomic_load(&g_patches);
    harness_request(NULL, 0, "desired %s {\"interval\":43}", device_id);
    sleep_ms(500);
    CHECK(atomic_load(&g_patches) == patches);

    CHECK_OK(ironhub_client_on_new_sastoken_required(c, on_sastoken, NULL));
    CHECK_OK(ironhub_client_on_new_sastoken_required(c, NULL, NULL));
    CHECK_OK(ironhub_client_on_background_exception(c, NULL, NULL));

    /* disconnect, reconnect, shutdown */
    CHECK_OK(ironhub_client_disconnect(c));
    CHECK(!ironhub_client_connected(c));
    WAIT_FOR(atomic_load(&g_disconnects) >= 1, 30000);
    CHECK_OK(ironhub_client_connect(c));
    CHECK(ironhub_client_connected(c));
    CHECK_OK(ironhub_client_shutdown(c));
    CHECK(!ironhub_client_connected(c));
    CHECK_RESULT(ironhub_client_send_message(c, m = ironhub_message_new(NULL, 0)), IRONHUB_ERROR_SHUT_DOWN);
    ironhub_message_free(m);
    ironhub_client_free(c);
}

/* Symmetric-key factory, over MQTT-over-WebSockets on the HTTPS port. */
static void test_symmetric_key_client(void) {
    ironhub_options *o = emulator_options();
    CHECK_OK(ironhub_options_set_websockets(o, true));
    ironhub_client *c = NULL;
    CHECK_OK(ironhub_client_create_from_symmetric_key(test_env("IRONHUB_TEST_DEVICE_KEY"),
                                                      test_env("IRONHUB_TEST_HOSTNAME"),
                                                      test_env("IRONHUB_TEST_DEVICE_ID"), o, &c));
    ironhub_options_free(o);
    ironhub_message *m = ironhub_message_new((const uint8_t *)"sk", 2);
    CHECK_OK(ironhub_client_send_message(c, m)); /* auto_connect */
    CHECK(ironhub_client_connected(c));
    ironhub_message_free(m);
    ironhub_client_free(c); /* free without shutdown */
}

/* X.509 factory: a self-signed certificate registered by thumbprint (files made by the harness). */
static void test_x509_client(void) {
    ironhub_options *o = emulator_options();
    ironhub_client *c = NULL;
    CHECK_OK(ironhub_client_create_from_x509_certificate(test_env("IRONHUB_TEST_X509_CERT"), test_env("IRONHUB_TEST_X509_KEY"),
                                                         NULL, test_env("IRONHUB_TEST_HOSTNAME"),
                                                         test_env("IRONHUB_TEST_X509_DEVICE_ID"), NULL, o, &c));
    ironhub_options_free(o);
    CHECK_OK(ironhub_client_connect(c));
    ironhub_message *m = ironhub_message_new((const uint8_t *)"x509", 4);
    CHECK_OK(ironhub_client_send_message(c, m));
    ironhub_message_free(m);
    ironhub_client_free(c);
}

static void test_sastoken_client(void) {
    const char *device_id = test_env("IRONHUB_TEST_DEVICE_ID");
    char token[1024];
    /* Expires in 125 s: inside the renewal window (120 s before expiry) almost at once. */
    harness_request(token, sizeof token, "token %s 125", device_id);
    ironhub_options *o = emulator_options();
    ironhub_client *c = NULL;
    CHECK_OK(ironhub_client_create_from_sastoken(token, o, &c));
    ironhub_options_free(o);
    CHECK_OK(ironhub_client_on_new_sastoken_required(c, on_sastoken, NULL));
    CHECK_OK(ironhub_client_connect(c));
    WAIT_FOR(atomic_load(&g_sastoken_needed) >= 1, 30000);

    harness_request(token, sizeof token, "token %s 3600", device_id);
    CHECK_OK(ironhub_client_update_sastoken(c, token));
    CHECK_RESULT(ironhub_client_update_sastoken(c, "SharedAccessSignature nonsense"), IRONHUB_ERROR_INVALID_ARGUMENT);
    ironhub_message *m = ironhub_message_new((const uint8_t *)"renewed", 7);
    CHECK_OK(ironhub_client_send_message(c, m));
    ironhub_message_free(m);
    CHECK_OK(ironhub_client_on_new_sastoken_required(c, NULL, NULL));
    CHECK_OK(ironhub_client_shutdown(c));
    ironhub_client_free(c);
}

/* Freeing a client with async sends still in flight: every callback runs exactly once, before
 * ironhub_client_free returns, with OK or OPERATION_CANCELLED. */
static void test_free_with_sends_in_flight(void) {
    ironhub_options *o = emulator_options();
    ironhub_client *c = NULL;
    CHECK_OK(ironhub_client_create_from_connection_string(test_env("IRONHUB_TEST_DEVICE_CS"), o, &c));
    ironhub_options_free(o);
    static send_slot slots[64];
    ironhub_message *m = ironhub_message_new((const uint8_t *)"inflight", 8);
    for (int i = 0; i < 64; i++) {
        CHECK_OK(ironhub_client_send_message_async(c, m, NULL, on_sent, &slots[i]));
    }
    ironhub_message_free(m);
    ironhub_client_free(c);
    for (int i = 0; i < 64; i++) {
        CHECK(atomic_load(&slots[i].calls) == 1);
        ironhub_result r = atomic_load(&slots[i].result);
        CHECK(r == IRONHUB_OK || r == IRONHUB_ERROR_OPERATION_CANCELLED);
    }
}

int main(void) {
    alarm(240);
    test_connection_string_client();
    test_symmetric_key_client();
    test_x509_client();
    test_sastoken_client();
    test_free_with_sends_in_flight();
    printf("test_device: ok\n");
    return 0;
}

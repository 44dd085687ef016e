/*
 * Callbacks registered from C fire on a dispatcher thread while other C threads call
 * send_message on the same client: no deadlock (alarm() turns a hang into a failure), no race
 * (run under ASan by the harness; counters are atomics). The callback itself calls blocking
 * client functions, which the contract allows.
 */
#include "common.h"

#include <pthread.h>
#include <stdatomic.h>

#define SENDERS 3
#define SENDS_PER_THREAD 40
#define PATCHES 5

static ironhub_client *g_client;
static pthread_t g_main_thread;
static atomic_int g_patches, g_on_main_thread, g_in_callback, g_overlap, g_reported;
static atomic_int g_sent;

static void on_patch(void *user_data, const char *patch_json) {
    (void)user_data;
    (void)patch_json;
    if (atomic_fetch_add(&g_in_callback, 1) != 0) atomic_fetch_add(&g_overlap, 1); /* one at a time */
    if (pthread_equal(pthread_self(), g_main_thread)) atomic_fetch_add(&g_on_main_thread, 1);
    /* Blocking calls from the dispatcher thread, concurrent with the senders. */
    if (ironhub_client_patch_twin_reported_properties(g_client, "{\"seen\":true}") == IRONHUB_OK) {
        atomic_fetch_add(&g_reported, 1);
    }
    ironhub_message *m = ironhub_message_new((const uint8_t *)"from-callback", 13);
    if (ironhub_client_send_message(g_client, m) == IRONHUB_OK) atomic_fetch_add(&g_sent, 1);
    ironhub_message_free(m);
    atomic_fetch_sub(&g_in_callback, 1);
    atomic_fetch_add(&g_patches, 1);
}

static void *sender(void *arg) {
    (void)arg;
    for (int i = 0; i < SENDS_PER_THREAD; i++) {
        ironhub_message *m = ironhub_message_new((const uint8_t *)"t", 1);
        CHECK_OK(ironhub_client_send_message(g_client, m));
        ironhub_message_free(m);
        atomic_fetch_add(&g_sent, 1);
    }
    return NULL;
}

int main(void) {
    alarm(240);
    g_main_thread = pthread_self();
    const char *device_id = test_env("IRONHUB_TEST_DEVICE_ID");
    ironhub_options *o = emulator_options();
    CHECK_OK(ironhub_options_set_ensure_desired_properties(o, false));
    CHECK_OK(ironhub_client_create_from_connection_string(test_env("IRONHUB_TEST_DEVICE_CS"), o, &g_client));
    ironhub_options_free(o);
    CHECK_OK(ironhub_client_on_twin_desired_properties_patch_received(g_client, on_patch, NULL));

    pthread_t threads[SENDERS];
    for (int i = 0; i < SENDERS; i++) CHECK(pthread_create(&threads[i], NULL, sender, NULL) == 0);
    for (int i = 0; i < PATCHES; i++) {
        harness_request(NULL, 0, "desired %s {\"round\":%d}", device_id, i);
    }
    for (int i = 0; i < SENDERS; i++) CHECK(pthread_join(threads[i], NULL) == 0);
    WAIT_FOR(atomic_load(&g_patches) == PATCHES, 40000);

    CHECK(atomic_load(&g_on_main_thread) == 0);
    CHECK(atomic_load(&g_overlap) == 0);
    CHECK(atomic_load(&g_reported) == PATCHES);
    CHECK(atomic_load(&g_sent) == SENDERS * SENDS_PER_THREAD + PATCHES);

    char reply[64];
    harness_request(reply, sizeof reply, "events %s", device_id);
    CHECK(atoi(reply) == SENDERS * SENDS_PER_THREAD + PATCHES);

    /* Clearing the handler from another thread while patches may still be in delivery. */
    CHECK_OK(ironhub_client_on_twin_desired_properties_patch_received(g_client, NULL, NULL));
    int seen = atomic_load(&g_patches);
    harness_request(NULL, 0, "desired %s {\"round\":99}", device_id);
    sleep_ms(300);
    CHECK(atomic_load(&g_patches) == seen);

    ironhub_client_free(g_client);
    printf("test_threads: ok\n");
    return 0;
}

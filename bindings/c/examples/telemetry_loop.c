/*
 * Firmware-style telemetry loop over the ironhub C API.
 *
 * - connects with a device connection string (IOTHUB_DEVICE_CONNECTION_STRING),
 * - reports its firmware version and the telemetry interval as reported properties,
 * - follows the desired property "interval" (seconds between readings),
 * - answers the direct method "setInterval" ({"seconds": N}) and refuses others with 404,
 * - sends TELEMETRY_COUNT readings (default 3) and exits.
 *
 * Optional: IRONHUB_CA_PEM (PEM text of a private root, e.g. the emulator's), IRONHUB_MQTT_PORT,
 * IRONHUB_HTTPS_PORT, TELEMETRY_INTERVAL_MS (default 1000; a real device would sleep seconds).
 *
 * Build: cc -std=c11 telemetry_loop.c $(pkg-config --cflags --libs ironhub) -o telemetry_loop
 */
#define _POSIX_C_SOURCE 200809L
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "ironhub.h"

static atomic_int interval_ms = 1000;

static void report_error(const char *what, ironhub_result r) {
    char detail[256];
    ironhub_last_error_message(detail, sizeof detail);
    fprintf(stderr, "%s: %s (%s)\n", what, ironhub_result_str(r), detail);
}

/* Very small reader for {"...":N} fields: firmware usually has no JSON library to spare. */
static int json_int_field(const char *json, const char *field, int fallback) {
    char key[64];
    snprintf(key, sizeof key, "\"%s\":", field);
    const char *at = strstr(json, key);
    return at ? atoi(at + strlen(key)) : fallback;
}

static void on_desired(void *client, const char *patch_json) {
    int seconds = json_int_field(patch_json, "interval", -1);
    if (seconds > 0) {
        atomic_store(&interval_ms, seconds * 1000);
        char reported[64];
        snprintf(reported, sizeof reported, "{\"interval\":%d}", seconds);
        /* Calling the client from its own callback is allowed (anything but _free). */
        ironhub_result r = ironhub_client_patch_twin_reported_properties(client, reported);
        if (r != IRONHUB_OK) report_error("report interval", r);
    }
}

static void on_method(void *client, const char *request_id, const char *method_name, const char *payload_json) {
    if (strcmp(method_name, "setInterval") == 0) {
        int seconds = json_int_field(payload_json, "seconds", 0);
        if (seconds > 0) {
            atomic_store(&interval_ms, seconds * 1000);
            ironhub_client_send_method_response(client, request_id, 200, "{\"accepted\":true}");
            return;
        }
        ironhub_client_send_method_response(client, request_id, 400, "{\"error\":\"seconds > 0 required\"}");
        return;
    }
    ironhub_client_send_method_response(client, request_id, 404, NULL);
}

static void sleep_ms(long ms) {
    struct timespec ts = {ms / 1000, (ms % 1000) * 1000000L};
    nanosleep(&ts, NULL);
}

int main(void) {
    const char *cs = getenv("IOTHUB_DEVICE_CONNECTION_STRING");
    if (!cs) {
        fprintf(stderr, "set IOTHUB_DEVICE_CONNECTION_STRING\n");
        return 2;
    }
    int count = getenv("TELEMETRY_COUNT") ? atoi(getenv("TELEMETRY_COUNT")) : 3;
    if (getenv("TELEMETRY_INTERVAL_MS")) atomic_store(&interval_ms, atoi(getenv("TELEMETRY_INTERVAL_MS")));

    ironhub_options *opts = ironhub_options_new();
    if (getenv("IRONHUB_CA_PEM")) ironhub_options_set_server_verification_cert(opts, getenv("IRONHUB_CA_PEM"));
    if (getenv("IRONHUB_MQTT_PORT")) ironhub_options_set_mqtt_port(opts, (uint16_t)atoi(getenv("IRONHUB_MQTT_PORT")));
    if (getenv("IRONHUB_HTTPS_PORT")) ironhub_options_set_https_port(opts, (uint16_t)atoi(getenv("IRONHUB_HTTPS_PORT")));
    ironhub_options_set_product_info(opts, "ironhub-example/telemetry_loop");

    ironhub_client *client = NULL;
    ironhub_result r = ironhub_client_create_from_connection_string(cs, opts, &client);
    ironhub_options_free(opts);
    if (r != IRONHUB_OK) {
        report_error("create client", r);
        return 1;
    }
    ironhub_client_on_twin_desired_properties_patch_received(client, on_desired, client);
    ironhub_client_on_method_request_received(client, on_method, client);
    r = ironhub_client_patch_twin_reported_properties(client, "{\"firmware\":\"1.0.0\"}");
    if (r != IRONHUB_OK) report_error("report firmware", r);

    int sent = 0;
    for (int i = 0; i < count; i++) {
        char body[64];
        snprintf(body, sizeof body, "{\"reading\":%d,\"temperature\":%.1f}", i, 20.0 + i * 0.5);
        ironhub_message *m = ironhub_message_new((const uint8_t *)body, strlen(body));
        ironhub_message_set_content_type(m, "application/json");
        ironhub_message_set_content_encoding(m, "utf-8");
        r = ironhub_client_send_message(client, m); /* blocks until the hub acknowledged it */
        ironhub_message_free(m);
        if (r == IRONHUB_OK) {
            sent++;
        } else {
            report_error("send", r); /* a firmware loop goes on; the client reconnects by itself */
        }
        sleep_ms(atomic_load(&interval_ms));
    }
    printf("sent %d messages\n", sent);
    ironhub_client_free(client);
    return sent == count ? 0 : 1;
}

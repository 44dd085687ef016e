/*
 * The azure-iot-sdk-c side of benches/run: the same measurements as ironhub_send.c (see
 * bench_common.h), through the SDK's LL API (IoTHubDeviceClient_LL_*) driven by a DoWork loop on
 * the calling thread, as firmware uses it. The hub's root is trusted with OPTION_TRUSTED_CERT.
 * The SDK is not in this repository: benches/run compiles this file against the tree named by
 * AZURE_IOT_SDK_C (a source checkout with a CMake build in its `cmake/` or `build/` folder).
 */
#include <stdbool.h>

#include "bench_common.h"
#include "c_logging/logger.h"
#include "iothub.h"
#include "azure_c_shared_utility/shared_util_options.h"
#include "iothub_client_options.h"
#include "iothub_device_client_ll.h"
#include "iothub_message.h"
#include "iothubtransportmqtt.h"

typedef struct {
    IOTHUB_DEVICE_CLIENT_LL_HANDLE h;
    bool connected;
} client_t;

static size_t done_ok, done_failed, in_flight;
static bool twin_done;

static void on_status(IOTHUB_CLIENT_CONNECTION_STATUS status, IOTHUB_CLIENT_CONNECTION_STATUS_REASON reason, void *ctx) {
    (void)reason;
    ((client_t *)ctx)->connected = status == IOTHUB_CLIENT_CONNECTION_AUTHENTICATED;
}

static void on_confirm(IOTHUB_CLIENT_CONFIRMATION_RESULT result, void *ctx) {
    (void)ctx;
    if (result == IOTHUB_CLIENT_CONFIRMATION_OK) done_ok++;
    else done_failed++;
    in_flight--;
}

static void on_twin(DEVICE_TWIN_UPDATE_STATE state, const unsigned char *payload, size_t size, void *ctx) {
    (void)state, (void)payload, (void)size, (void)ctx;
    twin_done = true;
}

static void create_client(client_t *c, const char *cs, const char *ca) {
    c->connected = false;
    c->h = IoTHubDeviceClient_LL_CreateFromConnectionString(cs, MQTT_Protocol);
    if (!c->h) {
        fprintf(stderr, "IoTHubDeviceClient_LL_CreateFromConnectionString failed\n");
        exit(1);
    }
    IoTHubDeviceClient_LL_SetOption(c->h, OPTION_TRUSTED_CERT, ca);
    IoTHubDeviceClient_LL_SetConnectionStatusCallback(c->h, on_status, c);
}

/* The LL client connects on its first DoWork calls; this pumps until CONNACK (bounded at 30 s). */
static void pump_until_connected(client_t *c) {
    double deadline = now_us() + 30e6;
    while (!c->connected) {
        IoTHubDeviceClient_LL_DoWork(c->h);
        if (now_us() > deadline) {
            fprintf(stderr, "no CONNACK within 30 s\n");
            exit(1);
        }
    }
}

static void pump_until_in_flight_at_most(client_t *c, size_t limit) {
    double deadline = now_us() + 120e6;
    while (in_flight > limit) {
        IoTHubDeviceClient_LL_DoWork(c->h);
        if (now_us() > deadline) {
            fprintf(stderr, "sends not confirmed within 120 s\n");
            exit(1);
        }
    }
}

static void send_one(client_t *c, const void *p, size_t size) {
    IOTHUB_MESSAGE_HANDLE m = IoTHubMessage_CreateFromByteArray(p, size);
    in_flight++;
    if (IoTHubDeviceClient_LL_SendEventAsync(c->h, m, on_confirm, NULL) != IOTHUB_CLIENT_OK) {
        in_flight--;
        done_failed++;
    }
    IoTHubMessage_Destroy(m); /* the SDK keeps its own copy */
}

static void pipelined(client_t *c, const char *name, size_t n, size_t window, size_t size) {
    void *p = payload_of(size);
    done_ok = done_failed = in_flight = 0;
    usage_t u0 = usage_now();
    double t0 = now_us();
    for (size_t i = 0; i < n; i++) {
        if (in_flight >= window) pump_until_in_flight_at_most(c, window - 1);
        send_one(c, p, size);
    }
    pump_until_in_flight_at_most(c, 0);
    emit_pipelined(name, n, t0, u0, done_failed);
    free(p);
}

typedef struct {
    client_t *c;
    void *payload;
    size_t size;
} sync_ctx;

/* One send, pumped until its PUBACK. */
static int sync_send(void *ctx) {
    sync_ctx *s = ctx;
    send_one(s->c, s->payload, s->size);
    pump_until_in_flight_at_most(s->c, 0);
    return done_failed != 0;
}

/* One twin GET, pumped until the answer (bounded at 30 s). */
static int get_twin(void *ctx) {
    client_t *c = ctx;
    twin_done = false;
    double deadline = now_us() + 30e6;
    if (IoTHubDeviceClient_LL_GetTwinAsync(c->h, on_twin, NULL) != IOTHUB_CLIENT_OK) return 1;
    while (!twin_done) {
        IoTHubDeviceClient_LL_DoWork(c->h);
        if (now_us() > deadline) return 1;
    }
    return 0;
}

int main(int argc, char **argv) {
    char pname[64];
    size_t pn, pw, psize;
    const char *mode;
    char *ca = bench_start(argc, argv, &mode);
    logger_init(); /* c-logging aborts on the SDK's first log line without it */
    IoTHub_Init();

    if (strcmp(mode, "clients") == 0 && argc == 3) {
        char **css;
        size_t n = split_lines(read_file(argv[2]), &css);
        raise_nofile(n * 2 + 1024);
        client_t *cs = calloc(n, sizeof *cs);
        long rss0 = rss_kib(), threads0 = thread_count();
        double t0 = now_us();
        for (size_t i = 0; i < n; i++) {
            create_client(&cs[i], css[i], ca);
            pump_until_connected(&cs[i]);
        }
        double secs = (now_us() - t0) / 1e6;
        /* Keep every client serviced while settling, as a firmware loop would. */
        for (double end = now_us() + 1e6; now_us() < end;) {
            for (size_t i = 0; i < n; i++) IoTHubDeviceClient_LL_DoWork(cs[i].h);
        }
        emit_clients(n, secs, rss0, threads0);
        for (size_t i = 0; i < n; i++) IoTHubDeviceClient_LL_Destroy(cs[i].h);
        IoTHub_Deinit();
        return 0;
    }

    const char *cs_text = require_env("BENCH_CS");
    client_t c;
    double t0 = now_us();
    create_client(&c, cs_text, ca);
    pump_until_connected(&c);
    double connect_ms = (now_us() - t0) / 1e3;

    if (strcmp(mode, "connect") == 0) {
        emit("connect", connect_ms, "ms");
    } else if (strcmp(mode, "sync") == 0 && argc == 4) {
        size_t n = strtoul(argv[2], NULL, 10);
        sync_ctx ctx = {&c, NULL, strtoul(argv[3], NULL, 10)};
        ctx.payload = payload_of(ctx.size);
        char name[64];
        snprintf(name, sizeof name, "sync_send_%zuB", ctx.size);
        done_ok = done_failed = in_flight = 0;
        if (timed_calls(name, n, 1, sync_send, &ctx) != 0) {
            fprintf(stderr, "a send failed\n");
            return 1;
        }
        free(ctx.payload);
    } else if (pipelined_mode(mode, argc, argv, pname, sizeof pname, &pn, &pw, &psize)) {
        pipelined(&c, pname, pn, pw, psize);
    } else if (strcmp(mode, "twin") == 0 && argc == 3) {
        if (timed_calls("twin_get", strtoul(argv[2], NULL, 10), 0, get_twin, &c) != 0) {
            fprintf(stderr, "twin GET failed or timed out\n");
            return 1;
        }
    } else {
        fprintf(stderr, "unknown mode or arguments: %s\n", mode);
        return 2;
    }
    IoTHubDeviceClient_LL_Destroy(c.h);
    IoTHub_Deinit();
    free(ca);
    return 0;
}

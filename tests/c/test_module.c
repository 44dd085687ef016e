/*
 * Module clients against the emulator: send_message_to_output and async sends with an output
 * name, an Edge route from an output back to the module's own input (input_name on received
 * messages), the Edge-environment factory (development fallback variables set by the harness)
 * and invoke_method from that module to a device that answers from its method callback.
 */
#include "common.h"

#include <stdatomic.h>

static atomic_int g_inputs, g_sent, g_methods, g_answered;
static char g_input_name[64], g_input_data[64];

static void on_input(void *user_data, const ironhub_message *m) {
    (void)user_data;
    snprintf(g_input_name, sizeof g_input_name, "%s", ironhub_message_input_name(m) ? ironhub_message_input_name(m) : "(null)");
    size_t len = 0;
    const uint8_t *data = ironhub_message_data(m, &len);
    if (len >= sizeof g_input_data) len = sizeof g_input_data - 1;
    memcpy(g_input_data, data, len);
    g_input_data[len] = '\0';
    atomic_fetch_add(&g_inputs, 1);
}

static void on_sent(void *user_data, ironhub_result r) {
    CHECK(user_data == &g_sent);
    CHECK(r == IRONHUB_OK);
    atomic_fetch_add(&g_sent, 1);
}

static void on_method(void *client, const char *request_id, const char *method_name, const char *payload_json) {
    /* Counted before answering: the invoker may return as soon as the answer is out. */
    atomic_fetch_add(&g_methods, 1);
    char body[256];
    snprintf(body, sizeof body, "{\"method\":\"%s\",\"echo\":%s}", method_name, payload_json);
    CHECK_OK(ironhub_client_send_method_response(client, request_id, 200, body));
    atomic_fetch_add(&g_answered, 1);
}

int main(void) {
    alarm(240);
    const char *device_id = test_env("IRONHUB_TEST_DEVICE_ID");
    ironhub_options *o = emulator_options();

    /* module from its connection string: outputs, routed back to its own input "in1" */
    ironhub_client *module = NULL;
    CHECK_OK(ironhub_client_create_from_connection_string(test_env("IRONHUB_TEST_MODULE_CS"), o, &module));
    CHECK_OK(ironhub_client_on_message_received(module, on_input, NULL));
    ironhub_message *m = ironhub_message_new((const uint8_t *)"looped", 6);
    CHECK_OK(ironhub_client_send_message_to_output(module, m, "loop"));
    WAIT_FOR(atomic_load(&g_inputs) == 1, 30000);
    CHECK(strcmp(g_input_name, "in1") == 0 && strcmp(g_input_data, "looped") == 0);
    CHECK_OK(ironhub_client_send_message_async(module, m, "loop", on_sent, &g_sent));
    WAIT_FOR(atomic_load(&g_sent) == 1, 30000);
    WAIT_FOR(atomic_load(&g_inputs) == 2, 30000);
    CHECK_OK(ironhub_client_send_message_to_output(module, m, "elsewhere")); /* no route: just accepted */
    ironhub_message_free(m);

    /* a device that answers methods */
    ironhub_client *device = NULL;
    CHECK_OK(ironhub_client_create_from_connection_string(test_env("IRONHUB_TEST_DEVICE_CS"), o, &device));
    CHECK_OK(ironhub_client_on_method_request_received(device, on_method, device));

    /* the Edge-environment module invokes it */
    ironhub_options *edge_opts = ironhub_options_new();
    CHECK_OK(ironhub_options_set_mqtt_port(edge_opts, (uint16_t)atoi(test_env("IRONHUB_TEST_MQTT_PORT"))));
    CHECK_OK(ironhub_options_set_https_port(edge_opts, (uint16_t)atoi(test_env("IRONHUB_TEST_HTTPS_PORT"))));
    ironhub_client *edge = NULL;
    CHECK_OK(ironhub_client_create_from_edge_environment(edge_opts, &edge));
    /* server_verification_cert is refused for the Edge factory */
    ironhub_client *refused = (ironhub_client *)0x1;
    CHECK_RESULT(ironhub_client_create_from_edge_environment(o, &refused), IRONHUB_ERROR_INVALID_ARGUMENT);
    CHECK(refused == (ironhub_client *)0x1);
    ironhub_options_free(edge_opts);
    ironhub_options_free(o);

    char *result = NULL;
    CHECK_OK(ironhub_client_invoke_method(
        edge, device_id, NULL,
        "{\"methodName\":\"blink\",\"payload\":{\"times\":3},\"responseTimeoutInSeconds\":10,\"connectTimeoutInSeconds\":5}",
        &result));
    CHECK(result != NULL);
    CHECK(strstr(result, "\"status\":200") != NULL);
    CHECK(strstr(result, "\"method\":\"blink\"") != NULL && strstr(result, "\"times\":3") != NULL);
    ironhub_string_free(result);
    CHECK(atomic_load(&g_methods) == 1);

    /* unknown device: a service error, out-param untouched */
    result = (char *)0x1;
    CHECK(ironhub_client_invoke_method(edge, "no-such-device", NULL, "{\"methodName\":\"x\",\"payload\":null}", &result) != IRONHUB_OK);
    CHECK(result == (char *)0x1);

    /* The hub hands the answer to the invoker before the device sees its PUBACK: freeing the
     * device now would (rightly) cancel the callback's send_method_response. */
    WAIT_FOR(atomic_load(&g_answered) == 1, 30000);
    ironhub_client_free(edge);
    ironhub_client_free(device);
    ironhub_client_free(module);
    printf("test_module: ok\n");
    return 0;
}

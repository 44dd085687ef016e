/*
 * proxy_options through the C ABI and a real proxy (tinyproxy with Basic auth, started by the
 * harness, which also checks its log for the tunnel): telemetry through it, and a wrong password
 * refused as IRONHUB_ERROR_CONNECTION_FAILED whose last-error message never holds the password.
 */
#include "common.h"

int main(void) {
    alarm(120);
    uint16_t port = (uint16_t)atoi(test_env("IRONHUB_TEST_PROXY_PORT"));
    const char *password = test_env("IRONHUB_TEST_PROXY_PASSWORD");
    const char *cs = test_env("IRONHUB_TEST_DEVICE_CS");
    ironhub_options *o = emulator_options();

    CHECK_OK(ironhub_options_set_proxy(o, "http", "127.0.0.1", port, "alice", password));
    ironhub_client *c = NULL;
    CHECK_OK(ironhub_client_create_from_connection_string(cs, o, &c));
    ironhub_message *m = ironhub_message_new((const uint8_t *)"via proxy", 9);
    CHECK(m != NULL);
    CHECK_OK(ironhub_client_send_message(c, m));
    ironhub_message_free(m);
    CHECK_OK(ironhub_client_free(c));

    char wrong[128];
    snprintf(wrong, sizeof wrong, "wrong-%s", password);
    CHECK_OK(ironhub_options_set_proxy(o, "HTTP", "127.0.0.1", port, "alice", wrong));
    CHECK_OK(ironhub_options_set_connection_retry(o, false));
    CHECK_OK(ironhub_client_create_from_connection_string(cs, o, &c));
    ironhub_result r = ironhub_client_connect(c);
    char detail[512];
    ironhub_last_error_message(detail, sizeof detail);
    if (r != IRONHUB_ERROR_CONNECTION_FAILED || strstr(detail, password) != NULL) {
        fprintf(stderr, "refused connect: %s (%s)\n", ironhub_result_str(r), detail);
        return 1;
    }
    CHECK_OK(ironhub_client_free(c));
    ironhub_options_free(o);
    printf("through the proxy, and refused by it\n");
    return 0;
}

/*
 * Every function of the C ABI called with bad input, without a hub: NULL for each pointer,
 * invalid UTF-8, bad connection strings, bad JSON, out-of-range options, out-params left alone
 * on failure, result strings, per-thread last-error text, version, idempotent frees, and calls
 * after shutdown. Run plain and under ASan/LSan by tests/c_abi.rs.
 */
#include "common.h"

#include <pthread.h>

static const char *FAKE_CS =
    "HostName=unreachable.invalid;DeviceId=dev1;SharedAccessKey=c2VjcmV0LWtleS0xMjM0NTY3ODkwYWJjZGVm";
static const char *FAKE_KEY = "c2VjcmV0LWtleS0xMjM0NTY3ODkwYWJjZGVm";
static const char BAD_UTF8[] = {'a', (char)0xff, (char)0xfe, 'b', 0};

static void test_version_and_results(void) {
    CHECK(strcmp(ironhub_version(), IRONHUB_VERSION) == 0);
    char expect[64];
    snprintf(expect, sizeof expect, "%d.%d.%d", IRONHUB_VERSION_MAJOR, IRONHUB_VERSION_MINOR,
             IRONHUB_VERSION_PATCH);
    CHECK(strncmp(ironhub_version(), expect, strlen(expect)) == 0);

    CHECK(strcmp(ironhub_result_str(IRONHUB_OK), "IRONHUB_OK") == 0);
    CHECK(strcmp(ironhub_result_str(IRONHUB_ERROR_NULL_PARAMETER), "IRONHUB_ERROR_NULL_PARAMETER") == 0);
    CHECK(strcmp(ironhub_result_str(IRONHUB_ERROR_PANIC), "IRONHUB_ERROR_PANIC") == 0);
    CHECK(strcmp(ironhub_result_str(IRONHUB_ERROR_IN_CALLBACK), "IRONHUB_ERROR_IN_CALLBACK") == 0);
    CHECK(strcmp(ironhub_result_str(IRONHUB_ERROR_SHUT_DOWN), "IRONHUB_ERROR_SHUT_DOWN") == 0);
    CHECK(strcmp(ironhub_result_str(9999), "IRONHUB_ERROR_UNKNOWN") == 0);
    /* Every code has a distinct name. */
    for (uint32_t a = 0; a <= IRONHUB_ERROR_IN_CALLBACK; a++) {
        for (uint32_t b = a + 1; b <= IRONHUB_ERROR_IN_CALLBACK; b++) {
            CHECK(strcmp(ironhub_result_str(a), ironhub_result_str(b)) != 0);
        }
    }
}

static void *other_thread_last_error(void *arg) {
    (void)arg;
    /* A fresh thread has no error of its own, whatever the main thread did. */
    size_t n = ironhub_last_error_message(NULL, 0);
    return (void *)(n == 0 ? "clean" : "dirty");
}

static void test_last_error(void) {
    CHECK_RESULT(ironhub_options_set_keep_alive(NULL, 10), IRONHUB_ERROR_NULL_PARAMETER);
    size_t need = ironhub_last_error_message(NULL, 0);
    CHECK(need > 1);
    char *buf = malloc(need);
    CHECK(buf != NULL);
    CHECK(ironhub_last_error_message(buf, need) == need);
    CHECK(strlen(buf) == need - 1);
    CHECK(strstr(buf, "NULL") != NULL);
    /* Truncation keeps a terminated string and still reports the full size. */
    char small[4];
    CHECK(ironhub_last_error_message(small, sizeof small) == need);
    CHECK(strlen(small) == 3);
    free(buf);

    pthread_t t;
    void *verdict = NULL;
    CHECK(pthread_create(&t, NULL, other_thread_last_error, NULL) == 0);
    CHECK(pthread_join(t, &verdict) == 0);
    CHECK(strcmp((const char *)verdict, "clean") == 0);

    /* A success clears the thread's error. */
    ironhub_options *o = ironhub_options_new();
    CHECK_OK(ironhub_options_set_keep_alive(o, 30));
    CHECK(ironhub_last_error_message(small, sizeof small) == 0);
    CHECK(small[0] == '\0');
    ironhub_options_free(o);
}

static void test_options(void) {
    ironhub_options *o = ironhub_options_new();
    CHECK(o != NULL);
    /* NULL handle */
    CHECK_RESULT(ironhub_options_set_server_verification_cert(NULL, "x"), IRONHUB_ERROR_NULL_PARAMETER);
    CHECK_RESULT(ironhub_options_set_gateway_hostname(NULL, "x"), IRONHUB_ERROR_NULL_PARAMETER);
    CHECK_RESULT(ironhub_options_set_websockets(NULL, true), IRONHUB_ERROR_NULL_PARAMETER);
    CHECK_RESULT(ironhub_options_set_cipher(NULL, ""), IRONHUB_ERROR_NULL_PARAMETER);
    CHECK_RESULT(ironhub_options_set_product_info(NULL, "x"), IRONHUB_ERROR_NULL_PARAMETER);
    CHECK_RESULT(ironhub_options_set_proxy(NULL, "HTTP", "h", 1, NULL, NULL), IRONHUB_ERROR_NULL_PARAMETER);
    CHECK_RESULT(ironhub_options_set_sastoken_ttl(NULL, 3600), IRONHUB_ERROR_NULL_PARAMETER);
    CHECK_RESULT(ironhub_options_set_keep_alive(NULL, 60), IRONHUB_ERROR_NULL_PARAMETER);
    CHECK_RESULT(ironhub_options_set_auto_connect(NULL, true), IRONHUB_ERROR_NULL_PARAMETER);
    CHECK_RESULT(ironhub_options_set_connection_retry(NULL, true), IRONHUB_ERROR_NULL_PARAMETER);
    CHECK_RESULT(ironhub_options_set_connection_retry_interval(NULL, 10), IRONHUB_ERROR_NULL_PARAMETER);
    CHECK_RESULT(ironhub_options_set_ensure_desired_properties(NULL, true), IRONHUB_ERROR_NULL_PARAMETER);
    CHECK_RESULT(ironhub_options_set_operation_timeout(NULL, 10), IRONHUB_ERROR_NULL_PARAMETER);
    CHECK_RESULT(ironhub_options_set_mqtt_port(NULL, 8883), IRONHUB_ERROR_NULL_PARAMETER);
    CHECK_RESULT(ironhub_options_set_https_port(NULL, 443), IRONHUB_ERROR_NULL_PARAMETER);
    /* NULL strings */
    CHECK_RESULT(ironhub_options_set_server_verification_cert(o, NULL), IRONHUB_ERROR_NULL_PARAMETER);
    CHECK_RESULT(ironhub_options_set_gateway_hostname(o, NULL), IRONHUB_ERROR_NULL_PARAMETER);
    CHECK_RESULT(ironhub_options_set_cipher(o, NULL), IRONHUB_ERROR_NULL_PARAMETER);
    CHECK_RESULT(ironhub_options_set_product_info(o, NULL), IRONHUB_ERROR_NULL_PARAMETER);
    CHECK_RESULT(ironhub_options_set_proxy(o, NULL, "h", 1, NULL, NULL), IRONHUB_ERROR_NULL_PARAMETER);
    CHECK_RESULT(ironhub_options_set_proxy(o, "HTTP", NULL, 1, NULL, NULL), IRONHUB_ERROR_NULL_PARAMETER);
    /* invalid UTF-8 and out-of-range values */
    CHECK_RESULT(ironhub_options_set_product_info(o, BAD_UTF8), IRONHUB_ERROR_INVALID_ARGUMENT);
    CHECK_RESULT(ironhub_options_set_gateway_hostname(o, BAD_UTF8), IRONHUB_ERROR_INVALID_ARGUMENT);
    CHECK_RESULT(ironhub_options_set_keep_alive(o, 0), IRONHUB_ERROR_INVALID_ARGUMENT);
    CHECK_RESULT(ironhub_options_set_keep_alive(o, 1741), IRONHUB_ERROR_INVALID_ARGUMENT);
    CHECK_RESULT(ironhub_options_set_connection_retry_interval(o, 0), IRONHUB_ERROR_INVALID_ARGUMENT);
    CHECK_RESULT(ironhub_options_set_operation_timeout(o, 0), IRONHUB_ERROR_INVALID_ARGUMENT);
    CHECK_RESULT(ironhub_options_set_mqtt_port(o, 0), IRONHUB_ERROR_INVALID_ARGUMENT);
    CHECK_RESULT(ironhub_options_set_https_port(o, 0), IRONHUB_ERROR_INVALID_ARGUMENT);
    CHECK_RESULT(ironhub_options_set_proxy(o, "FTP", "h", 1, NULL, NULL), IRONHUB_ERROR_INVALID_ARGUMENT);
    CHECK_RESULT(ironhub_options_set_proxy(o, "HTTP", "h", 0, NULL, NULL), IRONHUB_ERROR_INVALID_ARGUMENT);
    CHECK_RESULT(ironhub_options_set_cipher(o, "NOT-A-CIPHER"), IRONHUB_ERROR_INVALID_ARGUMENT);
    CHECK_RESULT(ironhub_options_set_sastoken_ttl(o, 0), IRONHUB_ERROR_INVALID_ARGUMENT);
    /* good values */
    CHECK_OK(ironhub_options_set_keep_alive(o, 1740));
    CHECK_OK(ironhub_options_set_connection_retry_interval(o, 1));
    CHECK_OK(ironhub_options_set_sastoken_ttl(o, 600));
    CHECK_OK(ironhub_options_set_websockets(o, false));
    CHECK_OK(ironhub_options_set_cipher(o, ""));
    CHECK_OK(ironhub_options_set_product_info(o, "firmware/1.0"));
    CHECK_OK(ironhub_options_set_proxy(o, "SOCKS5", "proxy.invalid", 1080, "user", "pass"));
    CHECK_OK(ironhub_options_set_auto_connect(o, true));
    CHECK_OK(ironhub_options_set_connection_retry(o, true));
    CHECK_OK(ironhub_options_set_ensure_desired_properties(o, true));
    CHECK_OK(ironhub_options_set_gateway_hostname(o, "gateway.invalid"));
    ironhub_options_free(o);
    ironhub_options_free(NULL);
}

static void test_messages(void) {
    CHECK(ironhub_message_new(NULL, 5) == NULL);
    CHECK(ironhub_last_error_message(NULL, 0) > 0);
    ironhub_message *empty = ironhub_message_new(NULL, 0);
    CHECK(empty != NULL);
    size_t len = 99;
    CHECK(ironhub_message_data(empty, &len) != NULL);
    CHECK(len == 0);
    ironhub_message_free(empty);

    const uint8_t payload[] = {'h', 'i', 0, 0xff};
    ironhub_message *m = ironhub_message_new(payload, sizeof payload);
    CHECK(m != NULL);
    const uint8_t *data = ironhub_message_data(m, &len);
    CHECK(len == sizeof payload && memcmp(data, payload, len) == 0);
    len = 77;
    CHECK(ironhub_message_data(NULL, &len) == NULL && len == 77);
    CHECK(ironhub_message_data(m, NULL) == NULL);

    CHECK(ironhub_message_message_id(m) == NULL);
    CHECK_OK(ironhub_message_set_message_id(m, "mid-1"));
    CHECK_OK(ironhub_message_set_correlation_id(m, "cid-1"));
    CHECK_OK(ironhub_message_set_user_id(m, "uid-1"));
    CHECK_OK(ironhub_message_set_content_type(m, "application/json"));
    CHECK_OK(ironhub_message_set_content_encoding(m, "utf-8"));
    CHECK_OK(ironhub_message_set_expiry_time_utc(m, "2030-01-02T03:04:05Z"));
    CHECK_OK(ironhub_message_set_output_name(m, "out1"));
    CHECK_OK(ironhub_message_set_as_security_message(m));
    CHECK_OK(ironhub_message_set_property(m, "b", "2"));
    CHECK_OK(ironhub_message_set_property(m, "a", "1"));
    CHECK_OK(ironhub_message_set_property(m, "b", "3")); /* replaces */
    CHECK(strcmp(ironhub_message_message_id(m), "mid-1") == 0);
    CHECK(strcmp(ironhub_message_correlation_id(m), "cid-1") == 0);
    CHECK(strcmp(ironhub_message_user_id(m), "uid-1") == 0);
    CHECK(strcmp(ironhub_message_content_type(m), "application/json") == 0);
    CHECK(strcmp(ironhub_message_content_encoding(m), "utf-8") == 0);
    CHECK(strcmp(ironhub_message_expiry_time_utc(m), "2030-01-02T03:04:05Z") == 0);
    CHECK(strcmp(ironhub_message_output_name(m), "out1") == 0);
    CHECK(ironhub_message_input_name(m) == NULL);
    CHECK(ironhub_message_ack(m) == NULL);
    CHECK(strcmp(ironhub_message_property(m, "b"), "3") == 0);
    CHECK(ironhub_message_property(m, "zz") == NULL);
    CHECK(ironhub_message_property(m, NULL) == NULL);
    CHECK(ironhub_message_property(NULL, "b") == NULL);
    CHECK(ironhub_message_property_count(m) == 2);
    CHECK(ironhub_message_property_count(NULL) == 0);
    const char *k = "untouched", *v = "untouched";
    CHECK_OK(ironhub_message_property_at(m, 0, &k, &v));
    CHECK(strcmp(k, "b") == 0 && strcmp(v, "3") == 0);
    CHECK_OK(ironhub_message_property_at(m, 1, &k, &v));
    CHECK(strcmp(k, "a") == 0 && strcmp(v, "1") == 0);
    k = "untouched";
    v = "untouched";
    CHECK_RESULT(ironhub_message_property_at(m, 2, &k, &v), IRONHUB_ERROR_INVALID_ARGUMENT);
    CHECK(strcmp(k, "untouched") == 0 && strcmp(v, "untouched") == 0); /* out-params untouched */
    CHECK_RESULT(ironhub_message_property_at(m, 0, NULL, &v), IRONHUB_ERROR_NULL_PARAMETER);
    CHECK_RESULT(ironhub_message_property_at(m, 0, &k, NULL), IRONHUB_ERROR_NULL_PARAMETER);
    CHECK_RESULT(ironhub_message_property_at(NULL, 0, &k, &v), IRONHUB_ERROR_NULL_PARAMETER);

    /* NULL and bad input on every setter */
    CHECK_RESULT(ironhub_message_set_message_id(NULL, "x"), IRONHUB_ERROR_NULL_PARAMETER);
    CHECK_RESULT(ironhub_message_set_message_id(m, NULL), IRONHUB_ERROR_NULL_PARAMETER);
    CHECK_RESULT(ironhub_message_set_correlation_id(m, NULL), IRONHUB_ERROR_NULL_PARAMETER);
    CHECK_RESULT(ironhub_message_set_user_id(m, NULL), IRONHUB_ERROR_NULL_PARAMETER);
    CHECK_RESULT(ironhub_message_set_content_type(m, NULL), IRONHUB_ERROR_NULL_PARAMETER);
    CHECK_RESULT(ironhub_message_set_content_encoding(m, NULL), IRONHUB_ERROR_NULL_PARAMETER);
    CHECK_RESULT(ironhub_message_set_expiry_time_utc(m, NULL), IRONHUB_ERROR_NULL_PARAMETER);
    CHECK_RESULT(ironhub_message_set_output_name(m, NULL), IRONHUB_ERROR_NULL_PARAMETER);
    CHECK_RESULT(ironhub_message_set_as_security_message(NULL), IRONHUB_ERROR_NULL_PARAMETER);
    CHECK_RESULT(ironhub_message_set_property(m, NULL, "v"), IRONHUB_ERROR_NULL_PARAMETER);
    CHECK_RESULT(ironhub_message_set_property(m, "k", NULL), IRONHUB_ERROR_NULL_PARAMETER);
    CHECK_RESULT(ironhub_message_set_property(m, "", "v"), IRONHUB_ERROR_INVALID_ARGUMENT);
    CHECK_RESULT(ironhub_message_set_property(m, BAD_UTF8, "v"), IRONHUB_ERROR_INVALID_ARGUMENT);
    CHECK_RESULT(ironhub_message_set_message_id(m, BAD_UTF8), IRONHUB_ERROR_INVALID_ARGUMENT);
    CHECK_RESULT(ironhub_message_set_expiry_time_utc(m, "next tuesday"), IRONHUB_ERROR_INVALID_ARGUMENT);
    CHECK(strcmp(ironhub_message_message_id(m), "mid-1") == 0); /* failed set changed nothing */
    CHECK(ironhub_message_message_id(NULL) == NULL);
    CHECK(ironhub_message_correlation_id(NULL) == NULL);
    CHECK(ironhub_message_content_type(NULL) == NULL);
    CHECK(ironhub_message_content_encoding(NULL) == NULL);
    CHECK(ironhub_message_input_name(NULL) == NULL);

    ironhub_message_free(m);
    ironhub_message_free(NULL);
}

static void send_cb(void *user_data, ironhub_result r) {
    (void)user_data;
    (void)r;
}
static void msg_cb(void *u, const ironhub_message *m) { (void)u; (void)m; }
static void method_cb(void *u, const char *a, const char *b, const char *c) { (void)u; (void)a; (void)b; (void)c; }
static void patch_cb(void *u, const char *p) { (void)u; (void)p; }
static void state_cb(void *u, bool c, ironhub_connection_reason r) { (void)u; (void)c; (void)r; }
static void sas_cb(void *u) { (void)u; }
static void bg_cb(void *u, ironhub_result k, const char *m) { (void)u; (void)k; (void)m; }

static void test_factories(void) {
    ironhub_client *c = (ironhub_client *)0x1; /* sentinel: must stay untouched on failure */
    CHECK_RESULT(ironhub_client_create_from_connection_string(NULL, NULL, &c), IRONHUB_ERROR_NULL_PARAMETER);
    CHECK_RESULT(ironhub_client_create_from_connection_string(FAKE_CS, NULL, NULL), IRONHUB_ERROR_NULL_PARAMETER);
    CHECK_RESULT(ironhub_client_create_from_connection_string(BAD_UTF8, NULL, &c), IRONHUB_ERROR_INVALID_ARGUMENT);
    const char *bad_cs[] = {
        "",
        "garbage",
        "HostName=h;DeviceId=d",                                  /* incomplete */
        "HostName=h;DeviceId=d;SharedAccessKey=k;DeviceId=e",     /* duplicate */
        "HostName=h;DeviceId=d;SharedAccessKey=k;Bogus=1",        /* unknown key */
        "HostName=h;DeviceId=d;SharedAccessKey=!!!notbase64!!!",  /* bad key */
        "HostName=h;DeviceId=d;SharedAccessKey=a2V5;x509=true",   /* key and x509 */
        "HostName=h;DeviceId=d;x509=true",                        /* use create_from_x509_certificate */
    };
    for (size_t i = 0; i < sizeof bad_cs / sizeof bad_cs[0]; i++) {
        ironhub_result r = ironhub_client_create_from_connection_string(bad_cs[i], NULL, &c);
        if (r != IRONHUB_ERROR_INVALID_ARGUMENT) {
            fprintf(stderr, "bad connection string #%zu gave %s\n", i, ironhub_result_str(r));
            exit(1);
        }
        /* The detail never echoes the key. */
        char detail[512];
        ironhub_last_error_message(detail, sizeof detail);
        CHECK(strstr(detail, "notbase64") == NULL && strstr(detail, "a2V5") == NULL);
    }
    CHECK(c == (ironhub_client *)0x1);

    CHECK_RESULT(ironhub_client_create_from_sastoken(NULL, NULL, &c), IRONHUB_ERROR_NULL_PARAMETER);
    CHECK_RESULT(ironhub_client_create_from_sastoken("not a token", NULL, &c), IRONHUB_ERROR_INVALID_ARGUMENT);
    CHECK_RESULT(ironhub_client_create_from_sastoken("x", NULL, NULL), IRONHUB_ERROR_NULL_PARAMETER);
    CHECK_RESULT(ironhub_client_create_from_symmetric_key(NULL, "h", "d", NULL, &c), IRONHUB_ERROR_NULL_PARAMETER);
    CHECK_RESULT(ironhub_client_create_from_symmetric_key(FAKE_KEY, NULL, "d", NULL, &c), IRONHUB_ERROR_NULL_PARAMETER);
    CHECK_RESULT(ironhub_client_create_from_symmetric_key(FAKE_KEY, "h", NULL, NULL, &c), IRONHUB_ERROR_NULL_PARAMETER);
    CHECK_RESULT(ironhub_client_create_from_symmetric_key("!!bad!!", "h", "d", NULL, &c), IRONHUB_ERROR_INVALID_ARGUMENT);
    CHECK_RESULT(ironhub_client_create_from_x509_certificate(NULL, "k", NULL, "h", "d", NULL, NULL, &c), IRONHUB_ERROR_NULL_PARAMETER);
    CHECK_RESULT(ironhub_client_create_from_x509_certificate("c", NULL, NULL, "h", "d", NULL, NULL, &c), IRONHUB_ERROR_NULL_PARAMETER);
    CHECK_RESULT(ironhub_client_create_from_x509_certificate("c", "k", NULL, NULL, "d", NULL, NULL, &c), IRONHUB_ERROR_NULL_PARAMETER);
    CHECK_RESULT(ironhub_client_create_from_x509_certificate("c", "k", NULL, "h", NULL, NULL, NULL, &c), IRONHUB_ERROR_NULL_PARAMETER);
    CHECK(ironhub_client_create_from_x509_certificate("/nonexistent/cert.pem", "/nonexistent/key.pem", NULL, "h",
                                                      "d", NULL, NULL, &c) != IRONHUB_OK);
    CHECK_RESULT(ironhub_client_create_from_edge_environment(NULL, NULL), IRONHUB_ERROR_NULL_PARAMETER);
    /* No Edge environment variables in this process. */
    unsetenv("IOTEDGE_WORKLOADURI");
    unsetenv("EdgeHubConnectionString");
    CHECK(ironhub_client_create_from_edge_environment(NULL, &c) != IRONHUB_OK);
    CHECK(c == (ironhub_client *)0x1);

    /* create_from_sastoken refuses sastoken_ttl; create_from_connection_string refuses gateway_hostname. */
    ironhub_options *o = ironhub_options_new();
    CHECK_OK(ironhub_options_set_gateway_hostname(o, "gw.invalid"));
    CHECK_RESULT(ironhub_client_create_from_connection_string(FAKE_CS, o, &c), IRONHUB_ERROR_INVALID_ARGUMENT);
    ironhub_options_free(o);
}

static void test_client_misuse(void) {
    ironhub_options *o = ironhub_options_new();
    CHECK_OK(ironhub_options_set_auto_connect(o, false));
    ironhub_client *c = NULL;
    CHECK_OK(ironhub_client_create_from_connection_string(FAKE_CS, o, &c));
    ironhub_options_free(o); /* the client keeps its own copy */
    CHECK(c != NULL);
    CHECK(!ironhub_client_connected(c));
    CHECK(!ironhub_client_connected(NULL));

    ironhub_message *m = ironhub_message_new((const uint8_t *)"x", 1);
    char *twin = (char *)0x1;
    char *result = (char *)0x1;

    /* NULL everywhere */
    CHECK_RESULT(ironhub_client_connect(NULL), IRONHUB_ERROR_NULL_PARAMETER);
    CHECK_RESULT(ironhub_client_disconnect(NULL), IRONHUB_ERROR_NULL_PARAMETER);
    CHECK_RESULT(ironhub_client_shutdown(NULL), IRONHUB_ERROR_NULL_PARAMETER);
    CHECK_RESULT(ironhub_client_update_sastoken(NULL, "t"), IRONHUB_ERROR_NULL_PARAMETER);
    CHECK_RESULT(ironhub_client_update_sastoken(c, NULL), IRONHUB_ERROR_NULL_PARAMETER);
    CHECK_RESULT(ironhub_client_send_message(NULL, m), IRONHUB_ERROR_NULL_PARAMETER);
    CHECK_RESULT(ironhub_client_send_message(c, NULL), IRONHUB_ERROR_NULL_PARAMETER);
    CHECK_RESULT(ironhub_client_send_message_to_output(c, m, NULL), IRONHUB_ERROR_NULL_PARAMETER);
    CHECK_RESULT(ironhub_client_send_message_to_output(NULL, m, "o"), IRONHUB_ERROR_NULL_PARAMETER);
    CHECK_RESULT(ironhub_client_send_message_async(NULL, m, NULL, send_cb, NULL), IRONHUB_ERROR_NULL_PARAMETER);
    CHECK_RESULT(ironhub_client_send_message_async(c, NULL, NULL, send_cb, NULL), IRONHUB_ERROR_NULL_PARAMETER);
    CHECK_RESULT(ironhub_client_send_message_async(c, m, NULL, NULL, NULL), IRONHUB_ERROR_NULL_PARAMETER);
    CHECK_RESULT(ironhub_client_get_twin(NULL, &twin), IRONHUB_ERROR_NULL_PARAMETER);
    CHECK_RESULT(ironhub_client_get_twin(c, NULL), IRONHUB_ERROR_NULL_PARAMETER);
    CHECK_RESULT(ironhub_client_patch_twin_reported_properties(NULL, "{}"), IRONHUB_ERROR_NULL_PARAMETER);
    CHECK_RESULT(ironhub_client_patch_twin_reported_properties(c, NULL), IRONHUB_ERROR_NULL_PARAMETER);
    CHECK_RESULT(ironhub_client_send_method_response(NULL, "1", 200, NULL), IRONHUB_ERROR_NULL_PARAMETER);
    CHECK_RESULT(ironhub_client_send_method_response(c, NULL, 200, NULL), IRONHUB_ERROR_NULL_PARAMETER);
    CHECK_RESULT(ironhub_client_invoke_method(NULL, "d", NULL, "{}", &result), IRONHUB_ERROR_NULL_PARAMETER);
    CHECK_RESULT(ironhub_client_invoke_method(c, NULL, NULL, "{}", &result), IRONHUB_ERROR_NULL_PARAMETER);
    CHECK_RESULT(ironhub_client_invoke_method(c, "d", NULL, NULL, &result), IRONHUB_ERROR_NULL_PARAMETER);
    CHECK_RESULT(ironhub_client_invoke_method(c, "d", NULL, "{}", NULL), IRONHUB_ERROR_NULL_PARAMETER);
    CHECK_RESULT(ironhub_client_on_message_received(NULL, msg_cb, NULL), IRONHUB_ERROR_NULL_PARAMETER);
    CHECK_RESULT(ironhub_client_on_method_request_received(NULL, method_cb, NULL), IRONHUB_ERROR_NULL_PARAMETER);
    CHECK_RESULT(ironhub_client_on_twin_desired_properties_patch_received(NULL, patch_cb, NULL), IRONHUB_ERROR_NULL_PARAMETER);
    CHECK_RESULT(ironhub_client_on_connection_state_change(NULL, state_cb, NULL), IRONHUB_ERROR_NULL_PARAMETER);
    CHECK_RESULT(ironhub_client_on_new_sastoken_required(NULL, sas_cb, NULL), IRONHUB_ERROR_NULL_PARAMETER);
    CHECK_RESULT(ironhub_client_on_background_exception(NULL, bg_cb, NULL), IRONHUB_ERROR_NULL_PARAMETER);

    /* bad JSON and bad UTF-8 */
    CHECK_RESULT(ironhub_client_patch_twin_reported_properties(c, "{not json"), IRONHUB_ERROR_INVALID_ARGUMENT);
    CHECK_RESULT(ironhub_client_patch_twin_reported_properties(c, "[1,2]"), IRONHUB_ERROR_INVALID_ARGUMENT);
    CHECK_RESULT(ironhub_client_patch_twin_reported_properties(c, BAD_UTF8), IRONHUB_ERROR_INVALID_ARGUMENT);
    CHECK_RESULT(ironhub_client_send_method_response(c, "1", 200, "{oops"), IRONHUB_ERROR_INVALID_ARGUMENT);
    CHECK_RESULT(ironhub_client_invoke_method(c, "d", NULL, "{oops", &result), IRONHUB_ERROR_INVALID_ARGUMENT);
    CHECK_RESULT(ironhub_client_send_message_to_output(c, m, BAD_UTF8), IRONHUB_ERROR_INVALID_ARGUMENT);
    /* update_sastoken on a client not made from a token */
    CHECK(ironhub_client_update_sastoken(c, "SharedAccessSignature sr=x&sig=y&se=1") != IRONHUB_OK);
    /* auto_connect off and not connected */
    CHECK_RESULT(ironhub_client_send_message(c, m), IRONHUB_ERROR_NO_CONNECTION);
    CHECK_RESULT(ironhub_client_get_twin(c, &twin), IRONHUB_ERROR_NO_CONNECTION);
    CHECK(twin == (char *)0x1);
    /* clearing handlers that were never set is fine */
    CHECK_OK(ironhub_client_on_message_received(c, NULL, NULL));
    CHECK_OK(ironhub_client_on_connection_state_change(c, state_cb, NULL));
    CHECK_OK(ironhub_client_on_connection_state_change(c, NULL, NULL));
    /* disconnect of a client that is not connected is harmless */
    CHECK_OK(ironhub_client_disconnect(c));

    /* after shutdown every call fails, cleanly */
    CHECK_OK(ironhub_client_shutdown(c));
    CHECK_RESULT(ironhub_client_connect(c), IRONHUB_ERROR_SHUT_DOWN);
    CHECK_RESULT(ironhub_client_send_message(c, m), IRONHUB_ERROR_SHUT_DOWN);
    CHECK_RESULT(ironhub_client_get_twin(c, &twin), IRONHUB_ERROR_SHUT_DOWN);
    CHECK_RESULT(ironhub_client_patch_twin_reported_properties(c, "{\"a\":1}"), IRONHUB_ERROR_SHUT_DOWN);
    CHECK_RESULT(ironhub_client_send_method_response(c, "1", 200, NULL), IRONHUB_ERROR_SHUT_DOWN);
    CHECK_RESULT(ironhub_client_on_message_received(c, msg_cb, NULL), IRONHUB_ERROR_SHUT_DOWN);
    CHECK(!ironhub_client_connected(c));
    CHECK(twin == (char *)0x1 && result == (char *)0x1);
    CHECK(ironhub_client_shutdown(c) == IRONHUB_OK || ironhub_client_shutdown(c) == IRONHUB_ERROR_SHUT_DOWN);

    ironhub_message_free(m);
    ironhub_client_free(c);
    ironhub_client_free(NULL);
    ironhub_string_free(NULL);
}

int main(void) {
    alarm(240); /* a hang fails the test instead of blocking it */
    test_version_and_results();
    test_last_error();
    test_options();
    test_messages();
    test_factories();
    test_client_misuse();
    printf("test_offline: ok\n");
    return 0;
}

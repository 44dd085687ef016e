/*
 * Provisioning and file upload through the C ABI against the emulator: a group enrollment
 * member derives its key, registers (ironhub_provisioning_*), connects to the assigned hub,
 * sends telemetry and uploads a buffer in blocks with progress; plus the refusals (NULL
 * arguments, a wrong key, an unknown upload correlation id).
 */
#include "common.h"

#include <string.h>

static uint64_t g_last_sent, g_total;
static int g_progress_calls;
static void on_progress(void *user_data, uint64_t sent, uint64_t total) {
    CHECK(user_data == &g_progress_calls);
    CHECK(sent > g_last_sent && sent <= total);
    g_last_sent = sent;
    g_total = total;
    g_progress_calls++;
}

int main(void) {
    const char *host = test_env("IRONHUB_TEST_HOSTNAME");
    const char *scope = test_env("IRONHUB_TEST_ID_SCOPE");
    char registration_id[128];
    snprintf(registration_id, sizeof registration_id, "%s-member", test_env("IRONHUB_TEST_DEVICE_ID"));
    ironhub_options *opts = emulator_options();

    char *device_key = NULL;
    CHECK_RESULT(ironhub_provisioning_derive_device_key(NULL, registration_id, &device_key), IRONHUB_ERROR_NULL_PARAMETER);
    CHECK_RESULT(ironhub_provisioning_derive_device_key("not base64!", registration_id, &device_key), IRONHUB_ERROR_INVALID_ARGUMENT);
    CHECK_OK(ironhub_provisioning_derive_device_key(test_env("IRONHUB_TEST_GROUP_KEY"), registration_id, &device_key));

    /* The group key itself is refused by the service. */
    ironhub_provisioning_client *wrong = NULL;
    CHECK_OK(ironhub_provisioning_client_create_from_symmetric_key(host, registration_id, scope, test_env("IRONHUB_TEST_GROUP_KEY"), opts, &wrong));
    char *hub = NULL, *device_id = NULL, *result = NULL;
    CHECK_RESULT(ironhub_provisioning_client_register(wrong, &hub, &device_id, NULL), IRONHUB_ERROR_CREDENTIAL);
    CHECK(hub == NULL && device_id == NULL);
    ironhub_provisioning_client_free(wrong);

    ironhub_provisioning_client *p = NULL;
    CHECK_RESULT(ironhub_provisioning_client_create_from_symmetric_key(host, NULL, scope, device_key, opts, &p), IRONHUB_ERROR_NULL_PARAMETER);
    CHECK_OK(ironhub_provisioning_client_create_from_symmetric_key(host, registration_id, scope, device_key, opts, &p));
    CHECK_RESULT(ironhub_provisioning_client_set_provisioning_payload(p, "{not json"), IRONHUB_ERROR_INVALID_ARGUMENT);
    CHECK_OK(ironhub_provisioning_client_set_provisioning_payload(p, "{\"model\":\"c\"}"));
    CHECK_RESULT(ironhub_provisioning_client_register(p, NULL, &device_id, NULL), IRONHUB_ERROR_NULL_PARAMETER);
    CHECK_OK(ironhub_provisioning_client_register(p, &hub, &device_id, &result));
    CHECK(strcmp(hub, host) == 0);
    CHECK(strcmp(device_id, registration_id) == 0);
    CHECK(strstr(result, "\"status\":\"assigned\"") != NULL);
    CHECK(strstr(result, "\"model\":\"c\"") != NULL);
    ironhub_provisioning_client_free(p);

    ironhub_client *client = NULL;
    CHECK_OK(ironhub_client_create_from_symmetric_key(device_key, hub, device_id, opts, &client));
    ironhub_message *m = ironhub_message_new((const uint8_t *)"provisioned from C", 18);
    CHECK_OK(ironhub_client_send_message(client, m));
    ironhub_message_free(m);

    static uint8_t data[10000];
    for (size_t i = 0; i < sizeof data; i++) data[i] = (uint8_t)(i * 7);
    CHECK_OK(ironhub_client_upload_blob_from_buffer(client, "c/data.bin", data, sizeof data, 4096, on_progress, &g_progress_calls));
    CHECK(g_progress_calls == 3 && g_last_sent == sizeof data && g_total == sizeof data);

    char *info = NULL;
    CHECK_OK(ironhub_client_get_storage_info_for_blob(client, "c/manual.txt", &info));
    CHECK(strstr(info, "\"correlationId\"") != NULL && strstr(info, "\"sasToken\":\"?") != NULL);
    CHECK_RESULT(ironhub_client_notify_blob_upload_status(client, "no-such-correlation", true, 200, NULL), IRONHUB_ERROR_CLIENT);
    CHECK_RESULT(ironhub_client_get_storage_info_for_blob(client, NULL, &info), IRONHUB_ERROR_NULL_PARAMETER);

    ironhub_string_free(info);
    ironhub_client_free(client);
    ironhub_string_free(result);
    ironhub_string_free(hub);
    ironhub_string_free(device_id);
    ironhub_string_free(device_key);
    ironhub_options_free(opts);
    printf("provisioning and upload OK\n");
    return 0;
}

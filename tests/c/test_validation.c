/*
 * The cross-surface validation table (tests/validation_cases.json) through the C ABI. The Rust
 * harness writes the cases as "rule<TAB>value" lines to the file named by argv[1]; this program
 * applies each value where a C user gives it (a message or options setter, a factory) and prints
 * one line per case, "<rule> <result name>", which the harness compares with the table.
 */
#include "common.h"

static ironhub_result apply(const char *rule, const char *value) {
    ironhub_result r;
    if (strcmp(rule, "expiry_time_utc") == 0 || strcmp(rule, "property_key") == 0) {
        ironhub_message *m = ironhub_message_new(NULL, 0);
        CHECK(m != NULL);
        r = strcmp(rule, "expiry_time_utc") == 0 ? ironhub_message_set_expiry_time_utc(m, value)
                                                 : ironhub_message_set_property(m, value, "v");
        ironhub_message_free(m);
        return r;
    }
    ironhub_options *o = ironhub_options_new();
    CHECK(o != NULL);
    ironhub_client *c = NULL;
    if (strcmp(rule, "proxy_type") == 0) {
        r = ironhub_options_set_proxy(o, value, "127.0.0.1", 3128, NULL, NULL);
    } else if (strcmp(rule, "keep_alive") == 0) {
        r = ironhub_options_set_keep_alive(o, (uint32_t)strtoul(value, NULL, 10));
    } else if (strcmp(rule, "cipher") == 0) {
        r = ironhub_options_set_cipher(o, value);
    } else if (strcmp(rule, "max_queued_messages") == 0) {
        r = ironhub_options_set_max_queued_messages(o, (uint32_t)strtoul(value, NULL, 10));
    } else if (strcmp(rule, "max_queued_bytes") == 0) {
        r = ironhub_options_set_max_queued_bytes(o, (uint64_t)strtoull(value, NULL, 10));
    } else if (strcmp(rule, "x509_sastoken_ttl") == 0) {
        CHECK_OK(ironhub_options_set_sastoken_ttl(o, (uint32_t)strtoul(value, NULL, 10)));
        r = ironhub_client_create_from_x509_certificate("/nonexistent/cert.pem", "/nonexistent/key.pem", NULL,
                                                        "hub.example", "dev", NULL, o, &c);
    } else if (strcmp(rule, "sastoken_sastoken_ttl") == 0) {
        CHECK_OK(ironhub_options_set_sastoken_ttl(o, (uint32_t)strtoul(value, NULL, 10)));
        r = ironhub_client_create_from_sastoken("SharedAccessSignature sr=x", o, &c);
    } else {
        fprintf(stderr, "unknown rule %s\n", rule);
        exit(1);
    }
    CHECK(c == NULL);
    ironhub_options_free(o);
    return r;
}

int main(int argc, char **argv) {
    CHECK(argc == 2);
    FILE *f = fopen(argv[1], "r");
    CHECK(f != NULL);
    char line[1024];
    while (fgets(line, sizeof line, f) != NULL) {
        line[strcspn(line, "\n")] = 0;
        char *tab = strchr(line, '\t');
        CHECK(tab != NULL);
        *tab = 0;
        ironhub_result r = apply(line, tab + 1);
        char detail[512];
        ironhub_last_error_message(detail, sizeof detail);
        printf("%s %s %s\n", line, ironhub_result_str(r), detail);
    }
    fclose(f);
    return 0;
}

// The C++17 RAII wrapper (bindings/cpp/ironhub.hpp) against the emulator: options, messages,
// a client with std::function handlers, async send with a lambda, twin, a method answered from
// a lambda, errors as exceptions, and destruction that waits for callbacks.
#include "common.h"
#include "ironhub.hpp"

#include <atomic>
#include <string>

int main() {
    alarm(240);
    const std::string device_id = test_env("IRONHUB_TEST_DEVICE_ID");

    // errors become exceptions with the code
    try {
        ironhub::options().keep_alive(0);
        CHECK(false);
    } catch (const ironhub::error &e) {
        CHECK(e.code() == IRONHUB_ERROR_INVALID_ARGUMENT);
        CHECK(std::string(e.what()).find("keep_alive") != std::string::npos);
    }
    try {
        ironhub::client::from_connection_string("HostName=h;DeviceId=d");
        CHECK(false);
    } catch (const ironhub::error &e) {
        CHECK(e.code() == IRONHUB_ERROR_INVALID_ARGUMENT);
    }
    CHECK(ironhub::version() == IRONHUB_VERSION);

    ironhub::options opts;
    opts.server_verification_cert(test_env("IRONHUB_TEST_CA_PEM"))
        .mqtt_port(static_cast<uint16_t>(std::stoi(test_env("IRONHUB_TEST_MQTT_PORT"))))
        .https_port(static_cast<uint16_t>(std::stoi(test_env("IRONHUB_TEST_HTTPS_PORT"))))
        .operation_timeout(20);

    std::atomic<int> sent{0}, patches{0}, methods{0}, states{0};
    {
        auto c = ironhub::client::from_connection_string(test_env("IRONHUB_TEST_DEVICE_CS"), &opts);
        c.on_connection_state_change([&](bool connected, ironhub_connection_reason) { if (connected) states++; });
        c.connect();
        CHECK(c.connected());

        ironhub::message m("{\"cpp\":true}");
        m.content_type("application/json").property("lang", "c++");
        CHECK(m.property("lang") == "c++" && m.properties().size() == 1);
        c.send_message(m);
        for (int i = 0; i < 5; i++) {
            c.send_message_async(m, [&](ironhub_result r) { if (r == IRONHUB_OK) sent++; });
        }
        WAIT_FOR(sent.load() == 5, 30000);

        c.patch_twin_reported_properties("{\"wrapper\":\"cpp\"}");
        CHECK(c.get_twin().find("\"wrapper\":\"cpp\"") != std::string::npos);

        std::string last_patch;
        c.on_twin_desired_properties_patch_received([&](const std::string &p) { last_patch = p; patches++; });
        harness_request(NULL, 0, "desired %s {\"from\":\"cpp\"}", device_id.c_str());
        WAIT_FOR(patches.load() >= 1, 30000);
        CHECK(last_patch.find("\"from\":\"cpp\"") != std::string::npos);

        c.on_method_request_received([&](const std::string &rid, const std::string &name, const std::string &) {
            methods++;
            c.send_method_response(rid, name == "ping" ? 200 : 404, "{\"pong\":1}");
        });
        char reply[256];
        harness_request(reply, sizeof reply, "invoke %s - ping {}", device_id.c_str());
        CHECK(std::string(reply).rfind("200 ", 0) == 0);
        CHECK(methods.load() == 1);

        c.on_method_request_received(nullptr);  // cleared
        WAIT_FOR(states.load() >= 1, 30000);
        // A throwing handler must not take the process down.
        c.on_twin_desired_properties_patch_received([&](const std::string &) { patches++; throw std::runtime_error("boom"); });
        harness_request(NULL, 0, "desired %s {\"n\":2}", device_id.c_str());
        WAIT_FOR(patches.load() >= 2, 30000);
        // leaving the scope frees the client with async sends possibly in flight
        for (int i = 0; i < 5; i++) c.send_message_async(m, [&](ironhub_result) { sent++; });
    }
    CHECK(sent.load() == 10);  // every callback ran, before the destructor returned
    std::printf("test_cpp_wrapper: ok\n");
    return 0;
}

// ironhub.hpp: header-only C++17 RAII wrapper over the ironhub C API (include/ironhub.h).
//
// - Handles (`options`, `message`, `client`) own their C handle and free it in the destructor;
//   they are movable, not copyable.
// - Failed calls throw `ironhub::error` carrying the result code and the thread's error detail.
// - Callbacks are `std::function`s. They run on ironhub's dispatcher threads; an exception thrown
//   by one is caught at the C boundary (it must never unwind into the library) and printed to
//   stderr. A `client` is destroyed only
//   after `ironhub_client_free` returned, so no callback can run on a destroyed function.
#ifndef IRONHUB_HPP
#define IRONHUB_HPP

#include <cstdint>
#include <cstdio>
#include <functional>
#include <memory>
#include <stdexcept>
#include <string>
#include <utility>
#include <vector>

#include "ironhub.h"

namespace ironhub {

/// A failed ironhub call: `code()` is the C result, `what()` its name and detail.
class error : public std::runtime_error {
public:
    error(ironhub_result code, const std::string &detail)
        : std::runtime_error(std::string(ironhub_result_str(code)) + (detail.empty() ? "" : ": " + detail)),
          code_(code) {}
    ironhub_result code() const noexcept { return code_; }

private:
    ironhub_result code_;
};

/// The calling thread's last error detail.
inline std::string last_error_message() {
    std::size_t need = ironhub_last_error_message(nullptr, 0);
    if (need == 0) return {};
    std::vector<char> buf(need);
    ironhub_last_error_message(buf.data(), buf.size());
    return std::string(buf.data());
}

inline void check(ironhub_result r) {
    if (r != IRONHUB_OK) throw error(r, last_error_message());
}

inline std::string version() { return ironhub_version(); }

namespace detail {
struct string_deleter {
    void operator()(char *s) const noexcept { ironhub_string_free(s); }
};
/// Takes ownership of a library-allocated string.
inline std::string take_string(char *s) {
    std::unique_ptr<char, string_deleter> owned(s);
    return owned ? std::string(owned.get()) : std::string();
}
inline std::string str_or_empty(const char *s) { return s ? std::string(s) : std::string(); }

/// Runs a user callback at the C boundary: nothing may propagate into the library.
template <typename F>
void guarded(F &&f) noexcept {
    try {
        f();
    } catch (const std::exception &e) {
        std::fprintf(stderr, "ironhub: exception in callback: %s\n", e.what());
    } catch (...) {
        std::fprintf(stderr, "ironhub: unknown exception in callback\n");
    }
}
}  // namespace detail

/// Factory options (see c-api.md); setters chain.
class options {
public:
    options() : h_(ironhub_options_new()) {
        if (!h_) throw error(IRONHUB_ERROR_PANIC, "ironhub_options_new failed");
    }
    options(options &&o) noexcept : h_(std::exchange(o.h_, nullptr)) {}
    options &operator=(options &&o) noexcept {
        if (this != &o) {
            ironhub_options_free(h_);
            h_ = std::exchange(o.h_, nullptr);
        }
        return *this;
    }
    options(const options &) = delete;
    options &operator=(const options &) = delete;
    ~options() { ironhub_options_free(h_); }

    options &server_verification_cert(const std::string &pem) { check(ironhub_options_set_server_verification_cert(h_, pem.c_str())); return *this; }
    options &gateway_hostname(const std::string &host) { check(ironhub_options_set_gateway_hostname(h_, host.c_str())); return *this; }
    options &websockets(bool on) { check(ironhub_options_set_websockets(h_, on)); return *this; }
    options &cipher(const std::string &list) { check(ironhub_options_set_cipher(h_, list.c_str())); return *this; }
    options &product_info(const std::string &info) { check(ironhub_options_set_product_info(h_, info.c_str())); return *this; }
    options &proxy(const std::string &type, const std::string &addr, std::uint16_t port, const char *user = nullptr, const char *pass = nullptr) {
        check(ironhub_options_set_proxy(h_, type.c_str(), addr.c_str(), port, user, pass));
        return *this;
    }
    options &sastoken_ttl(std::uint32_t s) { check(ironhub_options_set_sastoken_ttl(h_, s)); return *this; }
    options &keep_alive(std::uint32_t s) { check(ironhub_options_set_keep_alive(h_, s)); return *this; }
    options &auto_connect(bool on) { check(ironhub_options_set_auto_connect(h_, on)); return *this; }
    options &connection_retry(bool on) { check(ironhub_options_set_connection_retry(h_, on)); return *this; }
    options &connection_retry_interval(std::uint32_t s) { check(ironhub_options_set_connection_retry_interval(h_, s)); return *this; }
    options &ensure_desired_properties(bool on) { check(ironhub_options_set_ensure_desired_properties(h_, on)); return *this; }
    options &operation_timeout(std::uint32_t s) { check(ironhub_options_set_operation_timeout(h_, s)); return *this; }
    options &mqtt_port(std::uint16_t p) { check(ironhub_options_set_mqtt_port(h_, p)); return *this; }
    options &https_port(std::uint16_t p) { check(ironhub_options_set_https_port(h_, p)); return *this; }

    const ironhub_options *get() const noexcept { return h_; }

private:
    ironhub_options *h_;
};

/// Read access to a message: an owned `message` or one lent to a message callback.
class message_view {
public:
    explicit message_view(const ironhub_message *m) noexcept : m_(m) {}
    std::string data() const {
        std::size_t len = 0;
        const std::uint8_t *p = ironhub_message_data(m_, &len);
        return p ? std::string(reinterpret_cast<const char *>(p), len) : std::string();
    }
    std::string message_id() const { return detail::str_or_empty(ironhub_message_message_id(m_)); }
    std::string correlation_id() const { return detail::str_or_empty(ironhub_message_correlation_id(m_)); }
    std::string content_type() const { return detail::str_or_empty(ironhub_message_content_type(m_)); }
    std::string content_encoding() const { return detail::str_or_empty(ironhub_message_content_encoding(m_)); }
    std::string input_name() const { return detail::str_or_empty(ironhub_message_input_name(m_)); }
    /// Empty when absent.
    std::string property(const std::string &key) const { return detail::str_or_empty(ironhub_message_property(m_, key.c_str())); }
    std::vector<std::pair<std::string, std::string>> properties() const {
        std::vector<std::pair<std::string, std::string>> out;
        for (std::size_t i = 0, n = ironhub_message_property_count(m_); i < n; i++) {
            const char *k = nullptr, *v = nullptr;
            check(ironhub_message_property_at(m_, i, &k, &v));
            out.emplace_back(k, v);
        }
        return out;
    }
    const ironhub_message *get() const noexcept { return m_; }

protected:
    const ironhub_message *m_;
};

/// An owned message to send.
class message : public message_view {
public:
    explicit message(const std::string &payload) : message_view(make(payload)) {}
    message(message &&o) noexcept : message_view(std::exchange(o.m_, nullptr)) {}
    message &operator=(message &&o) noexcept {
        if (this != &o) {
            ironhub_message_free(mut());
            m_ = std::exchange(o.m_, nullptr);
        }
        return *this;
    }
    message(const message &) = delete;
    message &operator=(const message &) = delete;
    ~message() { ironhub_message_free(mut()); }

    message &message_id(const std::string &v) { check(ironhub_message_set_message_id(mut(), v.c_str())); return *this; }
    message &correlation_id(const std::string &v) { check(ironhub_message_set_correlation_id(mut(), v.c_str())); return *this; }
    message &user_id(const std::string &v) { check(ironhub_message_set_user_id(mut(), v.c_str())); return *this; }
    message &content_type(const std::string &v) { check(ironhub_message_set_content_type(mut(), v.c_str())); return *this; }
    message &content_encoding(const std::string &v) { check(ironhub_message_set_content_encoding(mut(), v.c_str())); return *this; }
    message &expiry_time_utc(const std::string &v) { check(ironhub_message_set_expiry_time_utc(mut(), v.c_str())); return *this; }
    message &output_name(const std::string &v) { check(ironhub_message_set_output_name(mut(), v.c_str())); return *this; }
    message &property(const std::string &k, const std::string &v) { check(ironhub_message_set_property(mut(), k.c_str(), v.c_str())); return *this; }
    using message_view::message_id;
    using message_view::correlation_id;
    using message_view::content_type;
    using message_view::content_encoding;
    using message_view::property;

private:
    static const ironhub_message *make(const std::string &payload) {
        ironhub_message *m = ironhub_message_new(reinterpret_cast<const std::uint8_t *>(payload.data()), payload.size());
        if (!m) throw error(IRONHUB_ERROR_INVALID_ARGUMENT, last_error_message());
        return m;
    }
    ironhub_message *mut() const noexcept { return const_cast<ironhub_message *>(m_); }
};

/// A device or module client.
class client {
public:
    using message_handler = std::function<void(const message_view &)>;
    using method_handler = std::function<void(const std::string &request_id, const std::string &name, const std::string &payload_json)>;
    using twin_patch_handler = std::function<void(const std::string &patch_json)>;
    using connection_state_handler = std::function<void(bool connected, ironhub_connection_reason reason)>;
    using sastoken_handler = std::function<void()>;
    using background_exception_handler = std::function<void(ironhub_result kind, const std::string &message)>;
    using send_handler = std::function<void(ironhub_result)>;

    static client from_connection_string(const std::string &cs, const options *o = nullptr) {
        ironhub_client *c = nullptr;
        check(ironhub_client_create_from_connection_string(cs.c_str(), opts(o), &c));
        return client(c);
    }
    static client from_sastoken(const std::string &token, const options *o = nullptr) {
        ironhub_client *c = nullptr;
        check(ironhub_client_create_from_sastoken(token.c_str(), opts(o), &c));
        return client(c);
    }
    static client from_symmetric_key(const std::string &key, const std::string &hostname, const std::string &device_id, const options *o = nullptr) {
        ironhub_client *c = nullptr;
        check(ironhub_client_create_from_symmetric_key(key.c_str(), hostname.c_str(), device_id.c_str(), opts(o), &c));
        return client(c);
    }
    static client from_x509_certificate(const std::string &cert_file, const std::string &key_file, const std::string &hostname,
                                        const std::string &device_id, const char *module_id = nullptr, const options *o = nullptr,
                                        const char *pass_phrase = nullptr) {
        ironhub_client *c = nullptr;
        check(ironhub_client_create_from_x509_certificate(cert_file.c_str(), key_file.c_str(), pass_phrase, hostname.c_str(),
                                                          device_id.c_str(), module_id, opts(o), &c));
        return client(c);
    }
    static client from_edge_environment(const options *o = nullptr) {
        ironhub_client *c = nullptr;
        check(ironhub_client_create_from_edge_environment(opts(o), &c));
        return client(c);
    }

    client(client &&o) noexcept { *this = std::move(o); }
    client &operator=(client &&o) noexcept {
        if (this != &o) {
            reset();
            c_ = std::exchange(o.c_, nullptr);
            handlers_ = std::move(o.handlers_);
        }
        return *this;
    }
    client(const client &) = delete;
    client &operator=(const client &) = delete;
    /// Frees the client first: after that no callback runs, so the handlers may be destroyed.
    ~client() { reset(); }

    void connect() { check(ironhub_client_connect(c_)); }
    void disconnect() { check(ironhub_client_disconnect(c_)); }
    void shutdown() { check(ironhub_client_shutdown(c_)); }
    bool connected() const noexcept { return ironhub_client_connected(c_); }
    void update_sastoken(const std::string &token) { check(ironhub_client_update_sastoken(c_, token.c_str())); }

    void send_message(const message_view &m) { check(ironhub_client_send_message(c_, m.get())); }
    void send_message_to_output(const message_view &m, const std::string &output) {
        check(ironhub_client_send_message_to_output(c_, m.get(), output.c_str()));
    }
    /// Returns at once; `done` runs exactly once on a dispatcher thread.
    void send_message_async(const message_view &m, send_handler done, const char *output_name = nullptr) {
        auto heap = std::make_unique<send_handler>(std::move(done));
        check(ironhub_client_send_message_async(c_, m.get(), output_name, &client::on_sent, heap.get()));
        heap.release();  // owned by the pending callback now, which deletes it
    }

    std::string get_twin() {
        char *json = nullptr;
        check(ironhub_client_get_twin(c_, &json));
        return detail::take_string(json);
    }
    void patch_twin_reported_properties(const std::string &patch_json) {
        check(ironhub_client_patch_twin_reported_properties(c_, patch_json.c_str()));
    }
    void send_method_response(const std::string &request_id, int32_t status, const std::string &payload_json = "null") {
        check(ironhub_client_send_method_response(c_, request_id.c_str(), status, payload_json.c_str()));
    }
    std::string invoke_method(const std::string &device_id, const char *module_id, const std::string &params_json) {
        char *json = nullptr;
        check(ironhub_client_invoke_method(c_, device_id.c_str(), module_id, params_json.c_str(), &json));
        return detail::take_string(json);
    }

    // Handlers: an empty std::function clears. The old function is destroyed only after the
    // library guaranteed it no longer runs (the C setter returned).
    void on_message_received(message_handler h) {
        set(handlers_->message, std::move(h), [this](message_handler *f) {
            check(ironhub_client_on_message_received(c_, f ? &client::message_tramp : nullptr, f));
        });
    }
    void on_method_request_received(method_handler h) {
        set(handlers_->method, std::move(h), [this](method_handler *f) {
            check(ironhub_client_on_method_request_received(c_, f ? &client::method_tramp : nullptr, f));
        });
    }
    void on_twin_desired_properties_patch_received(twin_patch_handler h) {
        set(handlers_->patch, std::move(h), [this](twin_patch_handler *f) {
            check(ironhub_client_on_twin_desired_properties_patch_received(c_, f ? &client::patch_tramp : nullptr, f));
        });
    }
    void on_connection_state_change(connection_state_handler h) {
        set(handlers_->state, std::move(h), [this](connection_state_handler *f) {
            check(ironhub_client_on_connection_state_change(c_, f ? &client::state_tramp : nullptr, f));
        });
    }
    void on_new_sastoken_required(sastoken_handler h) {
        set(handlers_->sastoken, std::move(h), [this](sastoken_handler *f) {
            check(ironhub_client_on_new_sastoken_required(c_, f ? &client::sastoken_tramp : nullptr, f));
        });
    }
    void on_background_exception(background_exception_handler h) {
        set(handlers_->background, std::move(h), [this](background_exception_handler *f) {
            check(ironhub_client_on_background_exception(c_, f ? &client::background_tramp : nullptr, f));
        });
    }

    ironhub_client *get() const noexcept { return c_; }

private:
    struct handler_set {
        std::unique_ptr<message_handler> message;
        std::unique_ptr<method_handler> method;
        std::unique_ptr<twin_patch_handler> patch;
        std::unique_ptr<connection_state_handler> state;
        std::unique_ptr<sastoken_handler> sastoken;
        std::unique_ptr<background_exception_handler> background;
    };

    explicit client(ironhub_client *c) : c_(c), handlers_(std::make_unique<handler_set>()) {}

    static const ironhub_options *opts(const options *o) { return o ? o->get() : nullptr; }

    void reset() noexcept {
        // NULL-safe; returns once no callback can run any more. From inside one of this client's
        // callbacks it refuses (IRONHUB_ERROR_IN_CALLBACK): then the handlers must stay alive, so
        // the client is left running rather than freed under its own callback.
        if (ironhub_client_free(c_) != IRONHUB_OK) {
            return;
        }
        c_ = nullptr;
        handlers_.reset();
    }

    template <typename H, typename Register>
    void set(std::unique_ptr<H> &slot, H h, Register reg) {
        std::unique_ptr<H> next = h ? std::make_unique<H>(std::move(h)) : nullptr;
        reg(next.get());
        slot = std::move(next);
    }

    static void on_sent(void *user_data, ironhub_result r) {
        std::unique_ptr<send_handler> f(static_cast<send_handler *>(user_data));
        detail::guarded([&] { if (*f) (*f)(r); });
    }
    static void message_tramp(void *u, const ironhub_message *m) {
        detail::guarded([&] { (*static_cast<message_handler *>(u))(message_view(m)); });
    }
    static void method_tramp(void *u, const char *rid, const char *name, const char *payload) {
        detail::guarded([&] { (*static_cast<method_handler *>(u))(rid, name, payload); });
    }
    static void patch_tramp(void *u, const char *patch) {
        detail::guarded([&] { (*static_cast<twin_patch_handler *>(u))(patch); });
    }
    static void state_tramp(void *u, bool connected, ironhub_connection_reason reason) {
        detail::guarded([&] { (*static_cast<connection_state_handler *>(u))(connected, reason); });
    }
    static void sastoken_tramp(void *u) {
        detail::guarded([&] { (*static_cast<sastoken_handler *>(u))(); });
    }
    static void background_tramp(void *u, ironhub_result kind, const char *msg) {
        detail::guarded([&] { (*static_cast<background_exception_handler *>(u))(kind, msg); });
    }

    ironhub_client *c_ = nullptr;
    std::unique_ptr<handler_set> handlers_;
};

}  // namespace ironhub

#endif  // IRONHUB_HPP

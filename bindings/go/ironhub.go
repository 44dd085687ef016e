// Package ironhub is a Go (cgo) binding of the ironhub C API (include/ironhub.h, docs/c-api.md):
// an Azure IoT Hub device and module client. It links libironhub built with the `capi` feature;
// point cgo at it with
//
//	CGO_CFLAGS="-I<repo>/include" CGO_LDFLAGS="-L<repo>/target/release -lironhub -Wl,-rpath,<repo>/target/release"
//
// or use pkg-config (`#cgo pkg-config: ironhub`, see ironhub.pc).
//
// Every handle (Options, Message, Client) is released with Close. Failures are *Error values
// carrying a Result code (compare with errors.Is(err, ErrShutDown) and friends). Operations that
// talk to the hub take a context: cancelling it returns ctx.Err() at once, while the call itself
// still ends within the client's operation timeout. Handlers run on ironhub's dispatcher
// threads, one at a time per client; once a handler is replaced or cleared, or the client closed,
// the old one never runs again.
package ironhub

/*
#cgo LDFLAGS: -lironhub
#include <stdlib.h>
#include "shim.h"
*/
import "C"

import (
	"context"
	"errors"
	"fmt"
	"runtime/cgo"
	"sync"
	"unsafe"
)

// Result is an ironhub_result code. It is also an error, so errors.Is(err, ErrShutDown) works.
type Result uint32

// Result codes (docs/c-api.md).
const (
	OK                    Result = C.IRONHUB_OK
	ErrNullParameter      Result = C.IRONHUB_ERROR_NULL_PARAMETER
	ErrInvalidArgument    Result = C.IRONHUB_ERROR_INVALID_ARGUMENT
	ErrClient             Result = C.IRONHUB_ERROR_CLIENT
	ErrConnectionFailed   Result = C.IRONHUB_ERROR_CONNECTION_FAILED
	ErrConnectionDropped  Result = C.IRONHUB_ERROR_CONNECTION_DROPPED
	ErrNoConnection       Result = C.IRONHUB_ERROR_NO_CONNECTION
	ErrCredential         Result = C.IRONHUB_ERROR_CREDENTIAL
	ErrOperationTimeout   Result = C.IRONHUB_ERROR_OPERATION_TIMEOUT
	ErrOperationCancelled Result = C.IRONHUB_ERROR_OPERATION_CANCELLED
	ErrService            Result = C.IRONHUB_ERROR_SERVICE
	ErrMessageTooLarge    Result = C.IRONHUB_ERROR_MESSAGE_TOO_LARGE
	ErrShutDown           Result = C.IRONHUB_ERROR_SHUT_DOWN
	ErrPanic              Result = C.IRONHUB_ERROR_PANIC
	ErrInCallback         Result = C.IRONHUB_ERROR_IN_CALLBACK
)

// String is the code's C name, e.g. "IRONHUB_ERROR_CREDENTIAL".
func (r Result) String() string { return C.GoString(C.ironhub_result_str(C.uint32_t(r))) }

// Error makes a bare code usable as an error (and as an errors.Is target).
func (r Result) Error() string { return r.String() }

// Reason is why the connection state changed (an IRONHUB_REASON_* value).
type Reason uint32

// Connection reasons, as azure-iot-sdk-c names them.
const (
	ReasonOK                 Reason = C.IRONHUB_REASON_OK
	ReasonExpiredSasToken    Reason = C.IRONHUB_REASON_EXPIRED_SAS_TOKEN
	ReasonDeviceDisabled     Reason = C.IRONHUB_REASON_DEVICE_DISABLED
	ReasonBadCredential      Reason = C.IRONHUB_REASON_BAD_CREDENTIAL
	ReasonRetryExpired       Reason = C.IRONHUB_REASON_RETRY_EXPIRED
	ReasonNoNetwork          Reason = C.IRONHUB_REASON_NO_NETWORK
	ReasonCommunicationError Reason = C.IRONHUB_REASON_COMMUNICATION_ERROR
	ReasonNoPingResponse     Reason = C.IRONHUB_REASON_NO_PING_RESPONSE
	ReasonClientClose        Reason = C.IRONHUB_REASON_CLIENT_CLOSE
)

// Error is a failed call: its code and the detail ironhub recorded (never a key or token).
type Error struct {
	Code   Result
	Detail string
}

func (e *Error) Error() string {
	if e.Detail == "" {
		return e.Code.String()
	}
	return fmt.Sprintf("%s: %s", e.Code, e.Detail)
}

// Is lets errors.Is(err, ErrShutDown) match an *Error with that code.
func (e *Error) Is(target error) bool {
	code, ok := target.(Result)
	return ok && code == e.Code
}

// IsCode reports whether err is an *Error with this code.
func IsCode(err error, code Result) bool {
	var e *Error
	return errors.As(err, &e) && e.Code == code
}

// lastError reads the detail on the calling OS thread; callers lock the goroutine to it.
func lastError(r C.ironhub_result) error {
	if Result(r) == OK {
		return nil
	}
	need := C.ironhub_last_error_message(nil, 0)
	detail := ""
	if need > 0 {
		buf := (*C.char)(C.malloc(need))
		defer C.free(unsafe.Pointer(buf))
		C.ironhub_last_error_message(buf, need)
		detail = C.GoString(buf)
	}
	return &Error{Code: Result(r), Detail: detail}
}

// call runs one C call and reads its error detail on the same OS thread (the detail is
// per-thread in C, and a goroutine may otherwise move between threads).
func call(f func() C.ironhub_result) error {
	var err error
	onThread(func() { err = lastError(f()) })
	return err
}

// callCtx runs a blocking C call on its own goroutine and returns when it ends or ctx is done
// (the C call then still ends within the client's operation timeout; its result is dropped).
// The goroutine owns args: it frees them once the C call is over, never before.
func callCtx(ctx context.Context, args cstrings, f func() C.ironhub_result) error {
	_, err := stringCallCtx(ctx, args, func(**C.char) C.ironhub_result { return f() })
	return err
}

// stringCallCtx is callCtx for a call that returns a string the caller owns (freed here).
func stringCallCtx(ctx context.Context, args cstrings, f func(out **C.char) C.ironhub_result) (string, error) {
	if err := ctx.Err(); err != nil {
		args.free()
		return "", err
	}
	type result struct {
		s   string
		err error
	}
	done := make(chan result, 1)
	go func() {
		defer args.free()
		var out *C.char
		err := call(func() C.ironhub_result { return f(&out) })
		r := result{err: err}
		if out != nil {
			r.s = takeString(out)
		}
		done <- r
	}()
	select {
	case r := <-done:
		return r.s, r.err
	case <-ctx.Done():
		return "", ctx.Err()
	}
}

// cstrings converts Go strings to C strings for one call and frees them afterwards.
type cstrings []*C.char

func (s *cstrings) str(v string) *C.char {
	p := C.CString(v)
	*s = append(*s, p)
	return p
}

// opt is str, with "" meaning NULL (not given).
func (s *cstrings) opt(v string) *C.char {
	if v == "" {
		return nil
	}
	return s.str(v)
}

func (s cstrings) free() {
	for _, p := range s {
		C.free(unsafe.Pointer(p))
	}
}

// Version is the library version.
func Version() string { return C.GoString(C.ironhub_version()) }

// ---------------------------------------------------------------------------------------------
// Options

// Options are the factory keyword options; factories copy them, so Close may follow at once.
type Options struct{ o *C.ironhub_options }

// NewOptions returns options holding every default.
func NewOptions() *Options { return &Options{o: C.ironhub_options_new()} }

// Close frees the options.
func (o *Options) Close() {
	C.ironhub_options_free(o.o)
	o.o = nil
}

func (o *Options) ptr() *C.ironhub_options {
	if o == nil {
		return nil
	}
	return o.o
}

// setString calls a C setter taking (handle, const char *) with a temporary C copy of v: the
// one body behind every string setter of Options and Message (cgo cannot take a C function as
// a Go value, hence the one-line closures around each C setter).
func setString[P any](h P, f func(P, *C.char) C.ironhub_result, v string) error {
	var s cstrings
	defer s.free()
	p := s.str(v)
	return call(func() C.ironhub_result { return f(h, p) })
}

func (o *Options) setString(f func(*C.ironhub_options, *C.char) C.ironhub_result, v string) error {
	return setString(o.o, f, v)
}

// SetServerVerificationCert trusts this PEM root instead of the public roots.
func (o *Options) SetServerVerificationCert(pem string) error {
	return o.setString(func(p *C.ironhub_options, s *C.char) C.ironhub_result {
		return C.ironhub_options_set_server_verification_cert(p, s)
	}, pem)
}

// SetGatewayHostname connects to this host (an IoT Edge gateway) instead of the hub.
func (o *Options) SetGatewayHostname(host string) error {
	return o.setString(func(p *C.ironhub_options, s *C.char) C.ironhub_result {
		return C.ironhub_options_set_gateway_hostname(p, s)
	}, host)
}

// SetCipher sets an OpenSSL-style cipher list (":"-separated).
func (o *Options) SetCipher(list string) error {
	return o.setString(func(p *C.ironhub_options, s *C.char) C.ironhub_result { return C.ironhub_options_set_cipher(p, s) }, list)
}

// SetProductInfo appends to the user agent (a "dtmi:" value is a Plug and Play model id).
func (o *Options) SetProductInfo(info string) error {
	return o.setString(func(p *C.ironhub_options, s *C.char) C.ironhub_result {
		return C.ironhub_options_set_product_info(p, s)
	}, info)
}

// SetWebsockets chooses MQTT over WebSockets (port 443).
func (o *Options) SetWebsockets(on bool) error {
	return call(func() C.ironhub_result { return C.ironhub_options_set_websockets(o.o, C.bool(on)) })
}

// SetProxy tunnels the connection through a proxy: proxyType is "HTTP", "SOCKS4" or "SOCKS5"
// (any case); user and password may be "".
func (o *Options) SetProxy(proxyType, addr string, port uint16, user, password string) error {
	var s cstrings
	defer s.free()
	t, a, u, p := s.str(proxyType), s.str(addr), s.opt(user), s.opt(password)
	return call(func() C.ironhub_result { return C.ironhub_options_set_proxy(o.o, t, a, C.uint16_t(port), u, p) })
}

// SetSasTokenTTL sets the lifetime of generated SAS tokens in seconds (refused by X.509 and
// SAS-token clients).
func (o *Options) SetSasTokenTTL(seconds uint32) error {
	return call(func() C.ironhub_result { return C.ironhub_options_set_sastoken_ttl(o.o, C.uint32_t(seconds)) })
}

// SetKeepAlive sets the MQTT keep-alive in seconds (1..1740).
func (o *Options) SetKeepAlive(seconds uint32) error {
	return call(func() C.ironhub_result { return C.ironhub_options_set_keep_alive(o.o, C.uint32_t(seconds)) })
}

// SetAutoConnect chooses whether operations connect first (default true).
func (o *Options) SetAutoConnect(on bool) error {
	return call(func() C.ironhub_result { return C.ironhub_options_set_auto_connect(o.o, C.bool(on)) })
}

// SetConnectionRetry chooses whether the client reconnects by itself (default true).
func (o *Options) SetConnectionRetry(on bool) error {
	return call(func() C.ironhub_result { return C.ironhub_options_set_connection_retry(o.o, C.bool(on)) })
}

// SetConnectionRetryInterval sets the seconds between reconnect attempts (> 0).
func (o *Options) SetConnectionRetryInterval(seconds uint32) error {
	return call(func() C.ironhub_result {
		return C.ironhub_options_set_connection_retry_interval(o.o, C.uint32_t(seconds))
	})
}

// SetEnsureDesiredProperties chooses whether the desired document is re-delivered after a
// reconnect when its version moved (default true).
func (o *Options) SetEnsureDesiredProperties(on bool) error {
	return call(func() C.ironhub_result { return C.ironhub_options_set_ensure_desired_properties(o.o, C.bool(on)) })
}

// SetPorts sets the MQTT and HTTPS ports (ironhub only; for emulators on other ports).
func (o *Options) SetPorts(mqtt, https uint16) error {
	if err := call(func() C.ironhub_result { return C.ironhub_options_set_mqtt_port(o.o, C.uint16_t(mqtt)) }); err != nil {
		return err
	}
	return call(func() C.ironhub_result { return C.ironhub_options_set_https_port(o.o, C.uint16_t(https)) })
}

// SetOperationTimeout bounds every blocking call (seconds, ironhub only).
func (o *Options) SetOperationTimeout(seconds uint32) error {
	return call(func() C.ironhub_result { return C.ironhub_options_set_operation_timeout(o.o, C.uint32_t(seconds)) })
}

// SetMaxQueuedMessages bounds the telemetry queued or in flight at once (ironhub only, > 0,
// default 1000); one send past it fails at once with ErrClient. Raise it for large async bursts.
func (o *Options) SetMaxQueuedMessages(count uint32) error {
	return call(func() C.ironhub_result { return C.ironhub_options_set_max_queued_messages(o.o, C.uint32_t(count)) })
}

// SetMaxQueuedBytes bounds the bytes (topic + payload) of that telemetry (ironhub only, > 0,
// default 4 MiB).
func (o *Options) SetMaxQueuedBytes(bytes uint64) error {
	return call(func() C.ironhub_result { return C.ironhub_options_set_max_queued_bytes(o.o, C.uint64_t(bytes)) })
}

// ---------------------------------------------------------------------------------------------
// Messages

// Message is an outgoing telemetry message.
type Message struct{ m *C.ironhub_message }

// NewMessage copies payload into a new message.
func NewMessage(payload []byte) *Message {
	var p *C.uint8_t
	if len(payload) > 0 {
		p = (*C.uint8_t)(unsafe.Pointer(&payload[0]))
	}
	return &Message{m: C.ironhub_message_new(p, C.size_t(len(payload)))}
}

// Close frees the message (sends copy it, so this may follow a send at once).
func (m *Message) Close() {
	C.ironhub_message_free(m.m)
	m.m = nil
}

func (m *Message) set(f func(*C.ironhub_message, *C.char) C.ironhub_result, v string) error {
	return setString(m.m, f, v)
}

// SetMessageID sets $.mid.
func (m *Message) SetMessageID(v string) error {
	return m.set(func(p *C.ironhub_message, s *C.char) C.ironhub_result { return C.ironhub_message_set_message_id(p, s) }, v)
}

// SetCorrelationID sets $.cid.
func (m *Message) SetCorrelationID(v string) error {
	return m.set(func(p *C.ironhub_message, s *C.char) C.ironhub_result {
		return C.ironhub_message_set_correlation_id(p, s)
	}, v)
}

// SetUserID sets $.uid.
func (m *Message) SetUserID(v string) error {
	return m.set(func(p *C.ironhub_message, s *C.char) C.ironhub_result { return C.ironhub_message_set_user_id(p, s) }, v)
}

// SetContentType sets $.ct.
func (m *Message) SetContentType(v string) error {
	return m.set(func(p *C.ironhub_message, s *C.char) C.ironhub_result {
		return C.ironhub_message_set_content_type(p, s)
	}, v)
}

// SetContentEncoding sets $.ce.
func (m *Message) SetContentEncoding(v string) error {
	return m.set(func(p *C.ironhub_message, s *C.char) C.ironhub_result {
		return C.ironhub_message_set_content_encoding(p, s)
	}, v)
}

// SetOutputName sets $.on, the module output.
func (m *Message) SetOutputName(v string) error {
	return m.set(func(p *C.ironhub_message, s *C.char) C.ironhub_result {
		return C.ironhub_message_set_output_name(p, s)
	}, v)
}

// SetExpiryTimeUTC sets $.exp: an RFC 3339 timestamp such as "2030-01-01T00:00:00Z".
func (m *Message) SetExpiryTimeUTC(v string) error {
	return m.set(func(p *C.ironhub_message, s *C.char) C.ironhub_result {
		return C.ironhub_message_set_expiry_time_utc(p, s)
	}, v)
}

// SetAsSecurityMessage marks the message for Azure Security Center for IoT.
func (m *Message) SetAsSecurityMessage() error {
	return call(func() C.ironhub_result { return C.ironhub_message_set_as_security_message(m.m) })
}

// SetProperty sets an application property (the key must not be empty).
func (m *Message) SetProperty(key, value string) error {
	var s cstrings
	defer s.free()
	k, v := s.str(key), s.str(value)
	return call(func() C.ironhub_result { return C.ironhub_message_set_property(m.m, k, v) })
}

// Property returns an application property ("" and false when absent).
func (m *Message) Property(key string) (string, bool) {
	var s cstrings
	defer s.free()
	v := C.ironhub_message_property(m.m, s.str(key))
	if v == nil {
		return "", false
	}
	return C.GoString(v), true
}

// Fields copies every field of the message into Go values.
func (m *Message) Fields() Received { return receivedFrom(m.m) }

// Received is a copy of a message: what a message handler gets, and Message.Fields.
type Received struct {
	Data            []byte
	MessageID       string
	CorrelationID   string
	UserID          string
	ContentType     string
	ContentEncoding string
	ExpiryTimeUTC   string
	OutputName      string
	InputName       string
	Ack             string
	Properties      map[string]string
}

func goStr(p *C.char) string {
	if p == nil {
		return ""
	}
	return C.GoString(p)
}

func receivedFrom(m *C.ironhub_message) Received {
	var n C.size_t
	data := C.ironhub_message_data(m, &n)
	r := Received{
		Data:            C.GoBytes(unsafe.Pointer(data), C.int(n)),
		MessageID:       goStr(C.ironhub_message_message_id(m)),
		CorrelationID:   goStr(C.ironhub_message_correlation_id(m)),
		UserID:          goStr(C.ironhub_message_user_id(m)),
		ContentType:     goStr(C.ironhub_message_content_type(m)),
		ContentEncoding: goStr(C.ironhub_message_content_encoding(m)),
		ExpiryTimeUTC:   goStr(C.ironhub_message_expiry_time_utc(m)),
		OutputName:      goStr(C.ironhub_message_output_name(m)),
		InputName:       goStr(C.ironhub_message_input_name(m)),
		Ack:             goStr(C.ironhub_message_ack(m)),
		Properties:      map[string]string{},
	}
	for i := C.size_t(0); i < C.ironhub_message_property_count(m); i++ {
		var k, v *C.char
		if C.ironhub_message_property_at(m, i, &k, &v) == C.IRONHUB_OK {
			r.Properties[C.GoString(k)] = C.GoString(v)
		}
	}
	return r
}

// MethodRequest is a direct method request delivered to a method handler.
type MethodRequest struct {
	RequestID   string
	Name        string
	PayloadJSON string
}

// ---------------------------------------------------------------------------------------------
// Client

// Client is a device or module client; safe for concurrent use (Close excepted: it must be the
// last call, and not from one of the client's own handlers).
type Client struct {
	c        *C.ironhub_client
	mu       sync.Mutex
	handlers map[string]cgo.Handle
}

func newClient(f func(out **C.ironhub_client) C.ironhub_result) (*Client, error) {
	var out *C.ironhub_client
	if err := call(func() C.ironhub_result { return f(&out) }); err != nil {
		return nil, err
	}
	return &Client{c: out, handlers: map[string]cgo.Handle{}}, nil
}

// NewFromConnectionString creates a client from a device or module connection string.
func NewFromConnectionString(cs string, opts *Options) (*Client, error) {
	var s cstrings
	defer s.free()
	p := s.str(cs)
	return newClient(func(out **C.ironhub_client) C.ironhub_result {
		return C.ironhub_client_create_from_connection_string(p, opts.ptr(), out)
	})
}

// NewFromSasToken creates a client from a SAS token; renew it with UpdateSasToken when the
// OnNewSasTokenRequired handler runs.
func NewFromSasToken(token string, opts *Options) (*Client, error) {
	var s cstrings
	defer s.free()
	p := s.str(token)
	return newClient(func(out **C.ironhub_client) C.ironhub_result {
		return C.ironhub_client_create_from_sastoken(p, opts.ptr(), out)
	})
}

// NewFromSymmetricKey creates a device client from its key, the hub host and the device id.
func NewFromSymmetricKey(key, hostname, deviceID string, opts *Options) (*Client, error) {
	var s cstrings
	defer s.free()
	k, h, d := s.str(key), s.str(hostname), s.str(deviceID)
	return newClient(func(out **C.ironhub_client) C.ironhub_result {
		return C.ironhub_client_create_from_symmetric_key(k, h, d, opts.ptr(), out)
	})
}

// NewFromX509Certificate creates a device (moduleID "") or module client authenticated by a
// certificate: PEM file paths; passPhrase may be "".
func NewFromX509Certificate(certFile, keyFile, passPhrase, hostname, deviceID, moduleID string, opts *Options) (*Client, error) {
	var s cstrings
	defer s.free()
	cf, kf, pp, h, d, m := s.str(certFile), s.str(keyFile), s.opt(passPhrase), s.str(hostname), s.str(deviceID), s.opt(moduleID)
	return newClient(func(out **C.ironhub_client) C.ironhub_result {
		return C.ironhub_client_create_from_x509_certificate(cf, kf, pp, h, d, m, opts.ptr(), out)
	})
}

// NewFromEdgeEnvironment creates a module client from the IoT Edge environment.
func NewFromEdgeEnvironment(opts *Options) (*Client, error) {
	return newClient(func(out **C.ironhub_client) C.ironhub_result {
		return C.ironhub_client_create_from_edge_environment(opts.ptr(), out)
	})
}

// Close shuts the client down and frees it; no handler runs after it returns. Calling it from
// one of the client's own handlers returns ErrInCallback and does nothing.
func (c *Client) Close() error {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.c == nil {
		return nil
	}
	if err := call(func() C.ironhub_result { return C.ironhub_client_free(c.c) }); err != nil {
		return err
	}
	c.c = nil
	for name, h := range c.handlers {
		h.Delete()
		delete(c.handlers, name)
	}
	return nil
}

// Connect connects and returns at CONNACK.
func (c *Client) Connect(ctx context.Context) error {
	return callCtx(ctx, nil, func() C.ironhub_result { return C.ironhub_client_connect(c.c) })
}

// Disconnect disconnects; in-flight work ends with ErrOperationCancelled.
func (c *Client) Disconnect(ctx context.Context) error {
	return callCtx(ctx, nil, func() C.ironhub_result { return C.ironhub_client_disconnect(c.c) })
}

// Shutdown stops the client for good (Close still has to be called).
func (c *Client) Shutdown(ctx context.Context) error {
	return callCtx(ctx, nil, func() C.ironhub_result { return C.ironhub_client_shutdown(c.c) })
}

// Connected reports whether the MQTT connection is up.
func (c *Client) Connected() bool { return bool(C.ironhub_client_connected(c.c)) }

// UpdateSasToken replaces the SAS token of a NewFromSasToken client.
func (c *Client) UpdateSasToken(ctx context.Context, token string) error {
	var s cstrings
	p := s.str(token)
	return callCtx(ctx, s, func() C.ironhub_result { return C.ironhub_client_update_sastoken(c.c, p) })
}

// SendMessage sends telemetry and returns at PUBACK.
func (c *Client) SendMessage(ctx context.Context, m *Message) error {
	return callCtx(ctx, nil, func() C.ironhub_result { return C.ironhub_client_send_message(c.c, m.m) })
}

// SendMessageToOutput sends a module's message to an output and returns at PUBACK.
func (c *Client) SendMessageToOutput(ctx context.Context, m *Message, outputName string) error {
	var s cstrings
	o := s.str(outputName)
	return callCtx(ctx, s, func() C.ironhub_result { return C.ironhub_client_send_message_to_output(c.c, m.m, o) })
}

// SendMessageAsync queues telemetry (outputName "" for none); done runs exactly once, on a
// dispatcher thread, unless SendMessageAsync itself returned an error.
func (c *Client) SendMessageAsync(m *Message, outputName string, done func(error)) error {
	var s cstrings
	defer s.free()
	out := s.opt(outputName)
	h := cgo.NewHandle(done)
	err := call(func() C.ironhub_result { return C.ironhub_go_send_async(c.c, m.m, out, C.uintptr_t(h)) })
	if err != nil {
		h.Delete() // the callback will never run
	}
	return err
}

func takeString(p *C.char) string {
	defer C.ironhub_string_free(p)
	return C.GoString(p)
}

// GetTwin returns the twin JSON {"desired": {...}, "reported": {...}}.
func (c *Client) GetTwin(ctx context.Context) (string, error) {
	return stringCallCtx(ctx, nil, func(out **C.char) C.ironhub_result { return C.ironhub_client_get_twin(c.c, out) })
}

// PatchTwinReportedProperties sends a reported-properties patch (a JSON object).
func (c *Client) PatchTwinReportedProperties(ctx context.Context, patchJSON string) error {
	var s cstrings
	p := s.str(patchJSON)
	return callCtx(ctx, s, func() C.ironhub_result { return C.ironhub_client_patch_twin_reported_properties(c.c, p) })
}

// SendMethodResponse answers a method request ("" payload sends null).
func (c *Client) SendMethodResponse(ctx context.Context, requestID string, status int32, payloadJSON string) error {
	var s cstrings
	r, p := s.str(requestID), s.opt(payloadJSON)
	return callCtx(ctx, s, func() C.ironhub_result { return C.ironhub_client_send_method_response(c.c, r, C.int32_t(status), p) })
}

// InvokeMethod invokes a direct method on another device (moduleID "") or module through the
// Edge hub. paramsJSON: {"methodName", "payload", "responseTimeoutInSeconds",
// "connectTimeoutInSeconds"}; the result is {"status": int, "payload": ...}.
func (c *Client) InvokeMethod(ctx context.Context, deviceID, moduleID, paramsJSON string) (string, error) {
	var s cstrings
	d, m, p := s.str(deviceID), s.opt(moduleID), s.str(paramsJSON)
	return stringCallCtx(ctx, s, func(out **C.char) C.ironhub_result { return C.ironhub_client_invoke_method(c.c, d, m, p, out) })
}

// setHandler registers (f non-nil) or clears a handler, replacing the previous cgo handle only
// after the C setter returned (from then on the old one is never called).
func (c *Client) setHandler(name string, f any, register func(C.uintptr_t) C.ironhub_result) error {
	c.mu.Lock()
	defer c.mu.Unlock()
	var h cgo.Handle
	if f != nil {
		h = cgo.NewHandle(f)
	}
	if err := call(func() C.ironhub_result { return register(C.uintptr_t(h)) }); err != nil {
		if h != 0 {
			h.Delete()
		}
		return err
	}
	if old, ok := c.handlers[name]; ok {
		old.Delete()
		delete(c.handlers, name)
	}
	if h != 0 {
		c.handlers[name] = h
	}
	return nil
}

// orNil keeps a nil func a nil interface (a typed nil func would look set).
func orNil[F any](f F, isNil bool) any {
	if isNil {
		return nil
	}
	return f
}

// OnMethodRequestReceived sets (nil clears) the direct method handler; answer with
// SendMethodResponse, from the handler or later.
func (c *Client) OnMethodRequestReceived(f func(MethodRequest)) error {
	return c.setHandler("method", orNil(f, f == nil), func(h C.uintptr_t) C.ironhub_result { return C.ironhub_go_on_method(c.c, h) })
}

// OnTwinDesiredPropertiesPatchReceived sets (nil clears) the desired-patch handler.
func (c *Client) OnTwinDesiredPropertiesPatchReceived(f func(patchJSON string)) error {
	return c.setHandler("patch", orNil(f, f == nil), func(h C.uintptr_t) C.ironhub_result { return C.ironhub_go_on_twin_patch(c.c, h) })
}

// OnMessageReceived sets (nil clears) the C2D / input message handler.
func (c *Client) OnMessageReceived(f func(Received)) error {
	return c.setHandler("message", orNil(f, f == nil), func(h C.uintptr_t) C.ironhub_result { return C.ironhub_go_on_message(c.c, h) })
}

// OnConnectionStateChange sets (nil clears) the connection state handler.
func (c *Client) OnConnectionStateChange(f func(connected bool, reason Reason)) error {
	return c.setHandler("state", orNil(f, f == nil), func(h C.uintptr_t) C.ironhub_result {
		return C.ironhub_go_on_connection_state(c.c, h)
	})
}

// OnNewSasTokenRequired sets (nil clears) the handler called 120 s before a user-supplied SAS
// token expires.
func (c *Client) OnNewSasTokenRequired(f func()) error {
	return c.setHandler("sastoken", orNil(f, f == nil), func(h C.uintptr_t) C.ironhub_result { return C.ironhub_go_on_sastoken(c.c, h) })
}

// OnBackgroundException sets (nil clears) the handler for errors no caller waited for.
func (c *Client) OnBackgroundException(f func(error)) error {
	return c.setHandler("background", orNil(f, f == nil), func(h C.uintptr_t) C.ironhub_result {
		return C.ironhub_go_on_background_exception(c.c, h)
	})
}

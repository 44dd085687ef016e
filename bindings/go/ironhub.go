// Package ironhub is a Go (cgo) binding of the ironhub C API: an Azure IoT Hub device and module
// client. It links libironhub; point cgo at it with
//
//	CGO_CFLAGS="-I<repo>/include" CGO_LDFLAGS="-L<repo>/target/release -lironhub -Wl,-rpath,<repo>/target/release"
//
// or use pkg-config (`#cgo pkg-config: ironhub`, see ironhub.pc).
//
// Every handle (Options, Message, Client) must be released with Close. Callbacks run on
// ironhub's dispatcher threads; after a handler is cleared or the client closed they never run
// again.
package ironhub

/*
#cgo LDFLAGS: -lironhub
#include <stdlib.h>
#include "shim.h"
*/
import "C"

import (
	"errors"
	"fmt"
	"runtime/cgo"
	"sync"
	"unsafe"
)

// Result is an ironhub_result code.
type Result uint32

// Result codes (c-api.md).
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
)

// String is the code's C name, e.g. "IRONHUB_ERROR_CREDENTIAL".
func (r Result) String() string { return C.GoString(C.ironhub_result_str(C.uint32_t(r))) }

// Error is a failed call: its code and the detail ironhub recorded.
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

// Version is the library version.
func Version() string { return C.GoString(C.ironhub_version()) }

func cstr(s string) *C.char { return C.CString(s) }

// Options are the factory keyword options.
type Options struct{ o *C.ironhub_options }

// NewOptions returns options holding every default.
func NewOptions() *Options { return &Options{o: C.ironhub_options_new()} }

// Close frees the options (clients keep their own copy).
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

func (o *Options) setString(f func(*C.ironhub_options, *C.char) C.ironhub_result, v string) error {
	cs := cstr(v)
	defer C.free(unsafe.Pointer(cs))
	return call(func() C.ironhub_result { return f(o.o, cs) })
}

// SetServerVerificationCert trusts this PEM root instead of the public roots.
func (o *Options) SetServerVerificationCert(pem string) error {
	return o.setString(func(p *C.ironhub_options, s *C.char) C.ironhub_result {
		return C.ironhub_options_set_server_verification_cert(p, s)
	}, pem)
}

// SetProductInfo appends to the user agent (a "dtmi:" value is a Plug and Play model id).
func (o *Options) SetProductInfo(info string) error {
	return o.setString(func(p *C.ironhub_options, s *C.char) C.ironhub_result {
		return C.ironhub_options_set_product_info(p, s)
	}, info)
}

// SetKeepAlive sets the MQTT keep-alive in seconds (1..1740).
func (o *Options) SetKeepAlive(seconds uint32) error {
	return call(func() C.ironhub_result { return C.ironhub_options_set_keep_alive(o.o, C.uint32_t(seconds)) })
}

// SetAutoConnect chooses whether operations connect first (default true).
func (o *Options) SetAutoConnect(on bool) error {
	return call(func() C.ironhub_result { return C.ironhub_options_set_auto_connect(o.o, C.bool(on)) })
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
	cs := cstr(v)
	defer C.free(unsafe.Pointer(cs))
	return call(func() C.ironhub_result { return f(m.m, cs) })
}

// SetMessageID sets $.mid.
func (m *Message) SetMessageID(v string) error {
	return m.set(func(p *C.ironhub_message, s *C.char) C.ironhub_result { return C.ironhub_message_set_message_id(p, s) }, v)
}

// SetContentType sets $.ct.
func (m *Message) SetContentType(v string) error {
	return m.set(func(p *C.ironhub_message, s *C.char) C.ironhub_result {
		return C.ironhub_message_set_content_type(p, s)
	}, v)
}

// SetProperty sets an application property.
func (m *Message) SetProperty(key, value string) error {
	k, v := cstr(key), cstr(value)
	defer C.free(unsafe.Pointer(k))
	defer C.free(unsafe.Pointer(v))
	return call(func() C.ironhub_result { return C.ironhub_message_set_property(m.m, k, v) })
}

// Property returns an application property ("" and false when absent).
func (m *Message) Property(key string) (string, bool) {
	k := cstr(key)
	defer C.free(unsafe.Pointer(k))
	v := C.ironhub_message_property(m.m, k)
	if v == nil {
		return "", false
	}
	return C.GoString(v), true
}

// Received is a copy of a message delivered to a message handler.
type Received struct {
	Data       []byte
	InputName  string
	Properties map[string]string
}

func receivedFrom(m *C.ironhub_message) Received {
	var n C.size_t
	data := C.ironhub_message_data(m, &n)
	r := Received{Data: C.GoBytes(unsafe.Pointer(data), C.int(n)), Properties: map[string]string{}}
	if in := C.ironhub_message_input_name(m); in != nil {
		r.InputName = C.GoString(in)
	}
	for i := C.size_t(0); i < C.ironhub_message_property_count(m); i++ {
		var k, v *C.char
		if C.ironhub_message_property_at(m, i, &k, &v) == C.IRONHUB_OK {
			r.Properties[C.GoString(k)] = C.GoString(v)
		}
	}
	return r
}

// Client is a device or module client; safe for concurrent use.
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
	s := cstr(cs)
	defer C.free(unsafe.Pointer(s))
	return newClient(func(out **C.ironhub_client) C.ironhub_result {
		return C.ironhub_client_create_from_connection_string(s, opts.ptr(), out)
	})
}

// NewFromSymmetricKey creates a device client from its key, the hub host and the device id.
func NewFromSymmetricKey(key, hostname, deviceID string, opts *Options) (*Client, error) {
	k, h, d := cstr(key), cstr(hostname), cstr(deviceID)
	defer C.free(unsafe.Pointer(k))
	defer C.free(unsafe.Pointer(h))
	defer C.free(unsafe.Pointer(d))
	return newClient(func(out **C.ironhub_client) C.ironhub_result {
		return C.ironhub_client_create_from_symmetric_key(k, h, d, opts.ptr(), out)
	})
}

// Close shuts the client down and frees it; no callback runs after it returns.
func (c *Client) Close() {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.c == nil {
		return
	}
	C.ironhub_client_free(c.c)
	c.c = nil
	for name, h := range c.handlers {
		h.Delete()
		delete(c.handlers, name)
	}
}

// Connect connects and returns at CONNACK.
func (c *Client) Connect() error {
	return call(func() C.ironhub_result { return C.ironhub_client_connect(c.c) })
}

// Disconnect disconnects; in-flight work ends with ErrOperationCancelled.
func (c *Client) Disconnect() error {
	return call(func() C.ironhub_result { return C.ironhub_client_disconnect(c.c) })
}

// Shutdown stops the client for good (Close still has to be called).
func (c *Client) Shutdown() error {
	return call(func() C.ironhub_result { return C.ironhub_client_shutdown(c.c) })
}

// Connected reports whether the MQTT connection is up.
func (c *Client) Connected() bool { return bool(C.ironhub_client_connected(c.c)) }

// SendMessage sends telemetry and returns at PUBACK.
func (c *Client) SendMessage(m *Message) error {
	return call(func() C.ironhub_result { return C.ironhub_client_send_message(c.c, m.m) })
}

// SendMessageAsync queues telemetry; done runs exactly once, on a dispatcher thread.
func (c *Client) SendMessageAsync(m *Message, outputName string, done func(error)) error {
	var out *C.char
	if outputName != "" {
		out = cstr(outputName)
		defer C.free(unsafe.Pointer(out))
	}
	h := cgo.NewHandle(done)
	err := call(func() C.ironhub_result { return C.ironhub_go_send_async(c.c, m.m, out, C.uintptr_t(h)) })
	if err != nil {
		h.Delete() // the callback will never run
	}
	return err
}

// GetTwin returns the twin JSON {"desired": {...}, "reported": {...}}.
func (c *Client) GetTwin() (string, error) {
	var out *C.char
	if err := call(func() C.ironhub_result { return C.ironhub_client_get_twin(c.c, &out) }); err != nil {
		return "", err
	}
	defer C.ironhub_string_free(out)
	return C.GoString(out), nil
}

// PatchTwinReportedProperties sends a reported-properties patch (a JSON object).
func (c *Client) PatchTwinReportedProperties(patchJSON string) error {
	p := cstr(patchJSON)
	defer C.free(unsafe.Pointer(p))
	return call(func() C.ironhub_result { return C.ironhub_client_patch_twin_reported_properties(c.c, p) })
}

// SendMethodResponse answers a method request ("" payload sends null).
func (c *Client) SendMethodResponse(requestID string, status int32, payloadJSON string) error {
	r := cstr(requestID)
	defer C.free(unsafe.Pointer(r))
	var p *C.char
	if payloadJSON != "" {
		p = cstr(payloadJSON)
		defer C.free(unsafe.Pointer(p))
	}
	return call(func() C.ironhub_result { return C.ironhub_client_send_method_response(c.c, r, C.int32_t(status), p) })
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

// OnMethodRequestReceived sets (nil clears) the direct method handler.
func (c *Client) OnMethodRequestReceived(f func(requestID, name, payloadJSON string)) error {
	var v any
	if f != nil {
		v = f
	}
	return c.setHandler("method", v, func(h C.uintptr_t) C.ironhub_result { return C.ironhub_go_on_method(c.c, h) })
}

// OnTwinDesiredPropertiesPatchReceived sets (nil clears) the desired-patch handler.
func (c *Client) OnTwinDesiredPropertiesPatchReceived(f func(patchJSON string)) error {
	var v any
	if f != nil {
		v = f
	}
	return c.setHandler("patch", v, func(h C.uintptr_t) C.ironhub_result { return C.ironhub_go_on_twin_patch(c.c, h) })
}

// OnMessageReceived sets (nil clears) the C2D / input message handler.
func (c *Client) OnMessageReceived(f func(Received)) error {
	var v any
	if f != nil {
		v = f
	}
	return c.setHandler("message", v, func(h C.uintptr_t) C.ironhub_result { return C.ironhub_go_on_message(c.c, h) })
}

// OnConnectionStateChange sets (nil clears) the connection state handler; reason is an
// IRONHUB_REASON_* value.
func (c *Client) OnConnectionStateChange(f func(connected bool, reason uint32)) error {
	var v any
	if f != nil {
		v = f
	}
	return c.setHandler("state", v, func(h C.uintptr_t) C.ironhub_result { return C.ironhub_go_on_connection_state(c.c, h) })
}

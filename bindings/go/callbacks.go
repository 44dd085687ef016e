package ironhub

// The Go functions C calls back (declared to C through _cgo_export.h, used by callbacks.c).
// This file holds //export functions, so its preamble has declarations only. Each runs on an
// ironhub dispatcher thread, one at a time per client; its arguments are copied into Go values
// before the Go handler sees them (C lends them for the call only).

/*
#include "ironhub.h"
*/
import "C"

import (
	"runtime"
	"runtime/cgo"
	"unsafe"
)

// onThread runs f with the goroutine pinned to one OS thread (for per-thread error details).
func onThread(f func()) {
	runtime.LockOSThread()
	defer runtime.UnlockOSThread()
	f()
}

//export goSendDone
func goSendDone(userData unsafe.Pointer, result C.ironhub_result) {
	h := cgo.Handle(uintptr(userData))
	done := h.Value().(func(error))
	h.Delete() // exactly once: this handle is never used again
	var err error
	if Result(result) != OK {
		err = &Error{Code: Result(result)}
	}
	done(err)
}

//export goMethodRequest
func goMethodRequest(userData unsafe.Pointer, requestID, name, payload *C.char) {
	f := cgo.Handle(uintptr(userData)).Value().(func(MethodRequest))
	f(MethodRequest{RequestID: C.GoString(requestID), Name: C.GoString(name), PayloadJSON: C.GoString(payload)})
}

//export goTwinPatch
func goTwinPatch(userData unsafe.Pointer, patch *C.char) {
	f := cgo.Handle(uintptr(userData)).Value().(func(string))
	f(C.GoString(patch))
}

//export goMessage
func goMessage(userData unsafe.Pointer, m *C.ironhub_message) {
	f := cgo.Handle(uintptr(userData)).Value().(func(Received))
	f(receivedFrom(m))
}

//export goConnectionState
func goConnectionState(userData unsafe.Pointer, connected C.bool, reason C.ironhub_connection_reason) {
	f := cgo.Handle(uintptr(userData)).Value().(func(bool, Reason))
	f(bool(connected), Reason(reason))
}

//export goSasTokenRequired
func goSasTokenRequired(userData unsafe.Pointer) {
	f := cgo.Handle(uintptr(userData)).Value().(func())
	f()
}

//export goBackgroundException
func goBackgroundException(userData unsafe.Pointer, kind C.ironhub_result, message *C.char) {
	f := cgo.Handle(uintptr(userData)).Value().(func(error))
	f(&Error{Code: Result(kind), Detail: C.GoString(message)})
}

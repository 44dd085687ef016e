// C side of the Go binding's callbacks: the trampolines hand ironhub's calls to the Go functions
// exported in callbacks.go, with the cgo.Handle (an integer) carried as user_data. A zero handle
// clears the callback.
#include <stdint.h>

#include "_cgo_export.h"
#include "shim.h"

ironhub_result ironhub_go_send_async(ironhub_client *c, const ironhub_message *m, const char *output_name, uintptr_t h) {
    return ironhub_client_send_message_async(c, m, output_name, (ironhub_send_callback)goSendDone, (void *)h);
}

ironhub_result ironhub_go_on_method(ironhub_client *c, uintptr_t h) {
    return ironhub_client_on_method_request_received(c, h ? (ironhub_method_callback)goMethodRequest : NULL, (void *)h);
}

ironhub_result ironhub_go_on_twin_patch(ironhub_client *c, uintptr_t h) {
    return ironhub_client_on_twin_desired_properties_patch_received(c, h ? (ironhub_twin_patch_callback)goTwinPatch : NULL, (void *)h);
}

ironhub_result ironhub_go_on_message(ironhub_client *c, uintptr_t h) {
    return ironhub_client_on_message_received(c, h ? (ironhub_message_callback)goMessage : NULL, (void *)h);
}

ironhub_result ironhub_go_on_connection_state(ironhub_client *c, uintptr_t h) {
    return ironhub_client_on_connection_state_change(c, h ? (ironhub_connection_state_callback)goConnectionState : NULL, (void *)h);
}

ironhub_result ironhub_go_on_sastoken(ironhub_client *c, uintptr_t h) {
    return ironhub_client_on_new_sastoken_required(c, h ? (ironhub_sastoken_callback)goSasTokenRequired : NULL, (void *)h);
}

ironhub_result ironhub_go_on_background_exception(ironhub_client *c, uintptr_t h) {
    return ironhub_client_on_background_exception(c, h ? (ironhub_background_exception_callback)goBackgroundException : NULL, (void *)h);
}

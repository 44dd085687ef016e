// Declarations shared by the Go files and callbacks.c: one trampoline per C callback type, each
// registering the Go function exported in callbacks.go with a cgo.Handle as user_data.
#ifndef IRONHUB_GO_SHIM_H
#define IRONHUB_GO_SHIM_H
#include <stdint.h>
#include "ironhub.h"

ironhub_result ironhub_go_send_async(ironhub_client *c, const ironhub_message *m, const char *output_name, uintptr_t h);
ironhub_result ironhub_go_on_method(ironhub_client *c, uintptr_t h);
ironhub_result ironhub_go_on_twin_patch(ironhub_client *c, uintptr_t h);
ironhub_result ironhub_go_on_message(ironhub_client *c, uintptr_t h);
ironhub_result ironhub_go_on_connection_state(ironhub_client *c, uintptr_t h);
ironhub_result ironhub_go_on_sastoken(ironhub_client *c, uintptr_t h);
ironhub_result ironhub_go_on_background_exception(ironhub_client *c, uintptr_t h);
#endif

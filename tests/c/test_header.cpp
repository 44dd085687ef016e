// The header compiles as C++ (extern "C", no C-only constructs) and is idempotent.
#include "ironhub.h"
#include "ironhub.h"

#include <cstdio>
#include <cstring>

int main() {
    ironhub_result r = IRONHUB_ERROR_PANIC;
    static_assert(sizeof(ironhub_result) == 4, "ironhub_result is a uint32_t");
    if (std::strcmp(ironhub_version(), IRONHUB_VERSION) != 0) return 1;
    std::printf("version %s %s\n", ironhub_version(), ironhub_result_str(r));
    return 0;
}

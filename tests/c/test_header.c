/* The header stands alone, is idempotent (included twice) and is valid C11 under -pedantic. */
#include "ironhub.h"
#include "ironhub.h"

#include <stdio.h>
#include <string.h>

int main(void) {
    ironhub_result r = IRONHUB_OK;
    ironhub_connection_reason why = IRONHUB_REASON_CLIENT_CLOSE;
    (void)why;
    if (strcmp(ironhub_version(), IRONHUB_VERSION) != 0) return 1;
    printf("version %s (%d.%d.%d) %s\n", ironhub_version(), IRONHUB_VERSION_MAJOR, IRONHUB_VERSION_MINOR,
           IRONHUB_VERSION_PATCH, ironhub_result_str(r));
    return 0;
}

/* SPDX-License-Identifier: Apache-2.0 */
/* libFuzzer target for the LUKS parser: clang -fsanitize=fuzzer (meson -Dfuzz=true).
 * Seeds: tests/image/crypto/corpus/luks-*. */
#include <stddef.h>
#include <stdint.h>

#include "common/log.h"
#include "image/luks.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    return luks_fuzz_one(data, size);
}

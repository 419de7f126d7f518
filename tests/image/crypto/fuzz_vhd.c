/* SPDX-License-Identifier: Apache-2.0 */
/* libFuzzer target for the VHD parser: clang -fsanitize=fuzzer (meson -Dfuzz=true).
 * Seeds: tests/image/crypto/corpus/vhd-*. */
#include <stddef.h>
#include <stdint.h>

#include "common/log.h"
#include "image/vhd.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    return vhd_fuzz_one(data, size);
}

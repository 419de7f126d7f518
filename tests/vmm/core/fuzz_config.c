/* SPDX-License-Identifier: Apache-2.0 */
/*
 * Fuzz target: --config JSON documents. A document the parser accepts must
 * survive the API's round trip (to JSON and back) unchanged in its counts.
 */
#include <json-c/json.h>
#include <stdint.h>
#include <stdlib.h>

#include "vmm/config.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    struct json_tokener *tok = json_tokener_new();
    struct vm_config cfg, back;
    json_object *root, *again;
    char err[256];

    if (!tok)
        return 0;
    root = json_tokener_parse_ex(tok, (const char *)data, (int)(size > 65536 ? 65536 : size));
    json_tokener_free(tok);
    if (!root)
        return 0;
    vm_config_init(&cfg);
    if (vm_config_parse_json(&cfg, root, err, sizeof(err)) == 0) {
        again = vm_config_to_json(&cfg);
        vm_config_init(&back);
        if (!again || vm_config_parse_json(&back, again, err, sizeof(err)) != 0 ||
            back.n_disks != cfg.n_disks || back.n_nets != cfg.n_nets ||
            back.mem_size != cfg.mem_size || back.cpus_boot != cfg.cpus_boot)
            abort();
        json_object_put(again);
        vm_config_free(&back);
    }
    vm_config_free(&cfg);
    json_object_put(root);
    return 0;
}

#include "fuzz_replay.h"

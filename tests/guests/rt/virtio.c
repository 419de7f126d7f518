#include "virtio.h"

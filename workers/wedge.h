/* wedge: the test-only kind that blocks the transfer thread (see wedge.c). */
#pragma once

#include "kind.h"

extern const JobKind wedge_kind;

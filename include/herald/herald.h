/* SPDX-License-Identifier: MIT */
/* Herald umbrella header. */
#ifndef HERALD_H
#define HERALD_H
#include "status.h"
#include "protocol.h"
#if __has_include("client.h")
#include "client.h"
#endif
#endif

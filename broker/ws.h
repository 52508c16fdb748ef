/* SPDX-License-Identifier: MIT */
/* The WebSocket transport (RFC 6455 via wslay) with its HTTP upgrade and HTTP endpoints. */
#ifndef HERALD_BROKER_WS_H
#define HERALD_BROKER_WS_H

#include "server.h"

/** The transport; main.c points hr__ws_transport at it to enable the --ws-port listener. */
extern const hr_transport_t hr__websocket_transport;

#endif

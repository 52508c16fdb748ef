/* SPDX-License-Identifier: MIT */
/* Status codes: names and messages generated from HR_STATUS_MAP. */
#include <uv.h>

#include "herald/status.h"

#define HR__WIRE_MAX 13 /* the highest wire ERR code */

const char *hr_strerror(int status)
{
    switch (status) {
    case HR_OK:
        return "success";
#define XX(name, code, msg)                                                                        \
    case HR_##name:                                                                                \
        return msg;
        HR_STATUS_MAP(XX)
#undef XX
    default:
        return status < 0 && status > -HR__STATUS_BASE ? uv_strerror(status) : "unknown status";
    }
}

const char *hr_err_name(int status)
{
    switch (status) {
    case HR_OK:
        return "HR_OK";
#define XX(name, code, msg)                                                                        \
    case HR_##name:                                                                                \
        return "HR_" #name;
        HR_STATUS_MAP(XX)
#undef XX
    default:
        return status < 0 && status > -HR__STATUS_BASE ? uv_err_name(status) : "HR_UNKNOWN";
    }
}

unsigned hr_status_to_wire(int status)
{
    int code = -status - HR__STATUS_BASE;
    return code >= 1 && code <= HR__WIRE_MAX ? (unsigned)code : 0;
}

int hr_status_from_wire(unsigned code)
{
    return code >= 1 && code <= HR__WIRE_MAX ? -(HR__STATUS_BASE + (int)code) : HR_EPROTO;
}

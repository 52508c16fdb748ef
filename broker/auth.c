/* SPDX-License-Identifier: MIT */
/* Authentication and authorization. With nothing configured every client may do everything. */
#include "auth.h"
#include "server.h"

int hr__auth_init(hr_server_t *s)
{
    return HR_OK;
}

void hr__auth_destroy(hr_server_t *s)
{
}

int hr__auth_hello(hr_conn_t *c, hr_slice_t token, const char **why)
{
    c->auth = NULL; /* no restrictions */
    return HR_OK;
}

int hr__auth_allowed(const hr_conn_t *c, int action, hr_slice_t t)
{
    return c->auth == NULL;
}

void hr__auth_conn_free(hr_conn_t *c)
{
    c->auth = NULL;
}

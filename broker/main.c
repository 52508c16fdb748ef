/* SPDX-License-Identifier: MIT */
/* herald: the broker's entry point. */
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>

#include "cluster.h"
#include "link.h"
#include "log.h"
#include "node.h"
#include "server.h"
#include "ws.h"

int main(int argc, char **argv)
{
    hr_config_t cfg;
    static hr_server_t srv; /* large (read buffer): not on the stack */
    int r;

    hr__ws_transport = &hr__websocket_transport;
    hr__config_defaults(&cfg);
    r = hr__config_args(&cfg, argc, argv);
    if (r != 0)
        return r > 0 ? 0 : 1;
    hr__log_level = hr__log_parse_level(cfg.log_level);
    int worker = hr__worker_setup(&cfg);
    if (worker < 0)
        return 1;
    if (!worker && cfg.workers == 0) {
        uv_cpu_info_t *cpus;
        int ncpu = 1;
        if (uv_cpu_info(&cpus, &ncpu) == 0)
            uv_free_cpu_info(cpus, ncpu);
        cfg.workers = ncpu > 1 ? (ncpu > HR_CLUSTER_MAX ? HR_CLUSTER_MAX : ncpu) : 1;
    }
    if (!worker && cfg.workers > 1) {
        signal(SIGPIPE, SIG_IGN);
        return hr__primary_run(&cfg, argc, argv);
    }
    signal(SIGPIPE, SIG_IGN);
    signal(SIGHUP, SIG_IGN); /* until the server's handler logs it */
    if (worker)
        signal(SIGINT, SIG_IGN); /* the primary turns a Ctrl-C into SIGTERM for every worker */

    /*
     * A broker that cannot start says why in one line on stderr (printed by
     * the step that failed) and exits 1; there is nothing to drain yet. What
     * the steps before it logged (the credentials loaded, warnings) is held
     * back until the start succeeds, and dropped when it does not.
     */
    uv_loop_t *loop = uv_default_loop();
    hr__log_hold();
    if (hr__server_init(&srv, loop, &cfg) != HR_OK) {
        hr__log_release(1);
        uv_loop_close(loop);
        return 1;
    }
    if (worker && hr__worker_attach(&srv) != HR_OK) {
        hr__log_release(1);
        hr__server_destroy(&srv);
        return 1;
    }
    srv.argc = argc;
    srv.argv = argv;
    hr__node_wait_ready(&srv, 3000); /* a Redis engine learns the shared epoch first */
    /* A worker listens once the others told it what they subscribe to. */
    while (worker && !hr__link_synced() && uv_run(loop, UV_RUN_ONCE))
        ;
    if (hr__server_start(&srv) != 0) {
        hr__log_release(1);
        uv_run(loop, UV_RUN_DEFAULT); /* lets the handles it opened close */
        hr__server_destroy(&srv);
        uv_loop_close(loop);
        return 1;
    }
    hr__log_release(0);
    if (worker) {
        HR_LOG(HR_LOG_INFO, 0, "worker %d ready (pid %d)", srv.worker, (int)uv_os_getpid());
        hr__worker_ready(&srv);
    } else {
        HR_LOG(HR_LOG_INFO, 0, "herald %s ready (pid %d)", HERALD_VERSION, (int)uv_os_getpid());
    }
    uv_run(loop, UV_RUN_DEFAULT);
    if (worker)
        hr__worker_detach(&srv);
    hr__server_destroy(&srv);
    r = uv_loop_close(loop);
    if (r != 0)
        HR_LOG(HR_LOG_WARN, 0, "loop closed with handles open: %s", uv_strerror(r));
    HR_LOG(HR_LOG_INFO, 0, "bye");
    return 0;
}

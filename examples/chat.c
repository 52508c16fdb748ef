/* SPDX-License-Identifier: MIT */
/* Chat room member: shows the room's history on join, then live lines; publishes lines from stdin.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <herald/herald.h>

typedef struct chat_s {
    hr_client_t *c;
    const char *name;
    char topic[128];
    uv_stream_t *in;
    char line[4096];
    size_t len;
    int status; /* why the client closed: the exit status is 0 only for HR_OK */
} chat_t;

static void on_message(hr_client_t *c, hr_sub_t *sub, hr_message_t *m, void *arg)
{
    size_t len;
    const char *text = hr_message_data(m, &len);
    const char *from = hr_message_header(m, "from");
    printf("%s[%s] %.*s\n", hr_message_is_replay(m) ? "(history) " : "", from ? from : "?",
           (int)len, text);
    fflush(stdout);
}

static void on_state(hr_client_t *c, int event, int status, void *arg)
{
    static const char *names[] = {"", "connected", "disconnected", "reconnected", "closed"};
    chat_t *ch = arg;
    fprintf(stderr, "chat: %s%s%s\n", names[event], status ? ": " : "",
            status ? hr_strerror(status) : "");
    if (event == HR_EVENT_CLOSED) {
        ch->status = status;
        if (ch->in && !uv_is_closing((uv_handle_t *)ch->in))
            uv_close((uv_handle_t *)ch->in, NULL); /* let the loop end */
    }
}

static void on_error(hr_client_t *c, int status, hr_sub_t *sub, const char *detail, void *arg)
{
    fprintf(stderr, "chat: %s (%s)\n", detail, hr_err_name(status));
}

static void send_line(chat_t *ch)
{
    hr_header_t from = {"from", ch->name};
    hr_publish_opts_t po = {.headers = &from, .nheaders = 1};
    if (ch->len == 0)
        return;
    int r = hr_client_publish(ch->c, ch->topic, ch->line, ch->len, &po);
    if (r != HR_OK)
        fprintf(stderr, "chat: not sent: %s\n", hr_strerror(r));
    ch->len = 0;
}

static void alloc_cb(uv_handle_t *h, size_t hint, uv_buf_t *buf)
{
    static char chunk[4096];
    *buf = uv_buf_init(chunk, sizeof(chunk));
}

static void drained(hr_client_t *c, int status, void *arg)
{
}

static void read_cb(uv_stream_t *st, ssize_t n, const uv_buf_t *buf)
{
    chat_t *ch = st->data;
    if (n < 0) { /* end of input: leave the room once everything is sent */
        send_line(ch);
        uv_close((uv_handle_t *)st, NULL);
        hr_client_drain(ch->c, 2000, drained, NULL);
        return;
    }
    for (ssize_t i = 0; i < n; i++) {
        if (buf->base[i] == '\n')
            send_line(ch);
        else if (ch->len < sizeof(ch->line))
            ch->line[ch->len++] = buf->base[i];
    }
}

static void usage(void)
{
    fprintf(stderr, "usage: herald-chat [--url tcp://host:port] [--name NAME] [--ca FILE]\n"
                    "                   [--cert FILE --key FILE] ROOM\n"
                    "Joins chat room ROOM (topic chat.ROOM; ROOM may have dots: lobby, eu.games),\n"
                    "prints its retained history and then every new line, and sends each line\n"
                    "read from stdin. Exits 0 at the end of input, 1 if the broker cannot be\n"
                    "reached or the connection is lost for good. Over TLS (tls:// or wss://),\n"
                    "--ca names the CA to trust (default: the system's), --cert and --key a\n"
                    "client certificate.\n");
}

int main(int argc, char **argv)
{
    chat_t ch;
    hr_client_opts_t o;
    const char *room = NULL;
    memset(&ch, 0, sizeof(ch));
    hr_client_opts_init(&o);
    ch.name = getenv("USER") ? getenv("USER") : "anon";
    for (int i = 1; i < argc; i++) {
        if (strcmp(argv[i], "--url") == 0 && i + 1 < argc)
            o.url = argv[++i];
        else if (strcmp(argv[i], "--name") == 0 && i + 1 < argc)
            ch.name = argv[++i];
        else if (strcmp(argv[i], "--ca") == 0 && i + 1 < argc)
            o.tls_ca_file = argv[++i];
        else if (strcmp(argv[i], "--cert") == 0 && i + 1 < argc)
            o.tls_cert_file = argv[++i];
        else if (strcmp(argv[i], "--key") == 0 && i + 1 < argc)
            o.tls_key_file = argv[++i];
        else if (argv[i][0] == '-') {
            usage();
            return strcmp(argv[i], "--help") == 0 ? 0 : 2;
        } else
            room = argv[i];
    }
    if (!room) {
        usage();
        return 2;
    }
    int tn = snprintf(ch.topic, sizeof(ch.topic), "chat.%s", room);
    if (tn < 0 || (size_t)tn >= sizeof(ch.topic) || hr_topic_validate(ch.topic, (size_t)tn)) {
        fprintf(stderr, "chat: bad room name '%s' (tokens of printable ASCII, no * or >)\n", room);
        return 2;
    }
    o.name = ch.name;
    o.echo = 0; /* our own lines are already on screen */
    o.on_state = on_state;
    o.on_error = on_error;
    o.arg = &ch;
    uv_loop_t *loop = uv_default_loop();
    int r = hr_client_new(loop, &o, &ch.c);
    if (r != HR_OK) {
        fprintf(stderr, "chat: %s\n", hr_strerror(r));
        return 1;
    }
    /* since = 0: replay everything the broker retained for the room, then live. */
    hr_sub_opts_t so = {.has_since = 1, .since = 0};
    hr_sub_t *sub;
    r = hr_client_subscribe(ch.c, ch.topic, &so, on_message, &ch, &sub);
    if (r != HR_OK) {
        fprintf(stderr, "chat: bad room name: %s\n", hr_strerror(r));
        return 1;
    }
    /* Lines come from a terminal or a pipe; anything else (a file, /dev/null) cannot be
     * read as a stream, and the member only listens. */
    uv_pipe_t in_pipe;
    uv_tty_t in_tty;
    uv_handle_type in_type = uv_guess_handle(0);
    if (in_type == UV_TTY && uv_tty_init(loop, &in_tty, 0, 1) == 0) {
        ch.in = (uv_stream_t *)&in_tty;
    } else if (in_type == UV_NAMED_PIPE && uv_pipe_init(loop, &in_pipe, 0) == 0) {
        ch.in = (uv_stream_t *)&in_pipe;
        if (uv_pipe_open(&in_pipe, 0) != 0) {
            uv_close((uv_handle_t *)&in_pipe, NULL);
            ch.in = NULL;
        }
    }
    if (ch.in) {
        ch.in->data = &ch;
        uv_read_start(ch.in, alloc_cb, read_cb);
    } else {
        fprintf(stderr, "chat: stdin is neither a terminal nor a pipe: listening only\n");
    }
    uv_run(loop, UV_RUN_DEFAULT);
    uv_loop_close(loop);
    return ch.status == HR_OK ? 0 : 1;
}

/* One side of the two-process test (driven by two_process.sh): two C processes exchange
 * messages and presence over loopback.
 *
 *   test_peer listen CONTACT_FILE   start on 127.0.0.1:0, write "<id>@<addr>" to the file
 *   test_peer dial CONTACT_FILE     wait for the file, join through it
 *
 * The handshake, every step with a deadline:
 *   dialer:   presence "dialer", publishes "hello from dialer" until it has the
 *             listener's message and presence, then publishes "ack" until the listener
 *             goes offline (it clears its presence on "ack");
 *   listener: presence "listener", waits for the dialer's presence and message,
 *             publishes "hello from listener" until "ack", clears its presence, and
 *             waits until the dialer goes offline (it shuts down).
 */
#include "check.h"

#include <pthread.h>
#include <unistd.h>

static const char TOPIC[] = "two-process";
#define T (const uint8_t *)TOPIC, strlen(TOPIC)

typedef struct {
    pthread_mutex_t mu;
    const char *peer_meta; /* the other side's presence metadata */
    const char *peer_hello;
    int peer_online, peer_offline_left, got_hello, got_ack, releases;
} state;

static int payload_is(const uint8_t *p, size_t len, const char *s) {
    return len == strlen(s) && memcmp(p, s, len) == 0;
}

static void on_message(void *ud, const starling_message *m) {
    state *s = ud;
    pthread_mutex_lock(&s->mu);
    if (payload_is(m->payload, m->payload_len, s->peer_hello)) s->got_hello = 1;
    if (payload_is(m->payload, m->payload_len, "ack")) s->got_ack = 1;
    pthread_mutex_unlock(&s->mu);
}

static void on_presence(void *ud, const starling_presence_event *e) {
    state *s = ud;
    if (!payload_is(e->metadata, e->metadata_len, s->peer_meta)) return;
    pthread_mutex_lock(&s->mu);
    if (e->change == STARLING_PRESENCE_CHANGE_ONLINE) s->peer_online = 1;
    if (e->change == STARLING_PRESENCE_CHANGE_OFFLINE_LEFT) s->peer_offline_left = 1;
    pthread_mutex_unlock(&s->mu);
}

static void on_release(void *ud) {
    state *s = ud;
    pthread_mutex_lock(&s->mu);
    s->releases++;
    pthread_mutex_unlock(&s->mu);
}

static int get(state *s, int *field) {
    pthread_mutex_lock(&s->mu);
    int v = *field;
    pthread_mutex_unlock(&s->mu);
    return v;
}

/* Repeats `publish` (if not NULL) every 200 ms until `*field` is set or the deadline. */
static void until(starling_node *node, state *s, int *field, const char *publish, const char *what) {
    double end = now_s() + deadline_s();
    while (!get(s, field)) {
        if (now_s() > end) {
            fprintf(stderr, "test_peer: timeout after %.0f s waiting for %s\n", deadline_s(), what);
            exit(1);
        }
        if (publish) OK(starling_node_publish(node, T, (const uint8_t *)publish, strlen(publish), NULL));
        sleep_ms(200);
    }
}

int main(int argc, char **argv) {
    if (argc != 3 || (strcmp(argv[1], "listen") != 0 && strcmp(argv[1], "dial") != 0)) {
        fprintf(stderr, "usage: test_peer listen|dial CONTACT_FILE\n");
        return 2;
    }
    int listener = strcmp(argv[1], "listen") == 0;
    const char *file = argv[2];
    state s = {.peer_meta = listener ? "dialer" : "listener",
               .peer_hello = listener ? "hello from dialer" : "hello from listener"};
    pthread_mutex_init(&s.mu, NULL);

    starling_config *cfg = NULL;
    OK(starling_config_new(&cfg));
    OK(starling_config_set_bind(cfg, "127.0.0.1:0"));
    OK(starling_config_set_network_id(cfg, "starling-c-two-process"));
    if (!listener) {
        char contact[STARLING_CONTACT_SIZE] = {0};
        double end = now_s() + deadline_s();
        for (;;) {
            FILE *f = fopen(file, "r");
            if (f) {
                int ok = fgets(contact, sizeof contact, f) != NULL;
                fclose(f);
                if (ok) break;
            }
            if (now_s() > end) {
                fprintf(stderr, "test_peer: no contact in %s after %.0f s\n", file, deadline_s());
                return 1;
            }
            sleep_ms(50);
        }
        contact[strcspn(contact, "\n")] = '\0';
        OK(starling_config_add_bootstrap(cfg, contact));
    }
    starling_node *node = NULL;
    OK(starling_node_start(cfg, &node));
    starling_config_free(cfg);

    starling_callbacks cbs = {.userdata = &s,
                              .on_message = on_message,
                              .on_presence = on_presence,
                              .release = on_release};
    starling_subscription *sub = NULL;
    OK(starling_node_subscribe(node, T, &cbs, &sub));
    const char *meta = listener ? "listener" : "dialer";
    OK(starling_node_set_presence(node, T, (const uint8_t *)meta, strlen(meta)));

    if (listener) {
        /* Written to a temporary name and renamed, so the dialer never reads half. */
        char contact[STARLING_CONTACT_SIZE], tmp[4096];
        OK(starling_node_contact(node, contact, sizeof contact, NULL));
        snprintf(tmp, sizeof tmp, "%s.tmp", file);
        FILE *f = fopen(tmp, "w");
        ASSERT(f != NULL, "cannot write %s", tmp);
        fprintf(f, "%s\n", contact);
        fclose(f);
        ASSERT(rename(tmp, file) == 0, "rename %s", tmp);

        until(node, &s, &s.peer_online, NULL, "the dialer's presence");
        until(node, &s, &s.got_hello, NULL, "the dialer's hello");
        until(node, &s, &s.got_ack, "hello from listener", "the dialer's ack");
        OK(starling_node_clear_presence(node, T));
        until(node, &s, &s.peer_offline_left, NULL, "the dialer going offline");
    } else {
        until(node, &s, &s.peer_online, "hello from dialer", "the listener's presence");
        until(node, &s, &s.got_hello, "hello from dialer", "the listener's hello");
        until(node, &s, &s.peer_offline_left, "ack", "the listener going offline after the ack");
    }
    starling_stats stats;
    OK(starling_node_stats(node, &stats));
    ASSERT(stats.delivered > 0 && stats.published > 0, "delivered %llu published %llu",
           (unsigned long long)stats.delivered, (unsigned long long)stats.published);
    OK(starling_node_shutdown(node));
    ASSERT(get(&s, &s.releases) == 1, "release once at shutdown");
    starling_subscription_free(sub);
    starling_node_free(node);
    ASSERT(get(&s, &s.releases) == 1, "release once");
    pthread_mutex_destroy(&s.mu);
    printf("test_peer %s: passed\n", argv[1]);
    return 0;
}

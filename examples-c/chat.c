/* chat: join a topic, print its messages and who comes and goes, send stdin lines.
 *
 *   chat [--bind ADDR] [--join PEER] [--topic NAME] [--name NAME] [--key FILE]
 *
 * The first instance prints its contact ("<peer id>@<address>"); others pass it to
 * --join. Ctrl-D (end of input) leaves the chat: presence is cleared and the node shuts
 * down gracefully, so the others see "left" at once.
 */
#include <starling.h>

#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define MAX_PEERS 256
#define NAME_MAX_LEN 64

/* Peer id -> name, from presence metadata; written by the delivery thread, read by it
 * too (all callbacks of a subscription run on one thread), the lock is for clarity. */
typedef struct {
    pthread_mutex_t mu;
    int count;
    uint8_t ids[MAX_PEERS][32];
    char names[MAX_PEERS][NAME_MAX_LEN];
} roster;

static void short_id(const uint8_t id[32], char out[9]) {
    snprintf(out, 9, "%02x%02x%02x%02x", id[0], id[1], id[2], id[3]);
}

/* The peer's name (or its short id) into out. */
static void name_of(roster *r, const uint8_t id[32], char out[NAME_MAX_LEN]) {
    pthread_mutex_lock(&r->mu);
    for (int i = 0; i < r->count; i++) {
        if (memcmp(r->ids[i], id, 32) == 0) {
            snprintf(out, NAME_MAX_LEN, "%s", r->names[i]);
            pthread_mutex_unlock(&r->mu);
            return;
        }
    }
    pthread_mutex_unlock(&r->mu);
    short_id(id, out);
}

static void remember(roster *r, const uint8_t id[32], const uint8_t *meta, size_t len) {
    if (len >= NAME_MAX_LEN) len = NAME_MAX_LEN - 1;
    pthread_mutex_lock(&r->mu);
    int i = 0;
    while (i < r->count && memcmp(r->ids[i], id, 32) != 0) i++;
    if (i == r->count && r->count < MAX_PEERS) r->count++;
    if (i < r->count) {
        memcpy(r->ids[i], id, 32);
        memcpy(r->names[i], meta, len);
        r->names[i][len] = '\0';
    }
    pthread_mutex_unlock(&r->mu);
}

static void on_message(void *userdata, const starling_message *m) {
    char who[NAME_MAX_LEN];
    name_of(userdata, m->author, who);
    /* The payload is not NUL-terminated and valid only during this call. */
    printf("[%s] %.*s\n", who, (int)m->payload_len, (const char *)m->payload);
    fflush(stdout);
}

static void on_presence(void *userdata, const starling_presence_event *e) {
    roster *r = userdata;
    if (e->change == STARLING_PRESENCE_CHANGE_ONLINE || e->change == STARLING_PRESENCE_CHANGE_UPDATED)
        remember(r, e->peer, e->metadata, e->metadata_len);
    char who[NAME_MAX_LEN];
    name_of(r, e->peer, who);
    const char *what = e->change == STARLING_PRESENCE_CHANGE_ONLINE    ? "is online"
                       : e->change == STARLING_PRESENCE_CHANGE_UPDATED ? "changed name"
                       : e->change == STARLING_PRESENCE_CHANGE_OFFLINE_LEFT ? "left"
                       : e->change == STARLING_PRESENCE_CHANGE_OFFLINE_EXPIRED ? "timed out"
                                                                               : "failed";
    printf("* %s %s\n", who, what);
    fflush(stdout);
}

static void on_lagged(void *userdata, uint64_t dropped) {
    (void)userdata;
    printf("* (%llu messages dropped: too slow)\n", (unsigned long long)dropped);
    fflush(stdout);
}

static int fail(const char *what, starling_result r) {
    char msg[512];
    if (starling_last_error_message(msg, sizeof msg, NULL) != STARLING_RESULT_OK) msg[0] = '\0';
    fprintf(stderr, "chat: %s: %s: %s\n", what, starling_result_name(r), msg);
    return 1;
}

int main(int argc, char **argv) {
    const char *bind = "0.0.0.0:0", *join = NULL, *topic = "chat", *name = "anonymous", *key = NULL;
    for (int i = 1; i < argc; i++) {
        const char *arg = argv[i], *val = i + 1 < argc ? argv[i + 1] : NULL;
        if (!val) goto usage;
        if (strcmp(arg, "--bind") == 0) bind = val;
        else if (strcmp(arg, "--join") == 0) join = val;
        else if (strcmp(arg, "--topic") == 0) topic = val;
        else if (strcmp(arg, "--name") == 0) name = val;
        else if (strcmp(arg, "--key") == 0) key = val;
        else goto usage;
        i++;
    }

    starling_config *cfg = NULL;
    starling_result r = starling_config_new(&cfg);
    if (r != STARLING_RESULT_OK) return fail("config", r);
    if ((r = starling_config_set_bind(cfg, bind)) != STARLING_RESULT_OK) return fail("--bind", r);
    if (join && (r = starling_config_add_bootstrap(cfg, join)) != STARLING_RESULT_OK) return fail("--join", r);
    if (key && (r = starling_config_set_identity_file(cfg, key)) != STARLING_RESULT_OK) return fail("--key", r);
    starling_node *node = NULL;
    r = starling_node_start(cfg, &node);
    starling_config_free(cfg);
    if (r != STARLING_RESULT_OK) return fail("start", r);

    char contact[STARLING_CONTACT_SIZE];
    if (starling_node_contact(node, contact, sizeof contact, NULL) == STARLING_RESULT_OK)
        printf("* you are %s (others: --join %s)\n", name, contact);
    fflush(stdout);

    roster *peers = calloc(1, sizeof *peers);
    if (!peers) return 1;
    pthread_mutex_init(&peers->mu, NULL);
    starling_callbacks cbs = {
        .userdata = peers,
        .on_message = on_message,
        .on_presence = on_presence,
        .on_lagged = on_lagged,
        .release = NULL, /* `peers` is freed below, after the subscription */
    };
    starling_subscription *sub = NULL;
    const uint8_t *t = (const uint8_t *)topic;
    if ((r = starling_node_subscribe(node, t, strlen(topic), &cbs, &sub)) != STARLING_RESULT_OK)
        return fail("subscribe", r);
    if ((r = starling_node_set_presence(node, t, strlen(topic), (const uint8_t *)name, strlen(name))) !=
        STARLING_RESULT_OK)
        return fail("presence", r);

    char line[4096];
    int status = 0;
    while (fgets(line, sizeof line, stdin)) {
        size_t len = strcspn(line, "\n");
        if (len == 0) continue;
        starling_receipt receipt;
        r = starling_node_publish(node, t, strlen(topic), (const uint8_t *)line, len, &receipt);
        if (r != STARLING_RESULT_OK) {
            status = fail("publish", r);
            break;
        }
        if (receipt.peers == 0) printf("* (nobody to send to yet; kept for newcomers)\n");
        fflush(stdout);
    }

    starling_node_clear_presence(node, t, strlen(topic));
    starling_subscription_free(sub); /* after this no callback runs: peers can go */
    starling_node_free(node);
    pthread_mutex_destroy(&peers->mu);
    free(peers);
    return status;

usage:
    fprintf(stderr, "usage: chat [--bind ADDR] [--join PEER] [--topic NAME] [--name NAME] [--key FILE]\n");
    return 2;
}

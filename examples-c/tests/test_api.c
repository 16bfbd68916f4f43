/* In-process tests of the C API: every documented misuse gives its documented code,
 * out-parameters are untouched on failure, and the callback rules hold (publish from
 * inside a callback, free while callbacks run, free from inside a callback, release
 * exactly once, node free stops subscriptions, logging); admission: a C hook and an
 * allowlist refuse and admit peers, the hook is released exactly once, node calls from
 * inside it fail at once, private-network credentials are checked, members connect and an
 * outsider is refused.
 *
 *   test_api            run every test
 *   test_api --version  print STARLING_VERSION_STRING (compared with Cargo.toml by
 *                       scripts/test-c.sh)
 */
#include "check.h"

#include <pthread.h>
#include <stdatomic.h>

static const char TOPIC[] = "room";
#define T (const uint8_t *)TOPIC, strlen(TOPIC)

/* ---------------------------------------------------------------- misuse */

static starling_node *start_loopback(uint32_t max_payload, const char *bootstrap) {
    starling_config *cfg = NULL;
    OK(starling_config_new(&cfg));
    OK(starling_config_set_bind(cfg, "127.0.0.1:0"));
    OK(starling_config_set_network_id(cfg, "starling-c-tests"));
    OK(starling_config_set_worker_threads(cfg, 1));
    OK(starling_config_set_max_payload(cfg, max_payload));
    if (bootstrap) OK(starling_config_add_bootstrap(cfg, bootstrap));
    starling_node *node = NULL;
    OK(starling_node_start(cfg, &node));
    starling_config_free(cfg);
    ASSERT(node != NULL, "start wrote no node");
    return node;
}

static void test_versions(void) {
    ASSERT(strcmp(STARLING_VERSION_STRING, starling_version()) == 0,
           "header %s vs library %s", STARLING_VERSION_STRING, starling_version());
    ASSERT(strcmp(starling_result_name(STARLING_RESULT_CLOSED), "STARLING_RESULT_CLOSED") == 0,
           "%s", starling_result_name(STARLING_RESULT_CLOSED));
    ASSERT(strcmp(starling_result_name(STARLING_RESULT_PANIC), "STARLING_RESULT_PANIC") == 0,
           "%s", starling_result_name(STARLING_RESULT_PANIC));
    ASSERT(strcmp(starling_result_name(4242), "STARLING_RESULT_UNKNOWN") == 0, "unknown code");
    /* The numbers are part of the ABI. */
    ASSERT(STARLING_RESULT_OK == 0 && STARLING_RESULT_NULL_PARAMETER == 1 &&
               STARLING_RESULT_INVALID_TOPIC == 3 && STARLING_RESULT_PAYLOAD_TOO_LARGE == 9 &&
               STARLING_RESULT_CLOSED == 12 && STARLING_RESULT_BUFFER_TOO_SMALL == 14 &&
               STARLING_RESULT_WOULD_DEADLOCK == 16 &&
               STARLING_RESULT_PANIC == 100,
           "result numbers changed");
}

static void test_config_misuse(void) {
    starling_config *cfg = (starling_config *)0x1; /* must stay untouched on failure */
    EXPECT(STARLING_RESULT_NULL_PARAMETER, starling_config_new(NULL));
    OK(starling_config_new(&cfg));
    EXPECT(STARLING_RESULT_NULL_PARAMETER, starling_config_set_bind(NULL, "127.0.0.1:0"));
    EXPECT(STARLING_RESULT_NULL_PARAMETER, starling_config_set_bind(cfg, NULL));
    EXPECT(STARLING_RESULT_INVALID_ADDRESS, starling_config_set_bind(cfg, "not an address"));
    EXPECT(STARLING_RESULT_INVALID_ARGUMENT, starling_config_set_bind(cfg, "\xff\xfe:1"));
    EXPECT(STARLING_RESULT_INVALID_ADDRESS, starling_config_add_bootstrap(cfg, ""));
    EXPECT(STARLING_RESULT_INVALID_ADDRESS, starling_config_add_bootstrap(cfg, "127.0.0.1"));
    EXPECT(STARLING_RESULT_INVALID_ADDRESS, starling_config_add_bootstrap(cfg, "abc@127.0.0.1:4000"));
    EXPECT(STARLING_RESULT_INVALID_ADDRESS, starling_config_add_bootstrap(cfg, "127.0.0.1:0"));
    EXPECT(STARLING_RESULT_INVALID_ADDRESS, starling_config_add_advertise(cfg, "0.0.0.0:4000"));
    EXPECT(STARLING_RESULT_INVALID_ARGUMENT, starling_config_set_network_id(cfg, ""));
    char long_id[202];
    memset(long_id, 'n', sizeof long_id - 1);
    long_id[sizeof long_id - 1] = '\0';
    EXPECT(STARLING_RESULT_INVALID_ARGUMENT, starling_config_set_network_id(cfg, long_id));
    EXPECT(STARLING_RESULT_INVALID_ARGUMENT, starling_config_set_max_payload(cfg, 0));
    EXPECT(STARLING_RESULT_INVALID_ARGUMENT, starling_config_set_max_payload(cfg, (16u << 20) + 1));
    EXPECT(STARLING_RESULT_INVALID_ARGUMENT, starling_config_set_worker_threads(cfg, 0));
    EXPECT(STARLING_RESULT_INVALID_ARGUMENT, starling_config_set_presence_ttl_ms(cfg, 999));
    EXPECT(STARLING_RESULT_INVALID_ARGUMENT, starling_config_set_subscription_queue(cfg, 0));
    EXPECT(STARLING_RESULT_INVALID_ARGUMENT, starling_config_set_max_connections(cfg, 0));
    EXPECT(STARLING_RESULT_INVALID_ARGUMENT, starling_config_set_identity_file(cfg, ""));
    EXPECT(STARLING_RESULT_NULL_PARAMETER, starling_config_set_identity_seed(cfg, NULL));
    ASSERT(strstr(last_error(), "seed") != NULL, "message names the parameter: %s", last_error());

    /* A key file that cannot be created fails at start, and leaves *out alone. */
    OK(starling_config_set_bind(cfg, "127.0.0.1:0"));
    OK(starling_config_set_identity_file(cfg, "/nonexistent-starling-dir/sub/node.key"));
    starling_node *node = (starling_node *)0x1;
    EXPECT(STARLING_RESULT_IDENTITY, starling_node_start(cfg, &node));
    ASSERT(node == (starling_node *)0x1, "out-param written on failure");
    EXPECT(STARLING_RESULT_NULL_PARAMETER, starling_node_start(NULL, &node));
    EXPECT(STARLING_RESULT_NULL_PARAMETER, starling_node_start(cfg, NULL));
    starling_config_free(cfg);
    starling_config_free(NULL);
}

static void test_node_misuse(void) {
    starling_node *node = start_loopback(1024, NULL);

    /* The bound address in use by another node. */
    char addr[STARLING_ADDRESS_SIZE];
    OK(starling_node_local_addr(node, addr, sizeof addr, NULL));
    starling_config *cfg = NULL;
    OK(starling_config_new(&cfg));
    OK(starling_config_set_bind(cfg, addr));
    starling_node *second = NULL;
    EXPECT(STARLING_RESULT_TRANSPORT, starling_node_start(cfg, &second));
    ASSERT(second == NULL, "out-param written on failure");
    starling_config_free(cfg);

    /* NULL handles. */
    starling_receipt receipt;
    EXPECT(STARLING_RESULT_NULL_PARAMETER, starling_node_publish(NULL, T, (const uint8_t *)"x", 1, &receipt));
    EXPECT(STARLING_RESULT_NULL_PARAMETER, starling_node_set_presence(NULL, T, NULL, 0));
    EXPECT(STARLING_RESULT_NULL_PARAMETER, starling_node_join(NULL, "127.0.0.1:1"));
    EXPECT(STARLING_RESULT_NULL_PARAMETER, starling_node_stats(NULL, NULL));
    EXPECT(STARLING_RESULT_NULL_PARAMETER, starling_node_stats(node, NULL));
    EXPECT(STARLING_RESULT_NULL_PARAMETER, starling_node_id(node, NULL));
    EXPECT(STARLING_RESULT_NULL_PARAMETER, starling_node_shutdown(NULL));
    starling_callbacks cbs = {0};
    starling_subscription *sub = (starling_subscription *)0x1;
    EXPECT(STARLING_RESULT_NULL_PARAMETER, starling_node_subscribe(NULL, T, &cbs, &sub));
    EXPECT(STARLING_RESULT_NULL_PARAMETER, starling_node_subscribe(node, T, NULL, &sub));
    EXPECT(STARLING_RESULT_NULL_PARAMETER, starling_node_subscribe(node, T, &cbs, NULL));
    ASSERT(sub == (starling_subscription *)0x1, "out-param written on failure");

    /* NULL buffers with a non-zero length; NULL with length 0 is an empty buffer. */
    EXPECT(STARLING_RESULT_NULL_PARAMETER, starling_node_publish(node, T, NULL, 5, &receipt));
    EXPECT(STARLING_RESULT_NULL_PARAMETER, starling_node_publish(node, NULL, 4, (const uint8_t *)"x", 1, NULL));
    EXPECT(STARLING_RESULT_NULL_PARAMETER, starling_node_set_presence(node, T, NULL, 3));
    OK(starling_node_publish(node, T, NULL, 0, NULL));

    /* Bad topics. */
    EXPECT(STARLING_RESULT_INVALID_TOPIC, starling_node_publish(node, (const uint8_t *)"", 0, NULL, 0, NULL));
    EXPECT(STARLING_RESULT_INVALID_TOPIC, starling_node_publish(node, NULL, 0, NULL, 0, NULL));
    EXPECT(STARLING_RESULT_INVALID_TOPIC, starling_node_publish(node, (const uint8_t *)"\xc3\x28", 2, NULL, 0, NULL));
    uint8_t long_topic[STARLING_TOPIC_MAX_LEN + 1];
    memset(long_topic, 't', sizeof long_topic);
    EXPECT(STARLING_RESULT_INVALID_TOPIC, starling_node_publish(node, long_topic, sizeof long_topic, NULL, 0, NULL));
    OK(starling_node_publish(node, long_topic, STARLING_TOPIC_MAX_LEN, NULL, 0, NULL));
    EXPECT(STARLING_RESULT_INVALID_TOPIC, starling_node_subscribe(node, (const uint8_t *)"", 0, &cbs, &sub));
    uint8_t id[32];
    EXPECT(STARLING_RESULT_INVALID_TOPIC, starling_topic_id((const uint8_t *)"", 0, id));

    /* Oversized payload and metadata (the node was started with max_payload 1024). */
    static uint8_t big[2048];
    memset(&receipt, 0xAB, sizeof receipt);
    starling_receipt before = receipt;
    EXPECT(STARLING_RESULT_PAYLOAD_TOO_LARGE, starling_node_publish(node, T, big, 1025, &receipt));
    ASSERT(memcmp(&before, &receipt, sizeof receipt) == 0, "receipt written on failure");
    OK(starling_node_publish(node, T, big, 1024, &receipt));
    ASSERT(receipt.peers == 0, "no peers yet, got %zu", receipt.peers);
    EXPECT(STARLING_RESULT_METADATA_TOO_LARGE, starling_node_set_presence(node, T, big, 1025));

    /* Too-small output buffers: nothing written, the message says what is needed. */
    char hex[STARLING_PEER_ID_HEX_SIZE];
    memset(hex, '#', sizeof hex);
    size_t written = 7;
    EXPECT(STARLING_RESULT_BUFFER_TOO_SMALL, starling_node_id_hex(node, hex, 64, &written));
    ASSERT(hex[0] == '#' && written == 7, "output written on failure");
    ASSERT(strstr(last_error(), "65") != NULL, "message gives the size: %s", last_error());
    EXPECT(STARLING_RESULT_NULL_PARAMETER, starling_node_id_hex(node, NULL, 65, &written));
    OK(starling_node_id_hex(node, hex, sizeof hex, &written));
    ASSERT(written == 64 && strlen(hex) == 64, "hex id: %s", hex);
    char tiny[4];
    EXPECT(STARLING_RESULT_BUFFER_TOO_SMALL, starling_node_contact(node, tiny, sizeof tiny, NULL));
    EXPECT(STARLING_RESULT_BUFFER_TOO_SMALL, starling_node_local_addr(node, tiny, 0, NULL));
    size_t need = starling_last_error_length();
    ASSERT(need > 0, "a failure leaves a message");
    EXPECT(STARLING_RESULT_BUFFER_TOO_SMALL, starling_last_error_message(tiny, sizeof tiny, NULL));
    char *msg = malloc(need + 1);
    OK(starling_last_error_message(msg, need + 1, &written));
    ASSERT(written == need && strlen(msg) == need, "message length %zu vs %zu", written, need);
    free(msg);

    /* Other bad arguments. */
    EXPECT(STARLING_RESULT_INVALID_ADDRESS, starling_node_join(node, "nowhere"));
    EXPECT(STARLING_RESULT_INVALID_ARGUMENT, starling_set_logger(9, NULL, NULL));
    starling_online_list *list = NULL;
    OK(starling_node_online(node, T, &list));
    ASSERT(starling_online_list_len(list) == 0, "nobody online");
    starling_online_entry entry;
    EXPECT(STARLING_RESULT_INVALID_ARGUMENT, starling_online_list_get(list, 0, &entry));
    EXPECT(STARLING_RESULT_NULL_PARAMETER, starling_online_list_get(NULL, 0, &entry));
    starling_online_list_free(list);
    ASSERT(starling_online_list_len(NULL) == 0, "len(NULL)");

    /* After shutdown: CLOSED, except the fixed getters; shutdown again is fine. */
    OK(starling_node_shutdown(node));
    OK(starling_node_shutdown(node));
    EXPECT(STARLING_RESULT_CLOSED, starling_node_publish(node, T, NULL, 0, NULL));
    EXPECT(STARLING_RESULT_CLOSED, starling_node_subscribe(node, T, &cbs, &sub));
    EXPECT(STARLING_RESULT_CLOSED, starling_node_set_presence(node, T, NULL, 0));
    EXPECT(STARLING_RESULT_CLOSED, starling_node_clear_presence(node, T));
    EXPECT(STARLING_RESULT_CLOSED, starling_node_join(node, "127.0.0.1:9"));
    EXPECT(STARLING_RESULT_CLOSED, starling_node_online(node, T, &list));
    starling_stats stats;
    EXPECT(STARLING_RESULT_CLOSED, starling_node_stats(node, &stats));
    OK(starling_node_id(node, id));
    OK(starling_node_id_hex(node, hex, sizeof hex, NULL));
    starling_node_free(node);
    starling_node_free(NULL);
    starling_subscription_free(NULL);
}

/* ------------------------------------------------------------- callbacks */

/* What one subscription saw, guarded by `mu`. */
typedef struct {
    pthread_mutex_t mu;
    pthread_cond_t cv;
    const char *name;
    starling_node *node;            /* for publishing from the callback */
    const char *reply_to;           /* payload that triggers a reply ... */
    const char *reply;              /* ... with this payload */
    long slow_ms;                   /* sleep in on_message */
    _Atomic(starling_subscription *) self; /* freed from its own callback when set */
    int in_callback;
    int messages;
    int replies_sent;
    int pongs;
    int peer_online;
    int releases;
    int after_free_calls;           /* callbacks that began after free returned */
    int freed;
} sub_state;

static void state_init(sub_state *s, const char *name) {
    memset(s, 0, sizeof *s);
    pthread_mutex_init(&s->mu, NULL);
    pthread_cond_init(&s->cv, NULL);
    s->name = name;
}

static void state_destroy(sub_state *s) {
    pthread_mutex_destroy(&s->mu);
    pthread_cond_destroy(&s->cv);
}

static void on_message(void *ud, const starling_message *m) {
    sub_state *s = ud;
    pthread_mutex_lock(&s->mu);
    if (s->freed) s->after_free_calls++;
    s->in_callback = 1;
    s->messages++;
    int is_ping = s->reply_to && m->payload_len == strlen(s->reply_to) &&
                  memcmp(m->payload, s->reply_to, m->payload_len) == 0;
    if (m->payload_len == 4 && memcmp(m->payload, "pong", 4) == 0) s->pongs++;
    pthread_cond_broadcast(&s->cv);
    pthread_mutex_unlock(&s->mu);

    if (is_ping) {
        /* Publishing from inside a callback must not deadlock. */
        starling_receipt r;
        OK(starling_node_publish(s->node, T, (const uint8_t *)s->reply, strlen(s->reply), &r));
        pthread_mutex_lock(&s->mu);
        s->replies_sent++;
        pthread_cond_broadcast(&s->cv);
        pthread_mutex_unlock(&s->mu);
    }
    if (s->slow_ms) sleep_ms(s->slow_ms);
    starling_subscription *self = atomic_exchange(&s->self, NULL);
    if (self) starling_subscription_free(self); /* from inside its own callback */

    pthread_mutex_lock(&s->mu);
    s->in_callback = 0;
    pthread_mutex_unlock(&s->mu);
}

static void on_presence(void *ud, const starling_presence_event *e) {
    sub_state *s = ud;
    pthread_mutex_lock(&s->mu);
    if (s->freed) s->after_free_calls++;
    if (e->change == STARLING_PRESENCE_CHANGE_ONLINE) s->peer_online++;
    pthread_cond_broadcast(&s->cv);
    pthread_mutex_unlock(&s->mu);
}

static void on_release(void *ud) {
    sub_state *s = ud;
    pthread_mutex_lock(&s->mu);
    s->releases++;
    pthread_cond_broadcast(&s->cv);
    pthread_mutex_unlock(&s->mu);
}

static starling_subscription *subscribe(starling_node *node, sub_state *s) {
    starling_callbacks cbs = {
        .userdata = s,
        .on_message = on_message,
        .on_presence = on_presence,
        .on_lagged = NULL,
        .release = on_release,
    };
    starling_subscription *sub = NULL;
    OK(starling_node_subscribe(node, T, &cbs, &sub));
    return sub;
}

/* Waits until `*field >= at_least`, failing loudly at the deadline. */
static void wait_for(sub_state *s, int *field, int at_least, const char *what) {
    double end = now_s() + deadline_s();
    pthread_mutex_lock(&s->mu);
    while (*field < at_least) {
        if (now_s() > end) {
            fprintf(stderr, "timeout after %.0f s: %s: %s is %d, wanted >= %d\n", deadline_s(),
                    s->name, what, *field, at_least);
            exit(1);
        }
        struct timespec ts;
        clock_gettime(CLOCK_REALTIME, &ts);
        ts.tv_nsec += 50 * 1000000L;
        if (ts.tv_nsec >= 1000000000L) {
            ts.tv_sec++;
            ts.tv_nsec -= 1000000000L;
        }
        pthread_cond_timedwait(&s->cv, &s->mu, &ts);
    }
    pthread_mutex_unlock(&s->mu);
}

static int read_int(sub_state *s, int *field) {
    pthread_mutex_lock(&s->mu);
    int v = *field;
    pthread_mutex_unlock(&s->mu);
    return v;
}

static int log_records;
static pthread_mutex_t log_mu = PTHREAD_MUTEX_INITIALIZER;
static void on_log(void *ud, const starling_log_record *r) {
    (void)ud;
    ASSERT(r->message[r->message_len] == '\0' && r->target[r->target_len] == '\0',
           "log strings are NUL-terminated");
    pthread_mutex_lock(&log_mu);
    if (strcmp(r->target, "starling_core::node") == 0 && strstr(r->message, "node started"))
        log_records++;
    if (getenv("SHOWLOG")) fprintf(stderr, "LOG %s: %s\n", r->target, r->message);
    pthread_mutex_unlock(&log_mu);
}

static void test_callbacks(void) {
    OK(starling_set_logger(STARLING_LOG_LEVEL_INFO, on_log, NULL));
    starling_node *a = start_loopback(65536, NULL);
    char contact[STARLING_CONTACT_SIZE];
    OK(starling_node_contact(a, contact, sizeof contact, NULL));
    starling_node *b = start_loopback(65536, contact);
    OK(starling_set_logger(STARLING_LOG_LEVEL_OFF, NULL, NULL));
    pthread_mutex_lock(&log_mu);
    ASSERT(log_records == 2, "the logger saw %d 'node started' records, wanted 2", log_records);
    pthread_mutex_unlock(&log_mu);

    sub_state sa, sb, slow, selfree;
    state_init(&sa, "a");
    state_init(&sb, "b");
    state_init(&slow, "b-slow");
    state_init(&selfree, "b-self-free");
    sb.node = b;
    sb.reply_to = "ping";
    sb.reply = "pong";
    slow.slow_ms = 30;
    starling_subscription *sub_a = subscribe(a, &sa);
    starling_subscription *sub_b = subscribe(b, &sb);
    starling_subscription *sub_slow = subscribe(b, &slow);
    starling_subscription *sub_self = subscribe(b, &selfree);
    atomic_store(&selfree.self, sub_self);

    /* Presence both ways, then the online list. */
    OK(starling_node_set_presence(a, T, (const uint8_t *)"alice", 5));
    OK(starling_node_set_presence(b, T, (const uint8_t *)"bob", 3));
    wait_for(&sb, &sb.peer_online, 1, "presence of a seen by b");
    wait_for(&sa, &sa.peer_online, 1, "presence of b seen by a");
    starling_online_list *list = NULL;
    OK(starling_node_online(b, T, &list));
    uint8_t a_id[32];
    OK(starling_node_id(a, a_id));
    int found = 0;
    for (size_t i = 0; i < starling_online_list_len(list); i++) {
        starling_online_entry e;
        OK(starling_online_list_get(list, i, &e));
        if (memcmp(e.peer, a_id, 32) == 0 && e.metadata_len == 5 &&
            memcmp(e.metadata, "alice", 5) == 0)
            found = 1;
    }
    starling_online_list_free(list);
    ASSERT(found, "a with metadata 'alice' in b's online list");

    /* Publish from inside a callback: b answers every "ping" with a "pong" from its
     * on_message. A ping can precede the topic tree, so a repeats it until a pong. */
    double end = now_s() + deadline_s();
    while (read_int(&sa, &sa.pongs) == 0) {
        ASSERT(now_s() < end, "no pong within %.0f s (b replied %d times)", deadline_s(),
               read_int(&sb, &sb.replies_sent));
        OK(starling_node_publish(a, T, (const uint8_t *)"ping", 4, NULL));
        sleep_ms(100);
    }

    /* The self-freeing subscription freed itself in its first callback: released once,
     * asynchronously, and never called again. */
    wait_for(&selfree, &selfree.releases, 1, "release after free from inside the callback");

    /* Free while callbacks run: the slow subscription is inside a 30 ms callback. */
    for (int i = 0; i < 20; i++) OK(starling_node_publish(a, T, (const uint8_t *)"burst", 5, NULL));
    wait_for(&slow, &slow.messages, read_int(&slow, &slow.messages) + 1, "slow callback");
    starling_subscription_free(sub_slow);
    pthread_mutex_lock(&slow.mu);
    slow.freed = 1;
    ASSERT(slow.releases == 1, "release called %d times by the time free returned", slow.releases);
    ASSERT(slow.in_callback == 0, "a callback still runs after free returned");
    pthread_mutex_unlock(&slow.mu);

    /* Freeing the node stops its remaining subscription (release before free returns);
     * the subscription handle is freed afterwards. */
    starling_node_free(b);
    ASSERT(read_int(&sb, &sb.releases) == 1, "release of b's subscription on node free");
    bool active = true;
    OK(starling_subscription_is_active(sub_b, &active));
    ASSERT(!active, "subscription inactive after its node was freed");
    starling_subscription_free(sub_b);
    starling_subscription_free(sub_a);
    ASSERT(read_int(&sa, &sa.releases) == 1, "release of a's subscription on free");
    starling_node_free(a);

    sleep_ms(100); /* give a stray late callback the chance to show up in the counters */
    ASSERT(read_int(&slow, &slow.after_free_calls) == 0, "callbacks after free");
    ASSERT(read_int(&slow, &slow.releases) == 1, "slow released once");
    ASSERT(read_int(&selfree, &selfree.releases) == 1, "self-free released once");
    ASSERT(read_int(&selfree, &selfree.messages) == 1, "self-free got one message, then none");
    ASSERT(read_int(&sb, &sb.releases) == 1 && read_int(&sa, &sa.releases) == 1, "released once");
    state_destroy(&sa);
    state_destroy(&sb);
    state_destroy(&slow);
    state_destroy(&selfree);
}

/* ------------------------------------------------------------- admission */

/* An admission hook's state: only `admit` is admitted; `probe` is called from inside the
 * hook to check that node calls there fail at once. */
typedef struct {
    pthread_mutex_t mu;
    uint8_t admit[32];
    uint8_t last_refused[32];
    _Atomic(starling_node *) probe;
    starling_result probe_result; /* 0 until probed */
    int calls;
    int refusals;
    int releases;
} hook_state;

static bool hook_allow(void *ud, const uint8_t *peer) {
    hook_state *h = ud;
    starling_node *probe = atomic_load(&h->probe);
    starling_result r = STARLING_RESULT_OK;
    if (probe) {
        starling_stats st;
        r = starling_node_stats(probe, &st);
    }
    pthread_mutex_lock(&h->mu);
    h->calls++;
    if (probe) h->probe_result = r;
    bool ok = memcmp(peer, h->admit, 32) == 0;
    if (!ok) {
        h->refusals++;
        memcpy(h->last_refused, peer, 32);
    }
    pthread_mutex_unlock(&h->mu);
    return ok;
}

static void hook_release(void *ud) {
    hook_state *h = ud;
    pthread_mutex_lock(&h->mu);
    h->releases++;
    pthread_mutex_unlock(&h->mu);
}

static void hook_init(hook_state *h) {
    memset(h, 0, sizeof *h);
    pthread_mutex_init(&h->mu, NULL);
}

static int hook_releases(hook_state *h) {
    pthread_mutex_lock(&h->mu);
    int v = h->releases;
    pthread_mutex_unlock(&h->mu);
    return v;
}

static starling_config *loopback_config(const char *network, const uint8_t *seed) {
    starling_config *cfg = NULL;
    OK(starling_config_new(&cfg));
    OK(starling_config_set_bind(cfg, "127.0.0.1:0"));
    OK(starling_config_set_network_id(cfg, network));
    OK(starling_config_set_worker_threads(cfg, 1));
    if (seed) OK(starling_config_set_identity_seed(cfg, seed));
    return cfg;
}

static starling_node *start_and_free(starling_config *cfg) {
    starling_node *node = NULL;
    OK(starling_node_start(cfg, &node));
    starling_config_free(cfg);
    return node;
}

/* Waits until `field` of the node's stats is at least `at_least`; returns the stats. */
#define WAIT_STAT(node, field, at_least, what)                                             \
    do {                                                                                   \
        double end_ = now_s() + deadline_s();                                              \
        starling_stats st_;                                                                \
        for (;;) {                                                                         \
            OK(starling_node_stats((node), &st_));                                         \
            if (st_.field >= (uint64_t)(at_least)) break;                                  \
            ASSERT(now_s() < end_, "timeout after %.0f s: %s: " #field " is %llu",        \
                   deadline_s(), (what), (unsigned long long)st_.field);                   \
            sleep_ms(50);                                                                  \
        }                                                                                  \
    } while (0)

static void contact_of(starling_node *n, char *buf) {
    OK(starling_node_contact(n, buf, STARLING_CONTACT_SIZE, NULL));
}

static void test_admission_misuse(void) {
    hook_state h;
    hook_init(&h);
    starling_admission adm = {.userdata = &h, .allow = hook_allow, .release = hook_release};
    starling_config *cfg = NULL;
    OK(starling_config_new(&cfg));
    EXPECT(STARLING_RESULT_NULL_PARAMETER, starling_config_set_admission(NULL, &adm));
    EXPECT(STARLING_RESULT_NULL_PARAMETER, starling_config_set_admission(cfg, NULL));
    starling_admission no_allow = {.userdata = &h, .allow = NULL, .release = hook_release};
    EXPECT(STARLING_RESULT_NULL_PARAMETER, starling_config_set_admission(cfg, &no_allow));
    ASSERT(strstr(last_error(), "allow") != NULL, "message names allow: %s", last_error());
    ASSERT(hook_releases(&h) == 0, "release called for a hook that was not set");
    EXPECT(STARLING_RESULT_NULL_PARAMETER, starling_config_set_allowlist(cfg, NULL, 1));
    EXPECT(STARLING_RESULT_INVALID_ARGUMENT, starling_config_set_allowlist(cfg, (const uint8_t *)"x", SIZE_MAX));

    /* Replacing a hook releases it at once (no node uses it); freeing the config releases
     * the new one. */
    OK(starling_config_set_admission(cfg, &adm));
    ASSERT(hook_releases(&h) == 0, "released while set");
    hook_state h2;
    hook_init(&h2);
    starling_admission adm2 = {.userdata = &h2, .allow = hook_allow, .release = hook_release};
    OK(starling_config_set_admission(cfg, &adm2));
    ASSERT(hook_releases(&h) == 1, "replaced hook released %d times", hook_releases(&h));
    OK(starling_config_set_allowlist(cfg, NULL, 0)); /* replaces adm2: deny everyone */
    ASSERT(hook_releases(&h2) == 1, "hook replaced by an allowlist released %d times",
           hook_releases(&h2));

    /* Two nodes started from one config, freed before the config: released once, when
     * the config goes. */
    hook_state h3;
    hook_init(&h3);
    starling_admission adm3 = {.userdata = &h3, .allow = hook_allow, .release = hook_release};
    OK(starling_config_set_admission(cfg, &adm3));
    OK(starling_config_set_bind(cfg, "127.0.0.1:0"));
    OK(starling_config_set_worker_threads(cfg, 1));
    starling_node *n1 = NULL, *n2 = NULL;
    OK(starling_node_start(cfg, &n1));
    OK(starling_node_start(cfg, &n2));
    starling_node_free(n1);
    starling_node_free(n2);
    ASSERT(hook_releases(&h3) == 0, "released while the config holds it");
    starling_config_free(cfg);
    ASSERT(hook_releases(&h3) == 1, "released %d times after config free", hook_releases(&h3));
    ASSERT(hook_releases(&h) == 1 && hook_releases(&h2) == 1, "earlier hooks released once");

    /* Private networks: what the setter checks. */
    uint8_t auth_seed[32], other_seed[32], peer_seed[32], auth_pub[32], peer_id[32];
    memset(auth_seed, 0xA1, 32);
    memset(other_seed, 0xA2, 32);
    memset(peer_seed, 0x51, 32);
    OK(starling_public_key(auth_seed, auth_pub));
    OK(starling_public_key(peer_seed, peer_id));
    EXPECT(STARLING_RESULT_NULL_PARAMETER, starling_public_key(NULL, auth_pub));
    EXPECT(STARLING_RESULT_NULL_PARAMETER, starling_public_key(auth_seed, NULL));
    char cred[STARLING_CREDENTIAL_TEXT_SIZE], foreign[STARLING_CREDENTIAL_TEXT_SIZE],
        expired[STARLING_CREDENTIAL_TEXT_SIZE], small[16];
    const uint64_t far = 4102444800u; /* 2100-01-01 */
    size_t written = 0;
    OK(starling_credential_issue(auth_seed, peer_id, "net-a", far, cred, sizeof cred, &written));
    ASSERT(written == strlen(cred) && strncmp(cred, "starling-credential-v1 ", 23) == 0, "%s", cred);
    EXPECT(STARLING_RESULT_BUFFER_TOO_SMALL,
           starling_credential_issue(auth_seed, peer_id, "net-a", far, small, sizeof small, NULL));
    EXPECT(STARLING_RESULT_INVALID_ARGUMENT,
           starling_credential_issue(auth_seed, peer_id, "", far, cred, sizeof cred, NULL));
    EXPECT(STARLING_RESULT_NULL_PARAMETER,
           starling_credential_issue(NULL, peer_id, "net-a", far, cred, sizeof cred, NULL));
    OK(starling_credential_issue(other_seed, peer_id, "net-a", far, foreign, sizeof foreign, NULL));
    OK(starling_credential_issue(auth_seed, peer_id, "net-a", 1, expired, sizeof expired, NULL));

    OK(starling_config_new(&cfg));
    EXPECT(STARLING_RESULT_NULL_PARAMETER, starling_config_set_private_network(NULL, auth_pub, cred));
    EXPECT(STARLING_RESULT_NULL_PARAMETER, starling_config_set_private_network(cfg, NULL, cred));
    EXPECT(STARLING_RESULT_NULL_PARAMETER, starling_config_set_private_network(cfg, auth_pub, NULL));
    EXPECT(STARLING_RESULT_INVALID_ARGUMENT, starling_config_set_private_network(cfg, auth_pub, "hello"));
    EXPECT(STARLING_RESULT_INVALID_ARGUMENT,
           starling_config_set_private_network(cfg, auth_pub, "starling-credential-v1 zz"));
    EXPECT(STARLING_RESULT_INVALID_ARGUMENT, starling_config_set_private_network(cfg, auth_pub, foreign));
    ASSERT(strstr(last_error(), "authority") != NULL, "message: %s", last_error());
    EXPECT(STARLING_RESULT_INVALID_ARGUMENT, starling_config_set_private_network(cfg, auth_pub, expired));
    ASSERT(strstr(last_error(), "expired") != NULL, "message: %s", last_error());
    char cred_tampered[STARLING_CREDENTIAL_TEXT_SIZE];
    strcpy(cred_tampered, cred);
    size_t last = strlen(cred_tampered) - 1;
    cred_tampered[last] = cred_tampered[last] == '0' ? '1' : '0'; /* a signature byte */
    EXPECT(STARLING_RESULT_INVALID_ARGUMENT, starling_config_set_private_network(cfg, auth_pub, cred_tampered));
    EXPECT(STARLING_RESULT_INVALID_ARGUMENT, starling_config_set_private_network_hex(cfg, "abc", cred));
    EXPECT(STARLING_RESULT_NULL_PARAMETER, starling_config_set_private_network_hex(cfg, NULL, cred));

    /* What start checks: the credential is for this node's key and network id. */
    OK(starling_config_set_bind(cfg, "127.0.0.1:0"));
    OK(starling_config_set_private_network(cfg, auth_pub, cred));
    starling_node *node = (starling_node *)0x1;
    EXPECT(STARLING_RESULT_INVALID_CONFIG, starling_node_start(cfg, &node)); /* generated key */
    ASSERT(strstr(last_error(), "peer") != NULL, "message: %s", last_error());
    OK(starling_config_set_identity_seed(cfg, peer_seed));
    EXPECT(STARLING_RESULT_INVALID_CONFIG, starling_node_start(cfg, &node)); /* network id */
    ASSERT(strstr(last_error(), "network") != NULL, "message: %s", last_error());
    ASSERT(node == (starling_node *)0x1, "out-param written on failure");
    starling_config_free(cfg);
    pthread_mutex_destroy(&h.mu);
    pthread_mutex_destroy(&h2.mu);
    pthread_mutex_destroy(&h3.mu);
}

static void test_admission_hook(void) {
    const char *net = "starling-c-admission";
    uint8_t seed_b[32], id_b[32], id_d[32];
    memset(seed_b, 0xB0, 32);
    OK(starling_public_key(seed_b, id_b));

    /* a admits only b, through a C hook that also probes a node call from inside. */
    hook_state h;
    hook_init(&h);
    memcpy(h.admit, id_b, 32);
    starling_admission adm = {.userdata = &h, .allow = hook_allow, .release = hook_release};
    starling_config *cfg = loopback_config(net, NULL);
    OK(starling_config_set_admission(cfg, &adm));
    starling_node *a = NULL;
    OK(starling_node_start(cfg, &a));
    starling_config_free(cfg);
    ASSERT(hook_releases(&h) == 0, "released while the node uses it");
    atomic_store(&h.probe, a);
    char contact_a[STARLING_CONTACT_SIZE];
    contact_of(a, contact_a);

    /* e admits an allowlist of two peers: some other id and b. */
    uint8_t list[64];
    memset(list, 0xEE, 32);
    memcpy(list + 32, id_b, 32);
    cfg = loopback_config(net, NULL);
    OK(starling_config_set_allowlist(cfg, list, 2));
    starling_node *e = start_and_free(cfg);
    char contact_e[STARLING_CONTACT_SIZE];
    contact_of(e, contact_e);

    /* d is refused by both. */
    starling_node *d = start_and_free(loopback_config(net, NULL));
    OK(starling_node_id(d, id_d));
    OK(starling_node_join(d, contact_a));
    OK(starling_node_join(d, contact_e));
    WAIT_STAT(a, refused_admission_hook, 1, "a refuses d");
    WAIT_STAT(e, refused_admission_hook, 1, "e refuses d");
    pthread_mutex_lock(&h.mu);
    ASSERT(memcmp(h.last_refused, id_d, 32) == 0, "the hook was asked about d");
    ASSERT(h.probe_result == STARLING_RESULT_WOULD_DEADLOCK,
           "a node call inside the hook gave %s", starling_result_name(h.probe_result));
    pthread_mutex_unlock(&h.mu);
    starling_stats st;
    OK(starling_node_stats(a, &st));
    ASSERT(st.refused >= st.refused_admission_hook && st.neighbors == 0,
           "a: refused %llu, neighbours %llu", (unsigned long long)st.refused,
           (unsigned long long)st.neighbors);

    /* b is admitted by both. */
    starling_node *b = start_and_free(loopback_config(net, seed_b));
    OK(starling_node_join(b, contact_a));
    OK(starling_node_join(b, contact_e));
    WAIT_STAT(a, neighbors, 1, "a admits b");
    WAIT_STAT(e, neighbors, 1, "e admits b");
    WAIT_STAT(b, neighbors, 2, "b is a neighbour of a and e");

    starling_node_free(d);
    starling_node_free(b);
    starling_node_free(e);
    ASSERT(hook_releases(&h) == 0, "released while a runs");
    starling_node_free(a); /* the last reference: the config was freed first */
    ASSERT(hook_releases(&h) == 1, "released %d times after the node", hook_releases(&h));
    pthread_mutex_destroy(&h.mu);
}

static void test_private_network(void) {
    const char *net = "starling-c-private";
    uint8_t auth_seed[32], auth_pub[32], s1[32], s2[32], id1[32], id2[32];
    memset(auth_seed, 0xC1, 32);
    memset(s1, 0xC2, 32);
    memset(s2, 0xC3, 32);
    OK(starling_public_key(auth_seed, auth_pub));
    OK(starling_public_key(s1, id1));
    OK(starling_public_key(s2, id2));
    char auth_hex[STARLING_PEER_ID_HEX_SIZE];
    for (int i = 0; i < 32; i++) snprintf(auth_hex + 2 * i, 3, "%02x", auth_pub[i]);
    char c1[STARLING_CREDENTIAL_TEXT_SIZE], c2[STARLING_CREDENTIAL_TEXT_SIZE];
    const uint64_t far = 4102444800u;
    OK(starling_credential_issue(auth_seed, id1, net, far, c1, sizeof c1, NULL));
    OK(starling_credential_issue(auth_seed, id2, net, far, c2, sizeof c2, NULL));

    starling_config *cfg = loopback_config(net, s1);
    OK(starling_config_set_private_network(cfg, auth_pub, c1));
    starling_node *m1 = start_and_free(cfg);
    char contact1[STARLING_CONTACT_SIZE];
    contact_of(m1, contact1);
    cfg = loopback_config(net, s2);
    OK(starling_config_set_private_network_hex(cfg, auth_hex, c2));
    OK(starling_config_add_bootstrap(cfg, contact1));
    starling_node *m2 = start_and_free(cfg);
    WAIT_STAT(m1, neighbors, 1, "the members connect");
    WAIT_STAT(m2, neighbors, 1, "the members connect");

    /* An outsider on the same network id, without a credential, is refused. */
    starling_node *out = start_and_free(loopback_config(net, NULL));
    OK(starling_node_join(out, contact1));
    WAIT_STAT(m1, refused_credential, 1, "m1 refuses the outsider");
    starling_stats st;
    OK(starling_node_stats(m1, &st));
    ASSERT(st.neighbors == 1 && st.refused >= st.refused_credential,
           "m1: neighbours %llu, refused %llu", (unsigned long long)st.neighbors,
           (unsigned long long)st.refused);
    starling_node_free(out);
    starling_node_free(m2);
    starling_node_free(m1);
}

int main(int argc, char **argv) {
    if (argc > 1 && strcmp(argv[1], "--version") == 0) {
        printf("%s\n", STARLING_VERSION_STRING);
        return 0;
    }
    test_versions();
    test_config_misuse();
    test_node_misuse();
    test_callbacks();
    test_admission_misuse();
    test_admission_hook();
    test_private_network();
    printf("test_api: all passed\n");
    return 0;
}

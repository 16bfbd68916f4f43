/* telemetry: a publisher that sends a sensor reading once a second, and a collector that
 * prints the latest reading of every node.
 *
 *   telemetry collect [--bind ADDR] [--contact-file FILE] [--count N] [--nodes M]
 *   telemetry publish --join PEER [--sensor NAME] [--interval-ms MS] [--count N]
 *
 * The collector prints its contact (and writes it to FILE if given); publishers --join
 * it. Every reading is signed by its publisher's Ed25519 key (the library signs each
 * message and checks the signature on receipt), so the collector keys readings by the
 * verified author id, not by anything in the payload. --count N stops after N readings
 * (sent, or received — and with --nodes M, from at least M different nodes).
 */
#define _POSIX_C_SOURCE 200809L
#include <starling.h>

#include <math.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

static const char TOPIC[] = "telemetry";
#define T (const uint8_t *)TOPIC, sizeof TOPIC - 1
#define MAX_NODES 128

static int fail(const char *what, starling_result r) {
    char msg[512];
    if (starling_last_error_message(msg, sizeof msg, NULL) != STARLING_RESULT_OK) msg[0] = '\0';
    fprintf(stderr, "telemetry: %s: %s: %s\n", what, starling_result_name(r), msg);
    return 1;
}

static void sleep_ms(long ms) {
    struct timespec ts = {ms / 1000, (ms % 1000) * 1000000L};
    nanosleep(&ts, NULL);
}

/* ------------------------------------------------------------- collector */

typedef struct {
    pthread_mutex_t mu;
    pthread_cond_t cv;
    int nodes;
    uint8_t ids[MAX_NODES][32];
    char latest[MAX_NODES][128];
    long received;
} table;

static void on_reading(void *userdata, const starling_message *m) {
    table *t = userdata;
    pthread_mutex_lock(&t->mu);
    int i = 0;
    while (i < t->nodes && memcmp(t->ids[i], m->author, 32) != 0) i++;
    if (i == t->nodes && t->nodes < MAX_NODES) memcpy(t->ids[t->nodes++], m->author, 32);
    if (i < t->nodes) {
        size_t len = m->payload_len < sizeof t->latest[i] - 1 ? m->payload_len : sizeof t->latest[i] - 1;
        memcpy(t->latest[i], m->payload, len);
        t->latest[i][len] = '\0';
    }
    t->received++;
    printf("--- %ld readings, %d nodes\n", t->received, t->nodes);
    for (int k = 0; k < t->nodes; k++)
        printf("%02x%02x%02x%02x  %s\n", t->ids[k][0], t->ids[k][1], t->ids[k][2], t->ids[k][3],
               t->latest[k]);
    fflush(stdout);
    pthread_cond_broadcast(&t->cv);
    pthread_mutex_unlock(&t->mu);
}

static int collect(const char *bind, const char *contact_file, long count, long nodes) {
    starling_config *cfg = NULL;
    starling_result r = starling_config_new(&cfg);
    if (r != STARLING_RESULT_OK) return fail("config", r);
    if ((r = starling_config_set_bind(cfg, bind)) != STARLING_RESULT_OK) return fail("--bind", r);
    starling_node *node = NULL;
    r = starling_node_start(cfg, &node);
    starling_config_free(cfg);
    if (r != STARLING_RESULT_OK) return fail("start", r);

    static table t = {.mu = PTHREAD_MUTEX_INITIALIZER, .cv = PTHREAD_COND_INITIALIZER};
    starling_callbacks cbs = {.userdata = &t, .on_message = on_reading};
    starling_subscription *sub = NULL;
    if ((r = starling_node_subscribe(node, T, &cbs, &sub)) != STARLING_RESULT_OK) return fail("subscribe", r);

    char contact[STARLING_CONTACT_SIZE];
    if ((r = starling_node_contact(node, contact, sizeof contact, NULL)) != STARLING_RESULT_OK)
        return fail("contact", r);
    printf("collector: telemetry publish --join %s\n", contact);
    fflush(stdout);
    if (contact_file) {
        char tmp[4096];
        snprintf(tmp, sizeof tmp, "%s.tmp", contact_file);
        FILE *f = fopen(tmp, "w");
        if (!f || fprintf(f, "%s\n", contact) < 0 || fclose(f) != 0 || rename(tmp, contact_file) != 0) {
            perror(contact_file);
            return 1;
        }
    }

    /* Until `count` readings from `nodes` nodes (0: forever); the callback prints. */
    pthread_mutex_lock(&t.mu);
    while (count == 0 || t.received < count || t.nodes < nodes) pthread_cond_wait(&t.cv, &t.mu);
    pthread_mutex_unlock(&t.mu);
    starling_subscription_free(sub);
    starling_node_free(node);
    return 0;
}

/* ------------------------------------------------------------- publisher */

static int publish(const char *join, const char *sensor, long interval_ms, long count) {
    starling_config *cfg = NULL;
    starling_result r = starling_config_new(&cfg);
    if (r != STARLING_RESULT_OK) return fail("config", r);
    if ((r = starling_config_add_bootstrap(cfg, join)) != STARLING_RESULT_OK) return fail("--join", r);
    starling_node *node = NULL;
    r = starling_node_start(cfg, &node);
    starling_config_free(cfg);
    if (r != STARLING_RESULT_OK) return fail("start", r);

    char hex[STARLING_PEER_ID_HEX_SIZE];
    if ((r = starling_node_id_hex(node, hex, sizeof hex, NULL)) != STARLING_RESULT_OK) return fail("id", r);
    printf("publisher %s: sensor %s, every %ld ms\n", hex, sensor, interval_ms);
    for (long seq = 1; count == 0 || seq <= count; seq++) {
        /* A simulated sensor: a slow sine around 21 degrees. */
        double celsius = 21.0 + 3.0 * sin((double)seq / 10.0);
        char reading[128];
        int len = snprintf(reading, sizeof reading, "sensor=%s seq=%ld temperature=%.2f", sensor, seq, celsius);
        starling_receipt receipt;
        r = starling_node_publish(node, T, (const uint8_t *)reading, (size_t)len, &receipt);
        if (r != STARLING_RESULT_OK) {
            starling_node_free(node);
            return fail("publish", r);
        }
        printf("sent %s to %zu peers\n", reading, receipt.peers);
        fflush(stdout);
        sleep_ms(interval_ms);
    }
    starling_node_free(node);
    return 0;
}

int main(int argc, char **argv) {
    if (argc < 2) goto usage;
    const char *bind = "0.0.0.0:0", *join = NULL, *sensor = "room-1", *contact_file = NULL;
    long interval_ms = 1000, count = 0, nodes = 0;
    for (int i = 2; i < argc; i += 2) {
        const char *arg = argv[i], *val = i + 1 < argc ? argv[i + 1] : NULL;
        if (!val) goto usage;
        if (strcmp(arg, "--bind") == 0) bind = val;
        else if (strcmp(arg, "--join") == 0) join = val;
        else if (strcmp(arg, "--sensor") == 0) sensor = val;
        else if (strcmp(arg, "--contact-file") == 0) contact_file = val;
        else if (strcmp(arg, "--interval-ms") == 0) interval_ms = atol(val);
        else if (strcmp(arg, "--count") == 0) count = atol(val);
        else if (strcmp(arg, "--nodes") == 0) nodes = atol(val);
        else goto usage;
    }
    if (interval_ms <= 0 || count < 0 || nodes < 0) goto usage;
    if (strcmp(argv[1], "collect") == 0) return collect(bind, contact_file, count, nodes);
    if (strcmp(argv[1], "publish") == 0 && join) return publish(join, sensor, interval_ms, count);

usage:
    fprintf(stderr,
            "usage: telemetry collect [--bind ADDR] [--contact-file FILE] [--count N] [--nodes M]\n"
            "       telemetry publish --join PEER [--sensor NAME] [--interval-ms MS] [--count N]\n");
    return 2;
}

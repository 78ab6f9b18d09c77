package pobox

import (
	"errors"
	"fmt"
	"net/netip"
	"strings"
	"testing"
)

// api: least-request with outlier detection (two failures eject, half the
// set at most); cache: maglev.
const apiYAML = `
apiVersion: v1
kind: Service
metadata:
  name: api
  namespace: default
  annotations:
    pobox.io/lb-policy: least-request
    pobox.io/outlier-consecutive-failures: "2"
    pobox.io/outlier-max-ejection-percent: "50"
    pobox.io/outlier-panic-threshold-percent: "0"
spec:
  clusterIP: 10.96.0.20
  ports: [{name: http, port: 80, targetPort: 8080}]
---
apiVersion: discovery.k8s.io/v1
kind: EndpointSlice
metadata: {name: api-1, namespace: default, labels: {kubernetes.io/service-name: api}}
addressType: IPv4
ports: [{name: http, port: 8080}]
endpoints: [{addresses: [10.2.0.1]}, {addresses: [10.2.0.2]}]
---
apiVersion: v1
kind: Service
metadata:
  name: cache
  namespace: default
  annotations: {pobox.io/lb-policy: maglev, pobox.io/maglev-table-size: "251"}
spec:
  clusterIP: 10.96.0.30
  ports: [{port: 6379}]
---
apiVersion: discovery.k8s.io/v1
kind: EndpointSlice
metadata: {name: cache-1, namespace: default, labels: {kubernetes.io/service-name: cache}}
addressType: IPv4
ports: [{port: 6379}]
endpoints: [{addresses: [10.3.0.1]}, {addresses: [10.3.0.2]}, {addresses: [10.3.0.3]}, {addresses: [10.3.0.4]}]
`

func newAPI(t testing.TB) *Mesh {
	t.Helper()
	m, err := New(Options{})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { m.Close() })
	if err := m.Apply([]byte(apiYAML)); err != nil {
		t.Fatal(err)
	}
	return m
}

func mustDest(t testing.TB, s string) *Dest {
	t.Helper()
	d, err := ParseDest(s)
	if err != nil {
		t.Fatal(err)
	}
	return d
}

func TestBeginCountsRequestsInFlight(t *testing.T) {
	m := newAPI(t)
	api := mustDest(t, "api.default:http")
	first, err := m.Begin(api, netip.Addr{}, nil)
	if err != nil {
		t.Fatal(err)
	}
	// Two endpoints: power of two choices compares both, so with one
	// request open on the first, the next goes to the other.
	second, err := m.Begin(api, netip.Addr{}, nil)
	if err != nil {
		t.Fatal(err)
	}
	if first.Endpoint == second.Endpoint {
		t.Fatalf("both requests went to %v", first.Endpoint)
	}
	first.Finish(false)
	first.Finish(true) // a second Finish does nothing
	third, err := m.Begin(api, netip.Addr{}, nil)
	if err != nil {
		t.Fatal(err)
	}
	if third.Endpoint != first.Endpoint {
		t.Fatalf("third request went to %v, want the idle %v", third.Endpoint, first.Endpoint)
	}
	second.Finish(false)
	third.Finish(false)

	if _, err := ParseDest("not a destination"); !errors.Is(err, ErrBadDestination) {
		t.Fatalf("ParseDest: %v", err)
	}
	if _, err := m.Begin(mustDest(t, "nope.default:http"), netip.Addr{}, nil); !errors.Is(err, ErrNoService) ||
		!strings.Contains(err.Error(), "nope.default") {
		t.Fatalf("Begin on a missing Service: %v", err)
	}
}

func TestFailuresEjectAnEndpoint(t *testing.T) {
	bad := netip.MustParseAddrPort("10.2.0.2:8080")
	check := func(m *Mesh, api *Dest) {
		t.Helper()
		for i := 0; i < 20; i++ {
			got, err := m.PickKey(api, netip.Addr{}, nil)
			if err != nil {
				t.Fatal(err)
			}
			if got == bad {
				t.Fatalf("pick %d went to the ejected %v", i, bad)
			}
		}
	}
	// Through Finish.
	m := newAPI(t)
	api := mustDest(t, "api.default:http")
	failed := 0
	for i := 0; i < 100 && failed < 2; i++ {
		req, err := m.Begin(api, netip.Addr{}, nil)
		if err != nil {
			t.Fatal(err)
		}
		isBad := req.Endpoint == bad
		if isBad {
			failed++
		}
		req.Finish(isBad)
	}
	if failed != 2 {
		t.Fatalf("%d failures reported", failed)
	}
	check(m, api)
	// Through Report.
	m = newAPI(t)
	for i := 0; i < 2; i++ {
		if err := m.Report(api, bad, true); err != nil {
			t.Fatal(err)
		}
	}
	check(m, api)
}

func TestPickKeyIsConsistent(t *testing.T) {
	m := newAPI(t)
	cache := mustDest(t, "10.96.0.30:6379")
	want, err := m.PickKey(cache, netip.Addr{}, []byte("user-42"))
	if err != nil {
		t.Fatal(err)
	}
	for i := 0; i < 5; i++ {
		if got, _ := m.PickKey(cache, netip.Addr{}, []byte("user-42")); got != want {
			t.Fatalf("same key: %v then %v", want, got)
		}
	}
	seen := map[netip.AddrPort]bool{}
	for k := 0; k < 64; k++ {
		got, err := m.PickKey(cache, netip.Addr{}, []byte(fmt.Sprintf("user-%d", k)))
		if err != nil {
			t.Fatal(err)
		}
		seen[got] = true
	}
	if len(seen) < 3 {
		t.Fatalf("64 keys reached only %v", seen)
	}
	// No key: the client IP is hashed, as by PickAddr.
	client := netip.MustParseAddr("192.0.2.7")
	a, _ := m.PickKey(cache, client, nil)
	b, _ := m.PickAddr(netip.MustParseAddrPort("10.96.0.30:6379"), client)
	if a != b {
		t.Fatalf("PickKey without a key %v, PickAddr %v", a, b)
	}
}

func TestLookup(t *testing.T) {
	m := newWeb(t)
	rcode, records, err := m.Lookup("web.default.svc.cluster.local", "", "")
	if err != nil || rcode != NoError {
		t.Fatalf("rcode %d, err %v", rcode, err)
	}
	if want := []string{"web.default.svc.cluster.local.\t5\tIN\tA\t10.96.0.10"}; fmt.Sprint(records) != fmt.Sprint(want) {
		t.Fatalf("records %q, want %q", records, want)
	}
	if _, records, _ := m.Lookup("web", "A", "default"); len(records) != 1 {
		t.Fatalf("short name: %q", records)
	}
	if rcode, records, _ := m.Lookup("nope.default.svc.cluster.local", "A", ""); rcode != NXDomain || records != nil {
		t.Fatalf("missing name: %d %q", rcode, records)
	}
	if rcode, _, _ := m.Lookup("example.com", "A", ""); rcode != Refused {
		t.Fatalf("outside the zone: %d", rcode)
	}
	if _, _, err := m.Lookup("web", "BOGUS", ""); !errors.Is(err, ErrBadArgument) || !strings.Contains(err.Error(), "BOGUS") {
		t.Fatalf("bad type: %v", err)
	}
	// An answer larger than the first buffer.
	var doc strings.Builder
	doc.WriteString(`{"apiVersion":"v1","kind":"List","items":[{"apiVersion":"v1","kind":"Service","metadata":{"name":"many","namespace":"default"},"spec":{"clusterIP":"None","ports":[{"port":80}]}},{"apiVersion":"discovery.k8s.io/v1","kind":"EndpointSlice","metadata":{"name":"many-1","namespace":"default","labels":{"kubernetes.io/service-name":"many"}},"addressType":"IPv4","ports":[{"port":80}],"endpoints":[`)
	for i := 1; i <= 40; i++ {
		if i > 1 {
			doc.WriteString(",")
		}
		fmt.Fprintf(&doc, `{"addresses":["10.9.0.%d"]}`, i)
	}
	doc.WriteString(`]}]}`)
	if err := m.Apply([]byte(doc.String())); err != nil {
		t.Fatal(err)
	}
	if _, records, err := m.Lookup("many.default.svc.cluster.local", "A", ""); err != nil || len(records) != 40 {
		t.Fatalf("headless: %d records, %v", len(records), err)
	}
}

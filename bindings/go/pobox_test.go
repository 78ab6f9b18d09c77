package pobox

import (
	"errors"
	"fmt"
	"net/netip"
	"strings"
	"sync"
	"testing"
)

// web: cluster IP 10.96.0.10, port http 80 -> 8080; endpoints .1 and .2 ready.
const webYAML = `
apiVersion: v1
kind: Service
metadata: {name: web, namespace: default}
spec:
  clusterIP: 10.96.0.10
  ports: [{name: http, port: 80, targetPort: 8080}]
---
apiVersion: discovery.k8s.io/v1
kind: EndpointSlice
metadata:
  name: web-1
  namespace: default
  labels: {kubernetes.io/service-name: web}
addressType: IPv4
ports: [{name: http, port: 8080}]
endpoints:
- addresses: [10.1.0.1]
- addresses: [10.1.0.2]
`

func newWeb(t testing.TB) *Mesh {
	t.Helper()
	m, err := New(Options{Node: "node-a", Zone: "zone-a", NodeIPs: []netip.Addr{netip.MustParseAddr("10.0.0.5")}})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { m.Close() })
	if err := m.Apply([]byte(webYAML)); err != nil {
		t.Fatal(err)
	}
	return m
}

func TestPickForms(t *testing.T) {
	m := newWeb(t)
	vip := netip.MustParseAddrPort("10.96.0.10:80")
	cases := []struct {
		name string
		pick func() (netip.AddrPort, error)
	}{
		{"text by address", func() (netip.AddrPort, error) { return m.Pick("10.96.0.10:80", netip.Addr{}) }},
		{"text by name", func() (netip.AddrPort, error) { return m.Pick("web.default:http", netip.MustParseAddr("10.0.0.9")) }},
		{"binary", func() (netip.AddrPort, error) { return m.PickAddr(vip, netip.Addr{}) }},
		{"binary, 4in6", func() (netip.AddrPort, error) {
			return m.PickAddrProto(netip.MustParseAddrPort("[::ffff:10.96.0.10]:80"), TCP, netip.MustParseAddr("::1"))
		}},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			seen := map[string]int{}
			for i := 0; i < 4; i++ {
				got, err := c.pick()
				if err != nil {
					t.Fatal(err)
				}
				seen[got.String()]++
			}
			if seen["10.1.0.1:8080"] != 2 || seen["10.1.0.2:8080"] != 2 {
				t.Fatalf("round robin over two endpoints, four picks: %v", seen)
			}
		})
	}
}

func TestErrorsCarryTheLibrarysMessage(t *testing.T) {
	m := newWeb(t)
	cases := []struct {
		err      error
		kind     error
		contains string
	}{
		{first(m.Pick("10.96.0.99:80", netip.Addr{})), ErrNoService, "no Service matches 10.96.0.99:80"},
		{first(m.Pick("web.default:nope", netip.Addr{})), ErrNoPort, "default/web"},
		{first(m.Pick("not a destination", netip.Addr{})), ErrBadDestination, "bad destination"},
		{first(m.PickAddrProto(netip.MustParseAddrPort("10.96.0.10:80"), UDP, netip.Addr{})), ErrNoService, "10.96.0.10:80/UDP"},
		{m.Apply([]byte("{ not yaml")), ErrSyntax, "document 1"},
		{m.Apply([]byte("apiVersion: v1\nkind: Service\nmetadata: {name: bad}\nspec: {ports: [{port: 70000}]}\n")), ErrInvalidObject, "70000"},
		{m.Delete("Pod", "default", "x"), ErrUnknownKind, "Pod"},
		{first(New(Options{Node: "Not_Valid"})), ErrConfig, "Not_Valid"},
	}
	for _, c := range cases {
		if !errors.Is(c.err, c.kind) {
			t.Errorf("%v: not %v", c.err, c.kind)
		}
		if c.err == nil || !strings.Contains(c.err.Error(), c.contains) {
			t.Errorf("%v: does not say %q", c.err, c.contains)
		}
	}
	if m.Version() != 1 {
		t.Errorf("failed applies changed the version to %d", m.Version())
	}
}

func first[T any](_ T, err error) error { return err }

func TestDeleteAndVersion(t *testing.T) {
	m := newWeb(t)
	if err := m.Delete("EndpointSlice", "default", "web-1"); err != nil {
		t.Fatal(err)
	}
	if v := m.Version(); v != 2 {
		t.Fatalf("version %d, want 2", v)
	}
	if _, err := m.Pick("web.default:http", netip.Addr{}); !errors.Is(err, ErrNoEndpoints) {
		t.Fatalf("got %v, want ErrNoEndpoints", err)
	}
	eps, err := m.Endpoints("web.default:http", true)
	if err != nil || len(eps) != 0 {
		t.Fatalf("endpoints after delete: %v %v", eps, err)
	}
}

func TestEndpoints(t *testing.T) {
	m := newWeb(t)
	eps, err := m.Endpoints("10.96.0.10:80", false)
	if err != nil {
		t.Fatal(err)
	}
	want := []Endpoint{
		{Addr: netip.MustParseAddrPort("10.1.0.1:8080"), Ready: true, Serving: true},
		{Addr: netip.MustParseAddrPort("10.1.0.2:8080"), Ready: true, Serving: true},
	}
	if fmt.Sprint(eps) != fmt.Sprint(want) {
		t.Fatalf("got %v, want %v", eps, want)
	}
	// More endpoints than the first buffer holds.
	var b strings.Builder
	b.WriteString(strings.Split(webYAML, "endpoints:")[0] + "endpoints:\n")
	for i := 0; i < 40; i++ {
		fmt.Fprintf(&b, "- addresses: [10.1.1.%d]\n", i+1)
	}
	if err := m.Apply([]byte(b.String())); err != nil {
		t.Fatal(err)
	}
	eps, err = m.Endpoints("web.default:http", false)
	if err != nil || len(eps) != 40 {
		t.Fatalf("got %d endpoints (%v), want 40", len(eps), err)
	}
}

func TestPickBatch(t *testing.T) {
	m := newWeb(t)
	dests := make([]netip.AddrPort, 150)
	for i := range dests {
		dests[i] = netip.MustParseAddrPort("10.96.0.10:80")
	}
	dests[7] = netip.MustParseAddrPort("10.96.0.11:80")
	dests[140] = netip.MustParseAddrPort("10.96.0.12:80")
	out := make([]netip.AddrPort, len(dests))
	err := m.PickBatch(dests, netip.Addr{}, out)
	var batchErr *BatchError
	if !errors.As(err, &batchErr) || len(batchErr.Failed) != 2 || batchErr.Failed[0].Index != 7 || batchErr.Failed[1].Index != 140 {
		t.Fatalf("got %v, want failures at 7 and 140", err)
	}
	if !errors.Is(batchErr.Failed[1].Err, ErrNoService) || !strings.Contains(batchErr.Failed[1].Err.Error(), "10.96.0.12:80") {
		t.Fatalf("failure without the library's message: %v", batchErr.Failed[1].Err)
	}
	counts := map[netip.AddrPort]int{}
	for i, ap := range out {
		if i == 7 || i == 140 {
			if ap.IsValid() {
				t.Fatalf("out[%d] = %v for a failed pick", i, ap)
			}
			continue
		}
		counts[ap]++
	}
	if len(counts) != 2 || counts[netip.MustParseAddrPort("10.1.0.1:8080")] != 74 {
		t.Fatalf("uneven batch: %v", counts)
	}
	if err := m.PickBatch(dests, netip.Addr{}, out[:3]); err == nil {
		t.Fatal("a short out slice was accepted")
	}
}

func TestCloseIsIdempotent(t *testing.T) {
	m, err := New(Options{})
	if err != nil {
		t.Fatal(err)
	}
	if err := m.Close(); err != nil {
		t.Fatal(err)
	}
	if err := m.Close(); err != nil {
		t.Fatal(err)
	}
	if _, err := m.Pick("web:80", netip.Addr{}); !errors.Is(err, ErrClosed) {
		t.Fatalf("pick after close: %v", err)
	}
	if err := m.Apply([]byte(webYAML)); !errors.Is(err, ErrClosed) {
		t.Fatalf("apply after close: %v", err)
	}
	if m.Version() != 0 {
		t.Fatal("a closed mesh has a version")
	}
}

// One goroutine applies while others pick; run with -race.
func TestConcurrentApplyAndPick(t *testing.T) {
	m := newWeb(t)
	other := strings.ReplaceAll(webYAML, "10.1.0.", "10.2.0.")
	valid := map[string]bool{"10.1.0.1:8080": true, "10.1.0.2:8080": true, "10.2.0.1:8080": true, "10.2.0.2:8080": true}
	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		for i := 0; i < 100; i++ {
			doc := webYAML
			if i%2 == 0 {
				doc = other
			}
			if err := m.Apply([]byte(doc)); err != nil {
				t.Error(err)
				return
			}
		}
	}()
	for g := 0; g < 4; g++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := 0; i < 2000; i++ {
				got, err := m.PickAddr(netip.MustParseAddrPort("10.96.0.10:80"), netip.Addr{})
				if err != nil || !valid[got.String()] {
					t.Errorf("pick %v %v", got, err)
					return
				}
			}
		}()
	}
	wg.Wait()
}

func TestLibraryVersion(t *testing.T) {
	if LibraryVersion() == "" {
		t.Fatal("no version")
	}
}

func TestLimits(t *testing.T) {
	m, err := New(Options{Limits: &Limits{MaxObjects: 1, AffinityCapacity: 8}})
	if err != nil {
		t.Fatal(err)
	}
	defer m.Close()
	err = m.Apply([]byte(webYAML))
	if !errors.Is(err, ErrLimit) || !strings.Contains(err.Error(), "maxObjects") {
		t.Fatalf("Apply over MaxObjects = %v, want ErrLimit naming maxObjects", err)
	}
	if v := m.Version(); v != 0 {
		t.Fatalf("version %d after a refused apply", v)
	}
	if Result(19).String() != "POBOX_ERR_LIMIT" || ErrLimit.Code != 19 {
		t.Fatalf("ErrLimit is code %d, %v", ErrLimit.Code, Result(19))
	}
	if _, err := New(Options{Limits: &Limits{MaxDepth: -1}}); !errors.Is(err, ErrConfig) {
		t.Fatalf("a negative limit = %v, want ErrConfig", err)
	}
	big, err := New(Options{Limits: &Limits{MaxObjects: 2}})
	if err != nil {
		t.Fatal(err)
	}
	defer big.Close()
	if err := big.Apply([]byte(webYAML)); err != nil {
		t.Fatalf("at the limit: %v", err)
	}
}

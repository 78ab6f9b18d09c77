package pobox

import (
	"errors"
	"net/netip"
	"strings"
	"sync"
	"testing"
)

func newRoute(t testing.TB, m *Mesh, dest, namespace string) *Route {
	t.Helper()
	rt, err := m.NewRoute(dest, namespace)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { rt.Close() })
	return rt
}

func TestRouteFollowsTheMesh(t *testing.T) {
	m := newWeb(t)
	rt := newRoute(t, m, "web:http", "")
	vip := netip.MustParseAddrPort("10.96.0.10:80")
	// One round-robin sequence, through the route or the mesh.
	want := []string{"10.1.0.1:8080", "10.1.0.2:8080", "10.1.0.1:8080"}
	for i, w := range want {
		var got netip.AddrPort
		var err error
		if i == 1 {
			got, err = m.PickAddr(vip, netip.Addr{})
		} else {
			got, err = rt.Pick(netip.Addr{})
		}
		if err != nil || got.String() != w {
			t.Fatalf("pick %d: %v %v, want %s", i, got, err, w)
		}
	}
	// An update is seen by the next pick.
	if err := m.Apply([]byte(strings.Replace(webYAML, "- addresses: [10.1.0.2]\n", "", 1))); err != nil {
		t.Fatal(err)
	}
	for range 3 {
		if got, err := rt.Pick(netip.Addr{}); err != nil || got.String() != "10.1.0.1:8080" {
			t.Fatalf("after the update: %v %v", got, err)
		}
	}
	// Names resolve in the route's namespace.
	other := newRoute(t, m, "web:http", "other")
	if _, err := other.Pick(netip.Addr{}); !errors.Is(err, ErrNoService) || !strings.Contains(err.Error(), "web") {
		t.Fatalf("got %v, want ErrNoService naming web", err)
	}
	if _, err := m.NewRoute("no such:thing", ""); !errors.Is(err, ErrBadDestination) {
		t.Fatalf("got %v, want ErrBadDestination", err)
	}
	// A route outlives its mesh; a closed route refuses.
	m.Close()
	if _, err := m.NewRoute("web:http", ""); !errors.Is(err, ErrClosed) {
		t.Fatalf("NewRoute on a closed mesh: %v", err)
	}
	if got, err := rt.Pick(netip.Addr{}); err != nil || got.String() != "10.1.0.1:8080" {
		t.Fatalf("after the mesh closed: %v %v", got, err)
	}
	rt.Close()
	rt.Close()
	if _, err := rt.Pick(netip.Addr{}); !errors.Is(err, ErrClosed) {
		t.Fatalf("Pick on a closed route: %v", err)
	}
	if err := rt.PickBatch(nil, make([]netip.AddrPort, 1)); !errors.Is(err, ErrClosed) {
		t.Fatalf("PickBatch on a closed route: %v", err)
	}
}

func TestRoutePickBatch(t *testing.T) {
	m := newWeb(t)
	rt := newRoute(t, m, "10.96.0.10:80", "")
	out := make([]netip.AddrPort, 150)
	if err := rt.PickBatch(nil, out); err != nil {
		t.Fatal(err)
	}
	counts := map[string]int{}
	for _, ap := range out {
		counts[ap.String()]++
	}
	if counts["10.1.0.1:8080"] != 75 || counts["10.1.0.2:8080"] != 75 {
		t.Fatalf("uneven batch: %v", counts)
	}
	clients := make([]netip.Addr, len(out))
	clients[3] = netip.MustParseAddr("192.0.2.1")
	if err := rt.PickBatch(clients, out); err != nil {
		t.Fatal(err)
	}
	if err := rt.PickBatch(clients[:2], out); err == nil {
		t.Fatal("clients shorter than out was accepted")
	}
	missing := newRoute(t, m, "10.96.0.99:80", "")
	err := missing.PickBatch(nil, out[:70])
	var batchErr *BatchError
	if !errors.As(err, &batchErr) || len(batchErr.Failed) != 70 || batchErr.Failed[69].Index != 69 {
		t.Fatalf("got %v, want 70 failures", err)
	}
	if !errors.Is(batchErr.Failed[69].Err, ErrNoService) || !strings.Contains(batchErr.Failed[69].Err.Error(), "10.96.0.99:80") {
		t.Fatalf("failure without the library's message: %v", batchErr.Failed[69].Err)
	}
	if out[0].IsValid() {
		t.Fatalf("out[0] = %v for a failed pick", out[0])
	}
}

// One route, many goroutines, while the mesh changes (run with -race).
func TestRouteConcurrentPicksAndApplies(t *testing.T) {
	m := newWeb(t)
	rt := newRoute(t, m, "web.default:http", "")
	var wg sync.WaitGroup
	errs := make(chan error, 8)
	for range 4 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			out := make([]netip.AddrPort, 10)
			for range 500 {
				ap, err := rt.Pick(netip.Addr{})
				if err == nil {
					err = rt.PickBatch(nil, out)
				}
				if err != nil || ap.Port() != 8080 {
					errs <- err
					return
				}
			}
		}()
	}
	for i := range 50 {
		doc := webYAML
		if i%2 == 0 {
			doc = strings.Replace(webYAML, "10.1.0.2", "10.1.0.9", 1)
		}
		if err := m.Apply([]byte(doc)); err != nil {
			t.Fatal(err)
		}
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Fatalf("a pick failed: %v", err)
	}
}

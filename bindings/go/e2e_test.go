package pobox

import (
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"net/netip"
	"strings"
	"sync"
	"testing"
)

// backend is a real HTTP server on loopback that counts what it serves.
type backend struct {
	srv  *httptest.Server
	addr netip.AddrPort
	mu   sync.Mutex
	hits int
}

func startBackend(t *testing.T, ip string) *backend {
	t.Helper()
	ln, err := net.Listen("tcp", ip+":0")
	if err != nil {
		t.Fatal(err)
	}
	b := &backend{}
	b.srv = httptest.NewUnstartedServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		b.mu.Lock()
		b.hits++
		b.mu.Unlock()
		fmt.Fprint(w, b.addr.String())
	}))
	b.srv.Listener.Close()
	b.srv.Listener = ln
	b.srv.Start()
	t.Cleanup(b.srv.Close)
	b.addr = netip.MustParseAddrPort(ln.Addr().String())
	return b
}

func (b *backend) count() int {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.hits
}

// meshFor is a Service web (cluster IP 10.96.0.10, port 80) whose endpoints
// are the backends, one EndpointSlice each (they share no port number).
func meshDoc(backends []*backend) string {
	var b strings.Builder
	b.WriteString(`{"apiVersion":"v1","kind":"List","items":[
{"apiVersion":"v1","kind":"Service","metadata":{"name":"web","namespace":"default"},
 "spec":{"clusterIP":"10.96.0.10","ports":[{"name":"http","port":80,"targetPort":"http"}]}}`)
	for i, be := range backends {
		fmt.Fprintf(&b, `,
{"apiVersion":"discovery.k8s.io/v1","kind":"EndpointSlice",
 "metadata":{"name":"web-%d","namespace":"default","labels":{"kubernetes.io/service-name":"web"}},
 "addressType":"IPv4","ports":[{"name":"http","port":%d}],
 "endpoints":[{"addresses":["%s"]}]}`, i, be.addr.Port(), be.addr.Addr())
	}
	b.WriteString("]}")
	return b.String()
}

// An http.Client whose transport dials through the mesh reaches real servers,
// spreads requests over them, and stops using one as soon as it is removed.
func TestHTTPThroughDialContext(t *testing.T) {
	backends := []*backend{
		startBackend(t, "127.0.0.1"),
		startBackend(t, "127.0.0.2"),
		startBackend(t, "127.0.0.3"),
	}
	m, err := New(Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer m.Close()
	if err := m.Apply([]byte(meshDoc(backends))); err != nil {
		t.Fatal(err)
	}
	// No keep-alive: every request dials, so every request is a pick.
	client := &http.Client{Transport: &http.Transport{DialContext: m.DialContext, DisableKeepAlives: true}}
	get := func(url string) string {
		t.Helper()
		resp, err := client.Get(url)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		body, err := io.ReadAll(resp.Body)
		if err != nil {
			t.Fatal(err)
		}
		return string(body)
	}

	const rounds = 90
	for i := 0; i < rounds; i++ {
		url := "http://10.96.0.10/"
		if i%2 == 1 {
			url = "http://web.default.svc.cluster.local/"
		}
		get(url)
	}
	for _, be := range backends {
		// Round robin gives each 30; threads keep their own cursors, so allow slack.
		if c := be.count(); c < rounds/6 {
			t.Errorf("backend %v served %d of %d requests", be.addr, c, rounds)
		}
	}

	// Remove the third endpoint mid-run: it gets nothing more.
	removed := backends[2]
	before := removed.count()
	if err := m.Delete("EndpointSlice", "default", "web-2"); err != nil {
		t.Fatal(err)
	}
	for i := 0; i < 30; i++ {
		if got := get("http://web.default/"); got == removed.addr.String() {
			t.Fatalf("request %d reached the removed endpoint", i)
		}
	}
	if removed.count() != before {
		t.Fatalf("removed endpoint served %d more requests", removed.count()-before)
	}

	// Addresses no Service owns are dialled as they are.
	if got := get("http://" + removed.addr.String() + "/"); got != removed.addr.String() {
		t.Fatalf("direct request answered by %s", got)
	}

	// A Service with no endpoint left refuses, as kube-proxy would.
	for _, name := range []string{"web-0", "web-1"} {
		if err := m.Delete("EndpointSlice", "default", name); err != nil {
			t.Fatal(err)
		}
	}
	if _, err := client.Get("http://web.default/"); err == nil || !strings.Contains(err.Error(), "no eligible endpoint") {
		t.Fatalf("got %v, want a refusal naming no eligible endpoint", err)
	}
}

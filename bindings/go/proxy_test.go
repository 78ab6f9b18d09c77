package pobox

import (
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"strings"
	"testing"
	"time"
)

// A proxy started from Go forwards real HTTP connections to every backend,
// counts them, and stops.
func TestProxyForwardsAndStops(t *testing.T) {
	backends := []*backend{startBackend(t, "127.0.0.1"), startBackend(t, "127.0.0.2")}
	m, err := New(Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer m.Close()
	if err := m.Apply([]byte(meshDoc(backends))); err != nil {
		t.Fatal(err)
	}
	p, err := m.StartProxy(ProxyOptions{Listen: []string{"127.0.0.1:0=web.default:80"}, Threads: 2})
	if err != nil {
		t.Fatal(err)
	}
	defer p.Close()
	addrs, err := p.Addrs()
	if err != nil || len(addrs) != 1 || addrs[0].Port() == 0 {
		t.Fatalf("addrs %v, %v", addrs, err)
	}
	client := &http.Client{Transport: &http.Transport{DisableKeepAlives: true}}
	seen := map[string]int{}
	for i := 0; i < 10; i++ {
		resp, err := client.Get("http://" + addrs[0].String() + "/")
		if err != nil {
			t.Fatal(err)
		}
		body, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		seen[string(body)]++
	}
	// Round-robin cursors are per thread, and the proxy runs two: each
	// thread alternates exactly, so the split is 5/5 give or take one per
	// thread that handled an odd number of connections.
	for _, be := range backends {
		if n := seen[be.addr.String()]; n < 4 || n > 6 {
			t.Errorf("round robin: %v", seen)
		}
	}
	metrics, err := p.Metrics()
	if err != nil {
		t.Fatal(err)
	}
	l := metrics.Listeners[0]
	if l.Accepted != 10 || l.Destination != "web.default:80" || len(l.Endpoints) != 2 {
		t.Fatalf("metrics %+v", l)
	}
	for _, e := range l.Endpoints {
		if e.Connections != uint64(seen[e.Addr.String()]) || e.BytesSent == 0 || e.BytesReceived == 0 {
			t.Errorf("endpoint %+v", e)
		}
	}
	if err := p.Stop(100 * time.Millisecond); err != nil {
		t.Fatal(err)
	}
	if err := p.Stop(0); err != nil {
		t.Fatal("a second Stop does nothing", err)
	}
	if _, err := p.Metrics(); !errors.Is(err, ErrProxyStopped) {
		t.Fatalf("metrics after stop: %v", err)
	}
	if c, err := net.DialTimeout("tcp", addrs[0].String(), time.Second); err == nil {
		c.Close()
		t.Fatal("the listener still accepts after Stop")
	}
}

func TestProxyErrors(t *testing.T) {
	m, err := New(Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer m.Close()
	for _, c := range []struct {
		opts ProxyOptions
		want error
		text string
	}{
		{ProxyOptions{}, ErrConfig, "at least one"},
		{ProxyOptions{Listen: []string{"nowhere=web"}}, ErrConfig, "nowhere"},
		{ProxyOptions{Listen: []string{"127.0.0.1:0=web:80/UDP"}}, ErrConfig, "only TCP"},
	} {
		_, err := m.StartProxy(c.opts)
		if !errors.Is(err, c.want) || !strings.Contains(err.Error(), c.text) {
			t.Errorf("%+v: got %v, want %v containing %q", c.opts, err, c.want, c.text)
		}
	}
	taken, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer taken.Close()
	_, err = m.StartProxy(ProxyOptions{Listen: []string{taken.Addr().String() + "=web:80"}})
	if !errors.Is(err, ErrIO) {
		t.Fatalf("binding a taken address: %v", err)
	}
	m.Close()
	if _, err := m.StartProxy(ProxyOptions{Listen: []string{"127.0.0.1:0=web:80"}}); !errors.Is(err, ErrClosed) {
		t.Fatalf("on a closed mesh: %v", err)
	}
}

// Run a forwarder in-process: connections to the listener reach the
// Service's endpoints.
func ExampleMesh_StartProxy() {
	backend, _ := net.Listen("tcp", "127.0.0.1:0")
	go http.Serve(backend, http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) {
		fmt.Fprint(w, "hello from web")
	}))
	port := backend.Addr().(*net.TCPAddr).Port

	m, _ := New(Options{})
	defer m.Close()
	m.Apply([]byte(fmt.Sprintf(`{"apiVersion":"v1","kind":"List","items":[
{"apiVersion":"v1","kind":"Service","metadata":{"name":"web","namespace":"default"},
 "spec":{"clusterIP":"10.96.0.10","ports":[{"port":80,"targetPort":%d}]}},
{"apiVersion":"discovery.k8s.io/v1","kind":"EndpointSlice",
 "metadata":{"name":"web-1","namespace":"default","labels":{"kubernetes.io/service-name":"web"}},
 "addressType":"IPv4","ports":[{"port":%d}],"endpoints":[{"addresses":["127.0.0.1"]}]}]}`, port, port)))

	p, err := m.StartProxy(ProxyOptions{Listen: []string{"127.0.0.1:0=web.default:80"}})
	if err != nil {
		fmt.Println(err)
		return
	}
	defer p.Stop(time.Second)
	addrs, _ := p.Addrs()
	resp, err := http.Get("http://" + addrs[0].String() + "/")
	if err != nil {
		fmt.Println(err)
		return
	}
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	fmt.Println(string(body))
	// Output: hello from web
}

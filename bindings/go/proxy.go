package pobox

/*
#include <stdlib.h>
#include <pobox.h>

#include "pobox_go.h"

static pobox_result pobox_go_proxy_start(const pobox_mesh *mesh, const char *options,
                                         pobox_proxy **proxy, char **err) {
	pobox_result r = pobox_proxy_start(mesh, options, proxy);
	*err = pobox_go_error(r);
	return r;
}

// The metrics JSON in a malloc'ed buffer (free it), or NULL and *err.
static char *pobox_go_proxy_metrics(const pobox_proxy *proxy, char **err) {
	size_t size = 4096;
	for (int i = 0; i < 8; i++) {
		char *buf = malloc(size);
		size_t written = 0;
		if (buf == NULL) return NULL;
		pobox_result r = pobox_proxy_metrics(proxy, buf, size, &written);
		if (r == POBOX_OK) { *err = NULL; return buf; }
		free(buf);
		if (r != POBOX_ERR_BUFFER_TOO_SMALL) { *err = pobox_go_error(r); return NULL; }
		size = written + 4096;
	}
	*err = pobox_go_error(POBOX_ERR_BUFFER_TOO_SMALL);
	return NULL;
}
*/
import "C"

import (
	"encoding/json"
	"fmt"
	"net/netip"
	"runtime"
	"sync/atomic"
	"time"
	"unsafe"
)

// ProxyOptions configure a forwarder started with Mesh.StartProxy. Zero
// values take the library's defaults.
type ProxyOptions struct {
	// Listen holds one "ADDR=DEST" per listener ("127.0.0.1:15001=web.default:80"),
	// or "ADDR" alone for a Service address this host owns. Port 0 takes a
	// free port; Proxy.Addrs tells which.
	Listen []string
	// Threads is the number of threads that run the proxy (default 1).
	Threads int
	// ConnectTimeout bounds each connect to an endpoint (default 2s).
	ConnectTimeout time.Duration
	// ConnectAttempts is how many endpoints a connection tries (default 3).
	ConnectAttempts int
	// DrainTimeout closes connections to an endpoint this long after it
	// stops being eligible (terminating, removed); 0: they run until closed.
	DrainTimeout time.Duration
	// MaxConnections per listener; more are reset at once (default 10000).
	MaxConnections int
}

// Proxy is an L4 forwarder running inside this process, on threads of the
// native library: each TCP connection accepted on a listener goes to an
// endpoint the mesh picks, with failover, draining and metrics. Stop it
// with Stop or Close (a finalizer stops a forgotten one, but not promptly).
type Proxy struct {
	ptr     atomic.Pointer[cProxy]
	cleanup runtime.Cleanup
}

type cProxy struct {
	p *C.pobox_proxy
}

// ProxyMetrics are a proxy's counters, per listener.
type ProxyMetrics struct {
	Listeners []ListenerMetrics `json:"listeners"`
}

// ListenerMetrics are the counters of one listener.
type ListenerMetrics struct {
	// Listen is the address listened on (with the port chosen for port 0).
	Listen netip.AddrPort `json:"listen"`
	// Destination is where its connections go.
	Destination string `json:"destination"`
	// Accepted counts accepted connections; Active those open now.
	Accepted uint64 `json:"accepted"`
	Active   uint64 `json:"active"`
	// Rejected counts connections reset over the connection limit; Failed
	// those reset because no endpoint could be reached.
	Rejected uint64 `json:"rejected"`
	Failed   uint64 `json:"failed"`
	// Endpoints has one entry per endpoint known or still connected.
	Endpoints []EndpointMetrics `json:"endpoints"`
}

// EndpointMetrics are the counters of one endpoint, as one listener saw it.
type EndpointMetrics struct {
	Addr            netip.AddrPort `json:"addr"`
	Active          uint64         `json:"active"`
	Connections     uint64         `json:"connections"`
	ConnectFailures uint64         `json:"connect_failures"`
	BytesSent       uint64         `json:"bytes_sent"`
	BytesReceived   uint64         `json:"bytes_received"`
	// Drained counts connections closed by the drain timeout.
	Drained uint64 `json:"drained"`
	// Draining: the endpoint is no longer eligible and gets no new connections.
	Draining bool `json:"draining"`
}

// StartProxy starts a forwarder on the mesh's state: applies and deletes
// on the mesh take effect for new connections, and connections to endpoints
// that leave drain. Bad options give an error matching ErrConfig; an
// address that cannot be bound one matching ErrIO.
func (m *Mesh) StartProxy(opts ProxyOptions) (*Proxy, error) {
	mesh, err := m.handle()
	if err != nil {
		return nil, err
	}
	encoded := struct {
		Listen           []string `json:"listen"`
		Threads          int      `json:"threads,omitempty"`
		ConnectTimeoutMs int64    `json:"connectTimeoutMs,omitempty"`
		ConnectAttempts  int      `json:"connectAttempts,omitempty"`
		DrainTimeoutMs   int64    `json:"drainTimeoutMs,omitempty"`
		MaxConnections   int      `json:"maxConnections,omitempty"`
	}{
		Listen: opts.Listen, Threads: opts.Threads,
		ConnectTimeoutMs: opts.ConnectTimeout.Milliseconds(), ConnectAttempts: opts.ConnectAttempts,
		DrainTimeoutMs: opts.DrainTimeout.Milliseconds(), MaxConnections: opts.MaxConnections,
	}
	if encoded.Listen == nil {
		encoded.Listen = []string{}
	}
	options, err := json.Marshal(encoded)
	if err != nil {
		return nil, err
	}
	coptions := C.CString(string(options))
	defer C.free(unsafe.Pointer(coptions))
	var ptr *C.pobox_proxy
	var cerr *C.char
	r := C.pobox_go_proxy_start(mesh, coptions, &ptr, &cerr)
	runtime.KeepAlive(m)
	if r != C.POBOX_OK {
		return nil, newError(r, cerr)
	}
	p := &Proxy{}
	box := &cProxy{p: ptr}
	p.ptr.Store(box)
	p.cleanup = runtime.AddCleanup(p, func(box *cProxy) { C.pobox_proxy_free(box.p) }, box)
	return p, nil
}

// Metrics reads the proxy's counters.
func (p *Proxy) Metrics() (ProxyMetrics, error) {
	var out ProxyMetrics
	box := p.ptr.Load()
	if box == nil {
		return out, ErrProxyStopped
	}
	var cerr *C.char
	json_ := C.pobox_go_proxy_metrics(box.p, &cerr)
	runtime.KeepAlive(p)
	if json_ == nil {
		if cerr == nil {
			return out, fmt.Errorf("pobox: out of memory reading metrics")
		}
		return out, newError(C.POBOX_ERR_OTHER, cerr)
	}
	defer C.free(unsafe.Pointer(json_))
	err := json.Unmarshal([]byte(C.GoString(json_)), &out)
	return out, err
}

// Addrs are the addresses listened on, in the order given.
func (p *Proxy) Addrs() ([]netip.AddrPort, error) {
	m, err := p.Metrics()
	if err != nil {
		return nil, err
	}
	addrs := make([]netip.AddrPort, len(m.Listeners))
	for i, l := range m.Listeners {
		addrs[i] = l.Listen
	}
	return addrs, nil
}

// Stop closes the listeners, gives open connections up to grace to finish,
// closes the rest and frees the proxy; it returns when all that is done.
// Calling it again does nothing. It must not run concurrently with other
// calls on the same proxy.
func (p *Proxy) Stop(grace time.Duration) error {
	if box := p.ptr.Swap(nil); box != nil {
		p.cleanup.Stop()
		ms := grace.Milliseconds()
		if ms < 0 {
			ms = 0
		} else if ms > 1<<32-1 {
			ms = 1<<32 - 1
		}
		C.pobox_proxy_stop(box.p, C.uint32_t(ms))
	}
	return nil
}

// Close stops the proxy at once: Stop(0).
func (p *Proxy) Close() error {
	return p.Stop(0)
}

// Package pobox is kube-proxy's decisions inside a Go process: load the
// Kubernetes Services and EndpointSlices you already have, and ask which
// endpoint a Service address or name sends a connection to. It is a thin
// layer over the pobox C ABI (libpobox): the library decides, this package
// converts types and errors.
//
// # Building and finding the native library
//
// The package links libpobox through pkg-config, statically by default, so
// that Go binaries need no shared library at run time:
//
//	scripts/install-ffi "$HOME/.local/pobox"       # cargo build --release, then install
//	export PKG_CONFIG_PATH="$HOME/.local/pobox/lib/pkgconfig"
//	go test ./...                                  # links libpobox.a (pkg-config pobox-static)
//
// With the build tag pobox_dynamic it links libpobox.so instead (pkg-config
// pobox); the loader must then find it at run time, through
// LD_LIBRARY_PATH, an rpath, or a system library directory:
//
//	go build -tags pobox_dynamic -ldflags "-r $HOME/.local/pobox/lib" ./...
//
// # Concurrency
//
// A Mesh may be used by many goroutines at once; picks never block, and
// applies are all or nothing. Close must not run concurrently with other
// calls on the same Mesh.
package pobox

/*
#cgo !pobox_dynamic pkg-config: pobox-static
#cgo pobox_dynamic pkg-config: pobox

// The pick path neither keeps Go pointers nor calls back into Go: Go may
// leave its arguments on the stack and skip the callback bookkeeping.
#cgo noescape pobox_go_pick_addr
#cgo nocallback pobox_go_pick_addr
#cgo noescape pobox_go_pick
#cgo nocallback pobox_go_pick
#cgo noescape pobox_go_pick_batch
#cgo nocallback pobox_go_pick_batch
#cgo noescape pobox_mesh_version
#cgo nocallback pobox_mesh_version

#include <stdlib.h>
#include <pobox.h>
#include "pobox_go.h"


static pobox_result pobox_go_mesh_new(const char *options, pobox_mesh **mesh, char **err) {
	pobox_result r = pobox_mesh_new(options, mesh);
	*err = pobox_go_error(r);
	return r;
}

static pobox_result pobox_go_apply(pobox_mesh *mesh, const uint8_t *doc, size_t len, char **err) {
	pobox_result r = pobox_mesh_apply(mesh, doc, len);
	*err = pobox_go_error(r);
	return r;
}

static pobox_result pobox_go_delete(pobox_mesh *mesh, const char *kind, const char *ns,
                                    const char *name, char **err) {
	pobox_result r = pobox_mesh_delete(mesh, kind, ns, name);
	*err = pobox_go_error(r);
	return r;
}

static pobox_result pobox_go_pick(const pobox_mesh *mesh, const char *dest, const char *client,
                                  char *out, size_t out_len, size_t *written, char **err) {
	pobox_result r = pobox_mesh_pick(mesh, dest, client, out, out_len, written);
	*err = pobox_go_error(r);
	return r;
}

static pobox_result pobox_go_pick_addr(const pobox_mesh *mesh, const pobox_addr *dest,
                                       const pobox_addr *client, pobox_endpoint *out, char **err) {
	pobox_result r = pobox_mesh_pick_addr(mesh, dest, client, out);
	*err = pobox_go_error(r);
	return r;
}

static pobox_result pobox_go_endpoints(const pobox_mesh *mesh, const char *dest, uint32_t flags,
                                       pobox_endpoint_info *out, size_t out_len, size_t *written,
                                       char **err) {
	pobox_result r = pobox_mesh_endpoints(mesh, dest, flags, out, out_len, written);
	*err = r == POBOX_ERR_BUFFER_TOO_SMALL ? NULL : pobox_go_error(r);
	return r;
}

// On a failed pick, *err is the message of the last one that failed.
static void pobox_go_pick_batch(const pobox_mesh *mesh, const pobox_addr *dests, size_t n,
                                const pobox_addr *client, pobox_endpoint *eps,
                                pobox_result *results, char **err) {
	*err = NULL;
	pobox_mesh_pick_batch(mesh, dests, n, client, eps, results);
	for (size_t i = 0; i < n; i++) {
		if (results[i] != POBOX_OK) {
			*err = pobox_go_error(results[i]);
			return;
		}
	}
}
*/
import "C"

import (
	"encoding/json"
	"errors"
	"net/netip"
	"runtime"
	"sync/atomic"
	"unsafe"
)

// Options say where the mesh runs, as kube-proxy knows its own node.
type Options struct {
	// Node is this node's name: endpoints on it are local (for traffic
	// policy Local), and node hints are read for it.
	Node string
	// Zone is the node's zone, for zone hints.
	Zone string
	// NodeIPs are the node's addresses; NodePorts are reachable on them.
	NodeIPs []netip.Addr
	// ClusterDomain is the cluster DNS domain; "" means cluster.local.
	ClusterDomain string
	// Limits bound what an Apply may cost; nil keeps every default.
	Limits *Limits
}

// Limits bound what one Apply may cost and what a mesh holds; an input over
// one fails with ErrLimit and changes nothing. A zero field keeps the
// library's default (shown).
type Limits struct {
	// MaxInputBytes is the largest input Apply reads (64 MiB).
	MaxInputBytes int `json:"maxInputBytes,omitempty"`
	// MaxDepth is the deepest nesting of mappings and sequences (64).
	MaxDepth int `json:"maxDepth,omitempty"`
	// MaxValues is the most values one input expands to, YAML aliases
	// expanded (8,000,000).
	MaxValues int `json:"maxValues,omitempty"`
	// MaxObjects is the most objects in one input (100,000).
	MaxObjects int `json:"maxObjects,omitempty"`
	// MaxEndpoints is the most endpoints the mesh holds after an Apply (500,000).
	MaxEndpoints int `json:"maxEndpoints,omitempty"`
	// AffinityCapacity is the most session-affinity entries kept (262,144).
	AffinityCapacity int `json:"affinityCapacity,omitempty"`
}

// Mesh holds the Services and EndpointSlices applied so far and answers
// picks from the snapshot built from them. Create one with New; Close it
// when done (a finalizer frees a forgotten one, but not promptly).
type Mesh struct {
	// ptr holds the C mesh; nil once closed.
	ptr     atomic.Pointer[cMesh]
	cleanup runtime.Cleanup
}

// cMesh boxes the C pointer: atomic.Pointer cannot hold an incomplete C type.
type cMesh struct {
	p *C.pobox_mesh
}

// New creates an empty mesh.
func New(opts Options) (*Mesh, error) {
	var encoded struct {
		Node          string   `json:"node,omitempty"`
		Zone          string   `json:"zone,omitempty"`
		NodeIPs       []string `json:"nodeIPs,omitempty"`
		ClusterDomain string   `json:"clusterDomain,omitempty"`
		Limits        *Limits  `json:"limits,omitempty"`
	}
	encoded.Node, encoded.Zone, encoded.ClusterDomain = opts.Node, opts.Zone, opts.ClusterDomain
	encoded.Limits = opts.Limits
	for _, ip := range opts.NodeIPs {
		encoded.NodeIPs = append(encoded.NodeIPs, ip.String())
	}
	options, err := json.Marshal(encoded)
	if err != nil {
		return nil, err
	}
	coptions := C.CString(string(options))
	defer C.free(unsafe.Pointer(coptions))
	var ptr *C.pobox_mesh
	var cerr *C.char
	if r := C.pobox_go_mesh_new(coptions, &ptr, &cerr); r != C.POBOX_OK {
		return nil, newError(r, cerr)
	}
	m := &Mesh{}
	box := &cMesh{p: ptr}
	m.ptr.Store(box)
	m.cleanup = runtime.AddCleanup(m, func(box *cMesh) { C.pobox_mesh_free(box.p) }, box)
	return m, nil
}

// Close frees the mesh. Calling it again does nothing; any other call after
// it returns ErrClosed. It must not run concurrently with other calls.
func (m *Mesh) Close() error {
	if box := m.ptr.Swap(nil); box != nil {
		m.cleanup.Stop()
		C.pobox_mesh_free(box.p)
	}
	return nil
}

func (m *Mesh) handle() (*C.pobox_mesh, error) {
	box := m.ptr.Load()
	if box == nil {
		return nil, ErrClosed
	}
	return box.p, nil
}

// Apply loads Kubernetes objects: JSON or YAML, one object, a List, or
// multi-document YAML (kubectl get -o json output as is). All or nothing:
// on an error the mesh keeps its previous state.
func (m *Mesh) Apply(doc []byte) error {
	ptr, err := m.handle()
	if err != nil {
		return err
	}
	var cdoc *C.uint8_t
	if len(doc) > 0 {
		cdoc = (*C.uint8_t)(unsafe.Pointer(&doc[0]))
	}
	var cerr *C.char
	r := C.pobox_go_apply(ptr, cdoc, C.size_t(len(doc)), &cerr)
	runtime.KeepAlive(m)
	runtime.KeepAlive(doc)
	if r != C.POBOX_OK {
		return newError(r, cerr)
	}
	return nil
}

// Delete removes one object: kind is "Service" or "EndpointSlice".
// Deleting an object that is not there succeeds.
func (m *Mesh) Delete(kind, namespace, name string) error {
	ptr, err := m.handle()
	if err != nil {
		return err
	}
	ckind, cns, cname := C.CString(kind), C.CString(namespace), C.CString(name)
	defer C.free(unsafe.Pointer(ckind))
	defer C.free(unsafe.Pointer(cns))
	defer C.free(unsafe.Pointer(cname))
	var cerr *C.char
	r := C.pobox_go_delete(ptr, ckind, cns, cname, &cerr)
	runtime.KeepAlive(m)
	if r != C.POBOX_OK {
		return newError(r, cerr)
	}
	return nil
}

// Version is the current snapshot version: 0 when empty, one more for every
// Apply or Delete that changed something. Poll it to learn that the mesh
// changed; it is one atomic load. A closed mesh reports 0.
func (m *Mesh) Version() uint64 {
	ptr, err := m.handle()
	if err != nil {
		return 0
	}
	var v C.uint64_t
	C.pobox_mesh_version(ptr, &v)
	runtime.KeepAlive(m)
	return uint64(v)
}

// cstring is s with a NUL, in buf when it fits (so that it stays on the
// stack: the C side does not keep it).
func cstring(buf []byte, s string) []byte {
	if len(s)+1 > len(buf) {
		buf = make([]byte, len(s)+1)
	}
	n := copy(buf, s)
	buf[n] = 0
	return buf[:n+1]
}

// Pick resolves dest — "10.96.0.10:80", "[fd00::10]:80", "web.default:http",
// "web.default.svc.cluster.local:80", optionally ending in /TCP, /UDP or
// /SCTP — and picks one of its eligible endpoints. client is the client's
// address, or the zero Addr when unknown.
func (m *Mesh) Pick(dest string, client netip.Addr) (netip.AddrPort, error) {
	ptr, err := m.handle()
	if err != nil {
		return netip.AddrPort{}, err
	}
	var destBuf [128]byte
	cdest := cstring(destBuf[:], dest)
	var clientBuf [64]byte
	var cclient *C.char
	if client.IsValid() {
		cclient = (*C.char)(unsafe.Pointer(&cstring(clientBuf[:], client.String())[0]))
	}
	var out [C.POBOX_ADDRSTRLEN]byte
	var written C.size_t
	var cerr *C.char
	r := C.pobox_go_pick(ptr, (*C.char)(unsafe.Pointer(&cdest[0])), cclient,
		(*C.char)(unsafe.Pointer(&out[0])), C.size_t(len(out)), &written, &cerr)
	runtime.KeepAlive(m)
	if r != C.POBOX_OK {
		return netip.AddrPort{}, newError(r, cerr)
	}
	return netip.ParseAddrPort(string(out[:written-1]))
}

// Protocol selects a Service port's protocol in the binary fast path.
type Protocol uint8

// Protocols, by their IANA numbers (as the C ABI takes them).
const (
	// AnyProtocol tries TCP, then UDP, then SCTP.
	AnyProtocol Protocol = C.POBOX_PROTO_ANY
	TCP         Protocol = C.POBOX_PROTO_TCP
	UDP         Protocol = C.POBOX_PROTO_UDP
	SCTP        Protocol = C.POBOX_PROTO_SCTP
)

func toC(ap netip.AddrPort, proto Protocol) C.pobox_addr {
	var a C.pobox_addr
	addr := ap.Addr().Unmap()
	ip := (*[16]byte)(unsafe.Pointer(&a.ip[0]))
	switch {
	case addr.Is4():
		a.family = C.POBOX_FAMILY_IPV4
		v4 := addr.As4()
		copy(ip[:4], v4[:])
	case addr.Is6():
		a.family = C.POBOX_FAMILY_IPV6
		*ip = addr.As16()
	}
	a.protocol = C.uint8_t(proto)
	a.port = C.uint16_t(ap.Port())
	return a
}

func fromC(a *C.pobox_addr) netip.AddrPort {
	ip := (*[16]byte)(unsafe.Pointer(&a.ip[0]))
	if a.family == C.POBOX_FAMILY_IPV4 {
		return netip.AddrPortFrom(netip.AddrFrom4([4]byte(ip[:4])), uint16(a.port))
	}
	return netip.AddrPortFrom(netip.AddrFrom16(*ip), uint16(a.port))
}

// PickAddr is the fast path: dest is a Service address (cluster IP, node IP
// with a NodePort, load-balancer or external IP), any protocol; nothing is
// parsed or allocated. client is the zero Addr when unknown.
func (m *Mesh) PickAddr(dest netip.AddrPort, client netip.Addr) (netip.AddrPort, error) {
	return m.PickAddrProto(dest, AnyProtocol, client)
}

// PickAddrProto is PickAddr for one protocol.
func (m *Mesh) PickAddrProto(dest netip.AddrPort, proto Protocol, client netip.Addr) (netip.AddrPort, error) {
	ptr, err := m.handle()
	if err != nil {
		return netip.AddrPort{}, err
	}
	cdest := toC(dest, proto)
	var cclient *C.pobox_addr
	var clientAddr C.pobox_addr
	if client.IsValid() {
		clientAddr = toC(netip.AddrPortFrom(client, 0), AnyProtocol)
		cclient = &clientAddr
	}
	var out C.pobox_endpoint
	var cerr *C.char
	r := C.pobox_go_pick_addr(ptr, &cdest, cclient, &out, &cerr)
	runtime.KeepAlive(m)
	if r != C.POBOX_OK {
		return netip.AddrPort{}, newError(r, cerr)
	}
	return fromC(&out.addr), nil
}

// batchSize is how many picks one C call makes; the arrays live on the stack.
const batchSize = 64

// PickBatch picks an endpoint for each of dests into out (which must be at
// least as long), any protocol, in as few C calls as possible: the
// cheapest way to make many picks. Each chunk of 64 picks reads one
// snapshot. When some picks fail, their out entries are the zero AddrPort
// and the error is a *BatchError listing them.
func (m *Mesh) PickBatch(dests []netip.AddrPort, client netip.Addr, out []netip.AddrPort) error {
	if len(out) < len(dests) {
		return errors.New("pobox: PickBatch: out is shorter than dests")
	}
	ptr, err := m.handle()
	if err != nil {
		return err
	}
	var cclient *C.pobox_addr
	var clientAddr C.pobox_addr
	if client.IsValid() {
		clientAddr = toC(netip.AddrPortFrom(client, 0), AnyProtocol)
		cclient = &clientAddr
	}
	var batchErr *BatchError
	var in [batchSize]C.pobox_addr
	var eps [batchSize]C.pobox_endpoint
	var results [batchSize]C.pobox_result
	for start := 0; start < len(dests); start += batchSize {
		n := min(batchSize, len(dests)-start)
		for i := 0; i < n; i++ {
			in[i] = toC(dests[start+i], AnyProtocol)
		}
		var cerr *C.char
		C.pobox_go_pick_batch(ptr, &in[0], C.size_t(n), cclient, &eps[0], &results[0], &cerr)
		batchErr = collectBatch(batchErr, start, n, eps[:n], results[:n], out, cerr)
	}
	runtime.KeepAlive(m)
	if batchErr != nil {
		return batchErr
	}
	return nil
}

// collectBatch copies one chunk of n picks, starting at out[start], from
// the C arrays, and adds its failures to batchErr. cerr is the message of
// the chunk's last failed pick (the library keeps only that one).
func collectBatch(batchErr *BatchError, start, n int, eps []C.pobox_endpoint,
	results []C.pobox_result, out []netip.AddrPort, cerr *C.char) *BatchError {
	lastFailed := -1
	for i := 0; i < n; i++ {
		if results[i] == C.POBOX_OK {
			out[start+i] = fromC(&eps[i].addr)
			continue
		}
		out[start+i] = netip.AddrPort{}
		if batchErr == nil {
			batchErr = &BatchError{}
		}
		batchErr.Failed = append(batchErr.Failed, BatchFailure{
			Index: start + i,
			Err:   &Error{Code: Result(results[i]), Message: Result(results[i]).String()},
		})
		lastFailed = len(batchErr.Failed) - 1
	}
	if cerr != nil {
		batchErr.Failed[lastFailed].Err = newError(C.pobox_result(batchErr.Failed[lastFailed].Err.Code), cerr)
	}
	return batchErr
}

// Endpoint is one endpoint of a Service port, as Endpoints lists it.
type Endpoint struct {
	Addr                                netip.AddrPort
	Ready, Serving, Terminating, OnNode bool
}

// Endpoints lists the endpoints of the Service port dest resolves to: the
// eligible ones in address order, or every known one when all is true.
func (m *Mesh) Endpoints(dest string, all bool) ([]Endpoint, error) {
	ptr, err := m.handle()
	if err != nil {
		return nil, err
	}
	cdest := C.CString(dest)
	defer C.free(unsafe.Pointer(cdest))
	var flags C.uint32_t
	if all {
		flags = C.POBOX_ENDPOINTS_ALL
	}
	infos := make([]C.pobox_endpoint_info, 16)
	for {
		var written C.size_t
		var cerr *C.char
		r := C.pobox_go_endpoints(ptr, cdest, flags, &infos[0], C.size_t(len(infos)), &written, &cerr)
		runtime.KeepAlive(m)
		if r == C.POBOX_ERR_BUFFER_TOO_SMALL {
			// The set may grow again before the next call: retry until it fits.
			infos = make([]C.pobox_endpoint_info, int(written)+16)
			continue
		}
		if r != C.POBOX_OK {
			return nil, newError(r, cerr)
		}
		list := make([]Endpoint, int(written))
		for i := range list {
			c := infos[i].conditions
			list[i] = Endpoint{
				Addr:        fromC(&infos[i].addr),
				Ready:       c&C.POBOX_ENDPOINT_READY != 0,
				Serving:     c&C.POBOX_ENDPOINT_SERVING != 0,
				Terminating: c&C.POBOX_ENDPOINT_TERMINATING != 0,
				OnNode:      c&C.POBOX_ENDPOINT_LOCAL != 0,
			}
		}
		return list, nil
	}
}

// LibraryVersion is the version of the linked libpobox.
func LibraryVersion() string {
	return C.GoString(C.pobox_version())
}

package pobox

/*
#cgo noescape pobox_go_route_pick
#cgo nocallback pobox_go_route_pick
#cgo noescape pobox_go_route_pick_batch
#cgo nocallback pobox_go_route_pick_batch

#include <stdlib.h>
#include <pobox.h>
#include "pobox_go.h"

static pobox_result pobox_go_route_new(const pobox_mesh *mesh, const char *dest, const char *ns,
                                       pobox_route **route, char **err) {
	pobox_dest *d = NULL;
	pobox_result r = pobox_dest_new(dest, &d);
	if (r == POBOX_OK) {
		r = pobox_route_new(mesh, d, ns, route);
		pobox_dest_free(d);
	}
	*err = pobox_go_error(r);
	return r;
}

static pobox_result pobox_go_route_pick(const pobox_route *route, const pobox_addr *client,
                                        pobox_endpoint *out, char **err) {
	pobox_result r = pobox_route_pick(route, client, NULL, 0, out);
	*err = pobox_go_error(r);
	return r;
}

// On a failed pick, *err is the message of the last one that failed.
static void pobox_go_route_pick_batch(const pobox_route *route, const pobox_addr *clients,
                                      size_t n, pobox_endpoint *eps, pobox_result *results,
                                      char **err) {
	*err = NULL;
	pobox_result r = pobox_route_pick_batch(route, clients, n, eps, results);
	if (r != POBOX_OK) {
		for (size_t i = 0; i < n; i++) results[i] = r;
	}
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
	"errors"
	"net/netip"
	"runtime"
	"sync/atomic"
	"unsafe"
)

// Route is one destination bound to a mesh, resolved once per snapshot
// version instead of on every pick: the cheapest way to pick again and again
// for one Service (a connection pool, an upstream). It sees every Apply and
// Delete, as Mesh.Pick does, and shares the mesh's round-robin positions and
// session-affinity bindings. Create one with Mesh.NewRoute; Close it when
// done (a finalizer frees a forgotten one, but not promptly).
//
// A Route may be used by many goroutines at once; Close must not run
// concurrently with other calls on the same Route. It keeps the mesh's
// state alive by itself, so it keeps answering after the Mesh is closed
// (and sees no more updates then).
type Route struct {
	ptr     atomic.Pointer[cRoute]
	cleanup runtime.Cleanup
}

type cRoute struct {
	p *C.pobox_route
}

// NewRoute makes a Route to dest, in any form Pick takes ("10.96.0.10:80",
// "web.default:http", ...). A Service name is resolved in namespace
// ("" means default). A Service that does not exist yet is fine: picks
// fail with ErrNoService until it is applied.
func (m *Mesh) NewRoute(dest, namespace string) (*Route, error) {
	ptr, err := m.handle()
	if err != nil {
		return nil, err
	}
	cdest := C.CString(dest)
	defer C.free(unsafe.Pointer(cdest))
	var cns *C.char
	if namespace != "" {
		cns = C.CString(namespace)
		defer C.free(unsafe.Pointer(cns))
	}
	var route *C.pobox_route
	var cerr *C.char
	r := C.pobox_go_route_new(ptr, cdest, cns, &route, &cerr)
	runtime.KeepAlive(m)
	if r != C.POBOX_OK {
		return nil, newError(r, cerr)
	}
	rt := &Route{}
	box := &cRoute{p: route}
	rt.ptr.Store(box)
	rt.cleanup = runtime.AddCleanup(rt, func(box *cRoute) { C.pobox_route_free(box.p) }, box)
	return rt, nil
}

// Close frees the route. Calling it again does nothing; any other call
// after it returns ErrClosed. It must not run concurrently with other calls.
func (rt *Route) Close() error {
	if box := rt.ptr.Swap(nil); box != nil {
		rt.cleanup.Stop()
		C.pobox_route_free(box.p)
	}
	return nil
}

func (rt *Route) handle() (*C.pobox_route, error) {
	box := rt.ptr.Load()
	if box == nil {
		return nil, ErrClosed
	}
	return box.p, nil
}

// Pick picks one of the destination's eligible endpoints; client is the
// client's address, or the zero Addr when unknown.
func (rt *Route) Pick(client netip.Addr) (netip.AddrPort, error) {
	ptr, err := rt.handle()
	if err != nil {
		return netip.AddrPort{}, err
	}
	var cclient *C.pobox_addr
	var clientAddr C.pobox_addr
	if client.IsValid() {
		clientAddr = toC(netip.AddrPortFrom(client, 0), AnyProtocol)
		cclient = &clientAddr
	}
	var out C.pobox_endpoint
	var cerr *C.char
	r := C.pobox_go_route_pick(ptr, cclient, &out, &cerr)
	runtime.KeepAlive(rt)
	if r != C.POBOX_OK {
		return netip.AddrPort{}, newError(r, cerr)
	}
	return fromC(&out.addr), nil
}

// PickBatch makes len(out) picks, in as few C calls as possible: the
// cheapest way to make many picks. clients is nil (every client unknown) or
// as long as out, one client per pick (the zero Addr when unknown). When
// some picks fail, their out entries are the zero AddrPort and the error is
// a *BatchError listing them.
func (rt *Route) PickBatch(clients []netip.Addr, out []netip.AddrPort) error {
	if clients != nil && len(clients) != len(out) {
		return errors.New("pobox: Route.PickBatch: clients and out differ in length")
	}
	ptr, err := rt.handle()
	if err != nil {
		return err
	}
	var batchErr *BatchError
	var in [batchSize]C.pobox_addr
	var eps [batchSize]C.pobox_endpoint
	var results [batchSize]C.pobox_result
	for start := 0; start < len(out); start += batchSize {
		n := min(batchSize, len(out)-start)
		var cclients *C.pobox_addr
		if clients != nil {
			for i := 0; i < n; i++ {
				in[i] = C.pobox_addr{}
				if c := clients[start+i]; c.IsValid() {
					in[i] = toC(netip.AddrPortFrom(c, 0), AnyProtocol)
				}
			}
			cclients = &in[0]
		}
		var cerr *C.char
		C.pobox_go_route_pick_batch(ptr, cclients, C.size_t(n), &eps[0], &results[0], &cerr)
		batchErr = collectBatch(batchErr, start, n, eps[:n], results[:n], out, cerr)
	}
	runtime.KeepAlive(rt)
	if batchErr != nil {
		return batchErr
	}
	return nil
}

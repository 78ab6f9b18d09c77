package pobox

/*
#include <stdlib.h>
#include <pobox.h>

#include "pobox_go.h"

static pobox_result pobox_go_dest_new(const char *text, pobox_dest **out, char **err) {
	pobox_result r = pobox_dest_new(text, out);
	*err = pobox_go_error(r);
	return r;
}

static pobox_result pobox_go_pick_key(const pobox_mesh *mesh, const pobox_dest *dest,
                                      const pobox_addr *client, const uint8_t *key, size_t key_len,
                                      pobox_endpoint *out, char **err) {
	pobox_result r = pobox_mesh_pick_key(mesh, dest, client, key, key_len, out);
	*err = pobox_go_error(r);
	return r;
}

static pobox_result pobox_go_begin(const pobox_mesh *mesh, const pobox_dest *dest,
                                   const pobox_addr *client, const uint8_t *key, size_t key_len,
                                   pobox_endpoint *out, pobox_request **req, char **err) {
	pobox_result r = pobox_mesh_begin(mesh, dest, client, key, key_len, out, req);
	*err = pobox_go_error(r);
	return r;
}

static pobox_result pobox_go_report(const pobox_mesh *mesh, const pobox_dest *dest,
                                    const pobox_addr *endpoint, bool failed, char **err) {
	pobox_result r = pobox_mesh_report(mesh, dest, endpoint, failed);
	*err = pobox_go_error(r);
	return r;
}

static pobox_result pobox_go_lookup(const pobox_mesh *mesh, const char *name, const char *type,
                                    const char *ns, char *out, size_t out_len, size_t *written,
                                    uint16_t *rcode, char **err) {
	pobox_result r = pobox_mesh_lookup(mesh, name, type, ns, out, out_len, written, rcode);
	*err = r == POBOX_ERR_BUFFER_TOO_SMALL ? NULL : pobox_go_error(r);
	return r;
}
*/
import "C"

import (
	"net/netip"
	"runtime"
	"strings"
	"sync/atomic"
	"unsafe"
)

// Dest is a destination parsed once ("web.default:http", "10.96.0.10:80"),
// to pick from many times. Names stay names: which Service they reach is
// decided at each pick. It may be used with any mesh, from many goroutines.
type Dest struct {
	p       *C.pobox_dest
	text    string
	cleanup runtime.Cleanup
}

// ParseDest parses a destination in the forms Pick takes.
func ParseDest(dest string) (*Dest, error) {
	cdest := C.CString(dest)
	defer C.free(unsafe.Pointer(cdest))
	var p *C.pobox_dest
	var cerr *C.char
	if r := C.pobox_go_dest_new(cdest, &p, &cerr); r != C.POBOX_OK {
		return nil, newError(r, cerr)
	}
	d := &Dest{p: p, text: dest}
	d.cleanup = runtime.AddCleanup(d, func(p *C.pobox_dest) { C.pobox_dest_free(p) }, p)
	return d, nil
}

// String is the destination as it was given.
func (d *Dest) String() string { return d.text }

func keyArg(key []byte) (*C.uint8_t, C.size_t) {
	if len(key) == 0 {
		return nil, 0
	}
	return (*C.uint8_t)(unsafe.Pointer(&key[0])), C.size_t(len(key))
}

func clientArg(client netip.Addr) C.pobox_addr {
	if !client.IsValid() {
		return C.pobox_addr{}
	}
	return toC(netip.AddrPortFrom(client, 0), 0)
}

// PickKey picks an endpoint of dest with a hash key: Services balanced by
// maglev or ring-hash send equal keys (a header's or cookie's value, a
// user id) to the same endpoint. An empty key hashes the client's IP, as
// Pick does; other policies ignore the key.
func (m *Mesh) PickKey(dest *Dest, client netip.Addr, key []byte) (netip.AddrPort, error) {
	ptr, err := m.handle()
	if err != nil {
		return netip.AddrPort{}, err
	}
	c := clientArg(client)
	k, klen := keyArg(key)
	var out C.pobox_endpoint
	var cerr *C.char
	r := C.pobox_go_pick_key(ptr, dest.p, &c, k, klen, &out, &cerr)
	runtime.KeepAlive(m)
	runtime.KeepAlive(dest)
	runtime.KeepAlive(key)
	if r != C.POBOX_OK {
		return netip.AddrPort{}, newError(r, cerr)
	}
	return fromC(&out.addr), nil
}

// Request is a request started by Begin: a least-request Service counts it
// in flight until Finish, which also reports its outcome to passive health.
type Request struct {
	// Endpoint is where to send the request.
	Endpoint netip.AddrPort
	// Version is the snapshot version the pick was made from.
	Version uint64
	p       atomic.Pointer[cRequest]
	cleanup runtime.Cleanup
}

// cRequest boxes the C pointer (atomic.Pointer cannot hold a C type).
type cRequest struct {
	p *C.pobox_request
}

// Begin picks an endpoint as PickKey does and starts a request to it. Call
// Finish when the request is done; a Request that is garbage collected
// unfinished is finished as a success.
func (m *Mesh) Begin(dest *Dest, client netip.Addr, key []byte) (*Request, error) {
	ptr, err := m.handle()
	if err != nil {
		return nil, err
	}
	c := clientArg(client)
	k, klen := keyArg(key)
	var out C.pobox_endpoint
	var creq *C.pobox_request
	var cerr *C.char
	r := C.pobox_go_begin(ptr, dest.p, &c, k, klen, &out, &creq, &cerr)
	runtime.KeepAlive(m)
	runtime.KeepAlive(dest)
	runtime.KeepAlive(key)
	if r != C.POBOX_OK {
		return nil, newError(r, cerr)
	}
	req := &Request{Endpoint: fromC(&out.addr), Version: uint64(out.version)}
	box := &cRequest{p: creq}
	req.p.Store(box)
	req.cleanup = runtime.AddCleanup(req, func(box *cRequest) { C.pobox_request_finish(box.p, false) }, box)
	return req, nil
}

// Finish ends the request: failed is true when the connection was refused,
// timed out or reset, or the answer was a 5xx (what outlier detection
// counts). Calling it again does nothing.
func (r *Request) Finish(failed bool) {
	if box := r.p.Swap(nil); box != nil {
		r.cleanup.Stop()
		C.pobox_request_finish(box.p, C.bool(failed))
	}
}

// Report tells passive health how a connection to endpoint of dest went,
// for connections not started with Begin (a pooled connection's failure).
// A Service without outlier detection ignores it.
func (m *Mesh) Report(dest *Dest, endpoint netip.AddrPort, failed bool) error {
	ptr, err := m.handle()
	if err != nil {
		return err
	}
	ep := toC(endpoint, 0)
	var cerr *C.char
	r := C.pobox_go_report(ptr, dest.p, &ep, C.bool(failed), &cerr)
	runtime.KeepAlive(m)
	runtime.KeepAlive(dest)
	if r != C.POBOX_OK {
		return newError(r, cerr)
	}
	return nil
}

// DNS response codes of a Lookup.
const (
	NoError  = C.POBOX_DNS_NOERROR
	NXDomain = C.POBOX_DNS_NXDOMAIN
	Refused  = C.POBOX_DNS_REFUSED
)

// Lookup answers a DNS question from the mesh, as the cluster DNS would:
// the response code (NoError, NXDomain, Refused) and the answer records in
// zone-file form ("web.default.svc.cluster.local.\t5\tIN\tA\t10.96.0.10").
// typ is A, AAAA, SRV, PTR, CNAME or TXT ("" means A). With a namespace,
// name is expanded with the search path of a pod in that namespace.
func (m *Mesh) Lookup(name, typ, namespace string) (int, []string, error) {
	ptr, err := m.handle()
	if err != nil {
		return 0, nil, err
	}
	cname := C.CString(name)
	defer C.free(unsafe.Pointer(cname))
	var ctype, cns *C.char
	if typ != "" {
		ctype = C.CString(typ)
		defer C.free(unsafe.Pointer(ctype))
	}
	if namespace != "" {
		cns = C.CString(namespace)
		defer C.free(unsafe.Pointer(cns))
	}
	buf := make([]byte, 512)
	for {
		var written C.size_t
		var rcode C.uint16_t
		var cerr *C.char
		r := C.pobox_go_lookup(ptr, cname, ctype, cns, (*C.char)(unsafe.Pointer(&buf[0])),
			C.size_t(len(buf)), &written, &rcode, &cerr)
		runtime.KeepAlive(m)
		if r == C.POBOX_ERR_BUFFER_TOO_SMALL {
			// The answer may grow before the next call: retry until it fits.
			buf = make([]byte, int(written)+256)
			continue
		}
		if r != C.POBOX_OK {
			return 0, nil, newError(r, cerr)
		}
		text := string(buf[:written-1])
		var records []string
		if text != "" {
			records = strings.Split(strings.TrimSuffix(text, "\n"), "\n")
		}
		return int(rcode), records, nil
	}
}

package pobox

import (
	"net/netip"
	"testing"
)

// go test -run '^$' -bench . : the cost of a pick through cgo.

func BenchmarkPickAddr(b *testing.B) {
	m := newWeb(b)
	vip := netip.MustParseAddrPort("10.96.0.10:80")
	b.ReportAllocs()
	for b.Loop() {
		if _, err := m.PickAddr(vip, netip.Addr{}); err != nil {
			b.Fatal(err)
		}
	}
}

func BenchmarkPickText(b *testing.B) {
	m := newWeb(b)
	b.ReportAllocs()
	for b.Loop() {
		if _, err := m.Pick("web.default:http", netip.Addr{}); err != nil {
			b.Fatal(err)
		}
	}
}

// Reports ns per pick (not per batch): b.N counts picks.
func BenchmarkPickBatch(b *testing.B) {
	m := newWeb(b)
	dests := make([]netip.AddrPort, batchSize)
	for i := range dests {
		dests[i] = netip.MustParseAddrPort("10.96.0.10:80")
	}
	out := make([]netip.AddrPort, len(dests))
	b.ReportAllocs()
	b.ResetTimer()
	for n := 0; n < b.N; n += len(dests) {
		if err := m.PickBatch(dests, netip.Addr{}, out); err != nil {
			b.Fatal(err)
		}
	}
}

func BenchmarkRoutePick(b *testing.B) {
	m := newWeb(b)
	rt := newRoute(b, m, "10.96.0.10:80", "")
	b.ReportAllocs()
	for b.Loop() {
		if _, err := rt.Pick(netip.Addr{}); err != nil {
			b.Fatal(err)
		}
	}
}

// Reports ns per pick (not per batch): b.N counts picks.
func BenchmarkRoutePickBatch(b *testing.B) {
	m := newWeb(b)
	rt := newRoute(b, m, "10.96.0.10:80", "")
	out := make([]netip.AddrPort, batchSize)
	b.ReportAllocs()
	b.ResetTimer()
	for n := 0; n < b.N; n += len(out) {
		if err := rt.PickBatch(nil, out); err != nil {
			b.Fatal(err)
		}
	}
}

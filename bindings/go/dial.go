package pobox

import (
	"context"
	"errors"
	"net"
	"net/netip"
	"strconv"
)

// DialContext dials through the mesh: when address is a Service address
// ("10.96.0.10:80") or a Service name ("web.default:80",
// "web.default.svc.cluster.local:http"), it picks an endpoint and dials that;
// any other address (no Service has it) is dialled as it is. Its signature is
// net.Dialer's, so
//
//	client := &http.Client{Transport: &http.Transport{DialContext: mesh.DialContext}}
//
// makes an HTTP client mesh-aware. A Service that exists but has no eligible
// endpoint, no such port, or is ExternalName is an error, as kube-proxy
// would refuse the connection. Each call picks anew, so each new connection
// is balanced; pooled connections stay where they are.
func (m *Mesh) DialContext(ctx context.Context, network, address string) (net.Conn, error) {
	target, err := m.Route(network, address)
	if err != nil {
		return nil, &net.OpError{Op: "dial", Net: network, Err: err}
	}
	var d net.Dialer
	return d.DialContext(ctx, network, target)
}

// Route is what DialContext dials for network and address: the picked
// endpoint, or address unchanged when no Service owns it.
func (m *Mesh) Route(network, address string) (string, error) {
	proto := AnyProtocol
	suffix := ""
	switch network {
	case "tcp", "tcp4", "tcp6":
		proto, suffix = TCP, "/TCP"
	case "udp", "udp4", "udp6":
		proto, suffix = UDP, "/UDP"
	default:
		return address, nil
	}
	host, port, err := net.SplitHostPort(address)
	if err != nil {
		return "", err
	}
	var picked netip.AddrPort
	if ip, perr := netip.ParseAddr(host); perr == nil {
		n, nerr := strconv.ParseUint(port, 10, 16)
		if nerr != nil {
			return address, nil
		}
		picked, err = m.PickAddrProto(netip.AddrPortFrom(ip, uint16(n)), proto, netip.Addr{})
	} else {
		picked, err = m.Pick(net.JoinHostPort(host, port)+suffix, netip.Addr{})
	}
	if errors.Is(err, ErrNoService) || errors.Is(err, ErrBadDestination) {
		return address, nil
	}
	if err != nil {
		return "", err
	}
	return picked.String(), nil
}

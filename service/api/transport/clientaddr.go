package transport

import (
	"fmt"
	"net"
	"net/http"
	"net/netip"
	"strings"
)

// Proxies are the networks whose hosts are trusted to say who their client
// is: by X-Forwarded-For, or by a PROXY protocol header (see Listener). A
// claim from any other peer is ignored, never believed: anyone can send the
// header.
type Proxies struct {
	nets []netip.Prefix
}

// ParseProxies reads CIDR networks ("10.0.0.0/8") or single addresses
// ("192.0.2.7", taken as /32 or /128).
func ParseProxies(cidrs []string) (*Proxies, error) {
	p := &Proxies{}
	for _, s := range cidrs {
		s = strings.TrimSpace(s)
		if !strings.Contains(s, "/") {
			a, err := netip.ParseAddr(s)
			if err != nil {
				return nil, fmt.Errorf("trusted proxy %q: not an address or CIDR network", s)
			}
			p.nets = append(p.nets, netip.PrefixFrom(a.Unmap(), a.Unmap().BitLen()))
			continue
		}
		n, err := netip.ParsePrefix(s)
		if err != nil {
			return nil, fmt.Errorf("trusted proxy %q: %w", s, err)
		}
		if n.Masked() != n {
			return nil, fmt.Errorf("trusted proxy %q has host bits set (did you mean %s?)", s, n.Masked())
		}
		p.nets = append(p.nets, n)
	}
	return p, nil
}

// Trusts reports whether a is one of the trusted proxies.
func (p *Proxies) Trusts(a netip.Addr) bool {
	if p == nil {
		return false
	}
	a = a.Unmap()
	for _, n := range p.nets {
		if n.Contains(a) {
			return true
		}
	}
	return false
}

// Len is the number of trusted networks.
func (p *Proxies) Len() int {
	if p == nil {
		return 0
	}
	return len(p.nets)
}

// ClientAddr returns the address of the client that made r: the TCP peer
// (already the PROXY protocol's source address when a trusted proxy sent
// one), unless the peer is a trusted proxy that added X-Forwarded-For. Then
// the header is read from its right end, where the trusted proxy appended
// the address it saw, past every further trusted proxy; the first address
// not trusted is the client. Anything left of it was written by the client
// and could say anything, so it is not read. An entry that is not an
// address stops the walk at the last hop that vouched for it.
func (p *Proxies) ClientAddr(r *http.Request) string {
	peer := peerAddr(r.RemoteAddr)
	if !peer.IsValid() {
		return ""
	}
	if !p.Trusts(peer) {
		return peer.String()
	}
	client := peer
	hops := r.Header.Values("X-Forwarded-For")
	for i := len(hops) - 1; i >= 0; i-- {
		fields := strings.Split(hops[i], ",")
		for j := len(fields) - 1; j >= 0; j-- {
			a, ok := forwardedAddr(fields[j])
			if !ok {
				return client.String()
			}
			client = a
			if !p.Trusts(a) {
				return client.String()
			}
		}
	}
	return client.String()
}

// peerAddr parses a host:port RemoteAddr.
func peerAddr(hostport string) netip.Addr {
	ap, err := netip.ParseAddrPort(hostport)
	if err == nil {
		return ap.Addr().Unmap()
	}
	host, _, err := net.SplitHostPort(hostport)
	if err != nil {
		return netip.Addr{}
	}
	a, err := netip.ParseAddr(host)
	if err != nil {
		return netip.Addr{}
	}
	return a.Unmap()
}

// forwardedAddr parses one X-Forwarded-For entry: an address, which proxies
// sometimes write with a port or in brackets.
func forwardedAddr(s string) (netip.Addr, bool) {
	s = strings.TrimSpace(s)
	if a, err := netip.ParseAddr(s); err == nil {
		return a.WithZone("").Unmap(), true
	}
	if ap, err := netip.ParseAddrPort(s); err == nil {
		return ap.Addr().WithZone("").Unmap(), true
	}
	if strings.HasPrefix(s, "[") && strings.HasSuffix(s, "]") {
		if a, err := netip.ParseAddr(s[1 : len(s)-1]); err == nil {
			return a.WithZone("").Unmap(), true
		}
	}
	return netip.Addr{}, false
}

// SecureTransport reports whether r reached hsmkms over TLS: its own
// connection is TLS, or a trusted proxy that terminated TLS says so with
// X-Forwarded-Proto: https (the last value: the one the nearest proxy
// wrote). Any other peer's header is ignored.
func (p *Proxies) SecureTransport(r *http.Request) bool {
	if r.TLS != nil {
		return true
	}
	if !p.Trusts(peerAddr(r.RemoteAddr)) {
		return false
	}
	vals := r.Header.Values("X-Forwarded-Proto")
	if len(vals) == 0 {
		return false
	}
	last := vals[len(vals)-1]
	if i := strings.LastIndexByte(last, ','); i >= 0 {
		last = last[i+1:]
	}
	return strings.EqualFold(strings.TrimSpace(last), "https")
}

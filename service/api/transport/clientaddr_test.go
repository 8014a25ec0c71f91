package transport

import (
	"net/http"
	"testing"
)

func TestClientAddr(t *testing.T) {
	p, err := ParseProxies([]string{"10.0.0.0/8", "192.0.2.7", "2001:db8::/32"})
	if err != nil {
		t.Fatal(err)
	}
	cases := []struct {
		name   string
		peer   string
		xff    []string
		client string
	}{
		{"direct client, no header", "198.51.100.1:4000", nil, "198.51.100.1"},
		{"untrusted peer's header is ignored", "198.51.100.1:4000", []string{"203.0.113.9"}, "198.51.100.1"},
		{"trusted proxy names its client", "10.1.2.3:4000", []string{"203.0.113.9"}, "203.0.113.9"},
		{"single-address proxy", "192.0.2.7:4000", []string{"203.0.113.9"}, "203.0.113.9"},
		{"trusted proxy without a header is the client", "10.1.2.3:4000", nil, "10.1.2.3"},
		{"client-written entries left of the proxy's are not read", "10.1.2.3:4000", []string{"1.2.3.4, 203.0.113.9"}, "203.0.113.9"},
		{"a chain of trusted proxies is walked", "10.1.2.3:4000", []string{"203.0.113.9, 10.9.9.9", "192.0.2.7"}, "203.0.113.9"},
		{"a spoofed trusted address left of the client stays unread", "10.1.2.3:4000", []string{"10.5.5.5, 203.0.113.9"}, "203.0.113.9"},
		{"all hops trusted: the leftmost", "10.1.2.3:4000", []string{"10.4.4.4, 10.9.9.9"}, "10.4.4.4"},
		{"garbage stops at the last vouched hop", "10.1.2.3:4000", []string{"203.0.113.9, not-an-ip"}, "10.1.2.3"},
		{"garbage left of the client is not read", "10.1.2.3:4000", []string{"not-an-ip, 203.0.113.9"}, "203.0.113.9"},
		{"address with port", "10.1.2.3:4000", []string{"203.0.113.9:5555"}, "203.0.113.9"},
		{"bracketed IPv6", "10.1.2.3:4000", []string{"[2001:db9::1]"}, "2001:db9::1"},
		{"IPv6 trusted peer", "[2001:db8::5]:443", []string{"198.51.100.20"}, "198.51.100.20"},
		{"IPv4-mapped peer", "[::ffff:10.1.2.3]:4000", []string{"203.0.113.9"}, "203.0.113.9"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			r := &http.Request{RemoteAddr: c.peer, Header: http.Header{}}
			for _, v := range c.xff {
				r.Header.Add("X-Forwarded-For", v)
			}
			if got := p.ClientAddr(r); got != c.client {
				t.Errorf("ClientAddr = %q, want %q", got, c.client)
			}
		})
	}
	var none *Proxies
	r := &http.Request{RemoteAddr: "10.1.2.3:4000", Header: http.Header{"X-Forwarded-For": {"203.0.113.9"}}}
	if got := none.ClientAddr(r); got != "10.1.2.3" {
		t.Errorf("no trusted proxies: ClientAddr = %q, want the peer", got)
	}
}

func TestParseProxiesRefuses(t *testing.T) {
	for _, bad := range []string{"10.0.0.1/8", "not-a-net", "10.0.0.0/33", ""} {
		if _, err := ParseProxies([]string{bad}); err == nil {
			t.Errorf("ParseProxies(%q) accepted it", bad)
		}
	}
}

func TestSecureTransport(t *testing.T) {
	p, err := ParseProxies([]string{"10.0.0.0/8"})
	if err != nil {
		t.Fatal(err)
	}
	cases := []struct {
		name  string
		peer  string
		proto []string
		want  bool
	}{
		{"plain, direct", "198.51.100.1:1", nil, false},
		{"untrusted peer claims https", "198.51.100.1:1", []string{"https"}, false},
		{"trusted proxy terminated TLS", "10.0.0.1:1", []string{"https"}, true},
		{"trusted proxy got plain HTTP", "10.0.0.1:1", []string{"http"}, false},
		{"client wrote https, proxy appended http", "10.0.0.1:1", []string{"https, http"}, false},
		{"trusted proxy without the header", "10.0.0.1:1", nil, false},
	}
	for _, c := range cases {
		r := &http.Request{RemoteAddr: c.peer, Header: http.Header{}}
		for _, v := range c.proto {
			r.Header.Add("X-Forwarded-Proto", v)
		}
		if got := p.SecureTransport(r); got != c.want {
			t.Errorf("%s: SecureTransport = %v, want %v", c.name, got, c.want)
		}
	}
}

package api

import (
	"fmt"
	"sync/atomic"

	"github.com/hsmkms/hsmkms/service"
	"github.com/hsmkms/hsmkms/service/api/sigv4"
	"github.com/hsmkms/hsmkms/service/api/transport"
)

// StaticCredentials is a fixed set of access keys, each mapped to a caller.
// It is built once at start (or reload) and only read afterwards.
type StaticCredentials map[string]sigv4.Credential

// Add registers an access key for caller. Duplicate ids are refused.
func (s StaticCredentials) Add(accessKeyID string, secret []byte, caller service.Caller) error {
	return s.AddBound(accessKeyID, secret, caller, nil)
}

// AddBound registers an access key that works only over a connection whose
// verified client certificate proves one of clientCerts (a subject DN or a
// URI SAN, see transport.ClientIdentities): a leaked secret alone is not
// enough. No clientCerts: any connection, as Add.
func (s StaticCredentials) AddBound(accessKeyID string, secret []byte, caller service.Caller, clientCerts []string) error {
	if accessKeyID == "" || len(secret) == 0 {
		return fmt.Errorf("api: access key id and secret must not be empty")
	}
	if _, dup := s[accessKeyID]; dup {
		return fmt.Errorf("api: access key id %s is configured twice", accessKeyID)
	}
	for _, id := range clientCerts {
		if err := transport.CheckIdentity(id); err != nil {
			return fmt.Errorf("api: access key %s: %w", accessKeyID, err)
		}
	}
	s[accessKeyID] = sigv4.Credential{AccessKeyID: accessKeyID, Secret: secret,
		Principal: principal{caller: caller, clientCerts: clientCerts}}
	return nil
}

// principal is what an access key stands for: a caller, and the client
// certificates it may be used with (none: any connection).
type principal struct {
	caller      service.Caller
	clientCerts []string
}

// Lookup implements sigv4.CredentialStore.
func (s StaticCredentials) Lookup(accessKeyID string) (sigv4.Credential, bool) {
	c, ok := s[accessKeyID]
	return c, ok
}

// ReloadableCredentials is a credential set that can be replaced while
// requests are served (configuration reload on SIGHUP): each request sees
// either the old set or the new one, never a mix, and none waits.
type ReloadableCredentials struct {
	p atomic.Pointer[StaticCredentials]
}

// Store makes c the set later requests are checked against.
func (r *ReloadableCredentials) Store(c StaticCredentials) { r.p.Store(&c) }

// Lookup implements sigv4.CredentialStore.
func (r *ReloadableCredentials) Lookup(accessKeyID string) (sigv4.Credential, bool) {
	c := r.p.Load()
	if c == nil {
		return sigv4.Credential{}, false
	}
	return c.Lookup(accessKeyID)
}

// Principal returns the caller an access key stands for and the client
// certificates it is bound to.
func (s StaticCredentials) Principal(accessKeyID string) (caller service.Caller, clientCerts []string, ok bool) {
	c, ok := s[accessKeyID]
	if !ok {
		return service.Caller{}, nil, false
	}
	p, ok := c.Principal.(principal)
	return p.caller, p.clientCerts, ok
}

package api

import (
	"fmt"
	"sync/atomic"

	"github.com/hsmkms/hsmkms/service"
	"github.com/hsmkms/hsmkms/service/api/sigv4"
)

// StaticCredentials is a fixed set of access keys, each mapped to a caller.
// It is built once at start (or reload) and only read afterwards.
type StaticCredentials map[string]sigv4.Credential

// Add registers an access key for caller. Duplicate ids are refused.
func (s StaticCredentials) Add(accessKeyID string, secret []byte, caller service.Caller) error {
	if accessKeyID == "" || len(secret) == 0 {
		return fmt.Errorf("api: access key id and secret must not be empty")
	}
	if _, dup := s[accessKeyID]; dup {
		return fmt.Errorf("api: access key id %s is configured twice", accessKeyID)
	}
	s[accessKeyID] = sigv4.Credential{AccessKeyID: accessKeyID, Secret: secret, Principal: caller}
	return nil
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

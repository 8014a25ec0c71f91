package api

import (
	"fmt"

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

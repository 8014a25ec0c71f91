// Package transport is what lies under the KMS endpoint: the TLS
// configuration (TLS 1.2 and 1.3, a certificate reloadable without a
// restart, its private key in a file or in the token as any crypto.Signer),
// client certificates and their binding to access keys, the caller's real
// address behind trusted proxies (X-Forwarded-For and the PROXY protocol),
// and a listener that bounds connections and sheds the ones that have not
// yet sent a request first.
//
// It speaks net, net/http and crypto/tls only: the token-held key arrives
// as a crypto.Signer made by cmd from the hsm package, so this package
// imports no hsmkms package and nothing of PKCS#11.
package transport

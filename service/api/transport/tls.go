package transport

import (
	"context"
	"crypto"
	"crypto/ecdsa"
	"crypto/rand"
	"crypto/rsa"
	"crypto/sha256"
	"crypto/tls"
	"crypto/x509"
	"encoding/pem"
	"errors"
	"fmt"
	"io"
	"os"
	"slices"
	"strings"
	"sync/atomic"
	"time"
)

// CipherSuites are the TLS 1.2 suites offered: ECDHE key exchange (forward
// secrecy) with an AEAD cipher, nothing else. TLS 1.3's suites are all AEAD
// and not configurable.
var CipherSuites = []uint16{
	tls.TLS_ECDHE_ECDSA_WITH_AES_128_GCM_SHA256,
	tls.TLS_ECDHE_ECDSA_WITH_AES_256_GCM_SHA384,
	tls.TLS_ECDHE_ECDSA_WITH_CHACHA20_POLY1305_SHA256,
	tls.TLS_ECDHE_RSA_WITH_AES_128_GCM_SHA256,
	tls.TLS_ECDHE_RSA_WITH_AES_256_GCM_SHA384,
	tls.TLS_ECDHE_RSA_WITH_CHACHA20_POLY1305_SHA256,
}

// TLSSource says where the server's certificate and key come from. It is
// read again, whole, by every Reload.
type TLSSource struct {
	// CertFile holds the certificate chain, PEM, leaf first.
	CertFile string
	// KeyFile holds the private key, PEM. Empty when Signer is set.
	KeyFile string
	// Signer, when set, returns the private key held elsewhere (the token):
	// the handshake signatures run there. It is called at every load, so a
	// reload also picks up a key replaced in the token.
	Signer func(context.Context) (crypto.Signer, error)
	// ClientCAFile, when set, makes client certificates required and
	// verified against the CA certificates it holds (PEM).
	ClientCAFile string
	// Now is the clock certificates are checked against (default
	// time.Now).
	Now func() time.Time
}

// Loaded describes a certificate that was loaded, for the log.
type Loaded struct {
	Subject   string
	DNSNames  []string
	NotAfter  time.Time
	KeyInFile bool
	ClientCAs int
}

// TLS is the server's TLS configuration. Every handshake uses the
// configuration current when it starts; Reload replaces it for later
// handshakes and never disturbs a connection that is already up.
type TLS struct {
	src TLSSource
	cur atomic.Pointer[tls.Config]
}

// NewTLS loads src. It fails if anything is wrong with it: a missing or
// unreadable file, a chain whose leaf has expired, a key that does not match
// the certificate or cannot sign.
func NewTLS(ctx context.Context, src TLSSource) (*TLS, Loaded, error) {
	if src.CertFile == "" {
		return nil, Loaded{}, errors.New("tls: a certificate file is required")
	}
	if (src.KeyFile == "") == (src.Signer == nil) {
		return nil, Loaded{}, errors.New("tls: give the private key as a file or as a token key, not both or neither")
	}
	if src.Now == nil {
		src.Now = time.Now
	}
	t := &TLS{src: src}
	l, err := t.Reload(ctx)
	if err != nil {
		return nil, Loaded{}, err
	}
	return t, l, nil
}

// Reload reads the source again. On any error the running configuration
// stays and the error says what was wrong.
func (t *TLS) Reload(ctx context.Context) (Loaded, error) {
	cfg, l, err := t.load(ctx)
	if err != nil {
		return Loaded{}, err
	}
	t.cur.Store(cfg)
	return l, nil
}

// Config is the configuration to give http.Server: it hands every handshake
// the current one.
func (t *TLS) Config() *tls.Config {
	return &tls.Config{
		MinVersion:   tls.VersionTLS12,
		CipherSuites: CipherSuites,
		NextProtos:   []string{"h2", "http/1.1"},
		GetConfigForClient: func(*tls.ClientHelloInfo) (*tls.Config, error) {
			return t.cur.Load(), nil
		},
		// http.Server.ServeTLS wants a certificate source on the base
		// configuration; GetConfigForClient's answer is what is used.
		GetCertificate: func(*tls.ClientHelloInfo) (*tls.Certificate, error) {
			return &t.cur.Load().Certificates[0], nil
		},
	}
}

// Current is the configuration handshakes use now (for tests and for
// clients of the same process).
func (t *TLS) Current() *tls.Config { return t.cur.Load() }

// MutualTLS reports whether client certificates are required.
func (t *TLS) MutualTLS() bool { return t.src.ClientCAFile != "" }

func (t *TLS) load(ctx context.Context) (*tls.Config, Loaded, error) {
	certPEM, err := os.ReadFile(t.src.CertFile)
	if err != nil {
		return nil, Loaded{}, fmt.Errorf("tls certificate: %w", err)
	}
	var cert tls.Certificate
	if t.src.KeyFile != "" {
		keyPEM, err := os.ReadFile(t.src.KeyFile)
		if err != nil {
			return nil, Loaded{}, fmt.Errorf("tls key: %w", err)
		}
		cert, err = tls.X509KeyPair(certPEM, keyPEM)
		clear(keyPEM)
		if err != nil {
			return nil, Loaded{}, fmt.Errorf("tls certificate %s and key %s: %w", t.src.CertFile, t.src.KeyFile, err)
		}
	} else {
		chain, err := parseChain(certPEM)
		if err != nil {
			return nil, Loaded{}, fmt.Errorf("tls certificate %s: %w", t.src.CertFile, err)
		}
		signer, err := t.src.Signer(ctx)
		if err != nil {
			return nil, Loaded{}, fmt.Errorf("tls key in the token: %w", err)
		}
		cert = tls.Certificate{Certificate: chain, PrivateKey: signer}
	}
	leaf, err := x509.ParseCertificate(cert.Certificate[0])
	if err != nil {
		return nil, Loaded{}, fmt.Errorf("tls certificate %s: %w", t.src.CertFile, err)
	}
	cert.Leaf = leaf
	now := t.src.Now()
	if now.After(leaf.NotAfter) {
		return nil, Loaded{}, fmt.Errorf("tls certificate %s expired on %s", t.src.CertFile, leaf.NotAfter.UTC().Format(time.RFC3339))
	}
	if now.Before(leaf.NotBefore) {
		return nil, Loaded{}, fmt.Errorf("tls certificate %s is not valid before %s", t.src.CertFile, leaf.NotBefore.UTC().Format(time.RFC3339))
	}
	if err := checkKey(cert.PrivateKey.(crypto.Signer), leaf); err != nil {
		return nil, Loaded{}, fmt.Errorf("tls certificate %s and its key: %w", t.src.CertFile, err)
	}
	cfg := &tls.Config{
		MinVersion:   tls.VersionTLS12,
		CipherSuites: CipherSuites,
		NextProtos:   []string{"h2", "http/1.1"},
		Certificates: []tls.Certificate{cert},
	}
	// Fresh session ticket keys with every load: a session resumed across a
	// reload would skip the new configuration's checks (a client CA that
	// was removed, say).
	var ticketKey [32]byte
	if _, err := rand.Read(ticketKey[:]); err != nil {
		return nil, Loaded{}, fmt.Errorf("tls session ticket key: %w", err)
	}
	cfg.SetSessionTicketKeys([][32]byte{ticketKey})
	l := Loaded{Subject: leaf.Subject.String(), DNSNames: leaf.DNSNames, NotAfter: leaf.NotAfter, KeyInFile: t.src.KeyFile != ""}
	if t.src.ClientCAFile != "" {
		pool, n, err := loadCAs(t.src.ClientCAFile)
		if err != nil {
			return nil, Loaded{}, err
		}
		cfg.ClientAuth, cfg.ClientCAs = tls.RequireAndVerifyClientCert, pool
		l.ClientCAs = n
	}
	return cfg, l, nil
}

// parseChain reads the CERTIFICATE blocks of a PEM file, in order.
func parseChain(b []byte) ([][]byte, error) {
	var chain [][]byte
	for {
		var block *pem.Block
		block, b = pem.Decode(b)
		if block == nil {
			break
		}
		if block.Type == "CERTIFICATE" {
			chain = append(chain, block.Bytes)
		}
	}
	if len(chain) == 0 {
		return nil, errors.New("no CERTIFICATE in the file")
	}
	return chain, nil
}

// checkKey proves that key is the private key of leaf's public key: the
// public keys are equal and a signature made with it verifies. A token key
// that matches on paper but cannot sign fails here, at load, not in every
// handshake.
func checkKey(key crypto.Signer, leaf *x509.Certificate) error {
	pub, ok := key.Public().(interface{ Equal(crypto.PublicKey) bool })
	if !ok || !pub.Equal(leaf.PublicKey) {
		return errors.New("the private key is not the certificate's")
	}
	digest := sha256.Sum256([]byte("hsmkms tls key check"))
	switch p := leaf.PublicKey.(type) {
	case *ecdsa.PublicKey:
		sig, err := key.Sign(rand.Reader, digest[:], crypto.SHA256)
		if err != nil {
			return fmt.Errorf("test signature: %w", err)
		}
		if !ecdsa.VerifyASN1(p, digest[:], sig) {
			return errors.New("test signature does not verify")
		}
	case *rsa.PublicKey:
		opts := &rsa.PSSOptions{SaltLength: rsa.PSSSaltLengthEqualsHash, Hash: crypto.SHA256}
		sig, err := key.Sign(rand.Reader, digest[:], opts)
		if err != nil {
			return fmt.Errorf("test signature: %w", err)
		}
		if err := rsa.VerifyPSS(p, crypto.SHA256, digest[:], sig, opts); err != nil {
			return fmt.Errorf("test signature does not verify: %w", err)
		}
	default:
		// Ed25519 and the rest: crypto/tls checks what it supports.
	}
	return nil
}

// loadCAs reads a PEM file of CA certificates.
func loadCAs(file string) (*x509.CertPool, int, error) {
	b, err := os.ReadFile(file)
	if err != nil {
		return nil, 0, fmt.Errorf("tls client CA: %w", err)
	}
	chain, err := parseChain(b)
	if err != nil {
		return nil, 0, fmt.Errorf("tls client CA %s: %w", file, err)
	}
	pool := x509.NewCertPool()
	for _, der := range chain {
		c, err := x509.ParseCertificate(der)
		if err != nil {
			return nil, 0, fmt.Errorf("tls client CA %s: %w", file, err)
		}
		pool.AddCert(c)
	}
	return pool, len(chain), nil
}

// ClientIdentities are the names a verified client certificate proves, as
// principals are bound to them: the subject distinguished name in RFC 4514
// form ("CN=app1,O=Bank,C=DE", as Go and `openssl x509 -subject -nameopt
// RFC2253` write it) and each URI SAN (a SPIFFE id, "spiffe://bank/app1").
// None for a connection without a verified certificate.
func ClientIdentities(cs *tls.ConnectionState) []string {
	if cs == nil || len(cs.VerifiedChains) == 0 || len(cs.VerifiedChains[0]) == 0 {
		return nil
	}
	leaf := cs.VerifiedChains[0][0]
	ids := []string{leaf.Subject.String()}
	for _, u := range leaf.URIs {
		ids = append(ids, u.String())
	}
	return ids
}

// Bound reports whether a verified client certificate proves one of the
// identities a principal is bound to. Names are compared exactly (the DN
// as RFC 4514 writes it, case and all).
func Bound(cs *tls.ConnectionState, allowed []string) bool {
	for _, id := range ClientIdentities(cs) {
		if slices.Contains(allowed, id) {
			return true
		}
	}
	return false
}

// CheckIdentity refuses a configured identity that no certificate could
// prove: an empty string, or a URI that is not one.
func CheckIdentity(id string) error {
	switch {
	case strings.TrimSpace(id) != id || id == "":
		return fmt.Errorf("client certificate identity %q: empty or padded", id)
	case strings.Contains(id, "://"):
		return nil
	case !strings.Contains(id, "="):
		return fmt.Errorf("client certificate identity %q: neither a subject DN (CN=…,O=…) nor a URI (spiffe://…)", id)
	}
	return nil
}

// LimitSigner lets at most n signatures by s run at once. A token key's
// signatures take sessions from the pool the KMS operations use; without a
// bound, a flood of handshakes — which anyone can start, no credentials
// needed — could hold every session. Handshakes beyond n wait their turn.
func LimitSigner(s crypto.Signer, n int) crypto.Signer {
	if n < 1 {
		n = 1
	}
	return &limitedSigner{Signer: s, slots: make(chan struct{}, n)}
}

type limitedSigner struct {
	crypto.Signer
	slots chan struct{}
}

func (l *limitedSigner) Sign(r io.Reader, digest []byte, opts crypto.SignerOpts) ([]byte, error) {
	l.slots <- struct{}{}
	defer func() { <-l.slots }()
	return l.Signer.Sign(r, digest, opts)
}

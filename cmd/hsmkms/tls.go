package main

import (
	"context"
	"crypto"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/asn1"
	"encoding/pem"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/url"
	"os"
	"strings"

	"github.com/hsmkms/hsmkms/hsm"
	"github.com/hsmkms/hsmkms/service/api/transport"
)

// checkTransport refuses a listener that would put secrets on the wire in
// clear: plain HTTP off loopback needs --insecure-http, said out loud.
func (o *options) checkTransport() error {
	if (o.tlsCert == "") != (o.tlsKey == "") {
		return errors.New("--tls-cert and --tls-key go together")
	}
	if o.tlsClientCA != "" && o.tlsCert == "" {
		return errors.New("--tls-client-ca needs --tls-cert and --tls-key: client certificates are a TLS feature")
	}
	if o.maxConns < 0 {
		return errors.New("--max-connections must be positive")
	}
	if _, err := transport.ParseProxies(o.trustedProxies); err != nil {
		return err
	}
	if o.proxyProtocol && len(o.trustedProxies) == 0 {
		return errors.New("--proxy-protocol needs --trusted-proxies: a PROXY header is believed only from a trusted proxy")
	}
	for _, p := range o.file.Principals {
		if len(p.ClientCertificates) > 0 && o.tlsClientCA == "" {
			return fmt.Errorf("config: principal %s is bound to client certificates, but no tls.client_ca_file (--tls-client-ca) makes clients present one", p.ARN)
		}
	}
	if o.tlsCert == "" && !o.insecureHTTP && !o.devContainer && loopbackOnly(o.listen) != nil {
		return fmt.Errorf("--listen %s is not a loopback address and no TLS is configured: requests and answers (plaintext, data keys) would cross the network in clear. Give --tls-cert and --tls-key, or --insecure-http if a TLS-terminating proxy on this host is the only client", o.listen)
	}
	return nil
}

// tlsKeyIsFile tells a key file from a token key: a pkcs11: URI names a
// token key; so does a bare word that is no file's name (a label). A name
// with a slash is always a file, so a mistyped path is reported missing
// rather than looked up in the token.
func tlsKeyIsFile(key string) bool {
	if strings.HasPrefix(strings.ToLower(key), "pkcs11:") {
		return false
	}
	if strings.ContainsRune(key, '/') {
		return true
	}
	_, err := os.Stat(key)
	return err == nil
}

// serverTLS loads the TLS configuration, its key from a file or from tok.
// nil without --tls-cert.
func (o *options) serverTLS(ctx context.Context, tok *hsm.Token, log *slog.Logger) (*transport.TLS, error) {
	if o.tlsCert == "" {
		return nil, nil
	}
	src := transport.TLSSource{CertFile: o.tlsCert, ClientCAFile: o.tlsClientCA}
	if tlsKeyIsFile(o.tlsKey) {
		src.KeyFile = o.tlsKey
	} else {
		name, err := hsm.ParseKeyName(o.tlsKey)
		if err != nil {
			return nil, fmt.Errorf("--tls-key: %w", err)
		}
		src.Signer = func(ctx context.Context) (crypto.Signer, error) {
			s, err := tok.NamedSigner(ctx, name)
			if err != nil {
				return nil, err
			}
			// The point of a token key is that it cannot leave the token.
			if info := s.Info(); !info.Sensitive || info.Extractable {
				return nil, fmt.Errorf("%s is extractable or not sensitive: make the key with `hsmkms tls new-key`, or with CKA_SENSITIVE true and CKA_EXTRACTABLE false", name)
			}
			// Handshakes may use a quarter of the token's sessions at
			// most: anyone can start one, and the KMS operations need the
			// rest.
			return transport.LimitSigner(s, max(1, o.sessions()/4)), nil
		}
	}
	t, loaded, err := transport.NewTLS(ctx, src)
	if err != nil {
		return nil, err
	}
	logLoaded(log, "TLS certificate loaded", o.tlsKey, loaded)
	return t, nil
}

func logLoaded(log *slog.Logger, msg, key string, l transport.Loaded) {
	where := "token"
	if l.KeyInFile {
		where = "file"
	}
	log.Info(msg, "subject", l.Subject, "dns", l.DNSNames, "not_after", l.NotAfter, "key", key, "key_in", where, "client_cas", l.ClientCAs)
}

const tlsUsage = `usage: hsmkms tls new-key --label LABEL --subject /CN=NAME[/O=ORG...] [--dns NAME]... [--ip ADDR]... [--uri URI]...
                      [--key-type ecdsa-p256|ecdsa-p384|rsa-2048|rsa-3072|rsa-4096] [token flags as serve: --dev --data-dir D | --config F ...]

Creates a signing key pair in the token (sensitive, never extractable) and
writes a certificate signing request for it, PEM, on standard output: the key
never exists outside the token. Have the CSR signed, then serve with
  hsmkms serve --tls-cert CERT.pem --tls-key pkcs11:object=LABEL ...`

// tlsCommand runs "hsmkms tls ...".
func tlsCommand(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	if len(args) == 0 || args[0] != "new-key" {
		fmt.Fprintln(stderr, tlsUsage)
		if len(args) == 0 || args[0] == "-h" || args[0] == "--help" || args[0] == "help" {
			return flag.ErrHelp
		}
		return fmt.Errorf("tls: unknown subcommand %q (want new-key)", args[0])
	}
	o := &options{}
	fs := flag.NewFlagSet("hsmkms tls new-key", flag.ContinueOnError)
	fs.SetOutput(stderr)
	fs.Usage = func() { fmt.Fprintln(stderr, tlsUsage); fs.PrintDefaults() }
	o.tokenFlags(fs)
	label := fs.String("label", "hsmkms-tls", "CKA_LABEL of the new key pair (name it in --tls-key as pkcs11:object=LABEL)")
	keyType := fs.String("key-type", "ecdsa-p256", "ecdsa-p256, ecdsa-p384, rsa-2048, rsa-3072 or rsa-4096")
	subject := fs.String("subject", "", "subject of the request, as /CN=kms.example/O=Bank/C=DE")
	var dns, ips, uris stringList
	fs.Var(&dns, "dns", "DNS name for the subjectAltName (repeatable, or comma-separated)")
	fs.Var(&ips, "ip", "IP address for the subjectAltName (repeatable, or comma-separated)")
	fs.Var(&uris, "uri", "URI for the subjectAltName, e.g. a SPIFFE id (repeatable)")
	if err := fs.Parse(args[1:]); err != nil {
		return err
	}
	if fs.NArg() > 0 {
		return fmt.Errorf("tls new-key: unexpected arguments: %v", fs.Args())
	}
	typ, err := hsm.ParseNamedKeyType(*keyType)
	if err != nil {
		return fmt.Errorf("tls new-key: %w", err)
	}
	name, err := parseSubject(*subject)
	if err != nil {
		return fmt.Errorf("tls new-key: --subject: %w", err)
	}
	tmpl := &x509.CertificateRequest{Subject: name, DNSNames: dns}
	for _, s := range ips {
		ip := net.ParseIP(s)
		if ip == nil {
			return fmt.Errorf("tls new-key: --ip %q is not an IP address", s)
		}
		tmpl.IPAddresses = append(tmpl.IPAddresses, ip)
	}
	for _, s := range uris {
		u, err := url.Parse(s)
		if err != nil || u.Scheme == "" {
			return fmt.Errorf("tls new-key: --uri %q is not an absolute URI", s)
		}
		tmpl.URIs = append(tmpl.URIs, u)
	}
	if *label == "" || strings.ContainsAny(*label, ";?") {
		return fmt.Errorf("tls new-key: --label %q: give a plain label", *label)
	}
	if o.configFile != "" {
		if err := o.loadFile(); err != nil {
			return err
		}
	}
	o.defaults()
	if err := o.checkToken(); err != nil {
		return fmt.Errorf("tls new-key: %w", err)
	}
	if o.dev {
		if err := privateDir(o.dataDir, slog.New(slog.NewTextHandler(stderr, nil))); err != nil {
			return err
		}
	}
	pin, err := o.tokenPIN(ctx)
	if err != nil {
		return err
	}
	tok, err := hsm.Open(ctx, hsm.Config{
		ModulePath: o.module, TokenLabel: o.tokenLabel, TokenSerial: o.tokenSerial, PIN: pin,
		MaxSessions: 2, SessionKeyCopies: o.sessionKeyCopies, CallTimeout: o.callTimeout,
	})
	if err != nil {
		return fmt.Errorf("open token: %w", err)
	}
	defer tok.Close()
	key := hsm.KeyName{Label: *label}
	if err := tok.GenerateNamedKeyPair(ctx, key, typ); err != nil {
		if errors.Is(err, hsm.ErrExists) {
			return fmt.Errorf("tls new-key: the token already has a key labelled %q; choose another --label (a key is never replaced: certificates may still name it)", *label)
		}
		return fmt.Errorf("tls new-key: %w", err)
	}
	signer, err := tok.NamedSigner(ctx, key)
	if err != nil {
		return fmt.Errorf("tls new-key: %w", err)
	}
	csr, err := x509.CreateCertificateRequest(nil, tmpl, signer)
	if err != nil {
		return fmt.Errorf("tls new-key: certificate request: %w", err)
	}
	fmt.Fprintf(stderr, "hsmkms: key pair %q (%s) created in the token; serve with --tls-key 'pkcs11:object=%s;type=private'\n", *label, *keyType, *label)
	return pem.Encode(stdout, &pem.Block{Type: "CERTIFICATE REQUEST", Bytes: csr})
}

// checkToken is the part of check that choosing a token needs.
func (o *options) checkToken() error {
	if o.tokenLabel != "" && o.tokenSerial != "" {
		return errors.New("--token-label and --token-serial are mutually exclusive")
	}
	if !o.dev && o.tokenLabel == "" && o.tokenSerial == "" {
		return errors.New("name the token with --token-label or --token-serial (or use --dev)")
	}
	return nil
}

// subjectAttrs are the attribute names --subject takes, as openssl writes
// them.
var subjectAttrs = map[string]asn1.ObjectIdentifier{
	"CN": {2, 5, 4, 3}, "C": {2, 5, 4, 6}, "L": {2, 5, 4, 7}, "ST": {2, 5, 4, 8},
	"O": {2, 5, 4, 10}, "OU": {2, 5, 4, 11}, "serialNumber": {2, 5, 4, 5},
}

// parseSubject reads an openssl-style subject, "/CN=kms.example/O=Bank",
// in order; "\/" is a slash inside a value.
func parseSubject(s string) (pkix.Name, error) {
	if !strings.HasPrefix(s, "/") {
		return pkix.Name{}, fmt.Errorf("%q: want /CN=NAME[/O=ORG...]", s)
	}
	var parts []string
	var cur strings.Builder
	for i := 1; i < len(s); i++ {
		switch {
		case s[i] == '\\' && i+1 < len(s):
			i++
			cur.WriteByte(s[i])
		case s[i] == '/':
			parts = append(parts, cur.String())
			cur.Reset()
		default:
			cur.WriteByte(s[i])
		}
	}
	parts = append(parts, cur.String())
	var rdn pkix.RDNSequence
	for _, p := range parts {
		k, v, ok := strings.Cut(p, "=")
		oid, known := subjectAttrs[k]
		if !ok || v == "" || !known {
			return pkix.Name{}, fmt.Errorf("%q: %q is not ATTR=VALUE with ATTR one of CN, O, OU, L, ST, C, serialNumber", s, p)
		}
		rdn = append(rdn, pkix.RelativeDistinguishedNameSET{{Type: oid, Value: v}})
	}
	// In the order given: each attribute its own RDN, as openssl makes them.
	return pkix.Name{ExtraNames: flatten(rdn)}, nil
}

func flatten(rdn pkix.RDNSequence) []pkix.AttributeTypeAndValue {
	var out []pkix.AttributeTypeAndValue
	for _, set := range rdn {
		out = append(out, set...)
	}
	return out
}

// sessions is the token session pool's size.
func (o *options) sessions() int {
	if o.maxSessions > 0 {
		return o.maxSessions
	}
	return hsm.DefaultMaxSessions
}

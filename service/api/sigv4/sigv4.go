// Package sigv4 owns verification of AWS Signature Version 4 Authorization
// headers on the server side.
//
// The package is pure: it does no I/O beyond reading the headers, method, URL
// and already-read body of the request it is given, and it imports only the
// standard library. Only header-based signing with the AWS4-HMAC-SHA256
// algorithm is supported (no presigned query-string authentication, no
// SigV4a).
//
// Every error returned by [Verifier.Verify] wraps exactly one of the sentinel
// errors below (test with errors.Is) and its Error() text is a client-safe
// message modelled on AWS's wording, suitable for the "message" field of the
// AWS JSON error response. Messages never contain the secret key or the
// signature the server computed.
package sigv4

import (
	"crypto/hmac"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"net/http"
	"net/url"
	"sort"
	"strconv"
	"strings"
	"sync"
	"time"
)

// Sentinel error kinds. The caller maps each to an AWS exception name.
var (
	// ErrMissingAuthentication: no Authorization header at all
	// (MissingAuthenticationTokenException).
	ErrMissingAuthentication = errors.New("sigv4: missing authentication token")

	// ErrIncompleteSignature: the Authorization header or a header it depends
	// on is malformed or incomplete (IncompleteSignatureException).
	ErrIncompleteSignature = errors.New("sigv4: incomplete signature")

	// ErrUnrecognizedClient: the access key id is unknown
	// (UnrecognizedClientException).
	ErrUnrecognizedClient = errors.New("sigv4: unrecognized client")

	// ErrInvalidSignature: the signature does not match, or the credential
	// scope does not fit this server (InvalidSignatureException).
	ErrInvalidSignature = errors.New("sigv4: invalid signature")

	// ErrSignatureExpired: X-Amz-Date is further from the server clock than
	// the allowed skew. AWS reports this as an InvalidSignatureException, so
	// errors.Is(err, ErrInvalidSignature) is also true for it.
	ErrSignatureExpired = fmt.Errorf("sigv4: signature expired: %w", ErrInvalidSignature)
)

// Algorithm is the only signing algorithm accepted.
const Algorithm = "AWS4-HMAC-SHA256"

// DefaultMaxSkew is the clock skew allowed when Verifier.MaxSkew is zero.
const DefaultMaxSkew = 5 * time.Minute

const (
	scopeTerminator = "aws4_request"
	amzDateLayout   = "20060102T150405Z"
	maxEcho         = 512  // longest piece of client input echoed in a message
	maxCacheEntries = 1024 // signing-key cache is reset when it grows past this
	maxPooledBuf    = 64 << 10
)

// Credential is what a CredentialStore knows about one access key.
type Credential struct {
	AccessKeyID string
	Secret      []byte
	// SessionToken is the token that temporary credentials come with; empty
	// for long-term access keys, which then refuse any request that carries
	// an X-Amz-Security-Token.
	SessionToken string
	// Principal is opaque to this package and handed back to the caller.
	Principal any
}

// CredentialStore resolves access key ids. It must be safe for concurrent use.
type CredentialStore interface {
	Lookup(accessKeyID string) (Credential, bool)
}

// Verifier verifies SigV4-signed requests for one region and service.
//
// Region, Service and Store must be set; Now defaults to time.Now and MaxSkew
// to DefaultMaxSkew. A Verifier is safe for concurrent use and must not be
// copied after first use (it holds a cache of derived signing keys, which is
// invalidated automatically when the store returns a different secret for an
// access key).
type Verifier struct {
	Region  string
	Service string
	Store   CredentialStore
	Now     func() time.Time
	MaxSkew time.Duration
	// SignedHeaders names headers (lower-case) that a request carrying them
	// must sign, beyond host: those that choose what the request does, such
	// as x-amz-target for AWS JSON protocols, so a captured request cannot be
	// replayed as another operation. (A request without the header cannot
	// be turned into another by it.)
	SignedHeaders []string

	mu    sync.RWMutex
	cache map[string]cachedKey
}

type cachedKey struct {
	secret []byte // copy of the secret the key was derived from
	key    [sha256.Size]byte
}

// verifyError is the concrete error type returned by Verify: a client-safe
// message plus the sentinel kind it wraps.
type verifyError struct {
	kind error
	msg  string
}

func (e *verifyError) Error() string { return e.msg }
func (e *verifyError) Unwrap() error { return e.kind }

func newErr(kind error, format string, args ...any) error {
	return &verifyError{kind: kind, msg: fmt.Sprintf(format, args...)}
}

const mismatchMsg = "The request signature we calculated does not match the signature you provided. " +
	"Check your AWS Secret Access Key and signing method. Consult the service documentation for details."

// workspace holds per-call scratch memory; pooled so a verification does not
// allocate on the success path.
type workspace struct {
	buf     []byte // canonical request, then string to sign
	scratch []byte // HMAC input
	key     []byte // cache key
}

var workspacePool = sync.Pool{New: func() any {
	return &workspace{
		buf:     make([]byte, 0, 1024),
		scratch: make([]byte, 0, 512),
		key:     make([]byte, 0, 128),
	}
}}

func putWorkspace(w *workspace) {
	if cap(w.buf) > maxPooledBuf || cap(w.scratch) > maxPooledBuf {
		return
	}
	workspacePool.Put(w)
}

// authorization holds the parts of a parsed Authorization header. All fields
// are substrings of the header value.
type authorization struct {
	credential    string
	signedHeaders string
	signature     string

	accessKeyID string
	scopeDate   string
	region      string
	service     string
}

// Verify checks the SigV4 signature of r, whose body has already been read
// into body. It uses r's method, URL path and query, Host and headers. On
// success it returns the Credential of the signing access key.
//
// Checks run in this order: Authorization header syntax and presence of
// X-Amz-Date (ErrMissingAuthentication / ErrIncompleteSignature), canonical
// request construction (ErrIncompleteSignature when a signed header is absent),
// credential scope region/service/date (ErrInvalidSignature), clock skew
// (ErrSignatureExpired), access key lookup (ErrUnrecognizedClient) and finally
// the signature itself (ErrInvalidSignature).
func (v *Verifier) Verify(r *http.Request, body []byte) (Credential, error) {
	authValues := r.Header["Authorization"]
	if len(authValues) == 0 || strings.TrimSpace(authValues[0]) == "" {
		return Credential{}, newErr(ErrMissingAuthentication, "Missing Authentication Token")
	}
	if len(authValues) > 1 {
		return Credential{}, newErr(ErrIncompleteSignature, "Authorization header must be specified only once.")
	}
	authHeader := authValues[0]

	var a authorization
	if err := parseAuthorization(authHeader, &a); err != nil {
		return Credential{}, err
	}
	for _, name := range v.SignedHeaders {
		if firstHeader(r.Header, name) != "" && !signs(a.signedHeaders, name) {
			return Credential{}, newErr(ErrIncompleteSignature,
				"'%s' must be a 'SignedHeader' in the AWS Authorization.", name)
		}
	}

	dateValues := r.Header["X-Amz-Date"]
	if len(dateValues) == 0 || dateValues[0] == "" {
		return Credential{}, newErr(ErrIncompleteSignature,
			"Authorization header requires existence of a 'X-Amz-Date' header. Authorization=%s", clip(authHeader))
	}
	amzDate := strings.TrimSpace(dateValues[0])
	reqTime, ok := parseAmzDate(amzDate)
	if !ok {
		return Credential{}, newErr(ErrIncompleteSignature,
			"Date must be in ISO-8601 'basic format'. Got '%s'. See http://en.wikipedia.org/wiki/ISO_8601", clip(amzDate))
	}

	w := workspacePool.Get().(*workspace)
	defer putWorkspace(w)

	// Canonical request.
	buf, err := appendCanonicalRequest(w.buf[:0], r, body, a.signedHeaders)
	w.buf = buf
	if err != nil {
		return Credential{}, err
	}

	// Credential scope.
	if a.region != v.Region {
		return Credential{}, newErr(ErrInvalidSignature,
			"Credential should be scoped to a valid region, not '%s'. ", clip(a.region))
	}
	if a.service != v.Service {
		return Credential{}, newErr(ErrInvalidSignature,
			"Credential should be scoped to correct service: '%s'. ", v.Service)
	}
	if a.scopeDate != amzDate[:8] {
		return Credential{}, newErr(ErrInvalidSignature,
			"Date in Credential scope does not match YYYYMMDD from ISO-8601 version of date from HTTP: '%s' != '%s', from '%s'.",
			clip(a.scopeDate), amzDate[:8], amzDate)
	}

	// Clock skew.
	now := time.Now
	if v.Now != nil {
		now = v.Now
	}
	skew := v.MaxSkew
	if skew <= 0 {
		skew = DefaultMaxSkew
	}
	nowUTC := now().UTC()
	if earliest := nowUTC.Add(-skew); reqTime.Before(earliest) {
		return Credential{}, newErr(ErrSignatureExpired,
			"Signature expired: %s is now earlier than %s (%s - %s)",
			amzDate, earliest.Format(amzDateLayout), nowUTC.Format(amzDateLayout), formatSkew(skew))
	}
	if latest := nowUTC.Add(skew); reqTime.After(latest) {
		return Credential{}, newErr(ErrSignatureExpired,
			"Signature not yet current: %s is still later than %s (%s + %s)",
			amzDate, latest.Format(amzDateLayout), nowUTC.Format(amzDateLayout), formatSkew(skew))
	}

	// Access key.
	if v.Store == nil {
		return Credential{}, newErr(ErrUnrecognizedClient, "The security token included in the request is invalid.")
	}
	cred, found := v.Store.Lookup(a.accessKeyID)
	if !found {
		return Credential{}, newErr(ErrUnrecognizedClient, "The security token included in the request is invalid.")
	}
	if err := checkSessionToken(r, &a, cred); err != nil {
		return Credential{}, err
	}

	// Provided signature: 32 bytes, lower- or upper-case hex.
	var provided [sha256.Size]byte
	if !decodeHex(provided[:], a.signature) {
		return Credential{}, newErr(ErrInvalidSignature, mismatchMsg)
	}

	// String to sign, reusing buf:
	//   AWS4-HMAC-SHA256 \n X-Amz-Date \n scope \n hex(sha256(canonical request))
	crHash := sha256.Sum256(w.buf)
	sts := w.buf[:0]
	sts = append(sts, Algorithm...)
	sts = append(sts, '\n')
	sts = append(sts, amzDate...)
	sts = append(sts, '\n')
	sts = append(sts, a.scopeDate...)
	sts = append(sts, '/')
	sts = append(sts, a.region...)
	sts = append(sts, '/')
	sts = append(sts, a.service...)
	sts = append(sts, '/')
	sts = append(sts, scopeTerminator...)
	sts = append(sts, '\n')
	sts = hex.AppendEncode(sts, crHash[:])
	w.buf = sts

	signingKey := v.signingKey(w, cred, a.scopeDate)
	computed := hmacSHA256(signingKey[:], w.buf, &w.scratch)
	if !hmac.Equal(computed[:], provided[:]) {
		return Credential{}, newErr(ErrInvalidSignature, mismatchMsg)
	}
	return cred, nil
}

// signs reports whether the SignedHeaders list names header name.
func signs(signedHeaders, name string) bool {
	for s := signedHeaders; s != ""; {
		var h string
		h, s, _ = strings.Cut(s, ";")
		if strings.EqualFold(h, name) {
			return true
		}
	}
	return false
}

// checkSessionToken accepts a request only if it carries exactly the session
// token of its credential: none for a long-term access key, or, for
// temporary credentials, that token, signed. A token that no credential
// issued is refused as AWS refuses it.
func checkSessionToken(r *http.Request, a *authorization, cred Credential) error {
	invalid := newErr(ErrUnrecognizedClient, "The security token included in the request is invalid.")
	var got []string
	for k, vs := range r.Header {
		if strings.EqualFold(k, "X-Amz-Security-Token") {
			got = append(got, vs...)
		}
	}
	if r.URL != nil && strings.Contains(strings.ToLower(r.URL.RawQuery), "x-amz-security-token") {
		return invalid // query-string authentication is not supported
	}
	switch {
	case len(got) == 0 && cred.SessionToken == "":
		return nil
	case len(got) != 1 || cred.SessionToken == "" || !signs(a.signedHeaders, "x-amz-security-token"):
		return invalid
	case !hmac.Equal([]byte(got[0]), []byte(cred.SessionToken)):
		return invalid
	}
	return nil
}

// parseAuthorization parses
//
//	AWS4-HMAC-SHA256 Credential=AKID/date/region/service/aws4_request, SignedHeaders=a;b, Signature=hex
func parseAuthorization(h string, a *authorization) error {
	h = trimSpace(h)
	alg, rest, _ := strings.Cut(h, " ")
	if alg != Algorithm {
		return newErr(ErrIncompleteSignature,
			"Unsupported AWS 'algorithm': '%s'. Only '%s' is supported. Authorization=%s", clip(alg), Algorithm, clip(h))
	}
	for rest != "" {
		var part string
		part, rest, _ = strings.Cut(rest, ",")
		part = trimSpace(part)
		if part == "" {
			continue
		}
		key, value, ok := strings.Cut(part, "=")
		if !ok {
			return newErr(ErrIncompleteSignature,
				"'%s' not a valid key=value pair (missing equal-sign) in Authorization header: '%s'", clip(part), clip(h))
		}
		var dst *string
		switch trimSpace(key) {
		case "Credential":
			dst = &a.credential
		case "SignedHeaders":
			dst = &a.signedHeaders
		case "Signature":
			dst = &a.signature
		default:
			continue // unknown parameters are ignored
		}
		if *dst != "" {
			return newErr(ErrIncompleteSignature,
				"Authorization header has duplicate '%s' parameter. Authorization=%s", clip(trimSpace(key)), clip(h))
		}
		*dst = trimSpace(value)
	}
	switch {
	case a.credential == "":
		return newErr(ErrIncompleteSignature, "Authorization header requires 'Credential' parameter. Authorization=%s", clip(h))
	case a.signedHeaders == "":
		return newErr(ErrIncompleteSignature, "Authorization header requires 'SignedHeaders' parameter. Authorization=%s", clip(h))
	case a.signature == "":
		return newErr(ErrIncompleteSignature, "Authorization header requires 'Signature' parameter. Authorization=%s", clip(h))
	}

	// Credential=AKID/YYYYMMDD/region/service/aws4_request
	var parts [5]string
	if strings.Count(a.credential, "/") == len(parts)-1 {
		s := a.credential
		for i := 0; i < len(parts)-1; i++ {
			parts[i], s, _ = strings.Cut(s, "/")
		}
		parts[len(parts)-1] = s
	}
	if parts[0] == "" || parts[1] == "" || parts[2] == "" || parts[3] == "" {
		return newErr(ErrIncompleteSignature,
			"Credential must have exactly 5 slash-delimited elements, e.g. keyid/date/region/service/term, got '%s'", clip(a.credential))
	}
	if parts[4] != scopeTerminator {
		return newErr(ErrIncompleteSignature,
			"Credential should be scoped with a valid terminator: '%s', not '%s'.", scopeTerminator, clip(parts[4]))
	}
	a.accessKeyID, a.scopeDate, a.region, a.service = parts[0], parts[1], parts[2], parts[3]

	// SignedHeaders must be non-empty names and include host.
	hasHost := false
	for s := a.signedHeaders; ; {
		name, next, more := strings.Cut(s, ";")
		if name == "" {
			return newErr(ErrIncompleteSignature,
				"SignedHeaders contains an empty header name. Authorization=%s", clip(h))
		}
		if name == "host" {
			hasHost = true
		}
		if !more {
			break
		}
		s = next
	}
	if !hasHost {
		return newErr(ErrIncompleteSignature,
			"'Host' or ':authority' must be a 'SignedHeader' in the AWS Authorization.")
	}
	return nil
}

// appendCanonicalRequest appends the SigV4 canonical request of r to dst:
//
//	method \n canonical URI \n canonical query \n canonical headers \n signed headers \n payload hash
func appendCanonicalRequest(dst []byte, r *http.Request, body []byte, signedHeaders string) ([]byte, error) {
	dst = append(dst, r.Method...)
	dst = append(dst, '\n')

	// Canonical URI: the escaped path, each byte outside the unreserved set
	// (and '/') percent-encoded once more, as AWS does for non-S3 services.
	path := r.URL.EscapedPath()
	if path == "" {
		path = "/"
	}
	dst = appendURIEncode(dst, path, false)
	dst = append(dst, '\n')

	dst = appendCanonicalQuery(dst, r.URL.RawQuery)
	dst = append(dst, '\n')

	var bodyHashHex [2 * sha256.Size]byte
	bodyHash := sha256.Sum256(body)
	hex.Encode(bodyHashHex[:], bodyHash[:])

	for s := signedHeaders; ; {
		name, next, more := strings.Cut(s, ";")
		dst = append(dst, name...)
		dst = append(dst, ':')
		var found bool
		dst, found = appendHeaderValue(dst, r, name)
		if !found {
			return dst, newErr(ErrIncompleteSignature,
				"The header '%s' is listed in SignedHeaders but is not present in the request.", clip(name))
		}
		if strings.EqualFold(name, "x-amz-content-sha256") {
			// The signed claimed payload hash must be the real one.
			got := trimSpace(firstHeader(r.Header, name))
			if got != string(bodyHashHex[:]) {
				return dst, newErr(ErrInvalidSignature,
					"The provided 'x-amz-content-sha256' header does not match what was computed.")
			}
		}
		dst = append(dst, '\n')
		if !more {
			break
		}
		s = next
	}
	dst = append(dst, '\n')
	dst = append(dst, signedHeaders...)
	dst = append(dst, '\n')
	dst = append(dst, bodyHashHex[:]...)
	return dst, nil
}

// appendHeaderValue appends the canonical value of the header name (any case)
// from r. Multiple values are joined with commas, each trimmed and with runs of
// spaces collapsed. Host and, when absent from r.Header, Content-Length and
// Transfer-Encoding are taken from the fields net/http moves them to.
func appendHeaderValue(dst []byte, r *http.Request, name string) ([]byte, bool) {
	if strings.EqualFold(name, "host") {
		host := r.Host
		if host == "" && r.URL != nil {
			host = r.URL.Host
		}
		if host == "" {
			return dst, false
		}
		return appendTrimmedValue(dst, host), true
	}
	found := false
	for k, values := range r.Header {
		if len(k) != len(name) || !strings.EqualFold(k, name) {
			continue
		}
		for _, val := range values {
			if found {
				dst = append(dst, ',')
			}
			dst = appendTrimmedValue(dst, val)
			found = true
		}
	}
	if found {
		return dst, true
	}
	switch {
	case strings.EqualFold(name, "content-length"):
		if r.ContentLength >= 0 {
			return strconv.AppendInt(dst, r.ContentLength, 10), true
		}
	case strings.EqualFold(name, "transfer-encoding"):
		if len(r.TransferEncoding) > 0 {
			for i, te := range r.TransferEncoding {
				if i > 0 {
					dst = append(dst, ',')
				}
				dst = appendTrimmedValue(dst, te)
			}
			return dst, true
		}
	}
	return dst, false
}

// appendTrimmedValue appends v without leading/trailing whitespace and with
// every run of spaces collapsed to a single space.
func appendTrimmedValue(dst []byte, v string) []byte {
	v = trimSpace(v)
	prevSpace := false
	for i := 0; i < len(v); i++ {
		c := v[i]
		if c == ' ' {
			if prevSpace {
				continue
			}
			prevSpace = true
		} else {
			prevSpace = false
		}
		dst = append(dst, c)
	}
	return dst
}

func firstHeader(h http.Header, name string) string {
	for k, values := range h {
		if len(values) > 0 && len(k) == len(name) && strings.EqualFold(k, name) {
			return values[0]
		}
	}
	return ""
}

// appendCanonicalQuery appends the canonical query string: every name=value
// pair URI-encoded, sorted by encoded name then encoded value, joined by '&'.
func appendCanonicalQuery(dst []byte, rawQuery string) []byte {
	if rawQuery == "" {
		return dst
	}
	values, _ := url.ParseQuery(rawQuery) // like the SDK's URL.Query(), malformed pairs are dropped
	type pair struct{ k, v string }
	pairs := make([]pair, 0, len(values))
	var tmp []byte
	for k, vs := range values {
		tmp = appendURIEncode(tmp[:0], k, true)
		ek := string(tmp)
		for _, val := range vs {
			tmp = appendURIEncode(tmp[:0], val, true)
			pairs = append(pairs, pair{ek, string(tmp)})
		}
	}
	sort.Slice(pairs, func(i, j int) bool {
		if pairs[i].k != pairs[j].k {
			return pairs[i].k < pairs[j].k
		}
		return pairs[i].v < pairs[j].v
	})
	for i, p := range pairs {
		if i > 0 {
			dst = append(dst, '&')
		}
		dst = append(dst, p.k...)
		dst = append(dst, '=')
		dst = append(dst, p.v...)
	}
	return dst
}

// appendURIEncode percent-encodes (upper-case hex) every byte of s outside
// the RFC 3986 unreserved set; '/' is kept unless encodeSlash.
func appendURIEncode(dst []byte, s string, encodeSlash bool) []byte {
	const hexUpper = "0123456789ABCDEF"
	for i := 0; i < len(s); i++ {
		c := s[i]
		if isUnreserved(c) || (c == '/' && !encodeSlash) {
			dst = append(dst, c)
		} else {
			dst = append(dst, '%', hexUpper[c>>4], hexUpper[c&0xf])
		}
	}
	return dst
}

func isUnreserved(c byte) bool {
	return 'A' <= c && c <= 'Z' || 'a' <= c && c <= 'z' || '0' <= c && c <= '9' ||
		c == '-' || c == '.' || c == '_' || c == '~'
}

// parseAmzDate parses YYYYMMDDTHHMMSSZ (UTC) without allocating.
func parseAmzDate(s string) (time.Time, bool) {
	if len(s) != len(amzDateLayout) || s[8] != 'T' || s[15] != 'Z' {
		return time.Time{}, false
	}
	num := func(from, to int) (int, bool) {
		n := 0
		for i := from; i < to; i++ {
			c := s[i]
			if c < '0' || c > '9' {
				return 0, false
			}
			n = n*10 + int(c-'0')
		}
		return n, true
	}
	year, ok1 := num(0, 4)
	month, ok2 := num(4, 6)
	day, ok3 := num(6, 8)
	hour, ok4 := num(9, 11)
	minute, ok5 := num(11, 13)
	sec, ok6 := num(13, 15)
	if !(ok1 && ok2 && ok3 && ok4 && ok5 && ok6) ||
		month < 1 || month > 12 || day < 1 || hour > 23 || minute > 59 || sec > 59 {
		return time.Time{}, false
	}
	t := time.Date(year, time.Month(month), day, hour, minute, sec, 0, time.UTC)
	if t.Day() != day { // e.g. Feb 30 normalised into March
		return time.Time{}, false
	}
	return t, true
}

// signingKey returns the derived SigV4 signing key for cred on date, from the
// cache when the secret is unchanged.
func (v *Verifier) signingKey(w *workspace, cred Credential, date string) [sha256.Size]byte {
	k := w.key[:0]
	k = append(k, cred.AccessKeyID...)
	k = append(k, 0)
	k = append(k, date...)
	k = append(k, 0)
	k = append(k, v.Region...)
	k = append(k, 0)
	k = append(k, v.Service...)
	w.key = k

	v.mu.RLock()
	entry, ok := v.cache[string(k)]
	v.mu.RUnlock()
	if ok && hmac.Equal(entry.secret, cred.Secret) {
		return entry.key
	}

	key := deriveSigningKey(cred.Secret, date, v.Region, v.Service, &w.scratch)
	secretCopy := append([]byte(nil), cred.Secret...)

	v.mu.Lock()
	if v.cache == nil || len(v.cache) >= maxCacheEntries {
		v.cache = make(map[string]cachedKey)
	}
	v.cache[string(k)] = cachedKey{secret: secretCopy, key: key}
	v.mu.Unlock()
	return key
}

// deriveSigningKey computes
//
//	HMAC(HMAC(HMAC(HMAC("AWS4"+secret, date), region), service), "aws4_request")
func deriveSigningKey(secret []byte, date, region, service string, scratch *[]byte) [sha256.Size]byte {
	var seed [64]byte
	k0 := append(seed[:0], "AWS4"...)
	k0 = append(k0, secret...)
	k := hmacSHA256(k0, date, scratch)
	clear(seed[:])
	k = hmacSHA256(k[:], region, scratch)
	k = hmacSHA256(k[:], service, scratch)
	return hmacSHA256(k[:], scopeTerminator, scratch)
}

// hmacSHA256 computes HMAC-SHA256(key, msg) with crypto/hmac; scratch is a
// reusable buffer for msg, so string messages cost no allocation of their own.
func hmacSHA256[M string | []byte](key []byte, msg M, scratch *[]byte) [sha256.Size]byte {
	*scratch = append((*scratch)[:0], msg...)
	m := hmac.New(sha256.New, key)
	m.Write(*scratch)
	var out [sha256.Size]byte
	m.Sum(out[:0])
	return out
}

// decodeHex decodes exactly len(dst) bytes of hex (either case) from s.
func decodeHex(dst []byte, s string) bool {
	if len(s) != 2*len(dst) {
		return false
	}
	for i := range dst {
		hi, ok1 := fromHexChar(s[2*i])
		lo, ok2 := fromHexChar(s[2*i+1])
		if !ok1 || !ok2 {
			return false
		}
		dst[i] = hi<<4 | lo
	}
	return true
}

func fromHexChar(c byte) (byte, bool) {
	switch {
	case '0' <= c && c <= '9':
		return c - '0', true
	case 'a' <= c && c <= 'f':
		return c - 'a' + 10, true
	case 'A' <= c && c <= 'F':
		return c - 'A' + 10, true
	}
	return 0, false
}

func trimSpace(s string) string {
	for len(s) > 0 && isSpace(s[0]) {
		s = s[1:]
	}
	for len(s) > 0 && isSpace(s[len(s)-1]) {
		s = s[:len(s)-1]
	}
	return s
}

func isSpace(c byte) bool {
	return c == ' ' || c == '\t' || c == '\n' || c == '\r' || c == '\v' || c == '\f'
}

// clip bounds client input echoed in messages.
func clip(s string) string {
	if len(s) > maxEcho {
		return s[:maxEcho] + "..."
	}
	return s
}

func formatSkew(d time.Duration) string {
	if d%time.Minute == 0 {
		return strconv.FormatInt(int64(d/time.Minute), 10) + " min."
	}
	return d.String()
}

package service

import (
	"context"
	"crypto/sha256"
	"encoding/binary"
	"encoding/hex"
	"errors"
	"fmt"
	"log/slog"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/hsmkms/hsmkms/blob"
	"github.com/hsmkms/hsmkms/hsm"
	"github.com/hsmkms/hsmkms/service/policy"
	"github.com/hsmkms/hsmkms/service/store"
)

// Key usages, specs, states and algorithms used by this package.
const (
	UsageEncryptDecrypt = "ENCRYPT_DECRYPT"
	SpecSymmetric       = "SYMMETRIC_DEFAULT"
	AlgSymmetric        = "SYMMETRIC_DEFAULT"
	OriginAWSKMS        = "AWS_KMS"

	StateEnabled         = "Enabled"
	StateDisabled        = "Disabled"
	StatePendingDeletion = "PendingDeletion"
	StatePendingImport   = "PendingImport"
	StateUnavailable     = "Unavailable"
	StateCreating        = "Creating"
)

// Enumerations from the AWS model, for validation messages.
var (
	allKeySpecs = []string{"RSA_2048", "RSA_3072", "RSA_4096", "ECC_NIST_P256", "ECC_NIST_P384",
		"ECC_NIST_P521", "ECC_SECG_P256K1", "SYMMETRIC_DEFAULT", "HMAC_224", "HMAC_256", "HMAC_384",
		"HMAC_512", "SM2", "ML_DSA_44", "ML_DSA_65", "ML_DSA_87", "ECC_NIST_EDWARDS25519"}
	allKeyUsages = []string{"SIGN_VERIFY", "ENCRYPT_DECRYPT", "GENERATE_VERIFY_MAC", "KEY_AGREEMENT"}
	allOrigins   = []string{"AWS_KMS", "EXTERNAL", "AWS_CLOUDHSM", "EXTERNAL_KEY_STORE"}
	allEncAlgs   = []string{"SYMMETRIC_DEFAULT", "RSAES_OAEP_SHA_1", "RSAES_OAEP_SHA_256", "SM2PKE"}
	dataKeySpecs = []string{"AES_256", "AES_128"}
)

// Caller is the authenticated principal a request runs as.
type Caller struct {
	Account     string // 12-digit account id
	ARN         string // principal ARN, e.g. arn:aws:iam::111122223333:root
	AccessKeyID string
	// Identity holds the principal's IAM identity policies, which a key
	// policy naming the principal's account delegates to.
	Identity []*policy.Policy
	// SourceIP and SecureTransport describe the connection (aws:SourceIp,
	// aws:SecureTransport).
	SourceIP        string
	SecureTransport bool
}

// Config is what New needs, as Go values; cmd/hsmkms builds it from flags,
// environment and files.
type Config struct {
	Token  *hsm.Token
	Store  store.Store
	Region string
	// Partition is the ARN partition (default "aws").
	Partition string
	// Now is the clock (default time.Now); tests inject their own.
	Now func() time.Time
	// Limits are the resource quotas (zero fields: AWS's defaults).
	Limits Limits
	// TestHook, if set, is called at each phase of a key deletion (Phase*
	// constants) with the key id. Crash tests stop the process there.
	TestHook func(phase, keyID string)
	// Logger receives what the service reports on its own from the request
	// path: a key version past half its AES-GCM limit (default: discard).
	Logger *slog.Logger
	// GCMReserveBlock is how many AES-GCM encryptions of a key version are
	// reserved in the store at a time (default DefaultGCMReserveBlock;
	// tests make it small).
	GCMReserveBlock uint64
}

// Service runs KMS operations. It is safe for concurrent use.
type Service struct {
	token *hsm.Token
	store store.Store
	// leader elects the node that runs the scheduled work, when the store
	// is shared by several (nil: this node always leads).
	leader    store.Leader
	region    string
	partition string
	now       func() time.Time
	limits    Limits
	// storeReady caches the store's readiness check (Ready).
	storeReady cachedCheck

	// keys caches per-key values derived from store records (ARN, raw id,
	// material ids) so the hot path neither reads the disk nor formats
	// strings. Every write through this package refreshes the entry.
	keys sync.Map // key id -> *key

	markers  markers
	gcm      *gcmBudget           // AES-GCM encryptions per key version (gcmbudget.go)
	events   ServiceEventRecorder // nil: background changes are not recorded
	testHook func(phase, keyID string)
	rotateMu sync.Mutex // one rotation at a time picks the next version
}

// New returns a Service over a logged-in token and an open store.
func New(cfg Config) (*Service, error) {
	if cfg.Token == nil || cfg.Store == nil {
		return nil, errors.New("service: token and store are required")
	}
	if cfg.Region == "" {
		return nil, errors.New("service: region is required")
	}
	if cfg.Partition == "" {
		cfg.Partition = "aws"
	}
	if cfg.Now == nil {
		cfg.Now = time.Now
	}
	limits, err := cfg.Limits.resolve()
	if err != nil {
		return nil, err
	}
	s := &Service{token: cfg.Token, region: cfg.Region, partition: cfg.Partition, now: cfg.Now,
		testHook: cfg.TestHook, limits: limits}
	s.store = gatedStore{inner: cfg.Store, arn: s.keyARN}
	s.leader, _ = cfg.Store.(store.Leader)
	if cfg.Logger == nil {
		cfg.Logger = slog.New(slog.DiscardHandler)
	}
	if s.gcm, err = newGCMBudget(context.Background(), s.store, cfg.GCMReserveBlock, cfg.Logger); err != nil {
		return nil, fmt.Errorf("service: %w", err)
	}
	if s.markers, err = initMarkers(context.Background(), cfg.Token, cfg.Store); err != nil {
		return nil, fmt.Errorf("service: %w", err)
	}
	return s, nil
}

// Region returns the region the service answers for.
func (s *Service) Region() string { return s.region }

// Ready reports whether the token works, its storage included (for /readyz).
// The answer is cached for a couple of seconds; a failed check also drives
// the token's recovery.
func (s *Service) Ready(ctx context.Context) error {
	if err := s.token.Ready(ctx, readinessRef); err != nil {
		return err
	}
	return s.storeReady.check(ctx, s.store.Writable)
}

// key is a store record with the values the request path derives from it.
type key struct {
	rec         store.Key
	raw         [16]byte
	arn         string
	materialIDs map[uint32]string
	pub         atomic.Pointer[publicKey] // asymmetric keys: read from the token on first use
	pol         *policy.Policy            // the key policy, parsed
	gcm         *gcmCounter               // symmetric keys: the current version's encryptions
}

func (s *Service) keyARN(account, id string) string {
	return "arn:" + s.partition + ":kms:" + s.region + ":" + account + ":key/" + id
}

func (s *Service) newKey(rec store.Key) (*key, error) {
	raw, err := blob.ParseKeyID(rec.ID)
	if err != nil {
		return nil, fmt.Errorf("key record with malformed id %q: %w", rec.ID, err)
	}
	k := &key{rec: rec, raw: raw, arn: s.keyARN(rec.Account, rec.ID), materialIDs: make(map[uint32]string, len(rec.Versions)),
		pol: s.parseKeyPolicy(rec.Policy, rec.Account)}
	for _, v := range rec.Versions {
		k.materialIDs[v.Number] = materialID(raw, v.Number)
	}
	if k.symmetric() {
		k.gcm = s.gcm.counter(rec.ID, rec.Current().Number)
	}
	return k, nil
}

// materialID is the KeyMaterialId AWS reports (64 hex digits): here a hash of
// the key id and version, stable and revealing nothing about the material.
func materialID(raw [16]byte, version uint32) string {
	h := sha256.New()
	h.Write([]byte("hsmkms key material id\x00"))
	h.Write(raw[:])
	binary.Write(h, binary.BigEndian, version)
	return hex.EncodeToString(h.Sum(nil))
}

func (k *key) ref(version uint32) hsm.KeyRef { return hsm.KeyRef{KeyID: k.raw, Version: version} }

// cached returns the key with that id. The store's in-memory record is the
// truth; the derived values cached here are used only while they were built
// from the record's current revision, so a concurrent update can never leave
// a stale key in use (and a deleted key is never served).
func (s *Service) cached(ctx context.Context, id string) (*key, error) {
	rec, err := s.store.GetKey(ctx, id)
	if err != nil {
		if errors.Is(err, store.ErrNotFound) {
			s.keys.Delete(id)
		}
		return nil, err
	}
	return s.remember(rec)
}

// remember returns the derived values of rec, building them only when the
// cache holds none for this revision.
func (s *Service) remember(rec store.Key) (*key, error) {
	if v, ok := s.keys.Load(rec.ID); ok && v.(*key).rec.Revision == rec.Revision {
		return v.(*key), nil
	}
	k, err := s.newKey(rec)
	if err != nil {
		return nil, internal(err)
	}
	s.keys.Store(rec.ID, k)
	return k, nil
}

// keyIDForms says which KeyId forms an operation accepts.
type keyIDForms int

const (
	idOrARN      keyIDForms = iota // management operations: key id or key ARN
	idARNOrAlias                   // cryptographic operations and DescribeKey
)

// resolve finds the key a KeyId parameter names and authorizes action on it
// for caller (with the request's condition keys c, which may be nil).
func (s *Service) resolve(ctx context.Context, caller Caller, field, keyID string, forms keyIDForms, action string, c conditions) (*key, error) {
	k, err := s.lookup(ctx, caller, field, keyID, forms, action)
	if err != nil {
		return nil, err
	}
	if err := s.authorize(ctx, caller, k, action, keyID, c); err != nil {
		return nil, err
	}
	return k, nil
}

// lookup finds the key a KeyId parameter names, without authorizing
// anything: a key of another account is returned when named by ARN. Every
// caller must authorize the result (resolve does), for action.
//
// A key or alias of another account that does not exist is refused as one
// that exists but the caller may not use: AccessDeniedException naming the
// ARN the caller gave, so that no one learns from the answer what another
// account holds. (In the caller's own account the answer is NotFound, as in
// AWS.)
func (s *Service) lookup(ctx context.Context, caller Caller, field, keyID string, forms keyIDForms, action string) (*key, error) {
	if keyID == "" {
		return nil, Errorf(ExcValidation, "1 validation error detected: Value null at '%s' failed to satisfy constraint: Member must not be null", field)
	}
	if len(keyID) > 2048 {
		var v validation
		v.add(nil, field, "Member must have length less than or equal to 2048")
		return nil, v.err()
	}
	account, id := caller.Account, keyID
	if strings.HasPrefix(keyID, "arn:") {
		partition, service, region, acct, resource, ok := splitARN(keyID)
		if !ok || service != "kms" || partition == "" {
			return nil, Errorf(ExcNotFound, "Invalid arn %s", keyID)
		}
		if region != s.region || partition != s.partition {
			// AWS's answer for a key ARN of another region (recorded).
			return nil, Errorf(ExcNotFound, "Invalid arn %s", region)
		}
		switch {
		case strings.HasPrefix(resource, "alias/") && forms == idARNOrAlias:
			k, err := s.resolveAlias(ctx, caller, acct, resource, keyID)
			if err != nil && acct != caller.Account && isNotFound(err) {
				return nil, accessDenied(caller, action, s.aliasARN(acct, resource))
			}
			return k, err
		case strings.HasPrefix(resource, "key/"):
			id = strings.TrimPrefix(resource, "key/")
		default:
			return nil, Errorf(ExcNotFound, "Invalid keyId '%s'", keyID)
		}
		account = acct
	} else if strings.HasPrefix(keyID, "alias/") {
		if forms != idARNOrAlias {
			return nil, Errorf(ExcNotFound, "Invalid keyId '%s'", keyID)
		}
		return s.resolveAlias(ctx, caller, caller.Account, keyID, keyID)
	}
	if _, err := blob.ParseKeyID(id); err != nil {
		if isMRKID(id) {
			return nil, s.keyNotFound(caller, action, account, id)
		}
		return nil, Errorf(ExcNotFound, "Invalid keyId '%s'", keyID)
	}
	k, err := s.cached(ctx, id)
	if errors.Is(err, store.ErrNotFound) || (err == nil && k.rec.Account != account) {
		return nil, s.keyNotFound(caller, action, account, id)
	}
	if err != nil {
		return nil, AsError(err)
	}
	return k, nil
}

// keyNotFound is the answer for a key id of account that names no key:
// NotFound in the caller's account, AccessDenied in another (see lookup).
func (s *Service) keyNotFound(caller Caller, action, account, id string) *Error {
	if account != caller.Account {
		return accessDenied(caller, action, s.keyARN(account, id))
	}
	return Errorf(ExcNotFound, "Key '%s' does not exist", s.keyARN(account, id))
}

func isNotFound(err error) bool {
	var e *Error
	return errors.As(err, &e) && e.Code == ExcNotFound
}

func (s *Service) aliasARN(account, name string) string {
	return "arn:" + s.partition + ":kms:" + s.region + ":" + account + ":" + name
}

// resolveAlias finds the key an alias of account names; from memory.
func (s *Service) resolveAlias(ctx context.Context, caller Caller, account, name, asGiven string) (*key, error) {
	a, err := s.store.GetAlias(ctx, account, name)
	if errors.Is(err, store.ErrNotFound) {
		return nil, Errorf(ExcNotFound, "Alias %s is not found.", s.aliasARN(account, name))
	}
	if err != nil {
		return nil, internal(err)
	}
	k, err := s.cached(ctx, a.TargetKeyID)
	if err != nil {
		return nil, internal(fmt.Errorf("alias %s names missing key %s: %w", asGiven, a.TargetKeyID, err))
	}
	return k, nil
}

// splitARN splits arn:PARTITION:SERVICE:REGION:ACCOUNT:RESOURCE without
// allocating (it runs on the request path for every ARN KeyId).
func splitARN(arn string) (partition, service, region, account, resource string, ok bool) {
	rest, ok := strings.CutPrefix(arn, "arn:")
	if !ok {
		return
	}
	fields := [4]*string{&partition, &service, &region, &account}
	for _, f := range fields {
		if *f, rest, ok = strings.Cut(rest, ":"); !ok {
			return
		}
	}
	return partition, service, region, account, rest, true
}

func isMRKID(id string) bool {
	if !strings.HasPrefix(id, "mrk-") || len(id) != 36 {
		return false
	}
	for _, c := range id[4:] {
		if !(c >= '0' && c <= '9' || c >= 'a' && c <= 'f') {
			return false
		}
	}
	return true
}

func accessDenied(caller Caller, action, resource string) *Error {
	if action == "" {
		return Errorf(ExcAccessDenied, "User: %s is not authorized to access %s", caller.ARN, resource)
	}
	return Errorf(ExcAccessDenied, "User: %s is not authorized to perform: %s on resource: %s", caller.ARN, action, resource)
}

// usable checks the key-state rules of the cryptographic operations.
func usable(k *key) error { return stateAllowsUse(k.arn, k.rec.State) }

// stateAllowsUse is the rule shared by the operations that use a key
// (cryptographic operations, rotation): Enabled only; Disabled is
// DisabledException; any other state is KMSInvalidStateException naming it.
func stateAllowsUse(arn, state string) error {
	switch state {
	case StateEnabled:
		return nil
	case StateDisabled:
		return Errorf(ExcDisabled, "%s is disabled.", arn)
	case StatePendingDeletion:
		return Errorf(ExcInvalidState, "%s is pending deletion.", arn)
	case StatePendingImport:
		return Errorf(ExcInvalidState, "%s is pending import.", arn)
	case StateUnavailable:
		return Errorf(ExcInvalidState, "%s is unavailable.", arn)
	case StateCreating:
		return Errorf(ExcInvalidState, "%s is creating.", arn)
	}
	return internal(fmt.Errorf("key %s in unknown state %q", arn, state))
}

// pageStart opens a marker of a listing paged by position (kind names the
// listing and its key, so markers of one cannot be used for another).
func (s *Service) pageStart(ctx context.Context, kind string, marker *string) (int, error) {
	if marker == nil {
		return 0, nil
	}
	pos, err := s.openMarker(ctx, kind, *marker)
	if err != nil {
		return 0, err
	}
	start, err := strconv.Atoi(pos)
	if err != nil || start < 0 {
		return 0, Errorf(ExcInvalidMarker, "Invalid marker")
	}
	return start, nil
}

// forEncryption checks that k can run op (Encrypt, Decrypt, …) with alg
// (nil: SYMMETRIC_DEFAULT).
func forEncryption(k *key, op string, alg *string) error {
	if k.rec.KeyUsage != UsageEncryptDecrypt {
		return Errorf(ExcInvalidKeyUsage, "%s key usage is %s which is not valid for %s.", k.arn, k.rec.KeyUsage, op)
	}
	a := AlgSymmetric
	if alg != nil {
		a = *alg
	}
	if !contains(k.spec().enc, a) {
		return Errorf(ExcInvalidKeyUsage, "Algorithm %s is incompatible with key spec %s.", a, k.rec.KeySpec)
	}
	return nil
}

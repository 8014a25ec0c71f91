package policy

import "strings"

// Context holds a request's condition keys (lower-cased names) and their
// values; multi-valued keys (kms:EncryptionContextKeys, aws:TagKeys, …) have
// several. A key that is present with no values is an empty set.
type Context map[string][]string

// Set records key's values (the name is case-insensitive).
func (c Context) Set(key string, values ...string) { c[strings.ToLower(key)] = values }

// Get returns key's values and whether the key is present.
func (c Context) Get(key string) ([]string, bool) {
	v, ok := c[strings.ToLower(key)]
	return v, ok
}

// Request is what is being asked: who, which action, on which key, in which
// circumstances.
type Request struct {
	// Principal is the caller's ARN: arn:aws:iam::ACCOUNT:root, a user or
	// role ARN, or an assumed-role session ARN.
	Principal string
	// Account is the caller's account id.
	Account string
	// Action is the permission, e.g. "kms:Encrypt".
	Action string
	// Resource is the key ARN.
	Resource string
	// Context holds the condition keys. Evaluate adds aws:PrincipalArn,
	// aws:PrincipalAccount and kms:CallerAccount when they are missing.
	Context Context
}

// Decision is the outcome of an evaluation.
type Decision int

const (
	// ImplicitDeny: nothing allows the request.
	ImplicitDeny Decision = iota
	// Allow: a key policy statement allows it (directly, or by delegating to
	// an identity policy that allows it too), and nothing denies it.
	Allow
	// ExplicitDeny: a statement denies it; nothing else matters.
	ExplicitDeny
)

func (d Decision) String() string {
	switch d {
	case Allow:
		return "Allow"
	case ExplicitDeny:
		return "ExplicitDeny"
	}
	return "ImplicitDeny"
}

// principalMatch is how a statement's Principal covers the caller.
type principalMatch int

const (
	noMatch   principalMatch = iota
	direct                   // "*", or the caller's own ARN
	delegated                // the caller's account: its identity policies decide
)

// Evaluate decides r against a key policy and the caller's identity
// policies, with IAM's rules:
//
//  1. An explicit Deny in either wins.
//  2. A key policy statement that allows the caller by name (or "*") allows,
//     unless the caller is of another account than the key: cross-account
//     use needs the caller's identity policy to allow too.
//  3. A key policy statement that allows the caller's account delegates: the
//     account's root is allowed, any other principal only if one of its
//     identity policies allows the action on the key.
//  4. Otherwise the request is implicitly denied.
func Evaluate(key *Policy, identity []*Policy, r *Request) Decision {
	if anyConditions(key, identity) {
		r = withCallerKeys(r, key, identity)
	}
	for _, s := range key.Statements {
		if !s.Allow && s.principal(r) != noMatch && s.applies(r) {
			return ExplicitDeny
		}
	}
	identityAllows := false
	for _, p := range identity {
		for _, s := range p.Statements {
			if !s.applies(r) {
				continue
			}
			if !s.Allow {
				return ExplicitDeny
			}
			identityAllows = true
		}
	}
	root := isRoot(r.Principal, r.Account)
	crossAccount := resourceAccount(r.Resource) != r.Account
	for _, s := range key.Statements {
		if !s.Allow || !s.applies(r) {
			continue
		}
		switch s.principal(r) {
		case direct:
			if !crossAccount || root || identityAllows {
				return Allow
			}
		case delegated:
			if root || identityAllows {
				return Allow
			}
		}
	}
	return ImplicitDeny
}

// anyConditions reports whether the key policy or an identity policy reads
// condition key name ("": any).
func anyConditions(key *Policy, identity []*Policy, name ...string) bool {
	n := ""
	if len(name) > 0 {
		n = name[0]
	}
	if key.Uses(n) {
		return true
	}
	for _, p := range identity {
		if p.Uses(n) {
			return true
		}
	}
	return false
}

// withCallerKeys returns r with aws:PrincipalArn, aws:PrincipalAccount and
// kms:CallerAccount in its context, copying the context (never writing the
// caller's map) only when one that a policy reads is missing.
// EvaluateIdentity decides r by the caller's identity policies alone, for
// actions that no key policy governs (CreateKey, ListKeys, ListAliases,
// GenerateRandom): an account's root may do them, any other principal needs
// an identity policy that allows and none that denies.
func EvaluateIdentity(identity []*Policy, r *Request) Decision {
	if anyConditions(nil, identity) {
		r = withCallerKeys(r, nil, identity)
	}
	allowed := isRoot(r.Principal, r.Account)
	for _, p := range identity {
		for _, s := range p.Statements {
			if !s.applies(r) {
				continue
			}
			if !s.Allow {
				return ExplicitDeny
			}
			allowed = true
		}
	}
	if allowed {
		return Allow
	}
	return ImplicitDeny
}

func withCallerKeys(r *Request, key *Policy, identity []*Policy) *Request {
	want := [...][2]string{{"aws:principalarn", r.Principal}, {"aws:principalaccount", r.Account}, {"kms:calleraccount", r.Account}}
	missing := false
	for _, kv := range want {
		if _, ok := r.Context[kv[0]]; !ok && anyConditions(key, identity, kv[0]) {
			missing = true
		}
	}
	if !missing {
		return r
	}
	ctx := make(Context, len(r.Context)+len(want))
	for k, v := range r.Context {
		ctx[k] = v
	}
	for _, kv := range want {
		if _, ok := ctx[kv[0]]; !ok {
			ctx[kv[0]] = []string{kv[1]}
		}
	}
	rq := *r
	rq.Context = ctx
	return &rq
}

// isRoot reports the account's root principal, arn:PARTITION:iam::ACCOUNT:root.
func isRoot(principal, account string) bool {
	return rootAccount(principal) == account && account != ""
}

// rootAccount is the account of a root principal ARN, or "".
func rootAccount(arn string) string {
	p, ok := strings.CutSuffix(arn, ":root")
	if !ok || !strings.HasPrefix(p, "arn:") {
		return ""
	}
	i := strings.LastIndexByte(p, ':')
	if i < 0 || !strings.HasSuffix(p[:i], ":iam:") {
		return ""
	}
	return p[i+1:]
}

// resourceAccount is the account field of an ARN (its fifth field).
func resourceAccount(arn string) string {
	rest := arn
	for range 4 {
		_, after, ok := strings.Cut(rest, ":")
		if !ok {
			return ""
		}
		rest = after
	}
	account, _, _ := strings.Cut(rest, ":")
	return account
}

// applies reports whether the statement covers r's action, resource and
// conditions (its principal is checked separately).
func (s *Statement) applies(r *Request) bool {
	return s.coversAction(r.Action) && s.coversResource(r.Resource) && s.conditionsHold(r.Context)
}

func (s *Statement) coversAction(action string) bool {
	for _, a := range s.Actions {
		if glob(a, action, true) {
			return !s.NotAction
		}
	}
	return s.NotAction
}

func (s *Statement) coversResource(resource string) bool {
	if !s.HasResource {
		return false
	}
	for _, p := range s.Resources {
		if p == "*" || glob(p, resource, false) {
			return !s.NotResource
		}
	}
	return s.NotResource
}

func (s *Statement) conditionsHold(ctx Context) bool {
	for i := range s.Conditions {
		if !s.Conditions[i].eval(ctx, s.Allow) {
			return false
		}
	}
	return true
}

// principal says how the statement's Principal (or NotPrincipal) covers the
// caller. NotPrincipal covers every caller it does not name itself: an
// account's root ARN there excepts the root, not the account's other
// principals (AWS's "deny all but Bob" example lists Bob and his account).
func (s *Statement) principal(r *Request) principalMatch {
	m := s.Principals.match(r)
	if s.NotPrincipal {
		if m == direct {
			return noMatch
		}
		return direct
	}
	return m
}

func (p principals) match(r *Request) principalMatch {
	if p.any {
		return direct
	}
	best := noMatch
	for _, a := range p.aws {
		switch {
		case a == r.Principal || a == RoleOf(r.Principal):
			return direct
		case rootAccount(a) == r.Account:
			if isRoot(r.Principal, r.Account) {
				return direct
			}
			best = delegated
		}
	}
	return best
}

// RoleOf maps an assumed-role session ARN
// (arn:aws:sts::ACCOUNT:assumed-role/ROLE/SESSION) to its role's ARN, which
// is what policies name; any other ARN maps to "".
func RoleOf(principal string) string {
	rest, ok := strings.CutPrefix(principal, "arn:")
	if !ok || !strings.Contains(rest, ":sts::") {
		return ""
	}
	f := strings.SplitN(rest, ":", 5)
	if len(f) != 5 || f[1] != "sts" {
		return ""
	}
	role, ok := strings.CutPrefix(f[4], "assumed-role/")
	if !ok {
		return ""
	}
	name, _, ok := strings.Cut(role, "/")
	if !ok {
		return ""
	}
	return "arn:" + f[0] + ":iam::" + f[3] + ":role/" + name
}

// Package policy parses and evaluates AWS KMS key policies and IAM identity
// policies, following IAM's evaluation rules: an explicit Deny wins; an Allow
// comes from the key policy, either naming the principal or naming its
// account, which delegates to the account's identity policies.
//
// It is pure Go with no I/O: service builds the Request (principal, action,
// key ARN, condition keys) and calls Evaluate.
package policy

import (
	"bytes"
	"encoding/json"
	"fmt"
	"regexp"
	"strconv"
	"strings"
)

// Kind says which grammar a document follows: key policies name principals,
// identity policies must not.
type Kind int

const (
	KeyPolicy Kind = iota
	IdentityPolicy
)

// Policy is a parsed policy document.
type Policy struct {
	Version    string
	ID         string
	Statements []Statement
	// keys are the condition keys its conditions read (lower-cased).
	keys map[string]bool
}

// Uses reports whether any condition of the policy reads key, so callers can
// skip computing costly condition keys no policy asks for.
// Uses("") reports whether the policy has any condition.
func (p *Policy) Uses(key string) bool {
	if p == nil {
		return false
	}
	if key == "" {
		return len(p.keys) > 0
	}
	return p.keys[strings.ToLower(key)]
}

// Statement is one statement of a policy.
type Statement struct {
	Sid   string
	Allow bool // Effect: Allow (true) or Deny
	// Principals (or, with NotPrincipal, the principals excluded). Only key
	// policies have them.
	Principals   principals
	NotPrincipal bool
	Actions      []string // lower-cased patterns
	NotAction    bool
	Resources    []string
	NotResource  bool
	HasResource  bool // a statement without Resource matches nothing
	Conditions   []condition
}

// principals is a Principal element: "*" or a list of AWS principals.
type principals struct {
	any bool
	aws []string // account ids, root ARNs, user/role ARNs
}

// Error is a malformed policy, with a message fit for
// MalformedPolicyDocumentException.
type Error struct{ Message string }

func (e *Error) Error() string { return e.Message }

func malformed(format string, args ...any) *Error {
	return &Error{Message: fmt.Sprintf(format, args...)}
}

// Parse parses a policy document of kind. Every grammar error is an *Error
// that says what is wrong and where.
func Parse(doc []byte, kind Kind) (*Policy, error) {
	if err := noDuplicateKeys(doc); err != nil {
		return nil, err
	}
	dec := json.NewDecoder(bytes.NewReader(doc))
	dec.UseNumber()
	var raw map[string]any
	if err := dec.Decode(&raw); err != nil {
		return nil, malformed("The policy is not a valid JSON object.")
	}
	if dec.More() {
		return nil, malformed("The policy has content after its JSON object.")
	}
	p := &Policy{}
	for k, v := range raw {
		switch k {
		case "Version":
			s, ok := v.(string)
			if !ok || (s != "2012-10-17" && s != "2008-10-17") {
				return nil, malformed("Version must be \"2012-10-17\" or \"2008-10-17\".")
			}
			p.Version = s
		case "Id":
			s, ok := v.(string)
			if !ok {
				return nil, malformed("Id must be a string.")
			}
			p.ID = s
		case "Statement":
		default:
			return nil, malformed("Unknown policy element %q.", k)
		}
	}
	var stmts []any
	switch st := raw["Statement"].(type) {
	case nil:
		return nil, malformed("The policy has no Statement.")
	case []any:
		stmts = st
	case map[string]any:
		stmts = []any{st}
	default:
		return nil, malformed("Statement must be an object or a list of objects.")
	}
	if len(stmts) == 0 {
		return nil, malformed("The policy has no Statement.")
	}
	for i, s := range stmts {
		obj, ok := s.(map[string]any)
		if !ok {
			return nil, malformed("Statement %d is not an object.", i+1)
		}
		st, err := parseStatement(obj, kind)
		if err != nil {
			return nil, malformed("Statement %d%s: %s", i+1, sidOf(obj), err.Message)
		}
		p.Statements = append(p.Statements, st)
		for _, c := range st.Conditions {
			if p.keys == nil {
				p.keys = map[string]bool{}
			}
			p.keys[c.key] = true
		}
	}
	return p, nil
}

// noDuplicateKeys refuses a document in which an object names a key twice
// (encoding/json would silently keep the last), as IAM does.
func noDuplicateKeys(doc []byte) error {
	dec := json.NewDecoder(bytes.NewReader(doc))
	type frame struct {
		object bool
		seen   map[string]bool
		key    bool // the next token of this object is a key
	}
	var stack []*frame
	for {
		tok, err := dec.Token()
		if err != nil {
			return nil // not JSON: Parse reports it
		}
		if len(stack) > 0 {
			top := stack[len(stack)-1]
			if top.object && top.key {
				if k, ok := tok.(string); ok {
					if top.seen[k] {
						return malformed("The policy names %q twice in one object.", k)
					}
					top.seen[k] = true
					top.key = false
					continue
				}
			} else if top.object {
				top.key = true // this token is the value
			}
		}
		switch tok {
		case json.Delim('{'):
			stack = append(stack, &frame{object: true, seen: map[string]bool{}, key: true})
		case json.Delim('['):
			stack = append(stack, &frame{})
		case json.Delim('}'), json.Delim(']'):
			stack = stack[:len(stack)-1]
			if len(stack) == 0 {
				return nil
			}
		}
	}
}

func sidOf(obj map[string]any) string {
	if s, ok := obj["Sid"].(string); ok && s != "" {
		return fmt.Sprintf(" (Sid %q)", s)
	}
	return ""
}

func parseStatement(obj map[string]any, kind Kind) (Statement, *Error) {
	var st Statement
	for k := range obj {
		switch k {
		case "Sid", "Effect", "Principal", "NotPrincipal", "Action", "NotAction", "Resource", "NotResource", "Condition":
		default:
			return st, malformed("unknown element %q.", k)
		}
	}
	if sid, ok := obj["Sid"]; ok {
		s, isStr := sid.(string)
		if !isStr {
			return st, malformed("Sid must be a string.")
		}
		st.Sid = s
	}
	switch obj["Effect"] {
	case "Allow":
		st.Allow = true
	case "Deny":
	case nil:
		return st, malformed("Effect is missing.")
	default:
		return st, malformed("Effect must be \"Allow\" or \"Deny\".")
	}

	pr, hasP := obj["Principal"]
	npr, hasNP := obj["NotPrincipal"]
	switch {
	case hasP && hasNP:
		return st, malformed("Principal and NotPrincipal cannot both be present.")
	case kind == IdentityPolicy && (hasP || hasNP):
		return st, malformed("an identity policy cannot have a Principal or NotPrincipal.")
	case kind == KeyPolicy && !hasP && !hasNP:
		return st, malformed("Principal is missing.")
	case hasNP && st.Allow:
		return st, malformed("NotPrincipal can only be used with Effect Deny.")
	}
	if hasP || hasNP {
		if hasNP {
			pr, st.NotPrincipal = npr, true
		}
		var err *Error
		if st.Principals, err = parsePrincipals(pr); err != nil {
			return st, err
		}
	}

	act, hasA := obj["Action"]
	nact, hasNA := obj["NotAction"]
	switch {
	case hasA && hasNA:
		return st, malformed("Action and NotAction cannot both be present.")
	case !hasA && !hasNA:
		return st, malformed("Action or NotAction is required.")
	case hasNA:
		act, st.NotAction = nact, true
	}
	acts, err := stringList(act, "Action")
	if err != nil {
		return st, err
	}
	for _, a := range acts {
		if a != "*" && !actionPattern.MatchString(a) {
			return st, malformed("invalid action %q: actions are \"service:Name\", with * and ? wildcards.", a)
		}
		st.Actions = append(st.Actions, strings.ToLower(a))
	}

	res, hasR := obj["Resource"]
	nres, hasNR := obj["NotResource"]
	switch {
	case hasR && hasNR:
		return st, malformed("Resource and NotResource cannot both be present.")
	case hasNR:
		res, st.NotResource = nres, true
	}
	if hasR || hasNR {
		st.HasResource = true
		if st.Resources, err = stringList(res, "Resource"); err != nil {
			return st, err
		}
		for _, r := range st.Resources {
			if r != "*" && !strings.HasPrefix(r, "arn:") {
				return st, malformed("invalid resource %q: resources are \"*\" or ARNs.", r)
			}
		}
	}

	if c, ok := obj["Condition"]; ok {
		if st.Conditions, err = parseConditions(c); err != nil {
			return st, err
		}
	}
	return st, nil
}

var (
	actionPattern    = regexp.MustCompile(`^[a-zA-Z0-9-]+:[a-zA-Z0-9*?]+$`)
	accountPattern   = regexp.MustCompile(`^[0-9]{12}$`)
	principalPattern = regexp.MustCompile(`^arn:[a-z-]+:(iam::[0-9]{12}:(root|user/[\w+=,.@/-]+|role/[\w+=,.@/-]+)|sts::[0-9]{12}:assumed-role/[\w+=,.@-]+/[\w+=,.@-]+)$`)
)

// IsPrincipalARN reports an AWS principal ARN policies can name: an
// account's root, a user, a role or an assumed-role session.
func IsPrincipalARN(s string) bool { return principalPattern.MatchString(s) }

func parsePrincipals(v any) (principals, *Error) {
	if s, ok := v.(string); ok {
		if s == "*" {
			return principals{any: true}, nil
		}
		return principals{}, malformed("Principal must be \"*\" or an object such as {\"AWS\": \"arn:aws:iam::111122223333:root\"}.")
	}
	obj, ok := v.(map[string]any)
	if !ok || len(obj) == 0 {
		return principals{}, malformed("Principal must be \"*\" or an object such as {\"AWS\": \"arn:aws:iam::111122223333:root\"}.")
	}
	var p principals
	for k, val := range obj {
		list, err := stringList(val, "Principal."+k)
		if err != nil {
			return p, err
		}
		switch k {
		case "AWS":
			for _, a := range list {
				switch {
				case a == "*":
					p.any = true
				case accountPattern.MatchString(a):
					p.aws = append(p.aws, "arn:aws:iam::"+a+":root")
				case IsPrincipalARN(a):
					p.aws = append(p.aws, a)
				default:
					return p, malformed("Policy contains a statement with one or more invalid principals: %q.", a)
				}
			}
		case "Service", "Federated", "CanonicalUser":
			// Valid grammar, but no such principal ever calls hsmkms: the
			// statement matches nobody through this entry.
		default:
			return p, malformed("Policy contains a statement with one or more invalid principals: unknown principal type %q.", k)
		}
	}
	return p, nil
}

// stringList reads a string or a non-empty list of strings.
func stringList(v any, field string) ([]string, *Error) {
	switch x := v.(type) {
	case string:
		return []string{x}, nil
	case []any:
		if len(x) == 0 {
			return nil, malformed("%s must not be empty.", field)
		}
		out := make([]string, 0, len(x))
		for _, e := range x {
			s, ok := e.(string)
			if !ok {
				return nil, malformed("%s must hold strings.", field)
			}
			out = append(out, s)
		}
		return out, nil
	}
	return nil, malformed("%s must be a string or a list of strings.", field)
}

// conditionValues reads a condition's values: a scalar or a list of them;
// booleans and numbers become their JSON text.
func conditionValues(v any) ([]string, bool) {
	scalar := func(e any) (string, bool) {
		switch x := e.(type) {
		case string:
			return x, true
		case bool:
			return strconv.FormatBool(x), true
		case json.Number:
			return x.String(), true
		}
		return "", false
	}
	if list, ok := v.([]any); ok {
		out := make([]string, 0, len(list))
		for _, e := range list {
			s, ok := scalar(e)
			if !ok {
				return nil, false
			}
			out = append(out, s)
		}
		return out, true
	}
	s, ok := scalar(v)
	return []string{s}, ok
}

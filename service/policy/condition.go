package policy

import (
	"encoding/base64"
	"net/netip"
	"sort"
	"strconv"
	"strings"
	"time"
	"unicode/utf8"
)

// setQualifier is a condition operator's ForAnyValue:/ForAllValues: prefix.
type setQualifier int

const (
	single setQualifier = iota
	forAnyValue
	forAllValues
)

// operator is a base condition operator: how one request value is compared
// with one policy value, and whether the operator is a negation (a request
// value satisfies it when it matches none of the policy values).
type operator struct {
	match   func(request, policy string) bool
	negated bool
}

var operators = map[string]operator{
	"StringEquals":              {match: func(r, p string) bool { return r == p }},
	"StringNotEquals":           {match: func(r, p string) bool { return r == p }, negated: true},
	"StringEqualsIgnoreCase":    {match: strings.EqualFold},
	"StringNotEqualsIgnoreCase": {match: strings.EqualFold, negated: true},
	"StringLike":                {match: func(r, p string) bool { return glob(p, r, false) }},
	"StringNotLike":             {match: func(r, p string) bool { return glob(p, r, false) }, negated: true},
	"NumericEquals":             {match: numeric(func(c int) bool { return c == 0 })},
	"NumericNotEquals":          {match: numeric(func(c int) bool { return c == 0 }), negated: true},
	"NumericLessThan":           {match: numeric(func(c int) bool { return c < 0 })},
	"NumericLessThanEquals":     {match: numeric(func(c int) bool { return c <= 0 })},
	"NumericGreaterThan":        {match: numeric(func(c int) bool { return c > 0 })},
	"NumericGreaterThanEquals":  {match: numeric(func(c int) bool { return c >= 0 })},
	"DateEquals":                {match: date(func(c int) bool { return c == 0 })},
	"DateNotEquals":             {match: date(func(c int) bool { return c == 0 }), negated: true},
	"DateLessThan":              {match: date(func(c int) bool { return c < 0 })},
	"DateLessThanEquals":        {match: date(func(c int) bool { return c <= 0 })},
	"DateGreaterThan":           {match: date(func(c int) bool { return c > 0 })},
	"DateGreaterThanEquals":     {match: date(func(c int) bool { return c >= 0 })},
	"Bool":                      {match: strings.EqualFold},
	"BinaryEquals":              {match: binaryEquals},
	"IpAddress":                 {match: ipInRange},
	"NotIpAddress":              {match: ipInRange, negated: true},
	"ArnEquals":                 {match: func(r, p string) bool { return glob(p, r, false) }},
	"ArnLike":                   {match: func(r, p string) bool { return glob(p, r, false) }},
	"ArnNotEquals":              {match: func(r, p string) bool { return glob(p, r, false) }, negated: true},
	"ArnNotLike":                {match: func(r, p string) bool { return glob(p, r, false) }, negated: true},
}

// condition is one (operator, key, values) triple of a Condition block.
type condition struct {
	op       operator
	null     bool // the Null operator: values say whether the key is absent
	set      setQualifier
	ifExists bool
	key      string // lower-cased: condition key names are case-insensitive
	values   []string
}

func parseConditions(v any) ([]condition, *Error) {
	block, ok := v.(map[string]any)
	if !ok {
		return nil, malformed("Condition must be an object of operators.")
	}
	names := make([]string, 0, len(block))
	for name := range block {
		names = append(names, name)
	}
	sort.Strings(names) // deterministic error messages
	var out []condition
	for _, name := range names {
		c := condition{}
		base := name
		switch {
		case strings.HasPrefix(base, "ForAnyValue:"):
			c.set, base = forAnyValue, strings.TrimPrefix(base, "ForAnyValue:")
		case strings.HasPrefix(base, "ForAllValues:"):
			c.set, base = forAllValues, strings.TrimPrefix(base, "ForAllValues:")
		}
		if b, ok := strings.CutSuffix(base, "IfExists"); ok && b != "Null" {
			c.ifExists, base = true, b
		}
		if base == "Null" {
			if c.set != single || c.ifExists {
				return nil, malformed("invalid condition operator %q.", name)
			}
			c.null = true
		} else if op, ok := operators[base]; ok {
			c.op = op
		} else {
			return nil, malformed("invalid condition operator %q.", name)
		}
		keys, ok := block[name].(map[string]any)
		if !ok || len(keys) == 0 {
			return nil, malformed("condition operator %q must map condition keys to values.", name)
		}
		knames := make([]string, 0, len(keys))
		for k := range keys {
			knames = append(knames, k)
		}
		sort.Strings(knames)
		for _, k := range knames {
			vals, ok := conditionValues(keys[k])
			if !ok || len(vals) == 0 {
				return nil, malformed("condition %s %q must have a string, number or boolean value, or a list of them.", name, k)
			}
			if !strings.Contains(k, ":") {
				return nil, malformed("invalid condition key %q: keys are \"prefix:name\", such as kms:CallerAccount.", k)
			}
			if c.null {
				for _, v := range vals {
					if v != "true" && v != "false" {
						return nil, malformed("the Null condition on %q takes true or false.", k)
					}
				}
			}
			ck := c
			ck.key, ck.values = strings.ToLower(k), vals
			out = append(out, ck)
		}
	}
	return out, nil
}

// eval applies the condition to the request's values for its key (present
// says whether the key is in the request at all). allow is the effect of the
// statement it belongs to, which decides how a single-valued key carrying
// several values is read (see singleValued).
func (c *condition) eval(ctx Context, allow bool) bool {
	vals, present := ctx[c.key]
	if c.null {
		absent := !present || len(vals) == 0
		for _, v := range c.values {
			if (v == "true") == absent {
				return true
			}
		}
		return false
	}
	// sat: does one request value satisfy the operator?
	sat := func(rv string) bool {
		for _, pv := range c.values {
			if c.op.match(rv, pv) {
				return !c.op.negated
			}
		}
		return c.op.negated
	}
	if len(vals) > 1 && singleValued(c.key) {
		// A single-valued key with several values is ambiguous: the
		// reading that protects the key wins, deterministically, whatever
		// the operator or set qualifier. An Allow holds only if every
		// value satisfies it; a Deny applies if any value does.
		for _, v := range vals {
			if sat(v) != allow {
				return !allow
			}
		}
		return allow
	}
	switch c.set {
	case forAllValues:
		// Every request value must satisfy it; an absent or empty set does,
		// vacuously.
		for _, v := range vals {
			if !sat(v) {
				return false
			}
		}
		return true
	case forAnyValue:
		for _, v := range vals {
			if sat(v) {
				return true
			}
		}
		return false
	}
	if !present {
		// IfExists: a missing key does not stand in the way. A negated
		// operator is true of a missing key (nothing matches it); any other
		// operator is false.
		return c.ifExists || c.op.negated
	}
	if c.op.negated {
		// Not one request value may match.
		for _, v := range vals {
			if !sat(v) {
				return false
			}
		}
		return true
	}
	for _, v := range vals {
		if sat(v) {
			return true
		}
	}
	return false
}

// singleValued reports whether a condition key (lower-cased) is single-valued
// by definition yet may reach a policy with several values:
// kms:EncryptionContext:<key>. Condition key names are case-insensitive, but
// an encryption context's keys are not, so a context holding "tenant" and
// "TENANT" gives kms:EncryptionContext:tenant two values.
func singleValued(key string) bool {
	return strings.HasPrefix(key, "kms:encryptioncontext:")
}

func numeric(cmp func(int) bool) func(r, p string) bool {
	return func(r, p string) bool {
		a, err1 := strconv.ParseFloat(r, 64)
		b, err2 := strconv.ParseFloat(p, 64)
		if err1 != nil || err2 != nil {
			return false
		}
		switch {
		case a < b:
			return cmp(-1)
		case a > b:
			return cmp(1)
		}
		return cmp(0)
	}
}

// parseDate reads an ISO 8601 date-time (as IAM accepts: with or without
// seconds' fraction, or a date alone) or epoch seconds.
func parseDate(s string) (time.Time, bool) {
	for _, layout := range []string{time.RFC3339Nano, "2006-01-02T15:04:05Z0700", "2006-01-02T15:04Z07:00", "2006-01-02"} {
		if t, err := time.Parse(layout, s); err == nil {
			return t, true
		}
	}
	if n, err := strconv.ParseInt(s, 10, 64); err == nil {
		return time.Unix(n, 0), true
	}
	return time.Time{}, false
}

func date(cmp func(int) bool) func(r, p string) bool {
	return func(r, p string) bool {
		a, ok1 := parseDate(r)
		b, ok2 := parseDate(p)
		if !ok1 || !ok2 {
			return false
		}
		return cmp(a.Compare(b))
	}
}

func binaryEquals(r, p string) bool {
	a, err1 := base64.StdEncoding.DecodeString(r)
	b, err2 := base64.StdEncoding.DecodeString(p)
	return err1 == nil && err2 == nil && string(a) == string(b)
}

// ipInRange: the request's address is in the policy's CIDR block (or is the
// policy's single address).
func ipInRange(r, p string) bool {
	addr, err := netip.ParseAddr(r)
	if err != nil {
		return false
	}
	if pfx, err := netip.ParsePrefix(p); err == nil {
		return pfx.Contains(addr.Unmap())
	}
	a, err := netip.ParseAddr(p)
	return err == nil && a.Unmap() == addr.Unmap()
}

// glob matches s against pattern with * (any run of characters) and ? (one
// character), ignoring ASCII case if fold. It works on the UTF-8 bytes
// without allocating, with one backtrack point (no exponential blow-up).
func glob(pattern, s string, fold bool) bool {
	pi, si := 0, 0
	star, mark := -1, 0
	for si < len(s) {
		switch {
		case pi < len(pattern) && pattern[pi] == '?':
			_, n := utf8.DecodeRuneInString(s[si:])
			pi++
			si += n
		case pi < len(pattern) && pattern[pi] == '*':
			star, mark = pi, si
			pi++
		case pi < len(pattern) && sameByte(pattern[pi], s[si], fold):
			pi++
			si++
		case star >= 0:
			// Let the last * take one more character and try again.
			_, n := utf8.DecodeRuneInString(s[mark:])
			mark += n
			pi, si = star+1, mark
		default:
			return false
		}
	}
	for pi < len(pattern) && pattern[pi] == '*' {
		pi++
	}
	return pi == len(pattern)
}

func sameByte(a, b byte, fold bool) bool {
	if a == b {
		return true
	}
	if !fold {
		return false
	}
	lower := func(c byte) byte {
		if 'A' <= c && c <= 'Z' {
			return c + 'a' - 'A'
		}
		return c
	}
	return lower(a) == lower(b)
}

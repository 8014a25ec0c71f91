package api

import (
	"bytes"
	"fmt"
	"reflect"
	"strings"
	"sync"
	"unicode/utf8"
)

// Request bodies are read by encoding/json, which matches member names
// case-insensitively, lets the last of two equal names win, and replaces
// invalid UTF-8 and lone surrogate escapes with U+FFFD. A proxy or firewall
// in front of hsmkms reading the same body could then see another key id or
// encryption context than hsmkms does, and two different byte strings could
// name the same encryption context. checkWireJSON runs first, over the raw
// bytes, and refuses every body that a strict reader could read differently:
//
//   - anything that is not one JSON object (RFC 8259), nested at most
//     maxWireDepth deep;
//   - an object that names a member or key twice, at any depth (names are
//     compared after unescaping: "a" and "\u0061" are the same name);
//   - a string, name or value, that is not valid UTF-8, or whose escapes
//     include a surrogate that is not half of a high-low pair;
//   - in an object read into a Go struct, a name equal to one of the
//     struct's json names only when case is ignored (as encoding/json
//     ignores it, with Unicode simple folding: "keyid", "KEYID", "\u212AeyId").
//
// Names that match no member, even ignoring case, are skipped as before, so
// that a newer SDK's members do not break requests (the AWS JSON protocol
// says nothing of unknown members; Jackson-style readers skip them too).
// Map members (EncryptionContext, grant constraints) keep their keys
// case-sensitively. It reads the body in place: it copies nothing of it but,
// in objects with more than smallObject members, the names.

// maxWireDepth bounds nesting. The deepest KMS request shape is three levels
// (CreateGrant.Constraints.EncryptionContextEquals); no SDK sends more.
const maxWireDepth = 64

// smallObject is how many names an object may have before duplicates are
// found with a map instead of by comparing each name with the earlier ones.
const smallObject = 16

// wireError says why a body was refused. Its text is built from the
// struct's own member names and the offset only, never from the body: it is
// both sent (message) and logged (Error).
type wireError struct {
	message string
	offset  int
}

func (e *wireError) Error() string {
	return fmt.Sprintf("strict json: %s (at offset %d)", e.message, e.offset)
}

// wireKind is what checkWireJSON knows of a value from its Go type.
type wireKind uint8

const (
	anyShape    wireKind = iota // any JSON value; names within are not checked against a type
	structShape                 // an object whose names are a struct's json names
	mapShape                    // an object whose keys are data
	listShape                   // an array
)

// wireShape is the wire form of a Go type.
type wireShape struct {
	kind    wireKind
	members []wireMember // structShape
	elem    *wireShape   // mapShape values and listShape elements
}

type wireMember struct {
	name  string
	shape *wireShape
}

var anyWireValue = &wireShape{kind: anyShape}

var wireShapes sync.Map // reflect.Type → *wireShape

// wireShapeOf returns the wire shape of t. Shapes are built once per type.
func wireShapeOf(t reflect.Type) *wireShape {
	if s, ok := wireShapes.Load(t); ok {
		return s.(*wireShape)
	}
	s := buildWireShape(t, map[reflect.Type]*wireShape{})
	wireShapes.Store(t, s)
	return s
}

// buildWireShape follows encoding/json's rules for which fields are members and
// under what name. building holds the struct shapes under construction, so
// that a recursive type ends instead of looping.
func buildWireShape(t reflect.Type, building map[reflect.Type]*wireShape) *wireShape {
	for t.Kind() == reflect.Pointer {
		t = t.Elem()
	}
	switch t.Kind() {
	case reflect.Struct:
		if s, ok := building[t]; ok {
			return s
		}
		s := &wireShape{kind: structShape}
		building[t] = s
		addMembers(s, t, building)
		return s
	case reflect.Map:
		return &wireShape{kind: mapShape, elem: buildWireShape(t.Elem(), building)}
	case reflect.Slice, reflect.Array:
		if t.Elem().Kind() == reflect.Uint8 {
			return anyWireValue // []byte is a base64 string
		}
		return &wireShape{kind: listShape, elem: buildWireShape(t.Elem(), building)}
	}
	return anyWireValue
}

// addMembers adds t's exported fields to s, by their json names; the fields
// of an untagged embedded struct are promoted, as in encoding/json. A type
// with its own UnmarshalJSON (service.Tag) is described by its fields too:
// they must carry the names it reads.
func addMembers(s *wireShape, t reflect.Type, building map[reflect.Type]*wireShape) {
	for i := range t.NumField() {
		f := t.Field(i)
		tag := f.Tag.Get("json")
		if tag == "-" {
			continue
		}
		name, _, _ := strings.Cut(tag, ",")
		ft := f.Type
		for ft.Kind() == reflect.Pointer {
			ft = ft.Elem()
		}
		if f.Anonymous && name == "" && ft.Kind() == reflect.Struct {
			addMembers(s, ft, building)
			continue
		}
		if !f.IsExported() {
			continue
		}
		if name == "" {
			name = f.Name
		}
		s.members = append(s.members, wireMember{name: name, shape: buildWireShape(f.Type, building)})
	}
}

// checkWireJSON refuses body unless it is one JSON object that every
// reader reads the same way (see the comment at the top of this file), read
// into a value of shape top.
func checkWireJSON(body []byte, top *wireShape) error {
	r := wireReader{b: body}
	r.space()
	if r.i >= len(r.b) || r.b[r.i] != '{' {
		return r.fail("The request body must be a JSON object.")
	}
	if err := r.value(top, 0); err != nil {
		return err
	}
	r.space()
	if r.i != len(r.b) {
		return r.fail("The request body is not valid JSON.")
	}
	return nil
}

// wireReader walks a body once, left to right.
type wireReader struct {
	b []byte
	i int
}

func (r *wireReader) fail(msg string) *wireError { return &wireError{message: msg, offset: r.i} }

func (r *wireReader) syntax() *wireError { return r.fail("The request body is not valid JSON.") }

func (r *wireReader) space() {
	for r.i < len(r.b) {
		switch r.b[r.i] {
		case ' ', '\t', '\n', '\r':
			r.i++
		default:
			return
		}
	}
}

// value reads one value of shape s at nesting depth.
func (r *wireReader) value(s *wireShape, depth int) error {
	r.space()
	if r.i >= len(r.b) {
		return r.syntax()
	}
	switch c := r.b[r.i]; {
	case c == '{':
		return r.object(s, depth+1)
	case c == '[':
		return r.array(s, depth+1)
	case c == '"':
		_, err := r.str()
		return err
	case c == 't':
		return r.literal("true")
	case c == 'f':
		return r.literal("false")
	case c == 'n':
		return r.literal("null")
	case c == '-' || '0' <= c && c <= '9':
		return r.number()
	}
	return r.syntax()
}

func (r *wireReader) literal(word string) error {
	if !bytes.HasPrefix(r.b[r.i:], []byte(word)) {
		return r.syntax()
	}
	r.i += len(word)
	return nil
}

// number reads -?(0|[1-9][0-9]*)(\.[0-9]+)?([eE][+-]?[0-9]+)?
func (r *wireReader) number() error {
	if r.b[r.i] == '-' {
		r.i++
	}
	switch {
	case r.i < len(r.b) && r.b[r.i] == '0':
		r.i++
	case r.digits() == 0:
		return r.syntax()
	}
	if r.i < len(r.b) && r.b[r.i] == '.' {
		r.i++
		if r.digits() == 0 {
			return r.syntax()
		}
	}
	if r.i < len(r.b) && (r.b[r.i] == 'e' || r.b[r.i] == 'E') {
		r.i++
		if r.i < len(r.b) && (r.b[r.i] == '+' || r.b[r.i] == '-') {
			r.i++
		}
		if r.digits() == 0 {
			return r.syntax()
		}
	}
	return nil
}

func (r *wireReader) digits() int {
	start := r.i
	for r.i < len(r.b) && '0' <= r.b[r.i] && r.b[r.i] <= '9' {
		r.i++
	}
	return r.i - start
}

func (r *wireReader) array(s *wireShape, depth int) error {
	if depth > maxWireDepth {
		return r.fail("The request body is nested too deeply.")
	}
	elem := anyWireValue
	if s.kind == listShape {
		elem = s.elem
	}
	r.i++ // [
	r.space()
	if r.i < len(r.b) && r.b[r.i] == ']' {
		r.i++
		return nil
	}
	for {
		if err := r.value(elem, depth); err != nil {
			return err
		}
		r.space()
		if r.i >= len(r.b) {
			return r.syntax()
		}
		switch r.b[r.i] {
		case ',':
			r.i++
		case ']':
			r.i++
			return nil
		default:
			return r.syntax()
		}
	}
}

// wireName is an object member's name as it stands in the body, between the
// quotes; escaped says whether it holds a backslash.
type wireName struct {
	raw     []byte
	escaped bool
}

func (r *wireReader) object(s *wireShape, depth int) error {
	if depth > maxWireDepth {
		return r.fail("The request body is nested too deeply.")
	}
	var (
		small [smallObject]wireName
		seen  = small[:0]
		many  map[string]struct{} // past smallObject names: unescaped names
	)
	r.i++ // {
	r.space()
	if r.i < len(r.b) && r.b[r.i] == '}' {
		r.i++
		return nil
	}
	for {
		r.space()
		if r.i >= len(r.b) || r.b[r.i] != '"' {
			return r.syntax()
		}
		at := r.i
		n, err := r.str()
		if err != nil {
			return err
		}
		// One name, one meaning: no name twice in an object.
		if many == nil && len(seen) < smallObject {
			for _, earlier := range seen {
				if sameName(earlier, n) {
					return duplicateName(s, n, at)
				}
			}
			seen = append(seen, n)
		} else {
			if many == nil {
				many = make(map[string]struct{}, 2*smallObject)
				for _, earlier := range seen {
					many[string(unescape(nil, earlier))] = struct{}{}
				}
			}
			key := string(unescape(nil, n))
			if _, dup := many[key]; dup {
				return duplicateName(s, n, at)
			}
			many[key] = struct{}{}
		}
		next := anyWireValue
		switch s.kind {
		case mapShape:
			next = s.elem
		case structShape:
			m, err := s.member(n)
			if err != nil {
				err.offset = at
				return err
			}
			if m != nil {
				next = m.shape
			}
		}
		r.space()
		if r.i >= len(r.b) || r.b[r.i] != ':' {
			return r.syntax()
		}
		r.i++
		if err := r.value(next, depth); err != nil {
			return err
		}
		r.space()
		if r.i >= len(r.b) {
			return r.syntax()
		}
		switch r.b[r.i] {
		case ',':
			r.i++
		case '}':
			r.i++
			return nil
		default:
			return r.syntax()
		}
	}
}

// duplicateName words the refusal of n, a name seen twice in an object of shape
// s. Only a member's own name, never the body's text, goes into the message.
func duplicateName(s *wireShape, n wireName, at int) *wireError {
	msg := "An object in the request body names a member twice."
	switch s.kind {
	case mapShape:
		msg = "A map in the request body has a duplicate key."
	case structShape:
		if m, _ := s.member(n); m != nil {
			msg = "The request body names " + m.name + " twice in one object."
		}
	}
	return &wireError{message: msg, offset: at}
}

// member returns the struct member that n names exactly, nil if n names none
// (an unknown member, skipped), or an error if n equals a member's name only
// when case is ignored.
func (s *wireShape) member(n wireName) (*wireMember, *wireError) {
	for i := range s.members {
		if equalName(n, s.members[i].name) {
			return &s.members[i], nil
		}
	}
	var buf [64]byte
	plain := n.raw
	if n.escaped {
		plain = unescape(buf[:0], n)
	}
	for i := range s.members {
		if bytes.EqualFold(plain, []byte(s.members[i].name)) {
			return nil, &wireError{message: "Member names are case-sensitive: the request body spells " +
				s.members[i].name + " in another case."}
		}
	}
	return nil, nil
}

// str reads a string starting at its opening quote, checking that it is
// valid UTF-8 and that its escapes are valid, with surrogates only in
// high-low pairs. It returns the bytes between the quotes.
func (r *wireReader) str() (wireName, error) {
	r.i++ // "
	start := r.i
	escaped := false
	for {
		// The common case, printable ASCII, in a tight loop.
		for r.i < len(r.b) && plainASCII[r.b[r.i]] {
			r.i++
		}
		if r.i >= len(r.b) {
			return wireName{}, r.syntax()
		}
		switch c := r.b[r.i]; {
		case c == '"':
			n := wireName{raw: r.b[start:r.i], escaped: escaped}
			r.i++
			return n, nil
		case c == '\\':
			escaped = true
			if err := r.escape(); err != nil {
				return wireName{}, err
			}
		case c < 0x20:
			return wireName{}, r.syntax() // control characters must be escaped
		default:
			ch, size := utf8.DecodeRune(r.b[r.i:])
			if ch == utf8.RuneError && size == 1 {
				return wireName{}, r.fail("The request body has a string that is not valid UTF-8.")
			}
			r.i += size
		}
	}
}

// escape reads one escape sequence at r.i (the backslash); a \u escape of a
// high surrogate must be followed at once by one of a low surrogate.
func (r *wireReader) escape() error {
	if r.i+1 >= len(r.b) {
		return r.syntax()
	}
	switch r.b[r.i+1] {
	case '"', '\\', '/', 'b', 'f', 'n', 'r', 't':
		r.i += 2
		return nil
	case 'u':
	default:
		return r.syntax()
	}
	u, ok := hex4(r.b, r.i+2)
	if !ok {
		return r.syntax()
	}
	switch {
	case u >= 0xDC00 && u <= 0xDFFF:
		return r.fail("The request body has a string with an unpaired surrogate escape.")
	case u >= 0xD800 && u <= 0xDBFF:
		if r.i+7 >= len(r.b) || r.b[r.i+6] != '\\' || r.b[r.i+7] != 'u' {
			return r.fail("The request body has a string with an unpaired surrogate escape.")
		}
		low, ok := hex4(r.b, r.i+8)
		if !ok {
			return r.syntax()
		}
		if low < 0xDC00 || low > 0xDFFF {
			return r.fail("The request body has a string with an unpaired surrogate escape.")
		}
		r.i += 12
		return nil
	}
	r.i += 6
	return nil
}

// hex4 reads four hex digits at b[i:].
func hex4(b []byte, i int) (rune, bool) {
	if i+4 > len(b) {
		return 0, false
	}
	var v rune
	for _, c := range b[i : i+4] {
		switch {
		case '0' <= c && c <= '9':
			c -= '0'
		case 'a' <= c && c <= 'f':
			c -= 'a' - 10
		case 'A' <= c && c <= 'F':
			c -= 'A' - 10
		default:
			return 0, false
		}
		v = v<<4 | rune(c)
	}
	return v, true
}

// plainASCII marks the bytes a string may hold as they are: printable
// ASCII but the quote and the backslash.
var plainASCII = func() (t [256]bool) {
	for c := 0x20; c < 0x80; c++ {
		t[c] = c != '"' && c != '\\'
	}
	return t
}()

// nextRune decodes the rune at raw[i:] of a string already checked by str,
// and returns where the next one starts.
func nextRune(raw []byte, i int) (rune, int) {
	if raw[i] != '\\' {
		ch, size := utf8.DecodeRune(raw[i:])
		return ch, i + size
	}
	switch raw[i+1] {
	case 'b':
		return '\b', i + 2
	case 'f':
		return '\f', i + 2
	case 'n':
		return '\n', i + 2
	case 'r':
		return '\r', i + 2
	case 't':
		return '\t', i + 2
	case 'u':
		u, _ := hex4(raw, i+2)
		if u >= 0xD800 && u <= 0xDBFF {
			low, _ := hex4(raw, i+8)
			return 0x10000 + (u-0xD800)<<10 + (low - 0xDC00), i + 12
		}
		return u, i + 6
	}
	return rune(raw[i+1]), i + 2 // " \ /
}

// unescape appends the text of n, a name already checked by str, to dst.
func unescape(dst []byte, n wireName) []byte {
	if !n.escaped {
		return append(dst, n.raw...)
	}
	for i := 0; i < len(n.raw); {
		var ch rune
		ch, i = nextRune(n.raw, i)
		dst = utf8.AppendRune(dst, ch)
	}
	return dst
}

// sameName reports whether a and b, both checked by str, are the same text.
func sameName(a, b wireName) bool {
	if !a.escaped && !b.escaped {
		return bytes.Equal(a.raw, b.raw)
	}
	i, j := 0, 0
	for i < len(a.raw) && j < len(b.raw) {
		var x, y rune
		x, i = nextRune(a.raw, i)
		y, j = nextRune(b.raw, j)
		if x != y {
			return false
		}
	}
	return i == len(a.raw) && j == len(b.raw)
}

// equalName reports whether n, checked by str, is the text s.
func equalName(n wireName, s string) bool {
	if !n.escaped {
		return string(n.raw) == s
	}
	i, j := 0, 0
	for i < len(n.raw) && j < len(s) {
		var x rune
		x, i = nextRune(n.raw, i)
		y, size := utf8.DecodeRuneInString(s[j:])
		j += size
		if x != y {
			return false
		}
	}
	return i == len(n.raw) && j == len(s)
}

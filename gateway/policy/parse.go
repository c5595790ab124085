package policy

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"strconv"
	"strings"
	"unicode/utf8"
)

// Parse parses and validates a key policy document. It returns a *Policy
// ready to evaluate, or an *Error saying what is wrong and where.
func Parse(doc []byte) (*Policy, error) {
	p, err := parse(doc)
	if err != nil {
		return nil, err
	}
	return p, nil
}

func parse(doc []byte) (*Policy, *Error) {
	if len(doc) > MaxSize {
		return nil, errorf("", "the policy document is %d bytes; the limit is %d", len(doc), MaxSize)
	}
	if err := checkCharacters(doc); err != nil {
		return nil, err
	}
	if len(bytes.TrimSpace(doc)) == 0 {
		return nil, errorf("", "the policy document is empty")
	}
	root, err := decodeJSON(doc)
	if err != nil {
		return nil, err
	}
	return compilePolicy(root)
}

// checkCharacters enforces AWS's character set for key policies: printable
// ASCII, printable Latin-1 (U+00A0 to U+00FF), tab, line feed and carriage
// return, in valid UTF-8.
func checkCharacters(doc []byte) *Error {
	for i := 0; i < len(doc); {
		c := doc[i]
		if c < utf8.RuneSelf {
			if (c < 0x20 && c != '\t' && c != '\n' && c != '\r') || c == 0x7f {
				return errorf("", "character U+%04X at byte offset %d is not allowed in a key policy (only printable ASCII and Latin-1 characters, tab, line feed and carriage return are)", c, i)
			}
			i++
			continue
		}
		r, n := utf8.DecodeRune(doc[i:])
		if r == utf8.RuneError && n <= 1 {
			return errorf("", "the policy document is not valid UTF-8 (at byte offset %d)", i)
		}
		if r < 0xa0 || r > 0xff {
			return errorf("", "character U+%04X at byte offset %d is not allowed in a key policy (only printable ASCII and Latin-1 characters, tab, line feed and carriage return are)", r, i)
		}
		i += n
	}
	return nil
}

// node is a JSON value, kept with the order of its object members (so that
// errors are reported in document order) and without duplicate names.
type node struct {
	kind  nodeKind
	text  string   // a string's value, a number's literal text, "true" or "false"
	keys  []string // object member names
	elems []*node  // object member values, or array elements
}

type nodeKind uint8

const (
	kindString nodeKind = iota
	kindNumber
	kindBool
	kindNull
	kindObject
	kindArray
)

func (k nodeKind) String() string {
	switch k {
	case kindString:
		return "a string"
	case kindNumber:
		return "a number"
	case kindBool:
		return "a boolean"
	case kindNull:
		return "null"
	case kindObject:
		return "an object"
	}
	return "a list"
}

// maxDepth bounds JSON nesting. A key policy needs six levels at most
// (document, Statement list, statement, Condition, operator, value list).
const maxDepth = 16

func decodeJSON(doc []byte) (*node, *Error) {
	dec := json.NewDecoder(bytes.NewReader(doc))
	dec.UseNumber()
	n, err := readNode(dec, 0)
	if err != nil {
		return nil, err
	}
	if _, terr := dec.Token(); terr != io.EOF {
		return nil, errorf("", "invalid JSON: unexpected data after the policy document (at byte offset %d)", dec.InputOffset())
	}
	return n, nil
}

func readNode(dec *json.Decoder, depth int) (*node, *Error) {
	if depth > maxDepth {
		return nil, errorf("", "invalid policy: JSON nested more than %d levels deep (at byte offset %d)", maxDepth, dec.InputOffset())
	}
	tok, err := dec.Token()
	if err != nil {
		return nil, jsonError(err, dec)
	}
	switch t := tok.(type) {
	case string:
		return &node{kind: kindString, text: t}, nil
	case json.Number:
		return &node{kind: kindNumber, text: string(t)}, nil
	case bool:
		return &node{kind: kindBool, text: strconv.FormatBool(t)}, nil
	case nil:
		return &node{kind: kindNull}, nil
	case json.Delim:
		switch t {
		case '{':
			n := &node{kind: kindObject}
			for dec.More() {
				kt, err := dec.Token()
				if err != nil {
					return nil, jsonError(err, dec)
				}
				k, ok := kt.(string)
				if !ok { // the decoder does not let this happen
					return nil, errorf("", "invalid JSON: object member name expected (at byte offset %d)", dec.InputOffset())
				}
				for _, seen := range n.keys {
					if seen == k {
						return nil, errorf("", "invalid policy: element %s appears twice in one object (at byte offset %d)", excerpt(k), dec.InputOffset())
					}
				}
				v, perr := readNode(dec, depth+1)
				if perr != nil {
					return nil, perr
				}
				n.keys = append(n.keys, k)
				n.elems = append(n.elems, v)
			}
			if _, err := dec.Token(); err != nil { // '}'
				return nil, jsonError(err, dec)
			}
			return n, nil
		case '[':
			n := &node{kind: kindArray}
			for dec.More() {
				v, perr := readNode(dec, depth+1)
				if perr != nil {
					return nil, perr
				}
				n.elems = append(n.elems, v)
			}
			if _, err := dec.Token(); err != nil { // ']'
				return nil, jsonError(err, dec)
			}
			return n, nil
		}
	}
	return nil, errorf("", "invalid JSON at byte offset %d", dec.InputOffset())
}

func jsonError(err error, dec *json.Decoder) *Error {
	var se *json.SyntaxError
	switch {
	case errors.As(err, &se):
		return errorf("", "invalid JSON at byte offset %d: %s", se.Offset, se.Error())
	case errors.Is(err, io.EOF), errors.Is(err, io.ErrUnexpectedEOF):
		return errorf("", "invalid JSON: the document ends unexpectedly")
	}
	return errorf("", "invalid JSON at byte offset %d", dec.InputOffset())
}

// errorf makes an *Error about the element at path ("" for the document).
func errorf(path, format string, args ...any) *Error {
	msg := fmt.Sprintf(format, args...)
	if path != "" {
		msg = path + ": " + msg
	}
	return &Error{Msg: msg}
}

// excerpt quotes s for an error message, cut to a short prefix.
func excerpt(s string) string {
	const max = 48
	if len(s) <= max {
		return strconv.Quote(s)
	}
	i := max
	for i > 0 && !utf8.RuneStart(s[i]) {
		i--
	}
	return strconv.Quote(s[:i]) + "..."
}

// members checks that n is an object whose member names are all in allowed,
// and returns its members by name.
func members(n *node, path string, allowed ...string) (map[string]*node, *Error) {
	if n.kind != kindObject {
		return nil, errorf(path, "must be an object, not %s", n.kind)
	}
	m := make(map[string]*node, len(n.keys))
	for i, k := range n.keys {
		known := false
		for _, a := range allowed {
			if k == a {
				known = true
				break
			}
		}
		if !known {
			for _, a := range allowed {
				if strings.EqualFold(k, a) {
					return nil, errorf(path, "unknown element %s (element names are case-sensitive: %q)", excerpt(k), a)
				}
			}
			return nil, errorf(path, "unknown element %s", excerpt(k))
		}
		m[k] = n.elems[i]
	}
	return m, nil
}

func compilePolicy(root *node) (*Policy, *Error) {
	m, err := members(root, "", "Version", "Id", "Statement")
	if err != nil {
		if root.kind != kindObject {
			return nil, errorf("", "the policy document must be a JSON object, not %s", root.kind)
		}
		return nil, err
	}
	p := &Policy{Version: Version2008}
	if v, ok := m["Version"]; ok {
		if v.kind != kindString {
			return nil, errorf("Version", "must be a string, not %s", v.kind)
		}
		if v.text != Version2012 && v.text != Version2008 {
			return nil, errorf("Version", "must be %q or %q, not %s", Version2012, Version2008, excerpt(v.text))
		}
		p.Version = v.text
	}
	if v, ok := m["Id"]; ok {
		if v.kind != kindString {
			return nil, errorf("Id", "must be a string, not %s", v.kind)
		}
		p.ID = v.text
	}
	st, ok := m["Statement"]
	if !ok {
		return nil, errorf("", "the policy has no Statement")
	}
	var stmts []*node
	var paths []string
	switch st.kind {
	case kindObject:
		stmts, paths = []*node{st}, []string{"Statement"}
	case kindArray:
		if len(st.elems) == 0 {
			return nil, errorf("Statement", "must hold at least one statement")
		}
		stmts = st.elems
		for i := range stmts {
			paths = append(paths, "Statement["+strconv.Itoa(i)+"]")
		}
	default:
		return nil, errorf("Statement", "must be an object or a list of objects, not %s", st.kind)
	}
	c := compiler{variables: p.Version == Version2012}
	sids := map[string]string{} // Sid -> path of the statement that has it
	p.Statements = make([]Statement, len(stmts))
	for i, sn := range stmts {
		s, err := c.statement(sn, paths[i])
		if err != nil {
			return nil, err
		}
		if s.Sid != "" {
			if first, dup := sids[s.Sid]; dup {
				return nil, errorf(paths[i]+".Sid", "duplicate Sid %s (also in %s); Sids must be unique within a policy", excerpt(s.Sid), first)
			}
			sids[s.Sid] = paths[i]
		}
		p.Statements[i] = s
	}
	return p, nil
}

// compiler carries what statement compilation needs from the document.
type compiler struct {
	// variables is set for Version 2012-10-17, where AWS substitutes policy
	// variables; since this package does not, "${" is refused there.
	variables bool
}

func (c *compiler) checkVariables(path, s string) *Error {
	if c.variables && strings.Contains(s, "${") {
		return errorf(path, "policy variables such as \"${aws:username}\" are not supported (in %s)", excerpt(s))
	}
	return nil
}

func (c *compiler) statement(n *node, path string) (Statement, *Error) {
	var s Statement
	m, err := members(n, path, "Sid", "Effect", "Principal", "NotPrincipal", "Action", "NotAction", "Resource", "NotResource", "Condition")
	if err != nil {
		return s, err
	}
	if v, ok := m["Sid"]; ok {
		if v.kind != kindString {
			return s, errorf(path+".Sid", "must be a string, not %s", v.kind)
		}
		s.Sid = v.text
	}

	v, ok := m["Effect"]
	switch {
	case !ok:
		return s, errorf(path, "Effect is required")
	case v.kind != kindString:
		return s, errorf(path+".Effect", "must be a string, not %s", v.kind)
	case v.text == "Allow":
	case v.text == "Deny":
		s.deny = true
	default:
		return s, errorf(path+".Effect", "must be \"Allow\" or \"Deny\", not %s", excerpt(v.text))
	}
	s.Effect = v.text

	name, v, err := oneOf(m, path, "Principal", "NotPrincipal")
	if err != nil {
		return s, err
	}
	s.notPrincipal = name == "NotPrincipal"
	if s.principal, err = compilePrincipal(v, path+"."+name); err != nil {
		return s, err
	}

	name, v, err = oneOf(m, path, "Action", "NotAction")
	if err != nil {
		return s, err
	}
	s.notAction = name == "NotAction"
	if s.actions, err = compileActions(v, path+"."+name); err != nil {
		return s, err
	}

	name, v, err = oneOf(m, path, "Resource", "NotResource")
	if err != nil {
		return s, err
	}
	s.notResource = name == "NotResource"
	if s.resources, err = c.resources(v, path+"."+name); err != nil {
		return s, err
	}

	if v, ok := m["Condition"]; ok {
		if s.conditions, err = c.conditions(v, path+".Condition"); err != nil {
			return s, err
		}
	}
	return s, nil
}

// oneOf returns whichever of the two elements the statement has, requiring
// exactly one.
func oneOf(m map[string]*node, path, a, b string) (string, *node, *Error) {
	va, okA := m[a]
	vb, okB := m[b]
	switch {
	case okA && okB:
		return "", nil, errorf(path, "a statement may have %s or %s, not both", a, b)
	case okA:
		return a, va, nil
	case okB:
		return b, vb, nil
	}
	if a == "Principal" {
		return "", nil, errorf(path, "Principal (or NotPrincipal) is required in a key policy statement")
	}
	return "", nil, errorf(path, "%s (or %s) is required", a, b)
}

// stringList reads a string or a non-empty list of strings.
func stringList(n *node, path string) ([]string, *Error) {
	switch n.kind {
	case kindString:
		return []string{n.text}, nil
	case kindArray:
		if len(n.elems) == 0 {
			return nil, errorf(path, "must not be an empty list")
		}
		out := make([]string, len(n.elems))
		for i, e := range n.elems {
			if e.kind != kindString {
				return nil, errorf(path+"["+strconv.Itoa(i)+"]", "must be a string, not %s", e.kind)
			}
			out[i] = e.text
		}
		return out, nil
	}
	return nil, errorf(path, "must be a string or a list of strings, not %s", n.kind)
}

func compilePrincipal(n *node, path string) (principalSet, *Error) {
	var ps principalSet
	switch n.kind {
	case kindString:
		if n.text == "*" {
			ps.anyone = true
			return ps, nil
		}
		return ps, errorf(path, "must be \"*\" or an object such as {\"AWS\": \"<ARN>\"}, not %s", excerpt(n.text))
	case kindObject:
	default:
		return ps, errorf(path, "must be \"*\" or an object such as {\"AWS\": \"<ARN>\"}, not %s", n.kind)
	}
	m, err := members(n, path, "AWS", "Service", "Federated", "CanonicalUser")
	if err != nil {
		return ps, err
	}
	if len(m) == 0 {
		return ps, errorf(path, "must name at least one principal")
	}
	for _, typ := range n.keys { // document order
		vp := path + "." + typ
		vals, err := stringList(m[typ], vp)
		if err != nil {
			return ps, err
		}
		for _, v := range vals {
			if err := checkPrincipalValue(vp, v); err != nil {
				return ps, err
			}
			if typ != "AWS" {
				continue // accepted, never matched
			}
			switch {
			case v == "*":
				ps.anyone = true
			case isAccountID(v):
				ps.roots = append(ps.roots, rootPrincipal{account: v, arn: "arn:aws:iam::" + v + ":root"})
			default:
				parts, ok := splitARN(v)
				if !ok || parts[1] == "" || parts[2] == "" || parts[5] == "" {
					return ps, errorf(vp, "invalid principal %s: expected an ARN, a 12-digit account id or \"*\"", excerpt(v))
				}
				if parts[2] == "iam" && parts[3] == "" && parts[5] == "root" && isAccountID(parts[4]) {
					ps.roots = append(ps.roots, rootPrincipal{account: parts[4], arn: v})
				} else {
					ps.arns = append(ps.arns, v)
				}
			}
		}
	}
	return ps, nil
}

func checkPrincipalValue(path, v string) *Error {
	if v == "*" {
		return nil
	}
	if v == "" {
		return errorf(path, "a principal must not be empty")
	}
	if strings.ContainsAny(v, "*?") {
		return errorf(path, "invalid principal %s: wildcards are not allowed in a principal, except a lone \"*\"", excerpt(v))
	}
	for i := 0; i < len(v); i++ {
		if v[i] <= ' ' || v[i] == 0x7f {
			return errorf(path, "invalid principal %s: it contains a space or control character", excerpt(v))
		}
	}
	return nil
}

func isAccountID(s string) bool { return len(s) == 12 && allDigits(s) }

// actionName returns the operation part of a "kms:", "xks:" or "hsmgate:"
// action, or "" for anything else.
func actionName(v string) string {
	for _, prefix := range []string{"kms:", "xks:", "hsmgate:"} {
		if len(v) > len(prefix) && strings.EqualFold(v[:len(prefix)], prefix) {
			return v[len(prefix):]
		}
	}
	return ""
}

func compileActions(n *node, path string) ([]pattern, *Error) {
	vals, err := stringList(n, path)
	if err != nil {
		return nil, err
	}
	out := make([]pattern, len(vals))
	for i, v := range vals {
		if v != "*" {
			name := actionName(v)
			if name == "" {
				return nil, errorf(path, "%s is not a KMS action: expected \"kms:<Operation>\" (or \"xks:<Operation>\" in an external key's policy, or \"hsmgate:ExportKey\"; wildcards allowed) or \"*\"", excerpt(v))
			}
			for j := len(v) - len(name); j < len(v); j++ {
				c := v[j]
				if !(c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || c == '*' || c == '?') {
					return nil, errorf(path, "invalid action %s: an operation name has only letters, digits and the wildcards \"*\" and \"?\"", excerpt(v))
				}
			}
		}
		out[i] = newPattern(v)
	}
	return out, nil
}

func (c *compiler) resources(n *node, path string) ([]pattern, *Error) {
	vals, err := stringList(n, path)
	if err != nil {
		return nil, err
	}
	out := make([]pattern, len(vals))
	for i, v := range vals {
		if v != "*" && !strings.HasPrefix(v, "arn:") {
			return nil, errorf(path, "invalid resource %s: expected \"*\" (this key) or an ARN", excerpt(v))
		}
		if err := c.checkVariables(path, v); err != nil {
			return nil, err
		}
		out[i] = newPattern(v)
	}
	return out, nil
}

func (c *compiler) conditions(n *node, path string) ([]condition, *Error) {
	if n.kind != kindObject {
		return nil, errorf(path, "must be an object mapping operators to condition keys, not %s", n.kind)
	}
	var out []condition
	for i, opName := range n.keys {
		op, set, ifExists, msg := parseOperator(opName)
		if msg != "" {
			return nil, errorf(path, "%s", msg)
		}
		opPath := path + "." + opName
		block := n.elems[i]
		if block.kind != kindObject {
			return nil, errorf(opPath, "must be an object mapping condition keys to values, not %s", block.kind)
		}
		if len(block.keys) == 0 {
			return nil, errorf(opPath, "names no condition key")
		}
		for j, key := range block.keys {
			cond, err := c.condition(op, set, ifExists, key, block.elems[j], opPath)
			if err != nil {
				return nil, err
			}
			out = append(out, cond)
		}
	}
	return out, nil
}

func (c *compiler) condition(op operator, set setQualifier, ifExists bool, key string, vn *node, opPath string) (condition, *Error) {
	cond := condition{key: strings.ToLower(key), op: op, set: set, ifExists: ifExists}
	if err := checkConditionKey(key); err != "" {
		return cond, errorf(opPath, "invalid condition key %s: %s", excerpt(key), err)
	}
	where := func(format string, args ...any) *Error {
		return errorf(opPath, "key %s: %s", excerpt(key), fmt.Sprintf(format, args...))
	}
	if set == setAll && (strings.HasPrefix(cond.key, "kms:encryptioncontext:") || strings.HasPrefix(cond.key, "aws:requesttag/")) {
		return cond, where("OverlyPermissiveCondition: ForAllValues with this single-valued key also matches requests without the pair, or with pairs the policy does not name; remove ForAllValues")
	}
	vals, err := conditionValues(vn)
	if err != "" {
		return cond, where("%s", err)
	}
	for _, v := range vals {
		if c.variables && strings.Contains(v, "${") {
			return cond, where("policy variables such as \"${aws:username}\" are not supported (in %s)", excerpt(v))
		}
	}
	switch op.fam {
	case famString, famStringIC, famLike:
		cond.strs = vals
	case famBool:
		for _, v := range vals {
			lv := strings.ToLower(v)
			if lv != "true" && lv != "false" {
				return cond, where("Bool values are true or false, not %s", excerpt(v))
			}
			cond.strs = append(cond.strs, lv)
		}
	case famNull:
		for _, v := range vals {
			switch strings.ToLower(v) {
			case "true":
				cond.nulls = append(cond.nulls, true)
			case "false":
				cond.nulls = append(cond.nulls, false)
			default:
				return cond, where("Null values are true or false, not %s", excerpt(v))
			}
		}
	case famNumeric:
		for _, v := range vals {
			f, ok := parseNumber(v)
			if !ok {
				return cond, where("%s is not a number (expected a decimal such as 10 or -2.5)", excerpt(v))
			}
			cond.nums = append(cond.nums, f)
		}
	case famDate:
		for _, v := range vals {
			d, ok := parseDate(v)
			if !ok {
				return cond, where("%s is not a date (expected ISO 8601 such as 2026-01-31 or 2026-01-31T12:00:00Z, or epoch seconds)", excerpt(v))
			}
			cond.dates = append(cond.dates, d)
		}
	case famIP:
		for _, v := range vals {
			p, ok := parsePrefix(v)
			if !ok {
				return cond, where("%s is not an IP address or CIDR range (such as 203.0.113.0/24 or 2001:db8::/32)", excerpt(v))
			}
			cond.prefixes = append(cond.prefixes, p)
		}
	case famARN:
		for _, v := range vals {
			parts, ok := splitARN(v)
			if !ok {
				return cond, where("%s is not an ARN (arn:partition:service:region:account:resource)", excerpt(v))
			}
			cond.arns = append(cond.arns, parts)
		}
	}
	return cond, nil
}

// checkConditionKey checks the shape "<prefix>:<name>" of a condition key.
func checkConditionKey(key string) string {
	i := strings.IndexByte(key, ':')
	if i <= 0 || i == len(key)-1 {
		return "expected <prefix>:<name>, such as aws:SourceIp or kms:EncryptionContext:<key>"
	}
	for j := 0; j < len(key); j++ {
		if key[j] <= ' ' || key[j] == 0x7f {
			return "it contains a space or control character"
		}
	}
	return ""
}

// conditionValues reads a condition value or list of values, normalizing
// numbers (to their literal text) and booleans (to "true" or "false") to
// strings.
func conditionValues(n *node) ([]string, string) {
	switch n.kind {
	case kindString, kindNumber, kindBool:
		return []string{n.text}, ""
	case kindArray:
		if len(n.elems) == 0 {
			return nil, "the list of values must not be empty"
		}
		out := make([]string, len(n.elems))
		for i, e := range n.elems {
			switch e.kind {
			case kindString, kindNumber, kindBool:
				out[i] = e.text
			default:
				return nil, fmt.Sprintf("value [%d] must be a string, number or boolean, not %s", i, e.kind)
			}
		}
		return out, ""
	}
	return nil, fmt.Sprintf("the value must be a string, number or boolean, or a list of them, not %s", n.kind)
}

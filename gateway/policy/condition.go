package policy

import (
	"net/netip"
	"strings"
)

// family is what kind of values an operator compares.
type family uint8

const (
	famString   family = iota // StringEquals, StringNotEquals
	famStringIC               // StringEqualsIgnoreCase, StringNotEqualsIgnoreCase
	famLike                   // StringLike, StringNotLike
	famNumeric
	famDate
	famBool
	famIP  // IpAddress, NotIpAddress
	famARN // ArnEquals, ArnLike, ArnNotEquals, ArnNotLike
	famNull
)

// comparison is how Numeric and Date operators compare the request value
// (left) with the policy value (right).
type comparison uint8

const (
	cmpEq comparison = iota
	cmpLT
	cmpLE
	cmpGT
	cmpGE
)

func (c comparison) holds(sign int) bool {
	switch c {
	case cmpEq:
		return sign == 0
	case cmpLT:
		return sign < 0
	case cmpLE:
		return sign <= 0
	case cmpGT:
		return sign > 0
	case cmpGE:
		return sign >= 0
	}
	return false
}

// setQualifier is a condition's ForAllValues: or ForAnyValue: prefix.
type setQualifier uint8

const (
	setNone setQualifier = iota
	setAll
	setAny
)

// operator describes a base condition operator (without qualifier or
// IfExists).
type operator struct {
	fam     family
	cmp     comparison
	negated bool
}

var operators = map[string]operator{
	"StringEquals":              {fam: famString},
	"StringNotEquals":           {fam: famString, negated: true},
	"StringEqualsIgnoreCase":    {fam: famStringIC},
	"StringNotEqualsIgnoreCase": {fam: famStringIC, negated: true},
	"StringLike":                {fam: famLike},
	"StringNotLike":             {fam: famLike, negated: true},
	"NumericEquals":             {fam: famNumeric, cmp: cmpEq},
	"NumericNotEquals":          {fam: famNumeric, cmp: cmpEq, negated: true},
	"NumericLessThan":           {fam: famNumeric, cmp: cmpLT},
	"NumericLessThanEquals":     {fam: famNumeric, cmp: cmpLE},
	"NumericGreaterThan":        {fam: famNumeric, cmp: cmpGT},
	"NumericGreaterThanEquals":  {fam: famNumeric, cmp: cmpGE},
	"DateEquals":                {fam: famDate, cmp: cmpEq},
	"DateNotEquals":             {fam: famDate, cmp: cmpEq, negated: true},
	"DateLessThan":              {fam: famDate, cmp: cmpLT},
	"DateLessThanEquals":        {fam: famDate, cmp: cmpLE},
	"DateGreaterThan":           {fam: famDate, cmp: cmpGT},
	"DateGreaterThanEquals":     {fam: famDate, cmp: cmpGE},
	"Bool":                      {fam: famBool},
	"IpAddress":                 {fam: famIP},
	"NotIpAddress":              {fam: famIP, negated: true},
	"ArnEquals":                 {fam: famARN},
	"ArnLike":                   {fam: famARN},
	"ArnNotEquals":              {fam: famARN, negated: true},
	"ArnNotLike":                {fam: famARN, negated: true},
	"Null":                      {fam: famNull},
}

// parseOperator splits "[ForAllValues:|ForAnyValue:]<operator>[IfExists]".
func parseOperator(name string) (op operator, set setQualifier, ifExists bool, err string) {
	base := name
	switch {
	case strings.HasPrefix(base, "ForAllValues:"):
		set, base = setAll, base[len("ForAllValues:"):]
	case strings.HasPrefix(base, "ForAnyValue:"):
		set, base = setAny, base[len("ForAnyValue:"):]
	}
	op, ok := operators[base]
	if !ok {
		if b, found := strings.CutSuffix(base, "IfExists"); found {
			op, ok = operators[b]
			ifExists = true
		}
	}
	switch {
	case !ok:
		return op, set, ifExists, "unknown operator " + excerpt(name)
	case op.fam == famNull && ifExists:
		return op, set, ifExists, "Null does not take the IfExists suffix"
	case op.fam == famNull && set != setNone:
		return op, set, ifExists, "Null does not take a ForAllValues: or ForAnyValue: qualifier"
	}
	return op, set, ifExists, ""
}

// condition is one compiled condition key of one operator: it holds when the
// key's request values compare with the policy values as the operator says.
type condition struct {
	key      string // lower-cased
	op       operator
	set      setQualifier
	ifExists bool

	// The policy values, parsed for the operator's family; one of these is
	// used.
	strs     []string       // famString, famStringIC, famLike; famBool ("true"/"false")
	nums     []float64      // famNumeric
	dates    []instant      // famDate
	prefixes []netip.Prefix // famIP
	arns     [][6]string    // famARN, split into parts
	nulls    []bool         // famNull: true means "the key is missing"
}

// holds evaluates the condition against ctx.
func (c *condition) holds(ctx Context) bool {
	var vals []string
	var present bool
	if ctx != nil {
		vals, present = ctx.Values(c.key)
	}
	present = present && len(vals) > 0 // an empty set is no value at all

	if c.op.fam == famNull {
		for _, wantMissing := range c.nulls {
			if wantMissing != present {
				return true
			}
		}
		return false
	}
	if !present {
		switch {
		case c.ifExists:
			return true
		case c.set == setAll:
			return true
		case c.set == setAny:
			return false
		}
		return c.op.negated
	}
	switch c.set {
	case setAll: // every request value passes
		for _, v := range vals {
			if c.matchesValue(v) == c.op.negated {
				return false
			}
		}
		return true
	case setAny: // some request value passes
		for _, v := range vals {
			if c.matchesValue(v) != c.op.negated {
				return true
			}
		}
		return false
	}
	// No qualifier: a positive operator holds when some request value
	// matches; a negated one when none does.
	for _, v := range vals {
		if c.matchesValue(v) {
			return !c.op.negated
		}
	}
	return c.op.negated
}

// matchesValue reports whether the request value v matches any of the policy
// values under the operator's positive comparison (StringEquals for both
// StringEquals and StringNotEquals, and so on).
func (c *condition) matchesValue(v string) bool {
	switch c.op.fam {
	case famString:
		for _, s := range c.strs {
			if s == v {
				return true
			}
		}
	case famStringIC, famBool:
		for _, s := range c.strs {
			if strings.EqualFold(s, v) {
				return true
			}
		}
	case famLike:
		for _, s := range c.strs {
			if globMatch(s, v, false) {
				return true
			}
		}
	case famNumeric:
		n, ok := parseNumber(v)
		if !ok {
			return false
		}
		for _, p := range c.nums {
			sign := 0
			if n < p {
				sign = -1
			} else if n > p {
				sign = 1
			}
			if c.op.cmp.holds(sign) {
				return true
			}
		}
	case famDate:
		d, ok := parseDate(v)
		if !ok {
			return false
		}
		for _, p := range c.dates {
			if c.op.cmp.holds(d.compare(p)) {
				return true
			}
		}
	case famIP:
		a, ok := parseRequestIP(v)
		if !ok {
			return false
		}
		for _, p := range c.prefixes {
			if p.Contains(a) {
				return true
			}
		}
	case famARN:
		for i := range c.arns {
			if arnMatch(&c.arns[i], v) {
				return true
			}
		}
	}
	return false
}

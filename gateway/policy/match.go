package policy

import (
	"math"
	"net/netip"
	"strconv"
	"strings"
	"time"
	"unicode/utf8"
)

// pattern is a compiled Action or Resource value.
type pattern struct {
	s    string
	kind patternKind
}

type patternKind uint8

const (
	patExact  patternKind = iota // no wildcard: string comparison
	patAll                       // a lone "*"
	patPrefix                    // "<prefix>*", no other wildcard: s is the prefix
	patGlob                      // "*" and "?" wildcards
)

func newPattern(s string) pattern {
	switch {
	case s == "*":
		return pattern{s: s, kind: patAll}
	case strings.IndexAny(s, "*?") == len(s)-1 && s[len(s)-1] == '*':
		return pattern{s: s[:len(s)-1], kind: patPrefix}
	case strings.ContainsAny(s, "*?"):
		return pattern{s: s, kind: patGlob}
	}
	return pattern{s: s, kind: patExact}
}

func (p *pattern) match(s string, fold bool) bool {
	switch p.kind {
	case patAll:
		return true
	case patExact:
		if fold {
			return equalFoldASCII(p.s, s)
		}
		return p.s == s
	case patPrefix:
		if len(s) < len(p.s) {
			return false
		}
		if fold {
			return equalFoldASCII(p.s, s[:len(p.s)])
		}
		return p.s == s[:len(p.s)]
	}
	return globMatch(p.s, s, fold)
}

// matchAny reports whether any of the patterns matches s.
func matchAny(ps []pattern, s string, fold bool) bool {
	for i := range ps {
		if ps[i].match(s, fold) {
			return true
		}
	}
	return false
}

// globMatch reports whether s matches the pattern p, in which "*" stands for
// any run of characters (none included) and "?" for exactly one character;
// every other character stands for itself, or with fold for itself in
// either case (ASCII letters only: actions, the one thing matched with fold,
// are ASCII). There is no escape.
//
// It is the usual iterative matcher that, on a mismatch, lets the last "*"
// absorb one more character: O(len(p)·len(s)) at worst, no recursion, no
// allocation.
func globMatch(p, s string, fold bool) bool {
	pi, si := 0, 0
	star, starS := -1, 0 // position of the last "*" in p, and where in s it began matching
	for si < len(s) {
		if pi < len(p) {
			switch c := p[pi]; c {
			case '*':
				star, starS = pi, si
				pi++
				continue
			case '?':
				pi++
				si += runeLen(s, si)
				continue
			default:
				if c < utf8.RuneSelf && s[si] < utf8.RuneSelf {
					if c == s[si] || (fold && lowerASCII(c) == lowerASCII(s[si])) {
						pi++
						si++
						continue
					}
				} else {
					// Compare the encodings, not the decoded runes: two
					// different invalid bytes both decode to U+FFFD.
					_, pn := utf8.DecodeRuneInString(p[pi:])
					if pn == runeLen(s, si) && p[pi:pi+pn] == s[si:si+pn] {
						pi += pn
						si += pn
						continue
					}
				}
			}
		}
		if star < 0 {
			return false
		}
		pi = star + 1
		starS += runeLen(s, starS)
		si = starS
	}
	for pi < len(p) && p[pi] == '*' {
		pi++
	}
	return pi == len(p)
}

func runeLen(s string, i int) int {
	if s[i] < utf8.RuneSelf {
		return 1
	}
	_, n := utf8.DecodeRuneInString(s[i:])
	return n
}

func lowerASCII(c byte) byte {
	if 'A' <= c && c <= 'Z' {
		return c + ('a' - 'A')
	}
	return c
}

// equalFoldASCII reports whether a and b are equal when ASCII letters are
// compared without regard to case; other bytes must be equal.
func equalFoldASCII(a, b string) bool {
	if len(a) != len(b) {
		return false
	}
	for i := 0; i < len(a); i++ {
		if a[i] != b[i] && lowerASCII(a[i]) != lowerASCII(b[i]) {
			return false
		}
	}
	return true
}

// splitARN splits an ARN, "arn:partition:service:region:account:resource",
// into its six parts; the resource may itself contain colons. It reports
// false for anything that has fewer than six parts or does not begin with
// "arn:".
func splitARN(s string) (parts [6]string, ok bool) {
	for i := 0; i < 5; i++ {
		j := strings.IndexByte(s, ':')
		if j < 0 {
			return parts, false
		}
		parts[i], s = s[:j], s[j+1:]
	}
	parts[5] = s
	return parts, parts[0] == "arn"
}

// arnMatch matches a request value against an ARN pattern part by part, so
// that no wildcard crosses a colon (AWS's ArnLike).
func arnMatch(pat *[6]string, s string) bool {
	for i := 0; i < 5; i++ {
		j := strings.IndexByte(s, ':')
		if j < 0 {
			return false
		}
		if !globMatch(pat[i], s[:j], false) {
			return false
		}
		s = s[j+1:]
	}
	return globMatch(pat[5], s, false)
}

// maxNumberLen bounds the decimals parseNumber reads, which keeps them
// within float64's range (so that strconv.ParseFloat never fails, and never
// allocates an error).
const maxNumberLen = 300

// parseNumber reads a decimal number: an optional sign, digits, and
// optionally a point and more digits. No exponent, no hex, no NaN or Inf.
// Numbers compare as float64: integers beyond 2^53 lose precision.
func parseNumber(s string) (float64, bool) {
	if len(s) == 0 || len(s) > maxNumberLen {
		return 0, false
	}
	i := 0
	if s[0] == '+' || s[0] == '-' {
		i++
	}
	digits := 0
	for i < len(s) && isDigit(s[i]) {
		i++
		digits++
	}
	if digits == 0 {
		return 0, false
	}
	if i < len(s) && s[i] == '.' {
		i++
		frac := 0
		for i < len(s) && isDigit(s[i]) {
			i++
			frac++
		}
		if frac == 0 {
			return 0, false
		}
	}
	if i != len(s) {
		return 0, false
	}
	f, err := strconv.ParseFloat(s, 64)
	if err != nil || math.IsInf(f, 0) || math.IsNaN(f) {
		return 0, false
	}
	return f, true
}

func isDigit(c byte) bool { return '0' <= c && c <= '9' }

// instant is a point in time, as seconds and nanoseconds since the Unix
// epoch; it covers years 0000 to 9999, which time.Duration would not.
type instant struct {
	sec  int64
	nsec int32
}

func (a instant) compare(b instant) int {
	switch {
	case a.sec < b.sec:
		return -1
	case a.sec > b.sec:
		return 1
	case a.nsec < b.nsec:
		return -1
	case a.nsec > b.nsec:
		return 1
	}
	return 0
}

// parseDate reads a date the way AWS's date condition operators accept one:
// epoch seconds (all digits, optionally signed), or a W3C profile of ISO 8601:
//
//	YYYY-MM
//	YYYY-MM-DD
//	YYYY-MM-DDThh:mmTZD
//	YYYY-MM-DDThh:mm:ssTZD
//	YYYY-MM-DDThh:mm:ss.sTZD   (any number of fraction digits; beyond 9 ignored)
//
// where TZD is "Z" or "+hh:mm" or "-hh:mm" and may be omitted (UTC); "T" and
// "Z" may be lower case, as RFC 3339 allows. A date alone means its midnight,
// UTC. RFC 3339 timestamps, such as aws:CurrentTime, are of this form. The
// digits-only form is always epoch seconds, so a bare year "2024" is not
// accepted as a year.
func parseDate(s string) (instant, bool) {
	if s == "" || len(s) > 64 {
		return instant{}, false
	}
	if allDigits(strings.TrimPrefix(s, "-")) {
		if len(s) > 18 {
			return instant{}, false
		}
		n, err := strconv.ParseInt(s, 10, 64)
		if err != nil {
			return instant{}, false
		}
		return instant{sec: n}, true
	}
	// YYYY-MM
	if len(s) < 7 || s[4] != '-' {
		return instant{}, false
	}
	year, ok1 := atoiN(s[0:4])
	month, ok2 := atoiN(s[5:7])
	if !ok1 || !ok2 || month < 1 || month > 12 {
		return instant{}, false
	}
	day := 1
	rest := s[7:]
	if rest != "" {
		if len(rest) < 3 || rest[0] != '-' {
			return instant{}, false
		}
		d, ok := atoiN(rest[1:3])
		if !ok || d < 1 || d > daysIn(month, year) {
			return instant{}, false
		}
		day = d
		rest = rest[3:]
	} else {
		return dateInstant(year, month, day, 0, 0, 0, 0, 0), true
	}
	if rest == "" {
		return dateInstant(year, month, day, 0, 0, 0, 0, 0), true
	}
	if rest[0] != 'T' && rest[0] != 't' {
		return instant{}, false
	}
	rest = rest[1:]
	// hh:mm
	if len(rest) < 5 || rest[2] != ':' {
		return instant{}, false
	}
	hour, ok1 := atoiN(rest[0:2])
	minute, ok2 := atoiN(rest[3:5])
	if !ok1 || !ok2 || hour > 23 || minute > 59 {
		return instant{}, false
	}
	rest = rest[5:]
	sec, nsec := 0, 0
	if rest != "" && rest[0] == ':' {
		if len(rest) < 3 {
			return instant{}, false
		}
		sc, ok := atoiN(rest[1:3])
		if !ok || sc > 60 { // 60: a leap second, as RFC 3339 allows
			return instant{}, false
		}
		sec = sc
		rest = rest[3:]
		if rest != "" && rest[0] == '.' {
			i := 1
			scale := 100000000
			for i < len(rest) && isDigit(rest[i]) {
				nsec += int(rest[i]-'0') * scale
				scale /= 10
				i++
			}
			if i == 1 {
				return instant{}, false
			}
			rest = rest[i:]
		}
	}
	offset := 0 // seconds east of UTC
	switch {
	case rest == "" || rest == "Z" || rest == "z":
	case len(rest) == 6 && (rest[0] == '+' || rest[0] == '-') && rest[3] == ':':
		oh, ok1 := atoiN(rest[1:3])
		om, ok2 := atoiN(rest[4:6])
		if !ok1 || !ok2 || oh > 23 || om > 59 {
			return instant{}, false
		}
		offset = oh*3600 + om*60
		if rest[0] == '-' {
			offset = -offset
		}
	default:
		return instant{}, false
	}
	return dateInstant(year, month, day, hour, minute, sec, nsec, offset), true
}

func dateInstant(year, month, day, hour, minute, sec, nsec, offset int) instant {
	t := time.Date(year, time.Month(month), day, hour, minute, sec, nsec, time.UTC)
	return instant{sec: t.Unix() - int64(offset), nsec: int32(t.Nanosecond())}
}

func daysIn(month, year int) int {
	switch month {
	case 2:
		if year%4 == 0 && (year%100 != 0 || year%400 == 0) {
			return 29
		}
		return 28
	case 4, 6, 9, 11:
		return 30
	}
	return 31
}

// atoiN reads a non-empty string of decimal digits.
func atoiN(s string) (int, bool) {
	if s == "" {
		return 0, false
	}
	n := 0
	for i := 0; i < len(s); i++ {
		if !isDigit(s[i]) {
			return 0, false
		}
		n = n*10 + int(s[i]-'0')
	}
	return n, true
}

func allDigits(s string) bool {
	if s == "" {
		return false
	}
	for i := 0; i < len(s); i++ {
		if !isDigit(s[i]) {
			return false
		}
	}
	return true
}

// parsePrefix reads an IpAddress policy value: a CIDR range, or an address
// standing for itself alone. Zones are refused; host bits are cleared.
func parsePrefix(s string) (netip.Prefix, bool) {
	if strings.IndexByte(s, '/') >= 0 {
		p, err := netip.ParsePrefix(s)
		if err != nil {
			return netip.Prefix{}, false
		}
		return p.Masked(), true
	}
	a, err := netip.ParseAddr(s)
	if err != nil || a.Zone() != "" {
		return netip.Prefix{}, false
	}
	a = a.Unmap()
	return netip.PrefixFrom(a, a.BitLen()), true
}

// parseRequestIP reads a request's IP address (aws:SourceIp).
func parseRequestIP(s string) (netip.Addr, bool) {
	if s == "" || len(s) > 64 || strings.IndexByte(s, '%') >= 0 {
		return netip.Addr{}, false
	}
	a, err := netip.ParseAddr(s)
	if err != nil {
		return netip.Addr{}, false
	}
	return a.Unmap(), true
}

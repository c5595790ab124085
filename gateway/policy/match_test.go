package policy

import (
	"regexp"
	"strings"
	"testing"
	"time"
	"unicode/utf8"
)

func TestGlobMatch(t *testing.T) {
	for _, c := range []struct {
		p, s string
		fold bool
		want bool
	}{
		{"", "", false, true},
		{"", "a", false, false},
		{"*", "", false, true},
		{"*", "anything:at/all", false, true},
		{"a*", "a", false, true},
		{"a*", "ba", false, false},
		{"*a", "bca", false, true},
		{"*a", "bcab", false, false},
		{"a*b*c", "aXbYc", false, true},
		{"a*b*c", "aXbYcZ", false, false},
		{"a*b*c", "abbbc", false, true},
		{"a**b", "ab", false, true},
		{"?", "é", false, true},
		{"?", "", false, false},
		{"??", "é", false, false},
		{"h?llo", "hallo", false, true},
		{"h?llo", "hllo", false, false},
		{"*ab", "aab", false, true},
		{"*aab", "aaab", false, true},
		{"*a*a*a*b", strings.Repeat("a", 50), false, false},
		{"kms:encrypt", "KMS:Encrypt", true, true},
		{"kms:encrypt", "KMS:Encrypt", false, false},
		{"kms:gen*", "kms:GenerateMac", true, true},
		{"é*", "é!", true, true},
		{"é*", "É!", true, false}, // folding is for ASCII letters only
		{"k", "K", true, true},
		{"K", "\u212a", true, false}, // the Kelvin sign is not K
	} {
		if got := globMatch(c.p, c.s, c.fold); got != c.want {
			t.Errorf("globMatch(%q, %q, %v) = %v", c.p, c.s, c.fold, got)
		}
	}
}

func TestParseDate(t *testing.T) {
	utc := func(s string) instant {
		tm, err := time.Parse(time.RFC3339Nano, s)
		if err != nil {
			t.Fatal(err)
		}
		return instant{sec: tm.Unix(), nsec: int32(tm.Nanosecond())}
	}
	for _, c := range []struct {
		in   string
		want instant
	}{
		{"2026-01-31", utc("2026-01-31T00:00:00Z")},
		{"2026-01", utc("2026-01-01T00:00:00Z")},
		{"2024-02-29", utc("2024-02-29T00:00:00Z")},
		{"2026-01-31T12:34Z", utc("2026-01-31T12:34:00Z")},
		{"2026-01-31T12:34:56Z", utc("2026-01-31T12:34:56Z")},
		{"2026-01-31t12:34:56z", utc("2026-01-31T12:34:56Z")},
		{"2026-01-31T12:34:56", utc("2026-01-31T12:34:56Z")},
		{"2026-01-31T12:34:56.5Z", utc("2026-01-31T12:34:56.5Z")},
		{"2026-01-31T12:34:56.123456789123Z", utc("2026-01-31T12:34:56.123456789Z")},
		{"2026-01-31T12:34:56+05:30", utc("2026-01-31T07:04:56Z")},
		{"2026-01-31T00:00:00-08:00", utc("2026-01-31T08:00:00Z")},
		{"1767225600", utc("2026-01-01T00:00:00Z")},
		{"0", utc("1970-01-01T00:00:00Z")},
		{"2026", utc("1970-01-01T00:33:46Z")}, // all digits: epoch seconds, not a year
		{"-86400", utc("1969-12-31T00:00:00Z")},
	} {
		got, ok := parseDate(c.in)
		if !ok || got != c.want {
			t.Errorf("parseDate(%q) = %v, %v; want %v", c.in, got, ok, c.want)
		}
	}
	for _, bad := range []string{
		"", "-", "26-01-31", "2026-1-31", "2026-13-01", "2026-00-10", "2026-02-29", "2026-04-31",
		"2026-01-31T", "2026-01-31T12", "2026-01-31T24:00Z", "2026-01-31T12:60Z", "2026-01-31T12:00:61Z",
		"2026-01-31T12:00:00.Z", "2026-01-31T12:00:00+01", "2026-01-31T12:00:00+0100", "2026-01-31T12:00:00+24:00",
		"2026-01-31 12:00:00Z", "2026-01-31T12:00:00ZZ", "1e9", "12345678901234567890", "yesterday",
	} {
		if got, ok := parseDate(bad); ok {
			t.Errorf("parseDate(%q) = %v, accepted", bad, got)
		}
	}
}

func TestParseNumber(t *testing.T) {
	for in, want := range map[string]float64{"0": 0, "10": 10, "-2.5": -2.5, "+3": 3, "007": 7, "3600.000": 3600} {
		if got, ok := parseNumber(in); !ok || got != want {
			t.Errorf("parseNumber(%q) = %v, %v", in, got, ok)
		}
	}
	for _, bad := range []string{"", "-", ".5", "5.", "1e3", "0x10", "1_000", "NaN", "Inf", " 1", "1 ", strings.Repeat("9", 400)} {
		if got, ok := parseNumber(bad); ok {
			t.Errorf("parseNumber(%q) = %v, accepted", bad, got)
		}
	}
}

func TestSplitARN(t *testing.T) {
	parts, ok := splitARN("arn:aws:kms:us-east-1:111122223333:key/a:b")
	if !ok || parts != [6]string{"arn", "aws", "kms", "us-east-1", "111122223333", "key/a:b"} {
		t.Errorf("got %q, %v", parts, ok)
	}
	for _, bad := range []string{"", "arn:aws:kms:us-east-1", "urn:aws:kms:us-east-1:111122223333:key/a", "arn"} {
		if _, ok := splitARN(bad); ok {
			t.Errorf("splitARN(%q) accepted", bad)
		}
	}
}

func TestPattern(t *testing.T) {
	for _, c := range []struct {
		p, s string
		fold bool
		kind patternKind
		want bool
	}{
		{"*", "", true, patAll, true},
		{"kms:*", "KMS:Encrypt", true, patPrefix, true},
		{"kms:*", "kms", true, patPrefix, false},
		{"kms:Generate*", "kms:generatedatakey", true, patPrefix, true},
		{"kms:Generate*", "kms:GenerateMac", false, patPrefix, true},
		{"arn:aws:kms:*", "arn:aws:KMS:x", false, patPrefix, false},
		{"kms:Key*", "kms:\u212aeyX", true, patPrefix, false},
		{"kms:Encrypt", "KMS:ENCRYPT", true, patExact, true},
		{"kms:Encrypt", "KMS:ENCRYPT", false, patExact, false},
		{"kms:Encrypt", "kms:Encrypt ", true, patExact, false},
		{"kms:*Key", "kms:DescribeKey", true, patGlob, true},
		{"kms:Re?ncrypt*", "kms:ReEncryptTo", true, patGlob, true},
		{"kms:Re?ncrypt*", "kms:Encrypt", true, patGlob, false},
	} {
		p := newPattern(c.p)
		if p.kind != c.kind {
			t.Errorf("newPattern(%q) kind %d, want %d", c.p, p.kind, c.kind)
		}
		if got := p.match(c.s, c.fold); got != c.want {
			t.Errorf("pattern %q matching %q (fold %v) = %v", c.p, c.s, c.fold, got)
		}
		if got := globMatch(c.p, c.s, c.fold); got != c.want {
			t.Errorf("globMatch(%q, %q, %v) = %v, unlike the compiled pattern", c.p, c.s, c.fold, got)
		}
	}
}

// FuzzGlob compares globMatch with the equivalent regular expression.
func FuzzGlob(f *testing.F) {
	f.Add("a*b?c", "aXXbYc")
	f.Add("*é?", "xéé")
	f.Add("kms:Re*", "KMS:ReEncryptFrom")
	f.Add("\xff*", "\xfe")
	f.Fuzz(func(t *testing.T, p, s string) {
		if len(p) > 64 || len(s) > 256 {
			return
		}
		var re strings.Builder
		re.WriteString(`^(?s:`)
		for _, r := range p {
			switch r {
			case '*':
				re.WriteString(`.*`)
			case '?':
				re.WriteString(`.`)
			default:
				re.WriteString(regexp.QuoteMeta(string(r)))
			}
		}
		re.WriteString(`)$`)
		if !utf8.ValidString(p) || !utf8.ValidString(s) {
			// regexp reads invalid bytes as U+FFFD; compare only the
			// wildcard-free case, where matching must be byte equality.
			if !strings.ContainsAny(p, "*?") && globMatch(p, s, false) != (p == s) {
				t.Fatalf("globMatch(%q, %q) != (p == s)", p, s)
			}
			return
		}
		want := regexp.MustCompile(re.String()).MatchString(s)
		if got := globMatch(p, s, false); got != want {
			t.Fatalf("globMatch(%q, %q) = %v, regexp %s says %v", p, s, got, re.String(), want)
		}
		if got, want := globMatch(p, s, true), globMatch(lowerASCIIString(p), lowerASCIIString(s), false); got != want {
			t.Fatalf("globMatch(%q, %q, fold) = %v, %v on lower-cased strings", p, s, got, want)
		}
	})
}

func lowerASCIIString(s string) string {
	b := []byte(s)
	for i, c := range b {
		b[i] = lowerASCII(c)
	}
	return string(b)
}

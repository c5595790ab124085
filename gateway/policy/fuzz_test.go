package policy

import (
	"encoding/json"
	"errors"
	"strings"
	"testing"
	"unicode/utf8"
)

// fuzzRequests are evaluated against every policy the fuzzer gets parsed.
var fuzzRequests = []*Request{
	{Principals: []string{alice}, Account: testAccount, Action: "kms:Encrypt", Resource: keyARN,
		Context: MapContext{"kms:encryptioncontext:app": {"billing"}, "kms:encryptioncontextkeys": {"app"}, "aws:sourceip": {"203.0.113.7"}, "aws:currenttime": {"2026-03-01T10:00:00Z"}}},
	{Admin: true, Account: testAccount, Action: "kms:PutKeyPolicy", Resource: keyARN, Context: MapContext{}},
	{Principals: []string{bob, appRole}, Account: testAccount, Action: "kms:Decrypt", Resource: "arn:aws:kms:eu-west-1:111122223333:key/x",
		Context: MapContext{"aws:sourceip": {"2001:db8::1"}, "aws:multifactorauthage": {"12.5"}, "aws:sourcearn": {"arn:aws:iam::444455556666:role/x"}, "aws:securetransport": {"true"}, "kms:encryptioncontextkeys": {}}},
	{Principals: []string{"arn:aws:iam::444455556666:root", "é?*"}, Account: "", Action: "", Resource: "",
		Context: MapContext{"aws:sourceip": {"not an ip"}, "aws:currenttime": {"1767225600", "garbage"}, "kms:encryptioncontext:app": {"", "*"}}},
	{},
}

// FuzzParse checks that Parse never panics, refuses with a short *Error,
// and that a policy it accepts evaluates without panicking and the same way
// when parsed again. The seed corpus is in testdata/fuzz/FuzzParse.
func FuzzParse(f *testing.F) {
	f.Add([]byte(DefaultKeyPolicy(testAccount, alice)))
	f.Add([]byte(withCondition(`{"StringEquals":{"kms:EncryptionContext:app":"billing"},"ForAllValues:StringLike":{"kms:EncryptionContextKeys":["app","t*"]}}`)))
	f.Add([]byte(`{"Statement":{"Effect":"Deny","NotPrincipal":{"AWS":["111122223333","arn:aws:iam::444455556666:root"]},"NotAction":"kms:Describe*","NotResource":"arn:aws:kms:*:111122223333:key/?"}}`))
	f.Fuzz(func(t *testing.T, data []byte) {
		p, err := Parse(data)
		if err != nil {
			var pe *Error
			if !errors.As(err, &pe) || p != nil {
				t.Fatalf("Parse returned %T %v and policy %v", err, err, p)
			}
			if pe.Msg == "" || len(pe.Msg) > 400 || strings.ContainsAny(pe.Msg, "\n\r") || !utf8.ValidString(pe.Msg) {
				t.Fatalf("bad message %q", pe.Msg)
			}
			return
		}
		if len(p.Statements) == 0 || (p.Version != Version2012 && p.Version != Version2008) {
			t.Fatalf("accepted policy %+v", p)
		}
		for _, s := range p.Statements {
			if s.Effect != "Allow" && s.Effect != "Deny" {
				t.Fatalf("statement effect %q", s.Effect)
			}
		}
		again, err := Parse(data)
		if err != nil {
			t.Fatalf("second parse: %v", err)
		}
		for i, r := range fuzzRequests {
			d := p.Evaluate(r)
			if d != NotApplicable && d != Allow && d != Deny {
				t.Fatalf("request %d: decision %d", i, d)
			}
			if d2 := again.Evaluate(r); d2 != d {
				t.Fatalf("request %d: %v, then %v from a second parse", i, d, d2)
			}
		}
	})
}

// FuzzConditionNegation checks, for every operator with a negated twin,
// that the twin holds exactly when the operator does not, that IfExists
// changes nothing when the key is present, and the missing-key rules.
func FuzzConditionNegation(f *testing.F) {
	f.Add(uint8(0), "billing", "billing")
	f.Add(uint8(2), "bill*", "billing")
	f.Add(uint8(3), "10.5", "10.50")
	f.Add(uint8(4), "2026-01-31T00:00:00Z", "2026-01-31")
	f.Add(uint8(5), "203.0.113.0/24", "203.0.113.7")
	f.Add(uint8(6), "arn:aws:iam::*:role/*", "arn:aws:iam::111122223333:role/x")
	pairs := [][2]string{
		{"StringEquals", "StringNotEquals"},
		{"StringEqualsIgnoreCase", "StringNotEqualsIgnoreCase"},
		{"StringLike", "StringNotLike"},
		{"NumericEquals", "NumericNotEquals"},
		{"DateEquals", "DateNotEquals"},
		{"IpAddress", "NotIpAddress"},
		{"ArnLike", "ArnNotLike"},
		{"ArnEquals", "ArnNotEquals"},
	}
	f.Fuzz(func(t *testing.T, which uint8, policyValue, requestValue string) {
		pair := pairs[int(which)%len(pairs)]
		value, err := json.Marshal(policyValue)
		if err != nil {
			return
		}
		parse := func(op string) *Policy {
			p, err := Parse([]byte(withCondition(`{"` + op + `":{"aws:k":` + string(value) + `}}`)))
			if err != nil {
				return nil
			}
			return p
		}
		pos, neg, posIf := parse(pair[0]), parse(pair[1]), parse(pair[0]+"IfExists")
		if (pos == nil) != (neg == nil) || (pos == nil) != (posIf == nil) {
			t.Fatalf("%s, %s and IfExists disagree on accepting %q", pair[0], pair[1], policyValue)
		}
		if pos == nil {
			return
		}
		present := req(ctx(MapContext{"aws:k": {requestValue}}))
		dp, dn, di := pos.Evaluate(present), neg.Evaluate(present), posIf.Evaluate(present)
		if (dp == Allow) == (dn == Allow) {
			t.Fatalf("%s gives %v and %s gives %v for policy %q, request %q", pair[0], dp, pair[1], dn, policyValue, requestValue)
		}
		if di != dp {
			t.Fatalf("IfExists changed %v to %v with the key present", dp, di)
		}
		missing := req()
		if pos.Evaluate(missing) != NotApplicable || neg.Evaluate(missing) != Allow || posIf.Evaluate(missing) != Allow {
			t.Fatalf("missing key: %v, %v, %v", pos.Evaluate(missing), neg.Evaluate(missing), posIf.Evaluate(missing))
		}
	})
}

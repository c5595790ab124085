package policy

import (
	"strings"
	"testing"
)

const (
	testAccount = "111122223333"
	otherAcct   = "444455556666"
	keyARN      = "arn:aws:kms:us-east-1:111122223333:key/1234abcd-12ab-34cd-56ef-1234567890ab"
	alice       = "arn:aws:iam::111122223333:user/alice"
	bob         = "arn:aws:iam::111122223333:user/bob"
	appRole     = "arn:aws:iam::111122223333:role/app"
	rootARN     = "arn:aws:iam::111122223333:root"
)

// doc makes a 2012-10-17 policy document of the given statements.
func doc(stmts ...string) string {
	return `{"Version":"2012-10-17","Statement":[` + strings.Join(stmts, ",") + `]}`
}

// aliceAllow is the body of a statement allowing alice kms:Encrypt.
const aliceAllow = `"Effect":"Allow","Principal":{"AWS":"` + alice + `"},"Action":"kms:Encrypt","Resource":"*"`

// st makes a statement from aliceAllow plus extra members.
func st(extra string) string {
	if extra == "" {
		return "{" + aliceAllow + "}"
	}
	return "{" + aliceAllow + "," + extra + "}"
}

// withCondition makes a policy with one statement allowing alice kms:Encrypt
// under the given Condition element.
func withCondition(cond string) string { return doc(st(`"Condition":` + cond)) }

// req makes a request from alice for kms:Encrypt on keyARN, then applies
// the changes.
func req(changes ...func(*Request)) *Request {
	r := &Request{Principals: []string{alice}, Account: testAccount, Action: "kms:Encrypt", Resource: keyARN}
	for _, c := range changes {
		c(r)
	}
	return r
}

func as(principals ...string) func(*Request) {
	return func(r *Request) { r.Principals = principals }
}

func admin(r *Request) { r.Admin = true }

func action(a string) func(*Request) { return func(r *Request) { r.Action = a } }

func resource(a string) func(*Request) { return func(r *Request) { r.Resource = a } }

func account(a string) func(*Request) { return func(r *Request) { r.Account = a } }

func ctx(c Context) func(*Request) { return func(r *Request) { r.Context = c } }

func mustParse(t testing.TB, s string) *Policy {
	t.Helper()
	p, err := Parse([]byte(s))
	if err != nil {
		t.Fatalf("Parse: %v\n%s", err, s)
	}
	return p
}

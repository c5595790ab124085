package policy

import (
	"errors"
	"strings"
	"testing"
)

// TestParseRules checks each validation rule with a document that breaks it
// (and must fail with a message containing want) and a twin that differs
// only in the point the rule is about (and must parse).
func TestParseRules(t *testing.T) {
	pad := func(n int) string { // a valid document of exactly n bytes
		d := doc(st(""))
		return d[:len(d)-1] + strings.Repeat(" ", n-len(d)) + "}"
	}
	cases := []struct {
		name    string
		bad, ok string
		want    string
	}{
		// The document.
		{"size limit", pad(MaxSize + 1), pad(MaxSize), "is 32769 bytes; the limit is 32768"},
		{"character outside Latin-1", doc(st(`"Sid":"Ā"`)), doc(st(`"Sid":"é"`)), "character U+0100 at byte offset"},
		{"control character", doc(st(`"Sid":"a` + "\x01" + `"`)), doc(st("\"Sid\":\"a\"\t")), "character U+0001"},
		{"DEL", doc(st(`"Sid":"a` + "\x7f" + `"`)), doc(st(`"Sid":"a~"`)), "character U+007F"},
		{"C1 control", doc(st(`"Sid":"a` + "\u0085" + `"`)), doc(st(`"Sid":"a` + "\u00a0" + `"`)), "character U+0085"},
		{"invalid UTF-8", doc(st(`"Sid":"a` + "\xe9" + `"`)), doc(st(`"Sid":"a` + "\u00e9" + `"`)), "not valid UTF-8"},
		{"empty document", " \n", doc(st("")), "empty"},
		{"truncated JSON", doc(st(""))[:40], doc(st("")), "invalid JSON"},
		{"JSON syntax", strings.Replace(doc(st("")), `"Effect":`, `"Effect" `, 1), doc(st("")), "invalid JSON at byte offset"},
		{"trailing data", doc(st("")) + " {}", doc(st("")) + " \n", "unexpected data after the policy document"},
		{"not an object", `[` + doc(st("")) + `]`, doc(st("")), "must be a JSON object, not a list"},
		{"duplicate element", `{"Version":"2012-10-17","Version":"2012-10-17","Statement":` + st("") + `}`, `{"Version":"2012-10-17","Statement":` + st("") + `}`, `element "Version" appears twice`},
		{"duplicate element in a statement", doc(st(`"Effect":"Deny"`)), doc(st(`"Sid":"x"`)), `element "Effect" appears twice`},
		{"too deep", withCondition(`{"StringEquals":{"aws:x":` + strings.Repeat("[", 20) + strings.Repeat("]", 20) + `}}`), withCondition(`{"StringEquals":{"aws:x":["a"]}}`), "nested more than 16 levels"},

		// Top level.
		{"unknown top-level element", `{"Version":"2012-10-17","Comment":"x","Statement":` + st("") + `}`, `{"Version":"2012-10-17","Id":"x","Statement":` + st("") + `}`, `unknown element "Comment"`},
		{"element name case", `{"version":"2012-10-17","Statement":` + st("") + `}`, `{"Statement":` + st("") + `}`, `unknown element "version" (element names are case-sensitive: "Version")`},
		{"unknown Version", `{"Version":"2012-10-18","Statement":` + st("") + `}`, `{"Version":"2008-10-17","Statement":` + st("") + `}`, `Version: must be "2012-10-17" or "2008-10-17", not "2012-10-18"`},
		{"Version type", `{"Version":2012,"Statement":` + st("") + `}`, `{"Version":"2012-10-17","Statement":` + st("") + `}`, "Version: must be a string, not a number"},
		{"Id type", `{"Id":["x"],"Statement":` + st("") + `}`, `{"Id":"x","Statement":` + st("") + `}`, "Id: must be a string, not a list"},
		{"no Statement", `{"Version":"2012-10-17"}`, `{"Version":"2012-10-17","Statement":` + st("") + `}`, "the policy has no Statement"},
		{"empty Statement list", `{"Version":"2012-10-17","Statement":[]}`, `{"Version":"2012-10-17","Statement":[` + st("") + `]}`, "Statement: must hold at least one statement"},
		{"Statement type", `{"Statement":"x"}`, `{"Statement":` + st("") + `}`, "Statement: must be an object or a list of objects, not a string"},
		{"statement type", doc(`"x"`), doc(st("")), "Statement[0]: must be an object, not a string"},

		// Statement elements.
		{"unknown statement element", doc(st(`"Sids":"x"`)), doc(st(`"Sid":"x"`)), `Statement[0]: unknown element "Sids"`},
		{"Sid type", doc(st(`"Sid":1`)), doc(st(`"Sid":"1"`)), "Statement[0].Sid: must be a string, not a number"},
		{"duplicate Sid", doc(st(`"Sid":"a"`), st(`"Sid":"b"`), st(`"Sid":"a"`)), doc(st(`"Sid":"a"`), st(`"Sid":"b"`), st(`"Sid":"c"`)), `Statement[2].Sid: duplicate Sid "a" (also in Statement[0])`},
		{"missing Effect", doc(`{"Principal":"*","Action":"kms:Encrypt","Resource":"*"}`), doc(`{"Effect":"Deny","Principal":"*","Action":"kms:Encrypt","Resource":"*"}`), "Statement[0]: Effect is required"},
		{"Effect case", doc(`{"Effect":"allow","Principal":"*","Action":"kms:Encrypt","Resource":"*"}`), doc(`{"Effect":"Allow","Principal":"*","Action":"kms:Encrypt","Resource":"*"}`), `Statement[0].Effect: must be "Allow" or "Deny", not "allow"`},
		{"Effect type", doc(`{"Effect":true,"Principal":"*","Action":"kms:Encrypt","Resource":"*"}`), doc(`{"Effect":"Allow","Principal":"*","Action":"kms:Encrypt","Resource":"*"}`), "Statement[0].Effect: must be a string, not a boolean"},

		// Principal.
		{"missing Principal", doc(`{"Effect":"Allow","Action":"kms:Encrypt","Resource":"*"}`), doc(`{"Effect":"Allow","NotPrincipal":{"AWS":"` + bob + `"},"Action":"kms:Encrypt","Resource":"*"}`), "Statement[0]: Principal (or NotPrincipal) is required in a key policy statement"},
		{"Principal and NotPrincipal", doc(st(`"NotPrincipal":{"AWS":"` + bob + `"}`)), doc(st("")), "Statement[0]: a statement may have Principal or NotPrincipal, not both"},
		{"Principal wildcard in account", doc(`{"Effect":"Allow","Principal":{"AWS":"arn:aws:iam::*:root"},"Action":"kms:Encrypt","Resource":"*"}`), doc(`{"Effect":"Allow","Principal":{"AWS":"*"},"Action":"kms:Encrypt","Resource":"*"}`), `Statement[0].Principal.AWS: invalid principal "arn:aws:iam::*:root": wildcards are not allowed`},
		{"Principal wildcard in name", doc(`{"Effect":"Allow","Principal":{"AWS":["` + alice + `","arn:aws:iam::111122223333:user/a?"]},"Action":"kms:Encrypt","Resource":"*"}`), doc(`{"Effect":"Allow","Principal":{"AWS":["` + alice + `","*"]},"Action":"kms:Encrypt","Resource":"*"}`), "wildcards are not allowed in a principal"},
		{"Principal wildcard in Service", doc(`{"Effect":"Allow","Principal":{"Service":"*.amazonaws.com"},"Action":"kms:Encrypt","Resource":"*"}`), doc(`{"Effect":"Allow","Principal":{"Service":"ec2.amazonaws.com"},"Action":"kms:Encrypt","Resource":"*"}`), "wildcards are not allowed"},
		{"Principal string", doc(`{"Effect":"Allow","Principal":"` + alice + `","Action":"kms:Encrypt","Resource":"*"}`), doc(`{"Effect":"Allow","Principal":"*","Action":"kms:Encrypt","Resource":"*"}`), `Statement[0].Principal: must be "*" or an object`},
		{"Principal empty object", doc(`{"Effect":"Allow","Principal":{},"Action":"kms:Encrypt","Resource":"*"}`), doc(`{"Effect":"Allow","Principal":{"AWS":"111122223333"},"Action":"kms:Encrypt","Resource":"*"}`), "Statement[0].Principal: must name at least one principal"},
		{"Principal type", doc(`{"Effect":"Allow","Principal":{"IAM":"x"},"Action":"kms:Encrypt","Resource":"*"}`), doc(`{"Effect":"Allow","Principal":{"CanonicalUser":"x"},"Action":"kms:Encrypt","Resource":"*"}`), `Statement[0].Principal: unknown element "IAM"`},
		{"Principal not an ARN", doc(`{"Effect":"Allow","Principal":{"AWS":"alice"},"Action":"kms:Encrypt","Resource":"*"}`), doc(`{"Effect":"Allow","Principal":{"AWS":"` + alice + `"},"Action":"kms:Encrypt","Resource":"*"}`), `invalid principal "alice": expected an ARN, a 12-digit account id or "*"`},
		{"Principal short account id", doc(`{"Effect":"Allow","Principal":{"AWS":"11112222333"},"Action":"kms:Encrypt","Resource":"*"}`), doc(`{"Effect":"Allow","Principal":{"AWS":"111122223333"},"Action":"kms:Encrypt","Resource":"*"}`), "invalid principal"},
		{"Principal ARN without resource", doc(`{"Effect":"Allow","Principal":{"AWS":"arn:aws:iam::111122223333:"},"Action":"kms:Encrypt","Resource":"*"}`), doc(`{"Effect":"Allow","Principal":{"AWS":"arn:aws:iam::111122223333:root"},"Action":"kms:Encrypt","Resource":"*"}`), "invalid principal"},
		{"Principal with a space", doc(`{"Effect":"Allow","Principal":{"AWS":"arn:aws:iam::111122223333:user/a b"},"Action":"kms:Encrypt","Resource":"*"}`), doc(`{"Effect":"Allow","Principal":{"AWS":"arn:aws:iam::111122223333:user/a+b"},"Action":"kms:Encrypt","Resource":"*"}`), "space or control character"},
		{"Principal empty list", doc(`{"Effect":"Allow","Principal":{"AWS":[]},"Action":"kms:Encrypt","Resource":"*"}`), doc(`{"Effect":"Allow","Principal":{"AWS":["*"]},"Action":"kms:Encrypt","Resource":"*"}`), "Statement[0].Principal.AWS: must not be an empty list"},
		{"Principal list element type", doc(`{"Effect":"Allow","Principal":{"AWS":["*",1]},"Action":"kms:Encrypt","Resource":"*"}`), doc(`{"Effect":"Allow","Principal":{"AWS":["*","111122223333"]},"Action":"kms:Encrypt","Resource":"*"}`), "Statement[0].Principal.AWS[1]: must be a string, not a number"},

		// Action.
		{"missing Action", doc(`{"Effect":"Allow","Principal":"*","Resource":"*"}`), doc(`{"Effect":"Allow","Principal":"*","NotAction":"kms:Decrypt","Resource":"*"}`), "Statement[0]: Action (or NotAction) is required"},
		{"Action and NotAction", doc(`{"Effect":"Allow","Principal":"*","Action":"kms:*","NotAction":"kms:Decrypt","Resource":"*"}`), doc(`{"Effect":"Allow","Principal":"*","Action":"kms:*","Resource":"*"}`), "may have Action or NotAction, not both"},
		{"Action of another service", doc(`{"Effect":"Allow","Principal":"*","Action":["kms:Encrypt","s3:GetObject"],"Resource":"*"}`), doc(`{"Effect":"Allow","Principal":"*","Action":["kms:Encrypt","KMS:get*"],"Resource":"*"}`), `Statement[0].Action: "s3:GetObject" is not a KMS action`},
		{"hsmgate action of another name space", doc(`{"Effect":"Allow","Principal":"*","Action":"hsmgatex:ExportKey","Resource":"*"}`), doc(`{"Effect":"Allow","Principal":"*","Action":"hsmgate:ExportKey","Resource":"*"}`), "is not a KMS action"},
		{"hsmgate bare prefix", doc(`{"Effect":"Allow","Principal":"*","Action":"hsmgate:","Resource":"*"}`), doc(`{"Effect":"Allow","Principal":"*","Action":"HSMGATE:Export*","Resource":"*"}`), "is not a KMS action"},
		{"Action bare prefix", doc(`{"Effect":"Allow","Principal":"*","Action":"kms:","Resource":"*"}`), doc(`{"Effect":"Allow","Principal":"*","Action":"kms:?","Resource":"*"}`), "is not a KMS action"},
		{"Action characters", doc(`{"Effect":"Allow","Principal":"*","Action":"kms:Encrypt ","Resource":"*"}`), doc(`{"Effect":"Allow","Principal":"*","Action":"kms:Encrypt","Resource":"*"}`), `invalid action "kms:Encrypt "`},
		{"Action empty list", doc(`{"Effect":"Allow","Principal":"*","Action":[],"Resource":"*"}`), doc(`{"Effect":"Allow","Principal":"*","Action":["*"],"Resource":"*"}`), "Statement[0].Action: must not be an empty list"},
		{"Action type", doc(`{"Effect":"Allow","Principal":"*","Action":{"kms":"Encrypt"},"Resource":"*"}`), doc(`{"Effect":"Allow","Principal":"*","Action":"kms:Encrypt","Resource":"*"}`), "Statement[0].Action: must be a string or a list of strings, not an object"},

		// Resource.
		{"missing Resource", doc(`{"Effect":"Allow","Principal":"*","Action":"kms:*"}`), doc(`{"Effect":"Allow","Principal":"*","Action":"kms:*","NotResource":"arn:aws:kms:*:111122223333:alias/*"}`), "Statement[0]: Resource (or NotResource) is required"},
		{"Resource and NotResource", doc(st(`"NotResource":"*"`)), doc(st("")), "may have Resource or NotResource, not both"},
		{"Resource not an ARN", doc(`{"Effect":"Allow","Principal":"*","Action":"kms:*","Resource":"key/1234"}`), doc(`{"Effect":"Allow","Principal":"*","Action":"kms:*","Resource":"arn:aws:kms:us-east-1:111122223333:key/1234"}`), `Statement[0].Resource: invalid resource "key/1234"`},

		// Condition.
		{"unknown operator", withCondition(`{"StringEqualz":{"aws:x":"a"}}`), withCondition(`{"StringEquals":{"aws:x":"a"}}`), `Statement[0].Condition: unknown operator "StringEqualz"`},
		{"operator case", withCondition(`{"stringEquals":{"aws:x":"a"}}`), withCondition(`{"StringEquals":{"aws:x":"a"}}`), `unknown operator "stringEquals"`},
		{"unknown qualifier", withCondition(`{"ForEachValue:StringEquals":{"aws:x":"a"}}`), withCondition(`{"ForAnyValue:StringEquals":{"aws:x":"a"}}`), `unknown operator "ForEachValue:StringEquals"`},
		{"IfExists on an unknown operator", withCondition(`{"BinaryEqualsIfExists":{"aws:x":"YQ=="}}`), withCondition(`{"StringEqualsIfExists":{"aws:x":"YQ=="}}`), `unknown operator "BinaryEqualsIfExists"`},
		{"Null with IfExists", withCondition(`{"NullIfExists":{"aws:x":"true"}}`), withCondition(`{"Null":{"aws:x":"true"}}`), "Null does not take the IfExists suffix"},
		{"Null with a qualifier", withCondition(`{"ForAllValues:Null":{"aws:x":"true"}}`), withCondition(`{"ForAllValues:StringLikeIfExists":{"aws:x":"a*"}}`), "Null does not take a ForAllValues: or ForAnyValue: qualifier"},
		{"Condition type", withCondition(`["StringEquals"]`), withCondition(`{}`), "Statement[0].Condition: must be an object"},
		{"operator block type", withCondition(`{"StringEquals":"aws:x"}`), withCondition(`{"StringEquals":{"aws:x":""}}`), "Statement[0].Condition.StringEquals: must be an object"},
		{"empty operator block", withCondition(`{"StringEquals":{}}`), withCondition(`{"StringEquals":{"aws:x":"a"}}`), "Statement[0].Condition.StringEquals: names no condition key"},
		{"condition key without prefix", withCondition(`{"IpAddress":{"SourceIp":"10.0.0.0/8"}}`), withCondition(`{"IpAddress":{"aws:SourceIp":"10.0.0.0/8"}}`), `invalid condition key "SourceIp"`},
		{"condition key with a space", withCondition(`{"StringEquals":{"kms:EncryptionContext:a b":"x"}}`), withCondition(`{"StringEquals":{"kms:EncryptionContext:a-b":"x"}}`), "space or control character"},
		{"empty value list", withCondition(`{"StringEquals":{"aws:x":[]}}`), withCondition(`{"StringEquals":{"aws:x":[""]}}`), `key "aws:x": the list of values must not be empty`},
		{"object value", withCondition(`{"StringEquals":{"aws:x":{"a":1}}}`), withCondition(`{"StringEquals":{"aws:x":1}}`), "must be a string, number or boolean"},
		{"null value in a list", withCondition(`{"StringEquals":{"aws:x":["a",null]}}`), withCondition(`{"StringEquals":{"aws:x":["a",true]}}`), "value [1] must be a string, number or boolean, not null"},
		{"bad CIDR", withCondition(`{"IpAddress":{"aws:SourceIp":"10.0.0.0/33"}}`), withCondition(`{"IpAddress":{"aws:SourceIp":"10.0.0.0/32"}}`), `Statement[0].Condition.IpAddress: key "aws:SourceIp": "10.0.0.0/33" is not an IP address or CIDR range`},
		{"bad IPv4", withCondition(`{"NotIpAddress":{"aws:SourceIp":["203.0.113.0/24","300.1.1.1"]}}`), withCondition(`{"NotIpAddress":{"aws:SourceIp":["203.0.113.0/24","2001:db8::/32"]}}`), `"300.1.1.1" is not an IP address`},
		{"bad IPv6", withCondition(`{"IpAddress":{"aws:SourceIp":"2001:db8:::1"}}`), withCondition(`{"IpAddress":{"aws:SourceIp":"2001:db8::1"}}`), "is not an IP address"},
		{"IP with zone", withCondition(`{"IpAddress":{"aws:SourceIp":"fe80::1%eth0"}}`), withCondition(`{"IpAddress":{"aws:SourceIp":"fe80::1"}}`), "is not an IP address"},
		{"bad date", withCondition(`{"DateLessThan":{"aws:CurrentTime":"2026-02-30"}}`), withCondition(`{"DateLessThan":{"aws:CurrentTime":"2026-02-28"}}`), `"2026-02-30" is not a date`},
		{"bad time", withCondition(`{"DateGreaterThan":{"aws:CurrentTime":"2026-01-31T24:00:00Z"}}`), withCondition(`{"DateGreaterThan":{"aws:CurrentTime":"2026-01-31T23:59:59+05:30"}}`), "is not a date"},
		{"date words", withCondition(`{"DateEquals":{"aws:CurrentTime":"yesterday"}}`), withCondition(`{"DateEquals":{"aws:CurrentTime":1767225600}}`), `"yesterday" is not a date`},
		{"bad zone", withCondition(`{"DateEqualsIfExists":{"aws:CurrentTime":"2026-01-31T12:00:00+0100"}}`), withCondition(`{"DateEqualsIfExists":{"aws:CurrentTime":"2026-01-31T12:00:00.250+01:00"}}`), "is not a date"},
		{"bad number", withCondition(`{"NumericLessThan":{"aws:MultiFactorAuthAge":"ten"}}`), withCondition(`{"NumericLessThan":{"aws:MultiFactorAuthAge":"10"}}`), `"ten" is not a number`},
		{"exponent", withCondition(`{"NumericEquals":{"aws:x":1e3}}`), withCondition(`{"NumericEquals":{"aws:x":-1000.5}}`), `"1e3" is not a number`},
		{"NaN", withCondition(`{"NumericEquals":{"aws:x":"NaN"}}`), withCondition(`{"NumericEquals":{"aws:x":"0"}}`), "is not a number"},
		{"bad Bool", withCondition(`{"Bool":{"aws:SecureTransport":"yes"}}`), withCondition(`{"Bool":{"aws:SecureTransport":"True"}}`), `Bool values are true or false, not "yes"`},
		{"bad Null", withCondition(`{"Null":{"aws:x":"maybe"}}`), withCondition(`{"Null":{"aws:x":false}}`), `Null values are true or false, not "maybe"`},
		{"bad ARN", withCondition(`{"ArnLike":{"aws:SourceArn":"role/app"}}`), withCondition(`{"ArnLike":{"aws:SourceArn":"arn:aws:iam::*:role/app"}}`), `"role/app" is not an ARN`},
		{"ForAllValues on an encryption context pair", withCondition(`{"ForAllValues:StringEquals":{"kms:EncryptionContext:app":"x"}}`), withCondition(`{"ForAnyValue:StringEquals":{"kms:EncryptionContext:app":"x"}}`), "OverlyPermissiveCondition"},
		{"ForAllValues on a request tag", withCondition(`{"ForAllValues:StringEquals":{"aws:RequestTag/team":"x"}}`), withCondition(`{"ForAllValues:StringEquals":{"aws:TagKeys":"team"}}`), "OverlyPermissiveCondition"},

		// Policy variables.
		{"variable in a condition (2012-10-17)", withCondition(`{"StringEquals":{"kms:EncryptionContext:user":"${aws:username}"}}`), `{"Version":"2008-10-17","Statement":` + st(`"Condition":{"StringEquals":{"kms:EncryptionContext:user":"${aws:username}"}}`) + `}`, "policy variables such as"},
		{"variable in a resource (2012-10-17)", doc(`{"Effect":"Allow","Principal":"*","Action":"kms:*","Resource":"arn:aws:kms:*:111122223333:key/${aws:username}"}`), `{"Statement":{"Effect":"Allow","Principal":"*","Action":"kms:*","Resource":"arn:aws:kms:*:111122223333:key/${aws:username}"}}`, "policy variables such as"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			p, err := Parse([]byte(c.bad))
			if err == nil {
				t.Fatalf("Parse accepted\n%s", c.bad)
			}
			if p != nil {
				t.Errorf("Parse returned a policy with error %v", err)
			}
			var pe *Error
			if !errors.As(err, &pe) {
				t.Fatalf("error %T %v is not an *Error", err, err)
			}
			if !strings.Contains(pe.Msg, c.want) {
				t.Errorf("error %q\nwant it to contain %q", pe.Msg, c.want)
			}
			if _, err := Parse([]byte(c.ok)); err != nil {
				t.Errorf("twin refused: %v\n%s", err, c.ok)
			}
		})
	}
}

func TestParseResult(t *testing.T) {
	p := mustParse(t, `{"Id":"key-policy-1","Statement":{"Sid":"one","Effect":"Deny","Principal":"*","Action":"kms:*","Resource":"*"}}`)
	if p.Version != Version2008 || p.ID != "key-policy-1" || len(p.Statements) != 1 {
		t.Fatalf("got %+v", p)
	}
	if s := p.Statements[0]; s.Sid != "one" || s.Effect != "Deny" {
		t.Errorf("statement %+v", s)
	}
	p = mustParse(t, doc(st(`"Sid":"a"`), st(""), st(""))) // Sids may be missing in several statements
	if p.Version != Version2012 || len(p.Statements) != 3 || p.Statements[1].Effect != "Allow" {
		t.Errorf("got %+v", p)
	}
}

// TestErrorExcerpt checks that errors quote no more than a short excerpt of
// the document, wherever the offending text is.
func TestErrorExcerpt(t *testing.T) {
	long := strings.Repeat("A", 20000)
	for _, d := range []string{
		doc(`{"Effect":"` + long + `","Principal":"*","Action":"kms:*","Resource":"*"}`),
		doc(`{"Effect":"Allow","Principal":{"AWS":"` + long + `"},"Action":"kms:*","Resource":"*"}`),
		doc(`{"Effect":"Allow","Principal":"*","Action":"kms:` + long + `!","Resource":"*"}`),
		doc(`{"Effect":"Allow","Principal":"*","Action":"kms:*","Resource":"` + long + `"}`),
		doc(st(`"` + long + `":1`)),
		doc(st(`"Sid":"`+long+`"`), st(`"Sid":"`+long+`"`)),
		withCondition(`{"` + long + `":{"aws:x":"a"}}`),
		withCondition(`{"StringEquals":{"` + long + `":"a"}}`),
		withCondition(`{"IpAddress":{"aws:SourceIp":"` + long + `"}}`),
		withCondition(`{"DateLessThan":{"aws:CurrentTime":"` + long + `"}}`),
		`{"Version":"` + long + `","Statement":` + st("") + `}`,
		`{"` + long + `":1,"` + long + `":2}`,
	} {
		_, err := Parse([]byte(d))
		if err == nil {
			t.Fatalf("accepted %.100s", d)
		}
		if len(err.Error()) > 300 {
			t.Errorf("message of %d bytes: %.400s", len(err.Error()), err)
		}
	}
}

package policy

import (
	"testing"
)

// TestEvaluate checks the statement-level rules (effects, principals,
// actions, resources). Each case is a policy, a request with its expected
// decision, and a twin request that differs in the point under test and
// must get the other decision.
func TestEvaluate(t *testing.T) {
	allowAll := `{"Effect":"Allow","Principal":"*","Action":"*","Resource":"*"}`
	cases := []struct {
		name     string
		policy   string
		req      *Request
		want     Decision
		twin     *Request
		twinWant Decision
	}{
		{"Allow for the named principal", doc(st("")),
			req(), Allow, req(as(bob)), NotApplicable},
		{"NotApplicable when no action matches", doc(st("")),
			req(action("kms:Decrypt")), NotApplicable, req(), Allow},
		{"Deny over Allow",
			doc(`{"Effect":"Allow","Principal":{"AWS":"`+alice+`"},"Action":"kms:*","Resource":"*"}`,
				`{"Effect":"Deny","Principal":{"AWS":"`+alice+`"},"Action":"kms:Decrypt","Resource":"*"}`),
			req(action("kms:Decrypt")), Deny, req(action("kms:Encrypt")), Allow},
		{"Deny over Allow, Deny first",
			doc(`{"Effect":"Deny","Principal":"*","Action":"kms:ScheduleKeyDeletion","Resource":"*"}`, allowAll),
			req(action("kms:ScheduleKeyDeletion"), admin), Deny, req(action("kms:DescribeKey"), admin), Allow},
		{"Deny alone is explicit",
			doc(`{"Effect":"Deny","Principal":{"AWS":"` + bob + `"},"Action":"kms:*","Resource":"*"}`),
			req(as(bob)), Deny, req(), NotApplicable},

		// Actions.
		{"action prefix wildcard",
			doc(`{"Effect":"Allow","Principal":"*","Action":"kms:GenerateDataKey*","Resource":"*"}`),
			req(action("kms:GenerateDataKeyWithoutPlaintext")), Allow, req(action("kms:Encrypt")), NotApplicable},
		{"action wildcard stops at the pattern",
			doc(`{"Effect":"Allow","Principal":"*","Action":"kms:ReEncrypt*","Resource":"*"}`),
			req(action("kms:ReEncryptFrom")), Allow, req(action("kms:RetireGrant")), NotApplicable},
		{"action wildcard kms:Re* is wider",
			doc(`{"Effect":"Allow","Principal":"*","Action":"kms:Re*","Resource":"*"}`),
			req(action("kms:RetireGrant")), Allow, req(action("kms:Decrypt")), NotApplicable},
		{"action ? wildcard",
			doc(`{"Effect":"Allow","Principal":"*","Action":"kms:?ncrypt","Resource":"*"}`),
			req(action("kms:Encrypt")), Allow, req(action("kms:Decrypt")), NotApplicable},
		{"action inner wildcard",
			doc(`{"Effect":"Allow","Principal":"*","Action":"kms:*Key*","Resource":"*"}`),
			req(action("kms:GenerateDataKeyPair")), Allow, req(action("kms:Sign")), NotApplicable},
		{"action case-insensitive",
			doc(`{"Effect":"Allow","Principal":"*","Action":"KMS:encrypt","Resource":"*"}`),
			req(action("kms:Encrypt")), Allow, req(action("kms:Encrypted")), NotApplicable},
		{"action wildcard case-insensitive",
			doc(`{"Effect":"Allow","Principal":"*","Action":"kms:get*","Resource":"*"}`),
			req(action("kms:GetKeyPolicy")), Allow, req(action("kms:PutKeyPolicy")), NotApplicable},
		{"action * is every action", doc(allowAll),
			req(action("kms:ReplicateKey")), Allow, req(action("kms:ReplicateKey"), resource("")), Allow},
		{"action list",
			doc(`{"Effect":"Allow","Principal":"*","Action":["kms:Encrypt","kms:Decrypt"],"Resource":"*"}`),
			req(action("kms:Decrypt")), Allow, req(action("kms:Sign")), NotApplicable},
		{"NotAction",
			doc(`{"Effect":"Allow","Principal":"*","NotAction":["kms:ScheduleKeyDeletion","kms:Disable*"],"Resource":"*"}`),
			req(action("kms:Encrypt")), Allow, req(action("kms:DisableKey")), NotApplicable},
		{"NotAction with Deny",
			doc(allowAll, `{"Effect":"Deny","Principal":{"AWS":"`+alice+`"},"NotAction":"kms:Decrypt","Resource":"*"}`),
			req(action("kms:Encrypt")), Deny, req(action("kms:Decrypt")), Allow},

		// Resources.
		{"resource ARN",
			doc(`{"Effect":"Allow","Principal":"*","Action":"kms:*","Resource":"` + keyARN + `"}`),
			req(), Allow, req(resource("arn:aws:kms:us-east-1:111122223333:key/other")), NotApplicable},
		{"resource wildcard",
			doc(`{"Effect":"Allow","Principal":"*","Action":"kms:*","Resource":"arn:aws:kms:us-east-1:111122223333:key/*"}`),
			req(), Allow, req(resource("arn:aws:kms:eu-west-1:111122223333:key/1234")), NotApplicable},
		{"resource ? wildcard",
			doc(`{"Effect":"Allow","Principal":"*","Action":"kms:*","Resource":"arn:aws:kms:us-east-?:111122223333:key/*"}`),
			req(), Allow, req(resource("arn:aws:kms:us-east-10:111122223333:key/1234")), NotApplicable},
		{"resource case-sensitive",
			doc(`{"Effect":"Allow","Principal":"*","Action":"kms:*","Resource":"` + keyARN + `"}`),
			req(), Allow, req(resource("arn:aws:kms:us-east-1:111122223333:key/1234ABCD-12ab-34cd-56ef-1234567890ab")), NotApplicable},
		{"NotResource",
			doc(`{"Effect":"Allow","Principal":"*","Action":"kms:*","NotResource":"arn:aws:kms:*:111122223333:key/restricted-*"}`),
			req(), Allow, req(resource("arn:aws:kms:us-east-1:111122223333:key/restricted-1")), NotApplicable},

		// Principals.
		{"Principal * matches anyone",
			doc(`{"Effect":"Allow","Principal":"*","Action":"kms:Encrypt","Resource":"*"}`),
			req(as()), Allow, req(as(), action("kms:Decrypt")), NotApplicable},
		{"AWS * matches anyone",
			doc(`{"Effect":"Allow","Principal":{"AWS":"*"},"Action":"kms:Encrypt","Resource":"*"}`),
			req(as(bob)), Allow, req(as(bob), action("kms:Decrypt")), NotApplicable},
		{"any one of the caller's principals",
			doc(`{"Effect":"Allow","Principal":{"AWS":["` + bob + `","` + appRole + `"]},"Action":"kms:Encrypt","Resource":"*"}`),
			req(as(alice, appRole)), Allow, req(as(alice, "arn:aws:iam::111122223333:role/App")), NotApplicable},
		{"account root matches administrators",
			doc(`{"Effect":"Allow","Principal":{"AWS":"` + rootARN + `"},"Action":"kms:*","Resource":"*"}`),
			req(admin), Allow, req(), NotApplicable},
		{"account root is not matched by the root ARN string",
			doc(`{"Effect":"Allow","Principal":{"AWS":"` + rootARN + `"},"Action":"kms:*","Resource":"*"}`),
			req(as(rootARN), admin), Allow, req(as(rootARN)), NotApplicable},
		{"bare account id matches administrators",
			doc(`{"Effect":"Allow","Principal":{"AWS":"111122223333"},"Action":"kms:*","Resource":"*"}`),
			req(admin), Allow, req(as(bob)), NotApplicable},
		{"account root of the gateway's account only",
			doc(`{"Effect":"Allow","Principal":{"AWS":"` + rootARN + `"},"Action":"kms:*","Resource":"*"}`),
			req(admin), Allow, req(admin, account("999988887777")), NotApplicable},
		{"another account's root is an ordinary principal",
			doc(`{"Effect":"Allow","Principal":{"AWS":["arn:aws:iam::444455556666:root"]},"Action":"kms:*","Resource":"*"}`),
			req(as("arn:aws:iam::444455556666:root")), Allow, req(admin), NotApplicable},
		{"another account's bare id",
			doc(`{"Effect":"Allow","Principal":{"AWS":"444455556666"},"Action":"kms:*","Resource":"*"}`),
			req(as("arn:aws:iam::444455556666:root")), Allow, req(as("arn:aws:iam::444455556666:user/x")), NotApplicable},
		{"principal ARNs are case-sensitive", doc(st("")),
			req(as(alice)), Allow, req(as("arn:aws:iam::111122223333:user/Alice")), NotApplicable},
		{"NotPrincipal",
			doc(allowAll, `{"Effect":"Deny","NotPrincipal":{"AWS":["`+alice+`","`+rootARN+`"]},"Action":"kms:Decrypt","Resource":"*"}`),
			req(as(bob), action("kms:Decrypt")), Deny, req(action("kms:Decrypt")), Allow},
		{"NotPrincipal account root spares administrators",
			doc(allowAll, `{"Effect":"Deny","NotPrincipal":{"AWS":"`+rootARN+`"},"Action":"kms:PutKeyPolicy","Resource":"*"}`),
			req(as(bob), action("kms:PutKeyPolicy")), Deny, req(as(bob), action("kms:PutKeyPolicy"), admin), Allow},
		{"Service principals never match",
			doc(`{"Effect":"Allow","Principal":{"Service":"kms.amazonaws.com","AWS":"` + bob + `"},"Action":"kms:*","Resource":"*"}`),
			req(as(bob)), Allow, req(as("kms.amazonaws.com")), NotApplicable},
		{"Federated and CanonicalUser principals never match",
			doc(`{"Effect":"Allow","Principal":{"Federated":"cognito-identity.amazonaws.com","CanonicalUser":"79a59df900b949e55d96a1e698fbaced","AWS":"` + bob + `"},"Action":"kms:*","Resource":"*"}`),
			req(as(bob)), Allow, req(as("cognito-identity.amazonaws.com", "79a59df900b949e55d96a1e698fbaced")), NotApplicable},

		// Statement combination.
		{"Allow from any statement",
			doc(`{"Effect":"Allow","Principal":{"AWS":"`+bob+`"},"Action":"kms:*","Resource":"*"}`, st("")),
			req(), Allow, req(as(appRole)), NotApplicable},
		{"Deny needs its conditions",
			doc(allowAll, `{"Effect":"Deny","Principal":"*","Action":"kms:*","Resource":"*","Condition":{"Bool":{"aws:SecureTransport":"false"}}}`),
			req(ctx(MapContext{"aws:securetransport": {"false"}})), Deny, req(ctx(MapContext{"aws:securetransport": {"true"}})), Allow},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			p := mustParse(t, c.policy)
			if got := p.Evaluate(c.req); got != c.want {
				t.Errorf("request %+v: %v, want %v", *c.req, got, c.want)
			}
			if got := p.Evaluate(c.twin); got != c.twinWant {
				t.Errorf("twin %+v: %v, want %v", *c.twin, got, c.twinWant)
			}
		})
	}
}

// TestConditions checks every condition operator: the condition must hold
// (Allow) with the context hold and fail (NotApplicable) with the context
// fail. A nil context stands for a request without the key.
func TestConditions(t *testing.T) {
	type mc = MapContext
	cases := []struct {
		name      string
		condition string
		hold      Context
		fail      Context
	}{
		// String.
		{"StringEquals", `{"StringEquals":{"kms:EncryptionContext:app":"billing"}}`,
			mc{"kms:encryptioncontext:app": {"billing"}}, mc{"kms:encryptioncontext:app": {"Billing"}}},
		{"StringEquals, key missing", `{"StringEquals":{"kms:EncryptionContext:app":"billing"}}`,
			mc{"kms:encryptioncontext:app": {"billing"}}, nil},
		{"StringEquals, values ORed", `{"StringEquals":{"kms:EncryptionContext:app":["billing","payroll"]}}`,
			mc{"kms:encryptioncontext:app": {"payroll"}}, mc{"kms:encryptioncontext:app": {"hr"}}},
		{"StringEquals, number value", `{"StringEquals":{"kms:EncryptionContext:year":2026}}`,
			mc{"kms:encryptioncontext:year": {"2026"}}, mc{"kms:encryptioncontext:year": {"2026.0"}}},
		{"StringNotEquals", `{"StringNotEquals":{"kms:EncryptionContext:stage":["prod","staging"]}}`,
			mc{"kms:encryptioncontext:stage": {"test"}}, mc{"kms:encryptioncontext:stage": {"staging"}}},
		{"StringNotEquals, key missing holds", `{"StringNotEquals":{"kms:EncryptionContext:stage":"prod"}}`,
			nil, mc{"kms:encryptioncontext:stage": {"prod"}}},
		{"StringEqualsIgnoreCase", `{"StringEqualsIgnoreCase":{"kms:EncryptionContext:app":"Billing"}}`,
			mc{"kms:encryptioncontext:app": {"BILLING"}}, mc{"kms:encryptioncontext:app": {"billings"}}},
		{"StringNotEqualsIgnoreCase", `{"StringNotEqualsIgnoreCase":{"kms:EncryptionContext:stage":"prod"}}`,
			mc{"kms:encryptioncontext:stage": {"test"}}, mc{"kms:encryptioncontext:stage": {"PROD"}}},
		{"StringLike *", `{"StringLike":{"kms:EncryptionContext:path":"home/alice/*"}}`,
			mc{"kms:encryptioncontext:path": {"home/alice/notes.txt"}}, mc{"kms:encryptioncontext:path": {"home/bob/notes.txt"}}},
		{"StringLike ?", `{"StringLike":{"kms:EncryptionContext:v":"v?"}}`,
			mc{"kms:encryptioncontext:v": {"v1"}}, mc{"kms:encryptioncontext:v": {"v10"}}},
		{"StringLike is case-sensitive", `{"StringLike":{"kms:EncryptionContext:app":"bill*"}}`,
			mc{"kms:encryptioncontext:app": {"billing"}}, mc{"kms:encryptioncontext:app": {"Billing"}}},
		{"StringNotLike", `{"StringNotLike":{"kms:EncryptionContext:path":"tmp/*"}}`,
			mc{"kms:encryptioncontext:path": {"data/x"}}, mc{"kms:encryptioncontext:path": {"tmp/x"}}},

		// Numeric.
		{"NumericEquals", `{"NumericEquals":{"aws:MultiFactorAuthAge":10}}`,
			mc{"aws:multifactorauthage": {"10.0"}}, mc{"aws:multifactorauthage": {"11"}}},
		{"NumericEquals, not a number", `{"NumericEquals":{"aws:MultiFactorAuthAge":"10"}}`,
			mc{"aws:multifactorauthage": {"+10"}}, mc{"aws:multifactorauthage": {"ten"}}},
		{"NumericNotEquals", `{"NumericNotEquals":{"aws:MultiFactorAuthAge":["10","20"]}}`,
			mc{"aws:multifactorauthage": {"15"}}, mc{"aws:multifactorauthage": {"20"}}},
		{"NumericLessThan", `{"NumericLessThan":{"aws:MultiFactorAuthAge":"3600"}}`,
			mc{"aws:multifactorauthage": {"3599.5"}}, mc{"aws:multifactorauthage": {"3600"}}},
		{"NumericLessThanEquals", `{"NumericLessThanEquals":{"aws:MultiFactorAuthAge":"3600"}}`,
			mc{"aws:multifactorauthage": {"3600"}}, mc{"aws:multifactorauthage": {"3601"}}},
		{"NumericGreaterThan", `{"NumericGreaterThan":{"aws:MultiFactorAuthAge":-5}}`,
			mc{"aws:multifactorauthage": {"-4"}}, mc{"aws:multifactorauthage": {"-5"}}},
		{"NumericGreaterThanEquals", `{"NumericGreaterThanEquals":{"aws:MultiFactorAuthAge":5}}`,
			mc{"aws:multifactorauthage": {"5"}}, mc{"aws:multifactorauthage": {"4.99"}}},

		// Date.
		{"DateEquals", `{"DateEquals":{"aws:CurrentTime":"2026-01-31T00:00:00Z"}}`,
			mc{"aws:currenttime": {"2026-01-31T01:00:00+01:00"}}, mc{"aws:currenttime": {"2026-01-31T00:00:00.001Z"}}},
		{"DateEquals, date only", `{"DateEquals":{"aws:CurrentTime":"2026-01-31"}}`,
			mc{"aws:currenttime": {"2026-01-31T00:00:00Z"}}, mc{"aws:currenttime": {"2026-01-31T00:00:01Z"}}},
		{"DateNotEquals", `{"DateNotEquals":{"aws:CurrentTime":"2026-01-31T00:00:00Z"}}`,
			mc{"aws:currenttime": {"2026-01-31T00:00:01Z"}}, mc{"aws:currenttime": {"2026-01-30T19:00:00-05:00"}}},
		{"DateLessThan aws:CurrentTime", `{"DateLessThan":{"aws:CurrentTime":"2026-07-01T00:00:00Z"}}`,
			mc{"aws:currenttime": {"2026-06-30T23:59:59Z"}}, mc{"aws:currenttime": {"2026-07-01T00:00:00Z"}}},
		{"DateLessThanEquals", `{"DateLessThanEquals":{"aws:CurrentTime":"2026-07-01T00:00:00Z"}}`,
			mc{"aws:currenttime": {"2026-07-01T00:00:00Z"}}, mc{"aws:currenttime": {"2026-07-01T00:00:00.000000001Z"}}},
		{"DateGreaterThan aws:CurrentTime", `{"DateGreaterThan":{"aws:CurrentTime":"2026-01-01"}}`,
			mc{"aws:currenttime": {"2026-01-01T00:00:00.5Z"}}, mc{"aws:currenttime": {"2025-12-31T23:59:59Z"}}},
		{"DateGreaterThanEquals, epoch", `{"DateGreaterThanEquals":{"aws:CurrentTime":1767225600}}`,
			mc{"aws:currenttime": {"2026-01-01T00:00:00Z"}}, mc{"aws:currenttime": {"2025-12-31T23:59:59.999Z"}}},
		{"DateLessThan aws:EpochTime", `{"DateLessThan":{"aws:EpochTime":"2026-01-01T00:00:00Z"}}`,
			mc{"aws:epochtime": {"1767225599"}}, mc{"aws:epochtime": {"1767225600"}}},
		{"DateLessThan, not a date", `{"DateLessThan":{"aws:CurrentTime":"2026-07-01"}}`,
			mc{"aws:currenttime": {"2026-06-01T00:00:00Z"}}, mc{"aws:currenttime": {"June 1st"}}},

		// Bool.
		{"Bool true", `{"Bool":{"aws:SecureTransport":true}}`,
			mc{"aws:securetransport": {"true"}}, mc{"aws:securetransport": {"false"}}},
		{"Bool false", `{"Bool":{"kms:GrantIsForAWSResource":"false"}}`,
			mc{"kms:grantisforawsresource": {"False"}}, mc{"kms:grantisforawsresource": {"true"}}},
		{"Bool, key missing", `{"Bool":{"aws:SecureTransport":"true"}}`,
			mc{"aws:securetransport": {"true"}}, nil},

		// IP.
		{"IpAddress IPv4", `{"IpAddress":{"aws:SourceIp":"203.0.113.0/24"}}`,
			mc{"aws:sourceip": {"203.0.113.7"}}, mc{"aws:sourceip": {"203.0.114.7"}}},
		{"IpAddress IPv6", `{"IpAddress":{"aws:SourceIp":"2001:DB8:1234:5678::/64"}}`,
			mc{"aws:sourceip": {"2001:db8:1234:5678::1"}}, mc{"aws:sourceip": {"2001:db8:1234:5679::1"}}},
		{"IpAddress mixed list", `{"IpAddress":{"aws:SourceIp":["203.0.113.0/24","2001:db8::/32"]}}`,
			mc{"aws:sourceip": {"2001:db8:ffff::1"}}, mc{"aws:sourceip": {"2001:db9::1"}}},
		{"IpAddress single address", `{"IpAddress":{"aws:SourceIp":"198.51.100.7"}}`,
			mc{"aws:sourceip": {"198.51.100.7"}}, mc{"aws:sourceip": {"198.51.100.8"}}},
		{"IpAddress host bits in the range", `{"IpAddress":{"aws:SourceIp":"10.1.2.3/8"}}`,
			mc{"aws:sourceip": {"10.200.0.1"}}, mc{"aws:sourceip": {"11.0.0.1"}}},
		{"IpAddress IPv4-mapped request", `{"IpAddress":{"aws:SourceIp":"203.0.113.0/24"}}`,
			mc{"aws:sourceip": {"::ffff:203.0.113.9"}}, mc{"aws:sourceip": {"::203.0.113.9"}}},
		{"IpAddress, not an IP", `{"IpAddress":{"aws:SourceIp":"0.0.0.0/0"}}`,
			mc{"aws:sourceip": {"192.0.2.1"}}, mc{"aws:sourceip": {"localhost"}}},
		{"NotIpAddress IPv4", `{"NotIpAddress":{"aws:SourceIp":"203.0.113.0/24"}}`,
			mc{"aws:sourceip": {"10.0.0.1"}}, mc{"aws:sourceip": {"203.0.113.200"}}},
		{"NotIpAddress IPv6", `{"NotIpAddress":{"aws:SourceIp":"2001:db8::/32"}}`,
			mc{"aws:sourceip": {"2001:db9::1"}}, mc{"aws:sourceip": {"2001:db8::1"}}},

		// ARN.
		{"ArnEquals", `{"ArnEquals":{"aws:SourceArn":"arn:aws:iam::111122223333:role/app"}}`,
			mc{"aws:sourcearn": {"arn:aws:iam::111122223333:role/app"}}, mc{"aws:sourcearn": {"arn:aws:iam::111122223333:role/App"}}},
		{"ArnEquals takes wildcards", `{"ArnEquals":{"aws:SourceArn":"arn:aws:iam::*:role/app"}}`,
			mc{"aws:sourcearn": {"arn:aws:iam::444455556666:role/app"}}, mc{"aws:sourcearn": {"arn:aws:iam::444455556666:role/app2"}}},
		{"ArnLike", `{"ArnLike":{"aws:SourceArn":"arn:aws:iam::*:role/app-*"}}`,
			mc{"aws:sourcearn": {"arn:aws:iam::444455556666:role/app-1"}}, mc{"aws:sourcearn": {"arn:aws:iam::444455556666:user/app-1"}}},
		{"ArnLike does not cross colons", `{"ArnLike":{"aws:SourceArn":"arn:aws:someservice:*:111122223333:finance/*"}}`,
			mc{"aws:sourcearn": {"arn:aws:someservice:us-east-2:111122223333:finance/document.txt"}},
			mc{"aws:sourcearn": {"arn:aws:someservice:us-east-2:999999999999:store/abc:111122223333:finance/document.txt"}}},
		{"StringLike does cross colons", `{"StringLike":{"aws:SourceArn":"arn:aws:someservice:*:111122223333:finance/*"}}`,
			mc{"aws:sourcearn": {"arn:aws:someservice:us-east-2:999999999999:store/abc:111122223333:finance/document.txt"}},
			mc{"aws:sourcearn": {"arn:aws:someservice:us-east-2:111122223333:store/document.txt"}}},
		{"ArnLike, not an ARN", `{"ArnLike":{"aws:SourceArn":"arn:*:*:*:*:*"}}`,
			mc{"aws:sourcearn": {"arn:aws:s3:::bucket"}}, mc{"aws:sourcearn": {"arn:aws:s3:bucket"}}},
		{"ArnNotEquals", `{"ArnNotEquals":{"aws:SourceArn":"arn:aws:iam::111122223333:role/app"}}`,
			mc{"aws:sourcearn": {"arn:aws:iam::111122223333:role/other"}}, mc{"aws:sourcearn": {"arn:aws:iam::111122223333:role/app"}}},
		{"ArnNotLike", `{"ArnNotLike":{"aws:SourceArn":"arn:aws:iam::111122223333:role/*"}}`,
			mc{"aws:sourcearn": {"arn:aws:iam::111122223333:user/x"}}, mc{"aws:sourcearn": {"arn:aws:iam::111122223333:role/x"}}},

		// Null and IfExists.
		{"Null true", `{"Null":{"kms:EncryptionContextKeys":"true"}}`,
			nil, mc{"kms:encryptioncontextkeys": {"app"}}},
		{"Null true, empty list is missing", `{"Null":{"kms:EncryptionContextKeys":true}}`,
			mc{"kms:encryptioncontextkeys": {}}, mc{"kms:encryptioncontextkeys": {""}}},
		{"Null false", `{"Null":{"kms:EncryptionContextKeys":false}}`,
			mc{"kms:encryptioncontextkeys": {"app"}}, mc{"kms:encryptioncontextkeys": nil}},
		{"IfExists, key missing", `{"StringEqualsIfExists":{"kms:EncryptionContext:app":"billing"}}`,
			nil, mc{"kms:encryptioncontext:app": {"payroll"}}},
		{"IfExists, key present", `{"StringEqualsIfExists":{"kms:EncryptionContext:app":"billing"}}`,
			mc{"kms:encryptioncontext:app": {"billing"}}, mc{"kms:encryptioncontext:app": {"payroll"}}},
		{"negated IfExists", `{"StringNotEqualsIfExists":{"kms:EncryptionContext:stage":"prod"}}`,
			mc{}, mc{"kms:encryptioncontext:stage": {"prod"}}},
		{"NumericLessThanIfExists", `{"NumericLessThanIfExists":{"aws:MultiFactorAuthAge":"3600"}}`,
			nil, mc{"aws:multifactorauthage": {"7200"}}},
		{"IpAddressIfExists", `{"IpAddressIfExists":{"aws:SourceIp":"10.0.0.0/8"}}`,
			mc{"aws:sourceip": {"10.9.8.7"}}, mc{"aws:sourceip": {"192.0.2.1"}}},
		{"DateGreaterThanIfExists", `{"DateGreaterThanIfExists":{"aws:CurrentTime":"2026-01-01"}}`,
			nil, mc{"aws:currenttime": {"2025-01-01T00:00:00Z"}}},

		// Multi-valued keys and set qualifiers.
		{"ForAllValues", `{"ForAllValues:StringEquals":{"kms:EncryptionContextKeys":["app","tenant"]}}`,
			mc{"kms:encryptioncontextkeys": {"tenant", "app"}}, mc{"kms:encryptioncontextkeys": {"app", "other"}}},
		{"ForAllValues, key missing holds", `{"ForAllValues:StringEquals":{"kms:EncryptionContextKeys":["app"]}}`,
			nil, mc{"kms:encryptioncontextkeys": {"App"}}},
		{"ForAllValues, empty holds", `{"ForAllValues:StringEquals":{"kms:EncryptionContextKeys":["app"]}}`,
			mc{"kms:encryptioncontextkeys": {}}, mc{"kms:encryptioncontextkeys": {"x"}}},
		{"ForAllValues negated", `{"ForAllValues:StringNotLike":{"kms:EncryptionContextKeys":"tmp*"}}`,
			mc{"kms:encryptioncontextkeys": {"a", "b"}}, mc{"kms:encryptioncontextkeys": {"a", "tmp1"}}},
		{"ForAnyValue", `{"ForAnyValue:StringEquals":{"kms:EncryptionContextKeys":"app"}}`,
			mc{"kms:encryptioncontextkeys": {"x", "app"}}, mc{"kms:encryptioncontextkeys": {"x", "App"}}},
		{"ForAnyValue, key missing fails", `{"ForAnyValue:StringEquals":{"kms:EncryptionContextKeys":"app"}}`,
			mc{"kms:encryptioncontextkeys": {"app"}}, nil},
		{"ForAnyValue, empty fails", `{"ForAnyValue:StringLike":{"kms:EncryptionContextKeys":"*"}}`,
			mc{"kms:encryptioncontextkeys": {""}}, mc{"kms:encryptioncontextkeys": {}}},
		{"ForAnyValue negated", `{"ForAnyValue:StringNotEquals":{"kms:EncryptionContextKeys":"app"}}`,
			mc{"kms:encryptioncontextkeys": {"app", "x"}}, mc{"kms:encryptioncontextkeys": {"app"}}},
		{"ForAnyValue IfExists, key missing", `{"ForAnyValue:StringEqualsIfExists":{"kms:EncryptionContextKeys":"app"}}`,
			nil, mc{"kms:encryptioncontextkeys": {"x"}}},
		{"multi-valued key, no qualifier, positive", `{"StringEquals":{"kms:EncryptionContextKeys":"app"}}`,
			mc{"kms:encryptioncontextkeys": {"x", "app"}}, mc{"kms:encryptioncontextkeys": {"x", "y"}}},
		{"multi-valued key, no qualifier, negated", `{"StringNotEquals":{"kms:EncryptionContextKeys":"app"}}`,
			mc{"kms:encryptioncontextkeys": {"x", "y"}}, mc{"kms:encryptioncontextkeys": {"x", "app"}}},

		// Encryption context and tags.
		{"encryption context key case-insensitive", `{"StringEquals":{"kms:EncryptionContext:AppName":"ExampleApp"}}`,
			mc{"kms:encryptioncontext:appname": {"ExampleApp"}}, mc{"kms:encryptioncontext:appname": {"exampleapp"}}},
		{"encryption context: the context supplies lower-cased keys", `{"StringEquals":{"kms:encryptioncontext:appname":"ExampleApp"}}`,
			mc{"kms:encryptioncontext:appname": {"ExampleApp"}}, mc{"kms:EncryptionContext:AppName": {"ExampleApp"}}},
		{"EncryptionContextKeys checks the key's case", `{"ForAnyValue:StringEquals":{"kms:EncryptionContextKeys":"AppName"}}`,
			mc{"kms:encryptioncontextkeys": {"AppName"}}, mc{"kms:encryptioncontextkeys": {"appname"}}},
		{"encryption context pair and keys together",
			`{"StringEquals":{"kms:EncryptionContext:Department":"IT","kms:EncryptionContext:Project":"Alpha"},"ForAllValues:StringEquals":{"kms:EncryptionContextKeys":["Department","Project"]}}`,
			mc{"kms:encryptioncontext:department": {"IT"}, "kms:encryptioncontext:project": {"Alpha"}, "kms:encryptioncontextkeys": {"Department", "Project"}},
			mc{"kms:encryptioncontext:department": {"IT"}, "kms:encryptioncontext:project": {"Alpha"}, "kms:encryptioncontextkeys": {"Department", "Project", "Stage"}}},
		{"keys in an operator are ANDed", `{"StringEquals":{"kms:EncryptionContext:Department":"IT","kms:EncryptionContext:Project":"Alpha"}}`,
			mc{"kms:encryptioncontext:department": {"IT"}, "kms:encryptioncontext:project": {"Alpha"}},
			mc{"kms:encryptioncontext:department": {"IT"}}},
		{"operators are ANDed", `{"StringEquals":{"kms:EncryptionContext:app":"billing"},"IpAddress":{"aws:SourceIp":"10.0.0.0/8"}}`,
			mc{"kms:encryptioncontext:app": {"billing"}, "aws:sourceip": {"10.1.1.1"}},
			mc{"kms:encryptioncontext:app": {"billing"}, "aws:sourceip": {"192.0.2.1"}}},
		{"aws:PrincipalTag", `{"StringEquals":{"aws:PrincipalTag/Department":"Finance"}}`,
			mc{"aws:principaltag/department": {"Finance"}}, mc{"aws:principaltag/department": {"Legal"}}},
		{"aws:PrincipalTag missing", `{"StringEquals":{"aws:PrincipalTag/Department":"Finance"}}`,
			mc{"aws:principaltag/department": {"Finance"}}, mc{"aws:principaltag/team": {"Finance"}}},
		{"condition key names are case-insensitive", `{"IpAddress":{"AWS:SourceIP":"10.0.0.0/8"}}`,
			mc{"aws:sourceip": {"10.0.0.1"}}, mc{"aws:sourceip": {"11.0.0.1"}}},
		{"empty Condition element", `{}`, nil, nil},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			p := mustParse(t, withCondition(c.condition))
			if got := p.Evaluate(req(ctx(c.hold))); got != Allow {
				t.Errorf("context %v: %v, want Allow", c.hold, got)
			}
			failWant := NotApplicable
			if c.condition == `{}` {
				failWant = Allow // no condition: nothing to fail
			}
			if got := p.Evaluate(req(ctx(c.fail))); got != failWant {
				t.Errorf("context %v: %v, want %v", c.fail, got, failWant)
			}
		})
	}
}

func TestEvaluateNil(t *testing.T) {
	var p *Policy
	if got := p.Evaluate(req()); got != NotApplicable {
		t.Errorf("nil policy: %v", got)
	}
	p = mustParse(t, doc(`{"Effect":"Allow","Principal":"*","Action":"*","Resource":"*"}`))
	if got := p.Evaluate(nil); got != NotApplicable {
		t.Errorf("nil request: %v", got)
	}
	if got := p.Evaluate(&Request{}); got != Allow {
		t.Errorf("empty request against allow-all: %v", got)
	}
	p = mustParse(t, withCondition(`{"StringNotEquals":{"aws:x":"a"}}`))
	if got := p.Evaluate(req(ctx(nil))); got != Allow {
		t.Errorf("nil context, negated operator: %v", got)
	}
	if got := p.Evaluate(req(ctx(MapContext(nil)))); got != Allow {
		t.Errorf("nil MapContext, negated operator: %v", got)
	}
}

func TestDecisionString(t *testing.T) {
	for d, want := range map[Decision]string{NotApplicable: "NotApplicable", Allow: "Allow", Deny: "Deny", 7: "Decision(invalid)"} {
		if d.String() != want {
			t.Errorf("%d: %q", int(d), d.String())
		}
	}
}

// TestEvaluateAllocs checks that evaluation allocates nothing, conditions of
// every family included.
func TestEvaluateAllocs(t *testing.T) {
	p := mustParse(t, doc(
		`{"Effect":"Deny","Principal":"*","Action":"kms:*","Resource":"*","Condition":{"NotIpAddress":{"aws:SourceIp":["10.0.0.0/8","2001:db8::/32"]}}}`,
		`{"Effect":"Allow","Principal":{"AWS":["`+bob+`","`+alice+`"]},"Action":["kms:Encrypt","kms:GenerateDataKey*"],"Resource":"arn:aws:kms:*:111122223333:key/*",
		  "Condition":{"StringEquals":{"kms:EncryptionContext:app":"billing"},"StringLike":{"aws:PrincipalTag/team":"fin*"},
		    "DateLessThan":{"aws:CurrentTime":"2030-01-01T00:00:00Z"},"NumericLessThan":{"aws:MultiFactorAuthAge":3600},
		    "Bool":{"aws:SecureTransport":true},"ArnLike":{"aws:SourceArn":"arn:aws:iam::*:role/*"},
		    "ForAllValues:StringEqualsIgnoreCase":{"kms:EncryptionContextKeys":["app","tenant"]}}}`))
	r := req(ctx(MapContext{
		"aws:sourceip":              {"2001:db8::7"},
		"kms:encryptioncontext:app": {"billing"},
		"aws:principaltag/team":     {"finance"},
		"aws:currenttime":           {"2026-03-01T10:00:00.123+01:00"},
		"aws:multifactorauthage":    {"120"},
		"aws:securetransport":       {"true"},
		"aws:sourcearn":             {appRole},
		"kms:encryptioncontextkeys": {"app", "Tenant"},
	}))
	if got := p.Evaluate(r); got != Allow {
		t.Fatalf("decision %v, want Allow", got)
	}
	if n := testing.AllocsPerRun(100, func() { p.Evaluate(r) }); n != 0 {
		t.Errorf("%v allocations per evaluation", n)
	}
}

package policy

import "testing"

// benchPolicy is a realistic key policy: the administrators' statement, key
// users restricted by an encryption context, and a Deny from outside the
// corporate network.
var benchPolicy = `{
    "Version": "2012-10-17",
    "Id": "key-consolepolicy-3",
    "Statement": [
        {
            "Sid": "Enable IAM User Permissions",
            "Effect": "Allow",
            "Principal": {"AWS": "arn:aws:iam::111122223333:root"},
            "Action": "kms:*",
            "Resource": "*"
        },
        {
            "Sid": "Allow use of the key for the billing application",
            "Effect": "Allow",
            "Principal": {"AWS": [
                "arn:aws:iam::111122223333:role/billing-api",
                "arn:aws:iam::111122223333:role/billing-batch",
                "arn:aws:iam::111122223333:user/alice"
            ]},
            "Action": ["kms:Encrypt", "kms:Decrypt", "kms:ReEncrypt*", "kms:GenerateDataKey*", "kms:DescribeKey"],
            "Resource": "*",
            "Condition": {
                "StringEquals": {"kms:EncryptionContext:app": "billing"},
                "ForAllValues:StringEquals": {"kms:EncryptionContextKeys": ["app", "tenant", "invoice"]}
            }
        },
        {
            "Sid": "Deny use from outside the corporate network",
            "Effect": "Deny",
            "Principal": "*",
            "Action": ["kms:Decrypt", "kms:GenerateDataKey*"],
            "Resource": "*",
            "Condition": {"NotIpAddressIfExists": {"aws:SourceIp": ["10.0.0.0/8", "192.0.2.0/24", "2001:db8::/32"]}}
        }
    ]
}`

func BenchmarkEvaluate(b *testing.B) {
	p := mustParse(b, benchPolicy)
	r := &Request{
		Principals: []string{"arn:aws:iam::111122223333:role/billing-batch"},
		Account:    testAccount,
		Action:     "kms:GenerateDataKey",
		Resource:   keyARN,
		Context: MapContext{
			"kms:encryptioncontext:app":     {"billing"},
			"kms:encryptioncontext:tenant":  {"acme"},
			"kms:encryptioncontextkeys":     {"app", "tenant"},
			"aws:sourceip":                  {"10.20.30.40"},
			"aws:currenttime":               {"2026-03-01T10:00:00Z"},
			"aws:securetransport":           {"true"},
			"kms:encryptioncontext:invoice": nil,
		},
	}
	if d := p.Evaluate(r); d != Allow {
		b.Fatalf("decision %v, want Allow", d)
	}
	b.ReportAllocs()
	for b.Loop() {
		p.Evaluate(r)
	}
}

func BenchmarkParse(b *testing.B) {
	doc := []byte(benchPolicy)
	b.ReportAllocs()
	b.SetBytes(int64(len(doc)))
	for b.Loop() {
		if _, err := Parse(doc); err != nil {
			b.Fatal(err)
		}
	}
}

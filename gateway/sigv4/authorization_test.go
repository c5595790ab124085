package sigv4

import (
	"errors"
	"strings"
	"testing"
)

const (
	validSig  = "fe5f80f77d5fa3beca038a248ff027d0445342fe2855ddc963176630326f1024"
	validAuth = "AWS4-HMAC-SHA256 Credential=AKIDEXAMPLE/20261127/us-east-1/kms/aws4_request, SignedHeaders=content-type;host;x-amz-date, Signature=" + validSig
)

var validParsed = authorization{
	accessKeyID: "AKIDEXAMPLE", date: "20261127", region: "us-east-1", service: "kms",
	signedHeaders: "content-type;host;x-amz-date", signature: validSig,
	nSigned: 3, signed: signsHost | signsAmzDate,
}

func TestParseAuthorizationAccepts(t *testing.T) {
	for _, c := range []struct{ name, h string }{
		{"sdk layout", validAuth},
		{"no spaces after commas", "AWS4-HMAC-SHA256 Credential=AKIDEXAMPLE/20261127/us-east-1/kms/aws4_request,SignedHeaders=content-type;host;x-amz-date,Signature=" + validSig},
		{"components reordered", "AWS4-HMAC-SHA256 Signature=" + validSig + ", Credential=AKIDEXAMPLE/20261127/us-east-1/kms/aws4_request, SignedHeaders=content-type;host;x-amz-date"},
		{"extra spaces and tabs", "AWS4-HMAC-SHA256   Credential=AKIDEXAMPLE/20261127/us-east-1/kms/aws4_request \t,\tSignedHeaders=content-type;host;x-amz-date  ,  Signature=" + validSig},
	} {
		t.Run(c.name, func(t *testing.T) {
			a, err := parseAuthorization(c.h)
			if err != nil {
				t.Fatal(err)
			}
			if a != validParsed {
				t.Fatalf("parsed %+v, want %+v", a, validParsed)
			}
			if a.String() != validAuth {
				t.Fatalf("formatted %q, want %q", a.String(), validAuth)
			}
		})
	}
}

func TestParseAuthorizationRejects(t *testing.T) {
	for _, m := range authorizationMutations {
		t.Run(m.name, func(t *testing.T) {
			h := m.f(strings.Replace(validAuth, "AKIDEXAMPLE", testAKID, 1))
			a, err := parseAuthorization(h)
			if err == nil {
				t.Fatalf("accepted %q as %+v", h, a)
			}
			if !errors.Is(err, ErrMalformedAuthorization) || ErrorCode(err) != CodeIncompleteSignature {
				t.Fatalf("error %v (%s), want ErrMalformedAuthorization", err, ErrorCode(err))
			}
			if strings.ContainsAny(err.Message, "\n\r\t") {
				t.Fatalf("message carries control characters: %q", err.Message)
			}
			if len(err.Message) > 300 {
				t.Fatalf("message is %d bytes long", len(err.Message))
			}
		})
	}
}

func TestParseAuthorizationMessages(t *testing.T) {
	for _, c := range []struct{ h, want string }{
		{"AWS4-HMAC-SHA256 SignedHeaders=host, Signature=" + validSig,
			"Authorization header requires 'Credential' parameter."},
		{"AWS4-HMAC-SHA256 ",
			"Authorization header requires 'Credential' parameter. Authorization header requires 'Signature' parameter. Authorization header requires 'SignedHeaders' parameter."},
		{"AWS4-HMAC-SHA512 Credential=x", "Unsupported AWS 'algorithm': 'AWS4-HMAC-SHA512'."},
		{strings.Replace(validAuth, "aws4_request", "aws4_reques\n", 1), "not 'aws4_reques\\x0a'."},
		{strings.Replace(validAuth, "content-type;host", "host;content-type", 1), "SignedHeaders must be sorted: 'content-type' comes after 'host'."},
	} {
		_, err := parseAuthorization(c.h)
		if err == nil || !strings.Contains(err.Message, c.want) {
			t.Errorf("parse %q: %v, want a message containing %q", c.h, err, c.want)
		}
	}
}

func TestIsDate(t *testing.T) {
	for s, want := range map[string]bool{
		"20261127": true, "20240229": true, "20000229": true, "19000229": false, "20230229": false,
		"20261131": false, "20261301": false, "20260001": false, "20260100": false, "00000101": false,
		"2026112": false, "202611277": false, "2026-11-": false, "2026112a": false,
	} {
		if isDate(s) != want {
			t.Errorf("isDate(%q) = %v", s, !want)
		}
	}
}

func TestParseAmzDate(t *testing.T) {
	for s, want := range map[string]bool{
		"20261127T120000Z": true, "20261127T235959Z": true,
		"20261127T240000Z": false, "20261127T126000Z": false, "20261127T120060Z": false,
		"20261127t120000Z": false, "20261127T120000z": false, "20261127T120000": false,
		"2026-11-27T12:00:00Z": false, "20261127T12000Z ": false, "20261131T120000Z": false,
	} {
		if _, ok := parseAmzDate(s); ok != want {
			t.Errorf("parseAmzDate(%q) ok = %v", s, ok)
		}
	}
}

package sigv4_test

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"net/http/httptest"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	v4 "github.com/aws/aws-sdk-go-v2/aws/signer/v4"

	"github.com/hsmgate/hsmgate/gateway/sigv4"
)

func Example() {
	now := time.Date(2026, 11, 27, 12, 0, 0, 0, time.UTC)
	v := &sigv4.Verifier{
		Region:  "us-east-1",
		Service: "kms",
		Lookup: func(_ context.Context, id string) (sigv4.Credentials, error) {
			if id != "AKIDEXAMPLE" {
				return sigv4.Credentials{}, sigv4.ErrUnknownAccessKey
			}
			return sigv4.Credentials{Secret: "example-secret", Principal: "arn:aws:iam::111122223333:user/alice"}, nil
		},
		Now: func() time.Time { return now }, // only for the example; the default is time.Now
	}

	// A client signs a ListKeys call (here with aws-sdk-go-v2's signer).
	body := []byte(`{}`)
	r := httptest.NewRequest("POST", "https://kms.example.com/", bytes.NewReader(body))
	r.Header.Set("Content-Type", "application/x-amz-json-1.1")
	r.Header.Set("X-Amz-Target", "TrentService.ListKeys")
	sum := sha256.Sum256(body)
	creds := aws.Credentials{AccessKeyID: "AKIDEXAMPLE", SecretAccessKey: "example-secret"}
	_ = v4.NewSigner().SignHTTP(context.Background(), creds, r, hex.EncodeToString(sum[:]), "kms", "us-east-1", now)

	// The gateway's handler: read the body, verify, then trust.
	id, err := v.Verify(r, body)
	fmt.Println(id.Principal, id.SignedHeaders, err)

	// Anything changed after signing is refused.
	r.Header.Set("X-Amz-Target", "TrentService.ScheduleKeyDeletion")
	_, err = v.Verify(r, body)
	fmt.Println(sigv4.HTTPStatus(err), sigv4.ErrorCode(err))

	// Output:
	// arn:aws:iam::111122223333:user/alice [content-length content-type host x-amz-date x-amz-target] <nil>
	// 400 InvalidSignatureException
}

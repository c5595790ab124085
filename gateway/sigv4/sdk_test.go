package sigv4

import (
	"context"
	"errors"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/kms"
	"github.com/aws/smithy-go"
)

// newKMSClient returns aws-sdk-go-v2's real KMS client pointed at srv, with
// static credentials and no retries.
func newKMSClient(srv *verifyServer, akid, secret string) *kms.Client {
	return kms.New(kms.Options{
		Region:       testRegion,
		BaseEndpoint: aws.String(srv.URL),
		HTTPClient:   srv.Client(),
		Credentials: aws.CredentialsProviderFunc(func(context.Context) (aws.Credentials, error) {
			return aws.Credentials{AccessKeyID: akid, SecretAccessKey: secret, Source: "test"}, nil
		}),
		Retryer: aws.NopRetryer{},
	})
}

// TestKMSClientEndToEnd proves the verifier accepts what the real KMS
// client sends, and that the client sees the AWS error types when it
// refuses. The verifier uses the real clock, as the SDK signs with it.
func TestKMSClientEndToEnd(t *testing.T) {
	newVerifier := func(secret string) *Verifier {
		return &Verifier{Region: testRegion, Service: testService, Lookup: staticLookup(testAKID, secret, testARN)}
	}

	t.Run("accepted", func(t *testing.T) {
		srv := startVerifyServer(t, newVerifier(testSecret), "tls")
		out, err := newKMSClient(srv, testAKID, testSecret).ListKeys(context.Background(), &kms.ListKeysInput{Limit: aws.Int32(10)})
		if err != nil {
			t.Fatalf("ListKeys: %v", err)
		}
		if out.Truncated || len(out.Keys) != 0 {
			t.Fatalf("ListKeys output = %+v", out)
		}
		o := <-srv.outcomes
		checkIdentity(t, o)
		if o.req.Header.Get("X-Amz-Target") != "TrentService.ListKeys" {
			t.Errorf("X-Amz-Target = %q", o.req.Header.Get("X-Amz-Target"))
		}
		if got, want := strings.Join(o.res.SignedHeaders, ";"), sdkHeaders.signedHeaders(); got != want {
			t.Errorf("the SDK signed %q, expected %q", got, want)
		}
		if d := time.Since(o.res.Date); d < -time.Minute || d > time.Minute {
			t.Errorf("Result.Date = %v", o.res.Date)
		}
	})

	refused := []struct {
		name         string
		serverSecret string
		clientAKID   string
		want         error
		code         string
	}{
		{"server holds another secret", otherSecret, testAKID, ErrSignatureMismatch, CodeInvalidSignature},
		{"unknown access key", testSecret, "AKIDNOBODYKNOWS01", ErrUnknownAccessKey, CodeUnrecognizedClient},
	}
	for _, c := range refused {
		t.Run(c.name, func(t *testing.T) {
			srv := startVerifyServer(t, newVerifier(c.serverSecret), "tls")
			_, err := newKMSClient(srv, c.clientAKID, testSecret).ListKeys(context.Background(), &kms.ListKeysInput{})
			if err == nil {
				t.Fatal("ListKeys succeeded against a server that must refuse it")
			}
			o := <-srv.outcomes
			checkOutcome(t, o, c.want)
			var apiErr smithy.APIError
			if !errors.As(err, &apiErr) || apiErr.ErrorCode() != c.code {
				t.Fatalf("client error = %v, want API error %s", err, c.code)
			}
			var re interface{ HTTPStatusCode() int }
			if !errors.As(err, &re) || re.HTTPStatusCode() != http.StatusBadRequest {
				t.Fatalf("client error %v does not carry HTTP 400", err)
			}
		})
	}
}

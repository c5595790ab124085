package bench

import (
	"bytes"
	"context"
	"crypto"
	"crypto/ecdsa"
	"crypto/rand"
	"crypto/rsa"
	"crypto/sha256"
	"crypto/sha512"
	"crypto/tls"
	"crypto/x509"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"os"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/kms"
	"github.com/aws/aws-sdk-go-v2/service/kms/types"
	"github.com/aws/smithy-go"
	smithyhttp "github.com/aws/smithy-go/transport/http"
)

// ErrWrongResult is the error of a checked call whose result did not hold:
// a decryption that gave other bytes, a signature that does not verify.
// Its code is CodeWrongResult.
var ErrWrongResult = errors.New("bench: wrong result")

// CallError is the error a Target returns for a failed call: which API
// call failed and its error code (see ErrorCode).
type CallError struct {
	Call string // the API call, e.g. "Encrypt", "CreateKey", "Decrypt (check)"
	Code string // an AWS exception name, or CodeTimeout, CodeTransport, CodeWrongResult, …
	Err  error
}

func (e *CallError) Error() string {
	if e.Err == nil {
		return "bench: " + e.Call + ": " + e.Code
	}
	msg := e.Err.Error()
	if strings.HasPrefix(msg, e.Code) {
		return "bench: " + e.Call + ": " + msg
	}
	return "bench: " + e.Call + ": " + e.Code + ": " + msg
}

func (e *CallError) Unwrap() error { return e.Err }

// Error codes beside those in cpu.go.
const (
	// CodeBadResponse: the answer could not be decoded.
	CodeBadResponse = "BadResponse"
	// CodeClientError: the client refused to send the call (a bug or a
	// bad configuration rather than a measurement).
	CodeClientError = "ClientError"
)

// ErrorCode returns the code of an error a Target returned: "" for nil, the
// AWS exception name for an API error (ThrottlingException,
// AccessDeniedException, …), CodeTimeout when the call's context ended
// first, CodeTransport for a connection failure, CodeWrongResult for a
// checked result that did not hold.
func ErrorCode(err error) string {
	if err == nil {
		return ""
	}
	var ce *CallError
	if errors.As(err, &ce) {
		return ce.Code
	}
	return classify(err)
}

// classify finds the code of an error that was not given one.
func classify(err error) string {
	switch {
	case errors.Is(err, ErrWrongResult):
		return CodeWrongResult
	case errors.Is(err, context.DeadlineExceeded), errors.Is(err, context.Canceled):
		return CodeTimeout
	}
	var ae smithy.APIError
	if errors.As(err, &ae) {
		return ae.ErrorCode()
	}
	if code := poolCode(err); code != "" {
		return code
	}
	var ne net.Error
	if errors.As(err, &ne) && ne.Timeout() {
		return CodeTimeout
	}
	var ue *url.Error
	var te *transportError
	var se *smithyhttp.RequestSendError
	var de *smithy.DeserializationError
	switch {
	case errors.As(err, &te), errors.As(err, &se), errors.As(err, &ue), errors.As(err, &ne),
		errors.Is(err, io.EOF), errors.Is(err, io.ErrUnexpectedEOF), errors.Is(err, net.ErrClosed):
		// net.ErrClosed is "use of closed network connection".
		return CodeTransport
	case errors.As(err, &de):
		return CodeBadResponse
	}
	return CodeClientError
}

// apiErrorCode returns the AWS exception name of err, "" if it is no API
// error.
func apiErrorCode(err error) string {
	var ae smithy.APIError
	if errors.As(err, &ae) {
		return ae.ErrorCode()
	}
	return ""
}

// wrongResult makes a WrongResult error.
func wrongResult(format string, args ...any) error {
	return fmt.Errorf("%w: "+format, append([]any{ErrWrongResult}, args...)...)
}

// callError gives err its code. A call whose context ended is a timeout
// whatever the client made of it (a cancelled request often surfaces as
// "use of closed network connection").
func callError(ctx context.Context, call string, err error) error {
	var ce *CallError
	if errors.As(err, &ce) {
		return err
	}
	code := classify(err)
	if code != CodeWrongResult && deadlinePassed(ctx) {
		code = CodeTimeout
	}
	return &CallError{Call: call, Code: code, Err: err}
}

// deadlinePassed reports whether ctx has ended or its deadline has passed
// (ctx.Err() turns non-nil only when the context's timer has run, which on
// a loaded machine can be a millisecond late).
func deadlinePassed(ctx context.Context) bool {
	if ctx.Err() != nil {
		return true
	}
	d, ok := ctx.Deadline()
	return ok && !time.Now().Before(d)
}

// KMSConfig says how to reach a KMS endpoint.
type KMSConfig struct {
	Endpoint string // e.g. https://127.0.0.1:8443
	Region   string // the SigV4 scope's region

	AccessKeyID, SecretAccessKey, SessionToken string

	// CABundle is a PEM file of the CAs to trust; empty means the system
	// roots.
	CABundle string
	// ClientCert and ClientKey are PEM files of a TLS client certificate
	// and its key. When set, calls authenticate with it and are not signed.
	ClientCert, ClientKey string
	// MaxConns bounds the connections to the endpoint, and is the number of
	// idle ones kept for reuse: at least the highest concurrency of the
	// run. Zero means 1024.
	MaxConns int
}

// KMSConfigFromEnv reads the configuration from the variables the AWS tools
// use (and `eval "$(hsmgate env)"` sets): AWS_ENDPOINT_URL_KMS or
// AWS_ENDPOINT_URL, AWS_REGION or AWS_DEFAULT_REGION, AWS_ACCESS_KEY_ID,
// AWS_SECRET_ACCESS_KEY, AWS_SESSION_TOKEN and AWS_CA_BUNDLE.
func KMSConfigFromEnv() KMSConfig {
	first := func(names ...string) string {
		for _, n := range names {
			if v := os.Getenv(n); v != "" {
				return v
			}
		}
		return ""
	}
	return KMSConfig{
		Endpoint:        first("AWS_ENDPOINT_URL_KMS", "AWS_ENDPOINT_URL"),
		Region:          first("AWS_REGION", "AWS_DEFAULT_REGION"),
		AccessKeyID:     os.Getenv("AWS_ACCESS_KEY_ID"),
		SecretAccessKey: os.Getenv("AWS_SECRET_ACCESS_KEY"),
		SessionToken:    os.Getenv("AWS_SESSION_TOKEN"),
		CABundle:        os.Getenv("AWS_CA_BUNDLE"),
	}
}

func (c KMSConfig) mTLS() bool { return c.ClientCert != "" || c.ClientKey != "" }

// check validates the configuration and returns the endpoint URL.
func (c KMSConfig) check() (*url.URL, error) {
	if c.Endpoint == "" {
		return nil, errors.New("bench: no KMS endpoint: set AWS_ENDPOINT_URL (eval \"$(hsmgate env)\")")
	}
	u, err := url.Parse(c.Endpoint)
	if err != nil || (u.Scheme != "https" && u.Scheme != "http") || u.Host == "" {
		return nil, fmt.Errorf("bench: endpoint %q: want an http(s) URL such as https://127.0.0.1:8443", c.Endpoint)
	}
	if u.Path == "" {
		u.Path = "/"
	}
	if c.mTLS() {
		if c.ClientCert == "" || c.ClientKey == "" {
			return nil, errors.New("bench: a client certificate needs both its certificate and its key file")
		}
		return u, nil
	}
	switch {
	case c.Region == "":
		return nil, errors.New("bench: no region for SigV4: set AWS_REGION")
	case c.AccessKeyID == "" || c.SecretAccessKey == "":
		return nil, errors.New("bench: no credentials: set AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY, or use a client certificate")
	}
	return u, nil
}

func (c KMSConfig) maxConns() int {
	if c.MaxConns > 0 {
		return c.MaxConns
	}
	return 1024
}

// transport is the HTTP transport both KMS clients use: HTTP/1.1 with
// keep-alive, as many idle connections kept as may be open, the CA bundle
// and the client certificate.
func (c KMSConfig) transport() (*http.Transport, error) {
	tc := &tls.Config{MinVersion: tls.VersionTLS12}
	if c.CABundle != "" {
		pem, err := os.ReadFile(c.CABundle)
		if err != nil {
			return nil, fmt.Errorf("bench: CA bundle: %w", err)
		}
		tc.RootCAs = x509.NewCertPool()
		if !tc.RootCAs.AppendCertsFromPEM(pem) {
			return nil, fmt.Errorf("bench: CA bundle %s holds no PEM certificate", c.CABundle)
		}
	}
	if c.mTLS() {
		cert, err := tls.LoadX509KeyPair(c.ClientCert, c.ClientKey)
		if err != nil {
			return nil, fmt.Errorf("bench: client certificate: %w", err)
		}
		tc.Certificates = []tls.Certificate{cert}
	}
	n := c.maxConns()
	return &http.Transport{
		DialContext:           (&net.Dialer{Timeout: 10 * time.Second, KeepAlive: 30 * time.Second}).DialContext,
		TLSClientConfig:       tc,
		TLSHandshakeTimeout:   10 * time.Second,
		MaxIdleConns:          n,
		MaxIdleConnsPerHost:   n,
		MaxConnsPerHost:       n,
		IdleConnTimeout:       90 * time.Second,
		ExpectContinueTimeout: time.Second,
	}, nil
}

// kmsAPI is the few KMS calls a benchmark makes, implemented by the SDK
// client and by the lean client. Errors are the client's own; kmsTarget
// gives them their codes.
type kmsAPI interface {
	createKey(ctx context.Context, spec, usage string) (keyID string, err error)
	getPublicKey(ctx context.Context, keyID string) ([]byte, error)
	encrypt(ctx context.Context, keyID string, plaintext []byte) ([]byte, error)
	decrypt(ctx context.Context, blob []byte) ([]byte, error)
	generateDataKey(ctx context.Context, keyID string) (plaintext, blob []byte, err error)
	reEncrypt(ctx context.Context, blob []byte, destKeyID string) ([]byte, error)
	sign(ctx context.Context, keyID, alg string, msg []byte) ([]byte, error)
	verify(ctx context.Context, keyID, alg string, msg, sig []byte) (bool, error)
	generateMac(ctx context.Context, keyID, alg string, msg []byte) ([]byte, error)
	verifyMac(ctx context.Context, keyID, alg string, msg, mac []byte) (bool, error)
	closeIdle()
}

// kmsTarget runs the operations on a KMS through a kmsAPI.
type kmsTarget struct {
	name, client string
	api          kmsAPI

	// Set by Prepare, read-only while Do runs.
	w          Workload
	keys       map[string]string // key spec → key id, created once
	symKey     string
	signKey    string
	signPub    crypto.PublicKey
	macKey     string
	payload    []byte
	ciphertext []byte // of payload under symKey
	signature  []byte // of payload by signKey
}

func (t *kmsTarget) Name() string   { return t.name }
func (t *kmsTarget) Client() string { return t.client }
func (t *kmsTarget) Close() error   { t.api.closeIdle(); return nil }

// Prepare creates the keys the mix needs (each once per target, tagged
// Purpose=hsmbench), a random payload, and the ciphertext and signature
// that Decrypt, ReEncrypt and Verify consume.
func (t *kmsTarget) Prepare(ctx context.Context, w *Workload) error {
	wl := *w
	if err := wl.Defaults(); err != nil {
		return err
	}
	t.w = wl
	if t.keys == nil {
		t.keys = map[string]string{}
	}
	key := func(spec, usage string) (string, error) {
		if id, ok := t.keys[spec+"/"+usage]; ok {
			return id, nil
		}
		id, err := t.api.createKey(ctx, spec, usage)
		if err != nil {
			return "", callError(ctx, "CreateKey", err)
		}
		t.keys[spec+"/"+usage] = id
		return id, nil
	}
	t.payload = make([]byte, wl.PayloadSize)
	rand.Read(t.payload)
	t.ciphertext, t.signature = nil, nil
	var err error
	if wl.Uses(OpEncrypt, OpDecrypt, OpGenerateDataKey, OpReEncrypt) {
		if t.symKey, err = key("SYMMETRIC_DEFAULT", "ENCRYPT_DECRYPT"); err != nil {
			return err
		}
		if wl.Uses(OpDecrypt, OpReEncrypt) {
			if t.ciphertext, err = t.api.encrypt(ctx, t.symKey, t.payload); err != nil {
				return callError(ctx, "Encrypt", err)
			}
		}
	}
	if wl.Uses(OpSign, OpVerify) {
		if t.signKey, err = key(wl.SignKeySpec, "SIGN_VERIFY"); err != nil {
			return err
		}
		der, err := t.api.getPublicKey(ctx, t.signKey)
		if err != nil {
			return callError(ctx, "GetPublicKey", err)
		}
		if t.signPub, err = x509.ParsePKIXPublicKey(der); err != nil {
			return &CallError{Call: "GetPublicKey", Code: CodeBadResponse, Err: err}
		}
		if wl.Uses(OpVerify) {
			if t.signature, err = t.api.sign(ctx, t.signKey, wl.SigningAlgorithm, t.payload); err != nil {
				return callError(ctx, "Sign", err)
			}
			if err := verifyLocally(t.signPub, wl.SigningAlgorithm, t.payload, t.signature); err != nil {
				return &CallError{Call: "Sign", Code: CodeWrongResult, Err: err}
			}
		}
	}
	if wl.Uses(OpGenerateMac) {
		if t.macKey, err = key(wl.MacKeySpec, "GENERATE_VERIFY_MAC"); err != nil {
			return err
		}
	}
	return nil
}

// Do runs one operation and, with check, verifies its result with a second
// call (or locally, for Sign).
func (t *kmsTarget) Do(ctx context.Context, op Op, check bool) error {
	call, err := t.do(ctx, op, check)
	if err != nil {
		return callError(ctx, call, err)
	}
	return nil
}

func (t *kmsTarget) do(ctx context.Context, op Op, check bool) (call string, err error) {
	call = string(op)
	switch op {
	case OpEncrypt:
		blob, err := t.api.encrypt(ctx, t.symKey, t.payload)
		if err != nil || !check {
			return call, err
		}
		return t.checkDecrypt(ctx, blob, t.payload)
	case OpDecrypt:
		pt, err := t.api.decrypt(ctx, t.ciphertext)
		if err == nil && check && !bytes.Equal(pt, t.payload) {
			err = wrongResult("decrypt gave other bytes than were encrypted")
		}
		return call, err
	case OpGenerateDataKey:
		pt, blob, err := t.api.generateDataKey(ctx, t.symKey)
		if err != nil || !check {
			return call, err
		}
		if len(pt) != 32 {
			return call, wrongResult("AES_256 data key of %d bytes", len(pt))
		}
		return t.checkDecrypt(ctx, blob, pt)
	case OpReEncrypt:
		blob, err := t.api.reEncrypt(ctx, t.ciphertext, t.symKey)
		if err != nil || !check {
			return call, err
		}
		return t.checkDecrypt(ctx, blob, t.payload)
	case OpSign:
		sig, err := t.api.sign(ctx, t.signKey, t.w.SigningAlgorithm, t.payload)
		if err == nil && check {
			err = verifyLocally(t.signPub, t.w.SigningAlgorithm, t.payload, sig)
		}
		return call, err
	case OpVerify:
		valid, err := t.api.verify(ctx, t.signKey, t.w.SigningAlgorithm, t.payload, t.signature)
		if check {
			// The signature is known to be good: a KMS that calls it
			// invalid answers wrong.
			if apiErrorCode(err) == "KMSInvalidSignatureException" {
				return call, fmt.Errorf("%w: a valid signature was refused (%v)", ErrWrongResult, err)
			}
			if err == nil && !valid {
				err = wrongResult("a valid signature was reported invalid")
			}
		}
		return call, err
	case OpGenerateMac:
		mac, err := t.api.generateMac(ctx, t.macKey, t.w.MacAlgorithm(), t.payload)
		if err != nil || !check {
			return call, err
		}
		call = "VerifyMac (check)"
		valid, err := t.api.verifyMac(ctx, t.macKey, t.w.MacAlgorithm(), t.payload, mac)
		if apiErrorCode(err) == "KMSInvalidMacException" {
			return call, fmt.Errorf("%w: the MAC does not verify (%v)", ErrWrongResult, err)
		}
		if err == nil && !valid {
			err = wrongResult("the MAC does not verify")
		}
		return call, err
	}
	return call, fmt.Errorf("bench: unknown operation %q", op)
}

// checkDecrypt decrypts blob and compares the result with want.
func (t *kmsTarget) checkDecrypt(ctx context.Context, blob, want []byte) (string, error) {
	const call = "Decrypt (check)"
	pt, err := t.api.decrypt(ctx, blob)
	if apiErrorCode(err) == "InvalidCiphertextException" {
		return call, fmt.Errorf("%w: the ciphertext does not decrypt (%v)", ErrWrongResult, err)
	}
	if err == nil && !bytes.Equal(pt, want) {
		err = wrongResult("decrypt gave other bytes than were encrypted")
	}
	return call, err
}

// verifyLocally checks a signature with the public key, in software.
func verifyLocally(pub crypto.PublicKey, alg string, msg, sig []byte) error {
	h, digest := digestFor(alg, msg)
	if h == 0 {
		return fmt.Errorf("bench: signing algorithm %q", alg)
	}
	var err error
	switch k := pub.(type) {
	case *ecdsa.PublicKey:
		if !strings.HasPrefix(alg, "ECDSA_") || !ecdsa.VerifyASN1(k, digest, sig) {
			err = errors.New("ECDSA signature does not verify")
		}
	case *rsa.PublicKey:
		switch {
		case strings.HasPrefix(alg, "RSASSA_PSS_"):
			err = rsa.VerifyPSS(k, h, digest, sig, &rsa.PSSOptions{SaltLength: rsa.PSSSaltLengthEqualsHash, Hash: h})
		case strings.HasPrefix(alg, "RSASSA_PKCS1_V1_5_"):
			err = rsa.VerifyPKCS1v15(k, h, digest, sig)
		default:
			err = errors.New("not an RSA algorithm")
		}
	default:
		err = fmt.Errorf("public key of type %T", pub)
	}
	if err != nil {
		return wrongResult("%s signature: %v", alg, err)
	}
	return nil
}

// digestFor hashes msg with the hash a signing algorithm names.
func digestFor(alg string, msg []byte) (crypto.Hash, []byte) {
	switch {
	case strings.HasSuffix(alg, "_SHA_256"):
		d := sha256.Sum256(msg)
		return crypto.SHA256, d[:]
	case strings.HasSuffix(alg, "_SHA_384"):
		d := sha512.Sum384(msg)
		return crypto.SHA384, d[:]
	case strings.HasSuffix(alg, "_SHA_512"):
		d := sha512.Sum512(msg)
		return crypto.SHA512, d[:]
	}
	return 0, nil
}

// --- aws-sdk-go-v2 ---------------------------------------------------------

// NewSDKTarget returns a Target that calls the KMS with aws-sdk-go-v2's KMS
// client (Client "sdk"), as most Go applications would: retries off, so
// that every failure is seen, and its own keep-alive transport.
//
// Known issue: aws-sdk-go-v2 (service/kms v1.62) has been reported to fail
// about 1–2% of the requests whose body exceeds 4 KiB (Encrypt, Sign or
// GenerateMac of a payload near 4096 bytes; Decrypt and ReEncrypt of its
// ciphertext) with "use of closed network connection", typically as
// "deserialization failed, failed to decode response body, read tcp …: use
// of closed network connection" (aws/aws-sdk-go-v2 issues 1825 and 2737).
// The SDK's default retryer retries net.ErrClosed since the fix of 2737;
// with retries off this target does not, and does not hide the failures
// either: they count as CodeTransport errors, so compare the sdk and lean
// clients' error counts before blaming the server.
func NewSDKTarget(cfg KMSConfig) (Target, error) {
	u, err := cfg.check()
	if err != nil {
		return nil, err
	}
	tr, err := cfg.transport()
	if err != nil {
		return nil, err
	}
	o := kms.Options{
		Region:       cfg.Region,
		BaseEndpoint: aws.String(cfg.Endpoint),
		HTTPClient:   &http.Client{Transport: tr},
		Retryer:      aws.NopRetryer{},
	}
	if cfg.mTLS() {
		o.Credentials = aws.AnonymousCredentials{} // no signature: the certificate says who calls
		if o.Region == "" {
			o.Region = "us-east-1"
		}
	} else {
		creds := aws.Credentials{AccessKeyID: cfg.AccessKeyID, SecretAccessKey: cfg.SecretAccessKey,
			SessionToken: cfg.SessionToken, Source: "hsmbench"}
		o.Credentials = aws.CredentialsProviderFunc(func(context.Context) (aws.Credentials, error) { return creds, nil })
	}
	return &kmsTarget{name: u.Scheme + "://" + u.Host, client: "sdk", api: &sdkAPI{c: kms.New(o), tr: tr}}, nil
}

type sdkAPI struct {
	c  *kms.Client
	tr *http.Transport
}

func (s *sdkAPI) closeIdle() { s.tr.CloseIdleConnections() }

func (s *sdkAPI) createKey(ctx context.Context, spec, usage string) (string, error) {
	out, err := s.c.CreateKey(ctx, &kms.CreateKeyInput{
		Description: aws.String("hsmbench"),
		KeySpec:     types.KeySpec(spec),
		KeyUsage:    types.KeyUsageType(usage),
		Tags:        []types.Tag{{TagKey: aws.String("Purpose"), TagValue: aws.String("hsmbench")}},
	})
	if err != nil {
		return "", err
	}
	if out.KeyMetadata == nil || out.KeyMetadata.KeyId == nil {
		return "", &smithy.DeserializationError{Err: errors.New("CreateKey answered no key id")}
	}
	return *out.KeyMetadata.KeyId, nil
}

func (s *sdkAPI) getPublicKey(ctx context.Context, keyID string) ([]byte, error) {
	out, err := s.c.GetPublicKey(ctx, &kms.GetPublicKeyInput{KeyId: &keyID})
	if err != nil {
		return nil, err
	}
	return out.PublicKey, nil
}

func (s *sdkAPI) encrypt(ctx context.Context, keyID string, plaintext []byte) ([]byte, error) {
	out, err := s.c.Encrypt(ctx, &kms.EncryptInput{KeyId: &keyID, Plaintext: plaintext})
	if err != nil {
		return nil, err
	}
	return out.CiphertextBlob, nil
}

func (s *sdkAPI) decrypt(ctx context.Context, blob []byte) ([]byte, error) {
	out, err := s.c.Decrypt(ctx, &kms.DecryptInput{CiphertextBlob: blob})
	if err != nil {
		return nil, err
	}
	return out.Plaintext, nil
}

func (s *sdkAPI) generateDataKey(ctx context.Context, keyID string) ([]byte, []byte, error) {
	out, err := s.c.GenerateDataKey(ctx, &kms.GenerateDataKeyInput{KeyId: &keyID, KeySpec: types.DataKeySpecAes256})
	if err != nil {
		return nil, nil, err
	}
	return out.Plaintext, out.CiphertextBlob, nil
}

func (s *sdkAPI) reEncrypt(ctx context.Context, blob []byte, destKeyID string) ([]byte, error) {
	out, err := s.c.ReEncrypt(ctx, &kms.ReEncryptInput{CiphertextBlob: blob, DestinationKeyId: &destKeyID})
	if err != nil {
		return nil, err
	}
	return out.CiphertextBlob, nil
}

func (s *sdkAPI) sign(ctx context.Context, keyID, alg string, msg []byte) ([]byte, error) {
	out, err := s.c.Sign(ctx, &kms.SignInput{KeyId: &keyID, Message: msg, MessageType: types.MessageTypeRaw,
		SigningAlgorithm: types.SigningAlgorithmSpec(alg)})
	if err != nil {
		return nil, err
	}
	return out.Signature, nil
}

func (s *sdkAPI) verify(ctx context.Context, keyID, alg string, msg, sig []byte) (bool, error) {
	out, err := s.c.Verify(ctx, &kms.VerifyInput{KeyId: &keyID, Message: msg, Signature: sig, MessageType: types.MessageTypeRaw,
		SigningAlgorithm: types.SigningAlgorithmSpec(alg)})
	if err != nil {
		return false, err
	}
	return out.SignatureValid, nil
}

func (s *sdkAPI) generateMac(ctx context.Context, keyID, alg string, msg []byte) ([]byte, error) {
	out, err := s.c.GenerateMac(ctx, &kms.GenerateMacInput{KeyId: &keyID, Message: msg, MacAlgorithm: types.MacAlgorithmSpec(alg)})
	if err != nil {
		return nil, err
	}
	return out.Mac, nil
}

func (s *sdkAPI) verifyMac(ctx context.Context, keyID, alg string, msg, mac []byte) (bool, error) {
	out, err := s.c.VerifyMac(ctx, &kms.VerifyMacInput{KeyId: &keyID, Message: msg, Mac: mac, MacAlgorithm: types.MacAlgorithmSpec(alg)})
	if err != nil {
		return false, err
	}
	return out.MacValid, nil
}

// --- lean client -----------------------------------------------------------

// NewLeanTarget returns a Target that calls the KMS with net/http alone
// (Client "lean"): request bodies written by hand into pooled buffers,
// SigV4 by Signer (or a client certificate and no signature), answers
// decoded with encoding/json. It shows what the protocol costs without a
// general-purpose SDK's middleware.
func NewLeanTarget(cfg KMSConfig) (Target, error) {
	u, err := cfg.check()
	if err != nil {
		return nil, err
	}
	tr, err := cfg.transport()
	if err != nil {
		return nil, err
	}
	l := &leanAPI{url: *u, client: &http.Client{Transport: tr}, tr: tr}
	if !cfg.mTLS() {
		l.signer = &Signer{AccessKeyID: cfg.AccessKeyID, Secret: cfg.SecretAccessKey, SessionToken: cfg.SessionToken,
			Region: cfg.Region, Service: "kms"}
	}
	return &kmsTarget{name: u.Scheme + "://" + u.Host, client: "lean", api: l}, nil
}

type leanAPI struct {
	url    url.URL
	client *http.Client
	tr     *http.Transport
	signer *Signer // nil with a client certificate
}

func (l *leanAPI) closeIdle() { l.tr.CloseIdleConnections() }

// leanError is an error answer of the KMS, as the JSON 1.1 protocol carries
// it. It is a smithy.APIError, as the SDK's errors are.
type leanError struct {
	Code, Message string
	Status        int
}

func (e *leanError) Error() string {
	return fmt.Sprintf("%s: %s (HTTP %d)", e.Code, e.Message, e.Status)
}
func (e *leanError) ErrorCode() string    { return e.Code }
func (e *leanError) ErrorMessage() string { return e.Message }
func (e *leanError) ErrorFault() smithy.ErrorFault {
	if e.Status >= 500 {
		return smithy.FaultServer
	}
	return smithy.FaultClient
}

// transportError is a failure to send a request or read its answer.
type transportError struct{ err error }

func (e *transportError) Error() string { return e.err.Error() }
func (e *transportError) Unwrap() error { return e.err }

// badResponseError is an answer that could not be decoded.
type badResponseError struct{ err error }

func (e *badResponseError) Error() string { return "undecodable answer: " + e.err.Error() }
func (e *badResponseError) Unwrap() error { return &smithy.DeserializationError{Err: e.err} }

// leanBody is a request body in a pooled buffer. The transport closes the
// body when it is done with it (possibly after the response came back);
// only then does the buffer go back to the pool.
type leanBody struct {
	buf    []byte
	r      bytes.Reader
	closed atomic.Bool
}

var leanBodies = sync.Pool{New: func() any { return &leanBody{buf: make([]byte, 0, 1024)} }}

func newLeanBody() *leanBody {
	b := leanBodies.Get().(*leanBody)
	b.buf = b.buf[:0]
	b.closed.Store(false)
	return b
}

func (b *leanBody) Read(p []byte) (int, error) { return b.r.Read(p) }

func (b *leanBody) Close() error {
	if b.closed.CompareAndSwap(false, true) {
		if cap(b.buf) <= 64<<10 {
			leanBodies.Put(b)
		}
	}
	return nil
}

// Writing the few request shapes by hand.

func (b *leanBody) open() { b.buf = append(b.buf, '{') }

func (b *leanBody) field(name string) {
	if len(b.buf) > 1 {
		b.buf = append(b.buf, ',')
	}
	b.buf = append(b.buf, '"')
	b.buf = append(b.buf, name...)
	b.buf = append(b.buf, '"', ':')
}

func (b *leanBody) str(name, v string) {
	b.field(name)
	b.buf = appendJSONString(b.buf, v)
}

func (b *leanBody) blob(name string, v []byte) {
	b.field(name)
	b.buf = append(b.buf, '"')
	b.buf = base64.StdEncoding.AppendEncode(b.buf, v)
	b.buf = append(b.buf, '"')
}

func (b *leanBody) raw(name, json string) {
	b.field(name)
	b.buf = append(b.buf, json...)
}

func (b *leanBody) end() { b.buf = append(b.buf, '}') }

// appendJSONString appends s as a JSON string.
func appendJSONString(b []byte, s string) []byte {
	const hexDigits = "0123456789abcdef"
	b = append(b, '"')
	for i := 0; i < len(s); i++ {
		c := s[i]
		switch {
		case c == '"' || c == '\\':
			b = append(b, '\\', c)
		case c < 0x20:
			b = append(b, '\\', 'u', '0', '0', hexDigits[c>>4], hexDigits[c&0xf])
		default:
			b = append(b, c)
		}
	}
	return append(b, '"')
}

// leanResponse holds every field the calls read from an answer.
type leanResponse struct {
	KeyMetadata    *struct{ KeyId string }
	CiphertextBlob []byte
	Plaintext      []byte
	Signature      []byte
	SignatureValid bool
	Mac            []byte
	MacValid       bool
	PublicKey      []byte
}

var responseBuffers = sync.Pool{New: func() any { return new(bytes.Buffer) }}

const maxResponse = 1 << 20

// call sends one request, TrentService.<op>, with the body b (which it
// consumes), and decodes the answer into out.
func (l *leanAPI) call(ctx context.Context, op string, b *leanBody, out *leanResponse) error {
	b.end()
	b.r.Reset(b.buf)
	u := l.url
	req := (&http.Request{
		Method:        http.MethodPost,
		URL:           &u,
		Host:          u.Host,
		Proto:         "HTTP/1.1",
		ProtoMajor:    1,
		ProtoMinor:    1,
		Header:        make(http.Header, 6),
		Body:          b,
		ContentLength: int64(len(b.buf)),
	}).WithContext(ctx)
	req.Header["Content-Type"] = []string{"application/x-amz-json-1.1"}
	req.Header["X-Amz-Target"] = []string{"TrentService." + op}
	if l.signer != nil {
		l.signer.Sign(req, b.buf, time.Now())
	}
	resp, err := l.client.Do(req)
	if err != nil {
		return &transportError{err}
	}
	defer resp.Body.Close()
	buf := responseBuffers.Get().(*bytes.Buffer)
	defer func() {
		if buf.Cap() <= 64<<10 {
			buf.Reset()
			responseBuffers.Put(buf)
		}
	}()
	buf.Reset()
	if _, err := buf.ReadFrom(io.LimitReader(resp.Body, maxResponse)); err != nil {
		return &transportError{err}
	}
	if resp.StatusCode != http.StatusOK {
		return decodeError(resp, buf.Bytes())
	}
	if err := json.Unmarshal(buf.Bytes(), out); err != nil {
		return &badResponseError{err}
	}
	return nil
}

// decodeError reads an error answer: the exception name from the body's
// "__type" (or the X-Amzn-ErrorType header), without any "namespace#"
// prefix or ":url" suffix.
func decodeError(resp *http.Response, body []byte) error {
	var e struct {
		Type     string `json:"__type"`
		Message  string `json:"message"`
		Message2 string `json:"Message"`
	}
	jsonErr := json.Unmarshal(body, &e)
	code := e.Type
	if code == "" {
		code = resp.Header.Get("X-Amzn-ErrorType")
	}
	if code == "" {
		if jsonErr != nil {
			return &badResponseError{fmt.Errorf("HTTP %d with a body that is not JSON", resp.StatusCode)}
		}
		code = "UnknownError"
	}
	if i := strings.IndexByte(code, ':'); i >= 0 {
		code = code[:i]
	}
	if i := strings.IndexByte(code, '#'); i >= 0 {
		code = code[i+1:]
	}
	msg := e.Message
	if msg == "" {
		msg = e.Message2
	}
	return &leanError{Code: code, Message: msg, Status: resp.StatusCode}
}

func (l *leanAPI) createKey(ctx context.Context, spec, usage string) (string, error) {
	b := newLeanBody()
	b.open()
	b.str("Description", "hsmbench")
	b.str("KeySpec", spec)
	b.str("KeyUsage", usage)
	b.raw("Tags", `[{"TagKey":"Purpose","TagValue":"hsmbench"}]`)
	var out leanResponse
	if err := l.call(ctx, "CreateKey", b, &out); err != nil {
		return "", err
	}
	if out.KeyMetadata == nil || out.KeyMetadata.KeyId == "" {
		return "", &badResponseError{errors.New("CreateKey answered no key id")}
	}
	return out.KeyMetadata.KeyId, nil
}

func (l *leanAPI) getPublicKey(ctx context.Context, keyID string) ([]byte, error) {
	b := newLeanBody()
	b.open()
	b.str("KeyId", keyID)
	var out leanResponse
	err := l.call(ctx, "GetPublicKey", b, &out)
	return out.PublicKey, err
}

func (l *leanAPI) encrypt(ctx context.Context, keyID string, plaintext []byte) ([]byte, error) {
	b := newLeanBody()
	b.open()
	b.str("KeyId", keyID)
	b.blob("Plaintext", plaintext)
	var out leanResponse
	err := l.call(ctx, "Encrypt", b, &out)
	return out.CiphertextBlob, err
}

func (l *leanAPI) decrypt(ctx context.Context, blob []byte) ([]byte, error) {
	b := newLeanBody()
	b.open()
	b.blob("CiphertextBlob", blob)
	var out leanResponse
	err := l.call(ctx, "Decrypt", b, &out)
	return out.Plaintext, err
}

func (l *leanAPI) generateDataKey(ctx context.Context, keyID string) ([]byte, []byte, error) {
	b := newLeanBody()
	b.open()
	b.str("KeyId", keyID)
	b.str("KeySpec", "AES_256")
	var out leanResponse
	err := l.call(ctx, "GenerateDataKey", b, &out)
	return out.Plaintext, out.CiphertextBlob, err
}

func (l *leanAPI) reEncrypt(ctx context.Context, blob []byte, destKeyID string) ([]byte, error) {
	b := newLeanBody()
	b.open()
	b.blob("CiphertextBlob", blob)
	b.str("DestinationKeyId", destKeyID)
	var out leanResponse
	err := l.call(ctx, "ReEncrypt", b, &out)
	return out.CiphertextBlob, err
}

func (l *leanAPI) sign(ctx context.Context, keyID, alg string, msg []byte) ([]byte, error) {
	b := newLeanBody()
	b.open()
	b.str("KeyId", keyID)
	b.blob("Message", msg)
	b.str("MessageType", "RAW")
	b.str("SigningAlgorithm", alg)
	var out leanResponse
	err := l.call(ctx, "Sign", b, &out)
	return out.Signature, err
}

func (l *leanAPI) verify(ctx context.Context, keyID, alg string, msg, sig []byte) (bool, error) {
	b := newLeanBody()
	b.open()
	b.str("KeyId", keyID)
	b.blob("Message", msg)
	b.str("MessageType", "RAW")
	b.blob("Signature", sig)
	b.str("SigningAlgorithm", alg)
	var out leanResponse
	err := l.call(ctx, "Verify", b, &out)
	return out.SignatureValid, err
}

func (l *leanAPI) generateMac(ctx context.Context, keyID, alg string, msg []byte) ([]byte, error) {
	b := newLeanBody()
	b.open()
	b.str("KeyId", keyID)
	b.blob("Message", msg)
	b.str("MacAlgorithm", alg)
	var out leanResponse
	err := l.call(ctx, "GenerateMac", b, &out)
	return out.Mac, err
}

func (l *leanAPI) verifyMac(ctx context.Context, keyID, alg string, msg, mac []byte) (bool, error) {
	b := newLeanBody()
	b.open()
	b.str("KeyId", keyID)
	b.blob("Message", msg)
	b.blob("Mac", mac)
	b.str("MacAlgorithm", alg)
	var out leanResponse
	err := l.call(ctx, "VerifyMac", b, &out)
	return out.MacValid, err
}

package gateway_test

import (
	"bytes"
	"encoding/base64"
	"encoding/json"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"github.com/hsmgate/hsmgate/internal/testenv"
)

// debianAWS is the AWS CLI from Debian's awscli package: the client the
// project promises to satisfy (another `aws` on PATH may be a different
// major version).
const debianAWS = "/usr/bin/aws"

// TestAWSCLI drives the gateway with the real AWS CLI, as a user would:
// create a key, alias it, encrypt, decrypt, make a data key, sign and
// verify with an ECC key, and check the signature with openssl against
// GetPublicKey's output.
func TestAWSCLI(t *testing.T) {
	if _, err := os.Stat(debianAWS); err != nil {
		testenv.Missing(t, "the AWS CLI ("+debianAWS+")", "awscli")
	}
	openssl, err := exec.LookPath("openssl")
	if err != nil {
		testenv.Missing(t, "openssl", "openssl")
	}
	tg := startGateway(t, nil)
	work := t.TempDir()
	file := func(name string, data []byte) string {
		p := filepath.Join(work, name)
		if err := os.WriteFile(p, data, 0o600); err != nil {
			t.Fatal(err)
		}
		return p
	}
	aws := func(args ...string) map[string]any {
		t.Helper()
		cmd := exec.Command(debianAWS, append([]string{"kms", "--endpoint-url", tg.url, "--output", "json"}, args...)...)
		cmd.Env = []string{
			"PATH=/usr/bin:/bin", "HOME=" + work,
			"AWS_ACCESS_KEY_ID=" + tg.admin.AccessKeyID, "AWS_SECRET_ACCESS_KEY=" + tg.admin.SecretAccessKey,
			"AWS_DEFAULT_REGION=" + testRegion, "AWS_CA_BUNDLE=" + tg.admin.CABundle,
			"AWS_CONFIG_FILE=" + filepath.Join(work, "none"), "AWS_SHARED_CREDENTIALS_FILE=" + filepath.Join(work, "none"),
			"AWS_PAGER=", "AWS_RETRY_MODE=standard", "AWS_MAX_ATTEMPTS=1",
		}
		var stdout, stderr bytes.Buffer
		cmd.Stdout, cmd.Stderr = &stdout, &stderr
		if err := cmd.Run(); err != nil {
			t.Fatalf("aws kms %s: %v\n%s", strings.Join(args, " "), err, stderr.String())
		}
		out := map[string]any{}
		if stdout.Len() > 0 {
			if err := json.Unmarshal(stdout.Bytes(), &out); err != nil {
				t.Fatalf("aws kms %s: output %q: %v", args[0], stdout.String(), err)
			}
		}
		return out
	}
	blob := func(v any) []byte {
		t.Helper()
		b, err := base64.StdEncoding.DecodeString(v.(string))
		if err != nil {
			t.Fatal(err)
		}
		return b
	}

	key := aws("create-key", "--description", "from the AWS CLI")["KeyMetadata"].(map[string]any)
	keyID := key["KeyId"].(string)
	aws("create-alias", "--alias-name", "alias/cli", "--target-key-id", keyID)
	if d := aws("describe-key", "--key-id", "alias/cli")["KeyMetadata"].(map[string]any); d["KeyId"] != keyID {
		t.Fatalf("describe-key by alias: %v", d)
	}
	secret := []byte("secret from the CLI\x00\xff")
	enc := aws("encrypt", "--key-id", "alias/cli", "--plaintext", "fileb://"+file("pt", secret),
		"--encryption-context", "purpose=cli")
	ct := file("ct", blob(enc["CiphertextBlob"]))
	dec := aws("decrypt", "--ciphertext-blob", "fileb://"+ct, "--encryption-context", "purpose=cli")
	if got := blob(dec["Plaintext"]); !bytes.Equal(got, secret) {
		t.Fatalf("decrypt gave %q", got)
	}
	dk := aws("generate-data-key", "--key-id", "alias/cli", "--key-spec", "AES_256")
	dkPlain := blob(dk["Plaintext"])
	dkDec := aws("decrypt", "--ciphertext-blob", "fileb://"+file("dk", blob(dk["CiphertextBlob"])))
	if len(dkPlain) != 32 || !bytes.Equal(blob(dkDec["Plaintext"]), dkPlain) {
		t.Fatal("data key round trip failed")
	}
	if keys := aws("list-keys")["Keys"].([]any); len(keys) != 1 {
		t.Fatalf("list-keys: %v", keys)
	}

	ecc := aws("create-key", "--key-spec", "ECC_NIST_P256", "--key-usage", "SIGN_VERIFY")["KeyMetadata"].(map[string]any)
	eccID := ecc["KeyId"].(string)
	msg := file("msg", []byte("message signed in an HSM"))
	sig := aws("sign", "--key-id", eccID, "--message", "fileb://"+msg, "--message-type", "RAW",
		"--signing-algorithm", "ECDSA_SHA_256")
	sigFile := file("sig", blob(sig["Signature"]))
	v := aws("verify", "--key-id", eccID, "--message", "fileb://"+msg, "--message-type", "RAW",
		"--signing-algorithm", "ECDSA_SHA_256", "--signature", "fileb://"+sigFile)
	if v["SignatureValid"] != true {
		t.Fatalf("verify: %v", v)
	}
	pubDER := file("pub.der", blob(aws("get-public-key", "--key-id", eccID)["PublicKey"]))
	run := func(args ...string) string {
		out, err := exec.Command(openssl, args...).CombinedOutput()
		if err != nil {
			t.Fatalf("openssl %s: %v\n%s", strings.Join(args, " "), err, out)
		}
		return string(out)
	}
	pubPEM := filepath.Join(work, "pub.pem")
	run("pkey", "-pubin", "-inform", "DER", "-in", pubDER, "-out", pubPEM)
	if out := run("dgst", "-sha256", "-verify", pubPEM, "-signature", sigFile, msg); !strings.Contains(out, "Verified OK") {
		t.Fatalf("openssl: %s", out)
	}
	// And openssl refuses the signature over another message.
	other := file("other", []byte("another message"))
	if out, err := exec.Command(openssl, "dgst", "-sha256", "-verify", pubPEM, "-signature", sigFile, other).CombinedOutput(); err == nil {
		t.Fatalf("openssl verified a signature over another message: %s", out)
	}
}

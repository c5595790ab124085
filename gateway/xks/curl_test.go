package xks_test

import (
	"encoding/pem"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"testing"

	"github.com/hsmgate/hsmgate/gateway/xks"
	"github.com/hsmgate/hsmgate/internal/testenv"
)

// TestCurl runs testdata/xks_curl_test.sh, which calls the API with curl's
// own SigV4 signer (--aws-sigv4), as the specification's "Appendix D" does.
func TestCurl(t *testing.T) {
	requireCurl(t)
	pool, _ := openPool(t, 2)
	keys := newMemKeys()
	const keyID = "b42c7fbf-de61-441c-ae24-123456789012"
	keys.add("curl", newMemKey(t, pool, keyID))
	c1, c2 := newCred(t), newCred(t)
	audit := &auditLog{}
	h := &xks.Handler{Pool: pool, Log: quietLog(), Audit: audit.append, Stores: []*xks.Store{{
		Name: "curl", Prefix: "/keystores/curl-test", Keys: keys,
		Credentials: func() []xks.Credential { return []xks.Credential{c1, c2} },
	}}}
	srv := serve(t, h)
	ca := filepath.Join(t.TempDir(), "ca.pem")
	if err := os.WriteFile(ca, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: srv.Certificate().Raw}), 0o600); err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command("bash", filepath.Join("testdata", "xks_curl_test.sh"))
	cmd.Env = append(os.Environ(),
		"XKS_ENDPOINT="+srv.URL, "XKS_URI_PATH="+h.Stores[0].URIPath(),
		"ACCESS_KEY_ID="+c1.AccessKeyID, "SECRET_ACCESS_KEY="+c1.Secret,
		"ACCESS_KEY_ID_2="+c2.AccessKeyID, "SECRET_ACCESS_KEY_2="+c2.Secret,
		"XKS_KEY_ID="+keyID, "REGION=ap-northeast-1", "CACERT="+ca,
	)
	out, err := cmd.CombinedOutput()
	if err != nil {
		t.Fatalf("xks_curl_test.sh: %v\n%s", err, out)
	}
	if !strings.Contains(string(out), " 0 failed checks") || strings.Contains(string(out), "FAIL ") {
		t.Fatalf("xks_curl_test.sh:\n%s", out)
	}
	t.Logf("xks_curl_test.sh:\n%s", out)
	// curl's signatures were verified, and the region it signed for seen.
	n := 0
	for _, ev := range audit.all() {
		if ev.Authenticated && ev.Region == "ap-northeast-1" && ev.Outcome == xks.OutcomeOK {
			n++
		}
	}
	if n < 10 {
		t.Errorf("only %d successful curl requests were audited", n)
	}
}

// requireCurl skips (or, under CI=true, fails) when curl lacks --aws-sigv4
// (curl 7.75 or later).
func requireCurl(t *testing.T) {
	t.Helper()
	if _, err := exec.LookPath("bash"); err != nil {
		testenv.Missing(t, "bash", "bash")
	}
	path, err := exec.LookPath("curl")
	if err != nil {
		testenv.Missing(t, "curl 7.75 or later (for --aws-sigv4)", "curl")
	}
	out, err := exec.Command(path, "--version").Output()
	m := regexp.MustCompile(`^curl (\d+)\.(\d+)`).FindSubmatch(out)
	if err != nil || m == nil {
		testenv.Missing(t, "curl 7.75 or later (for --aws-sigv4)", "curl")
	}
	major, _ := strconv.Atoi(string(m[1]))
	minor, _ := strconv.Atoi(string(m[2]))
	if major < 7 || major == 7 && minor < 75 {
		testenv.Missing(t, "curl 7.75 or later (for --aws-sigv4), not "+string(m[0]), "curl")
	}
}

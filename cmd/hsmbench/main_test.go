package main

import (
	"bytes"
	"context"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/hsmgate/hsmgate/bench"
	"github.com/hsmgate/hsmgate/hsmpool"
	"github.com/hsmgate/hsmgate/internal/config"
	"github.com/hsmgate/hsmgate/internal/gatewaytest"
	"github.com/hsmgate/hsmgate/internal/testenv"
)

// hsmbench runs the command in process and returns its exit status and
// output.
func hsmbench(t *testing.T, args ...string) (int, string, string) {
	t.Helper()
	var stdout, stderr bytes.Buffer
	code := run(append([]string{"hsmbench"}, args...), &stdout, &stderr)
	t.Logf("hsmbench %s: exit %d\n%s\n%s", strings.Join(args, " "), code, stdout.String(), stderr.String())
	return code, stdout.String(), stderr.String()
}

// dataFolder makes an hsmgate data folder on 3 SoftHSM tokens with a
// domain key, as `hsmgate init` on a configured pool would.
func dataFolder(t *testing.T) string {
	env := testenv.NewSoftHSM(t, 3)
	ctx := context.Background()
	p, err := hsmpool.Open(ctx, hsmpool.Options{Modules: []hsmpool.ModuleOptions{{Path: env.Module, PIN: hsmpool.PINSource{File: env.PINFile}}}})
	if err != nil {
		t.Fatal(err)
	}
	dk, _ := hsmpool.NewDomainKeyMaterial()
	if err := p.ProvisionDomainKey(ctx, dk); err != nil {
		t.Fatal(err)
	}
	kcv := p.DomainKeyCheck()
	if err := p.Close(); err != nil {
		t.Fatal(err)
	}
	data := t.TempDir()
	toml := fmt.Sprintf(`[pool]
domain_key_check = %q
[[pool.modules]]
path = %q
pin_file = %q
tokens = [{label = "tok-0"}, {label = "tok-1"}, {label = "tok-2"}]
[pool.modules.env]
SOFTHSM2_CONF = %q
`, kcv, env.Module, env.PINFile, env.Conf)
	if err := os.WriteFile(config.Path(data), []byte(toml), 0o600); err != nil {
		t.Fatal(err)
	}
	return data
}

// A slot sweep on the pool writes a report with a scalability fit, and plan
// reads it back.
func TestPoolSweepAndPlan(t *testing.T) {
	data := dataFolder(t)
	out := filepath.Join(t.TempDir(), "report")
	code, stdout, _ := hsmbench(t, "pool", "--data", data, "--slots", "1,2,3", "--concurrency", "4",
		"--warmup", "100ms", "--duration", "300ms", "--out", out, "--no-progress", "--mix", "Encrypt=2,Sign=1")
	if code != 0 {
		t.Fatalf("hsmbench pool: exit %d", code)
	}
	for _, f := range []string{"report.json", "report.csv", "report.md", "usl.png"} {
		if fi, err := os.Stat(filepath.Join(out, f)); err != nil || fi.Size() == 0 {
			t.Errorf("%s: %v", f, err)
		}
	}
	if !strings.Contains(stdout, "closed c=4") {
		t.Error("the summary does not show the runs")
	}
	f, err := os.Open(filepath.Join(out, "report.json"))
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	rep, err := bench.ReadJSON(f)
	if err != nil || len(rep.Runs) != 3 || rep.USL == nil {
		t.Fatalf("report: %v, %d runs, fit %v", err, len(rep.Runs), rep.USL)
	}
	for _, r := range rep.Runs {
		if r.Checked == 0 || r.CheckFailures != 0 || r.Summary.Errors != 0 {
			t.Errorf("run %s: checked %d, failures %d, errors %d", r.Name, r.Checked, r.CheckFailures, r.Summary.Errors)
		}
	}
	target := fmt.Sprintf("%.0f", rep.Runs[0].Summary.Throughput/4)
	code, stdout, _ = hsmbench(t, "plan", "--report", filepath.Join(out, "report.json"), "--target-rps", target, "--p99", "1s", "--slots-per-node", "2")
	if code != 0 || !strings.Contains(strings.ToLower(stdout), "slot") {
		t.Fatalf("hsmbench plan: exit %d", code)
	}
	// A target far above anything measured is refused with the reason.
	code, _, stderr := hsmbench(t, "plan", "--report", filepath.Join(out, "report.json"), "--target-rps", "1e12", "--p99", "1s")
	if code == 0 || stderr == "" {
		t.Fatalf("an impossible target was planned: exit %d", code)
	}
}

func TestRunNeedsAnEndpoint(t *testing.T) {
	t.Setenv("AWS_ENDPOINT_URL", "")
	t.Setenv("AWS_ENDPOINT_URL_KMS", "")
	code, _, stderr := hsmbench(t, "run", "--no-progress")
	if code == 0 || !strings.Contains(stderr, "AWS_ENDPOINT_URL") {
		t.Fatalf("exit %d, stderr %q", code, stderr)
	}
}

// `eval "$(hsmgate env)"` then `hsmbench run`: the AWS variables are all
// the setup it needs, with either client.
func TestRunAgainstGatewayFromEnvironment(t *testing.T) {
	g := gatewaytest.Start(t, 2, "eu-central-1")
	admin := g.Admin
	for k, v := range map[string]string{
		"AWS_ENDPOINT_URL": g.URL, "AWS_CA_BUNDLE": admin.CABundle,
		"AWS_ACCESS_KEY_ID": admin.AccessKeyID, "AWS_SECRET_ACCESS_KEY": admin.SecretAccessKey,
		"AWS_REGION": "eu-central-1", "AWS_DEFAULT_REGION": "eu-central-1", "AWS_ENDPOINT_URL_KMS": "",
	} {
		t.Setenv(k, v)
	}
	for _, client := range []string{"lean", "sdk"} {
		out := filepath.Join(t.TempDir(), client)
		code, stdout, _ := hsmbench(t, "run", "--client", client, "--concurrency", "2", "--warmup", "100ms",
			"--duration", "300ms", "--out", out, "--no-progress", "--mix", "Encrypt=1,Decrypt=1,GenerateMac=1", "--check-every", "3")
		if code != 0 {
			t.Fatalf("hsmbench run --client %s: exit %d", client, code)
		}
		f, err := os.Open(filepath.Join(out, "report.json"))
		if err != nil {
			t.Fatal(err)
		}
		rep, err := bench.ReadJSON(f)
		f.Close()
		if err != nil || len(rep.Runs) != 1 {
			t.Fatalf("report: %v", err)
		}
		r := rep.Runs[0]
		if r.Client != client || r.Summary.Calls == 0 || r.Summary.Errors != 0 || r.Checked == 0 || r.CheckFailures != 0 {
			t.Fatalf("%s run: %+v", client, r)
		}
		// The gateway runs in this process, so its CPU is not separately
		// visible; the client's is.
		if r.ClientCPUPerOp <= 0 {
			t.Errorf("%s: no client CPU per call", client)
		}
		if !strings.Contains(stdout, r.Name) {
			t.Errorf("summary lacks the run")
		}
	}
}

// A slot fails mid-run: every call still succeeds (retried on another
// slot), the report has the three phases and a timeline.
func TestFailoverScenario(t *testing.T) {
	data := dataFolder(t)
	out := filepath.Join(t.TempDir(), "report")
	code, stdout, _ := hsmbench(t, "scenario", "failover", "--data", data, "--slot", "tok-1", "--fault", "device-error",
		"--phase", "400ms", "--warmup", "100ms", "--concurrency", "4", "--out", out, "--no-progress")
	if code != 0 {
		t.Fatalf("exit %d", code)
	}
	f, err := os.Open(filepath.Join(out, "report.json"))
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	rep, err := bench.ReadJSON(f)
	if err != nil || len(rep.Runs) != 3 {
		t.Fatalf("report: %v", err)
	}
	for _, r := range rep.Runs {
		if r.Summary.Calls == 0 || r.Summary.Errors != 0 || r.CheckFailures != 0 {
			t.Errorf("%s: %d calls, %d errors, %d wrong", r.Name, r.Summary.Calls, r.Summary.Errors, r.CheckFailures)
		}
	}
	if _, err := os.Stat(filepath.Join(out, "timeline.png")); err != nil {
		t.Error(err)
	}
	if !strings.Contains(stdout, "Slot tok-1 at the end: healthy") {
		t.Error("the slot did not recover")
	}
}

// compare runs two targets in interleaved rounds and writes the ratios.
func TestCompare(t *testing.T) {
	data := dataFolder(t)
	out := filepath.Join(t.TempDir(), "report")
	code, stdout, _ := hsmbench(t, "compare", "--a", "pool:"+data, "--b", "pool:"+data, "--rounds", "2",
		"--concurrency", "2", "--warmup", "50ms", "--duration", "200ms", "--out", out, "--no-progress")
	if code != 0 {
		t.Fatalf("exit %d", code)
	}
	raw, err := os.ReadFile(filepath.Join(out, "compare.md"))
	if err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(string(raw), "| calls/s |") || !strings.Contains(stdout, "B/A") {
		t.Fatalf("compare.md: %s", raw)
	}
	f, err := os.Open(filepath.Join(out, "report.json"))
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	rep, err := bench.ReadJSON(f)
	if err != nil || len(rep.Runs) != 4 || !strings.HasPrefix(rep.Runs[1].Name, "B round 1") {
		t.Fatalf("runs: %v %v", err, len(rep.Runs))
	}
}

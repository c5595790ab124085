package bench

import (
	"context"
	"encoding/csv"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/hsmgate/hsmgate/hsmpool"
	"github.com/hsmgate/hsmgate/internal/testenv"
)

// A short sweep against an in-process gateway: every sampled result
// verifies, and the report files exist and parse.
func TestSweepAgainstGatewayWritesReport(t *testing.T) {
	g := startKMSTestGateway(t)
	target, err := NewLeanTarget(g.sigv4Config())
	if err != nil {
		t.Fatal(err)
	}
	defer target.Close()
	w := &Workload{Mix: []Weighted{{OpEncrypt, 2}, {OpDecrypt, 1}, {OpSign, 1}, {OpGenerateMac, 1}}, CheckEvery: 5}
	if err := w.Defaults(); err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	if err := target.Prepare(ctx, w); err != nil {
		t.Fatal(err)
	}
	runs, err := Sweep(ctx, target, w, []int{1, 2, 4}, Options{Warmup: 100 * time.Millisecond, Duration: 400 * time.Millisecond,
		CPU: &CPUProbe{}})
	if err != nil {
		t.Fatal(err)
	}
	for _, r := range runs {
		if r.Summary.Calls == 0 || r.Summary.Errors != 0 || r.Checked == 0 || r.CheckFailures != 0 {
			t.Fatalf("run %s: %+v", r.Name, r)
		}
	}
	report := &Report{Started: time.Now(), Host: "test", Command: "test", Runs: runs}
	dir := t.TempDir()
	files, err := report.WriteFiles(dir)
	if err != nil {
		t.Fatal(err)
	}
	want := map[string]bool{"report.json": false, "report.csv": false, "report.md": false, "scaling.png": false, "timeline.png": false}
	for _, f := range files {
		if _, ok := want[filepath.Base(f)]; ok {
			want[filepath.Base(f)] = true
		}
	}
	for f, ok := range want {
		if !ok {
			t.Errorf("%s not written (files: %v)", f, files)
		}
	}
	jf, err := os.Open(filepath.Join(dir, "report.json"))
	if err != nil {
		t.Fatal(err)
	}
	defer jf.Close()
	back, err := ReadJSON(jf)
	if err != nil || len(back.Runs) != 3 || back.Runs[2].Concurrency != 4 {
		t.Fatalf("report.json: %v %+v", err, back)
	}
	cf, err := os.Open(filepath.Join(dir, "report.csv"))
	if err != nil {
		t.Fatal(err)
	}
	defer cf.Close()
	rows, err := csv.NewReader(cf).ReadAll()
	if err != nil || len(rows) != 4 {
		t.Fatalf("report.csv: %v, %d rows", err, len(rows))
	}
}

// A slot sweep on the pool fits the scalability law and plans capacity.
func TestPoolSlotSweepPlans(t *testing.T) {
	env := testenv.NewSoftHSM(t, 3)
	ctx := context.Background()
	first, err := hsmpool.Open(ctx, hsmpool.Options{Modules: []hsmpool.ModuleOptions{{Path: env.Module, PIN: hsmpool.PINSource{File: env.PINFile}}}})
	if err != nil {
		t.Fatal(err)
	}
	dk, _ := hsmpool.NewDomainKeyMaterial()
	if err := first.ProvisionDomainKey(ctx, dk); err != nil {
		t.Fatal(err)
	}
	kcv := first.DomainKeyCheck()
	if err := first.Close(); err != nil {
		t.Fatal(err)
	}
	w := &Workload{CheckEvery: 10}
	if err := w.Defaults(); err != nil {
		t.Fatal(err)
	}
	var runs []Run
	for n := 1; n <= 3; n++ {
		var sel []hsmpool.TokenSelector
		for _, l := range env.Labels()[:n] {
			sel = append(sel, hsmpool.TokenSelector{Label: l})
		}
		p, err := hsmpool.Open(ctx, hsmpool.Options{DomainKeyCheck: kcv,
			Modules: []hsmpool.ModuleOptions{{Path: env.Module, PIN: hsmpool.PINSource{File: env.PINFile}, Tokens: sel}}})
		if err != nil {
			t.Fatal(err)
		}
		target := NewPoolTarget(p)
		if err := target.Prepare(ctx, w); err != nil {
			t.Fatal(err)
		}
		r, err := Closed(ctx, target, w, 4, Options{Warmup: 50 * time.Millisecond, Duration: 300 * time.Millisecond, Slots: n})
		if err != nil {
			t.Fatal(err)
		}
		if err := p.Close(); err != nil {
			t.Fatal(err)
		}
		runs = append(runs, r)
	}
	fit, err := FitUSL(SlotPoints(runs))
	if err != nil {
		t.Fatal(err)
	}
	if fit.Lambda <= 0 {
		t.Fatalf("fit %+v", fit)
	}
	// A modest target relative to what one slot did is plannable.
	target := runs[0].Summary.Throughput / 4
	plan, err := MakePlan(fit, target, time.Second, runs, 2)
	if err != nil {
		t.Fatalf("plan for %.0f/s: %v (fit %+v)", target, err, fit)
	}
	if plan.Slots < 1 || plan.Nodes < 1 {
		t.Fatalf("plan %+v", plan)
	}
}

package bench

import (
	"bytes"
	"encoding/csv"
	"os"
	"path/filepath"
	"reflect"
	"strconv"
	"strings"
	"testing"
	"time"
)

// testRun measures a synthetic run through Stats: secs seconds at rate
// calls/s with latency lat, failing one call in failEvery (0: none).
func testRun(name, shape string, conc, slots int, secs, rate int, lat time.Duration, failEvery int) Run {
	start := time.Date(2026, 3, 1, 12, 0, 0, 0, time.UTC)
	s := NewStats(start)
	n := secs * rate
	for i := range n {
		sm := Sample{
			Start:   start.Add(time.Duration(i) * time.Second / time.Duration(rate)),
			Latency: lat + time.Duration(i%97)*lat/100,
			Op:      OpEncrypt,
		}
		if failEvery > 0 && i%failEvery == 0 {
			sm.Err = "KMSInternalException"
			if i%(2*failEvery) == 0 {
				sm.Err = "ThrottlingException"
			}
		}
		s.Record(sm)
	}
	return Run{
		Name: name, Target: "https://127.0.0.1:8443", Client: "lean", Workload: "Encrypt=3,Decrypt=1",
		Shape: shape, Concurrency: conc, Slots: slots,
		Summary:        s.Summary(start.Add(time.Duration(secs) * time.Second)),
		ClientCPUPerOp: 42 * time.Microsecond,
		Checked:        int64(n / 100),
	}
}

// testReport is a report with a concurrency sweep against slots, a
// failover scenario with errors, and a USL fit of the sweep.
func testReport(t *testing.T) *Report {
	t.Helper()
	truth := USLFit{Lambda: 900, Sigma: 0.04, Kappa: 0.002}
	r := &Report{
		Started: time.Date(2026, 3, 1, 12, 0, 0, 0, time.UTC),
		Host:    "8 CPUs, linux/amd64",
		Command: "hsmbench sweep --slots 1,2,4,8,16",
	}
	var pts []USLPoint
	for i, slots := range []int{1, 2, 4, 8, 16} {
		x := truth.Throughput(float64(slots))
		conc := 4 * slots
		run := testRun("sweep c="+strconv.Itoa(conc), "sweep", conc, slots, 3, int(x/10), time.Duration(1+i*i)*time.Millisecond, 0)
		run.Summary.Throughput = x // as measured; the synthetic run recorded a tenth
		r.Runs = append(r.Runs, run)
		pts = append(pts, USLPoint{N: float64(slots), X: x})
	}
	r.Runs = append(r.Runs,
		testRun("failover: before", "scenario", 8, 4, 5, 300, 2*time.Millisecond, 0),
		testRun("failover: during", "scenario", 8, 3, 5, 200, 9*time.Millisecond, 20),
		testRun("failover: after", "scenario", 8, 4, 5, 300, 2*time.Millisecond, 0),
	)
	r.Runs[6].CheckFailures = 2
	fit, err := FitUSL(pts)
	if err != nil {
		t.Fatal(err)
	}
	r.USL = fit
	return r
}

func TestReportJSONRoundTrip(t *testing.T) {
	r := testReport(t)
	var b bytes.Buffer
	if err := r.WriteJSON(&b); err != nil {
		t.Fatal(err)
	}
	got, err := ReadJSON(&b)
	if err != nil {
		t.Fatal(err)
	}
	if !reflect.DeepEqual(got, r) {
		t.Errorf("round trip differs:\n got %+v\nwant %+v", got, r)
	}
	if _, err := ReadJSON(strings.NewReader(`{"runs": [`)); err == nil {
		t.Error("truncated JSON read without error")
	}
	if got, err := ReadJSON(strings.NewReader(`{"runs": [{"name": "x"}], "from_the_future": 1}`)); err != nil || got.Runs[0].Name != "x" {
		t.Errorf("unknown field: %v %+v", err, got)
	}
}

func TestReportCSV(t *testing.T) {
	r := testReport(t)
	r.Runs[0].Name = `odd, "name"` // needs quoting
	var b bytes.Buffer
	if err := r.WriteCSV(&b); err != nil {
		t.Fatal(err)
	}
	rows, err := csv.NewReader(&b).ReadAll()
	if err != nil {
		t.Fatal(err)
	}
	if len(rows) != len(r.Runs)+1 {
		t.Fatalf("%d rows for %d runs", len(rows), len(r.Runs))
	}
	want := "name,target,client,workload,shape,concurrency,rate,slots,calls,errors,throughput,p50_ms,p90_ms,p99_ms,p999_ms,max_ms,client_cpu_us,server_cpu_us,checked,check_failures"
	if got := strings.Join(rows[0], ","); got != want {
		t.Errorf("header %s", got)
	}
	col := map[string]int{}
	for i, h := range rows[0] {
		col[h] = i
	}
	for i, run := range r.Runs {
		row := rows[i+1]
		if row[col["name"]] != run.Name || row[col["calls"]] != strconv.FormatInt(run.Summary.Calls, 10) {
			t.Errorf("row %d: %v", i, row)
		}
	}
	during := rows[7]
	if during[col["name"]] != "failover: during" || during[col["check_failures"]] != "2" || during[col["errors"]] != "50" {
		t.Errorf("failover row %v", during)
	}
	if got, want := during[col["p99_ms"]], strconv.FormatFloat(msOf(r.Runs[6].Summary.P99), 'f', 3, 64); got != want {
		t.Errorf("p99_ms %s, want %s", got, want)
	}
	if during[col["client_cpu_us"]] != "42.0" || during[col["server_cpu_us"]] != "0.0" {
		t.Errorf("cpu columns %v", during)
	}
}

func TestReportMarkdown(t *testing.T) {
	r := testReport(t)
	r.Runs[0].Name = "sweep | c=4"
	var b bytes.Buffer
	if err := r.WriteMarkdown(&b); err != nil {
		t.Fatal(err)
	}
	md := b.String()
	for _, run := range r.Runs {
		if !strings.Contains(md, mdCell(run.Name)) {
			t.Errorf("markdown does not mention run %q", run.Name)
		}
	}
	for _, want := range []string{
		"# hsmbench report", "## Runs", "## Errors by code", "ThrottlingException", "KMSInternalException",
		"## Results that did not verify", "2 of", "## Scalability", "λ =", "Peak:", "sweep \\| c=4", r.Command,
	} {
		if !strings.Contains(md, want) {
			t.Errorf("markdown lacks %q", want)
		}
	}
	// Every table row has as many cells as its header.
	var cells int
	for _, line := range strings.Split(md, "\n") {
		if !strings.HasPrefix(line, "|") {
			cells = 0
			continue
		}
		n := strings.Count(strings.ReplaceAll(line, `\|`, ""), "|")
		if cells == 0 {
			cells = n
		} else if n != cells {
			t.Errorf("row with %d separators under a header with %d: %s", n, cells, line)
		}
	}

	plan, err := MakePlan(r.USL, 2000, 10*time.Millisecond, r.Runs, 4)
	if err != nil {
		t.Fatal(err)
	}
	b.Reset()
	if err := plan.WriteMarkdown(&b); err != nil {
		t.Fatal(err)
	}
	if s := b.String(); !strings.Contains(s, "## Capacity plan") || !strings.Contains(s, countOf(plan.Slots, "slot")) || !strings.Contains(s, "p99") {
		t.Errorf("plan markdown:\n%s", s)
	}
}

func TestReportWriteFiles(t *testing.T) {
	r := testReport(t)
	dir := filepath.Join(t.TempDir(), "out")
	paths, err := r.WriteFiles(dir)
	if err != nil {
		t.Fatal(err)
	}
	var names []string
	for _, p := range paths {
		names = append(names, filepath.Base(p))
		data, err := os.ReadFile(p)
		if err != nil || len(data) == 0 {
			t.Errorf("%s: %v, %d bytes", p, err, len(data))
		}
		if strings.HasSuffix(p, ".png") && !bytes.HasPrefix(data, pngMagic) {
			t.Errorf("%s is not a PNG", p)
		}
	}
	if got, want := strings.Join(names, " "), "report.json report.csv report.md scaling.png timeline.png usl.png"; got != want {
		t.Errorf("wrote %s, want %s", got, want)
	}
	md, _ := os.ReadFile(filepath.Join(dir, "report.md"))
	for _, img := range []string{"(scaling.png)", "(timeline.png)", "(usl.png)"} {
		if !bytes.Contains(md, []byte(img)) {
			t.Errorf("report.md does not show %s", img)
		}
	}

	// One run, no series, no fit: only the three reports.
	small := &Report{Runs: []Run{{Name: "closed c=8", Shape: "closed", Concurrency: 8, Summary: Summary{Calls: 10}}}}
	paths, err = small.WriteFiles(t.TempDir())
	if err != nil || len(paths) != 3 {
		t.Errorf("small report: %v %v", paths, err)
	}
}

func TestScalingRunsChoice(t *testing.T) {
	run := func(shape string, c int) Run {
		return Run{Shape: shape, Concurrency: c, Summary: Summary{Calls: 1}}
	}
	runs := []Run{run("closed", 1), run("closed", 2), run("closed", 4), run("sweep", 1), run("sweep", 8), run("open", 3)}
	if got := scalingRuns(runs); len(got) != 2 || got[0].Shape != "sweep" {
		t.Errorf("preferred %v", got)
	}
	if got := scalingRuns(runs[:3]); len(got) != 3 {
		t.Errorf("closed: %v", got)
	}
	if got := scalingRuns([]Run{run("closed", 1), run("closed", 1), run("open", 2)}); got != nil {
		t.Errorf("no shape spans two concurrencies, got %v", got)
	}
}

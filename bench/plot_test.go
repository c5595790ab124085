package bench

import (
	"bytes"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

var pngMagic = []byte("\x89PNG\r\n\x1a\n")

// checkImage fails unless path holds a PNG or an SVG, as its extension says.
func checkImage(t *testing.T, path string) {
	t.Helper()
	data, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	switch filepath.Ext(path) {
	case ".png":
		if !bytes.HasPrefix(data, pngMagic) || len(data) < 1000 {
			t.Errorf("%s: not a PNG (%d bytes)", path, len(data))
		}
	case ".svg":
		head := string(data[:min(len(data), 300)])
		if !(strings.HasPrefix(head, "<?xml") || strings.HasPrefix(head, "<svg")) || !strings.Contains(head, "<svg") {
			t.Errorf("%s: not an SVG: %q", path, head)
		}
	}
}

// plotDir is where the plots of the tests go: BENCH_PLOT_DIR to keep them
// and look at them, else a temporary directory.
func plotDir(t *testing.T) string {
	if d := os.Getenv("BENCH_PLOT_DIR"); d != "" {
		if err := os.MkdirAll(d, 0o755); err != nil {
			t.Fatal(err)
		}
		return d
	}
	return t.TempDir()
}

func TestPlots(t *testing.T) {
	r := testReport(t)
	dir := plotDir(t)
	for _, ext := range []string{".png", ".svg"} {
		if err := PlotScaling(r.Runs[:5], filepath.Join(dir, "scaling"+ext)); err != nil {
			t.Error(err)
		}
		if err := PlotTimeline(r.Runs[5:], filepath.Join(dir, "timeline"+ext)); err != nil {
			t.Error(err)
		}
		if err := PlotUSL(r.USL, filepath.Join(dir, "usl"+ext)); err != nil {
			t.Error(err)
		}
		for _, name := range []string{"scaling", "timeline", "usl"} {
			checkImage(t, filepath.Join(dir, name+ext))
		}
	}
	// Several lines on one scaling plot: the same sweep through two clients.
	both := append([]Run(nil), r.Runs[:5]...)
	for _, run := range r.Runs[:5] {
		run.Client = "sdk"
		run.Summary.Throughput *= 0.8
		both = append(both, run)
	}
	if err := PlotScaling(both, filepath.Join(dir, "scaling-clients.svg")); err != nil {
		t.Error(err)
	}
	checkImage(t, filepath.Join(dir, "scaling-clients.svg"))
	// A fit without a peak in sight, and a linear one.
	for i, fit := range []*USLFit{
		{Lambda: 100, Sigma: 0.1, Points: []USLPoint{{1, 100}, {2, 180}, {4, 300}}},
		{Lambda: 100, Points: []USLPoint{{1, 100}, {2, 200}, {4, 400}}},
	} {
		path := filepath.Join(dir, "usl-"+string(rune('a'+i))+".svg")
		if err := PlotUSL(fit, path); err != nil {
			t.Error(err)
		}
		checkImage(t, path)
	}
}

func TestPlotBadInput(t *testing.T) {
	r := testReport(t)
	dir := t.TempDir()
	cases := []struct {
		name string
		err  error
		want string
	}{
		{"scaling without runs", PlotScaling(nil, filepath.Join(dir, "a.png")), "2 or more distinct"},
		{"scaling at one concurrency", PlotScaling(r.Runs[5:], filepath.Join(dir, "a.png")), "2 or more distinct"},
		{"timeline without series", PlotTimeline([]Run{{Name: "x"}}, filepath.Join(dir, "a.png")), "no run has"},
		{"usl without fit", PlotUSL(nil, filepath.Join(dir, "a.png")), "no fit"},
		{"usl without points", PlotUSL(&USLFit{Lambda: 1}, filepath.Join(dir, "a.png")), "no fit"},
		{"unknown format", PlotUSL(r.USL, filepath.Join(dir, "a.xyz")), "unsupported format"},
		{"no extension", PlotUSL(r.USL, filepath.Join(dir, "a")), "no extension"},
		{"missing directory", PlotUSL(r.USL, filepath.Join(dir, "no", "such", "a.png")), "no such file"},
	}
	for _, c := range cases {
		if c.err == nil || !strings.Contains(c.err.Error(), c.want) {
			t.Errorf("%s: %v, want an error containing %q", c.name, c.err, c.want)
		}
	}
}

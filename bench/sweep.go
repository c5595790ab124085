package bench

import "sort"

// SlotPoints turns the runs of a slot sweep into points for FitUSL: for
// each pool size (Run.Slots), the best successful throughput measured with
// it. Runs without a pool size are left out.
func SlotPoints(runs []Run) []USLPoint {
	best := map[int]float64{}
	for _, r := range runs {
		if r.Slots > 0 && r.Summary.Throughput > best[r.Slots] {
			best[r.Slots] = r.Summary.Throughput
		}
	}
	out := make([]USLPoint, 0, len(best))
	for n, x := range best {
		out = append(out, USLPoint{N: float64(n), X: x})
	}
	sort.Slice(out, func(i, j int) bool { return out[i].N < out[j].N })
	return out
}

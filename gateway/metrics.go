package gateway

import (
	"net/http"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/prometheus/client_golang/prometheus/promhttp"

	"github.com/hsmgate/hsmgate/gateway/kmsapi"
	"github.com/hsmgate/hsmgate/hsmpool"
)

type metrics struct {
	reg      *prometheus.Registry
	requests *prometheus.CounterVec
	latency  *prometheus.HistogramVec
	ok       map[string]opMetrics // per operation, resolved once: no label hashing per request
}

type opMetrics struct {
	ok      prometheus.Counter
	latency prometheus.Observer
}

func newMetrics(pool *hsmpool.Pool) *metrics {
	m := &metrics{
		reg: prometheus.NewRegistry(),
		requests: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "hsmgate_requests_total",
			Help: "KMS API requests by operation and outcome (ok, or the AWS exception type).",
		}, []string{"operation", "outcome"}),
		latency: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Name:    "hsmgate_request_duration_seconds",
			Help:    "KMS API request latency, from the body read to the response, by operation.",
			Buckets: []float64{.0001, .00025, .0005, .001, .0025, .005, .01, .025, .05, .1, .25, .5, 1, 2.5},
		}, []string{"operation"}),
	}
	m.reg.MustRegister(m.requests, m.latency, &poolCollector{pool: pool},
		collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	m.ok = map[string]opMetrics{}
	for _, op := range kmsapi.Operations() {
		m.ok[op] = opMetrics{ok: m.requests.WithLabelValues(op, "ok"), latency: m.latency.WithLabelValues(op)}
	}
	return m
}

func (m *metrics) observe(op, outcome string, d time.Duration) {
	if om, ok := m.ok[op]; ok && outcome == "ok" {
		om.ok.Inc()
		om.latency.Observe(d.Seconds())
		return
	}
	m.requests.WithLabelValues(op, outcome).Inc()
	m.latency.WithLabelValues(op).Observe(d.Seconds())
}

func (m *metrics) handler() http.Handler {
	return promhttp.HandlerFor(m.reg, promhttp.HandlerOpts{})
}

// poolCollector reports the pool's slots at scrape time.
type poolCollector struct{ pool *hsmpool.Pool }

var (
	slotUp = prometheus.NewDesc("hsmgate_slot_healthy",
		"1 when the HSM slot is healthy, 0 otherwise.", []string{"slot", "state"}, nil)
	slotInFlight = prometheus.NewDesc("hsmgate_slot_in_flight",
		"Requests in flight on the slot.", []string{"slot"}, nil)
	slotOps = prometheus.NewDesc("hsmgate_slot_operations_total",
		"Operations completed on the slot.", []string{"slot"}, nil)
	slotErrors = prometheus.NewDesc("hsmgate_slot_errors_total",
		"Failed PKCS#11 calls on the slot by class (data, session, device, auth, unsupported).", []string{"slot", "class"}, nil)
	slotLatency = prometheus.NewDesc("hsmgate_slot_latency_seconds",
		"Moving average of the slot's successful call latency.", []string{"slot"}, nil)
	slotCachedKeys = prometheus.NewDesc("hsmgate_slot_cached_keys",
		"Unwrapped keys cached on the slot.", []string{"slot"}, nil)
)

func (c *poolCollector) Describe(ch chan<- *prometheus.Desc) {
	for _, d := range []*prometheus.Desc{slotUp, slotInFlight, slotOps, slotErrors, slotLatency, slotCachedKeys} {
		ch <- d
	}
}

func (c *poolCollector) Collect(ch chan<- prometheus.Metric) {
	for _, st := range c.pool.Status() {
		up := 0.0
		if st.State == hsmpool.StateHealthy {
			up = 1
		}
		ch <- prometheus.MustNewConstMetric(slotUp, prometheus.GaugeValue, up, st.Name, st.State.String())
		ch <- prometheus.MustNewConstMetric(slotInFlight, prometheus.GaugeValue, float64(st.InFlight), st.Name)
		ch <- prometheus.MustNewConstMetric(slotOps, prometheus.CounterValue, float64(st.Ops), st.Name)
		for class, n := range st.Errors {
			ch <- prometheus.MustNewConstMetric(slotErrors, prometheus.CounterValue, float64(n), st.Name, class)
		}
		ch <- prometheus.MustNewConstMetric(slotLatency, prometheus.GaugeValue, st.Latency.Seconds(), st.Name)
		ch <- prometheus.MustNewConstMetric(slotCachedKeys, prometheus.GaugeValue, float64(st.CachedKeys), st.Name)
	}
}

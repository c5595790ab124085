package cluster

import (
	"bytes"
	"context"
	"encoding/json"
	"log/slog"
	"sort"
	"sync"

	"github.com/hashicorp/go-hclog"
)

// raftLogger gives hashicorp/raft (which logs through go-hclog) a logger
// that writes to the gateway's slog logger: hclog writes JSON lines, and
// each becomes one slog record with the same level, message and fields.
// Raft's debug and trace lines are dropped unless log's handler wants
// debug.
func raftLogger(log *slog.Logger, name string) hclog.Logger {
	level := hclog.Info
	if log.Enabled(context.Background(), slog.LevelDebug) {
		level = hclog.Debug
	}
	return hclog.New(&hclog.LoggerOptions{
		Name:       name,
		Level:      level,
		Output:     &raftLogWriter{log: log},
		JSONFormat: true,
	})
}

type raftLogWriter struct {
	log *slog.Logger
	mu  sync.Mutex
	buf []byte
}

// Write takes what hclog writes: whole JSON lines, one per record.
func (w *raftLogWriter) Write(p []byte) (int, error) {
	w.mu.Lock()
	defer w.mu.Unlock()
	w.buf = append(w.buf, p...)
	for {
		i := bytes.IndexByte(w.buf, '\n')
		if i < 0 {
			break
		}
		w.record(w.buf[:i])
		w.buf = w.buf[i+1:]
	}
	if len(w.buf) > 64<<10 { // never a line: don't grow without bound
		w.record(w.buf)
		w.buf = nil
	}
	return len(p), nil
}

func (w *raftLogWriter) record(line []byte) {
	var m map[string]any
	if err := json.Unmarshal(line, &m); err != nil {
		w.log.Info(string(line))
		return
	}
	level := slog.LevelInfo
	switch m["@level"] {
	case "trace", "debug":
		level = slog.LevelDebug
	case "warn":
		level = slog.LevelWarn
	case "error":
		level = slog.LevelError
	}
	msg, _ := m["@message"].(string)
	attrs := []any{"component", m["@module"]}
	keys := make([]string, 0, len(m))
	for k := range m {
		if len(k) > 0 && k[0] != '@' {
			keys = append(keys, k)
		}
	}
	sort.Strings(keys)
	for _, k := range keys {
		attrs = append(attrs, k, m[k])
	}
	w.log.Log(context.Background(), level, msg, attrs...)
}

package cluster

// The raft node's internal API: what one node asks another, over the raft
// port's mutual TLS (ALPN "hsmgate-raft-api/1"), in HTTP/1.1 with JSON
// answers. Only nodes reach it: the TLS handshake requires a certificate of
// the cluster CA (and RaftConfig.AuthorizePeer's consent).
//
//	POST /v1/apply       body: an encoded keystore command. The leader
//	                     commits it and answers {"index": N} (the entry's
//	                     log position) or {"error": {…}}, the command's
//	                     refusal included. Any other node answers 421 with
//	                     {"error": {"code": "not_leader"}, "leader": addr}.
//	POST /v1/membership  {"op": "add"|"remove", "id": …, "address": …}:
//	                     a membership change, on the leader (421 elsewhere).
//	GET  /v1/status      the node's RaftStatus.
//	GET  /v1/backup      a keystore snapshot of the node's store (a backup;
//	                     keystore.Store.Snapshot's format).
//	POST /v1/restore     body: a backup. The leader replaces the cluster's
//	                     keystore with it (RaftNode.RestoreBackup); 421
//	                     elsewhere.
//
// A request is never forwarded further by the node that receives it: the
// sender follows "leader" hints itself (at most raftMaxHops times), so a
// write crosses at most one link per attempt.

import (
	"bytes"
	"context"
	"crypto/tls"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"strconv"
	"time"

	"github.com/hsmgate/hsmgate/gateway/keystore"
)

// raftMaxBody bounds a request body of the internal API (a command carries
// at most a key's wrapped versions and policy documents).
const raftMaxBody = 8 << 20

// raftMaxHops bounds how many leader hints a sender follows.
const raftMaxHops = 3

type raftMembershipRequest struct {
	Op      string `json:"op"`
	ID      string `json:"id"`
	Address string `json:"address,omitempty"`
}

type raftApplyResponse struct {
	Index uint64 `json:"index"`
}

// raftWireError is an error as the internal API sends it.
type raftWireError struct {
	Code    string `json:"code"`
	Message string `json:"message"`
	// Reachable and Voters come with code "no_quorum".
	Reachable int  `json:"reachable,omitempty"`
	Voters    int  `json:"voters,omitempty"`
	InFlight  bool `json:"in_flight,omitempty"`
}

type raftAPIAnswer struct {
	Error  *raftWireError  `json:"error,omitempty"`
	Leader string          `json:"leader,omitempty"`
	Result json.RawMessage `json:"result,omitempty"`
}

// The codes of raftWireError, and the errors they stand for.
var raftErrorCodes = []struct {
	code string
	err  error
}{
	{"not_found", keystore.ErrNotFound},
	{"already_exists", keystore.ErrAlreadyExists},
	{"invalid", keystore.ErrInvalid},
	{"limit", keystore.ErrLimit},
	{"mismatch", keystore.ErrMismatch},
	{"conflict", keystore.ErrConflict},
	{"outcome_unknown", ErrWriteOutcomeUnknown},
	{"not_leader", errRaftRetry},
}

// toWire encodes err for the internal API.
func toWire(err error) *raftWireError {
	var nq *NoQuorumError
	if errors.As(err, &nq) {
		return &raftWireError{Code: "no_quorum", Message: err.Error(), Reachable: nq.Reachable, Voters: nq.Voters, InFlight: nq.InFlight}
	}
	for _, c := range raftErrorCodes {
		if errors.Is(err, c.err) {
			return &raftWireError{Code: c.code, Message: err.Error()}
		}
	}
	return &raftWireError{Code: "internal", Message: err.Error()}
}

// raftRemoteError is an error a peer answered with: its message, and the
// error it stands for.
type raftRemoteError struct {
	msg string
	err error
}

func (e *raftRemoteError) Error() string { return e.msg }
func (e *raftRemoteError) Unwrap() error { return e.err }

// raftMaxMessage bounds the message of a peer's error kept.
const raftMaxMessage = 1024

// fromWire decodes an error of the internal API, from the node at addr.
func fromWire(addr string, w *raftWireError) error {
	if len(w.Message) > raftMaxMessage {
		w.Message = w.Message[:raftMaxMessage] + "…"
	}
	if w.Code == "no_quorum" {
		return &NoQuorumError{Reachable: w.Reachable, Voters: w.Voters, InFlight: w.InFlight}
	}
	for _, c := range raftErrorCodes {
		if w.Code == c.code {
			if errors.Is(c.err, errRaftRetry) {
				return fmt.Errorf("%w: %s is not the leader", errRaftRetry, addr)
			}
			msg := w.Message
			if msg == "" {
				msg = fmt.Sprintf("raft peer %s: %v", addr, c.err)
			}
			return &raftRemoteError{msg: msg, err: c.err}
		}
	}
	if w.Message == "" {
		return fmt.Errorf("cluster: raft peer %s answered with error code %q", addr, w.Code)
	}
	return fmt.Errorf("cluster: raft peer %s: %s", addr, w.Message)
}

// apiHandler serves the internal API.
func (n *RaftNode) apiHandler() http.Handler {
	mux := http.NewServeMux()
	mux.HandleFunc("POST /v1/apply", func(w http.ResponseWriter, r *http.Request) {
		body, ok := n.readBody(w, r)
		if !ok {
			return
		}
		if n.usable() != nil || !n.IsLeader() {
			n.answerNotLeader(w)
			return
		}
		ctx, cancel := context.WithTimeout(r.Context(), n.cfg.WriteTimeout)
		defer cancel()
		index, err := n.applyAsLeader(ctx, body)
		if errors.Is(err, errRaftRetry) {
			n.answerNotLeader(w)
			return
		}
		if err != nil {
			raftAnswer(w, http.StatusOK, raftAPIAnswer{Error: toWire(err)})
			return
		}
		res, _ := json.Marshal(raftApplyResponse{Index: index})
		raftAnswer(w, http.StatusOK, raftAPIAnswer{Result: res})
	})
	mux.HandleFunc("POST /v1/membership", func(w http.ResponseWriter, r *http.Request) {
		body, ok := n.readBody(w, r)
		if !ok {
			return
		}
		var req raftMembershipRequest
		if err := json.Unmarshal(body, &req); err != nil || req.ID == "" || (req.Op == "add" && req.Address == "") {
			raftAnswer(w, http.StatusBadRequest, raftAPIAnswer{Error: &raftWireError{Code: "bad_request", Message: "a membership request needs an op, an id and (to add) an address"}})
			return
		}
		if n.usable() != nil || !n.IsLeader() {
			n.answerNotLeader(w)
			return
		}
		ctx, cancel := context.WithTimeout(r.Context(), n.cfg.WriteTimeout)
		defer cancel()
		if err := n.membershipAsLeader(ctx, req); err != nil {
			raftAnswer(w, http.StatusOK, raftAPIAnswer{Error: toWire(err)})
			return
		}
		raftAnswer(w, http.StatusOK, raftAPIAnswer{})
	})
	mux.HandleFunc("GET /v1/backup", func(w http.ResponseWriter, r *http.Request) {
		sn, err := n.cfg.Store.BeginSnapshot()
		if err != nil {
			raftAnswer(w, http.StatusInternalServerError, raftAPIAnswer{Error: toWire(err)})
			return
		}
		defer sn.Close()
		w.Header().Set("Content-Type", "application/octet-stream")
		w.Header().Set("Content-Length", strconv.FormatInt(sn.Size(), 10))
		sn.WriteTo(w) // a broken copy fails the client's length or checksum check
	})
	mux.HandleFunc("POST /v1/restore", func(w http.ResponseWriter, r *http.Request) {
		if n.usable() != nil || !n.IsLeader() {
			n.answerNotLeader(w)
			return
		}
		body := http.MaxBytesReader(w, r.Body, keystore.MaxSnapshotSize+64)
		if err := n.RestoreBackup(r.Context(), body); err != nil {
			raftAnswer(w, http.StatusOK, raftAPIAnswer{Error: toWire(err)})
			return
		}
		raftAnswer(w, http.StatusOK, raftAPIAnswer{})
	})
	mux.HandleFunc("GET /v1/status", func(w http.ResponseWriter, r *http.Request) {
		res, _ := json.Marshal(n.Status())
		raftAnswer(w, http.StatusOK, raftAPIAnswer{Result: res})
	})
	return mux
}

func (n *RaftNode) readBody(w http.ResponseWriter, r *http.Request) ([]byte, bool) {
	body, err := io.ReadAll(http.MaxBytesReader(w, r.Body, raftMaxBody))
	if err != nil {
		raftAnswer(w, http.StatusBadRequest, raftAPIAnswer{Error: &raftWireError{Code: "bad_request", Message: fmt.Sprintf("the request body could not be read (at most %d bytes)", raftMaxBody)}})
		return nil, false
	}
	return body, true
}

func (n *RaftNode) answerNotLeader(w http.ResponseWriter) {
	_, addr := n.Leader()
	raftAnswer(w, http.StatusMisdirectedRequest, raftAPIAnswer{Leader: addr,
		Error: &raftWireError{Code: "not_leader", Message: "this node is not the raft leader"}})
}

func raftAnswer(w http.ResponseWriter, status int, a raftAPIAnswer) {
	b, _ := json.Marshal(a)
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(status)
	w.Write(b)
}

// raftAPIClient is the internal API's client: HTTP/1.1 over mutual TLS,
// with kept-alive connections per peer.
type raftAPIClient struct{ http *http.Client }

// newRaftAPIClient makes a client whose connections come from dial.
func newRaftAPIClient(dial func(ctx context.Context, addr string) (net.Conn, error)) *raftAPIClient {
	return &raftAPIClient{http: &http.Client{Transport: &http.Transport{
		DialTLSContext: func(ctx context.Context, _, addr string) (net.Conn, error) {
			return dial(ctx, addr)
		},
		TLSNextProto:        map[string]func(string, *tls.Conn) http.RoundTripper{}, // no HTTP/2
		MaxIdleConnsPerHost: 4,
		IdleConnTimeout:     time.Minute,
	}}}
}

func (c *raftAPIClient) close() { c.http.CloseIdleConnections() }

// do sends a request to the node at addr and decodes its answer into out
// (when not nil). It returns the answer's leader hint with a "not_leader"
// error. An error matching errRaftRetry means nothing was received by the
// peer (or it is not the leader): safe to send again.
func (c *raftAPIClient) do(ctx context.Context, method, addr, path string, body []byte, out any) (leader string, err error) {
	var rd io.Reader
	if body != nil {
		rd = bytes.NewReader(body)
	}
	req, err := http.NewRequestWithContext(ctx, method, "https://"+addr+path, rd)
	if err != nil {
		return "", fmt.Errorf("cluster: raft peer %q: %w", addr, err)
	}
	return c.send(req, out)
}

// send sends req and decodes the answer, as do.
func (c *raftAPIClient) send(req *http.Request, out any) (leader string, err error) {
	addr := req.URL.Host
	resp, err := c.http.Do(req)
	if err != nil {
		var de *raftDialError
		if errors.As(err, &de) {
			return "", fmt.Errorf("%w: %v", errRaftRetry, de)
		}
		if req.Method == http.MethodGet {
			return "", fmt.Errorf("cluster: raft peer %s: %w", addr, err)
		}
		return "", fmt.Errorf("%w: raft peer %s: %v", ErrWriteOutcomeUnknown, addr, err)
	}
	defer resp.Body.Close()
	return decodeRaftAnswer(addr, resp.Status, resp.Body, out)
}

// decodeRaftAnswer decodes a peer's answer (read from body, at most
// raftMaxBody bytes) into out, or into the error it carries with the
// peer's leader hint.
func decodeRaftAnswer(addr, status string, body io.Reader, out any) (leader string, err error) {
	var a raftAPIAnswer
	if err := json.NewDecoder(io.LimitReader(body, raftMaxBody)).Decode(&a); err != nil {
		return "", fmt.Errorf("%w: raft peer %s answered %s, unreadably: %v", ErrWriteOutcomeUnknown, addr, status, err)
	}
	if a.Error != nil {
		return a.Leader, fromWire(addr, a.Error)
	}
	if out != nil && a.Result != nil {
		if err := json.Unmarshal(a.Result, out); err != nil {
			return "", fmt.Errorf("cluster: raft peer %s: %w", addr, err)
		}
	}
	return "", nil
}

func (c *raftAPIClient) get(ctx context.Context, addr, path string, out any) error {
	_, err := c.do(ctx, http.MethodGet, addr, path, nil, out)
	return err
}

// callLeader posts body (bytes as they are, or any other value as JSON)
// to path on the node at addr, following leader hints. An error matching
// errRaftRetry means no leader took the request.
func (c *raftAPIClient) callLeader(ctx context.Context, addr, path string, body any, out any) error {
	raw, ok := body.([]byte)
	if !ok {
		var err error
		if raw, err = json.Marshal(body); err != nil {
			return err
		}
	}
	var err error
	for range raftMaxHops {
		var hint string
		hint, err = c.do(ctx, http.MethodPost, addr, path, raw, out)
		if !errors.Is(err, errRaftRetry) || hint == "" || hint == addr {
			return err
		}
		addr = hint
	}
	return err
}

// callAny is callLeader through the first of addrs that answers.
func (c *raftAPIClient) callAny(ctx context.Context, addrs []string, path string, body any, out any) error {
	if len(addrs) == 0 {
		return errors.New("cluster: no raft address of a member to ask")
	}
	var errs []error
	for _, a := range addrs {
		err := c.callLeader(ctx, a, path, body, out)
		if err == nil {
			return nil
		}
		errs = append(errs, fmt.Errorf("through %s: %w", a, err))
		if !errors.Is(err, errRaftRetry) && !errors.Is(err, ErrNoQuorum) {
			break // an answer, not a failure to reach a leader
		}
	}
	return errors.Join(errs...)
}

// RaftClient talks to a cluster's raft nodes from outside a node (the
// `hsmgate cluster` commands): membership changes and status, over the
// internal API, with a node's credentials.
type RaftClient struct{ api *raftAPIClient }

// NewRaftClient returns a client that presents tc's client certificate
// (Certificates or GetClientCertificate) and verifies nodes against
// tc.RootCAs (the cluster CA).
func NewRaftClient(tc *tls.Config) (*RaftClient, error) {
	if tc == nil || tc.RootCAs == nil || (len(tc.Certificates) == 0 && tc.GetClientCertificate == nil) {
		return nil, errors.New("cluster: a raft client needs the cluster CA (RootCAs) and a node's client certificate")
	}
	base := tc.Clone()
	base.MinVersion = tls.VersionTLS13
	base.NextProtos = []string{raftAPIALPN}
	dial := func(ctx context.Context, addr string) (net.Conn, error) {
		host, _, err := net.SplitHostPort(addr)
		if err != nil {
			return nil, &raftDialError{addr, err}
		}
		cfg := base.Clone()
		cfg.ServerName = host
		d := tls.Dialer{Config: cfg}
		c, err := d.DialContext(ctx, "tcp", addr)
		if err != nil {
			return nil, &raftDialError{addr, err}
		}
		tc := c.(*tls.Conn)
		if got := tc.ConnectionState().NegotiatedProtocol; got != raftAPIALPN {
			tc.Close()
			return nil, &raftDialError{addr, fmt.Errorf("the peer does not speak %s (it chose %q)", raftAPIALPN, got)}
		}
		return tc, nil
	}
	return &RaftClient{api: newRaftAPIClient(dial)}, nil
}

// AddVoter asks the cluster, through the first of members that answers, to
// add node id at address as a voter.
func (c *RaftClient) AddVoter(ctx context.Context, members []string, id, address string) error {
	if id == "" || address == "" {
		return errors.New("cluster: a node to add needs an id and an address")
	}
	return c.api.callAny(ctx, members, "/v1/membership", raftMembershipRequest{Op: "add", ID: id, Address: address}, nil)
}

// RemovePeer asks the cluster, through the first of members that answers,
// to remove node id.
func (c *RaftClient) RemovePeer(ctx context.Context, members []string, id string) error {
	if id == "" {
		return errors.New("cluster: a node to remove needs an id")
	}
	return c.api.callAny(ctx, members, "/v1/membership", raftMembershipRequest{Op: "remove", ID: id}, nil)
}

// Status returns the raft status of the node at addr.
func (c *RaftClient) Status(ctx context.Context, addr string) (RaftStatus, error) {
	var st RaftStatus
	err := c.api.get(ctx, addr, "/v1/status", &st)
	return st, err
}

// Backup writes a backup of the keystore, as the node at addr holds it
// (every write it has applied), to w.
func (c *RaftClient) Backup(ctx context.Context, addr string, w io.Writer) error {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, "https://"+addr+"/v1/backup", nil)
	if err != nil {
		return fmt.Errorf("cluster: raft peer %q: %w", addr, err)
	}
	resp, err := c.api.http.Do(req)
	if err != nil {
		return fmt.Errorf("cluster: backup from %s: %w", addr, err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		var a raftAPIAnswer
		if json.NewDecoder(io.LimitReader(resp.Body, 1<<20)).Decode(&a) == nil && a.Error != nil {
			return fmt.Errorf("cluster: backup from %s: %w", addr, fromWire(addr, a.Error))
		}
		return fmt.Errorf("cluster: backup from %s: %s", addr, resp.Status)
	}
	n, err := io.Copy(w, resp.Body)
	if err == nil && resp.ContentLength >= 0 && n != resp.ContentLength {
		err = fmt.Errorf("got %d of %d bytes", n, resp.ContentLength)
	}
	if err != nil {
		return fmt.Errorf("cluster: backup from %s: %w", addr, err)
	}
	return nil
}

// Restore replaces the cluster's keystore with a backup, through the
// first of members that answers (the leader runs it). open returns the
// backup, from its start, for each attempt.
func (c *RaftClient) Restore(ctx context.Context, members []string, open func() (io.ReadCloser, error)) error {
	var errs []error
	for _, m := range members {
		addr := m
		for range raftMaxHops {
			body, err := open()
			if err != nil {
				return err
			}
			req, err := http.NewRequestWithContext(ctx, http.MethodPost, "https://"+addr+"/v1/restore", body)
			if err != nil {
				body.Close()
				return err
			}
			hint, err := c.api.send(req, nil)
			if err == nil {
				return nil
			}
			errs = append(errs, fmt.Errorf("through %s: %w", addr, err))
			if !errors.Is(err, errRaftRetry) {
				return errors.Join(errs...) // the leader's answer
			}
			if hint == "" || hint == addr {
				break // on to the next member
			}
			addr = hint
		}
	}
	if len(errs) == 0 {
		return errors.New("cluster: no raft address of a member to ask")
	}
	return errors.Join(errs...)
}

// Close releases the client's idle connections.
func (c *RaftClient) Close() { c.api.close() }

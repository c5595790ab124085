package cluster

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"sync"
	"sync/atomic"
	"time"

	"github.com/hashicorp/raft"
)

// Raft traffic and the raft node's internal API share one TCP port and one
// mutual-TLS listener; the TLS handshake's ALPN protocol tells them apart.
const (
	// raftALPN carries hashicorp/raft's RPCs (AppendEntries, RequestVote,
	// InstallSnapshot, …).
	raftALPN = "hsmgate-raft/1"
	// raftAPIALPN carries the internal API of raft_forward.go: HTTP/1.1
	// requests from one node to another (forwarded writes, joins,
	// removals, status).
	raftAPIALPN = "hsmgate-raft-api/1"
)

// raftHandshakeTimeout bounds an inbound TLS handshake, so that a peer
// that connects and says nothing can't hold a goroutine for long.
const raftHandshakeTimeout = 10 * time.Second

// ErrRaftPartitioned is what connections fail with while a [RaftFaults]
// switch partitions the node.
var ErrRaftPartitioned = errors.New("cluster: raft transport partitioned (fault injection)")

// RaftFaults is the transport's fault-injection switch, for tests and
// failure drills: while it partitions the node, every raft and internal-API
// connection of the node is refused both ways (inbound connections are
// closed before the handshake, dials fail) and the connections already open
// are cut. Heal lets connections through again. Nothing outside the process
// is touched, and no privilege is needed. The zero value lets everything
// through.
type RaftFaults struct {
	partitioned atomic.Bool
	mu          sync.Mutex
	conns       map[*raftFaultConn]struct{}
}

// Partition cuts the node off: open connections are closed and new ones
// refused, both ways, until Heal.
func (f *RaftFaults) Partition() {
	f.partitioned.Store(true)
	f.mu.Lock()
	conns := f.conns
	f.conns = nil
	f.mu.Unlock()
	for c := range conns {
		c.Conn.Close()
	}
}

// Heal ends a partition.
func (f *RaftFaults) Heal() { f.partitioned.Store(false) }

// Partitioned reports whether the node is partitioned.
func (f *RaftFaults) Partitioned() bool { return f != nil && f.partitioned.Load() }

// wrap tracks c so that a partition cuts it; it fails when the node is
// partitioned already.
func (f *RaftFaults) wrap(c net.Conn) (net.Conn, error) {
	if f == nil {
		return c, nil
	}
	fc := &raftFaultConn{Conn: c, f: f}
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.partitioned.Load() {
		c.Close()
		return nil, ErrRaftPartitioned
	}
	if f.conns == nil {
		f.conns = map[*raftFaultConn]struct{}{}
	}
	f.conns[fc] = struct{}{}
	return fc, nil
}

type raftFaultConn struct {
	net.Conn
	f    *RaftFaults
	once sync.Once
}

func (c *raftFaultConn) Read(b []byte) (int, error) {
	if c.f.partitioned.Load() {
		c.Close()
		return 0, ErrRaftPartitioned
	}
	return c.Conn.Read(b)
}

func (c *raftFaultConn) Write(b []byte) (int, error) {
	if c.f.partitioned.Load() {
		c.Close()
		return 0, ErrRaftPartitioned
	}
	return c.Conn.Write(b)
}

func (c *raftFaultConn) Close() error {
	c.once.Do(func() {
		c.f.mu.Lock()
		delete(c.f.conns, c)
		c.f.mu.Unlock()
	})
	return c.Conn.Close()
}

// raftStream is the node's mutual-TLS listener and dialer. It is the
// raft.StreamLayer of the raft transport (Accept returns raft connections
// only); api is a second listener, for the internal API's connections.
type raftStream struct {
	ln        net.Listener
	advertise net.Addr
	server    *tls.Config // inbound: this node's certificate, peers verified
	client    *tls.Config // outbound: peers' certificates verified, this node's presented
	authorize func(*x509.Certificate) error
	faults    *RaftFaults
	log       *slog.Logger

	raftConns chan net.Conn
	api       *raftChanListener
	ctx       context.Context // ends when the stream closes
	cancel    context.CancelFunc
	closed    chan struct{}
	closeOnce sync.Once
	wg        sync.WaitGroup
}

// newRaftStream listens on bind with mutual TLS. tc is the node's TLS
// configuration (see RaftConfig.TLS); authorize, when set, must accept the
// verified client certificate of every inbound connection.
func newRaftStream(bind string, advertise net.Addr, tc *tls.Config, authorize func(*x509.Certificate) error, faults *RaftFaults, log *slog.Logger) (*raftStream, error) {
	ln, err := net.Listen("tcp", bind)
	if err != nil {
		return nil, fmt.Errorf("cluster: raft listen on %s: %w", bind, err)
	}
	if advertise == nil {
		advertise = ln.Addr()
	}
	s := &raftStream{ln: ln, advertise: advertise, authorize: authorize, faults: faults, log: log,
		raftConns: make(chan net.Conn), closed: make(chan struct{})}
	s.ctx, s.cancel = context.WithCancel(context.Background())
	s.api = &raftChanListener{conns: make(chan net.Conn), closed: s.closed, addr: advertise, done: make(chan struct{})}

	s.server = tc.Clone()
	s.server.ClientAuth = tls.RequireAndVerifyClientCert
	s.server.NextProtos = []string{raftALPN, raftAPIALPN}
	s.server.MinVersion = tls.VersionTLS13
	s.server.VerifyConnection = func(cs tls.ConnectionState) error {
		if len(cs.VerifiedChains) == 0 || len(cs.VerifiedChains[0]) == 0 {
			return errors.New("cluster: the raft peer presented no verified certificate")
		}
		if s.authorize != nil {
			if err := s.authorize(cs.VerifiedChains[0][0]); err != nil {
				return fmt.Errorf("cluster: the raft peer's certificate is not a cluster node's: %w", err)
			}
		}
		return nil
	}
	// Outbound, the peer's server certificate is verified against RootCAs
	// and the host of the address dialled (from the raft configuration).
	s.client = tc.Clone()
	s.client.MinVersion = tls.VersionTLS13

	s.wg.Add(1)
	go s.acceptLoop()
	return s, nil
}

func (s *raftStream) acceptLoop() {
	defer s.wg.Done()
	for {
		c, err := s.ln.Accept()
		if err != nil {
			select {
			case <-s.closed:
				return
			default:
			}
			var ne net.Error
			if errors.As(err, &ne) && ne.Timeout() {
				continue
			}
			s.log.Warn("raft listener failed", "err", err)
			select {
			case <-s.closed:
				return
			case <-time.After(100 * time.Millisecond):
			}
			continue
		}
		s.wg.Add(1)
		go func() {
			defer s.wg.Done()
			s.handshake(c)
		}()
	}
}

// handshake runs the server side of an inbound connection's TLS handshake
// and hands it to raft or to the internal API by its ALPN protocol.
func (s *raftStream) handshake(raw net.Conn) {
	c, err := s.faults.wrap(raw)
	if err != nil {
		return
	}
	tc := tls.Server(c, s.server)
	ctx, cancel := context.WithTimeout(s.ctx, raftHandshakeTimeout)
	defer cancel()
	if err := tc.HandshakeContext(ctx); err != nil {
		s.log.Debug("raft: inbound handshake failed", "remote", raw.RemoteAddr().String(), "err", err)
		tc.Close()
		return
	}
	var conn net.Conn = tc
	ch := s.raftConns
	switch tc.ConnectionState().NegotiatedProtocol {
	case raftALPN:
	case raftAPIALPN:
		// Not a *tls.Conn to net/http, which would otherwise take the
		// negotiated protocol for one it must serve with TLSNextProto.
		conn, ch = raftAPIConn{tc}, s.api.conns
	default:
		tc.Close()
		return
	}
	select {
	case ch <- conn:
	case <-s.closed:
		tc.Close()
	}
}

// Accept returns the next inbound raft connection (raft.StreamLayer).
func (s *raftStream) Accept() (net.Conn, error) {
	select {
	case c := <-s.raftConns:
		return c, nil
	case <-s.closed:
		return nil, net.ErrClosed
	}
}

// Close stops listening (raft.StreamLayer). Connections already handed
// out are their owners' to close.
func (s *raftStream) Close() error {
	s.closeOnce.Do(func() {
		close(s.closed)
		s.cancel()
		s.ln.Close()
	})
	return nil
}

// Addr is the address peers dial (raft.StreamLayer).
func (s *raftStream) Addr() net.Addr { return s.advertise }

// Dial opens a raft connection to a peer (raft.StreamLayer).
func (s *raftStream) Dial(address raft.ServerAddress, timeout time.Duration) (net.Conn, error) {
	ctx, cancel := context.WithTimeout(context.Background(), timeout)
	defer cancel()
	return s.dial(ctx, string(address), raftALPN)
}

// raftDialError is a failure to connect to a peer: nothing was sent.
type raftDialError struct {
	addr string
	err  error
}

func (e *raftDialError) Error() string {
	return fmt.Sprintf("connect to raft peer %s: %v", e.addr, e.err)
}
func (e *raftDialError) Unwrap() error { return e.err }

// dial connects to address and completes a TLS handshake for proto.
func (s *raftStream) dial(ctx context.Context, address, proto string) (net.Conn, error) {
	if s.faults.Partitioned() {
		return nil, &raftDialError{address, ErrRaftPartitioned}
	}
	host, _, err := net.SplitHostPort(address)
	if err != nil {
		return nil, &raftDialError{address, err}
	}
	var d net.Dialer
	raw, err := d.DialContext(ctx, "tcp", address)
	if err != nil {
		return nil, &raftDialError{address, err}
	}
	c, err := s.faults.wrap(raw)
	if err != nil {
		return nil, &raftDialError{address, err}
	}
	cfg := s.client.Clone()
	cfg.ServerName = host
	cfg.NextProtos = []string{proto}
	tc := tls.Client(c, cfg)
	if err := tc.HandshakeContext(ctx); err != nil {
		tc.Close()
		return nil, &raftDialError{address, err}
	}
	if got := tc.ConnectionState().NegotiatedProtocol; got != proto {
		tc.Close()
		return nil, &raftDialError{address, fmt.Errorf("the peer does not speak %s (it chose %q)", proto, got)}
	}
	return tc, nil
}

// shutdown closes the listener and waits for the handshakes in progress.
func (s *raftStream) shutdown() {
	s.Close()
	s.wg.Wait()
}

// raftAPIConn is an internal-API connection, its TLS already done.
type raftAPIConn struct{ net.Conn }

// raftChanListener is a net.Listener whose connections come from a
// channel. It is closed by Close or with its raftStream (closed).
type raftChanListener struct {
	conns     chan net.Conn
	closed    chan struct{} // the stream's
	addr      net.Addr
	done      chan struct{}
	closeOnce sync.Once
}

func (l *raftChanListener) Accept() (net.Conn, error) {
	select {
	case c := <-l.conns:
		return c, nil
	case <-l.closed:
		return nil, net.ErrClosed
	case <-l.done:
		return nil, net.ErrClosed
	}
}

func (l *raftChanListener) Close() error {
	l.closeOnce.Do(func() { close(l.done) })
	return nil
}

func (l *raftChanListener) Addr() net.Addr { return l.addr }
